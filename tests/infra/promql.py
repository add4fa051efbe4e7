"""PromQL as the tests read it: the series an expression selects, and whether some process really exports them:
the app's own processes or a third-party exporter the platform runs (tests/infra/exporter_series.py)."""

import promql_parser
from prometheus_client import Counter, Gauge, Histogram

from app.observability import metrics
from tests.infra.exporter_series import third_party_series

SUFFIXES = {Counter: ("_total",), Histogram: ("_bucket", "_count", "_sum"), Gauge: ("",)}

APP_SOURCE = "app: app/observability.py"

# The labels Prometheus attaches to every series it scrapes from a monitor's target, and `stack`, which the
# platform's monitors add through relabelings.
TARGET_LABELS = {"job", "instance", "namespace", "pod", "service", "container", "endpoint", "stack"}


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


def series_source(name: str) -> str:
    """Where a series comes from, e.g. "app: app/observability.py" or "redis_exporter v1.88.0: exporter/info.go";
    a series no process exports raises KeyError."""
    if name in exported_series():
        return APP_SOURCE
    return str(third_party_series()[name])


def selectors(expr: str) -> list[promql_parser.VectorSelector]:
    """The series selectors of an expression; a PromQL syntax error raises."""
    found = []

    def visit(node) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            found.append(node)

    promql_parser.walk(promql_parser.parse(expr), pre_visit=visit)
    return found


def unknown_series_or_labels(expr: str) -> list[str]:
    """What an expression reads that no process exports: series, or labels an app series does not carry.

    A third-party series is checked by name only: its labels are documented unevenly (prose, tables, sample
    expositions), too unevenly to parse them honestly."""
    app_series, third_party = exported_series(), third_party_series()
    problems = []
    for selector in selectors(expr):
        if selector.name in third_party and selector.name not in app_series:
            continue
        if selector.name not in app_series:
            problems.append(f"series {selector.name}")
            continue
        labels = {matcher.name for matcher in selector.matchers.matchers} - app_series[selector.name] - TARGET_LABELS
        problems.extend(f"label {label} on {selector.name}" for label in sorted(labels))
    return problems
