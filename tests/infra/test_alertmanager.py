"""Alertmanager routes every stack's alerts to someone: receivers come from secret stack config, a stack that
requires one refuses to run without it, and the configuration is checked by Debian's prometheus-alertmanager
(installed by tests/ensure-services.sh): `amtool check-config`, `amtool config routes test`, and a real Alertmanager
for the inhibit rules, which amtool cannot test."""

import json
import shutil
import socket
import subprocess
import time
import urllib.request

import promql_parser
import pytest
import yaml

from components.alerting import CONFIG_FILE, NULL_RECEIVER, SAME_SUBJECT, TEAM_RECEIVER
from components.alerts import PLATFORM_ALERTS
from components.charts import KUBE_PROMETHEUS_STACK
from components.config import ConfigError
from tests.infra.chart_sources import pinned_folder, render
from tools import mock_stack
from tools.mock_stack import HELM_RELEASE, PROJECT, STACKS, StackRun, is_secret, receiver_required, reveal, run_stack

SECRET_TYPE = "kubernetes:core/v1:Secret"
# Every receiver setting at once, as an operator would set them; the secrets with `pulumi config set --secret`.
EMAIL_SETTINGS = {
    "alertEmailFrom": "alertmanager-test@example.invalid",
    "alertSmtpSmarthost": "smtp.example.invalid:587",
    "alertSmtpUsername": "alertmanager-test",
}
ALL_SECRETS = {
    "alertSlackWebhookUrl": "https://hooks.slack.example/services/TEST-ONLY/every-receiver",
    "alertEmailTo": "oncall-test@example.invalid",
    "alertSmtpPassword": "test-only-smtp-password",
}


@pytest.fixture(scope="module")
def every_receiver() -> StackRun:
    return run_stack("prod", EMAIL_SETTINGS, ALL_SECRETS)


@pytest.fixture(scope="module")
def config_files(stacks, every_receiver, tmp_path_factory) -> dict[str, str]:
    """The Alertmanager configuration each stack renders, written to a file; dev with and without receivers."""
    runs = {
        **stacks,
        "dev-with-receivers": run_stack("dev", EMAIL_SETTINGS, ALL_SECRETS),
        "prod-every-receiver": every_receiver,
    }
    folder = tmp_path_factory.mktemp("alertmanager")
    files = {}
    for name, run in runs.items():
        path = folder / f"{name}.yaml"
        path.write_text(alertmanager_config(run))
        files[name] = str(path)
    return files


def alertmanager_config(run: StackRun) -> str:
    return reveal(run.resource(SECRET_TYPE, "alertmanager-config").inputs["stringData"])[CONFIG_FILE]


def binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is missing: run tests/ensure-services.sh (installs Debian's prometheus-alertmanager)")
    return path


def test_staging_and_prod_require_an_alert_receiver_and_dev_does_not():
    assert [stack for stack in STACKS if receiver_required(stack)] == ["staging", "prod"]


@pytest.mark.parametrize("stack", ["staging", "prod"])
def test_a_stack_requiring_a_receiver_refuses_to_run_without_one_naming_the_keys_and_the_command(stack):
    with pytest.raises(ConfigError) as raised:
        run_stack(stack)
    message = str(raised.value)
    assert "workflow-platform:alertReceiverRequired is true" in message
    assert "workflow-platform:alertSlackWebhookUrl" in message and "workflow-platform:alertEmailTo" in message
    assert (
        f"`pulumi config set --secret alertSlackWebhookUrl https://hooks.slack.com/services/... --stack {stack}`"
        in (message)
    )


def test_receivers_an_operator_encrypted_into_the_stack_file_keep_the_tests_running(tmp_path, monkeypatch):
    # What `pulumi config set --secret` leaves in Pulumi.prod.yaml; mocks cannot decrypt it, the runner stands in.
    stack_file = yaml.safe_load((mock_stack.ROOT / "Pulumi.prod.yaml").read_text())
    for key in ("alertSlackWebhookUrl", "alertEmailTo"):
        stack_file["config"][f"{PROJECT}:{key}"] = {"secure": "v1:AAAAAAAAAAAAAAAA:bm90LWEtcmVhbC1jaXBoZXJ0ZXh0"}
    stack_file["config"] |= {f"{PROJECT}:{key}": value for key, value in EMAIL_SETTINGS.items()}
    (tmp_path / "Pulumi.prod.yaml").write_text(yaml.safe_dump(stack_file))
    for name in ("Pulumi.yaml", "__main__.py"):
        (tmp_path / name).symlink_to(mock_stack.ROOT / name)
    monkeypatch.setattr(mock_stack, "ROOT", tmp_path)

    run = run_stack("prod", secrets={"alertSmtpPassword": ALL_SECRETS["alertSmtpPassword"]})
    (team,) = [r for r in yaml.safe_load(alertmanager_config(run))["receivers"] if r["name"] == TEAM_RECEIVER]
    assert team["slack_configs"][0]["api_url"] == mock_stack.SECURE_STAND_INS["alertSlackWebhookUrl"]
    assert team["email_configs"][0]["to"] == mock_stack.SECURE_STAND_INS["alertEmailTo"]


def test_dev_without_a_receiver_routes_everything_to_the_null_receiver(stacks):
    config = yaml.safe_load(alertmanager_config(stacks["dev"]))
    assert config["receivers"] == [{"name": NULL_RECEIVER}]


def test_a_receiver_set_in_plain_text_is_refused_without_being_shown():
    webhook = ALL_SECRETS["alertSlackWebhookUrl"]
    with pytest.raises(ConfigError, match="alertSlackWebhookUrl is set in plain text: it must be a secret") as raised:
        run_stack("prod", {"alertSlackWebhookUrl": webhook})
    assert webhook not in str(raised.value)


@pytest.mark.parametrize(
    ("key", "bad", "allowed"),
    [
        ("alertSlackWebhookUrl", "http://hooks.slack.example/services/plain-http", "an https:// URL"),
        ("alertEmailTo", "oncall-at-example.invalid", "an e-mail address"),
    ],
)
def test_a_malformed_secret_is_refused_without_being_shown(key, bad, allowed):
    with pytest.raises(ConfigError, match=rf"{key} \(a secret, not shown\) is not allowed: {allowed}") as raised:
        run_stack("prod", EMAIL_SETTINGS, {**ALL_SECRETS, key: bad})
    assert bad not in str(raised.value)


def test_email_needs_a_sender_and_a_smarthost():
    with pytest.raises(ConfigError) as raised:
        run_stack("dev", secrets={"alertEmailTo": ALL_SECRETS["alertEmailTo"]})
    assert "alertEmailFrom is not set: alertEmailTo is set" in str(raised.value)
    assert "alertSmtpSmarthost is not set: alertEmailTo is set" in str(raised.value)


def test_smtp_authentication_needs_both_user_and_password():
    with pytest.raises(ConfigError, match="alertSmtpPassword is not set: alertSmtpUsername is set"):
        run_stack("prod", EMAIL_SETTINGS, {"alertEmailTo": ALL_SECRETS["alertEmailTo"]})


@pytest.mark.parametrize("stack", STACKS)
def test_the_configuration_is_a_pulumi_secret_that_the_chart_reads_by_name(stacks, stack):
    run = stacks[stack]
    secret = run.resource(SECRET_TYPE, "alertmanager-config")
    string_data = secret.inputs["stringData"]
    assert is_secret(string_data) or is_secret(string_data[CONFIG_FILE])
    release = run.resource(HELM_RELEASE, "kube-prometheus-stack")
    assert secret.urn in release.depends_on
    # Rendered by the pinned chart: the Alertmanager names our Secret, and the chart writes no configuration of its own.
    rendered = render(
        pinned_folder(KUBE_PROMETHEUS_STACK.name, KUBE_PROMETHEUS_STACK.version),
        release.inputs["name"],
        "workflow-observability",
        reveal(release.inputs["values"]),
    )
    (alertmanager,) = [o for o in rendered if o["kind"] == "Alertmanager"]
    assert alertmanager["spec"]["configSecret"] == secret.inputs["metadata"]["name"]
    assert [
        o["metadata"]["name"] for o in rendered if o["kind"] == "Secret" and "alertmanager" in o["metadata"]["name"]
    ] == []


def test_the_receivers_secrets_appear_in_no_plain_input_or_output(every_receiver):
    for value in ALL_SECRETS.values():
        for resource in every_receiver.resources:
            for where in (resource.inputs, resource.outputs):
                assert value not in json.dumps(reveal(where, "<secret>")), f"{resource.type} {resource.name}"
        for name, (output, kept_secret) in every_receiver.outputs.items():
            assert kept_secret or value not in str(output), f"stack output {name}"


def test_every_receiver_setting_reaches_the_team_receiver(every_receiver):
    (team,) = [
        r for r in yaml.safe_load(alertmanager_config(every_receiver))["receivers"] if r["name"] == TEAM_RECEIVER
    ]
    assert team["slack_configs"][0]["api_url"] == ALL_SECRETS["alertSlackWebhookUrl"]
    email = team["email_configs"][0]
    assert (email["to"], email["auth_password"]) == (ALL_SECRETS["alertEmailTo"], ALL_SECRETS["alertSmtpPassword"])
    assert (email["from"], email["smarthost"], email["auth_username"]) == tuple(EMAIL_SETTINGS.values())


@pytest.mark.parametrize("name", ["dev", "dev-with-receivers", "staging", "prod", "prod-every-receiver"])
def test_amtool_accepts_the_configuration(config_files, name):
    result = subprocess.run([binary("amtool"), "check-config", config_files[name]], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


ROUTES = [
    # (stack, labels of an alert, the receiver it must reach)
    ("prod", {"alertname": "WorkflowApiErrors", "severity": "critical"}, TEAM_RECEIVER),
    ("prod", {"alertname": "WorkflowQueueBacklog", "severity": "warning", "queue": "workflow.steps"}, TEAM_RECEIVER),
    ("staging", {"alertname": "WorkflowApiErrors", "severity": "critical"}, TEAM_RECEIVER),
    ("staging", {"alertname": "WorkflowDeadLetters", "severity": "warning"}, TEAM_RECEIVER),
    ("prod", {"alertname": "SomethingUnlabelled"}, TEAM_RECEIVER),
    ("prod", {"alertname": "Watchdog", "severity": "none"}, NULL_RECEIVER),
    ("prod", {"alertname": "InfoInhibitor", "severity": "none"}, NULL_RECEIVER),
    ("prod", {"alertname": "CPUThrottlingHigh", "severity": "info"}, NULL_RECEIVER),
    ("dev", {"alertname": "WorkflowApiErrors", "severity": "critical"}, NULL_RECEIVER),
    ("dev-with-receivers", {"alertname": "WorkflowApiErrors", "severity": "critical"}, TEAM_RECEIVER),
]


@pytest.mark.parametrize(
    ("name", "labels", "receiver"), ROUTES, ids=[f"{name}-{labels['alertname']}" for name, labels, _ in ROUTES]
)
def test_amtool_routes_each_alert_to_its_receiver(config_files, name, labels, receiver):
    result = subprocess.run(
        [binary("amtool"), "config", "routes", "test", f"--config.file={config_files[name]}"]
        + [f"{key}={value}" for key, value in labels.items()],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [receiver]


def test_the_inhibit_rule_compares_every_label_the_platform_alerts_keep():
    kept = set()

    def visit(node) -> None:
        if isinstance(node, promql_parser.AggregateExpr) and node.modifier is not None:
            kept.update(node.modifier.labels)

    for alert in PLATFORM_ALERTS:
        promql_parser.walk(promql_parser.parse(alert.expr), pre_visit=visit)
    assert kept - {"le"} <= set(SAME_SUBJECT)


@pytest.fixture(scope="module")
def running_alertmanager(config_files, tmp_path_factory):
    """A real Alertmanager on prod's configuration (every receiver; nothing can be delivered to .invalid hosts)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    folder = tmp_path_factory.mktemp("alertmanager-run")
    log = (folder / "alertmanager.log").open("w")
    process = subprocess.Popen(
        [
            binary("prometheus-alertmanager"),
            f"--config.file={config_files['prod-every-receiver']}",
            f"--storage.path={folder / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: process.poll() is None and _get(f"{url}/-/ready") is not None, f"Alertmanager ({log.name})")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


def _get(url: str):
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.read()
    except OSError:
        return None


def wait_for(condition, what: str, timeout: float = 10):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not after {timeout} s")
        time.sleep(0.1)


INHIBITION = [
    # (alert fired beside a critical KubePersistentVolumeFillingUp on workflow-data's pvc data-0, is it inhibited?)
    (
        {"alertname": "KubePersistentVolumeFillingUp", "namespace": "workflow-data", "persistentvolumeclaim": "data-0"},
        True,
    ),
    (
        {"alertname": "KubePersistentVolumeFillingUp", "namespace": "workflow-data", "persistentvolumeclaim": "data-1"},
        False,
    ),
    (
        {"alertname": "KubePersistentVolumeErrors", "namespace": "workflow-data", "persistentvolumeclaim": "data-0"},
        False,
    ),
    ({"alertname": "KubePersistentVolumeFillingUp", "namespace": "workflow", "persistentvolumeclaim": "data-0"}, False),
]


def test_a_firing_critical_alert_inhibits_only_its_own_warning_about_the_same_subject(running_alertmanager):
    critical = {**INHIBITION[0][0], "severity": "critical"}
    warnings = [{**labels, "severity": "warning"} for labels, _ in INHIBITION]
    request = urllib.request.Request(
        f"{running_alertmanager}/api/v2/alerts",
        data=json.dumps([{"labels": labels} for labels in [critical, *warnings]]).encode(),
        headers={"Content-Type": "application/json"},
    )
    urllib.request.urlopen(request, timeout=5).close()

    def states() -> dict[tuple, bool]:
        alerts = json.loads(_get(f"{running_alertmanager}/api/v2/alerts") or b"[]")
        return {tuple(sorted(a["labels"].items())): bool(a["status"]["inhibitedBy"]) for a in alerts}

    expected = {tuple(sorted(w.items())): inhibited for w, (_, inhibited) in zip(warnings, INHIBITION, strict=True)}
    expected[tuple(sorted(critical.items()))] = False
    wait_for(lambda: states() == expected, f"inhibition as expected: {expected}")
