"""Setting checks shared by the method adapters: each raises BadInputError naming the setting."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from interpbench.errors import BadInputError


def require_choice(settings: dict[str, Any], key: str, choices: Sequence[Any]) -> None:
    """Raises BadInputError unless `settings[key]` is one of `choices`."""
    if settings[key] not in choices:
        raise BadInputError(f"{key} must be one of {tuple(choices)}, got {settings[key]!r}")


def require_at_least_one(settings: dict[str, Any], *keys: str) -> None:
    """Raises BadInputError unless `int(settings[key]) >= 1` for every key."""
    for key in keys:
        if int(settings[key]) < 1:
            raise BadInputError(f"{key} must be at least 1, got {settings[key]}")


def require_positive_int(settings: dict[str, Any], *keys: str) -> None:
    """Raises BadInputError unless every `settings[key]` is an int (not a bool) of at least 1."""
    for key in keys:
        value = settings[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise BadInputError(f"{key} must be a positive integer, got {value!r}")
