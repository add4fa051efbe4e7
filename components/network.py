"""Network flows the platform needs, and the NetworkPolicies that allow exactly those.

The flow table (`platform_flows`) lists every connection the platform makes. Each component renders the policies of
the namespaces it creates from that same table (`policies_for`): the namespace denies all traffic by default, then
each flow gets an egress rule where it starts and an ingress rule where it ends.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_kubernetes as k8s

from components import ports
from components.charts import RABBITMQ_CLUSTER_OPERATOR
from components.labels import labels, selector_labels

ENVOY_GATEWAY_LABELS = {"control-plane": "envoy-gateway"}
# The global rate limit's service, and the dedicated Valkey that keeps its counters, run in Envoy Gateway's namespace.
RATE_LIMIT_LABELS = {"app.kubernetes.io/name": "envoy-ratelimit", "app.kubernetes.io/component": "ratelimit"}
RATE_LIMIT_STORE = "ratelimit-valkey"
# Prometheus pods, as the Prometheus Operator labels them.
PROMETHEUS_LABELS = {"app.kubernetes.io/name": "prometheus"}


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


DEFAULT_DENY = {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
ALLOW_DNS = {
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
}


def policy_specs(namespace: str, flows: Iterable[Flow]) -> dict[str, dict]:
    """The NetworkPolicies of `namespace`, by name: default-deny and DNS, then one per side of each flow in it."""
    specs = {"default-deny": DEFAULT_DENY, "allow-dns": ALLOW_DNS}

    def add(name: str, spec: dict) -> None:
        if name in specs:
            raise ValueError(f"two policies named {name} in {namespace}: flow names must be unique")
        specs[name] = spec

    for flow in flows:
        rule_ports = {"ports": flow.port_rules()} if flow.ports else {}
        if isinstance(flow.source, Pods) and flow.source.namespace == namespace:
            to = [flow.destination.peer()] if isinstance(flow.destination, Pods) else flow.destination.peers()
            add(
                f"{flow.name}-egress",
                {
                    "podSelector": flow.source.selector(),
                    "policyTypes": ["Egress"],
                    "egress": [{"to": to, **rule_ports}],
                },
            )
        if isinstance(flow.destination, Pods) and flow.destination.namespace == namespace:
            source = [flow.source.peer()] if isinstance(flow.source, Pods) else flow.source.peers()
            add(
                f"{flow.name}-ingress",
                {
                    "podSelector": flow.destination.selector(),
                    "policyTypes": ["Ingress"],
                    "ingress": [{"from": source, **rule_ports}],
                },
            )
    return specs


# EdgeIngress ("edge") used to create the NetworkPolicies of every namespace, so stacks deployed before know each
# policy as its child. The alias lets Pulumi move a policy to the component that creates it now; without it Pulumi
# would create the policy anew, which fails on the object already in the cluster (same name, same namespace).
FORMER_POLICIES_PARENT = ("edge", "workflow-platform:index:EdgeIngress")


def policies_for(
    namespace: str,
    created: pulumi.Input[str],
    flows: Iterable[Flow],
    parent: pulumi.Resource,
    aliases: Sequence[pulumi.Alias] = (),
) -> list[k8s.networking.v1.NetworkPolicy]:
    """The NetworkPolicies of `namespace`, created in it once it exists (`created` is its name as an output);
    `aliases` name where they were created before, as for the rest of the namespace."""
    former = [pulumi.Alias(parent=pulumi.create_urn(*FORMER_POLICIES_PARENT)), *aliases]
    return [
        k8s.networking.v1.NetworkPolicy(
            f"{namespace}-{name}",
            metadata={"name": name, "namespace": created, "labels": labels("network")},
            spec=spec,
            opts=pulumi.ResourceOptions(parent=parent, aliases=former),
        )
        for name, spec in policy_specs(namespace, flows).items()
    ]


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
    # Not ours to choose: the operator's release manifest creates this namespace and runs in it.
    rabbitmq_operator: str = RABBITMQ_CLUSTER_OPERATOR.namespace
    metrics_server: str = "metrics-server"
    argo_rollouts: str = "argo-rollouts"


def platform_flows(ns: PlatformNamespaces, worker_egress_cidrs: tuple[str, ...]) -> list[Flow]:
    """Every connection the platform makes; anything not listed here is denied."""
    api = Pods(ns.app, selector_labels("api"))
    worker = Pods(ns.app, selector_labels("worker"))
    migrate = Pods(ns.app, selector_labels("migrate"))
    smoke = Pods(ns.app, selector_labels("smoke"))
    data = Pods(ns.data)
    observability = Pods(ns.observability)
    edge = Pods(ns.edge)
    envoy_gateway = Pods(ns.envoy_gateway, ENVOY_GATEWAY_LABELS)
    rate_limit = Pods(ns.envoy_gateway, RATE_LIMIT_LABELS)
    rate_limit_store = Pods(ns.envoy_gateway, {"app.kubernetes.io/instance": RATE_LIMIT_STORE})
    prometheus = Pods(ns.observability, PROMETHEUS_LABELS)
    operators = {
        name: Pods(namespace)
        for name, namespace in {
            "cert-manager": ns.cert_manager,
            "envoy-gateway": ns.envoy_gateway,
            "keda": ns.keda,
            "cloudnative-pg": ns.cloudnative_pg,
            "rabbitmq-operator": ns.rabbitmq_operator,
            "metrics-server": ns.metrics_server,
            "argo-rollouts": ns.argo_rollouts,
        }.items()
    }
    data_ports = (ports.POSTGRES_PORT, ports.AMQP_PORT, ports.VALKEY_PORT)
    otlp_ports = (ports.OTLP_GRPC_PORT, ports.OTLP_HTTP_PORT)
    data_metrics_ports = (ports.POSTGRES_METRICS_PORT, ports.RABBITMQ_METRICS_PORT, ports.VALKEY_METRICS_PORT)
    edge_ports = (ports.EDGE_HTTP_CONTAINER_PORT, ports.EDGE_HTTPS_CONTAINER_PORT)
    keda_ports = (ports.OPERATOR_WEBHOOK_PORT, ports.KEDA_METRICS_API_PORT)
    return [
        # Clients reach the Envoy proxies, which forward to the API.
        Flow("clients-to-edge", ANYWHERE, edge, edge_ports),
        Flow("edge-to-api", edge, api, (ports.API_PORT,)),
        Flow("edge-internal", edge, edge),
        Flow("edge-to-envoy-gateway", edge, operators["envoy-gateway"], (ports.ENVOY_XDS_PORT,)),
        # Every replica asks one rate-limit service, so a client meets one limit whatever the replica count.
        Flow("edge-to-rate-limit", edge, rate_limit, (ports.RATE_LIMIT_GRPC_PORT,)),
        Flow("rate-limit-to-envoy-gateway", rate_limit, envoy_gateway, (ports.RATE_LIMIT_XDS_PORT,)),
        Flow("rate-limit-to-store", rate_limit, rate_limit_store, (ports.VALKEY_PORT,)),
        # The app's own traffic: data services, traces, and the HTTP calls of the http.request task.
        Flow("api-to-data", api, data, data_ports),
        Flow("worker-to-data", worker, data, data_ports),
        Flow("migrate-to-postgres", migrate, data, (ports.POSTGRES_PORT,)),
        Flow("api-to-tracing", api, observability, otlp_ports),
        Flow("worker-to-tracing", worker, observability, otlp_ports),
        Flow("worker-to-internet", worker, Network(worker_egress_cidrs), (80, 443)),
        # Data services replicate among themselves; their operators and instance managers use the API server.
        Flow("data-internal", data, data),
        kube_api_access("data-kube-api", data),
        Flow("cloudnative-pg-to-postgres", operators["cloudnative-pg"], data, (ports.POSTGRES_STATUS_PORT,)),
        Flow("rabbitmq-operator-to-rabbitmq", operators["rabbitmq-operator"], data, (ports.RABBITMQ_MANAGEMENT_PORT,)),
        Flow("keda-to-rabbitmq", operators["keda"], data, (ports.AMQP_PORT,)),
        # KEDA reads the API's request rate from Prometheus, which scrapes KEDA's operator.
        Flow("keda-to-prometheus", operators["keda"], prometheus, (ports.PROMETHEUS_PORT,)),
        Flow("scrape-keda", observability, operators["keda"], (ports.KEDA_OPERATOR_METRICS_PORT,)),
        # Prometheus scrapes pods and nodes anywhere; Grafana, Alertmanager and Jaeger talk inside the namespace.
        Flow("observability-to-anywhere", observability, ANYWHERE),
        Flow("observability-internal", observability, observability),
        kube_api_access("observability-kube-api", observability),
        Flow("scrape-api", observability, api, (ports.API_PORT,)),
        Flow("scrape-worker", observability, worker, (ports.WORKER_METRICS_PORT,)),
        Flow("scrape-data", observability, data, data_metrics_ports),
        Flow("scrape-edge", observability, edge, (ports.ENVOY_METRICS_PORT,)),
        Flow("scrape-cert-manager", observability, operators["cert-manager"], (ports.CERT_MANAGER_METRICS_PORT,)),
        Flow("kube-api-to-prometheus-operator", KUBE_API, observability, (ports.PROMETHEUS_OPERATOR_WEBHOOK_PORT,)),
        # Blue-green: the smoke Job runs a workflow through the new API pods; Argo Rollouts judges them on Prometheus.
        Flow("smoke-to-api", smoke, api, (ports.API_PORT,)),
        Flow("argo-rollouts-to-prometheus", operators["argo-rollouts"], prometheus, (ports.PROMETHEUS_PORT,)),
        # Operators watch the API server, and the API server calls their webhooks.
        *(kube_api_access(f"{name}-kube-api", pods) for name, pods in operators.items()),
        # Envoy Gateway's namespace gets the explicit flows above instead: its Valkey answers the rate-limit pods only.
        # Argo Rollouts' controllers elect their leader through the API server and never call each other.
        *(
            Flow(f"{name}-internal", pods, pods)
            for name, pods in operators.items()
            if name not in ("envoy-gateway", "argo-rollouts")
        ),
        Flow("kube-api-to-cert-manager", KUBE_API, operators["cert-manager"], (ports.CERT_MANAGER_WEBHOOK_PORT,)),
        Flow("kube-api-to-cloudnative-pg", KUBE_API, operators["cloudnative-pg"], (ports.OPERATOR_WEBHOOK_PORT,)),
        Flow("kube-api-to-keda", KUBE_API, operators["keda"], keda_ports),
        Flow("kube-api-to-envoy-gateway", KUBE_API, operators["envoy-gateway"], (ports.OPERATOR_WEBHOOK_PORT,)),
        # The API server proxies metrics.k8s.io to metrics-server, which scrapes every node's kubelet.
        Flow("kube-api-to-metrics-server", KUBE_API, operators["metrics-server"], (ports.METRICS_SERVER_PORT,)),
        Flow("metrics-server-to-kubelets", operators["metrics-server"], ANYWHERE, (ports.KUBELET_PORT,)),
        # ACME: cert-manager talks to Let's Encrypt and self-checks the HTTP-01 challenge through the public address.
        Flow("cert-manager-to-acme", operators["cert-manager"], ANYWHERE, (80, 443)),
        # Behind an IP-based load balancer (GKE, AKS, MetalLB) kube-proxy rewrites that address to an Envoy pod's
        # container port before any policy sees the packet: the self-check arrives as cert-manager -> pod:10080.
        Flow("cert-manager-http01-self-check", operators["cert-manager"], edge, (ports.EDGE_HTTP_CONTAINER_PORT,)),
    ]
