"""Alertmanager's configuration: who receives the platform's alerts, how they are grouped and repeated, and which
warnings a firing critical alert already explains.

The configuration holds the receivers' webhook, addresses and password, so it is built as a Pulumi secret and
delivered in a Secret of our own that the Alertmanager resource names (`alertmanagerSpec.configSecret`); it never
passes through the chart's values."""

from __future__ import annotations

import pulumi
import yaml

from components.alert_receivers import AlertReceivers

CONFIG_FILE = "alertmanager.yaml"
NULL_RECEIVER = "null"
TEAM_RECEIVER = "platform-team"

# Labels naming what an alert is about. Critical and warning variants of one alert come from the same series, so
# they agree on all of these; a label neither carries counts as equal. kube-prometheus-stack's alerts name a
# namespace, host, volume or mount; the platform's (components/alerts.py) keep the route, queue or task they
# aggregate by, and nothing else.
SAME_SUBJECT = ("alertname", "namespace", "instance", "persistentvolumeclaim", "mountpoint", "route", "queue", "task")

SLACK_TITLE = "[{{ .Status | toUpper }}] {{ .CommonLabels.alertname }} ({{ .CommonLabels.severity }})"
SLACK_TEXT = "{{ range .Alerts }}*{{ .Annotations.summary }}*\n{{ .Annotations.description }}\n{{ end }}"


INHIBIT_RULES = [
    # A firing critical alert explains its own warning (and info) variants about the same subject.
    {
        "source_matchers": ['severity = "critical"'],
        "target_matchers": ['severity =~ "warning|info"'],
        "equal": list(SAME_SUBJECT),
    },
    {
        "source_matchers": ['severity = "warning"'],
        "target_matchers": ['severity = "info"'],
        "equal": list(SAME_SUBJECT),
    },
    # kube-prometheus-stack's InfoInhibitor fires while info alerts in a namespace have nothing worse beside them.
    {
        "source_matchers": ['alertname = "InfoInhibitor"'],
        "target_matchers": ['severity = "info"'],
        "equal": ["namespace"],
    },
]


def alertmanager_config(receivers: AlertReceivers) -> pulumi.Output[str]:
    """The whole Alertmanager configuration file, as a secret."""
    config = {
        "global": {"resolve_timeout": "5m"},
        "route": _route(TEAM_RECEIVER if receivers.any else NULL_RECEIVER),
        "inhibit_rules": INHIBIT_RULES,
        "receivers": [{"name": NULL_RECEIVER}, *([_team_receiver(receivers)] if receivers.any else [])],
    }
    rendered = pulumi.Output.from_input(config).apply(lambda plain: yaml.safe_dump(plain, sort_keys=False, width=120))
    return pulumi.Output.secret(rendered)


def _route(receiver: str) -> dict:
    def matching(matcher: str, to: str, **timing: str) -> dict:
        return {"receiver": to, "matchers": [matcher], **timing}

    return {
        # Alerts without a known severity still reach someone.
        "receiver": receiver,
        "group_by": ["alertname", "namespace"],
        "group_wait": "30s",
        "group_interval": "5m",
        "repeat_interval": "12h",
        "routes": [
            # Always firing by design, to prove the pipeline works: only an external dead man's switch wants it.
            matching('alertname = "Watchdog"', NULL_RECEIVER),
            # Fires to silence info alerts (inhibit rule below); never news itself.
            matching('alertname = "InfoInhibitor"', NULL_RECEIVER),
            matching('severity = "critical"', receiver, group_wait="10s", repeat_interval="1h"),
            matching('severity = "warning"', receiver, group_wait="1m", repeat_interval="12h"),
            matching('severity = "info"', NULL_RECEIVER),
        ],
    }


def _team_receiver(receivers: AlertReceivers) -> dict:
    receiver: dict = {"name": TEAM_RECEIVER}
    if receivers.slack_webhook_url is not None:
        receiver["slack_configs"] = [
            {"api_url": receivers.slack_webhook_url, "send_resolved": True, "title": SLACK_TITLE, "text": SLACK_TEXT}
        ]
    if receivers.email is not None:
        email = receivers.email
        settings = {"to": email.to, "from": email.sender, "smarthost": email.smarthost, "send_resolved": True}
        if email.username:
            settings |= {"auth_username": email.username, "auth_password": email.password}
        receiver["email_configs"] = [settings]
    return receiver
