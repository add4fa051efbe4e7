"""The NetworkPolicies admit the flows the platform needs and nothing else, evaluated as Kubernetes would."""

from dataclasses import dataclass

import pytest

from components.labels import selector_labels

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
