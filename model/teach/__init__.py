"""What teaches the protocol from the tables: scenarios, narration and diagram
plans.  The core of :mod:`dynamo_backend_protocol.model` never imports this package."""
