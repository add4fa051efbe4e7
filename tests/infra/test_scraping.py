"""Every exporter whose series the alerts and dashboards read is scraped, and Prometheus may reach it: a monitor for
it in every stack (or one its chart renders), and NetworkPolicies that admit the scrape."""

from dataclasses import dataclass

import pytest
import yaml

from tests.infra.chart_sources import pinned_folder, render
from tests.infra.exporter_series import series_by_exporter
from tests.infra.test_network import API, CERT_MANAGER, POSTGRES, PROMETHEUS, RABBITMQ, WORKER, Pod, allowed
from tools.mock_stack import HELM_RELEASE, reveal

OBSERVABILITY = "workflow-observability"
VALKEY = Pod("valkey", "workflow-data", {"app.kubernetes.io/instance": "workflow-valkey"})
KEDA_OPERATOR = Pod("keda-operator", "keda", {"app.kubernetes.io/name": "keda-operator"})
# Labels as Envoy Gateway gives the proxies of Gateway `workflow` (gateway v1.9.0,
# internal/infrastructure/kubernetes/proxy/testdata/deployments/gateway-namespace-mode.yaml).
ENVOY_PROXY = Pod(
    "envoy",
    "workflow-edge",
    {
        "app.kubernetes.io/name": "envoy",
        "app.kubernetes.io/component": "proxy",
        "app.kubernetes.io/managed-by": "envoy-gateway",
        "gateway.envoyproxy.io/owning-gateway-name": "workflow",
        "gateway.envoyproxy.io/owning-gateway-namespace": "workflow-edge",
    },
)
KUBE_STATE_METRICS = Pod("kube-state-metrics", OBSERVABILITY, {"app.kubernetes.io/name": "kube-state-metrics"})


@dataclass(frozen=True)
class Scrape:
    """How one exporter is scraped: the monitor the platform creates for it, and the pods and port it reaches."""

    kind: str
    monitor: str
    pod: Pod
    port_name: str
    port: int
    path: str = "/metrics"


# Exporter family -> its scrape. Labels of the pods as their charts and operators set them (see test_network.py).
SCRAPES = {
    # Pod by pod: blue-green points two Services at the API's pods once a version is promoted.
    "app api": Scrape("PodMonitor", "workflow-api", API, "http", 8000),
    "app worker": Scrape("ServiceMonitor", "workflow-worker", WORKER, "metrics", 9100),
    "postgres": Scrape("PodMonitor", "postgres", POSTGRES, "metrics", 9187),
    "rabbitmq": Scrape("ServiceMonitor", "rabbitmq", RABBITMQ, "prometheus", 15692),
    "rabbitmq per queue": Scrape(
        "ServiceMonitor", "rabbitmq-queues", RABBITMQ, "prometheus", 15692, path="/metrics/detailed"
    ),
    "valkey": Scrape("PodMonitor", "valkey", VALKEY, "metrics", 9121),
    "cert-manager": Scrape("ServiceMonitor", "cert-manager", CERT_MANAGER, "http-metrics", 9402),
    "envoy": Scrape("PodMonitor", "envoy-proxies", ENVOY_PROXY, "metrics", 19001, path="/stats/prometheus"),
    "keda": Scrape("ServiceMonitor", "keda-operator", KEDA_OPERATOR, "metrics", 8080),
}

# Catalogue exporter (tests/infra/exporter_series.py) -> the families above that scrape its series.
CATALOGUE_SCRAPES = {
    "cloudnative-pg": ["postgres"],
    "rabbitmq": ["rabbitmq", "rabbitmq per queue"],
    "redis_exporter": ["valkey"],
    "cert-manager": ["cert-manager"],
    "envoy": ["envoy"],
    "keda": ["keda"],
    "kube-state-metrics": ["kube-state-metrics"],  # kube-prometheus-stack's own monitor, below
    "prometheus": [],  # `up`: Prometheus records it of every target it scrapes
    "kubelet": ["kubelet"],  # kube-prometheus-stack's own monitor, below
}


def test_every_exporter_of_the_catalogue_is_scraped():
    assert CATALOGUE_SCRAPES.keys() == series_by_exporter().keys()


def _endpoint(stack, scrape: Scrape) -> dict:
    spec = stack.one(scrape.kind, scrape.monitor)["spec"]
    assert stack.one(scrape.kind, scrape.monitor)["metadata"]["namespace"] == OBSERVABILITY
    assert spec["namespaceSelector"] == {"matchNames": [scrape.pod.namespace]}
    (endpoint,) = spec["endpoints" if scrape.kind == "ServiceMonitor" else "podMetricsEndpoints"]
    return endpoint


@pytest.mark.parametrize("family", SCRAPES)
def test_every_stack_monitors_the_exporter(stack, family):
    scrape = SCRAPES[family]
    endpoint = _endpoint(stack, scrape)
    assert (endpoint["port"], endpoint["path"]) == (scrape.port_name, scrape.path)
    if scrape.kind == "PodMonitor":  # a ServiceMonitor selects Services, whose labels are not the pods'
        selector = stack.one(scrape.kind, scrape.monitor)["spec"]["selector"]["matchLabels"]
        assert selector.items() <= scrape.pod.labels.items()


@pytest.mark.parametrize("family", SCRAPES)
def test_prometheus_may_reach_the_exporter(stack, family):
    scrape = SCRAPES[family]
    assert allowed(stack, PROMETHEUS, scrape.pod, scrape.port)


def test_rabbitmq_per_queue_scrape_asks_for_the_queue_families(stack):
    endpoint = _endpoint(stack, SCRAPES["rabbitmq per queue"])
    assert endpoint["params"] == {"family": ["queue_coarse_metrics", "queue_consumer_count"]}


def _release(stack, name: str) -> tuple[dict, list[dict]]:
    """The values a stack gives a Helm release, and what its chart renders with them."""
    (release,) = [r for r in stack.of_type(HELM_RELEASE) if r.name == name]
    inputs = reveal(release.inputs)
    values = inputs.get("values") or {}
    folder = pinned_folder(inputs["chart"].rsplit("/", 1)[-1], inputs["version"])
    return values, render(folder, inputs["name"], inputs["namespace"], values)


def test_the_cert_manager_monitor_selects_the_charts_metrics_service(stack):
    _, objects = _release(stack, "cert-manager")
    selector = stack.one("ServiceMonitor", "cert-manager")["spec"]["selector"]["matchLabels"]
    (service,) = [o for o in objects if o["kind"] == "Service" and selector.items() <= o["metadata"]["labels"].items()]
    assert {"name": "http-metrics", "protocol": "TCP", "port": 9402} in service["spec"]["ports"]


def test_kube_prometheus_stack_monitors_the_kubelets_cadvisor(stack):
    _, objects = _release(stack, "kube-prometheus-stack")
    paths = [
        endpoint.get("path")
        for monitor in objects
        if monitor["kind"] == "ServiceMonitor" and monitor["metadata"]["name"].endswith("-kubelet")
        for endpoint in monitor["spec"]["endpoints"]
    ]
    assert "/metrics/cadvisor" in paths


def test_kube_prometheus_stack_runs_kube_state_metrics_with_its_monitor(stack):
    """The subchart's source is not here to render its ServiceMonitor: its switches are read from the values, the
    stack's over the chart's defaults."""
    values, _ = _release(stack, "kube-prometheus-stack")
    defaults = yaml.safe_load((pinned_folder("kube-prometheus-stack", "88.5.0") / "values.yaml").read_text())
    for path in (("kubeStateMetrics", "enabled"), ("kube-state-metrics", "prometheus", "monitor", "enabled")):
        assert _lookup(values, path, default=_lookup(defaults, path)) is True, path
    assert allowed(stack, PROMETHEUS, KUBE_STATE_METRICS, 8080)


def _lookup(values: dict, path: tuple[str, ...], default=None):
    for key in path:
        if not isinstance(values, dict) or key not in values:
            return default
        values = values[key]
    return values
