"""Idempotency keys: when a request that repeats a key is the same request (its first run is returned) and when it
is a different one under a reused key (refused, and nothing of its batch is created).

As in the IETF Idempotency-Key draft, a key names one request: sent again with the same workflow and input it
returns the run of its first use; sent with another workflow or input it is refused (422), since returning the first
run would tell the client a different request had run.
"""

from __future__ import annotations

from typing import Any

from app.domain import KeyReuse, NewRun


class IdempotencyKeyReusedError(ValueError):
    """The key was first used for another workflow or input."""

    def __init__(self, key: str, first_workflow: str, index: int):
        super().__init__(
            f"Idempotency-Key {key!r} was first used to start a run of {first_workflow!r} with a different "
            "workflow or input; a different request needs a new key"
        )
        self.key, self.first_workflow, self.index = key, first_workflow, index


class ConflictingKeysInBatchError(ValueError):
    """Items of one batch share a key but not their workflow and input."""

    def __init__(self, key: str, items: list[int]):
        names = ", ".join(f"runs[{item}]" for item in items)
        super().__init__(f"{names} use idempotency_key {key!r} for different workflows or inputs")
        self.key, self.items = key, items


def same_request(workflow: str, run_input: Any, other_workflow: str, other_input: Any) -> bool:
    # Inputs compare as JSON values (key order does not matter); an offloaded input is a content-addressed
    # reference, equal exactly when the content is.
    return workflow == other_workflow and run_input == other_input


def check_batch(items: list[tuple[str, Any, str | None]]) -> None:
    """Refuses a batch whose items (workflow, input, key) reuse a key for different requests, naming every item
    that shares the first conflicting key."""
    first: dict[str, int] = {}
    for index, (workflow, run_input, key) in enumerate(items):
        if key is None:
            continue
        seen = first.setdefault(key, index)
        if not same_request(*items[seen][:2], workflow, run_input):
            raise ConflictingKeysInBatchError(key, [i for i, item in enumerate(items) if item[2] == key])


def check_reuses(runs: list[NewRun], reuses: list[KeyReuse]) -> None:
    """Refuses the first of `runs` that repeats a key with another workflow or input than the key's first use."""
    for reuse in reuses:
        run = runs[reuse.index]
        if not same_request(reuse.workflow, reuse.input, run.workflow.name, run.input):
            raise IdempotencyKeyReusedError(run.idempotency_key or "", reuse.workflow, reuse.index)
