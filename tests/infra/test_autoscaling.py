"""Autoscaling on every signal promised: the API on requests per second, CPU and memory, the workers on queue length
and CPU, each through one KEDA ScaledObject whose targets are stack data and whose HPA behaviour is the config's."""

from __future__ import annotations

import json
from urllib.parse import urlsplit

import promql_parser
import pytest
import yaml

from components import config
from components.charts import KEDA, KUBE_PROMETHEUS_STACK, METRICS_SERVER
from tests.infra.chart_sources import pinned_folder, render
from tests.infra.promql import selectors, unknown_series_or_labels
from tests.infra.validation import validate
from tests.infra.workloads import api_workload
from tools.mock_stack import HELM_CHART, HELM_RELEASE, PROJECT, ROOT, STACKS, StackRun, reveal, run_stack

SCALED_OBJECT = "kubernetes:keda.sh/v1alpha1:ScaledObject"


def scaled_object(stack: StackRun, name: str) -> dict:
    return stack.one("ScaledObject", name)["spec"]


def triggers(stack: StackRun, name: str) -> dict[str, dict]:
    return {trigger["type"]: trigger for trigger in scaled_object(stack, name)["triggers"]}


def setting(stack: StackRun, key: str) -> str:
    return stack.config[f"{PROJECT}:{key}"]


def policies(stack: StackRun, namespace: str) -> dict[str, dict]:
    return {
        p["metadata"]["name"]: p["spec"] for p in stack.kind("NetworkPolicy") if p["metadata"]["namespace"] == namespace
    }


def prometheus_address(stack: StackRun):
    return urlsplit(triggers(stack, "workflow-api")["prometheus"]["metadata"]["serverAddress"])


def prometheus_service(stack: StackRun) -> dict:
    """The Service the address names, as kube-prometheus-stack renders it with the values the stack passes."""
    release = reveal(stack.resource(HELM_RELEASE, KUBE_PROMETHEUS_STACK.name).inputs)
    folder = pinned_folder(KUBE_PROMETHEUS_STACK.name, KUBE_PROMETHEUS_STACK.version)
    objects = render(folder, release["name"], release["namespace"], release.get("values") or {})
    name = prometheus_address(stack).hostname.split(".")[0]
    (service,) = [o for o in objects if o["kind"] == "Service" and o["metadata"]["name"] == name]
    return service


# One autoscaler per workload


def test_every_workload_has_one_scaled_object_and_no_plain_hpa(stack):
    assert stack.kind("HorizontalPodAutoscaler") == []
    targets = [s["spec"]["scaleTargetRef"]["name"] for s in stack.kind("ScaledObject")]
    assert sorted(targets) == ["workflow-api", "workflow-worker"]


def test_the_scaled_objects_pass_the_keda_crd_schema(stack):
    for manifest in stack.kind("ScaledObject"):
        verdict = validate(manifest)
        assert (verdict.checked_by, verdict.errors) == ("crd", ()), manifest["metadata"]["name"]


# The API


def test_the_api_scales_on_requests_per_second_cpu_and_memory_with_the_stack_targets(stack):
    api = triggers(stack, "workflow-api")
    assert api.keys() == {"prometheus", "cpu", "memory"}
    assert api["prometheus"]["metadata"]["threshold"] == setting(stack, "apiRequestsPerSecondTarget")
    assert api["cpu"]["metadata"]["value"] == setting(stack, "apiScaleCpuPercent")
    assert api["memory"]["metadata"]["value"] == setting(stack, "apiScaleMemoryPercent")
    assert api["cpu"]["metricType"] == api["memory"]["metricType"] == "Utilization"


def test_the_request_rate_trigger_divides_the_total_rate_among_the_pods(stack):
    # AverageValue, KEDA's default for a prometheus trigger: the HPA divides the query's value by the replicas, so
    # the query sums every pod's rate into one number, KEDA's requirement of a single-element result.
    prometheus = triggers(stack, "workflow-api")["prometheus"]
    assert prometheus.get("metricType", "AverageValue") == "AverageValue"
    total = promql_parser.parse(prometheus["metadata"]["query"])
    assert isinstance(total, promql_parser.AggregateExpr) and str(total.op) == "sum" and total.modifier is None
    assert total.expr.func.name == "rate"


def test_the_request_rate_query_reads_only_series_the_api_exports(stack):
    query = triggers(stack, "workflow-api")["prometheus"]["metadata"]["query"]
    assert [s.name for s in selectors(query)] == ["workflow_http_request_duration_seconds_count"]
    assert unknown_series_or_labels(query) == []


def test_the_request_rate_query_counts_only_the_app_namespace(stack):
    query = triggers(stack, "workflow-api")["prometheus"]["metadata"]["query"]
    namespace = api_workload(stack)["metadata"]["namespace"]
    (selector,) = selectors(query)
    matchers = {(m.name, str(m.op), m.value) for m in selector.matchers.matchers}
    assert ("namespace", str(promql_parser.MatchOp.Equal), namespace) in matchers


def test_the_api_hpa_behaviour_is_the_configured_one(stack):
    spec = scaled_object(stack, "workflow-api")
    assert spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"] == config.API_SCALING.hpa_behavior()
    assert (spec["pollingInterval"], spec["cooldownPeriod"]) == (
        config.API_SCALING.polling_interval_seconds,
        config.API_SCALING.cooldown_seconds,
    )


def test_keda_takes_over_the_hpa_that_stacks_deployed_before_ran_on_the_api(stack):
    api = stack.one("ScaledObject", "workflow-api")
    assert api["metadata"]["annotations"]["scaledobject.keda.sh/transfer-hpa-ownership"] == "true"
    assert api["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["name"] == "workflow-api"


# The workers


def test_the_workers_scale_on_queue_length_and_cpu_with_the_stack_targets(stack):
    workers = triggers(stack, "workflow-worker")
    assert workers.keys() == {"rabbitmq", "cpu"}
    assert workers["rabbitmq"]["metadata"]["value"] == setting(stack, "workerQueueLengthTarget")
    assert workers["cpu"]["metadata"]["value"] == setting(stack, "workerCpuTargetPercent")
    assert workers["cpu"]["metricType"] == "Utilization"


def test_the_worker_hpa_behaviour_is_the_configured_one(stack):
    spec = scaled_object(stack, "workflow-worker")
    assert spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"] == config.WORKER_SCALING.hpa_behavior()
    assert (spec["pollingInterval"], spec["cooldownPeriod"]) == (
        config.WORKER_SCALING.polling_interval_seconds,
        config.WORKER_SCALING.cooldown_seconds,
    )


def test_hpa_behavior_renders_every_policy_of_both_directions():
    behaviour = config.ScalingBehaviour(
        polling_interval_seconds=10,
        cooldown_seconds=60,
        scale_up=config.ScalingDirection(
            0, "Max", (config.ScalingPolicy("Percent", 100, 15), config.ScalingPolicy("Pods", 4, 30))
        ),
        scale_down=config.ScalingDirection(120, "Min", (config.ScalingPolicy("Pods", 1, 60),)),
    )
    assert behaviour.hpa_behavior() == {
        "scaleUp": {
            "stabilizationWindowSeconds": 0,
            "selectPolicy": "Max",
            "policies": [
                {"type": "Percent", "value": 100, "periodSeconds": 15},
                {"type": "Pods", "value": 4, "periodSeconds": 30},
            ],
        },
        "scaleDown": {
            "stabilizationWindowSeconds": 120,
            "selectPolicy": "Min",
            "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}],
        },
    }


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda: config.ScalingPolicy("Replicas", 1, 15), "Percent or Pods"),
        (lambda: config.ScalingDirection(0, "Average", ()), "Max or Min"),
    ],
    ids=["policy kind", "select policy"],
)
def test_a_scaling_setting_the_hpa_does_not_know_is_refused(make, words):
    with pytest.raises(ValueError, match=words):
        make()


# Stack data


BAD_TARGETS = [
    ("apiRequestsPerSecondTarget", 0, "an integer >= 1"),
    ("apiRequestsPerSecondTarget", "fast", "an integer >= 1"),
    ("workerCpuTargetPercent", 5, "an integer >= 10 and <= 100"),
    ("workerCpuTargetPercent", 150, "an integer >= 10 and <= 100"),
]


@pytest.mark.parametrize(("key", "value", "allowed"), BAD_TARGETS, ids=[f"{k}={v}" for k, v, _ in BAD_TARGETS])
def test_a_bad_scaling_target_stops_the_program_naming_the_key(key, value, allowed):
    with pytest.raises(config.ConfigError) as raised:
        run_stack("dev", {key: value})
    assert f"{PROJECT}:{key} = {json.dumps(value)} is not allowed: {allowed}" in str(raised.value)


@pytest.mark.parametrize("stack_name", STACKS)
def test_every_stack_file_sets_its_own_scaling_targets(stack_name):
    keys = yaml.safe_load((ROOT / f"Pulumi.{stack_name}.yaml").read_text())["config"]
    assert {f"{PROJECT}:apiRequestsPerSecondTarget", f"{PROJECT}:workerCpuTargetPercent"} <= keys.keys()


# What the ScaledObjects rely on


def test_every_scaled_object_waits_for_keda_and_the_metrics_api(stack):
    keda = stack.resource(HELM_CHART, KEDA.name).urn
    metrics_server = stack.resource(HELM_CHART, METRICS_SERVER.name).urn
    for resource in stack.of_type(SCALED_OBJECT):
        assert {keda, metrics_server} <= set(resource.depends_on), resource.name


def test_the_scaled_objects_wait_for_nothing_a_shared_cluster_provides():
    run = run_stack("dev", {"addons": ["cert-manager", "envoy-gateway", "cloudnative-pg", "rabbitmq-cluster-operator"]})
    assert [r for r in run.resources if r.type == HELM_CHART and r.name in (KEDA.name, METRICS_SERVER.name)] == []
    assert len(run.of_type(SCALED_OBJECT)) == 2


def test_keda_queries_the_prometheus_service_the_chart_creates(stack):
    service = prometheus_service(stack)
    address = prometheus_address(stack)
    assert address.hostname == f"{service['metadata']['name']}.{service['metadata']['namespace']}.svc.cluster.local"
    # The chart names Prometheus's own port after prometheusSpec.portName (`http-web`); the others are sidecars'.
    web = {port["name"]: port["port"] for port in service["spec"]["ports"]}["http-web"]
    assert (address.scheme, address.port) == ("http", web)


def test_the_network_admits_keda_to_prometheus_on_the_port_its_service_targets(stack):
    service = prometheus_service(stack)
    port = prometheus_address(stack).port
    (target,) = [p["targetPort"] for p in service["spec"]["ports"] if p["port"] == port]
    ingress = policies(stack, "workflow-observability")["keda-to-prometheus-ingress"]
    # The policy selects the pods the Service sends to, and lets the KEDA namespace in on their port.
    assert ingress["podSelector"]["matchLabels"].items() <= service["spec"]["selector"].items()
    assert ingress["ingress"] == [
        {
            "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "keda"}}}],
            "ports": [{"protocol": "TCP", "port": target}],
        }
    ]
    egress = policies(stack, "keda")["keda-to-prometheus-egress"]["egress"]
    assert egress[0]["ports"] == [{"protocol": "TCP", "port": target}]


# KEDA's own metrics


def keda_operator_service(stack: StackRun) -> dict:
    chart = stack.resource(HELM_CHART, KEDA.name)
    inputs = reveal(chart.inputs)
    objects = render(pinned_folder(KEDA.name, KEDA.version), KEDA.name, inputs["namespace"], inputs["values"])
    (service,) = [o for o in objects if o["kind"] == "Service" and o["metadata"]["name"] == "keda-operator"]
    return service


def test_prometheus_scrapes_the_keda_operator_service_the_chart_creates(stack):
    service = keda_operator_service(stack)
    monitor = stack.one("ServiceMonitor", "keda-operator")["spec"]
    assert monitor["namespaceSelector"] == {"matchNames": ["keda"]}
    assert monitor["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["endpoints"][0]["port"] in {port["name"] for port in service["spec"]["ports"]}


def test_the_network_admits_prometheus_to_the_keda_operator_metrics_port(stack):
    service = keda_operator_service(stack)
    (port,) = [p["targetPort"] for p in service["spec"]["ports"] if p["name"] == "metrics"]
    ingress = policies(stack, "keda")["scrape-keda-ingress"]["ingress"]
    assert ingress[0]["ports"] == [{"protocol": "TCP", "port": port}]
    assert ingress[0]["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "workflow-observability"}}}
    ]
    egress = policies(stack, "workflow-observability")["scrape-keda-egress"]["egress"]
    assert egress[0]["ports"] == [{"protocol": "TCP", "port": port}]


def test_a_deployed_stack_moves_keda_from_the_worker_pool_instead_of_installing_it_again(stack):
    """KEDA's namespace, policies and chart used to be WorkerPool's children: without aliases, `pulumi up` on a stack
    deployed before would create them anew beside the objects already in the cluster, and fail on their names."""
    worker_pool = f"urn:pulumi:{stack.stack}::{PROJECT}::workflow-platform:index:WorkerPool::workers"
    keda_resources = [
        resource
        for resource in stack.resources
        if resource.parent.endswith("::app")
        and (resource.name in ("keda", KEDA.name) or resource.name.startswith("keda-"))
    ]

    assert {resource.type for resource in keda_resources} >= {
        "kubernetes:core/v1:Namespace",
        "kubernetes:networking.k8s.io/v1:NetworkPolicy",
        HELM_CHART,
    }
    assert [r.name for r in keda_resources if worker_pool not in r.former_parents] == []
