"""Who holds back the xmin horizon of this database: the cause of a slowing queue, not only its symptom.

While any transaction keeps an old snapshot or transaction id, VACUUM cannot remove the dead rows every
consumed message leaves, and the broker's claims walk further through them (docs/operations.md).
"""

from __future__ import annotations

from django.db import connection

# Raw SQL because the holders live in three system views the ORM has no models for (pg_stat_activity,
# pg_prepared_xacts, pg_replication_slots). Backends of other databases do not hold this database's
# horizon, walsenders (hot_standby_feedback) and physical slots hold every database's. A slot has no start
# time on PostgreSQL 15, so only its age in transaction ids is known. Our own backend is excluded.
XMIN_HOLDERS = """
SELECT kind, pid, application_name, state, age_seconds, xid_age FROM (
    SELECT 'backend' AS kind, a.pid, a.application_name, a.state,
           extract(epoch FROM now() - coalesce(a.xact_start, a.query_start, a.backend_start))::float AS age_seconds,
           greatest(age(a.backend_xmin), age(a.backend_xid)) AS xid_age
    FROM pg_stat_activity a
    WHERE a.pid <> pg_backend_pid() AND (a.backend_xmin IS NOT NULL OR a.backend_xid IS NOT NULL)
      AND (a.datname = current_database() OR a.backend_type = 'walsender')
    UNION ALL
    SELECT 'prepared_transaction', NULL, p.gid, 'prepared', extract(epoch FROM now() - p.prepared)::float,
           age(p.transaction)
    FROM pg_prepared_xacts p WHERE p.database = current_database()
    UNION ALL
    SELECT 'replication_slot', s.active_pid, s.slot_name, CASE WHEN s.active THEN 'active' ELSE 'inactive' END,
           NULL, greatest(age(s.xmin), age(s.catalog_xmin))
    FROM pg_replication_slots s
    WHERE (s.database IS NULL OR s.database = current_database())
      AND (s.xmin IS NOT NULL OR s.catalog_xmin IS NOT NULL)
) holders ORDER BY xid_age DESC, age_seconds DESC NULLS LAST LIMIT %s
"""

COLUMNS = ("kind", "pid", "application_name", "state", "age_seconds", "xid_age")


def xmin_horizon_holders(*, limit: int = 5) -> list[dict]:
    """The transactions, prepared transactions and slots holding the horizon back, oldest xmin first (1 query)."""
    with connection.cursor() as cursor:
        cursor.execute(XMIN_HOLDERS, [limit])
        rows = cursor.fetchall()
    holders = [dict(zip(COLUMNS, row, strict=True)) for row in rows]
    for holder in holders:
        if holder["age_seconds"] is not None:
            holder["age_seconds"] = round(max(0.0, holder["age_seconds"]), 1)
    return holders


def longest_held(holders: list[dict]) -> dict | None:
    """The holder open the longest in seconds (the alarm's measure), or None when none has a known age."""
    timed = [h for h in holders if h["age_seconds"] is not None]
    return max(timed, key=lambda h: h["age_seconds"]) if timed else None
