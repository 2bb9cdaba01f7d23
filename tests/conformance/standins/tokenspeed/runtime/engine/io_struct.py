"""The request the engine hands the library: prompt ids, sampling parameters and the P/D bootstrap fields."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class GenerateReqInput:
    input_ids: list[int] = field(default_factory=list)
    sampling_params: dict[str, Any] = field(default_factory=dict)
    stream: bool = False
    rid: str | None = None
    """Set by the engine to the Dynamo request id, which abort_request later names."""
    bootstrap_host: str | None = None
    bootstrap_port: int | None = None
    bootstrap_room: int | None = None
