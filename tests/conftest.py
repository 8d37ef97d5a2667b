"""Shared test set-up: a persistent compile cache and a per-session compiled-case factory."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# Set before interpbench reads it, so compiled artefacts are reused across test runs.
if not os.environ.get("INTERPBENCH_CACHE"):
    os.environ["INTERPBENCH_CACHE"] = str(REPO / ".cache" / "test-cache")


@pytest.fixture(scope="session", autouse=True)
def one_thread() -> Iterator[None]:
    """The models are tiny: intra-op threads only spin (5-20x slower on 2 loaded cores)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def compiled() -> Callable[[str], object]:
    """`compiled("tracr_lib/reverse")` -> CompiledCase, compiled (or loaded) once per session."""
    from interpbench import get_case
    from interpbench.compiled import compile_case

    cache: dict[str, object] = {}

    def get(name: str) -> object:
        if name not in cache:
            cache[name] = compile_case(get_case(name))
        return cache[name]

    return get
