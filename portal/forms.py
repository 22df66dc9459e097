"""The pages' forms: input collection and field checks only; the services decide the rest."""

from __future__ import annotations

from django import forms
from django.conf import settings

from portal.services.events import FILE_EVENT_TYPES

# Offered TTLs in hours; each page also offers FILE_UPLOAD_MAX_TTL_HOURS itself.
TTL_STEPS = (1, 2, 6, 12, 24, 48, 72, 168, 336, 720)


def ttl_label(hours: int) -> str:
    """'1 hour', '6 hours', '2 days', '1 week' for a TTL choice."""
    if hours % 168 == 0:
        weeks = hours // 168
        return f"{weeks} week" + ("s" if weeks > 1 else "")
    if hours % 24 == 0:
        days = hours // 24
        return f"{days} day" + ("s" if days > 1 else "")
    return f"{hours} hour" + ("s" if hours > 1 else "")


def ttl_choices() -> list[tuple[int, str]]:
    """(hours, label) from 1 hour to FILE_UPLOAD_MAX_TTL_HOURS."""
    limit = settings.FILE_UPLOAD_MAX_TTL_HOURS
    hours = sorted({h for h in TTL_STEPS if h <= limit} | {limit, settings.FILE_UPLOAD_TTL_HOURS})
    return [(h, ttl_label(h)) for h in hours]


class TokenForm(forms.Form):
    name = forms.CharField(max_length=100, required=False, help_text="What uses it, e.g. “nightly backup”.")


class EndpointForm(forms.Form):
    url = forms.URLField(label="URL", max_length=2000, assume_scheme="https", help_text="Where Doorito POSTs events.")
    description = forms.CharField(max_length=200, required=False)
    event_types = forms.MultipleChoiceField(
        label="Events",
        choices=[(name, f"{name}: {text}") for name, text in FILE_EVENT_TYPES.items()],
        widget=forms.CheckboxSelectMultiple,
        help_text="Only events about your own files are sent to your endpoints.",
    )


class ReplaySinceForm(forms.Form):
    since = forms.DateTimeField(
        label="Since (UTC)",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
        input_formats=["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M"],
    )
    include_delivered = forms.BooleanField(
        label="Delivered ones too (the receiver gets them again, with the same webhook-id)", required=False
    )
