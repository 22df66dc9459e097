from django.apps import AppConfig


class MonitoringConfig(AppConfig):
    name = "common.monitoring"
    label = "monitoring"
    verbose_name = "Doorito operations"

    def ready(self) -> None:
        # Celery signal receivers: worker heartbeats, beat leadership, task logging.
        from common.monitoring import signals  # noqa: F401
