"""One log record per task start, success, retry and failure, with id, name, queue, runtime and outcome.

The receivers run in the process that executes the task (a prefork child), so
the runtime is measured where the task actually ran.
"""

from __future__ import annotations

import logging
import time

from celery import signals

logger = logging.getLogger("doorito.tasks")

_started: dict[str, float] = {}


def _queue(request) -> str | None:
    info = getattr(request, "delivery_info", None) or {}
    # Our queues each have their own direct exchange whose routing key is the queue name.
    return info.get("routing_key") or info.get("exchange") or None


def _log(level: int, outcome: str, *, task_id: str, name: str, request, **more) -> None:
    started = _started.get(task_id)
    runtime = round(time.monotonic() - started, 6) if started is not None and outcome != "started" else None
    fields = {
        "event": f"task.{outcome}",
        "task_id": task_id,
        "task_name": name,
        "queue": _queue(request),
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
def _on_start(sender=None, task_id=None, task=None, **_kwargs) -> None:
    _started[task_id] = time.monotonic()
    _log(logging.INFO, "started", task_id=task_id, name=task.name, request=task.request)


@signals.task_success.connect
def _on_success(sender=None, **_kwargs) -> None:
    _log(logging.INFO, "succeeded", task_id=sender.request.id, name=sender.name, request=sender.request)


@signals.task_retry.connect
def _on_retry(sender=None, request=None, reason=None, **_kwargs) -> None:
    _log(logging.WARNING, "retried", task_id=request.id, name=sender.name, request=request, reason=str(reason))


@signals.task_failure.connect
def _on_failure(sender=None, task_id=None, exception=None, **_kwargs) -> None:
    request = getattr(sender, "request", None)
    _log(
        logging.ERROR,
        "failed",
        task_id=task_id,
        name=getattr(sender, "name", "?"),
        request=request,
        error=f"{type(exception).__name__}: {exception}",
    )


@signals.task_postrun.connect
def _on_end(sender=None, task_id=None, **_kwargs) -> None:
    _started.pop(task_id, None)
