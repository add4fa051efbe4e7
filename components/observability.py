"""Observability: Prometheus, Grafana and Alertmanager (kube-prometheus-stack), Jaeger v2 for OTLP traces, the
scrape configuration of the platform's own workloads and the alerts on their metrics."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random

from components.alerting import CONFIG_FILE, alertmanager_config
from components.alerts import alert_rule_groups
from components.charts import JAEGER, KUBE_PROMETHEUS_STACK, install_chart
from components.config import ObservabilityConfig
from components.labels import labels
from components.workload import CONTAINER_SECURITY_CONTEXT, POD_SECURITY_CONTEXT, namespace

# The platform's Grafana dashboards, kept as JSON that can be edited in Grafana and exported back.
DASHBOARDS = Path(__file__).resolve().parent.parent / "dashboards"
GRAFANA_DASHBOARD_LABEL = "grafana_dashboard"
JAEGER_RELEASE = "jaeger"
OTLP_GRPC_PORT = 4317
OTLP_HTTP_PORT = 4318


@dataclass(frozen=True)
class ScrapeTarget:
    """Pods of the platform that expose Prometheus metrics on a named port, found through a Service or directly."""

    name: str
    namespace: str
    selector: dict[str, str]
    port_name: str
    port: int
    via_service: bool = True
    path: str = "/metrics"


@dataclass(frozen=True)
class ObservabilityArgs:
    namespace: str
    config: ObservabilityConfig
    storage_class: str | None
    install_prometheus_stack: bool
    scrape_targets: tuple[ScrapeTarget, ...]


class Observability(pulumi.ComponentResource):
    def __init__(self, name: str, args: ObservabilityArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("workflow-platform:index:Observability", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        # node-exporter reads host namespaces and paths, which only the privileged level admits.
        level = "privileged" if args.install_prometheus_stack else "restricted"
        ns = namespace(args.namespace, pod_security=level, labels=labels("observability"), opts=child)
        self.namespace = ns.metadata.name
        self.namespaces = {args.namespace: self.namespace}

        stack_ready: list[pulumi.Resource] = []
        if args.install_prometheus_stack:
            grafana_password = random.RandomPassword("grafana-admin", length=32, special=False, opts=child)
            grafana_admin = k8s.core.v1.Secret(
                "grafana-admin",
                metadata={"name": "grafana-admin", "namespace": self.namespace, "labels": labels("observability")},
                string_data={"admin-user": "admin", "admin-password": grafana_password.result},
                opts=child,
            )
            self.grafana_admin_secret_name = grafana_admin.metadata.name
            alertmanager_secret = k8s.core.v1.Secret(
                "alertmanager-config",
                metadata={
                    "name": "alertmanager-config",
                    "namespace": self.namespace,
                    "labels": labels("observability"),
                },
                string_data={CONFIG_FILE: alertmanager_config(args.config.alert_receivers)},
                opts=child,
            )
            stack_ready.append(
                install_chart(
                    KUBE_PROMETHEUS_STACK,
                    self.namespace,
                    prometheus_stack_values(
                        args.config,
                        args.storage_class,
                        grafana_admin.metadata.name,
                        alertmanager_secret.metadata.name,
                    ),
                    pulumi.ResourceOptions(parent=self, depends_on=[grafana_admin, alertmanager_secret]),
                )
            )
        else:
            self.grafana_admin_secret_name = pulumi.Output.from_input("")

        install_chart(JAEGER, self.namespace, JAEGER_VALUES, child, release_name=JAEGER_RELEASE)
        self.otlp_endpoint = otlp_endpoint(args.namespace)

        monitor_opts = pulumi.ResourceOptions(parent=self, depends_on=stack_ready)
        for target in args.scrape_targets:
            endpoint = {"port": target.port_name, "path": target.path, "interval": "15s"}
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
                opts=monitor_opts,
            )

        for dashboard in sorted(DASHBOARDS.glob("*.json")):
            # Grafana's sidecar loads every ConfigMap labelled grafana_dashboard=1 as a dashboard.
            k8s.core.v1.ConfigMap(
                f"dashboard-{dashboard.stem}",
                metadata={
                    "name": f"dashboard-{dashboard.stem}",
                    "namespace": self.namespace,
                    "labels": {**labels("observability"), GRAFANA_DASHBOARD_LABEL: "1"},
                },
                data={dashboard.name: dashboard.read_text()},
                opts=child,
            )

        k8s.apiextensions.CustomResource(
            "workflow-platform-alerts",
            api_version="monitoring.coreos.com/v1",
            kind="PrometheusRule",
            metadata={"name": "workflow-platform", "namespace": self.namespace, "labels": labels("observability")},
            spec={"groups": alert_rule_groups()},
            opts=monitor_opts,
        )

        self.register_outputs(
            {
                "namespace": self.namespace,
                "otlp_endpoint": self.otlp_endpoint,
                "grafana_admin_secret": self.grafana_admin_secret_name,
            }
        )


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
                # Our Secret (components/alerting.py) holds the whole configuration, receivers' secrets included;
                # the chart then renders no Secret of its own and its `alertmanager.config` goes unused.
                "configSecret": alertmanager_config_secret,
                "useExistingSecret": True,
            }
        },
        "grafana": {
            "admin": {"existingSecret": grafana_admin, "userKey": "admin-user", "passwordKey": "admin-password"},
            "sidecar": {"dashboards": {"enabled": True, "label": GRAFANA_DASHBOARD_LABEL, "labelValue": "1"}},
        },
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
