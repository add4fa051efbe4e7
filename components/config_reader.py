"""Reading a stack's raw configuration strings: each value parsed and checked against what is allowed, every problem
collected so that one run reports them all, each naming the key, the value and what is allowed."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import TypeVar

import pulumi

PROJECT = "workflow-platform"

_CPU = re.compile(r"^(\d+m|\d+(\.\d+)?)$")
_BYTES = re.compile(r"^(\d+)(Ki|Mi|Gi|Ti)$")
_BYTE_UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")

T = TypeVar("T")


class ConfigError(pulumi.RunError):
    """A stack configuration value is invalid; the message lists every bad key."""


def cpu_millicores(quantity: str) -> Decimal:
    return Decimal(quantity[:-1]) if quantity.endswith("m") else Decimal(quantity) * 1000


def byte_count(quantity: str) -> int:
    number, unit = _BYTES.match(quantity).groups()
    return int(number) * _BYTE_UNITS[unit]


class ConfigReader:
    """Reads raw config strings, collecting every problem so one run reports them all."""

    def __init__(self, config: pulumi.Config):
        self._config = config
        self.errors: list[str] = []

    def fail(self, key: str, raw: str, allowed: str) -> None:
        self.errors.append(f"{PROJECT}:{key} = {_shown(raw)} is not allowed: {allowed}")

    def _read(self, key: str, parse: Callable[[str], T], allowed: str, fallback: T) -> T:
        raw = self._config.get(key)
        if raw is None:
            self.errors.append(f"{PROJECT}:{key} is not set: {allowed}")
            return fallback
        try:
            return parse(raw)
        except (ValueError, TypeError):
            self.fail(key, raw, allowed)
            return fallback

    def string(self, key: str, pattern: re.Pattern[str], allowed: str, *, optional: bool = False) -> str:
        def parse(raw: str) -> str:
            if (optional and raw == "") or pattern.match(raw):
                return raw
            raise ValueError

        return self._read(key, parse, allowed, "")

    def boolean(self, key: str) -> bool:
        def parse(raw: str) -> bool:
            if raw not in ("true", "false"):
                raise ValueError
            return raw == "true"

        return self._read(key, parse, "true or false", False)

    def is_set(self, key: str) -> bool:
        return bool(self._config.get(key))

    def secret(self, key: str, pattern: re.Pattern[str], allowed: str) -> pulumi.Output[str] | None:
        """An optional value that must have been set with `pulumi config set --secret`; empty means unset.
        The plain text is only matched here: messages never show it and the program keeps the secret Output."""
        raw = self._config.get(key)
        if not raw:
            return None
        if not pulumi.runtime.is_config_secret(f"{PROJECT}:{key}"):
            self.errors.append(
                f"{PROJECT}:{key} is set in plain text: it must be a secret, set with {set_secret_command(key)}"
            )
            return None
        if not pattern.match(raw):
            self.errors.append(f"{PROJECT}:{key} (a secret, not shown) is not allowed: {allowed}")
            return None
        return self._config.get_secret(key)

    def choice(self, key: str, choices: Iterable[str]) -> str:
        choices = tuple(choices)

        def parse(raw: str) -> str:
            if raw not in choices:
                raise ValueError
            return raw

        return self._read(key, parse, "one of " + ", ".join(choices), choices[0])

    def integer(self, key: str, minimum: int, maximum: int | None = None) -> int:
        allowed = f"an integer >= {minimum}" + (f" and <= {maximum}" if maximum is not None else "")

        def parse(raw: str) -> int:
            value = int(raw)
            if value < minimum or (maximum is not None and value > maximum):
                raise ValueError
            return value

        return self._read(key, parse, allowed, minimum)

    def string_list(self, key: str, item: Callable[[str], str], allowed: str) -> tuple[str, ...]:
        def parse(raw: str) -> tuple[str, ...]:
            values = json.loads(raw)
            if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
                raise ValueError
            if len(set(values)) != len(values):
                raise ValueError
            return tuple(item(v) for v in values)

        return self._read(key, parse, allowed, ())

    def cpu(self, key: str) -> str:
        return self.string(key, _CPU, "a CPU quantity such as 250m or 2")

    def bytes_(self, key: str) -> str:
        return self.string(key, _BYTES, "a whole size in Ki, Mi, Gi or Ti, such as 512Mi or 20Gi")


def _shown(raw: str) -> str:
    """A value as the stack file would spell it: numbers and lists bare, strings quoted."""
    try:
        json.loads(raw)
        return raw
    except ValueError:
        return json.dumps(raw)


def set_secret_command(key: str, value: str = "<value>") -> str:
    return f"`pulumi config set --secret {key} {value} --stack {pulumi.get_stack()}`"
