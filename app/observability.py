"""Metrics (Prometheus), traces (OpenTelemetry, context carried in broker message headers) and JSON logs."""

from __future__ import annotations

import logging
import sys
from contextvars import ContextVar
from typing import Any

from opentelemetry import propagate, trace
from prometheus_client import Counter, Gauge, Histogram
from pythonjsonlogger.json import JsonFormatter

_FAST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class metrics:  # noqa: N801 - a namespace of the process's metrics
    HTTP_LATENCY = Histogram(
        "workflow_http_request_duration_seconds",
        "Time to answer an HTTP request.",
        ["method", "route", "status"],
        buckets=_FAST_BUCKETS,
    )
    RUNS_STARTED = Counter("workflow_runs_started_total", "Runs created.")
    STEP_DURATION = Histogram(
        "workflow_step_duration_seconds", "Time a step's task ran.", ["task", "outcome"], buckets=_FAST_BUCKETS
    )
    STEPS = Counter("workflow_steps_total", "Step attempts by task and outcome.", ["task", "outcome"])
    RETRIES = Counter("workflow_step_retries_total", "Step attempts that failed and will be retried.", ["task"])
    ROUTING_LATENCY = Histogram(
        "workflow_routing_latency_seconds",
        "From a step becoming ready (its transaction committing) to the broker confirming its message.",
        buckets=(0.001, 0.002, 0.003, 0.004, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    )
    QUEUE_DEPTH = Gauge("workflow_queue_depth", "Ready messages waiting in a queue.", ["queue"])
    DEAD_LETTERS = Counter("workflow_dead_letters_total", "Messages dead-lettered.", ["queue"])
    RUNS_FINISHED = Counter("workflow_runs_finished", "Runs that reached a final status.", ["status"])
    # Both ages count from when the step became due (ready_at): published_at moves on every republish, so an age
    # from it would never exceed the unclaimed republish interval however long the step waits.
    READY_STEP_OLDEST_AGE = Gauge(
        "workflow_ready_step_oldest_age_seconds",
        "How long the oldest due ready step has waited without its message confirmed by the broker (0: none).",
        ["queue"],
    )
    QUEUE_OLDEST_MESSAGE_AGE = Gauge(
        "workflow_queue_oldest_message_age_seconds",
        "How long the oldest due ready step whose message the broker confirmed has waited unclaimed (0: none).",
        ["queue"],
    )
    LEASE_EXPIRIES = Counter(
        "workflow_lease_expiries", "Running steps requeued because their worker's lease expired.", ["queue"]
    )
    STEPS_REPUBLISHED = Counter(
        "workflow_steps_republished",
        "Ready steps the relay published again: never confirmed by the broker, or confirmed but unclaimed.",
        ["queue", "reason"],
    )
    RELAY_LAST_SUCCESS = Gauge(
        "workflow_relay_last_success_timestamp_seconds",
        "When the relay last completed a pass, or the worker started if none has (unix time).",
        ["queue"],
    )
    WORKER_SLOTS = Gauge("workflow_worker_slots", "Steps the worker runs at once at most.", ["queue"])
    WORKER_BUSY_SLOTS = Gauge("workflow_worker_busy_slots", "Steps the worker is running now.", ["queue"])


class tracing:  # noqa: N801 - helpers around the OpenTelemetry API
    tracer = trace.get_tracer("workflow-platform")

    @staticmethod
    def inject_headers() -> dict[str, Any]:
        headers: dict[str, Any] = {}
        propagate.inject(headers)
        return headers

    @staticmethod
    def extract(headers: dict[str, Any]):
        return propagate.extract({key: str(value) for key, value in headers.items()})


def configure_tracing(service_name: str) -> None:
    """Exports spans over OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set (the cluster sets it); otherwise none."""
    import os

    if not os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        return
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(
        resource=Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", service_name)})
    )
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)


# The run and step a worker task is executing; each step runs in its own asyncio task, so this never leaks.
step_log_context: ContextVar[dict[str, Any] | None] = ContextVar("step_log_context", default=None)


class _StepContextFilter(logging.Filter):
    """Adds the run id, step and attempt to every record logged while a step runs, the task's own logs included,
    so each JSON log line says which run and step it belongs to."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in (step_log_context.get() or {}).items():
            setattr(record, key, value)
        return True


def configure_logging(log_format: str, level: str) -> None:
    handler = logging.StreamHandler(sys.stdout)
    if log_format == "json":
        handler.setFormatter(JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s", timestamp=True))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    handler.addFilter(_StepContextFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
