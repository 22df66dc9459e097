"""ttl_hours takes ASCII digits only: the look-alike numbers int() accepts are refused with invalid_ttl."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from portal.models import UploadFile
from portal.services.errors import UploadRejected
from portal.services.upload_options import parse_ttl_hours

# Fullwidth 1, Arabic-Indic 3, fullwidth 24, then ASCII forms int() accepts or that look numeric.
LOOK_ALIKES = ["\uff11", "\u0663", "1_0", " 5", "5 ", "+5", "\uff12\uff14", "1e2"]


@pytest.mark.parametrize("raw", LOOK_ALIKES)
def test_non_ascii_or_decorated_numbers_are_refused(raw):
    with pytest.raises(UploadRejected) as caught:
        parse_ttl_hours(raw=raw)
    assert caught.value.code == "invalid_ttl"


def test_ascii_digits_still_work():
    assert parse_ttl_hours(raw="12") == 12 and parse_ttl_hours(raw="007") == 7


@pytest.mark.django_db
def test_the_api_refuses_them_and_stores_nothing(client, make_user, media_root):
    _, token = make_user("alice")
    for raw in LOOK_ALIKES:
        response = client.post(
            "/api/files",
            {"file": SimpleUploadedFile("a.txt", b"hello\n"), "ttl_hours": raw},
            HTTP_AUTHORIZATION=f"Bearer {token}",
        )
        assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_ttl", raw
    assert UploadFile.objects.count() == 0
