"""Prometheus metrics read from PostgreSQL at scrape time, so every web, worker and beat process agrees.

Counters kept in process memory would be per gunicorn worker or per prefork child; the database already
knows the numbers. Each source runs exactly one query, on an index or a small table, so a scrape runs one
per source (9 with the portal's uploads, which the portal adds with register_source); docs/operations.md
states the count and tests/monitoring/test_metrics.py checks it. A source that fails is reported as
doorito_metrics_source_up{source=...} 0 instead of failing the scrape.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection
from django.db.models import Count, Max, Min, Q
from django.utils import timezone
from django_celery_results.models import TaskResult
from prometheus_client.core import GaugeHistogramMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from common.broker.services.inspection import queue_stats
from common.monitoring.models import BeatInstance, WorkerHeartbeat
from common.monitoring.services.xmin_horizon import longest_held, xmin_horizon_holders
from common.outbox.models import DeliveryAttempt, DeliveryStatus, WebhookDelivery, WebhookEndpoint

logger = logging.getLogger(__name__)

Metric = GaugeMetricFamily | GaugeHistogramMetricFamily


# Upper bounds (seconds) of the webhook attempt duration buckets: an attempt is cut off at
# WEBHOOK_CONNECT_TIMEOUT + WEBHOOK_READ_TIMEOUT (20 s by default).
ATTEMPT_DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0)

# Raw SQL because the ORM cannot group by a CASE expression and count one FILTER per bucket in one
# statement; the window uses the index on attempted_at, so the cost is the last 5 minutes' attempts.
ATTEMPTS_LAST_5_MINUTES = """
SELECT CASE WHEN succeeded THEN 'succeeded' WHEN status_code IS NULL THEN 'network_error' ELSE 'http_error' END,
       count(*), coalesce(sum(duration_ms), 0), {buckets}
FROM {table} WHERE attempted_at >= %s GROUP BY 1 ORDER BY 1
""".format(
    buckets=", ".join(f"count(*) FILTER (WHERE duration_ms <= {round(b * 1000)})" for b in ATTEMPT_DURATION_BUCKETS),
    table=DeliveryAttempt._meta.db_table,
)


def gauge(name: str, documentation: str, labels: list[str] | None = None) -> GaugeMetricFamily:
    """A gauge family named doorito_<name>."""
    return GaugeMetricFamily(f"doorito_{name}", documentation, labels=labels)


def _age(moment: datetime | None, now: datetime) -> float | None:
    return None if moment is None else max(0.0, (now - moment).total_seconds())


def queue_metrics(*, now: datetime) -> list[Metric]:
    """Per queue: ready and in-flight messages, and the oldest ready message's age (1 query)."""
    ready = gauge("queue_ready_messages", "Messages waiting to be claimed.", ["queue"])
    in_flight = gauge("queue_in_flight_messages", "Messages claimed by a worker and not yet acknowledged.", ["queue"])
    age = gauge("queue_oldest_ready_age_seconds", "Age of the oldest ready message; 0 when none waits.", ["queue"])
    for queue in queue_stats():
        ready.add_metric([queue["queue"]], queue["ready"])
        in_flight.add_metric([queue["queue"]], queue["claimed"])
        if queue["oldest_ready_age_seconds"] is not None or not queue["ready"]:
            age.add_metric([queue["queue"]], queue["oldest_ready_age_seconds"] or 0.0)
    return [ready, in_flight, age]


def worker_metrics(*, now: datetime) -> list[Metric]:
    """Workers by state: alive, stale (no heartbeat for WORKER_STALE_AFTER) and stopped (1 query)."""
    fresh = now - timedelta(seconds=settings.WORKER_STALE_AFTER)
    running = Q(stopped_at__isnull=True)
    counts = WorkerHeartbeat.objects.aggregate(
        alive=Count("id", filter=running & Q(last_seen__gt=fresh)),
        stale=Count("id", filter=running & Q(last_seen__lte=fresh)),
        stopped=Count("id", filter=Q(stopped_at__isnull=False)),
    )
    workers = gauge("workers", "Known workers by heartbeat state.", ["state"])
    for state in ("alive", "stale", "stopped"):
        workers.add_metric([state], counts[state])
    return [workers]


def beat_metrics(*, now: datetime) -> list[Metric]:
    """Whether a beat leader ticked within BEAT_STALE_AFTER, its last tick's age, running beats (1 query)."""
    fresh = now - timedelta(seconds=settings.BEAT_STALE_AFTER)
    running = BeatInstance.objects.filter(stopped_at__isnull=True)
    summary = running.aggregate(
        leader_tick=Max("last_tick", filter=Q(is_leader=True)),
        alive=Count("id", filter=Q(last_tick__gte=fresh)),
    )
    leader_tick = summary["leader_tick"]
    leader = gauge("beat_leader_alive", "1 if a beat leader ticked within BEAT_STALE_AFTER, else 0.")
    leader.add_metric([], 1 if leader_tick is not None and leader_tick >= fresh else 0)
    alive = gauge("beat_instances_alive", "Beat processes (leader and standbys) that ticked recently.")
    alive.add_metric([], summary["alive"])
    metrics: list[Metric] = [leader, alive]
    if leader_tick is not None:
        age = gauge("beat_last_tick_age_seconds", "Seconds since the beat leader's last tick.")
        age.add_metric([], max(0.0, (now - leader_tick).total_seconds()))
        metrics.append(age)
    return metrics


def task_metrics(*, now: datetime) -> list[Metric]:
    """Task successes and failures per task name over the last 5 minutes and hour (1 query, on date_done)."""
    rows = (
        TaskResult.objects.filter(date_done__gte=now - timedelta(hours=1), status__in=["SUCCESS", "FAILURE"])
        .values("task_name", "status")
        .annotate(last_hour=Count("id"), last_5m=Count("id", filter=Q(date_done__gte=now - timedelta(minutes=5))))
        .order_by("task_name", "status")
    )
    results = gauge("task_results", "Finished tasks in the window, by task and state.", ["task", "state", "window"])
    for row in rows:
        state = "succeeded" if row["status"] == "SUCCESS" else "failed"
        task = row["task_name"] or "unknown"
        results.add_metric([task, state, "5m"], row["last_5m"])
        results.add_metric([task, state, "1h"], row["last_hour"])
    return [results]


def delivery_metrics(*, now: datetime) -> list[Metric]:
    """Webhook deliveries by status, those due now, and the oldest due one a dispatcher has not taken (1 query)."""
    pending = Q(status=DeliveryStatus.PENDING)
    due = pending & Q(next_attempt_at__lte=now)
    # As on the status screen: due, unleased and to an active endpoint is work a dispatcher should be doing.
    unclaimed = due & (Q(leased_until__isnull=True) | Q(leased_until__lte=now)) & Q(endpoint__is_active=True)
    summary = WebhookDelivery.objects.aggregate(
        **{status: Count("id", filter=Q(status=status)) for status in DeliveryStatus.values},
        due=Count("id", filter=due),
        oldest_due=Min("next_attempt_at", filter=unclaimed),
    )
    by_status = gauge("outbox_deliveries", "Webhook deliveries by status.", ["status"])
    for status in DeliveryStatus.values:
        by_status.add_metric([status], summary[status])
    due_now = gauge("outbox_due_deliveries", "Pending deliveries whose next attempt time has come.")
    due_now.add_metric([], summary["due"])
    oldest = gauge("outbox_oldest_due_age_seconds", "Wait of the oldest due, unclaimed delivery; 0 if none.")
    oldest.add_metric([], _age(summary["oldest_due"], now) or 0.0)
    return [by_status, due_now, oldest]


def endpoint_metrics(*, now: datetime) -> list[Metric]:
    """Webhook endpoints by state: active, failing (active, not delivered since a failure) and disabled (1 query)."""
    counts = WebhookEndpoint.objects.aggregate(
        active=Count("id", filter=Q(is_active=True, failing_since__isnull=True)),
        failing=Count("id", filter=Q(is_active=True, failing_since__isnull=False)),
        disabled=Count("id", filter=Q(is_active=False)),
    )
    endpoints = gauge("webhook_endpoints", "Webhook endpoints by state.", ["state"])
    for state in ("active", "failing", "disabled"):
        endpoints.add_metric([state], counts[state])
    return [endpoints]


def attempt_metrics(*, now: datetime) -> list[Metric]:
    """Webhook attempts over the last 5 minutes by outcome, with their durations as a histogram (1 query)."""
    with connection.cursor() as cursor:
        cursor.execute(ATTEMPTS_LAST_5_MINUTES, [now - timedelta(minutes=5)])
        rows = cursor.fetchall()
    attempts = gauge("webhook_attempts_5m", "Webhook HTTP attempts in the last 5 minutes, by outcome.", ["outcome"])
    durations = GaugeHistogramMetricFamily(
        "doorito_webhook_attempt_duration_seconds",
        "Durations of the webhook HTTP attempts of the last 5 minutes, by outcome.",
        labels=["outcome"],
    )
    none = (0, 0, *[0] * len(ATTEMPT_DURATION_BUCKETS))
    by_outcome = {row[0]: row[1:] for row in rows}
    for outcome in ("succeeded", "http_error", "network_error"):
        count, total_ms, *cumulative = by_outcome.get(outcome, none)
        attempts.add_metric([outcome], count)
        buckets = [(f"{bound:g}", n) for bound, n in zip(ATTEMPT_DURATION_BUCKETS, cumulative, strict=True)]
        durations.add_metric([outcome], [*buckets, ("+Inf", count)], gsum_value=total_ms / 1000)
    return [attempts, durations]


def xmin_horizon_metrics(*, now: datetime) -> list[Metric]:
    """How long the longest holder of this database's xmin horizon has held it, and the horizon's xid age (1 query)."""
    holders = xmin_horizon_holders()
    held = longest_held(holders)
    age = gauge(
        "xmin_horizon_age_seconds",
        "Seconds the longest-open transaction holding back the xmin horizon has been open; 0 if none.",
        ["kind", "application_name", "state"],
    )
    if held is None:
        age.add_metric(["", "", ""], 0.0)
    else:
        age.add_metric([held["kind"], held["application_name"] or "", held["state"] or ""], held["age_seconds"])
    xids = gauge("xmin_horizon_age_transactions", "Age in transaction ids of the oldest xmin held back; 0 if none.")
    xids.add_metric([], max((h["xid_age"] for h in holders), default=0))
    return [age, xids]


SOURCES: dict[str, Callable[..., list[Metric]]] = {
    "queues": queue_metrics,
    "workers": worker_metrics,
    "beat": beat_metrics,
    "tasks": task_metrics,
    "deliveries": delivery_metrics,
    "endpoints": endpoint_metrics,
    "attempts": attempt_metrics,
    "xmin_horizon": xmin_horizon_metrics,
}


def register_source(*, name: str, read: Callable[..., list[Metric]]) -> None:
    """Add an app's source (one query, called with now=) to every scrape; apps register theirs in ready()."""
    SOURCES[name] = read


class DatabaseCollector(Collector):
    """Collects every source at scrape time; a failing source is reported down, the others still answer."""

    def collect(self) -> Iterator[Metric]:
        """Yield each source's metrics, then doorito_metrics_source_up per source."""
        now = timezone.now()
        up = gauge("metrics_source_up", "1 if the source's query answered in this scrape, else 0.", ["source"])
        for source, read in SOURCES.items():
            try:
                metrics = read(now=now)
            except Exception:  # one broken source must not hide the others from the dashboards
                logger.exception(
                    "metrics source %s failed", source, extra={"event": "monitoring.metrics_source_failed"}
                )
                up.add_metric([source], 0)
                continue
            up.add_metric([source], 1)
            yield from metrics
        yield up


def build_registry() -> CollectorRegistry:
    """A registry holding only the database collector (no process metrics: they would be per process)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DatabaseCollector())
    return registry
