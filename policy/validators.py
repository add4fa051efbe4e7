"""The platform's invariants as plain functions, so the policy pack (`__main__.py`) and the tests run the same code.

Each resource validator takes a resource's type token (`kubernetes:apps/v1:Deployment`), its inputs (`props`, as
pulumi-policy's `ResourceValidationArgs.props` gives them: secrets revealed, camelCase Kubernetes fields) and a
`report` callback taking a message; the stack validator takes every resource and a `report(message, urn)`. The props
pulumi-policy hands over are read-only `Mapping`/`Sequence` proxies, not dicts and lists, so nothing here tests for
`dict` or `list`.

This module imports neither pulumi nor the platform's components: the pack checks what a program declares, whatever
wrote it, and the unit tests call these functions directly.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Report = Callable[[str], None]
StackReport = Callable[[str, str | None], None]

# Where each kind keeps its pod spec. Rollout is Argo Rollouts' Deployment; its `workloadRef` form has no template.
_TEMPLATE_POD_SPEC = ("spec", "template", "spec")
POD_SPEC_PATHS: dict[tuple[str, str], tuple[str, ...]] = {
    ("core", "Pod"): ("spec",),
    ("apps", "Deployment"): _TEMPLATE_POD_SPEC,
    ("apps", "StatefulSet"): _TEMPLATE_POD_SPEC,
    ("apps", "DaemonSet"): _TEMPLATE_POD_SPEC,
    ("apps", "ReplicaSet"): _TEMPLATE_POD_SPEC,
    ("argoproj.io", "Rollout"): _TEMPLATE_POD_SPEC,
    ("batch", "Job"): _TEMPLATE_POD_SPEC,
    ("batch", "CronJob"): ("spec", "jobTemplate", "spec", "template", "spec"),
}
# Kinds whose pods serve until replaced, and so need probes; Jobs run to completion and have none.
LONG_RUNNING = {("apps", "Deployment"), ("apps", "StatefulSet"), ("apps", "DaemonSet"), ("apps", "ReplicaSet")} | {
    ("argoproj.io", "Rollout")
}
# The kinds that must each have a PodDisruptionBudget: drains must never take all their pods at once.
DISRUPTION_BUDGETED = {("apps", "Deployment"), ("argoproj.io", "Rollout")}

# Parents whose children are rendered from third-party manifests (Helm charts, release YAML): their workloads follow
# the chart's shape, which the chart tests check, so the workload policies judge only what the program writes itself.
THIRD_PARTY_PARENTS = {
    "kubernetes:helm.sh/v3:Chart",
    "kubernetes:helm.sh/v4:Chart",
    "kubernetes:yaml:ConfigFile",
    "kubernetes:yaml:ConfigGroup",
    "kubernetes:yaml/v2:ConfigFile",
    "kubernetes:yaml/v2:ConfigGroup",
    "kubernetes:kustomize:Directory",
    "kubernetes:kustomize/v2:Directory",
}

DIGEST_PINNED = re.compile(r"@sha256:[0-9a-f]{64}$")
UNPINNED_IMAGES_CONFIG = "allowUnpinnedImagesInStacks"
DEFAULT_UNPINNED_STACKS = ("dev",)

# A name (env var or ConfigMap key) that holds a credential; one naming a file or path holds where it is instead.
CREDENTIAL_NAME = re.compile(
    r"PASSWORD|PASSWD|SECRET|TOKEN|CREDENTIAL|(^|_)((API|ACCESS|PRIVATE|SECRET)_?)?KEY($|_)", re.IGNORECASE
)
NAMES_A_LOCATION = re.compile(r"_(FILE|PATH|DIR)$", re.IGNORECASE)
# scheme://user:password@host
URL_WITH_CREDENTIALS = re.compile(r"[a-z][a-z0-9+.-]*://[^\s/:@]+:[^\s/@]+@", re.IGNORECASE)


@dataclass(frozen=True)
class Resource:
    """A resource of the stack, with the attributes pulumi-policy's `PolicyResource` has."""

    resource_type: str
    props: Mapping[str, Any]
    urn: str = ""


def kubernetes_kind(resource_type: str) -> tuple[str, str] | None:
    """(group, kind) of a Kubernetes type token, `core` for the core group: `kubernetes:apps/v1:Deployment` ->
    ("apps", "Deployment"); None for any other provider's type."""
    parts = resource_type.split(":")
    if len(parts) != 3 or parts[0] != "kubernetes":
        return None
    return parts[1].split("/")[0], parts[2]


def stack_of(urn: str) -> str:
    """The stack a URN belongs to: `urn:pulumi:<stack>::<project>::<type>::<name>`. pulumi-policy hands a policy
    no stack name, but every resource's URN carries it."""
    return urn.split("::", 1)[0].removeprefix("urn:pulumi:")


def rendered_from_third_party(urn: str) -> bool:
    """Whether the resource is a child of a Helm chart or a manifest file, by the parent types its URN carries."""
    parts = urn.split("::")
    if len(parts) < 4:
        return False
    *ancestors, _ = parts[2].split("$")
    return any(ancestor in THIRD_PARTY_PARENTS for ancestor in ancestors)


def restricted_pod_security(resource_type: str, props: Mapping[str, Any], report: Report) -> None:
    """The `restricted` Pod Security Standard as the platform applies it: non-root, no privilege escalation, every
    capability dropped, RuntimeDefault seccomp, a read-only root filesystem, no host namespaces."""
    pod = pod_spec(resource_type, props)
    if pod is None:
        return
    pod_context = _mapping(pod.get("securityContext"))
    for namespace in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(namespace) is True:
            report(f"the pod shares the node's {namespace[4:]} namespace ({namespace}: true)")
    for container in _containers(pod):
        where = f"container {container.get('name')!r}"
        context = _mapping(container.get("securityContext"))
        merged = {**pod_context, **context}
        if merged.get("runAsNonRoot") is not True:
            report(f"{where}: runAsNonRoot must be true (in its or the pod's securityContext)")
        if merged.get("runAsUser") == 0:
            report(f"{where}: runs as root (runAsUser: 0)")
        if context.get("allowPrivilegeEscalation") is not False:
            report(f"{where}: allowPrivilegeEscalation must be false")
        if context.get("privileged") is True:
            report(f"{where}: must not be privileged")
        capabilities = _mapping(context.get("capabilities"))
        if "ALL" not in _strings(capabilities.get("drop")) or _strings(capabilities.get("add")):
            report(f"{where}: must drop ALL capabilities and add none")
        if _mapping(merged.get("seccompProfile")).get("type") != "RuntimeDefault":
            report(f"{where}: seccompProfile must be RuntimeDefault (in its or the pod's securityContext)")
        if context.get("readOnlyRootFilesystem") is not True:
            report(f"{where}: readOnlyRootFilesystem must be true")


def requests_and_limits(resource_type: str, props: Mapping[str, Any], report: Report) -> None:
    """Every container requests and is limited in CPU and memory, so the scheduler and the quota can count it."""
    pod = pod_spec(resource_type, props)
    if pod is None:
        return
    for container in _containers(pod):
        resources = _mapping(container.get("resources"))
        for bound in ("requests", "limits"):
            missing = sorted({"cpu", "memory"} - set(_mapping(resources.get(bound))))
            if missing:
                report(f"container {container.get('name')!r}: no {bound} for {', '.join(missing)}")


def probes(resource_type: str, props: Mapping[str, Any], report: Report) -> None:
    """Every container of a long-running workload has a liveness and a readiness probe (init containers and Jobs,
    which run to completion, need none)."""
    if kubernetes_kind(resource_type) not in LONG_RUNNING:
        return
    pod = pod_spec(resource_type, props)
    if pod is None:
        return
    for container in _sequence(pod.get("containers")):
        container = _mapping(container)
        missing = [probe for probe in ("livenessProbe", "readinessProbe") if not container.get(probe)]
        if missing:
            report(f"container {container.get('name')!r}: no {' nor '.join(missing)}")


def images_pinned_by_digest(
    resource_type: str,
    props: Mapping[str, Any],
    report: Report,
    *,
    stack: str,
    unpinned_allowed_in: Collection[str] = DEFAULT_UNPINNED_STACKS,
) -> None:
    """Outside the stacks that may run tags (dev), every image is referenced by digest, so what was tested is what
    runs and a re-pushed tag cannot change it."""
    if stack in unpinned_allowed_in:
        return
    pod = pod_spec(resource_type, props)
    if pod is None:
        return
    for container in _containers(pod):
        image = container.get("image")
        if not (isinstance(image, str) and DIGEST_PINNED.search(image)):
            report(f"container {container.get('name')!r}: image {image!r} is not pinned by digest (@sha256:...)")


def no_load_balancer_service(resource_type: str, props: Mapping[str, Any], report: Report) -> None:
    """The only way in is the Gateway, whose LoadBalancer Service Envoy Gateway creates from the EnvoyProxy
    resource; a LoadBalancer Service declared in the program is a second, unguarded entry."""
    if kubernetes_kind(resource_type) != ("core", "Service"):
        return
    if _mapping(props.get("spec")).get("type") == "LoadBalancer":
        report("a LoadBalancer Service bypasses the Gateway; expose it through an HTTPRoute instead")


def no_plain_text_credentials(resource_type: str, props: Mapping[str, Any], report: Report) -> None:
    """Credentials reach pods from Secrets (as files or secretKeyRef), never as a plain env value or ConfigMap data,
    which anyone who can read the workload or the ConfigMap sees."""
    kind = kubernetes_kind(resource_type)
    if kind == ("core", "ConfigMap"):
        for key, value in _mapping(props.get("data")).items():
            if _looks_like_credential(str(key)):
                report(f"ConfigMap key {key!r} looks like a credential; keep it in a Secret")
            elif isinstance(value, str) and URL_WITH_CREDENTIALS.search(value):
                report(f"ConfigMap key {key!r} holds a URL with a password; keep it in a Secret")
        return
    pod = pod_spec(resource_type, props)
    if pod is None:
        return
    for container in _containers(pod):
        for variable in _sequence(container.get("env")):
            variable = _mapping(variable)
            name, value = str(variable.get("name", "")), variable.get("value")
            if not isinstance(value, str) or not value:
                continue
            where = f"container {container.get('name')!r}: env {name}"
            if _looks_like_credential(name):
                report(f"{where} looks like a credential set in plain text; use a Secret (file or secretKeyRef)")
            elif URL_WITH_CREDENTIALS.search(value):
                report(f"{where} holds a URL with a password in plain text; use a Secret (file or secretKeyRef)")


RESOURCE_VALIDATORS: tuple[Callable[[str, Mapping[str, Any], Report], None], ...] = (
    restricted_pod_security,
    requests_and_limits,
    probes,
    no_load_balancer_service,
    no_plain_text_credentials,
)


def every_deployment_has_a_disruption_budget(resources: Iterable[Resource], report: StackReport) -> None:
    """Every Deployment and Rollout has a PodDisruptionBudget in its namespace selecting its pods."""
    resources = list(resources)
    budgets = [
        (_namespace(r.props), _mapping(_mapping(_mapping(r.props.get("spec")).get("selector")).get("matchLabels")))
        for r in resources
        if kubernetes_kind(r.resource_type) == ("policy", "PodDisruptionBudget")
    ]
    for resource in resources:
        if kubernetes_kind(resource.resource_type) not in DISRUPTION_BUDGETED:
            continue
        labels = _pod_labels(resource.props)
        covered = any(
            namespace == _namespace(resource.props) and selector and selector.items() <= labels.items()
            for namespace, selector in budgets
        )
        if not covered:
            name = _mapping(resource.props.get("metadata")).get("name")
            report(f"{resource.resource_type.split(':')[-1]} {name!r} has no PodDisruptionBudget", resource.urn)


def pod_spec(resource_type: str, props: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The pod spec of a workload kind, None for any other resource or a workload without a template."""
    path = POD_SPEC_PATHS.get(kubernetes_kind(resource_type) or ("", ""))
    if path is None:
        return None
    node: Any = props
    for key in path:
        node = node.get(key) if isinstance(node, Mapping) else None
    return node if isinstance(node, Mapping) else None


def _containers(pod: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    for field in ("initContainers", "containers"):
        for container in _sequence(pod.get(field)):
            yield _mapping(container)


def _pod_labels(props: Mapping[str, Any]) -> Mapping[str, Any]:
    spec = _mapping(props.get("spec"))
    template_labels = _mapping(_mapping(_mapping(spec.get("template")).get("metadata")).get("labels"))
    return template_labels or _mapping(_mapping(spec.get("selector")).get("matchLabels"))


def _namespace(props: Mapping[str, Any]) -> str:
    return _mapping(props.get("metadata")).get("namespace") or "default"


def _looks_like_credential(name: str) -> bool:
    normalized = re.sub(r"[-.]", "_", name)
    return bool(CREDENTIAL_NAME.search(normalized)) and not NAMES_A_LOCATION.search(normalized)


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _sequence(value: Any) -> Sequence[Any]:
    return value if isinstance(value, Sequence) and not isinstance(value, str) else ()


def _strings(value: Any) -> list[str]:
    return [item for item in _sequence(value) if isinstance(item, str)]
