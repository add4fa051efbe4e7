"""checkov, with the committed .checkov.yaml, on what `make manifests` writes for all three stacks: no failed check.

checkov's exact pins conflict with requirements.txt, so it lives in a venv of its own (.venv/checkov/), created
here on first use from tests/requirements-checkov.txt and recreated whenever that file changes. One checkov run
scans the three stacks (its start-up is most of its time).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from tools.mock_stack import PROJECT, ROOT, STACKS, stack_config

CHECKOV_VENV = ROOT / ".venv" / "checkov"
REQUIREMENTS = ROOT / "tests" / "requirements-checkov.txt"
CONFIG = ROOT / ".checkov.yaml"
PLATFORM_WORKLOADS = {"Deployment.workflow.workflow-worker", "Job.workflow."}
# The API is a Deployment where it rolls out in place; checkov has no checks for Argo Rollouts' Rollout, whose pods the
# invariants and the policy pack check instead.
ROLLING_API = "Deployment.workflow.workflow-api"


@pytest.fixture(scope="module")
def checkov() -> Path:
    """The pinned checkov, installed once; a lock keeps parallel test workers from installing it twice."""
    wanted = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    stamp = CHECKOV_VENV / ".installed"
    CHECKOV_VENV.parent.mkdir(exist_ok=True)
    with open(CHECKOV_VENV.parent / ".checkov.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not stamp.exists() or stamp.read_text() != wanted:
            shutil.rmtree(CHECKOV_VENV, ignore_errors=True)
            subprocess.run([sys.executable, "-m", "venv", CHECKOV_VENV], check=True)
            subprocess.run(
                [CHECKOV_VENV / "bin" / "python", "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
                + ["-r", REQUIREMENTS],
                check=True,
            )
            stamp.write_text(wanted)
    return CHECKOV_VENV / "bin" / "checkov"


@pytest.fixture(scope="module")
def report(checkov, rendered) -> dict:
    """checkov's JSON report on every stack's manifests; it exits 1 when a check fails, which the tests report."""
    scan = subprocess.run(
        [checkov, "--config-file", CONFIG, "--directory", rendered, "--output", "json"],
        cwd=rendered,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert scan.returncode in (0, 1), scan.stderr[-3000:]
    result = json.loads(scan.stdout)
    (kubernetes,) = result if isinstance(result, list) else [result]
    assert kubernetes["check_type"] == "kubernetes"
    return kubernetes


def test_checkov_fails_no_check_on_the_platforms_objects(report):
    failed = [
        f"{check['check_id']} {check['check_name']}: {check['resource']} in {check['file_path']}"
        for check in report["results"]["failed_checks"]
    ]
    assert failed == [], "checkov failed checks:\n" + "\n".join(failed)
    assert report["summary"]["parsing_errors"] == 0


def test_checkov_scans_every_stack(report, rendered):
    scanned = {check["file_path"].split("/")[1] for check in report["results"]["passed_checks"]}
    assert scanned == set(STACKS)
    written = sum(1 for stack in STACKS for _ in (rendered / stack).rglob("*.yaml"))
    assert report["summary"]["resource_count"] >= written - len(STACKS)  # less each stack's third-party.yaml


def test_the_workloads_pass_secrets_as_files_and_a_high_uid(report):
    """CKV_K8S_35 (no Secret in an env var) and CKV_K8S_40 (UID >= 10000) ran on every workload of every stack:
    they were neither skipped nor blind to one."""
    passed = defaultdict(set)
    for check in report["results"]["passed_checks"]:
        passed[check["check_id"]].add((check["file_path"].split("/")[1], _workload(check["resource"])))
    every_workload = {(stack, workload) for stack in STACKS for workload in platform_workloads(stack)}
    for check_id in ("CKV_K8S_35", "CKV_K8S_40"):
        assert every_workload <= passed[check_id], check_id


def platform_workloads(stack: str) -> set[str]:
    rolling = stack_config(stack)[f"{PROJECT}:apiDeployStrategy"] == "rolling"
    return PLATFORM_WORKLOADS | ({ROLLING_API} if rolling else set())


def _workload(resource: str) -> str:
    # The migrations Job is named by Pulumi's auto-naming (workflow-migrate-<suffix>): its kind and namespace suffice.
    return "Job.workflow." if resource.startswith("Job.workflow.") else resource
