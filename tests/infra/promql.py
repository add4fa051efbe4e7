"""PromQL as the tests read it: the series an expression selects, and the series the app's processes export."""

import promql_parser
from prometheus_client import Counter, Gauge, Histogram

from app.observability import metrics

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
    """The series selectors of an expression; a PromQL syntax error raises."""
    found = []

    def visit(node) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            found.append(node)

    promql_parser.walk(promql_parser.parse(expr), pre_visit=visit)
    return found


def unknown_series_or_labels(expr: str) -> list[str]:
    """What an expression reads that no process exports: series, or labels a series does not carry."""
    series = exported_series()
    problems = []
    for selector in selectors(expr):
        if selector.name not in series:
            problems.append(f"series {selector.name}")
            continue
        labels = {matcher.name for matcher in selector.matchers.matchers} - series[selector.name]
        problems.extend(f"label {label} on {selector.name}" for label in sorted(labels))
    return problems
