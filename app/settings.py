"""Configuration from `APP_*` environment variables (the container contract), validated at start-up."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="APP_", extra="ignore")

    # Connections, as the data services hand them out. Empty means the embedded twin (dev mode only).
    database_url: str = ""
    amqp_url: str = ""
    redis_url: str = ""

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
    delivery_limit: int = Field(5, ge=1)
    retry_base_s: float = Field(1, gt=0)
    retry_max_s: float = Field(300, gt=0)

    max_steps_per_workflow: int = Field(200, ge=1)
    max_batch_runs: int = Field(1000, ge=1)
    max_body_bytes: int = Field(1_048_576, ge=1024)
    rate_limit_per_second: int = Field(1000, ge=1)
    api_key_cache_s: float = Field(10, ge=0)

    payload_inline_limit_bytes: int = Field(65_536, ge=1)
    s3_endpoint_url: str = ""
    s3_bucket: str = ""
    s3_region: str = "us-east-1"

    @field_validator("task_modules", mode="before")
    @classmethod
    def _split_modules(cls, value: object) -> object:
        if isinstance(value, str):
            return [module.strip() for module in value.split(",") if module.strip()]
        return value
