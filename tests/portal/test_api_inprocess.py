"""The JSON API through Django's test client: auth, metadata, pagination, deletion, download headers, 410."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.utils import timezone

from portal.models import ApiToken, UploadFile
from tests.portal.conftest import events, files_on_disk

pytestmark = pytest.mark.django_db

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 100


def auth(token):
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


def upload(client, token, name="a.txt", data=b"hello world\n", **extra):
    return client.post(
        "/api/files" + extra.pop("query", ""), {"file": SimpleUploadedFile(name, data), **extra}, **auth(token)
    )


def test_upload_detail_list_download_delete(client, make_user, media_root):
    _, token = make_user("alice")
    data = b"hello world\n" * 1000
    response = upload(client, token, name="report.txt", data=data, sha256=hashlib.sha256(data).hexdigest())
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["name"] == "report.txt" and body["size"] == len(data) and body["status"] == "stored"
    assert body["sha256"] == hashlib.sha256(data).hexdigest() and body["content_type"] == "text/plain"
    row = UploadFile.objects.get(pk=body["id"])
    assert row.expires_at == row.created_at + timedelta(hours=24)
    assert body["expires_at"] == row.expires_at.isoformat()
    # Stored under a server-generated name; nothing left in staging.
    assert files_on_disk(media_root) == [media_root / "uploads" / row.storage_name]
    (stored,) = events("file.stored")
    assert stored.payload == {
        "id": body["id"],
        "name": "report.txt",
        "type": "text/plain",
        "size": len(data),
        "sha256": body["sha256"],
        "expires_at": body["expires_at"],
    }

    assert client.get(f"/api/files/{body['id']}", **auth(token)).json() == body
    listing = client.get("/api/files", **auth(token)).json()
    assert listing["count"] == 1 and listing["results"] == [body]

    download = client.get(f"/api/files/{body['id']}/download", **auth(token))
    assert download.status_code == 200
    assert b"".join(download.streaming_content) == data
    assert download["Content-Disposition"] == 'attachment; filename="report.txt"'
    assert download["X-Content-Type-Options"] == "nosniff"
    assert download["X-Checksum-SHA256"] == body["sha256"]

    assert client.delete(f"/api/files/{body['id']}", **auth(token)).status_code == 204
    assert client.get(f"/api/files/{body['id']}", **auth(token)).status_code == 404
    assert files_on_disk(media_root) == []
    (deleted,) = events("file.deleted")
    assert deleted.payload["id"] == body["id"]


def test_ttl_shorter_and_longer_within_max_and_bad_ttl(client, make_user, media_root, settings):
    settings.FILE_UPLOAD_MAX_TTL_HOURS = 48
    _, token = make_user("alice")
    short = upload(client, token, ttl_hours="2").json()
    long = upload(client, token, query="?ttl_hours=48").json()
    for body, hours in ((short, 2), (long, 48)):
        row = UploadFile.objects.get(pk=body["id"])
        assert row.expires_at - row.created_at == timedelta(hours=hours)
    for bad in ("49", "0", "-1", "abc", "1.5"):
        response = upload(client, token, ttl_hours=bad)
        assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_ttl", bad
    assert UploadFile.objects.count() == 2 and len(files_on_disk(media_root)) == 2


def test_pagination(client, make_user, media_root, settings):
    settings.FILE_UPLOAD_PAGE_SIZE = 2
    _, token = make_user("alice")
    ids = [upload(client, token, name=f"{i}.txt").json()["id"] for i in range(5)]
    pages = [client.get(f"/api/files?page={n}", **auth(token)).json() for n in (1, 2, 3)]
    assert [p["next_page"] for p in pages] == [2, 3, None]
    assert sorted(r["id"] for p in pages for r in p["results"]) == sorted(ids)
    past_the_end = client.get("/api/files?page=4", **auth(token))
    assert past_the_end.status_code == 404 and past_the_end.json()["error"]["code"] == "page_not_found"
    assert client.get("/api/files?page=0", **auth(token)).json()["error"]["code"] == "invalid_page"
    assert client.get("/api/files?page=x", **auth(token)).json()["error"]["code"] == "invalid_page"
    assert client.get("/api/files?page_size=101", **auth(token)).json()["error"]["code"] == "invalid_page_size"
    assert client.get("/api/files?page_size=0", **auth(token)).json()["error"]["code"] == "invalid_page_size"


def test_expired_file_is_gone_before_cleanup(client, make_user, media_root):
    _, token = make_user("alice")
    body = upload(client, token, data=PNG, name="a.png").json()
    UploadFile.objects.filter(pk=body["id"]).update(expires_at=timezone.now() - timedelta(seconds=1))
    response = client.get(f"/api/files/{body['id']}/download", **auth(token))
    assert response.status_code == 410 and response.json()["error"]["code"] == "file_expired"
    assert client.get(f"/api/files/{body['id']}", **auth(token)).json()["status"] == "expired"


def test_tokens_missing_bad_revoked_and_management_command(client, make_user, media_root, capsys):
    user, token = make_user("alice")
    for headers in ({}, auth("dt_nope"), auth(token + "x"), {"HTTP_AUTHORIZATION": f"Token {token}"}):
        response = client.get("/api/files", **headers)
        assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_token"
    assert client.get("/api/files", **auth(token)).status_code == 200

    # Stored hashed: the plaintext is nowhere in the table.
    stored = ApiToken.objects.get(user=user)
    assert (
        token not in (stored.token_hash, stored.prefix)
        and stored.token_hash == hashlib.sha256(token.encode()).hexdigest()
    )

    call_command("portal_token", "create", "alice", "--name", "ci")
    created = capsys.readouterr().out.strip()
    assert client.get("/api/files", **auth(created)).status_code == 200
    call_command("portal_token", "revoke", created[:9])
    assert client.get("/api/files", **auth(created)).status_code == 401
    assert client.get("/api/files", **auth(token)).status_code == 200


def test_admin_creates_a_token_shown_once_and_revokes_it(client, media_root):
    from django.contrib.auth import get_user_model

    admin_user = get_user_model().objects.create_superuser("root", "root@example.com", "pw")
    client.force_login(admin_user)
    response = client.post("/admin/portal/apitoken/add/", {"user": admin_user.pk, "name": "from admin"})
    # Shown in this response only: not a redirect to a message kept in a cookie or the session.
    assert response.status_code == 200 and "no-store" in response["Cache-Control"]
    plaintext = response.context["plaintext"]
    token = ApiToken.objects.get(name="from admin")
    assert plaintext.startswith("dt_") and token.token_hash == hashlib.sha256(plaintext.encode()).hexdigest()
    assert f'<code id="api-token">{plaintext}</code>' in response.content.decode()
    assert all(plaintext not in morsel.value for morsel in response.cookies.values())
    assert all(plaintext not in str(value) for value in client.session.values())
    later = client.get("/admin/portal/apitoken/")
    assert plaintext not in later.content.decode() and all(plaintext not in m.value for m in later.cookies.values())
    assert client.get("/api/files", **auth(plaintext)).status_code == 200

    # Renaming goes through the service and touches nothing else.
    before = ApiToken.objects.values("token_hash", "prefix", "user", "revoked_at").get(pk=token.pk)
    renamed = client.post(f"/admin/portal/apitoken/{token.pk}/change/", {"name": "renamed"})
    assert renamed.status_code == 302, renamed.content
    assert ApiToken.objects.get(pk=token.pk).name == "renamed"
    assert ApiToken.objects.values("token_hash", "prefix", "user", "revoked_at").get(pk=token.pk) == before
    client.post("/admin/portal/apitoken/", {"action": "revoke", "_selected_action": [token.pk]}, follow=True)
    assert client.get("/api/files", **auth(plaintext)).status_code == 401


def test_malformed_ids_and_unknown_api_paths_get_json_404s(client, make_user, media_root):
    _, token = make_user("alice")
    for method, path in (
        ("get", "/api/files/not-a-uuid"),
        ("delete", "/api/files/not-a-uuid"),
        ("get", "/api/files/12345/download"),
        ("get", "/api/files/%2e%2e"),
    ):
        response = getattr(client, method)(path, **auth(token))
        assert response.status_code == 404 and response["Content-Type"] == "application/json", (path, response)
        assert response.json()["error"]["code"] == "not_found", path
    for method, path in (
        ("get", "/api/nothing-here"),
        ("post", "/api/files/"),
        ("get", "/api/files/a/b/c"),
        ("put", "/api/"),
    ):
        response = getattr(client, method)(path)  # no token needed to learn that nothing is there
        assert response.status_code == 404 and response["Content-Type"] == "application/json", (path, response)
        assert response.json()["error"]["code"] == "unknown_endpoint", path


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("invoice\u202etxt.exe", "filename_control_character"),  # RIGHT-TO-LEFT OVERRIDE: displays as invoiceexe.txt
        ("a\u2066b\u2069.txt", "filename_control_character"),  # bidi isolates
        ("\u200bsecret.txt", "filename_control_character"),  # zero-width space
        ("line\u2028break.txt", "filename_control_character"),
        ("C:evil.txt", "filename_path_traversal"),  # drive-relative on Windows
        # Look-alikes a client may fold into a path: NFKC makes fullwidth dots and slashes, U+2024 and U+FE52 plain
        ("\uff0e\uff0e\uff0fsecret.txt", "filename_path_traversal"),
        ("\uff3c\uff3cserver\uff3cshare.txt", "filename_path_traversal"),
        ("\u2024\u2024", "filename_path_traversal"),
        ("\ufe52\ufe52", "filename_path_traversal"),
        # DIVISION SLASH and FRACTION SLASH have no NFKC form, but read as "/" and are folded to it by clients.
        ("etc\u2215passwd", "filename_path_traversal"),
        ("etc\u2044passwd", "filename_path_traversal"),
        ("report\uff0etxt", None),  # one fullwidth dot folds to a plain name: kept as sent
        ("1:1 notes.txt", None),
        # A Persian word spelt with ZERO WIDTH NON-JOINER, as ordinary Persian text is.
        ("\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645.txt", None),
        ("Q3: plan.txt", None),
    ],
)
def test_display_names_hidden_characters_rejected_legitimate_ones_kept(client, make_user, media_root, name, code):
    _, token = make_user("alice")
    response = upload(client, token, name=name)
    if code is None:
        assert response.status_code == 201 and response.json()["name"] == name, response.content
    else:
        assert response.status_code == 400 and response.json()["error"]["code"] == code, response.content
        assert UploadFile.objects.count() == 0 and files_on_disk(media_root) == []


def multipart(*parts: tuple[bytes, bytes]) -> bytes:
    """A multipart body of (part headers, content) pairs, with the boundary `b`."""
    return b"".join(b"--b\r\n" + head + b"\r\n\r\n" + content + b"\r\n" for head, content in parts) + b"--b--\r\n"


def file_part(disposition: bytes, content: bytes = b"hello\n") -> tuple[bytes, bytes]:
    return b'Content-Disposition: form-data; name="file"; ' + disposition, content


@pytest.mark.parametrize(
    ("parts", "status", "code"),
    [
        # RFC 2231 lets a client percent-encode the name: 255 four-byte characters are 3 KiB of headers.
        ([file_part(b"filename*=UTF-8''" + b"%F0%9F%98%80" * 251 + b".txt")], 201, None),
        ([file_part(b'filename="a.txt"\r\nX-Padding: ' + b"p" * 6000)], 400, "filename_too_long"),
        (
            [(b'Content-Disposition: form-data; name="note"\r\nX-Padding: ' + b"p" * 6000, b"x")],
            400,
            "malformed_multipart",
        ),
        (
            [file_part(b'filename="a.txt"\r\nContent-Transfer-Encoding: base64', b"aGVsbG8K")],
            400,
            "malformed_multipart",
        ),
        (
            [(b'Content-Disposition: form-data; name="n\xe9"', b"x"), file_part(b'filename="a.txt"')],
            400,
            "malformed_multipart",
        ),
        (
            [(b'Content-Disposition: form-data; name="f"', b"x")] * 3 + [file_part(b'filename="a.txt"')],
            413,
            "too_many_fields",
        ),
        (
            [(b'Content-Disposition: form-data; name="f"', b"x" * 200), file_part(b'filename="a.txt"')],
            413,
            "too_many_fields",
        ),
    ],
)
def test_part_headers_and_fields_are_read_with_our_limits(client, make_user, media_root, settings, parts, status, code):
    """Our multipart reader: percent-encoded names, over-long headers, refused transfer encodings, field limits."""
    settings.DATA_UPLOAD_MAX_NUMBER_FIELDS = 2
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 100
    _, token = make_user("alice")
    response = client.post(
        "/api/files", data=multipart(*parts), content_type="multipart/form-data; boundary=b", **auth(token)
    )
    assert response.status_code == status, response.content
    if code is None:
        assert response.json()["name"] == "\U0001f600" * 251 + ".txt"
    else:
        assert response.json()["error"]["code"] == code
        assert UploadFile.objects.count() == 0 and files_on_disk(media_root) == []


def test_admin_delete_action_reports_what_happened_and_leaves_uploads_in_progress_alone(client, make_user, media_root):
    from django.contrib.auth import get_user_model

    from portal.services.removal import staging_path
    from portal.services.staged_uploads import begin_upload

    owner, token = make_user("alice")
    stored = upload(client, token, name="done.txt").json()
    in_progress = begin_upload(owner=owner, original_filename="half.bin")
    part = staging_path(upload_id=in_progress.id)
    part.write_bytes(b"half of a file")  # its request is still streaming into this
    admin_user = get_user_model().objects.create_superuser("root", "root@example.com", "pw")
    client.force_login(admin_user)
    response = client.post(
        "/admin/portal/uploadfile/",
        {"action": "delete_files", "_selected_action": [stored["id"], str(in_progress.id)]},
        follow=True,
    )
    (message,) = [str(m) for m in response.context["messages"]]
    assert message.startswith("Deleted 1 file(s). Skipped 1 still uploading"), message
    assert not UploadFile.objects.filter(pk=stored["id"]).exists() and len(events("file.deleted")) == 1
    assert UploadFile.objects.get(pk=in_progress.id).status == UploadFile.Status.UPLOADING
    assert part.read_bytes() == b"half of a file"
