"""The catalogue of exported series the alerts and dashboards are checked against: parsed from each exporter's own
source, so it knows their real names, and only those."""

import pytest

from tests.infra.exporter_series import PARSERS, series_by_exporter
from tests.infra.promql import series_source, unknown_series_or_labels

REAL_NAMES = {
    "rabbitmq_alarms_memory_used_watermark": "prometheus_rabbitmq_alarm_metrics_collector.erl",
    "rabbitmq_queue_messages_ready": "rabbitmq-server HEAD: deps/rabbitmq_prometheus/metrics.md",
    "rabbitmq_detailed_queue_messages_unacked": "as /metrics/detailed",
    "redis_up": "redis_exporter v1.88.0: exporter/exporter.go",
    "redis_memory_used_bytes": "redis_exporter v1.88.0: exporter/exporter.go",
    "redis_connected_slaves": "redis_exporter v1.88.0: exporter/exporter.go",
    "redis_commands_latencies_usec_bucket": "redis_exporter v1.88.0: exporter/latency.go",
    "kube_pod_container_status_restarts_total": "kube-state-metrics v2.20.0: docs/metrics/workload/pod-metrics.md",
    "kube_deployment_status_replicas_available": "docs/metrics/workload/deployment-metrics.md",
    "certmanager_certificate_expiration_timestamp_seconds": "cert-manager v1.21.1: pkg/metrics/certificates_test.go",
    "certmanager_http_acme_client_request_count": "cert-manager v1.21.1: pkg/metrics/metrics.go",
    "keda_scaler_active": "keda v2.20.2: pkg/metricscollector/prommetrics.go",
    "keda_scaler_detail_errors_total": "keda v2.20.2: pkg/metricscollector/prommetrics.go",
    "cnpg_collector_up": "cloudnative-pg v1.30.0: docs/src/monitoring.md",
    "cnpg_pg_replication_lag": "cloudnative-pg v1.30.0: config/manager/default-monitoring.yaml",
    "cnpg_backends_total": "cloudnative-pg v1.30.0: config/manager/default-monitoring.yaml",
    "envoy_cluster_upstream_rq_xx": "cluster_manager/cluster_stats.html",
    "envoy_http_downstream_rq_time_bucket": "http_conn_man/stats.html",
    "up": "prometheus.io",
    "container_memory_working_set_bytes": "cAdvisor",
    "kubelet_volume_stats_available_bytes": "volume_stats.go",
    "workflow_queue_depth": "app: app/observability.py",
}

MISSPELT = [
    "rabbitmq_alarms_memory_used_watermarks",
    "redis_upp",
    "kube_pod_container_status_restart_total",
    "certmanager_certificate_expiration_timestamp",
    "keda_scaler_is_active",
    "cnpg_collector_upp",
    "cnpg_pg_replication_lags",
    "envoy_cluster_upstream_rq_5xx",
    "workflow_queue_depths",
]


@pytest.mark.parametrize("exporter", [*PARSERS, "envoy", "prometheus", "kubelet"])
def test_every_source_contributes_series(exporter):
    assert series_by_exporter()[exporter]


@pytest.mark.parametrize(("name", "source"), REAL_NAMES.items(), ids=list(REAL_NAMES))
def test_the_catalogue_knows_a_real_series_and_names_its_source(name, source):
    assert unknown_series_or_labels(name) == []
    assert source in series_source(name)


@pytest.mark.parametrize("name", MISSPELT)
def test_the_catalogue_rejects_a_misspelt_series(name):
    assert unknown_series_or_labels(f"rate({name}[5m])") == [f"series {name}"]
    with pytest.raises(KeyError):
        series_source(name)


def test_a_histogram_is_known_by_its_samples_not_by_its_family_name():
    assert unknown_series_or_labels("redis_commands_latencies_usec") == ["series redis_commands_latencies_usec"]
    assert unknown_series_or_labels("keda_scaler_http_request_duration_seconds") != []
    assert unknown_series_or_labels("keda_scaler_http_request_duration_seconds_bucket") == []


def test_go_collectors_join_namespace_subsystem_and_name():
    assert "keda_scaled_object_paused" in series_by_exporter()["keda"]
    assert "certmanager_http_acme_client_request_count" in series_by_exporter()["cert-manager"]


def test_only_cnpg_counter_and_gauge_columns_become_series():
    cnpg = series_by_exporter()["cloudnative-pg"]
    assert "cnpg_backends_total" in cnpg
    assert not any(name.startswith("cnpg_backends_datname") for name in cnpg)  # a LABEL column


def test_an_app_series_keeps_its_labels_checked_but_may_carry_the_target_labels():
    query = 'workflow_queue_depth{queue="runs", namespace="workflow", pod="w-1", job="worker", stack="prod"}'
    assert unknown_series_or_labels(query) == []
    assert unknown_series_or_labels('workflow_queue_depth{tenant="a"}') == ["label tenant on workflow_queue_depth"]


def test_a_third_party_series_is_checked_by_name_only():
    assert unknown_series_or_labels('redis_up{anything="x"}') == []
