"""dynamo-backend-protocol: the formal model (:mod:`.model`) and the reference
implementation (:mod:`.reference`) of the dynamo-backend-common request protocol."""

from importlib import metadata

try:
    __version__ = metadata.version("dynamo-backend-protocol")
except metadata.PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "unknown"
