"""The policy pack's validators, called directly on passing and failing resources (as pulumi-policy's docs test
policies: a validation function, resource props and a report callback), then the pack itself through pulumi-policy's
own argument types."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

from policy import validators

POLICY_DIR = Path(__file__).resolve().parents[2] / "policy"

DEPLOYMENT = "kubernetes:apps/v1:Deployment"
ROLLOUT = "kubernetes:argoproj.io/v1alpha1:Rollout"
JOB = "kubernetes:batch/v1:Job"
CRONJOB = "kubernetes:batch/v1:CronJob"
SERVICE = "kubernetes:core/v1:Service"
CONFIG_MAP = "kubernetes:core/v1:ConfigMap"
BUDGET = "kubernetes:policy/v1:PodDisruptionBudget"

PINNED = "ghcr.io/example-org/workflow-platform@sha256:" + "3f" * 32
CONTAINER_CONTEXT = {
    "runAsNonRoot": True,
    "runAsUser": 10001,
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "privileged": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}
POD_CONTEXT = {"runAsNonRoot": True, "runAsUser": 10001, "seccompProfile": {"type": "RuntimeDefault"}}
API_LABELS = {"app.kubernetes.io/name": "workflow-api"}


def urn(resource_type: str, name: str, stack: str = "prod", parents: tuple[str, ...] = ()) -> str:
    qualified = "$".join(("workflow-platform:index:AppTier", *parents, resource_type))
    return f"urn:pulumi:{stack}::workflow-platform::{qualified}::{name}"


def container(name: str = "api", **changes) -> dict:
    return {
        "name": name,
        "image": PINNED,
        "env": [{"name": "APP_DATABASE_URL_FILE", "value": "/var/run/secrets/workflow/database-url"}],
        "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"cpu": "1", "memory": "512Mi"}},
        "securityContext": CONTAINER_CONTEXT,
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http"}},
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http"}},
    } | changes


def hardened(**context_changes) -> dict:
    return {**CONTAINER_CONTEXT, **context_changes}


def workload(*containers: dict, namespace: str = "workflow", labels: dict | None = None, **pod_changes) -> dict:
    labels = labels or API_LABELS
    pod = {"securityContext": POD_CONTEXT, "containers": list(containers or [container()])} | pod_changes
    return {
        "metadata": {"name": "workflow-api", "namespace": namespace},
        "spec": {"selector": {"matchLabels": labels}, "template": {"metadata": {"labels": labels}, "spec": pod}},
    }


def budget(namespace: str = "workflow", selector: dict | None = None) -> dict:
    return {
        "metadata": {"name": "workflow-api", "namespace": namespace},
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector or API_LABELS}},
    }


def reported(validator, resource_type: str, props: dict, **options) -> list[str]:
    messages: list[str] = []
    validator(resource_type, props, messages.append, **options)
    return messages


def reported_for_stack(resources: list[validators.Resource]) -> list[tuple[str, str | None]]:
    messages: list[tuple[str, str | None]] = []
    validators.every_deployment_has_a_disruption_budget(resources, lambda message, at: messages.append((message, at)))
    return messages


# Pod security


def test_a_hardened_deployment_passes_every_resource_validator():
    for validator in validators.RESOURCE_VALIDATORS:
        assert reported(validator, DEPLOYMENT, workload()) == [], validator.__name__


def test_a_container_that_may_run_as_root_is_reported():
    props = workload(container(securityContext=hardened(runAsNonRoot=False)), securityContext={})

    assert reported(validators.restricted_pod_security, DEPLOYMENT, props) == [
        "container 'api': runAsNonRoot must be true (in its or the pod's securityContext)"
    ]


def test_run_as_non_root_on_the_pod_covers_its_containers():
    context = {key: value for key, value in CONTAINER_CONTEXT.items() if key != "runAsNonRoot"}

    assert reported(validators.restricted_pod_security, DEPLOYMENT, workload(container(securityContext=context))) == []


def test_a_container_running_as_uid_0_is_reported():
    props = workload(container(securityContext=hardened(runAsUser=0)))

    assert reported(validators.restricted_pod_security, DEPLOYMENT, props) == [
        "container 'api': runs as root (runAsUser: 0)"
    ]


def test_privilege_escalation_is_reported():
    props = workload(container(securityContext=hardened(allowPrivilegeEscalation=True)))

    assert reported(validators.restricted_pod_security, DEPLOYMENT, props) == [
        "container 'api': allowPrivilegeEscalation must be false"
    ]


def test_a_privileged_container_is_reported():
    props = workload(container(securityContext=hardened(privileged=True)))

    assert reported(validators.restricted_pod_security, DEPLOYMENT, props) == [
        "container 'api': must not be privileged"
    ]


def test_a_container_that_keeps_its_capabilities_is_reported():
    props = workload(container(securityContext=hardened(capabilities={"drop": ["NET_RAW"]})))

    assert reported(validators.restricted_pod_security, DEPLOYMENT, props) == [
        "container 'api': must drop ALL capabilities and add none"
    ]


def test_a_container_that_adds_a_capability_is_reported():
    props = workload(container(securityContext=hardened(capabilities={"drop": ["ALL"], "add": ["NET_ADMIN"]})))

    assert reported(validators.restricted_pod_security, DEPLOYMENT, props) == [
        "container 'api': must drop ALL capabilities and add none"
    ]


def test_a_pod_without_the_runtime_default_seccomp_profile_is_reported():
    context = {key: value for key, value in CONTAINER_CONTEXT.items() if key != "seccompProfile"}
    props = workload(container(securityContext=context), securityContext={"runAsNonRoot": True})

    assert reported(validators.restricted_pod_security, DEPLOYMENT, props) == [
        "container 'api': seccompProfile must be RuntimeDefault (in its or the pod's securityContext)"
    ]


def test_a_writable_root_filesystem_is_reported():
    props = workload(container(securityContext=hardened(readOnlyRootFilesystem=False)))

    assert reported(validators.restricted_pod_security, DEPLOYMENT, props) == [
        "container 'api': readOnlyRootFilesystem must be true"
    ]


def test_a_pod_sharing_the_host_network_is_reported():
    assert reported(validators.restricted_pod_security, DEPLOYMENT, workload(hostNetwork=True)) == [
        "the pod shares the node's Network namespace (hostNetwork: true)"
    ]


def test_init_containers_are_held_to_the_same_pod_security():
    props = workload(initContainers=[container("wait", securityContext=hardened(readOnlyRootFilesystem=False))])

    assert reported(validators.restricted_pod_security, DEPLOYMENT, props) == [
        "container 'wait': readOnlyRootFilesystem must be true"
    ]


def test_a_cronjob_pod_is_checked_in_its_job_template():
    pod = {"securityContext": {}, "containers": [container(securityContext={})]}
    props = {"spec": {"jobTemplate": {"spec": {"template": {"spec": pod}}}}}

    assert len(reported(validators.restricted_pod_security, CRONJOB, props)) == 5


# Requests and limits


def test_a_container_without_limits_is_reported():
    props = workload(container(resources={"requests": {"cpu": "250m", "memory": "256Mi"}}))

    assert reported(validators.requests_and_limits, DEPLOYMENT, props) == ["container 'api': no limits for cpu, memory"]


def test_a_container_requesting_no_memory_is_reported():
    resources = {"requests": {"cpu": "250m"}, "limits": {"cpu": "1", "memory": "512Mi"}}

    assert reported(validators.requests_and_limits, JOB, workload(container(resources=resources))) == [
        "container 'api': no requests for memory"
    ]


# Probes


def test_a_deployment_container_without_a_readiness_probe_is_reported():
    props = workload(container(readinessProbe=None))

    assert reported(validators.probes, DEPLOYMENT, props) == ["container 'api': no readinessProbe"]


def test_a_rollout_container_without_probes_is_reported():
    props = workload(container(livenessProbe=None, readinessProbe=None))

    assert reported(validators.probes, ROLLOUT, props) == ["container 'api': no livenessProbe nor readinessProbe"]


def test_a_job_runs_to_completion_without_probes():
    assert reported(validators.probes, JOB, workload(container(livenessProbe=None, readinessProbe=None))) == []


def test_a_rollout_referencing_its_workload_has_no_pod_to_check():
    props = {"spec": {"workloadRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "workflow-api"}}}

    assert reported(validators.probes, ROLLOUT, props) == []


# Images


def test_an_image_by_tag_is_reported_outside_dev():
    props = workload(container(image="ghcr.io/example-org/workflow-platform:1.4.2"))

    assert reported(validators.images_pinned_by_digest, DEPLOYMENT, props, stack="staging") == [
        "container 'api': image 'ghcr.io/example-org/workflow-platform:1.4.2' is not pinned by digest (@sha256:...)"
    ]


def test_an_image_by_tag_is_allowed_in_dev_by_default():
    props = workload(container(image="ghcr.io/example-org/workflow-platform:latest"))

    assert reported(validators.images_pinned_by_digest, DEPLOYMENT, props, stack="dev") == []


def test_the_stacks_that_may_run_tags_are_configurable():
    props = workload(container(image="ghcr.io/example-org/workflow-platform:latest"))

    assert reported(validators.images_pinned_by_digest, DEPLOYMENT, props, stack="dev", unpinned_allowed_in=()) != []


def test_a_digest_pinned_image_passes_in_prod():
    assert reported(validators.images_pinned_by_digest, DEPLOYMENT, workload(), stack="prod") == []


# Services


def test_a_load_balancer_service_is_reported():
    props = {"spec": {"type": "LoadBalancer", "ports": [{"port": 443}]}}

    assert reported(validators.no_load_balancer_service, SERVICE, props) == [
        "a LoadBalancer Service bypasses the Gateway; expose it through an HTTPRoute instead"
    ]


def test_a_cluster_ip_service_passes():
    assert reported(validators.no_load_balancer_service, SERVICE, {"spec": {"ports": [{"port": 8000}]}}) == []


# Credentials


def test_a_password_in_a_plain_env_value_is_reported():
    props = workload(container(env=[{"name": "POSTGRES_PASSWORD", "value": "hunter2"}]))

    assert reported(validators.no_plain_text_credentials, DEPLOYMENT, props) == [
        "container 'api': env POSTGRES_PASSWORD looks like a credential set in plain text; "
        "use a Secret (file or secretKeyRef)"
    ]


def test_a_credential_from_a_secret_key_ref_passes():
    reference = {"secretKeyRef": {"name": "workflow-connection", "key": "password"}}
    props = workload(container(env=[{"name": "POSTGRES_PASSWORD", "valueFrom": reference}]))

    assert reported(validators.no_plain_text_credentials, DEPLOYMENT, props) == []


def test_a_variable_naming_a_credential_file_passes():
    props = workload(container(env=[{"name": "APP_BOOTSTRAP_API_KEY_FILE", "value": "/var/run/secrets/x/api-key"}]))

    assert reported(validators.no_plain_text_credentials, DEPLOYMENT, props) == []


def test_a_url_with_a_password_in_a_plain_env_value_is_reported():
    props = workload(container(env=[{"name": "APP_DATABASE_URL", "value": "postgresql://app:hunter2@db:5432/app"}]))

    assert reported(validators.no_plain_text_credentials, DEPLOYMENT, props) == [
        "container 'api': env APP_DATABASE_URL holds a URL with a password in plain text; "
        "use a Secret (file or secretKeyRef)"
    ]


def test_a_url_without_credentials_passes():
    props = workload(container(env=[{"name": "OTEL_EXPORTER_OTLP_ENDPOINT", "value": "http://jaeger:4317"}]))

    assert reported(validators.no_plain_text_credentials, DEPLOYMENT, props) == []


def test_a_config_map_key_named_like_a_credential_is_reported():
    props = {"data": {"api-token": "abc", "log-level": "info"}}

    assert reported(validators.no_plain_text_credentials, CONFIG_MAP, props) == [
        "ConfigMap key 'api-token' looks like a credential; keep it in a Secret"
    ]


def test_a_config_map_value_with_a_url_password_is_reported():
    props = {"data": {"broker": "amqp://app:hunter2@rabbitmq:5672/"}}

    assert reported(validators.no_plain_text_credentials, CONFIG_MAP, props) == [
        "ConfigMap key 'broker' holds a URL with a password; keep it in a Secret"
    ]


# Disruption budgets


def test_a_deployment_with_a_budget_selecting_its_pods_passes():
    resources = [validators.Resource(DEPLOYMENT, workload()), validators.Resource(BUDGET, budget())]

    assert reported_for_stack(resources) == []


def test_a_deployment_without_a_budget_is_reported_at_its_urn():
    api = urn(DEPLOYMENT, "workflow-api")

    assert reported_for_stack([validators.Resource(DEPLOYMENT, workload(), api)]) == [
        ("Deployment 'workflow-api' has no PodDisruptionBudget", api)
    ]


def test_a_budget_in_another_namespace_does_not_count():
    resources = [validators.Resource(DEPLOYMENT, workload()), validators.Resource(BUDGET, budget("workflow-data"))]

    assert len(reported_for_stack(resources)) == 1


def test_a_budget_selecting_other_pods_does_not_count():
    other = validators.Resource(BUDGET, budget(selector={"app.kubernetes.io/name": "workflow-worker"}))

    assert len(reported_for_stack([validators.Resource(DEPLOYMENT, workload()), other])) == 1


def test_a_rollout_needs_a_budget_too():
    assert reported_for_stack([validators.Resource(ROLLOUT, workload())]) == [
        ("Rollout 'workflow-api' has no PodDisruptionBudget", "")
    ]


# Resources the validators do not know


@pytest.mark.parametrize(
    "resource_type",
    ["random:index/randomPassword:RandomPassword", "aws:s3/bucket:Bucket", "kubernetes:helm.sh/v4:Chart"],
)
def test_resources_of_other_kinds_and_providers_are_left_alone(resource_type):
    props = {"spec": {"type": "LoadBalancer"}, "data": {"password": "x"}, "result": "hunter2"}

    for validator in validators.RESOURCE_VALIDATORS:
        assert reported(validator, resource_type, props) == [], validator.__name__


def test_the_stack_is_read_from_the_urn():
    assert validators.stack_of(urn(DEPLOYMENT, "workflow-api", stack="staging")) == "staging"


def test_children_of_a_helm_chart_are_third_party():
    child = urn(DEPLOYMENT, "keda:workflow/keda-operator", parents=("kubernetes:helm.sh/v4:Chart",))

    assert validators.rendered_from_third_party(child)
    assert not validators.rendered_from_third_party(urn(DEPLOYMENT, "workflow-api"))


def test_the_validators_read_the_proxies_pulumi_policy_hands_them():
    from pulumi_policy.proxy import unknown_checking_proxy

    props = unknown_checking_proxy(workload(container(securityContext=hardened(privileged=True))))

    assert reported(validators.restricted_pod_security, DEPLOYMENT, props) == [
        "container 'api': must not be privileged"
    ]


# The pack, through pulumi-policy's own types


@pytest.fixture(scope="module")
def pack_policies():
    """The pack's policies, loaded as Pulumi loads the directory but without starting the pack's server."""
    return {
        policy.name: policy for policy in runpy.run_path(str(POLICY_DIR), run_name="policy_under_test")["policies"]()
    }


def validate(policy, resource_type: str, props: dict, resource_urn: str, config: dict | None = None) -> list[str]:
    from pulumi_policy import ResourceValidationArgs

    messages: list[str] = []
    args = ResourceValidationArgs(resource_type, props, resource_urn, "workflow-api", None, None, config)
    policy.validate(args, lambda message, at=None: messages.append(message))
    return messages


def test_the_pack_holds_one_policy_per_invariant(pack_policies):
    assert set(pack_policies) == {
        "restricted-pod-security",
        "requests-and-limits",
        "liveness-and-readiness-probes",
        "images-pinned-by-digest",
        "disruption-budget-for-every-deployment",
        "no-load-balancer-service",
        "no-plain-text-credentials",
    }


def test_the_pack_reports_what_its_validator_reports(pack_policies):
    props = workload(container(securityContext=hardened(readOnlyRootFilesystem=False)))

    assert validate(pack_policies["restricted-pod-security"], DEPLOYMENT, props, urn(DEPLOYMENT, "workflow-api")) == [
        "container 'api': readOnlyRootFilesystem must be true"
    ]


def test_the_pack_leaves_workloads_rendered_by_a_chart_to_the_chart_tests(pack_policies):
    props = workload(container(securityContext={}))
    child = urn(DEPLOYMENT, "keda:workflow/keda-operator", parents=("kubernetes:helm.sh/v4:Chart",))

    assert validate(pack_policies["restricted-pod-security"], DEPLOYMENT, props, child) == []


def test_the_pack_judges_a_load_balancer_service_rendered_by_a_chart(pack_policies):
    child = urn(SERVICE, "jaeger:workflow/jaeger", parents=("kubernetes:helm.sh/v4:Chart",))

    assert validate(pack_policies["no-load-balancer-service"], SERVICE, {"spec": {"type": "LoadBalancer"}}, child)


def test_the_pack_takes_the_stack_from_the_urn_and_the_allowed_stacks_from_its_config(pack_policies):
    policy = pack_policies["images-pinned-by-digest"]
    props = workload(container(image="ghcr.io/example-org/workflow-platform:latest"))

    assert validate(policy, DEPLOYMENT, props, urn(DEPLOYMENT, "workflow-api", stack="dev")) == []
    assert validate(policy, DEPLOYMENT, props, urn(DEPLOYMENT, "workflow-api", stack="prod")) != []
    config = {validators.UNPINNED_IMAGES_CONFIG: ["dev", "prod"]}
    assert validate(policy, DEPLOYMENT, props, urn(DEPLOYMENT, "workflow-api", stack="prod"), config) == []
