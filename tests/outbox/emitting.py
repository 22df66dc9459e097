"""Emitting many events at once, for the dispatcher tests and the benchmark."""

from django.db import transaction

from common.services.outbox import emit_event


def emit_many(n: int, *, key_prefix: str = "e") -> None:
    """Emit n `file.stored` events in one transaction, with distinct idempotency keys."""
    with transaction.atomic():
        for i in range(n):
            emit_event(
                event_type="file.stored",
                aggregate_type="upload",
                aggregate_id=str(i),
                payload={"i": i, "name": f"file-{i}.pdf"},
                idempotency_key=f"{key_prefix}{i}",
            )
