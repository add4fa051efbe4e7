"""Runs the real Pulumi program (`__main__.py`) for one stack under Pulumi's mocks and records what it creates.

Under mocks Pulumi reads neither Pulumi.yaml's defaults nor the stack file, so this loads both the way the CLI does,
sets the config with the project prefix, and runs the program afresh. Every resource the program registers is
captured with its type, parent, dependencies and inputs; Kubernetes objects are turned back into manifests.

Only Pulumi's public testing API is used: `set_mocks` (its `monitor=` parameter takes a `MockMonitor`, which this
subclasses as Pulumi's own SDK tests do), `pulumi.runtime.test` to run the program, and the `Output` helpers for
the stack's outputs. Secrets in the recorded inputs are read with `pulumi.runtime.rpc`'s public `is_rpc_secret`.
"""

from __future__ import annotations

import hashlib
import json
import runpy
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import yaml
from pulumi.runtime.mocks import MockMonitor
from pulumi.runtime.rpc import is_rpc_secret, unwrap_rpc_secret

from tools.kube_typing import with_integers

ROOT = Path(__file__).resolve().parents[1]
PROJECT = "workflow-platform"
STACKS = ("dev", "staging", "prod")

STACK_TYPE = "pulumi:pulumi:Stack"
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
    # What Pulumi waits for before creating the resource: its `depends_on` and the resources its inputs come from.
    depends_on: tuple[str, ...]
    # How long Pulumi waits for the resource to become ready, where the program says ("create": "30m", ...).
    custom_timeouts: dict[str, str] = field(default_factory=dict)
    # The parents the resource had in earlier versions of the program (its aliases), so a deployed stack moves it.
    former_parents: tuple[str, ...] = ()

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
        # Every number crossed the wire as a double; the provider types them by the schema, and so does this.
        return with_integers(head | fields)


def is_secret(value: Any) -> bool:
    """Whether a recorded input or output value is one Pulumi keeps secret."""
    return is_rpc_secret(value)


def reveal(value: Any, placeholder: str | None = None) -> Any:
    """The plain value inside Pulumi's secret markers at any depth, or `placeholder` in its place when given."""
    if is_secret(value):
        return placeholder if placeholder is not None else reveal(unwrap_rpc_secret(value))
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


class _ProviderMocks(pulumi.runtime.Mocks):
    """Gives each resource the outputs its provider would compute; everything else echoes the inputs."""

    def __init__(self) -> None:
        # MockMonitor.RegisterResource calls new_resource on the thread it runs on, and Pulumi registers from
        # several executor threads at once: the monitor reads each registration's arguments back on that thread.
        self.registering = threading.local()

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        self.registering.args = args
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


class _RecordingMonitor(MockMonitor):
    """Pulumi's mock monitor, also recording what only the registration request carries (MockResourceArgs does
    not): the parent, the dependencies Pulumi waits for, and custom timeouts. The stack resource itself is left
    out: set_mocks registers it once per process, not once per run."""

    def __init__(self, run: StackRun) -> None:
        self.provider_mocks = _ProviderMocks()
        super().__init__(self.provider_mocks)
        self._run = run

    def RegisterResource(self, request):
        response = super().RegisterResource(request)
        if request.type == STACK_TYPE:
            return response
        self._run.resources.append(
            Resource(
                urn=response.urn,
                type=request.type,
                name=request.name,
                parent=request.parent,
                custom=request.custom,
                inputs=self.provider_mocks.registering.args.inputs,
                outputs=self.resources[response.urn].state,
                depends_on=tuple(request.dependencies),
                custom_timeouts={
                    operation: timeout
                    for operation in ("create", "update", "delete")
                    if (timeout := getattr(request.customTimeouts, operation))
                },
                former_parents=tuple(alias.spec.parentUrn for alias in request.aliases if alias.spec.parentUrn),
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


def receiver_required(stack: str) -> bool:
    """Whether the stack file makes an alert receiver mandatory (the program refuses to run without one)."""
    return stack_config(stack)[f"{PROJECT}:alertReceiverRequired"] == "true"


def run_stack(stack: str, overrides: dict[str, Any] | None = None, secrets: dict[str, str] | None = None) -> StackRun:
    """Runs __main__.py for `stack` under mocks; raises what the program raises (e.g. a ConfigError).

    `secrets` are config values set the way `pulumi config set --secret` sets them: the program sees them among
    the secret keys, as it does under the CLI."""
    run = prepare_run(stack, overrides, secrets)
    execute(run)
    return run


def prepare_run(stack: str, overrides: dict[str, Any] | None = None, secrets: dict[str, str] | None = None) -> StackRun:
    """A run of `stack` holding the config the CLI would pass, before the program has run (see run_stack)."""
    return StackRun(
        stack=stack,
        config=stack_config(stack, overrides, secrets),
        secret_keys=frozenset(
            f"{PROJECT}:{key}"
            for key in (secure_stand_ins(stack).keys() - (overrides or {}).keys()) | (secrets or {}).keys()
        ),
    )


def execute(run: StackRun) -> None:
    """Runs __main__.py under mocks with the run's config, recording into `run` what it creates, as it goes: a run
    the program stops midway keeps what was registered before. Raises what the program raises.

    Runs it the way `pulumi.runtime.test` runs a test: to completion, every registration and output awaited."""
    monitor = _RecordingMonitor(run)
    pulumi.runtime.set_mocks(monitor.provider_mocks, project=PROJECT, stack=run.stack, preview=False, monitor=monitor)
    # Always a list: the secret keys of a previous run must not carry over.
    pulumi.runtime.set_all_config(run.config, sorted(run.secret_keys))

    @pulumi.runtime.test
    def program() -> pulumi.Output:
        root = pulumi.runtime.get_root_resource()
        # set_mocks makes the root stack once per process, so it still holds the previous run's exports.
        root.outputs.clear()
        runpy.run_path(str(ROOT / "__main__.py"), run_name="__main__")
        return pulumi.Output.all(*(_record_output(run, name, value) for name, value in root.outputs.items()))

    program()


def _record_output(run: StackRun, name: str, value: Any) -> pulumi.Output:
    """Records a stack output's value and whether Pulumi keeps it secret, once both are known."""
    output = pulumi.Output.from_input(value)
    kept_secret = pulumi.Output.from_input(output.is_secret())

    def record(settled: list[Any]) -> None:
        resolved, is_kept_secret = settled
        run.outputs[name] = (resolved, is_kept_secret)

    return pulumi.Output.all(output, kept_secret).apply(record)
