"""The Grafana dashboards every stack installs: provisioned for Grafana's sidecar, each with the datasource, stack and
namespace variables, and every panel reading series some exporter really exports, narrowed to the chosen stack and
namespaces."""

import json
import re
from pathlib import Path

import promql_parser
import pytest

from components.alerts import prometheus_le
from components.observability import DASHBOARDS, GRAFANA_DASHBOARD_LABEL
from tests.infra.promql import selectors, series_source, unknown_series_or_labels
from tools.mock_stack import PROJECT

DASHBOARD_FILES = sorted(DASHBOARDS.glob("*.json"))
# Series scraped by kube-prometheus-stack's own monitors, not the platform's: they carry no `stack` label.
WITHOUT_STACK_LABEL = ("kube-state-metrics", "cAdvisor")
# Grafana's built-in interval variables, which it replaces by a duration.
INTERVALS = re.compile(r"\$(__rate_interval|__interval|__range)\b")
# A target that reads no series but draws one of the stack's objectives, a constant of the dashboard.
OBJECTIVE_LINE = re.compile(r"vector\((1 - )?\$(slo_\w+)\)")


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def panels(dashboard: dict) -> list[dict]:
    """The panels that draw something (rows only group them)."""
    return [panel for panel in dashboard["panels"] if panel["type"] != "row"]


def variables(dashboard: dict) -> dict[str, dict]:
    return {variable["name"]: variable for variable in dashboard["templating"]["list"]}


def constants(dashboard: dict) -> dict[str, str]:
    """The dashboard's constant variables: name -> value."""
    return {name: found["query"] for name, found in variables(dashboard).items() if found["type"] == "constant"}


def as_promql(expr: str, dashboard: dict) -> str:
    """A panel's query as Prometheus receives it: `${var}` written `$var`, intervals and the dashboard's constants
    substituted; the other template variables stay inside the label values they fill in."""
    expr = INTERVALS.sub("5m", re.sub(r"\$\{(\w+)\}", r"$\1", expr))
    return re.sub(r"\$(\w+)", lambda name: constants(dashboard).get(name[1], name[0]), expr)


TARGETS = [
    (f"{path.stem}: {panel['title']} [{target['refId']}]", target["expr"], dashboard)
    for path in DASHBOARD_FILES
    for dashboard in [load(path)]
    for panel in panels(dashboard)
    for target in panel["targets"]
]
PANEL_QUERIES = [
    pytest.param(as_promql(expr, dashboard), id=name)
    for name, expr, dashboard in TARGETS
    if not OBJECTIVE_LINE.fullmatch(expr)
]
OBJECTIVE_LINES = [
    pytest.param(expr, dashboard, id=name) for name, expr, dashboard in TARGETS if OBJECTIVE_LINE.fullmatch(expr)
]


def filters(selector, label: str, variable: str, ops: tuple[promql_parser.MatchOp, ...]) -> bool:
    """Whether a selector matches `label` against the template variable, with one of `ops`."""
    return any(m.name == label and m.value == variable and m.op in ops for m in selector.matchers.matchers)


def described(selector) -> str:
    """A series and where it comes from, for the assertion messages."""
    try:
        return f"{selector.name} ({series_source(selector.name)})"
    except KeyError:
        return f"{selector.name} (no exporter known)"


def test_there_are_at_least_three_dashboards():
    assert len(DASHBOARD_FILES) >= 3


def test_every_dashboard_has_its_own_uid():
    uids = [load(path)["uid"] for path in DASHBOARD_FILES]
    assert len(set(uids)) == len(uids), uids


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda path: path.stem)
def test_every_stack_gives_grafanas_sidecar_the_dashboard(stack, path):
    config_map = stack.one("ConfigMap", f"dashboard-{path.stem}")
    assert config_map["metadata"]["namespace"] == "workflow-observability"
    assert config_map["metadata"]["labels"][GRAFANA_DASHBOARD_LABEL] == "1"
    provisioned, committed = json.loads(config_map["data"][path.name]), load(path)
    assert (provisioned["uid"], provisioned["panels"]) == (committed["uid"], committed["panels"])


def test_the_platform_dashboard_draws_the_stacks_objectives(stack):
    config_map = stack.one("ConfigMap", "dashboard-workflow-platform")
    provisioned = constants(json.loads(config_map["data"]["workflow-platform.json"]))
    availability, latency_seconds, latency_target = (
        float(stack.config[f"{PROJECT}:{key}"]) for key in ("sloAvailability", "sloLatencySeconds", "sloLatencyTarget")
    )
    assert float(provisioned["slo_availability"]) == availability
    assert float(provisioned["slo_latency_seconds"]) == latency_seconds
    assert float(provisioned["slo_latency_target"]) == latency_target
    assert provisioned["slo_latency_le"] == prometheus_le(latency_seconds)


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda path: path.stem)
def test_a_dashboard_lets_one_choose_the_prometheus_the_stack_and_the_namespaces(path):
    found = variables(load(path))
    assert (found["datasource"]["type"], found["datasource"]["query"]) == ("datasource", "prometheus")
    for name in ("stack", "namespace"):
        assert found[name]["type"] == "query"
        assert found[name]["datasource"]["uid"] == "${datasource}"
    assert not found["stack"].get("multi"), 'queries match stack="$stack": one stack at a time'
    assert '{stack="$stack"}' in found["namespace"]["query"], "the namespaces offered are the chosen stack's"


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda path: path.stem)
def test_a_dashboards_variables_list_values_of_series_that_exist(path):
    for name in ("stack", "namespace"):
        query = variables(load(path))[name]["query"]
        series = re.fullmatch(r"label_values\((.+), \w+\)", query).group(1)
        assert unknown_series_or_labels(series) == [], f"{name}: {query}"


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda path: path.stem)
def test_every_panel_of_a_dashboard_queries_the_chosen_prometheus(path):
    for panel in panels(load(path)):
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], f"{panel['title']} has no query"
        assert all(target["datasource"]["uid"] == "${datasource}" for target in panel["targets"]), panel["title"]


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda path: path.stem)
def test_a_dashboards_panels_tile_the_grid_without_overlapping(path):
    taken: dict[tuple[int, int], str] = {}
    for panel in load(path)["panels"]:
        place = panel["gridPos"]
        assert place["x"] + place["w"] <= 24, panel["title"]
        for x in range(place["x"], place["x"] + place["w"]):
            for y in range(place["y"], place["y"] + place["h"]):
                assert (x, y) not in taken, f"{panel['title']} overlaps {taken[x, y]}"
                taken[x, y] = panel["title"]


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda path: path.stem)
def test_every_panel_of_a_dashboard_states_its_unit(path):
    assert [panel["title"] for panel in panels(load(path)) if not panel["fieldConfig"]["defaults"].get("unit")] == []


@pytest.mark.parametrize("expr", PANEL_QUERIES)
def test_a_panel_query_reads_series_an_exporter_exports(expr):
    assert selectors(expr), "reads no series"
    assert unknown_series_or_labels(expr) == [], [described(selector) for selector in selectors(expr)]


@pytest.mark.parametrize(("expr", "dashboard"), OBJECTIVE_LINES)
def test_an_objective_line_draws_a_constant_of_its_dashboard(expr, dashboard):
    assert OBJECTIVE_LINE.fullmatch(expr)[2] in constants(dashboard)
    assert selectors(as_promql(expr, dashboard)) == []


@pytest.mark.parametrize("expr", PANEL_QUERIES)
def test_a_panel_query_reads_only_the_chosen_namespaces(expr):
    # Every series the dashboards read carries `namespace`: the exporters' own (kube-state-metrics, cAdvisor) or the
    # target's, which Prometheus adds to everything it scrapes.
    unfiltered = [
        described(selector)
        for selector in selectors(expr)
        if not filters(selector, "namespace", "$namespace", (promql_parser.MatchOp.Equal, promql_parser.MatchOp.Re))
    ]
    assert unfiltered == [], 'not filtered by namespace=~"$namespace"'


@pytest.mark.parametrize("expr", PANEL_QUERIES)
def test_a_panel_query_reads_only_the_chosen_stack_of_what_the_platform_scrapes(expr):
    scraped_by_the_platform = [
        selector for selector in selectors(expr) if not series_source(selector.name).startswith(WITHOUT_STACK_LABEL)
    ]
    unfiltered = [
        described(selector)
        for selector in scraped_by_the_platform
        if not filters(selector, "stack", "$stack", (promql_parser.MatchOp.Equal,))
    ]
    assert unfiltered == [], 'not filtered by stack="$stack"'


def test_every_monitor_labels_what_it_scrapes_with_the_stack(stack):
    stack_label = {"action": "replace", "targetLabel": "stack", "replacement": stack.stack}
    monitors = stack.kind("ServiceMonitor") + stack.kind("PodMonitor")
    assert monitors
    for monitor in monitors:
        endpoints = monitor["spec"].get("endpoints") or monitor["spec"]["podMetricsEndpoints"]
        for endpoint in endpoints:
            assert stack_label in endpoint["relabelings"], monitor["metadata"]["name"]
