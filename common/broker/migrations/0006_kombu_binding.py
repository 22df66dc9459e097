"""Bindings other processes must see: the fanout and topic exchanges (remote control, events) and reply queues.

kombu's virtual transports keep exchange bindings in each process's memory, so a worker could never
learn that `celery inspect` or Flower bound a queue. A binding row belongs to the database session
that made it (owner_pid, owner_started, as the claimer of a message): it counts only while that
session exists, so a consumer that dies takes its bindings with it, like an AMQP auto-delete queue.
"""

from django.db import migrations

FORWARD = """
CREATE TABLE IF NOT EXISTS kombu_binding (
    id bigserial PRIMARY KEY,
    exchange varchar(255) NOT NULL,
    routing_key varchar(255) NOT NULL,
    queue varchar(200) NOT NULL,
    owner_pid integer NOT NULL,
    owner_started timestamp with time zone NOT NULL,
    message_ttl double precision,
    created timestamp with time zone NOT NULL DEFAULT now(),
    UNIQUE (exchange, routing_key, queue)
);
"""

BACKWARD = "DROP TABLE IF EXISTS kombu_binding;"


class Migration(migrations.Migration):
    dependencies = [("broker", "0005_wake_after_commit")]
    operations = [migrations.RunSQL(FORWARD, BACKWARD)]
