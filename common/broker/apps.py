from django.apps import AppConfig


class BrokerConfig(AppConfig):
    name = "common.broker"
    label = "broker"
    verbose_name = "Broker (PostgreSQL)"
