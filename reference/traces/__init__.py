"""Traces of what the adapter did: the JSON Lines writer and the boundary observers it feeds."""

from dynamo_backend_protocol.reference.traces.writer import JsonlTraceWriter

__all__ = ["JsonlTraceWriter"]
