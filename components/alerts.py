"""The platform's alerting rules, on the metrics its API and workers export: what a platform engineer is paged or
warned about. Thresholds are the service levels the platform is built and benchmarked for."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Alert:
    name: str
    expr: str
    for_: str
    severity: str
    summary: str
    description: str

    def rule(self) -> dict:
        return {
            "alert": self.name,
            "expr": self.expr,
            "for": self.for_,
            "labels": {"severity": self.severity},
            "annotations": {"summary": self.summary, "description": self.description},
        }


PLATFORM_ALERTS = (
    Alert(
        "WorkflowApiErrors",
        'sum(rate(workflow_http_request_duration_seconds_count{status=~"5.."}[5m]))'
        " / sum(rate(workflow_http_request_duration_seconds_count[5m])) > 0.01",
        "5m",
        "critical",
        "More than 1% of API requests fail with a 5xx",
        "{{ $value | humanizePercentage }} of requests answered 5xx over 5 minutes: a dependency is unreachable "
        "(503) or a bug (500, logged with its traceback).",
    ),
    Alert(
        "WorkflowApiSlow",
        "histogram_quantile(0.99, sum by (le, route) "
        '(rate(workflow_http_request_duration_seconds_bucket{method="POST"}[5m]))) > 0.5',
        "10m",
        "warning",
        "API POST p99 latency over 500 ms on {{ $labels.route }}",
        "The API pods are saturated or the database is slow; the HPA should be adding pods.",
    ),
    Alert(
        "WorkflowRoutingSlow",
        "histogram_quantile(0.99, sum by (le) (rate(workflow_routing_latency_seconds_bucket[5m]))) > 0.25",
        "10m",
        "warning",
        "Ready steps take over 250 ms (p99) to be confirmed by the broker",
        "RabbitMQ is slow to confirm publishes: check its memory and disk alarms and the quorum queues' leaders.",
    ),
    Alert(
        "WorkflowQueueBacklog",
        "max by (queue) (workflow_queue_depth) > 10000",
        "15m",
        "warning",
        "Queue {{ $labels.queue }} has held over 10,000 ready messages for 15 minutes",
        "Workers are not keeping up: KEDA may be at its maximum replicas, or tasks are slow (see step durations).",
    ),
    Alert(
        "WorkflowDeadLetters",
        "sum by (queue) (increase(workflow_dead_letters_total[10m])) > 0",
        "0m",
        "warning",
        "Messages were dead-lettered from {{ $labels.queue }}",
        "Their steps failed; GET /v1/dead-letters lists the messages and why.",
    ),
    Alert(
        "WorkflowStepsFailing",
        'sum by (task) (rate(workflow_steps_total{outcome="failed"}[10m]))'
        " / sum by (task) (rate(workflow_steps_total[10m])) > 0.1",
        "10m",
        "warning",
        "Over 10% of {{ $labels.task }} attempts fail for good",
        "Steps of this task exhaust their retries; their errors are in GET /v1/runs/{id} and the worker logs.",
    ),
)


def alert_rule_groups() -> list[dict]:
    return [{"name": "workflow-platform", "rules": [alert.rule() for alert in PLATFORM_ALERTS]}]
