"""Create kombu's SQLAlchemy transport tables, exactly as kombu's models define them.

Creating them here (not by the transport's create_all at first connect) keeps
the schema under Django's migrations and lets /readyz check them.
"""

from django.db import migrations

CREATE = """
CREATE SEQUENCE IF NOT EXISTS queue_id_sequence;
CREATE SEQUENCE IF NOT EXISTS message_id_sequence;
CREATE TABLE IF NOT EXISTS kombu_queue (
    id INTEGER NOT NULL DEFAULT nextval('queue_id_sequence') PRIMARY KEY,
    name VARCHAR(200) UNIQUE
);
CREATE TABLE IF NOT EXISTS kombu_message (
    id INTEGER NOT NULL DEFAULT nextval('message_id_sequence') PRIMARY KEY,
    visible BOOLEAN,
    timestamp TIMESTAMP WITHOUT TIME ZONE,
    payload TEXT NOT NULL,
    version SMALLINT NOT NULL,
    queue_id INTEGER,
    CONSTRAINT "FK_kombu_message_queue" FOREIGN KEY (queue_id) REFERENCES kombu_queue (id)
);
CREATE INDEX IF NOT EXISTS ix_kombu_message_timestamp_id ON kombu_message (timestamp, id);
CREATE INDEX IF NOT EXISTS ix_kombu_message_visible ON kombu_message (visible);
CREATE INDEX IF NOT EXISTS ix_kombu_message_timestamp ON kombu_message (timestamp);
"""

DROP = """
DROP TABLE IF EXISTS kombu_message;
DROP TABLE IF EXISTS kombu_queue;
DROP SEQUENCE IF EXISTS message_id_sequence;
DROP SEQUENCE IF EXISTS queue_id_sequence;
"""


class Migration(migrations.Migration):
    initial = True
    dependencies: list = []
    operations = [migrations.RunSQL(CREATE, DROP)]
