"""Fixes from the issue-3 review: admin permissions, replay bounds, SSRF gaps, due age, expired leases, input checks."""

from __future__ import annotations

import ipaddress
import os
import socket
import subprocess
import sys
import uuid
from datetime import timedelta

import pytest
import requests
from django.contrib.auth.models import Permission, User
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils import timezone

from common.models import DeliveryAttempt, OutboxEvent, WebhookDelivery, WebhookEndpoint
from common.monitoring.services.status import build_status_report
from common.services.delivery import deliver_due
from common.services.endpoints import (
    create_endpoint,
    disable_endpoint,
    queue_test_event,
    reenable_endpoint,
    update_endpoint,
)
from common.services.network_guard import BlockedDestinationError, guarded_session, refusal_reason
from common.services.outbox import emit_event
from common.services.outbox_health import get_outbox_health
from common.services.replay import replay_deliveries, retry_now
from tests.processes import PROJECT_DIR

pytestmark = pytest.mark.django_db


def emit(key: str) -> OutboxEvent:
    return emit_event(
        event_type="file.stored", aggregate_type="upload", aggregate_id="1", payload={}, idempotency_key=key
    )


def staff_client(*codenames: str) -> Client:
    user = User.objects.create_user(username=f"staff-{uuid.uuid4().hex[:8]}", password="x", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="common", codename__in=codenames))
    client = Client()
    client.force_login(user)
    return client


def run_action(client: Client, action: str, ids, model: str = "webhookendpoint"):
    return client.post(f"/admin/common/{model}/", {"action": action, "_selected_action": list(ids)}, follow=True)


# --- M4: admin actions need the change permission ---------------------------------------------------------------


ENDPOINT_ACTIONS = ["rotate_secret_action", "send_test_event_action", "reenable_action", "disable_action"]
DELIVERY_ACTIONS = ["retry_now_action", "replay_action"]


def test_view_only_staff_cannot_run_any_outbox_admin_action():
    endpoint = create_endpoint(url="https://hooks.example.com/h")
    emit("k1")
    delivery = WebhookDelivery.objects.get()
    WebhookDelivery.objects.filter(pk=delivery.pk).update(status="failed")
    client = staff_client("view_webhookendpoint", "view_webhookdelivery")

    page = client.get("/admin/common/webhookendpoint/")
    assert page.status_code == 200  # they may look...
    for action in ENDPOINT_ACTIONS:
        assert f'value="{action}"'.encode() not in page.content  # ...but are offered no action
    deliveries_page = client.get("/admin/common/webhookdelivery/")
    assert deliveries_page.status_code == 200
    for action in DELIVERY_ACTIONS:
        assert f'value="{action}"'.encode() not in deliveries_page.content

    secret = endpoint.secret
    for action in ENDPOINT_ACTIONS:  # posting the action anyway does nothing
        assert run_action(client, action, [endpoint.pk]).status_code == 200
    for action in DELIVERY_ACTIONS:
        run_action(client, action, [delivery.pk], model="webhookdelivery")

    endpoint.refresh_from_db()
    assert endpoint.secret == secret and endpoint.previous_secret == ""  # not rotated
    assert endpoint.is_active  # not disabled
    assert OutboxEvent.objects.count() == 1  # no test event
    assert WebhookDelivery.objects.get().status == "failed"  # not replayed


def test_staff_with_change_permissions_can_run_the_actions():
    endpoint = create_endpoint(url="https://hooks.example.com/h")
    emit("k1")
    WebhookDelivery.objects.update(status="failed")
    client = staff_client(
        "view_webhookendpoint", "change_webhookendpoint", "view_webhookdelivery", "change_webhookdelivery"
    )
    old_secret = endpoint.secret
    response = run_action(client, "rotate_secret_action", [endpoint.pk])
    endpoint.refresh_from_db()
    assert endpoint.secret != old_secret and endpoint.secret in response.content.decode()
    run_action(client, "replay_action", [WebhookDelivery.objects.get().pk], model="webhookdelivery")
    assert WebhookDelivery.objects.get().status == "pending"


# --- S6: a test event to a disabled endpoint is refused ----------------------------------------------------------


def test_send_test_event_to_a_disabled_endpoint_is_refused_clearly(admin_client):
    endpoint = create_endpoint(url="https://hooks.example.com/h")
    disable_endpoint(endpoint_id=endpoint.pk, reason="410 from receiver")
    with pytest.raises(ValueError, match=r"is disabled \(410 from receiver\); re-enable it first"):
        queue_test_event(endpoint_id=endpoint.pk)

    response = run_action(admin_client, "send_test_event_action", [endpoint.pk])
    text = response.content.decode()
    assert "Not sent" in text and "re-enable it first" in text and "Queued" not in text
    assert OutboxEvent.objects.count() == 0 and WebhookDelivery.objects.count() == 0

    reenable_endpoint(endpoint_id=endpoint.pk)
    response = run_action(admin_client, "send_test_event_action", [endpoint.pk])
    assert "Queued a webhook.test event to 1 endpoint(s)" in response.content.decode()
    assert WebhookDelivery.objects.get().endpoint_id == endpoint.pk


# --- S5: expired leases are handled by disable and retry-now -----------------------------------------------------


def _lease(delivery_id: int, *, seconds: int) -> None:
    until = timezone.now() + timedelta(seconds=seconds)
    WebhookDelivery.objects.filter(pk=delivery_id).update(
        leased_until=until, lease_token=uuid.uuid4(), next_attempt_at=until
    )


def test_disable_fails_deliveries_with_an_expired_lease_and_leaves_live_ones():
    endpoint = create_endpoint(url="https://hooks.example.com/h")
    expired, live, free = (emit(k).deliveries.get().pk for k in ("a", "b", "c"))
    _lease(expired, seconds=-30)  # a crashed dispatcher's row
    _lease(live, seconds=60)  # a dispatcher still sending

    assert disable_endpoint(endpoint_id=endpoint.pk, reason="manual") == 2
    rows = {d.pk: d for d in WebhookDelivery.objects.all()}
    assert rows[expired].status == "failed" and rows[expired].lease_token is None
    assert rows[expired].leased_until is None and "endpoint disabled: manual" in rows[expired].last_error
    assert rows[free].status == "failed"
    assert rows[live].status == "pending" and rows[live].lease_token is not None


def test_retry_now_takes_deliveries_with_an_expired_lease_and_leaves_live_ones():
    create_endpoint(url="https://hooks.example.com/h")
    expired, live = (emit(k).deliveries.get().pk for k in ("a", "b"))
    _lease(expired, seconds=-30)
    _lease(live, seconds=60)
    before = timezone.now()

    assert retry_now(delivery_ids=[expired, live]) == 1
    rows = {d.pk: d for d in WebhookDelivery.objects.all()}
    assert rows[expired].lease_token is None and rows[expired].leased_until is None
    assert before <= rows[expired].next_attempt_at <= timezone.now()
    assert rows[live].lease_token is not None and rows[live].next_attempt_at > timezone.now()


def test_retry_now_of_an_expired_lease_is_delivered(receiver):
    create_endpoint(url=receiver.plan("/ok", [200]))
    delivery = emit("a").deliveries.get().pk
    _lease(delivery, seconds=-5)
    WebhookDelivery.objects.filter(pk=delivery).update(next_attempt_at=timezone.now() + timedelta(hours=1))
    assert retry_now(delivery_ids=[delivery]) == 1
    assert deliver_due(limit=10, time_budget=5)["delivered"] == 1
    assert len(receiver.received("/ok")) == 1 and WebhookDelivery.objects.get().status == "delivered"


def test_replay_of_failed_delivery_still_requires_an_active_endpoint():
    endpoint = create_endpoint(url="https://hooks.example.com/h")
    delivery = emit("a").deliveries.get().pk
    disable_endpoint(endpoint_id=endpoint.pk, reason="x")
    assert replay_deliveries(delivery_ids=[delivery]) == 0


# --- S4: oldest due age, and the backlog alarm uses it -----------------------------------------------------------


def _alarm_codes() -> list[str]:
    return [alarm["code"] for alarm in build_status_report()["alarms"]]


def test_backoff_to_a_down_receiver_is_pending_but_not_due_and_raises_no_backlog_alarm(settings):
    settings.QUEUE_AGE_ALARM = 300
    create_endpoint(url="https://down.example.com/h")
    delivery = emit("a").deliveries.get().pk
    # Ten minutes old, waiting out its backoff until an hour from now.
    WebhookDelivery.objects.filter(pk=delivery).update(
        created_at=timezone.now() - timedelta(minutes=10),
        next_attempt_at=timezone.now() + timedelta(hours=1),
        attempt_count=3,
    )
    health = get_outbox_health()
    assert 590 < health["oldest_pending_age_seconds"] < 700
    assert health["oldest_due_age_seconds"] is None
    assert "OUTBOX_BACKLOG" not in _alarm_codes()


def test_due_work_left_unclaimed_raises_the_backlog_alarm(settings):
    settings.QUEUE_AGE_ALARM = 300
    create_endpoint(url="https://hooks.example.com/h")
    stuck, leased, crashed = (emit(k).deliveries.get().pk for k in ("a", "b", "c"))
    WebhookDelivery.objects.filter(pk=stuck).update(next_attempt_at=timezone.now() - timedelta(minutes=10))
    _lease(leased, seconds=60)  # in flight: not due
    _lease(crashed, seconds=-20 * 60)  # expired 20 min ago: due again, and the oldest
    health = get_outbox_health()
    assert 1190 < health["oldest_due_age_seconds"] < 1300
    alarms = [a for a in build_status_report()["alarms"] if a["code"] == "OUTBOX_BACKLOG"]
    assert len(alarms) == 1 and "not picked up" in alarms[0]["message"]

    out = __import__("io").StringIO()
    call_command("outbox_health", stdout=out)
    assert "oldest due (not yet picked up by a dispatcher): 12" in out.getvalue()


def test_due_deliveries_of_a_disabled_endpoint_do_not_count_as_due():
    endpoint = create_endpoint(url="https://hooks.example.com/h")
    delivery = emit("a").deliveries.get().pk
    _lease(delivery, seconds=60)  # survives the disable as pending
    disable_endpoint(endpoint_id=endpoint.pk, reason="x")
    WebhookDelivery.objects.filter(pk=delivery).update(
        leased_until=timezone.now() - timedelta(minutes=10), next_attempt_at=timezone.now() - timedelta(minutes=10)
    )
    assert get_outbox_health()["oldest_due_age_seconds"] is None


# --- M6: outbox_replay input bounds ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--hours", "nan"], "--hours must be positive"),
        (["--hours", "inf"], "--hours must be positive"),
        (["--hours", "1e20"], "--hours must be at most"),
        (["--hours=-inf"], "--hours must be positive"),
        (["--since", "2026-13-01T00:00:00"], "--since: not a valid date-time"),
        (["--since", "2026-01-01T00:00:00Z", "--until", "2026-02-30T00:00:00Z"], "--until: not a valid date-time"),
        (["--hours", "1", "--until", "2020-01-01T00:00:00Z"], "--until needs --since"),
    ],
)
def test_replay_command_refuses_unbounded_or_impossible_windows(args, message):
    endpoint = create_endpoint(url="https://hooks.example.com/h")
    with pytest.raises(CommandError, match=message):
        call_command("outbox_replay", str(endpoint.id), *args)


def test_replay_command_rejections_print_no_traceback():
    # Arguments are checked before the database is read, so this needs no endpoint.
    env = {**os.environ, "DJANGO_CONFIGURATION": "Test"}
    result = subprocess.run(
        [sys.executable, "manage.py", "outbox_replay", "1", "--hours", "nan"],
        cwd=PROJECT_DIR,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "--hours must be positive and finite, got nan" in result.stderr


def test_deliver_command_refuses_a_non_positive_batch():
    with pytest.raises(CommandError, match="--batch must be at least 1"):
        call_command("outbox_deliver", "--batch", "0")


# --- S2: SSRF guard gaps ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("fec0::1", "site-local"),
        ("2002:a00:1::1", "private (10.0.0.1 via 6to4)"),
        ("2002:7f00:1::1", "loopback (127.0.0.1 via 6to4)"),
        ("2002:a9fe:a9fe::1", "link-local (169.254.169.254 via 6to4)"),
        # Teredo obfuscates the client address (bitwise NOT): f5ff:fffe is 10.0.0.1.
        ("2001:0:4136:e378:8000:63bf:f5ff:fffe", "private (10.0.0.1 via Teredo)"),
        ("64:ff9b::a9fe:a9fe", "link-local (169.254.169.254 via NAT64)"),
        ("64:ff9b::7f00:1", "loopback (127.0.0.1 via NAT64)"),
        ("64:ff9b::a00:1", "private (10.0.0.1 via NAT64)"),
        ("64:ff9b:1::101:101", "local-use NAT64 (64:ff9b:1::/48)"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:169.254.169.254", "link-local"),
        ("::10.0.0.1", "private (10.0.0.1 via IPv4-compatible)"),
        ("::127.0.0.1", "loopback (127.0.0.1 via IPv4-compatible)"),
    ],
)
def test_ipv6_forms_that_reach_internal_networks_are_refused(no_allowlist, address, reason):
    assert refusal_reason(address=ipaddress.ip_address(address)) == reason


@pytest.mark.parametrize("address", ["64:ff9b::101:101", "2002:101:101::1", "::ffff:1.1.1.1"])
def test_ipv6_forms_of_public_ipv4_addresses_pass(no_allowlist, address):
    # DNS64 networks reach public IPv4 hosts through the well-known NAT64 prefix.
    assert refusal_reason(address=ipaddress.ip_address(address)) is None


def test_allowlist_still_opts_ranges_in_but_an_ipv6_range_cannot_open_an_embedded_internal_ipv4(settings):
    settings.WEBHOOK_ALLOWED_NETWORKS = ["10.0.0.0/8", "2002::/16", "64:ff9b::/96", "fec0::/10"]
    assert refusal_reason(address=ipaddress.ip_address("10.1.2.3")) is None
    assert refusal_reason(address=ipaddress.ip_address("fec0::1")) is None
    assert refusal_reason(address=ipaddress.ip_address("2002:a00:1::1")) is None  # 10.0.0.1 is allowed
    assert refusal_reason(address=ipaddress.ip_address("2002:7f00:1::1")) == "loopback (127.0.0.1 via 6to4)"
    assert refusal_reason(address=ipaddress.ip_address("64:ff9b::a9fe:a9fe")).startswith("link-local")
    settings.WEBHOOK_ALLOWED_NETWORKS = ["64:ff9b:1::/48"]
    assert refusal_reason(address=ipaddress.ip_address("64:ff9b:1::101:101")) is None


def test_endpoint_with_a_6to4_literal_of_an_internal_address_is_refused_at_creation(no_allowlist):
    with pytest.raises(BlockedDestinationError, match=r"via 6to4"):
        create_endpoint(url="http://[2002:a9fe:a9fe::1]/latest/meta-data/")


@pytest.fixture
def unresolvable(monkeypatch):
    real = socket.getaddrinfo

    def resolver(host, *args, **kwargs):
        if host == "nxdomain.example":
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolver)


def test_a_dns_failure_is_a_connection_error_not_an_ssrf_refusal(no_allowlist, unresolvable):
    session = guarded_session(pool_size=1)
    with pytest.raises(requests.ConnectionError) as caught:
        session.post("http://nxdomain.example/h", data=b"{}", timeout=(1, 1))
    assert "DNS lookup failed" in str(caught.value) and "Failed to resolve 'nxdomain.example'" in str(caught.value)


def test_a_dns_failure_is_logged_as_such_in_the_attempt(no_allowlist, unresolvable):
    endpoint = create_endpoint(url="http://nxdomain.example/h")
    emit("a")
    deliver_due(limit=10, time_budget=5)
    attempt = DeliveryAttempt.objects.get(delivery__endpoint=endpoint)
    assert "DNS lookup failed" in attempt.error and "SSRF" not in attempt.error


# --- Endpoint services validate their input ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field", "message"),
    [
        ({"event_types": "file.*"}, "event_types", "a list of event type strings"),
        ({"event_types": [1]}, "event_types", "a list of event type strings"),
        ({"event_types": {"file.*": True}}, "event_types", "a list of event type strings"),
        ({"event_types": ["File!"]}, "event_types", "invalid event type pattern"),
        ({"event_types": ["file."]}, "event_types", "invalid event type pattern"),
        ({"url": "https://hooks.example.com/a b"}, "url", "not a valid http"),
        ({"url": "https://hooks.example.com/" + "a" * 2000}, "url", "at most 2000 characters"),
        ({"url": "https://exa mple.com/h"}, "url", "not a valid http"),
        ({"description": "d" * 201}, "description", "at most 200 characters"),
    ],
)
def test_endpoint_services_refuse_bad_input_with_a_validation_error(kwargs, field, message):
    good = {"url": "https://hooks.example.com/h", "event_types": ["file.*"], "description": ""}
    with pytest.raises(ValidationError) as caught:
        create_endpoint(**{**good, **kwargs})
    assert field in caught.value.message_dict and message in caught.value.message_dict[field][0]
    assert WebhookEndpoint.objects.count() == 0

    endpoint = create_endpoint(**good)
    with pytest.raises(ValidationError):
        update_endpoint(endpoint_id=endpoint.pk, **{**good, **kwargs})
    endpoint.refresh_from_db()
    assert endpoint.url == good["url"] and endpoint.event_types == ["file.*"]


def test_endpoint_services_accept_good_patterns():
    endpoint = create_endpoint(url="https://hooks.example.com/h", event_types=("file.stored", "user.*"))
    assert endpoint.event_types == ["file.stored", "user.*"]
    assert create_endpoint(url="https://hooks.example.com/h2", event_types=None).event_types == []


# --- Settings validation ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"OUTBOX_DELIVERY_CONCURRENCY": "0"}, "OUTBOX_DELIVERY_CONCURRENCY"),
        ({"OUTBOX_BATCH_SIZE": "0"}, "OUTBOX_BATCH_SIZE"),
        ({"WEBHOOK_CONNECT_TIMEOUT": "0"}, "WEBHOOK_CONNECT_TIMEOUT"),
        ({"WEBHOOK_READ_TIMEOUT": "-1"}, "WEBHOOK_READ_TIMEOUT"),
        ({"WEBHOOK_READ_TIMEOUT": "nan"}, "WEBHOOK_READ_TIMEOUT"),
        ({"OUTBOX_DELIVER_SOFT_TIME_LIMIT": "20"}, "OUTBOX_DELIVER_SOFT_TIME_LIMIT"),
    ],
)
def test_outbox_settings_that_cannot_work_fail_at_start_naming_the_variable(env, variable):
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=PROJECT_DIR,
        env={**os.environ, "DJANGO_CONFIGURATION": "Dev", **env},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert variable in result.stderr and "Traceback" not in result.stderr
