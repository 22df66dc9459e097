"""Setting value classes: each reads the environment variable of exactly its setting's name, and a malformed
value stops start-up with one line naming the variable."""

from __future__ import annotations

from typing import Any

from configurations import values
from django.core.exceptions import ImproperlyConfigured


class _NamedErrors:
    """Make a malformed environment value fail with the variable's name in the message."""

    def setup(self, name: str) -> Any:
        try:
            return super().setup(name)  # type: ignore[misc]
        except ValueError as exc:
            raise ImproperlyConfigured(f"{self.full_environ_name(name)}: {exc}") from None  # type: ignore[attr-defined]


class Env(_NamedErrors, values.Value):
    pass


class EnvInt(_NamedErrors, values.PositiveIntegerValue):
    pass


class EnvFloat(_NamedErrors, values.FloatValue):
    pass


class EnvBool(_NamedErrors, values.BooleanValue):
    pass


class EnvList(_NamedErrors, values.ListValue):
    pass


def setting(value_class: type, default: Any, **kwargs: Any) -> Any:
    """A setting read from the environment variable with exactly its own name."""
    return value_class(default, environ_prefix=None, **kwargs)
