"""`make screenshots`: PNGs of every page at 375 and 1440 px into docs/screenshots/ (not part of `make test`).

Run by pytest (explicitly named, so the normal run does not collect it) for the test database and gunicorn.
The delivery history is written as rows rather than sent, so no worker is needed for a picture.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from common.outbox.models import DeliveryAttempt, DeliveryStatus, WebhookDelivery
from portal.models import UploadFile
from portal.services.own_webhooks import create_owned_endpoint, send_owned_test_event
from tests.pages.browser import WIDTHS, new_context, sign_in
from tests.processes import PROJECT_DIR

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

OUT = PROJECT_DIR / "docs" / "screenshots"


def seed(user) -> None:
    now = timezone.now()
    names = [
        ("quarterly-report.pdf", "application/pdf", 1_843_200, 30),
        ("site-backup-2026-11-30.tar.gz", "application/gzip", 734_003_200, 60 * 20),
        ("meeting notes.txt", "text/plain", 4_210, 90),
        ("old-export.csv", "text/plain", 12_000, -5),
    ]
    for n, (name, kind, size, minutes_left) in enumerate(names):
        UploadFile.objects.create(
            owner=user,
            original_filename=name,
            storage_name=f"sc/{n}",
            content_type=kind,
            size_bytes=size,
            sha256=f"{n}3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"[:64],
            status="stored",
            created_at=now - timedelta(minutes=10 * (n + 1)),
            expires_at=now + timedelta(minutes=minutes_left),
        )
    endpoint = create_owned_endpoint(
        owner=user,
        url="https://hooks.example.com/doorito",
        event_types=["file.stored", "file.deleted"],
        description="ingest pipeline",
    )
    for status, codes in ((DeliveryStatus.FAILED, [500, 500]), (DeliveryStatus.DELIVERED, [200])):
        send_owned_test_event(owner=user, endpoint_id=endpoint.id)
        delivery = WebhookDelivery.objects.filter(endpoint=endpoint).order_by("-id").first()
        for k, code in enumerate(codes):
            DeliveryAttempt.objects.create(
                delivery=delivery,
                attempted_at=now + timedelta(seconds=k),
                status_code=code,
                duration_ms=12 + 30 * k,
                response_body='{"ok": true}' if code == 200 else "upstream unavailable",
                succeeded=code == 200,
            )
        WebhookDelivery.objects.filter(pk=delivery.pk).update(
            status=status, attempt_count=len(codes), last_status_code=codes[-1], leased_until=None
        )


def shoot(page, name: str, width: int) -> None:
    page.set_viewport_size({"width": width, "height": 900})
    page.wait_for_timeout(300)
    page.screenshot(path=str(OUT / f"{name}-{width}.png"), full_page=True)


def test_screenshots(browser, web, person, tmp_path):
    OUT.mkdir(parents=True, exist_ok=True)
    user = person("alice")
    seed(user)
    context = new_context(browser, web[0])
    page = context.new_page()
    page.goto("/login/")
    for width in WIDTHS:
        shoot(page, "login", width)
    sign_in(page, "alice")
    for width in WIDTHS:
        shoot(page, "files", width)

    page.goto("/tokens/")
    page.get_by_label("Name").fill("nightly backup")
    page.get_by_role("button", name="Create token").click()
    for width in WIDTHS:
        shoot(page, "tokens", width)

    page.goto("/webhooks/")
    for width in WIDTHS:
        shoot(page, "webhooks", width)
    page.get_by_role("link", name="https://hooks.example.com/doorito").click()
    page.locator("table.deliveries details").first.locator("summary").click()
    for width in WIDTHS:
        shoot(page, "webhook-detail", width)

    page.goto("/password/")
    for width in WIDTHS:
        shoot(page, "password", width)

    report = tmp_path / "report.txt"
    report.write_text("figures\n" * 20000)
    picture = tmp_path / "holiday.png"
    picture.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(20000))
    page.goto("/upload/")
    page.locator("input.uppy-Dashboard-input").first.set_input_files([str(report), str(picture)])
    page.locator("button.uppy-StatusBar-actionBtn--upload").click()
    page.locator("#file-progress li.failed").wait_for(timeout=60_000)
    page.locator("#file-progress li.done").wait_for(timeout=60_000)
    for width in WIDTHS:
        shoot(page, "upload", width)
    context.close()
    assert sorted(p.name for p in Path(OUT).glob("*.png"))
