"""Observability: Prometheus, Grafana and Alertmanager (kube-prometheus-stack), Jaeger v2 for OTLP traces, the
scrape configuration of the platform's own workloads and the alerts on their metrics."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random

from components.alerting import CONFIG_FILE, alertmanager_config
from components.alerts import alert_rule_groups, prometheus_le
from components.charts import JAEGER, KUBE_PROMETHEUS_STACK, install_chart
from components.config import ObservabilityConfig, ServiceLevelObjectives
from components.interfaces import ScrapeTarget
from components.labels import labels
from components.namespaces import InstalledAddOn, install_addon, platform_namespace
from components.network import Flow
from components.ports import OTLP_GRPC_PORT, PROMETHEUS_PORT
from components.workload import CONTAINER_SECURITY_CONTEXT, POD_SECURITY_CONTEXT

# The platform's Grafana dashboards, kept as JSON that can be edited in Grafana and exported back.
DASHBOARDS = Path(__file__).resolve().parent.parent / "dashboards"
GRAFANA_DASHBOARD_LABEL = "grafana_dashboard"
GRAFANA_ADMIN_SECRET = "grafana-admin"
ALERTMANAGER_CONFIG_SECRET = "alertmanager-config"
JAEGER_RELEASE = "jaeger"


def _resources(cpu_request: str, memory_request: str, cpu_limit: str, memory_limit: str) -> dict:
    return {
        "requests": {"cpu": cpu_request, "memory": memory_request},
        "limits": {"cpu": cpu_limit, "memory": memory_limit},
    }


# kube-prometheus-stack's pods other than Prometheus, whose needs do not grow with the stack: its charts request
# nothing by default. Alertmanager's memory holds alerts and silences, a few MiB at this platform's rule count.
ALERTMANAGER_RESOURCES = _resources("50m", "128Mi", "200m", "128Mi")
PROMETHEUS_OPERATOR_RESOURCES = _resources("50m", "128Mi", "500m", "256Mi")
# Grafana renders dashboards from Prometheus' answers; its memory follows concurrent viewers, not the stack.
GRAFANA_RESOURCES = _resources("100m", "256Mi", "500m", "512Mi")
# kube-state-metrics' memory follows the cluster's object count; node-exporter's is a few tens of MiB per node.
KUBE_STATE_METRICS_RESOURCES = _resources("50m", "128Mi", "200m", "256Mi")
NODE_EXPORTER_RESOURCES = _resources("20m", "32Mi", "200m", "64Mi")


@dataclass(frozen=True)
class ObservabilityArgs:
    namespace: str
    # The Pulumi stack, set as label `stack` on every series the platform's monitors scrape.
    stack: str
    config: ObservabilityConfig
    storage_class: str | None
    install_prometheus_stack: bool
    scrape_targets: tuple[ScrapeTarget, ...]
    # The platform's flow table: the namespace created here gets its NetworkPolicies from it.
    flows: Sequence[Flow]


class Observability(pulumi.ComponentResource):
    def __init__(self, name: str, args: ObservabilityArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("workflow-platform:index:Observability", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        if args.install_prometheus_stack:
            prometheus_stack = self._prometheus_stack(args)
            self.namespace = prometheus_stack.namespace
            self.grafana_admin_secret_name = prometheus_stack.secret_names[GRAFANA_ADMIN_SECRET]
            stack_ready = [prometheus_stack.installer]
        else:
            self.namespace = platform_namespace(
                args.namespace, pod_security="restricted", component="observability", flows=args.flows, parent=self
            )
            self.grafana_admin_secret_name = pulumi.Output.from_input("")
            stack_ready = []

        install_chart(JAEGER, self.namespace, JAEGER_VALUES, child, release_name=JAEGER_RELEASE)
        self.otlp_endpoint = otlp_endpoint(args.namespace)

        monitor_opts = pulumi.ResourceOptions(parent=self, depends_on=stack_ready)
        for target in args.scrape_targets:
            self._monitor(target, args.stack, monitor_opts)
        for dashboard in sorted(DASHBOARDS.glob("*.json")):
            # Grafana's sidecar loads every ConfigMap labelled grafana_dashboard=1 as a dashboard.
            k8s.core.v1.ConfigMap(
                f"dashboard-{dashboard.stem}",
                metadata={
                    "name": f"dashboard-{dashboard.stem}",
                    "namespace": self.namespace,
                    "labels": {**labels("observability"), GRAFANA_DASHBOARD_LABEL: "1"},
                },
                data={dashboard.name: dashboard_for_stack(dashboard, args.config.objectives)},
                opts=child,
            )
        k8s.apiextensions.CustomResource(
            "workflow-platform-alerts",
            api_version="monitoring.coreos.com/v1",
            kind="PrometheusRule",
            metadata={"name": "workflow-platform", "namespace": self.namespace, "labels": labels("observability")},
            spec={"groups": alert_rule_groups(args.config.objectives)},
            opts=monitor_opts,
        )

        self.register_outputs(
            {
                "namespace": self.namespace,
                "otlp_endpoint": self.otlp_endpoint,
                "grafana_admin_secret": self.grafana_admin_secret_name,
            }
        )

    def _prometheus_stack(self, args: ObservabilityArgs) -> InstalledAddOn:
        """kube-prometheus-stack in the component's own namespace, which node-exporter needs `privileged`: it reads
        host namespaces and paths. Grafana's admin login and Alertmanager's configuration are Secrets of ours."""
        grafana_password = random.RandomPassword(
            "grafana-admin", length=32, special=False, opts=pulumi.ResourceOptions(parent=self)
        )
        return install_addon(
            KUBE_PROMETHEUS_STACK,
            namespace=args.namespace,
            component="observability",
            pod_security="privileged",
            flows=args.flows,
            parent=self,
            secrets={
                GRAFANA_ADMIN_SECRET: {"admin-user": "admin", "admin-password": grafana_password.result},
                ALERTMANAGER_CONFIG_SECRET: {CONFIG_FILE: alertmanager_config(args.config.alert_receivers)},
            },
            values=prometheus_stack_values(
                args.config, args.storage_class, GRAFANA_ADMIN_SECRET, ALERTMANAGER_CONFIG_SECRET
            ),
        )

    def _monitor(self, target: ScrapeTarget, stack: str, opts: pulumi.ResourceOptions) -> None:
        """A ServiceMonitor, or a PodMonitor for pods without a Service, that scrapes `target` every 15 s and labels
        its series with the stack, which the dashboards' `stack` variable selects."""
        endpoint = {
            "port": target.port_name,
            "path": target.path,
            "interval": "15s",
            "relabelings": [stack_relabeling(stack)],
        }
        if target.params:
            endpoint["params"] = target.params
        k8s.apiextensions.CustomResource(
            target.name,
            api_version="monitoring.coreos.com/v1",
            kind="ServiceMonitor" if target.via_service else "PodMonitor",
            metadata={"name": target.name, "namespace": self.namespace, "labels": labels("observability")},
            spec={
                "namespaceSelector": {"matchNames": [target.namespace]},
                "selector": {"matchLabels": target.selector},
                ("endpoints" if target.via_service else "podMetricsEndpoints"): [endpoint],
            },
            opts=opts,
        )


def dashboard_for_stack(path: Path, objectives: ServiceLevelObjectives) -> str:
    """A dashboard as the stack's Grafana gets it: its constant variables that draw the API's objectives set to the
    stack's (the file holds the defaults of Pulumi.yaml)."""
    dashboard = json.loads(path.read_text())
    values = objective_constants(objectives)
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "constant" and variable["name"] in values:
            value = values[variable["name"]]
            variable["query"] = value
            variable["current"] = {"text": value, "value": value}
    return json.dumps(dashboard, indent=2, ensure_ascii=False) + "\n"


def objective_constants(objectives: ServiceLevelObjectives) -> dict[str, str]:
    """The dashboards' `slo_*` constants; `slo_latency_le` is the latency objective as its bucket's `le` label."""
    return {
        "slo_availability": f"{objectives.availability:g}",
        "slo_latency_seconds": f"{objectives.latency_seconds:g}",
        "slo_latency_target": f"{objectives.latency_target:g}",
        "slo_latency_le": prometheus_le(objectives.latency_seconds),
    }


def stack_relabeling(stack: str) -> dict:
    """Sets target label `stack` on every series of a target: with no source labels, `replace` writes the
    replacement as is."""
    return {"action": "replace", "targetLabel": "stack", "replacement": stack}


def otlp_endpoint(namespace: str) -> str:
    """Where workloads send OTLP traces (gRPC); a plain name, so tracing never waits on this component.

    jaeger 4.11.1 names its Service after the release (`jaeger.fullname`) and serves OTLP gRPC on `otlp-grpc` 4317."""
    return f"http://{JAEGER_RELEASE}.{namespace}.svc.cluster.local:{OTLP_GRPC_PORT}"


def prometheus_stack_values(
    config: ObservabilityConfig,
    storage_class: str | None,
    grafana_admin: pulumi.Input[str],
    alertmanager_config_secret: pulumi.Input[str],
):
    def claim(size: str) -> dict:
        spec = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}}
        if storage_class:
            spec["storageClassName"] = storage_class
        return {"volumeClaimTemplate": {"spec": spec}}

    return {
        "prometheus": {
            "prometheusSpec": {
                "replicas": config.prometheus_replicas,
                "retention": config.prometheus_retention,
                "resources": config.prometheus_resources.to_k8s(),
                "storageSpec": claim(config.prometheus_storage_size),
                # Select ServiceMonitors and rules from every release, not only this chart's.
                "serviceMonitorSelectorNilUsesHelmValues": False,
                "podMonitorSelectorNilUsesHelmValues": False,
                "ruleSelectorNilUsesHelmValues": False,
            }
        },
        "alertmanager": {
            "alertmanagerSpec": {
                "replicas": config.alertmanager_replicas,
                "storage": claim("2Gi"),
                "resources": ALERTMANAGER_RESOURCES,
                # Our Secret (components/alerting.py) holds the whole configuration, receivers' secrets included;
                # the chart then renders no Secret of its own and its `alertmanager.config` goes unused.
                "configSecret": alertmanager_config_secret,
                "useExistingSecret": True,
            }
        },
        "prometheusOperator": {"resources": PROMETHEUS_OPERATOR_RESOURCES},
        # grafana, kube-state-metrics and prometheus-node-exporter are subcharts whose sources are not in
        # ../shared/helm-charts, so neither the key check nor a render can reach these: `resources` is each
        # subchart's own top-level key (its upstream values.yaml: grafana 12.11.0, kube-state-metrics 8.4.0,
        # prometheus-node-exporter 4.56.1), which the parent passes down under the subchart's name.
        "grafana": {
            "admin": {"existingSecret": grafana_admin, "userKey": "admin-user", "passwordKey": "admin-password"},
            "sidecar": {"dashboards": {"enabled": True, "label": GRAFANA_DASHBOARD_LABEL, "labelValue": "1"}},
            "resources": GRAFANA_RESOURCES,
        },
        "kube-state-metrics": {"resources": KUBE_STATE_METRICS_RESOURCES},
        "prometheus-node-exporter": {"resources": NODE_EXPORTER_RESOURCES},
    }


JAEGER_VALUES = {
    # Jaeger v2 all-in-one: with no `userconfig` the binary runs its built-in configuration, OTLP in and traces kept in
    # memory; no datastore to run, traces do not outlive the pod.
    "jaeger": {
        "resources": {"requests": {"cpu": "100m", "memory": "512Mi"}, "limits": {"cpu": "1", "memory": "2Gi"}},
        "serviceAccount": {"automountServiceAccountToken": False},
        "podSecurityContext": POD_SECURITY_CONTEXT,
        "securityContext": CONTAINER_SECURITY_CONTEXT,
    },
}


def prometheus_url(namespace: str) -> str:
    """Where Prometheus answers queries (KEDA's prometheus triggers); a plain name, like `otlp_endpoint`.

    kube-prometheus-stack 88.5.0 names its Service `<fullname>-prometheus` (templates/prometheus/service.yaml), the
    fullname being the release name when that contains the chart's name, and serves `prometheus.service.port`."""
    return f"http://{KUBE_PROMETHEUS_STACK.name}-prometheus.{namespace}.svc.cluster.local:{PROMETHEUS_PORT}"
