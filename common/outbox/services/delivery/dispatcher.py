"""Deliver due webhook deliveries: claim with a lease, POST signed, record each attempt.

Three steps, so no transaction is open during HTTP:
1. claim: one statement locks due rows with FOR UPDATE SKIP LOCKED, leases them (next_attempt_at
   moves to the lease's end, so a dead dispatcher's rows fall due again) and returns the event and
   endpoint data needed to sign and send;
2. send: HTTP in a thread pool, no database access;
3. record: a short transaction logs the attempts (one multi-row INSERT) and moves each delivery on
   (one UPDATE ... FROM VALUES), but only if the dispatcher still holds the lease (lease_token), so a
   late writer never overwrites a newer claim.
Requests flow through a sliding window: results are recorded as they complete (while the other
requests are on the wire, so recording costs no HTTP time) and freed room is claimed again, so a
slow endpoint holds one thread, not the healthy deliveries claimed with it. Each attempt has a
total deadline (network_guard.attempt_deadline), so it always ends well inside its lease.
Raw SQL here because this is the hot path: the ORM's per-row work
was most of the dispatcher's CPU time.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import requests
from django.conf import settings

from common.outbox.services.delivery.budget import configured_attempt_seconds
from common.outbox.services.delivery.claim import ClaimedDelivery, claim_due_deliveries, count_due, release_leases
from common.outbox.services.delivery.record import record_attempts
from common.outbox.services.delivery.send import AttemptOutcome, send
from common.outbox.services.guarded_http import guarded_session

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _SenderPool:
    pid: int
    size: int
    session: requests.Session
    executor: ThreadPoolExecutor


_pool: _SenderPool | None = None
_pool_lock = threading.Lock()


def _session_and_executor() -> tuple[requests.Session, ThreadPoolExecutor]:
    # One pooled Session per process (Celery forks its pool children after import), rebuilt if the
    # concurrency setting changed (tests change it), so the thread count always matches the setting.
    global _pool
    with _pool_lock:
        size = settings.OUTBOX_DELIVERY_CONCURRENCY
        if _pool is None or (_pool.pid, _pool.size) != (os.getpid(), size):
            if _pool is not None and _pool.pid == os.getpid():
                _pool.executor.shutdown(wait=False)
                _pool.session.close()
            _pool = _SenderPool(
                pid=os.getpid(),
                size=size,
                session=guarded_session(pool_size=size),
                executor=ThreadPoolExecutor(max_workers=size, thread_name_prefix="webhook"),
            )
        return _pool.session, _pool.executor


def latest_start(*, claimed_at: float, run_deadline: float) -> float:
    """When a request of a claim made at `claimed_at` may start at the latest (time.monotonic() seconds)."""
    timeout = configured_attempt_seconds()
    # Starting by then, it ends (one timeout later) with half the lease's spare time left for recording
    # it (settings guarantee OUTBOX_LEASE_SECONDS > connect + read timeout). And never after the run's
    # time budget, so a run's last request ends at most one timeout after the budget.
    return min(claimed_at + (settings.OUTBOX_LEASE_SECONDS - timeout) / 2, run_deadline)


def deliver_due(*, limit: int, time_budget: float) -> dict[str, int]:
    """Send up to `limit` due deliveries within `time_budget` seconds; returns processed/delivered/failed/remaining."""
    session, executor = _session_and_executor()
    deadline = time.monotonic() + time_budget
    concurrency = settings.OUTBOX_DELIVERY_CONCURRENCY
    # Several requests per thread per claim: the claim and the recording cost a few round trips
    # whatever their size, and threads stay busy while the next claim is made.
    claim_size = concurrency * settings.OUTBOX_CLAIM_ROUNDS
    totals = {"processed": 0, "delivered": 0, "failed": 0}

    def record(results: list[tuple[ClaimedDelivery, AttemptOutcome | None]]) -> None:
        counts = record_attempts(results=[(c, outcome) for c, outcome in results if outcome is not None])
        release_leases(claimed=[c for c, outcome in results if outcome is None])
        totals["processed"] += counts["delivered"] + counts["failed"] + counts["stale"]
        totals["delivered"] += counts["delivered"]
        totals["failed"] += counts["failed"]

    # A sliding window, not claim by claim: results are recorded as they complete and the freed room
    # is claimed again, so one slow endpoint holds one thread, never the healthy deliveries around it.
    # Recording costs a few round trips whatever its size: gather half a claim's results for it.
    record_size = max(concurrency, claim_size // 2)
    claimed_count, exhausted, in_flight = 0, False, 0
    finished: queue.SimpleQueue = queue.SimpleQueue()  # (claimed, outcome) in completion order
    completed: list[tuple[ClaimedDelivery, AttemptOutcome | None]] = []
    while True:
        room = claim_size - in_flight
        if not exhausted and room >= concurrency and claimed_count < limit and time.monotonic() < deadline:
            claimed_at = time.monotonic()
            claimed = claim_due_deliveries(limit=min(room, limit - claimed_count))
            exhausted = not claimed
            claimed_count += len(claimed)
            in_flight += len(claimed)
            start_by = latest_start(claimed_at=claimed_at, run_deadline=deadline)

            def send_in_time(claimed: ClaimedDelivery, start_by: float = start_by) -> None:
                outcome = None  # not sent: its lease is released
                try:
                    if time.monotonic() <= start_by:
                        outcome = send(session=session, claimed=claimed)
                finally:
                    finished.put((claimed, outcome))

            for c in claimed:
                executor.submit(send_in_time, c)
        if not in_flight:
            record(completed)
            break
        # A short wait once results are waiting: a slow request must not delay recording the others.
        got = 0
        try:
            item = finished.get(timeout=0.05 if completed else None)
            while True:
                completed.append(item)
                got += 1
                item = finished.get_nowait()
        except queue.Empty:
            pass
        in_flight -= got
        if completed and (len(completed) >= record_size or not got or not in_flight):
            record(completed)  # while the window's other requests are on the wire
            completed = []
    return {**totals, "remaining": count_due()}
