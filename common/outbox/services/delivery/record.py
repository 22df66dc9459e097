"""Record webhook attempts and move each still-leased delivery to its next state."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from common.outbox.models import DeliveryStatus
from common.outbox.services.delivery.claim import ClaimedDelivery
from common.outbox.services.delivery.retry_schedule import next_delay
from common.outbox.services.delivery.send import AttemptOutcome
from common.outbox.services.endpoints import disable_endpoint

logger = logging.getLogger(__name__)


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
    next_attempt_at: datetime
    last_error: str
    # True: the endpoint is failing (failing_since is set if unset); False: it answered 2xx (cleared);
    # None: leave failing_since alone (410 Gone disables the endpoint instead).
    endpoint_failing: bool | None
    disable_reason: str | None = None


def next_state(
    *, attempt_count: int, endpoint_active: bool, failing_since: datetime | None, result: AttemptOutcome, now: datetime
) -> NextState:
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
        attempt_params: list[Any] = []
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

        update_params: list[Any] = []
        recovered: set[int] = set()
        failing: set[int] = set()
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


def _summary(result: AttemptOutcome) -> str:
    return f"HTTP {result.status_code}" if result.status_code else result.error[:200]
