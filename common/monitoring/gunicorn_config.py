"""Gunicorn settings for web (`gunicorn -c python:common.monitoring.gunicorn_config`): JSON logs when LOG_FORMAT=json.

Gunicorn's own loggers (gunicorn.error, gunicorn.access) do not propagate and use
their own text formatters, so Django's LOGGING never reaches them. With
LOG_FORMAT=json they get the same JsonLogFormatter; each access line becomes the
`message` of one JSON object, with the request's fields alongside.
"""

from __future__ import annotations

import os

# Read from the environment, not django.conf.settings: gunicorn loads this before the app (and Django) exists.
# Same variable and values as the LOG_FORMAT setting, which validates it when the app starts.
if os.environ.get("LOG_FORMAT", "text") == "json":
    _handler = {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stdout"}
    logconfig_dict = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "common.monitoring.json_log_formatter.JsonLogFormatter"}},
        "handlers": {"json_console": _handler},
        "root": {"level": "INFO", "handlers": ["json_console"]},
        "loggers": {
            "gunicorn.error": {"level": "INFO", "handlers": ["json_console"], "propagate": False},
            "gunicorn.access": {"level": "INFO", "handlers": ["json_console"], "propagate": False},
        },
    }
