"""AppTier: the platform's namespace, image, database migrations, the autoscaled HTTP API, and the autoscaling
add-ons every workload's ScaledObject relies on."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_docker_build as docker_build
import pulumi_kubernetes as k8s
import pulumi_random as random

from components.charts import KEDA, METRICS_SERVER
from components.config import ApiConfig, EngineTimings, ImageConfig, Resources
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
    # Prometheus's query address: KEDA reads the API's request rate there.
    prometheus_url: pulumi.Input[str]
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
        # The API only rolls out once the schema it expects is in place and the broker it publishes to is up.
        api = self._api(
            args.api,
            api_account.metadata.name,
            pulumi.ResourceOptions(parent=self, depends_on=[migrations, *args.broker_ready]),
        )
        self.service_name = self._service()
        self.service_port = API_PORT
        self.scrape_targets = (
            ScrapeTarget("workflow-api", args.namespace, selector_labels("api"), "http", API_PORT),
            *([_keda_operator_metrics(keda.namespace)] if keda else []),
        )
        self._autoscaler(args, api, pulumi.ResourceOptions(parent=self, depends_on=self.autoscaler_ready))

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
            template=pod_template(
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
            ),
            opts=opts,
        )

    def _service(self) -> pulumi.Output[str]:
        return k8s.core.v1.Service(
            "workflow-api",
            metadata={"name": "workflow-api", "namespace": self.namespace, "labels": labels("api")},
            spec={
                "type": "ClusterIP",
                "selector": selector_labels("api"),
                "ports": [{"name": "http", "port": API_PORT, "targetPort": "http", "protocol": "TCP"}],
            },
            opts=pulumi.ResourceOptions(parent=self),
        ).metadata.name

    def _autoscaler(self, args: AppTierArgs, target: k8s.apps.v1.Deployment, opts: pulumi.ResourceOptions) -> None:
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
                "scaleTargetRef": {"name": target.metadata.name},
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
