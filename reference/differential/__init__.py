"""``differential``: the same scenarios through Dynamo's compiled Rust adapter, our adapter and the model.

A scenario (a model event sequence: a teaching scenario, or one drawn by
:mod:`.schedules`) becomes a *play* (:mod:`.plays`): a script for the
recording engine (:mod:`.scripted_engine`), a script for the client, and the
outcomes the model allows.  :mod:`.upstream` plays it through Dynamo's real
``Worker`` in a child process on 127.0.0.1 (:mod:`.worker_main`),
:mod:`.reference_side` through our ``EngineAdapter``; :mod:`.compare` holds
both to the model, :mod:`.findings` names the documented upstream findings,
and :mod:`.run` drives a whole run.
"""
