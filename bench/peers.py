"""End-to-end throughput of N no-op tasks on the peer task systems, on the local services.

    python -m bench.peers --peer celery-pg|celery|dramatiq --tasks 20000 [--layout NAME]

Peers:
  celery-pg  Celery, RabbitMQ broker, acks_late, PostgreSQL (database) result backend;
             done when N rows in the result table say SUCCESS.
  celery     Celery, RabbitMQ broker, acks_late, no result backend; each task INCRs a Redis counter.
  dramatiq   Dramatiq, RabbitMQ broker, default middleware (no Results); each task INCRs a Redis counter.

One run: delete the peer's queues (and recreate its result database), start its workers as subprocesses,
wait until they consume, enqueue N tasks as fast as the client API allows, and time from the first
enqueue to the moment the last completion is seen. Then stop the workers with SIGTERM (their warm
shutdown) and remove the queues, database and Redis key. One JSON line per run goes to stdout.

``run_peer(peer, tasks)`` does the same for another script and returns the figures as a dict.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from bench import services

REPO_ROOT = Path(__file__).resolve().parent.parent
POLL_INTERVAL_S = 0.05  # the same for every peer; bounds how late the last completion can be seen
WORKERS_READY_TIMEOUT_S = 60
COMPLETION_TIMEOUT_S = 540  # keeps one run under 10 minutes
WORKERS_STOP_TIMEOUT_S = 60


@dataclass(frozen=True)
class WorkerLayout:
    """How a peer's workers use the 2 cores: the commands to start, and the consumers they show once ready."""

    description: str
    commands: list[list[str]]
    consumers_when_ready: int
    env: dict[str, str]


def _celery_worker(node: str, pool: str, concurrency: int) -> list[str]:
    # Gossip, mingle and heartbeat are cluster chatter between worker nodes; none of it helps here.
    return [
        sys.executable, "-m", "celery", "-A", "bench.celery_tasks", "worker",
        f"--hostname={node}@%h", f"--pool={pool}", f"--concurrency={concurrency}",
        "--without-gossip", "--without-mingle", "--without-heartbeat", "--loglevel=WARNING",
    ]  # fmt: skip


def _celery_layouts() -> dict[str, tuple[str, list[list[str]], int]]:
    return {
        # One node, two forked children: the parent consumes and hands tasks to the children over pipes.
        # Celery's database backend keeps a connection pool only in forked children; solo and threads
        # workers open a new PostgreSQL connection for every result they store.
        "prefork": ("1 node, prefork pool, concurrency 2", [_celery_worker("bench1", "prefork", 2)], 1),
        # Two nodes, each consuming and running tasks in its own single process: no pipe hop.
        "solo": (
            "2 nodes, solo pool each",
            [_celery_worker("bench1", "solo", 1), _celery_worker("bench2", "solo", 1)],
            2,
        ),
        # Two nodes, each with a pool of 4 threads.
        "threads": (
            "2 nodes, threads pool, concurrency 4 each",
            [_celery_worker("bench1", "threads", 4), _celery_worker("bench2", "threads", 4)],
            2,
        ),
    }


def _dramatiq_layouts() -> dict[str, tuple[str, list[list[str]], int]]:
    def worker(threads: int) -> list[str]:
        return [
            sys.executable, "-m", "dramatiq", "bench.dramatiq_tasks",
            "--processes", "2", "--threads", str(threads),
        ]  # fmt: skip

    # Each worker process holds one consumer on the work queue (and one on its delay queue).
    # threads8 is what the dramatiq command does by itself on 2 cores (a process per core, 8 threads each).
    return {f"threads{n}": (f"2 processes, {n} threads each", [worker(n)], 2) for n in (1, 4, 8)}


# The layout each peer runs with unless told otherwise; chosen from trial runs (see bench/README.md).
DEFAULT_LAYOUTS = {"celery-pg": "prefork", "celery": "solo", "dramatiq": "threads8"}
PEERS = tuple(DEFAULT_LAYOUTS)


def worker_layouts(peer: str) -> dict[str, WorkerLayout]:
    if peer == "dramatiq":
        env, raw_layouts = {}, _dramatiq_layouts()
    else:
        # The Celery workers read this to decide whether they keep results (see bench/celery_tasks.py).
        backend = services.CELERY_RESULT_BACKEND_URL if peer == "celery-pg" else ""
        env, raw_layouts = {"BENCH_CELERY_RESULT_BACKEND": backend}, _celery_layouts()
    return {
        name: WorkerLayout(description, commands, consumers, env)
        for name, (description, commands, consumers) in raw_layouts.items()
    }


# One peer: how to prepare its services, enqueue a task, count completions and clean up.


@dataclass
class PeerRun:
    queue_name: str
    prepare: Callable[[], None]
    enqueue_all: Callable[[int], None]
    completed: Callable[[], int]
    cleanup: Callable[[], None]


def _celery_run(with_result_backend: bool) -> PeerRun:
    from bench import celery_tasks

    queue = celery_tasks.QUEUE_NAME
    database = services.CELERY_RESULT_DATABASE
    backend_url = services.CELERY_RESULT_BACKEND_URL if with_result_backend else None
    task_name = celery_tasks.NOOP_TASK if with_result_backend else celery_tasks.COUNTED_NOOP_TASK
    # The producer side gets its own app with the workers' configuration, so one Python process can
    # run both Celery peers one after the other.
    app = celery_tasks.create_app(backend_url)
    result_table: dict[str, object] = {}

    def prepare() -> None:
        services.delete_queues([queue], [queue])
        services.reset_completed_counter()
        if with_result_backend:
            services.recreate_database(database)
            # Create the result table now, as a deployment would have it, rather than have the first
            # tasks race to create it inside the timed run.
            app.backend.ResultSession().close()
            result_table["connection"] = services.connect_database(database)

    def enqueue_all(tasks: int) -> None:
        task = app.tasks[task_name]
        # One producer (one channel) for the whole loop instead of a pool checkout per call.
        with app.producer_or_acquire() as producer:
            for _ in range(tasks):
                task.apply_async(producer=producer)

    def completed() -> int:
        if with_result_backend:
            query = "SELECT count(*) FROM celery_taskmeta WHERE status = 'SUCCESS'"
            return services.count_rows(result_table["connection"], query)
        return services.completed_count()

    def cleanup() -> None:
        app.close()
        services.delete_queues([queue], [queue])
        services.reset_completed_counter()
        if with_result_backend:
            if "connection" in result_table:
                result_table.pop("connection").close()
            services.drop_database(database)

    return PeerRun(queue, prepare, enqueue_all, completed, cleanup)


def _dramatiq_run() -> PeerRun:
    from bench import dramatiq_tasks

    def prepare() -> None:
        services.delete_queues(dramatiq_tasks.ALL_QUEUE_NAMES)
        services.reset_completed_counter()

    def enqueue_all(tasks: int) -> None:
        for _ in range(tasks):
            dramatiq_tasks.noop_counted.send()

    def cleanup() -> None:
        dramatiq_tasks.broker.close()
        services.delete_queues(dramatiq_tasks.ALL_QUEUE_NAMES)
        services.reset_completed_counter()

    return PeerRun(dramatiq_tasks.QUEUE_NAME, prepare, enqueue_all, services.completed_count, cleanup)


def _peer_run(peer: str) -> PeerRun:
    if peer == "celery-pg":
        return _celery_run(with_result_backend=True)
    if peer == "celery":
        return _celery_run(with_result_backend=False)
    if peer == "dramatiq":
        return _dramatiq_run()
    raise ValueError(f"unknown peer {peer!r}; expected one of {', '.join(PEERS)}")


# Worker processes


class Workers:
    """The peer's worker processes, each in a session of its own so a stuck one can be killed with its children."""

    def __init__(self, layout: WorkerLayout, log_dir: Path):
        self.layout = layout
        self.log_dir = log_dir
        self.processes: list[subprocess.Popen] = []
        self.logs: list[BinaryIO] = []

    def start(self) -> None:
        env = {**os.environ, **self.layout.env}
        for index, command in enumerate(self.layout.commands):
            log = open(self.log_dir / f"worker{index}.log", "wb")  # closed in stop()
            self.logs.append(log)
            self.processes.append(
                subprocess.Popen(
                    command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                )
            )

    def wait_until_consuming(self, queue_name: str) -> None:
        deadline = time.monotonic() + WORKERS_READY_TIMEOUT_S
        while services.consumer_count(queue_name) < self.layout.consumers_when_ready:
            for process in self.processes:
                if process.poll() is not None:
                    raise RuntimeError(f"a worker exited with {process.returncode}; logs in {self.log_dir}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"workers not consuming {queue_name} after {WORKERS_READY_TIMEOUT_S}s")
            time.sleep(0.1)

    def stop(self) -> None:
        # SIGTERM is the warm shutdown of both Celery and Dramatiq: finish what is running, then exit.
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=WORKERS_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)  # the session started for this worker alone
                process.wait()
        for log in self.logs:
            log.close()


def _wait_for_completions(run: PeerRun, tasks: int, started: float) -> float:
    """Poll the peer's completion count; return the time the count first reached N."""
    deadline = started + COMPLETION_TIMEOUT_S
    while True:
        done = run.completed()
        now = time.perf_counter()
        if done >= tasks:
            if done > tasks:
                raise RuntimeError(f"{done} completions for {tasks} tasks: leftovers from an earlier run?")
            return now
        if now > deadline:
            raise TimeoutError(f"only {done}/{tasks} tasks completed after {COMPLETION_TIMEOUT_S}s")
        time.sleep(POLL_INTERVAL_S)


def run_peer(peer: str, tasks: int, layout: str | None = None) -> dict:
    """Run N no-op tasks through one peer end to end and return its figures."""
    layouts = worker_layouts(peer)
    layout_name = layout or DEFAULT_LAYOUTS[peer]
    if layout_name not in layouts:
        raise ValueError(f"unknown layout {layout_name!r} for {peer}; expected one of {', '.join(layouts)}")
    run = _peer_run(peer)
    log_dir = Path(tempfile.mkdtemp(prefix=f"bench-peers-{peer}-"))
    workers = Workers(layouts[layout_name], log_dir)
    succeeded = False
    try:
        run.prepare()
        workers.start()
        workers.wait_until_consuming(run.queue_name)

        started = time.perf_counter()
        run.enqueue_all(tasks)
        enqueued = time.perf_counter()
        finished = _wait_for_completions(run, tasks, started)
        succeeded = True
    finally:
        workers.stop()
        run.cleanup()
        if succeeded:
            shutil.rmtree(log_dir)
        else:
            print(f"worker logs kept in {log_dir}", file=sys.stderr)

    seconds = finished - started
    enqueue_seconds = enqueued - started
    return {
        "peer": peer,
        "tasks": tasks,
        "seconds": round(seconds, 3),
        "tasks_per_s": round(tasks / seconds, 1),
        "enqueue_seconds": round(enqueue_seconds, 3),
        "enqueue_per_s": round(tasks / enqueue_seconds, 1),
        "layout": layout_name,
        "workers": layouts[layout_name].description,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.peers", description=__doc__.split("\n\n")[0])
    parser.add_argument("--peer", choices=PEERS, required=True)
    parser.add_argument("--tasks", type=int, default=20000)
    parser.add_argument("--layout", help="worker layout to try instead of the peer's default (see bench/README.md)")
    args = parser.parse_args(argv)
    print(json.dumps(run_peer(args.peer, args.tasks, args.layout)), flush=True)


if __name__ == "__main__":
    main()
