"""Readiness checks: can this process reach what it needs to do its work?"""

from __future__ import annotations

import logging

from celery import current_app
from django.conf import settings
from django.db import connection, transaction

from common.broker.services.inspection import check_broker_database
from common.monitoring.services.status import background_health

logger = logging.getLogger(__name__)


def _check_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def _check_broker() -> None:
    url = settings.CELERY_BROKER_URL
    if url.startswith(("sqla+", "sqlalchemy+")):
        if url == settings.BROKER_URL_OF_DEFAULT_DATABASE:
            # The broker lives in our database: its tables must exist.
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1 FROM kombu_queue LIMIT 1")
                cursor.execute("SELECT 1 FROM kombu_message LIMIT 1")
        else:
            check_broker_database(broker_url=url)
    else:
        with current_app.connection_for_read() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)


CHECKS = {"database": _check_database, "broker": _check_broker}


def check_readiness() -> dict:
    """Run every check and report {"ok", "degraded", "checks", "background"}; never raises."""
    # "ok" covers what this process needs to serve (database, broker): false means 503.
    # "degraded" means the background is unwell (no live worker, stale beat) while this
    # process can still serve: reported, but it must not take web out of rotation.
    results = {}
    for name, check in CHECKS.items():
        try:
            # A failed check rolls back only its own savepoint, leaving the connection usable.
            with transaction.atomic():
                check()
            results[name] = {"ok": True}
        except Exception as exc:  # a readiness probe must report, not crash
            results[name] = _failed(name, exc)
    ok = all(r["ok"] for r in results.values())
    background = _check_background() if ok else None
    return {
        "ok": ok,
        "degraded": background is not None and not background["ok"],
        "checks": results,
        "background": background,
    }


def _check_background() -> dict | None:
    try:
        with transaction.atomic():
            return background_health()
    except Exception as exc:  # a readiness probe must report, not crash
        return _failed("background", exc)


def _failed(name: str, exc: Exception) -> dict:
    # /readyz is public: the exception text (hosts, ports, user names, SQL) goes to the log, not the response.
    logger.warning(
        "readiness check %s failed: %s: %s",
        name,
        type(exc).__name__,
        str(exc).strip(),
        extra={"event": "readiness.check_failed", "check": name, "error": f"{type(exc).__name__}: {exc}"},
    )
    return {"ok": False, "error": f"{type(exc).__name__} (details in the web log)"}
