"""HTTP delivery against a real receiver on loopback: signing, retries, 410, Retry-After, timeouts, fan-out."""

from __future__ import annotations

import itertools
import json
import time
from datetime import timedelta

import pytest
from django.utils import timezone
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from common.outbox.models import DeliveryAttempt, WebhookDelivery, WebhookEndpoint
from common.outbox.services.delivery.dispatcher import deliver_due
from common.outbox.services.endpoints import create_endpoint, rotate_secret
from common.outbox.services.replay import replay_deliveries
from tests.outbox.emitting import emit

pytestmark = [pytest.mark.integration, pytest.mark.django_db]


def drain_until(predicate, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        deliver_due(limit=100, time_budget=5)
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError("condition not reached")


def delivery_for(endpoint) -> WebhookDelivery:
    return WebhookDelivery.objects.get(endpoint=endpoint)


def test_delivery_is_signed_and_verified_by_the_official_standardwebhooks_package(receiver):
    endpoint = create_endpoint(url=receiver.plan("/ok", [200]))
    event = emit()

    result = deliver_due(limit=10, time_budget=5)

    assert result == {"processed": 1, "delivered": 1, "failed": 0, "remaining": 0}
    [request] = receiver.received("/ok")
    verified = Webhook(endpoint.secret).verify(request["body"], request["headers"])
    assert verified["type"] == "file.stored"
    assert verified["data"] == {"name": "report.pdf", "size": 12}
    assert verified["timestamp"].startswith(event.created_at.strftime("%Y-%m-%dT%H:%M:%S"))
    assert request["headers"]["webhook-id"] == event.webhook_id
    # A different secret does not verify: the check above is not vacuous.
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + "A" * 43 + "=").verify(request["body"], request["headers"])
    delivery = delivery_for(endpoint)
    assert delivery.status == "delivered" and delivery.attempt_count == 1 and delivery.last_status_code == 200
    attempt = DeliveryAttempt.objects.get(delivery=delivery)
    assert attempt.succeeded and attempt.status_code == 200 and attempt.response_body == '{"ok": true}'


def test_during_rotation_grace_both_secrets_verify(receiver):
    endpoint = create_endpoint(url=receiver.plan("/ok", [200]))
    old_secret = endpoint.secret
    endpoint = rotate_secret(endpoint_id=endpoint.id, grace_seconds=3600)
    emit()
    deliver_due(limit=10, time_budget=5)
    [request] = receiver.received("/ok")
    assert len(request["headers"]["webhook-signature"].split(" ")) == 2
    Webhook(old_secret).verify(request["body"], request["headers"])
    Webhook(endpoint.secret).verify(request["body"], request["headers"])

    # After the grace period only the new secret signs.
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(previous_secret_expires_at=timezone.now())
    emit(key="k2")
    deliver_due(limit=10, time_budget=5)
    second = receiver.received("/ok")[1]
    assert len(second["headers"]["webhook-signature"].split(" ")) == 1
    with pytest.raises(WebhookVerificationError):
        Webhook(old_secret).verify(second["body"], second["headers"])


def test_fails_n_times_then_succeeds_with_the_same_webhook_id(receiver, fast_retries):
    endpoint = create_endpoint(url=receiver.plan("/flaky", [500, 502, 200]))
    event = emit()

    drain_until(lambda: delivery_for(endpoint).status == "delivered")

    requests_ = receiver.received("/flaky")
    assert len(requests_) == 3
    assert {r["headers"]["webhook-id"] for r in requests_} == {event.webhook_id}
    # The schedule (1 s, no jitter) was respected between attempts.
    assert all(b["at"] - a["at"] >= 0.9 for a, b in itertools.pairwise(requests_))
    attempts = list(DeliveryAttempt.objects.filter(delivery__endpoint=endpoint).order_by("attempted_at"))
    assert [a.status_code for a in attempts] == [500, 502, 200]
    assert len(attempts[0].response_body) == 4096  # cut to WEBHOOK_RESPONSE_BODY_LIMIT
    assert delivery_for(endpoint).attempt_count == 3
    assert WebhookEndpoint.objects.get(pk=endpoint.pk).failing_since is None  # success clears it


def test_exhausted_schedule_marks_failed_and_replay_delivers_it(receiver, fast_retries):
    url = receiver.plan("/down", [500])
    endpoint = create_endpoint(url=url)
    emit()
    drain_until(lambda: delivery_for(endpoint).status == "failed")
    assert len(receiver.received("/down")) == 4  # first attempt + 3 retries
    assert delivery_for(endpoint).last_status_code == 500

    receiver.plan("/down", [200])
    assert replay_deliveries(delivery_ids=[delivery_for(endpoint).id]) == 1
    drain_until(lambda: delivery_for(endpoint).status == "delivered")
    assert len({r["headers"]["webhook-id"] for r in receiver.received("/down")}) == 1


def test_410_gone_disables_the_endpoint_and_fails_its_waiting_deliveries(receiver):
    endpoint = create_endpoint(url=receiver.plan("/gone", [410]))
    emit(key="a")
    deliver_due(limit=1, time_budget=5)  # only the first one is sent

    endpoint.refresh_from_db()
    assert not endpoint.is_active and "410" in endpoint.disabled_reason and endpoint.disabled_at
    assert len(receiver.received("/gone")) == 1
    assert delivery_for(endpoint).status == "failed"
    # Later events do not go to a disabled endpoint.
    emit(key="b")
    assert WebhookDelivery.objects.filter(endpoint=endpoint).count() == 1


def test_retry_after_pushes_the_next_attempt_back(receiver, fast_retries):
    endpoint = create_endpoint(url=receiver.plan("/busy", [(503, {"Retry-After": "3"}), 200]))
    emit()
    before = timezone.now()
    deliver_due(limit=10, time_budget=5)
    delivery = delivery_for(endpoint)
    assert delivery.status == "pending" and delivery.last_status_code == 503
    # The schedule says 1 s; Retry-After asked for 3 s.
    assert delivery.next_attempt_at >= before + timedelta(seconds=2.9)
    time.sleep(1.5)
    assert deliver_due(limit=10, time_budget=5)["processed"] == 0
    drain_until(lambda: delivery_for(endpoint).status == "delivered", timeout=10)


def test_receiver_hanging_past_the_read_timeout_is_a_retryable_failure(receiver, settings):
    settings.WEBHOOK_READ_TIMEOUT = 0.5
    endpoint = create_endpoint(url=receiver.plan("/slow", [("hang", 3)]))
    emit()
    started = time.monotonic()
    result = deliver_due(limit=10, time_budget=5)
    assert time.monotonic() - started < 2.5
    assert result["failed"] == 1
    delivery = delivery_for(endpoint)
    assert delivery.status == "pending" and delivery.attempt_count == 1 and delivery.last_status_code is None
    assert "timeout" in delivery.last_error.lower()
    assert "timeout" in DeliveryAttempt.objects.get(delivery=delivery).error.lower()


def test_fan_out_to_three_endpoints_one_dead_does_not_hold_back_the_others(receiver, fast_retries):
    healthy = [create_endpoint(url=receiver.plan(f"/ok{i}", [200])) for i in range(2)]
    dead = create_endpoint(url="http://127.0.0.1:9/dead")  # port 9 (discard): connection refused
    for i in range(3):
        emit(key=f"e{i}")

    result = deliver_due(limit=100, time_budget=5)

    assert result["delivered"] == 6 and result["failed"] == 3
    for endpoint in healthy:
        assert WebhookDelivery.objects.filter(endpoint=endpoint, status="delivered").count() == 3
        assert len(receiver.received(f"/ok{healthy.index(endpoint)}")) == 3
    dead_rows = WebhookDelivery.objects.filter(endpoint=dead)
    assert {d.status for d in dead_rows} == {"pending"}
    assert all("ConnectionError" in d.last_error for d in dead_rows)
    assert WebhookEndpoint.objects.get(pk=dead.pk).failing_since is not None


def test_endpoint_failing_longer_than_the_threshold_is_disabled_with_a_reason(receiver, settings):
    settings.WEBHOOK_DISABLE_AFTER_SECONDS = 3600
    endpoint = create_endpoint(url=receiver.plan("/broken", [500]))
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(failing_since=timezone.now() - timedelta(hours=2))
    emit()
    deliver_due(limit=10, time_budget=5)
    endpoint.refresh_from_db()
    assert not endpoint.is_active
    assert "failing since" in endpoint.disabled_reason and "HTTP 500" in endpoint.disabled_reason
    assert delivery_for(endpoint).status == "failed"


def test_redirects_are_not_followed(receiver):
    endpoint = create_endpoint(url=receiver.plan("/moved", [(302, {"Location": receiver.url("/ok")})]))
    emit()
    deliver_due(limit=10, time_budget=5)
    assert receiver.received("/ok") == []
    delivery = delivery_for(endpoint)
    assert delivery.last_status_code == 302 and "not followed" in delivery.last_error


def test_payload_round_trips_as_json(receiver):
    create_endpoint(url=receiver.plan("/ok", [200]))
    emit(payload={"when": timezone.now(), "nested": {"a": [1, 2]}})
    deliver_due(limit=10, time_budget=5)
    body = json.loads(receiver.received("/ok")[0]["body"])
    assert body["data"]["nested"] == {"a": [1, 2]} and isinstance(body["data"]["when"], str)
