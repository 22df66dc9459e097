"""Procrastinate side of the broker benchmark's pressure mode (tests/benchmarks/broker_pressure.py).

Runs only in the benchmark's own virtualenv (.bench/procrastinate-<version>, created on first use): Procrastinate
is a baseline to compare with, never a project dependency, so this file imports nothing from the project.

    python procrastinate_bench.py schema --queue-url URL
    python procrastinate_bench.py worker --queue-url URL --latency-url URL --concurrency 4
    python procrastinate_bench.py produce --queue-url URL --rate 200 --seconds 60

Each job records (sent_at, started_at) in bench_pressure on the latency database, as the Celery task does (or, with
BENCH_RUNS_DIR set, the peak mode, in a file of its process there).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

import procrastinate
import psycopg

_latency: psycopg.AsyncConnection | None = None
_runs = None


def make_app(queue_url: str) -> procrastinate.App:
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=queue_url))

    @app.task(name="pressure")
    async def pressure(sent_at: float) -> None:
        started = time.time()
        runs = os.environ.get("BENCH_RUNS_DIR")
        if runs:  # the peak mode: a line in a file, as the Celery task writes
            global _runs
            if _runs is None:
                _runs = open(os.path.join(runs, f"runs-{os.getpid()}.txt"), "a", buffering=1)  # noqa: SIM115
            _runs.write(f"{sent_at} {started}\n")
            return
        global _latency
        if _latency is None:
            _latency = await psycopg.AsyncConnection.connect(os.environ["BENCH_LATENCY_URL"], autocommit=True)
        await _latency.execute("INSERT INTO bench_pressure (sent_at, started_at) VALUES (%s, %s)", (sent_at, started))

    return app


async def produce(app: procrastinate.App, rate: float, seconds: float) -> None:
    """Defer one job each 1/rate s (catching up if late) for `seconds`."""
    task = app.tasks["pressure"]
    async with app.open_async():
        started = time.monotonic()
        sent = 0
        while (elapsed := time.monotonic() - started) < seconds:
            due = int(elapsed * rate) + 1
            while sent < due:
                await task.defer_async(sent_at=time.time())
                sent += 1
            await asyncio.sleep(max(0.0, started + sent / rate - time.monotonic()))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=("schema", "worker", "produce"))
    parser.add_argument("--queue-url", required=True)
    parser.add_argument("--latency-url", default="")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    os.environ["BENCH_LATENCY_URL"] = args.latency_url
    app = make_app(args.queue_url)
    if args.mode == "schema":
        with app.open():
            app.schema_manager.apply_schema()
    elif args.mode == "worker":
        # Finished jobs are deleted, as this project's transport deletes acked messages: both tables then hold
        # only waiting and running work, and their sizes compare.
        app.run_worker(concurrency=args.concurrency, delete_jobs="successful", install_signal_handlers=True)
    else:
        asyncio.run(produce(app, args.rate, args.seconds))


if __name__ == "__main__":
    main()
