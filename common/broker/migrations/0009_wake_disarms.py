"""A wake-up disarms the queue it wakes: kombu_message_wake() also clears kombu_queue.wake_wanted_until.

Before, a consumer asleep on LISTEN kept its queue's flag armed for its whole hold, so every publish of every
producer process sent a wake-up (coalesced per 5 ms per process) until it ran out: 35% fewer enqueues with 32
producer processes while a consumer slept. A NOTIFY reaches every session listening, so once one wake-up
for a queue is sent, every consumer asleep on it wakes, and each arms the flag again before it sleeps again
(common.broker.transport.Transport._read_notifications forgets its own arm). Until then, producers read the flag unset and
send nothing; the consumer whose arm finds it unset claims again after it (sql.ARM_WAKE says why that is
enough).

The clear is taken only with the wake-up's advisory lock (one wake-up per queue at a time, as before) and
only if the queue's row is not locked by another session's arm at that moment (SKIP LOCKED): a wake-up never
waits for a consumer's arm, so the waker thread never holds up the producer publishing on its connection, and
a skipped clear only leaves the flag armed (more wake-ups, never fewer). The NOTIFY itself is sent as before,
whether or not there was a flag to clear. The insert trigger for other producers (stock kombu,
Django-transaction publishes) is unchanged: it notifies without clearing.
"""

from django.db import migrations

FORWARD = """
CREATE OR REPLACE FUNCTION kombu_message_wake(queue integer) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    -- 0x6b6f6d62 ("komb"): the advisory lock space of these wake-ups, one key per queue.
    IF pg_try_advisory_xact_lock(1802464610, queue) THEN
        PERFORM set_config('synchronous_commit', 'off', true);
        -- Disarm: every consumer this NOTIFY wakes arms again before it sleeps again.
        UPDATE kombu_queue SET wake_wanted_until = NULL WHERE id = (
            SELECT id FROM kombu_queue WHERE id = queue AND wake_wanted_until IS NOT NULL
            FOR NO KEY UPDATE SKIP LOCKED);
        PERFORM pg_notify('kombu_message_ready', queue::text);
    END IF;
END;
$$;
"""

# As migration 0005 created it.
BACKWARD = """
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


class Migration(migrations.Migration):
    dependencies = [("broker", "0008_wake_wanted_until")]
    operations = [migrations.RunSQL(FORWARD, BACKWARD)]
