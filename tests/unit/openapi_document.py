"""The API's OpenAPI document, built with no service reachable, and what of the committed baseline
(`openapi-baseline.json`, the document before issue 9's refactoring) it no longer holds as it was.

The document may grow: new paths, methods, parameters, responses, statuses and schemas are additions. Whatever the
baseline holds must still be there, unchanged. When an addition is intended, regenerate the baseline from
`current_document()` (`json.dumps(..., indent=2, sort_keys=True)`) in the same change."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from app.http.api import create_app
from app.runtime import Platform
from app.settings import Settings

BASELINE = Path(__file__).with_name("openapi-baseline.json")
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def current_document() -> dict[str, Any]:
    """The document `python -m app api` serves at /openapi.json, from a platform on embedded twins that is never
    started: building the application connects to nothing."""
    platform = Platform.build(Settings(database_url="sqlite://", amqp_url="", redis_url=""), embedded=True)
    # Through JSON, as a client receives it (tuples become lists, keys become strings).
    return json.loads(json.dumps(create_app(platform, manage_lifecycle=False).openapi()))


def baseline_document() -> dict[str, Any]:
    return json.loads(BASELINE.read_text())


def missing_or_changed(baseline: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """What the baseline holds that `current` lacks or holds differently, one line each (empty: nothing)."""
    problems = [f"{key} changed" for key in ("openapi", "info") if baseline.get(key) != current.get(key)]
    current_paths = current.get("paths", {})
    for path, baseline_item in baseline.get("paths", {}).items():
        if path not in current_paths:
            problems.append(f"path {path} is gone")
            continue
        for method in METHODS:
            if method in baseline_item:
                where = f"{method.upper()} {path}"
                if method not in current_paths[path]:
                    problems.append(f"{where} is gone")
                else:
                    problems += _operation_problems(where, baseline_item[method], current_paths[path][method])
    current_schemas = current.get("components", {}).get("schemas", {})
    for name, schema in baseline.get("components", {}).get("schemas", {}).items():
        if name not in current_schemas:
            problems.append(f"schema {name} is gone")
        elif current_schemas[name] != schema:
            problems.append(f"schema {name} changed")
    return problems


def _operation_problems(where: str, baseline: dict[str, Any], current: dict[str, Any]) -> list[str]:
    problems = []
    for field, value in baseline.items():
        if field not in ("parameters", "responses") and current.get(field) != value:
            problems.append(f"{where}: {field} changed")
    current_parameters = {(p["in"], p["name"]): p for p in current.get("parameters", [])}
    for parameter in baseline.get("parameters", []):
        found = current_parameters.get((parameter["in"], parameter["name"]))
        if found is None:
            problems.append(f"{where}: {parameter['in']} parameter {parameter['name']} is gone")
        elif found != parameter:
            problems.append(f"{where}: {parameter['in']} parameter {parameter['name']} changed")
    baseline_parameters = {(p["in"], p["name"]) for p in baseline.get("parameters", [])}
    for (place, name), parameter in current_parameters.items():
        if (place, name) not in baseline_parameters and parameter.get("required"):
            problems.append(f"{where}: new {place} parameter {name} is required: requests that worked would fail")
    current_responses = current.get("responses", {})
    for status, response in baseline.get("responses", {}).items():
        if status not in current_responses:
            problems.append(f"{where}: response {status} is gone")
        elif current_responses[status] != response:
            problems.append(f"{where}: response {status} changed")
    return problems
