"""Standard Webhooks v1 signing: secrets, headers and the body envelope."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from collections.abc import Iterable
from datetime import datetime

from django.core.serializers.json import DjangoJSONEncoder

SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix, not a secret


def generate_secret() -> str:
    """Return a new `whsec_`-prefixed secret holding 32 random bytes in base64."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def secret_key(*, secret: str) -> bytes:
    """Return the HMAC key bytes of a `whsec_` secret, or raise ValueError naming what is wrong."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError("webhook secret must start with 'whsec_'")
    try:
        key = base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except ValueError as exc:
        raise ValueError(f"webhook secret is not valid base64: {exc}") from None
    if len(key) < 24:
        raise ValueError("webhook secret must hold at least 24 bytes")
    return key


def envelope_body(*, event_type: str, timestamp: datetime, data: dict) -> bytes:
    """Return the JSON body {"type", "timestamp", "data"}; the same event always gives the same bytes."""
    envelope = {"type": event_type, "timestamp": timestamp.isoformat().replace("+00:00", "Z"), "data": data}
    return json.dumps(envelope, cls=DjangoJSONEncoder, separators=(",", ":")).encode()


def sign(*, msg_id: str, timestamp: int, body: bytes, secret: str) -> str:
    """Return `v1,<base64 HMAC-SHA256 of "id.timestamp.body">` for one secret."""
    to_sign = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret=secret), to_sign, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signature_headers(*, msg_id: str, timestamp: int, body: bytes, secrets_: Iterable[str]) -> dict[str, str]:
    """Return webhook-id/-timestamp/-signature, one space-separated signature per secret (rotation grace)."""
    signatures = " ".join(sign(msg_id=msg_id, timestamp=timestamp, body=body, secret=s) for s in secrets_)
    return {"webhook-id": msg_id, "webhook-timestamp": str(timestamp), "webhook-signature": signatures}


def signing_secrets(
    *, secret: str, previous_secret: str, previous_secret_expires_at: datetime | None, now: datetime
) -> tuple[str, ...]:
    """The secrets to sign with at `now`: the current one, plus the previous one inside its grace period."""
    if previous_secret and previous_secret_expires_at and previous_secret_expires_at > now:
        return (secret, previous_secret)
    return (secret,)
