"""Workload defaults for everything the platform runs itself, written once: security, probes, spreading, disruption.

Every pod runs as a non-root user with a read-only root filesystem, no privilege escalation, every capability
dropped, the RuntimeDefault seccomp profile, requests and limits, and liveness and readiness probes. Components
build their pods with `pod_template` and `container` and their Deployments with `deployment` only, so no workload
can miss one of these.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from components.config import ROLLING_UPDATE_SURGE_PERCENT, Resources

# The UID the app image's Dockerfile creates; fixed so volumes and fsGroup agree across images.
APP_UID = 10001

SECCOMP_RUNTIME_DEFAULT = {"type": "RuntimeDefault"}

CONTAINER_SECURITY_CONTEXT = {
    "runAsNonRoot": True,
    "runAsUser": APP_UID,
    "runAsGroup": APP_UID,
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "privileged": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": SECCOMP_RUNTIME_DEFAULT,
}

POD_SECURITY_CONTEXT = {
    "runAsNonRoot": True,
    "runAsUser": APP_UID,
    "runAsGroup": APP_UID,
    "fsGroup": APP_UID,
    "seccompProfile": SECCOMP_RUNTIME_DEFAULT,
}

# Python and most libraries need a writable temp dir; it is the only writable path in the container.
_TMP_VOLUME = {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}}
_TMP_MOUNT = {"name": "tmp", "mountPath": "/tmp"}

# Credentials reach the app as files here, never as environment variables (which leak into crash dumps, `ps e`
# and child processes): each setting's `APP_<NAME>_FILE` names its file, and app/settings.py reads it.
SECRET_FILES_DIR = "/var/run/secrets/workflow"
# The kubelet writes Secret files owned by root and chowns them to the pod's fsGroup (APP_UID): group-read lets the
# app's UID read them, no one can write them, and no other user can read them.
SECRET_FILE_MODE = 0o440
_SECRETS_VOLUME = "secrets"


@dataclass(frozen=True)
class SecretFile:
    """One setting (`variable`, e.g. APP_DATABASE_URL) delivered as the file `key` of a Secret."""

    variable: str
    secret_name: pulumi.Input[str]
    key: str

    @property
    def path(self) -> str:
        return f"{SECRET_FILES_DIR}/{self.key}"


@dataclass(frozen=True)
class HttpProbes:
    """HTTP liveness and readiness endpoints of a container; liveness may have a port of its own."""

    port: str
    liveness_path: str = "/healthz"
    readiness_path: str = "/readyz"
    liveness_port: str | None = None

    def to_k8s(self) -> dict:
        liveness = {"path": self.liveness_path, "port": self.liveness_port or self.port}
        return {
            "livenessProbe": {
                "httpGet": liveness,
                "periodSeconds": 10,
                "timeoutSeconds": 2,
                "failureThreshold": 3,
            },
            "readinessProbe": {
                "httpGet": {"path": self.readiness_path, "port": self.port},
                "periodSeconds": 5,
                "timeoutSeconds": 2,
                "failureThreshold": 2,
            },
            # Slow starts (cold caches, migrations just finished) must not be killed by the liveness probe.
            "startupProbe": {
                "httpGet": liveness,
                "periodSeconds": 2,
                "failureThreshold": 30,
            },
        }


def database_pool_env(connections: int) -> list[dict]:
    """A process keeps at most `connections` to PostgreSQL open: the stack's connection budget counts on it."""
    return [
        {"name": "APP_DATABASE_POOL_SIZE", "value": str(connections)},
        {"name": "APP_DATABASE_POOL_OVERFLOW", "value": "0"},
    ]


def container(
    *,
    name: str,
    image: pulumi.Input[str],
    args: list[str],
    resources: Resources,
    probes: HttpProbes | None,
    ports: dict[str, int] | None = None,
    env: list[dict] | None = None,
) -> dict:
    """A hardened container. `probes` is None only for run-to-completion containers (Jobs), which have none."""
    spec = {
        "name": name,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "args": args,
        "ports": [{"name": port_name, "containerPort": number} for port_name, number in (ports or {}).items()],
        "env": env or [],
        "resources": resources.to_k8s(),
        "securityContext": CONTAINER_SECURITY_CONTEXT,
        "volumeMounts": [_TMP_MOUNT],
    }
    if probes is not None:
        spec.update(probes.to_k8s())
    return spec


def pod_template(
    *,
    labels: dict[str, str],
    selector: dict[str, str],
    service_account: pulumi.Input[str],
    containers: list[dict],
    termination_grace_seconds: int = 30,
    restart_policy: str = "Always",
    annotations: dict[str, str] | None = None,
    secret_files: Sequence[SecretFile] = (),
) -> dict:
    """A hardened pod template, spread across nodes and zones when it runs more than one replica. `secret_files`
    are mounted read-only into every container, each named to it by `<variable>_FILE`."""
    if secret_files:
        containers = [_with_secret_files(spec, secret_files) for spec in containers]
    spec = {
        "serviceAccountName": service_account,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": POD_SECURITY_CONTEXT,
        "terminationGracePeriodSeconds": termination_grace_seconds,
        "restartPolicy": restart_policy,
        "containers": containers,
        "volumes": [_TMP_VOLUME, *([_secrets_volume(secret_files)] if secret_files else [])],
    }
    if restart_policy == "Always":
        # ScheduleAnyway: a full node or zone delays spreading instead of blocking a scale-up.
        spec["topologySpreadConstraints"] = [
            {
                "maxSkew": 1,
                "topologyKey": key,
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": selector},
            }
            for key in ("kubernetes.io/hostname", "topology.kubernetes.io/zone")
        ]
    return {"metadata": {"labels": labels, "annotations": annotations or {}}, "spec": spec}


def _secrets_volume(files: Sequence[SecretFile]) -> dict:
    """One projected volume holding every file, whichever Secret it comes from; only the listed keys appear."""
    return {
        "name": _SECRETS_VOLUME,
        "projected": {
            "defaultMode": SECRET_FILE_MODE,
            "sources": [
                {"secret": {"name": file.secret_name, "items": [{"key": file.key, "path": file.key}]}} for file in files
            ],
        },
    }


def _with_secret_files(container_spec: dict, files: Sequence[SecretFile]) -> dict:
    return {
        **container_spec,
        "env": [*container_spec["env"], *({"name": f"{f.variable}_FILE", "value": f.path} for f in files)],
        "volumeMounts": [
            *container_spec["volumeMounts"],
            {"name": _SECRETS_VOLUME, "mountPath": SECRET_FILES_DIR, "readOnly": True},
        ],
    }


def service_account(name: str, namespace: pulumi.Input[str], labels: dict[str, str], opts: pulumi.ResourceOptions):
    """A ServiceAccount whose token is never mounted: platform pods do not talk to the Kubernetes API."""
    return k8s.core.v1.ServiceAccount(
        name,
        metadata={"name": name, "namespace": namespace, "labels": labels},
        automount_service_account_token=False,
        opts=opts,
    )


def disruption_budget(
    name: str,
    *,
    namespace: pulumi.Input[str],
    labels: dict[str, str],
    selector: dict[str, str],
    opts: pulumi.ResourceOptions,
) -> k8s.policy.v1.PodDisruptionBudget:
    """A budget that lets drains evict one pod of `selector` at a time, so a workload never goes down at once; every
    long-running workload (a Deployment, or a Rollout) has one."""
    return k8s.policy.v1.PodDisruptionBudget(
        name,
        metadata={"name": name, "namespace": namespace, "labels": labels},
        spec={"maxUnavailable": 1, "selector": {"matchLabels": selector}},
        opts=opts,
    )


def deployment(
    name: str,
    *,
    namespace: pulumi.Input[str],
    labels: dict[str, str],
    selector: dict[str, str],
    template: dict,
    opts: pulumi.ResourceOptions,
) -> k8s.apps.v1.Deployment:
    """A Deployment sized by an autoscaler, with a PodDisruptionBudget so drains never take it down at once.

    `replicas` is left out on purpose: the autoscaler owns it, and setting it here would reset the scale on every
    `pulumi up`.
    """
    disruption_budget(name, namespace=namespace, labels=labels, selector=selector, opts=opts)
    return k8s.apps.v1.Deployment(
        name,
        metadata={"name": name, "namespace": namespace, "labels": labels},
        spec={
            "selector": {"matchLabels": selector},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": f"{ROLLING_UPDATE_SURGE_PERCENT}%", "maxUnavailable": 0},
            },
            "revisionHistoryLimit": 5,
            "template": template,
        },
        opts=opts,
    )
