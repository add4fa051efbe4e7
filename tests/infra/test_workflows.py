"""The GitHub Actions workflow is valid, tests every change, previews every stack on pull requests, deploys dev."""

import subprocess
import sys

import yaml

from tools.mock_stack import ROOT, STACKS

WORKFLOW = ROOT / ".github" / "workflows" / "infrastructure.yml"
JOBS = yaml.safe_load(WORKFLOW.read_text())["jobs"]


def _pulumi_steps(job):
    return [step for step in JOBS[job]["steps"] if step.get("uses", "").startswith("pulumi/actions@")]


def test_workflows_match_the_github_schema():
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "check_jsonschema",
            "--builtin-schema",
            "vendor.github-workflows",
            *map(str, (ROOT / ".github" / "workflows").glob("*.yml")),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_change_runs_the_readme_test_command():
    assert any(step.get("run") == "make test" for step in JOBS["test"]["steps"])


def test_pull_requests_preview_every_stack_in_one_self_updating_comment_each():
    job = JOBS["preview"]
    assert job["strategy"]["matrix"]["stack"] == list(STACKS)
    assert job["needs"] == "test" and "pull_request" in job["if"]
    (step,) = _pulumi_steps("preview")
    assert step["uses"] == "pulumi/actions@v7"
    assert step["with"]["command"] == "preview" and step["with"]["stack-name"] == "${{ matrix.stack }}"
    assert step["with"]["comment-on-pr"] is True and step["with"]["edit-pr-comment"] is True
    assert job["permissions"]["pull-requests"] == "write"


def test_merges_to_main_deploy_dev():
    job = JOBS["deploy-dev"]
    assert "refs/heads/main" in job["if"] and job["needs"] == "test"
    (step,) = _pulumi_steps("deploy-dev")
    assert step["with"]["command"] == "up" and step["with"]["stack-name"] == "dev"
