"""The alerts and the dashboard every stack installs: valid PromQL, on series the platform's processes really
export, with the labels those series really carry."""

import json

import pytest

from components.alerts import PLATFORM_ALERTS
from components.observability import DASHBOARDS
from tests.infra.promql import selectors, unknown_series_or_labels

DASHBOARD_TARGETS = [
    (f"{path.stem}: {panel['title']}", target["expr"])
    for path in sorted(DASHBOARDS.glob("*.json"))
    for panel in json.loads(path.read_text())["panels"]
    for target in panel["targets"]
]


def test_every_stack_installs_the_platform_alerts(stack):
    rule = stack.one("PrometheusRule", "workflow-platform")
    assert rule["metadata"]["namespace"] == "workflow-observability"
    (group,) = rule["spec"]["groups"]
    assert [r["alert"] for r in group["rules"]] == [alert.name for alert in PLATFORM_ALERTS]
    assert all(r["labels"]["severity"] in ("warning", "critical") for r in group["rules"])


@pytest.mark.parametrize("alert", PLATFORM_ALERTS, ids=lambda alert: alert.name)
def test_an_alert_reads_series_the_platform_exports_with_their_labels(alert):
    assert selectors(alert.expr), f"{alert.name} reads no series"
    assert unknown_series_or_labels(alert.expr) == []


def test_every_stack_gives_grafana_the_platform_dashboard(stack):
    config_map = stack.one("ConfigMap", "dashboard-workflow-platform")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(config_map["data"]["workflow-platform.json"])
    assert dashboard["uid"] == "workflow-platform" and dashboard["panels"]


@pytest.mark.parametrize(("panel", "expr"), DASHBOARD_TARGETS, ids=[panel for panel, _ in DASHBOARD_TARGETS])
def test_a_dashboard_panel_reads_series_the_platform_exports(panel, expr):
    assert selectors(expr), f"{panel} reads no series"
    assert unknown_series_or_labels(expr) == []
