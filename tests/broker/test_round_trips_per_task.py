"""A busy worker spends fewer broker round trips than it runs tasks: the acks ride along with the claims."""

from __future__ import annotations

import pytest
from django.db import connection

from tests.broker.conftest import message_rows
from tests.broker.tasks import record
from tests.processes import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

# Each transaction that claims or deletes kombu_message rows leaves its id once (statement-level triggers fire
# even when no row matched, so an empty claim counts too).
COUNT_WRITERS = """
CREATE TABLE IF NOT EXISTS broker_test_writers (xact bigint PRIMARY KEY);
TRUNCATE broker_test_writers;
CREATE OR REPLACE FUNCTION broker_test_count_writer() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO broker_test_writers VALUES (txid_current()) ON CONFLICT DO NOTHING;
    RETURN NULL;
END $$;
CREATE TRIGGER broker_test_count_writer AFTER UPDATE OR DELETE ON kombu_message
    FOR EACH STATEMENT EXECUTE FUNCTION broker_test_count_writer();
"""
STOP_COUNTING = """
DROP TRIGGER IF EXISTS broker_test_count_writer ON kombu_message;
DROP FUNCTION IF EXISTS broker_test_count_writer();
DROP TABLE IF EXISTS broker_test_writers;
"""


@pytest.fixture
def count_writers():
    with connection.cursor() as cursor:
        cursor.execute(COUNT_WRITERS)

    def count() -> int:
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM broker_test_writers")
            return cursor.fetchone()[0]

    yield count
    with connection.cursor() as cursor:
        cursor.execute(STOP_COUNTING)


def test_a_busy_worker_claims_and_acks_in_fewer_round_trips_than_tasks(start_test_worker, runs, count_writers):
    tasks = 1500
    for n in range(tasks):
        record.delay(f"t{n}")
    start_test_worker(concurrency=4)

    wait_until(lambda: runs.total() >= tasks, 120, f"{tasks} runs")
    wait_until(lambda: message_rows() == 0, 30, "every message acked")
    assert set(runs.counts().values()) == {1}
    # Before acks rode along with the claims, each task's ack was a transaction of its own, on top of the
    # claims: 1.26 per task in this test. Now claims carry the acks: 0.78-0.79 here.
    per_task = count_writers() / tasks
    assert per_task < 1.0, per_task
