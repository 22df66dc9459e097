"""Send one signed webhook attempt over the guarded HTTP session; never raises."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import requests
from django.conf import settings
from django.utils import timezone

from common.outbox.services.delivery.budget import configured_attempt_seconds
from common.outbox.services.delivery.claim import ClaimedDelivery
from common.outbox.services.delivery.retry_schedule import parse_retry_after
from common.outbox.services.guarded_http import attempt_deadline
from common.outbox.services.network_guard import BlockedDestinationError, check_url
from common.outbox.services.signing import signature_headers

logger = logging.getLogger(__name__)


USER_AGENT = "Doorito-Webhooks/1.0"


@dataclass(frozen=True)
class AttemptOutcome:
    attempted_at: datetime
    duration_ms: int
    status_code: int | None = None
    response_body: str = ""
    error: str = ""
    retry_after: float | None = None

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def send(*, session: requests.Session, claimed: ClaimedDelivery) -> AttemptOutcome:
    """POST one signed delivery (no redirects, connect/read timeouts) and describe what happened; never raises."""
    attempted_at = timezone.now()
    started = time.monotonic()

    def outcome(**kwargs: Any) -> AttemptOutcome:
        return AttemptOutcome(attempted_at=attempted_at, duration_ms=int((time.monotonic() - started) * 1000), **kwargs)

    connect, read = settings.WEBHOOK_CONNECT_TIMEOUT, settings.WEBHOOK_READ_TIMEOUT
    total = configured_attempt_seconds()
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


def _read_limited(response: requests.Response, *, deadline: float) -> str:
    limit = settings.WEBHOOK_RESPONSE_BODY_LIMIT
    chunks, size = [], 0
    for chunk in response.iter_content(chunk_size=1024):
        chunks.append(chunk)
        size += len(chunk)
        if size > limit or time.monotonic() > deadline:
            break  # the rest is dropped with the connection; reading it could take forever
    return b"".join(chunks)[:limit].decode("utf-8", errors="replace")
