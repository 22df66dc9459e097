"""One log pipeline for web, worker and beat: structlog renders stdlib records and structlog events alike.

Django, Celery, gunicorn and our own modules log through the standard library;
django-structlog logs structlog events. Both reach one handler whose
ProcessorFormatter adds the bound context (request_id and user_id on web, the
task's fields on workers) and renders `LOG_FORMAT`: `json` is one JSON object
per line, `text` readable lines. Nothing here reads Django's settings: gunicorn
builds its logging from this before Django exists.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

LOG_FORMATS = ("text", "json")  # the values of the LOG_FORMAT setting

# Processors both kinds of event go through before rendering: stdlib records (in the
# formatter's foreign_pre_chain) and structlog events (in structlog's own chain).
_COMMON: list[Processor] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_logger_name,
    structlog.stdlib.add_log_level,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


def _keep_message(_logger: WrappedLogger, _name: str, event_dict: EventDict) -> EventDict:
    # A stdlib record's text arrives as "event"; our records name their event in `extra`,
    # which would replace it, so the text is kept as "message" first.
    event_dict.setdefault("message", event_dict["event"])
    return event_dict


def _gunicorn_access_fields(_logger: WrappedLogger, _name: str, event_dict: EventDict) -> EventDict:
    # Gunicorn passes the request's fields ("atoms") as the access record's format arguments.
    atoms = event_dict.pop("positional_args", None)
    if event_dict.get("logger") != "gunicorn.access" or not isinstance(atoms, Mapping):
        return event_dict
    status = str(atoms.get("s", ""))
    duration = atoms.get("D")
    request_id = atoms.get("{x-request-id}o")
    event_dict.update(
        event="http.request",
        method=atoms.get("m"),
        path=atoms.get("U"),
        status=int(status) if status.isdigit() else status,
        bytes=atoms.get("B"),
        duration_ms=round(duration / 1000, 3) if isinstance(duration, int) else None,
        remote_addr=atoms.get("h"),
    )
    if request_id and request_id != "-":  # the id web logged the request under (X-Request-ID)
        event_dict.setdefault("request_id", request_id)
    return event_dict


def _context_of_django_request(_logger: WrappedLogger, _name: str, event_dict: EventDict) -> EventDict:
    # Django logs a 4xx/5xx answer (logger django.request, the request in `extra`) after the request's
    # context was unbound; common.monitoring.request_id kept it on the request.
    for key, value in getattr(event_dict.get("request"), "structlog_context", {}).items():
        event_dict.setdefault(key, value)
    return event_dict


def _add_pid(_logger: WrappedLogger, _name: str, event_dict: EventDict) -> EventDict:
    # Records are rendered in the process that made them (each has its own handler).
    event_dict.setdefault("pid", os.getpid())
    return event_dict


def _message_first(_logger: WrappedLogger, _name: str, event_dict: EventDict) -> EventDict:
    # Text leads with the message; the event name stays a field only where it says something else.
    if event_dict.get("event") == event_dict.get("message"):
        del event_dict["event"]
    return event_dict


def check_log_format(log_format: str) -> str:
    """Return `log_format` if it is one of LOG_FORMATS; raise ValueError naming LOG_FORMAT otherwise."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f'LOG_FORMAT: must be "text" or "json", got {log_format!r}')
    return log_format


def formatter(log_format: str) -> structlog.stdlib.ProcessorFormatter:
    """The formatter for `log_format` ("json" or "text"); structlog's own loggers are routed to it too."""
    check_log_format(log_format)
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *_COMMON,
            _keep_message,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    renderer: list[Processor]
    if log_format == "json":
        renderer = [_add_pid, structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
    else:
        renderer = [
            _message_first,
            structlog.dev.ConsoleRenderer(
                colors=False, event_key="message", exception_formatter=structlog.dev.plain_traceback
            ),
        ]
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            *_COMMON,
            _keep_message,
            structlog.stdlib.ExtraAdder(),  # `extra=` fields, our event names among them
            _gunicorn_access_fields,
            _context_of_django_request,
        ],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *renderer],
        pass_foreign_args=True,
    )


def logging_config(log_format: str, *, own_handlers: tuple[str, ...] = ()) -> dict[str, Any]:
    """dictConfig for LOG_FORMAT: every record, including those of `own_handlers` loggers, through `formatter`."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"structured": {"()": f"{__name__}.formatter", "log_format": log_format}},
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "structured"}},
        "root": {"handlers": ["console"], "level": "INFO"},
        # Loggers that do not propagate (gunicorn's) get the same handler directly.
        "loggers": {name: {"level": "INFO", "handlers": ["console"], "propagate": False} for name in own_handlers},
    }
