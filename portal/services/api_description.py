"""The OpenAPI 3.1 description of the portal's API: one file, portal/openapi.json, served and tested as is.

Only the limits an operator sets are filled in when it is loaded, so the served document states this server's.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from django.conf import settings

OPENAPI_PATH = Path(__file__).resolve().parent.parent / "openapi.json"


@functools.cache
def openapi_document() -> dict[str, Any]:
    """The parsed document with this server's TTL limit (read once per process); tests validate against it."""
    document = json.loads(OPENAPI_PATH.read_text(encoding="utf-8"))
    document["components"]["schemas"]["TtlHours"]["maximum"] = settings.FILE_UPLOAD_MAX_TTL_HOURS
    return document
