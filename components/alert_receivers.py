"""Where Alertmanager sends the platform's alerts, read from the stack's configuration: a Slack webhook, e-mail, or
both. The webhook, the addresses and the SMTP password must be Pulumi secrets; they stay Outputs from here on."""

from __future__ import annotations

import re
from dataclasses import dataclass

import pulumi

from components.config_reader import EMAIL, PROJECT, ConfigReader, set_secret_command

_HTTPS_URL = re.compile(r"^https://[^\s/]+/\S*$")
_EMAILS = re.compile(r"^[^@\s,]+@[^@\s,]+\.[^@\s,]+(,\s*[^@\s,]+@[^@\s,]+\.[^@\s,]+)*$")
_SMARTHOST = re.compile(r"^[A-Za-z0-9.-]+:\d{1,5}$")


@dataclass(frozen=True)
class EmailReceiver:
    to: pulumi.Output[str]
    sender: str
    smarthost: str
    username: str
    password: pulumi.Output[str] | None


@dataclass(frozen=True)
class AlertReceivers:
    """Where Alertmanager sends the platform's alerts; the addresses and credentials are Pulumi secrets."""

    slack_webhook_url: pulumi.Output[str] | None
    email: EmailReceiver | None

    @property
    def any(self) -> bool:
        return self.slack_webhook_url is not None or self.email is not None


def read_alert_receivers(read: ConfigReader) -> AlertReceivers:
    slack_webhook_url = read.secret(
        "alertSlackWebhookUrl", _HTTPS_URL, "an https:// URL, such as a Slack incoming webhook's"
    )
    email_to = read.secret("alertEmailTo", _EMAILS, "an e-mail address, or several separated by commas")
    sender = read.string("alertEmailFrom", EMAIL, "empty or an e-mail address", optional=True)
    smarthost = read.string(
        "alertSmtpSmarthost",
        _SMARTHOST,
        "empty or an SMTP server as host:port, such as smtp.example.com:587",
        optional=True,
    )
    username = read.string(
        "alertSmtpUsername", re.compile(r"^\S+$"), "empty or a user name without spaces", optional=True
    )
    password = read.secret("alertSmtpPassword", re.compile(r"^\S.*$"), "a password")

    if read.is_set("alertEmailTo"):
        for key, value in (("alertEmailFrom", sender), ("alertSmtpSmarthost", smarthost)):
            if not value:
                read.errors.append(f"{PROJECT}:{key} is not set: alertEmailTo is set, and sending e-mail needs it")
    for key, other in (("alertSmtpPassword", "alertSmtpUsername"), ("alertSmtpUsername", "alertSmtpPassword")):
        if read.is_set(other) and not read.is_set(key):
            read.errors.append(f"{PROJECT}:{key} is not set: {other} is set, and SMTP authentication needs both")

    if read.boolean("alertReceiverRequired") and not (
        read.is_set("alertSlackWebhookUrl") or read.is_set("alertEmailTo")
    ):
        read.errors.append(
            f"{PROJECT}:alertReceiverRequired is true, and neither {PROJECT}:alertSlackWebhookUrl nor "
            f"{PROJECT}:alertEmailTo is set: alerts would reach nobody. Set one or both as secrets: "
            f"{set_secret_command('alertSlackWebhookUrl', 'https://hooks.slack.com/services/...')} and/or "
            f"{set_secret_command('alertEmailTo', 'oncall@example.com')} (with alertEmailFrom and alertSmtpSmarthost)"
        )
    email = (
        EmailReceiver(to=email_to, sender=sender, smarthost=smarthost, username=username, password=password)
        if email_to is not None
        else None
    )
    return AlertReceivers(slack_webhook_url=slack_webhook_url, email=email)
