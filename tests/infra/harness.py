"""Runs the real Pulumi program (`__main__.py`) for one stack under Pulumi mocks and records what it creates.

Under mocks Pulumi reads neither Pulumi.yaml's defaults nor the stack file, so this loads both the way the CLI does,
sets the config with the project prefix, and runs the program afresh. Every registered resource is captured with
its type, parent and inputs; Kubernetes objects are turned back into manifests for schema validation.
"""

from __future__ import annotations

import hashlib
import json
import runpy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import yaml
from pulumi.runtime import mocks, settings
from pulumi.runtime.rpc import _special_secret_sig, _special_sig_key, deserialize_properties
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

ROOT = Path(__file__).resolve().parents[2]
PROJECT = "workflow-platform"
STACKS = ("dev", "staging", "prod")

COMPONENT_TYPES = {
    f"{PROJECT}:index:{name}" for name in ("AppTier", "WorkerPool", "DataPlane", "Observability", "EdgeIngress")
}
# Provider-side components: under mocks their children are not rendered, the resource itself is what we check.
HELM_RELEASE = "kubernetes:helm.sh/v3:Release"
HELM_CHART = "kubernetes:helm.sh/v4:Chart"
YAML_CONFIG_FILE = "kubernetes:yaml/v2:ConfigFile"
NOT_MANIFESTS = {HELM_RELEASE, HELM_CHART, YAML_CONFIG_FILE}


@dataclass
class Resource:
    urn: str
    type: str
    name: str
    parent: str
    custom: bool
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    depends_on: tuple[str, ...]
    # How long Pulumi waits for the resource to become ready, where the program says ("create": "30m", ...).
    custom_timeouts: dict[str, str] = field(default_factory=dict)

    @property
    def is_kubernetes_object(self) -> bool:
        return self.custom and self.type.startswith("kubernetes:") and self.type not in NOT_MANIFESTS

    def manifest(self, secret_placeholder: str | None = None) -> dict[str, Any]:
        """The object as the provider would send it, auto-naming filling a missing name; secrets are revealed,
        or replaced by `secret_placeholder` when one is given."""
        fields = {
            key: reveal(value, secret_placeholder) for key, value in self.inputs.items() if not key.startswith("__")
        }
        metadata = dict(fields.pop("metadata", None) or {})
        if not metadata.get("name"):
            metadata["name"] = f"{self.name}-{hashlib.sha1(self.urn.encode()).hexdigest()[:8]}"
        head = {"apiVersion": fields.pop("apiVersion"), "kind": fields.pop("kind"), "metadata": metadata}
        # Imported here: kube_typing finds CRD schemas through validation, which imports this module.
        from tests.infra.kube_typing import with_integers

        # Every number crossed the wire as a double; the provider types them by the schema, and so does this.
        return with_integers(head | fields)


def is_secret(value: Any) -> bool:
    return isinstance(value, dict) and value.get(_special_sig_key) == _special_secret_sig


def reveal(value: Any, placeholder: str | None = None) -> Any:
    """The plain value inside Pulumi's secret markers at any depth, or `placeholder` in its place when given."""
    if is_secret(value):
        return placeholder if placeholder is not None else reveal(value["value"])
    if isinstance(value, dict):
        return {key: reveal(item, placeholder) for key, item in value.items()}
    if isinstance(value, list):
        return [reveal(item, placeholder) for item in value]
    return value


@dataclass
class StackRun:
    stack: str
    config: dict[str, str]
    # The config keys set as secrets (`pulumi config set --secret`), with their project prefix.
    secret_keys: frozenset[str] = frozenset()
    resources: list[Resource] = field(default_factory=list)
    # Stack outputs, resolved: name -> (value, whether Pulumi keeps it as a secret).
    outputs: dict[str, tuple[Any, bool]] = field(default_factory=dict)

    def of_type(self, type_: str) -> list[Resource]:
        return [r for r in self.resources if r.type == type_]

    def kind(self, kind: str) -> list[dict]:
        return [m for m in self.manifests() if m.get("kind") == kind]

    def one(self, kind: str, name: str) -> dict:
        (manifest,) = [m for m in self.kind(kind) if m["metadata"]["name"] == name]
        return manifest

    def resource(self, type_: str, name: str) -> Resource:
        (resource,) = [r for r in self.resources if r.type == type_ and r.name == name]
        return resource

    def manifests(self) -> list[dict]:
        return [r.manifest() for r in self.resources if r.is_kubernetes_object]

    def by_urn(self) -> dict[str, Resource]:
        return {r.urn: r for r in self.resources}

    def generated_passwords(self) -> set[str]:
        return {reveal(r.outputs["result"]) for r in self.of_type("random:index/randomPassword:RandomPassword")}

    def secrets(self) -> set[str]:
        """Every value that must stay secret: the generated passwords and the stack's secret config values."""
        return self.generated_passwords() | {self.config[key] for key in self.secret_keys}


class _Mocks(pulumi.runtime.Mocks):
    """Gives each resource the outputs its provider would compute; everything else echoes the inputs."""

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        outputs = dict(args.inputs)
        if args.typ == "random:index/randomPassword:RandomPassword":
            outputs["result"] = hashlib.sha256(args.name.encode()).hexdigest()[: int(args.inputs.get("length", 16))]
        if args.typ == "docker-build:index:Image":
            outputs["digest"] = "sha256:" + hashlib.sha256(args.name.encode()).hexdigest()
        if args.typ.startswith("kubernetes:") and isinstance(outputs.get("metadata"), dict):
            metadata = dict(outputs["metadata"])
            metadata.setdefault("name", f"{args.name}-generated")
            outputs["metadata"] = metadata
        return f"{args.name}-id", outputs

    def call(self, args: pulumi.runtime.MockCallArgs):
        return {}


class _RecordingMonitor(mocks.MockMonitor):
    def __init__(self, mocks_: pulumi.runtime.Mocks, run: StackRun):
        super().__init__(mocks_)
        self._run = run

    def RegisterResource(self, request):
        response = super().RegisterResource(request)
        self._run.resources.append(
            Resource(
                urn=response.urn,
                type=request.type,
                name=request.name,
                parent=request.parent,
                custom=request.custom,
                inputs=deserialize_properties(request.object, keep_unknowns=True),
                outputs=deserialize_properties(response.object, keep_unknowns=True),
                depends_on=tuple(request.dependencies),
                custom_timeouts={
                    operation: timeout
                    for operation in ("create", "update", "delete")
                    if (timeout := getattr(request.customTimeouts, operation))
                },
            )
        )
        return response


def stack_config(
    stack: str, overrides: dict[str, Any] | None = None, secrets: dict[str, str] | None = None
) -> dict[str, str]:
    """Pulumi.yaml defaults overlaid with Pulumi.<stack>.yaml, then `overrides` and `secrets`, as the CLI passes
    them."""
    declared = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())["config"]
    values: dict[str, Any] = {
        f"{PROJECT}:{key}": spec["default"] for key, spec in declared.items() if "default" in spec
    }
    values.update(yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())["config"])
    for key, value in (secure_stand_ins(stack) | (overrides or {}) | (secrets or {})).items():
        full_key = f"{PROJECT}:{key}"
        if value is None:
            values.pop(full_key, None)
        else:
            values[full_key] = value
    return {key: _config_string(value) for key, value in values.items()}


def _config_string(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        if isinstance(value, dict) and "secure" in value:
            raise ValueError("secure: values cannot be decrypted under mocks; give them a stand-in or override them")
        return json.dumps(value)
    return str(value)


# Mocks cannot decrypt the `secure:` values an operator's `pulumi config set --secret` writes into a stack file; the
# program gets these in their place, marked secret as the CLI marks the real ones.
SECURE_STAND_INS = {
    "alertSlackWebhookUrl": "https://hooks.slack.example/services/STAND-IN/for-a-secure-value",
    "alertEmailTo": "stand-in@example.invalid",
    "alertSmtpPassword": "stand-in-smtp-password",
}


def secure_stand_ins(stack: str) -> dict[str, str]:
    """Stand-ins for the stack file's `secure:` values, by key (without the project prefix)."""
    stack_file = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())["config"]
    keys = [
        key.removeprefix(f"{PROJECT}:")
        for key, value in stack_file.items()
        if isinstance(value, dict) and "secure" in value
    ]
    return {key: SECURE_STAND_INS[key] for key in keys if key in SECURE_STAND_INS}


# The receiver the tests give the stacks that require one, as `pulumi config set --secret` would: a fake webhook.
TEST_RECEIVER = {"alertSlackWebhookUrl": "https://hooks.slack.example/services/TEST-ONLY/not-a-real-webhook"}


def receiver_required(stack: str) -> bool:
    """Whether the stack file makes an alert receiver mandatory (the program refuses to run without one)."""
    return stack_config(stack)[f"{PROJECT}:alertReceiverRequired"] == "true"


def run_stack(stack: str, overrides: dict[str, Any] | None = None, secrets: dict[str, str] | None = None) -> StackRun:
    """Runs __main__.py for `stack` under mocks; raises what the program raises (e.g. a ConfigError).

    `secrets` are config values set the way `pulumi config set --secret` sets them: the program sees them among
    the secret keys, as it does under the CLI."""
    run = StackRun(
        stack=stack,
        config=stack_config(stack, overrides, secrets),
        secret_keys=frozenset(
            f"{PROJECT}:{key}"
            for key in (secure_stand_ins(stack).keys() - (overrides or {}).keys()) | (secrets or {}).keys()
        ),
    )
    resource_mocks = _Mocks()
    pulumi.runtime.set_mocks(
        resource_mocks,
        project=PROJECT,
        stack=stack,
        preview=False,
        monitor=_RecordingMonitor(resource_mocks, run),
    )
    # Always a list: the secret keys of a previous run must not carry over.
    pulumi.runtime.set_all_config(run.config, sorted(run.secret_keys))
    settings.SETTINGS.rpc_manager.clear()
    settings.SETTINGS.outputs.clear()
    _sync_await(run_pulumi_func(lambda: runpy.run_path(str(ROOT / "__main__.py"), run_name="__main__")))
    for name, value in pulumi.runtime.get_root_resource().outputs.items():
        output = pulumi.Output.from_input(value)
        run.outputs[name] = (_sync_await(output.future()), _sync_await(output.is_secret()))
    return run
