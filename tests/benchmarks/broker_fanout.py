"""What Celery's events and remote control cost per task on this transport (issue 14, part 4).

Run: .venv/bin/python -m tests.benchmarks.broker_fanout [--tasks 1000] [--project /path/to/other/checkout]

For each setup, a real `celery -A boot worker -c 2` drains `--tasks` no-op tasks, and the broker
database's committed transactions (pg_stat_database; every statement of the transport is one
autocommit transaction) are counted over the drain, minus the idle rate measured just before, and
divided by the number of tasks: statements per task, producer's publish included. Setups:
- no events: the worker without -E (its heartbeat events still go to the celeryev exchange);
- -E, nobody listening: task events too, with no receiver bound;
- -E, one receiver: `celery events --dump` bound to the events exchange.
--project runs the workers from another checkout of this project (e.g. main, before the fanout) with
the same databases and settings, as the baseline of the same run.
The databases doorito_bench_fanout_app and doorito_bench_fanout_queue on 127.0.0.1:5432 are recreated.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.benchmarks.broker import BROKERS, PG, PROJECT_DIR, Worker, base_env, recreate

APP_DB, QUEUE_DB = "doorito_bench_fanout_app", "doorito_bench_fanout_queue"
BROKER_URL = "sqla+postgresql+psycopg://postgres@127.0.0.1:5432/" + QUEUE_DB
# PostgreSQL (15+) backends flush their statistics within 10 s after going idle.
SETTLE = 12.0


def committed() -> int:
    import psycopg

    with psycopg.connect(PG + "postgres") as conn:
        return conn.execute(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = %s", [QUEUE_DB]
        ).fetchone()[0]


def outstanding() -> int:
    import psycopg

    with psycopg.connect(PG + QUEUE_DB) as conn:
        return conn.execute("SELECT count(*) FROM kombu_message m JOIN kombu_queue q ON q.id = m.queue_id "
                            "WHERE q.name = 'default'").fetchone()[0]  # fmt: skip


def measure(setup: str, tasks: int, env: dict, log_dir: Path) -> tuple[float, float]:
    """(idle statements/s, statements per task) of one setup."""
    from boot.celery import app
    from tests.benchmarks.broker_tasks import noop

    # INFO, for the "ready." line (per-task log lines cost time, not statements).
    extra = ("--loglevel", "INFO") if setup == "no events" else ("--loglevel", "INFO", "-E")
    worker = Worker(env, log_dir, setup, 2, extra)
    receiver = None
    try:
        deadline = time.monotonic() + 90
        while b"ready." not in worker.log.read_bytes():
            if time.monotonic() > deadline or worker.popen.poll() is not None:
                raise SystemExit(f"{setup}: the worker did not start:\n{worker.log.read_text()[-3000:]}")
            time.sleep(0.2)
        if setup == "-E, one receiver":
            receiver = subprocess.Popen([str(Path(sys.executable).parent / "celery"), "-A", "boot", "events", "--dump"],
                                        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        start_new_session=True, cwd=log_dir)  # fmt: skip
        time.sleep(SETTLE)
        idle_start, idle_at = committed(), time.monotonic()
        time.sleep(10)
        idle_end, started = committed(), time.monotonic()
        idle_rate = (idle_end - idle_start) / (started - idle_at)
        with app.producer_or_acquire() as producer:
            for _ in range(tasks):
                noop.apply_async(producer=producer)
        while outstanding():
            time.sleep(0.05)
        time.sleep(SETTLE)
        end, ended = committed(), time.monotonic()
        per_task = (end - idle_end - idle_rate * (ended - started)) / tasks
        return idle_rate, per_task
    finally:
        if receiver is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(receiver.pid, signal.SIGTERM)
            receiver.wait(timeout=30)
        worker.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--project", type=Path, help="also measure the workers of this checkout (the baseline)")
    args = parser.parse_args()

    for name in (APP_DB, QUEUE_DB):
        recreate(name)
        subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=PROJECT_DIR,
                       env=base_env(DATABASE_URL=PG + name), check=True)  # fmt: skip
    env = base_env(DATABASE_URL=PG + APP_DB, CELERY_BROKER_URL=BROKER_URL,
                   BROKER_TRANSPORT_CLASS=BROKERS["doorito"]["BROKER_TRANSPORT_CLASS"])  # fmt: skip
    os.environ.update(env)
    import configurations

    configurations.setup()

    checkouts = {"this checkout": PROJECT_DIR}
    if args.project:
        checkouts = {f"{args.project}": args.project.resolve(), **checkouts}
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, project in checkouts.items():
            for setup in ("no events", "-E, nobody listening", "-E, one receiver"):
                print(f"measuring {label}: {setup} ...", flush=True)
                idle, per_task = measure(setup, args.tasks, {**env, "PYTHONPATH": str(project)}, Path(tmp))
                results.append((label, setup, idle, per_task))
    print(
        f"\n{args.tasks} no-op tasks; prefork worker -c 2; statements = committed transactions in the broker database"
    )
    print(f"{'checkout':<28} {'setup':<24} {'idle stmt/s':>11} {'stmt/task':>10}")
    for label, setup, idle, per_task in results:
        print(f"{label:<28} {setup:<24} {idle:>11.2f} {per_task:>10.2f}")
    by = {(label, setup): per_task for label, setup, _, per_task in results}
    for label in checkouts:
        added = by[(label, "-E, nobody listening")] - by[(label, "no events")]
        print(f"{label}: -E with nobody listening adds {added:+.2f} statements per task (goal: 0)")


if __name__ == "__main__":
    main()
