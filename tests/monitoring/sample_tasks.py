"""Tasks only the operations tests' workers load (celery worker -I tests.monitoring.sample_tasks)."""

from __future__ import annotations

import time

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded


@shared_task(name="ops_sample.fail")
def fail() -> None:
    raise ValueError("failing on purpose")


@shared_task(name="ops_sample.retry_once", bind=True, max_retries=1)
def retry_once(self) -> str:
    if self.request.retries == 0:
        raise self.retry(countdown=0)
    return "retried"


@shared_task(name="ops_sample.sleep")
def sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@shared_task(name="ops_sample.sleep_early", acks_late=False)
def sleep_early(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@shared_task(name="ops_sample.sleep_late", acks_late=True)
def sleep_late(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@shared_task(name="ops_sample.sleep_past_soft_limit")
def sleep_past_soft_limit(seconds: float) -> float:
    """Sleep `seconds`, ignoring the soft time limit: only the hard one stops it."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            time.sleep(left)
        except SoftTimeLimitExceeded:
            continue
    return seconds
