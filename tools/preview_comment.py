"""`python -m tools.preview_comment --stack <name> <preview.json>`: a pull request comment from `pulumi preview --json`.

Each stack's section gives the counts by operation, then what a reviewer must look at ("Needs attention"):
replacements and deletions of resources that hold data, policy violations, the preview's errors, the images deployed
(old -> new), NetworkPolicy and RBAC changes; then the full diff, collapsed. A hidden marker lets a workflow find
its comment and update it in place, and each stack has a section of its own: `--merge-into <body>` replaces this
stack's section in an existing comment body and keeps the others.

What `pulumi preview --json` prints, as read here (pulumi/pulumi, sdk/go/common/display/json.go, filled by
`ShowPreviewDigest` in pkg/backend/display/json.go):

- `PreviewDigest`: `steps[]`, `diagnostics[]`, `changeSummary` (operation -> count, absent when the engine never
  summed up), `duration`, `maybeCorrupt`, `config`. Empty lists and maps are omitted, never null.
- `PreviewStep`: `op`, `urn`, `provider`, `oldState`/`newState` (`apitype.ResourceV3`: `type`, `inputs`,
  `outputs`, `parent`, ...; secrets shown as "[secret]", values unknown until apply as the placeholder
  `04da6b54-80e4-46f7-96ec-b56ff0331ba9`, pkg/resource/stack/deployment.go `computedValuePlaceholder`),
  `diffReasons` and `replaceReasons` (top-level keys), `detailedDiff` (property path -> `{kind, inputDiff}`, kind
  one of add, add-replace, delete, delete-replace, update, update-replace; null for creates).
  `op` is a `deploy.StepOp`: same, create, update, delete, replace, create-replacement, delete-replaced, read,
  read-replacement, refresh, discard, discard-replaced, remove-pending-replace, import, import-replacement. Unchanged
  resources appear only with `--show-sames` (the root stack always does); a replacement is one `replace` step unless
  `--show-replacement-steps` adds its create-replacement and delete-replaced steps.
- `PreviewDiagnostic`: `urn`, `message` (its "error: "/"warning: " prefix included), `severity`: info, info#err,
  warning or error.

Policy violations are not in that document: `ShowPreviewDigest` drops `PolicyViolationEvent`s, and a mandatory one
leaves only the engine's "preview failed" error. They are in the engine's event log (`pulumi preview --event-log
FILE`, a flag the CLI shows with PULUMI_DEBUG_COMMANDS=true): one `apitype.EngineEvent` per line
(sdk/go/common/apitype/events.go), violations as `policyEvent` {resourceUrn, message, policyName, policyPackName,
enforcementLevel}. Pass that file with `--events` and they are listed too.

Anything taken from the preview is escaped for Markdown and HTML before it is written: names, messages and
property paths come from programs and providers that know nothing of comments.
"""

from __future__ import annotations

import argparse
import html
import json
import re
import sys
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from components.data_plane import VALKEY_RELEASE
from policy.validators import POD_SPEC_PATHS

COMMENT_MARKER = "<!-- workflow-platform-preview -->"
TITLE = "## Pulumi preview"
STACK_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"
# A GitHub comment holds 65,536 characters and carries a section per stack; past this the full diff is cut short.
FULL_DIFF_BUDGET = 15_000
# Longer lists of one kind of change are collapsed, still complete, so the rest of "Needs attention" stays in view.
INLINE_ITEMS = 10

CHANGING = {
    "create",
    "update",
    "delete",
    "replace",
    "create-replacement",
    "delete-replaced",
    "import",
    "import-replacement",
}
REPLACING = {"replace", "create-replacement", "delete-replaced", "import-replacement"}
DELETING = {"delete"}
OPERATION_ORDER = ["create", "update", "replace", "delete", "same"]

# (group, kind) of the Kubernetes objects that hold data, with what to call them.
DATA_BEARING = {
    ("core", "PersistentVolumeClaim"): "PersistentVolumeClaim",
    ("core", "PersistentVolume"): "PersistentVolume",
    ("apps", "StatefulSet"): "StatefulSet",
    ("postgresql.cnpg.io", "Cluster"): "PostgreSQL Cluster",
    ("rabbitmq.com", "RabbitmqCluster"): "RabbitmqCluster",
    ("core", "Namespace"): "Namespace (and everything in it)",
}
HELM = {"kubernetes:helm.sh/v3:Release", "kubernetes:helm.sh/v4:Chart"}
NETWORK_POLICIES = {("networking.k8s.io", "NetworkPolicy")}
RBAC = {
    ("rbac.authorization.k8s.io", "Role"),
    ("rbac.authorization.k8s.io", "ClusterRole"),
    ("rbac.authorization.k8s.io", "RoleBinding"),
    ("rbac.authorization.k8s.io", "ClusterRoleBinding"),
    ("core", "ServiceAccount"),
}

# Markdown's punctuation, and @ so a name never mentions anyone; < > & are left to html.escape.
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+!|~@])")


@dataclass(frozen=True)
class Step:
    """One step of the preview, read defensively: any field may be missing."""

    op: str
    urn: str
    type: str
    name: str
    old: Mapping[str, Any]
    new: Mapping[str, Any]
    diff_reasons: tuple[str, ...]
    replace_reasons: tuple[str, ...]
    detailed_diff: Mapping[str, Any]

    @classmethod
    def parse(cls, raw: Any) -> Step:
        raw = _mapping(raw)
        urn = str(raw.get("urn") or "")
        old, new = _mapping(raw.get("oldState")), _mapping(raw.get("newState"))
        return cls(
            op=str(raw.get("op") or "unknown"),
            urn=urn,
            type=_type_of(urn) or str(new.get("type") or old.get("type") or "unknown"),
            name=_name_of(urn),
            old=_mapping(old.get("inputs")),
            new=_mapping(new.get("inputs")),
            diff_reasons=tuple(str(key) for key in _list(raw.get("diffReasons"))),
            replace_reasons=tuple(str(key) for key in _list(raw.get("replaceReasons"))),
            detailed_diff=_mapping(raw.get("detailedDiff")),
        )

    @property
    def kind(self) -> tuple[str, str] | None:
        return kubernetes_kind(self.type)

    @property
    def changed_properties(self) -> list[str]:
        return sorted(self.detailed_diff) or list(self.diff_reasons)

    @property
    def replacing_properties(self) -> list[str]:
        """The property paths that force the replacement, or the top-level keys when the provider gave no paths."""
        paths = [
            path for path, diff in self.detailed_diff.items() if str(_mapping(diff).get("kind")).endswith("-replace")
        ]
        return sorted(paths) or list(self.replace_reasons)


@dataclass
class Attention:
    """What a reviewer must look at, by heading, in the order it is shown."""

    data: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)
    network_policies: list[str] = field(default_factory=list)
    rbac: list[str] = field(default_factory=list)
    policy_violations: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def kubernetes_kind(resource_type: str) -> tuple[str, str] | None:
    """(group, kind) of a Kubernetes type token (`kubernetes:apps/v1:Deployment`), `core` for the core group."""
    parts = resource_type.split(":")
    if len(parts) != 3 or parts[0] != "kubernetes":
        return None
    return parts[1].split("/")[0], parts[2]


def render_section(stack: str, preview: Mapping[str, Any], events: Iterable[Mapping[str, Any]] | None = None) -> str:
    """This stack's section of the comment, between its markers. `events` is the preview's engine event log, when
    there is one: the only place policy violations are recorded."""
    steps = [Step.parse(raw) for raw in _list(preview.get("steps"))]
    diagnostics = [_mapping(d) for d in _list(preview.get("diagnostics"))]
    violations = [_mapping(_mapping(event).get("policyEvent")) for event in events or ()]
    violations = [violation for violation in violations if violation]
    errors = [d for d in diagnostics if d.get("severity") == "error"]
    failed = bool(errors) or not preview

    attention = needs_attention(steps, errors, violations, events_given=events is not None, failed=failed)
    if preview.get("maybeCorrupt"):
        attention.errors.insert(0, "The engine reports that resources of this stack may be corrupt.")
    if not preview:
        attention.errors.insert(0, "The preview printed nothing: see the workflow log.")

    status = "❌ the preview failed" if failed else "✅ the preview succeeded"
    lines = [_start_marker(stack), f"### Stack `{stack}`: {status}", ""]
    lines += _render_counts(preview, steps)
    lines += _render_attention(attention)
    warnings = [d for d in diagnostics if d.get("severity") == "warning"]
    if warnings:
        lines += _details(f"Warnings ({len(warnings)})", [_pre(_diagnostic_text(d)) for d in warnings])
    lines += _render_full_diff(steps)
    lines.append(_end_marker(stack))
    return "\n".join(lines)


def render_comment(sections: Iterable[str]) -> str:
    return "\n\n".join([COMMENT_MARKER, TITLE, *sections]) + "\n"


def merge(existing: str, stack: str, section: str) -> str:
    """`existing` with this stack's section replaced by `section` (or added after the others), the other stacks'
    sections kept as they were. A body that is not one of these comments is started afresh."""
    if COMMENT_MARKER not in existing:
        return render_comment([section])
    sections = [(name, body) for name, body in _sections(existing) if name != stack]
    position = next((i for i, (name, _) in enumerate(_sections(existing)) if name == stack), len(sections))
    sections.insert(position, (stack, section))
    return render_comment(body for _, body in sections)


def needs_attention(
    steps: list[Step],
    errors: list[Mapping[str, Any]],
    violations: list[Mapping[str, Any]],
    *,
    events_given: bool,
    failed: bool,
) -> Attention:
    attention = Attention()
    for step in _one_per_resource(steps):
        if step.op in REPLACING | DELETING and (what := _data_bearing(step)):
            attention.data.append(_destructive_item(step, what))
        if step.op in CHANGING and step.kind in NETWORK_POLICIES:
            attention.network_policies.append(_change_item(step))
        if step.op in CHANGING and step.kind in RBAC:
            attention.rbac.append(_change_item(step, with_kind=True))
        attention.images += _image_changes(step)
    attention.policy_violations = [_violation_item(v) for v in violations]
    if failed and not events_given:
        attention.policy_violations.append(
            "Not listed: `pulumi preview --json` leaves policy violations out. If the failure is one, the "
            "preview's event log (`--events`) lists it here, and the workflow log shows it."
        )
    attention.errors = [_pre(_diagnostic_text(d)) for d in errors]
    return attention


def _one_per_resource(steps: list[Step]) -> Iterator[Step]:
    """A replacement may come as several steps (with --show-replacement-steps); the first stands for the rest."""
    seen: set[str] = set()
    for step in steps:
        if step.urn in seen:
            continue
        seen.add(step.urn)
        yield step


def _data_bearing(step: Step) -> str | None:
    if step.type in HELM and step.name == VALKEY_RELEASE:
        return f"Valkey release ({step.type.split(':')[1]})"
    if step.kind in DATA_BEARING:
        label = DATA_BEARING[step.kind]
        return f"{label} of the Valkey release" if _in_valkey_release(step) else label
    if step.kind == ("core", "Secret") and any(key in (step.old or step.new) for key in ("data", "stringData")):
        return "Secret holding credentials"
    return None


def _in_valkey_release(step: Step) -> bool:
    """A child of the Valkey chart: Helm v4 Chart children are named `<chart>:<namespace>/<name>`."""
    ancestors = _qualified_type(step.urn).split("$")[:-1]
    return any(parent in HELM for parent in ancestors) and step.name.startswith(f"{VALKEY_RELEASE}:")


def _destructive_item(step: Step, what: str) -> str:
    item = f"**{_escape(step.op)}** {what} {_code(step.name)}"
    if step.op in REPLACING and step.replacing_properties:
        item += " — replaced because of " + ", ".join(_code(path) for path in step.replacing_properties)
    return item


def _change_item(step: Step, with_kind: bool = False) -> str:
    kind = f"{_escape(step.kind[1])} " if with_kind and step.kind else ""
    item = f"**{_escape(step.op)}** {kind}{_code(step.name)}"
    properties = step.changed_properties
    if step.op not in {"create", "delete"} and properties:
        item += " — " + ", ".join(_code(path) for path in properties)
    return item


def _image_changes(step: Step) -> list[str]:
    if step.op not in {"create", "update", "replace", "create-replacement", "import"}:
        return []
    path = POD_SPEC_PATHS.get(step.kind or ("", ""))
    if path is None:
        return []
    old, new = _images(step.old, path), _images(step.new, path)
    return [
        f"{_escape(step.kind[1])} {_code(step.name)}, container {_code(container)}: "
        f"{_image(old.get(container))} → {_image(image)}"
        for container, image in new.items()
        if old.get(container) != image
    ]


def _images(inputs: Mapping[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    pod: Any = inputs
    for key in path:
        pod = _mapping(pod).get(key)
    pod = _mapping(pod)
    containers = [*_list(pod.get("initContainers")), *_list(pod.get("containers"))]
    return {str(_mapping(c).get("name")): _mapping(c).get("image") for c in containers}


def _image(image: Any) -> str:
    if image is None:
        return "—"
    if image == UNKNOWN:
        return "(known after apply)"
    return _code(str(image))


def _violation_item(violation: Mapping[str, Any]) -> str:
    level = _escape(violation.get("enforcementLevel") or "violation")
    policy = _code(f"{violation.get('policyPackName') or '?'}/{violation.get('policyName') or '?'}")
    urn = str(violation.get("resourceUrn") or "")
    where = f" on {_escape(_kind_label(_type_of(urn)))} {_code(_name_of(urn))}" if urn else ""
    return f"**{level}** {policy}{where}: {_escape(violation.get('message') or '')}"


def _diagnostic_text(diagnostic: Mapping[str, Any]) -> str:
    urn = str(diagnostic.get("urn") or "")
    where = f"{_type_of(urn)} ({_name_of(urn)}):\n" if urn else ""
    return where + str(diagnostic.get("message") or "").rstrip()


def _render_attention(attention: Attention) -> list[str]:
    lines = ["#### Needs attention", ""]
    lists = [
        ("Replaces or deletes data", attention.data),
        ("Policy violations", attention.policy_violations),
    ]
    collapsible = [
        ("Images deployed", attention.images),
        ("NetworkPolicy changes", attention.network_policies),
        ("RBAC changes", attention.rbac),
    ]
    if not attention.errors and not any(items for _, items in lists + collapsible):
        return [
            *lines,
            "Nothing: no data-bearing resource replaced or deleted, no policy violation, no error, "
            "no image, NetworkPolicy or RBAC change.",
            "",
        ]
    for heading, items in lists:
        if items:
            lines += [f"**{heading}**", "", *(f"- {item}" for item in items), ""]
    if attention.errors:
        # Blocks, not list items: an error's lines (a traceback) are kept as they are.
        lines += ["**Errors**", ""]
        for error in attention.errors:
            lines += [error, ""]
    for heading, items in collapsible:
        if len(items) > INLINE_ITEMS:
            lines += _details(f"{heading} ({len(items)})", [f"- {item}" for item in items])
        elif items:
            lines += [f"**{heading}**", "", *(f"- {item}" for item in items), ""]
    return lines


def _render_counts(preview: Mapping[str, Any], steps: list[Step]) -> list[str]:
    """The engine's count by operation; the steps' own when the preview ended before the engine summed up."""
    summary = _mapping(preview.get("changeSummary"))
    counts = {str(op): count for op, count in summary.items() if isinstance(count, int)}
    note = ""
    if not counts:
        counts = dict(Counter(step.op for step in steps))
        note = " (counted from the steps shown: the preview gave no summary)"
    if not counts:
        return ["**Changes:** none recorded.", ""]
    order = sorted(counts, key=lambda op: (OPERATION_ORDER.index(op) if op in OPERATION_ORDER else 99, op))
    return ["**Changes:** " + " · ".join(f"{_escape(op)} {counts[op]}" for op in order) + note, ""]


def _render_full_diff(steps: list[Step]) -> list[str]:
    changes = sorted(
        (step for step in steps if step.op != "same"),
        key=lambda s: (0 if s.op in REPLACING | DELETING else 1, s.type, s.name),
    )
    if not changes:
        return []
    rows, used = [], 0
    for step in changes:
        row = _diff_row(step)
        if used + len(row) > FULL_DIFF_BUDGET:
            break
        rows.append(row)
        used += len(row)
    if len(rows) < len(changes):
        rows.append(f"| … | {len(changes) - len(rows)} more steps: see the workflow log | | |")
    return _details(
        f"Full diff ({len(changes)} {'step' if len(changes) == 1 else 'steps'})",
        ["| operation | resource | type | properties |", "|---|---|---|---|", *rows],
    )


def _diff_row(step: Step) -> str:
    properties = [
        f"{_code(path)} ({_escape(_mapping(diff).get('kind') or '?')})"
        for path, diff in sorted(step.detailed_diff.items())
    ] or [_code(key) for key in step.diff_reasons]
    if step.replace_reasons:
        properties.append("replaces on " + ", ".join(_code(key) for key in step.replace_reasons))
    return f"| {_escape(step.op)} | {_code(step.name)} | {_escape(step.type)} | {'<br>'.join(properties)} |"


def _details(summary: str, body: list[str]) -> list[str]:
    return ["<details>", f"<summary>{summary}</summary>", "", *body, "", "</details>", ""]


def _pre(text: str) -> str:
    """Text kept as it is: GitHub does not read Markdown inside <pre>, so escaping HTML is enough."""
    return f"<pre>{html.escape(text, quote=False)}</pre>"


def _code(text: str) -> str:
    return f"<code>{_escape(text)}</code>"


def _escape(text: Any) -> str:
    """One line of text from the preview, shown as it is: no Markdown, HTML, mention or table cell break."""
    flat = " ".join(str(text).split())
    return html.escape(_MARKDOWN_SPECIAL.sub(r"\\\1", flat), quote=False)


def _kind_label(resource_type: str) -> str:
    kind = kubernetes_kind(resource_type)
    return kind[1] if kind else resource_type


def _qualified_type(urn: str) -> str:
    """`urn:pulumi:<stack>::<project>::<parent types and type, $-joined>::<name>`."""
    parts = urn.split("::", 3)
    return parts[2] if len(parts) == 4 else ""


def _type_of(urn: str) -> str:
    return _qualified_type(urn).split("$")[-1]


def _name_of(urn: str) -> str:
    parts = urn.split("::", 3)
    return parts[3] if len(parts) == 4 else urn


def _start_marker(stack: str) -> str:
    return f"<!-- workflow-platform-preview:stack={stack}:start -->"


def _end_marker(stack: str) -> str:
    return f"<!-- workflow-platform-preview:stack={stack}:end -->"


_SECTION = re.compile(
    r"<!-- workflow-platform-preview:stack=(?P<stack>[A-Za-z0-9_.-]+):start -->.*?"
    r"<!-- workflow-platform-preview:stack=(?P=stack):end -->",
    re.DOTALL,
)


def _sections(body: str) -> list[tuple[str, str]]:
    return [(match["stack"], match[0]) for match in _SECTION.finditer(body)]


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def read_preview(path: Path) -> Mapping[str, Any]:
    """The preview document; an empty file (pulumi stopped before printing) reads as an empty preview."""
    text = path.read_text()
    return _mapping(json.loads(text)) if text.strip() else {}


def read_events(path: Path) -> list[Mapping[str, Any]]:
    """The engine events of an `--event-log` file, one JSON object per line."""
    return [_mapping(json.loads(line)) for line in path.read_text().splitlines() if line.strip()]


def stack_name(value: str) -> str:
    if not STACK_NAME.match(value):
        raise argparse.ArgumentTypeError(f"not a stack name: {value!r}")
    return value


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("preview", type=Path, help="what `pulumi preview --json` printed")
    parser.add_argument("--stack", required=True, type=stack_name)
    parser.add_argument("--events", type=Path, help="the preview's engine event log (`--event-log`): policy violations")
    parser.add_argument("--merge-into", type=Path, help="an existing comment body: this stack's section is replaced")
    args = parser.parse_args(argv)

    section = render_section(args.stack, read_preview(args.preview), read_events(args.events) if args.events else None)
    existing = args.merge_into.read_text() if args.merge_into and args.merge_into.exists() else ""
    sys.stdout.write(merge(existing, args.stack, section))


if __name__ == "__main__":
    main()
