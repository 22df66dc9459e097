"""Fixtures of the page tests: one headless chromium per run, a real gunicorn per module, signed-in people."""

from __future__ import annotations

import os
import shutil

import pytest
from django.contrib.auth import get_user_model

from tests.pages.browser import PASSWORD, PageProblems, chromium, new_context, sign_in
from tests.portal.server import start_gunicorn

# Playwright's sync API keeps an asyncio loop in this thread; the ORM calls of the tests are still synchronous.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


@pytest.fixture(scope="session")
def browser():
    with chromium() as browser:
        yield browser


MB = 1000 * 1000
# One server for every page test (starting one costs ~10 s on a busy CI machine): a 300 MB limit, and an
# allow-list that refuses images, so that a refused file is easy to make.
SERVER_ENV = {
    "FILE_UPLOAD_MAX_SIZE": str(300 * MB),
    "FILE_UPLOAD_ALLOWED_TYPES": "application/octet-stream,text/plain",
    "FILE_UPLOAD_PAGE_SIZE": "5",
    "FILE_UPLOAD_MAX_TTL_HOURS": "48",
}
REFUSED_PNG_REASON = "Content of type image/png is not accepted; allowed: application/octet-stream, text/plain."


@pytest.fixture(scope="session")
def web(test_database_url, tmp_path_factory):
    """(base URL, media root) of a gunicorn (3 workers) serving the pages with SERVER_ENV."""
    media = tmp_path_factory.mktemp("media")
    proc, base = start_gunicorn(
        "gunicorn-pages", test_database_url, tmp_path_factory.mktemp("logs"), media, workers=3, **SERVER_ENV
    )
    yield base, media
    proc.stop()


@pytest.fixture
def clean_media(web):
    """Rows are flushed between tests; the module's media directory is emptied the same way."""
    yield web[1]
    for path in web[1].iterdir():
        shutil.rmtree(path)


@pytest.fixture
def person(transactional_db):
    """Factory: a portal user with the test password."""

    def make(username: str):
        return get_user_model().objects.create_user(username=username, password=PASSWORD)

    return make


@pytest.fixture
def signed_in(browser, web, person, clean_media):
    """Factory: (user, page, problems) for a new user signed in through the login form in a fresh profile."""
    contexts = []

    def open_as(username: str, *, width: int = 1280, javascript: bool = True):
        user = person(username)
        context = new_context(browser, web[0], width=width, javascript=javascript)
        contexts.append(context)
        page = context.new_page()
        problems = PageProblems(page)
        sign_in(page, username)
        return user, page, problems

    yield open_as
    for context in contexts:
        context.close()
