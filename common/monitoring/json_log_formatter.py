"""LOG_FORMAT=json: every log record becomes one JSON object on one line."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

# Attributes every LogRecord has; anything else came in through `extra=` and is worth keeping.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class JsonLogFormatter(logging.Formatter):
    """One line per record: ts, level, logger, message, the record's `extra` fields, and exc if any."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.name == "gunicorn.access" and isinstance(record.args, Mapping):
            # Gunicorn passes the request's fields ("atoms") as the format arguments: keep them as fields.
            atoms: Mapping[str, Any] = record.args
            entry.update(
                event="http.request",
                method=atoms.get("m"),
                path=atoms.get("U"),
                status=int(atoms["s"]) if str(atoms.get("s", "")).isdigit() else atoms.get("s"),
                bytes=atoms.get("B"),
                duration_ms=round(atoms["D"] / 1000, 3) if isinstance(atoms.get("D"), int) else None,
                remote_addr=atoms.get("h"),
            )
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc"] = record.exc_text
        # default=str: an odd extra value (a datetime, an exception) must never break logging.
        return json.dumps(entry, default=str, ensure_ascii=False)
