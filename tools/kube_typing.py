"""Kubernetes' own typing of a manifest: which of its fields the schema declares integer (int32, int64, or an
int-or-string holding a number). Pulumi's wire format (a protobuf Struct) carries every number as a double, so a
manifest rebuilt from it says `replicas: 3.0`, which Kubernetes' decoders refuse. The schema decides which numbers
are integers: built-in kinds from the Kubernetes 1.34 schemas that kubernetes-validate ships, custom resources from
their CRD schemas in ../shared/crd-schemas. Fields whose schema says nothing keep what they hold."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

from kubernetes_validate.utils import all_versions, major_minor, schema_contents

KUBERNETES_VERSION = "1.34"
# Next to the checkout: ../shared/crd-schemas/<group>/<kind>_<version>.json.
CRD_SCHEMAS = Path(__file__).resolve().parents[2] / "shared" / "crd-schemas"

FieldPath = tuple[str | int, ...]
_DEFINITIONS = "_definitions.json"


def crd_schema_path(manifest: dict) -> Path:
    group, _, version = manifest["apiVersion"].rpartition("/")
    return CRD_SCHEMAS / group / f"{manifest['kind'].lower()}_{version}.json"


class NoSchemaError(LookupError):
    """Neither Kubernetes nor ../shared/crd-schemas has a schema for this kind, so its integers are unknown."""


@cache
def _kubernetes_schema_dir() -> str:
    version = [v for v in all_versions() if major_minor(v) <= KUBERNETES_VERSION][-1]
    return f"kubernetes-json-schema/v{version}-local-strict"


@cache
def _kubernetes_schema(kind: str, api_version: str) -> dict | None:
    # kubernetes-validate's own file naming: rbac.authorization.k8s.io/v1 -> rbac-v1, v1 -> v1.
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    try:
        return schema_contents(f"{_kubernetes_schema_dir()}/{kind.lower()}-{group_version}.json", KUBERNETES_VERSION)
    except FileNotFoundError:
        return None


@cache
def _kubernetes_definitions() -> dict:
    return schema_contents(f"{_kubernetes_schema_dir()}/{_DEFINITIONS}", KUBERNETES_VERSION)["$defs"]


@cache
def _crd_schema(path: str) -> dict:
    with open(path) as file:
        return json.load(file)


def schema_of(manifest: dict) -> dict:
    schema = _kubernetes_schema(manifest["kind"], manifest["apiVersion"])
    if schema is not None:
        return schema
    path = crd_schema_path(manifest)
    if not path.exists():
        raise NoSchemaError(f"no schema for {manifest['apiVersion']} {manifest['kind']}")
    return _crd_schema(str(path))


def _resolved(schema: dict) -> list[dict]:
    """The schema and every alternative it allows (`$ref`, oneOf, anyOf, allOf), each resolved."""
    if "$ref" in schema:
        return _resolved(_kubernetes_definitions()[schema["$ref"].rpartition("/")[2]])
    found = [schema]
    for keyword in ("oneOf", "anyOf", "allOf"):
        for alternative in schema.get(keyword, ()):
            found.extend(_resolved(alternative))
    return found


def _types(schema: dict) -> set[str]:
    declared = schema.get("type", ())
    return {declared} if isinstance(declared, str) else set(declared)


def _is_integer(schemas: list[dict]) -> bool:
    return any("integer" in _types(s) or s.get("x-kubernetes-int-or-string") for s in schemas)


def _child(schemas: list[dict], key: str) -> dict | None:
    for schema in schemas:
        if key in schema.get("properties", {}):
            return _pod_spec_field(schema, key) or schema["properties"][key]
    for schema in schemas:
        if isinstance(schema.get("additionalProperties"), dict):
            return schema["additionalProperties"]
    return None


def _pod_spec_field(schema: dict, key: str) -> dict | None:
    """A pod spec's field that a CRD embeds without its schema (Argo Rollouts' CRDs keep `volumes` as unknown fields
    to stay small) typed as Kubernetes' own PodSpec types it."""
    properties = schema["properties"]
    if "containers" not in properties or set(properties[key]) != {"x-kubernetes-preserve-unknown-fields"}:
        return None
    return _kubernetes_definitions()["io.k8s.api.core.v1.PodSpec"]["properties"].get(key)


def _items(schemas: list[dict]) -> dict | None:
    return next((s["items"] for s in schemas if isinstance(s.get("items"), dict)), None)


def _integer_fields(value: Any, schema: dict, path: FieldPath) -> Iterator[tuple[FieldPath, Any]]:
    schemas = _resolved(schema)
    if isinstance(value, dict):
        for key, item in value.items():
            child = _child(schemas, key)
            if child is not None:
                yield from _integer_fields(item, child, (*path, key))
    elif isinstance(value, list):
        items = _items(schemas)
        if items is not None:
            for index, item in enumerate(value):
                yield from _integer_fields(item, items, (*path, index))
    elif isinstance(value, int | float) and not isinstance(value, bool) and _is_integer(schemas):
        yield path, value


def integer_fields(manifest: dict) -> Iterator[tuple[FieldPath, Any]]:
    """Every number in the manifest at a field its schema types as integer, with its path; raises NoSchemaError
    for a kind without a schema."""
    return _integer_fields(manifest, schema_of(manifest), ())


def with_integers(manifest: dict) -> dict:
    """The manifest with each whole float in an integer field made an int, as the Kubernetes provider decodes it.
    A fractional number there is left as it is, for schema validation to reject; so is a kind without a schema,
    which validation reports as unchecked."""
    try:
        fields = [(path, value) for path, value in integer_fields(manifest) if isinstance(value, float)]
    except NoSchemaError:
        return manifest
    if not fields:
        return manifest
    typed = copy.deepcopy(manifest)
    for path, value in fields:
        if value.is_integer():
            parent = typed
            for step in path[:-1]:
                parent = parent[step]
            parent[path[-1]] = int(value)
    return typed
