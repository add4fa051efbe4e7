"""WorkerPool: the workers that run workflow steps, scaled by KEDA on the length of their RabbitMQ queue and their
CPU."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from components.config import WorkerConfig
from components.interfaces import ScrapeTarget
from components.labels import labels, selector_labels
from components.ports import WORKER_METRICS_PORT
from components.workload import (
    HttpProbes,
    SecretFile,
    container,
    database_pool_env,
    deployment,
    pod_template,
    service_account,
)

# Time a worker gets, after its longest step ends, to ack, flush telemetry and close its connections.
SHUTDOWN_MARGIN_SECONDS = 30


@dataclass(frozen=True)
class WorkerPoolArgs:
    # The app's namespace, created by AppTier: the workers run beside the API.
    namespace: pulumi.Input[str]
    workers: WorkerConfig
    image_ref: pulumi.Input[str]
    runtime_env: list[dict]
    connection_files: list[SecretFile]
    connection_secret_name: pulumi.Input[str]
    amqp_url_key: str
    # What the ScaledObject waits for: KEDA and the metrics API, where the stack installs them (AppTier does).
    autoscaler_ready: Sequence[pulumi.Resource]
    # Resources that must be ready before workers start: the schema they read and the broker they consume from.
    ready: Sequence[pulumi.Resource]


class WorkerPool(pulumi.ComponentResource):
    def __init__(self, name: str, args: WorkerPoolArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("workflow-platform:index:WorkerPool", name, None, opts)
        worker = self._deployment(args)
        k8s.core.v1.Service(
            "workflow-worker-metrics",
            metadata={"name": "workflow-worker-metrics", "namespace": args.namespace, "labels": labels("worker")},
            spec={
                "type": "ClusterIP",
                "clusterIP": "None",
                "selector": selector_labels("worker"),
                "ports": [{"name": "metrics", "port": WORKER_METRICS_PORT, "targetPort": "metrics", "protocol": "TCP"}],
            },
            opts=pulumi.ResourceOptions(parent=self),
        )
        self._autoscaler(args, worker, pulumi.ResourceOptions(parent=self, depends_on=list(args.autoscaler_ready)))

        self.deployment_name = worker.metadata.name
        self.scrape_targets = (
            ScrapeTarget("workflow-worker", args.namespace, selector_labels("worker"), "metrics", WORKER_METRICS_PORT),
        )
        self.register_outputs({"deployment_name": self.deployment_name})

    def _deployment(self, args: WorkerPoolArgs) -> k8s.apps.v1.Deployment:
        workers = args.workers
        account = service_account(
            "workflow-worker", args.namespace, labels("worker"), pulumi.ResourceOptions(parent=self)
        )
        return deployment(
            "workflow-worker",
            namespace=args.namespace,
            labels=labels("worker"),
            selector=selector_labels("worker"),
            template=pod_template(
                labels=labels("worker"),
                selector=selector_labels("worker"),
                service_account=account.metadata.name,
                secret_files=args.connection_files,
                # SIGTERM stops intake; the pod is killed only after its longest step could have finished.
                termination_grace_seconds=workers.max_task_timeout_seconds + SHUTDOWN_MARGIN_SECONDS,
                containers=[
                    container(
                        name="worker",
                        image=args.image_ref,
                        args=["worker"],
                        resources=workers.resources,
                        probes=HttpProbes(port="metrics", readiness_path="/healthz"),
                        ports={"metrics": WORKER_METRICS_PORT},
                        env=[
                            *args.runtime_env,
                            {"name": "APP_METRICS_PORT", "value": str(WORKER_METRICS_PORT)},
                            {"name": "APP_WORKER_CONCURRENCY", "value": str(workers.concurrency)},
                            *database_pool_env(workers.database_connections),
                            {"name": "APP_WORKER_QUEUE", "value": workers.queue},
                            {"name": "APP_MAX_TASK_TIMEOUT_S", "value": str(workers.max_task_timeout_seconds)},
                            {"name": "OTEL_SERVICE_NAME", "value": "workflow-worker"},
                        ],
                    )
                ],
            ),
            opts=pulumi.ResourceOptions(parent=self, depends_on=list(args.ready)),
        )

    def _autoscaler(self, args: WorkerPoolArgs, worker: k8s.apps.v1.Deployment, opts: pulumi.ResourceOptions) -> None:
        """A KEDA ScaledObject on the length of the workers' queue, read with the connection Secret's AMQP URL, and on
        their CPU: steps that compute rather than wait load the pods before the queue grows."""
        workers = args.workers
        auth = k8s.apiextensions.CustomResource(
            "workflow-worker-rabbitmq",
            api_version="keda.sh/v1alpha1",
            kind="TriggerAuthentication",
            metadata={"name": "workflow-worker-rabbitmq", "namespace": args.namespace, "labels": labels("worker")},
            spec={
                "secretTargetRef": [
                    {"parameter": "host", "name": args.connection_secret_name, "key": args.amqp_url_key}
                ]
            },
            opts=opts,
        )
        k8s.apiextensions.CustomResource(
            "workflow-worker",
            api_version="keda.sh/v1alpha1",
            kind="ScaledObject",
            metadata={"name": "workflow-worker", "namespace": args.namespace, "labels": labels("worker")},
            spec={
                "scaleTargetRef": {"name": worker.metadata.name},
                "minReplicaCount": workers.replicas.min,
                "maxReplicaCount": workers.replicas.max,
                **workers.scaling.scaled_object_settings(),
                "triggers": [
                    {
                        "type": "rabbitmq",
                        "metadata": {
                            "protocol": "amqp",
                            "queueName": workers.queue,
                            "mode": "QueueLength",
                            "value": str(workers.queue_length_target),
                        },
                        "authenticationRef": {"name": auth.metadata["name"]},
                    },
                    {"type": "cpu", "metricType": "Utilization", "metadata": {"value": str(workers.scale_cpu_percent)}},
                ],
            },
            opts=opts,
        )
