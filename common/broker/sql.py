"""Every statement the transport runs on kombu_message, with the row states they move rows between.

Raw SQL, not the ORM: each is one round trip built on PostgreSQL-only features (FOR UPDATE SKIP LOCKED
inside UPDATE ... RETURNING, data-modifying CTEs, pg_stat_activity), runs on the transport's own
autocommit psycopg connection outside Django, and is the hot path of every task.

Row states of kombu_message (columns visible, version, claimer_pid):

- scheduled:  NOT visible, version = -2: an ETA/countdown message waiting for its time (timestamp = due, UTC);
              the rescue pass makes it ready when due. Never claimed, renewed or expired before that.
- ready:      visible, version >= 0 (1 when published by either transport); claimer_pid NULL.
- claimed:    NOT visible, version = -1, claimer_pid > 0: held by the consumer whose database backend is
              (claimer_pid, claimer_started); its lease (timestamp) is renewed while it holds it.
- orphaned:   NOT visible, version = -1, claimer_pid = 0: its claimer's backend is gone (timestamp says
              since when). The holder re-owns it if it is still alive (it had only lost its connection);
              otherwise it becomes ready again after the rescue grace.
- legacy:     NOT visible, version = -1, claimer_pid NULL: claimed before claimers were recorded; only the
              lease (visibility timeout) brings it back.
- stale:      NOT visible, version >= 0: consumed by the stock kombu transport, which never deletes; never
              delivered again, deleted by cleanup.

An ack deletes the row, so the table holds only ready and in-flight messages.

kombu_queue.wake_wanted_until (migrations 0008, 0009), per queue:

- unset:   NULL or past: no consumer of the queue sleeps waiting for a NOTIFY (or every one that did has a
           NOTIFY on its way and arms again before it sleeps again); this transport's publishes send no
           wake-up (busy consumers claim again without one; idle ones poll, but arm it first).
- armed:   ahead of now (UTC): a consumer may be asleep on LISTEN until then; publishes wake the queue.
           A consuming process arms it (ARM_WAKE) before it sleeps with queues it found empty, for twice
           its polling interval plus a margin, and rewrites it only once half of that has passed, or after
           a NOTIFY for the queue woke it.
- armed -> unset: the first publish that finds it armed clears it (INSERT_MESSAGE) and has its waker send the
           wake-up (WAKE_QUEUES, which also clears an arm made since), so the publishes after it send nothing
           until a consumer arms it again: a NOTIFY reaches every listening session, so every consumer asleep
           on the queue wakes, and each arms again before its next sleep.
"""

from __future__ import annotations

# The wake-up channel of the insert/restore trigger (migration 0002); its payload is the queue id.
NOTIFY_CHANNEL = "kombu_message_ready"

# -> ready, inside a Django transaction (common.broker.services.transactional): the flag is left alone, so the
# queue's row is never locked for as long as the caller's transaction lasts (an arm would wait for it). The
# insert trigger notifies in the transaction, and only if it commits. No row if the queue's row is gone.
INSERT_MESSAGE_IN_TRANSACTION = (
    "INSERT INTO kombu_message (id, visible, timestamp, payload, version, queue_id) "
    "SELECT nextval('message_id_sequence'), true, now() AT TIME ZONE 'UTC', %(payload)s, 1, q.id "
    "FROM kombu_queue q WHERE q.id = %(queue)s"
)

# -> ready, and armed -> unset: if a consumer of the queue may be asleep (its wake_wanted_until lies ahead),
# the publish disarms the flag in the same statement and returns whether it did; only the publish that
# disarmed it asks its waker for a NOTIFY. Of concurrent publishes that read the flag armed, the first locks
# the queue's row; the others' UPDATE waits for its commit, finds the flag unset and writes nothing: one
# wake-up per arm, however many producers (before, each producer process read the flag armed until its own
# wake-up cleared it: about 10 wake-up transactions per arm with 32 producer processes). While the flag is
# unset the UPDATE matches no row, locks nothing and waits for nobody. The reads run in the INSERT's
# snapshot: an arm that commits after the statement began is not seen (ARM_WAKE says how the consumer covers
# that). No row comes back if the queue's row is gone (a pruned fanout queue whose id the publisher cached):
# the queue id is checked by a plain read, not by a foreign key (migration 0010).
INSERT_MESSAGE = (
    "WITH disarmed AS (UPDATE kombu_queue SET wake_wanted_until = NULL WHERE id = %(queue)s "  # noqa: S608 - constants only
    "AND wake_wanted_until > now() AT TIME ZONE 'UTC' RETURNING id) "
    + INSERT_MESSAGE_IN_TRANSACTION
    + " RETURNING EXISTS (SELECT 1 FROM disarmed)"
)

# -> scheduled: a message with a future ETA waits in the table, not in a worker's memory (no trigger fires:
# it is not visible). No row is inserted if the queue's row is gone, as INSERT_MESSAGE.
INSERT_SCHEDULED = (
    "INSERT INTO kombu_message (id, visible, timestamp, payload, version, queue_id) "
    "SELECT nextval('message_id_sequence'), false, %s, %s, -2, q.id FROM kombu_queue q WHERE q.id = %s"
)

# ready -> claimed, recording the claiming backend; and the acks this process gathered since its last round
# trip deleted in the same statement (%(acks)s: acked rows, disjoint from the ready ones it claims), so a busy
# worker spends one round trip per task, not two. The ARRAY() sub-select runs once (an InitPlan), then
# the UPDATE touches exactly the locked rows. The third column says whether broker_cancel marked the task:
# the EXISTS over pending marks is an InitPlan too, so with no marks no payload is parsed.
# `id > %(after)s` is the claim cursor (the highest id this process claimed from the queue): the index scan
# starts there instead of walking the entries of every message already consumed, which stay in the index
# until VACUUM may remove them (never, while an old transaction holds the xmin horizon). LOOK_BACK finds
# ready rows the cursor passed (restored, due, or committed after a higher id) and lowers it.
CLAIM = (
    "WITH acked AS (DELETE FROM kombu_message WHERE id = ANY(%(acks)s)), "
    "claimed AS (UPDATE kombu_message SET visible = false, version = -1, "
    "timestamp = now() AT TIME ZONE 'UTC', claimer_pid = %(pid)s, claimer_started = %(started)s "
    "WHERE id = ANY(ARRAY(SELECT id FROM kombu_message WHERE queue_id = %(queue)s AND visible "
    "AND id > %(after)s ORDER BY id LIMIT %(limit)s FOR UPDATE SKIP LOCKED)) RETURNING id, payload) "
    "SELECT id, payload, CASE WHEN EXISTS (SELECT 1 FROM broker_cancelled_task WHERE skipped_at IS NULL) "
    "THEN EXISTS (SELECT 1 FROM broker_cancelled_task c WHERE c.skipped_at IS NULL "
    "AND c.task_id = (claimed.payload::json -> 'headers' ->> 'id')) ELSE false END FROM claimed"
)

# ack (or reject without requeue): the row is gone. Acks go out in batches (see Channel.basic_ack).
DELETE_ROWS = "DELETE FROM kombu_message WHERE id = ANY(%s)"

# claimed -> ready: the holder gives rows back (reject with requeue, shutdown, cancelled consumer).
RESTORE_ROWS = (
    "UPDATE kombu_message SET visible = true, version = 1, claimer_pid = NULL, claimer_started = NULL "
    "WHERE id = ANY(%s) AND NOT visible AND version = -1"
)

# The holder's lease renewal, so the visibility timeout never expires under a live consumer.
RENEW_LEASES = (
    "UPDATE kombu_message SET timestamp = now() AT TIME ZONE 'UTC' WHERE id = ANY(%s) AND NOT visible AND version = -1"
)

# claimed/orphaned/legacy -> ready once the lease is older than the visibility timeout: the fallback for
# what no signal reveals (a network partition keeps the dead claimer's backend alive for a while).
RESTORE_EXPIRED = (
    "UPDATE kombu_message SET visible = true, version = 1, claimer_pid = NULL, claimer_started = NULL "
    "WHERE NOT visible AND version = -1 AND timestamp < now() AT TIME ZONE 'UTC' - make_interval(secs => %s)"
)

# Run once per new connection. The claiming connection's identity: a backend pid is reused,
# (pid, backend_start) is not. And the session setting that makes the insert trigger leave the
# wake-up to the waker thread, after the INSERT's commit (migration 0005).
SESSION_SETUP = (
    "SELECT pg_backend_pid(), backend_start, set_config('doorito.broker_wakes_after_commit', 'on', false) "
    "FROM pg_stat_activity WHERE pid = pg_backend_pid()"
)

# The wake-ups for committed publishes, sent by the process's waker thread (common.broker.waker) for every
# queue marked since its last send (a publish marks its queue only if its INSERT_MESSAGE disarmed the flag):
# one transaction, with synchronous_commit off (kombu_message_wake), so the NOTIFY's database-wide commit
# lock is never held across a WAL flush nor on a producer's path. It clears the flag again (migration 0009),
# in case a consumer armed it since the publish: the NOTIFY wakes that consumer too, so until one of them
# arms again the producers have nobody to wake. The clear skips a row another session's ARM_WAKE has locked
# (it never waits for one); the flag then stays armed, which costs a wake-up, never loses one.
WAKE_QUEUES = "SELECT kombu_message_wake(q) FROM unnest(%s::integer[]) AS q"

# unset/armed -> armed for %(hold)s seconds: run by a consuming process before it sleeps with queues it found
# empty (%(queues)s), when its own last arm of them is less than half a hold ahead or a NOTIFY for them woke it
# since (that wake-up cleared the flag), so an idle worker adds no statement per sleep. It writes only a flag
# with less than half a hold left (whoever armed it), so while no wake-up is sent a queue's row gets one new
# version per half hold at most, however many consumers sleep (few dead versions under a held xmin). Per
# queue: seconds the flag now lies ahead (NULL if another session armed it after this statement's snapshot),
# and whether it was unset (or within a second of running out) before this arm. Only then must the caller
# claim again: a producer whose INSERT began before this commit read the flag as unset and sends no NOTIFY,
# while the claim before this statement may not have seen its row. Extending a flag that is still ahead
# leaves no such gap: a producer that read the old value saw it set. "Before this arm" is the version the
# arm locks and overwrites, not the statement's snapshot: a wake-up that cleared the flag after the snapshot
# (its UPDATE is waited for) must still make this arm report unset, or the producers that read its clear
# would be left to the poll. A flag the snapshot shows well ahead is neither locked nor written (a read only);
# a wake-up clearing it meanwhile also notifies this consumer, whose next arm finds it unset.
ARM_WAKE = (
    "WITH due AS (SELECT id, wake_wanted_until AS was FROM kombu_queue WHERE id = ANY(%(queues)s) "
    "AND (wake_wanted_until IS NULL "
    "OR wake_wanted_until < now() AT TIME ZONE 'UTC' + make_interval(secs => %(hold)s / 2)) "
    "ORDER BY id FOR NO KEY UPDATE), "
    "armed AS (UPDATE kombu_queue SET wake_wanted_until = now() AT TIME ZONE 'UTC' "
    "+ make_interval(secs => %(hold)s) WHERE id = ANY(ARRAY(SELECT id FROM due)) RETURNING id, wake_wanted_until) "
    "SELECT q.id, extract(epoch FROM coalesce(a.wake_wanted_until, q.wake_wanted_until) - now() AT TIME ZONE 'UTC'), "
    "w.was IS NULL OR w.was < now() AT TIME ZONE 'UTC' + interval '1 second' "
    "FROM kombu_queue q LEFT JOIN due d ON d.id = q.id LEFT JOIN armed a ON a.id = q.id "
    "CROSS JOIN LATERAL (SELECT CASE WHEN d.id IS NULL THEN q.wake_wanted_until ELSE d.was END) AS w (was) "
    "WHERE q.id = ANY(%(queues)s)"
)

# One round trip a second per consuming process, all of it on rows in flight (the small in-flight index):
# - reowned: rows this process holds (%(held)s) but claimed on a connection it since lost: this backend
#   owns them now, so no rescuer takes them from a live holder;
# - acked: rows whose ack failed with the connection (%(acks)s) are deleted now;
# - orphaned: claimed rows of other processes whose backend is gone become orphaned (timestamp = now);
#   not while the server itself has just started, when every claimer is reconnecting; only if %(sweep)s:
#   this scan walks every claimed row version VACUUM may not remove yet, so under a held xmin horizon the
#   caller spaces it out (the other parts use small indexes: migration 0007);
# - rescued: rows orphaned longer than the grace become ready (the restore trigger wakes consumers);
# - due: scheduled rows whose time has come become ready (the restore trigger wakes consumers);
# - and the task ids of pending broker_cancel marks (normally none), so the worker skips them, and the
#   seconds until the next scheduled row is due (NULL if none), so the pass can run again right then.
# A data-modifying CTE sees the snapshot from before the others ran: the four sets are disjoint by state.
RESCUE = (
    "WITH reowned AS (UPDATE kombu_message SET claimer_pid = %(pid)s, claimer_started = %(started)s, "
    "timestamp = now() AT TIME ZONE 'UTC' WHERE id = ANY(%(held)s) AND NOT visible AND version = -1 "
    "AND (claimer_pid IS DISTINCT FROM %(pid)s OR claimer_started IS DISTINCT FROM %(started)s) RETURNING id), "
    "acked AS (DELETE FROM kombu_message WHERE id = ANY(%(acks)s) RETURNING id), "
    "orphaned AS (UPDATE kombu_message m SET claimer_pid = 0, timestamp = now() AT TIME ZONE 'UTC' "
    "WHERE %(sweep)s AND NOT visible AND version = -1 AND claimer_pid > 0 AND NOT (id = ANY(%(held)s)) "
    "AND NOT (id = ANY(%(acks)s)) "
    "AND pg_postmaster_start_time() < now() - make_interval(secs => %(restart_grace)s) "
    "AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = m.claimer_pid "
    "AND (a.backend_start IS NULL OR a.backend_start = m.claimer_started)) RETURNING id), "
    "rescued AS (UPDATE kombu_message SET visible = true, version = 1, claimer_pid = NULL, claimer_started = NULL "
    "WHERE NOT visible AND version = -1 AND claimer_pid = 0 AND NOT (id = ANY(%(held)s)) "
    "AND NOT (id = ANY(%(acks)s)) AND timestamp < now() AT TIME ZONE 'UTC' - make_interval(secs => %(grace)s) "
    "RETURNING id), "
    "due AS (UPDATE kombu_message SET visible = true, version = 1 WHERE NOT visible AND version = -2 "
    "AND timestamp <= now() AT TIME ZONE 'UTC' RETURNING id) "
    "SELECT (SELECT count(*) FROM acked), (SELECT count(*) FROM rescued) + (SELECT count(*) FROM due), "
    "ARRAY(SELECT task_id FROM broker_cancelled_task WHERE skipped_at IS NULL), "
    "(SELECT extract(epoch FROM min(timestamp) - now() AT TIME ZONE 'UTC') FROM kombu_message "
    "WHERE NOT visible AND version = -2 AND timestamp > now() AT TIME ZONE 'UTC')"
)

QUEUE_ID = (
    "WITH found AS (SELECT id FROM kombu_queue WHERE name = %(name)s), "
    "created AS (INSERT INTO kombu_queue (id, name) SELECT nextval('queue_id_sequence'), %(name)s "
    "WHERE NOT EXISTS (SELECT 1 FROM found) ON CONFLICT (name) DO NOTHING RETURNING id) "
    "SELECT id FROM found UNION ALL SELECT id FROM created"
)
QUEUE_SIZE = "SELECT count(*) FROM kombu_message WHERE queue_id = %s AND visible"
# Only ready messages: in-flight ones belong to running consumers.
PURGE_QUEUE = "DELETE FROM kombu_message WHERE queue_id = %s AND visible"

# --- storage upkeep: run by each consuming process's upkeep thread on a connection of its own, so a slow
# look-back or VACUUM never delays a claim. -------------------------------------------------------------

# For each (queue, cursor): the lowest ready id at or below the cursor (NULL if none), so the claim looks back
# for rows that became ready behind it; and the table's dead-tuple count, which decides a targeted VACUUM.
LOOK_BACK = (
    "SELECT ARRAY(SELECT (SELECT m.id FROM kombu_message m WHERE m.queue_id = c.queue AND m.visible "
    "AND m.id <= c.after ORDER BY m.id LIMIT 1) FROM unnest(%(queues)s::integer[], %(afters)s::integer[]) "
    "WITH ORDINALITY AS c(queue, after, n) ORDER BY c.n), pg_stat_get_dead_tuples('kombu_message'::regclass)"
)
# Session advisory lock (the wake-ups' lock space, key 0: queue ids start at 1): one VACUUM at a time.
TRY_UPKEEP_LOCK = "SELECT pg_try_advisory_lock(1802464610, 0)"
UPKEEP_UNLOCK = "SELECT pg_advisory_unlock(1802464610, 0)"
VACUUM = "VACUUM kombu_message"
# After a VACUUM: dead tuples it could not remove (an old transaction still sees them), live rows, and bytes
# of the table (with TOAST) and its indexes.
STORAGE = (
    "SELECT pg_stat_get_dead_tuples('kombu_message'::regclass), pg_stat_get_live_tuples('kombu_message'::regclass), "
    "pg_table_size('kombu_message'), pg_indexes_size('kombu_message')"
)
# Rewrites the table and its indexes at their live size. It takes an ACCESS EXCLUSIVE lock, so it runs only on
# a table of few live rows, under a short lock_timeout (set on the upkeep session): it gives up rather than
# queue claims behind it for long. (VACUUM refuses to run in a multi-statement string.)
COMPACT = "VACUUM (FULL) kombu_message"
# Whether something holds back this database's xmin horizon (a transaction of this database open for over
# 10 s with an xid or snapshot, a prepared transaction, a replication slot's xmin): VACUUM FULL would then
# copy every dead row it cannot remove, under its ACCESS EXCLUSIVE lock. (Other roles' sessions show their
# xid and xmin only to superusers and pg_read_all_stats members.)
HORIZON_HELD = (
    "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE datname = current_database() "
    "AND pid <> pg_backend_pid() AND (backend_xid IS NOT NULL OR backend_xmin IS NOT NULL) "
    "AND xact_start < now() - interval '10 seconds') "
    "OR EXISTS (SELECT 1 FROM pg_prepared_xacts WHERE database = current_database()) "
    "OR EXISTS (SELECT 1 FROM pg_replication_slots WHERE xmin IS NOT NULL)"
)
UPKEEP_SESSION = "SET lock_timeout = '100ms'"
