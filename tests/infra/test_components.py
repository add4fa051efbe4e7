"""What each of the five components creates, per stack, as a platform engineer reads it in a preview."""

import math

import pytest

from components.config import RESERVED_DATABASE_CONNECTIONS
from tests.infra.workloads import api_resource, api_workload
from tools.config_reference import README
from tools.mock_stack import HELM_CHART, HELM_RELEASE, reveal, run_stack

# What each environment runs, as the stack files promise it.
SIZES = {
    # stack: (api min-max, workers min-max, rabbitmq nodes, valkey nodes, postgres instances, retention, issuer)
    "dev": ((1, 2), (1, 3), 1, 1, 1, "3d", "letsencrypt-staging"),
    "staging": ((2, 10), (2, 20), 3, 3, 2, "7d", "letsencrypt-staging"),
    "prod": ((3, 50), (5, 100), 3, 3, 3, "30d", "letsencrypt-production"),
}


def chart(run, name):
    (found,) = [r for r in run.resources if r.type in (HELM_RELEASE, HELM_CHART) and r.name == name]
    return found


def env_of(container):
    return {variable["name"]: variable for variable in container["env"]}


def api_container(run):
    return api_workload(run)["spec"]["template"]["spec"]["containers"][0]


def worker_container(run):
    return run.one("Deployment", "workflow-worker")["spec"]["template"]["spec"]["containers"][0]


def test_the_readme_states_how_many_resources_each_stack_creates(stacks):
    header, row = [
        [cell.strip() for cell in line.strip("|").split("|")]
        for line in README.read_text().splitlines()
        if line.startswith(("| | dev |", "| Pulumi resources |"))
    ]
    # Pulumi counts the stack itself; under mocks only a process's first run registers it, so count it here.
    created = {n: 1 + sum(r.type != "pulumi:pulumi:Stack" for r in run.resources) for n, run in stacks.items()}
    assert dict(zip(header[1:], map(int, row[1:]), strict=True)) == created


@pytest.mark.parametrize("name", SIZES)
def test_each_stack_is_sized_for_its_environment(stacks, name):
    run = stacks[name]
    api, workers, rabbitmq, valkey, postgres, retention, issuer = SIZES[name]
    api_scaled = run.one("ScaledObject", "workflow-api")["spec"]
    scaled = run.one("ScaledObject", "workflow-worker")["spec"]
    values = chart(run, "kube-prometheus-stack").inputs["values"]
    valkey_replica = chart(run, "workflow-valkey").inputs["values"]["replica"]
    assert (api_scaled["minReplicaCount"], api_scaled["maxReplicaCount"]) == api
    assert (scaled["minReplicaCount"], scaled["maxReplicaCount"]) == workers
    assert run.one("RabbitmqCluster", "workflow-rabbitmq")["spec"]["replicas"] == rabbitmq
    assert 1 + (valkey_replica["replicas"] if valkey_replica["enabled"] else 0) == valkey
    assert run.one("Cluster", "workflow-postgres")["spec"]["instances"] == postgres
    assert values["prometheus"]["prometheusSpec"]["retention"] == retention
    assert run.one("Gateway", "workflow")["metadata"]["annotations"]["cert-manager.io/issuer"] == issuer


# AppTier


def test_the_api_rolls_out_only_after_migrations_succeed(stack):
    (migrations,) = stack.of_type("kubernetes:batch/v1:Job")
    api = api_resource(stack)
    assert migrations.urn in api.depends_on
    job = reveal(migrations.inputs)["spec"]["template"]["spec"]
    assert job["containers"][0]["args"] == ["migrate"] and job["restartPolicy"] == "Never"


def test_the_api_serves_the_container_contract(stack):
    container = api_container(stack)
    assert container["args"] == ["api"]
    assert container["ports"] == [
        {"name": "http", "containerPort": 8000},
        {"name": "liveness", "containerPort": 9100},
    ]
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert env_of(container)["APP_PORT"]["value"] == "8000"


def test_the_api_answers_liveness_on_the_port_its_liveness_thread_serves(stack):
    container = api_container(stack)
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "liveness"}
    assert container["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "liveness"}
    assert env_of(container)["APP_METRICS_PORT"]["value"] == "9100"


@pytest.mark.parametrize("role", ["api", "worker"])
def test_each_pod_holds_at_most_its_stacks_database_connections(stack, role):
    container = api_container(stack) if role == "api" else worker_container(stack)
    key = f"workflow-platform:{role}DatabaseConnections"
    assert env_of(container)["APP_DATABASE_POOL_SIZE"]["value"] == stack.config[key]
    assert env_of(container)["APP_DATABASE_POOL_OVERFLOW"]["value"] == "0"


@pytest.mark.parametrize("role", ["api", "worker"])
def test_api_and_workers_run_on_the_lease_timings_of_the_stack_file(stack, role):
    env = env_of(api_container(stack) if role == "api" else worker_container(stack))
    settings = {
        "APP_LEASE_S": "leaseSeconds",
        "APP_LEASE_RENEW_S": "leaseRenewSeconds",
        "APP_LEASE_GRACE_S": "leaseGraceSeconds",
        "APP_UNCLAIMED_REPUBLISH_S": "unclaimedRepublishSeconds",
    }
    assert {name: env[name]["value"] for name in settings} == {
        name: stack.config[f"workflow-platform:{key}"] for name, key in settings.items()
    }


def test_postgres_admits_every_connection_the_app_may_hold_at_its_peak(stack):
    def surging(workload: dict, replicas: int) -> int:
        if "blueGreen" in workload["spec"]["strategy"]:
            return 2 * replicas  # both versions in full, until the previous one scales down
        surge = workload["spec"]["strategy"]["rollingUpdate"]["maxSurge"]
        return math.ceil(replicas * (100 + int(surge.rstrip("%"))) / 100)

    api_pods = surging(api_workload(stack), stack.one("ScaledObject", "workflow-api")["spec"]["maxReplicaCount"])
    worker_pods = surging(
        stack.one("Deployment", "workflow-worker"),
        stack.one("ScaledObject", "workflow-worker")["spec"]["maxReplicaCount"],
    )
    per_pod = {
        role: int(env_of(container)["APP_DATABASE_POOL_SIZE"]["value"])
        for role, container in (("api", api_container(stack)), ("worker", worker_container(stack)))
    }
    peak = api_pods * per_pod["api"] + worker_pods * per_pod["worker"] + RESERVED_DATABASE_CONNECTIONS
    max_connections = stack.one("Cluster", "workflow-postgres")["spec"]["postgresql"]["parameters"]["max_connections"]
    assert peak <= int(max_connections)


def test_every_role_runs_the_same_image(stack):
    images = {
        container["image"]
        for kind in ("Deployment", "Rollout", "Job")
        for workload in stack.kind(kind)
        for container in workload["spec"]["template"]["spec"]["containers"]
    }
    (image,) = images
    assert "@sha256:" in image


def test_a_built_image_is_deployed_by_its_digest(stacks):
    (build,) = stacks["dev"].of_type("docker-build:index:Image")
    assert build.inputs["context"]["location"] == "app" and build.inputs["push"] is True
    assert api_container(stacks["dev"])["image"] == "ghcr.io/example-org/workflow-platform@" + build.outputs["digest"]


def test_a_pinned_digest_is_promoted_unchanged(stacks):
    for name in ("staging", "prod"):
        assert not stacks[name].of_type("docker-build:index:Image")
        assert api_container(stacks[name])["image"] == stacks[name].config["workflow-platform:image"]


def platform_pods(run):
    """Pod spec of each role: the API, the workers and the migrations Job."""
    return {
        workload["spec"]["template"]["spec"]["containers"][0]["name"]: workload["spec"]["template"]["spec"]
        for kind in ("Deployment", "Rollout", "Job")
        for workload in run.kind(kind)
    }


def secret_files_of(pod):
    """`APP_<NAME>_FILE` -> (Secret, key) of the file it names, through the container's mount of a projected volume."""
    (container,) = pod["containers"]
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    files = {}
    for mount in container["volumeMounts"]:
        for source in volumes[mount["name"]].get("projected", {}).get("sources", []):
            for item in source["secret"]["items"]:
                files[f"{mount['mountPath']}/{item['path']}"] = (source["secret"]["name"], item["key"])
    return {
        variable["name"]: files[variable["value"]]
        for variable in container["env"]
        if variable["name"].endswith("_FILE") and variable.get("value") in files
    }


CONNECTION_FILES = {
    "APP_DATABASE_URL_FILE": ("workflow-connections", "database-url"),
    "APP_AMQP_URL_FILE": ("workflow-connections", "amqp-url"),
    "APP_REDIS_URL_FILE": ("workflow-connections", "redis-url"),
}


def test_connection_settings_reach_every_role_as_files_of_the_secret(stack):
    pods = platform_pods(stack)
    assert set(pods) == {"api", "worker", "migrate"}
    for role, pod in pods.items():
        assert secret_files_of(pod) == CONNECTION_FILES | (
            {"APP_BOOTSTRAP_API_KEY_FILE": ("workflow-bootstrap-api-key", "api-key")} if role == "api" else {}
        ), role


def test_no_secret_reaches_a_container_as_an_environment_variable(stack):
    for role, pod in platform_pods(stack).items():
        for container in pod["containers"]:
            assert "envFrom" not in container, role
            assert [v["name"] for v in container["env"] if "secretKeyRef" in v.get("valueFrom", {})] == [], role


def test_secret_files_are_read_only_and_readable_by_the_app_group_alone(stack):
    for role, pod in platform_pods(stack).items():
        secret_volumes = {v["name"]: v["projected"] for v in pod["volumes"] if "projected" in v}
        assert secret_volumes, role
        # The kubelet writes the files as root and gives them the pod's fsGroup, the app's group.
        assert pod["securityContext"]["fsGroup"] == pod["containers"][0]["securityContext"]["runAsGroup"], role
        for projected in secret_volumes.values():
            assert projected["defaultMode"] == 0o440, role
        mounts = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] in secret_volumes]
        assert mounts and all(m["readOnly"] is True for m in mounts), role


def test_connection_urls_point_at_the_stack_data_services(stack):
    data = stack.one("Secret", "workflow-connections")["stringData"]
    assert data["database-url"].startswith("postgresql://workflow:")
    assert data["database-url"].endswith("@workflow-postgres-rw.workflow-data.svc.cluster.local:5432/workflow")
    assert data["amqp-url"].startswith("amqp://workflow:")
    assert data["amqp-url"].endswith("@workflow-rabbitmq.workflow-data.svc.cluster.local:5672/%2F")
    assert data["redis-url"].startswith("redis://default:")
    assert data["redis-url"].endswith("@workflow-valkey.workflow-data.svc.cluster.local:6379/0")


def test_the_api_scales_up_fast_on_requests_cpu_and_memory(stack):
    scaled = stack.one("ScaledObject", "workflow-api")["spec"]
    assert {trigger["type"] for trigger in scaled["triggers"]} == {"prometheus", "cpu", "memory"}
    behavior = scaled["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleUp"]["stabilizationWindowSeconds"] == 0
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] >= 60


def test_the_api_spreads_across_nodes_and_zones(stack):
    spread = api_workload(stack)["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert {constraint["topologyKey"] for constraint in spread} == {
        "kubernetes.io/hostname",
        "topology.kubernetes.io/zone",
    }


# WorkerPool


def test_scale_down_never_kills_a_running_step(stack):
    pod = stack.one("Deployment", "workflow-worker")["spec"]["template"]["spec"]
    longest_step = int(stack.config["workflow-platform:workerMaxTaskTimeoutSeconds"])
    assert pod["terminationGracePeriodSeconds"] > longest_step


def test_workers_scale_on_the_length_of_their_queue(stack):
    scaled = stack.one("ScaledObject", "workflow-worker")["spec"]
    (trigger,) = [trigger for trigger in scaled["triggers"] if trigger["type"] == "rabbitmq"]
    assert trigger["metadata"]["queueName"] == stack.config["workflow-platform:workerQueue"]
    assert trigger["metadata"]["value"] == stack.config["workflow-platform:workerQueueLengthTarget"]
    auth = stack.one("TriggerAuthentication", trigger["authenticationRef"]["name"])["spec"]
    assert auth["secretTargetRef"] == [{"parameter": "host", "name": "workflow-connections", "key": "amqp-url"}]


def test_workers_serve_health_and_metrics_on_their_port(stack):
    container = worker_container(stack)
    assert container["args"] == ["worker"]
    assert container["ports"] == [{"name": "metrics", "containerPort": 9100}]
    assert env_of(container)["APP_METRICS_PORT"]["value"] == "9100"


# DataPlane


def test_postgres_runs_on_cloudnative_pg_with_generated_credentials(stack):
    cluster = stack.one("Cluster", "workflow-postgres")["spec"]
    assert cluster["bootstrap"]["initdb"]["secret"]["name"] == "workflow-postgres-app-credentials"
    assert cluster["storage"]["size"] == stack.config["workflow-platform:postgresStorageSize"]
    assert cluster["affinity"]["enablePodAntiAffinity"] is True
    credentials = stack.one("Secret", "workflow-postgres-app-credentials")
    assert credentials["type"] == "kubernetes.io/basic-auth"
    assert credentials["stringData"]["password"] in stack.generated_passwords()


def test_rabbitmq_defaults_to_quorum_queues_with_generated_credentials(stack):
    cluster = stack.one("RabbitmqCluster", "workflow-rabbitmq")["spec"]
    assert "default_queue_type = quorum" in cluster["rabbitmq"]["additionalConfig"]
    assert cluster["persistence"]["storage"] == stack.config["workflow-platform:rabbitmqStorageSize"]
    user = stack.one("Secret", cluster["secretBackend"]["externalSecret"]["name"])["stringData"]
    assert user["password"] in stack.generated_passwords()
    assert f"default_pass = {user['password']}" in user["default_user.conf"]


def test_valkey_runs_from_its_official_chart_with_auth_persistence_and_exporter(stack):
    valkey = chart(stack, "workflow-valkey").inputs
    assert valkey["repositoryOpts"]["repo"] == "https://valkey.io/valkey-helm/"
    values = valkey["values"]
    assert values["auth"]["enabled"] is True and values["auth"]["usersExistingSecret"] == "workflow-valkey-users"
    size = stack.config["workflow-platform:redisStorageSize"]
    assert values["dataStorage"]["requestedSize"] == values["replica"]["persistence"]["size"] == size
    assert values["metrics"]["enabled"] is True


# Observability


def test_prometheus_scrapes_the_api_and_the_workers(stack):
    monitors = {m["metadata"]["name"]: m["spec"] for m in stack.kind("ServiceMonitor")}
    pod_monitors = {m["metadata"]["name"]: m["spec"] for m in stack.kind("PodMonitor")}
    assert pod_monitors["workflow-api"]["namespaceSelector"] == {"matchNames": ["workflow"]}
    assert pod_monitors["workflow-api"]["podMetricsEndpoints"][0]["port"] == "http"
    assert monitors["workflow-worker"]["endpoints"][0]["port"] == "metrics"
    assert {"postgres", "valkey"} <= pod_monitors.keys()


def test_traces_go_to_jaeger_over_otlp(stack):
    jaeger = chart(stack, "jaeger")
    # No `userconfig`: Jaeger runs its built-in all-in-one configuration, OTLP in and traces kept in memory.
    assert "userconfig" not in jaeger.inputs["values"]
    endpoint = env_of(api_container(stack))["OTEL_EXPORTER_OTLP_ENDPOINT"]["value"]
    assert endpoint == "http://jaeger.workflow-observability.svc.cluster.local:4317"


def test_grafana_admin_password_is_generated(stack):
    values = chart(stack, "kube-prometheus-stack").inputs["values"]
    secret = stack.one("Secret", values["grafana"]["admin"]["existingSecret"])
    assert secret["stringData"]["admin-password"] in stack.generated_passwords()


# EdgeIngress


def test_the_gateway_serves_api_and_websocket_hosts_over_https(stack):
    domain = stack.config["workflow-platform:domain"]
    listeners = {listener["name"]: listener for listener in stack.one("Gateway", "workflow")["spec"]["listeners"]}
    assert listeners["https-api"]["hostname"] == f"api.{domain}"
    assert listeners["https-ws"]["hostname"] == f"ws.{domain}"
    assert all(listeners[name]["tls"]["mode"] == "Terminate" for name in ("https-api", "https-ws"))


def test_plain_http_is_redirected_to_https(stack):
    (rule,) = stack.one("HTTPRoute", "https-redirect")["spec"]["rules"]
    assert rule["filters"] == [{"type": "RequestRedirect", "requestRedirect": {"scheme": "https", "statusCode": 301}}]


def test_certificates_come_from_the_stack_lets_encrypt_issuer(stack):
    issuer_name = stack.config["workflow-platform:tlsIssuer"]
    acme = stack.one("Issuer", issuer_name)["spec"]["acme"]
    production = issuer_name == "letsencrypt-production"
    assert ("acme-staging" not in acme["server"]) == production
    assert acme["solvers"][0]["http01"]["gatewayHTTPRoute"]["parentRefs"][0]["sectionName"] == "http"


def test_each_client_is_rate_limited_and_request_bodies_are_capped(stack):
    """How the per-client limit is enforced (global, both address families) is tested in test_edge.py."""
    policies = {p["metadata"]["name"]: p["spec"] for p in stack.kind("BackendTrafficPolicy")}
    limit = int(stack.config["workflow-platform:edgeRateLimitPerClient"])
    for route in ("api", "ws"):
        rules = policies[route]["rateLimit"]["global"]["rules"]
        assert rules and all(rule["limit"] == {"requests": limit, "unit": "Second"} for rule in rules)
    assert policies["api"]["requestBuffer"]["limit"] == stack.config["workflow-platform:edgeMaxRequestBodySize"]
    assert "requestBuffer" not in policies["ws"]


def test_routes_reach_the_api_service_through_a_reference_grant(stack):
    for route in ("api", "ws"):
        for rule in stack.one("HTTPRoute", route)["spec"]["rules"]:
            assert rule["backendRefs"] == [{"name": "workflow-api", "namespace": "workflow", "port": 8000}]
    grant = stack.one("ReferenceGrant", "edge-routes")
    assert grant["metadata"]["namespace"] == "workflow"
    assert grant["spec"]["to"] == [{"group": "", "kind": "Service", "name": "workflow-api"}]


# Add-ons


def test_cluster_add_ons_can_be_left_to_a_shared_cluster():
    run = run_stack("dev", {"addons": []})
    installed = {r.name for r in run.resources if r.type in (HELM_RELEASE, HELM_CHART)}
    assert installed == {"jaeger", "workflow-valkey"}
    assert not run.kind("GatewayClass")
    assert run.one("Gateway", "workflow")["spec"]["gatewayClassName"] == "envoy-gateway"
    assert {n["metadata"]["name"] for n in run.kind("Namespace")} == {
        "workflow",
        "workflow-data",
        "workflow-observability",
        "workflow-edge",
    }


def test_every_add_on_is_installed_when_listed(stack):
    installed = {r.name for r in stack.resources if r.type in (HELM_RELEASE, HELM_CHART)}
    assert installed >= {"cert-manager", "gateway-helm", "keda", "cloudnative-pg", "kube-prometheus-stack"}
    assert stack.of_type("kubernetes:yaml/v2:ConfigFile")
