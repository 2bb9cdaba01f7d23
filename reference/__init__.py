"""The reference implementation: an asyncio adapter driven by the model, the
engine API, the conformance kit and the command line.

The kit's names are imported on first use, so that importing the adapter (which
imports this package first) loads neither the kit nor Hypothesis.
"""

import importlib
import logging
from typing import TYPE_CHECKING, Any

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
from dynamo_backend_protocol.reference.context import Context
from dynamo_backend_protocol.reference.engine import EngineConfig, LLMEngine, start_engine
from dynamo_backend_protocol.reference.traces.writer import JsonlTraceWriter

if TYPE_CHECKING:
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

_KIT = "dynamo_backend_protocol.reference.conformance"
_FROM_THE_KIT: dict[str, tuple[str, str]] = {
    "assert_conforms": (_KIT, "assert_conforms"),
    "run_conformance": (_KIT, "run_conformance"),
    "ConformanceCheck": (f"{_KIT}.checks", "Failure"),
    "CheckResult": (f"{_KIT}.report", "CheckResult"),
    "CheckStatus": (f"{_KIT}.report", "CheckStatus"),
    "ConformanceFailure": (f"{_KIT}.report", "ConformanceFailure"),
    "ConformanceReport": (f"{_KIT}.report", "ConformanceReport"),
    "SampleEngine": (f"{_KIT}.sample_engine", "SampleEngine"),
    "EngineFactoryError": (f"{_KIT}.session", "EngineFactoryError"),
}


def __getattr__(name: str) -> Any:
    found = _FROM_THE_KIT.get(name)
    if found is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, attribute = found
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value
    return value


# A library does not decide where warnings go: silent unless the application configures logging.
logging.getLogger("dynamo_backend_protocol").addHandler(logging.NullHandler())

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
