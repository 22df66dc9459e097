"""The operator's status report: workers, beat, queues, outbox, recent task outcomes, and the alarms they raise."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import Count
from django.utils import timezone
from django_celery_beat.models import PeriodicTask
from django_celery_results.models import TaskResult

from common.broker.services.inspection import queue_stats
from common.broker.services.redis_inspection import is_redis_url, redis_queue_stats
from common.monitoring.models import BeatInstance, ScheduleFault, WorkerHeartbeat
from common.monitoring.services.xmin_horizon import longest_held, xmin_horizon_holders
from common.outbox.services.health import get_outbox_health

logger = logging.getLogger(__name__)


def _age(moment: datetime | None, now: datetime) -> float | None:
    return None if moment is None else round((now - moment).total_seconds(), 1)


def worker_states(*, now: datetime | None = None) -> list[dict[str, Any]]:
    """Every known worker, each marked alive, stale (no heartbeat for WORKER_STALE_AFTER) or stopped."""
    now = now or timezone.now()
    stale_after = timedelta(seconds=settings.WORKER_STALE_AFTER)
    workers = []
    for row in WorkerHeartbeat.objects.all():
        if row.stopped_at is not None:
            state = "stopped"
        elif now - row.last_seen > stale_after:
            state = "stale"
        else:
            state = "alive"
        workers.append(
            {
                "hostname": row.hostname,
                "pid": row.pid,
                "queues": row.queues,
                "started_at": row.started_at.isoformat(),
                "last_seen": row.last_seen.isoformat(),
                "last_seen_age_seconds": _age(row.last_seen, now),
                "tasks_done": row.tasks_done,
                "state": state,
            }
        )
    return workers


def beat_state(*, now: datetime | None = None) -> dict[str, Any]:
    """The beat leader (if one ticked within BEAT_STALE_AFTER), the standbys, and "ok" / "stale" / "missing"."""
    now = now or timezone.now()
    fresh = now - timedelta(seconds=settings.BEAT_STALE_AFTER)
    instances = [
        {
            "hostname": row.hostname,
            "pid": row.pid,
            "is_leader": row.is_leader,
            "leader_since": row.leader_since.isoformat() if row.leader_since else None,
            "started_at": row.started_at.isoformat(),
            "last_tick": row.last_tick.isoformat(),
            "last_tick_age_seconds": _age(row.last_tick, now),
            "alive": row.stopped_at is None and row.last_tick >= fresh,
        }
        for row in BeatInstance.objects.filter(stopped_at__isnull=True)
    ]
    leader = next((i for i in instances if i["is_leader"] and i["alive"]), None)
    standbys = [i for i in instances if i["alive"] and not i["is_leader"]]
    if leader:
        state = "ok"
    elif instances:
        state = "stale"
    else:
        state = "missing"
    return {"state": state, "leader": leader, "standbys": standbys, "instances": instances}


def _queue_stats() -> dict:
    try:
        if is_redis_url(settings.CELERY_BROKER_URL):
            names = [queue.name for queue in settings.CELERY_TASK_QUEUES]
            return {"available": True, "queues": redis_queue_stats(broker_url=settings.CELERY_BROKER_URL, queues=names)}
        return {"available": True, "queues": queue_stats()}
    except Exception as exc:  # a status screen reports what it cannot read instead of failing
        return {"available": False, "error": f"{type(exc).__name__}: {exc}", "queues": []}


def _outbox_health() -> dict:
    try:
        return {"available": True, **get_outbox_health()}
    except Exception as exc:  # a status screen reports what it cannot read instead of failing
        return {"available": False, "error": f"{type(exc).__name__}: {exc}"}


def _xmin_horizon() -> dict:
    try:
        return {"available": True, "holders": xmin_horizon_holders()}
    except Exception as exc:  # a status screen reports what it cannot read instead of failing
        return {"available": False, "error": f"{type(exc).__name__}: {exc}", "holders": []}


def task_outcomes(*, since: datetime) -> dict[str, int]:
    """Count of task results per state whose date_done is after `since` (django-celery-results)."""
    rows = TaskResult.objects.filter(date_done__gte=since).values("status").annotate(n=Count("id"))
    counts = {row["status"]: row["n"] for row in rows}
    return {
        "succeeded": counts.get("SUCCESS", 0),
        "failed": counts.get("FAILURE", 0),
        "retried": counts.get("RETRY", 0),
        "by_state": counts,
    }


def schedule_faults() -> list[dict]:
    """Periodic tasks beat disabled because it could not run them, while they stay disabled (and exist)."""
    disabled = PeriodicTask.objects.filter(enabled=False).values_list("name", flat=True)
    return [
        {"name": f.name, "task": f.task, "reason": f.reason, "disabled_at": f.disabled_at.isoformat()}
        for f in ScheduleFault.objects.filter(name__in=disabled)
    ]


def _alarms(report: dict) -> list[dict]:
    alarms = []
    workers = report["workers"]
    if not any(w["state"] == "alive" for w in workers):
        alarms.append({"code": "NO_LIVE_WORKER", "message": "no worker has sent a heartbeat recently"})
    for worker in workers:
        if worker["state"] == "stale":
            alarms.append(
                {
                    "code": "WORKER_STALE",
                    "message": f"{worker['hostname']} last seen {worker['last_seen_age_seconds']}s ago "
                    "without a clean shutdown",
                }
            )
    beat = report["beat"]
    if beat["state"] != "ok":
        alarms.append({"code": "BEAT_STALE", "message": f"no beat leader has ticked recently ({beat['state']})"})
    for queue in report["queues"]["queues"]:
        age = queue.get("oldest_ready_age_seconds")
        if age is not None and age > settings.QUEUE_AGE_ALARM:
            alarms.append(
                {
                    "code": "QUEUE_BACKLOG",
                    "message": f"queue {queue['queue']}: oldest ready message waited {round(age)}s "
                    f"(> QUEUE_AGE_ALARM={settings.QUEUE_AGE_ALARM})",
                }
            )
    held = longest_held(report["xmin_horizon"]["holders"])
    if held is not None and held["age_seconds"] > settings.XMIN_HORIZON_ALARM_SECONDS:
        alarms.append(
            {
                "code": "XMIN_HORIZON_HELD",
                "message": f"{held['kind']} pid={held['pid']} application_name={held['application_name']!r} "
                f"state={held['state']} has held back the xmin horizon for {round(held['age_seconds'])}s "
                f"(> XMIN_HORIZON_ALARM_SECONDS={settings.XMIN_HORIZON_ALARM_SECONDS}): VACUUM cannot remove "
                "consumed messages meanwhile, so claims slow down",
            }
        )
    for source in ("queues", "outbox", "xmin_horizon"):
        if not report[source]["available"]:
            alarms.append({"code": "STATUS_UNAVAILABLE", "message": f"{source}: {report[source]['error']}"})
    # Due age, not pending age: deliveries in retry backoff to a down receiver are expected to wait
    # (WEBHOOK_ENDPOINT_FAILING covers them); due work left unclaimed means the dispatchers are behind.
    outbox_age = report["outbox"].get("oldest_due_age_seconds")
    if outbox_age is not None and outbox_age > settings.QUEUE_AGE_ALARM:
        alarms.append(
            {
                "code": "OUTBOX_BACKLOG",
                "message": f"oldest due webhook delivery not picked up for {round(outbox_age)}s "
                f"(> QUEUE_AGE_ALARM={settings.QUEUE_AGE_ALARM})",
            }
        )
    for endpoint in report["outbox"].get("failing_endpoints") or []:
        alarms.append(
            {
                "code": "WEBHOOK_ENDPOINT_FAILING",
                "message": f"endpoint {endpoint.get('id')} {endpoint.get('url')}: failing since "
                f"{endpoint.get('failing_since')}, active={endpoint.get('is_active')}",
            }
        )
    for fault in report["schedule_faults"]:
        alarms.append(
            {
                "code": "SCHEDULE_DISABLED",
                "message": f"periodic task {fault['name']} ({fault['task']}) disabled by beat at "
                f"{fault['disabled_at']}: {fault['reason']}",
            }
        )
    if report["tasks_last_hour"]["failed"]:
        alarms.append(
            {
                "code": "TASK_FAILURES",
                "message": f"{report['tasks_last_hour']['failed']} task(s) failed in the last hour",
            }
        )
    return alarms


def build_status_report() -> dict:
    """Everything the status screen, the JSON endpoint and the admin page show; reads only, never raises on a source."""
    now = timezone.now()
    report = {
        "generated_at": now.isoformat(),
        "workers": worker_states(now=now),
        "beat": beat_state(now=now),
        "queues": _queue_stats(),
        "outbox": _outbox_health(),
        "xmin_horizon": _xmin_horizon(),
        "tasks_last_hour": task_outcomes(since=now - timedelta(hours=1)),
        "schedule_faults": schedule_faults(),
    }
    report["alarms"] = _alarms(report)
    return report


def background_health() -> dict:
    """Readiness' view of the background: {"ok", "workers": {...}, "beat": {...}}; not ok means degraded."""
    now = timezone.now()
    alive = [w["hostname"] for w in worker_states(now=now) if w["state"] == "alive"]
    beat = beat_state(now=now)
    workers: dict[str, Any] = {"ok": bool(alive), "alive": len(alive)}
    if not alive:
        workers["error"] = "no live worker"
    beat_check = {"ok": beat["state"] == "ok", "state": beat["state"]}
    if beat["state"] != "ok":
        beat_check["error"] = "no beat leader has ticked recently"
    return {"ok": workers["ok"] and beat_check["ok"], "workers": workers, "beat": beat_check}
