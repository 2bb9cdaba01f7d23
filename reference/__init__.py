"""The reference implementation: an asyncio adapter driven by the model, the
engine API, the conformance kit and the command line."""
