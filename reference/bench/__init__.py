"""The bench: the adapter's cost against the bare engine and the floor, the
model's exploration, a conformance run, a soak of many concurrent requests and
one long stream, and the trace validator's speed and memory."""
