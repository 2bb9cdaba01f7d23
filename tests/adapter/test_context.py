"""The reference Context against Dynamo's ``dynamo._core.Context``: same members, same call shapes,
same meaning, so an engine written against Dynamo runs on ours unchanged.

The parity tests import the real class (skipped outside CI when ``ai-dynamo-runtime`` is
absent, failed in CI); the rest pin our own behaviour where no real Context is at hand.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import threading
from collections.abc import Callable
from typing import Any

import pytest
from adapter_helpers import async_test
from dynamo_backend_protocol.reference import Context
from optional_tools import require_dynamo

KIT_ONLY = {"kill", "add_listener", "remove_listener", "has_listeners", "signals", "first_token_notified"}
"""Public members Dynamo's Python Context lacks: the kit's and the adapter's own."""


def real_context_class() -> Any:
    require_dynamo()
    # Imported by name, so type-checking the tests does not need the package.
    return importlib.import_module("dynamo._core").Context


def public_members(cls: type) -> set[str]:
    return {name for name in dir(cls) if not name.startswith("_")}


def parameters(function: Callable[..., Any]) -> list[tuple[str, object]]:
    """(name, default) of every parameter a caller may pass positionally (``self`` dropped)."""
    signature = inspect.signature(function)
    return [
        (p.name, p.default)
        for p in signature.parameters.values()
        if p.name != "self" and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]


def same_call_shape(ours: Callable[..., Any], theirs: Callable[..., Any]) -> bool:
    """The same parameters, in order, optional alike, with the same defaults (a compiled signature
    shows an optional parameter without a printable default as ``...``)."""
    mine, real = parameters(ours), parameters(theirs)
    return [name for name, _ in mine] == [name for name, _ in real] and all(
        (default is inspect.Parameter.empty) == (expected is inspect.Parameter.empty)
        and (expected is Ellipsis or default == expected)
        for (_, default), (_, expected) in zip(mine, real, strict=True)
    )


def test_every_member_of_dynamos_context_exists_here() -> None:
    """An engine may call any public member of Dynamo's Context; a missing one is an AttributeError
    in the user's engine (as ``start_span`` was)."""
    real = real_context_class()
    assert public_members(real) - public_members(Context) == set()
    assert public_members(Context) - public_members(real) == KIT_ONLY


def test_the_metadata_mapping_has_dynamos_methods_with_their_call_shapes() -> None:
    """``context.metadata`` is Dynamo's ContextMetadata to an engine: the same methods, called alike."""
    real = type(real_context_class()().metadata)
    ours = type(Context().metadata)
    wanted = public_members(real) | {"__getitem__", "__setitem__", "__delitem__", "__len__", "__contains__",
                                     "__iter__"}
    for name in sorted(wanted):
        assert hasattr(ours, name), name
        if name in public_members(real):
            assert same_call_shape(getattr(ours, name), getattr(real, name)), name


def test_methods_and_properties_match_dynamos_call_shapes() -> None:
    """Each member is called the same way: methods with the same parameters and defaults,
    properties as properties (``metadata`` settable, the trace ids read-only)."""
    real = real_context_class()
    for name in sorted(public_members(real)):
        ours, theirs = inspect.getattr_static(Context, name), inspect.getattr_static(real, name)
        if inspect.isdatadescriptor(theirs):
            assert isinstance(ours, property), name
            settable = name == "metadata"
            assert (ours.fset is not None) == settable, name
        else:
            assert same_call_shape(getattr(Context, name), getattr(real, name)), name


def test_constructor_takes_dynamos_arguments() -> None:
    """``Context(id=None, metadata=None)`` as Dynamo's; anything more is keyword-only."""
    real = real_context_class()
    assert same_call_shape(Context, real)
    extra = [p for p in inspect.signature(Context).parameters.values() if p.kind is not p.POSITIONAL_OR_KEYWORD]
    assert all(p.kind is p.KEYWORD_ONLY for p in extra)


@async_test
async def test_both_contexts_answer_a_cancellation_alike() -> None:
    """``async_killed_or_stopped()`` is an ``asyncio.Future[bool]`` (not a coroutine) that becomes
    True after ``stop_generating()``, and a stopped context reports stopped but not killed."""
    real = real_context_class()
    for make in (Context, real):
        context = make("request-a")
        waiting = context.async_killed_or_stopped()
        assert isinstance(waiting, asyncio.Future), make
        assert not context.is_stopped()
        context.stop_generating()
        assert await asyncio.wait_for(waiting, 5) is True
        assert (context.is_stopped(), context.is_killed()) == (True, False)
        assert await asyncio.wait_for(context.async_killed_or_stopped(), 5) is True


def metadata_story(make: Callable[..., Any]) -> list[object]:
    """What an engine sees doing the same things to the metadata of a context made by ``make``."""
    context = make("request-m", {"tenant": "a"})
    seen: list[object] = []
    view = context.metadata
    view["priority"] = "high"
    seen.append(sorted(context.metadata.items()))
    context.metadata = {"replaced": "yes"}
    seen.append(sorted(view.items()))  # the old view is live: it shows the replacement
    seen.append((view.get("missing"), view.get("missing", "x"), view.pop("replaced", "gone"), len(view),
                 "replaced" in view, view.keys(), view.values(), view.items(), list(view), view.copy()))
    with pytest.raises(KeyError):
        view.pop("absent")
    with pytest.raises(KeyError):
        view.pop("absent", None)
    for bad in ({"k": 1}, {"k": None}):
        with pytest.raises(TypeError):
            context.metadata = bad
    with pytest.raises(TypeError):
        view["k"] = 2
    with pytest.raises(KeyError):
        del view["absent"]
    view["kept"] = "1"
    child = context.detached("request-child")
    child.metadata["only-child"] = "x"
    context.stop_generating()
    seen.append((child.id(), sorted(child.metadata.items()), sorted(context.metadata.items()), child.is_stopped()))
    seen.append((context.trace_id, context.span_id, context.parent_span_id, context.trace_headers()))
    return seen


@async_test
async def test_metadata_and_detached_behave_as_in_dynamo() -> None:
    """The metadata is a live string mapping, replaced by assignment, rejecting non-strings; a
    detached context has its own id, cancellation and metadata snapshot: step for step as Dynamo's."""
    real = real_context_class()
    assert metadata_story(Context) == metadata_story(real)


@async_test
async def test_spans_are_usable_as_in_dynamo() -> None:
    """``start_span`` returns a context manager whose span methods take Dynamo's arguments, and
    ``current_span`` the framework span; without tracing all of them do nothing, on both."""
    real = real_context_class()
    for make in (Context, real):
        context = make()
        with context.start_span("kv_load", {"blocks": 8}) as span:
            span.set_attribute("ttft_ms", 42.0)
            span.add_event("first_token", {"token_id": 7})
            span.add_event("plain")
            span.set_status("error", "Boom")
            span.set_status("ok")
        span.close()
        context.current_span().set_attribute("k", "v")
        assert context.start_span("plain").__exit__(None, None, None) is False


def test_a_context_without_trace_has_no_trace_headers() -> None:
    """Engines forward ``trace_headers()`` to their inference library; None means nothing to forward."""
    assert Context().trace_headers() is None


def test_a_traced_context_gives_a_w3c_traceparent() -> None:
    """With a trace, the header is W3C ``traceparent``: version, trace id, span id, flags."""
    context = Context(trace_id="0af7651916cd43dd8448eb211c80319c", span_id="b7ad6b7169203331")
    assert context.trace_headers() == {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    assert context.detached("child").trace_id == context.trace_id


@async_test
async def test_the_cancellation_future_resolves_when_another_thread_stops_the_request() -> None:
    """A runtime stops requests from its own threads: the engine's future still resolves on its loop."""
    context = Context()
    waiting = context.async_killed_or_stopped()
    stopper = threading.Thread(target=context.stop_generating)
    stopper.start()
    assert await asyncio.wait_for(waiting, 5) is True
    stopper.join()
