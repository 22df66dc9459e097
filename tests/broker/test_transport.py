"""The transport against the real test database, in process: options, claiming, acks, interop, services."""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import subprocess
import sys
import threading
import time
import uuid

import psycopg
import pytest
from django.core.management import CommandError, call_command
from django.db import connection, transaction
from django.utils import timezone
from kombu import Connection, Consumer, Producer
from kombu.transport.sqlalchemy import Transport as StockTransport

from boot.celery import app as celery_app
from common.broker import transport
from common.broker.models import CancelledTask
from common.broker.services.cancel import CancelOutcome, cancel_queued_task
from common.broker.services.cleanup import cleanup_broker_messages
from common.broker.services.inspection import queue_stats, stale_row_count
from common.broker.services.transactional import enqueue_in_transaction
from common.broker.tasks import cleanup_broker_messages_task
from common.broker.transport import Transport, dispose_engines
from common.broker.waker import MIN_GAP, process_waker
from tests.broker.conftest import QUEUE, consume, listening, message_rows, notifications, publish
from tests.broker.tasks import record
from tests.databases import sibling_broker_url, sibling_database_url
from tests.processes import PROJECT_DIR

pytestmark = pytest.mark.django_db(transaction=True)


def rows(where: str = "TRUE") -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT id, visible, version FROM kombu_message WHERE {where} ORDER BY id")
        return cursor.fetchall()


def test_transport_options_reach_only_their_owners(connect):
    # Engines are shared per process and URL: drop one an earlier test's publish opened with default options.
    dispose_engines()
    conn = connect(polling_interval=0.2, visibility_timeout=30, claim_batch=2, pool_size=3)
    publish(conn, {"n": 1})
    assert conn.transport.polling_interval == 0.2
    assert conn.default_channel._engine_from_config().pool.size() == 3
    assert [body for body, _ in consume(conn, 1)] == [{"n": 1}]

    with pytest.raises(ValueError, match=r"unknown broker transport option.*bogus"):
        connect(bogus=1).default_channel
    with pytest.raises(ValueError, match="message_tablename"):
        connect(message_tablename="elsewhere").default_channel


def test_ack_deletes_the_row_and_reject_requeues_it(connect):
    conn = connect()
    publish(conn, {"n": 1}, {"n": 2})
    (first, m1), (second, m2) = consume(conn, 2, ack=False)
    assert [first, second] == [{"n": 1}, {"n": 2}]
    assert [(visible, version) for _, visible, version in rows()] == [(False, -1), (False, -1)]
    m1.ack()  # deleted by the consumer's next round trip: here the flush before it would wait
    conn.default_channel.flush_acks()
    m2.reject(requeue=True)
    assert [(visible, version) for _, visible, version in rows()] == [(True, 1)]
    assert [body for body, _ in consume(conn, 1)] == [{"n": 2}]
    assert message_rows() == 0


def test_claim_skips_locked_rows_and_concurrent_consumers_never_share(connect, test_database_url):
    publish(connect(), *({"n": n} for n in range(400)))
    # Another transaction holds the oldest row: a claim must skip it, not wait for it.
    with psycopg.connect(test_database_url) as locker:
        locker.execute("SELECT id FROM kombu_message ORDER BY id LIMIT 1 FOR UPDATE")
        results: list[list] = [[], []]
        everything: list = []
        conns = [connect(claim_batch=3), connect(claim_batch=3)]
        threads = [
            threading.Thread(
                target=lambda i=i: results[i].extend(consume(conns[i], 399, timeout=20, shared=everything))
            )
            for i in range(2)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        locker.rollback()
    got = [body["n"] for result in results for body, _ in result]
    assert len(got) == len(set(got)) == 399 and 0 not in got
    assert results[0] and results[1]
    assert [body for body, _ in consume(conns[0], 1)] == [{"n": 0}]
    assert message_rows() == 0


def test_idle_consumer_wakes_by_notify_not_by_polling(connect):
    consumer_conn = connect(polling_interval=60)
    received = []
    with Consumer(consumer_conn, [QUEUE], callbacks=[lambda body, m: (received.append(time.monotonic()), m.ack())]):
        with pytest.raises(TimeoutError):
            consumer_conn.drain_events(timeout=0.5)  # empty: it now sleeps on LISTEN
        threading.Timer(0.3, lambda: publish(connect(), {"n": 1})).start()
        started = time.monotonic()
        consumer_conn.drain_events(timeout=10)
    # A 60 s fallback poll could not have delivered it: the NOTIFY did.
    assert received and received[0] - started < 5


def test_leases_are_renewed_while_held_and_expire_when_the_holder_dies(connect):
    holder = connect(visibility_timeout=1)
    publish(holder, {"n": 1})
    [(body, _message)] = consume(holder, 1, ack=False)
    other = connect(visibility_timeout=1)
    # The holder keeps draining (renewing its lease) well past the visibility timeout.
    assert consume(other, 1, timeout=0.1) == []
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        with pytest.raises(TimeoutError), Consumer(holder, [QUEUE], callbacks=[]):
            holder.drain_events(timeout=0.25)
        assert consume(other, 1, timeout=0.05) == []
    # The holder "dies": no restore at close, no more renewals; after the timeout another consumer gets it.
    holder.default_channel.do_restore = False
    holder.release()
    assert [b for b, _ in consume(other, 1, timeout=10)] == [body]
    assert message_rows() == 0


def test_stock_producer_to_our_consumer(connect, test_database_url):
    with listening(test_database_url) as listener:
        publish(connect(StockTransport), {"from": "stock"})
        # Stock kombu sends no wake-up of its own: for its sessions the insert trigger notifies.
        assert len(notifications(listener)) == 1
    assert [b for b, _ in consume(connect(), 1)] == [{"from": "stock"}]
    assert message_rows() == 0


def test_our_producer_to_stock_consumer_and_cleanup_of_its_leftovers(connect):
    publish(connect(), {"from": "ours"})
    assert [b for b, _ in consume(connect(StockTransport), 1)] == [{"from": "ours"}]
    # The stock consumer leaves its consumed row behind, invisible: never redelivered, counted as stale.
    assert [(v, version >= 1) for _, v, version in rows()] == [(False, True)]
    assert stale_row_count() == 1
    result = cleanup_broker_messages(visibility_timeout=360)
    assert (result.stale_deleted, result.expired_restored) == (1, 0)
    assert message_rows() == 0


def test_cleanup_restores_expired_in_flight_rows(connect):
    conn = connect()
    publish(conn, {"n": 1})
    consume(conn, 1, ack=False)
    conn.default_channel.do_restore = False
    conn.release()
    assert cleanup_broker_messages(visibility_timeout=3600).expired_restored == 0
    time.sleep(1.1)
    assert cleanup_broker_messages(visibility_timeout=1).expired_restored == 1
    assert [(v, version) for _, v, version in rows()] == [(True, 1)]
    with pytest.raises(ValueError, match="visibility_timeout"):
        cleanup_broker_messages(visibility_timeout=0)


def test_queue_stats_and_status_command(connect, capsys):
    conn = connect()
    publish(conn, {"n": 1}, {"n": 2}, {"n": 3})
    consume(conn, 1, ack=False)
    stats = {s["queue"]: s for s in queue_stats()}
    assert stats["brokertest"]["ready"] == 2 and stats["brokertest"]["claimed"] == 1
    assert 0 <= stats["brokertest"]["oldest_ready_age_seconds"] < 60
    call_command("broker_status")
    out = capsys.readouterr().out
    [line] = [line for line in out.splitlines() if line.startswith("brokertest ")]
    name, ready, claimed, age = line.split()
    assert (name, ready, claimed) == ("brokertest", "2", "1") and age.endswith("s")


def test_queue_stats_of_an_empty_queue(connect):
    connect().default_channel._new_queue("brokertest-empty")
    stats = {s["queue"]: s for s in queue_stats()}
    assert stats["brokertest-empty"] == {
        "queue": "brokertest-empty",
        "ready": 0,
        "claimed": 0,
        "oldest_ready_age_seconds": None,
    }


def test_cancel_a_queued_task_by_id(test_database_url, clean_broker, capsys):
    queued = record.apply_async(("cancel-me",))
    kept = record.apply_async(("keep-me",))
    assert cancel_queued_task(task_id=queued.id) is CancelOutcome.CANCELLED
    assert cancel_queued_task(task_id=queued.id) is CancelOutcome.NOT_FOUND
    assert message_rows() == 1 and not CancelledTask.objects.exists()
    with connection.cursor() as cursor:  # a worker claimed it (ETA, prefetched): the message stays, a mark is made
        cursor.execute("UPDATE kombu_message SET visible = false, version = -1")
    call_command("broker_cancel", kept.id)
    assert f"{kept.id}: claimed" in capsys.readouterr().out
    assert message_rows() == 1 and list(CancelledTask.objects.values_list("task_id", "skipped_at")) == [(kept.id, None)]
    assert cancel_queued_task(task_id=kept.id) is CancelOutcome.CLAIMED  # idempotent
    with pytest.raises(ValueError, match="task_id"):
        cancel_queued_task(task_id=" ")


def test_broker_cancel_command_rejects_blank_and_unknown_ids(clean_broker):
    with pytest.raises(CommandError, match="TASK_ID must not be empty"):
        call_command("broker_cancel", " ")
    with pytest.raises(CommandError, match="no queued or claimed message for: nope"):
        call_command("broker_cancel", "nope")


def test_cleanup_command_and_task_prune_what_is_spent(connect, capsys):
    conn = connect()
    publish(conn, {"n": 1}, {"n": 2})
    with connection.cursor() as cursor:
        # One row the stock transport consumed and left, one lease that expired an hour ago.
        cursor.execute(
            "UPDATE kombu_message SET visible = false, version = 1 WHERE id = (SELECT min(id) FROM kombu_message)"
        )
        cursor.execute(
            "UPDATE kombu_message SET visible = false, version = -1, timestamp = timestamp - interval '1 hour' "
            "WHERE id = (SELECT max(id) FROM kombu_message)"
        )
    old = timezone.now() - datetime.timedelta(days=1)
    CancelledTask.objects.create(task_id="spent", cancelled_at=old)  # its message is gone: pruned
    CancelledTask.objects.create(task_id="fresh")  # within the grace period: kept
    call_command("broker_cleanup")
    assert capsys.readouterr().out.strip() == (
        "deleted 1 stale row(s), restored 1 expired row(s), pruned 1 cancel mark(s), "
        "dropped 0 dead consumer queue(s) and 0 message(s)"
    )
    assert [(v, version) for _, v, version in rows()] == [(True, 1)]
    assert list(CancelledTask.objects.values_list("task_id", flat=True)) == ["fresh"]
    CancelledTask.objects.filter(task_id="fresh").update(cancelled_at=old)
    assert cleanup_broker_messages_task.apply().get() == {
        "stale_deleted": 0,
        "expired_restored": 0,
        "cancel_marks_pruned": 1,
        "dead_queues_dropped": 0,
        "broadcasts_deleted": 0,
    }


def test_transactional_enqueue_exists_iff_the_transaction_commits(test_database_url, clean_broker):
    listener = psycopg.connect(test_database_url, autocommit=True)
    with transaction.atomic():
        committed = enqueue_in_transaction(task=record, args=("tx-commit",))
        # Not visible to anyone else until the commit.
        assert listener.execute("SELECT count(*) FROM kombu_message").fetchone()[0] == 0
    assert listener.execute("SELECT count(*) FROM kombu_message").fetchone()[0] == 1

    with pytest.raises(RuntimeError, match="boom"), transaction.atomic():
        enqueue_in_transaction(task=record, args=("tx-rollback",))
        raise RuntimeError("boom")
    payloads = [row[0] for row in listener.execute("SELECT payload FROM kombu_message").fetchall()]
    listener.close()
    assert len(payloads) == 1 and committed.id in payloads[0] and "tx-rollback" not in payloads[0]


def test_transactional_enqueue_falls_back_to_on_commit_when_eager(runs, monkeypatch):
    monkeypatch.setitem(celery_app.conf, "task_always_eager", True)
    token = str(uuid.uuid4())
    with transaction.atomic():
        enqueue_in_transaction(task=record, args=(token,))
        assert runs.counts() == {}
    assert runs.counts() == {token: 1}
    with pytest.raises(RuntimeError), transaction.atomic():
        enqueue_in_transaction(task=record, args=("never",))
        raise RuntimeError
    assert "never" not in runs.counts()


def test_a_foreign_broker_is_not_joined_to_the_transaction(test_database_url):
    from common.broker.services.transactional import _broker_shares_database

    ours = celery_app.conf.broker_url
    assert _broker_shares_database(ours, ours)
    assert not _broker_shares_database("amqp://guest:guest@127.0.0.1:5672//", ours)
    assert not _broker_shares_database("sqla+postgresql+psycopg://postgres@127.0.0.1:5432/elsewhere", ours)


def test_no_schema_is_created_at_connect(broker_url):
    name = f"doorito_broker_empty_{uuid.uuid4().hex[:8]}"
    admin_url = sibling_database_url("postgres")
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    empty_url = sibling_broker_url(name)
    try:
        conn = Connection(empty_url, transport_options={})
        conn.transport_cls = Transport
        with pytest.raises(psycopg.errors.UndefinedTable):
            conn.default_channel._new_queue("x")
        conn.release()
        with psycopg.connect(sibling_database_url(name)) as check:
            assert check.execute("SELECT to_regclass('kombu_message')").fetchone()[0] is None
    finally:
        from common.broker.transport import dispose_engines

        dispose_engines(url=empty_url.removeprefix("sqla+"))
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_a_late_ack_after_the_channel_closed_still_deletes_the_row(connect):
    conn = connect()
    publish(conn, {"n": 1})
    [(_body, message)] = consume(conn, 1, ack=False)
    conn.default_channel.close()  # e.g. Celery reconnecting: the unacked row is made visible again...
    assert [(v, version) for _, v, version in rows()] == [(True, 1)]
    message.ack()  # ...and the task that was still running acks it afterwards: it must not run again
    assert message_rows() == 0


def test_a_killed_database_connection_is_replaced_without_losing_messages(connect):
    conn = connect()
    publish(conn, {"n": 1}, {"n": 2})
    channel = conn.default_channel

    def kill_backend():
        # First let the waker thread send the wake-ups on this connection: it would otherwise replace it after
        # the kill, before the statement under test.
        assert process_waker().flush(timeout=5)
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [channel._connection().info.backend_pid])

    kill_backend()
    # A failed claim or ack is retried once on a fresh connection (see docs/broker.md, Connection loss).
    assert [b for b, _ in consume(conn, 1)] == [{"n": 1}]
    kill_backend()
    # A publish is not retried blindly; it fails with an error kombu and Celery treat as a connection error.
    with pytest.raises(conn.connection_errors):
        channel._put("brokertest", {"body": "x", "properties": {"delivery_tag": "t"}})
    publish(conn, {"n": 3})  # the next one goes through on a new connection
    assert [b for b, _ in consume(conn, 2)] == [{"n": 2}, {"n": 3}]
    assert message_rows() == 0


def test_a_forked_child_never_uses_its_parents_connections(connect):
    conn = connect()
    publish(conn, {"n": 1}, {"n": 2})
    channel = conn.default_channel
    [(_body, held)] = consume(conn, 1, ack=False)  # the parent holds one row in flight
    parent_backend = channel._run("SELECT pg_backend_pid()", fetch=True)[0][0]
    parent_listener = conn.transport._listen().info.backend_pid
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        status = 1
        try:
            backend = channel._run("SELECT pg_backend_pid()", fetch=True)[0][0]
            listener = conn.transport._listen().info.backend_pid
            os.write(write_end, json.dumps([backend, listener, channel.in_flight_ids()]).encode())
            channel.close()
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        report = pipe.read()
    assert os.waitpid(child, 0)[1] == 0
    backend, listener, child_rows = json.loads(report)
    assert backend != parent_backend and listener != parent_listener
    assert child_rows == []  # the parent's in-flight row is not the child's to restore or ack
    # The parent's connections were left intact: same sessions, and its row is still claimed by it.
    assert channel._run("SELECT pg_backend_pid()", fetch=True)[0][0] == parent_backend
    assert conn.transport._listen().info.backend_pid == parent_listener
    assert sorted((v, version) for _, v, version in rows()) == [(False, -1), (True, 1)]
    held.ack()
    assert [b for b, _ in consume(conn, 1)] == [{"n": 2}]


def test_a_terminated_listen_session_is_replaced_without_a_connection_error(connect):
    conn = connect(polling_interval=60)
    received = []
    with Consumer(conn, [QUEUE], callbacks=[lambda body, m: (received.append(body), m.ack())]):
        with pytest.raises(TimeoutError):
            conn.drain_events(timeout=0.3)
        old = conn.transport._listener.info.backend_pid
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [old])
        with pytest.raises(TimeoutError):  # noticed and replaced inside drain_events: Celery sees no error
            conn.drain_events(timeout=1)
        assert conn.transport._listener.info.backend_pid != old
        publish(connect(), {"n": 1})
        conn.drain_events(timeout=5)  # woken by a NOTIFY on the new session (the poll is 60 s away)
    assert received == [{"n": 1}]


def test_a_pooled_connection_whose_session_is_gone_never_becomes_the_listen_session(connect):
    conn = connect(polling_interval=60)
    url = conn.transport._broker_url()
    dispose_engines(url=url)  # a fresh pool: the connection returned below is its only idle one
    conn.default_channel._run("SELECT 1")  # the channel keeps its own connection checked out
    engine = transport.engine_for(url, conn.transport.options.engine_options)
    pooled = engine.raw_connection()
    dead = pooled.driver_connection.info.backend_pid
    pooled.close()  # back to the pool, idle
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s, 5000)", [dead])
    listener = conn.transport._listen()  # the pool hands out the dead one first: it is discarded
    assert listener.info.backend_pid != dead
    assert listener.execute("SELECT 1").fetchone() == (1,)


@pytest.fixture
def learned_marks():
    """Task ids the transport reports as cancelled, in the order reported."""
    seen: list[set[str]] = []
    transport.cancel_listeners.append(seen.append)
    yield seen
    transport.cancel_listeners.remove(seen.append)


def publish_task_message(conn: Connection, task_id: str) -> None:
    producer = Producer(conn.default_channel)
    producer.publish({"n": task_id}, exchange=QUEUE.exchange, routing_key=QUEUE.routing_key, declare=[QUEUE],
                     headers={"id": task_id})  # fmt: skip


def test_cancel_marks_reach_the_holder_in_its_rescue_pass_and_a_claimer_in_the_claim(connect, learned_marks):
    holder = connect(rescue_interval=0.2, rescue_grace=0.5, restart_grace=0)
    publish_task_message(holder, "held-task")
    [(_body, message)] = consume(holder, 1, ack=False)
    assert learned_marks == []  # no marks: nothing reported
    assert cancel_queued_task(task_id="held-task") is CancelOutcome.CLAIMED
    deadline = time.monotonic() + 5
    while not learned_marks and time.monotonic() < deadline:
        with contextlib.suppress(TimeoutError), Consumer(holder, [QUEUE], callbacks=[]):
            holder.drain_events(timeout=0.2)  # starts the keeper thread, whose rescue pass reports the mark
    assert {"held-task"} in learned_marks

    publish_task_message(holder, "other-task")
    message.requeue()  # e.g. the holder shut down: the marked message is ready again
    holder.release()
    learned_marks.clear()
    claimer = connect(rescue_interval=30, rescue_grace=60)  # no rescue pass during this test
    got = [b for b, _ in consume(claimer, 2)]
    assert sorted(b["n"] for b in got) == ["held-task", "other-task"]
    assert learned_marks == [{"held-task"}]  # reported by the claim, before the message was delivered


@contextlib.contextmanager
def database_refusing_connections():
    """New connections to the test database fail (as while PostgreSQL restarts); open ones are unaffected."""
    name = connection.ops.quote_name(connection.settings_dict["NAME"])
    # A database cannot refuse connections from inside itself: the switch goes through the postgres database
    # (same server, user and options: the embedded server is reached through a socket directory option).
    admin_url = sibling_database_url("postgres")
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS false")
        try:
            yield
        finally:
            admin.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true")


def test_an_ack_that_fails_with_the_connection_is_retried_after_reconnecting_not_left_to_the_lease(connect):
    # A lease of an hour: only the retried ack can remove the row within this test.
    conn = connect(rescue_interval=0.2, rescue_grace=0.5, restart_grace=0, visibility_timeout=3600)
    publish(conn, {"n": 1})
    [(_body, message)] = consume(conn, 1, ack=False)  # also starts the keeper thread, whose rescue pass retries
    channel = conn.default_channel
    [(row_id, _visible, _version)] = rows()
    with database_refusing_connections():
        # The channel's session, and the idle pooled ones (of earlier tests) the ack's retry could take instead.
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        message.ack()  # gathered for the consuming thread's next round trip
        assert channel.pending_acks() == [row_id]
        channel.flush_acks()  # as before a wait: the DELETE fails with the connection, and so does its retry
        assert channel.pending_acks() == [row_id]
        time.sleep(0.6)  # rescue passes fail meanwhile; the row stays claimed by the dead session
        assert rows() == [(row_id, False, -1)]
    # Connections are accepted again: the next rescue pass deletes the row (no lease expiry, no redelivery).
    deadline = time.monotonic() + 10
    while message_rows() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert message_rows() == 0
    assert channel.pending_acks() == []
    assert consume(conn, 1, timeout=1.5) == []  # the acked message is never delivered again


def set_consumer_asleep(until: str | None, queue: str = "brokertest") -> None:
    """Set the queue's wake_wanted_until as a sleeping consumer would (an interval from now), or unset it."""
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE kombu_queue SET wake_wanted_until = now() AT TIME ZONE 'UTC' + %s::interval WHERE name = %s",
            [until, queue],
        )


def test_a_publish_while_no_consumer_sleeps_sends_no_notify(connect, test_database_url):
    conn = connect()
    publish(conn, {"n": 0})  # declares the queue
    with listening(test_database_url) as listener:
        notifications(listener)
        for until in (None, "-1 second"):  # never armed, or armed by a consumer that has not slept since
            set_consumer_asleep(until)
            publish(conn, {"n": 1}, {"n": 2})
            assert process_waker().flush(timeout=5)
            assert notifications(listener) == []  # consumers that are busy claim again without a wake-up
        set_consumer_asleep("1 minute")
        publish(conn, {"n": 3})
        assert process_waker().flush(timeout=5)
        assert len(notifications(listener)) == 1
    assert message_rows() == 6


# Counts the statements that update kombu_queue (a statement-level trigger fires even when no row matched).
COUNT_ARMS = """
CREATE TABLE IF NOT EXISTS broker_test_arms (at timestamptz NOT NULL DEFAULT clock_timestamp());
TRUNCATE broker_test_arms;
CREATE OR REPLACE FUNCTION broker_test_count_arm() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO broker_test_arms DEFAULT VALUES;
    RETURN NULL;
END $$;
CREATE TRIGGER broker_test_count_arm AFTER UPDATE ON kombu_queue FOR EACH STATEMENT
    EXECUTE FUNCTION broker_test_count_arm();
"""
STOP_COUNTING_ARMS = """
DROP TRIGGER IF EXISTS broker_test_count_arm ON kombu_queue;
DROP FUNCTION IF EXISTS broker_test_count_arm();
DROP TABLE IF EXISTS broker_test_arms;
"""


def test_an_idle_consumer_arms_its_queue_once_per_hold_not_once_per_sleep(connect):
    conn = connect(polling_interval=5)
    publish(conn, {"n": 0})
    assert [body for body, _ in consume(conn, 1)] == [{"n": 0}]
    set_consumer_asleep(None)
    with connection.cursor() as cursor:
        cursor.execute(COUNT_ARMS)
    try:
        with Consumer(conn, [QUEUE], callbacks=[]):
            for _ in range(20):  # twenty sleeps of an idle consumer, over about a second
                with pytest.raises(TimeoutError):
                    conn.drain_events(timeout=0.05)
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM broker_test_arms")
            [(arms,)] = cursor.fetchall()
            cursor.execute(
                "SELECT extract(epoch FROM wake_wanted_until - now() AT TIME ZONE 'UTC') FROM kombu_queue "
                "WHERE name = 'brokertest'"
            )
            [(ahead,)] = cursor.fetchall()
    finally:
        with connection.cursor() as cursor:
            cursor.execute(STOP_COUNTING_ARMS)
    # One statement: the consumer remembers its arm, which holds 11 s with a 5 s poll (re-armed under 5 s left).
    assert arms == 1
    assert 5 < ahead <= 11


def test_a_burst_of_publishes_is_woken_by_few_notifies_sent_after_the_last_commit(connect, test_database_url):
    conn = connect()
    publish(conn, {"n": -1})  # declares the queue
    set_consumer_asleep("1 minute")
    with listening(test_database_url) as listener:
        notifications(listener)
        started = time.monotonic()
        publish(conn, *({"n": n} for n in range(200)))
        assert process_waker().flush(timeout=5)
        sending = time.monotonic() - started
        woken = notifications(listener)
    # The producer's waker thread coalesced the burst's wake-ups: one NOTIFY at most per MIN_GAP, where one
    # per publish would be 200 (and the first wake-up cleared the flag: the publishes after it mark nothing).
    assert 1 <= len(woken) <= min(150, sending / MIN_GAP + 1) and len(set(woken)) == 1
    assert message_rows() == 201


def test_a_process_that_publishes_and_exits_at_once_still_wakes_consumers(connect, broker_url, test_database_url):
    script = (
        "import sys; from kombu import Connection, Exchange, Producer, Queue\n"
        "from common.broker.transport import Transport\n"
        "conn = Connection(sys.argv[1]); conn.transport_cls = Transport\n"
        "queue = Queue('brokertest', Exchange('brokertest', type='direct'), routing_key='brokertest')\n"
        "Producer(conn.default_channel).publish({'n': 1}, exchange=queue.exchange, routing_key='brokertest',"
        " declare=[queue])\n"
    )
    publish(connect(), {"n": 0})  # declares the queue
    set_consumer_asleep("1 minute")
    with listening(test_database_url) as listener:
        notifications(listener)
        subprocess.run([sys.executable, "-c", script, broker_url], cwd=PROJECT_DIR, check=True, timeout=60)
        # Its waker thread is a daemon: the wake-up is flushed at exit, not lost with the thread.
        assert len(notifications(listener, quiet=1)) == 1
    assert message_rows() == 2


def test_a_publish_on_a_connection_released_at_once_still_wakes_consumers(broker_url, test_database_url, clean_broker):
    declaring = Connection(broker_url, transport_options={})
    declaring.transport_cls = Transport
    declaring.default_channel._new_queue("brokertest")
    declaring.release()
    set_consumer_asleep("1 minute")
    with listening(test_database_url) as listener:
        conn = Connection(broker_url, transport_options={})
        conn.transport_cls = Transport
        publish(conn, {"n": 1})
        conn.release()  # closes the channel whose connection the waker sends on: it sends first
        assert len(notifications(listener, quiet=1)) == 1
    assert message_rows() == 1
