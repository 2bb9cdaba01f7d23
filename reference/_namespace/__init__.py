"""dynamo-backend-protocol: the formal model (:mod:`.model`) and the reference
implementation (:mod:`.reference`) of the dynamo-backend-common request protocol."""

from typing import Any


def __getattr__(name: str) -> Any:
    # ``__version__`` is looked up on first use: importlib.metadata costs every start of the command
    # a noticeable share of its time, and only ``--version`` needs it.
    if name != "__version__":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import metadata

    try:
        version = metadata.version("dynamo-backend-protocol")
    except metadata.PackageNotFoundError:  # imported from a source tree that was never installed
        version = "unknown"
    globals()["__version__"] = version
    return version
