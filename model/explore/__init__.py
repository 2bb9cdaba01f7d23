"""What explores the model's tables: breadth-first walks, invariant checking on
every reachable state, and the reachable graph per mode.  The core of
:mod:`dynamo_backend_protocol.model` never imports this package."""

from dynamo_backend_protocol.model.explore.checking import InvariantResult
from dynamo_backend_protocol.model.explore.lifecycle import LifecycleReport, explore_lifecycle
from dynamo_backend_protocol.model.explore.request import ExplorationReport, ModeReport, explore, explore_all

__all__ = [
    "ExplorationReport",
    "InvariantResult",
    "LifecycleReport",
    "ModeReport",
    "explore",
    "explore_all",
    "explore_lifecycle",
]
