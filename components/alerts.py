"""The platform's alerting rules: what a platform engineer is paged (critical) or ticketed (warning) about, one rule
group per tier, each alert with the runbook that says how to confirm, mitigate and fix it.

Every series an expression reads is one that its exporter really exports (tests/infra/test_alerts.py checks each
against the app or the exporter's own source); tests/infra/rules/ holds the promtool unit tests of every alert.
The API's alerts defend its service level objectives, which are stack data (`sloAvailability`, `sloLatencySeconds`,
`sloLatencyTarget`), with the multi-window, multi-burn-rate alerts of Google's SRE workbook ("Alerting on SLOs").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import astuple, dataclass

from components.config import ServiceLevelObjectives
from components.network import PlatformNamespaces

# The repository the runbooks are read in: the one place to change when the repository moves.
REPOSITORY_URL = "https://github.com/example-org/workflow-platform/blob/main/"
RUNBOOKS = "docs/runbooks/"

# Every namespace the platform (or one of its add-ons) runs pods in, as a label matcher's regex.
PLATFORM_NAMESPACES = "|".join(astuple(PlatformNamespaces()))
_DATA = PlatformNamespaces().data
# Names the DataPlane gives its services (components/data_plane.py; tests/infra/test_alerts.py checks they agree).
POSTGRES_CLUSTER = "workflow-postgres"
RABBITMQ_CLUSTER = "workflow-rabbitmq"
# The RabbitMQ Cluster Operator runs a cluster's nodes as the StatefulSet <cluster>-server.
_RABBITMQ_NODES = f'namespace="{_DATA}", statefulset="{RABBITMQ_CLUSTER}-server"'

SLO_PERIOD = "30 days"


@dataclass(frozen=True)
class Alert:
    name: str
    severity: str
    expr: str
    for_: str
    summary: str
    description: str

    @property
    def runbook_url(self) -> str:
        return f"{REPOSITORY_URL}{RUNBOOKS}{self.name}.md"

    def rule(self) -> dict:
        return {
            "alert": self.name,
            "expr": self.expr,
            "for": self.for_,
            "labels": {"severity": self.severity},
            "annotations": {
                "summary": self.summary,
                "description": self.description,
                "runbook_url": self.runbook_url,
            },
        }


@dataclass(frozen=True)
class BurnRate:
    """Alert when the error budget burns `factor` times faster than the SLO period allows, over both windows:
    the long one proves it is no blip, the short one that it still goes on."""

    factor: float
    long_window: str
    short_window: str


# Google SRE workbook, table 5-8: 2% of a 30-day budget in 1 hour or 5% in 6 hours pages; 10% in 3 days tickets.
PAGE_BURN_RATES = (BurnRate(14.4, "1h", "5m"), BurnRate(6, "6h", "30m"))
TICKET_BURN_RATES = (BurnRate(1, "3d", "6h"),)

_REQUESTS = "workflow_http_request_duration_seconds"
# The fraction of the API's requests that spent its error budget over a window, as PromQL.
Ratio = Callable[[str], str]


def _number(value: float) -> str:
    return f"{value:.6g}"


def prometheus_le(seconds: float) -> str:
    """A bucket bound as the app's Prometheus client writes it in label `le` (floatToGoString): 1 -> "1.0"."""
    return repr(float(seconds))


def _failed_ratio(window: str) -> str:
    return f'sum(rate({_REQUESTS}_count{{status=~"5.."}}[{window}])) / sum(rate({_REQUESTS}_count[{window}]))'


def _slow_ratio(threshold_seconds: float) -> Ratio:
    def ratio(window: str) -> str:
        return (
            f'1 - sum(rate({_REQUESTS}_bucket{{le="{prometheus_le(threshold_seconds)}"}}[{window}]))'
            f" / sum(rate({_REQUESTS}_count[{window}]))"
        )

    return ratio


def _burning(ratio: Ratio, budget: float, burn_rates: tuple[BurnRate, ...]) -> str:
    def over(window: str, rate: BurnRate) -> str:
        return f"({ratio(window)}) > {_number(rate.factor * budget)}"

    return " or ".join(f"({over(rate.long_window, rate)} and {over(rate.short_window, rate)})" for rate in burn_rates)


def _windows(burn_rates: tuple[BurnRate, ...]) -> str:
    return ", or ".join(
        f"{_number(rate.factor)}x the sustainable rate over {rate.long_window} and {rate.short_window}"
        for rate in burn_rates
    )


# (severity, burn rates, for): a fast burn pages, a slow one makes a ticket.
SLO_ALERTING = (("critical", PAGE_BURN_RATES, "2m"), ("warning", TICKET_BURN_RATES, "15m"))


def api_alerts(objectives: ServiceLevelObjectives) -> tuple[Alert, ...]:
    """The API's availability and latency SLOs, each paging on a fast burn of its error budget and ticketing a slow
    one. Requests the API never answered (all pods down) show in the Gateway's alert instead."""
    threshold_ms = _number(objectives.latency_seconds * 1000)
    availability = tuple(
        Alert(
            "WorkflowApiAvailabilityBudgetBurn",
            severity,
            _burning(_failed_ratio, 1 - objectives.availability, burn_rates),
            for_,
            f"The API burns its availability error budget at {_windows(burn_rates)}",
            f"{{{{ $value | humanizePercentage }}}} of API requests answered 5xx; the objective is "
            f"{_number(objectives.availability * 100)}% without a 5xx over {SLO_PERIOD}.",
        )
        for severity, burn_rates, for_ in SLO_ALERTING
    )
    latency = tuple(
        Alert(
            "WorkflowApiLatencyBudgetBurn",
            severity,
            _burning(_slow_ratio(objectives.latency_seconds), 1 - objectives.latency_target, burn_rates),
            for_,
            f"The API burns its latency error budget at {_windows(burn_rates)}",
            f"{{{{ $value | humanizePercentage }}}} of API requests took over {threshold_ms} ms; the objective is "
            f"{_number(objectives.latency_target * 100)}% within {threshold_ms} ms over {SLO_PERIOD}.",
        )
        for severity, burn_rates, for_ in SLO_ALERTING
    )
    return availability + latency


RUN_ALERTS = (
    Alert(
        "WorkflowRoutingSlow",
        "warning",
        "histogram_quantile(0.99, sum by (le) (rate(workflow_routing_latency_seconds_bucket[5m]))) > 0.25",
        "10m",
        "Ready steps take over 250 ms (p99) to be confirmed by the broker",
        "p99 routing latency is {{ $value | humanizeDuration }}: RabbitMQ is slow to confirm publishes.",
    ),
    Alert(
        "WorkflowReadyStepsStuck",
        "critical",
        "max by (queue) (workflow_ready_step_oldest_age_seconds) > 120",
        "5m",
        "Ready steps of {{ $labels.queue }} are not reaching the broker",
        "The oldest ready step has waited {{ $value | humanizeDuration }} without its message confirmed: "
        "runs are stalled.",
    ),
    Alert(
        "WorkflowRelayStalled",
        "critical",
        "time() - max by (queue) (workflow_relay_last_success_timestamp_seconds) > 120",
        "2m",
        "No relay of {{ $labels.queue }} has completed a pass recently",
        "The last relay pass completed {{ $value | humanizeDuration }} ago: nothing republishes lost steps or "
        "requeues steps of dead workers.",
    ),
    Alert(
        "WorkflowQueueBacklog",
        "warning",
        "max by (queue) (workflow_queue_depth) > 10000",
        "15m",
        "Queue {{ $labels.queue }} has held over 10,000 ready messages for 15 minutes",
        "{{ $value | humanize }} messages are waiting: workers are not keeping up.",
    ),
    Alert(
        "WorkflowQueueMessagesAging",
        "warning",
        "max by (queue) (workflow_queue_oldest_message_age_seconds) > 300",
        "10m",
        "Steps queued in {{ $labels.queue }} wait over 5 minutes for a worker",
        "The oldest queued step has waited {{ $value | humanizeDuration }} for a worker to claim it.",
    ),
    Alert(
        "WorkflowLeaseExpiries",
        "warning",
        "sum by (queue) (increase(workflow_lease_expiries_total[15m])) > 5",
        "0m",
        "Workers of {{ $labels.queue }} are losing their steps' leases",
        "{{ $value | humanize }} running steps were requeued in 15 minutes because their worker stopped renewing "
        "its lease.",
    ),
    Alert(
        "WorkflowStepsRepublished",
        "warning",
        "sum by (queue) (increase(workflow_steps_republished_total[15m])) > 20",
        "0m",
        "Ready steps of {{ $labels.queue }} keep being republished",
        "{{ $value | humanize }} steps were published again in 15 minutes: the broker did not confirm them, or no "
        "worker claimed them.",
    ),
    Alert(
        "WorkflowDeadLetters",
        "warning",
        "sum by (queue) (increase(workflow_dead_letters_total[10m])) > 0",
        "0m",
        "Messages were dead-lettered from {{ $labels.queue }}",
        "Messages dead-lettered in 10 minutes: {{ $value | humanize }}; their steps failed for good.",
    ),
    Alert(
        "WorkflowStepsFailing",
        "warning",
        'sum by (task) (rate(workflow_steps_total{outcome="failed"}[10m]))'
        " / sum by (task) (rate(workflow_steps_total[10m])) > 0.1",
        "10m",
        "Over 10% of {{ $labels.task }} attempts fail for good",
        "{{ $value | humanizePercentage }} of {{ $labels.task }} attempts exhausted their retries.",
    ),
)

POSTGRES_ALERTS = (
    Alert(
        "PostgresInstanceDown",
        "critical",
        "cnpg_collector_up == 0"
        f' or kube_pod_status_ready{{namespace="{_DATA}", pod=~"{POSTGRES_CLUSTER}-[0-9]+", condition="true"}} == 0',
        "5m",
        "PostgreSQL instance {{ $labels.pod }} is down or not ready",
        "{{ $labels.pod }} in {{ $labels.namespace }} has not served PostgreSQL for 5 minutes.",
    ),
    Alert(
        "PostgresReplicationLagging",
        "warning",
        "cnpg_pg_replication_lag > 30",
        "5m",
        "PostgreSQL replica {{ $labels.pod }} lags the primary",
        "{{ $labels.pod }} replays the primary's changes {{ $value | humanizeDuration }} late.",
    ),
    Alert(
        "PostgresConnectionsNearMax",
        "warning",
        "sum by (instance) (cnpg_backends_total)"
        ' / max by (instance) (cnpg_pg_settings_setting{name="max_connections"}) > 0.85',
        "5m",
        "PostgreSQL instance {{ $labels.instance }} is near max_connections",
        "{{ $value | humanizePercentage }} of max_connections are in use: new connections will soon be refused.",
    ),
    Alert(
        "PostgresStorageNearFull",
        "warning",
        f'kubelet_volume_stats_available_bytes{{namespace="{_DATA}", persistentvolumeclaim=~"{POSTGRES_CLUSTER}-.+"}}'
        f' / kubelet_volume_stats_capacity_bytes{{namespace="{_DATA}", persistentvolumeclaim=~"{POSTGRES_CLUSTER}-.+"}}'
        " < 0.2",
        "10m",
        "PostgreSQL volume {{ $labels.persistentvolumeclaim }} is over 80% full",
        "Only {{ $value | humanizePercentage }} of {{ $labels.persistentvolumeclaim }} is free; PostgreSQL stops "
        "when it is full.",
    ),
)

RABBITMQ_ALERTS = (
    Alert(
        "RabbitmqNodeDown",
        "warning",
        f"kube_statefulset_status_replicas_ready{{{_RABBITMQ_NODES}}} < kube_statefulset_replicas{{{_RABBITMQ_NODES}}}",
        "5m",
        "A RabbitMQ node is down",
        "Ready RabbitMQ nodes: {{ $value }}; quorum queues keep working while a majority of the nodes is ready.",
    ),
    Alert(
        "RabbitmqQuorumLost",
        "critical",
        f"kube_statefulset_status_replicas_ready{{{_RABBITMQ_NODES}}}"
        f" < floor(kube_statefulset_replicas{{{_RABBITMQ_NODES}}} / 2) + 1",
        "2m",
        "RabbitMQ has lost its quorum: quorum queues have no leader",
        "Ready RabbitMQ nodes: {{ $value }}, fewer than a majority: no step can be published or consumed.",
    ),
    Alert(
        "RabbitmqMemoryAlarm",
        "critical",
        "rabbitmq_process_resident_memory_bytes >= rabbitmq_resident_memory_limit_bytes",
        "1m",
        "RabbitMQ node {{ $labels.pod }} raised its memory alarm",
        "{{ $labels.pod }} uses {{ $value | humanize1024 }}B, at its high watermark: it blocks every publisher.",
    ),
    Alert(
        "RabbitmqDiskAlarm",
        "critical",
        "rabbitmq_disk_space_available_bytes <= rabbitmq_disk_space_available_limit_bytes",
        "1m",
        "RabbitMQ node {{ $labels.pod }} raised its disk alarm",
        "{{ $labels.pod }} has {{ $value | humanize1024 }}B free, at its low watermark: it blocks every publisher.",
    ),
    Alert(
        "RabbitmqUnackedMessagesGrowing",
        "warning",
        "sum(rabbitmq_queue_messages_unacked) > 1000 and sum(delta(rabbitmq_queue_messages_unacked[30m])) > 0",
        "30m",
        "Unacknowledged RabbitMQ messages keep growing",
        "{{ $value | humanize }} messages are delivered but not acknowledged, and more every 30 minutes.",
    ),
)

VALKEY_ALERTS = (
    Alert(
        "ValkeyDown",
        "critical",
        "redis_up == 0",
        "2m",
        "Valkey {{ $labels.pod }} is down",
        "The exporter beside {{ $labels.pod }} in {{ $labels.namespace }} cannot reach Valkey.",
    ),
    Alert(
        "ValkeyMemoryNearMax",
        "warning",
        "redis_memory_used_bytes / redis_memory_max_bytes > 0.9 and redis_memory_max_bytes > 0",
        "5m",
        "Valkey {{ $labels.pod }} is near its maxmemory",
        "{{ $labels.pod }} uses {{ $value | humanizePercentage }} of maxmemory: it will evict keys or refuse writes.",
    ),
    Alert(
        "ValkeyReplicationBroken",
        "warning",
        "redis_master_link_up == 0",
        "5m",
        "Valkey replica {{ $labels.pod }} lost its primary",
        "{{ $labels.pod }} has no link to its primary {{ $labels.master_host }}: it serves stale data.",
    ),
)

AUTOSCALING_ALERTS = (
    Alert(
        "WorkflowAutoscalerAtMax",
        "warning",
        f'kube_horizontalpodautoscaler_status_current_replicas{{namespace=~"{PLATFORM_NAMESPACES}"}}'
        f' >= kube_horizontalpodautoscaler_spec_max_replicas{{namespace=~"{PLATFORM_NAMESPACES}"}}',
        "15m",
        "Autoscaler {{ $labels.horizontalpodautoscaler }} has held its maximum replicas for 15 minutes",
        "{{ $labels.namespace }}/{{ $labels.horizontalpodautoscaler }} runs {{ $value }} pods, its maximum: "
        "demand may exceed what it may add.",
    ),
)

POD_ALERTS = (
    Alert(
        "PodCrashLooping",
        "warning",
        "max_over_time(kube_pod_container_status_waiting_reason"
        f'{{reason="CrashLoopBackOff", namespace=~"{PLATFORM_NAMESPACES}"}}[5m]) >= 1',
        "15m",
        "Container {{ $labels.container }} of {{ $labels.namespace }}/{{ $labels.pod }} is crash-looping",
        "{{ $labels.pod }} has been in CrashLoopBackOff for 15 minutes.",
    ),
    Alert(
        "PodOOMKilled",
        "warning",
        "kube_pod_container_status_last_terminated_reason"
        f'{{reason="OOMKilled", namespace=~"{PLATFORM_NAMESPACES}"}} == 1'
        " and on (namespace, pod, container) increase(kube_pod_container_status_restarts_total"
        f'{{namespace=~"{PLATFORM_NAMESPACES}"}}[15m]) > 0',
        "0m",
        "Container {{ $labels.container }} of {{ $labels.namespace }}/{{ $labels.pod }} was OOM-killed",
        "{{ $labels.container }} exceeded its memory limit and was killed in the last 15 minutes.",
    ),
)

CERTIFICATE_ALERTS = (
    Alert(
        "CertificateExpiringSoon",
        "warning",
        "certmanager_certificate_expiration_timestamp_seconds - time() < 14 * 86400",
        "1h",
        "Certificate {{ $labels.name }} expires within 14 days",
        "{{ $labels.name }} expires in {{ $value | humanizeDuration }}: cert-manager has failed to renew it.",
    ),
    Alert(
        "CertificateNotReady",
        "warning",
        'certmanager_certificate_ready_status{condition!="True"} == 1',
        "15m",
        "Certificate {{ $labels.name }} is not ready",
        "{{ $labels.name }} has been {{ $labels.condition }} (not True) for 15 minutes: the listener may serve an "
        "old or no certificate.",
    ),
)

# The Gateway's own listeners (Envoy's admin, Envoy Gateway's readiness and stats) are not client traffic.
_CLIENT_LISTENERS = 'envoy_http_conn_manager_prefix!~"admin|eg-.*"'
GATEWAY_ALERTS = (
    Alert(
        "GatewayServerErrors",
        "critical",
        f'sum(rate(envoy_http_downstream_rq_xx{{envoy_response_code_class="5", {_CLIENT_LISTENERS}}}[5m]))'
        f" / sum(rate(envoy_http_downstream_rq_total{{{_CLIENT_LISTENERS}}}[5m])) > 0.05",
        "5m",
        "The Gateway answers over 5% of requests with a 5xx",
        "{{ $value | humanizePercentage }} of client requests got a 5xx from the Gateway, the API's own or the "
        "Gateway's when no API pod answers.",
    ),
)

MONITORING_ALERTS = (
    Alert(
        "ScrapeTargetDown",
        "warning",
        f'up{{namespace=~"{PLATFORM_NAMESPACES}"}} == 0',
        "10m",
        "Prometheus cannot scrape {{ $labels.job }} at {{ $labels.instance }}",
        "{{ $labels.namespace }}/{{ $labels.pod }} has not answered Prometheus for 10 minutes: its alerts are blind.",
    ),
)

# The tiers whose thresholds are the same in every stack, by rule group.
FIXED_TIERS = {
    "workflow-runs": RUN_ALERTS,
    "workflow-postgres": POSTGRES_ALERTS,
    "workflow-rabbitmq": RABBITMQ_ALERTS,
    "workflow-valkey": VALKEY_ALERTS,
    "workflow-autoscaling": AUTOSCALING_ALERTS,
    "workflow-pods": POD_ALERTS,
    "workflow-certificates": CERTIFICATE_ALERTS,
    "workflow-gateway": GATEWAY_ALERTS,
    "workflow-monitoring": MONITORING_ALERTS,
}
# Every alert whose thresholds are the same in every stack (all but the API's, which follow its objectives).
PLATFORM_ALERTS = tuple(alert for alerts in FIXED_TIERS.values() for alert in alerts)


def tiers(objectives: ServiceLevelObjectives) -> dict[str, tuple[Alert, ...]]:
    """Every alert, by rule group."""
    return {"workflow-api": api_alerts(objectives), **FIXED_TIERS}


def alert_rule_groups(objectives: ServiceLevelObjectives) -> list[dict]:
    return [{"name": group, "rules": [alert.rule() for alert in alerts]} for group, alerts in tiers(objectives).items()]
