"""Killed workers and killed database sessions: every task runs exactly once, a dead worker's within seconds."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from django.db import connection

from common.broker.transport import dispose_engines
from tests.broker.conftest import claimed_rows, message_rows
from tests.broker.tasks import DOOMED_WORKER, hang_in_doomed_worker, record, slow
from tests.processes import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

# No restart grace: the test server may have started moments ago. The visibility timeout stays at its
# default (CELERY_TASK_TIME_LIMIT + 60 = 360 s), so only the rescue can bring a message back this fast.
RESCUE = {"BROKER_RESCUE_AFTER_RESTART": "0"}


def runs_by_kind() -> dict[str, dict[str, int]]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT kind, token, count(*) FROM broker_test_runs GROUP BY kind, token")
        result: dict[str, dict[str, int]] = {}
        for kind, token, count in cursor.fetchall():
            result.setdefault(kind, {})[token] = count
        return result


def starts_after(moment: float) -> list[float]:
    """Seconds after `moment` (a time.time()) of each task start recorded since then."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT extract(epoch FROM at) - %s FROM broker_test_runs WHERE kind = 'start' AND at >= to_timestamp(%s)",
            [moment, moment],
        )
        return [float(seconds) for (seconds,) in cursor.fetchall()]


def children_of(pid: int) -> list[int]:
    """Live processes whose parent is `pid` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_kill_9_of_the_worker_main_process_reruns_its_tasks_within_seconds_exactly_once(start_test_worker, runs):
    doomed = start_test_worker(concurrency=4, **{DOOMED_WORKER: "1"}, **RESCUE)
    tokens = [f"k{n}" for n in range(10)]
    for token in tokens:
        hang_in_doomed_worker.delay(token, 60)
    # 4 run (and hang) in the doomed worker; more are claimed by it (prefetched: in its memory or its buffer).
    wait_until(lambda: len(runs.counts("start")) == 4, 60, "4 tasks running in the doomed worker")
    wait_until(lambda: claimed_rows() > 4, 30, "more tasks prefetched by the doomed worker")
    time.sleep(1)
    held = claimed_rows()
    pool_children = children_of(doomed.pid)
    assert len(pool_children) == 4

    survivor = start_test_worker(concurrency=4, **RESCUE)
    # The survivor runs what nobody claimed; a live worker's messages are not rescued.
    wait_until(lambda: len(runs.counts("done")) == 10 - held, 60, "the unclaimed tasks to run on the survivor")
    time.sleep(3)  # longer than a rescue pass and its grace
    assert claimed_rows() == held and len(runs.counts("done")) == 10 - held
    killed_at = time.time()
    doomed.signal(signal.SIGKILL)  # the main process only: its pool children must not outlive it

    wait_until(lambda: not any(alive(pid) for pid in pool_children), 5, "the doomed worker's children to die")
    wait_until(lambda: len(runs.counts("done")) == 10, 60, "every task to run to the end on the survivor")
    wait_until(lambda: message_rows() == 0, 30, "every message acked")
    counts = runs_by_kind()
    assert counts["done"] == dict.fromkeys(tokens, 1)  # the hung first runs never finished: no task ran twice
    restarted = {token for token, n in counts["start"].items() if n == 2}
    assert len(restarted) == 4 and set(counts["start"].values()) <= {1, 2}
    delays = starts_after(killed_at)
    assert len(delays) == held
    print(f"held by the killed worker: {held}; starts after the kill (s): {[round(d, 2) for d in sorted(delays)]}")
    # The goal is 5 s (one rescue interval to notice, the 2 s grace, then a claim); the lease would take 360 s.
    assert max(delays) < 5, sorted(delays)
    assert survivor.popen.poll() is None


def test_kill_9_of_one_prefork_child_fails_only_its_task_and_the_worker_goes_on(start_test_worker, runs):
    worker = start_test_worker(concurrency=2, **{DOOMED_WORKER: "1"}, **RESCUE)
    hang_in_doomed_worker.delay("victim", 60)
    wait_until(lambda: runs.counts("start").get("victim"), 30, "the victim task to start")
    with connection.cursor() as cursor:
        cursor.execute("SELECT pid FROM broker_test_runs WHERE token = 'victim'")
        [(victim_pid,)] = cursor.fetchall()
    tokens = [f"c{n}" for n in range(20)]
    for token in tokens:
        record.delay(token)
    os.kill(victim_pid, signal.SIGKILL)

    wait_until(lambda: len(runs.counts()) == 20, 60, "the other tasks to run")
    wait_until(lambda: message_rows() == 0, 30, "every message acked")
    # Celery reports the lost child's task as failed (WorkerLostError) and acks it: it is not run again,
    # here or after a rescue, and its child was replaced.
    worker.wait_for_output(r"WorkerLostError|Process .* exited", timeout=10)
    time.sleep(4)  # longer than a rescue would take
    assert runs_by_kind() == {"start": {"victim": 1}, "run": dict.fromkeys(tokens, 1)}
    assert worker.popen.poll() is None and len(children_of(worker.pid)) == 2


def test_terminated_broker_sessions_are_replaced_and_nothing_is_lost_or_run_twice(start_test_worker, runs):
    worker = start_test_worker(concurrency=2, **RESCUE)
    slow_tokens = [f"s{n}" for n in range(8)]
    quick_tokens = [f"q{n}" for n in range(40)]
    for token in slow_tokens:
        slow.delay(token, 1.5)
    for token in quick_tokens:
        record.delay(token)
    dispose_engines()  # the test's own broker sessions are not the worker's
    wait_until(lambda: runs.counts("start"), 30, "the first slow task to start")
    terminated = 0
    for _ in range(6):  # the claiming session and the LISTEN session, again and again while tasks run
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid() AND (query ILIKE '%%kombu_message%%' OR query ILIKE 'LISTEN%%')"
            )
            terminated += cursor.fetchone()[0]
        time.sleep(1)
    assert terminated >= 6

    wait_until(lambda: len(runs.counts("done")) == 8 and len(runs.counts()) == 40, 90, "every task to finish")
    wait_until(lambda: message_rows() == 0, 30, "every message acked")
    time.sleep(4)  # a wrongly rescued message would run again within this
    counts = runs_by_kind()
    assert counts == {
        "start": dict.fromkeys(slow_tokens, 1),
        "done": dict.fromkeys(slow_tokens, 1),
        "run": dict.fromkeys(quick_tokens, 1),
    }
    assert worker.popen.poll() is None
