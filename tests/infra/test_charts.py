"""Every third-party chart is pinned to a version whose source is in ../shared/helm-charts, reads every value the
program hands it, creates the Services the platform points at, and renders pods its namespace admits.

Charts are rendered with the real `helm template` from those sources (tests/infra/chart_sources.py), with the values
each stack passes; renders are cached per (chart, values) and made in parallel once per session.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from components import charts
from components.config_reader import byte_count
from components.data_plane import RABBITMQ_CLUSTER
from components.observability import GRAFANA_DASHBOARD_LABEL
from tests.infra.chart_sources import (
    CHARTS,
    chart_reads,
    missing_subcharts,
    pinned_folder,
    pod_security_violations,
    pod_specs,
    render,
    source_folders,
)
from tests.infra.workloads import api_workload
from tools.mock_stack import HELM_CHART, HELM_RELEASE, YAML_CONFIG_FILE, StackRun, reveal, run_stack


@dataclass(frozen=True)
class Install:
    """One chart a stack installs, as Helm would be asked to: release, namespace and the resolved values."""

    resource: str
    folder: Path
    release: str
    namespace: str
    values: dict

    def objects(self) -> list[dict]:
        return render(self.folder, self.release, self.namespace, self.values)


def installs(run: StackRun) -> list[Install]:
    found = []
    for resource in run.resources:
        if resource.type in (HELM_RELEASE, HELM_CHART):
            inputs = reveal(resource.inputs)
            chart_name = inputs["chart"].rsplit("/", 1)[-1]
            release = inputs.get("name") or resource.name
            folder = pinned_folder(chart_name, inputs["version"])
            found.append(Install(resource.name, folder, release, inputs["namespace"], inputs.get("values") or {}))
    return found


def install(run: StackRun, resource_name: str) -> Install:
    (found,) = [i for i in installs(run) if i.resource == resource_name]
    return found


@pytest.fixture(scope="session", autouse=True)
def rendered(stacks):
    """Renders every install of every stack once, in parallel; the tests then read the cache."""
    everything = [i for run in stacks.values() for i in installs(run)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(Install.objects, everything))


def find(objects: list[dict], kind: str, name: str) -> dict:
    (found,) = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


def selected_pods(objects: list[dict], selector: dict[str, str]) -> list[tuple[dict, dict]]:
    """(pod labels, pod spec) of every rendered pod that carries all of `selector`."""
    pods = []
    for manifest in objects:
        for spec in pod_specs(manifest):
            template_labels = manifest["spec"]["template"]["metadata"]["labels"]
            for labels in _pod_labels(manifest, template_labels):
                if selector.items() <= labels.items():
                    pods.append((labels, spec))
    return pods


def _pod_labels(manifest: dict, template_labels: dict) -> list[dict]:
    """The labels of each pod a workload creates: a StatefulSet's controller adds each pod's own name."""
    if manifest["kind"] != "StatefulSet":
        return [template_labels]
    names = [f"{manifest['metadata']['name']}-{ordinal}" for ordinal in range(manifest["spec"]["replicas"])]
    return [{**template_labels, "statefulset.kubernetes.io/pod-name": name} for name in names]


def container_ports(spec: dict) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for c in spec["containers"] for p in c.get("ports", []) if "name" in p}


# Pinned versions


def pinned_charts() -> list[charts.HelmChart]:
    return [value for value in vars(charts).values() if isinstance(value, charts.HelmChart)]


def test_every_chart_and_manifest_pinned_in_charts_py_has_its_source_here():
    assert len(pinned_charts()) >= 8
    vouched = source_folders()
    for chart in pinned_charts():
        folder = pinned_folder(chart.name, chart.version)
        assert folder.name in vouched and folder.is_dir(), f"{chart.name} {chart.version}: no source in {CHARTS}"
    tag = charts.RABBITMQ_CLUSTER_OPERATOR.url.split("/releases/download/")[1].split("/")[0]
    assert f"rabbitmq-cluster-operator-{tag}/config" in vouched


def test_every_chart_and_manifest_a_stack_installs_is_one_pinned_here(stack):
    pinned = {(chart.reference, chart.version) for chart in pinned_charts()}
    for resource in stack.resources:
        if resource.type in (HELM_RELEASE, HELM_CHART):
            assert (resource.inputs["chart"], resource.inputs["version"]) in pinned, resource.name
    for config_file in stack.of_type(YAML_CONFIG_FILE):
        assert config_file.inputs["file"] == charts.RABBITMQ_CLUSTER_OPERATOR.url, config_file.name


# Values keys


def test_every_values_key_is_one_its_chart_reads(stack):
    ignored = [
        f"{i.folder.name}: {key} is not read"
        for i in installs(stack)
        for key in chart_reads(i.folder).unread(i.values)[0]
    ]
    assert ignored == []


def test_values_under_a_subchart_are_checked_against_its_own_source(stack):
    unverifiable = [
        f"{i.folder.name}: {key}" for i in installs(stack) for key in chart_reads(i.folder).unread(i.values)[1]
    ]
    if unverifiable:
        missing = sorted({name for i in installs(stack) for name in missing_subcharts(i.folder)})
        pytest.skip(f"no subchart source in {CHARTS} for {missing}; unchecked: {unverifiable}")


VALKEY_SOURCE = CHARTS / "valkey-0.11.0"


def test_the_checker_rejects_a_key_the_chart_ignores_and_names_its_path():
    reads = chart_reads(VALKEY_SOURCE)
    assert reads.unread({"persistence": {"size": "1Gi"}}) == (["persistence.size"], [])
    assert reads.unread({"dataStorage": {"enabled": True}}) == ([], [])


def test_the_checker_follows_range_and_with_scopes():
    reads = chart_reads(VALKEY_SOURCE)
    users = {"auth": {"aclUsers": {"anyone": {"permissions": "+@read", "password": "x", "colour": "blue"}}}}
    assert reads.unread(users) == (["auth.aclUsers.anyone.colour"], [])
    assert reads.unread({"metrics": {"exporter": {"extraEnvs": {"LOG_LEVEL": "info"}}}}) == ([], [])


def test_the_checker_accepts_anything_inside_a_map_rendered_whole():
    reads = chart_reads(VALKEY_SOURCE)
    assert reads.unread({"affinity": {"nodeAffinity": {"anything": {"at": "depth"}}}}) == ([], [])


# Valkey


def test_valkey_keeps_its_data_on_a_claim_of_the_configured_size_and_class(stack):
    objects = install(stack, "workflow-valkey").objects()
    size = stack.config["workflow-platform:redisStorageSize"]
    storage_class = stack.config.get("workflow-platform:storageClass") or None
    if int(stack.config["workflow-platform:redisReplicas"]) > 1:
        (claim,) = find(objects, "StatefulSet", "workflow-valkey")["spec"]["volumeClaimTemplates"]
    else:
        claim = find(objects, "PersistentVolumeClaim", "workflow-valkey")
        volumes = find(objects, "Deployment", "workflow-valkey")["spec"]["template"]["spec"]["volumes"]
        assert {"name": "valkey-data", "persistentVolumeClaim": {"claimName": "workflow-valkey"}} in volumes
    assert claim["spec"]["resources"]["requests"]["storage"] == size
    assert claim["spec"].get("storageClassName") == storage_class


def valkey_server_config(objects: list[dict]) -> str:
    """The valkey.conf lines the chart's init container appends to the server's configuration, from the ConfigMap
    every Valkey pod mounts where the init script reads it."""
    appended = "/usr/local/etc/valkey/valkey.conf"
    sources = set()
    for _, pod in selected_pods(objects, {"app.kubernetes.io/instance": "workflow-valkey"}):
        volumes = {v["name"]: v for v in pod["volumes"]}
        (init,) = pod["initContainers"]
        (mount,) = [m for m in init["volumeMounts"] if m["mountPath"] == appended]
        sources.add((volumes[mount["name"]]["configMap"]["name"], mount["subPath"]))
    ((config_map, key),) = sources
    return find(objects, "ConfigMap", config_map)["data"][key]


def test_valkey_stops_at_three_quarters_of_its_memory_limit_evicting_only_keys_that_expire(stack):
    limit_mib = byte_count(stack.config["workflow-platform:redisMemoryLimit"]) // 2**20
    lines = valkey_server_config(install(stack, "workflow-valkey").objects()).splitlines()
    assert f"maxmemory {limit_mib * 3 // 4}mb" in lines
    assert "maxmemory-policy volatile-lru" in lines


@pytest.mark.skipif(not (shutil.which("redis-server") and shutil.which("redis-cli")), reason="no redis-server here")
def test_a_redis_server_accepts_the_rendered_valkey_config_and_reads_the_intended_ceiling(stacks, tmp_path):
    """Valkey parses these directives as Redis does; a server started on the file (on a socket, no TCP port) reports
    the ceiling in bytes, which shows `mb` is read as MiB."""
    run = stacks["prod"]
    (tmp_path / "valkey.conf").write_text(valkey_server_config(install(run, "workflow-valkey").objects()))
    # Relative to the working directory: a socket's path must stay under about 100 characters.
    socket = "redis.sock"
    server = subprocess.Popen(
        ["redis-server", "valkey.conf", "--port", "0", "--unixsocket", socket, "--save", ""],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        for _ in range(100):
            if (tmp_path / socket).exists() or server.poll() is not None:
                break
            time.sleep(0.05)
        assert (tmp_path / socket).exists(), server.communicate(timeout=5)[0]

        def setting(name: str) -> str:
            answer = subprocess.run(
                ["redis-cli", "-s", socket, "config", "get", name], cwd=tmp_path, capture_output=True, text=True
            )
            return answer.stdout.split()[1]

        limit = byte_count(run.config["workflow-platform:redisMemoryLimit"])
        assert int(setting("maxmemory")) == limit * 3 // 4
        assert setting("maxmemory-policy") == "volatile-lru"
    finally:
        server.terminate()
        server.wait(timeout=5)


def test_valkey_takes_every_password_from_our_secret(stack):
    objects = install(stack, "workflow-valkey").objects()
    assert not [o for o in objects if o["kind"] == "Secret"]
    pods = selected_pods(objects, {"app.kubernetes.io/instance": "workflow-valkey"})
    assert pods
    for _, pod in pods:
        assert {v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v} == {"workflow-valkey-users"}
    assert stack.one("Secret", "workflow-valkey-users")["stringData"].keys() == {"default", "replicator"}


def test_the_redis_url_host_is_the_valkey_service(stack):
    url = urlsplit(stack.one("Secret", "workflow-connections")["stringData"]["redis-url"])
    service_name, namespace = url.hostname.split(".")[:2]
    valkey = install(stack, "workflow-valkey")
    service = find(valkey.objects(), "Service", service_name)["spec"]
    assert namespace == valkey.namespace
    (port,) = [p for p in service["ports"] if p["port"] == url.port]
    pods = selected_pods(valkey.objects(), service["selector"])
    assert pods and all(port["targetPort"] in container_ports(spec) for _, spec in pods)


def test_the_rate_limit_store_is_a_service_its_valkey_release_creates(stack):
    backend = install(stack, "gateway-helm").values["config"]["envoyGateway"]["rateLimit"]["backend"]
    host, port = backend["redis"]["url"].rsplit(":", 1)
    service_name, namespace = host.split(".")[:2]
    (store,) = [i for i in installs(stack) if i.folder == VALKEY_SOURCE and i.namespace == namespace]
    service = find(store.objects(), "Service", service_name)["spec"]
    assert [p["port"] for p in service["ports"]] == [int(port)]
    assert selected_pods(store.objects(), service["selector"])


def test_the_valkey_pod_monitor_selects_the_exporter_port(stack):
    monitor = stack.one("PodMonitor", "valkey")["spec"]
    valkey = install(stack, "workflow-valkey")
    assert monitor["namespaceSelector"]["matchNames"] == [valkey.namespace]
    pods = selected_pods(valkey.objects(), monitor["selector"]["matchLabels"])
    assert pods
    for _, spec in pods:
        assert monitor["podMetricsEndpoints"][0]["port"] in container_ports(spec)


# Jaeger


def test_the_otlp_endpoint_is_a_service_and_port_jaeger_creates(stack):
    api = api_workload(stack)["spec"]["template"]["spec"]["containers"][0]
    (endpoint,) = [e["value"] for e in api["env"] if e["name"] == "OTEL_EXPORTER_OTLP_ENDPOINT"]
    url = urlsplit(endpoint)
    service_name, namespace = url.hostname.split(".")[:2]
    jaeger = install(stack, "jaeger")
    assert namespace == jaeger.namespace
    service = find(jaeger.objects(), "Service", service_name)["spec"]
    (port,) = [p for p in service["ports"] if p["port"] == url.port]
    assert port["name"] == "otlp-grpc"
    pods = selected_pods(jaeger.objects(), service["selector"])
    assert len(pods) == 1
    listening = {p["containerPort"] for c in pods[0][1]["containers"] for p in c["ports"]}
    assert port["targetPort"] in listening


# Operators: the objects they create are not rendered by a chart; their labels and ports are the operators' own.


def test_the_postgres_pod_monitor_uses_the_labels_and_port_cloudnative_pg_gives_instances(stack):
    # CloudNativePG labels every instance pod `cnpg.io/cluster: <cluster>` and serves its exporter on the container
    # port named `metrics` (9187): pkg/specs/pods.go and docs/src/monitoring.md of cloudnative-pg 1.30.
    monitor = stack.one("PodMonitor", "postgres")["spec"]
    assert monitor["selector"]["matchLabels"] == {"cnpg.io/cluster": "workflow-postgres"}
    assert monitor["podMetricsEndpoints"][0]["port"] == "metrics"


def test_the_rabbitmq_monitor_and_the_keda_host_name_the_service_the_operator_creates(stack):
    # The RabbitMQ Cluster Operator creates a Service named after the RabbitmqCluster, labelled
    # `app.kubernetes.io/name: <cluster>`, with ports `amqp` 5672 and `prometheus` 15692
    # (internal/resource/client_service.go, rabbitmq/cluster-operator v2.22.3).
    monitor = stack.one("ServiceMonitor", "rabbitmq")["spec"]
    assert monitor["selector"]["matchLabels"] == {"app.kubernetes.io/name": RABBITMQ_CLUSTER}
    assert monitor["endpoints"][0]["port"] == "prometheus"
    url = urlsplit(stack.one("Secret", "workflow-connections")["stringData"]["amqp-url"])
    assert url.hostname == f"{RABBITMQ_CLUSTER}.workflow-data.svc.cluster.local" and url.port == 5672


# kube-prometheus-stack


def test_dashboards_carry_the_label_grafanas_sidecar_watches(stack):
    values = install(stack, "kube-prometheus-stack").values["grafana"]["sidecar"]["dashboards"]
    assert (values["label"], values["labelValue"]) == (GRAFANA_DASHBOARD_LABEL, "1")
    # The chart hands these two keys to the grafana subchart's sidecar (and labels its own dashboards with them).
    reads = chart_reads(CHARTS / "kube-prometheus-stack-88.5.0")
    assert reads.reads(("grafana", "sidecar", "dashboards", "label"))
    assert reads.reads(("grafana", "sidecar", "dashboards", "labelValue"))
    for config_map in stack.kind("ConfigMap"):
        if config_map["metadata"]["name"].startswith("dashboard-"):
            assert config_map["metadata"]["labels"][values["label"]] == values["labelValue"]


# metrics-server


def test_metrics_server_serves_the_metrics_api_the_autoscalers_read(stack):
    metrics_server = install(stack, "metrics-server")
    namespace = stack.one("Namespace", metrics_server.namespace)
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    service = find(metrics_server.objects(), "APIService", "v1beta1.metrics.k8s.io")["spec"]["service"]
    assert (service["name"], service["namespace"]) == ("metrics-server", metrics_server.namespace)
    # KEDA's cpu and memory triggers become Resource metrics of the HPAs it creates, read from metrics.k8s.io.
    for scaled in stack.of_type("kubernetes:keda.sh/v1alpha1:ScaledObject"):
        assert stack.resource(HELM_CHART, "metrics-server").urn in scaled.depends_on, scaled.name


def test_the_network_admits_the_api_server_to_metrics_server_and_metrics_server_to_kubelets(stack):
    metrics_server = install(stack, "metrics-server")
    ((_, pod),) = selected_pods(metrics_server.objects(), {"app.kubernetes.io/name": "metrics-server"})
    port = container_ports(pod)["https"]
    policies = {
        p["metadata"]["name"]: p["spec"]
        for p in stack.kind("NetworkPolicy")
        if p["metadata"]["namespace"] == metrics_server.namespace
    }
    assert policies["kube-api-to-metrics-server-ingress"]["ingress"][0]["ports"] == [{"protocol": "TCP", "port": port}]
    assert policies["metrics-server-to-kubelets-egress"]["egress"][0]["ports"] == [{"protocol": "TCP", "port": 10250}]
    assert {"default-deny", "metrics-server-kube-api-egress"} <= policies.keys()


def test_metrics_server_is_left_to_a_shared_cluster_that_runs_one():
    run = run_stack("dev", {"addons": ["cert-manager"]})
    assert not [r for r in run.resources if r.type == HELM_CHART and r.name == "metrics-server"]
    assert "metrics-server" not in {n["metadata"]["name"] for n in run.kind("Namespace")}


# Chart-rendered pods


def test_every_pod_a_chart_renders_meets_its_namespace_pod_security_level(stack):
    levels = {
        n["metadata"]["name"]: n["metadata"]["labels"]["pod-security.kubernetes.io/enforce"]
        for n in stack.kind("Namespace")
    }
    checked, problems = 0, []
    for chart in installs(stack):
        level = levels[chart.namespace]
        for manifest in chart.objects():
            for pod in pod_specs(manifest):
                checked += 1
                where = f"{chart.folder.name} {manifest['kind']}/{manifest['metadata']['name']} ({level})"
                problems += [f"{where}: {problem}" for problem in pod_security_violations(pod, level)]
    assert checked >= 10
    assert problems == []


def test_the_pod_security_check_rejects_the_valkey_exporter_without_its_security_context():
    objects = render(VALKEY_SOURCE, "valkey", "workflow-data", {"metrics": {"enabled": True}})
    (deployment,) = [o for o in objects if o["kind"] == "Deployment"]
    problems = pod_security_violations(pod_specs(deployment)[0], "restricted")
    assert "metrics: allowPrivilegeEscalation is not false" in problems
    assert "metrics: does not drop ALL capabilities" in problems
    assert pod_security_violations(pod_specs(deployment)[0], "privileged") == []
