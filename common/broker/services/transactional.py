"""Send a Celery task inside the current Django transaction: the message exists iff the transaction commits."""

from __future__ import annotations

import functools
from typing import Any

from celery import Task, current_app
from celery.result import AsyncResult
from celery.utils import uuid
from django.conf import settings
from django.db import connections, transaction
from kombu import Connection
from kombu.transport import resolve_transport

from common.broker.transport import Transport, transaction_cursor, transaction_publishes
from common.database_urls import broker_url_for


@functools.cache
def _broker_shares_database(broker_url: str, django_broker_url: str) -> bool:
    # Only our transport, on exactly the database Django writes to, can join Django's transaction.
    transport_cls: object = Connection(broker_url).transport_cls
    if isinstance(transport_cls, str):
        transport_cls = resolve_transport(transport_cls)
    return isinstance(transport_cls, type) and issubclass(transport_cls, Transport) and broker_url == django_broker_url


def enqueue_in_transaction(
    *,
    task: Task,
    args: tuple[Any, ...] = (),
    kwargs: dict[str, Any] | None = None,
    using: str = "default",
    **options: Any,
) -> AsyncResult:
    """Queue `task` in the current transaction of `using`; it is sent iff that transaction commits."""
    # Outside any transaction the message is committed at once. With eager mode or a broker outside
    # this database (e.g. RabbitMQ) it falls back to sending after commit (transaction.on_commit),
    # the best those can offer.
    app = task.app if task.app is not None else current_app
    task_id = options.setdefault("task_id", uuid())
    kwargs = kwargs or {}
    shared = _broker_shares_database(app.conf.broker_url, broker_url_for(connections[using].settings_dict))
    if app.conf.task_always_eager or not shared:
        # robust: after the commit a send failure can only be logged, as with any on_commit send.
        transaction.on_commit(lambda: task.apply_async(args, kwargs, **options), using=using, robust=True)
        return task.AsyncResult(task_id)
    connection = connections[using]
    # A publish must never be retried into an aborted transaction: fail the caller's transaction instead.
    options.setdefault("retry", False)
    with connection.cursor() as cursor:
        cursor_token = transaction_cursor.set(cursor.cursor)  # the raw psycopg cursor of Django's connection
        count_token = transaction_publishes.set(0)
        try:
            result = task.apply_async(args, kwargs, **options)
            if transaction_publishes.get() != 1:
                raise RuntimeError(
                    f"{task.name}: the message did not go through Django's connection; is "
                    f"{settings.CELERY_BROKER_URL.split('://')[0]}:// served by common.broker.transport?"
                )
        finally:
            transaction_publishes.reset(count_token)
            transaction_cursor.reset(cursor_token)
    return result
