"""Network flows the platform needs, and the NetworkPolicies that allow exactly those.

Each component declares the flows it starts or serves as data (`Flow`); EdgeIngress renders them: every namespace
of the platform denies all traffic by default, then each flow gets an egress rule where it starts and an ingress rule
where it ends, in the namespaces this stack manages.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import pulumi
import pulumi_kubernetes as k8s

from components.app_tier import API_PORT, METRICS_SERVER_PORT
from components.charts import RABBITMQ_CLUSTER_OPERATOR_NAMESPACE
from components.data_plane import (
    AMQP_PORT,
    POSTGRES_METRICS_PORT,
    POSTGRES_PORT,
    POSTGRES_STATUS_PORT,
    RABBITMQ_MANAGEMENT_PORT,
    RABBITMQ_METRICS_PORT,
    VALKEY_METRICS_PORT,
    VALKEY_PORT,
)
from components.labels import labels, selector_labels
from components.observability import OTLP_GRPC_PORT, OTLP_HTTP_PORT
from components.worker_pool import METRICS_PORT as WORKER_METRICS_PORT

# Envoy Gateway maps privileged listener ports to container port + 10000.
EDGE_HTTP_CONTAINER_PORT = 10080
EDGE_HTTPS_CONTAINER_PORT = 10443
ENVOY_XDS_PORT = 18000
ENVOY_METRICS_PORT = 19001
ENVOY_GATEWAY_LABELS = {"control-plane": "envoy-gateway"}
# Global rate limit: the proxies ask Envoy Gateway's rate-limit service (gRPC), which takes its rules from the
# controller's xDS server and keeps its counters in a dedicated Valkey; all three run in the controller's namespace.
RATE_LIMIT_GRPC_PORT = 8081
RATE_LIMIT_XDS_PORT = 18001
RATE_LIMIT_LABELS = {"app.kubernetes.io/name": "envoy-ratelimit", "app.kubernetes.io/component": "ratelimit"}
RATE_LIMIT_STORE = "ratelimit-valkey"
OPERATOR_WEBHOOK_PORT = 9443
CERT_MANAGER_WEBHOOK_PORT = 10250
PROMETHEUS_OPERATOR_WEBHOOK_PORT = 10250
KEDA_METRICS_API_PORT = 6443
KUBELET_PORT = 10250


@dataclass(frozen=True)
class Pods:
    """Pods of one namespace; `labels` None means every pod in it."""

    namespace: str
    labels: Mapping[str, str] | None = None

    def peer(self) -> dict:
        peer: dict = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": self.namespace}}}
        if self.labels is not None:
            peer["podSelector"] = {"matchLabels": dict(self.labels)}
        return peer

    def selector(self) -> dict:
        return {"matchLabels": dict(self.labels)} if self.labels is not None else {}


@dataclass(frozen=True)
class Network:
    """Addresses outside the pod network: clients, the Kubernetes API server, the internet."""

    cidrs: tuple[str, ...]

    def peers(self) -> list[dict]:
        return [{"ipBlock": {"cidr": cidr}} for cidr in self.cidrs]


# The API server is not a pod: its address depends on the cluster, so only its ports narrow the rule.
KUBE_API = Network(("0.0.0.0/0", "::/0"))
KUBE_API_PORTS = (443, 6443)
ANYWHERE = Network(("0.0.0.0/0", "::/0"))


@dataclass(frozen=True)
class Flow:
    """TCP traffic from `source` to `destination` on `ports` (empty: every port)."""

    name: str
    source: Pods | Network
    destination: Pods | Network
    ports: tuple[int, ...] = field(default=())

    def port_rules(self) -> list[dict]:
        return [{"protocol": "TCP", "port": port} for port in self.ports]


def kube_api_access(name: str, pods: Pods) -> Flow:
    return Flow(name, pods, KUBE_API, KUBE_API_PORTS)


def render_policies(
    flows: list[Flow], namespaces: Mapping[str, pulumi.Output[str]], opts: pulumi.ResourceOptions
) -> list[k8s.networking.v1.NetworkPolicy]:
    """Default-deny and DNS in every managed namespace, then one policy per side of each flow that lands in one."""
    policies = []

    def policy(resource_name: str, namespace: str, spec: dict) -> None:
        policies.append(
            k8s.networking.v1.NetworkPolicy(
                f"{namespace}-{resource_name}",
                metadata={"name": resource_name, "namespace": namespaces[namespace], "labels": labels("network")},
                spec=spec,
                opts=opts,
            )
        )

    for namespace in namespaces:
        policy("default-deny", namespace, {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]})
        policy(
            "allow-dns",
            namespace,
            {
                "podSelector": {},
                "policyTypes": ["Egress"],
                "egress": [
                    {
                        "to": [
                            {
                                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                                "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
                            }
                        ],
                        "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
                    }
                ],
            },
        )

    for flow in flows:
        rule_ports = {"ports": flow.port_rules()} if flow.ports else {}
        if isinstance(flow.source, Pods) and flow.source.namespace in namespaces:
            to = flow.destination.peer() if isinstance(flow.destination, Pods) else None
            policy(
                f"{flow.name}-egress",
                flow.source.namespace,
                {
                    "podSelector": flow.source.selector(),
                    "policyTypes": ["Egress"],
                    "egress": [{"to": [to] if to else flow.destination.peers(), **rule_ports}],
                },
            )
        if isinstance(flow.destination, Pods) and flow.destination.namespace in namespaces:
            source = flow.source.peer() if isinstance(flow.source, Pods) else None
            policy(
                f"{flow.name}-ingress",
                flow.destination.namespace,
                {
                    "podSelector": flow.destination.selector(),
                    "policyTypes": ["Ingress"],
                    "ingress": [{"from": [source] if source else flow.source.peers(), **rule_ports}],
                },
            )
    return policies


@dataclass(frozen=True)
class PlatformNamespaces:
    """Where each part of the platform runs; add-on namespaces matter only for the add-ons a stack installs."""

    app: str = "workflow"
    data: str = "workflow-data"
    observability: str = "workflow-observability"
    edge: str = "workflow-edge"
    cert_manager: str = "cert-manager"
    envoy_gateway: str = "envoy-gateway-system"
    keda: str = "keda"
    cloudnative_pg: str = "cnpg-system"
    rabbitmq_operator: str = RABBITMQ_CLUSTER_OPERATOR_NAMESPACE
    metrics_server: str = "metrics-server"


def platform_flows(ns: PlatformNamespaces, worker_egress_cidrs: tuple[str, ...]) -> list[Flow]:
    """Every connection the platform makes; anything not listed here is denied."""
    api = Pods(ns.app, selector_labels("api"))
    worker = Pods(ns.app, selector_labels("worker"))
    migrate = Pods(ns.app, selector_labels("migrate"))
    data = Pods(ns.data)
    observability = Pods(ns.observability)
    edge = Pods(ns.edge)
    envoy_gateway = Pods(ns.envoy_gateway, ENVOY_GATEWAY_LABELS)
    rate_limit = Pods(ns.envoy_gateway, RATE_LIMIT_LABELS)
    rate_limit_store = Pods(ns.envoy_gateway, {"app.kubernetes.io/instance": RATE_LIMIT_STORE})
    operators = {
        name: Pods(namespace)
        for name, namespace in {
            "cert-manager": ns.cert_manager,
            "envoy-gateway": ns.envoy_gateway,
            "keda": ns.keda,
            "cloudnative-pg": ns.cloudnative_pg,
            "rabbitmq-operator": ns.rabbitmq_operator,
            "metrics-server": ns.metrics_server,
        }.items()
    }
    data_ports = (POSTGRES_PORT, AMQP_PORT, VALKEY_PORT)
    otlp_ports = (OTLP_GRPC_PORT, OTLP_HTTP_PORT)
    return [
        # Clients reach the Envoy proxies, which forward to the API.
        Flow("clients-to-edge", ANYWHERE, edge, (EDGE_HTTP_CONTAINER_PORT, EDGE_HTTPS_CONTAINER_PORT)),
        Flow("edge-to-api", edge, api, (API_PORT,)),
        Flow("edge-internal", edge, edge),
        Flow("edge-to-envoy-gateway", edge, operators["envoy-gateway"], (ENVOY_XDS_PORT,)),
        # Every replica asks one rate-limit service, so a client meets one limit whatever the replica count.
        Flow("edge-to-rate-limit", edge, rate_limit, (RATE_LIMIT_GRPC_PORT,)),
        Flow("rate-limit-to-envoy-gateway", rate_limit, envoy_gateway, (RATE_LIMIT_XDS_PORT,)),
        Flow("rate-limit-to-store", rate_limit, rate_limit_store, (VALKEY_PORT,)),
        # The app's own traffic: data services, traces, and the HTTP calls of the http.request task.
        Flow("api-to-data", api, data, data_ports),
        Flow("worker-to-data", worker, data, data_ports),
        Flow("migrate-to-postgres", migrate, data, (POSTGRES_PORT,)),
        Flow("api-to-tracing", api, observability, otlp_ports),
        Flow("worker-to-tracing", worker, observability, otlp_ports),
        Flow("worker-to-internet", worker, Network(worker_egress_cidrs), (80, 443)),
        # Data services replicate among themselves; their operators and instance managers use the API server.
        Flow("data-internal", data, data),
        kube_api_access("data-kube-api", data),
        Flow("cloudnative-pg-to-postgres", operators["cloudnative-pg"], data, (POSTGRES_STATUS_PORT,)),
        Flow("rabbitmq-operator-to-rabbitmq", operators["rabbitmq-operator"], data, (RABBITMQ_MANAGEMENT_PORT,)),
        Flow("keda-to-rabbitmq", operators["keda"], data, (AMQP_PORT,)),
        # Prometheus scrapes pods and nodes anywhere; Grafana, Alertmanager and Jaeger talk inside the namespace.
        Flow("observability-to-anywhere", observability, ANYWHERE),
        Flow("observability-internal", observability, observability),
        kube_api_access("observability-kube-api", observability),
        Flow("scrape-api", observability, api, (API_PORT,)),
        Flow("scrape-worker", observability, worker, (WORKER_METRICS_PORT,)),
        Flow("scrape-data", observability, data, (POSTGRES_METRICS_PORT, RABBITMQ_METRICS_PORT, VALKEY_METRICS_PORT)),
        Flow("scrape-edge", observability, edge, (ENVOY_METRICS_PORT,)),
        Flow("kube-api-to-prometheus-operator", KUBE_API, observability, (PROMETHEUS_OPERATOR_WEBHOOK_PORT,)),
        # Operators watch the API server, and the API server calls their webhooks.
        *(kube_api_access(f"{name}-kube-api", pods) for name, pods in operators.items()),
        # Envoy Gateway's namespace gets the explicit flows above instead: its Valkey answers the rate-limit pods only.
        *(Flow(f"{name}-internal", pods, pods) for name, pods in operators.items() if name != "envoy-gateway"),
        Flow("kube-api-to-cert-manager", KUBE_API, operators["cert-manager"], (CERT_MANAGER_WEBHOOK_PORT,)),
        Flow("kube-api-to-cloudnative-pg", KUBE_API, operators["cloudnative-pg"], (OPERATOR_WEBHOOK_PORT,)),
        Flow("kube-api-to-keda", KUBE_API, operators["keda"], (OPERATOR_WEBHOOK_PORT, KEDA_METRICS_API_PORT)),
        Flow("kube-api-to-envoy-gateway", KUBE_API, operators["envoy-gateway"], (OPERATOR_WEBHOOK_PORT,)),
        # The API server proxies metrics.k8s.io to metrics-server, which scrapes every node's kubelet.
        Flow("kube-api-to-metrics-server", KUBE_API, operators["metrics-server"], (METRICS_SERVER_PORT,)),
        Flow("metrics-server-to-kubelets", operators["metrics-server"], ANYWHERE, (KUBELET_PORT,)),
        # ACME: cert-manager talks to Let's Encrypt and self-checks the HTTP-01 challenge through the public address.
        Flow("cert-manager-to-acme", operators["cert-manager"], ANYWHERE, (80, 443)),
        # Behind an IP-based load balancer (GKE, AKS, MetalLB) kube-proxy rewrites that address to an Envoy pod's
        # container port before any policy sees the packet: the self-check arrives as cert-manager -> pod:10080.
        Flow("cert-manager-http01-self-check", operators["cert-manager"], edge, (EDGE_HTTP_CONTAINER_PORT,)),
    ]
