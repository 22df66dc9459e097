"""Producers notify only while a consumer of the queue may be asleep: kombu_queue.wake_wanted_until.

A consuming process that is about to sleep on LISTEN with queues it found empty sets this column on their
rows to a time ahead (UTC, naive like kombu_message.timestamp): "a consumer of this queue may be waiting for a
NOTIFY until then". This transport's publishes read it in their INSERT's RETURNING and wake consumers only
while it lies ahead, so producers whose consumers are busy (they claim again without a wake-up) send no
wake-up transaction at all. Nullable, with no default: adding it rewrites nothing, and stock kombu producers
and consumers, which name their columns, ignore it; the insert trigger for other producers is unchanged.
"""

from django.db import migrations

FORWARD = "ALTER TABLE kombu_queue ADD COLUMN IF NOT EXISTS wake_wanted_until timestamp without time zone"
BACKWARD = "ALTER TABLE kombu_queue DROP COLUMN IF EXISTS wake_wanted_until"


class Migration(migrations.Migration):
    dependencies = [("broker", "0007_scheduled_and_orphaned_indexes")]
    operations = [migrations.RunSQL(FORWARD, BACKWARD)]
