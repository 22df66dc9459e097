"""Gunicorn settings for web (`gunicorn -c python:common.monitoring.gunicorn_config`): its logs in LOG_FORMAT.

Gunicorn's own loggers (gunicorn.error, gunicorn.access) do not propagate and use
their own text formatters, so Django's LOGGING never reaches them. Here they get
the same structlog formatter as everything else; each access line becomes an
`http.request` event with the request's fields alongside.
"""

from __future__ import annotations

import os

from common.monitoring.structured_logging import check_log_format, logging_config

# Read from the environment, not django.conf.settings: gunicorn loads this before the app (and Django) exists.
# Same variable and values as the LOG_FORMAT setting.
try:
    _log_format = check_log_format(os.environ.get("LOG_FORMAT", "text"))
except ValueError as exc:
    raise SystemExit(str(exc)) from None
logconfig_dict = logging_config(_log_format, own_handlers=("gunicorn.error", "gunicorn.access"))
