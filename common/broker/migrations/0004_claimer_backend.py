"""Record which database backend claimed each in-flight message, so any consumer can rescue a dead one's rows.

Nullable columns with no default: adding them rewrites nothing, and the stock kombu transport (which
names its columns) keeps inserting and reading rows as before.
"""

from django.db import migrations

FORWARD = """
ALTER TABLE kombu_message ADD COLUMN IF NOT EXISTS claimer_pid integer;
ALTER TABLE kombu_message ADD COLUMN IF NOT EXISTS claimer_started timestamp with time zone;
"""

BACKWARD = """
ALTER TABLE kombu_message DROP COLUMN IF EXISTS claimer_started;
ALTER TABLE kombu_message DROP COLUMN IF EXISTS claimer_pid;
"""


class Migration(migrations.Migration):
    dependencies = [("broker", "0003_cancelledtask")]
    operations = [migrations.RunSQL(FORWARD, BACKWARD)]
