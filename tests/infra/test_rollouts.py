"""Blue-green for the API on Argo Rollouts: where the stack file says blueGreen, the API is a Rollout between an active
and a preview Service, promoted only once a smoke Job and a health analysis on Prometheus pass the new version, judged
again on live traffic, with the old version kept for the stack's rollback window; elsewhere a Deployment rolls out.

Argo Rollouts aborts a rollout whose analysis fails or errors (docs/features/bluegreen.md, v1.9): before promotion the
active Service never leaves the old version; after it, the controller points the active Service back at the old
ReplicaSet, still running for `scaleDownDelaySeconds`."""

from __future__ import annotations

import re
import subprocess
from urllib.parse import urlsplit

import pytest
import yaml

from components.charts import ARGO_ROLLOUTS
from components.config import ConfigError
from components.labels import selector_labels
from tests.infra.chart_sources import pod_security_violations, pod_specs
from tests.infra.conftest import TEST_RECEIVER
from tests.infra.promql import selectors, unknown_series_or_labels
from tests.infra.test_alerts import promtool
from tests.infra.test_charts import install, selected_pods
from tests.infra.test_network import API, INTERNET, PROMETHEUS, Pod, allowed
from tests.infra.validation import validate
from tests.infra.workloads import api_resource, api_workload
from tools.mock_stack import HELM_CHART, PROJECT, STACKS, StackRun, reveal, run_stack, stack_config

BLUE_GREEN_STACKS = [s for s in STACKS if stack_config(s)[f"{PROJECT}:apiDeployStrategy"] == "blueGreen"]
ROLLOUT = "argoproj.io/v1alpha1"
SMOKE = Pod("smoke", "workflow", selector_labels("smoke"))


@pytest.fixture(params=BLUE_GREEN_STACKS)
def blue_green(request, stacks) -> StackRun:
    return stacks[request.param]


def setting(run: StackRun, key: str) -> str:
    return run.config[f"{PROJECT}:{key}"]


def strategy(run: StackRun) -> dict:
    return run.one("Rollout", "workflow-api")["spec"]["strategy"]["blueGreen"]


def templates(run: StackRun) -> dict[str, dict]:
    return {t["metadata"]["name"]: t for t in run.kind("AnalysisTemplate")}


def prometheus_metrics(run: StackRun) -> list[dict]:
    return [
        metric
        for template in run.kind("AnalysisTemplate")
        for metric in template["spec"]["metrics"]
        if "prometheus" in metric["provider"]
    ]


def as_sent(metric: dict, pod_template_hash: str = "6d4b9c7f58") -> str:
    """A metric's query as Argo Rollouts sends it to Prometheus: with the analysis' arguments substituted."""
    return metric["provider"]["prometheus"]["query"].replace("{{args.hash}}", pod_template_hash)


def smoke_pod(run: StackRun) -> dict:
    (pod,) = [spec for template in run.kind("AnalysisTemplate") for spec in pod_specs(template)]
    return pod


# Which stacks


def test_staging_and_prod_deploy_the_api_blue_green_and_dev_rolls_it_out():
    assert BLUE_GREEN_STACKS == ["staging", "prod"]


def test_a_rolling_stack_runs_the_api_as_a_deployment_and_no_rollout(stacks):
    dev = stacks["dev"]
    assert api_workload(dev)["kind"] == "Deployment"
    assert dev.kind("Rollout") == [] and dev.kind("AnalysisTemplate") == []


def test_a_blue_green_stack_runs_the_api_as_a_rollout_and_no_deployment(blue_green):
    assert api_workload(blue_green)["kind"] == "Rollout"
    assert [d["metadata"]["name"] for d in blue_green.kind("Deployment")] == ["workflow-worker"]


def test_the_rollout_runs_the_pod_template_the_deployment_would(stacks):
    rolling = run_stack("prod", {"apiDeployStrategy": "rolling"}, secrets=TEST_RECEIVER)
    deployment = rolling.one("Deployment", "workflow-api")["spec"]
    rollout = stacks["prod"].one("Rollout", "workflow-api")["spec"]
    assert rollout["template"] == deployment["template"]
    assert rollout["selector"] == deployment["selector"]
    assert "replicas" not in rollout  # the autoscaler's


def test_the_rollouts_and_analysis_templates_pass_their_crd_schemas(blue_green):
    for manifest in [*blue_green.kind("Rollout"), *blue_green.kind("AnalysisTemplate")]:
        verdict = validate(manifest)
        assert (verdict.checked_by, verdict.errors) == ("crd", ()), manifest["metadata"]["name"]


# Services


@pytest.mark.parametrize("route", ["api", "ws"])
def test_the_active_service_is_the_one_the_gateway_routes_to(blue_green, route):
    for rule in blue_green.one("HTTPRoute", route)["spec"]["rules"]:
        assert [ref["name"] for ref in rule["backendRefs"]] == [strategy(blue_green)["activeService"]]


@pytest.mark.parametrize("role", ["activeService", "previewService"])
def test_the_active_and_preview_services_exist_and_select_the_rollouts_pods(blue_green, role):
    service = blue_green.one("Service", strategy(blue_green)[role])
    rollout = blue_green.one("Rollout", "workflow-api")
    assert service["metadata"]["namespace"] == rollout["metadata"]["namespace"]
    assert service["spec"]["selector"] == rollout["spec"]["selector"]["matchLabels"]
    assert service["spec"]["selector"].items() <= rollout["spec"]["template"]["metadata"]["labels"].items()
    assert [(p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [(8000, "http")]


def test_the_active_and_preview_services_are_two(blue_green):
    assert strategy(blue_green)["activeService"] == "workflow-api"
    assert strategy(blue_green)["previewService"] == "workflow-api-preview"


# Analyses


def test_promotion_is_automatic_once_the_smoke_test_and_the_health_analysis_pass(blue_green):
    blue = strategy(blue_green)
    assert blue["autoPromotionEnabled"] is True
    names = [t["templateName"] for t in blue["prePromotionAnalysis"]["templates"]]
    assert names == ["workflow-api-smoke", "workflow-api-health"]


def test_the_health_analysis_runs_again_after_promotion(blue_green):
    names = [t["templateName"] for t in strategy(blue_green)["postPromotionAnalysis"]["templates"]]
    assert names == ["workflow-api-health"]


@pytest.mark.parametrize("analysis", ["prePromotionAnalysis", "postPromotionAnalysis"])
def test_every_analysis_names_templates_that_exist_in_the_rollouts_namespace(blue_green, analysis):
    existing = templates(blue_green)
    for reference in strategy(blue_green)[analysis]["templates"]:
        template = existing[reference["templateName"]]
        assert template["metadata"]["namespace"] == "workflow"
        assert "clusterScope" not in reference


@pytest.mark.parametrize("analysis", ["prePromotionAnalysis", "postPromotionAnalysis"])
def test_the_analyses_judge_the_new_versions_pods_by_their_template_hash(blue_green, analysis):
    assert strategy(blue_green)[analysis]["args"] == [{"name": "hash", "valueFrom": {"podTemplateHashValue": "Latest"}}]
    assert templates(blue_green)["workflow-api-health"]["spec"]["args"] == [{"name": "hash"}]


def test_the_health_queries_parse_and_read_only_series_the_api_exports(blue_green):
    metrics = prometheus_metrics(blue_green)
    assert len(metrics) == 2
    for metric in metrics:
        query = as_sent(metric)
        assert selectors(query), metric["name"]
        assert unknown_series_or_labels(query) == [], metric["name"]


def test_the_health_queries_select_the_pods_of_the_new_replica_set_only(blue_green):
    # Argo Rollouts names a ReplicaSet <rollout>-<pod template hash>, and its pods <replica set>-<suffix>.
    for metric in prometheus_metrics(blue_green):
        for selector in selectors(as_sent(metric, "6d4b9c7f58")):
            matchers = {m.name: m for m in selector.matchers.matchers}
            pattern = matchers["pod"].value
            assert re.fullmatch(pattern, "workflow-api-6d4b9c7f58-x2kqp")
            assert not re.fullmatch(pattern, "workflow-api-5f7c8d9b66-x2kqp")
            assert matchers["namespace"].value == "workflow"


NEW, OLD, QUIET = "6d4b9c7f58", "5f7c8d9b66", "7b8c9d0e1f"
RUNS_ROUTE = "/v1/workflows/{name}/runs"


def _series(name: str, pod_template_hash: str, values: str, **labels: str) -> dict:
    labels = {"namespace": "workflow", "pod": f"workflow-api-{pod_template_hash}-x2kqp", **labels}
    return {"series": name + "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}", "values": values}


# Every 15 s, as Prometheus scrapes: the new pods answer 9 POSTs with 201 and 1 with 500 (and readiness 503s, which
# are not the version's answers); the old pods only 500s; the quiet version's counters stand still.
SERIES_HISTORY = [
    *(
        _series("workflow_http_request_duration_seconds_count", NEW, values, method="POST", route=RUNS_ROUTE, status=s)
        for s, values in (("201", "0+9x20"), ("500", "0+1x20"))
    ),
    _series(
        "workflow_http_request_duration_seconds_count", NEW, "0+50x20", method="GET", route="/readyz", status="503"
    ),
    _series(
        "workflow_http_request_duration_seconds_count", OLD, "0+100x20", method="POST", route=RUNS_ROUTE, status="500"
    ),
    _series(
        "workflow_http_request_duration_seconds_count", QUIET, "5+0x20", method="POST", route=RUNS_ROUTE, status="201"
    ),
    # The new pods' POSTs all take 25-50 ms; the old pods' over 5 s.
    *(
        _series("workflow_http_request_duration_seconds_bucket", NEW, values, method="POST", route=RUNS_ROUTE, le=le)
        for le, values in (("0.025", "0+0x20"), ("0.05", "0+10x20"), ("+Inf", "0+10x20"))
    ),
    *(
        _series("workflow_http_request_duration_seconds_bucket", OLD, values, method="POST", route=RUNS_ROUTE, le=le)
        for le, values in (("5", "0+0x20"), ("+Inf", "0+10x20"))
    ),
]
# What each query answers for each version: the new pods' own ratio (1 in 10) and p99 (interpolated in the 25-50 ms
# bucket), and 0 for a version with no request in the window.
EXPECTED = {"5xx-ratio": {NEW: 0.1, QUIET: 0}, "post-p99-seconds": {NEW: 0.04975, QUIET: 0}}


def test_promtool_evaluates_the_health_queries_on_the_new_versions_pods_only(stacks, tmp_path):
    metrics = {m["name"]: m for m in prometheus_metrics(stacks["prod"])}
    expressions = [
        {"expr": as_sent(metrics[name], version), "eval_time": "4m", "exp_samples": [{"labels": "{}", "value": value}]}
        for name, by_version in EXPECTED.items()
        for version, value in by_version.items()
    ]
    (tmp_path / "none.yaml").write_text("groups: []\n")
    test = {
        "rule_files": ["none.yaml"],
        "evaluation_interval": "15s",
        "tests": [{"interval": "15s", "input_series": SERIES_HISTORY, "promql_expr_test": expressions}],
    }
    (tmp_path / "queries.yaml").write_text(yaml.safe_dump(test, sort_keys=False))
    result = subprocess.run([promtool(), "test", "rules", "queries.yaml"], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_health_thresholds_are_the_stack_files(blue_green):
    conditions = {m["name"]: m["successCondition"] for m in prometheus_metrics(blue_green)}
    assert conditions == {
        "5xx-ratio": f"result[0] <= {float(setting(blue_green, 'rolloutMax5xxRatio'))}",
        "post-p99-seconds": f"result[0] <= {float(setting(blue_green, 'rolloutMaxPostP99Seconds'))}",
    }


def test_the_latency_threshold_is_on_post_requests(blue_green):
    (p99,) = [m for m in prometheus_metrics(blue_green) if m["name"] == "post-p99-seconds"]
    query = as_sent(p99)
    assert query.startswith("(histogram_quantile(0.99, ")
    ((selector),) = selectors(query)
    assert ("method", "POST") in {(m.name, m.value) for m in selector.matchers.matchers}


def test_one_measurement_over_a_threshold_fails_the_analysis(blue_green):
    # Without a failureCondition, a measurement that misses the successCondition is a failure (never Inconclusive,
    # which would pause the rollout for a human); with failureLimit 0 the first one fails the analysis.
    for metric in prometheus_metrics(blue_green):
        assert metric["failureLimit"] == 0 and "failureCondition" not in metric, metric["name"]


def test_the_health_analysis_asks_the_prometheus_keda_reads(blue_green):
    keda = blue_green.one("ScaledObject", "workflow-api")["spec"]["triggers"]
    (address,) = [t["metadata"]["serverAddress"] for t in keda if t["type"] == "prometheus"]
    assert {m["provider"]["prometheus"]["address"] for m in prometheus_metrics(blue_green)} == {address}


# The smoke Job


def test_the_smoke_job_runs_smoke_against_the_preview_services_dns_name_and_port(blue_green):
    (container,) = smoke_pod(blue_green)["containers"]
    args = container["args"]
    assert args[0] == "smoke"
    url = urlsplit(args[args.index("--url") + 1])
    preview = blue_green.one("Service", strategy(blue_green)["previewService"])
    assert url.hostname == f"{preview['metadata']['name']}.{preview['metadata']['namespace']}.svc.cluster.local"
    assert url.port in [p["port"] for p in preview["spec"]["ports"]]


def test_the_smoke_job_reads_the_bootstrap_api_key_from_its_mounted_file(blue_green):
    pod = smoke_pod(blue_green)
    (container,) = pod["containers"]
    key_file = container["args"][container["args"].index("--api-key-file") + 1]
    (mount,) = [m for m in container["volumeMounts"] if key_file.startswith(m["mountPath"] + "/")]
    assert mount["readOnly"] is True
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    (source,) = volume["projected"]["sources"]
    (item,) = source["secret"]["items"]
    assert source["secret"]["name"] == reveal(blue_green.outputs["bootstrapApiKeySecret"][0])
    assert f"{mount['mountPath']}/{item['path']}" == key_file and item["key"] == "api-key"
    assert "APP_SMOKE_API_KEY" not in {e["name"] for e in container["env"]}


def test_the_smoke_job_fails_its_metric_on_the_first_failure_within_its_deadline(blue_green):
    (template,) = [t for t in blue_green.kind("AnalysisTemplate") if pod_specs(t)]
    (metric,) = template["spec"]["metrics"]
    job = metric["provider"]["job"]["spec"]
    (container,) = job["template"]["spec"]["containers"]
    timeout = float(container["args"][container["args"].index("--timeout") + 1])
    assert job["backoffLimit"] == 0 and job["template"]["spec"]["restartPolicy"] == "Never"
    assert job["activeDeadlineSeconds"] > timeout


def test_the_smoke_job_pod_meets_the_restricted_pod_security_level(blue_green):
    namespace = blue_green.one("Namespace", "workflow")["metadata"]["labels"]
    assert namespace["pod-security.kubernetes.io/enforce"] == "restricted"
    assert pod_security_violations(smoke_pod(blue_green), "restricted") == []


def test_the_smoke_job_may_reach_the_api_and_nothing_else(blue_green):
    assert allowed(blue_green, SMOKE, API, 8000)
    assert not allowed(blue_green, SMOKE, INTERNET, 443)
    assert smoke_pod(blue_green)["automountServiceAccountToken"] is False


# Rollback window, autoscaling, disruption, Pulumi


def test_the_old_version_stays_for_the_stacks_rollback_window(blue_green):
    assert strategy(blue_green)["scaleDownDelaySeconds"] == int(setting(blue_green, "rolloutScaleDownDelaySeconds"))


def test_the_rollback_window_outlasts_the_post_promotion_analysis(blue_green):
    # Argo Rollouts cancels the post-promotion analysis when it scales the old version down.
    def seconds(duration: str) -> int:
        return int(duration.removesuffix("s"))

    longest = max(
        seconds(m["initialDelay"]) + (m["count"] - 1) * seconds(m["interval"]) for m in prometheus_metrics(blue_green)
    )
    assert strategy(blue_green)["scaleDownDelaySeconds"] > longest


def test_the_api_autoscaler_targets_the_rollout(blue_green):
    target = blue_green.one("ScaledObject", "workflow-api")["spec"]["scaleTargetRef"]
    assert target == {"apiVersion": ROLLOUT, "kind": "Rollout", "name": "workflow-api"}


def test_the_rollouts_disruption_budget_selects_its_pods(blue_green):
    budget = blue_green.one("PodDisruptionBudget", "workflow-api")["spec"]
    pod_labels = blue_green.one("Rollout", "workflow-api")["spec"]["template"]["metadata"]["labels"]
    assert budget["selector"]["matchLabels"].items() <= pod_labels.items()
    assert budget["maxUnavailable"] == 1


def test_pulumi_does_not_wait_on_the_rollout(blue_green):
    # pulumi-kubernetes awaits no custom resource by default; skipAwait keeps it so under PULUMI_K8S_AWAIT_ALL.
    rollout = api_resource(blue_green)
    assert blue_green.one("Rollout", "workflow-api")["metadata"]["annotations"]["pulumi.com/skipAwait"] == "true"
    assert rollout.custom_timeouts == {}


def test_the_api_is_scraped_pod_by_pod_so_two_services_never_count_it_twice(stack):
    monitor = stack.one("PodMonitor", "workflow-api")["spec"]
    assert (
        monitor["selector"]["matchLabels"].items()
        <= api_workload(stack)["spec"]["template"]["metadata"]["labels"].items()
    )
    assert [
        m["metadata"]["name"] for m in stack.kind("ServiceMonitor") if m["metadata"]["name"] == "workflow-api"
    ] == []


# The add-on


def test_argo_rollouts_is_pinned_at_2_41_0_and_installed_by_every_stack(stack):
    assert (ARGO_ROLLOUTS.name, ARGO_ROLLOUTS.version) == ("argo-rollouts", "2.41.0")
    chart = stack.resource(HELM_CHART, "argo-rollouts")
    assert (chart.inputs["chart"], chart.inputs["version"]) == ("argo-rollouts", "2.41.0")


def test_the_argo_rollouts_controller_runs_restricted_and_without_its_dashboard(stack):
    rollouts = install(stack, "argo-rollouts")
    objects = rollouts.objects()
    namespace = stack.one("Namespace", rollouts.namespace)["metadata"]["labels"]
    assert namespace["pod-security.kubernetes.io/enforce"] == "restricted"
    deployments = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Deployment"}
    assert list(deployments) == ["argo-rollouts"]
    (pod,) = pod_specs(deployments["argo-rollouts"])
    assert pod_security_violations(pod, "restricted") == []
    assert deployments["argo-rollouts"]["spec"]["replicas"] == 2
    assert [o["kind"] for o in objects if o["kind"] == "PodDisruptionBudget"] == ["PodDisruptionBudget"]


def test_the_rollout_waits_for_the_chart_that_brings_its_crds(blue_green):
    chart = blue_green.resource(HELM_CHART, "argo-rollouts")
    assert chart.urn in api_resource(blue_green).depends_on


def controller(run: StackRun) -> Pod:
    rollouts = install(run, "argo-rollouts")
    ((labels, _),) = selected_pods(rollouts.objects(), {"app.kubernetes.io/component": "rollouts-controller"})
    return Pod("argo-rollouts", rollouts.namespace, labels)


def test_the_controller_may_query_prometheus_and_the_kube_api(stack):
    rollouts = controller(stack)
    assert allowed(stack, rollouts, PROMETHEUS, 9090)
    assert allowed(stack, rollouts, INTERNET, 443) and allowed(stack, rollouts, INTERNET, 6443)
    assert not allowed(stack, rollouts, INTERNET, 80)
    assert not allowed(stack, rollouts, API, 8000)


def test_nothing_calls_the_controller_it_has_no_webhook(stack):
    namespace = controller(stack).namespace
    ingress = [
        p["metadata"]["name"]
        for p in stack.kind("NetworkPolicy")
        if p["metadata"]["namespace"] == namespace and "Ingress" in p["spec"]["policyTypes"]
    ]
    assert ingress == ["default-deny"]


# Configuration


BAD_ROLLOUT_VALUES = [
    ({"apiDeployStrategy": "canary"}, 'apiDeployStrategy = "canary" is not allowed: one of rolling, blueGreen'),
    ({"rolloutMax5xxRatio": "1.5"}, "rolloutMax5xxRatio = 1.5 is not allowed: a fraction strictly between 0 and 1"),
    ({"rolloutMaxPostP99Seconds": "fast"}, 'rolloutMaxPostP99Seconds = "fast" is not allowed: a number of seconds'),
    ({"rolloutMaxPostP99Seconds": "0"}, "rolloutMaxPostP99Seconds = 0 is not allowed: must be more than 0 seconds"),
    (
        {"rolloutScaleDownDelaySeconds": 120},
        "rolloutScaleDownDelaySeconds = 120 is not allowed: must be longer than the post-promotion analysis (180 s)",
    ),
]


@pytest.mark.parametrize(
    ("overrides", "message"), BAD_ROLLOUT_VALUES, ids=[m.split(" =")[0] for _, m in BAD_ROLLOUT_VALUES]
)
def test_a_bad_rollout_setting_stops_the_program_naming_key_value_and_what_is_allowed(overrides, message):
    with pytest.raises(ConfigError) as raised:
        run_stack("dev", overrides)
    assert f"{PROJECT}:{message}" in str(raised.value)


def test_blue_green_counts_both_versions_in_full_against_postgres_connections():
    # dev at 2 API pods of 10 connections: blue-green peaks at 4 pods (40), workers surge to 4 (40), plus 20 reserved.
    overrides = {"apiDeployStrategy": "blueGreen", "postgresMaxConnections": 99}
    with pytest.raises(ConfigError, match=r"postgresMaxConnections = 99 is too few: .* raise it to 100 "):
        run_stack("dev", overrides)
    run_stack("dev", {**overrides, "postgresMaxConnections": 100})
