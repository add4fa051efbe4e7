"""The GitHub Actions pipeline: valid workflows; pull requests tested, built, scanned and previewed into one comment;
merges built once, scanned, and promoted by digest dev -> staging -> prod, with the approval before prod and the
rollback on a failed deploy."""

import json
import re
import shutil
import subprocess
import sys

import pytest
import yaml

from tools.mock_stack import ROOT, STACKS
from tools.preview_comment import COMMENT_MARKER, render_comment, render_section

WORKFLOWS = ROOT / ".github" / "workflows"
BOTH_PLATFORMS = {"linux/amd64", "linux/arm64"}
PROMOTION_CHAIN = [
    "build",
    "scan-image",
    "deploy-dev",
    "smoke-dev",
    "deploy-staging",
    "integration-staging",
    "deploy-prod",
]
DIGEST = "${{ needs.build.outputs.digest }}"
IMAGE = "${{ needs.build.outputs.repository }}@${{ needs.build.outputs.digest }}"


def _load(name):
    workflow = yaml.safe_load((WORKFLOWS / name).read_text())
    # YAML 1.1 reads the key `on` as the boolean true.
    workflow["on"] = workflow.pop(True, workflow.get("on"))
    return workflow


PULL_REQUEST = _load("pull-request.yml")
DELIVERY = _load("delivery.yml")
DEPLOY = _load("deploy-stack.yml")
VERIFY = _load("verify-stack.yml")
REUSABLE = {"./.github/workflows/deploy-stack.yml": DEPLOY, "./.github/workflows/verify-stack.yml": VERIFY}


def _steps(job):
    return job.get("steps", [])


def _step_using(job, action):
    (step,) = [step for step in _steps(job) if step.get("uses", "").startswith(action + "@")]
    return step


def _index_of_run(job, text):
    (index,) = [i for i, step in enumerate(_steps(job)) if text in step.get("run", "")]
    return index


def _needs(job):
    needs = job.get("needs", [])
    return [needs] if isinstance(needs, str) else needs


def _upstream(jobs, name):
    """Every job `name` waits for, directly or through others."""
    seen, todo = set(), list(_needs(jobs[name]))
    while todo:
        job = todo.pop()
        if job not in seen:
            seen.add(job)
            todo.extend(_needs(jobs[job]))
    return seen


def _jobs_after_build():
    jobs = DELIVERY["jobs"]
    return {name: job for name, job in jobs.items() if "build" in _upstream(jobs, name)}


def _all_jobs_run_after_build():
    """The jobs after the build, with the jobs of the reusable workflows they call."""
    jobs = list(_jobs_after_build().values())
    for job in list(jobs):
        if "uses" in job:
            jobs.extend(REUSABLE[job["uses"]]["jobs"].values())
    return jobs


def test_workflows_match_the_github_schema():
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "check_jsonschema",
            "--builtin-schema",
            "vendor.github-workflows",
            *map(str, WORKFLOWS.glob("*.yml")),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_pull_requests_and_merges_trigger_their_own_workflows():
    assert set(PULL_REQUEST["on"]) == {"pull_request"}
    assert DELIVERY["on"] == {"push": {"branches": ["main"]}}
    assert set(DEPLOY["on"]) == set(VERIFY["on"]) == {"workflow_call"}


def test_third_party_actions_are_pinned_to_a_commit_with_its_version_named():
    for path in WORKFLOWS.glob("*.yml"):
        for line in path.read_text().splitlines():
            match = re.search(r"uses: (\S+)(.*)", line)
            if match and not match[1].startswith("./"):
                assert re.fullmatch(r"[\w.-]+/[\w./-]+@[0-9a-f]{40}", match[1]), f"{path.name}: {line.strip()}"
                assert re.fullmatch(r"\s+# v\d+(\.\d+)*", match[2]), f"{path.name}: {line.strip()}"


def test_pull_requests_run_the_readme_test_command():
    assert any(step.get("run") == "make test" for step in _steps(PULL_REQUEST["jobs"]["test"]))


def test_pull_requests_build_the_image_for_both_platforms_without_pushing():
    job = PULL_REQUEST["jobs"]["build-image"]
    build = _step_using(job, "docker/build-push-action")["with"]
    assert build["context"] == "app"
    assert set(build["platforms"].split(",")) == BOTH_PLATFORMS
    assert build["push"] is False
    _step_using(job, "docker/setup-qemu-action")
    _step_using(job, "docker/setup-buildx-action")


def test_pull_requests_scan_the_dependencies_with_trivy_failing_on_fixable_critical_or_high():
    trivy = _step_using(PULL_REQUEST["jobs"]["scan-dependencies"], "aquasecurity/trivy-action")["with"]
    assert trivy["scan-type"] == "fs" and trivy["scan-ref"] == "."
    assert "vuln" in trivy["scanners"].split(",")
    assert set(trivy["severity"].split(",")) == {"CRITICAL", "HIGH"}
    assert trivy["ignore-unfixed"] is True and trivy["exit-code"] == "1"


def test_pull_requests_scan_every_stacks_manifests_with_trivy():
    job = PULL_REQUEST["jobs"]["scan-manifests"]
    assert job["strategy"]["matrix"]["stack"] == list(STACKS)
    render = _index_of_run(job, "make manifests STACK=${{ matrix.stack }}")
    trivy = _step_using(job, "aquasecurity/trivy-action")
    assert _steps(job).index(trivy) > render
    assert trivy["with"]["scan-type"] == "config"
    assert trivy["with"]["scan-ref"] == "manifests/${{ matrix.stack }}"  # where `make manifests` writes (Makefile)
    assert set(trivy["with"]["severity"].split(",")) == {"CRITICAL", "HIGH"} and trivy["with"]["exit-code"] == "1"


def test_pull_requests_preview_every_stack_with_the_policy_pack_and_its_event_log():
    job = PULL_REQUEST["jobs"]["preview"]
    assert job["strategy"]["matrix"]["stack"] == list(STACKS)
    preview = _steps(job)[_index_of_run(job, "pulumi preview --stack")]
    command = preview["run"]
    assert "--policy-pack policy" in command and (ROOT / "policy" / "PulumiPolicy.yaml").exists()
    assert "--json" in command and "> preview.json" in command
    # --event-log, where the policy violations are, is a flag the CLI shows only with PULUMI_DEBUG_COMMANDS.
    assert "--event-log events.jsonl" in command and preview["env"]["PULUMI_DEBUG_COMMANDS"] == "true"
    render = _steps(job)[_index_of_run(job, "preview-comment")]["run"]
    assert re.search(r"make .*preview-comment PREVIEW=preview\.json STACK=\"\$STACK\" EVENTS=events\.jsonl", render)


def test_pull_requests_post_one_comment_found_by_its_marker():
    job = PULL_REQUEST["jobs"]["preview-comment"]
    assert job["needs"] == "preview" and job["permissions"]["pull-requests"] == "write"
    script_step = _step_using(job, "actions/github-script")
    script = script_step["with"]["script"]
    assert COMMENT_MARKER in script
    for call in ("listComments", "updateComment", "createComment"):
        assert f"github.rest.issues.{call}" in script
    assert script_step["env"]["STACKS"].split() == list(STACKS)


@pytest.fixture
def run_comment_script(tmp_path):
    """Runs the comment job's script under Node against a fake GitHub API holding `comments`, with one rendered
    comment file per stack in `rendered`; returns the API calls it made."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is needed to run the comment job's script")
    step = _step_using(PULL_REQUEST["jobs"]["preview-comment"], "actions/github-script")
    harness = (
        """
        const input = JSON.parse(require("fs").readFileSync(0, "utf8"));
        const calls = [];
        const github = {
          paginate: async (method, args) => { calls.push({ list: args }); return input.comments; },
          rest: { issues: {
            listComments: () => { throw new Error("called through paginate"); },
            updateComment: async (args) => { calls.push({ update: args }); },
            createComment: async (args) => { calls.push({ create: args }); },
          } },
        };
        const context = {
          repo: { owner: "example-org", repo: "workflow-platform" }, issue: { number: 7 }, runId: 42,
          serverUrl: "https://github.com", payload: { pull_request: { head: { sha: "0123abc" } } },
        };
        (async () => {"""
        + step["with"]["script"]
        + """})().then(() => process.stdout.write(JSON.stringify(calls)));
        """
    )
    (tmp_path / "harness.js").write_text(harness)

    def run(rendered, comments):
        (tmp_path / "comment").mkdir(exist_ok=True)
        for stack, body in rendered.items():
            (tmp_path / "comment" / f"{stack}.md").write_text(body)
        result = subprocess.run(
            [node, "harness.js"],
            input=json.dumps({"comments": comments}),
            cwd=tmp_path,
            env={"STACKS": step["env"]["STACKS"], "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    return run


def _rendered(stack, resources):
    preview = {"steps": [], "changeSummary": {"same": resources}}
    return render_comment([render_section(stack, preview)])


def test_the_first_preview_creates_one_comment_with_every_stacks_section(run_comment_script):
    calls = run_comment_script({stack: _rendered(stack, 10) for stack in STACKS}, comments=[])
    assert calls[0]["list"]["issue_number"] == 7
    (create,) = [call["create"] for call in calls if "create" in call]
    assert not any("update" in call for call in calls)
    body = create["body"]
    assert body.startswith(COMMENT_MARKER)
    sections = [render_section(stack, {"steps": [], "changeSummary": {"same": 10}}) for stack in STACKS]
    positions = [body.index(section) for section in sections]
    assert positions == sorted(positions)


def test_a_later_preview_updates_the_bots_comment_in_place_section_by_section(run_comment_script):
    old_body = render_comment(
        [render_section(stack, {"steps": [], "changeSummary": {"same": 1}}) for stack in STACKS]
    ).replace("## Pulumi preview", "## Pulumi preview\n\n(a note above the sections)")
    comments = [
        {"id": 1, "user": {"type": "User"}, "body": f"quoting the bot: {COMMENT_MARKER}"},
        {"id": 2, "user": {"type": "Bot"}, "body": old_body},
    ]
    calls = run_comment_script({"dev": _rendered("dev", 5), "prod": _rendered("prod", 9)}, comments)
    (update,) = [call["update"] for call in calls if "update" in call]
    assert update["comment_id"] == 2 and not any("create" in call for call in calls)
    body = update["body"]
    assert "(a note above the sections)" in body
    assert render_section("dev", {"steps": [], "changeSummary": {"same": 5}}) in body
    assert render_section("prod", {"steps": [], "changeSummary": {"same": 9}}) in body
    # staging left no section this run: its old one is replaced by a pointer to the run, never kept as if current.
    assert render_section("staging", {"steps": [], "changeSummary": {"same": 1}}) not in body
    assert "no preview" in body and "0123abc" in body
    assert body.count("workflow-platform-preview:stack=staging:start") == 1


def test_merges_run_the_tests_before_building():
    jobs = DELIVERY["jobs"]
    assert any(step.get("run") == "make test" for step in _steps(jobs["test"]))
    assert "test" in _needs(jobs["build"])


def test_merges_build_once_for_both_platforms_with_sbom_and_provenance_and_push_by_digest():
    job = DELIVERY["jobs"]["build"]
    step = _step_using(job, "docker/build-push-action")
    build = step["with"]
    assert build["context"] == "app" and build["push"] is True
    assert (
        set(DELIVERY["env"]["PLATFORMS"].split(",")) == BOTH_PLATFORMS and build["platforms"] == "${{ env.PLATFORMS }}"
    )
    assert build["sbom"] is True and build["provenance"] == "mode=max"
    assert job["outputs"]["digest"] == f"${{{{ steps.{step['id']}.outputs.digest }}}}"
    assert job["permissions"]["packages"] == "write"


def test_the_image_is_pushed_to_the_repository_the_stacks_pull_from():
    project = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())
    assert DELIVERY["env"]["IMAGE_REPOSITORY"] == project["config"]["imageRepository"]["default"]
    assert DELIVERY["jobs"]["build"]["outputs"]["repository"] == "${{ env.IMAGE_REPOSITORY }}"


def test_the_promotion_chain_runs_in_order():
    jobs = DELIVERY["jobs"]
    for earlier, later in zip(PROMOTION_CHAIN, PROMOTION_CHAIN[1:], strict=False):
        assert earlier in _upstream(jobs, later), f"{later} does not wait for {earlier}"
    assert {"scan-image", "snyk"} <= set(_needs(jobs["deploy-dev"]))


def test_prod_is_deployed_only_after_approval_in_the_production_environment():
    deploy_prod = DELIVERY["jobs"]["deploy-prod"]
    assert deploy_prod["with"]["environment"] == "production"
    assert "integration-staging" in _needs(deploy_prod)
    (job,) = REUSABLE[deploy_prod["uses"]]["jobs"].values()
    assert job["environment"] == "${{ inputs.environment }}"


def test_dev_staging_and_prod_are_deployed_by_one_shared_definition():
    jobs = DELIVERY["jobs"]
    for stack in STACKS:
        job = jobs[f"deploy-{stack}"]
        assert job["uses"] == "./.github/workflows/deploy-stack.yml"
        assert job["with"]["stack"] == stack and job["secrets"] == "inherit"


def test_every_scan_and_deploy_uses_the_digest_the_build_pushed():
    jobs = DELIVERY["jobs"]
    assert DIGEST in _step_using(jobs["scan-image"], "aquasecurity/trivy-action")["with"]["image-ref"]
    assert jobs["snyk"]["env"]["IMAGE"] == IMAGE
    for stack in STACKS:
        assert jobs[f"deploy-{stack}"]["with"]["digest"] == DIGEST
    for job in ("smoke-dev", "integration-staging"):
        assert jobs[job]["with"]["image"] == IMAGE
    (deploy,) = DEPLOY["jobs"].values()
    assert deploy["env"]["IMAGE"] == "${{ inputs.repository }}@${{ inputs.digest }}"


def test_nothing_after_the_build_builds_or_pushes_an_image():
    jobs = _all_jobs_run_after_build()
    assert len(jobs) >= len(PROMOTION_CHAIN)
    for job in jobs:
        for step in _steps(job):
            assert not step.get("uses", "").startswith("docker/build-push-action@")
            assert step.get("with", {}).get("push") is not True
            assert not re.search(r"docker (buildx )?(build|push)|buildx bake", step.get("run", ""))


def test_a_deploy_pins_the_digest_as_the_stacks_image_before_pulumi_up():
    (job,) = DEPLOY["jobs"].values()
    pin = _index_of_run(job, 'pulumi config set image "$IMAGE" --stack "$STACK"')
    up = next(i for i, step in enumerate(_steps(job)) if step.get("id") == "up")
    assert pin < up
    assert "pulumi up" in _steps(job)[up]["run"] and "--policy-pack policy" in _steps(job)[up]["run"]
    assert re.search(r"\^sha256:\[0-9a-f\]\{64\}\$", _steps(job)[0]["run"]), "the digest is checked first"


def test_trivy_fails_the_run_on_fixable_critical_or_high_findings_in_the_digest():
    job = DELIVERY["jobs"]["scan-image"]
    assert set(job["strategy"]["matrix"]["platform"]) == BOTH_PLATFORMS
    step = _step_using(job, "aquasecurity/trivy-action")
    trivy = step["with"]
    assert trivy["scan-type"] == "image" and trivy["image-ref"] == IMAGE
    assert set(trivy["severity"].split(",")) == {"CRITICAL", "HIGH"}
    assert trivy["ignore-unfixed"] is True and trivy["exit-code"] == "1"
    assert step["env"]["TRIVY_PLATFORM"] == "${{ matrix.platform }}"


def test_snyk_runs_only_when_its_token_exists_and_the_summary_says_when_it_was_skipped():
    job = DELIVERY["jobs"]["snyk"]
    assert job["env"]["SNYK_TOKEN"] == "${{ secrets.SNYK_TOKEN }}"
    snyk = [step for step in _steps(job) if "snyk container test" in step.get("run", "")]
    assert snyk and all(step["if"] == "env.SNYK_TOKEN != ''" for step in snyk)
    assert "--fail-on=upgradable" in snyk[0]["run"] and "--severity-threshold=high" in snyk[0]["run"]
    (skipped,) = [step for step in _steps(job) if step.get("if") == "env.SNYK_TOKEN == ''"]
    assert "Snyk was skipped" in skipped["run"] and '>> "$GITHUB_STEP_SUMMARY"' in skipped["run"]


def test_no_condition_reads_secrets_which_github_refuses_in_if():
    for workflow in (PULL_REQUEST, DELIVERY, DEPLOY, VERIFY):
        for job in workflow["jobs"].values():
            for where in [job, *_steps(job)]:
                assert "secrets." not in str(where.get("if", ""))


def test_a_failed_deploy_redeploys_the_previous_image_says_so_and_still_fails():
    (job,) = DEPLOY["jobs"].values()
    steps = _steps(job)
    previous = next(i for i, step in enumerate(steps) if step.get("id") == "previous")
    up = next(i for i, step in enumerate(steps) if step.get("id") == "up")
    assert previous < up and "pulumi stack output imageRef" in steps[previous]["run"]
    (rollback,) = [step for step in steps if step.get("if", "").startswith("failure()")]
    assert "steps.previous.outputs.image-ref != ''" in rollback["if"]
    assert rollback["env"]["PREVIOUS_IMAGE"] == "${{ steps.previous.outputs.image-ref }}"
    assert 'pulumi config set image "$PREVIOUS_IMAGE"' in rollback["run"] and "pulumi up" in rollback["run"]
    assert '>> "$GITHUB_STEP_SUMMARY"' in rollback["run"]
    # The failed step fails the job whatever the rollback does.
    assert not any(step.get("continue-on-error") for step in steps)


def test_a_blue_green_deploy_waits_for_promotion_and_fails_when_the_analysis_aborted_it():
    (job,) = DEPLOY["jobs"].values()
    steps = _steps(job)
    wait = next(i for i, step in enumerate(steps) if "status.phase" in step.get("run", ""))
    up = next(i for i, step in enumerate(steps) if step.get("id") == "up")
    assert wait > up and steps[wait]["if"] == "steps.rollout.outputs.blue-green == 'true'"
    script = steps[wait]["run"]
    assert '"$phase" = "Degraded"' in script and '"$aborted" = "true"' in script and "exit 1" in script
    assert '"$phase" = "Healthy"' in script and '"$current" = "$stable"' in script


def test_dev_is_smoke_tested_with_the_stacks_bootstrap_key():
    job = DELIVERY["jobs"]["smoke-dev"]
    assert job["uses"] == "./.github/workflows/verify-stack.yml" and job["with"]["suite"] == "smoke"
    assert job["with"]["api-url"] == "${{ needs.deploy-dev.outputs.api-url }}"
    (verify,) = VERIFY["jobs"].values()
    smoke = _steps(verify)[_index_of_run(verify, "python -m app smoke")]
    assert "if" not in smoke
    assert '--url "$API_URL"' in smoke["run"] and '--api-key-file "$RUNNER_TEMP/api-key"' in smoke["run"]
    key = _steps(verify)[_index_of_run(verify, "get secret")]
    assert 'get secret "$SECRET"' in key["run"] and key["env"]["SECRET"] == "${{ inputs.bootstrap-api-key-secret }}"


def test_staging_runs_the_integration_suite_smoke_plus_the_promoted_rollout():
    job = DELIVERY["jobs"]["integration-staging"]
    assert job["with"]["suite"] == "integration" and job["with"]["stack"] == "staging"
    assert job["with"]["api-url"] == "${{ needs.deploy-staging.outputs.api-url }}"
    (verify,) = VERIFY["jobs"].values()
    integration_only = [step for step in _steps(verify) if step.get("if") == "inputs.suite == 'integration'"]
    rollout = next(step for step in integration_only if "rollouts.argoproj.io" in step["run"])
    for check in ('"$phase" = "Healthy"', '"$current" = "$stable"', '"$active" = "$current"', '*" $IMAGE "*'):
        assert check in rollout["run"]
    assert any("/readyz" in step["run"] for step in integration_only)


def test_reusable_workflows_are_called_with_exactly_their_inputs():
    for name, job in DELIVERY["jobs"].items():
        if "uses" in job:
            declared = REUSABLE[job["uses"]]["on"]["workflow_call"]["inputs"]
            required = {key for key, spec in declared.items() if spec.get("required")}
            assert required <= set(job["with"]) <= set(declared), name


def test_every_output_read_downstream_is_declared_where_it_comes_from():
    jobs = DELIVERY["jobs"]
    text = (WORKFLOWS / "delivery.yml").read_text()
    for upstream, output in set(re.findall(r"needs\.([\w-]+)\.outputs\.([\w-]+)", text)):
        job = jobs[upstream]
        outputs = REUSABLE[job["uses"]]["on"]["workflow_call"]["outputs"] if "uses" in job else job["outputs"]
        assert output in outputs, f"needs.{upstream}.outputs.{output}"
    for workflow in (DEPLOY,):
        for output in workflow["on"]["workflow_call"]["outputs"].values():
            job, name = re.fullmatch(r"\$\{\{ jobs\.([\w-]+)\.outputs\.([\w-]+) \}\}", output["value"]).groups()
            assert name in workflow["jobs"][job]["outputs"]


def test_every_script_fails_on_a_failure_inside_a_pipe():
    # `shell: bash` runs `bash -eo pipefail`; the runner's default (`bash -e`) would ignore `kubectl ... | base64`
    # failing on the left.
    for workflow in (PULL_REQUEST, DELIVERY, DEPLOY, VERIFY):
        assert workflow["defaults"]["run"]["shell"] == "bash"
