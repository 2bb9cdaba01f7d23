"""The reference implementation: an asyncio adapter driven by the model, the
engine API, the conformance kit and the command line."""

import importlib
import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dynamo_backend_protocol.model import BackendError, DynamoError
    from dynamo_backend_protocol.model import Mode as DisaggregationMode
    from dynamo_backend_protocol.reference import chunks
    from dynamo_backend_protocol.reference.adapter import EngineAdapter, ResponseStream, TraceSink
    from dynamo_backend_protocol.reference.annotated import Annotated, as_dynamo_error
    from dynamo_backend_protocol.reference.chunks import (
        Chunk,
        cancelled,
        content_filter,
        eos,
        error,
        length,
        stop,
        token,
        usage,
    )
    from dynamo_backend_protocol.reference.conformance import assert_conforms, run_conformance
    from dynamo_backend_protocol.reference.conformance.checks import Failure as ConformanceCheck
    from dynamo_backend_protocol.reference.conformance.report import (
        CheckResult,
        CheckStatus,
        ConformanceFailure,
        ConformanceReport,
    )
    from dynamo_backend_protocol.reference.conformance.sample_engine import SampleEngine
    from dynamo_backend_protocol.reference.conformance.session import EngineFactoryError
    from dynamo_backend_protocol.reference.context import Context
    from dynamo_backend_protocol.reference.engine import EngineConfig, LLMEngine, start_engine
    from dynamo_backend_protocol.reference.traces.writer import JsonlTraceWriter

# A library does not decide where warnings go: silent unless the application configures logging.
logging.getLogger("dynamo_backend_protocol").addHandler(logging.NullHandler())


_WHERE = {
    "BackendError": "dynamo_backend_protocol.model",
    "DynamoError": "dynamo_backend_protocol.model",
    "DisaggregationMode": "dynamo_backend_protocol.model:Mode",
    "EngineAdapter": "dynamo_backend_protocol.reference.adapter",
    "ResponseStream": "dynamo_backend_protocol.reference.adapter",
    "TraceSink": "dynamo_backend_protocol.reference.adapter",
    "Annotated": "dynamo_backend_protocol.reference.annotated",
    "as_dynamo_error": "dynamo_backend_protocol.reference.annotated",
    **{name: "dynamo_backend_protocol.reference.chunks" for name in (
        "Chunk", "cancelled", "content_filter", "eos", "error", "length", "stop", "token", "usage")},
    "assert_conforms": "dynamo_backend_protocol.reference.conformance",
    "run_conformance": "dynamo_backend_protocol.reference.conformance",
    "ConformanceCheck": "dynamo_backend_protocol.reference.conformance.checks:Failure",
    **{name: "dynamo_backend_protocol.reference.conformance.report" for name in (
        "CheckResult", "CheckStatus", "ConformanceFailure", "ConformanceReport")},
    "SampleEngine": "dynamo_backend_protocol.reference.conformance.sample_engine",
    "EngineFactoryError": "dynamo_backend_protocol.reference.conformance.session",
    "Context": "dynamo_backend_protocol.reference.context",
    **{name: "dynamo_backend_protocol.reference.engine" for name in ("EngineConfig", "LLMEngine", "start_engine")},
    "JsonlTraceWriter": "dynamo_backend_protocol.reference.traces.writer",
}
"""Where each public name lives: imported on first use, so that ``import dynamo_backend_protocol.reference.cli``
(every start of the command) does not pay for the adapter and the kit."""


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        if name == "chunks":
            return importlib.import_module(f"{__name__}.chunks")
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, _, attribute = where.partition(":")
    value = getattr(importlib.import_module(module), attribute or name)
    globals()[name] = value
    return value


__all__ = [
    "Annotated",
    "BackendError",
    "CheckResult",
    "CheckStatus",
    "Chunk",
    "ConformanceCheck",
    "ConformanceFailure",
    "ConformanceReport",
    "Context",
    "DisaggregationMode",
    "DynamoError",
    "EngineAdapter",
    "EngineConfig",
    "EngineFactoryError",
    "JsonlTraceWriter",
    "LLMEngine",
    "ResponseStream",
    "SampleEngine",
    "TraceSink",
    "as_dynamo_error",
    "assert_conforms",
    "cancelled",
    "chunks",
    "content_filter",
    "eos",
    "error",
    "length",
    "run_conformance",
    "start_engine",
    "stop",
    "token",
    "usage",
]
