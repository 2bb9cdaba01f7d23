"""The reference implementation: an asyncio adapter driven by the model, the
engine API, the conformance kit and the command line."""

import logging

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
