"""The status screen and the metrics name the transaction holding back the xmin horizon, and alarm on its age."""

from __future__ import annotations

import contextlib
import io

import psycopg
from django.contrib.auth.models import User
from django.core.management import call_command
from prometheus_client.parser import text_string_to_metric_families

from tests.processes import wait_until

TOKEN = "xmin-metrics-token"


def horizon_alarms(client) -> list[dict]:
    return [a for a in client.get("/ops/status").json()["alarms"] if a["code"] == "XMIN_HORIZON_HELD"]


def horizon_age_samples(client) -> list:
    response = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200
    return [
        sample
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
        if sample.name == "doorito_xmin_horizon_age_seconds"
    ]


def test_an_open_transaction_holding_the_xmin_horizon_is_named_and_alarmed_past_the_threshold(
    transactional_db, client, settings, test_database_url
):
    settings.XMIN_HORIZON_ALARM_SECONDS = 1
    settings.METRICS_TOKEN = TOKEN
    User.objects.create_user("ops", password="pw", is_staff=True)
    client.login(username="ops", password="pw")

    # Only this test's own (excluded) connection is in this database: nothing holds the horizon.
    assert horizon_alarms(client) == []
    [idle] = horizon_age_samples(client)
    assert idle.value == 0 and idle.labels["application_name"] == ""

    # A second, real connection holds a transaction id, the classic forgotten `idle in transaction` session.
    with psycopg.connect(test_database_url, application_name="forgotten-report", autocommit=True) as holder:
        holder.execute("BEGIN")
        holder.execute("SELECT txid_current()")
        holders = client.get("/ops/status").json()["xmin_horizon"]["holders"]
        mine = [h for h in holders if h["application_name"] == "forgotten-report"]
        assert mine and mine[0]["kind"] == "backend" and mine[0]["state"] == "idle in transaction"
        assert mine[0]["pid"] == holder.info.backend_pid and mine[0]["xid_age"] >= 0

        [alarm] = wait_until(lambda: horizon_alarms(client), 10, "the xmin horizon alarm")
        assert "forgotten-report" in alarm["message"] and "idle in transaction" in alarm["message"]
        [held] = horizon_age_samples(client)
        assert held.labels == {
            "kind": "backend",
            "application_name": "forgotten-report",
            "state": "idle in transaction",
        }
        assert held.value > 1
        page = client.get("/admin/status/").content.decode()
        assert "XMIN_HORIZON_HELD" in page and "forgotten-report" in page
        out = io.StringIO()
        with contextlib.suppress(SystemExit):  # exit code 1: alarms are raised
            call_command("doorito_status", stdout=out)
        assert "application_name='forgotten-report' state=idle in transaction" in out.getvalue()
        holder.execute("ROLLBACK")

    # Ended: the alarm clears.
    assert horizon_alarms(client) == []
