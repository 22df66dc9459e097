from django.apps import AppConfig


class PortalConfig(AppConfig):
    name = "portal"
    verbose_name = "Portal uploads"

    def ready(self) -> None:
        """Add the uploads to the Prometheus scrape (common.monitoring knows nothing of the portal)."""
        from common.monitoring.services.metrics import register_source
        from portal.services.metrics import upload_metrics

        register_source(name="uploads", read=upload_metrics)
