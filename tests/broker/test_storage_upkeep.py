"""kombu_message under a held xmin horizon: claims skip consumed messages, and storage recovers afterwards."""

from __future__ import annotations

import json
import os
import time

import psycopg
import pytest
from django.db import connection

from common.broker import sql
from tests.broker.conftest import QUEUE, consume, publish

pytestmark = pytest.mark.django_db(transaction=True)

# Short passes, so the keeper and upkeep threads act within the test's patience.
FAST = {"rescue_interval": 0.2, "rescue_grace": 1.0}


@pytest.fixture
def held_xmin(test_database_url):
    """A transaction holding back the xmin horizon (as `BEGIN; SELECT txid_current();` left open does)."""
    holder = psycopg.connect(test_database_url)
    holder.execute("SELECT txid_current()")

    def release() -> None:
        if not holder.closed:
            holder.commit()
            holder.close()

    yield release
    release()


def buffers(test_database_url: str, statement: str, **params) -> int:
    """Shared buffers of `statement`'s costliest plan node, from EXPLAIN (ANALYZE, BUFFERS); rolled back. (Not the
    top node's: a data-modifying CTE the final SELECT never reads is not counted in it.)"""
    with psycopg.connect(test_database_url) as db:
        [(plan,)] = db.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + statement, params).fetchall()
        db.rollback()
    plan = plan if isinstance(plan, list) else json.loads(plan)
    nodes, most = [plan[0]["Plan"]], 0
    while nodes:
        node = nodes.pop()
        most = max(most, node["Shared Hit Blocks"] + node["Shared Read Blocks"])
        nodes.extend(node.get("Plans", []))
    return most


def storage_bytes() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_table_size('kombu_message') + pg_indexes_size('kombu_message')")
        return cursor.fetchone()[0]


def test_claims_and_rescue_passes_under_a_held_xmin_skip_the_messages_already_consumed(
    connect, held_xmin, test_database_url
):
    conn = connect(**FAST)
    # Rows of ~2 kB (incompressible, just under the TOAST threshold, so they stay in the table): a few per
    # page, so walking them costs buffers.
    publish(conn, *({"n": n, "pad": os.urandom(450).hex()} for n in range(1500)))
    assert len(consume(conn, 1500, timeout=60)) == 1500
    publish(conn, {"n": "next"})
    queue_id = conn.default_channel._queue_id(QUEUE.name)
    after, _ = conn.transport.cursors.begin(queue_id)

    # The 1500 consumed messages' dead index entries are all still there (the held xmin keeps them): a claim
    # from the queue's start walks them, the transport's claim starts after them.
    claim = {"pid": 1, "started": None, "queue": queue_id, "limit": 1, "acks": []}
    from_start = buffers(test_database_url, sql.CLAIM, **claim, after=0)
    ours = buffers(test_database_url, sql.CLAIM, **claim, after=after)
    assert from_start > 300
    assert ours < 30, (ours, from_start)
    # Nor does the rescue pass, on the seconds it does not mark orphans (that scan is spaced out).
    rescue = {"pid": 1, "started": None, "held": [], "acks": [], "grace": 2.0, "restart_grace": 0.0}
    assert buffers(test_database_url, sql.RESCUE, **rescue, sweep=False) < 30
    assert buffers(test_database_url, sql.RESCUE, **rescue, sweep=True) > 300
    assert [body for body, _ in consume(conn, 1)] == [{"n": "next"}]


def test_a_message_made_ready_behind_a_consumers_cursor_still_reaches_it(connect):
    holder, consumer = connect(**FAST), connect(**FAST)
    publish(holder, {"n": 0}, {"n": 1}, {"n": 2})
    [(first, held)] = consume(holder, 1, ack=False)
    assert first == {"n": 0}
    # The consumer's cursor passes the held message; the holder then gives it back (another process's restore).
    assert [body for body, _ in consume(consumer, 2)] == [{"n": 1}, {"n": 2}]
    held.reject(requeue=True)
    assert [body for body, _ in consume(consumer, 1, timeout=10)] == [{"n": 0}]


def test_once_a_held_xmin_ends_a_worker_vacuums_and_compacts_kombu_message(connect, held_xmin):
    with connection.cursor() as cursor:
        cursor.execute("VACUUM (FULL) kombu_message")  # start from an empty file, whatever earlier tests left
    empty = storage_bytes()
    conn = connect(vacuum_threshold=300, compact_above=2**20, **FAST)
    publish(conn, *({"n": n, "pad": os.urandom(450).hex()} for n in range(1000)))
    assert len(consume(conn, 1000, timeout=60)) == 1000
    # A message waiting in the table's last page: truncating the empty pages behind it is not enough.
    publish(conn, {"n": "waiting"})
    bloated = storage_bytes()
    assert bloated > 2 * 2**20  # nothing removable while the xmin is held

    held_xmin()
    small = max(4 * empty, 256 * 2**10)
    # VACUUM retries at most every 30 s while it can remove nothing, and a compaction whose lock_timeout gave
    # up retries on the next pass: on a loaded machine (a clean-clone CI run) 45 s was once not enough.
    deadline = time.monotonic() + 90
    while storage_bytes() > small and time.monotonic() < deadline:
        time.sleep(0.5)
    # Only VACUUM (removing the dead rows) then VACUUM FULL (giving the space back) get there.
    assert storage_bytes() <= small, (empty, bloated, storage_bytes())
    assert [body for body, _ in consume(conn, 1)] == [{"n": "waiting"}]


def test_a_claim_never_waits_for_a_slow_rescue_pass(connect, test_database_url):
    # Under a held xmin the rescue pass walks every claimed row version VACUUM may not remove: it can take
    # hundreds of milliseconds. Here it is held up for as long as the test wants, by a row lock on a row it
    # must mark orphaned (claimed by a backend that does not exist).
    conn = connect(**FAST, restart_grace=0.0)
    publish(conn, {"n": 1})
    assert len(consume(conn, 1)) == 1  # consuming: the keeper thread runs its passes from here on
    queue_id = conn.default_channel._queue_id(QUEUE.name)
    with psycopg.connect(test_database_url) as locker:
        locker.execute(
            "INSERT INTO kombu_message (id, visible, timestamp, payload, version, queue_id, claimer_pid, "
            "claimer_started) VALUES (nextval('message_id_sequence'), false, now() AT TIME ZONE 'UTC', '{}', -1, "
            "%s, 2147483647, now())",
            [queue_id],
        )
        locker.commit()
        locker.execute("SELECT 1 FROM kombu_message WHERE claimer_pid = 2147483647 FOR UPDATE")
        time.sleep(1.0)  # a rescue pass is now waiting for the lock
        assert locker.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE 'WITH reowned%%'"
        ).fetchone() == (1,)
        publish(conn, {"n": 2})
        began = time.monotonic()
        assert [body["n"] for body, _ in consume(conn, 1, timeout=3)] == [2]
        assert time.monotonic() - began < 1.0
        locker.execute("DELETE FROM kombu_message WHERE claimer_pid = 2147483647")
        locker.commit()
