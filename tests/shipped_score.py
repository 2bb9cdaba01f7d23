"""The mutation score of the shipped table, computed once per test session
(it takes seconds) for the model tests and the ``mutate`` command tests."""

from __future__ import annotations

from functools import cache

from dynamo_backend_protocol.model.explore.mutants import MutationScore, mutation_score


@cache
def shipped_score() -> MutationScore:
    return mutation_score()
