"""Which queues a worker leaves unconsumed, so it can say so at start instead of letting tasks wait unseen."""

from __future__ import annotations

from collections.abc import Iterable

from celery import Celery


def unconsumed_queues(*, app: Celery, consumed: Iterable[str]) -> dict[str, list[str]]:
    """{queue: [task names routed there]} for every queue tasks are routed to that `consumed` lacks.

    Looks at the tasks `app` has registered: call it once the worker has imported every app's tasks.
    """
    consumed = set(consumed)
    missing: dict[str, list[str]] = {}
    for name in sorted(app.tasks):
        if name.startswith("celery.") and name != "celery.backend_cleanup":
            continue  # Celery's internal tasks (chord unlock, maps...) follow the message that needs them
        queue = app.amqp.router.route({}, name)["queue"].name
        if queue not in consumed:
            missing.setdefault(queue, []).append(name)
    return missing
