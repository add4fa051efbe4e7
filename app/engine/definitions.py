"""Workflow definitions: a DAG of steps, validated before it is stored."""

from __future__ import annotations

from app.domain import StepSpec, WorkflowSpec

__all__ = ["DefinitionError", "StepSpec", "WorkflowSpec", "validate"]


class DefinitionError(ValueError):
    """The definition cannot run; the message names the step or field at fault."""


def validate(spec: WorkflowSpec, *, known_tasks: set[str], max_steps: int, max_timeout_s: float) -> None:
    """Raises DefinitionError for the first problem: size, duplicate or unknown names, timeouts, cycles."""
    if not spec.steps:
        raise DefinitionError("a workflow needs at least one step")
    if len(spec.steps) > max_steps:
        raise DefinitionError(f"the workflow has {len(spec.steps)} steps; the limit is {max_steps}")
    names: set[str] = set()
    for step in spec.steps:
        if step.name in names:
            raise DefinitionError(f"duplicate step name {step.name!r}")
        names.add(step.name)
    for step in spec.steps:
        if step.task not in known_tasks:
            raise DefinitionError(f"step {step.name!r} uses unknown task {step.task!r}")
        if not 0 < step.timeout_s <= max_timeout_s:
            raise DefinitionError(
                f"step {step.name!r} has timeout_s {step.timeout_s}; it must be > 0 and <= {max_timeout_s}"
            )
        for dependency in step.depends_on:
            if dependency not in names:
                raise DefinitionError(f"step {step.name!r} depends on unknown step {dependency!r}")
            if dependency == step.name:
                raise DefinitionError(f"step {step.name!r} depends on itself")
        if len(set(step.depends_on)) != len(step.depends_on):
            raise DefinitionError(f"step {step.name!r} lists a dependency twice")
    cycle = _find_cycle(spec)
    if cycle:
        raise DefinitionError("the steps form a cycle: " + " -> ".join(cycle))


def _find_cycle(spec: WorkflowSpec) -> list[str] | None:
    parents = {step.name: step.depends_on for step in spec.steps}
    visiting: list[str] = []
    done: set[str] = set()

    def visit(name: str) -> list[str] | None:
        if name in done:
            return None
        if name in visiting:
            return visiting[visiting.index(name) :] + [name]
        visiting.append(name)
        for parent in parents[name]:
            cycle = visit(parent)
            if cycle:
                return cycle
        visiting.pop()
        done.add(name)
        return None

    for step in spec.steps:
        cycle = visit(step.name)
        if cycle:
            return list(reversed(cycle))
    return None
