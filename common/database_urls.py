"""Connection URLs for a Django DATABASES entry (libpq's, and the kombu broker URL of the same database), and Redis's.

A leaf: settings, the broker and monitoring import these, so it imports nothing of the project.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

from django.core.exceptions import ImproperlyConfigured


def database_url_for(database: dict[str, Any]) -> str:
    """A libpq URL (postgresql://...) for a Django DATABASES entry, keeping its OPTIONS (sslmode, options...)."""
    credentials = quote(database.get("USER") or "", safe="")
    if database.get("PASSWORD"):
        credentials += ":" + quote(database["PASSWORD"], safe="")
    options = {key: str(value) for key, value in (database.get("OPTIONS") or {}).items()}
    host = database.get("HOST") or ""
    if host.startswith("/"):  # a Unix socket directory goes in the query string
        options["host"], host = host, ""
    if ":" in host:  # an IPv6 address
        host = f"[{host}]"
    if database.get("PORT"):
        host = f"{host}:{database['PORT']}"
    # %20, not +, for spaces: libpq does not decode + in URLs.
    query = "?" + urlencode(options, quote_via=quote) if options else ""
    return f"postgresql://{credentials}@{host}/{quote(database['NAME'], safe='')}{query}"


def broker_url_for(database: dict[str, Any]) -> str:
    """The kombu SQLAlchemy broker URL for the same PostgreSQL database Django uses."""
    return "sqla+postgresql+psycopg://" + database_url_for(database).removeprefix("postgresql://")


def redis_database_url(url: str, *, database: int) -> str:
    """`url` (redis:// or rediss://) pointing at Redis database `database`, whatever database it named."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        raise ImproperlyConfigured(f"REDIS_URL: a redis:// or rediss:// URL with a host, got {parts.scheme}://…")
    return urlunsplit((parts.scheme, parts.netloc, f"/{database}", parts.query, ""))
