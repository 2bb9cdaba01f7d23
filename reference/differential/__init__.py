"""``differential``: the same scenarios through Dynamo's compiled Rust adapter, our adapter and the model.

A scenario (a model event sequence) becomes a *play*: a script for a
recording engine, a script for the client, and the outcome the model
predicts.  :mod:`.upstream` plays it through Dynamo's real ``Worker`` in a
child process on 127.0.0.1, :mod:`.reference_side` through our
``EngineAdapter``, and :mod:`.compare` holds both to the prediction.
"""
