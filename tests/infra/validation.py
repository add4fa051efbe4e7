"""Offline validation of manifests: built-in kinds against Kubernetes' own schemas, custom resources against their
CRD schemas from ../shared/crd-schemas. A kind neither knows is reported as unchecked, never passed silently."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import jsonschema
import kubernetes_validate
from kubernetes_validate.utils import SchemaNotFoundError

from tools.kube_typing import KUBERNETES_VERSION, crd_schema_path


@dataclass(frozen=True)
class Verdict:
    checked_by: str  # "kubernetes", "crd" or "unchecked"
    errors: tuple[str, ...] = ()


@cache
def _crd_validator(path: Path):
    schema = json.loads(path.read_text())
    return jsonschema.validators.validator_for(schema)(schema)


def validate(manifest: dict) -> Verdict:
    """Strict for built-in kinds (an unknown field is an error); CRD schemas reject unknown fields themselves."""
    try:
        kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
        return Verdict("kubernetes")
    except kubernetes_validate.ValidationError as error:
        return Verdict("kubernetes", (str(error).split("\n\n")[0],))
    except SchemaNotFoundError:
        pass
    path = crd_schema_path(manifest)
    if not path.exists():
        return Verdict("unchecked")
    errors = _crd_validator(path).iter_errors(manifest)
    return Verdict(
        "crd", tuple(f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message[:300]}" for e in errors)
    )
