"""The Celery app and tasks that the benchmark's Celery workers import (``celery -A bench.celery_tasks``).

The workers learn whether to keep results from BENCH_CELERY_RESULT_BACKEND, so one module serves both
Celery peers: ``celery-pg`` (PostgreSQL result backend) and ``celery`` (no result backend).
"""

from __future__ import annotations

import os

from celery import Celery

from bench.services import AMQP_URL, record_completion

QUEUE_NAME = "bench.celery"
NOOP_TASK = "bench.noop"  # completion is seen in the result table
COUNTED_NOOP_TASK = "bench.noop_counted"  # completion is seen in the Redis counter

# How many unacknowledged messages each worker process may hold, per pool slot. The default (4) starves
# a pool whose tasks take microseconds (see bench/README.md for the trial runs). The environment variable
# is there to repeat those trials.
PREFETCH_MULTIPLIER = int(os.environ.get("BENCH_CELERY_PREFETCH_MULTIPLIER", "64"))


def create_app(result_backend: str | None) -> Celery:
    app = Celery("bench", broker=AMQP_URL, backend=result_backend)
    app.conf.update(
        task_acks_late=True,
        worker_prefetch_multiplier=PREFETCH_MULTIPLIER,
        task_default_queue=QUEUE_NAME,
        task_ignore_result=result_backend is None,
        # Nothing here uses remote control; turning it off keeps the broker free of pidbox queues.
        worker_enable_remote_control=False,
        broker_connection_retry_on_startup=True,
    )

    @app.task(name=NOOP_TASK, shared=False)
    def noop() -> None:
        return None

    @app.task(name=COUNTED_NOOP_TASK, shared=False)
    def noop_counted() -> None:
        record_completion()

    return app


app = create_app(os.environ.get("BENCH_CELERY_RESULT_BACKEND") or None)
