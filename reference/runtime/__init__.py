"""Dynamo's real runtime: a recorder for deployments, and conformance under Dynamo's own Worker.

:mod:`.recorder` wraps any engine a Dynamo worker serves and writes what
crosses the engine's boundary as JSON Lines that ``trace`` checks.
:mod:`.worker_entry` is the child process that serves a user's engine (built
as Dynamo builds it) with Dynamo's Worker on 127.0.0.1, recorded;
:mod:`.launcher` starts and ends such processes; :mod:`.probes` sends the
kit's probes through a real Dynamo client; :mod:`.conform` judges them into
the kit's report (``conform ENGINE --runtime dynamo``).
"""

from dynamo_backend_protocol.reference.runtime.recorder import RecordedEngine, RotatingJsonlSink, record

__all__ = ["RecordedEngine", "RotatingJsonlSink", "record"]
