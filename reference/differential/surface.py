"""The installed Dynamo release and what a client and a worker must do differently on it.

``differential`` runs against whatever ``ai-dynamo-runtime`` is installed in
its environment (one venv per release).  What differs between releases is
data in :mod:`dynamo_backend_protocol.model.releases`; this module reads the
installed version and turns those differences into the few switches the
worker and the client need.
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass

from dynamo_backend_protocol.model import Mode
from dynamo_backend_protocol.model.exceptions import ProtocolError
from dynamo_backend_protocol.model.releases import (
    ENCODE_MODE_SERVED,
    LATEST_RELEASE,
    RAW_ENGINE_RELEASE,
    REQUEST_FIELDS_REQUIRED,
    SETUP_ERROR_DROPS_WORKER,
    WORKER_CONFIG_KV_ROUTING,
    Release,
    known_release,
)

PACKAGES = ("ai-dynamo", "ai-dynamo-runtime")

EOS_TOKEN_ID = 4
"""The end-of-sequence token of the model directory :func:`.upstream.write_model_directory` writes."""


class ReleaseMismatch(ProtocolError):
    """The installed release is not the one asked for, or the two packages disagree; the message says which."""


def installed_versions() -> dict[str, str | None]:
    """Each of Dynamo's two packages and its installed version (None when absent)."""
    found: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def installed_release(expected: str | None = None) -> Release:
    """The installed Dynamo release.  Raises :class:`ReleaseMismatch` when the two packages
    are of different releases, or when ``expected`` is given and is not the installed one."""
    versions = installed_versions()
    present = {name: version for name, version in versions.items() if version is not None}
    if not present:
        raise ReleaseMismatch("neither ai-dynamo nor ai-dynamo-runtime is installed")
    releases = {name: Release.parse(version) for name, version in present.items()}
    if len(set(releases.values())) > 1:
        listed = ", ".join(f"{name} {version}" for name, version in present.items())
        raise ReleaseMismatch(f"Dynamo's packages are of different releases ({listed}); install one release of both")
    release = next(iter(releases.values()))
    if expected is not None:
        try:
            wanted = Release.parse(expected)
        except ValueError as error:
            raise ReleaseMismatch(f"--dynamo-version: {error}") from None
        if wanted != release:
            raise ReleaseMismatch(
                f"--dynamo-version {wanted} asked for, but {release} is installed here; run in a venv of "
                f"{wanted} (pip install --no-deps ai-dynamo=={wanted} ai-dynamo-runtime=={wanted})"
            )
    return release


@dataclass(frozen=True)
class ReleaseSurface:
    """What the worker and the client do on one release."""

    release: Release
    """The installed release."""
    measured_as: Release
    """The measured release whose behaviour it is taken to have (itself, or the newest measured before it)."""

    @property
    def worker_config_has_kv_routing(self) -> bool:
        return not WORKER_CONFIG_KV_ROUTING.applies_before(self.measured_as)

    @property
    def setup_error_drops_worker(self) -> bool:
        return SETUP_ERROR_DROPS_WORKER.applies_before(self.measured_as)

    def unserved(self, mode: Mode) -> str | None:
        """Why this release's unified Worker does not serve ``mode`` (None: it does)."""
        if mode is Mode.ENCODE and ENCODE_MODE_SERVED.applies_before(self.measured_as):
            return f"not in {self.release} ({ENCODE_MODE_SERVED.name}: {ENCODE_MODE_SERVED.before})"
        return None

    def without_raw_adapter(self) -> str | None:
        """Why this release has no raw engine adapter (None: it has one)."""
        if self.measured_as < RAW_ENGINE_RELEASE:
            return f"not in {self.release} (the raw engine adapter is from {RAW_ENGINE_RELEASE})"
        return None

    def request_fields(self, model: str) -> dict[str, object]:
        """The fields this release's runtime requires on every request, beyond what the play sends."""
        if not REQUEST_FIELDS_REQUIRED.applies_before(self.measured_as):
            return {}
        return {"model": model, "eos_token_ids": [EOS_TOKEN_ID], "annotations": []}

    def note(self) -> str | None:
        """Said in the report when the installed release was not itself measured."""
        if self.release == self.measured_as:
            return None
        if self.release > LATEST_RELEASE:
            return f"{self.release} is newer than every measured release; judged as {self.measured_as}"
        return f"{self.release} was not measured; judged as {self.measured_as}, the newest measured before it"


def surface(release: Release) -> ReleaseSurface:
    """The surface of ``release``; ReleaseMismatch for a release older than the seed's."""
    try:
        return ReleaseSurface(release, known_release(release))
    except ValueError as error:
        raise ReleaseMismatch(str(error)) from None
