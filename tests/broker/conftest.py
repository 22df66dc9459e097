"""Fixtures and helpers for the broker tests: a runs table the test tasks write to, workers that load them, a
test queue to publish to, and a listener for the transport's wake-ups."""

from __future__ import annotations

import contextlib
import itertools
import time

import psycopg
import pytest
from django.db import connection
from kombu import Connection, Consumer, Exchange, Producer, Queue

from boot.celery import app as celery_app
from common.broker import sql, transport
from common.broker.transport import Transport
from tests.broker.tasks import RUNS_TABLE
from tests.processes import celery_command

_names = itertools.count(1)

QUEUE = Queue("brokertest", Exchange("brokertest", type="direct"), routing_key="brokertest")


@pytest.fixture
def runs(clean_broker):
    """Access to broker_test_runs: counts per token and kind."""
    with connection.cursor() as cursor:
        cursor.execute(RUNS_TABLE)
        cursor.execute("TRUNCATE broker_test_runs")

    class Runs:
        @staticmethod
        def counts(kind: str = "run") -> dict[str, int]:
            with connection.cursor() as cursor:
                cursor.execute("SELECT token, count(*) FROM broker_test_runs WHERE kind = %s GROUP BY token", [kind])
                return dict(cursor.fetchall())

        @staticmethod
        def total(kind: str = "run") -> int:
            with connection.cursor() as cursor:
                cursor.execute("SELECT count(*) FROM broker_test_runs WHERE kind = %s", [kind])
                return cursor.fetchone()[0]

    yield Runs
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE broker_test_runs")


@pytest.fixture
def broker_url(test_database_url, clean_broker):
    return celery_app.conf.broker_url


@pytest.fixture
def connect(broker_url):
    """Factory: kombu connections (ours by default) closed at teardown."""
    opened: list[Connection] = []

    def open_(transport_cls=Transport, **options) -> Connection:
        conn = Connection(broker_url, transport_options=options)
        conn.transport_cls = transport_cls
        opened.append(conn)
        return conn

    yield open_
    for conn in opened:
        conn.release()


@pytest.fixture
def start_test_worker(start_process, runs):
    """Factory: a real worker that also imports tests.broker.tasks; waits until it is ready."""

    def start(*extra: str, concurrency: int = 2, **env: str):
        name = f"brokerworker{next(_names)}"
        args = celery_command(
            "worker", "-I", "tests.broker.tasks", "-Q", "high,default", "-n", f"{name}@%h",
            "-c", str(concurrency), "--loglevel", "INFO", *extra,
        )  # fmt: skip
        proc = start_process(name, args, **env)
        proc.wait_for_output(r"ready\.", timeout=90)
        return proc

    return start


def message_rows() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM kombu_message")
        return cursor.fetchone()[0]


def claimed_rows() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM kombu_message WHERE NOT visible AND version = -1")
        return cursor.fetchone()[0]


def scheduled_rows() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM kombu_message WHERE NOT visible AND version = -2")
        return cursor.fetchone()[0]


def publish(conn: Connection, *bodies: object) -> None:
    """Publish each body to QUEUE (declaring it) through `conn`."""
    producer = Producer(conn.default_channel)
    for body in bodies:
        producer.publish(body, exchange=QUEUE.exchange, routing_key=QUEUE.routing_key, declare=[QUEUE])


def listening(database_url: str) -> psycopg.Connection:
    """A connection that LISTENs on the transport's wake-up channel."""
    listener = psycopg.connect(database_url, autocommit=True)
    listener.execute(f"LISTEN {sql.NOTIFY_CHANNEL}")
    return listener


def notifications(listener: psycopg.Connection, quiet: float = 0.5) -> list[str]:
    """Payloads of the wake-ups `listener` receives until none came for `quiet` seconds."""
    return [notify.payload for notify in listener.notifies(timeout=quiet)]


def consume(conn: Connection, count: int, *, ack: bool = True, timeout: float = 10, shared: list | None = None) -> list:
    """Receive until `count` messages arrived here (or in `shared`, a list several consumers append to)."""
    received = []
    seen = received if shared is None else shared

    def on_message(body, message):
        received.append((body, message))
        if shared is not None:
            shared.append(body)
        if ack:
            message.ack()

    deadline = time.monotonic() + timeout
    with Consumer(conn, [QUEUE], callbacks=[on_message]):
        while len(seen) < count and time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                conn.drain_events(timeout=0.5)
    # A consumer's next round trip (claim, or the flush before it waits) deletes the rows it acked; done here
    # so the tests can look at the table at once.
    if isinstance(conn.default_channel, transport.Channel):  # the stock transport deletes nothing
        conn.default_channel.flush_acks()
    return received
