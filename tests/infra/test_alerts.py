"""The alerts every stack installs: valid PromQL, on series the platform's processes really export, with the
labels those series really carry."""

import promql_parser
import pytest
from prometheus_client import Counter, Gauge, Histogram

from app.observability import metrics
from components.alerts import PLATFORM_ALERTS

SUFFIXES = {Counter: ("_total",), Histogram: ("_bucket", "_count", "_sum"), Gauge: ("",)}


def exported_series() -> dict[str, set[str]]:
    """Every series name the app's metrics produce, with the labels each carries."""
    series: dict[str, set[str]] = {}
    for collector in vars(metrics).values():
        kind = next((kind for kind in SUFFIXES if isinstance(collector, kind)), None)
        if kind is None:
            continue
        base = collector._name  # the family name, without the _total a Counter's samples add back
        for suffix in SUFFIXES[kind]:
            series[base + suffix] = set(collector._labelnames) | ({"le"} if suffix == "_bucket" else set())
    return series


def selectors(expr: str) -> list[promql_parser.VectorSelector]:
    found = []

    def visit(node) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            found.append(node)

    promql_parser.walk(promql_parser.parse(expr), pre_visit=visit)
    return found


def test_every_stack_installs_the_platform_alerts(stack):
    rule = stack.one("PrometheusRule", "workflow-platform")
    assert rule["metadata"]["namespace"] == "workflow-observability"
    (group,) = rule["spec"]["groups"]
    assert [r["alert"] for r in group["rules"]] == [alert.name for alert in PLATFORM_ALERTS]
    assert all(r["labels"]["severity"] in ("warning", "critical") for r in group["rules"])


@pytest.mark.parametrize("alert", PLATFORM_ALERTS, ids=lambda alert: alert.name)
def test_an_alert_reads_series_the_platform_exports_with_their_labels(alert):
    series = exported_series()
    used = selectors(alert.expr)
    assert used, f"{alert.name} reads no series"
    for selector in used:
        assert selector.name in series, f"{alert.name} reads {selector.name}, which no process exports"
        labels = {matcher.name for matcher in selector.matchers.matchers}
        assert labels <= series[selector.name], f"{alert.name} matches labels {labels - series[selector.name]}"
