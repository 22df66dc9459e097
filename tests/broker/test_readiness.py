"""/readyz checks the broker's own database when CELERY_BROKER_URL points elsewhere than Django's database."""

from __future__ import annotations

import importlib
import uuid

import psycopg
import pytest

from tests.databases import sibling_database_url
from tests.processes import free_port

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def other_database(test_database_url):
    """A second, empty database on the same server; dropped at teardown."""
    name = f"doorito_broker_other_{uuid.uuid4().hex[:8]}"
    admin_url = sibling_database_url("postgres")
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    yield sibling_database_url(name)
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def broker_check(client, caplog) -> tuple[dict, str]:
    """The broker check of /readyz, and everything it said (response and web log) about a failure."""
    caplog.clear()
    check = client.get("/readyz").json()["checks"]["broker"]
    return check, check.get("error", "") + "\n" + caplog.text


def test_readyz_checks_a_separate_broker_database(client, settings, other_database, caplog):
    settings.CELERY_BROKER_URL = "sqla+" + other_database.replace("postgresql://", "postgresql+psycopg://")
    check, said = broker_check(client, caplog)
    assert check["ok"] is False and "kombu_queue is missing" in said  # Django's own database has the tables

    with psycopg.connect(other_database, autocommit=True) as conn:
        conn.execute(importlib.import_module("common.broker.migrations.0001_kombu_tables").CREATE)
    assert broker_check(client, caplog)[0] == {"ok": True}
    settings.CELERY_BROKER_URL = "sqlalchemy+" + other_database.replace("postgresql://", "postgresql+psycopg://")
    assert broker_check(client, caplog)[0] == {"ok": True}


def test_readyz_reports_an_unreachable_broker_database_without_its_password(client, settings, caplog):
    settings.CELERY_BROKER_URL = f"sqla+postgresql+psycopg://app:s3cret-pw@127.0.0.1:{free_port()}/brokerdb"
    check, said = broker_check(client, caplog)
    assert check["ok"] is False
    assert "brokerdb" in said and "s3cret-pw" not in said
