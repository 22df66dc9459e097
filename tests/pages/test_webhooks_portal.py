"""The subscriber's webhooks portal in a real browser, with a real worker delivering to a loopback receiver."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import pytest
import requests
from standardwebhooks import Webhook

from common.outbox.models import WebhookEndpoint
from portal.services.tokens import create_api_token
from tests.outbox.receiver import Receiver

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

# One retry a second later (found by beat's sweep every second), then `failed`: the failing receiver's
# delivery becomes replayable within seconds.
WORKER_ENV = {"OUTBOX_RETRY_SCHEDULE": "1", "OUTBOX_RETRY_JITTER": "0", "OUTBOX_SWEEP_INTERVAL_SECONDS": "1"}


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def delivery_rows(page):
    return page.locator("table.deliveries > tbody > tr")


def wait_for_first_delivery(page, status: str, timeout: float = 60) -> None:
    """Reload the endpoint page until its newest delivery shows `status` (the page does not poll by itself)."""
    deadline = time.monotonic() + timeout
    while True:
        row = delivery_rows(page).first
        if row.count() and row.locator("td.status").inner_text().startswith(status):
            return
        if time.monotonic() > deadline:
            shown = row.inner_text() if row.count() else "no deliveries"
            raise AssertionError(f"newest delivery never showed {status!r}: {shown}")
        time.sleep(0.5)
        page.get_by_role("link", name="Refresh").click()


def verified(received: dict, secret: str) -> dict:
    """The body of a received webhook, after the standardwebhooks package checked its signature."""
    return Webhook(secret).verify(received["body"], received["headers"])


def test_subscriber_adds_an_endpoint_tests_it_sees_failures_and_replays(
    signed_in, receiver, start_worker, start_beat, web
):
    user, page, problems = signed_in("subscriber")
    start_worker(**WORKER_ENV)
    start_beat(**WORKER_ENV)
    page.get_by_role("link", name="Webhooks").click()

    # The SSRF guard's refusal, in its words, on the form.
    page.get_by_label("URL").fill("http://169.254.169.254/latest/meta-data")
    page.get_by_label("file.stored: a file finished uploading").check()
    page.get_by_role("button", name="Add endpoint").click()
    error = page.locator("#id_url_error").inner_text()
    assert error.startswith("Refused:") and "169.254.169.254" in error, error

    url = receiver.plan("/hook", [200])
    page.get_by_label("URL").fill(url)
    page.get_by_label("file.stored: a file finished uploading").check()
    page.get_by_label("file.deleted: a file was deleted by its owner").check()
    page.get_by_role("button", name="Add endpoint").click()
    secret = page.locator("#new-secret").inner_text()
    assert secret.startswith("whsec_")
    endpoint_url = f"/webhooks/{WebhookEndpoint.objects.get(owner=user).id}/"

    # Test event: delivered, 200 shown.
    page.get_by_role("button", name="Send test event").click()
    wait_for_first_delivery(page, "delivered (200)")
    first = receiver.received("/hook")[0]
    assert verified(first, secret)["type"] == "webhook.test"
    row = delivery_rows(page).first
    row.locator("summary").click()
    assert row.locator("tr.attempt td.code").all_inner_texts() == ["200"]
    assert '{"ok": true}' in row.locator("code.snippet").inner_text()

    # The receiver fails: two attempts with 500, then `failed`, each attempt shown with its code.
    receiver.plan("/hook", [500])
    page.get_by_role("button", name="Send test event").click()
    wait_for_first_delivery(page, "failed (500)")
    row = delivery_rows(page).first
    row.locator("summary").click()
    assert row.locator("tr.attempt td.code").all_inner_texts() == ["500", "500"]
    assert "nope" in row.locator("code.snippet").first.inner_text()
    failed_webhook_id = row.locator("td code").nth(1).inner_text()

    # Replay it once the receiver works again: same webhook-id, delivered.
    receiver.plan("/hook", [200])
    row.get_by_role("button", name="Replay").click()
    wait_for_first_delivery(page, "delivered (200)")
    replayed = receiver.received("/hook")[-1]
    assert replayed["headers"]["webhook-id"] == failed_webhook_id
    assert verified(replayed, secret)["type"] == "webhook.test"

    # Events about the subscriber's own files arrive too, signed.
    token = create_api_token(user=user).plaintext
    headers = {"Authorization": f"Bearer {token}"}
    stored = requests.post(f"{web[0]}/api/files", headers=headers, files={"file": ("a.txt", b"hi")}, timeout=30).json()
    page.goto(endpoint_url)
    wait_for_first_delivery(page, "delivered (200)")
    file_event = verified(receiver.received("/hook")[-1], secret)
    assert (file_event["type"], file_event["data"]["id"]) == ("file.stored", stored["id"])

    # Failed, then replayed in bulk from a time on.
    receiver.plan("/hook", [503])
    page.get_by_role("button", name="Send test event").click()
    wait_for_first_delivery(page, "failed (503)")
    receiver.plan("/hook", [200])
    since = (datetime.now(UTC) - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M")
    page.get_by_label("Since (UTC)").fill(since)
    page.get_by_role("button", name="Replay", exact=True).click()
    assert page.get_by_role("status").filter(has_text="1 failed delivery(ies) queued again.").is_visible()
    wait_for_first_delivery(page, "delivered (200)")

    # Rotate: the new secret is shown once and signs the next delivery.
    page.get_by_role("button", name="Rotate secret").click()
    new_secret = page.locator("#new-secret").inner_text()
    assert new_secret.startswith("whsec_") and new_secret != secret
    page.goto(endpoint_url)
    assert page.locator("#new-secret").count() == 0
    count = len(receiver.received("/hook"))
    page.get_by_role("button", name="Send test event").click()
    wait_for_first_delivery(page, "delivered (200)")
    assert len(receiver.received("/hook")) == count + 1
    assert verified(receiver.received("/hook")[-1], new_secret)["type"] == "webhook.test"

    # Disable: no test event can be sent; enable again.
    page.get_by_role("button", name="Disable").click()
    assert page.locator("#endpoint-status").inner_text().startswith("disabled")
    page.get_by_role("button", name="Send test event").click()
    assert "disabled" in page.locator(".messages").inner_text()
    page.get_by_role("button", name="Enable").click()
    assert page.locator("#endpoint-status").inner_text() == "active"
    assert problems.errors == []
    assert json.loads(receiver.received("/hook")[0]["body"])["data"]["endpoint_id"]
