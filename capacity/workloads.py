"""Every workload a stack runs, read from its StackConfig and the values the components hand each chart.

`workloads(stack)` is the one list the cost is computed from. A request the program sets comes from the stack file or
from the components' values (read here from the very constants and functions the components render); a request left
to a chart or a controller is its default, kept here as a figure with its source. tests/infra/test_capacity.py
renders every stack under mocks and every chart from its source, and fails when this list and what the stack really
creates disagree.
"""

from __future__ import annotations

from capacity import prices
from capacity.cost import Container, MonthlyCost, Workload, monthly_cost
from components.app_tier import ARGO_ROLLOUTS_VALUES, KEDA_VALUES, METRICS_SERVER_VALUES
from components.config import Resources, StackConfig
from components.config_reader import byte_count, cpu_millicores
from components.data_plane import (
    CLOUDNATIVE_PG_VALUES,
    POSTGRES_CLUSTER,
    RABBITMQ_CLUSTER,
    VALKEY_RELEASE,
    valkey_values,
)
from components.edge_ingress import CERT_MANAGER_VALUES, ENVOY_PROXY_NAME, RATE_LIMIT_STORE_VALUES, envoy_proxy_spec
from components.network import RATE_LIMIT_STORE
from components.observability import JAEGER_RELEASE, JAEGER_VALUES, prometheus_stack_values

STACK_FILE = "stack file"
OUR_VALUES = "our chart values"
# Requests nobody sets: `resources: {}` in the chart's values.yaml.
CHART_DEFAULT_NONE = "chart default: none"
# kube-prometheus-stack's subcharts, whose sources are not in ../shared/helm-charts: our values set their top-level
# `resources` (upstream values.yaml of grafana 12.11.0, kube-state-metrics 8.4.0, prometheus-node-exporter 4.56.1),
# which no render here can confirm.
SUBCHART_VALUES = "our subchart values (source not in shared/helm-charts)"

# gateway-helm v1.9.0 values.tmpl.yaml: deployment.envoyGateway.resources.requests.
ENVOY_GATEWAY_CHART_REQUESTS = ("100m", "256Mi")
# The RabbitMQ Cluster Operator's release manifest (config/manager/manager.yaml of v2.22.3).
RABBITMQ_OPERATOR_MANIFEST_REQUESTS = ("200m", "500Mi")
# Envoy Gateway's built-in defaults for what its controller creates (api/v1alpha1/shared_types.go):
# DefaultDeploymentCPU/MemoryResourceRequests for the rate-limit Deployment, DefaultShutdownManager* for the proxies'
# shutdown-manager sidecar. No chart renders these, so no test here can read them: re-check on an upgrade.
ENVOY_GATEWAY_CONTROLLER = "Envoy Gateway built-in default"
RATE_LIMIT_DEFAULT_REQUESTS = ("100m", "512Mi")
SHUTDOWN_MANAGER_DEFAULT_REQUESTS = ("10m", "32Mi")
# The Prometheus Operator's config-reloader sidecar: kube-prometheus-stack passes --config-reloader-cpu-request and
# --config-reloader-memory-request `| default 0` (templates/prometheus-operator/deployment.yaml).
CONFIG_RELOADER_NONE = "operator flag default: none"


def container(name: str, cpu: str | None, memory: str | None, source: str) -> Container:
    return Container(
        name=name,
        cpu_millicores=int(cpu_millicores(cpu)) if cpu else 0,
        memory_bytes=byte_count(memory) if memory else 0,
        source=source,
    )


def _requested(name: str, resources: dict, source: str) -> Container:
    requests = resources.get("requests", {})
    return container(name, requests.get("cpu"), requests.get("memory"), source)


def _ours(name: str, resources: Resources) -> Container:
    return container(name, resources.cpu_request, resources.memory_request, STACK_FILE)


def _none(name: str, source: str = CHART_DEFAULT_NONE) -> Container:
    return Container(name, 0, 0, source)


def _fixed(name: str, component: str, replicas: int, *containers: Container, **extra) -> Workload:
    return Workload(name, component, replicas, replicas, tuple(containers), **extra)


def _job(name: str, component: str, *containers: Container) -> Workload:
    return _fixed(name, component, 1, *containers, runs_to_completion=True)


def workloads(stack: StackConfig) -> list[Workload]:
    """Every pod-running object of the stack, with its replicas (autoscaler bounds), requests and claims."""
    found = [*_app(stack), *_data(stack), *_observability(stack), *_edge(stack)]
    if stack.installs("metrics-server"):
        found.append(
            _fixed(
                "metrics-server",
                "metrics-server",
                METRICS_SERVER_VALUES["replicas"],
                _requested("metrics-server", METRICS_SERVER_VALUES["resources"], OUR_VALUES),
            )
        )
    if stack.installs("argo-rollouts"):
        controller = ARGO_ROLLOUTS_VALUES["controller"]
        found.append(
            _fixed(
                "argo-rollouts",
                "argo-rollouts",
                controller["replicas"],
                _requested("argo-rollouts", controller["resources"], OUR_VALUES),
            )
        )
    if stack.installs("keda"):
        found += [
            _fixed(name, "keda", 1, _requested(name, KEDA_VALUES["resources"][key], OUR_VALUES))
            for name, key in (
                ("keda-operator", "operator"),
                ("keda-operator-metrics-apiserver", "metricServer"),
                ("keda-admission-webhooks", "webhooks"),
            )
        ]
    return found


def monthly(stack: StackConfig, spot_discount: float = 0.0) -> tuple[MonthlyCost, MonthlyCost]:
    """The stack's month at every autoscaler's minimum, and at its maximum, at the priced region's list prices."""
    found, priced = workloads(stack), prices.us_east_1()
    low, high = (
        monthly_cost(found, priced, at_max=at_max, load_balancers=load_balancers(stack), spot_discount=spot_discount)
        for at_max in (False, True)
    )
    return low, high


def load_balancers(stack: StackConfig) -> int:
    """LoadBalancer Services: the Gateway's proxies, one Service whatever their replicas."""
    service = envoy_proxy_spec(stack.edge.proxy_replicas)["provider"]["kubernetes"]["envoyService"]
    return 1 if service["type"] == "LoadBalancer" else 0


def _app(stack: StackConfig) -> list[Workload]:
    api, workers = stack.api, stack.workers
    return [
        Workload("workflow-api", "app", api.replicas.min, api.replicas.max, (_ours("api", api.resources),)),
        Workload(
            "workflow-worker",
            "app",
            workers.replicas.min,
            workers.replicas.max,
            (_ours("worker", workers.resources),),
        ),
        _job("workflow-migrate", "app", _ours("migrate", api.resources)),
    ]


def _data(stack: StackConfig) -> list[Workload]:
    valkey = valkey_values(stack.redis, stack.storage_class, "")
    found = [
        _fixed(
            POSTGRES_CLUSTER,
            "data",
            stack.postgres.replicas,
            _ours("postgres", stack.postgres.resources),
            volume_bytes_per_pod=byte_count(stack.postgres.storage_size),
        ),
        _fixed(
            RABBITMQ_CLUSTER,
            "data",
            stack.rabbitmq.replicas,
            _ours("rabbitmq", stack.rabbitmq.resources),
            volume_bytes_per_pod=byte_count(stack.rabbitmq.storage_size),
        ),
        _fixed(
            VALKEY_RELEASE,
            "data",
            stack.redis.replicas,
            _ours(VALKEY_RELEASE, stack.redis.resources),
            _requested("metrics", valkey["metrics"]["exporter"]["resources"], OUR_VALUES),
            volume_bytes_per_pod=byte_count(stack.redis.storage_size),
        ),
    ]
    if stack.installs("cloudnative-pg"):
        found.append(
            _fixed(
                "cloudnative-pg",
                "postgres-operator",
                1,
                _requested("manager", CLOUDNATIVE_PG_VALUES["resources"], OUR_VALUES),
            )
        )
    if stack.installs("rabbitmq-cluster-operator"):
        found.append(
            _fixed(
                "rabbitmq-cluster-operator",
                "rabbitmq-operator",
                1,
                container("operator", *RABBITMQ_OPERATOR_MANIFEST_REQUESTS, "release manifest"),
            )
        )
    return found


def _observability(stack: StackConfig) -> list[Workload]:
    found = [
        _fixed(
            JAEGER_RELEASE, "observability", 1, _requested("jaeger", JAEGER_VALUES["jaeger"]["resources"], OUR_VALUES)
        )
    ]
    if not stack.installs("kube-prometheus-stack"):
        return found
    values = prometheus_stack_values(stack.observability, stack.storage_class, "", "")

    def claimed(spec: dict) -> int:
        return byte_count(spec["volumeClaimTemplate"]["spec"]["resources"]["requests"]["storage"])

    prometheus = values["prometheus"]["prometheusSpec"]
    alertmanager = values["alertmanager"]["alertmanagerSpec"]
    return [
        *found,
        _fixed(
            "kube-prometheus-stack-operator",
            "observability",
            1,
            _requested("kube-prometheus-stack", values["prometheusOperator"]["resources"], OUR_VALUES),
        ),
        _fixed(
            "kube-prometheus-stack-prometheus",
            "observability",
            prometheus["replicas"],
            _ours("prometheus", stack.observability.prometheus_resources),
            _none("config-reloader", CONFIG_RELOADER_NONE),
            volume_bytes_per_pod=claimed(prometheus["storageSpec"]),
        ),
        _fixed(
            "kube-prometheus-stack-alertmanager",
            "observability",
            alertmanager["replicas"],
            _requested("alertmanager", alertmanager["resources"], OUR_VALUES),
            _none("config-reloader", CONFIG_RELOADER_NONE),
            volume_bytes_per_pod=claimed(alertmanager["storage"]),
        ),
        _fixed(
            "kube-prometheus-stack-grafana",
            "observability",
            1,
            _requested("grafana", values["grafana"]["resources"], SUBCHART_VALUES),
        ),
        _fixed(
            "kube-prometheus-stack-kube-state-metrics",
            "observability",
            1,
            _requested("kube-state-metrics", values["kube-state-metrics"]["resources"], SUBCHART_VALUES),
        ),
        Workload(
            "kube-prometheus-stack-prometheus-node-exporter",
            "observability",
            1,
            1,
            (_requested("node-exporter", values["prometheus-node-exporter"]["resources"], SUBCHART_VALUES),),
            per_node=True,
        ),
        _job("kube-prometheus-stack-admission-create", "observability", _none("create")),
        _job("kube-prometheus-stack-admission-patch", "observability", _none("patch")),
    ]


def _edge(stack: StackConfig) -> list[Workload]:
    proxy = envoy_proxy_spec(stack.edge.proxy_replicas)["provider"]["kubernetes"]["envoyDeployment"]
    found = [
        _fixed(
            ENVOY_PROXY_NAME,
            "edge",
            proxy["replicas"],
            _requested("envoy", proxy["container"]["resources"], OUR_VALUES),
            container("shutdown-manager", *SHUTDOWN_MANAGER_DEFAULT_REQUESTS, ENVOY_GATEWAY_CONTROLLER),
        )
    ]
    if stack.installs("envoy-gateway"):
        found += [
            _fixed(
                "envoy-gateway",
                "envoy-gateway",
                1,
                container("envoy-gateway", *ENVOY_GATEWAY_CHART_REQUESTS, "chart default"),
            ),
            _job("gateway-helm-certgen", "envoy-gateway", _none("envoy-gateway-certgen")),
            _fixed(
                "envoy-ratelimit",
                "envoy-gateway",
                1,
                container("envoy-ratelimit", *RATE_LIMIT_DEFAULT_REQUESTS, ENVOY_GATEWAY_CONTROLLER),
            ),
            _fixed(
                RATE_LIMIT_STORE,
                "envoy-gateway",
                1,
                _requested(RATE_LIMIT_STORE, RATE_LIMIT_STORE_VALUES["resources"], OUR_VALUES),
            ),
        ]
    if stack.installs("cert-manager"):
        found += [
            _fixed(
                "cert-manager",
                "cert-manager",
                1,
                _requested("cert-manager-controller", CERT_MANAGER_VALUES["resources"], OUR_VALUES),
            ),
            *(
                _fixed(
                    f"cert-manager-{part}",
                    "cert-manager",
                    1,
                    _requested(f"cert-manager-{part}", CERT_MANAGER_VALUES[part]["resources"], OUR_VALUES),
                )
                for part in ("cainjector", "webhook")
            ),
            _job("cert-manager-startupapicheck", "cert-manager", _none("cert-manager-startupapicheck")),
        ]
    return found
