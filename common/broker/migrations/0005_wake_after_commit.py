"""Take the wake-up NOTIFY off the producer's commit path for this transport's own publishes.

A transaction that issued NOTIFY holds a database-wide lock through its commit (including the WAL
flush), so notifying commits run one at a time: with 32 concurrent producers the insert trigger cut the
enqueue rate by about 90%. Connections of this transport set `doorito.broker_wakes_after_commit`; the
insert trigger skips them, and the transport calls kombu_message_wake() right after its INSERT commits,
in a transaction of its own with synchronous_commit off (a notification needs no durable commit), so
the lock is held only for a commit that waits for no flush. And only one wake-up per queue is in flight
at a time: a producer that finds another's wake-up for the queue under way (its transaction-scoped
advisory lock is taken) skips its own. That is safe because its INSERT has committed already: the other
wake-up is delivered after its commit, so every consumer it wakes sees the new row. Other producers (the stock kombu transport,
Django-transaction publishes) still notify from the trigger, as before.
"""

from django.db import migrations

FORWARD = """
CREATE OR REPLACE FUNCTION kombu_message_notify_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('doorito.broker_wakes_after_commit', true) = 'on' THEN
        RETURN NULL;  -- the publishing transport sends the wake-up itself, after its commit
    END IF;
    PERFORM pg_notify('kombu_message_ready', NEW.queue_id::text);
    RETURN NULL;
END;
$$;
DROP TRIGGER IF EXISTS kombu_message_ready_insert ON kombu_message;
CREATE TRIGGER kombu_message_ready_insert AFTER INSERT ON kombu_message
    FOR EACH ROW WHEN (NEW.visible) EXECUTE FUNCTION kombu_message_notify_insert();

CREATE OR REPLACE FUNCTION kombu_message_wake(queue integer) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    -- 0x6b6f6d62 ("komb"): the advisory lock space of these wake-ups, one key per queue.
    IF pg_try_advisory_xact_lock(1802464610, queue) THEN
        PERFORM set_config('synchronous_commit', 'off', true);
        PERFORM pg_notify('kombu_message_ready', queue::text);
    END IF;
END;
$$;
"""

BACKWARD = """
DROP FUNCTION IF EXISTS kombu_message_wake(integer);
DROP TRIGGER IF EXISTS kombu_message_ready_insert ON kombu_message;
CREATE TRIGGER kombu_message_ready_insert AFTER INSERT ON kombu_message
    FOR EACH ROW WHEN (NEW.visible) EXECUTE FUNCTION kombu_message_notify_ready();
DROP FUNCTION IF EXISTS kombu_message_notify_insert();
"""


class Migration(migrations.Migration):
    dependencies = [("broker", "0004_claimer_backend")]
    operations = [migrations.RunSQL(FORWARD, BACKWARD)]
