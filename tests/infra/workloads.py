"""The API's workload as a stack renders it: a Deployment with rolling updates, or an Argo Rollouts Rollout with
blue-green (`apiDeployStrategy`); the pod template is the same either way."""

from __future__ import annotations

from tools.mock_stack import Resource, StackRun

API = "workflow-api"
API_KINDS = ("Deployment", "Rollout")
API_TYPES = ("kubernetes:apps/v1:Deployment", "kubernetes:argoproj.io/v1alpha1:Rollout")


def api_workload(run: StackRun) -> dict:
    """The manifest of the Deployment or Rollout that runs the API."""
    (found,) = [m for m in run.manifests() if m["kind"] in API_KINDS and m["metadata"]["name"] == API]
    return found


def api_resource(run: StackRun) -> Resource:
    (found,) = [r for r in run.resources if r.type in API_TYPES and r.name == API]
    return found
