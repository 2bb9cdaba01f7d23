"""A stand-in for the ``tokenspeed`` GPU library, our own code, for running Dynamo's ``TokenspeedLLMEngine``
unchanged where no GPU is.

It offers only the surface that engine uses (``ServerArgs``, ``Engine`` with its tokenizer manager's
``generate_request``/``abort_request``, ``GenerateReqInput``), generating counting tokens on a timer.  How it
answers ``abort_request`` is chosen with ``--standin-abort`` (see :mod:`.runtime.entrypoints.engine`), so one
engine can be run against a library that behaves and against the ways a library can lose an abort.
"""
