"""The insert trigger skips this transport's own publishes in its WHEN clause, not in its function body.

Since migration 0005 our publishing sessions set `doorito.broker_wakes_after_commit` and send the wake-up
themselves, so for them the trigger's function did nothing but return. Calling it still cost each INSERT a
queued after-trigger event and a PL/pgSQL call: about 30 us of PostgreSQL CPU per publish (173 against
140 us for the same INSERT with the trigger disabled, one connection, 10,000 inserts alternating). A WHEN
clause that is false queues no event at all, so our publishes now cost what they cost with no trigger; other
producers (stock kombu, Django-transaction publishes) notify through the trigger as before, with 0002's
function, which this body duplicated.
"""

from importlib import import_module

from django.db import migrations

# IS DISTINCT FROM, not <>: in a session that never set the option, current_setting(..., true) is NULL, and
# `NULL <> 'on'` would skip the stock producers' wake-ups too (test_stock_producer_to_our_consumer).
FORWARD = """
DROP TRIGGER IF EXISTS kombu_message_ready_insert ON kombu_message;
CREATE TRIGGER kombu_message_ready_insert AFTER INSERT ON kombu_message
    FOR EACH ROW
    WHEN (NEW.visible AND current_setting('doorito.broker_wakes_after_commit', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION kombu_message_notify_ready();
DROP FUNCTION IF EXISTS kombu_message_notify_insert();
"""

# Migration 0005's own statements, which are idempotent (CREATE OR REPLACE, DROP ... IF EXISTS): they put
# back the trigger and the function as it left them.
BACKWARD = import_module("common.broker.migrations.0005_wake_after_commit").FORWARD


class Migration(migrations.Migration):
    dependencies = [("broker", "0010_message_queue_without_foreign_key")]
    operations = [migrations.RunSQL(FORWARD, BACKWARD)]
