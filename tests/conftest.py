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
# Tests check what methods compute now: explanations cached by earlier runs are not reused
# (tests/test_cell_cache.py turns reuse on where it is the subject).
os.environ.setdefault("INTERPBENCH_REUSE", "0")


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


class _Forbidden:
    """Stands in for what a method must not read: any use fails the test."""

    def __init__(self, what: str) -> None:
        self.what = what

    def __getattr__(self, name: str) -> object:
        raise AssertionError(f"the method read {self.what}.{name}")

    def __call__(self, *args: object, **kwargs: object) -> object:
        raise AssertionError(f"the method called {self.what}()")


@pytest.fixture(scope="session")
def blind() -> Callable[[object], object]:
    """`blind(compiled_case)`: the same case with its ground truth and true program poisoned.

    Methods see the model only; a method that reads `compiled.truth` or builds the case's
    RASP program (`compiled.case.program()`) fails the test that uses this.
    """
    import dataclasses

    def poison(cc: object) -> object:
        case = dataclasses.replace(cc.case, program=_Forbidden("case.program"))  # type: ignore[attr-defined]
        return dataclasses.replace(cc, truth=_Forbidden("compiled.truth"), case=case)  # type: ignore[type-var]

    return poison
