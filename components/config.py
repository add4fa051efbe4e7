"""The stack's configuration, read once into frozen, typed objects and validated.

Pulumi.yaml declares every key with its type and default; this module turns the values into the objects the
components take and rejects a bad value with one message that names the key, the value and what is allowed.
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import TypeVar

import pulumi

PROJECT = "workflow-platform"

ADDONS = (
    "cert-manager",
    "envoy-gateway",
    "keda",
    "cloudnative-pg",
    "rabbitmq-cluster-operator",
    "kube-prometheus-stack",
    "metrics-server",
)
TLS_ISSUERS = ("letsencrypt-staging", "letsencrypt-production")
# Deployments roll out with this many extra pods (percent of replicas) while old ones still run.
ROLLING_UPDATE_SURGE_PERCENT = 25
# PostgreSQL connections kept free of the app: superuser slots, the migrations Job, the operator, monitoring, psql.
RESERVED_DATABASE_CONNECTIONS = 20

_CPU = re.compile(r"^(\d+m|\d+(\.\d+)?)$")
_BYTES = re.compile(r"^(\d+)(Ki|Mi|Gi|Ti)$")
_BYTE_UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
_RETENTION = re.compile(r"^[1-9]\d*(h|d|w|y)$")
_DNS_NAME = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_DIGEST_REF = re.compile(
    r"^[a-z0-9]+([._-][a-z0-9]+)*(\.[a-z0-9-]+)*(:\d+)?(/[a-z0-9]+([._-][a-z0-9]+)*)+@sha256:[a-f0-9]{64}$"
)
_REPOSITORY = re.compile(r"^[a-z0-9]+([._-][a-z0-9]+)*(\.[a-z0-9-]+)*(:\d+)?(/[a-z0-9]+([._-][a-z0-9]+)*)+$")
_QUEUE_NAME = re.compile(r"^[A-Za-z0-9._:-]{1,255}$")
_K8S_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_HTTPS_URL = re.compile(r"^https://[^\s/]+/\S*$")
_EMAILS = re.compile(r"^[^@\s,]+@[^@\s,]+\.[^@\s,]+(,\s*[^@\s,]+@[^@\s,]+\.[^@\s,]+)*$")
_SMARTHOST = re.compile(r"^[A-Za-z0-9.-]+:\d{1,5}$")


class ConfigError(pulumi.RunError):
    """A stack configuration value is invalid; the message lists every bad key."""


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
class ApiConfig:
    replicas: Replicas
    resources: Resources
    scale_cpu_percent: int
    scale_memory_percent: int
    database_connections: int


@dataclass(frozen=True)
class WorkerConfig:
    replicas: Replicas
    resources: Resources
    concurrency: int
    max_task_timeout_seconds: int
    queue: str
    queue_length_target: int
    egress_cidrs: tuple[str, ...]
    database_connections: int


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
class EmailReceiver:
    to: pulumi.Output[str]
    sender: str
    smarthost: str
    username: str
    password: pulumi.Output[str] | None


@dataclass(frozen=True)
class AlertReceivers:
    """Where Alertmanager sends the platform's alerts; the addresses and credentials are Pulumi secrets."""

    slack_webhook_url: pulumi.Output[str] | None
    email: EmailReceiver | None

    @property
    def any(self) -> bool:
        return self.slack_webhook_url is not None or self.email is not None


@dataclass(frozen=True)
class ObservabilityConfig:
    prometheus_retention: str
    prometheus_storage_size: str
    prometheus_replicas: int
    alertmanager_replicas: int
    alert_receivers: AlertReceivers


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

    def installs(self, addon: str) -> bool:
        return addon in self.addons


T = TypeVar("T")


def cpu_millicores(quantity: str) -> Decimal:
    return Decimal(quantity[:-1]) if quantity.endswith("m") else Decimal(quantity) * 1000


def byte_count(quantity: str) -> int:
    number, unit = _BYTES.match(quantity).groups()
    return int(number) * _BYTE_UNITS[unit]


class _Reader:
    """Reads raw config strings, collecting every problem so one run reports them all."""

    def __init__(self, config: pulumi.Config):
        self._config = config
        self.errors: list[str] = []

    def _fail(self, key: str, raw: str, allowed: str) -> None:
        self.errors.append(f"{PROJECT}:{key} = {_shown(raw)} is not allowed: {allowed}")

    def _read(self, key: str, parse: Callable[[str], T], allowed: str, fallback: T) -> T:
        raw = self._config.get(key)
        if raw is None:
            self.errors.append(f"{PROJECT}:{key} is not set: {allowed}")
            return fallback
        try:
            return parse(raw)
        except (ValueError, TypeError):
            self._fail(key, raw, allowed)
            return fallback

    def string(self, key: str, pattern: re.Pattern[str], allowed: str, *, optional: bool = False) -> str:
        def parse(raw: str) -> str:
            if (optional and raw == "") or pattern.match(raw):
                return raw
            raise ValueError

        return self._read(key, parse, allowed, "")

    def boolean(self, key: str) -> bool:
        def parse(raw: str) -> bool:
            if raw not in ("true", "false"):
                raise ValueError
            return raw == "true"

        return self._read(key, parse, "true or false", False)

    def is_set(self, key: str) -> bool:
        return bool(self._config.get(key))

    def secret(self, key: str, pattern: re.Pattern[str], allowed: str) -> pulumi.Output[str] | None:
        """An optional value that must have been set with `pulumi config set --secret`; empty means unset.
        The plain text is only matched here: messages never show it and the program keeps the secret Output."""
        raw = self._config.get(key)
        if not raw:
            return None
        if not pulumi.runtime.is_config_secret(f"{PROJECT}:{key}"):
            self.errors.append(
                f"{PROJECT}:{key} is set in plain text: it must be a secret, set with {set_secret_command(key)}"
            )
            return None
        if not pattern.match(raw):
            self.errors.append(f"{PROJECT}:{key} (a secret, not shown) is not allowed: {allowed}")
            return None
        return self._config.get_secret(key)

    def choice(self, key: str, choices: Iterable[str]) -> str:
        choices = tuple(choices)

        def parse(raw: str) -> str:
            if raw not in choices:
                raise ValueError
            return raw

        return self._read(key, parse, "one of " + ", ".join(choices), choices[0])

    def integer(self, key: str, minimum: int, maximum: int | None = None) -> int:
        allowed = f"an integer >= {minimum}" + (f" and <= {maximum}" if maximum is not None else "")

        def parse(raw: str) -> int:
            value = int(raw)
            if value < minimum or (maximum is not None and value > maximum):
                raise ValueError
            return value

        return self._read(key, parse, allowed, minimum)

    def string_list(self, key: str, item: Callable[[str], str], allowed: str) -> tuple[str, ...]:
        def parse(raw: str) -> tuple[str, ...]:
            values = json.loads(raw)
            if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
                raise ValueError
            if len(set(values)) != len(values):
                raise ValueError
            return tuple(item(v) for v in values)

        return self._read(key, parse, allowed, ())

    def cpu(self, key: str) -> str:
        return self.string(key, _CPU, "a CPU quantity such as 250m or 2")

    def bytes_(self, key: str) -> str:
        return self.string(key, _BYTES, "a whole size in Ki, Mi, Gi or Ti, such as 512Mi or 20Gi")

    def replicas(self, prefix: str) -> Replicas:
        low = self.integer(f"{prefix}ReplicasMin", minimum=1)
        high = self.integer(f"{prefix}ReplicasMax", minimum=1)
        if low > high:
            self._fail(f"{prefix}ReplicasMax", str(high), f"must be >= {prefix}ReplicasMin ({low})")
        return Replicas(min=low, max=high)

    def resources(self, prefix: str) -> Resources:
        resources = Resources(
            cpu_request=self.cpu(f"{prefix}CpuRequest"),
            cpu_limit=self.cpu(f"{prefix}CpuLimit"),
            memory_request=self.bytes_(f"{prefix}MemoryRequest"),
            memory_limit=self.bytes_(f"{prefix}MemoryLimit"),
        )
        if all((resources.cpu_request, resources.cpu_limit)) and cpu_millicores(resources.cpu_request) > cpu_millicores(
            resources.cpu_limit
        ):
            self._fail(
                f"{prefix}CpuRequest",
                resources.cpu_request,
                f"must not exceed {prefix}CpuLimit ({resources.cpu_limit})",
            )
        if all((resources.memory_request, resources.memory_limit)) and byte_count(
            resources.memory_request
        ) > byte_count(resources.memory_limit):
            self._fail(
                f"{prefix}MemoryRequest",
                resources.memory_request,
                f"must not exceed {prefix}MemoryLimit ({resources.memory_limit})",
            )
        return resources

    def stateful_service(self, prefix: str, replicas_key: str, odd: bool = False) -> StatefulServiceConfig:
        replicas = self.integer(replicas_key, minimum=1)
        if odd and replicas % 2 == 0:
            self._fail(replicas_key, str(replicas), "must be 1 or an odd number, so a quorum survives a lost node")
        return StatefulServiceConfig(
            replicas=replicas, storage_size=self.bytes_(f"{prefix}StorageSize"), resources=self.resources(prefix)
        )


def _shown(raw: str) -> str:
    """A value as the stack file would spell it: numbers and lists bare, strings quoted."""
    try:
        json.loads(raw)
        return raw
    except ValueError:
        return json.dumps(raw)


def set_secret_command(key: str, value: str = "<value>") -> str:
    return f"`pulumi config set --secret {key} {value} --stack {pulumi.get_stack()}`"


def _alert_receivers(read: _Reader) -> AlertReceivers:
    slack_webhook_url = read.secret(
        "alertSlackWebhookUrl", _HTTPS_URL, "an https:// URL, such as a Slack incoming webhook's"
    )
    email_to = read.secret("alertEmailTo", _EMAILS, "an e-mail address, or several separated by commas")
    sender = read.string("alertEmailFrom", _EMAIL, "empty or an e-mail address", optional=True)
    smarthost = read.string(
        "alertSmtpSmarthost",
        _SMARTHOST,
        "empty or an SMTP server as host:port, such as smtp.example.com:587",
        optional=True,
    )
    username = read.string(
        "alertSmtpUsername", re.compile(r"^\S+$"), "empty or a user name without spaces", optional=True
    )
    password = read.secret("alertSmtpPassword", re.compile(r"^\S.*$"), "a password")

    if read.is_set("alertEmailTo"):
        for key, value in (("alertEmailFrom", sender), ("alertSmtpSmarthost", smarthost)):
            if not value:
                read.errors.append(f"{PROJECT}:{key} is not set: alertEmailTo is set, and sending e-mail needs it")
    for key, other in (("alertSmtpPassword", "alertSmtpUsername"), ("alertSmtpUsername", "alertSmtpPassword")):
        if read.is_set(other) and not read.is_set(key):
            read.errors.append(f"{PROJECT}:{key} is not set: {other} is set, and SMTP authentication needs both")

    if read.boolean("alertReceiverRequired") and not (
        read.is_set("alertSlackWebhookUrl") or read.is_set("alertEmailTo")
    ):
        read.errors.append(
            f"{PROJECT}:alertReceiverRequired is true, and neither {PROJECT}:alertSlackWebhookUrl nor "
            f"{PROJECT}:alertEmailTo is set: alerts would reach nobody. Set one or both as secrets: "
            f"{set_secret_command('alertSlackWebhookUrl', 'https://hooks.slack.com/services/...')} and/or "
            f"{set_secret_command('alertEmailTo', 'oncall@example.com')} (with alertEmailFrom and alertSmtpSmarthost)"
        )
    email = (
        EmailReceiver(to=email_to, sender=sender, smarthost=smarthost, username=username, password=password)
        if email_to is not None
        else None
    )
    return AlertReceivers(slack_webhook_url=slack_webhook_url, email=email)


def peak_database_connections(api: ApiConfig, workers: WorkerConfig) -> int:
    """Connections the app may hold at once: every pod at the autoscalers' maximum, surging through a rollout."""

    def pods(replicas: Replicas) -> int:
        return math.ceil(replicas.max * (100 + ROLLING_UPDATE_SURGE_PERCENT) / 100)

    return pods(api.replicas) * api.database_connections + pods(workers.replicas) * workers.database_connections


def _check_connection_budget(read: _Reader, stack: StackConfig) -> None:
    needed = peak_database_connections(stack.api, stack.workers) + RESERVED_DATABASE_CONNECTIONS
    if needed > stack.postgres.max_connections:
        read.errors.append(
            f"{PROJECT}:postgresMaxConnections = {stack.postgres.max_connections} is too few: at their maximum "
            f"replicas plus a {ROLLING_UPDATE_SURGE_PERCENT}% rollout surge, API pods (apiReplicasMax x "
            f"apiDatabaseConnections) and worker pods (workerReplicasMax x workerDatabaseConnections) may hold "
            f"{needed - RESERVED_DATABASE_CONNECTIONS} connections, plus {RESERVED_DATABASE_CONNECTIONS} reserved: "
            f"raise it to {needed} or lower the others"
        )


def _engine_timings(read: _Reader) -> EngineTimings:
    timings = EngineTimings(
        lease_seconds=read.integer("leaseSeconds", minimum=3, maximum=3600),
        lease_renew_seconds=read.integer("leaseRenewSeconds", minimum=1, maximum=1200),
        lease_grace_seconds=read.integer("leaseGraceSeconds", minimum=0, maximum=3600),
        unclaimed_republish_seconds=read.integer("unclaimedRepublishSeconds", minimum=5, maximum=3600),
    )
    if timings.lease_renew_seconds * 3 > timings.lease_seconds:
        # Renewal must get more than one try before the lease lapses, or a single slow query loses it.
        read._fail(
            "leaseRenewSeconds",
            str(timings.lease_renew_seconds),
            f"must be at most a third of leaseSeconds ({timings.lease_seconds})",
        )
    return timings


def _addon(name: str) -> str:
    if name not in ADDONS:
        raise ValueError(name)
    return name


def _cidr(value: str) -> str:
    return str(ipaddress.ip_network(value, strict=True))


def load(config: pulumi.Config | None = None) -> StackConfig:
    """Reads and validates the stack's configuration, raising ConfigError that names every bad key."""
    read = _Reader(config or pulumi.Config(PROJECT))

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
        replicas=read.replicas("worker"),
        resources=read.resources("worker"),
        concurrency=read.integer("workerConcurrency", minimum=1, maximum=1024),
        max_task_timeout_seconds=read.integer("workerMaxTaskTimeoutSeconds", minimum=1, maximum=86400),
        queue=read.string("workerQueue", _QUEUE_NAME, "a RabbitMQ queue name of 1-255 letters, digits and . _ : -"),
        queue_length_target=read.integer("workerQueueLengthTarget", minimum=1),
        egress_cidrs=read.string_list(
            "workerEgressCidrs", _cidr, "a list of distinct network CIDRs such as 10.0.0.0/8"
        ),
        database_connections=read.integer("workerDatabaseConnections", minimum=1, maximum=100),
    )

    stack = StackConfig(
        image=image,
        addons=frozenset(read.string_list("addons", _addon, "a list of distinct add-ons from: " + ", ".join(ADDONS))),
        storage_class=read.string(
            "storageClass", _K8S_NAME, "empty (cluster default) or a StorageClass name", optional=True
        )
        or None,
        api=ApiConfig(
            replicas=read.replicas("api"),
            resources=read.resources("api"),
            scale_cpu_percent=read.integer("apiScaleCpuPercent", minimum=10, maximum=100),
            scale_memory_percent=read.integer("apiScaleMemoryPercent", minimum=10, maximum=100),
            database_connections=read.integer("apiDatabaseConnections", minimum=1, maximum=100),
        ),
        workers=workers,
        engine=_engine_timings(read),
        postgres=PostgresConfig(
            **vars(read.stateful_service("postgres", "postgresInstances")),
            max_connections=read.integer("postgresMaxConnections", minimum=25, maximum=10_000),
        ),
        rabbitmq=read.stateful_service("rabbitmq", "rabbitmqReplicas", odd=True),
        redis=read.stateful_service("redis", "redisReplicas"),
        observability=ObservabilityConfig(
            prometheus_retention=read.string(
                "prometheusRetention", _RETENTION, "a positive duration in h, d, w or y, such as 7d"
            ),
            prometheus_storage_size=read.bytes_("prometheusStorageSize"),
            prometheus_replicas=read.integer("prometheusReplicas", minimum=1, maximum=5),
            alertmanager_replicas=read.integer("alertmanagerReplicas", minimum=1, maximum=5),
            alert_receivers=_alert_receivers(read),
        ),
        edge=EdgeConfig(
            domain=read.string("domain", _DNS_NAME, "a lower-case DNS name such as workflows.example.com"),
            acme_email=read.string("acmeEmail", _EMAIL, "an e-mail address"),
            tls_issuer=read.choice("tlsIssuer", TLS_ISSUERS),
            gateway_class_name=read.string("gatewayClassName", _K8S_NAME, "a Kubernetes object name"),
            proxy_replicas=read.integer("edgeProxyReplicas", minimum=1),
            rate_limit_per_client=read.integer("edgeRateLimitPerClient", minimum=1),
            max_request_body_size=read.bytes_("edgeMaxRequestBodySize"),
        ),
    )
    if not read.errors:
        # Only on valid values: a fallback standing in for a bad one would make this a second, misleading error.
        _check_connection_budget(read, stack)
    if read.errors:
        raise ConfigError("invalid stack configuration:\n  " + "\n  ".join(read.errors))
    return stack
