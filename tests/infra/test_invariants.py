"""Invariants every stack must keep, whatever its sizes: pod security, scaling bounds, disruption budgets, network
isolation, pinned third-party versions, secrets kept secret, and every resource owned by one of the five components."""

import re

import pytest
import yaml

from tests.infra.chart_sources import pod_specs as workload_pod_specs
from tools.mock_stack import (
    HELM_CHART,
    HELM_RELEASE,
    PROJECT,
    ROOT,
    STACKS,
    YAML_CONFIG_FILE,
    is_secret,
)

COMPONENT_TYPES = {
    f"{PROJECT}:index:{name}" for name in ("AppTier", "WorkerPool", "DataPlane", "Observability", "EdgeIngress")
}
# Long-running workloads, autoscaled and disruption-budgeted: a Rollout is Argo Rollouts' Deployment.
LONG_RUNNING_KINDS = ("Deployment", "Rollout")
# Run to completion: a Job, and the Jobs an AnalysisTemplate's job metrics run.
RUN_TO_COMPLETION_KINDS = ("Job", "AnalysisTemplate")
REPLICA_KEYS = {"api": "apiReplicas", "worker": "workerReplicas"}


def pod_specs(run):
    """Every pod the stack's own objects run: workloads, and the Jobs of analysis templates."""
    for manifest in run.manifests():
        for spec in workload_pod_specs(manifest):
            yield f"{manifest['kind']}/{manifest['metadata']['name']}", manifest["kind"], spec


def containers(run):
    for owner, kind, pod in pod_specs(run):
        for container in pod["containers"] + pod.get("initContainers", []):
            yield f"{owner}:{container['name']}", kind, pod, container


def test_stacks_run_workloads(stack):
    assert len(list(pod_specs(stack))) >= 3


def test_every_pod_runs_as_non_root(stack):
    for where, _, pod, container in containers(stack):
        context = {**pod.get("securityContext", {}), **container.get("securityContext", {})}
        assert context.get("runAsNonRoot") is True, where
        assert context.get("runAsUser", 1) != 0, where


def test_every_container_has_a_read_only_root_filesystem(stack):
    for where, _, _, container in containers(stack):
        assert container["securityContext"]["readOnlyRootFilesystem"] is True, where


def test_no_container_can_escalate_privileges(stack):
    for where, _, _, container in containers(stack):
        assert container["securityContext"]["allowPrivilegeEscalation"] is False, where
        assert container["securityContext"].get("privileged", False) is False, where


def test_every_container_drops_all_capabilities(stack):
    for where, _, _, container in containers(stack):
        capabilities = container["securityContext"]["capabilities"]
        assert capabilities["drop"] == ["ALL"] and not capabilities.get("add"), where


def test_every_pod_uses_the_runtime_default_seccomp_profile(stack):
    for where, _, pod, container in containers(stack):
        profile = container["securityContext"].get("seccompProfile") or pod["securityContext"].get("seccompProfile")
        assert profile == {"type": "RuntimeDefault"}, where


def test_every_container_has_requests_and_limits(stack):
    for where, _, _, container in containers(stack):
        for bound in ("requests", "limits"):
            assert set(container["resources"][bound]) >= {"cpu", "memory"}, f"{where} {bound}"


def test_every_long_running_container_has_liveness_and_readiness_probes(stack):
    for where, kind, _, container in containers(stack):
        if kind not in RUN_TO_COMPLETION_KINDS:
            assert "livenessProbe" in container and "readinessProbe" in container, where


def test_no_pod_mounts_a_service_account_token(stack):
    for where, _, pod in pod_specs(stack):
        assert pod["automountServiceAccountToken"] is False, where
    for account in stack.kind("ServiceAccount"):
        assert account["automountServiceAccountToken"] is False, account["metadata"]["name"]


def test_api_autoscaler_bounds_match_the_stack_file(stack):
    spec = stack.one("ScaledObject", "workflow-api")["spec"]
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == _replica_range(stack, "api")


def test_worker_autoscaler_bounds_match_the_stack_file(stack):
    spec = stack.one("ScaledObject", "workflow-worker")["spec"]
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == _replica_range(stack, "worker")


def long_running(run) -> list[dict]:
    return [m for m in run.manifests() if m["kind"] in LONG_RUNNING_KINDS]


def test_autoscaled_deployments_leave_replicas_to_the_autoscaler(stack):
    for deployment in long_running(stack):
        assert "replicas" not in deployment["spec"], deployment["metadata"]["name"]


def test_every_deployment_has_a_disruption_budget_selecting_its_pods(stack):
    budgets = stack.kind("PodDisruptionBudget")
    for deployment in long_running(stack):
        pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        covering = [
            b
            for b in budgets
            if b["metadata"]["namespace"] == deployment["metadata"]["namespace"]
            and b["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
        ]
        assert covering, f"{stack.stack}: {deployment['metadata']['name']} has no PodDisruptionBudget"


def test_every_namespace_denies_all_traffic_by_default(stack):
    default_denies = {
        p["metadata"]["namespace"]
        for p in stack.kind("NetworkPolicy")
        if p["spec"]["podSelector"] == {}
        and sorted(p["spec"]["policyTypes"]) == ["Egress", "Ingress"]
        and not p["spec"].get("ingress")
        and not p["spec"].get("egress")
    }
    namespaces = {n["metadata"]["name"] for n in stack.kind("Namespace")}
    assert namespaces and namespaces <= default_denies


def test_every_namespace_enforces_a_pod_security_level(stack):
    for namespace in stack.kind("Namespace"):
        level = namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"]
        assert level in {"restricted", "baseline", "privileged"}, namespace["metadata"]["name"]
    app = next(n for n in stack.kind("Namespace") if n["metadata"]["name"] == "workflow")
    assert app["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_every_helm_chart_is_pinned_to_an_exact_version(stack):
    charts = [r for r in stack.resources if r.type in (HELM_RELEASE, HELM_CHART)]
    assert charts
    for chart in charts:
        assert re.fullmatch(r"v?\d+\.\d+\.\d+", chart.inputs.get("version", "")), chart.name
        assert chart.inputs["chart"], chart.name


def test_every_release_manifest_is_pinned_to_a_release(stack):
    for config_file in stack.of_type(YAML_CONFIG_FILE):
        assert re.search(r"/releases/download/v\d+\.\d+\.\d+/", config_file.inputs["file"]), config_file.name


def test_every_resource_belongs_to_one_of_the_five_components(stack):
    by_urn = stack.by_urn()
    components = {r.urn for r in stack.resources if r.type in COMPONENT_TYPES}
    assert {by_urn[urn].type for urn in components} == COMPONENT_TYPES
    for resource in stack.resources:
        if resource.type == "pulumi:pulumi:Stack" or resource.urn in components:
            continue
        ancestor = resource.parent
        while ancestor and ancestor not in components:
            ancestor = by_urn[ancestor].parent if ancestor in by_urn else ""
        assert ancestor, f"{resource.type} {resource.name} is outside the five components"


def test_no_stack_output_holds_a_secret_in_plain_text(stack):
    secrets = stack.secrets()
    assert secrets
    for name, (value, kept_secret) in stack.outputs.items():
        assert kept_secret or not any(secret in str(value) for secret in secrets), f"stack output {name} leaks a secret"


def test_no_container_has_a_secret_in_its_plain_environment(stack):
    secrets = stack.secrets()
    for where, _, _, container in containers(stack):
        for variable in container.get("env", []):
            assert not any(secret in str(variable.get("value", "")) for secret in secrets), (
                f"{where} {variable['name']}"
            )


def test_credentials_only_travel_as_pulumi_secrets(stack):
    secrets = stack.secrets()
    for resource in stack.resources:
        if resource.type == "kubernetes:core/v1:Secret":
            assert all(is_secret(value) for value in resource.inputs["stringData"].values()) or is_secret(
                resource.inputs["stringData"]
            ), resource.name
            continue
        plain = _plain_values(resource.inputs)
        assert not any(secret in value for value in plain for secret in secrets), f"{resource.type} {resource.name}"


@pytest.mark.parametrize("stack_file", [f"Pulumi.{name}.yaml" for name in STACKS])
def test_stack_files_hold_no_plain_text_secret(stack_file):
    for key, value in yaml.safe_load((ROOT / stack_file).read_text())["config"].items():
        if re.search(r"password|secret|token|apikey|api_key|credential", key, re.IGNORECASE):
            assert isinstance(value, dict) and "secure" in value, f"{stack_file}: {key} must be a secure: value"


def _replica_range(stack, role):
    prefix = f"workflow-platform:{REPLICA_KEYS[role]}"
    return int(stack.config[f"{prefix}Min"]), int(stack.config[f"{prefix}Max"])


def _plain_values(value):
    if is_secret(value):
        return []
    if isinstance(value, dict):
        return [item for v in value.values() for item in _plain_values(v)]
    if isinstance(value, list):
        return [item for v in value for item in _plain_values(v)]
    return [str(value)]
