"""Replaying recorded traces through the model.  The core of
:mod:`dynamo_backend_protocol.model` never imports this package."""
