"""Tasks for tests/benchmarks/broker.py, loaded into its workers with `celery -A boot worker -I ...`."""

import os
import time

from celery import shared_task
from django.db import connection


@shared_task(name="tests.benchmarks.broker_tasks.noop", ignore_result=True)
def noop() -> None:
    """Nothing: the drain measures the broker and Celery, not the task."""


@shared_task(name="tests.benchmarks.broker_tasks.latency", ignore_result=True)
def latency(sent_at: float) -> None:
    """Record how long after `sent_at` (time.time() at publish) this task started."""
    started = time.time() - sent_at
    with connection.cursor() as cursor:
        cursor.execute("INSERT INTO bench_broker_latency (seconds) VALUES (%s)", [started])


@shared_task(name="tests.benchmarks.broker_tasks.pressure", ignore_result=True)
def pressure(sent_at: float) -> None:
    """Record publish and start time (time.time()) of this task: the pressure mode's pickup latency and done/s."""
    started = time.time()
    runs = os.environ.get("BENCH_RUNS_DIR")
    if runs:  # the peak mode: a line in a file of this process, so the task's own work stays a few microseconds
        _runs_file(runs).write(f"{sent_at} {started}\n")
        return
    with connection.cursor() as cursor:
        cursor.execute("INSERT INTO bench_pressure (sent_at, started_at) VALUES (%s, %s)", [sent_at, started])


_runs_files: dict[int, object] = {}


def _runs_file(directory: str):
    """This process's runs file in `directory` (line-buffered: the benchmark reads it while the worker runs)."""
    runs = _runs_files.get(os.getpid())
    if runs is None:
        runs = _runs_files[os.getpid()] = open(os.path.join(directory, f"runs-{os.getpid()}.txt"), "a", buffering=1)  # noqa: SIM115 - open for the process's life
    return runs


def _log_claims() -> None:
    """With BENCH_CLAIM_LOG set (the pressure mode), the consuming process appends each claim's time to it."""
    path = os.environ.get("BENCH_CLAIM_LOG")
    if not path:
        return
    from common.broker import transport

    log = open(path, "a", buffering=1)  # noqa: SIM115 - open for the worker's life

    def observe(seconds: float, rows: int) -> None:
        log.write(f"{time.time():.3f} {seconds * 1000:.3f} {rows}\n")

    transport.claim_observers.append(observe)


_log_claims()
