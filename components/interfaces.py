"""What one component hands another, through `__main__.py`: plain frozen values, so no component imports another."""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi

from components.workload import SecretFile


@dataclass(frozen=True)
class ScrapeTarget:
    """Pods of the platform that expose Prometheus metrics on a named port, found through a Service or directly."""

    name: str
    namespace: pulumi.Input[str]
    selector: dict[str, str]
    port_name: str
    port: int
    via_service: bool = True
    path: str = "/metrics"
    # Query parameters of the scrape, e.g. RabbitMQ's /metrics/detailed?family=...: name -> values.
    params: dict[str, list[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Connections:
    """Connection URLs of the data services (Pulumi secrets), and how the app receives them: as files of a Secret."""

    database_url: pulumi.Output[str]
    amqp_url: pulumi.Output[str]
    redis_url: pulumi.Output[str]

    # Setting of the container contract -> key in the connection Secret, and the name of its file.
    SETTING_KEYS = {"APP_DATABASE_URL": "database-url", "APP_AMQP_URL": "amqp-url", "APP_REDIS_URL": "redis-url"}
    AMQP_URL_KEY = "amqp-url"

    def secret_data(self) -> dict[str, pulumi.Output[str]]:
        return {"database-url": self.database_url, "amqp-url": self.amqp_url, "redis-url": self.redis_url}

    def files(self, secret_name: pulumi.Input[str]) -> list[SecretFile]:
        return [SecretFile(variable, secret_name, key) for variable, key in self.SETTING_KEYS.items()]
