"""Fanout and topic exchanges across connections, in process: who receives, what dead consumers leave, what it costs."""

from __future__ import annotations

import contextlib

import psycopg
import pytest
from django.db import connection
from kombu import Connection, Consumer, Exchange, Producer, Queue

from common.broker import transport
from common.broker.services.cleanup import cleanup_broker_messages

pytestmark = pytest.mark.django_db(transaction=True)

BROADCAST = Exchange("fanouttest", type="fanout")
EVENTS = Exchange("fanouttest.ev", type="topic")


def bind(conn: Connection, queue: Queue) -> None:
    queue.bind(conn.default_channel).declare()


def receive(conn: Connection, queue: Queue, count: int) -> list:
    """Drain `count` messages of `queue` as a no-ack consumer (like Celery's pidbox and event receivers)."""
    got: list = []
    with Consumer(conn.default_channel, [queue], no_ack=True, callbacks=[lambda body, _message: got.append(body)]):
        while len(got) < count:
            conn.drain_events(timeout=10)
    return got


def rows_of(queue: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM kombu_message m JOIN kombu_queue q ON q.id = m.queue_id WHERE q.name = %s", [queue]
        )
        return cursor.fetchone()[0]


def backend_of(conn: Connection) -> int:
    return conn.default_channel._backend[0]


def test_a_broadcast_reaches_each_live_bound_queue_once_and_a_dead_consumers_queue_is_pruned(connect):
    first, second, publisher = connect(), connect(), connect()
    queue_a = Queue("fanouttest.a", BROADCAST, auto_delete=True)
    queue_b = Queue("fanouttest.b", BROADCAST, auto_delete=True)
    bind(first, queue_a)
    bind(second, queue_b)

    Producer(publisher.default_channel).publish({"n": 1}, exchange=BROADCAST, declare=[BROADCAST])
    assert receive(first, queue_a, 1) == [{"n": 1}] and receive(second, queue_b, 1) == [{"n": 1}]
    assert rows_of("fanouttest.a") == rows_of("fanouttest.b") == 0  # taken, not left claimed: no-ack has no ack

    with connection.cursor() as cursor:  # the second consumer's process dies: PostgreSQL ends its session
        cursor.execute("SELECT pg_terminate_backend(%s, 5000)", [backend_of(second)])
    Producer(publisher.default_channel).publish({"n": 2}, exchange=BROADCAST, declare=[BROADCAST])
    assert receive(first, queue_a, 1) == [{"n": 2}]
    assert rows_of("fanouttest.b") == 0  # nothing routed to the dead consumer's queue

    cleanup_broker_messages(visibility_timeout=60)
    with connection.cursor() as cursor:
        cursor.execute("SELECT queue FROM kombu_binding WHERE exchange = %s", [BROADCAST.name])
        assert cursor.fetchall() == [("fanouttest.a",)]
        cursor.execute("SELECT count(*) FROM kombu_queue WHERE name = 'fanouttest.b'")
        assert cursor.fetchone()[0] == 0


def test_a_closed_channel_takes_its_bindings_and_its_reply_queue_along(connect):
    consumer, publisher = connect(), connect()
    reply = Queue("fanouttest.reply", Exchange("fanouttest.direct", type="direct"), routing_key="me", auto_delete=True)
    bind(consumer, reply)
    # Another process knows nothing of the binding but the shared row: a reply still arrives.
    Producer(publisher.default_channel).publish(
        {"r": 1}, exchange=reply.exchange, routing_key="me", declare=[reply.exchange]
    )
    assert receive(consumer, reply, 1) == [{"r": 1}]

    consumer.default_channel.queue_delete(reply.name)  # what kombu's Mailbox does after collecting replies
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM kombu_binding WHERE queue = %s", [reply.name])
        assert cursor.fetchone()[0] == 0
        cursor.execute("SELECT count(*) FROM kombu_queue WHERE name = %s", [reply.name])
        assert cursor.fetchone()[0] == 0

    listener = connect()
    bind(listener, Queue("fanouttest.gone", BROADCAST, auto_delete=True))
    listener.release()
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM kombu_binding WHERE queue = 'fanouttest.gone'")
        assert cursor.fetchone()[0] == 0


def test_events_with_nobody_listening_cost_no_statement_per_message(connect, monkeypatch):
    statements: list[str] = []
    execute = psycopg.Connection.execute

    def counting(self, query, *args, **kwargs):
        statements.append(str(query))
        return execute(self, query, *args, **kwargs)

    publisher = connect()
    producer = Producer(publisher.default_channel, exchange=EVENTS)
    producer.declare()
    monkeypatch.setattr(psycopg.Connection, "execute", counting)
    for n in range(200):
        producer.publish({"n": n}, routing_key="task.succeeded")
    assert len(statements) == 1  # one read of the shared bindings, then the process's cache

    receiver = connect()
    queue = Queue("fanouttest.ev.receiver", EVENTS, routing_key="task.#", auto_delete=True)
    bind(receiver, queue)
    got = []
    with Consumer(receiver.default_channel, [queue], no_ack=True, callbacks=[lambda body, _m: got.append(body)]):
        with contextlib.suppress(TimeoutError):
            receiver.drain_events(timeout=0.5)  # starts listening: the NOTIFY of the binding reaches this process
        statements.clear()
        for n in range(10):
            producer.publish({"n": n}, routing_key="task.succeeded")
            producer.publish({"n": n}, routing_key="worker.heartbeat")  # not bound: routed nowhere
        while len(got) < 10:
            receiver.drain_events(timeout=10)
    assert [body["n"] for body in got] == list(range(10))
    lookups = [s for s in statements if "FROM kombu_binding" in s]
    assert len(lookups) == 1  # read again once after the new binding, not once per message


def test_a_consumer_whose_session_was_lost_binds_again_with_its_new_one(connect):
    consumer, publisher = connect(), connect()
    queue = Queue("fanouttest.node", BROADCAST, auto_delete=True)
    bind(consumer, queue)
    broadcast = Producer(publisher.default_channel)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s, 5000)", [backend_of(consumer)])
    broadcast.publish({"n": "while gone"}, exchange=BROADCAST, declare=[BROADCAST])
    got: list = []
    with Consumer(consumer.default_channel, [queue], no_ack=True, callbacks=[lambda body, _m: got.append(body)]):
        with contextlib.suppress(TimeoutError):
            consumer.drain_events(timeout=0.5)  # its next statement reconnects, and the new session re-binds
        broadcast.publish({"n": "back"}, exchange=BROADCAST, declare=[BROADCAST])
        while not got:
            consumer.drain_events(timeout=10)
    assert got == [{"n": "back"}]


def test_a_publisher_holding_the_id_of_a_pruned_queue_reaches_the_queue_declared_again(connect, monkeypatch):
    # Queue ids are cached per process; each side gets a cache of its own, as if in a process of its own.
    caches: dict[str, dict] = {"publisher": {}, "first": {}, "restarted": {}}

    def as_process(name: str) -> None:
        monkeypatch.setattr(transport, "_queue_ids", caches[name])

    queue = Queue("fanouttest.pidbox", BROADCAST, auto_delete=True)
    first, publisher, restarted = connect(), connect(), connect()
    as_process("first")
    bind(first, queue)
    as_process("publisher")
    broadcast = Producer(publisher.default_channel)
    broadcast.publish({"n": 1}, exchange=BROADCAST, declare=[BROADCAST])
    as_process("first")
    assert receive(first, queue, 1) == [{"n": 1}]

    with connection.cursor() as cursor:  # the consumer's process dies; the prune drops its queue's row
        cursor.execute("SELECT pg_terminate_backend(%s, 5000)", [backend_of(first)])
    cleanup_broker_messages(visibility_timeout=60)
    as_process("restarted")  # the consumer restarts under the same queue name: a new row, a new id
    bind(restarted, queue)
    assert caches["restarted"] != caches["first"]

    as_process("publisher")  # still holds the pruned id
    broadcast.publish({"n": 2}, exchange=BROADCAST, declare=[BROADCAST])
    as_process("restarted")
    assert receive(restarted, queue, 1) == [{"n": 2}]
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM kombu_message m WHERE NOT EXISTS "
            "(SELECT 1 FROM kombu_queue q WHERE q.id = m.queue_id)"
        )
        assert cursor.fetchone()[0] == 0  # nothing left under the pruned id
