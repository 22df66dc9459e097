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

import json
import logging
import os
import queue
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import timedelta

import requests
from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from common.models import DeliveryStatus, WebhookDelivery, webhook_id_for
from common.services.endpoints import disable_endpoint, signing_secrets
from common.services.network_guard import BlockedDestinationError, attempt_deadline, check_url, guarded_session
from common.services.retry_schedule import next_delay, parse_retry_after
from common.services.signing import envelope_body, signature_headers

logger = logging.getLogger(__name__)

USER_AGENT = "Doorito-Webhooks/1.0"


@dataclass(frozen=True)
class ClaimedDelivery:
    id: int
    lease_token: uuid.UUID
    endpoint_id: int
    url: str
    secrets: tuple[str, ...]
    msg_id: str
    body: bytes


@dataclass(frozen=True)
class AttemptOutcome:
    attempted_at: object
    duration_ms: int
    status_code: int | None = None
    response_body: str = ""
    error: str = ""
    retry_after: float | None = None

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


_local = {"key": None, "session": None, "executor": None}
_local_lock = threading.Lock()


def _session_and_executor() -> tuple[requests.Session, ThreadPoolExecutor]:
    # One pooled Session per process (Celery forks its pool children after import), rebuilt if the
    # concurrency setting changed (tests change it), so the thread count always matches the setting.
    with _local_lock:
        size = settings.OUTBOX_DELIVERY_CONCURRENCY
        if _local["key"] != (os.getpid(), size):
            if _local["executor"] is not None and _local["key"][0] == os.getpid():
                _local["executor"].shutdown(wait=False)
                _local["session"].close()
            _local.update(
                key=(os.getpid(), size),
                session=guarded_session(pool_size=size),
                executor=ThreadPoolExecutor(max_workers=size, thread_name_prefix="webhook"),
            )
        return _local["session"], _local["executor"]


def _due():
    return WebhookDelivery.objects.filter(
        status=DeliveryStatus.PENDING, next_attempt_at__lte=timezone.now(), endpoint__is_active=True
    )


def count_due() -> int:
    """Number of deliveries due now and not leased by any dispatcher."""
    return _due().count()


# Lock and lease in one statement (atomic on its own), then join what signing and sending need.
_CLAIM = """
WITH due AS (
    SELECT d.id FROM common_webhookdelivery d
    JOIN common_webhookendpoint e ON e.id = d.endpoint_id
    WHERE d.status = 'pending' AND d.next_attempt_at <= %(now)s AND e.is_active
    ORDER BY d.next_attempt_at
    LIMIT %(limit)s
    FOR UPDATE OF d SKIP LOCKED
), leased AS (
    UPDATE common_webhookdelivery d
    SET leased_until = %(leased_until)s, lease_token = %(token)s, next_attempt_at = %(leased_until)s
    FROM due WHERE d.id = due.id
    RETURNING d.id, d.event_id, d.endpoint_id
)
SELECT leased.id, e.id, e.url, e.secret, e.previous_secret, e.previous_secret_expires_at,
       ev.id, ev.event_type, ev.created_at, ev.payload
FROM leased
JOIN common_webhookendpoint e ON e.id = leased.endpoint_id
JOIN common_outboxevent ev ON ev.id = leased.event_id
"""


def claim_due_deliveries(*, limit: int) -> list[ClaimedDelivery]:
    """Lease up to `limit` due deliveries to this caller (SKIP LOCKED: never one claimed twice at once)."""
    now = timezone.now()
    token = uuid.uuid4()
    leased_until = now + timedelta(seconds=settings.OUTBOX_LEASE_SECONDS)
    with connection.cursor() as cursor:
        cursor.execute(_CLAIM, {"now": now, "limit": limit, "leased_until": leased_until, "token": token})
        rows = cursor.fetchall()
    claimed = []
    for (
        delivery_id,
        endpoint_id,
        url,
        secret,
        previous,
        previous_expires,
        event_id,
        event_type,
        created,
        payload,
    ) in rows:
        claimed.append(
            ClaimedDelivery(
                id=delivery_id,
                lease_token=token,
                endpoint_id=endpoint_id,
                url=url,
                secrets=signing_secrets(
                    secret=secret, previous_secret=previous, previous_secret_expires_at=previous_expires, now=now
                ),
                msg_id=webhook_id_for(event_id),
                # Django's connection hands jsonb over as text (JSONField decodes it): decode it the same way.
                body=envelope_body(event_type=event_type, timestamp=created, data=json.loads(payload)),
            )
        )
    return claimed


def send(*, session: requests.Session, claimed: ClaimedDelivery) -> AttemptOutcome:
    """POST one signed delivery (no redirects, connect/read timeouts) and describe what happened; never raises."""
    attempted_at = timezone.now()
    started = time.monotonic()

    def outcome(**kwargs) -> AttemptOutcome:
        return AttemptOutcome(attempted_at=attempted_at, duration_ms=int((time.monotonic() - started) * 1000), **kwargs)

    connect, read = settings.WEBHOOK_CONNECT_TIMEOUT, settings.WEBHOOK_READ_TIMEOUT
    total = attempt_seconds()
    # requests' read timeout bounds each socket read, not the response: a receiver trickling a byte
    # a second would hold the attempt (and outlive its lease) without this wall-clock deadline.
    with attempt_deadline(seconds=total) as deadline:
        try:
            headers = signature_headers(
                msg_id=claimed.msg_id, timestamp=int(time.time()), body=claimed.body, secrets_=claimed.secrets
            )
            headers.update({"content-type": "application/json", "user-agent": USER_AGENT})
            check_url(url=claimed.url)
            with session.post(
                claimed.url,
                data=claimed.body,
                headers=headers,
                timeout=(connect, read),
                allow_redirects=False,
                stream=True,
            ) as response:
                body = _read_limited(response, deadline=deadline.at)
                deadline.finish()
                retry_after = None
                if response.status_code in (429, 503):
                    retry_after = parse_retry_after(value=response.headers.get("Retry-After"))
                error = ""
                if 300 <= response.status_code < 400:
                    error = f"redirect to {response.headers.get('Location', '?')!r} not followed"
                return outcome(
                    status_code=response.status_code, response_body=body, retry_after=retry_after, error=error
                )
        except BlockedDestinationError as exc:
            return outcome(error=f"SSRF guard: {exc}")
        except requests.RequestException as exc:
            if deadline.expired:
                return outcome(error=f"timeout: the attempt exceeded its total deadline of {total:g}s: {exc}")
            if isinstance(exc, requests.Timeout):
                return outcome(error=f"timeout (connect {connect}s, read {read}s): {exc}")
            return outcome(error=f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # an attempt must be recorded whatever broke, or the lease would hide it
            if deadline.expired:
                return outcome(error=f"timeout: the attempt exceeded its total deadline of {total:g}s: {exc}")
            logger.exception("webhook.send_failed")
            return outcome(error=f"{type(exc).__name__}: {exc}")


def attempt_seconds() -> float:
    """The wall-clock limit of one attempt, DNS and connect included: connect + read timeout."""
    return settings.WEBHOOK_CONNECT_TIMEOUT + settings.WEBHOOK_READ_TIMEOUT


def _read_limited(response: requests.Response, *, deadline: float) -> str:
    limit = settings.WEBHOOK_RESPONSE_BODY_LIMIT
    chunks, size = [], 0
    for chunk in response.iter_content(chunk_size=1024):
        chunks.append(chunk)
        size += len(chunk)
        if size > limit or time.monotonic() > deadline:
            break  # the rest is dropped with the connection; reading it could take forever
    return b"".join(chunks)[:limit].decode("utf-8", errors="replace")


_INSERT_ATTEMPT_ROW = "(%s, %s, %s, %s, %s, %s, %s)"
_INSERT_ATTEMPTS = """
INSERT INTO common_deliveryattempt
    (delivery_id, attempted_at, status_code, duration_ms, response_body, error, succeeded)
VALUES {rows}
"""

# Only the delivery rows are locked (OF d), in id order, and NO KEY UPDATE so the attempt rows'
# foreign keys (KEY SHARE) don't conflict: two dispatchers recording overlapping rows wait, never deadlock.
_LOCK_FOR_RECORD = """
SELECT d.id, d.lease_token, d.attempt_count, e.is_active, e.failing_since
FROM common_webhookdelivery d JOIN common_webhookendpoint e ON e.id = d.endpoint_id
WHERE d.id = ANY(%s)
ORDER BY d.id
FOR NO KEY UPDATE OF d
"""

# Endpoint rows are locked in id order before they are updated, for the same reason.
_SET_FAILING_SINCE = """
WITH locked AS (
    SELECT id FROM common_webhookendpoint WHERE id = ANY(%(ids)s) AND {condition} ORDER BY id FOR NO KEY UPDATE
)
UPDATE common_webhookendpoint e SET failing_since = %(value)s FROM locked WHERE e.id = locked.id
"""


def storable_text(text: str) -> str:
    """`text` with the NUL characters PostgreSQL's text type refuses replaced by U+FFFD."""
    return text.replace("\x00", "\ufffd")


# Casts on every row: a column that is NULL in every row would otherwise be typed text.
_UPDATE_DELIVERY_ROW = (
    "(%s::bigint, %s::varchar, %s::integer, %s::timestamptz, %s::integer, %s::text, %s::timestamptz, %s::timestamptz)"
)
_UPDATE_DELIVERY_COLUMNS = 8
_UPDATE_DELIVERIES = """
UPDATE common_webhookdelivery d SET
    status = v.status,
    attempt_count = v.attempt_count,
    next_attempt_at = v.next_attempt_at,
    leased_until = NULL,
    lease_token = NULL,
    last_status_code = v.last_status_code,
    last_error = v.last_error,
    last_attempt_at = v.last_attempt_at,
    delivered_at = COALESCE(v.delivered_at, d.delivered_at)
FROM (VALUES {rows})
    AS v(id, status, attempt_count, next_attempt_at, last_status_code, last_error, last_attempt_at, delivered_at)
WHERE d.id = v.id
"""


@dataclass(frozen=True)
class NextState:
    """Where one delivery goes after an attempt, and what that means for its endpoint."""

    status: str
    attempt_count: int
    next_attempt_at: object
    last_error: str
    # True: the endpoint is failing (failing_since is set if unset); False: it answered 2xx (cleared);
    # None: leave failing_since alone (410 Gone disables the endpoint instead).
    endpoint_failing: bool | None
    disable_reason: str | None = None


def next_state(*, attempt_count: int, endpoint_active: bool, failing_since, result: AttemptOutcome, now) -> NextState:
    """Decide one delivery's new status and schedule after `result` (no database access)."""
    attempts = attempt_count + 1
    error = result.error[:2000]
    if result.succeeded:
        return NextState(DeliveryStatus.DELIVERED, attempts, now, error, endpoint_failing=False)
    if result.status_code == 410:
        return NextState(
            DeliveryStatus.FAILED,
            attempts,
            now,
            "410 Gone: the endpoint asked to stop receiving webhooks",
            endpoint_failing=None,
            disable_reason=f"the endpoint answered 410 Gone at {now:%Y-%m-%d %H:%M:%S} UTC",
        )
    failing_since = failing_since or now
    disable_reason = None
    if (now - failing_since).total_seconds() >= settings.WEBHOOK_DISABLE_AFTER_SECONDS:
        disable_reason = f"failing since {failing_since:%Y-%m-%d %H:%M:%S} UTC, last error: {_summary(result)}"
    delay = next_delay(attempts_made=attempts, retry_after=result.retry_after)
    if delay is None or not endpoint_active:
        return NextState(DeliveryStatus.FAILED, attempts, now, error, True, disable_reason)
    return NextState(DeliveryStatus.PENDING, attempts, now + timedelta(seconds=delay), error, True, disable_reason)


def record_attempts(*, results: list[tuple[ClaimedDelivery, AttemptOutcome]]) -> dict[str, int]:
    """Log every attempt and move each still-leased delivery on; returns {"delivered", "failed", "stale"} counts."""
    try:
        return _record_batch(results=results)
    except DatabaseError:
        # One row the database refuses must not leave the whole batch leased (and re-sent after the
        # lease, forever): record row by row, and a row that still fails is recorded without its texts.
        logger.exception("webhook.record_batch_failed", extra={"size": len(results)})
    counts = {"delivered": 0, "failed": 0, "stale": 0}
    for claimed, result in results:
        try:
            one = _record_batch(results=[(claimed, result)])
        except DatabaseError as exc:
            logger.exception("webhook.record_failed", extra={"delivery_id": claimed.id})
            bare = replace(result, response_body="", error=f"the attempt's result could not be stored: {exc}"[:2000])
            try:
                one = _record_batch(results=[(claimed, bare)])
            except DatabaseError:  # e.g. the delivery row is gone: nothing left to record it on
                logger.exception("webhook.record_failed_again", extra={"delivery_id": claimed.id})
                continue
        for key, value in one.items():
            counts[key] += value
    return counts


def _record_batch(*, results: list[tuple[ClaimedDelivery, AttemptOutcome]]) -> dict[str, int]:
    counts = {"delivered": 0, "failed": 0, "stale": 0}
    if not results:
        return counts
    to_disable: dict[int, str] = {}
    now = timezone.now()
    by_id = {claimed.id: (claimed, result) for claimed, result in results}
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(_LOCK_FOR_RECORD, [sorted(by_id)])
        locked = cursor.fetchall()
        attempt_params = []
        for claimed, result in results:
            attempt_params += [
                claimed.id,
                result.attempted_at,
                result.status_code,
                result.duration_ms,
                storable_text(result.response_body),
                storable_text(result.error[:2000]),
                result.succeeded,
            ]
        cursor.execute(_INSERT_ATTEMPTS.format(rows=", ".join([_INSERT_ATTEMPT_ROW] * len(results))), attempt_params)

        update_params, recovered, failing = [], set(), set()
        for delivery_id, lease_token, attempt_count, endpoint_active, failing_since in locked:
            claimed, result = by_id[delivery_id]
            if lease_token != claimed.lease_token:
                counts["stale"] += 1  # our lease expired and someone else owns the row now
                continue
            counts["delivered" if result.succeeded else "failed"] += 1
            state = next_state(
                attempt_count=attempt_count,
                endpoint_active=endpoint_active,
                failing_since=failing_since,
                result=result,
                now=now,
            )
            if state.disable_reason:
                to_disable[claimed.endpoint_id] = state.disable_reason
            if state.endpoint_failing is not None:
                (failing if state.endpoint_failing else recovered).add(claimed.endpoint_id)
            update_params += [
                delivery_id,
                state.status,
                state.attempt_count,
                state.next_attempt_at,
                result.status_code,
                storable_text(state.last_error),
                result.attempted_at,
                now if result.succeeded else None,
            ]
        if update_params:
            rows = ", ".join([_UPDATE_DELIVERY_ROW] * (len(update_params) // _UPDATE_DELIVERY_COLUMNS))
            cursor.execute(_UPDATE_DELIVERIES.format(rows=rows), update_params)
        # failing_since marks the first failure since the last success; a 2xx in this chunk wins.
        if recovered:
            cursor.execute(
                _SET_FAILING_SINCE.format(condition="failing_since IS NOT NULL"),
                {"ids": sorted(recovered), "value": None},
            )
        if failing - recovered:
            cursor.execute(
                _SET_FAILING_SINCE.format(condition="failing_since IS NULL"),
                {"ids": sorted(failing - recovered), "value": now},
            )
    for endpoint_id, reason in sorted(to_disable.items()):
        disable_endpoint(endpoint_id=endpoint_id, reason=reason)
        logger.warning("webhook.endpoint_disabled", extra={"endpoint_id": endpoint_id, "reason": reason})
    return counts


def release_leases(*, claimed: list[ClaimedDelivery]) -> None:
    """Make still-leased deliveries that were not sent due again at once (nothing is recorded for them)."""
    if not claimed:
        return
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE common_webhookdelivery SET leased_until = NULL, lease_token = NULL, next_attempt_at = %s "
            "WHERE id = ANY(%s) AND lease_token = ANY(%s)",
            [timezone.now(), [c.id for c in claimed], list({c.lease_token for c in claimed})],
        )


def _summary(result: AttemptOutcome) -> str:
    return f"HTTP {result.status_code}" if result.status_code else result.error[:200]


def latest_start(*, claimed_at: float, run_deadline: float) -> float:
    """When a request of a claim made at `claimed_at` may start at the latest (time.monotonic() seconds)."""
    timeout = settings.WEBHOOK_CONNECT_TIMEOUT + settings.WEBHOOK_READ_TIMEOUT
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
