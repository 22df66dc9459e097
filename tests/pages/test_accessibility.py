"""Every visible control on every page has a label (or an accessible name), at 375 and 1440 px alike."""

from __future__ import annotations

import pytest

from portal.services.own_webhooks import create_owned_endpoint, send_owned_test_event
from tests.pages.browser import WIDTHS

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

# Visible form controls without a <label> or aria-label/aria-labelledby, and buttons/links without a name.
UNLABELLED = """() => {
    const visible = (el) => el.offsetParent !== null || el.getClientRects().length > 0;
    const named = (el) => (el.labels && el.labels.length > 0) || el.getAttribute("aria-label")
        || el.getAttribute("aria-labelledby") || el.getAttribute("title");
    const controls = [...document.querySelectorAll("input:not([type=hidden]), select, textarea")]
        .filter(visible).filter((el) => !named(el)).map((el) => el.outerHTML);
    const buttons = [...document.querySelectorAll("button, a[href]")].filter(visible)
        .filter((el) => !(el.textContent.trim() || el.getAttribute("aria-label"))).map((el) => el.outerHTML);
    return controls.concat(buttons);
}"""


def test_every_control_is_labelled_and_pages_fit_a_phone(signed_in):
    user, page, problems = signed_in("a11y")
    endpoint = create_owned_endpoint(owner=user, url="http://127.0.0.1:9/a", event_types=["file.stored"])
    send_owned_test_event(owner=user, endpoint_id=endpoint.id)
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": 900})
        for path in ("/files/", "/upload/", "/tokens/", "/webhooks/", f"/webhooks/{endpoint.id}/", "/password/"):
            page.goto(path)
            page.wait_for_load_state("networkidle")
            assert page.evaluate(UNLABELLED) == [], (path, width)
            # Nothing wider than the screen: no sideways scrolling on a phone.
            assert page.evaluate("document.documentElement.scrollWidth") <= width, (path, width)
    progress = page.goto("/upload/") and page.locator("#batch-progress")
    assert progress.get_attribute("aria-describedby") == "batch-text"
    assert page.locator("#announcer").get_attribute("aria-live") == "polite"
    assert problems.csp_violations() == []
