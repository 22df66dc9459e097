"""Small partial indexes for the rescue pass's scheduled and orphaned rows.

The rescue pass runs each second in every consuming process. Its `due` (scheduled rows whose time has come)
and `rescued` (orphaned rows past the grace) parts used the in-flight index, which holds an entry for every
claimed row version: while an old transaction holds the xmin horizon, VACUUM removes none of them, and each
pass walked them all (about 200 ms after 60,000 messages). Scheduled and orphaned rows are few, and so are
the entries of these two indexes.
"""

from django.db import migrations

FORWARD = """
CREATE INDEX IF NOT EXISTS kombu_message_scheduled_idx ON kombu_message (timestamp) WHERE version = -2;
CREATE INDEX IF NOT EXISTS kombu_message_orphaned_idx ON kombu_message (timestamp) WHERE claimer_pid = 0;
"""

BACKWARD = """
DROP INDEX IF EXISTS kombu_message_orphaned_idx;
DROP INDEX IF EXISTS kombu_message_scheduled_idx;
"""


class Migration(migrations.Migration):
    dependencies = [("broker", "0006_kombu_binding")]
    operations = [migrations.RunSQL(FORWARD, BACKWARD)]
