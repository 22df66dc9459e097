"""The broker's configuration: which transport serves sqla+ URLs, its options, and its cleanup schedule."""

from __future__ import annotations

from typing import Any

import kombu.transport
from django.core.exceptions import ImproperlyConfigured
from kombu.transport.virtual import Transport as VirtualTransport
from kombu.utils.imports import symbol_by_name

from common.app_conf import add_beat_entries, require_at_least, route_tasks
from common.database_urls import broker_url_for, redis_database_url

OUR_TRANSPORT = "common.broker.transport:Transport"
TASK_QUEUES = {"common.broker.tasks.cleanup_broker_messages_task": "default"}


def _check_transport_class(path: str) -> None:
    """BROKER_TRANSPORT_CLASS must import and name a kombu Transport (fail at start, not at first connect)."""
    if ":" not in path:
        raise ImproperlyConfigured(f"BROKER_TRANSPORT_CLASS: a class path like {OUR_TRANSPORT}, got {path!r}")
    try:
        transport_cls = symbol_by_name(path)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ImproperlyConfigured(f"BROKER_TRANSPORT_CLASS: cannot import {path!r} ({exc})") from None
    if not (isinstance(transport_cls, type) and issubclass(transport_cls, VirtualTransport)):
        raise ImproperlyConfigured(f"BROKER_TRANSPORT_CLASS: {path!r} is not a kombu (virtual) Transport class")


def configure(config: Any) -> None:
    """Default the broker to Django's database, select the transport for sqla+ URLs and pass it its options."""
    default_database_broker = broker_url_for(config.DATABASES["default"])
    if not config.CELERY_BROKER_URL and config.REDIS_URL:
        # As the Redis runtime defines it: REDIS_URL names the server, the broker is its database 1.
        config.CELERY_BROKER_URL = redis_database_url(config.REDIS_URL, database=1)
    if not config.CELERY_BROKER_URL:
        config.CELERY_BROKER_URL = default_database_broker
    # Derived, not an environment variable: /readyz checks the broker's tables through Django's
    # connection only when the broker URL is this one; any other database is checked directly.
    config.BROKER_URL_OF_DEFAULT_DATABASE = default_database_broker
    if config.BROKER_VISIBILITY_TIMEOUT is None:
        config.BROKER_VISIBILITY_TIMEOUT = config.CELERY_TASK_TIME_LIMIT + 60
    if config.BROKER_VISIBILITY_TIMEOUT <= config.CELERY_TASK_TIME_LIMIT:
        raise ImproperlyConfigured(
            "BROKER_VISIBILITY_TIMEOUT must exceed CELERY_TASK_TIME_LIMIT, or running tasks get delivered "
            f"twice ({config.BROKER_VISIBILITY_TIMEOUT} <= {config.CELERY_TASK_TIME_LIMIT})"
        )
    if config.BROKER_POLLING_INTERVAL <= 0:
        raise ImproperlyConfigured(f"BROKER_POLLING_INTERVAL: must be > 0, got {config.BROKER_POLLING_INTERVAL}")
    if config.BROKER_RESCUE_INTERVAL <= 0 or config.BROKER_RESCUE_GRACE <= config.BROKER_RESCUE_INTERVAL:
        # A live worker re-owns its messages once per rescue interval; a shorter grace would run its tasks twice.
        raise ImproperlyConfigured(
            "BROKER_RESCUE_INTERVAL must be > 0 and BROKER_RESCUE_GRACE must exceed it "
            f"({config.BROKER_RESCUE_INTERVAL}, {config.BROKER_RESCUE_GRACE})"
        )
    if config.BROKER_RESCUE_AFTER_RESTART < 0:
        raise ImproperlyConfigured(
            f"BROKER_RESCUE_AFTER_RESTART: must be >= 0, got {config.BROKER_RESCUE_AFTER_RESTART}"
        )
    require_at_least(config, names=("BROKER_CLAIM_BATCH", "BROKER_CLEANUP_INTERVAL"), minimum=1)
    require_at_least(
        config, names=("BROKER_VACUUM_THRESHOLD", "BROKER_COMPACT_ABOVE_MB", "BROKER_BINDING_CACHE_SECONDS"), minimum=0
    )
    _check_transport_class(config.BROKER_TRANSPORT_CLASS)
    if config.CELERY_BROKER_URL.startswith(("sqla+", "sqlalchemy+")):
        # The URL keeps kombu's sqla+ form; the alias decides which class serves it.
        kombu.transport.TRANSPORT_ALIASES["sqla"] = config.BROKER_TRANSPORT_CLASS
        kombu.transport.TRANSPORT_ALIASES["sqlalchemy"] = config.BROKER_TRANSPORT_CLASS
        if config.BROKER_TRANSPORT_CLASS == OUR_TRANSPORT:
            config.CELERY_BROKER_TRANSPORT_OPTIONS = {
                "visibility_timeout": config.BROKER_VISIBILITY_TIMEOUT,
                "polling_interval": config.BROKER_POLLING_INTERVAL,
                "claim_batch": config.BROKER_CLAIM_BATCH,
                "rescue_interval": config.BROKER_RESCUE_INTERVAL,
                "rescue_grace": config.BROKER_RESCUE_GRACE,
                "restart_grace": config.BROKER_RESCUE_AFTER_RESTART,
                "vacuum_threshold": config.BROKER_VACUUM_THRESHOLD,
                "compact_above": config.BROKER_COMPACT_ABOVE_MB * 2**20,
                "binding_cache_seconds": config.BROKER_BINDING_CACHE_SECONDS,
            }
        # broker_cancel marks reach workers through the transport (common.broker.cancel_check): no per-task hook.
    route_tasks(config, queues=TASK_QUEUES)
    add_beat_entries(
        config,
        entries={
            "cleanup-broker-messages": {
                "task": "common.broker.tasks.cleanup_broker_messages_task",
                "schedule": float(config.BROKER_CLEANUP_INTERVAL),
            }
        },
    )
