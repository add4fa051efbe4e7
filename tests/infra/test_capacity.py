"""`make capacity` prices what each stack really runs: its workload list (capacity/workloads.py) is checked against
what the program creates under mocks, and against what every chart renders from its source with the stack's values,
so a changed request, replica count or volume cannot leave the cost stale."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import yaml

from capacity.cost import Workload, unrequested
from capacity.stack import read_stack
from capacity.workloads import (
    ENVOY_GATEWAY_CONTROLLER,
    SUBCHART_VALUES,
    container,
    load_balancers,
    monthly,
    workloads,
)
from components.charts import RABBITMQ_CLUSTER_OPERATOR
from components.data_plane import POSTGRES_CLUSTER, RABBITMQ_CLUSTER
from components.edge_ingress import ENVOY_PROXY_NAME
from tests.infra.chart_sources import CHARTS, pod_specs
from tests.infra.test_charts import install as installed_chart
from tests.infra.test_charts import installs
from tools.mock_stack import ROOT, STACKS, StackRun

# Pods no source here renders: kube-prometheus-stack's subcharts (not in ../shared/helm-charts) and what Envoy
# Gateway's controller creates at run time. Their figures are cited in capacity/workloads.py instead.
RENDERED_BY_NOTHING_HERE = {
    "kube-prometheus-stack-grafana": SUBCHART_VALUES,
    "kube-prometheus-stack-kube-state-metrics": SUBCHART_VALUES,
    "kube-prometheus-stack-prometheus-node-exporter": SUBCHART_VALUES,
    "envoy-ratelimit": ENVOY_GATEWAY_CONTROLLER,
}
# Sidecars an operator or controller adds to pods it creates from a custom resource.
INJECTED = {
    ENVOY_PROXY_NAME: {"shutdown-manager"},
    "kube-prometheus-stack-prometheus": {"config-reloader"},
    "kube-prometheus-stack-alertmanager": {"config-reloader"},
}
AUTOSCALERS = ("HorizontalPodAutoscaler", "ScaledObject")
RABBITMQ_OPERATOR_MANIFEST = CHARTS / f"rabbitmq-cluster-operator-{RABBITMQ_CLUSTER_OPERATOR.url.split('/')[-2]}"


@dataclass(frozen=True)
class Observed:
    """One pod-running object as the stack creates it: replicas (autoscaler bounds), requests by container, claims."""

    replicas: tuple[int, int]
    requests: dict[str, tuple[int, int]]
    volume_bytes_per_pod: int = 0
    per_node: bool = False
    runs_to_completion: bool = False


def requests_of(name: str, resources: dict | None) -> tuple[int, int]:
    requested = container(name, *(((resources or {}).get("requests") or {}).get(k) for k in ("cpu", "memory")), "")
    return requested.cpu_millicores, requested.memory_bytes


def containers_of(spec: dict) -> dict[str, tuple[int, int]]:
    return {c["name"]: requests_of(c["name"], c.get("resources")) for c in spec["containers"]}


def claimed(volume_claim_templates: list[dict]) -> int:
    return sum(
        container("", None, t["spec"]["resources"]["requests"]["storage"], "").memory_bytes
        for t in volume_claim_templates
    )


def workload_objects(objects: list[dict]) -> dict[str, Observed]:
    """Deployments, StatefulSets, DaemonSets and Jobs with their pods; a PersistentVolumeClaim named after its
    workload (a one-pod Deployment's volume) counts as that workload's."""
    volumes = {o["metadata"]["name"]: claimed([o]) for o in objects if o["kind"] == "PersistentVolumeClaim"}
    found = {}
    for manifest in objects:
        for spec in pod_specs(manifest):
            name, kind = manifest["metadata"]["name"], manifest["kind"]
            replicas = manifest["spec"].get("replicas", 1)
            found[name] = Observed(
                replicas=(replicas, replicas),
                requests=containers_of(spec),
                volume_bytes_per_pod=claimed(manifest["spec"].get("volumeClaimTemplates") or []) + volumes.get(name, 0),
                per_node=kind == "DaemonSet",
                runs_to_completion=kind == "Job",
            )
    return found


def operator_made(objects: list[dict]) -> dict[str, Observed]:
    """The Prometheus and Alertmanager custom resources kube-prometheus-stack renders: the operator runs their pods."""
    found = {}
    for manifest in objects:
        if manifest["kind"] in ("Prometheus", "Alertmanager"):
            spec = manifest["spec"]
            main = manifest["kind"].lower()
            found[manifest["metadata"]["name"]] = Observed(
                replicas=(spec["replicas"], spec["replicas"]),
                requests={main: requests_of(main, spec.get("resources"))},
                volume_bytes_per_pod=claimed([spec["storage"]["volumeClaimTemplate"]]),
            )
    return found


def direct(run: StackRun) -> dict[str, Observed]:
    """What the program creates itself: its Deployments and Rollouts (sized by their autoscaler), Jobs and
    data-service CRs. The smoke Job of a blue-green rollout runs only while a version is analysed: it is not priced."""
    manifests = run.manifests()
    bounds = {}
    for manifest in manifests:
        spec = manifest.get("spec") or {}
        if manifest["kind"] in AUTOSCALERS:
            bounds[spec["scaleTargetRef"]["name"]] = (
                spec.get("minReplicas", spec.get("minReplicaCount")),
                spec.get("maxReplicas", spec.get("maxReplicaCount")),
            )
    found = {}
    for resource in run.resources:
        if resource.is_kubernetes_object and resource.inputs.get("kind") in ("Deployment", "Rollout", "Job"):
            manifest = resource.manifest()
            (spec,) = pod_specs(manifest)
            is_job = manifest["kind"] == "Job"
            found[resource.name] = Observed(
                replicas=(1, 1) if is_job else bounds[manifest["metadata"]["name"]],
                requests=containers_of(spec),
                runs_to_completion=is_job,
            )
    postgres = run.one("Cluster", POSTGRES_CLUSTER)["spec"]
    found[POSTGRES_CLUSTER] = Observed(
        replicas=(postgres["instances"], postgres["instances"]),
        requests={"postgres": requests_of("postgres", postgres["resources"])},
        volume_bytes_per_pod=container("", None, postgres["storage"]["size"], "").memory_bytes,
    )
    rabbitmq = run.one("RabbitmqCluster", RABBITMQ_CLUSTER)["spec"]
    found[RABBITMQ_CLUSTER] = Observed(
        replicas=(rabbitmq["replicas"], rabbitmq["replicas"]),
        requests={"rabbitmq": requests_of("rabbitmq", rabbitmq["resources"])},
        volume_bytes_per_pod=container("", None, rabbitmq["persistence"]["storage"], "").memory_bytes,
    )
    proxy = run.one("EnvoyProxy", ENVOY_PROXY_NAME)["spec"]["provider"]["kubernetes"]["envoyDeployment"]
    found[ENVOY_PROXY_NAME] = Observed(
        replicas=(proxy["replicas"], proxy["replicas"]),
        requests={"envoy": requests_of("envoy", proxy["container"]["resources"])},
    )
    return found


def release_manifest() -> dict[str, Observed]:
    """The RabbitMQ Cluster Operator's Deployment, from the source of its pinned release manifest."""
    documents = yaml.safe_load_all((RABBITMQ_OPERATOR_MANIFEST / "config" / "manager" / "manager.yaml").read_text())
    return workload_objects([d for d in documents if d and d.get("kind") == "Deployment"])


@pytest.fixture(scope="module")
def observed(stacks) -> dict[str, dict[str, Observed]]:
    everything = {}
    for name, run in stacks.items():
        found = direct(run)
        for install in installs(run):
            objects = install.objects()
            found |= workload_objects(objects) | operator_made(objects)
        if any(r.inputs.get("file") == RABBITMQ_CLUSTER_OPERATOR.url for r in run.resources):
            found |= release_manifest()
        everything[name] = found
    return everything


def enumerated(run: StackRun) -> dict[str, Workload]:
    return {w.name: w for w in workloads(read_stack(run.stack))}


def as_observed(workload: Workload) -> Observed:
    injected = INJECTED.get(workload.name, set())
    return Observed(
        replicas=(workload.replicas_min, workload.replicas_max),
        requests={c.name: (c.cpu_millicores, c.memory_bytes) for c in workload.containers if c.name not in injected},
        volume_bytes_per_pod=workload.volume_bytes_per_pod,
        per_node=workload.per_node,
        runs_to_completion=workload.runs_to_completion,
    )


def test_the_workload_list_names_every_pod_running_object_the_stack_creates(stack, observed):
    listed = set(enumerated(stack))

    assert listed - RENDERED_BY_NOTHING_HERE.keys() == observed[stack.stack].keys()


def test_every_workload_runs_the_replicas_requests_and_volumes_the_stack_gives_it(stack, observed):
    listed = enumerated(stack)
    stale = {
        name: (as_observed(listed[name]), really)
        for name, really in observed[stack.stack].items()
        if as_observed(listed[name]) != really
    }
    assert stale == {}


def test_the_workloads_no_source_here_renders_say_where_their_figures_come_from(stack):
    listed = enumerated(stack)
    sources = {name: {c.source for c in listed[name].containers} for name in RENDERED_BY_NOTHING_HERE if name in listed}

    assert sources == {name: {source} for name, source in RENDERED_BY_NOTHING_HERE.items() if name in listed}


def test_the_priced_load_balancers_are_the_stacks_load_balancer_services(stack, observed):
    services = [m for m in stack.manifests() if m["kind"] == "Service" and m["spec"].get("type") == "LoadBalancer"]
    for install in installs(stack):
        services += [o for o in install.objects() if o["kind"] == "Service" and o["spec"].get("type") == "LoadBalancer"]
    proxies = [
        m
        for m in stack.kind("EnvoyProxy")
        if m["spec"]["provider"]["kubernetes"]["envoyService"]["type"] == "LoadBalancer"
    ]

    assert load_balancers(read_stack(stack.stack)) == len(services) + len(proxies) == 1


def test_the_stack_exports_its_monthly_cost(stack):
    low, high = monthly(read_stack(stack.stack))

    assert stack.outputs["monthlyCostUsd"] == ({"min": round(low.total, 2), "max": round(high.total, 2)}, False)


def test_a_changed_request_is_seen(stacks, observed):
    """The comparison is sharp: a worker request the list got wrong shows as a difference."""
    listed = enumerated(stacks["prod"])
    worker = listed["workflow-worker"]
    wrong = as_observed(worker)
    wrong = Observed(wrong.replicas, {"worker": (wrong.requests["worker"][0] + 1, wrong.requests["worker"][1])})

    assert wrong != observed["prod"]["workflow-worker"] == as_observed(worker)


def test_every_steady_container_requests_resources_but_the_config_reloaders_the_operator_injects(stack):
    # kube-prometheus-stack 88.5.0 hands the operator --config-reloader-*-request from
    # `(((prometheusOperator.prometheusConfigReloader.resources).requests).cpu)`, a path the key check cannot follow.
    assert unrequested(workloads(read_stack(stack.stack))) == [
        "kube-prometheus-stack-prometheus/config-reloader",
        "kube-prometheus-stack-alertmanager/config-reloader",
    ]


def test_the_subchart_workloads_are_priced_at_the_resources_the_stack_hands_their_subchart(stack):
    handed = installed_chart(stack, "kube-prometheus-stack").values
    listed = enumerated(stack)
    for workload, subchart in (
        ("kube-prometheus-stack-grafana", "grafana"),
        ("kube-prometheus-stack-kube-state-metrics", "kube-state-metrics"),
        ("kube-prometheus-stack-prometheus-node-exporter", "prometheus-node-exporter"),
    ):
        (priced,) = as_observed(listed[workload]).requests.values()
        assert priced == requests_of(subchart, handed[subchart]["resources"]), workload


@pytest.mark.parametrize("name", STACKS)
def test_the_readme_states_each_stacks_monthly_cost(name):
    low, high = monthly(read_stack(name))
    row = f"| {name} | ${low.total:,.0f} | ${high.total:,.0f} | about ${read_stack(name).promised_monthly_cost_usd:,} |"
    assert row in (ROOT / "README.md").read_text(), f"README's cost table should say: {row}"
