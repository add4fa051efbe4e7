"""Third-party systems the platform installs, each from its official Helm chart or release manifest, pinned.

Every version pinned here has its source in `../shared/helm-charts` (tests/infra/test_charts.py proves it), so what
the program hands each chart is checked against what that chart reads.

Each chart says whether it is installed with `helm.v4.Chart` (every object rendered by Pulumi: visible in previews
and to policies) or with `helm.v3.Release` (Helm itself installs it, which keeps the chart's hooks working).
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s


@dataclass(frozen=True)
class HelmChart:
    name: str
    repository: str
    version: str
    keeps_hooks: bool

    @property
    def reference(self) -> str:
        """The chart as Helm names it: `oci://...` charts carry their repository in the name."""
        return self.repository if self.repository.startswith("oci://") else self.name


@dataclass(frozen=True)
class ReleaseManifest:
    """A project's own release manifest, installed whole; it creates the namespace it runs in."""

    name: str
    url: str
    namespace: str


# v3.Release: the chart's startupapicheck is a post-install hook that proves the webhook answers before issuers apply.
CERT_MANAGER = HelmChart("cert-manager", "https://charts.jetstack.io", "v1.21.1", keeps_hooks=True)
# v3.Release: the chart generates its control-plane certificates in a pre-install hook Job (certgen).
ENVOY_GATEWAY = HelmChart("gateway-helm", "oci://docker.io/envoyproxy/gateway-helm", "v1.9.0", keeps_hooks=True)
# v4.Chart: no hooks; every KEDA object shows in previews.
KEDA = HelmChart("keda", "https://kedacore.github.io/charts", "2.20.2", keeps_hooks=False)
# v4.Chart: no hooks; the operator, its webhooks and CRDs show in previews.
CLOUDNATIVE_PG = HelmChart("cloudnative-pg", "https://cloudnative-pg.github.io/charts", "0.29.0", keeps_hooks=False)
# The RabbitMQ team publishes no Helm chart (only Bitnami does): the operator's own release manifest, pinned.
RABBITMQ_CLUSTER_OPERATOR = ReleaseManifest(
    "rabbitmq-cluster-operator",
    "https://github.com/rabbitmq/cluster-operator/releases/download/v2.22.3/cluster-operator.yml",
    namespace="rabbitmq-system",
)
# v3.Release: the admission webhook's certificates are created and patched by pre/post-install hook Jobs.
KUBE_PROMETHEUS_STACK = HelmChart(
    "kube-prometheus-stack", "https://prometheus-community.github.io/helm-charts", "88.5.0", keeps_hooks=True
)
# v4.Chart: no hooks; Jaeger v2 (an OpenTelemetry Collector distribution) as plain objects.
JAEGER = HelmChart("jaeger", "https://jaegertracing.github.io/helm-charts", "4.11.1", keeps_hooks=False)
# v4.Chart: no hooks in Valkey's official chart.
VALKEY = HelmChart("valkey", "https://valkey.io/valkey-helm/", "0.11.0", keeps_hooks=False)
# v4.Chart: no hooks; serves the metrics API (metrics.k8s.io) that the API's HorizontalPodAutoscaler reads.
METRICS_SERVER = HelmChart(
    "metrics-server", "https://kubernetes-sigs.github.io/metrics-server/", "3.13.1", keeps_hooks=False
)
# v4.Chart: no hooks; the controller, its RBAC and the Rollout and analysis CRDs show in previews.
ARGO_ROLLOUTS = HelmChart("argo-rollouts", "https://argoproj.github.io/argo-helm", "2.41.0", keeps_hooks=False)


def install_chart(
    chart: HelmChart,
    namespace: pulumi.Input[str],
    values: dict,
    opts: pulumi.ResourceOptions,
    release_name: str | None = None,
) -> pulumi.Resource:
    release_name = release_name or chart.name
    repository_opts = None if chart.repository.startswith("oci://") else {"repo": chart.repository}
    if chart.keeps_hooks:
        return k8s.helm.v3.Release(
            release_name,
            name=release_name,
            chart=chart.reference,
            version=chart.version,
            repository_opts=repository_opts,
            namespace=namespace,
            values=values,
            atomic=True,
            cleanup_on_fail=True,
            timeout=900,
            opts=opts,
        )
    return k8s.helm.v4.Chart(
        release_name,
        chart=chart.reference,
        version=chart.version,
        repository_opts=repository_opts,
        namespace=namespace,
        values=values,
        opts=opts,
    )
