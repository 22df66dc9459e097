"""API tokens: created once and shown once, stored only as a hash, revocable."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from django.contrib.auth.models import User
from django.utils import timezone

from portal.models import ApiToken

TOKEN_PREFIX = "dt_"  # noqa: S105 - a public marker, not a secret


@dataclass(frozen=True)
class IssuedToken:
    token: ApiToken
    plaintext: str  # shown to the creator once; never stored


def hash_token(plaintext: str) -> str:
    """The stored form of a token: its SHA-256 in hex."""
    return hashlib.sha256(plaintext.encode("utf-8")).hexdigest()


def create_api_token(*, user: User, name: str = "") -> IssuedToken:
    """Create a token for `user`; the plaintext exists only in the returned value."""
    plaintext = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(
        user=user, name=name[:100], prefix=plaintext[: len(TOKEN_PREFIX) + 6], token_hash=hash_token(plaintext)
    )
    return IssuedToken(token=token, plaintext=plaintext)


def rename_api_token(*, token: ApiToken, name: str) -> ApiToken:
    """Change only the display name of `token`; its secret, hash, owner and revocation stay as they are."""
    ApiToken.objects.filter(pk=token.pk).update(name=name[:100])
    token.refresh_from_db()
    return token


def revoke_api_token(*, token: ApiToken) -> ApiToken:
    """Revoke `token` for good; revoking twice keeps the first revocation time."""
    ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
    token.refresh_from_db()
    return token


def authenticate_api_token(*, plaintext: str) -> ApiToken | None:
    """The active token matching `plaintext` (its user loaded), or None; records when it was used."""
    if not plaintext.startswith(TOKEN_PREFIX) or len(plaintext) > 200:
        return None
    token = (
        ApiToken.objects.select_related("user")
        .filter(token_hash=hash_token(plaintext), revoked_at__isnull=True, user__is_active=True)
        .first()
    )
    if token is None:
        return None
    now = timezone.now()
    # At most one write a minute per token: authentication must not turn every request into a write.
    if token.last_used_at is None or (now - token.last_used_at).total_seconds() > 60:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    return token
