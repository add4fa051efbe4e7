"""Workload defaults for everything the platform runs itself, written once: security, probes, spreading, disruption.

Every pod runs as a non-root user with a read-only root filesystem, no privilege escalation, every capability
dropped, the RuntimeDefault seccomp profile, requests and limits, and liveness and readiness probes. Components
build their pods with `pod_template` and `container` and their Deployments with `deployment` only, so no workload
can miss one of these.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from components.config import Resources

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


@dataclass(frozen=True)
class HttpProbes:
    """HTTP liveness and readiness endpoints of a container."""

    port: str
    liveness_path: str = "/healthz"
    readiness_path: str = "/readyz"

    def to_k8s(self) -> dict:
        return {
            "livenessProbe": {
                "httpGet": {"path": self.liveness_path, "port": self.port},
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
                "httpGet": {"path": self.liveness_path, "port": self.port},
                "periodSeconds": 2,
                "failureThreshold": 30,
            },
        }


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
) -> dict:
    """A hardened pod template, spread across nodes and zones when it runs more than one replica."""
    spec = {
        "serviceAccountName": service_account,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": POD_SECURITY_CONTEXT,
        "terminationGracePeriodSeconds": termination_grace_seconds,
        "restartPolicy": restart_policy,
        "containers": containers,
        "volumes": [_TMP_VOLUME],
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


def secret_env(name: str, secret_name: pulumi.Input[str], key: str) -> dict:
    """An environment variable read from a Secret, so no credential sits in a pod spec in plain text."""
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret_name, "key": key}}}


def namespace(
    name: str, *, pod_security: str, labels: dict[str, str], opts: pulumi.ResourceOptions
) -> k8s.core.v1.Namespace:
    """A namespace enforcing a Pod Security Standard level (`restricted` unless its workloads need more)."""
    return k8s.core.v1.Namespace(
        name,
        metadata={
            "name": name,
            "labels": {
                **labels,
                "kubernetes.io/metadata.name": name,
                "pod-security.kubernetes.io/enforce": pod_security,
                "pod-security.kubernetes.io/warn": "restricted",
            },
        },
        opts=opts,
    )


def service_account(name: str, namespace: pulumi.Input[str], labels: dict[str, str], opts: pulumi.ResourceOptions):
    """A ServiceAccount whose token is never mounted: platform pods do not talk to the Kubernetes API."""
    return k8s.core.v1.ServiceAccount(
        name,
        metadata={"name": name, "namespace": namespace, "labels": labels},
        automount_service_account_token=False,
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
    k8s.policy.v1.PodDisruptionBudget(
        name,
        metadata={"name": name, "namespace": namespace, "labels": labels},
        spec={"maxUnavailable": 1, "selector": {"matchLabels": selector}},
        opts=opts,
    )
    return k8s.apps.v1.Deployment(
        name,
        metadata={"name": name, "namespace": namespace, "labels": labels},
        spec={
            "selector": {"matchLabels": selector},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}},
            "revisionHistoryLimit": 5,
            "template": template,
        },
        opts=opts,
    )
