from __future__ import annotations

import pytest

from tests.outbox.receiver import Receiver


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def fast_retries(settings):
    """A short retry schedule without jitter, so retry tests take seconds."""
    settings.OUTBOX_RETRY_SCHEDULE = [1, 1, 1]
    settings.OUTBOX_RETRY_JITTER = 0.0
    return settings


@pytest.fixture
def no_allowlist(settings):
    """The production default: no network opted back in, so loopback receivers are refused too."""
    settings.WEBHOOK_ALLOWED_NETWORKS = []
    return settings
