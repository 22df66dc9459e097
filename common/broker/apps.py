from django.apps import AppConfig


class BrokerConfig(AppConfig):
    name = "common.broker"
    label = "broker"
    verbose_name = "Broker (PostgreSQL)"

    def ready(self) -> None:
        """Connect the worker-side signal handlers (cancel marks become revokes; children die with the worker)."""
        from common.broker import cancel_check, worker_children  # noqa: F401 - imported for their signal handlers
