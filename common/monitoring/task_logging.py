"""One log record per task start, success, retry and failure, with id, name, queue, runtime and outcome.

The receivers run in the process that executes the task (a prefork child), so
the runtime is measured where the task actually ran. The task's id, name and
queue are bound as structlog context for as long as it runs, so every line it
logs carries them; its runtime and outcome are bound once they are known.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import structlog
from celery import signals
from celery.exceptions import TimeLimitExceeded
from django.dispatch import receiver
from django_structlog.celery import signals as structlog_signals

logger = logging.getLogger("doorito.tasks")

_started: dict[str, float] = {}
# The caller's context around an eager task, restored when the task ends.
_callers_context: dict[str, dict[str, Any]] = {}

# What this module binds for the running task, other than its id: not handed on to the tasks it sends.
_NOT_HANDED_ON = ("task_name", "queue", "runtime", "outcome")


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
    if outcome != "started" and task_id in _started:  # in the process that runs it, not a timed-out task's parent
        # Also on whatever the task's other receivers log after this (django-structlog's task_succeeded).
        structlog.contextvars.bind_contextvars(runtime=runtime, outcome=outcome)
    if not logger.isEnabledFor(level):  # a worker at WARNING: the record is not built, twice per task
        return
    runtime_text = f" runtime={runtime:.3f}s" if runtime is not None else ""
    extra_text = "".join(f" {key}={value}" for key, value in more.items())
    logger.log(
        level,
        f"task {outcome}: {name}[{task_id}] queue={fields['queue']}{runtime_text}{extra_text}",
        extra=fields,
    )


def _bind_task_context(task: Any) -> None:
    structlog.contextvars.bind_contextvars(task_id=task.request.id, task_name=task.name, queue=_queue(task.request))


@signals.task_prerun.connect
def _on_start(sender: Any = None, task_id: str = "", task: Any = None, **_kwargs: Any) -> None:
    _started[task_id] = time.monotonic()
    if getattr(task.request, "is_eager", False):  # run inside its caller (a request, a test): keep theirs
        _callers_context[task_id] = structlog.contextvars.get_contextvars()
    _bind_task_context(task)
    _log(logging.INFO, "started", task_id=task_id, name=task.name, request=task.request)


@receiver(structlog_signals.bind_extra_task_metadata)
def _rebind_after_django_structlog(sender: Any = None, task: Any = None, **_kwargs: Any) -> None:
    # With DJANGO_STRUCTLOG_CELERY_ENABLED, django-structlog's task_prerun receiver runs after ours and
    # starts the task's context afresh (task_id and the sender's context); this signal is its hook for more.
    _bind_task_context(task)


@receiver(structlog_signals.modify_context_before_task_publish)
def _keep_task_context_to_this_task(sender: Any = None, context: dict[str, Any] | None = None, **_kwargs: Any) -> None:
    # django-structlog hands the sender's context to the task it sends (task_id becomes parent_task_id);
    # the sending task's name, queue, runtime and outcome would be wrong there.
    for key in _NOT_HANDED_ON:
        (context or {}).pop(key, None)


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
    # A prefork child runs the next task in the same context: nothing of this one may stay bound.
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(**_callers_context.pop(task_id, {}))
