"""Endpoint services refuse bad input with a validation error naming the field."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from common.outbox.models import WebhookEndpoint
from common.outbox.services.endpoints import (
    create_endpoint,
    update_endpoint,
)

pytestmark = pytest.mark.django_db


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
