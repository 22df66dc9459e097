"""Queue depths on a Redis broker (the option for teams that run Redis anyway): kombu keeps one list per queue."""

from __future__ import annotations

from typing import Any

from kombu import Connection

# kombu's Redis transport keeps priority 0 in the list named like the queue and other priority steps
# in lists named queue + "\x06\x16" + step (kombu.transport.redis.Channel: sep, priority_steps).
PRIORITY_SEPARATOR = "\x06\x16"
PRIORITY_STEPS = (3, 6, 9)
REDIS_SCHEMES = ("redis://", "rediss://", "redis+socket://")


def is_redis_url(url: str) -> bool:
    """True for a broker URL kombu serves with its Redis transport."""
    return url.startswith(REDIS_SCHEMES)


def redis_queue_stats(*, broker_url: str, queues: list[str], timeout: float = 3.0) -> list[dict]:
    """One dict per queue, as queue_stats() gives for PostgreSQL: ready count (claimed and age are unknown)."""
    with Connection(broker_url, connect_timeout=timeout) as conn:
        client: Any = getattr(conn.default_channel, "client")  # noqa: B009 - kombu's Redis channel; stubs lack it
        stats = []
        for queue in queues:
            keys = [queue, *(f"{queue}{PRIORITY_SEPARATOR}{step}" for step in PRIORITY_STEPS)]
            stats.append(
                {
                    "queue": queue,
                    "ready": sum(client.llen(key) for key in keys),
                    "claimed": None,  # Redis keeps unacked messages in one hash for all queues
                    "oldest_ready_age_seconds": None,
                }
            )
    return stats
