"""URLs of other databases on the test database's server, with its user and options (a socket directory too)."""

from __future__ import annotations

from django.db import connection

from common.database_urls import broker_url_for, database_url_for


def sibling_database_url(name: str) -> str:
    """A libpq URL of database `name` on the test database's server."""
    return database_url_for({**connection.settings_dict, "NAME": name})


def sibling_broker_url(name: str) -> str:
    """A broker URL (our transport) of database `name` on the test database's server."""
    return broker_url_for({**connection.settings_dict, "NAME": name})
