"""DataPlane: PostgreSQL (CloudNativePG), RabbitMQ (Cluster Operator, quorum queues) and Valkey for one stack."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random

from components.charts import CLOUDNATIVE_PG, RABBITMQ_CLUSTER_OPERATOR, VALKEY, install_chart
from components.config import PostgresConfig, StatefulServiceConfig, byte_count
from components.interfaces import Connections, ScrapeTarget
from components.labels import labels
from components.namespaces import install_addon, platform_namespace
from components.network import Flow
from components.ports import (
    AMQP_PORT,
    POSTGRES_METRICS_PORT,
    POSTGRES_PORT,
    RABBITMQ_METRICS_PORT,
    VALKEY_METRICS_PORT,
    VALKEY_PORT,
)

POSTGRES_CLUSTER = "workflow-postgres"
RABBITMQ_CLUSTER = "workflow-rabbitmq"
VALKEY_RELEASE = "workflow-valkey"
DATABASE = "workflow"
APP_USER = "workflow"

# Pulumi's annotation for readiness of a custom resource, which it otherwise takes as ready once created.
WAIT_FOR = "pulumi.com/waitFor"
READY_TIMEOUT = "30m"


@dataclass(frozen=True)
class DataPlaneArgs:
    namespace: str
    postgres: PostgresConfig
    rabbitmq: StatefulServiceConfig
    redis: StatefulServiceConfig
    storage_class: str | None
    install_cloudnative_pg: bool
    cloudnative_pg_namespace: str
    install_rabbitmq_operator: bool
    rabbitmq_operator_namespace: str
    # The platform's flow table: the namespaces created here get their NetworkPolicies from it.
    flows: Sequence[Flow]


class DataPlane(pulumi.ComponentResource):
    def __init__(self, name: str, args: DataPlaneArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("workflow-platform:index:DataPlane", name, None, opts)
        self.namespace = platform_namespace(
            args.namespace, pod_security="restricted", component="data", flows=args.flows, parent=self
        )
        postgres_operator, rabbitmq_operator = self._operators(args)

        postgres_password = self._password("postgres")
        # What depends on these waits until the operator reports the service Ready, not merely accepted.
        self.postgres_ready: list[pulumi.Resource] = [
            self._postgres(args, postgres_password, _until_ready(postgres_operator, parent=self))
        ]
        rabbitmq_password = self._password("rabbitmq")
        self.broker_ready: list[pulumi.Resource] = [
            self._rabbitmq(args, rabbitmq_password, _until_ready(rabbitmq_operator, parent=self))
        ]
        valkey_password = self._password("valkey")
        self._valkey(args, valkey_password, self._password("valkey-replication"), pulumi.ResourceOptions(parent=self))

        self.connections = Connections(
            database_url=_secret_url(
                "postgresql://{0}:{1}@{2}:{3}/{4}",
                APP_USER,
                postgres_password,
                self._host(f"{POSTGRES_CLUSTER}-rw"),
                POSTGRES_PORT,
                DATABASE,
            ),
            amqp_url=_secret_url(
                "amqp://{0}:{1}@{2}:{3}/%2F", APP_USER, rabbitmq_password, self._host(RABBITMQ_CLUSTER), AMQP_PORT
            ),
            redis_url=_secret_url(
                "redis://default:{0}@{1}:{2}/0", valkey_password, self._host(VALKEY_RELEASE), VALKEY_PORT
            ),
        )
        self.scrape_targets = _scrape_targets(args.namespace)
        self.register_outputs({"namespace": self.namespace})

    def _operators(self, args: DataPlaneArgs) -> tuple[list[pulumi.Resource], list[pulumi.Resource]]:
        """The PostgreSQL and RabbitMQ operators the stack installs, each as the list its clusters wait for."""
        postgres, rabbitmq = [], []
        if args.install_cloudnative_pg:
            cloudnative_pg = install_addon(
                CLOUDNATIVE_PG,
                namespace=args.cloudnative_pg_namespace,
                component="postgres-operator",
                flows=args.flows,
                parent=self,
                values=CLOUDNATIVE_PG_VALUES,
            )
            postgres.append(cloudnative_pg.installer)
        if args.install_rabbitmq_operator:
            rabbitmq_operator = install_addon(
                RABBITMQ_CLUSTER_OPERATOR,
                namespace=args.rabbitmq_operator_namespace,
                component="rabbitmq-operator",
                flows=args.flows,
                parent=self,
            )
            rabbitmq.append(rabbitmq_operator.installer)
        return postgres, rabbitmq

    def _host(self, service: str) -> pulumi.Output[str]:
        return pulumi.Output.concat(service, ".", self.namespace, ".svc.cluster.local")

    def _password(self, service: str) -> pulumi.Output[str]:
        # URL-safe characters only: the passwords are embedded in connection URLs.
        return random.RandomPassword(
            f"{service}-password", length=40, special=False, opts=pulumi.ResourceOptions(parent=self)
        ).result

    def _secret(self, name: str, data: dict, opts: pulumi.ResourceOptions, secret_type: str = "Opaque"):
        return k8s.core.v1.Secret(
            name,
            metadata={"name": name, "namespace": self.namespace, "labels": labels("data")},
            type=secret_type,
            string_data=data,
            opts=opts,
        )

    def _postgres(
        self, args: DataPlaneArgs, password: pulumi.Output[str], opts: pulumi.ResourceOptions
    ) -> pulumi.Resource:
        credentials = self._secret(
            f"{POSTGRES_CLUSTER}-app-credentials",
            {"username": APP_USER, "password": password},
            pulumi.ResourceOptions(parent=self),
            secret_type="kubernetes.io/basic-auth",
        )
        storage = {"size": args.postgres.storage_size}
        if args.storage_class:
            storage["storageClass"] = args.storage_class
        return k8s.apiextensions.CustomResource(
            POSTGRES_CLUSTER,
            api_version="postgresql.cnpg.io/v1",
            kind="Cluster",
            metadata={
                "name": POSTGRES_CLUSTER,
                "namespace": self.namespace,
                "labels": labels("postgres"),
                # CloudNativePG sets the Ready condition once the cluster is healthy (initdb done, instances up).
                "annotations": {WAIT_FOR: "condition=Ready"},
            },
            spec={
                "instances": args.postgres.replicas,
                "primaryUpdateStrategy": "unsupervised",
                "storage": storage,
                "resources": args.postgres.resources.to_k8s(),
                "affinity": {"enablePodAntiAffinity": True, "topologyKey": "kubernetes.io/hostname"},
                "enablePDB": True,
                "bootstrap": {
                    "initdb": {"database": DATABASE, "owner": APP_USER, "secret": {"name": credentials.metadata.name}}
                },
                "postgresql": {"parameters": postgres_parameters(args.postgres)},
            },
            opts=opts,
        )

    def _rabbitmq(
        self, args: DataPlaneArgs, password: pulumi.Output[str], opts: pulumi.ResourceOptions
    ) -> pulumi.Resource:
        # The operator takes the default user from this Secret instead of generating one.
        default_user = self._secret(
            f"{RABBITMQ_CLUSTER}-app-user",
            {
                "username": APP_USER,
                "password": password,
                "host": self._host(RABBITMQ_CLUSTER),
                "port": str(AMQP_PORT),
                "provider": "rabbitmq",
                "type": "rabbitmq",
                "default_user.conf": pulumi.Output.format(
                    "default_user = {0}\ndefault_pass = {1}\n", APP_USER, password
                ),
            },
            pulumi.ResourceOptions(parent=self),
        )
        persistence = {"storage": args.rabbitmq.storage_size}
        if args.storage_class:
            persistence["storageClassName"] = args.storage_class
        return k8s.apiextensions.CustomResource(
            RABBITMQ_CLUSTER,
            api_version="rabbitmq.com/v1beta1",
            kind="RabbitmqCluster",
            metadata={
                "name": RABBITMQ_CLUSTER,
                "namespace": self.namespace,
                "labels": labels("rabbitmq"),
                # The operator's conditions: every node ready, and the client Service has endpoints.
                "annotations": {WAIT_FOR: json.dumps(["condition=AllReplicasReady", "condition=ClusterAvailable"])},
            },
            spec={
                "replicas": args.rabbitmq.replicas,
                "resources": args.rabbitmq.resources.to_k8s(),
                "persistence": persistence,
                "secretBackend": {"externalSecret": {"name": default_user.metadata.name}},
                "rabbitmq": {
                    "additionalConfig": "\n".join(
                        [
                            # New queues are replicated quorum queues unless a client asks otherwise.
                            "default_queue_type = quorum",
                            "cluster_partition_handling = pause_minority",
                            "vm_memory_high_watermark.relative = 0.8",
                        ]
                    ),
                },
                "affinity": _spread_pods({"app.kubernetes.io/name": RABBITMQ_CLUSTER}),
            },
            opts=opts,
        )

    def _valkey(
        self,
        args: DataPlaneArgs,
        password: pulumi.Output[str],
        replication_password: pulumi.Output[str],
        opts: pulumi.ResourceOptions,
    ) -> None:
        auth = self._secret(
            f"{VALKEY_RELEASE}-users", {"default": password, REPLICATION_USER: replication_password}, opts
        )
        install_chart(
            VALKEY,
            self.namespace,
            valkey_values(args.redis, args.storage_class, auth.metadata.name),
            pulumi.ResourceOptions(parent=self, depends_on=[auth]),
            release_name=VALKEY_RELEASE,
        )


def _secret_url(template: str, *parts: pulumi.Input) -> pulumi.Output[str]:
    return pulumi.Output.secret(pulumi.Output.format(template, *parts))


def _until_ready(operator: list[pulumi.Resource], parent: pulumi.Resource) -> pulumi.ResourceOptions:
    """After the operator that serves the kind; waited on for up to READY_TIMEOUT, as a first cluster provisions
    volumes and pulls images on each node in turn."""
    return pulumi.ResourceOptions(
        parent=parent,
        depends_on=operator,
        custom_timeouts=pulumi.CustomTimeouts(create=READY_TIMEOUT, update=READY_TIMEOUT),
    )


def _scrape_targets(namespace: str) -> tuple[ScrapeTarget, ...]:
    return (
        ScrapeTarget(
            "postgres",
            namespace,
            {"cnpg.io/cluster": POSTGRES_CLUSTER},
            "metrics",
            POSTGRES_METRICS_PORT,
            via_service=False,
        ),
        ScrapeTarget(
            "rabbitmq",
            namespace,
            {"app.kubernetes.io/name": RABBITMQ_CLUSTER},
            "prometheus",
            RABBITMQ_METRICS_PORT,
        ),
        # /metrics sums each series over every queue of a node; per queue (labels vhost, queue) they are served as
        # rabbitmq_detailed_* on /metrics/detailed, for the families asked: queue_coarse_metrics (messages ready,
        # unacked, total) and queue_consumer_count (consumers; lighter than queue_metrics, which carries it too).
        ScrapeTarget(
            "rabbitmq-queues",
            namespace,
            {"app.kubernetes.io/name": RABBITMQ_CLUSTER},
            "prometheus",
            RABBITMQ_METRICS_PORT,
            path="/metrics/detailed",
            params={"family": ["queue_coarse_metrics", "queue_consumer_count"]},
        ),
        ScrapeTarget(
            "valkey",
            namespace,
            {"app.kubernetes.io/instance": VALKEY_RELEASE},
            "metrics",
            VALKEY_METRICS_PORT,
            via_service=False,
        ),
    )


def postgres_parameters(postgres: PostgresConfig) -> dict[str, str]:
    """Server parameters sized from the instance's memory limit, in MB: PostgreSQL accepts no percentages."""
    memory_mb = byte_count(postgres.resources.memory_limit) // 2**20
    return {
        "max_connections": str(postgres.max_connections),
        "shared_buffers": f"{memory_mb // 4}MB",
        # What the planner assumes is cached in all, PostgreSQL's buffers and the kernel's page cache together.
        "effective_cache_size": f"{memory_mb // 2}MB",
        "wal_compression": "on",
    }


def valkey_config(redis: StatefulServiceConfig) -> str:
    """Valkey's memory ceiling, 75% of the container's limit in MB (Valkey's `mb` is MiB), so replication and client
    buffers and fragmentation, which maxmemory does not count, fit under the limit before the kernel's OOM kill.

    At the ceiling Valkey evicts the least recently used key among those with a TTL: the platform keeps only rate-limit
    counters there (app/adapters/cache.py), each expiring after two seconds, and losing one lets a client a few more
    requests in that second, where `noeviction` would fail the API's requests instead. A key stored without a TTL is
    never evicted: writes fail loudly rather than drop it."""
    memory_mb = byte_count(redis.resources.memory_limit) // 2**20
    return f"maxmemory {memory_mb * 3 // 4}mb\nmaxmemory-policy volatile-lru\n"


def _spread_pods(selector: dict[str, str]) -> dict:
    return {
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 100,
                    "podAffinityTerm": {
                        "labelSelector": {"matchLabels": selector},
                        "topologyKey": "kubernetes.io/hostname",
                    },
                }
            ]
        }
    }


CLOUDNATIVE_PG_VALUES = {
    "crds": {"create": True},
    "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "1", "memory": "512Mi"}},
}

REPLICATION_USER = "replicator"
# The UID the chart's podSecurityContext runs Valkey as; the exporter sidecar runs as the same user.
VALKEY_UID = 1000


def valkey_values(redis: StatefulServiceConfig, storage_class: str | None, users_secret: pulumi.Input[str]) -> dict:
    """Values of Valkey's official chart (0.11.0): ACL auth from our Secret, persistence, replicas and the exporter.

    The chart keeps data in `dataStorage` when it runs one node (a Deployment) and in `replica.persistence` when it
    runs a primary with replicas (a StatefulSet); both are set so a change of `redisReplicas` keeps the data on disk.
    """
    return {
        "fullnameOverride": VALKEY_RELEASE,
        "resources": redis.resources.to_k8s(),
        # The chart appends this to the valkey.conf its init container writes (templates/init_config.yaml).
        "valkeyConfig": valkey_config(redis),
        "dataStorage": {"enabled": True, "requestedSize": redis.storage_size, "className": storage_class or ""},
        # The chart's default probes only start and keep alive; readiness keeps a loading node out of the Service.
        "readinessProbe": {"enabled": True},
        "auth": {
            "enabled": True,
            # Each user's password is the Secret's key named after the user.
            "usersExistingSecret": users_secret,
            "aclUsers": {
                "default": {"permissions": "~* &* +@all"},
                REPLICATION_USER: {
                    "permissions": "+psync +replconf +ping +info +role +replicaof +slaveof",
                },
            },
        },
        "replica": {
            "enabled": redis.replicas > 1,
            "replicas": max(redis.replicas - 1, 1),
            "replicationUser": REPLICATION_USER,
            "persistence": {"size": redis.storage_size, "storageClass": storage_class or ""},
        },
        "podDisruptionBudget": {"enabled": redis.replicas > 1, "maxUnavailable": 1},
        "affinity": _spread_pods({"app.kubernetes.io/instance": VALKEY_RELEASE}),
        "metrics": {
            "enabled": True,
            "exporter": {
                # The chart's default is {}: the exporter would run as its image's user with every capability.
                "securityContext": {
                    "runAsNonRoot": True,
                    "runAsUser": VALKEY_UID,
                    "runAsGroup": VALKEY_UID,
                    "allowPrivilegeEscalation": False,
                    "readOnlyRootFilesystem": True,
                    "capabilities": {"drop": ["ALL"]},
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
                "resources": {
                    "requests": {"cpu": "20m", "memory": "32Mi"},
                    "limits": {"cpu": "200m", "memory": "128Mi"},
                },
            },
        },
    }
