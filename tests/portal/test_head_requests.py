"""HEAD is answered wherever GET is: the probes, the status JSON and every GET endpoint of the API."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

pytestmark = pytest.mark.django_db


def test_probes_answer_head(client):
    for path in ("/healthz", "/readyz"):
        response = client.head(path)
        assert response.status_code == 200, (path, response.status_code)
        assert response["Content-Type"] == "application/json"


def test_status_json_answers_head_for_staff(client, django_user_model):
    staff = django_user_model.objects.create_user(username="ops", password="x", is_staff=True)
    client.force_login(staff)
    assert client.head("/ops/status").status_code == 200


def test_api_get_endpoints_answer_head_and_still_refuse_other_methods(client, make_user, media_root):
    _, token = make_user("alice")
    auth = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    created = client.post("/api/files", {"file": SimpleUploadedFile("a.txt", b"hello\n")}, **auth).json()
    for path in ("/api/files", f"/api/files/{created['id']}", f"/api/files/{created['id']}/download"):
        response = client.head(path, **auth)
        assert response.status_code == 200, (path, response.content)
    download = client.head(f"/api/files/{created['id']}/download", **auth)
    assert download["Content-Length"] == "6"
    # HEAD is checked like GET: no token, no answer.
    assert client.head("/api/files").status_code == 401
    refused = client.put(f"/api/files/{created['id']}/download", **auth)
    assert refused.status_code == 405 and refused["Allow"] == "GET, HEAD"
