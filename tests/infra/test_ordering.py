"""Readiness ordering on a first `pulumi up` into an empty cluster, as a property of the resource graph.

Pulumi creates a resource only once everything it depends on has been created and, where Pulumi awaits readiness,
is ready; depending on a component means depending on all its children. So "B waits for A" holds when A is reachable
from B through dependencies, each one widened to the children of what it names.
"""

from __future__ import annotations

import json
from collections import defaultdict
from functools import cache

import pytest

from components.charts import (
    ARGO_ROLLOUTS,
    CERT_MANAGER,
    CLOUDNATIVE_PG,
    ENVOY_GATEWAY,
    KEDA,
    KUBE_PROMETHEUS_STACK,
)
from components.config import ADDONS
from tests.infra.validation import validate
from tests.infra.workloads import api_resource
from tools.mock_stack import HELM_CHART, HELM_RELEASE, YAML_CONFIG_FILE, Resource, StackRun, reveal, run_stack

WAIT_FOR = "pulumi.com/waitFor"
JOB = "kubernetes:batch/v1:Job"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
POSTGRES_CLUSTER = "kubernetes:postgresql.cnpg.io/v1:Cluster"
RABBITMQ_CLUSTER = "kubernetes:rabbitmq.com/v1beta1:RabbitmqCluster"

# The add-on whose installation defines each API group's CRDs.
CRDS_OF_GROUP = {
    "gateway.networking.k8s.io": "envoy-gateway",
    "gateway.envoyproxy.io": "envoy-gateway",
    "cert-manager.io": "cert-manager",
    "keda.sh": "keda",
    "postgresql.cnpg.io": "cloudnative-pg",
    "rabbitmq.com": "rabbitmq-cluster-operator",
    "monitoring.coreos.com": "kube-prometheus-stack",
    "argoproj.io": "argo-rollouts",
}
# The resource that installs each add-on: (type, name).
INSTALLER = {
    "cert-manager": (HELM_RELEASE, CERT_MANAGER.name),
    "envoy-gateway": (HELM_RELEASE, ENVOY_GATEWAY.name),
    "keda": (HELM_CHART, KEDA.name),
    "cloudnative-pg": (HELM_CHART, CLOUDNATIVE_PG.name),
    "rabbitmq-cluster-operator": (YAML_CONFIG_FILE, "rabbitmq-cluster-operator"),
    "kube-prometheus-stack": (HELM_RELEASE, KUBE_PROMETHEUS_STACK.name),
    "argo-rollouts": (HELM_CHART, ARGO_ROLLOUTS.name),
}


def waits_for(run: StackRun) -> dict[str, set[str]]:
    """Every resource's URN -> the URNs of everything it waits for, directly or transitively."""
    children: dict[str, set[str]] = defaultdict(set)
    for resource in run.resources:
        children[resource.parent].add(resource.urn)

    def with_descendants(urn: str) -> set[str]:
        found, pending = {urn}, [urn]
        while pending:
            for child in children[pending.pop()] - found:
                found.add(child)
                pending.append(child)
        return found

    direct = {
        resource.urn: set().union(*(with_descendants(urn) for urn in resource.depends_on)) for resource in run.resources
    }

    def reach(urn: str) -> set[str]:
        found, pending = set(), list(direct[urn])
        while pending:
            dependency = pending.pop()
            if dependency not in found:
                found.add(dependency)
                pending.extend(direct.get(dependency, ()))
        return found

    return {resource.urn: reach(resource.urn) for resource in run.resources}


def installer(run: StackRun, addon: str) -> Resource:
    return run.resource(*INSTALLER[addon])


def installed(run: StackRun) -> set[str]:
    present = {(r.type, r.name) for r in run.resources}
    return {addon for addon, key in INSTALLER.items() if key in present}


@cache
def _is_custom_kind(api_version: str, kind: str) -> bool:
    probe = {"apiVersion": api_version, "kind": kind, "metadata": {"name": "probe"}}
    return validate(probe).checked_by != "kubernetes"


def custom_resources(run: StackRun) -> list[Resource]:
    return [
        r for r in run.resources if r.is_kubernetes_object and _is_custom_kind(r.inputs["apiVersion"], r.inputs["kind"])
    ]


def the(run: StackRun, type_: str) -> Resource:
    (resource,) = run.of_type(type_)
    return resource


def annotations(resource: Resource) -> dict[str, str]:
    return reveal(resource.inputs)["metadata"].get("annotations", {})


def test_the_migrations_job_waits_for_the_postgres_cluster(stack):
    assert the(stack, POSTGRES_CLUSTER).urn in waits_for(stack)[the(stack, JOB).urn]


def test_pulumi_waits_until_the_postgres_cluster_is_ready(stack):
    # CloudNativePG's Cluster reports condition Ready=True once its phase is healthy (ConditionClusterReady).
    assert annotations(the(stack, POSTGRES_CLUSTER))[WAIT_FOR] == "condition=Ready"


def test_pulumi_waits_until_every_rabbitmq_node_is_ready_and_the_service_answers(stack):
    # The RabbitMQ operator's conditions: AllReplicasReady (every pod ready), ClusterAvailable (Service endpoints).
    wanted = json.loads(annotations(the(stack, RABBITMQ_CLUSTER))[WAIT_FOR])
    assert sorted(wanted) == ["condition=AllReplicasReady", "condition=ClusterAvailable"]


def test_the_api_waits_for_migrations_and_the_broker(stack):
    api = api_resource(stack)
    assert {the(stack, JOB).urn, the(stack, RABBITMQ_CLUSTER).urn} <= waits_for(stack)[api.urn]


def test_workers_wait_for_migrations_and_the_broker(stack):
    worker = stack.resource(DEPLOYMENT, "workflow-worker")
    assert {the(stack, JOB).urn, the(stack, RABBITMQ_CLUSTER).urn} <= waits_for(stack)[worker.urn]


def test_cert_manager_waits_for_the_release_that_installs_the_gateway_api_crds(stack):
    assert installer(stack, "envoy-gateway").urn in waits_for(stack)[installer(stack, "cert-manager").urn]


def _custom_resources_not_waiting_for_their_crds(run: StackRun) -> set[str]:
    graph, present = waits_for(run), installed(run)
    late = set()
    for resource in custom_resources(run):
        group = resource.inputs["apiVersion"].rpartition("/")[0]
        addon = CRDS_OF_GROUP.get(group)
        if addon is None:
            late.add(f"{resource.type} {resource.name}: no add-on known to define {group}")
        elif addon in present and installer(run, addon).urn not in graph[resource.urn]:
            late.add(f"{resource.type} {resource.name} does not wait for {addon}")
    return late


def test_every_custom_resource_waits_for_the_add_on_that_defines_its_kind(stack):
    assert custom_resources(stack)
    assert not _custom_resources_not_waiting_for_their_crds(stack)


@pytest.mark.parametrize("left_out", INSTALLER)
def test_the_ordering_holds_when_a_shared_cluster_provides_an_add_on(left_out):
    run = run_stack("dev", {"addons": [addon for addon in ADDONS if addon != left_out]})
    assert installed(run) == set(INSTALLER) - {left_out}
    assert not _custom_resources_not_waiting_for_their_crds(run)
    assert the(run, POSTGRES_CLUSTER).urn in waits_for(run)[the(run, JOB).urn]


def test_the_migrations_job_outlasts_its_connection_retries_and_pulumi_outlasts_the_job(stack):
    job = the(stack, JOB)
    spec = reveal(job.inputs)["spec"]
    (container,) = spec["template"]["spec"]["containers"]
    connect_s = float({v["name"]: v.get("value") for v in container["env"]}["APP_MIGRATE_CONNECT_TIMEOUT_S"])
    attempts = spec["backoffLimit"] + 1
    # Each pod may spend its whole connection bound retrying, and still needs time to migrate after it.
    assert spec["activeDeadlineSeconds"] > attempts * connect_s
    for operation in ("create", "update"):
        assert _seconds(job.custom_timeouts[operation]) > spec["activeDeadlineSeconds"]


def _seconds(duration: str) -> int:
    """A Pulumi custom timeout ("35m", "1h", "90s") in seconds."""
    return int(duration[:-1]) * {"s": 1, "m": 60, "h": 3600}[duration[-1]]


def test_a_dependency_on_a_component_covers_its_children_and_their_dependencies():
    def resource(name: str, parent: str = "", depends_on: tuple[str, ...] = ()) -> Resource:
        return Resource(
            urn=name,
            type="test:index:Thing",
            name=name,
            parent=parent,
            custom=True,
            inputs={},
            outputs={},
            depends_on=depends_on,
        )

    run = StackRun(
        stack="test",
        config={},
        resources=[
            resource("database"),
            resource("component"),
            resource("child", parent="component", depends_on=("database",)),
            resource("job", depends_on=("component",)),
            resource("unrelated"),
        ],
    )
    assert waits_for(run)["job"] == {"component", "child", "database"}
