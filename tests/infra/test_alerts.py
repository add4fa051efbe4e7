"""The alerts every stack installs: valid PromQL on series their exporters really export, one rule
group per tier, every severity routed by Alertmanager, a runbook for every alert, and promtool's verdict: `promtool
check rules` on every stack's rules and `promtool test rules` (tests/infra/rules/) proving each alert fires on a
history that should fire it and stays quiet on one that should not. promtool is Debian's `prometheus` package,
installed by tests/ensure-services.sh."""

import re
import shutil
import subprocess
from pathlib import Path

import prometheus_client
import pytest
import yaml

from app.observability import _FAST_BUCKETS
from components import alerts as alerts_module
from components import data_plane
from components.alerting import CONFIG_FILE, TEAM_RECEIVER
from components.alerts import (
    PLATFORM_ALERTS,
    REPOSITORY_URL,
    RUNBOOKS,
    alert_rule_groups,
    api_alerts,
    prometheus_le,
    tiers,
)
from components.config import API_LATENCY_BUCKETS, ConfigError, ServiceLevelObjectives
from tests.infra.promql import selectors, series_source, unknown_series_or_labels
from tools.mock_stack import PROJECT, ROOT, StackRun, reveal, run_stack

RULE_TESTS = Path(__file__).parent / "rules"
RUNBOOK_FOLDER = ROOT / RUNBOOKS
# The stack whose objectives the promtool unit tests (tests/infra/rules/) are written for.
RULE_TEST_STACK = "prod"

# Whose series each alert reads: the start of series_source() for every series of its expression.
SOURCES = {
    "WorkflowApiAvailabilityBudgetBurn": ("app",),
    "WorkflowApiLatencyBudgetBurn": ("app",),
    "WorkflowRoutingSlow": ("app",),
    "WorkflowReadyStepsStuck": ("app",),
    "WorkflowRelayStalled": ("app",),
    "WorkflowQueueBacklog": ("app",),
    "WorkflowQueueMessagesAging": ("app",),
    "WorkflowLeaseExpiries": ("app",),
    "WorkflowStepsRepublished": ("app",),
    "WorkflowDeadLetters": ("app",),
    "WorkflowStepsFailing": ("app",),
    "PostgresInstanceDown": ("cloudnative-pg", "kube-state-metrics"),
    "PostgresReplicationLagging": ("cloudnative-pg",),
    "PostgresConnectionsNearMax": ("cloudnative-pg",),
    "PostgresStorageNearFull": ("kubelet",),
    "RabbitmqNodeDown": ("kube-state-metrics",),
    "RabbitmqQuorumLost": ("kube-state-metrics",),
    "RabbitmqMemoryAlarm": ("rabbitmq",),
    "RabbitmqDiskAlarm": ("rabbitmq",),
    "RabbitmqUnackedMessagesGrowing": ("rabbitmq",),
    "ValkeyDown": ("redis_exporter",),
    "ValkeyMemoryNearMax": ("redis_exporter",),
    "ValkeyReplicationBroken": ("redis_exporter",),
    "WorkflowAutoscalerAtMax": ("kube-state-metrics",),
    "PodCrashLooping": ("kube-state-metrics",),
    "PodOOMKilled": ("kube-state-metrics",),
    "CertificateExpiringSoon": ("cert-manager",),
    "CertificateNotReady": ("cert-manager",),
    "GatewayServerErrors": ("Envoy",),
    "ScrapeTargetDown": ("Prometheus",),
}
RUNBOOK_SECTIONS = ("## What it means", "## Confirm", "## Mitigate", "## Fix")


def objectives_of(run: StackRun) -> ServiceLevelObjectives:
    def value(key: str) -> float:
        return float(run.config[f"{PROJECT}:{key}"])

    return ServiceLevelObjectives(value("sloAvailability"), value("sloLatencySeconds"), value("sloLatencyTarget"))


# Any stack's objectives do: what these tests read of an alert (its name, series, severity) does not depend on them.
EVERY_ALERT = [alert for alerts in tiers(ServiceLevelObjectives(0.999, 0.5, 0.99)).values() for alert in alerts]
ALERT_NAMES = sorted({alert.name for alert in EVERY_ALERT})


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is missing: run tests/ensure-services.sh (installs Debian's prometheus)")
    return path


def test_every_stack_installs_one_rule_group_per_tier_on_its_own_objectives(stack):
    rule = stack.one("PrometheusRule", "workflow-platform")
    assert rule["metadata"]["namespace"] == "workflow-observability"
    assert rule["spec"]["groups"] == alert_rule_groups(objectives_of(stack))


def test_the_stacks_objectives_differ_and_reach_the_api_alerts(stacks):
    thresholds = {}
    for name, run in stacks.items():
        (api,) = [
            g for g in run.one("PrometheusRule", "workflow-platform")["spec"]["groups"] if g["name"] == "workflow-api"
        ]
        thresholds[name] = api["rules"][0]["expr"]
    assert len(set(thresholds.values())) == len(thresholds)
    # prod: 99.9% available, a 0.1% budget: a page at 14.4x (1h and 5m) or 6x (6h and 30m) the sustainable rate.
    assert re.findall(r"> ([\d.]+)", thresholds["prod"]) == ["0.0144", "0.0144", "0.006", "0.006"]


def test_there_are_at_least_20_alerts_across_every_tier():
    assert len(ALERT_NAMES) >= 20
    assert all(tiers(ServiceLevelObjectives(0.999, 0.5, 0.99)).values())


@pytest.mark.parametrize("alert", EVERY_ALERT, ids=lambda alert: f"{alert.name}-{alert.severity}")
def test_an_alert_reads_series_its_exporter_exports(alert):
    names = [selector.name for selector in selectors(alert.expr)]
    assert names, f"{alert.name} reads no series"
    assert unknown_series_or_labels(alert.expr) == []
    for name in names:
        assert series_source(name).startswith(SOURCES[alert.name]), f"{name}: {series_source(name)}"


def test_the_sources_name_every_alert_and_no_other():
    assert sorted(SOURCES) == ALERT_NAMES


def test_the_alerts_name_the_data_planes_services():
    assert (alerts_module.POSTGRES_CLUSTER, alerts_module.RABBITMQ_CLUSTER) == (
        data_plane.POSTGRES_CLUSTER,
        data_plane.RABBITMQ_CLUSTER,
    )


def test_the_alerts_of_fixed_thresholds_are_every_alert_but_the_apis():
    api = api_alerts(ServiceLevelObjectives(0.999, 0.5, 0.99))
    assert set(PLATFORM_ALERTS) | set(api) == set(EVERY_ALERT) and not set(PLATFORM_ALERTS) & set(api)


@pytest.mark.parametrize("alert", EVERY_ALERT, ids=lambda alert: f"{alert.name}-{alert.severity}")
def test_an_alert_has_a_severity_a_summary_a_description_with_its_figure_and_a_runbook(alert):
    rule = alert.rule()
    assert alert.severity in ("critical", "warning") and rule["labels"] == {"severity": alert.severity}
    annotations = rule["annotations"]
    assert annotations["summary"]
    assert "{{ $value" in annotations["description"] or "{{ $labels" in annotations["description"]
    assert annotations["runbook_url"] == f"{REPOSITORY_URL}docs/runbooks/{alert.name}.md"


@pytest.mark.parametrize("stack_name", ["staging", "prod"])
@pytest.mark.parametrize("severity", sorted({alert.severity for alert in EVERY_ALERT}))
def test_alertmanager_has_a_route_to_the_team_for_every_severity_the_alerts_use(stacks, stack_name, severity):
    # A route of its own, not the fallback: the root route catches alerts without a known severity.
    secret = stacks[stack_name].resource("kubernetes:core/v1:Secret", "alertmanager-config")
    routes = yaml.safe_load(reveal(secret.inputs["stringData"])[CONFIG_FILE])["route"]["routes"]
    assert [route["receiver"] for route in routes if route["matchers"] == [f'severity = "{severity}"']] == [
        TEAM_RECEIVER
    ]


def test_every_alert_has_its_runbook_and_every_runbook_its_alert():
    assert sorted(path.stem for path in RUNBOOK_FOLDER.glob("*.md")) == ALERT_NAMES


@pytest.mark.parametrize("name", ALERT_NAMES)
def test_a_runbook_says_what_the_alert_means_and_how_to_confirm_mitigate_and_fix_it(name):
    runbook = (RUNBOOK_FOLDER / f"{name}.md").read_text()
    assert runbook.startswith(f"# {name}\n")
    positions = [runbook.find(section) for section in RUNBOOK_SECTIONS]
    assert -1 not in positions and positions == sorted(positions), f"sections in order: {RUNBOOK_SECTIONS}"
    assert "```" in runbook, "commands to run"


def test_the_latency_objective_may_only_be_a_bucket_bound_of_the_apis_histogram():
    assert API_LATENCY_BUCKETS == _FAST_BUCKETS


def test_the_latency_sli_reads_the_bucket_label_as_the_app_writes_it():
    registry = prometheus_client.CollectorRegistry()
    histogram = prometheus_client.Histogram("latency_seconds", "", buckets=_FAST_BUCKETS, registry=registry)
    histogram.observe(0.1)
    written = set(re.findall(r'le="([^"]+)"', prometheus_client.generate_latest(registry).decode()))
    assert {prometheus_le(bound) for bound in API_LATENCY_BUCKETS} <= written
    assert prometheus_le(1) == "1.0"


def test_a_latency_threshold_between_bucket_bounds_is_refused_naming_the_key_and_the_bounds():
    with pytest.raises(ConfigError) as raised:
        run_stack("dev", {"sloLatencySeconds": "0.3"})
    message = str(raised.value)
    assert f"{PROJECT}:sloLatencySeconds = 0.3 is not allowed: must be one of the API latency histogram's" in message
    assert "0.25, 0.5, 1, 2.5" in message


@pytest.mark.parametrize(
    ("key", "value"), [("sloAvailability", "1"), ("sloAvailability", "99.9"), ("sloLatencyTarget", "0")]
)
def test_an_objective_that_is_no_fraction_is_refused_naming_the_key(key, value):
    with pytest.raises(ConfigError, match=rf"{PROJECT}:{key} = {value} is not allowed: a fraction strictly between 0"):
        run_stack("dev", {key: value})


def test_promtool_accepts_the_rules_of_every_stack(stack, tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump(stack.one("PrometheusRule", "workflow-platform")["spec"]))
    result = subprocess.run([promtool(), "check", "rules", str(rules)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def rule_tests() -> list[dict]:
    return [test for path in sorted(RULE_TESTS.glob("*.yaml")) for test in yaml.safe_load(path.read_text())["tests"]]


def test_promtool_proves_every_alert_fires_when_it_should_and_only_then(stacks, tmp_path):
    # The rules as the prod stack installs them: the unit tests' figures follow prod's objectives.
    spec = stacks[RULE_TEST_STACK].one("PrometheusRule", "workflow-platform")["spec"]
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(spec))
    for path in RULE_TESTS.glob("*.yaml"):
        shutil.copy(path, tmp_path / path.name)
    files = sorted(path.name for path in RULE_TESTS.glob("*.yaml"))
    result = subprocess.run([promtool(), "test", "rules", *files], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_and_severity_has_a_firing_history_and_every_alert_a_quiet_one():
    fired, quiet = set(), set()
    for test in rule_tests():
        for case in test["alert_rule_test"]:
            if not case["exp_alerts"]:
                quiet.add(case["alertname"])
            for expected in case["exp_alerts"]:
                assert set(expected["exp_annotations"]) == {"summary", "description", "runbook_url"}
                fired.add((case["alertname"], expected["exp_labels"]["severity"]))
    assert fired == {(alert.name, alert.severity) for alert in EVERY_ALERT}
    assert quiet == set(ALERT_NAMES)
