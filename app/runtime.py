"""Wiring: builds the adapters named by the settings (or their embedded twins) and the engine on top of them.
The same engine code runs in every mode; only what `Platform.build` plugs in differs."""

from __future__ import annotations

import asyncio
import logging
import secrets
from dataclasses import dataclass
from datetime import timedelta

from app.adapters import cache
from app.adapters.broker import MemoryBroker, RabbitBroker
from app.adapters.database import create_engine
from app.adapters.errors import is_outage
from app.adapters.payloads import PayloadStore
from app.adapters.store import Store
from app.domain import ApiKey
from app.engine.engine import Dispatcher, Engine
from app.engine.ports import Broker
from app.engine.queries import Queries
from app.engine.state import RetryPolicy, Timings
from app.engine.tasks import TaskRegistry, registry
from app.engine.transitions import Transitions
from app.engine.worker import Worker, WorkerSettings
from app.settings import Settings

log = logging.getLogger(__name__)


def generate_api_key() -> str:
    return "wfp_" + secrets.token_urlsafe(32)


@dataclass
class Platform:
    settings: Settings
    store: Store
    broker: Broker
    redis: cache.redis.Redis
    doorbell: cache.EventDoorbell
    dispatcher: Dispatcher
    engine: Engine
    tasks: TaskRegistry
    payloads: PayloadStore
    queries: Queries
    transitions: Transitions

    @classmethod
    def build(cls, settings: Settings, *, embedded: bool = False) -> Platform:
        """Adapters from the connection settings; `embedded` allows the in-process twins for empty ones."""
        if not embedded:
            missing = [name for name in ("database_url", "amqp_url", "redis_url") if not getattr(settings, name)]
            if missing:
                raise SystemExit("missing settings: " + ", ".join(f"APP_{name.upper()}" for name in missing))
        import app.engine.http_task  # noqa: F401 - registers http.request

        registry.load_modules(settings.task_modules)
        store = Store(
            create_engine(settings.database_url, settings.database_pool_size, settings.database_pool_overflow)
        )
        timings = Timings(
            retry=RetryPolicy(settings.retry_base_s, settings.retry_max_s),
            republish_after=timedelta(seconds=settings.republish_after_s),
            unclaimed_after=timedelta(seconds=settings.unclaimed_republish_s),
        )
        transitions = Transitions(store, timings)
        broker: Broker = (
            RabbitBroker(settings.amqp_url, settings.delivery_limit) if settings.amqp_url else MemoryBroker()
        )
        redis_client = cache.connect(settings.redis_url)
        doorbell = cache.EventDoorbell(redis_client)
        dispatcher = Dispatcher(store, broker, doorbell)
        payloads = (
            PayloadStore.from_settings(
                endpoint_url=settings.s3_endpoint_url or None,
                bucket=settings.s3_bucket,
                region=settings.s3_region,
                inline_limit_bytes=settings.payload_inline_limit_bytes,
            )
            if settings.s3_bucket
            else PayloadStore(bucket="", inline_limit_bytes=settings.payload_inline_limit_bytes, client=None)
        )
        engine = Engine(
            store,
            transitions,
            dispatcher,
            payloads,
            registry,
            max_steps=settings.max_steps_per_workflow,
            max_timeout_s=settings.max_task_timeout_s,
        )
        queries = Queries(store, payloads)
        return cls(
            settings,
            store,
            broker,
            redis_client,
            doorbell,
            dispatcher,
            engine,
            registry,
            payloads,
            queries,
            transitions,
        )

    async def start(self) -> None:
        await self.broker.connect()
        self.dispatcher.start()
        self.engine.start()
        if self.settings.bootstrap_api_key:
            await self.ensure_admin_key(self.settings.bootstrap_api_key)

    async def stop(self) -> None:
        await self.engine.stop()
        await self.dispatcher.stop()
        await self.doorbell.close()
        await self.broker.close()
        await self.redis.aclose()
        await self.store.engine.dispose()

    async def unready_dependencies(self, timeout_s: float = 2) -> list[str]:
        """The dependencies (database, broker, cache) that do not answer a round trip within `timeout_s`, checked
        at once. Only their names leave this method: the errors, which can carry host and role names, are logged."""
        checks = {"database": self.store.ping(), "broker": self.broker.ping(), "cache": self.redis.ping()}
        results = await asyncio.gather(
            *(asyncio.wait_for(check, timeout_s) for check in checks.values()), return_exceptions=True
        )
        failed = []
        for name, result in zip(checks, results, strict=True):
            if isinstance(result, BaseException):
                log.warning("readiness: %s not ready: %s", name, repr(result))
                failed.append(name)
        return failed

    async def ensure_admin_key(self, secret: str) -> ApiKey:
        return await self.store.create_api_key("bootstrap", "admin", secret)

    def worker(self) -> Worker:
        return Worker(
            self.store,
            self.transitions,
            self.broker,
            self.dispatcher,
            self.tasks,
            self.payloads,
            WorkerSettings(
                queue=self.settings.worker_queue,
                concurrency=self.settings.worker_concurrency,
                prefetch=self.settings.worker_prefetch,
                lease_s=self.settings.lease_s,
                lease_renew_s=min(self.settings.lease_renew_s, self.settings.lease_s / 3),
                lease_grace_s=self.settings.lease_grace_s,
                relay_interval_s=self.settings.relay_interval_s,
            ),
            is_outage,
        )
