"""Which Dynamo release each rule holds from, and how the releases differ.

The seed is the adapter of ``dynamo-backend-common`` 1.2.1; every
``ai-dynamo``/``ai-dynamo-runtime`` release since (the latest patch of each
minor: 1.3.1, 1.4.2, 1.5.1, 1.6.1) ships the same unified Python backend and
compiled adapter.  ``differential`` measured each of them; what it found is
here as data, so ``check``, ``explain``, the spec and ``differential`` itself
can all say "from 1.3.1" from one place.  Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import total_ordering

from dynamo_backend_protocol.model.first_token_publish import PUBLISH_RULES
from dynamo_backend_protocol.model.raw_engine import RAW_RULES
from dynamo_backend_protocol.model.rules import RULES


@total_ordering
@dataclass(frozen=True)
class Release:
    """A release of ``ai-dynamo``/``ai-dynamo-runtime``, ordered by version."""

    major: int
    minor: int
    patch: int

    @classmethod
    def parse(cls, text: str) -> Release:
        """``"1.3.1"`` -> Release(1, 3, 1); a pre-release or local suffix is ignored
        (``1.6.1.post1`` is 1.6.1).  Raises ValueError naming the text otherwise."""
        parts = text.strip().split(".")
        try:
            major, minor, patch = (int(part) for part in parts[:3])
        except ValueError:
            raise ValueError(f"{text!r} is not a release number like 1.6.1") from None
        return cls(major, minor, patch)

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Release):
            return NotImplemented
        return (self.major, self.minor, self.patch) < (other.major, other.minor, other.patch)


SEED_RELEASE = Release(1, 2, 1)
"""The release of the seed's adapter.rs."""
RELEASES: tuple[Release, ...] = tuple(Release.parse(text) for text in ("1.2.1", "1.3.1", "1.4.2", "1.5.1", "1.6.1"))
"""The releases measured: the latest patch of each minor from the seed's on."""
LATEST_RELEASE = RELEASES[-1]


def known_release(release: Release) -> Release:
    """The measured release whose behaviour ``release`` is taken to have: itself, or the
    newest measured one before it (a later patch of a minor behaves as that minor measured).
    A release older than the seed's has no measured behaviour: ValueError."""
    older = [known for known in RELEASES if known <= release]
    if not older:
        raise ValueError(f"release {release} is older than the seed's {SEED_RELEASE}; nothing was measured there")
    return older[-1]


@dataclass(frozen=True)
class Holds:
    """The releases a rule holds in: from ``since``, up to and including ``until`` (None: still)."""

    since: Release = SEED_RELEASE
    until: Release | None = None

    def covers(self, release: Release) -> bool:
        return self.since <= release and (self.until is None or release <= self.until)

    def text(self) -> str:
        if self.until is not None:
            return f"from {self.since} to {self.until}"
        return f"from {self.since}"


RAW_ENGINE_RELEASE = Release(1, 3, 1)
"""The raw engine adapter (RawEngine, JSON in and out) and the JSON health-check probe appear."""
HEALTH_PROBE_RELEASE = Release(1, 3, 1)
"""Engines declare ``health_check_payload()`` and the runtime's canary is served through the adapter."""
FIRST_TOKEN_PUBLISH_RELEASE = Release(1, 5, 1)
"""The first-token notifier also publishes prefill completion."""

ADDED_SINCE: dict[str, Release] = {
    **dict.fromkeys(RAW_RULES, RAW_ENGINE_RELEASE),
    **dict.fromkeys(PUBLISH_RULES, FIRST_TOKEN_PUBLISH_RELEASE),
}
"""Rules of protocol added after the seed, by rule ID, and the release each appeared in;
every other rule holds from the seed's release."""


def holds(rule: str) -> Holds:
    """Which releases ``rule`` holds in."""
    if rule not in RULES:
        raise KeyError(f"{rule} is not a rule ID")
    return Holds(ADDED_SINCE.get(rule, SEED_RELEASE))


def notifier_publishes(release: Release) -> bool:
    """Whether ``release``'s first-token notifier publishes prefill completion
    (``PublishSetup.notifier_publishes``); up to 1.4.2 it only releases a deferred abort."""
    return release >= FIRST_TOKEN_PUBLISH_RELEASE


def holds_text(rule: str) -> str:
    """``"from 1.2.1"``, ``"from 1.3.1"``: what check, explain and the docs print."""
    return holds(rule).text()


@dataclass(frozen=True)
class ReleaseDifference:
    """Something a client or an engine sees differently depending on the release.

    ``before`` describes the releases up to and including ``last_before``;
    ``after`` the releases from the next measured one on.  The protocol's rules
    are the same on both sides; what differs is what reaches the client.
    """

    name: str
    last_before: Release
    before: str
    after: str

    def applies_before(self, release: Release) -> bool:
        """Whether ``release`` shows the older behaviour."""
        return release <= self.last_before

    def behaviour(self, release: Release) -> str:
        return self.before if self.applies_before(release) else self.after

    def first_after(self) -> Release:
        return next(release for release in RELEASES if release > self.last_before)


MID_STREAM_ERROR_KIND = ReleaseDifference(
    name="mid-stream-error-kind",
    last_before=Release(1, 5, 1),
    before="a typed InvalidArgument raised mid-stream reaches the client as ValueError (its kind lost)",
    after="a typed InvalidArgument raised mid-stream reaches the client as InvalidArgument",
)
DECODE_STOP_BEFORE_SEND = ReleaseDifference(
    name="decode-stop-before-send-terminal",
    last_before=Release(1, 5, 1),
    before="decode, a stop given before the request is sent: the client receives the engine's cancelled terminal",
    after="decode, a stop given before the request is sent: the client receives nothing",
)
SETUP_ERROR_DROPS_WORKER = ReleaseDifference(
    name="setup-error-drops-worker",
    last_before=Release(1, 5, 1),
    before=(
        "after a setup error the client drops its only worker instance; later requests fail "
        "'No workers available' until the client waits for instances again"
    ),
    after="a setup error leaves the worker instance in the client's list",
)
WORKER_CONFIG_KV_ROUTING = ReleaseDifference(
    name="worker-config-kv-routing",
    last_before=Release(1, 2, 1),
    before="WorkerConfig has no enable_kv_routing field",
    after="WorkerConfig has enable_kv_routing (False turns the KV routing publishers off)",
)
ENCODE_MODE_SERVED = ReleaseDifference(
    name="encode-mode-served",
    last_before=Release(1, 2, 1),
    before="the unified Worker refuses encode mode (NotImplementedError: use the legacy entry point)",
    after="the unified Worker serves all four modes, encode included",
)
REQUEST_FIELDS_REQUIRED = ReleaseDifference(
    name="request-fields-required",
    last_before=Release(1, 2, 1),
    before="the runtime refuses a request without model, eos_token_ids and annotations",
    after="model, eos_token_ids and annotations are optional on a request",
)

RELEASE_DIFFERENCES: tuple[ReleaseDifference, ...] = (
    MID_STREAM_ERROR_KIND,
    DECODE_STOP_BEFORE_SEND,
    SETUP_ERROR_DROPS_WORKER,
    WORKER_CONFIG_KV_ROUTING,
    REQUEST_FIELDS_REQUIRED,
    ENCODE_MODE_SERVED,
)
"""Every difference between releases that ``differential`` measured, client surface included."""

SAME_ON_EVERY_RELEASE: tuple[str, ...] = (
    "RUNTIME-DISCONNECT-KILLS",
    "DECODE-DEFER",
    "DECODE-FIRST-TOKEN",
    "DECODE-DROP",
    "ABORT-ONCE",
    "STREAM-SETUP-FAILURE",
)
"""Rules ``differential`` found to behave the same on every measured release (spec section 15)."""
