"""`python -m tools.render <stack> <folder>`: writes what a stack creates, as manifests, without a cluster.

One YAML file per Kubernetes object under <folder>/<namespace>/, and <folder>/third-party.yaml listing each Helm
chart and release manifest with its pinned version and values. Secret values are masked.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Any

import yaml

from tools.mock_stack import HELM_CHART, HELM_RELEASE, STACKS, YAML_CONFIG_FILE, receiver_required, reveal, run_stack

MASK = "<secret>"
# Stacks that require an alert receiver refuse to run without one; the operator's real one is a secret anyway.
PLACEHOLDER_RECEIVER = {"alertSlackWebhookUrl": "https://hooks.slack.com/services/PLACEHOLDER/PLACEHOLDER/PLACEHOLDER"}


def render(stack: str, folder: Path) -> int:
    run = run_stack(stack, secrets=PLACEHOLDER_RECEIVER if receiver_required(stack) else None)
    shutil.rmtree(folder, ignore_errors=True)
    count = 0
    for resource in run.resources:
        if not resource.is_kubernetes_object:
            continue
        manifest = resource.manifest(secret_placeholder=MASK)
        namespace = manifest["metadata"].get("namespace", "_cluster")
        path = folder / namespace / f"{manifest['kind'].lower()}-{manifest['metadata']['name']}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(manifest, sort_keys=False))
        count += 1
    third_party = [
        {
            "name": r.name,
            "installedWith": r.type.split(":")[1],
            **{
                key: _as_helm_reads(reveal(r.inputs[key], MASK))
                for key in ("chart", "version", "repositoryOpts", "namespace", "file", "values")
                if key in r.inputs
            },
        }
        for r in run.resources
        if r.type in (HELM_RELEASE, HELM_CHART, YAML_CONFIG_FILE)
    ]
    (folder / "third-party.yaml").write_text(yaml.safe_dump(third_party, sort_keys=False))
    return count


def _as_helm_reads(value: Any) -> Any:
    """Chart values as Helm holds them: every number a float64 (so YAML values files too), printed without a
    fractional part when it is whole. `replicas: 3.0` would misstate what a template renders."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: _as_helm_reads(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_as_helm_reads(item) for item in value]
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stack", choices=STACKS)
    parser.add_argument("folder", type=Path)
    args = parser.parse_args()
    count = render(args.stack, args.folder)
    print(f"{args.stack}: {count} Kubernetes objects and the third-party installs written to {args.folder}/")


if __name__ == "__main__":
    main()
