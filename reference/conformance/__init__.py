"""The conformance kit: checks that judge an engine against the protocol, the
engines that drive and break them, and the pytest plugin that runs them."""

from dynamo_backend_protocol.reference.conformance.kit import DEFAULT_EXAMPLES, assert_conforms, run_conformance

__all__ = ["DEFAULT_EXAMPLES", "assert_conforms", "run_conformance"]
