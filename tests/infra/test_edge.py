"""The edge as Envoy Gateway runs it: the proxy pods its controller builds from our EnvoyProxy, the global per-client
rate limit, and the Valkey that keeps the rate limit's counters."""

import re

import pytest
import starlette.routing

from app.__main__ import KEEP_ALIVE_S
from app.http.routes import events
from components.charts import VALKEY
from components.edge_ingress import ENVOY_PROXY_NAME, RATE_LIMIT_STORE_USERS, RUN_EVENTS_PATH
from components.network import RATE_LIMIT_STORE
from components.ports import VALKEY_PORT
from tests.infra.chart_sources import pinned_folder, pod_security_violations, pod_specs, render
from tests.infra.validation import validate
from tools.mock_stack import HELM_CHART, HELM_RELEASE, reveal, run_stack

EDGE_NAMESPACE = "workflow-edge"
ENVOY_GATEWAY_NAMESPACE = "envoy-gateway-system"
ENVOY_LABELS = {"app.kubernetes.io/name": "envoy", "app.kubernetes.io/component": "proxy"}
# Strategic merge patch keys of the lists a Deployment patch can reach (k8s.io/api/core/v1 patchMergeKey).
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "env": "name",
}


def strategic_merge(target, patch, field: str | None = None):
    if isinstance(target, dict) and isinstance(patch, dict):
        return {**target, **{k: strategic_merge(target[k], v, k) if k in target else v for k, v in patch.items()}}
    if isinstance(target, list) and field in MERGE_KEYS:
        key, merged = MERGE_KEYS[field], list(target)
        for item in patch:
            index = next((i for i, existing in enumerate(merged) if existing[key] == item[key]), None)
            if index is None:
                merged.append(item)
            else:
                merged[index] = strategic_merge(merged[index], item)
        return merged
    return patch


def proxy_deployment(envoy_proxy: dict) -> dict:
    """The proxy Deployment Envoy Gateway builds from an EnvoyProxy in GatewayNamespace mode, as its
    internal/infrastructure/kubernetes/proxy/resource.go does: both containers get the container spec's
    securityContext, only Envoy gets its volumeMounts, the pod spec adds volumes; then the patch is applied."""
    spec = envoy_proxy["spec"]["provider"]["kubernetes"]["envoyDeployment"]
    container, pod = spec.get("container", {}), spec.get("pod", {})
    own_mounts = [
        {"name": "certs", "mountPath": "/certs", "readOnly": True},
        {"name": "sds", "mountPath": "/sds"},
        {"name": "sa-token", "mountPath": "/var/run/secrets/token", "readOnly": True},
    ]
    own_volumes = [
        {"name": "sa-token", "projected": {"sources": [{"serviceAccountToken": {"path": "sa-token"}}]}},
        {"name": "certs", "configMap": {"name": "envoy-workflow"}},
        {"name": "sds", "configMap": {"name": "envoy-workflow"}},
    ]
    security = container["securityContext"]
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "envoy-workflow", "namespace": EDGE_NAMESPACE},
        "spec": {
            "replicas": spec["replicas"],
            "selector": {"matchLabels": ENVOY_LABELS},
            "template": {
                "metadata": {"labels": ENVOY_LABELS},
                "spec": {
                    "securityContext": pod.get("securityContext", {}),
                    "containers": [
                        {
                            "name": "envoy",
                            "image": "docker.io/envoyproxy/envoy:distroless-v1.36.0",
                            "securityContext": security,
                            "volumeMounts": own_mounts + container.get("volumeMounts", []),
                        },
                        {
                            "name": "shutdown-manager",
                            "image": "docker.io/envoyproxy/gateway:v1.9.0",
                            "securityContext": security,
                        },
                    ],
                    "volumes": own_volumes + pod.get("volumes", []),
                },
            },
        },
    }
    patch = spec.get("patch")
    if patch is None:
        return deployment
    assert patch.get("type", "StrategicMerge") == "StrategicMerge"
    return strategic_merge(deployment, patch["value"])


def proxy_pod(run) -> dict:
    return proxy_deployment(run.one("EnvoyProxy", ENVOY_PROXY_NAME))["spec"]["template"]["spec"]


def proxy_container(run, name: str) -> dict:
    (container,) = [c for c in proxy_pod(run)["containers"] if c["name"] == name]
    return container


def chart_values(run, name: str) -> dict:
    (chart,) = [r for r in run.resources if r.type in (HELM_RELEASE, HELM_CHART) and r.name == name]
    return reveal(chart.inputs["values"])


def rate_limit_store(run) -> list[dict]:
    """What Valkey's chart renders from the values the program gives the rate limit's store."""
    return render(
        pinned_folder("valkey", VALKEY.version),
        RATE_LIMIT_STORE,
        ENVOY_GATEWAY_NAMESPACE,
        chart_values(run, RATE_LIMIT_STORE),
    )


def rate_limit_rules(run) -> dict[str, dict]:
    return {p["metadata"]["name"]: p["spec"]["rateLimit"] for p in run.kind("BackendTrafficPolicy")}


# Proxy pods


def test_the_shutdown_manager_has_a_writable_tmp(stack):
    (tmp,) = [m for m in proxy_container(stack, "shutdown-manager").get("volumeMounts", []) if m["mountPath"] == "/tmp"]
    (volume,) = [v for v in proxy_pod(stack)["volumes"] if v["name"] == tmp["name"]]
    assert "emptyDir" in volume and not tmp.get("readOnly")


def test_both_proxy_containers_keep_a_read_only_root_filesystem(stack):
    for name in ("envoy", "shutdown-manager"):
        assert proxy_container(stack, name)["securityContext"]["readOnlyRootFilesystem"] is True, name


def test_the_patched_proxy_deployment_is_valid_kubernetes(stack):
    assert validate(proxy_deployment(stack.one("EnvoyProxy", ENVOY_PROXY_NAME))).errors == ()


def test_proxy_pods_meet_the_restricted_level_the_edge_namespace_enforces(stack):
    edge = stack.one("Namespace", EDGE_NAMESPACE)
    assert edge["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert pod_security_violations(proxy_pod(stack), "restricted") == []


# Global rate limit


def test_the_rate_limit_is_global_with_one_distinct_rule_per_address_family(stack):
    for route, rate_limit in rate_limit_rules(stack).items():
        assert set(rate_limit) == {"global"}, route
        selectors = [rule["clientSelectors"] for rule in rate_limit["global"]["rules"]]
        assert sorted(selectors, key=str) == [
            [{"sourceCIDR": {"type": "Distinct", "value": "0.0.0.0/0"}}],
            [{"sourceCIDR": {"type": "Distinct", "value": "::/0"}}],
        ], route


@pytest.mark.parametrize("replicas", [1, 3, 7])
def test_a_client_meets_the_configured_limit_whatever_the_replica_count(replicas):
    run = run_stack("dev", {"edgeProxyReplicas": replicas, "edgeRateLimitPerClient": 40})
    assert run.one("EnvoyProxy", ENVOY_PROXY_NAME)["spec"]["provider"]["kubernetes"]["envoyDeployment"]["replicas"] == (
        replicas
    )
    for route, rate_limit in rate_limit_rules(run).items():
        for rule in rate_limit["global"]["rules"]:
            assert rule["limit"] == {"requests": 40, "unit": "Second"}, route


def test_rate_limit_pods_meet_the_restricted_level_of_envoy_gateways_namespace(stack):
    deployment = chart_values(stack, "gateway-helm")["config"]["envoyGateway"]["provider"]["kubernetes"][
        "rateLimitDeployment"
    ]
    # Envoy Gateway uses the container's securityContext as given, or its own defaults when none is.
    pod = {
        "securityContext": deployment["pod"]["securityContext"],
        "containers": [{"name": "envoy-ratelimit", "securityContext": deployment["container"]["securityContext"]}],
    }
    namespace = stack.one("Namespace", ENVOY_GATEWAY_NAMESPACE)
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert pod_security_violations(pod, "restricted") == []


def test_envoy_gateway_keeps_the_counters_in_the_dedicated_valkey(stack):
    envoy_gateway = chart_values(stack, "gateway-helm")["config"]["envoyGateway"]
    host, port = envoy_gateway["rateLimit"]["backend"]["redis"]["url"].rsplit(":", 1)
    assert envoy_gateway["rateLimit"]["backend"]["type"] == "Redis"
    assert host == f"{RATE_LIMIT_STORE}.{ENVOY_GATEWAY_NAMESPACE}.svc.cluster.local"
    (service,) = [
        o for o in rate_limit_store(stack) if o["kind"] == "Service" and o["metadata"]["name"] == RATE_LIMIT_STORE
    ]
    assert int(port) == VALKEY_PORT and VALKEY_PORT in {p["port"] for p in service["spec"]["ports"]}


def test_the_rate_limit_service_authenticates_with_the_valkey_password(stack):
    kubernetes = chart_values(stack, "gateway-helm")["config"]["envoyGateway"]["provider"]["kubernetes"]
    (auth,) = [e for e in kubernetes["rateLimitDeployment"]["container"]["env"] if e["name"] == "REDIS_AUTH"]
    reference = auth["valueFrom"]["secretKeyRef"]
    users = stack.one("Secret", RATE_LIMIT_STORE_USERS)
    assert reference == {"name": RATE_LIMIT_STORE_USERS, "key": "default"}
    assert users["metadata"]["namespace"] == ENVOY_GATEWAY_NAMESPACE
    assert users["stringData"]["default"] in stack.generated_passwords()
    store_auth = chart_values(stack, RATE_LIMIT_STORE)["auth"]
    assert store_auth["enabled"] is True and store_auth["usersExistingSecret"] == RATE_LIMIT_STORE_USERS


def test_the_rate_limit_valkey_keeps_nothing_on_disk(stack):
    objects = rate_limit_store(stack)
    (deployment,) = [o for o in objects if o["kind"] in ("Deployment", "StatefulSet")]
    (data,) = [v for v in pod_specs(deployment)[0]["volumes"] if v["name"] == "valkey-data"]
    assert deployment["kind"] == "Deployment" and "emptyDir" in data
    assert not [o for o in objects if o["kind"] == "PersistentVolumeClaim"]
    assert 'save ""' in chart_values(stack, RATE_LIMIT_STORE)["valkeyConfig"].splitlines()


def test_the_rate_limit_valkey_is_restricted_and_selected_by_its_network_policy(stack):
    (deployment,) = [o for o in rate_limit_store(stack) if o["kind"] == "Deployment"]
    (pod,) = pod_specs(deployment)
    assert pod_security_violations(pod, "restricted") == []
    (ingress,) = [
        p["spec"]
        for p in stack.kind("NetworkPolicy")
        if p["metadata"]["namespace"] == ENVOY_GATEWAY_NAMESPACE
        and p["metadata"]["name"] == "rate-limit-to-store-ingress"
    ]
    assert ingress["podSelector"]["matchLabels"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()


def test_envoy_drops_idle_connections_to_the_api_before_the_api_does(stack):
    (policy,) = [p for p in stack.kind("BackendTrafficPolicy") if p["metadata"]["name"] == "api"]
    idle = policy["spec"]["timeout"]["http"]["connectionIdleTimeout"]
    assert idle.endswith("s") and int(idle[:-1]) < KEEP_ALIVE_S


def test_the_api_host_streams_run_events_without_a_request_timeout_as_the_console_opens_them_on_its_own_origin(stack):
    (route,) = [r for r in stack.kind("HTTPRoute") if r["metadata"]["name"] == "api"]
    stream_rules = [
        rule for rule in route["spec"]["rules"] if rule["matches"][0]["path"]["type"] == "RegularExpression"
    ]

    assert [rule["timeouts"] for rule in stream_rules] == [{"request": "0s"}]
    assert "timeouts" not in route["spec"]["rules"][-1], "only the streams go without a request timeout"


def test_the_stream_rule_matches_the_path_the_api_serves_run_events_on_and_nothing_else():
    (path,) = [
        route.path
        for route in events.router.routes
        if isinstance(route, starlette.routing.WebSocketRoute) and route.path.endswith("/events")
    ]
    a_stream = path.replace("{run_id}", "0b9e2a8e-5b1f-4c11-9a7e-3c1d2f4e5a6b")

    assert re.fullmatch(RUN_EVENTS_PATH, a_stream)
    assert not re.fullmatch(RUN_EVENTS_PATH, a_stream.removesuffix("/events"))
    assert not re.fullmatch(RUN_EVENTS_PATH, "/v1/runs/x/events/more")
