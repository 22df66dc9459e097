"""kombu_message.queue_id loses its foreign key to kombu_queue: a publish no longer locks its queue's row.

The foreign key made every INSERT take FOR KEY SHARE on the one kombu_queue row of its queue. That row is
also the one consumers write (wake_wanted_until: ARM_WAKE before they sleep, kombu_message_wake when a
publish wakes them), so concurrent producers piled MultiXacts onto it. Measured on the 2-core machine, the
same INSERT from our producers' statement: PostgreSQL CPU per publish 133 -> 85 us with one producer, and
with 32 producer processes the bare insert rate went from 5,508 to 9,269/s (the broker benchmark's
--producers mode, "none" column).

What the key enforced is kept by the publish itself: sql.INSERT_MESSAGE and INSERT_SCHEDULED insert nothing
when the queue's row is gone (a plain read, no lock), and Channel._put then forgets the cached id and
publishes under the queue's current one (a pruned fanout queue that a restarted consumer declared again).
Stock kombu producers resolve the queue id in their own transaction, as before; nothing else deletes a
queue row that still holds messages (fanout.DROP_QUEUES checks). A publish racing that prune (between its
read of the row and its commit) leaves its row under the dropped id, where nobody reads it: it was
addressed to a consumer that is gone.
"""

from django.db import migrations

FORWARD = 'ALTER TABLE kombu_message DROP CONSTRAINT IF EXISTS "FK_kombu_message_queue"'
# As migration 0001 created it.
BACKWARD = (
    'ALTER TABLE kombu_message ADD CONSTRAINT "FK_kombu_message_queue" '
    "FOREIGN KEY (queue_id) REFERENCES kombu_queue (id)"
)


class Migration(migrations.Migration):
    dependencies = [("broker", "0009_wake_disarms")]
    operations = [migrations.RunSQL(FORWARD, BACKWARD)]
