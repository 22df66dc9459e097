"""The transport's options (Celery's broker_transport_options), validated: its own, kombu's, and the engine's."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

QUEUE_TABLE = "kombu_queue"
MESSAGE_TABLE = "kombu_message"

# Options this transport reads itself (or kombu/Celery read); they never reach create_engine.
OWN_OPTIONS = frozenset(
    {
        "polling_interval",
        "visibility_timeout",
        "claim_batch",
        "rescue_interval",
        "rescue_grace",
        "restart_grace",
        "vacuum_threshold",
        "compact_above",
        "binding_cache_seconds",
    }
)
KOMBU_OPTIONS = frozenset(
    {
        "queue_tablename",
        "message_tablename",
        "callback",
        "errback",
        "max_retries",
        "interval_start",
        "interval_step",
        "interval_max",
        "retry_errors",
        "confirm_publish",
    }
)
# Keyword arguments sqlalchemy.create_engine() accepts; anything else is a configuration error.
ENGINE_OPTIONS = frozenset(
    {
        "connect_args",
        "creator",
        "echo",
        "echo_pool",
        "enable_from_linting",
        "execution_options",
        "hide_parameters",
        "insertmanyvalues_page_size",
        "isolation_level",
        "json_deserializer",
        "json_serializer",
        "label_length",
        "logging_name",
        "max_identifier_length",
        "max_overflow",
        "plugins",
        "pool",
        "poolclass",
        "pool_logging_name",
        "pool_pre_ping",
        "pool_recycle",
        "pool_reset_on_return",
        "pool_size",
        "pool_timeout",
        "pool_use_lifo",
        "query_cache_size",
        "use_insertmanyvalues",
    }
)


@dataclass(frozen=True)
class TransportOptions:
    """The transport's own options, validated; and the engine options to pass through."""

    polling_interval: float
    visibility_timeout: float
    claim_batch: int
    # Seconds between rescue passes (re-own held rows, orphan rows of vanished claimers, learn cancel marks).
    rescue_interval: float
    # Seconds a row stays orphaned before it is ready again: a live holder re-owns it well within this.
    rescue_grace: float
    # Seconds after a PostgreSQL start during which nothing is orphaned: every claimer is reconnecting.
    restart_grace: float
    # Dead tuples in kombu_message past which a consuming process runs VACUUM on it (0: leave it to autovacuum).
    vacuum_threshold: int
    # Bytes (table + indexes) past which a mostly empty kombu_message is compacted (0: never).
    compact_above: int
    # Seconds a process trusts what it read of a topic exchange's shared bindings (see common.broker.fanout).
    binding_cache_seconds: float
    engine_options: dict[str, Any]

    @classmethod
    def parse(cls, options: dict[str, Any]) -> TransportOptions:
        """Validate `options`; raise ValueError naming any unknown or out-of-range option."""
        for name, expected in (("queue_tablename", QUEUE_TABLE), ("message_tablename", MESSAGE_TABLE)):
            if options.get(name, expected) != expected:
                raise ValueError(f"broker transport option {name}: this transport uses the migrated {expected} table")
        unknown = set(options) - OWN_OPTIONS - KOMBU_OPTIONS - ENGINE_OPTIONS
        if unknown:
            raise ValueError(f"unknown broker transport option(s): {', '.join(sorted(unknown))}")
        parsed = cls(
            polling_interval=float(options.get("polling_interval", 5.0)),
            visibility_timeout=float(options.get("visibility_timeout", 360.0)),
            claim_batch=int(options.get("claim_batch", 8)),
            rescue_interval=float(options.get("rescue_interval", 1.0)),
            rescue_grace=float(options.get("rescue_grace", 2.0)),
            restart_grace=float(options.get("restart_grace", 30.0)),
            vacuum_threshold=int(options.get("vacuum_threshold", 1000)),
            compact_above=int(options.get("compact_above", 8 * 2**20)),
            binding_cache_seconds=float(options.get("binding_cache_seconds", 30.0)),
            engine_options={k: v for k, v in options.items() if k in ENGINE_OPTIONS},
        )
        positive = ("polling_interval", "visibility_timeout", "rescue_interval", "rescue_grace")
        non_negative = ("restart_grace", "vacuum_threshold", "compact_above", "binding_cache_seconds")
        if (
            any(getattr(parsed, name) <= 0 for name in positive)
            or parsed.claim_batch < 1
            or any(getattr(parsed, name) < 0 for name in non_negative)
        ):
            raise ValueError(
                f"broker transport options: {', '.join(positive)} must be > 0, claim_batch >= 1, "
                f"{', '.join(non_negative)} >= 0"
            )
        if parsed.rescue_grace <= parsed.rescue_interval:
            # A live holder re-owns its rows once per rescue interval; a shorter grace would run its tasks twice.
            raise ValueError(
                f"broker transport options: rescue_grace ({parsed.rescue_grace}) must exceed "
                f"rescue_interval ({parsed.rescue_interval})"
            )
        return parsed
