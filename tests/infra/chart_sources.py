"""What the pinned third-party charts really do with the values the program hands them, read from their sources.

`../shared/helm-charts` holds the source of every chart and manifest the platform installs (see its README.md and
SOURCES.txt). From a chart folder this module answers two questions offline:

- which values keys the chart reads (`ChartReads`): a key counts as read when it is in the chart's `values.yaml`,
  when a template references it (`.Values.a.b`, `$.Values.a.b`, `index .Values.a "b"`, or `.b` / `$v.b` inside a
  `with` / `range` over `.Values.a`), or when it sits inside a map the chart renders whole (`toYaml`, `tpl`...).
  Keys under a subchart's name are checked against the subchart's own sources.
- what the chart creates from those values (`render`): `helm template` of a temporary copy of the folder, cached per
  (chart, release, namespace, values).

Helm replaces lists wholesale, so the keys inside list items are checked as `path.*.key`.
"""

from __future__ import annotations

import atexit
import functools
import itertools
import json
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

CHARTS = Path(__file__).resolve().parents[3] / "shared" / "helm-charts"
HELM = Path(sys.executable).parent / "helm"

# Template functions that emit their argument as it is, keys and all: everything below it is read.
_WHOLE = re.compile(r"\b(toYaml|toJson|toPrettyJson|toRawJson|tpl|mustToJson|mustToPrettyJson)\b")
_ACTION = re.compile(r"{{-?(.*?)-?}}", re.S)
_COMMENT = re.compile(r"{{-?\s*/\*.*?\*/\s*-?}}", re.S)
_SEGMENT = r"[A-Za-z_][\w-]*"
# `.Values.a.b` at any root: `.Values`, `$.Values`, `.context.Values`, `$root.Values`...
_VALUES_REF = re.compile(rf"(?:\$\w*|\.\w+|)\.Values((?:\.{_SEGMENT})*)")
# `index .Values.a "b" "c"`, `hasKey .Values.a "b"`, `get .Values.a "b"`: the quoted keys extend the path.
_REFERENCE = rf"(?:\$\w*|\.\w+|)\.Values(?:\.{_SEGMENT})*|\$\w+(?:\.{_SEGMENT})*|\.(?:{_SEGMENT}(?:\.{_SEGMENT})*)?"
_KEYED_REF = re.compile(rf"\b(?:index|hasKey|get)\s+\(?({_REFERENCE})\)?((?:\s+(?:\"[^\"]*\"|\$\w+|\.\w+))+)")
_VAR_REF = re.compile(rf"(\$\w+)((?:\.{_SEGMENT})*)")
_DOT_REF = re.compile(rf"(?<![\w$)\]])\.((?:{_SEGMENT})(?:\.{_SEGMENT})*)?(?![\w])")
_ASSIGN = re.compile(r"^\s*(\$\w+)\s*:?=\s*(.+)$", re.S)
_RANGE = re.compile(r"^\s*range\s+(?:(\$\w+)\s*(?:,\s*(\$\w+))?\s*:=\s*)?(.+)$", re.S)


def pinned_folder(name: str, version: str) -> Path:
    """The source folder of chart `name` at `version` (`<name>-<version>`, as SOURCES.txt lists them)."""
    return CHARTS / f"{name}-{version}"


def source_folders() -> set[str]:
    """Every folder SOURCES.txt vouches for (an upstream tag and commit), subchart folders included."""
    lines = (CHARTS / "SOURCES.txt").read_text().splitlines()
    return {line.split(":", 1)[0].strip() for line in lines if ":" in line}


Path_ = tuple[str, ...]


def key_paths(values: Any, prefix: Path_ = ()) -> Iterator[Path_]:
    """Every leaf key path of a values tree; list items are `*`, an empty map is a leaf."""
    if isinstance(values, dict) and values:
        for key, item in values.items():
            yield from key_paths(item, (*prefix, str(key)))
    elif isinstance(values, list) and any(isinstance(item, dict) for item in values):
        for item in values:
            yield from key_paths(item, (*prefix, "*"))
    elif prefix:
        yield prefix


def _all_paths(values: Any, prefix: Path_ = ()) -> Iterator[Path_]:
    if prefix:
        yield prefix
    if isinstance(values, dict):
        for key, item in values.items():
            yield from _all_paths(item, (*prefix, str(key)))
    elif isinstance(values, list):
        for item in values:
            yield from _all_paths(item, (*prefix, "*"))


def _matches(pattern: Path_, path: Path_) -> bool:
    return len(pattern) == len(path) and all(p in ("*", k) for p, k in zip(pattern, path, strict=True))


@dataclass
class _Scope:
    dot: Path_ | None
    variables: dict[str, Path_ | None] = field(default_factory=dict)
    literals: dict[str, list[str]] = field(default_factory=dict)


class _TemplateReader:
    """Walks the actions of one template file, tracking what `.` and `$vars` stand for in values terms."""

    def __init__(self) -> None:
        self.read: set[Path_] = set()
        self.whole: set[Path_] = set()
        self.scopes = [_Scope(dot=None)]

    def lookup(self, variable: str) -> Path_ | None:
        for scope in reversed(self.scopes):
            if variable in scope.variables:
                return scope.variables[variable]
        return None

    def literals(self, variable: str) -> list[str]:
        """The keys a variable can hold: the strings of a `range $v := (list "a" "b")`, else any key."""
        for scope in reversed(self.scopes):
            if variable in scope.literals:
                return scope.literals[variable]
        return ["*"]

    def references(self, expression: str) -> list[Path_]:
        """The values paths an expression reads, and records them."""
        found: list[Path_] = []
        for match in _KEYED_REF.finditer(expression):
            base = self._resolve(match.group(1))
            if base is not None:
                keys = re.findall(r"\"([^\"]*)\"|(\$\w+|\.\w+)", match.group(2))
                choices = [[quoted] if quoted else self.literals(name) for quoted, name in keys]
                found.extend((*base, *combination) for combination in itertools.product(*choices))
        remainder = _KEYED_REF.sub(" ", expression)
        for match in _VALUES_REF.finditer(remainder):
            found.append(tuple(filter(None, match.group(1).split("."))))
        remainder = _VALUES_REF.sub(" ", remainder)
        remainder = re.sub(r"\"(?:[^\"\\]|\\.)*\"", '""', remainder)
        for match in _VAR_REF.finditer(remainder):
            base = self.lookup(match.group(1))
            if base is not None:
                found.append((*base, *filter(None, match.group(2).split("."))))
        dot = self.scopes[-1].dot
        if dot is not None:
            for match in _DOT_REF.finditer(_VAR_REF.sub(" ", remainder)):
                found.append((*dot, *filter(None, (match.group(1) or "").split("."))))
        self.read.update(found)
        return found

    def _resolve(self, reference: str) -> Path_ | None:
        if ".Values" in reference:
            return tuple(filter(None, reference.split(".Values", 1)[1].split(".")))
        if reference.startswith("$"):
            head, *rest = reference.split(".")
            base = self.lookup(head)
            return None if base is None else (*base, *rest)
        dot = self.scopes[-1].dot
        return None if dot is None else (*dot, *filter(None, reference.split(".")))

    def action(self, text: str) -> None:
        text = text.strip()
        keyword = text.split(None, 1)[0] if text else ""
        if keyword == "end":
            if len(self.scopes) > 1:
                self.scopes.pop()
            return
        if keyword == "else":
            # `else` of a `with` runs with the enclosing dot; `else if` / `else with` read their condition there.
            self.scopes[-1].dot = self.scopes[-2].dot if len(self.scopes) > 1 else None
            self.references(text[4:])
            return
        if keyword in ("define", "block"):
            self.scopes.append(_Scope(dot=None))
            return
        if keyword == "with":
            paths = self.references(text[4:])
            self.scopes.append(_Scope(dot=paths[0] if len(paths) == 1 else None))
            return
        if keyword == "range":
            self._range(text)
            return
        if keyword == "if":
            self.references(text[2:])
            self.scopes.append(_Scope(dot=self.scopes[-1].dot))
            return
        assignment = _ASSIGN.match(text)
        paths = self.references(assignment.group(2) if assignment else text)
        if assignment:
            self.scopes[-1].variables[assignment.group(1)] = paths[0] if len(paths) == 1 else None
        if _WHOLE.search(text):
            self.whole.update(paths)

    def _range(self, text: str) -> None:
        key_var, item_var, expression = _RANGE.match(text).groups()
        strings = re.fullmatch(r"\(?\s*list((?:\s+\"[^\"]*\")+)\s*\)?\s*", expression)
        if strings and key_var and not item_var:
            self.scopes.append(_Scope(dot=None, literals={key_var: re.findall(r"\"([^\"]*)\"", strings.group(1))}))
            return
        paths = self.references(expression)
        source = paths[0] if len(paths) == 1 else None
        item = None if source is None else (*source, "*")
        scope = _Scope(dot=item)
        if item is not None and key_var and item_var:
            # Keys of a ranged map are data: `range $name, $user := .Values.users` reads `users.<any name>`.
            self.read.add(item)
        if key_var:
            scope.variables[item_var or key_var] = item
            if item_var:
                scope.variables[key_var] = None
        self.scopes.append(scope)

    def read_file(self, text: str) -> None:
        for match in _ACTION.finditer(_COMMENT.sub("", text)):
            self.action(match.group(1))


@dataclass
class ChartReads:
    """The values keys one chart reads; `subcharts` maps each dependency key to its reads (None: no source here)."""

    name: str
    defaults: set[Path_]
    read: set[Path_]
    whole: set[Path_]
    subcharts: dict[str, ChartReads | None]

    def reads(self, path: Path_) -> bool:
        """Whether a template reads `path`, or (outside subchart keys) values.yaml declares it."""
        return (
            (path[0] not in self.subcharts and path in self.defaults)
            or any(_matches(pattern, path) for pattern in self.read)
            or any(_matches(prefix, path[: len(prefix)]) for prefix in self.whole)
        )

    def unread(self, values: dict) -> tuple[list[str], list[str]]:
        """(keys the chart ignores, keys under a subchart whose source is missing), as dotted paths.

        A parent's values.yaml only forwards defaults to a subchart, so keys under a subchart's name count as read
        when the parent's templates read them or the subchart's own sources do.
        """
        ignored, unverifiable = [], []
        for path in key_paths(values):
            if self.reads(path):
                continue
            subchart = self.subcharts.get(path[0], False)
            if subchart is None:
                unverifiable.append(".".join(path))
            elif not (subchart and len(path) > 1 and subchart.reads(path[1:])):
                ignored.append(".".join(path))
        return ignored, unverifiable


@functools.cache
def chart_reads(folder: Path) -> ChartReads:
    values_file = folder / "values.yaml" if (folder / "values.yaml").exists() else folder / "values.tmpl.yaml"
    defaults = set(_all_paths(yaml.safe_load(values_file.read_text()) or {}))
    reader = _TemplateReader()
    for template in sorted((folder / "templates").rglob("*")):
        if template.suffix in (".yaml", ".tpl", ".txt", ".yml", ".json") and template.is_file():
            reader.scopes = [_Scope(dot=None)]
            reader.read_file(template.read_text())
    subcharts: dict[str, ChartReads | None] = {}
    for dependency in (yaml.safe_load((folder / "Chart.yaml").read_text()) or {}).get("dependencies") or []:
        key = dependency.get("alias") or dependency["name"]
        if dependency.get("condition"):
            reader.read.update(tuple(c.strip().split(".")) for c in dependency["condition"].split(","))
        source = folder / "charts" / dependency["name"]
        subcharts[key] = chart_reads(source) if source.is_dir() else None
    return ChartReads(folder.name, defaults, reader.read, reader.whole, subcharts)


# Charts whose Chart.yaml lists a dependency absent from the source folder; helm refuses to render without it.
# The stub renders nothing, except Bitnami's `common` library, whose three helpers jaeger uses for image names.
_COMMON_STUB = """\
{{- define "common.images.image" -}}
{{- $registry := .imageRoot.registry | default (.global).imageRegistry -}}
{{- $name := printf "%s:%s" .imageRoot.repository (toString .imageRoot.tag) -}}
{{- if $registry }}{{ printf "%s/%s" $registry $name }}{{ else }}{{ $name }}{{ end -}}
{{- end -}}
{{- define "common.images.renderPullSecrets" -}}{{- end -}}
{{- define "common.capabilities.cronjob.apiVersion" -}}batch/v1{{- end -}}
"""


@functools.cache
def _workdir() -> Path:
    workdir = Path(tempfile.mkdtemp(prefix="chart-sources-"))
    atexit.register(shutil.rmtree, workdir, ignore_errors=True)
    return workdir


_COPYING = threading.Lock()
_CRD = re.compile(r"^kind:\s*CustomResourceDefinition\s*$", re.M)
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def renderable_copy(folder: Path) -> Path:
    """A copy of `folder` that `helm template` accepts offline: values.yaml present, missing dependencies stubbed."""
    with _COPYING:
        copy = _workdir() / folder.name
        if not copy.exists():
            _prepare(folder, copy)
    return copy


def _prepare(folder: Path, copy: Path) -> None:
    shutil.copytree(folder, copy)
    copy.chmod(0o755)
    for path in copy.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    if not (copy / "values.yaml").exists():
        # Envoy Gateway's release runs envsubst over values.tmpl.yaml with the image it publishes for the tag.
        version = folder.name.rsplit("-", 1)[1]
        template = (copy / "values.tmpl.yaml").read_text()
        substitutions = {
            "GatewayImage": f"docker.io/envoyproxy/gateway:{version}",
            "GatewayImagePullPolicy": "IfNotPresent",
        }
        (copy / "values.yaml").write_text(re.sub(r"\$\{(\w+)\}", lambda m: substitutions[m.group(1)], template))
    for dependency in (yaml.safe_load((copy / "Chart.yaml").read_text()) or {}).get("dependencies") or []:
        stub = copy / "charts" / dependency["name"]
        if stub.exists():
            continue
        library = dependency["name"] == "common"
        (stub / "templates").mkdir(parents=True)
        chart = {"apiVersion": "v2", "name": dependency["name"], "version": "0.0.0"}
        version = re.sub(r"[.]x|[.]\*", ".0", str(dependency.get("version", "0.0.0")))
        chart["version"] = version if re.fullmatch(r"\d+\.\d+\.\d+", version) else "0.0.0"
        chart["type"] = "library" if library else "application"
        (stub / "Chart.yaml").write_text(yaml.safe_dump(chart))
        if library:
            (stub / "templates" / "_images.tpl").write_text(_COMMON_STUB)


def render(folder: Path, release: str, namespace: str, values: dict) -> list[dict]:
    """The objects `helm template` renders from `folder` with `values` (Pulumi secrets revealed beforehand).

    A subchart whose source is not here is switched off through its condition: the parent's templates read some of
    its defaults, which a stub cannot supply. Its objects are then missing from the render (see `missing_subcharts`).
    """
    switched_off = {}
    for condition in missing_subcharts(folder).values():
        node = switched_off
        *parents, leaf = condition.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = False
    merged = _merge(values, switched_off)
    return json.loads(_render_cached(folder, release, namespace, json.dumps(merged, sort_keys=True)))


def missing_subcharts(folder: Path) -> dict[str, str]:
    """Subcharts (not libraries) that Chart.yaml lists with no source under charts/: name -> condition."""
    dependencies = (yaml.safe_load((folder / "Chart.yaml").read_text()) or {}).get("dependencies") or []
    return {
        d["name"]: d["condition"].split(",")[0].strip()
        for d in dependencies
        if d["name"] != "common" and d.get("condition") and not (folder / "charts" / d["name"]).is_dir()
    }


def _merge(base: dict, override: dict) -> dict:
    merged = dict(base)
    for key, value in override.items():
        merged[key] = _merge(merged.get(key) or {}, value) if isinstance(value, dict) else value
    return merged


@functools.cache
def _render_cached(folder: Path, release: str, namespace: str, values_json: str) -> str:
    chart = renderable_copy(folder)
    values_file = _workdir() / f"values-{abs(hash((folder, release, namespace, values_json)))}.yaml"
    values_file.write_text(yaml.safe_dump(json.loads(values_json)))
    command = [str(HELM), "template", release, str(chart), "-n", namespace, "-f", str(values_file)]
    result = subprocess.run(
        [*command, "--kube-version", "1.34.0", "--skip-tests"],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"helm template {folder.name} failed: {result.stderr.strip()}")
    # CRDs are skipped unparsed: they are most of some renders' bytes, and no check here reads them.
    documents = [d for d in re.split(r"^---\s*$", result.stdout, flags=re.M) if not _CRD.search(d)]
    # Go's YAML decoder tolerates trailing tabs (valkey's StatefulSet has one); PyYAML does not.
    manifests = re.sub(r"[ \t]+$", "", "\n---\n".join(documents), flags=re.M)
    return json.dumps([doc for doc in yaml.load_all(manifests, Loader=_LOADER) if doc])


# Pod Security Standards (https://kubernetes.io/docs/concepts/security/pod-security-standards/), as enforced by the
# PodSecurity admission plugin for a namespace labelled `pod-security.kubernetes.io/enforce: <level>`.
_BASELINE_CAPABILITIES = {
    *("AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE"),
    *("SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"),
}
_SAFE_SYSCTLS = {
    *("kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start"),
    *("net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports"),
    *("net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl"),
    "net.ipv4.tcp_keepalive_probes",
}
_RESTRICTED_VOLUMES = {
    *("configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"),
}
LEVELS = ("privileged", "baseline", "restricted")


def pod_specs(manifest: dict) -> list[dict]:
    """The pod spec a workload object runs (Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, CronJob, Pod, and
    Argo Rollouts' Rollout), or the pod specs of the Jobs an AnalysisTemplate's job metrics run."""
    kind, spec = manifest.get("kind"), manifest.get("spec") or {}
    if kind == "Pod":
        return [spec]
    if kind == "CronJob":
        return [spec["jobTemplate"]["spec"]["template"]["spec"]]
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "Rollout"):
        return [spec["template"]["spec"]]
    if kind == "AnalysisTemplate":
        jobs = [metric["provider"]["job"] for metric in spec.get("metrics", []) if "job" in metric["provider"]]
        return [job["spec"]["template"]["spec"] for job in jobs]
    return []


def pod_security_violations(pod: dict, level: str) -> list[str]:
    """What keeps `pod` out of a namespace enforcing `level`, one line per broken control."""
    if LEVELS.index(level) == 0:
        return []
    problems = _baseline_violations(pod)
    if level == "restricted":
        problems += _restricted_violations(pod)
    return problems


def _containers(pod: dict) -> list[dict]:
    return [*pod.get("initContainers", []), *pod.get("containers", []), *pod.get("ephemeralContainers", [])]


def _baseline_violations(pod: dict) -> list[str]:
    problems = [f"{key} is true" for key in ("hostNetwork", "hostPID", "hostIPC") if pod.get(key)]
    problems += [f"volume {v['name']} is a hostPath" for v in pod.get("volumes", []) if "hostPath" in v]
    pod_context = pod.get("securityContext") or {}
    sysctls = [s["name"] for s in pod_context.get("sysctls", [])]
    problems += [f"sysctl {name} is unsafe" for name in sysctls if name not in _SAFE_SYSCTLS]
    contexts = [("pod", pod_context), *((c["name"], c.get("securityContext") or {}) for c in _containers(pod))]
    for where, context in contexts:
        if (context.get("seccompProfile") or {}).get("type") == "Unconfined":
            problems.append(f"{where}: seccompProfile is Unconfined")
        if (context.get("appArmorProfile") or {}).get("type") == "Unconfined":
            problems.append(f"{where}: appArmorProfile is Unconfined")
        if (context.get("windowsOptions") or {}).get("hostProcess"):
            problems.append(f"{where}: runs as a Windows host process")
        se_linux = context.get("seLinuxOptions") or {}
        if (
            se_linux.get("user")
            or se_linux.get("role")
            or se_linux.get("type")
            not in (None, "", "container_t", "container_init_t", "container_kvm_t", "container_engine_t")
        ):
            problems.append(f"{where}: seLinuxOptions {se_linux} is not allowed")
    for container in _containers(pod):
        name, context = container["name"], container.get("securityContext") or {}
        if context.get("privileged"):
            problems.append(f"{name}: privileged")
        added = set((context.get("capabilities") or {}).get("add") or []) - _BASELINE_CAPABILITIES
        if added:
            problems.append(f"{name}: adds capabilities {sorted(added)}")
        if context.get("procMount", "Default") != "Default":
            problems.append(f"{name}: procMount {context['procMount']}")
        problems += [f"{name}: hostPort {p['hostPort']}" for p in container.get("ports", []) if p.get("hostPort")]
    return problems


def _restricted_violations(pod: dict) -> list[str]:
    problems = [
        f"volume {v['name']} is of a type restricted forbids"
        for v in pod.get("volumes", [])
        if not (set(v) - {"name"}) <= _RESTRICTED_VOLUMES
    ]
    pod_context = pod.get("securityContext") or {}
    if pod_context.get("runAsUser") == 0:
        problems.append("pod: runAsUser is 0")
    for container in _containers(pod):
        name, context = container["name"], container.get("securityContext") or {}
        if context.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation is not false")
        if not context.get("runAsNonRoot", pod_context.get("runAsNonRoot")):
            problems.append(f"{name}: runAsNonRoot is not true")
        if context.get("runAsUser") == 0:
            problems.append(f"{name}: runAsUser is 0")
        seccomp = (context.get("seccompProfile") or pod_context.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{name}: seccompProfile is not RuntimeDefault or Localhost")
        capabilities = context.get("capabilities") or {}
        if "ALL" not in (capabilities.get("drop") or []):
            problems.append(f"{name}: does not drop ALL capabilities")
        if set(capabilities.get("add") or []) - {"NET_BIND_SERVICE"}:
            problems.append(f"{name}: adds capabilities beyond NET_BIND_SERVICE")
    return problems
