"""The adapters implement the engine's Protocols (`app/engine/ports.py`) without importing them: every method a
Protocol names exists on its adapter, with the same parameters, so a change on one side cannot go unnoticed."""

from __future__ import annotations

import inspect

import pytest

from app.adapters.broker import MemoryBroker, RabbitBroker
from app.adapters.cache import EventDoorbell
from app.adapters.payloads import PayloadStore
from app.adapters.store import SqlTransaction, Store
from app.engine import ports

IMPLEMENTATIONS = [
    (ports.Store, Store),
    (ports.Transaction, SqlTransaction),
    (ports.Broker, RabbitBroker),
    (ports.Broker, MemoryBroker),
    (ports.Doorbell, EventDoorbell),
    (ports.Payloads, PayloadStore),
]


def methods(protocol: type) -> list[str]:
    return [name for name, member in vars(protocol).items() if inspect.isfunction(member) and not name.startswith("_")]


def parameters(function) -> list[str]:
    return list(inspect.signature(function).parameters)


@pytest.mark.parametrize(("protocol", "adapter"), IMPLEMENTATIONS, ids=lambda item: item.__name__)
def test_the_adapter_has_every_method_of_the_protocol_with_its_parameters(protocol, adapter):
    assert methods(protocol)
    for name in methods(protocol):
        assert parameters(getattr(adapter, name)) == parameters(getattr(protocol, name)), name
