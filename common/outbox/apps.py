from django.apps import AppConfig


class OutboxConfig(AppConfig):
    name = "common.outbox"
    # The label the app had when it was the `common` package: tables (common_*), migration history,
    # admin URLs and permissions keep their names across the move.
    label = "common"
    verbose_name = "Outbox and webhooks"
