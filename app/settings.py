"""Configuration from `APP_*` environment variables (the container contract), validated at start-up.

A secret setting may instead name a file holding its value, `APP_<NAME>_FILE=<path>`: in a cluster the connection
URLs and the bootstrap key are files mounted from a Secret, never environment variables. Plain variables still work
(local runs, tests); setting both for one setting is an error.
"""

from __future__ import annotations

import os
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

ENV_PREFIX = "APP_"
# The settings that may come from a file (`APP_<NAME>_FILE`): the ones a deployment keeps in a Secret.
FILE_SETTINGS = ("database_url", "amqp_url", "redis_url", "bootstrap_api_key")


class SecretFiles(PydanticBaseSettingsSource):
    """Reads each of FILE_SETTINGS whose `APP_<NAME>_FILE` is set from that file, without its trailing newline."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[str | None, str, bool]:
        variable = f"{ENV_PREFIX}{field_name.upper()}"
        path = os.environ.get(f"{variable}_FILE")
        if path is None:
            return None, field_name, False
        if variable in os.environ:
            raise SettingsError(f"{variable} and {variable}_FILE are both set: set only one of them")
        try:
            with open(path, encoding="utf-8") as file:
                return file.read().rstrip("\r\n"), field_name, False
        except OSError as error:
            raise SettingsError(f"{variable}_FILE={path}: cannot read the file ({error.strerror})") from error

    def __call__(self) -> dict[str, Any]:
        values = {}
        for name in FILE_SETTINGS:
            value, _, _ = self.get_field_value(self.settings_cls.model_fields[name], name)
            if value is not None:
                values[name] = value
        return values


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    # Connections, as the data services hand them out. Empty means the embedded twin (dev mode only).
    database_url: str = ""
    amqp_url: str = ""
    redis_url: str = ""
    # Database connections one process may hold: pool_size kept open, up to pool_overflow more under bursts. Every
    # process of every role counts against the server's max_connections: see "Sizing database connections".
    database_pool_size: int = Field(10, ge=1)
    database_pool_overflow: int = Field(10, ge=0)

    # `migrate` retries its database connection (a database still starting) with exponential backoff, from
    # migrate_retry_initial_s up to migrate_retry_max_s between attempts, for migrate_connect_timeout_s in all.
    migrate_connect_timeout_s: float = Field(300, gt=0)
    migrate_retry_initial_s: float = Field(1, gt=0)
    migrate_retry_max_s: float = Field(15, gt=0)

    host: str = "0.0.0.0"
    port: int = Field(8000, ge=1, le=65535)
    metrics_port: int = Field(9100, ge=1, le=65535)
    log_format: Literal["json", "text"] = "json"
    log_level: str = "INFO"

    bootstrap_api_key: str = ""
    task_modules: Annotated[list[str], NoDecode] = []

    worker_queue: str = "workflow.steps"
    worker_concurrency: int = Field(256, ge=1, le=10_000)
    worker_prefetch: int = Field(512, ge=1, le=65_535)
    max_task_timeout_s: float = Field(300, gt=0)
    # A running step whose worker stops renewing its lease for this long is handed to another worker.
    lease_s: float = Field(15, gt=0)
    # Ready steps not confirmed by the broker after this long are published again by the relay.
    republish_after_s: float = Field(5, gt=0)
    relay_interval_s: float = Field(0.5, gt=0)
    # A worker renews its leases this often (at most lease_s / 3); after losing the database it retries renewal
    # first, before recording or claiming anything.
    lease_renew_s: float = Field(5, gt=0)
    # The relay requeues a step only when its lease expired more than this long ago: a live worker that just got
    # its database back renews first. Lease, renewal and grace are one budget: a worker cut off from the database
    # for longer than lease_s + lease_grace_s is taken for dead, and its steps run again elsewhere.
    lease_grace_s: float = Field(15, ge=0)
    # A published step nobody has claimed after this long (a lost message) is published again by the relay.
    unclaimed_republish_s: float = Field(60, gt=0)
    delivery_limit: int = Field(5, ge=1)
    retry_base_s: float = Field(1, gt=0)
    retry_max_s: float = Field(300, gt=0)

    max_steps_per_workflow: int = Field(200, ge=1)
    max_batch_runs: int = Field(1000, ge=1)
    max_body_bytes: int = Field(1_048_576, ge=1024)
    rate_limit_per_second: int = Field(1000, ge=1)
    api_key_cache_s: float = Field(10, ge=0)
    # The events stream of a failed or cancelled run stays open this long for a retry to re-open the run.
    events_linger_s: float = Field(60, ge=0)

    payload_inline_limit_bytes: int = Field(65_536, ge=1)
    s3_endpoint_url: str = ""
    s3_bucket: str = ""
    s3_region: str = "us-east-1"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, SecretFiles(settings_cls), dotenv_settings, file_secret_settings

    @field_validator("task_modules", mode="before")
    @classmethod
    def _split_modules(cls, value: object) -> object:
        if isinstance(value, str):
            return [module.strip() for module in value.split(",") if module.strip()]
        return value
