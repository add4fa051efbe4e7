"""The stack configuration: what Pulumi.yaml declares is what the program reads, and bad values stop the program
with one message naming the key, the value and what is allowed."""

import json
import re

import pytest
import yaml

from components import config
from tools.config_reference import configuration_reference, current_readme_table
from tools.mock_stack import PROJECT, ROOT, STACKS, execute, prepare_run, run_stack, stack_config

DECLARED = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())["config"]


class RecordingConfig:
    """A pulumi.Config stand-in answering from a stack's values and noting every key asked for."""

    def __init__(self, values: dict[str, str]):
        self.values = values
        self.asked: set[str] = set()

    def get(self, key: str):
        self.asked.add(key)
        return self.values.get(f"{PROJECT}:{key}")


BAD_VALUES = [
    # (key, bad value, words the message must contain)
    ("apiReplicasMin", 0, "an integer >= 1"),
    ("workerReplicasMin", "three", "an integer >= 1"),
    ("workerReplicasMax", 0, "an integer >= 1"),
    ("apiCpuRequest", "lots", "a CPU quantity"),
    ("apiMemoryLimit", "512MB", "a whole size in Ki, Mi, Gi or Ti"),
    ("postgresStorageSize", "-5Gi", "a whole size in Ki, Mi, Gi or Ti"),
    ("prometheusRetention", "forever", "a positive duration"),
    ("domain", "Not A Domain", "a lower-case DNS name"),
    ("acmeEmail", "nobody", "an e-mail address"),
    ("tlsIssuer", "letsencrypt", "one of letsencrypt-staging, letsencrypt-production"),
    ("image", "ghcr.io/example-org/workflow-platform:latest", "pinned by digest"),
    ("addons", ["keda", "ingress-nginx"], "add-ons from: cert-manager"),
    ("addons", ["keda", "keda"], "distinct add-ons"),
    ("rabbitmqReplicas", 2, "1 or an odd number"),
    ("workerMaxTaskTimeoutSeconds", 0, "an integer >= 1"),
    ("workerEgressCidrs", ["10.0.0.0/33"], "network CIDRs"),
    ("edgeMaxRequestBodySize", "1MB", "a whole size in Ki, Mi, Gi or Ti"),
    ("storageClass", "Fast_SSD", "a StorageClass name"),
    ("alertReceiverRequired", "yes", "true or false"),
    ("leaseSeconds", 1, "an integer >= 3"),
    ("leaseRenewSeconds", 6, "must be at most a third of leaseSeconds (15)"),
    ("alertEmailFrom", "nobody", "an e-mail address"),
    ("alertSmtpSmarthost", "smtp.example.com", "an SMTP server as host:port"),
]


@pytest.mark.parametrize(("key", "value", "allowed"), BAD_VALUES, ids=[f"{k}={v}" for k, v, _ in BAD_VALUES])
def test_a_bad_value_stops_the_program_naming_key_value_and_what_is_allowed(key, value, allowed):
    with pytest.raises(config.ConfigError) as raised:
        run_stack("dev", {key: value})
    message = str(raised.value)
    assert f"{PROJECT}:{key} = {json.dumps(value)} is not allowed: " in message
    assert allowed in message


def test_a_minimum_above_the_maximum_is_rejected():
    with pytest.raises(
        config.ConfigError,
        match=r"workflow-platform:apiReplicasMax = 2 is not allowed: must be >= apiReplicasMin \(5\)",
    ):
        run_stack("dev", {"apiReplicasMin": 5, "apiReplicasMax": 2})


def test_a_request_above_its_limit_is_rejected():
    with pytest.raises(
        config.ConfigError,
        match=r'workerMemoryRequest = "2Gi" is not allowed: must not exceed workerMemoryLimit \(1Gi\)',
    ):
        run_stack("dev", {"workerMemoryRequest": "2Gi", "workerMemoryLimit": "1Gi"})


def test_more_connections_than_postgres_admits_at_peak_is_rejected_with_the_figure_needed():
    # 2 API pods surge to 3 and hold 50 each; 3 workers surge to 4 and hold 10 each: 190, plus 20 reserved.
    overrides = {"postgresMaxConnections": 200, "apiDatabaseConnections": 50, "workerDatabaseConnections": 10}
    with pytest.raises(config.ConfigError, match=r"postgresMaxConnections = 200 is too few: .* raise it to 210 "):
        run_stack("dev", overrides)


def test_a_connection_budget_that_fits_exactly_is_accepted():
    run_stack("dev", {"postgresMaxConnections": 210, "apiDatabaseConnections": 50, "workerDatabaseConnections": 10})


def test_a_missing_required_key_is_named():
    with pytest.raises(config.ConfigError, match=r"workflow-platform:domain is not set"):
        run_stack("dev", {"domain": None})


def test_every_bad_key_is_reported_in_one_message():
    with pytest.raises(config.ConfigError) as raised:
        run_stack("dev", {"apiReplicasMin": 0, "prometheusRetention": "1 week", "tlsIssuer": "self-signed"})
    named = set(re.findall(r"workflow-platform:(\w+) =", str(raised.value)))
    assert named == {"tlsIssuer", "apiReplicasMin", "prometheusRetention"}


def test_a_bad_value_stops_the_program_before_any_resource_is_created():
    run = prepare_run("dev", {"apiReplicasMin": 0})
    with pytest.raises(config.ConfigError):
        execute(run)
    assert run.resources == []


def test_pulumi_yaml_declares_exactly_the_keys_the_program_reads():
    # dev: the program reads every key in every stack, and dev needs no secret alert receiver to run.
    recording = RecordingConfig(stack_config("dev"))
    config.load(recording)
    assert recording.asked == set(DECLARED)


@pytest.mark.parametrize("stack", STACKS)
def test_stack_files_set_only_declared_keys(stack):
    keys = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())["config"]
    assert {key.removeprefix(f"{PROJECT}:") for key in keys} <= set(DECLARED)


def test_every_declared_key_has_a_type_and_a_description():
    for key, spec in DECLARED.items():
        assert spec["type"] in {"string", "integer", "boolean", "array"} and spec["description"], key


def test_the_readme_configuration_reference_matches_pulumi_yaml_and_the_stack_files():
    assert current_readme_table() == configuration_reference(), "run `make config-reference`"
