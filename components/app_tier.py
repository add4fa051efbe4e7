"""AppTier: the platform's namespace, image, database migrations and the autoscaled HTTP API."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_docker_build as docker_build
import pulumi_kubernetes as k8s
import pulumi_random as random

from components.config import ApiConfig, ImageConfig, Resources
from components.data_plane import Connections
from components.labels import labels, selector_labels
from components.observability import ScrapeTarget
from components.workload import (
    HttpProbes,
    container,
    deployment,
    namespace,
    pod_template,
    secret_env,
    service_account,
)

API_PORT = 8000


@dataclass(frozen=True)
class AppTierArgs:
    namespace: str
    api: ApiConfig
    image: ImageConfig
    build_context: str
    connections: Connections
    otlp_endpoint: pulumi.Input[str]


class AppTier(pulumi.ComponentResource):
    """Creates the app namespace, resolves the image, runs migrations, then rolls out the API behind a Service."""

    def __init__(self, name: str, args: AppTierArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("workflow-platform:index:AppTier", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        self.namespace = namespace(
            args.namespace, pod_security="restricted", labels=labels("app"), opts=child
        ).metadata.name
        self.image_ref = self._image(args.image, args.build_context, child)

        connection_secret = k8s.core.v1.Secret(
            "connections",
            metadata={"name": "workflow-connections", "namespace": self.namespace, "labels": labels("app")},
            string_data=args.connections.secret_data(),
            opts=child,
        )
        bootstrap_key = random.RandomPassword("bootstrap-api-key", length=48, special=False, opts=child)
        bootstrap_secret = k8s.core.v1.Secret(
            "bootstrap-api-key",
            metadata={"name": "workflow-bootstrap-api-key", "namespace": self.namespace, "labels": labels("api")},
            string_data={"api-key": bootstrap_key.result},
            opts=child,
        )
        self.connection_secret_name = connection_secret.metadata.name
        self.bootstrap_key_secret_name = bootstrap_secret.metadata.name
        self.runtime_env = [
            *args.connections.env(self.connection_secret_name),
            {"name": "APP_LOG_FORMAT", "value": "json"},
            {"name": "OTEL_EXPORTER_OTLP_ENDPOINT", "value": args.otlp_endpoint},
            {"name": "OTEL_EXPORTER_OTLP_PROTOCOL", "value": "grpc"},
        ]

        api_account = service_account("workflow-api", self.namespace, labels("api"), child)
        migrations = self._migrations(api_account.metadata.name, args.api.resources, child)

        api = deployment(
            "workflow-api",
            namespace=self.namespace,
            labels=labels("api"),
            selector=selector_labels("api"),
            template=pod_template(
                labels=labels("api"),
                selector=selector_labels("api"),
                service_account=api_account.metadata.name,
                containers=[
                    container(
                        name="api",
                        image=self.image_ref,
                        args=["api"],
                        resources=args.api.resources,
                        probes=HttpProbes(port="http"),
                        ports={"http": API_PORT},
                        env=[
                            *self.runtime_env,
                            {"name": "APP_PORT", "value": str(API_PORT)},
                            {"name": "OTEL_SERVICE_NAME", "value": "workflow-api"},
                            secret_env("APP_BOOTSTRAP_API_KEY", self.bootstrap_key_secret_name, "api-key"),
                        ],
                    )
                ],
            ),
            # The API only rolls out once the schema it expects is in place.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[migrations]),
        )

        service = k8s.core.v1.Service(
            "workflow-api",
            metadata={"name": "workflow-api", "namespace": self.namespace, "labels": labels("api")},
            spec={
                "type": "ClusterIP",
                "selector": selector_labels("api"),
                "ports": [{"name": "http", "port": API_PORT, "targetPort": "http", "protocol": "TCP"}],
            },
            opts=child,
        )
        self.service_name = service.metadata.name
        self.service_port = API_PORT
        self.scrape_targets = (ScrapeTarget("workflow-api", args.namespace, selector_labels("api"), "http", API_PORT),)

        k8s.autoscaling.v2.HorizontalPodAutoscaler(
            "workflow-api",
            metadata={"name": "workflow-api", "namespace": self.namespace, "labels": labels("api")},
            spec={
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": api.metadata.name},
                "minReplicas": args.api.replicas.min,
                "maxReplicas": args.api.replicas.max,
                "metrics": [
                    _utilisation("cpu", args.api.scale_cpu_percent),
                    _utilisation("memory", args.api.scale_memory_percent),
                ],
                "behavior": {
                    # Bursts of run submissions arrive within seconds: double (or add 4 pods) every 15 s, at once.
                    "scaleUp": {
                        "stabilizationWindowSeconds": 0,
                        "selectPolicy": "Max",
                        "policies": [
                            {"type": "Percent", "value": 100, "periodSeconds": 15},
                            {"type": "Pods", "value": 4, "periodSeconds": 15},
                        ],
                    },
                    "scaleDown": {
                        "stabilizationWindowSeconds": 300,
                        "policies": [{"type": "Percent", "value": 20, "periodSeconds": 60}],
                    },
                },
            },
            opts=child,
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
                "backoffLimit": 3,
                "activeDeadlineSeconds": 600,
                "template": pod_template(
                    labels=labels("migrate"),
                    selector=selector_labels("migrate"),
                    service_account=account,
                    restart_policy="Never",
                    containers=[
                        container(
                            name="migrate",
                            image=self.image_ref,
                            args=["migrate"],
                            resources=resources,
                            probes=None,
                            env=[*self.runtime_env, {"name": "OTEL_SERVICE_NAME", "value": "workflow-migrate"}],
                        )
                    ],
                ),
            },
            opts=opts,
        )


def _utilisation(resource: str, percent: int) -> dict:
    return {
        "type": "Resource",
        "resource": {"name": resource, "target": {"type": "Utilization", "averageUtilization": percent}},
    }
