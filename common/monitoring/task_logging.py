"""One log record per task start, success, retry and failure, with id, name, queue, runtime and outcome.

The receivers run in the process that executes the task (a prefork child), so
the runtime is measured where the task actually ran.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import signals
from celery.exceptions import TimeLimitExceeded

logger = logging.getLogger("doorito.tasks")

_started: dict[str, float] = {}


def _queue(request: Any) -> str | None:
    info = getattr(request, "delivery_info", None) or {}
    # Our queues each have their own direct exchange whose routing key is the queue name.
    return info.get("routing_key") or info.get("exchange") or None


def _log(
    level: int,
    outcome: str,
    *,
    task_id: str,
    name: str,
    request: Any,
    queue: str | None = None,
    runtime: float | None = None,
    **more: Any,
) -> None:
    started = _started.get(task_id)
    if runtime is None and started is not None and outcome != "started":
        runtime = round(time.monotonic() - started, 6)
    fields = {
        "event": f"task.{outcome}",
        "task_id": task_id,
        "task_name": name,
        "queue": _queue(request) or queue,
        "runtime": runtime,
        "outcome": outcome,
        "retries": getattr(request, "retries", None),
        **more,
    }
    runtime_text = f" runtime={runtime:.3f}s" if runtime is not None else ""
    extra_text = "".join(f" {key}={value}" for key, value in more.items())
    logger.log(
        level,
        f"task {outcome}: {name}[{task_id}] queue={fields['queue']}{runtime_text}{extra_text}",
        extra=fields,
    )


@signals.task_prerun.connect
def _on_start(sender: Any = None, task_id: str = "", task: Any = None, **_kwargs: Any) -> None:
    _started[task_id] = time.monotonic()
    _log(logging.INFO, "started", task_id=task_id, name=task.name, request=task.request)


@signals.task_success.connect
def _on_success(sender: Any = None, **_kwargs: Any) -> None:
    _log(logging.INFO, "succeeded", task_id=sender.request.id, name=sender.name, request=sender.request)


@signals.task_retry.connect
def _on_retry(sender: Any = None, request: Any = None, reason: Any = None, **_kwargs: Any) -> None:
    _log(logging.WARNING, "retried", task_id=request.id, name=sender.name, request=request, reason=str(reason))


@signals.task_failure.connect
def _on_failure(sender: Any = None, task_id: str = "", exception: BaseException | None = None, **_kwargs: Any) -> None:
    request = getattr(sender, "request", None)
    queue = runtime = None
    if isinstance(exception, TimeLimitExceeded) and _queue(request) is None:
        # A hard time limit is reported from the worker's main process, which has neither the task's
        # delivery info nor its start time (both lived in the killed child): log where the task is
        # routed, and the limit it ran into as its runtime.
        queue = _routed_queue(sender)
        runtime = float(exception.args[0]) if exception.args else None
    _log(
        logging.ERROR,
        "failed",
        task_id=task_id,
        name=getattr(sender, "name", "?"),
        request=request,
        queue=queue,
        runtime=runtime,
        error=f"{type(exception).__name__}: {exception}",
    )


def _routed_queue(task: Any) -> str | None:
    try:
        queue = task.app.amqp.router.route({}, task.name)["queue"]
    except Exception:  # logging must never fail because routing could not be worked out
        return None
    return getattr(queue, "name", queue)


@signals.task_postrun.connect
def _on_end(sender: Any = None, task_id: str = "", **_kwargs: Any) -> None:
    _started.pop(task_id, None)
