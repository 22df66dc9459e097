"""Small polling helpers for the operations tests."""

from __future__ import annotations

import time


def wait_until(predicate, timeout: float, what: str, interval: float = 0.2):
    """Return the first truthy value of predicate(), or fail after `timeout` seconds naming `what`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
