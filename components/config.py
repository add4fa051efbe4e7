"""The stack's configuration, read once into frozen, typed objects and validated.

Pulumi.yaml declares every key with its type and default; this module turns the values into the objects the
components take and rejects a bad value with one message that names the key, the value and what is allowed.
"""

from __future__ import annotations

import ipaddress
import math
import re
from dataclasses import dataclass

import pulumi

from components.alert_receivers import AlertReceivers, read_alert_receivers
from components.config_reader import (
    EMAIL,
    PROJECT,
    ConfigError,
    ConfigReader,
    byte_count,
    cpu_millicores,
)

ADDONS = (
    "cert-manager",
    "envoy-gateway",
    "keda",
    "cloudnative-pg",
    "rabbitmq-cluster-operator",
    "kube-prometheus-stack",
    "metrics-server",
    "argo-rollouts",
)
TLS_ISSUERS = ("letsencrypt-staging", "letsencrypt-production")
# Deployments roll out with this many extra pods (percent of replicas) while old ones still run.
ROLLING_UPDATE_SURGE_PERCENT = 25
# How the API replaces its pods: a rolling update (a Deployment), or blue-green (an Argo Rollouts Rollout), where the
# new version runs beside the whole old one until it passes its analysis, and the old one stays for a rollback window.
API_DEPLOY_STRATEGIES = ("rolling", "blueGreen")
# Each analysis of a blue-green rollout measures this long: its first measurement once the new pods have had a
# minute of traffic to be judged on (Prometheus scrapes every 15 s, the queries read 2 minutes), then one every
# interval, `count` in all.
ROLLOUT_ANALYSIS_INITIAL_DELAY_SECONDS = 60
ROLLOUT_ANALYSIS_INTERVAL_SECONDS = 30
ROLLOUT_ANALYSIS_COUNT = 5
ROLLOUT_ANALYSIS_SECONDS = ROLLOUT_ANALYSIS_INITIAL_DELAY_SECONDS + (ROLLOUT_ANALYSIS_COUNT - 1) * (
    ROLLOUT_ANALYSIS_INTERVAL_SECONDS
)
# PostgreSQL connections kept free of the app: superuser slots, the migrations Job, the operator, monitoring, psql.
RESERVED_DATABASE_CONNECTIONS = 20

_RETENTION = re.compile(r"^[1-9]\d*(h|d|w|y)$")
_DNS_NAME = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
_DIGEST_REF = re.compile(
    r"^[a-z0-9]+([._-][a-z0-9]+)*(\.[a-z0-9-]+)*(:\d+)?(/[a-z0-9]+([._-][a-z0-9]+)*)+@sha256:[a-f0-9]{64}$"
)
_REPOSITORY = re.compile(r"^[a-z0-9]+([._-][a-z0-9]+)*(\.[a-z0-9-]+)*(:\d+)?(/[a-z0-9]+([._-][a-z0-9]+)*)+$")
_QUEUE_NAME = re.compile(r"^[A-Za-z0-9._:-]{1,255}$")
_K8S_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_FRACTION = re.compile(r"^0\.(?!0+$)\d+$")
_SECONDS = re.compile(r"^\d+(\.\d+)?$")
# The bucket bounds of the API's latency histogram (app/observability.py `_FAST_BUCKETS`; components never import
# app/, tests/infra/test_alerts.py checks the two agree). The latency SLI counts the requests of the bucket at or below
# the threshold, so the threshold must be one of these bounds.
API_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


@dataclass(frozen=True)
class Replicas:
    min: int
    max: int


@dataclass(frozen=True)
class Resources:
    cpu_request: str
    cpu_limit: str
    memory_request: str
    memory_limit: str

    def to_k8s(self) -> dict:
        return {
            "requests": {"cpu": self.cpu_request, "memory": self.memory_request},
            "limits": {"cpu": self.cpu_limit, "memory": self.memory_limit},
        }


@dataclass(frozen=True)
class ImageConfig:
    """Either build app/ and push it to `repository`, or deploy the pinned digest `ref` unchanged."""

    build: bool
    repository: str
    ref: str | None


@dataclass(frozen=True)
class ScalingPolicy:
    """One HPA behaviour policy: change by at most `value` (Percent of current pods, or Pods) per period."""

    kind: str
    value: int
    period_seconds: int

    def __post_init__(self):
        if self.kind not in ("Percent", "Pods"):
            raise ValueError(f"a scaling policy's kind is Percent or Pods, not {self.kind!r}")

    def to_k8s(self) -> dict:
        return {"type": self.kind, "value": self.value, "periodSeconds": self.period_seconds}


@dataclass(frozen=True)
class ScalingDirection:
    """How fast one direction (up or down) may go: the HPA picks the policy allowing the most (Max) or least (Min)."""

    stabilization_window_seconds: int
    select_policy: str
    policies: tuple[ScalingPolicy, ...]

    def __post_init__(self):
        if self.select_policy not in ("Max", "Min"):
            raise ValueError(f"a scaling direction's select policy is Max or Min, not {self.select_policy!r}")

    def to_k8s(self) -> dict:
        return {
            "stabilizationWindowSeconds": self.stabilization_window_seconds,
            "selectPolicy": self.select_policy,
            "policies": [policy.to_k8s() for policy in self.policies],
        }


@dataclass(frozen=True)
class ScalingBehaviour:
    """How a workload's autoscaler moves: KEDA's trigger polling and cooldown, and the HPA behaviour it passes on."""

    # KEDA reads each trigger this often (and activates a workload scaled to zero no sooner).
    polling_interval_seconds: int
    # KEDA waits this long after the last active trigger before scaling to zero (only with a minimum of 0).
    cooldown_seconds: int
    scale_up: ScalingDirection
    scale_down: ScalingDirection

    def hpa_behavior(self) -> dict:
        """The HorizontalPodAutoscaler `behavior`, as KEDA takes it in advanced.horizontalPodAutoscalerConfig."""
        return {"scaleUp": self.scale_up.to_k8s(), "scaleDown": self.scale_down.to_k8s()}

    def scaled_object_settings(self, hpa_name: str | None = None) -> dict:
        """The ScaledObject spec fields these settings fill; the HPA KEDA creates is `hpa_name`, or by default
        keda-hpa-<ScaledObject name>."""
        hpa = {"behavior": self.hpa_behavior(), **({"name": hpa_name} if hpa_name else {})}
        return {
            "pollingInterval": self.polling_interval_seconds,
            "cooldownPeriod": self.cooldown_seconds,
            "advanced": {"horizontalPodAutoscalerConfig": hpa},
        }


# Bursts of run submissions arrive within seconds: double (or add 4 pods) every 15 s, at once; shrink slowly.
API_SCALING = ScalingBehaviour(
    polling_interval_seconds=5,
    cooldown_seconds=300,
    scale_up=ScalingDirection(
        stabilization_window_seconds=0,
        select_policy="Max",
        policies=(ScalingPolicy("Percent", 100, 15), ScalingPolicy("Pods", 4, 15)),
    ),
    scale_down=ScalingDirection(
        stabilization_window_seconds=300, select_policy="Max", policies=(ScalingPolicy("Percent", 20, 60),)
    ),
)
# A filling queue doubles the workers every 15 s; they leave 10% a minute, so a lull does not strand queued steps.
WORKER_SCALING = ScalingBehaviour(
    polling_interval_seconds=5,
    cooldown_seconds=300,
    scale_up=ScalingDirection(
        stabilization_window_seconds=0, select_policy="Max", policies=(ScalingPolicy("Percent", 100, 15),)
    ),
    scale_down=ScalingDirection(
        stabilization_window_seconds=300, select_policy="Max", policies=(ScalingPolicy("Percent", 10, 60),)
    ),
)


@dataclass(frozen=True)
class BlueGreen:
    """The API's blue-green rollout: what its analyses accept of the new version's pods, and how long the previous
    version keeps running, ready to take the traffic back, once the new one is promoted."""

    max_5xx_ratio: float
    max_post_p99_seconds: float
    scale_down_delay_seconds: int


@dataclass(frozen=True)
class ApiConfig:
    replicas: Replicas
    resources: Resources
    scale_cpu_percent: int
    scale_memory_percent: int
    # HTTP requests per second one API pod is sized for; the autoscaler adds pods above it.
    requests_per_second_target: int
    database_connections: int
    scaling: ScalingBehaviour = API_SCALING
    # None: rolling updates.
    blue_green: BlueGreen | None = None

    @property
    def peak_replicas(self) -> int:
        """API pods at the autoscaler's maximum while a new version rolls out: a rolling update surges by a
        quarter; blue-green runs both versions in full until the rollback window closes."""
        if self.blue_green is not None:
            return 2 * self.replicas.max
        return math.ceil(self.replicas.max * (100 + ROLLING_UPDATE_SURGE_PERCENT) / 100)


@dataclass(frozen=True)
class WorkerConfig:
    replicas: Replicas
    resources: Resources
    concurrency: int
    max_task_timeout_seconds: int
    queue: str
    queue_length_target: int
    scale_cpu_percent: int
    egress_cidrs: tuple[str, ...]
    database_connections: int
    scaling: ScalingBehaviour = WORKER_SCALING


@dataclass(frozen=True)
class EngineTimings:
    """How the engine tells a dead worker from a slow one, and when it republishes what nobody claimed."""

    lease_seconds: int
    lease_renew_seconds: int
    lease_grace_seconds: int
    unclaimed_republish_seconds: int

    def env(self) -> list[dict]:
        return [
            {"name": "APP_LEASE_S", "value": str(self.lease_seconds)},
            {"name": "APP_LEASE_RENEW_S", "value": str(self.lease_renew_seconds)},
            {"name": "APP_LEASE_GRACE_S", "value": str(self.lease_grace_seconds)},
            {"name": "APP_UNCLAIMED_REPUBLISH_S", "value": str(self.unclaimed_republish_seconds)},
        ]


@dataclass(frozen=True)
class StatefulServiceConfig:
    replicas: int
    storage_size: str
    resources: Resources


@dataclass(frozen=True)
class PostgresConfig(StatefulServiceConfig):
    max_connections: int


@dataclass(frozen=True)
class ServiceLevelObjectives:
    """What the API promises, over any 30 days: the fraction of requests answered without a 5xx, and the fraction
    answered within `latency_seconds`."""

    availability: float
    latency_seconds: float
    latency_target: float


@dataclass(frozen=True)
class ObservabilityConfig:
    prometheus_retention: str
    prometheus_storage_size: str
    prometheus_replicas: int
    # Prometheus' memory grows with the series it holds in its head block and the samples its queries read back.
    prometheus_resources: Resources
    alertmanager_replicas: int
    alert_receivers: AlertReceivers
    objectives: ServiceLevelObjectives


@dataclass(frozen=True)
class EdgeConfig:
    domain: str
    acme_email: str
    tls_issuer: str
    gateway_class_name: str
    proxy_replicas: int
    rate_limit_per_client: int
    max_request_body_size: str

    @property
    def api_host(self) -> str:
        return f"api.{self.domain}"

    @property
    def ws_host(self) -> str:
        return f"ws.{self.domain}"


@dataclass(frozen=True)
class StackConfig:
    image: ImageConfig
    addons: frozenset[str]
    storage_class: str | None
    api: ApiConfig
    workers: WorkerConfig
    engine: EngineTimings
    postgres: PostgresConfig
    rabbitmq: StatefulServiceConfig
    redis: StatefulServiceConfig
    observability: ObservabilityConfig
    edge: EdgeConfig
    # What the platform promised the stack would cost a month (make capacity prints its figure against it).
    promised_monthly_cost_usd: int

    def installs(self, addon: str) -> bool:
        return addon in self.addons


def _replicas(read: ConfigReader, prefix: str) -> Replicas:
    low = read.integer(f"{prefix}ReplicasMin", minimum=1)
    high = read.integer(f"{prefix}ReplicasMax", minimum=1)
    if low > high:
        read.fail(f"{prefix}ReplicasMax", str(high), f"must be >= {prefix}ReplicasMin ({low})")
    return Replicas(min=low, max=high)


def _resources(read: ConfigReader, prefix: str) -> Resources:
    resources = Resources(
        cpu_request=read.cpu(f"{prefix}CpuRequest"),
        cpu_limit=read.cpu(f"{prefix}CpuLimit"),
        memory_request=read.bytes_(f"{prefix}MemoryRequest"),
        memory_limit=read.bytes_(f"{prefix}MemoryLimit"),
    )
    if all((resources.cpu_request, resources.cpu_limit)) and cpu_millicores(resources.cpu_request) > cpu_millicores(
        resources.cpu_limit
    ):
        read.fail(
            f"{prefix}CpuRequest",
            resources.cpu_request,
            f"must not exceed {prefix}CpuLimit ({resources.cpu_limit})",
        )
    if all((resources.memory_request, resources.memory_limit)) and byte_count(resources.memory_request) > byte_count(
        resources.memory_limit
    ):
        read.fail(
            f"{prefix}MemoryRequest",
            resources.memory_request,
            f"must not exceed {prefix}MemoryLimit ({resources.memory_limit})",
        )
    return resources


def _stateful_service(read: ConfigReader, prefix: str, replicas_key: str, odd: bool = False) -> StatefulServiceConfig:
    replicas = read.integer(replicas_key, minimum=1)
    if odd and replicas % 2 == 0:
        read.fail(replicas_key, str(replicas), "must be 1 or an odd number, so a quorum survives a lost node")
    return StatefulServiceConfig(
        replicas=replicas, storage_size=read.bytes_(f"{prefix}StorageSize"), resources=_resources(read, prefix)
    )


def peak_database_connections(api: ApiConfig, workers: WorkerConfig) -> int:
    """Connections the app may hold at once: every pod at the autoscalers' maximum, surging through a rollout."""

    worker_pods = math.ceil(workers.replicas.max * (100 + ROLLING_UPDATE_SURGE_PERCENT) / 100)
    return api.peak_replicas * api.database_connections + worker_pods * workers.database_connections


def _check_connection_budget(read: ConfigReader, stack: StackConfig) -> None:
    needed = peak_database_connections(stack.api, stack.workers) + RESERVED_DATABASE_CONNECTIONS
    if needed > stack.postgres.max_connections:
        read.errors.append(
            f"{PROJECT}:postgresMaxConnections = {stack.postgres.max_connections} is too few: at their maximum "
            f"replicas plus a {ROLLING_UPDATE_SURGE_PERCENT}% rollout surge (twice apiReplicasMax with "
            f"apiDeployStrategy blueGreen), API pods (apiReplicasMax x "
            f"apiDatabaseConnections) and worker pods (workerReplicasMax x workerDatabaseConnections) may hold "
            f"{needed - RESERVED_DATABASE_CONNECTIONS} connections, plus {RESERVED_DATABASE_CONNECTIONS} reserved: "
            f"raise it to {needed} or lower the others"
        )


def _engine_timings(read: ConfigReader) -> EngineTimings:
    timings = EngineTimings(
        lease_seconds=read.integer("leaseSeconds", minimum=3, maximum=3600),
        lease_renew_seconds=read.integer("leaseRenewSeconds", minimum=1, maximum=1200),
        lease_grace_seconds=read.integer("leaseGraceSeconds", minimum=0, maximum=3600),
        unclaimed_republish_seconds=read.integer("unclaimedRepublishSeconds", minimum=5, maximum=3600),
    )
    if timings.lease_renew_seconds * 3 > timings.lease_seconds:
        # Renewal must get more than one try before the lease lapses, or a single slow query loses it.
        read.fail(
            "leaseRenewSeconds",
            str(timings.lease_renew_seconds),
            f"must be at most a third of leaseSeconds ({timings.lease_seconds})",
        )
    return timings


def _objectives(read: ConfigReader) -> ServiceLevelObjectives:
    fraction = "a fraction strictly between 0 and 1, such as 0.999"
    threshold = read.string("sloLatencySeconds", _SECONDS, "a number of seconds such as 0.5")
    if threshold and float(threshold) not in API_LATENCY_BUCKETS:
        read.fail(
            "sloLatencySeconds",
            threshold,
            "must be one of the API latency histogram's bucket bounds (seconds): "
            + ", ".join(str(bound) for bound in API_LATENCY_BUCKETS),
        )
    return ServiceLevelObjectives(
        availability=float(read.string("sloAvailability", _FRACTION, fraction) or 0),
        latency_seconds=float(threshold or 0),
        latency_target=float(read.string("sloLatencyTarget", _FRACTION, fraction) or 0),
    )


def _blue_green(read: ConfigReader) -> BlueGreen | None:
    """The API's blue-green settings when apiDeployStrategy is blueGreen; None for rolling updates. The thresholds
    are read and checked whichever the strategy, so a bad one is caught before a stack switches to it."""
    strategy = read.choice("apiDeployStrategy", API_DEPLOY_STRATEGIES)
    ratio = read.string("rolloutMax5xxRatio", _FRACTION, "a fraction strictly between 0 and 1, such as 0.01")
    p99 = read.string("rolloutMaxPostP99Seconds", _SECONDS, "a number of seconds such as 0.5")
    if p99 and float(p99) == 0:
        read.fail("rolloutMaxPostP99Seconds", p99, "must be more than 0 seconds")
    delay = read.integer("rolloutScaleDownDelaySeconds", minimum=0, maximum=86400)
    if delay <= ROLLOUT_ANALYSIS_SECONDS:
        read.fail(
            "rolloutScaleDownDelaySeconds",
            str(delay),
            f"must be longer than the post-promotion analysis ({ROLLOUT_ANALYSIS_SECONDS} s): Argo Rollouts cancels "
            "that analysis when it scales the previous version down, and could no longer switch traffic back",
        )
    if strategy != "blueGreen":
        return None
    return BlueGreen(
        max_5xx_ratio=float(ratio or 0), max_post_p99_seconds=float(p99 or 0), scale_down_delay_seconds=delay
    )


def _addon(name: str) -> str:
    if name not in ADDONS:
        raise ValueError(name)
    return name


def _cidr(value: str) -> str:
    return str(ipaddress.ip_network(value, strict=True))


def load(config: pulumi.Config | None = None) -> StackConfig:
    """Reads and validates the stack's configuration, raising ConfigError that names every bad key."""
    read = ConfigReader(config or pulumi.Config(PROJECT))

    image_setting = read.string(
        "image",
        re.compile(rf"^build$|{_DIGEST_REF.pattern}"),
        "`build`, or an image pinned by digest such as registry.example.com/team/app@sha256:<64 hex digits>",
    )
    image = ImageConfig(
        build=image_setting == "build",
        repository=read.string(
            "imageRepository", _REPOSITORY, "a registry repository such as ghcr.io/org/name, without tag"
        ),
        ref=None if image_setting == "build" else image_setting,
    )

    workers = WorkerConfig(
        replicas=_replicas(read, "worker"),
        resources=_resources(read, "worker"),
        concurrency=read.integer("workerConcurrency", minimum=1, maximum=1024),
        max_task_timeout_seconds=read.integer("workerMaxTaskTimeoutSeconds", minimum=1, maximum=86400),
        queue=read.string("workerQueue", _QUEUE_NAME, "a RabbitMQ queue name of 1-255 letters, digits and . _ : -"),
        queue_length_target=read.integer("workerQueueLengthTarget", minimum=1),
        scale_cpu_percent=read.integer("workerCpuTargetPercent", minimum=10, maximum=100),
        egress_cidrs=read.string_list(
            "workerEgressCidrs", _cidr, "a list of distinct network CIDRs such as 10.0.0.0/8"
        ),
        database_connections=read.integer("workerDatabaseConnections", minimum=1, maximum=100),
    )

    addons = frozenset(read.string_list("addons", _addon, "a list of distinct add-ons from: " + ", ".join(ADDONS)))
    stack = StackConfig(
        image=image,
        addons=addons,
        storage_class=read.string(
            "storageClass", _K8S_NAME, "empty (cluster default) or a StorageClass name", optional=True
        )
        or None,
        api=ApiConfig(
            replicas=_replicas(read, "api"),
            resources=_resources(read, "api"),
            scale_cpu_percent=read.integer("apiScaleCpuPercent", minimum=10, maximum=100),
            scale_memory_percent=read.integer("apiScaleMemoryPercent", minimum=10, maximum=100),
            requests_per_second_target=read.integer("apiRequestsPerSecondTarget", minimum=1, maximum=100_000),
            database_connections=read.integer("apiDatabaseConnections", minimum=1, maximum=100),
            blue_green=_blue_green(read),
        ),
        workers=workers,
        engine=_engine_timings(read),
        postgres=PostgresConfig(
            **vars(_stateful_service(read, "postgres", "postgresInstances")),
            max_connections=read.integer("postgresMaxConnections", minimum=25, maximum=10_000),
        ),
        rabbitmq=_stateful_service(read, "rabbitmq", "rabbitmqReplicas", odd=True),
        redis=_stateful_service(read, "redis", "redisReplicas"),
        observability=ObservabilityConfig(
            prometheus_retention=read.string(
                "prometheusRetention", _RETENTION, "a positive duration in h, d, w or y, such as 7d"
            ),
            prometheus_storage_size=read.bytes_("prometheusStorageSize"),
            prometheus_replicas=read.integer("prometheusReplicas", minimum=1, maximum=5),
            prometheus_resources=_resources(read, "prometheus"),
            alertmanager_replicas=read.integer("alertmanagerReplicas", minimum=1, maximum=5),
            alert_receivers=read_alert_receivers(read),
            objectives=_objectives(read),
        ),
        edge=EdgeConfig(
            domain=read.string("domain", _DNS_NAME, "a lower-case DNS name such as workflows.example.com"),
            acme_email=read.string("acmeEmail", EMAIL, "an e-mail address"),
            tls_issuer=read.choice("tlsIssuer", TLS_ISSUERS),
            gateway_class_name=read.string("gatewayClassName", _K8S_NAME, "a Kubernetes object name"),
            proxy_replicas=read.integer("edgeProxyReplicas", minimum=1),
            rate_limit_per_client=read.integer("edgeRateLimitPerClient", minimum=1),
            max_request_body_size=read.bytes_("edgeMaxRequestBodySize"),
        ),
        promised_monthly_cost_usd=read.integer("promisedMonthlyCostUsd", minimum=1),
    )
    if not read.errors:
        # Only on valid values: a fallback standing in for a bad one would make this a second, misleading error.
        _check_connection_budget(read, stack)
    if read.errors:
        raise ConfigError("invalid stack configuration:\n  " + "\n  ".join(read.errors))
    return stack
