"""Read-only views of the broker tables: per-queue counts and ages."""

from __future__ import annotations

import psycopg
from django.db import connection
from psycopg.conninfo import make_conninfo
from sqlalchemy.engine import make_url

QUEUE_STATS = """
SELECT q.name,
       count(m.id) FILTER (WHERE m.visible),
       count(m.id) FILTER (WHERE NOT m.visible AND m.version = -1),
       extract(epoch FROM (now() AT TIME ZONE 'UTC') - min(m.timestamp) FILTER (WHERE m.visible))
FROM kombu_queue q LEFT JOIN kombu_message m ON m.queue_id = q.id
GROUP BY q.name ORDER BY q.name
"""

STALE_ROWS = "SELECT count(*) FROM kombu_message WHERE NOT visible AND version >= 0"


def queue_stats() -> list[dict]:
    """One dict per queue: ready and claimed (in-flight) counts and the oldest ready message's age in seconds."""
    with connection.cursor() as cursor:
        cursor.execute(QUEUE_STATS)
        rows = cursor.fetchall()
    return [
        {
            "queue": name,
            "ready": ready,
            "claimed": claimed,
            # Rows published by the stock transport carry no timestamp until claimed: age unknown.
            "oldest_ready_age_seconds": max(0.0, float(age)) if age is not None else None,
        }
        for name, ready, claimed, age in rows
    ]


def stale_row_count() -> int:
    """How many consumed rows the stock kombu transport left behind (they are never delivered again)."""
    with connection.cursor() as cursor:
        cursor.execute(STALE_ROWS)
        return cursor.fetchone()[0]


def check_broker_database(*, broker_url: str, timeout: int = 3) -> None:
    """Raise RuntimeError (never echoing the password) unless the broker URL's database answers and has its tables."""
    url = make_url(broker_url.split("+", 1)[1])  # drop kombu's sqla+ / sqlalchemy+ prefix
    params = {
        "host": url.host,
        "port": url.port,
        "user": url.username,
        "password": url.password,
        "dbname": url.database,
        **{key: value for key, value in url.query.items() if isinstance(value, str)},
    }
    try:
        conninfo = {k: v for k, v in params.items() if v is not None}
        with psycopg.connect(make_conninfo("", **conninfo), connect_timeout=timeout, autocommit=True) as conn:
            for table in ("kombu_queue", "kombu_message"):
                row = conn.execute("SELECT to_regclass(%s)", [table]).fetchone()
                if row is None or row[0] is None:
                    raise RuntimeError(f"broker database {url.database!r}: table {table} is missing (run migrate)")
    except psycopg.Error as exc:
        message = str(exc).strip()
        if url.password:
            message = message.replace(str(url.password), "***")
        raise RuntimeError(f"broker database {url.database!r} at {url.host}:{url.port}: {message}") from None
