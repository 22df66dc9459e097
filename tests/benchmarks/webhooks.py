"""Webhook delivery throughput vs raw requests, and commit-to-receipt latency through a real worker.

Run: .venv/bin/python -m tests.benchmarks.webhooks [--events 2000] [--latency-events 200]
Uses BENCH_DATABASE_URL (default: a database doorito_bench_webhooks on 127.0.0.1:5432, dropped and
recreated), a threaded http.server receiver on loopback (the same one the tests use), and prints:
- deliveries/s of the outbox dispatcher (claim + sign + POST + record) vs raw requests.Session POSTs of the
  same bodies to the same receiver with the same concurrency, and their ratio;
- commit-to-receipt latency p50/p99 through a real `celery worker -Q high` (non-eager).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/doorito_bench_webhooks"


def recreate_database(url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1].split("?")[0]
    admin_url = url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--latency-events", type=int, default=200)
    args = parser.parse_args()

    url = os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL)
    if "BENCH_DATABASE_URL" not in os.environ:
        recreate_database(url)
    os.environ.update(
        DATABASE_URL=url,
        DJANGO_SETTINGS_MODULE="boot.settings",
        DJANGO_CONFIGURATION="Test",
        CELERY_TASK_ALWAYS_EAGER="false",
    )
    import configurations

    configurations.setup()
    from django.core.management import call_command
    from django.db import transaction
    from django.utils import timezone

    call_command("migrate", verbosity=0)

    import requests
    from django.conf import settings

    from common.outbox.models import OutboxEvent, WebhookDelivery, WebhookEndpoint
    from common.outbox.services.delivery.dispatcher import deliver_due
    from common.outbox.services.emit import emit_event
    from common.outbox.services.endpoints import create_endpoint
    from common.outbox.services.signing import envelope_body
    from tests.outbox.emitting import emit_many
    from tests.outbox.receiver import Receiver
    from tests.processes import ManagedProcess, celery_command, process_env

    receiver = Receiver()
    concurrency = settings.OUTBOX_DELIVERY_CONCURRENCY
    n = args.events
    print(f"webhooks benchmark: {n} events, dispatcher concurrency {concurrency}, receiver http.server on loopback")

    # Baseline: the same bodies, POSTed with a pooled Session and the same concurrency; no database.
    now = timezone.now()
    bodies = [
        envelope_body(event_type="file.stored", timestamp=now, data={"i": i, "name": f"file-{i}.pdf"}) for i in range(n)
    ]
    session = requests.Session()
    session.trust_env = False  # as the dispatcher's session: no proxy/netrc lookup per request
    adapter = requests.adapters.HTTPAdapter(pool_connections=concurrency, pool_maxsize=concurrency)
    session.mount("http://", adapter)
    raw_url = receiver.plan("/raw", [200])
    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        codes = list(pool.map(lambda b: session.post(raw_url, data=b, timeout=15).status_code, bodies))
    raw_seconds = time.perf_counter() - started
    assert codes.count(200) == n

    # Outbox: emit n events (one transaction), then drain with one in-process dispatcher.
    create_endpoint(url=receiver.plan("/hook", [200]))
    started = time.perf_counter()
    emit_many(n, key_prefix="t")
    emit_seconds = time.perf_counter() - started
    started = time.perf_counter()
    delivered = 0
    while True:
        result = deliver_due(limit=500, time_budget=60)
        delivered += result["delivered"]
        if not result["processed"]:
            break
    outbox_seconds = time.perf_counter() - started
    assert delivered == n and len(receiver.received("/hook")) == n, (delivered, len(receiver.received("/hook")))

    raw_rate, outbox_rate = n / raw_seconds, n / outbox_seconds
    print(f"emit_event (in one transaction):      {n / emit_seconds:8.0f} events/s")
    print(f"baseline raw requests POSTs:          {raw_rate:8.0f} requests/s")
    print(f"outbox dispatcher (claim+sign+POST+record): {outbox_rate:8.0f} deliveries/s")
    print(f"ratio outbox / raw:                   {outbox_rate / raw_rate:8.2f}")

    # Latency: commit -> receipt through a real worker consuming `high`.
    WebhookDelivery.objects.all().delete()
    OutboxEvent.objects.all().delete()
    WebhookEndpoint.objects.all().delete()
    create_endpoint(url=receiver.plan("/latency", [200]))
    log_dir = Path(tempfile.mkdtemp(prefix="bench-webhooks-"))
    worker = ManagedProcess(
        "worker",
        celery_command("worker", "-Q", "high", "-c", "2", "--loglevel", "WARNING", "-n", "bench@%h"),
        env=process_env(url),
        log_dir=log_dir,
    )
    try:
        deadline = time.monotonic() + 90
        warm = emit_and_commit(emit_event, transaction, "warmup")
        while not receiver.received("/latency") and time.monotonic() < deadline:
            time.sleep(0.05)
        if not receiver.received("/latency"):
            raise SystemExit(f"worker did not deliver:\n{worker.output()[-3000:]}")
        del warm
        committed: dict[str, float] = {}
        for i in range(args.latency_events):
            event, at = emit_and_commit(emit_event, transaction, f"l{i}")
            committed[event.webhook_id] = at
            time.sleep(0.02)  # a steady trickle, not a burst
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            got = {r["headers"]["webhook-id"]: r["at"] for r in receiver.received("/latency")}
            if all(k in got for k in committed):
                break
            time.sleep(0.1)
        latencies = [(got[k] - at) * 1000 for k, at in committed.items() if k in got]
        missing = len(committed) - len(latencies)
        print(f"commit-to-receipt through a real worker ({len(latencies)} events, {missing} missing):")
        print(
            f"  p50 {percentile(latencies, 0.5):7.1f} ms   p99 {percentile(latencies, 0.99):7.1f} ms   "
            f"max {max(latencies):7.1f} ms   mean {statistics.mean(latencies):7.1f} ms"
        )
    finally:
        worker.stop()
        receiver.close()


def emit_and_commit(emit_event, transaction, key: str):
    with transaction.atomic():
        event = emit_event(
            event_type="file.stored", aggregate_type="upload", aggregate_id=key, payload={"k": key}, idempotency_key=key
        )
    return event, time.monotonic()


if __name__ == "__main__":
    sys.exit(main())
