from pathlib import Path

import pytest

from tools.mock_stack import STACKS, StackRun, receiver_required, run_stack
from tools.render import render

# The receiver the tests give the stacks that require one, as `pulumi config set --secret` would: a fake webhook.
TEST_RECEIVER = {"alertSlackWebhookUrl": "https://hooks.slack.example/services/TEST-ONLY/not-a-real-webhook"}


@pytest.fixture(scope="session")
def stacks() -> dict[str, StackRun]:
    """Every stack, each run once under mocks and shared by the tests that only read what it created; the stacks
    that require an alert receiver get a test one."""
    return {stack: run_stack(stack, secrets=TEST_RECEIVER if receiver_required(stack) else None) for stack in STACKS}


@pytest.fixture(params=STACKS)
def stack(request, stacks) -> StackRun:
    return stacks[request.param]


@pytest.fixture(scope="session")
def rendered(tmp_path_factory) -> Path:
    """What `make manifests` writes for every stack, each into <folder>/<stack>/."""
    folder = tmp_path_factory.mktemp("manifests")
    for stack in STACKS:
        render(stack, folder / stack)
    return folder
