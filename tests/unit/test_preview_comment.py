"""The pull request comment made from `pulumi preview --json` (tools/preview_comment.py): what needs attention comes
first, the full diff is collapsed, and no preview, however empty, failed, foreign or hostile, breaks it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from components.data_plane import VALKEY_RELEASE
from tools import preview_comment
from tools.preview_comment import COMMENT_MARKER, merge, read_events, read_preview, render_comment, render_section

FIXTURES = Path(__file__).parent / "fixtures" / "preview"
PREFIX = "urn:pulumi:prod::workflow-platform::"
OLD_IMAGE = (
    "ghcr.io/example-org/workflow-platform@sha256:3f1d6c1e0b5a9f1c2d7e4b8a6c3e9f0a1b2c4d5e6f708192a3b4c5d6e7f80912"
)
NEW_IMAGE = (
    "ghcr.io/example-org/workflow-platform@sha256:9c2e7a41d0b35f86e1a4c7d92b0e83f5a6c1d4e7b2f9a0c3d6e1b4a7f0c3e6d9"
)


def comment(fixture: str, stack: str = "prod", events: str | None = None) -> str:
    preview = read_preview(FIXTURES / fixture)
    return render_comment([render_section(stack, preview, read_events(FIXTURES / events) if events else None)])


def realistic() -> str:
    return comment("realistic.json", events="realistic.events.jsonl")


def attention_part(markdown: str) -> str:
    """From "Needs attention" to the full diff."""
    return markdown.split("#### Needs attention", 1)[1].split("<summary>Full diff", 1)[0]


def step(op: str, resource_type: str, name: str, parents: tuple[str, ...] = (), **fields) -> dict:
    qualified = "$".join(("workflow-platform:index:DataPlane", *parents, resource_type))
    return {"op": op, "urn": f"{PREFIX}{qualified}::{name}", "detailedDiff": None, **fields}


def inline(*steps: dict, **digest) -> str:
    return render_section("prod", {"steps": list(steps), **digest})


def workload_inputs(image: str) -> dict:
    return {"spec": {"template": {"spec": {"containers": [{"name": "api", "image": image}]}}}}


# The three previews every workflow run meets


def test_an_empty_preview_has_nothing_that_needs_attention():
    markdown = comment("empty.json")

    assert "### Stack `prod`: ✅ the preview succeeded" in markdown
    assert "Nothing: no data-bearing resource replaced or deleted" in markdown
    assert "<details>" not in markdown


def test_a_failed_preview_shows_its_errors_as_they_were_printed():
    markdown = comment("failed.json", stack="staging")

    assert "### Stack `staging`: ❌ the preview failed" in markdown
    assert (
        '  File "/work/__main__.py", line 31, in &lt;module&gt;\n    config = read_config()\n'
        "components.config.ConfigError: alertReceiverRequired is true but no receiver is set" in markdown
    )


def test_a_failed_preview_without_steps_records_no_changes():
    assert "**Changes:** none recorded." in comment("failed.json", stack="staging")


def test_a_failed_preview_without_its_event_log_says_violations_are_not_listed():
    assert "Not listed: `pulumi preview --json` leaves policy violations out." in comment("failed.json")


def test_an_empty_file_reads_as_a_failed_preview(tmp_path):
    (tmp_path / "preview.json").write_text("")

    markdown = render_section("prod", read_preview(tmp_path / "preview.json"))

    assert "❌ the preview failed" in markdown and "The preview printed nothing: see the workflow log." in markdown


# A realistic preview


def test_the_counts_by_operation_come_from_the_change_summary():
    assert "**Changes:** create 3 · update 3 · replace 1 · delete 1 · same 156" in realistic()


def test_the_postgresql_cluster_replacement_needs_attention():
    assert (
        "- **replace** PostgreSQL Cluster <code>workflow-postgres</code> — replaced because of "
        "<code>metadata.name</code>" in attention_part(realistic())
    )


def test_a_deleted_persistent_volume_claim_needs_attention():
    assert (
        "- **delete** PersistentVolumeClaim <code>jaeger:workflow-observability/jaeger-badger</code>"
        in attention_part(realistic())
    )


def test_the_api_image_change_shows_the_old_and_the_new_image():
    old, new = (image.replace("@", "\\@") for image in (OLD_IMAGE, NEW_IMAGE))

    assert (
        f"- Deployment <code>workflow-api</code>, container <code>api</code>: <code>{old}</code> → <code>{new}</code>"
        in attention_part(realistic())
    )


def test_a_network_policy_change_needs_attention_with_the_paths_it_changes():
    assert (
        "- **update** <code>workflow-data-api-to-data-ingress</code> — <code>spec.ingress\\[0\\].from\\[1\\]</code>"
        in attention_part(realistic())
    )


def test_policy_violations_are_read_from_the_event_log():
    assert (
        "- **mandatory** <code>workflow-platform/no-load-balancer-service</code> on Service "
        "<code>workflow-api-debug</code>: The only way in is the Gateway" in attention_part(realistic())
    )


def test_the_preview_failure_is_among_the_errors():
    assert "**Errors**\n\n<pre>error: preview failed</pre>" in realistic()


def test_a_resource_of_an_unknown_provider_is_in_the_full_diff_only():
    markdown = realistic()

    assert "| create | <code>api-cname</code> | acme:dns/record:Record |  |" in markdown
    assert "api-cname" not in attention_part(markdown)


def test_a_secret_updated_in_place_needs_no_attention():
    assert "workflow-postgres-app-credentials" not in attention_part(realistic())


def test_needs_attention_comes_before_the_collapsed_full_diff():
    markdown = realistic()

    assert markdown.index("#### Needs attention") < markdown.index("<details>\n<summary>Full diff (8 steps)</summary>")


def test_the_full_diff_lists_each_changed_property_with_its_kind():
    assert (
        "| replace | <code>workflow-postgres</code> | kubernetes:postgresql.cnpg.io/v1:Cluster | "
        "<code>metadata.name</code> (update-replace)<br><code>spec.imageName</code> (update)<br>"
        "replaces on <code>metadata</code> |" in realistic()
    )


# Each rule on a preview of its own


def test_the_valkey_release_is_data_bearing():
    markdown = inline(step("replace", "kubernetes:helm.sh/v4:Chart", VALKEY_RELEASE))

    assert f"- **replace** Valkey release (helm.sh/v4) <code>{VALKEY_RELEASE}</code>" in markdown


def test_a_child_of_the_valkey_chart_is_named_after_the_release():
    name = f"{VALKEY_RELEASE}:workflow-data/{VALKEY_RELEASE}"
    markdown = inline(step("delete", "kubernetes:apps/v1:StatefulSet", name, parents=("kubernetes:helm.sh/v4:Chart",)))

    assert "- **delete** StatefulSet of the Valkey release <code>" in markdown


def test_a_credentials_secret_replacement_needs_attention():
    secret = {"type": "kubernetes:core/v1:Secret", "inputs": {"stringData": "[secret]"}}
    markdown = inline(step("replace", "kubernetes:core/v1:Secret", "workflow-connection", oldState=secret))

    assert "- **replace** Secret holding credentials <code>workflow-connection</code>" in markdown


def test_a_namespace_deletion_needs_attention():
    markdown = inline(step("delete", "kubernetes:core/v1:Namespace", "workflow-data"))

    assert "- **delete** Namespace (and everything in it) <code>workflow-data</code>" in markdown


def test_a_stateful_set_updated_in_place_needs_no_attention():
    markdown = inline(step("update", "kubernetes:apps/v1:StatefulSet", "workflow-valkey"))

    assert "Replaces or deletes data" not in markdown


def test_an_rbac_change_needs_attention():
    markdown = inline(step("create", "kubernetes:rbac.authorization.k8s.io/v1:RoleBinding", "smoke-reader"))

    assert "**RBAC changes**\n\n- **create** RoleBinding <code>smoke-reader</code>" in markdown


def test_a_replacement_shown_as_several_steps_is_listed_once():
    steps = [
        step(op, "kubernetes:postgresql.cnpg.io/v1:Cluster", "workflow-postgres")
        for op in ("create-replacement", "replace", "delete-replaced")
    ]

    assert inline(*steps).count("PostgreSQL Cluster <code>workflow-postgres</code>") == 1


def test_an_image_unknown_until_apply_says_so():
    old = {"type": "kubernetes:apps/v1:Deployment", "inputs": workload_inputs(OLD_IMAGE)}
    new = {"type": "kubernetes:apps/v1:Deployment", "inputs": workload_inputs(preview_comment.UNKNOWN)}
    markdown = inline(step("update", "kubernetes:apps/v1:Deployment", "workflow-api", oldState=old, newState=new))

    assert "container <code>api</code>: <code>" in markdown and "→ (known after apply)" in markdown


def test_a_rollout_image_change_needs_attention():
    old = {"inputs": workload_inputs("registry.example/api:1")}
    new = {"inputs": workload_inputs("registry.example/api:2")}
    rollout = "kubernetes:argoproj.io/v1alpha1:Rollout"
    markdown = inline(step("update", rollout, "workflow-api", oldState=old, newState=new))

    assert "- Rollout <code>workflow-api</code>, container <code>api</code>: <code>registry.example/api:1</code>" in (
        markdown
    )


def test_a_long_list_of_changes_of_one_kind_is_collapsed_but_complete():
    steps = [step("create", "kubernetes:networking.k8s.io/v1:NetworkPolicy", f"policy-{i}") for i in range(11)]
    markdown = inline(*steps)

    assert "<details>\n<summary>NetworkPolicy changes (11)</summary>" in markdown
    assert "<code>policy-10</code>" in attention_part(markdown)


def test_the_full_diff_is_cut_short_past_its_budget():
    steps = [step("create", "kubernetes:core/v1:ConfigMap", f"dashboard-{i:04}" + "x" * 100) for i in range(200)]
    markdown = inline(*steps)

    assert len(markdown) < preview_comment.FULL_DIFF_BUDGET + 2_000
    assert "more steps: see the workflow log" in markdown


def test_counts_fall_back_to_the_steps_when_the_preview_gave_no_summary():
    markdown = inline(step("create", "kubernetes:core/v1:ConfigMap", "a"), step("create", "aws:s3/bucket:Bucket", "b"))

    assert "**Changes:** create 2 (counted from the steps shown: the preview gave no summary)" in markdown


def test_fields_missing_or_of_the_wrong_shape_do_not_stop_the_comment():
    markdown = render_section(
        "prod",
        {
            "steps": [{}, {"op": "update", "urn": 7, "oldState": [], "newState": "x", "detailedDiff": {"a": None}}],
            "diagnostics": [{}, {"severity": "error"}],
            "changeSummary": {"update": "many"},
        },
    )

    assert "❌ the preview failed" in markdown


# What the preview holds is escaped


def test_names_from_the_preview_cannot_break_the_markdown():
    markdown = comment("hostile.json", stack="dev")

    assert "<script>" not in markdown and "<b>" not in markdown
    assert "<code>a\\|b \\`code\\` &lt;script&gt;alert\\(1\\)&lt;/script&gt; \\@example-org/admins" in markdown


def test_a_table_cell_keeps_its_pipes_escaped():
    markdown = comment("hostile.json", stack="dev")

    assert "| evil:index/thing:Thing | <code>x\\|y\\`z\\`&lt;b&gt;</code> (update) |" in markdown


def test_an_error_message_cannot_close_its_block():
    markdown = comment("hostile.json", stack="dev")

    assert "error: provider said &lt;/pre&gt;&lt;img src=x onerror=alert(1)&gt; | `boom`</pre>" in markdown
    assert markdown.count("</pre>") == 1


# One comment, a section per stack


def test_the_comment_starts_with_its_hidden_marker_and_marks_each_section():
    markdown = comment("empty.json")

    assert markdown.startswith(COMMENT_MARKER)
    assert "<!-- workflow-platform-preview:stack=prod:start -->" in markdown
    assert markdown.rstrip().endswith("<!-- workflow-platform-preview:stack=prod:end -->")


def test_merging_replaces_this_stacks_section_and_keeps_the_others():
    dev = render_section("dev", read_preview(FIXTURES / "empty.json"))
    existing = render_comment([dev, render_section("prod", read_preview(FIXTURES / "failed.json"))])

    merged = merge(existing, "prod", render_section("prod", read_preview(FIXTURES / "empty.json")))

    assert dev in merged
    assert "ConfigError" not in merged
    assert merged.index("stack=dev:start") < merged.index("stack=prod:start")
    assert merged.count("stack=prod:start") == 1


def test_merging_a_new_stack_adds_its_section_after_the_others():
    existing = render_comment([render_section("dev", read_preview(FIXTURES / "empty.json"))])

    merged = merge(existing, "staging", render_section("staging", read_preview(FIXTURES / "failed.json")))

    assert merged.index("stack=dev:start") < merged.index("stack=staging:start")
    assert merged.count(COMMENT_MARKER) == 1


def test_merging_into_a_body_that_is_not_this_comment_starts_afresh():
    section = render_section("prod", read_preview(FIXTURES / "empty.json"))

    assert merge("Thanks for the PR!", "prod", section) == render_comment([section])


def test_the_command_merges_into_an_existing_comment(tmp_path, capsys):
    existing = tmp_path / "comment.md"
    existing.write_text(render_comment([render_section("dev", read_preview(FIXTURES / "failed.json"))]))

    preview_comment.main(["--stack", "prod", "--merge-into", str(existing), str(FIXTURES / "empty.json")])

    printed = capsys.readouterr().out
    assert "stack=dev:start" in printed and "stack=prod:start" in printed


def test_the_command_refuses_what_is_not_a_stack_name(capsys):
    with pytest.raises(SystemExit):
        preview_comment.main(["--stack", "prod -->", str(FIXTURES / "empty.json")])


def test_the_fixtures_are_what_pulumi_prints():
    """Each fixture is a PreviewDigest: only its fields, the steps carrying only PreviewStep's."""
    digest_fields = {"config", "steps", "diagnostics", "duration", "changeSummary", "maybeCorrupt"}
    step_fields = {"op", "urn", "provider", "oldState", "newState", "diffReasons", "replaceReasons", "detailedDiff"}
    for fixture in ("empty.json", "failed.json", "realistic.json", "hostile.json"):
        digest = json.loads((FIXTURES / fixture).read_text())
        assert set(digest) <= digest_fields, fixture
        assert all(set(raw) <= step_fields for raw in digest.get("steps", [])), fixture
