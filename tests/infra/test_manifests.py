"""Every Kubernetes object a stack creates is valid against the official schema of its kind, offline."""

import pytest

from tests.infra.validation import KUBERNETES_VERSION, validate


@pytest.fixture(scope="session")
def verdicts(stacks):
    return {name: [(manifest, validate(manifest)) for manifest in run.manifests()] for name, run in stacks.items()}


def test_every_builtin_object_passes_strict_schema_validation(stack, verdicts):
    failures = {
        f"{m['kind']}/{m['metadata']['name']}": verdict.errors
        for m, verdict in verdicts[stack.stack]
        if verdict.checked_by == "kubernetes" and verdict.errors
    }
    assert failures == {}, f"{stack.stack}: invalid against Kubernetes {KUBERNETES_VERSION}"


def test_every_custom_resource_passes_its_crd_schema(stack, verdicts):
    failures = {
        f"{m['kind']}/{m['metadata']['name']}": verdict.errors
        for m, verdict in verdicts[stack.stack]
        if verdict.checked_by == "crd" and verdict.errors
    }
    assert failures == {}, stack.stack


def test_no_custom_resource_goes_unchecked(stack, verdicts):
    unchecked = sorted(
        {f"{m['apiVersion']} {m['kind']}" for m, verdict in verdicts[stack.stack] if verdict.checked_by == "unchecked"}
    )
    assert unchecked == [], f"{stack.stack}: no schema in ../shared/crd-schemas for these kinds"


def test_the_builtin_validator_rejects_an_unknown_field():
    config_map = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "dataa": {}}
    verdict = validate(config_map)
    assert verdict.checked_by == "kubernetes" and "dataa" in verdict.errors[0]


def test_the_crd_validator_rejects_an_unknown_field():
    scaled_object = {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": "x"},
        "spec": {"scaleTargetRef": {"name": "x"}, "triggers": [], "minReplicas": 1},
    }
    verdict = validate(scaled_object)
    assert verdict.checked_by == "crd" and any("minReplicas" in error for error in verdict.errors)


def test_a_kind_without_any_schema_is_reported_unchecked():
    assert (
        validate({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "x"}}).checked_by
        == "unchecked"
    )
