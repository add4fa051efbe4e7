"""AppTier: the platform's namespace, image, database migrations, the autoscaled HTTP API (rolled out in place, or
blue-green through Argo Rollouts), and the autoscaling add-ons every workload's ScaledObject relies on."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_docker_build as docker_build
import pulumi_kubernetes as k8s
import pulumi_random as random

from components.charts import ARGO_ROLLOUTS, KEDA, METRICS_SERVER
from components.config import (
    ROLLOUT_ANALYSIS_COUNT,
    ROLLOUT_ANALYSIS_INITIAL_DELAY_SECONDS,
    ROLLOUT_ANALYSIS_INTERVAL_SECONDS,
    ApiConfig,
    BlueGreen,
    EngineTimings,
    ImageConfig,
    Resources,
)
from components.interfaces import Connections, ScrapeTarget
from components.labels import labels, selector_labels
from components.namespaces import InstalledAddOn, install_addon, platform_namespace
from components.network import Flow
from components.ports import API_PORT, KEDA_OPERATOR_METRICS_PORT, METRICS_SERVER_PORT
from components.workload import (
    HttpProbes,
    SecretFile,
    container,
    database_pool_env,
    deployment,
    disruption_budget,
    pod_template,
    service_account,
)

API_LIVENESS_PORT = 9100
FORMER_KEDA_PARENT = ("workers", "workflow-platform:index:WorkerPool")
# How long one migrations pod keeps retrying its database connection (APP_MIGRATE_CONNECT_TIMEOUT_S), and the time
# left for the migrations themselves; the Job allows every attempt both, and Pulumi waits for the Job a little longer.
MIGRATE_CONNECT_SECONDS = 300
MIGRATE_RUN_SECONDS = 300
MIGRATE_ATTEMPTS = 3
MIGRATE_DEADLINE_SECONDS = MIGRATE_ATTEMPTS * (MIGRATE_CONNECT_SECONDS + MIGRATE_RUN_SECONDS)

ROLLOUT_API_VERSION = "argoproj.io/v1alpha1"
# Blue-green: the Service the Gateway routes to is the active one; the preview one reaches the new version only.
PREVIEW_SERVICE = "workflow-api-preview"
SMOKE_TEMPLATE = "workflow-api-smoke"
HEALTH_TEMPLATE = "workflow-api-health"
# The smoke test's own deadline (`--timeout`); its Job gets a minute more to pull the image and start.
SMOKE_TIMEOUT_SECONDS = 60
SMOKE_JOB_DEADLINE_SECONDS = SMOKE_TIMEOUT_SECONDS + 60
SMOKE_RESOURCES = Resources(cpu_request="100m", cpu_limit="500m", memory_request="128Mi", memory_limit="256Mi")
# Routes Kubernetes and Prometheus call: a new pod's readiness answers 503 until its dependencies answer, which says
# nothing of the version's quality.
PROBE_ROUTES = "/healthz|/readyz|/metrics"


@dataclass(frozen=True)
class AppTierArgs:
    namespace: str
    api: ApiConfig
    # Lease and recovery timings: the API's dispatcher and every worker must agree on them.
    engine: EngineTimings
    image: ImageConfig
    build_context: str
    connections: Connections
    otlp_endpoint: pulumi.Input[str]
    # Resources that are ready only once PostgreSQL accepts connections: migrations wait for them.
    database_ready: Sequence[pulumi.Resource]
    # Resources that are ready only once the broker accepts connections: the API waits for them.
    broker_ready: Sequence[pulumi.Resource]
    # The autoscaling add-ons: KEDA runs every workload's ScaledObject (add-on `keda`), and metrics-server serves the
    # metrics API its CPU and memory triggers read (add-on `metrics-server`).
    install_keda: bool
    keda_namespace: str
    install_metrics_server: bool
    metrics_server_namespace: str
    # Prometheus's query address: KEDA reads the API's request rate there, and Argo Rollouts judges a new version.
    prometheus_url: pulumi.Input[str]
    # Argo Rollouts (add-on `argo-rollouts`) runs the API's Rollout when it is deployed blue-green.
    install_argo_rollouts: bool
    argo_rollouts_namespace: str
    # The platform's flow table: the namespaces created here get their NetworkPolicies from it.
    flows: Sequence[Flow]


class AppTier(pulumi.ComponentResource):
    """Creates the app namespace, resolves the image, runs migrations, then rolls out the API behind a Service."""

    def __init__(self, name: str, args: AppTierArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("workflow-platform:index:AppTier", name, None, opts)
        self.namespace = platform_namespace(
            args.namespace, pod_security="restricted", component="app", flows=args.flows, parent=self
        )
        self.image_ref = self._image(args.image, args.build_context, pulumi.ResourceOptions(parent=self))
        keda = self._keda(args)
        rollouts = self._argo_rollouts(args)
        # What every ScaledObject waits for, the workers' too: KEDA's CRDs and operator, and the metrics API.
        self.autoscaler_ready: list[pulumi.Resource] = [
            *([keda.installer] if keda else []),
            *self._metrics_server(args),
        ]
        self._secrets(args.connections)
        self.runtime_env = [
            {"name": "APP_LOG_FORMAT", "value": "json"},
            {"name": "OTEL_EXPORTER_OTLP_ENDPOINT", "value": args.otlp_endpoint},
            {"name": "OTEL_EXPORTER_OTLP_PROTOCOL", "value": "grpc"},
            *args.engine.env(),
        ]

        api_account = service_account(
            "workflow-api", self.namespace, labels("api"), pulumi.ResourceOptions(parent=self)
        )
        migrations = self._migrations(
            api_account.metadata.name,
            args.api.resources,
            pulumi.ResourceOptions(
                parent=self,
                depends_on=list(args.database_ready),
                custom_timeouts=pulumi.CustomTimeouts(create=_WAIT_FOR_MIGRATIONS, update=_WAIT_FOR_MIGRATIONS),
            ),
        )
        # What must have finished before anything reads the schema: the workers wait for it too.
        self.schema_ready: list[pulumi.Resource] = [migrations]
        self.service_name = self._service("workflow-api").metadata.name
        self.service_port = API_PORT
        # The API only rolls out once the schema it expects is in place and the broker it publishes to is up.
        ready = [migrations, *args.broker_ready]
        if args.api.blue_green is None:
            api = self._api(args.api, api_account.metadata.name, pulumi.ResourceOptions(parent=self, depends_on=ready))
            scale_target: dict = {"name": api.metadata.name}
        else:
            api = self._rollout(
                args,
                args.api.blue_green,
                api_account.metadata.name,
                ready,
                # Argo Rollouts' CRDs, unless the cluster provides them.
                crds=[rollouts.installer] if rollouts else [],
            )
            scale_target = {"apiVersion": ROLLOUT_API_VERSION, "kind": "Rollout", "name": "workflow-api"}
        self.scrape_targets = (
            # Scraped pod by pod, not through a Service: blue-green points two Services at the same pods once a
            # version is promoted, which would count each of them twice, and a version not yet promoted is in
            # neither the active Service nor a monitor of it.
            ScrapeTarget("workflow-api", args.namespace, selector_labels("api"), "http", API_PORT, via_service=False),
            *([_keda_operator_metrics(keda.namespace)] if keda else []),
        )
        self._autoscaler(
            args,
            scale_target,
            pulumi.ResourceOptions(parent=self, depends_on=[*self.autoscaler_ready, api]),
        )

        self.register_outputs(
            {
                "namespace": self.namespace,
                "image_ref": self.image_ref,
                "service_name": self.service_name,
                "connection_secret_name": self.connection_secret_name,
                "bootstrap_key_secret_name": self.bootstrap_key_secret_name,
            }
        )

    def _keda(self, args: AppTierArgs) -> InstalledAddOn | None:
        """KEDA, when the stack installs it."""
        if not args.install_keda:
            return None
        return install_addon(
            KEDA,
            namespace=args.keda_namespace,
            component="keda",
            flows=args.flows,
            parent=self,
            values=KEDA_VALUES,
            # WorkerPool installed KEDA before the API scaled on it too: a deployed stack moves it here, in place.
            aliases=[pulumi.Alias(parent=pulumi.create_urn(*FORMER_KEDA_PARENT))],
        )

    def _argo_rollouts(self, args: AppTierArgs) -> InstalledAddOn | None:
        """Argo Rollouts, when the stack installs it: its controller runs Rollouts and their analyses."""
        if not args.install_argo_rollouts:
            return None
        return install_addon(
            ARGO_ROLLOUTS,
            namespace=args.argo_rollouts_namespace,
            component="argo-rollouts",
            flows=args.flows,
            parent=self,
            values=ARGO_ROLLOUTS_VALUES,
        )

    def _metrics_server(self, args: AppTierArgs) -> list[pulumi.Resource]:
        """metrics-server, when the stack installs it: what the CPU and memory triggers read."""
        if not args.install_metrics_server:
            return []
        metrics_server = install_addon(
            METRICS_SERVER,
            namespace=args.metrics_server_namespace,
            component="metrics-server",
            flows=args.flows,
            parent=self,
            values=METRICS_SERVER_VALUES,
        )
        return [metrics_server.installer]

    def _secrets(self, connections: Connections) -> None:
        """The connection URLs and a generated bootstrap API key, as Secrets every role reads as files."""
        connection_secret = k8s.core.v1.Secret(
            "connections",
            metadata={"name": "workflow-connections", "namespace": self.namespace, "labels": labels("app")},
            string_data=connections.secret_data(),
            opts=pulumi.ResourceOptions(parent=self),
        )
        bootstrap_key = random.RandomPassword(
            "bootstrap-api-key", length=48, special=False, opts=pulumi.ResourceOptions(parent=self)
        )
        bootstrap_secret = k8s.core.v1.Secret(
            "bootstrap-api-key",
            metadata={"name": "workflow-bootstrap-api-key", "namespace": self.namespace, "labels": labels("api")},
            string_data={"api-key": bootstrap_key.result},
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.connection_secret_name = connection_secret.metadata.name
        self.bootstrap_key_secret_name = bootstrap_secret.metadata.name
        # Every role reads the connection URLs as files of the Secret (CKV_K8S_35: no secret in an env var).
        self.connection_files = connections.files(self.connection_secret_name)

    def _api(self, api: ApiConfig, account: pulumi.Input[str], opts: pulumi.ResourceOptions) -> k8s.apps.v1.Deployment:
        return deployment(
            "workflow-api",
            namespace=self.namespace,
            labels=labels("api"),
            selector=selector_labels("api"),
            template=self._api_pod_template(api, account),
            opts=opts,
        )

    def _rollout(
        self,
        args: AppTierArgs,
        blue_green: BlueGreen,
        account: pulumi.Input[str],
        ready: list[pulumi.Resource],
        crds: list[pulumi.Resource],
    ) -> pulumi.Resource:
        """The API as an Argo Rollouts Rollout, blue-green: the new version runs beside the old one, reached only
        through the preview Service, until the smoke test and the health analysis pass; then the active Service
        switches to it, the health analysis runs again on live traffic, and the old version stays up for the
        rollback window. A failed analysis aborts the rollout: the active Service stays on (or returns to) the old
        version."""
        templates = pulumi.ResourceOptions(parent=self, depends_on=crds)
        disruption_budget(
            "workflow-api",
            namespace=self.namespace,
            labels=labels("api"),
            selector=selector_labels("api"),
            opts=pulumi.ResourceOptions(parent=self, depends_on=ready),
        )
        # What the Rollout names must exist before it does.
        named = [
            self._service(PREVIEW_SERVICE),
            self._smoke_template(args, account, templates),
            self._health_template(args, blue_green, templates),
        ]
        # The new version's pods, named workflow-api-<hash>-<suffix>, are the ones both analyses judge.
        new_pods = {"args": [{"name": "hash", "valueFrom": {"podTemplateHashValue": "Latest"}}]}
        return k8s.apiextensions.CustomResource(
            "workflow-api",
            api_version=ROLLOUT_API_VERSION,
            kind="Rollout",
            metadata={
                "name": "workflow-api",
                "namespace": self.namespace,
                "labels": labels("api"),
                # pulumi-kubernetes awaits no custom resource unless told to; this keeps it so even where generic
                # awaiting is switched on: a rollout's analyses take minutes, and the pipeline waits for Healthy.
                "annotations": {"pulumi.com/skipAwait": "true"},
            },
            spec={
                # `replicas` is the autoscaler's, as for a Deployment.
                "selector": {"matchLabels": selector_labels("api")},
                "revisionHistoryLimit": 5,
                "template": self._api_pod_template(args.api, account),
                "strategy": {
                    "blueGreen": {
                        "activeService": self.service_name,
                        "previewService": PREVIEW_SERVICE,
                        # Promotion is automatic, and waits for the pre-promotion analysis to pass.
                        "autoPromotionEnabled": True,
                        "prePromotionAnalysis": {
                            "templates": [{"templateName": SMOKE_TEMPLATE}, {"templateName": HEALTH_TEMPLATE}],
                            **new_pods,
                        },
                        "postPromotionAnalysis": {"templates": [{"templateName": HEALTH_TEMPLATE}], **new_pods},
                        "scaleDownDelaySeconds": blue_green.scale_down_delay_seconds,
                    }
                },
            },
            opts=pulumi.ResourceOptions(parent=self, depends_on=[*ready, *crds, *named]),
        )

    def _smoke_template(
        self, args: AppTierArgs, account: pulumi.Input[str], opts: pulumi.ResourceOptions
    ) -> pulumi.Resource:
        """A Job that runs a real workflow through the preview Service (`python -m app smoke`): its success is the
        metric, with the bootstrap API key read from its file."""
        key = SecretFile("APP_SMOKE_API_KEY", self.bootstrap_key_secret_name, "api-key")
        preview_url = f"http://{PREVIEW_SERVICE}.{args.namespace}.svc.cluster.local:{API_PORT}"
        job = {
            "backoffLimit": 0,
            "activeDeadlineSeconds": SMOKE_JOB_DEADLINE_SECONDS,
            "template": pod_template(
                labels=labels("smoke"),
                selector=selector_labels("smoke"),
                service_account=account,
                restart_policy="Never",
                secret_files=[key],
                containers=[
                    container(
                        name="smoke",
                        image=self.image_ref,
                        args=["smoke", "--url", preview_url, "--api-key-file", key.path]
                        + ["--timeout", str(SMOKE_TIMEOUT_SECONDS)],
                        resources=SMOKE_RESOURCES,
                        probes=None,
                    )
                ],
            ),
        }
        return self._analysis_template(
            SMOKE_TEMPLATE, {"metrics": [{"name": "smoke", "provider": {"job": {"spec": job}}}]}, opts
        )

    def _health_template(
        self, args: AppTierArgs, blue_green: BlueGreen, opts: pulumi.ResourceOptions
    ) -> pulumi.Resource:
        """The new version's 5xx ratio and POST p99 from Prometheus, measured repeatedly; one measurement over its
        threshold fails the analysis."""

        def metric(name: str, query: str, highest: float) -> dict:
            return {
                "name": name,
                "initialDelay": f"{ROLLOUT_ANALYSIS_INITIAL_DELAY_SECONDS}s",
                "interval": f"{ROLLOUT_ANALYSIS_INTERVAL_SECONDS}s",
                "count": ROLLOUT_ANALYSIS_COUNT,
                "failureLimit": 0,
                "successCondition": f"result[0] <= {highest}",
                "provider": {"prometheus": {"address": args.prometheus_url, "query": query}},
            }

        pods = new_version_pods(args.namespace)
        return self._analysis_template(
            HEALTH_TEMPLATE,
            {
                "args": [{"name": "hash"}],
                "metrics": [
                    metric("5xx-ratio", error_ratio_query(pods), blue_green.max_5xx_ratio),
                    metric("post-p99-seconds", post_p99_query(pods), blue_green.max_post_p99_seconds),
                ],
            },
            opts,
        )

    def _analysis_template(self, name: str, spec: dict, opts: pulumi.ResourceOptions) -> pulumi.Resource:
        return k8s.apiextensions.CustomResource(
            name,
            api_version=ROLLOUT_API_VERSION,
            kind="AnalysisTemplate",
            metadata={"name": name, "namespace": self.namespace, "labels": labels("api")},
            spec=spec,
            opts=opts,
        )

    def _api_pod_template(self, api: ApiConfig, account: pulumi.Input[str]) -> dict:
        """The API's pods, the same whether a Deployment or a Rollout runs them."""
        return pod_template(
            labels=labels("api"),
            selector=selector_labels("api"),
            service_account=account,
            secret_files=[
                *self.connection_files,
                SecretFile("APP_BOOTSTRAP_API_KEY", self.bootstrap_key_secret_name, "api-key"),
            ],
            containers=[
                container(
                    name="api",
                    image=self.image_ref,
                    args=["api"],
                    resources=api.resources,
                    # Liveness is served off the request loop, so a saturated API is not killed as hung.
                    probes=HttpProbes(port="http", liveness_port="liveness"),
                    ports={"http": API_PORT, "liveness": API_LIVENESS_PORT},
                    env=[
                        *self.runtime_env,
                        {"name": "APP_PORT", "value": str(API_PORT)},
                        {"name": "APP_METRICS_PORT", "value": str(API_LIVENESS_PORT)},
                        *database_pool_env(api.database_connections),
                        {"name": "OTEL_SERVICE_NAME", "value": "workflow-api"},
                    ],
                )
            ],
        )

    def _service(self, name: str) -> k8s.core.v1.Service:
        """A Service of the API's pods; under blue-green Argo Rollouts narrows its selector to one version's."""
        return k8s.core.v1.Service(
            name,
            metadata={"name": name, "namespace": self.namespace, "labels": labels("api")},
            spec={
                "type": "ClusterIP",
                "selector": selector_labels("api"),
                "ports": [{"name": "http", "port": API_PORT, "targetPort": "http", "protocol": "TCP"}],
            },
            opts=pulumi.ResourceOptions(parent=self),
        )

    def _autoscaler(self, args: AppTierArgs, scale_target: dict, opts: pulumi.ResourceOptions) -> None:
        """A KEDA ScaledObject on the API's request rate, CPU and memory: the HPA it owns follows the busiest."""
        api = args.api
        k8s.apiextensions.CustomResource(
            "workflow-api",
            api_version="keda.sh/v1alpha1",
            kind="ScaledObject",
            metadata={
                "name": "workflow-api",
                "namespace": self.namespace,
                "labels": labels("api"),
                # Stacks deployed before ran a plain HPA of this name on the API: KEDA takes it over instead of
                # refusing a second autoscaler on the Deployment.
                "annotations": {"scaledobject.keda.sh/transfer-hpa-ownership": "true"},
            },
            spec={
                "scaleTargetRef": scale_target,
                "minReplicaCount": api.replicas.min,
                "maxReplicaCount": api.replicas.max,
                **api.scaling.scaled_object_settings(hpa_name="workflow-api"),
                "triggers": [
                    {
                        "type": "prometheus",
                        "name": "requests-per-second",
                        # AverageValue (the default): the HPA divides the query's total by the pods it counts.
                        "metadata": {
                            "serverAddress": args.prometheus_url,
                            "query": requests_per_second_query(args.namespace),
                            "threshold": str(api.requests_per_second_target),
                        },
                    },
                    _utilisation_trigger("cpu", api.scale_cpu_percent),
                    _utilisation_trigger("memory", api.scale_memory_percent),
                ],
            },
            opts=opts,
        )

    def _image(self, image: ImageConfig, build_context: str, opts: pulumi.ResourceOptions) -> pulumi.Output[str]:
        """The image every role runs, referenced by digest so what was tested is what runs."""
        if not image.build:
            return pulumi.Output.from_input(image.ref)
        built = docker_build.Image(
            "workflow-image",
            context={"location": build_context},
            dockerfile={"location": f"{build_context}/Dockerfile"},
            platforms=["linux/amd64"],
            tags=[f"{image.repository}:{pulumi.get_stack()}"],
            push=True,
            opts=opts,
        )
        return pulumi.Output.concat(image.repository, "@", built.digest)

    def _migrations(self, account: pulumi.Input[str], resources: Resources, opts: pulumi.ResourceOptions):
        """A Job that applies migrations; Pulumi waits for it to succeed, and a new image replaces it (runs again)."""
        return k8s.batch.v1.Job(
            "workflow-migrate",
            metadata={"namespace": self.namespace, "labels": labels("migrate")},
            spec={
                "backoffLimit": MIGRATE_ATTEMPTS - 1,
                "activeDeadlineSeconds": MIGRATE_DEADLINE_SECONDS,
                "template": pod_template(
                    labels=labels("migrate"),
                    selector=selector_labels("migrate"),
                    service_account=account,
                    restart_policy="Never",
                    secret_files=self.connection_files,
                    containers=[
                        container(
                            name="migrate",
                            image=self.image_ref,
                            args=["migrate"],
                            resources=resources,
                            probes=None,
                            env=[
                                *self.runtime_env,
                                {"name": "OTEL_SERVICE_NAME", "value": "workflow-migrate"},
                                {"name": "APP_MIGRATE_CONNECT_TIMEOUT_S", "value": str(MIGRATE_CONNECT_SECONDS)},
                            ],
                        )
                    ],
                ),
            },
            opts=opts,
        )


# Pulumi's own wait for the Job outlasts the Job's deadline, so a failure is the Job's, reported with its reason.
_WAIT_FOR_MIGRATIONS = f"{MIGRATE_DEADLINE_SECONDS // 60 + 5}m"


def _keda_operator_metrics(namespace: pulumi.Input[str]) -> ScrapeTarget:
    """The keda_* series: the chart's Service `keda-operator` serves them on its port `metrics` once
    prometheus.operator is enabled. The monitor is Observability's, like every other: one the chart rendered would
    need the monitoring CRDs before KEDA could install."""
    operator = "keda-operator"
    return ScrapeTarget(
        operator, namespace, {"app.kubernetes.io/name": operator}, "metrics", KEDA_OPERATOR_METRICS_PORT
    )


def requests_per_second_query(namespace: str) -> str:
    """HTTP requests per second the API pods of `namespace` answer together: one number, as KEDA requires. Only the
    API records the series; a minute holds four scrapes (every 15 s), enough for rate() yet quick to follow a burst."""
    return f'sum(rate(workflow_http_request_duration_seconds_count{{namespace="{namespace}"}}[1m]))'


def new_version_pods(namespace: str) -> str:
    """The matchers of a rollout's new version's API pods: Argo Rollouts names them after the Rollout and the pod
    template hash it passes the analysis as `args.hash`; probes are left out."""
    return f'namespace="{namespace}",pod=~"workflow-api-{{{{args.hash}}}}-.*",route!~"{PROBE_ROUTES}"'


def error_ratio_query(pods: str) -> str:
    """The fraction of the pods' requests answered 5xx over the last 2 minutes. With no request to judge (no series,
    or 0/0 = NaN, which `>= 0` drops) it is 0: a quiet version is judged by the smoke test alone."""

    def requests_per_second(matchers: str) -> str:
        return f"sum(rate(workflow_http_request_duration_seconds_count{{{matchers}}}[2m]))"

    errors = requests_per_second(pods + ',status=~"5.."')
    return f"({errors} / {requests_per_second(pods)} >= 0) or vector(0)"


def post_p99_query(pods: str) -> str:
    """The p99 latency (seconds) of the pods' POST requests over the last 2 minutes; 0 without any (as above)."""
    buckets = f'workflow_http_request_duration_seconds_bucket{{{pods},method="POST"}}'
    return f"(histogram_quantile(0.99, sum by (le) (rate({buckets}[2m]))) >= 0) or vector(0)"


def _utilisation_trigger(resource: str, percent: int) -> dict:
    """A KEDA trigger on the pods' average `resource` use, in percent of their request (read from metrics-server)."""
    return {"type": resource, "metricType": "Utilization", "metadata": {"value": str(percent)}}


METRICS_SERVER_VALUES = {
    "replicas": 2,
    "podDisruptionBudget": {"enabled": True, "maxUnavailable": 1},
    "containerPort": METRICS_SERVER_PORT,
    "podSecurityContext": {"runAsNonRoot": True, "fsGroup": 1000, "seccompProfile": {"type": "RuntimeDefault"}},
    "securityContext": {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "runAsUser": 1000,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    },
    "resources": {"requests": {"cpu": "100m", "memory": "200Mi"}, "limits": {"cpu": "1", "memory": "500Mi"}},
}


# Two controllers, one leading, so a drained node does not stop a rollout; hardened for the restricted level (the image
# runs as UID 999); no dashboard, and no RBAC for traffic routers (Istio, SMI, ...): blue-green here switches Services.
ARGO_ROLLOUTS_VALUES = {
    "controller": {
        "replicas": 2,
        "pdb": {"enabled": True, "maxUnavailable": 1},
        "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"cpu": "500m", "memory": "512Mi"}},
    },
    "podSecurityContext": {
        "runAsNonRoot": True,
        "runAsUser": 999,
        "runAsGroup": 999,
        "seccompProfile": {"type": "RuntimeDefault"},
    },
    "dashboard": {"enabled": False},
    "providerRBAC": {"enabled": False},
}


KEDA_VALUES = {
    "resources": {
        "operator": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "1", "memory": "512Mi"}},
        "metricServer": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "1", "memory": "512Mi"}},
        "webhooks": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"cpu": "500m", "memory": "256Mi"}},
    },
    "prometheus": {
        "operator": {"enabled": True, "port": KEDA_OPERATOR_METRICS_PORT},
        "metricServer": {"enabled": True},
    },
}
