"""The Celery application. Settings load first, so tasks see a configured Django."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "boot.settings")
os.environ.setdefault("DJANGO_CONFIGURATION", "Dev")

import configurations
from celery import Celery
from django.core.exceptions import ImproperlyConfigured

try:
    configurations.setup()
except ImproperlyConfigured as exc:
    # One line naming the variable beats a traceback through Celery's loader.
    raise SystemExit(f"Configuration error: {exc}") from None

app = Celery("doorito")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
