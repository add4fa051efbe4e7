"""Observability: Prometheus, Grafana and Alertmanager (kube-prometheus-stack), Jaeger v2 for OTLP traces, the
scrape configuration of the platform's own workloads and the alerts on their metrics."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random

from components.alerting import CONFIG_FILE, alertmanager_config
from components.alerts import alert_rule_groups
from components.charts import JAEGER, KUBE_PROMETHEUS_STACK, install_chart
from components.config import ObservabilityConfig
from components.interfaces import ScrapeTarget
from components.labels import labels
from components.namespaces import InstalledAddOn, install_addon, platform_namespace
from components.network import Flow
from components.ports import OTLP_GRPC_PORT
from components.workload import CONTAINER_SECURITY_CONTEXT, POD_SECURITY_CONTEXT

# The platform's Grafana dashboards, kept as JSON that can be edited in Grafana and exported back.
DASHBOARDS = Path(__file__).resolve().parent.parent / "dashboards"
GRAFANA_DASHBOARD_LABEL = "grafana_dashboard"
GRAFANA_ADMIN_SECRET = "grafana-admin"
ALERTMANAGER_CONFIG_SECRET = "alertmanager-config"
JAEGER_RELEASE = "jaeger"


@dataclass(frozen=True)
class ObservabilityArgs:
    namespace: str
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
            self._monitor(target, monitor_opts)
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

    def _monitor(self, target: ScrapeTarget, opts: pulumi.ResourceOptions) -> None:
        """A ServiceMonitor, or a PodMonitor for pods without a Service, that scrapes `target` every 15 s."""
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
            opts=opts,
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
