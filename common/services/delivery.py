"""Deliver due webhook deliveries: claim with a lease, POST signed, record each attempt.

Three steps, so no transaction is open during HTTP:
1. claim: a short transaction locks due rows with FOR UPDATE SKIP LOCKED and leases them
   (next_attempt_at moves to the lease's end, so a dead dispatcher's rows fall due again);
2. send: HTTP in a thread pool, no database access;
3. record: a short transaction logs the attempts and moves each delivery on, but only if the
   dispatcher still holds the lease (lease_token), so a late writer never overwrites a newer claim.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta

import requests
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from common.models import DeliveryAttempt, DeliveryStatus, OutboxEvent, WebhookDelivery, WebhookEndpoint
from common.services.endpoints import disable_endpoint, signing_secrets
from common.services.network_guard import BlockedDestinationError, check_url, guarded_session
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


_local = {"pid": None, "session": None, "executor": None}
_local_lock = threading.Lock()


def _session_and_executor() -> tuple[requests.Session, ThreadPoolExecutor]:
    # One pooled Session per process (Celery forks its pool children after import).
    with _local_lock:
        if _local["pid"] != os.getpid():
            size = settings.OUTBOX_DELIVERY_CONCURRENCY
            _local.update(
                pid=os.getpid(),
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


def claim_due_deliveries(*, limit: int) -> list[ClaimedDelivery]:
    """Lease up to `limit` due deliveries to this caller (SKIP LOCKED: never one claimed twice at once)."""
    now = timezone.now()
    token = uuid.uuid4()
    leased_until = now + timedelta(seconds=settings.OUTBOX_LEASE_SECONDS)
    with transaction.atomic():
        ids = list(
            _due()
            .select_for_update(skip_locked=True, of=("self",))
            .order_by("next_attempt_at")
            .values_list("id", flat=True)[:limit]
        )
        if not ids:
            return []
        WebhookDelivery.objects.filter(id__in=ids).update(
            leased_until=leased_until, lease_token=token, next_attempt_at=leased_until
        )
    rows = WebhookDelivery.objects.filter(id__in=ids).select_related("event", "endpoint")
    return [_claimed(delivery, token) for delivery in rows]


def _claimed(delivery: WebhookDelivery, token: uuid.UUID) -> ClaimedDelivery:
    event: OutboxEvent = delivery.event
    endpoint: WebhookEndpoint = delivery.endpoint
    return ClaimedDelivery(
        id=delivery.id,
        lease_token=token,
        endpoint_id=endpoint.id,
        url=endpoint.url,
        secrets=tuple(signing_secrets(endpoint=endpoint)),
        msg_id=event.webhook_id,
        body=envelope_body(event_type=event.event_type, timestamp=event.created_at, data=event.payload),
    )


def send(*, session: requests.Session, claimed: ClaimedDelivery) -> AttemptOutcome:
    """POST one signed delivery (no redirects, connect/read timeouts) and describe what happened; never raises."""
    attempted_at = timezone.now()
    started = time.monotonic()

    def outcome(**kwargs) -> AttemptOutcome:
        return AttemptOutcome(attempted_at=attempted_at, duration_ms=int((time.monotonic() - started) * 1000), **kwargs)

    headers = signature_headers(
        msg_id=claimed.msg_id, timestamp=int(time.time()), body=claimed.body, secrets_=claimed.secrets
    )
    headers.update({"content-type": "application/json", "user-agent": USER_AGENT})
    connect, read = settings.WEBHOOK_CONNECT_TIMEOUT, settings.WEBHOOK_READ_TIMEOUT
    try:
        check_url(url=claimed.url)
        with session.post(
            claimed.url, data=claimed.body, headers=headers, timeout=(connect, read), allow_redirects=False, stream=True
        ) as response:
            body = _read_limited(response, deadline=started + connect + read)
            retry_after = None
            if response.status_code in (429, 503):
                retry_after = parse_retry_after(value=response.headers.get("Retry-After"))
            error = ""
            if 300 <= response.status_code < 400:
                error = f"redirect to {response.headers.get('Location', '?')!r} not followed"
            return outcome(status_code=response.status_code, response_body=body, retry_after=retry_after, error=error)
    except BlockedDestinationError as exc:
        return outcome(error=f"SSRF guard: {exc}")
    except requests.Timeout as exc:
        return outcome(error=f"timeout (connect {connect}s, read {read}s): {exc}")
    except requests.RequestException as exc:
        return outcome(error=f"{type(exc).__name__}: {exc}")
    except Exception as exc:  # an attempt must be recorded whatever broke, or the lease would hide it
        logger.exception("webhook.send_failed")
        return outcome(error=f"{type(exc).__name__}: {exc}")


def _read_limited(response: requests.Response, *, deadline: float) -> str:
    limit = settings.WEBHOOK_RESPONSE_BODY_LIMIT
    chunks, size = [], 0
    for chunk in response.iter_content(chunk_size=1024):
        chunks.append(chunk)
        size += len(chunk)
        if size > limit or time.monotonic() > deadline:
            break  # the rest is dropped with the connection; reading it could take forever
    return b"".join(chunks)[:limit].decode("utf-8", errors="replace")


def record_attempts(*, results: list[tuple[ClaimedDelivery, AttemptOutcome]]) -> dict[str, int]:
    """Log every attempt and move each still-leased delivery on; returns {"delivered", "failed", "stale"} counts."""
    counts = {"delivered": 0, "failed": 0, "stale": 0}
    to_disable: dict[int, str] = {}
    now = timezone.now()
    with transaction.atomic():
        DeliveryAttempt.objects.bulk_create(
            DeliveryAttempt(
                delivery_id=claimed.id,
                attempted_at=result.attempted_at,
                status_code=result.status_code,
                duration_ms=result.duration_ms,
                response_body=result.response_body,
                error=result.error[:2000],
                succeeded=result.succeeded,
            )
            for claimed, result in results
        )
        by_id = {claimed.id: (claimed, result) for claimed, result in results}
        rows = WebhookDelivery.objects.select_for_update().select_related("endpoint").filter(id__in=list(by_id))
        for delivery in rows:
            claimed, result = by_id[delivery.id]
            if delivery.lease_token != claimed.lease_token:
                counts["stale"] += 1  # our lease expired and someone else owns the row now
                continue
            counts["delivered" if result.succeeded else "failed"] += 1
            reason = _apply(delivery=delivery, result=result, now=now)
            if reason:
                to_disable[delivery.endpoint_id] = reason
    for endpoint_id, reason in to_disable.items():
        disable_endpoint(endpoint_id=endpoint_id, reason=reason)
        logger.warning("webhook.endpoint_disabled", extra={"endpoint_id": endpoint_id, "reason": reason})
    return counts


def _apply(*, delivery: WebhookDelivery, result: AttemptOutcome, now) -> str | None:
    """Update one delivery for its attempt; return a reason if its endpoint must be disabled."""
    endpoint = delivery.endpoint
    delivery.attempt_count += 1
    delivery.last_attempt_at = result.attempted_at
    delivery.last_status_code = result.status_code
    delivery.last_error = result.error[:2000]
    delivery.leased_until = None
    delivery.lease_token = None
    disable_reason = None
    if result.succeeded:
        delivery.status = DeliveryStatus.DELIVERED
        delivery.delivered_at = now
        delivery.next_attempt_at = now
        if endpoint.failing_since is not None:
            WebhookEndpoint.objects.filter(pk=endpoint.pk).update(failing_since=None)
    elif result.status_code == 410:
        delivery.status = DeliveryStatus.FAILED
        delivery.last_error = "410 Gone: the endpoint asked to stop receiving webhooks"
        disable_reason = f"the endpoint answered 410 Gone at {now:%Y-%m-%d %H:%M:%S} UTC"
    else:
        failing_since = endpoint.failing_since
        if failing_since is None:
            failing_since = now
            WebhookEndpoint.objects.filter(pk=endpoint.pk, failing_since__isnull=True).update(failing_since=now)
        delay = next_delay(attempts_made=delivery.attempt_count, retry_after=result.retry_after)
        if delay is None or not endpoint.is_active:
            delivery.status = DeliveryStatus.FAILED
            delivery.next_attempt_at = now
        else:
            delivery.next_attempt_at = now + timedelta(seconds=delay)
        if (now - failing_since).total_seconds() >= settings.WEBHOOK_DISABLE_AFTER_SECONDS:
            disable_reason = f"failing since {failing_since:%Y-%m-%d %H:%M:%S} UTC, last error: {_summary(result)}"
    delivery.save(
        update_fields=[
            "status",
            "attempt_count",
            "next_attempt_at",
            "leased_until",
            "lease_token",
            "last_status_code",
            "last_error",
            "last_attempt_at",
            "delivered_at",
        ]
    )
    return disable_reason


def _summary(result: AttemptOutcome) -> str:
    return f"HTTP {result.status_code}" if result.status_code else result.error[:200]


def deliver_due(*, limit: int, time_budget: float) -> dict[str, int]:
    """Send up to `limit` due deliveries within `time_budget` seconds; returns processed/delivered/failed/remaining."""
    session, executor = _session_and_executor()
    deadline = time.monotonic() + time_budget
    chunk = settings.OUTBOX_DELIVERY_CONCURRENCY
    totals = {"processed": 0, "delivered": 0, "failed": 0}
    while totals["processed"] < limit and time.monotonic() < deadline:
        claimed = claim_due_deliveries(limit=min(chunk, limit - totals["processed"]))
        if not claimed:
            break
        outcomes = list(executor.map(lambda c: send(session=session, claimed=c), claimed))
        counts = record_attempts(results=list(zip(claimed, outcomes, strict=True)))
        totals["processed"] += len(claimed)
        totals["delivered"] += counts["delivered"]
        totals["failed"] += counts["failed"]
    return {**totals, "remaining": count_due()}
