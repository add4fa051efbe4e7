"""What `make manifests` writes can be applied: read back from the files, every field Kubernetes types as an integer
holds a YAML integer. Kubernetes' decoders refuse `replicas: 5.0` where an int32 is expected."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tools.kube_typing import NoSchemaError, integer_fields, with_integers
from tools.mock_stack import STACKS

THIRD_PARTY = "third-party.yaml"


def manifest_files(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*.yaml") if path.name != THIRD_PARTY)


def floats_in_integer_fields(folder: Path) -> tuple[list[str], int]:
    """Each float found where the schema says integer, as `file: path = value`, and how many integer fields were
    checked in all."""
    floats, checked = [], 0
    for path in manifest_files(folder):
        manifest = yaml.safe_load(path.read_text())
        try:
            fields = list(integer_fields(manifest))
        except NoSchemaError as error:
            floats.append(f"{path.relative_to(folder)}: {error}")
            continue
        checked += len(fields)
        floats.extend(
            f"{path.relative_to(folder)}: {'.'.join(map(str, field))} = {value!r}"
            for field, value in fields
            if isinstance(value, float)
        )
    return floats, checked


@pytest.mark.parametrize("stack", STACKS)
def test_written_manifests_hold_integers_where_kubernetes_types_integer(rendered, stack):
    floats, checked = floats_in_integer_fields(rendered / stack)
    assert floats == []
    # Every pod's UID and every NetworkPolicy port alone make hundreds: the walk must reach them.
    assert checked > 100


@pytest.mark.parametrize(
    "written", ["dev/workflow/deployment-workflow-api.yaml", "prod/workflow/rollout-workflow-api.yaml"]
)
def test_the_app_uid_is_written_as_an_integer(rendered, written):
    api = yaml.safe_load((rendered / written).read_text())
    assert type(api["spec"]["template"]["spec"]["securityContext"]["runAsUser"]) is int


def test_a_float_in_an_integer_field_is_reported_with_its_file_and_path(tmp_path):
    (tmp_path / "workflow").mkdir()
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "api", "namespace": "workflow"},
        "spec": {
            "replicas": 5.0,
            "selector": {"matchLabels": {"app": "api"}},
            "template": {
                "metadata": {"labels": {"app": "api"}},
                "spec": {"securityContext": {"runAsUser": 10001}, "containers": [{"name": "api", "image": "a"}]},
            },
        },
    }
    policy = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "dns", "namespace": "workflow"},
        "spec": {"podSelector": {}, "egress": [{"ports": [{"port": 53.0, "protocol": "UDP"}]}]},
    }
    cluster = {
        "apiVersion": "postgresql.cnpg.io/v1",
        "kind": "Cluster",
        "metadata": {"name": "pg", "namespace": "workflow"},
        "spec": {"instances": 3.0},
    }
    for name, manifest in (("deployment-api", deployment), ("networkpolicy-dns", policy), ("cluster-pg", cluster)):
        (tmp_path / "workflow" / f"{name}.yaml").write_text(yaml.safe_dump(manifest))

    floats, _ = floats_in_integer_fields(tmp_path)

    assert floats == [
        "workflow/cluster-pg.yaml: spec.instances = 3.0",
        "workflow/deployment-api.yaml: spec.replicas = 5.0",
        # An int-or-string field holding a number is an integer too.
        "workflow/networkpolicy-dns.yaml: spec.egress.0.ports.0.port = 53.0",
    ]


def test_only_whole_numbers_become_integers_so_validation_still_rejects_a_fraction():
    manifest = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "api", "annotations": {"ratio": 2.0}},
        "spec": {"replicas": 2.5, "revisionHistoryLimit": 5.0},
    }
    typed = with_integers(manifest)
    assert typed["spec"] == {"replicas": 2.5, "revisionHistoryLimit": 5}
    assert type(typed["spec"]["revisionHistoryLimit"]) is int
    # A field the schema does not type as integer keeps what it holds (an annotation must be a string anyway).
    assert type(typed["metadata"]["annotations"]["ratio"]) is float


def test_a_kind_without_a_schema_is_reported_not_passed(tmp_path):
    (tmp_path / "unknown.yaml").write_text(yaml.safe_dump({"apiVersion": "example.com/v1", "kind": "Widget"}))
    floats, _ = floats_in_integer_fields(tmp_path)
    assert floats == ["unknown.yaml: no schema for example.com/v1 Widget"]


def test_chart_values_keep_whole_numbers_as_integers(rendered):
    for stack in STACKS:
        values = [install.get("values", {}) for install in yaml.safe_load((rendered / stack / THIRD_PARTY).read_text())]
        numbers = dict(_numbers(values))
        assert [path for path, number in numbers.items() if isinstance(number, float) and number.is_integer()] == []
        assert any(isinstance(number, int) for number in numbers.values()), stack


def _numbers(value, path=""):
    if isinstance(value, int | float) and not isinstance(value, bool):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _numbers(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _numbers(item, f"{path}.{index}")


@pytest.mark.parametrize(
    ("written", "pod_spec"),
    [
        ("prod/workflow/rollout-workflow-api.yaml", ("spec", "template", "spec")),
        (
            "prod/workflow/analysistemplate-workflow-api-smoke.yaml",
            ("spec", "metrics", 0, "provider", "job", "spec", "template", "spec"),
        ),
    ],
)
def test_a_secret_volume_mode_in_an_argo_resource_is_written_as_an_integer(rendered, written, pod_spec):
    """Argo Rollouts' CRDs keep a pod spec's `volumes` as unknown fields: Kubernetes' PodSpec types them instead."""
    manifest = yaml.safe_load((rendered / written).read_text())
    for step in pod_spec:
        manifest = manifest[step]
    modes = [
        volume[kind]["defaultMode"]
        for volume in manifest["volumes"]
        for kind in ("secret", "projected")
        if kind in volume
    ]
    assert modes and all(type(mode) is int for mode in modes)
