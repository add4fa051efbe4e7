import pytest

from tests.infra.harness import STACKS, StackRun, run_stack


@pytest.fixture(scope="session")
def stacks() -> dict[str, StackRun]:
    """Every stack, each run once under mocks and shared by the tests that only read what it created."""
    return {stack: run_stack(stack) for stack in STACKS}


@pytest.fixture(params=STACKS)
def stack(request, stacks) -> StackRun:
    return stacks[request.param]
