"""API tokens page, two users who never see each other's things, and forged posts without CSRF refused."""

from __future__ import annotations

import pytest
import requests

from common.outbox.models import WebhookEndpoint
from portal.models import ApiToken, UploadFile
from portal.services.own_webhooks import create_owned_endpoint
from portal.services.tokens import create_api_token

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def api_status(base: str, token: str) -> int:
    return requests.get(f"{base}/api/files", headers={"Authorization": f"Bearer {token}"}, timeout=10).status_code


def test_token_is_shown_once_listed_by_prefix_and_revocable(signed_in, web):
    user, page, problems = signed_in("tokenuser")
    page.get_by_role("link", name="API tokens").click()
    page.get_by_label("Name").fill("nightly backup")
    page.get_by_role("button", name="Create token").click()
    plaintext = page.locator("#new-token").inner_text()
    assert plaintext.startswith("dt_")
    token = ApiToken.objects.get(user=user)
    assert token.name == "nightly backup" and plaintext.startswith(token.prefix)
    row = page.locator("tbody tr").first
    assert row.locator("code").inner_text() == f"{token.prefix}…"
    assert plaintext not in row.inner_text()
    assert api_status(web[0], plaintext) == 200

    page.goto("/tokens/")
    assert page.locator("#new-token").count() == 0
    assert plaintext not in page.content()  # shown once only

    page.get_by_role("button", name=f"Revoke {token.prefix}").click()
    assert "revoked" in page.locator("tbody tr").first.inner_text()
    assert api_status(web[0], plaintext) == 401
    assert problems.errors == []


def test_two_users_never_see_each_others_files_tokens_or_endpoints(signed_in, web):
    alice, alice_page, _ = signed_in("alice")
    alice_token = create_api_token(user=alice, name="alice-ci").token
    upload = requests.post(
        f"{web[0]}/api/files",
        headers={"Authorization": f"Bearer {create_api_token(user=alice).plaintext}"},
        files={"file": ("alice-secret.txt", b"only alice")},
        timeout=30,
    )
    assert upload.status_code == 201, upload.text
    file_id = upload.json()["id"]
    endpoint = create_owned_endpoint(owner=alice, url="http://127.0.0.1:9/alice", event_types=["file.stored"])

    _, page, _ = signed_in("bob")
    for path in ("/files/", "/tokens/", "/webhooks/"):
        page.goto(path)
        text = page.content()
        assert "alice" not in text, path
        assert endpoint.url not in text and alice_token.prefix not in text
    for path in (f"/files/{file_id}/download", f"/files/{file_id}/delete", f"/webhooks/{endpoint.id}/"):
        assert page.request.get(path).status == 404, path

    # Bob's own session and CSRF token, aimed at Alice's things: 404, nothing changes.
    page.goto("/tokens/")
    csrf = page.locator("input[name=csrfmiddlewaretoken]").first.get_attribute("value")
    posts = {
        f"/files/{file_id}/delete": {},
        f"/tokens/{alice_token.id}/revoke": {},
        f"/webhooks/{endpoint.id}/rotate": {},
        f"/webhooks/{endpoint.id}/test": {},
        f"/webhooks/{endpoint.id}/active": {"active": "0"},
        f"/webhooks/{endpoint.id}/replay": {"since": "2020-01-01T00:00"},
    }
    for path, form in posts.items():
        assert page.request.post(path, form={"csrfmiddlewaretoken": csrf, **form}).status == 404, path
    assert UploadFile.objects.get(pk=file_id).status == "stored"
    assert ApiToken.objects.get(pk=alice_token.pk).revoked_at is None
    after = WebhookEndpoint.objects.get(pk=endpoint.pk)
    assert (after.secret, after.is_active) == (endpoint.secret, True)
    assert not after.deliveries.exists()

    # And Alice still sees hers.
    alice_page.goto("/files/")
    assert alice_page.locator("td.name").all_inner_texts() == ["alice-secret.txt"]


def test_forged_posts_without_csrf_are_refused(signed_in, web):
    user, page, _ = signed_in("victim")
    file_id = requests.post(
        f"{web[0]}/api/files",
        headers={"Authorization": f"Bearer {create_api_token(user=user).plaintext}"},
        files={"file": ("keep.txt", b"keep me")},
        timeout=30,
    ).json()["id"]
    # The victim's session cookie, but no CSRF token: what a cross-site form post could at most carry.
    forger = requests.Session()
    for cookie in page.context.cookies():
        forger.cookies.set(cookie["name"], cookie["value"])
    forger.headers["Origin"] = "http://evil.example"
    forged = {
        "/tokens/": {"data": {"name": "evil"}},
        f"/files/{file_id}/delete": {"data": {}},
        "/webhooks/": {"data": {"url": "http://127.0.0.1:9/x", "event_types": "file.stored"}},
        "/upload/plain": {"files": {"file": ("evil.txt", b"planted")}},
        "/password/": {"data": {"old_password": "x", "new_password1": "y", "new_password2": "y"}},
    }
    for path, kwargs in forged.items():
        response = forger.post(f"{web[0]}{path}", timeout=30, allow_redirects=False, **kwargs)
        assert response.status_code == 403, (path, response.status_code)
    # The tus endpoint the upload widget uses: with the session but without X-CSRFToken, refused.
    tus = forger.post(
        f"{web[0]}/api/uploads/",
        headers={"Tus-Resumable": "1.0.0", "Upload-Length": "5", "Upload-Metadata": "filename ZXZpbC50eHQ="},
        timeout=30,
    )
    assert tus.status_code == 403, tus.text
    # Same-origin header but still no token: refused too.
    forger.headers["Origin"] = web[0]
    assert forger.post(f"{web[0]}/tokens/", data={"name": "evil"}, timeout=30).status_code == 403
    assert not ApiToken.objects.filter(name="evil").exists()
    assert list(UploadFile.objects.values_list("original_filename", flat=True)) == ["keep.txt"]
    assert not WebhookEndpoint.objects.exists()


def test_keyboard_alone_creates_and_revokes_a_token(signed_in):
    _, page, _ = signed_in("keys")
    page.goto("/tokens/")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    page.keyboard.press("Enter")
    # From the main content: Tab reaches the name field (its label names it), Enter submits the form.
    for _ in range(10):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "id_name":
            break
    assert page.evaluate("document.activeElement.labels[0].textContent") == "Name:"
    page.keyboard.type("typed")
    page.keyboard.press("Enter")
    page.locator("#new-token").wait_for()
    token = ApiToken.objects.get(name="typed")
    page.get_by_role("button", name=f"Revoke {token.prefix}").focus()
    page.keyboard.press("Enter")
    page.get_by_text(f"Revoked {token.prefix}…").wait_for()
    assert ApiToken.objects.get(pk=token.pk).revoked_at is not None
