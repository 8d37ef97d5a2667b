"""Named registries with "did you mean" lookups, shared by cases, methods and metrics."""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from typing import Generic, TypeVar

from interpbench.errors import BadInputError, UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """An ordered name -> item map that refuses duplicates and suggests near names.

    Args:
        kind: What the registry holds ("case", "method", "metric"); used in messages.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def add(self, name: str, item: T, *, replace: bool = False) -> None:
        """Registers `item` under `name`; a second registration of a name is an error."""
        if name in self._items and not replace:
            raise BadInputError(f"{self.kind} {name!r} is registered twice")
        self._items[name] = item

    def get(self, name: str) -> T:
        """Returns the item named `name` or raises UnknownNameError with suggestions."""
        if name in self._items:
            return self._items[name]
        raise UnknownNameError(unknown_name_message(self.kind, name, list(self._items)))

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def items(self) -> list[tuple[str, T]]:
        """All (name, item) pairs in registration order."""
        return list(self._items.items())


def unknown_name_message(kind: str, name: str, known: list[str]) -> str:
    """One line naming the unknown `name` and the closest known names.

    Matching also tries the part after the last "/" so `reverse` suggests
    `tracr_lib/reverse`.
    """
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    tails = {k.rsplit("/", 1)[-1]: k for k in known}
    close += [tails[t] for t in difflib.get_close_matches(name, list(tails), n=3, cutoff=0.6)]
    close = list(dict.fromkeys(close))[:3]
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return f"unknown {kind} {name!r}{hint}"


def split_names(values: list[str] | None) -> list[str]:
    """Flattens repeatable, comma-separated CLI selections into a list of names."""
    out: list[str] = []
    for value in values or []:
        out.extend(v.strip() for v in value.split(",") if v.strip())
    return out
