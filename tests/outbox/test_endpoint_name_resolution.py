"""A webhook URL whose host name resolves now to a refused address is refused at creation, with the reason."""

from __future__ import annotations

import pytest

from common.outbox.admin import WebhookEndpointForm
from common.outbox.models import WebhookEndpoint
from common.outbox.services.endpoints import create_endpoint, update_endpoint
from common.outbox.services.network_guard import BlockedDestinationError

pytestmark = pytest.mark.django_db


def test_a_name_resolving_to_loopback_is_refused_at_creation_with_the_reason(settings):
    settings.WEBHOOK_ALLOWED_NETWORKS = []
    with pytest.raises(BlockedDestinationError, match=r"'localhost': it resolves to (127\.0\.0\.1|::1), a loopback"):
        create_endpoint(url="http://localhost:8080/hook", event_types=["file.*"])
    assert WebhookEndpoint.objects.count() == 0


def test_update_and_admin_form_refuse_it_too(settings):
    endpoint = create_endpoint(url="http://localhost:8080/hook")  # loopback is allowed in Test
    settings.WEBHOOK_ALLOWED_NETWORKS = []
    with pytest.raises(BlockedDestinationError, match="loopback"):
        update_endpoint(endpoint_id=endpoint.pk, url="http://localhost:9/other", event_types=[])
    form = WebhookEndpointForm(data={"url": "http://localhost:9/h", "description": "", "event_types": "[]"})
    assert not form.is_valid()
    assert "resolves to" in form.errors["url"][0] and "loopback" in form.errors["url"][0]


def test_allowed_networks_and_unresolvable_names_still_pass(settings):
    # Allowed explicitly: created. A name with no DNS record yet: created, checked again at connect time.
    assert create_endpoint(url="http://localhost:8080/hook").pk
    settings.WEBHOOK_ALLOWED_NETWORKS = []
    assert create_endpoint(url="https://not-yet-registered.invalid/hook").pk
