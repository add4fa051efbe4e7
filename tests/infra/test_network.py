"""The NetworkPolicies admit the flows the platform needs and nothing else, evaluated as Kubernetes would."""

from dataclasses import dataclass

import pytest

from components.charts import RABBITMQ_CLUSTER_OPERATOR
from components.labels import selector_labels
from tools.mock_stack import PROJECT, YAML_CONFIG_FILE, reveal

INTERNET = "internet"


@dataclass(frozen=True)
class Pod:
    name: str
    namespace: str
    labels: dict

    def matches(self, peer: dict) -> bool:
        if "ipBlock" in peer:
            return False  # ipBlocks are for addresses outside the cluster; pods are matched by selectors
        namespace_labels = peer.get("namespaceSelector", {}).get("matchLabels")
        if namespace_labels is not None and namespace_labels != {"kubernetes.io/metadata.name": self.namespace}:
            return False
        return peer.get("podSelector", {}).get("matchLabels", {}).items() <= self.labels.items()


API = Pod("api", "workflow", selector_labels("api"))
WORKER = Pod("worker", "workflow", selector_labels("worker"))
MIGRATE = Pod("migrate", "workflow", selector_labels("migrate"))
POSTGRES = Pod("postgres", "workflow-data", {"cnpg.io/cluster": "workflow-postgres"})
RABBITMQ = Pod("rabbitmq", "workflow-data", {"app.kubernetes.io/name": "workflow-rabbitmq"})
ENVOY = Pod("envoy", "workflow-edge", {"app.kubernetes.io/name": "envoy"})
PROMETHEUS = Pod("prometheus", "workflow-observability", {"app.kubernetes.io/name": "prometheus"})
JAEGER = Pod("jaeger", "workflow-observability", {"app.kubernetes.io/name": "jaeger"})
CERT_MANAGER = Pod("cert-manager", "cert-manager", {"app.kubernetes.io/name": "cert-manager"})
ENVOY_GATEWAY = Pod(
    "envoy-gateway",
    "envoy-gateway-system",
    {"control-plane": "envoy-gateway", "app.kubernetes.io/name": "gateway-helm"},
)
# Labels as Envoy Gateway gives its rate-limit pods (internal/infrastructure/kubernetes/ratelimit/resource.go).
RATE_LIMIT = Pod(
    "ratelimit",
    "envoy-gateway-system",
    {
        "app.kubernetes.io/name": "envoy-ratelimit",
        "app.kubernetes.io/component": "ratelimit",
        "app.kubernetes.io/managed-by": "envoy-gateway",
    },
)
RATE_LIMIT_STORE = Pod(
    "ratelimit-valkey",
    "envoy-gateway-system",
    {"app.kubernetes.io/name": "valkey", "app.kubernetes.io/instance": "ratelimit-valkey"},
)


def _rules(run, pod: Pod, direction: str):
    """The rules of `direction` that apply to `pod`, or None when no policy isolates it in that direction."""
    selecting = [
        p["spec"]
        for p in run.kind("NetworkPolicy")
        if p["metadata"]["namespace"] == pod.namespace
        and direction in p["spec"]["policyTypes"]
        and p["spec"]["podSelector"].get("matchLabels", {}).items() <= pod.labels.items()
    ]
    if not selecting:
        return None
    return [rule for spec in selecting for rule in spec.get(direction.lower(), [])]


def _side_allows(run, pod, direction: str, peer_key: str, other_end, port: int) -> bool:
    """Whether `pod`'s policies in `direction` admit traffic with `other_end` (a Pod, or INTERNET) on `port`."""
    if pod == INTERNET:
        return True
    rules = _rules(run, pod, direction)
    if rules is None:
        return True

    def admits(peer: dict) -> bool:
        return "ipBlock" in peer if other_end == INTERNET else other_end.matches(peer)

    return any(
        (not rule.get("ports") or any(p["port"] == port for p in rule["ports"]))
        and (not rule.get(peer_key) or any(admits(peer) for peer in rule[peer_key]))
        for rule in rules
    )


def allowed(run, source, destination, port: int) -> bool:
    return _side_allows(run, source, "Egress", "to", destination, port) and _side_allows(
        run, destination, "Ingress", "from", source, port
    )


NEEDED = [
    (INTERNET, ENVOY, 10443),
    (ENVOY, API, 8000),
    (API, POSTGRES, 5432),
    (API, RABBITMQ, 5672),
    (WORKER, POSTGRES, 5432),
    (WORKER, RABBITMQ, 5672),
    (MIGRATE, POSTGRES, 5432),
    (WORKER, JAEGER, 4317),
    (PROMETHEUS, API, 8000),
    (PROMETHEUS, WORKER, 9100),
    (WORKER, INTERNET, 443),
    (ENVOY, RATE_LIMIT, 8081),
    (RATE_LIMIT, ENVOY_GATEWAY, 18001),
    (RATE_LIMIT, RATE_LIMIT_STORE, 6379),
    (ENVOY, ENVOY_GATEWAY, 18000),
]

FORBIDDEN = [
    (INTERNET, API, 8000),
    (INTERNET, POSTGRES, 5432),
    (ENVOY, POSTGRES, 5432),
    (ENVOY, WORKER, 9100),
    (API, INTERNET, 443),
    (MIGRATE, RABBITMQ, 5672),
    (API, WORKER, 9100),
    (POSTGRES, API, 8000),
    (API, POSTGRES, 22),
    (ENVOY, RATE_LIMIT_STORE, 6379),
    (ENVOY_GATEWAY, RATE_LIMIT_STORE, 6379),
    (API, RATE_LIMIT_STORE, 6379),
    (INTERNET, RATE_LIMIT, 8081),
    (CERT_MANAGER, ENVOY, 10443),
    (CERT_MANAGER, API, 8000),
]


def _name(flow):
    source, destination, port = flow
    return f"{getattr(source, 'name', source)}->{getattr(destination, 'name', destination)}:{port}"


@pytest.mark.parametrize("flow", NEEDED, ids=map(_name, NEEDED))
def test_the_platform_can_make_the_connections_it_needs(stack, flow):
    assert allowed(stack, *flow)


@pytest.mark.parametrize("flow", FORBIDDEN, ids=map(_name, FORBIDDEN))
def test_every_other_connection_is_denied(stack, flow):
    assert not allowed(stack, *flow)


def test_every_pod_may_resolve_names(stack):
    for pod in (API, WORKER, POSTGRES, ENVOY, PROMETHEUS):
        assert allowed(stack, pod, Pod("dns", "kube-system", {"k8s-app": "kube-dns"}), 53)


def test_cert_manager_self_check_reaches_the_proxies_on_their_container_port(stack):
    """Behind an IP-based load balancer kube-proxy rewrites the self-check's destination, the Gateway's public
    address on port 80, to an Envoy pod's container port before any NetworkPolicy sees the packet."""
    assert allowed(stack, CERT_MANAGER, ENVOY, 10080)


def _component_of(run, resource) -> str:
    """The URN of the component that `resource` belongs to."""
    by_urn = run.by_urn()
    ancestor = resource.parent
    while not by_urn[ancestor].type.startswith(f"{PROJECT}:index:"):
        ancestor = by_urn[ancestor].parent
    return ancestor


def test_each_namespace_gets_its_policies_from_the_component_that_creates_it(stack):
    creators = {
        reveal(namespace.inputs)["metadata"]["name"]: _component_of(stack, namespace)
        for namespace in stack.of_type("kubernetes:core/v1:Namespace")
    }
    # The RabbitMQ Cluster Operator's release manifest creates the namespace it runs in.
    for manifest in stack.of_type(YAML_CONFIG_FILE):
        creators[RABBITMQ_CLUSTER_OPERATOR.namespace] = _component_of(stack, manifest)
    policies = stack.of_type("kubernetes:networking.k8s.io/v1:NetworkPolicy")
    assert {reveal(policy.inputs)["metadata"]["namespace"] for policy in policies} == creators.keys()
    for policy in policies:
        namespace = reveal(policy.inputs)["metadata"]["namespace"]
        assert _component_of(stack, policy) == creators[namespace], f"{namespace}: {policy.name}"
