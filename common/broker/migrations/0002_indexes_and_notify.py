"""Indexes for claiming and lease expiry, and the NOTIFY trigger that wakes idle consumers.

The stock single-column indexes on visible and timestamp (and timestamp, id) only
slow down every insert, claim and delete: the transport claims by
(queue_id, id) among ready rows and expires leases by timestamp among in-flight
rows, which the two partial indexes below serve. The table churns (every row
is inserted, updated once and deleted), so autovacuum runs on it early.
"""

from django.db import migrations

FORWARD = """
DROP INDEX IF EXISTS ix_kombu_message_visible;
DROP INDEX IF EXISTS ix_kombu_message_timestamp;
DROP INDEX IF EXISTS ix_kombu_message_timestamp_id;
CREATE INDEX IF NOT EXISTS kombu_message_ready_idx ON kombu_message (queue_id, id) WHERE visible;
CREATE INDEX IF NOT EXISTS kombu_message_in_flight_idx ON kombu_message (timestamp) WHERE NOT visible;
ALTER TABLE kombu_message SET (
    autovacuum_vacuum_scale_factor = 0.0, autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_insert_threshold = 1000, autovacuum_analyze_scale_factor = 0.05
);

CREATE OR REPLACE FUNCTION kombu_message_notify_ready() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- The payload is the queue id, so a consumer wakes only for queues it consumes.
    -- PostgreSQL folds identical notifications of one transaction into one.
    PERFORM pg_notify('kombu_message_ready', NEW.queue_id::text);
    RETURN NULL;
END;
$$;
DROP TRIGGER IF EXISTS kombu_message_ready_insert ON kombu_message;
CREATE TRIGGER kombu_message_ready_insert AFTER INSERT ON kombu_message
    FOR EACH ROW WHEN (NEW.visible) EXECUTE FUNCTION kombu_message_notify_ready();
DROP TRIGGER IF EXISTS kombu_message_ready_restore ON kombu_message;
CREATE TRIGGER kombu_message_ready_restore AFTER UPDATE OF visible ON kombu_message
    FOR EACH ROW WHEN (NEW.visible AND NOT OLD.visible) EXECUTE FUNCTION kombu_message_notify_ready();
"""

BACKWARD = """
DROP TRIGGER IF EXISTS kombu_message_ready_restore ON kombu_message;
DROP TRIGGER IF EXISTS kombu_message_ready_insert ON kombu_message;
DROP FUNCTION IF EXISTS kombu_message_notify_ready();
ALTER TABLE kombu_message RESET (
    autovacuum_vacuum_scale_factor, autovacuum_vacuum_threshold,
    autovacuum_vacuum_insert_threshold, autovacuum_analyze_scale_factor
);
DROP INDEX IF EXISTS kombu_message_in_flight_idx;
DROP INDEX IF EXISTS kombu_message_ready_idx;
CREATE INDEX IF NOT EXISTS ix_kombu_message_timestamp_id ON kombu_message (timestamp, id);
CREATE INDEX IF NOT EXISTS ix_kombu_message_visible ON kombu_message (visible);
CREATE INDEX IF NOT EXISTS ix_kombu_message_timestamp ON kombu_message (timestamp);
"""


class Migration(migrations.Migration):
    dependencies = [("broker", "0001_kombu_tables")]
    operations = [migrations.RunSQL(FORWARD, BACKWARD)]
