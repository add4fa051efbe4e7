"""A stack's configuration outside a Pulumi run: Pulumi.yaml's defaults under Pulumi.<stack>.yaml, read and
validated by the program's own loader (components.config.load), as tools/mock_stack.py passes them to the program."""

from __future__ import annotations

import pulumi

from components import config
from components.config import StackConfig
from tools.mock_stack import PROJECT, SECURE_STAND_INS, stack_config

# Where alerts go does not change what a stack runs; without the operator's secrets, the receivers are left unset and
# not required, so staging and prod read as they deploy.
_RECEIVERS_LEFT_OUT = {"alertReceiverRequired": False, **dict.fromkeys(SECURE_STAND_INS)}


def read_stack(name: str) -> StackConfig:
    pulumi.runtime.set_all_config(stack_config(name, overrides=_RECEIVERS_LEFT_OUT), [])
    return config.load(pulumi.Config(PROJECT))
