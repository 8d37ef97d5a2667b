"""The compiled models of the case a run is on, saved into the run once even when several processes share it."""

from __future__ import annotations

import contextlib
import fcntl
import time
from collections.abc import Iterator
from pathlib import Path

from interpbench.case import Case
from interpbench.compiled import CompiledCase, compile_case

BASE = "base"


def case_folder(run_dir: Path, case: Case, variant: str = BASE) -> Path:
    """Where a run keeps a case's (or one of its twins') compiled artefacts and ground truth."""
    folder = run_dir / "cases" / f"{case.suite}__{case.name}"
    return folder if variant == BASE else folder / "twins" / variant


@contextlib.contextmanager
def case_lock(run_dir: Path, case: Case) -> Iterator[None]:
    """Holds an exclusive lock on `case` within `run_dir` (other processes wait).

    Worker processes of one run may start cells of the same case at once: the lock makes
    the first compile the case (filling the content cache) and save its folders while the
    others wait, then load what it wrote, so no two processes write the same files.
    """
    locks = run_dir / ".locks"
    locks.mkdir(parents=True, exist_ok=True)
    with open(locks / f"{case.suite}__{case.name}.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class CaseModels:
    """The compiled case and its twins for the case being run (one case in memory at a time).

    A twin is built from the base model on first use, verified, and saved next to the
    base artefacts; a twin that does not apply to the case is remembered as its reason,
    and a case or twin that fails to build is remembered as its error (raised again on
    each later request instead of being rebuilt).

    Attributes:
        build_seconds: Total seconds spent compiling (or loading) cases, building twins and
            saving their folders, waits for other processes' locks included.
    """

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.case: str | None = None
        self.models: dict[str, CompiledCase | str | Exception] = {}
        self.build_seconds = 0.0

    def get(self, case: Case, variant: str) -> CompiledCase | str:
        """The compiled variant of `case`, or the reason the twin does not apply.

        Raises:
            Exception: whatever compiling the case or building the twin raised.
        """
        if case.full_name != self.case:
            self.case, self.models = case.full_name, {}
        if BASE not in self.models:
            self._build(case, BASE)
        if variant not in self.models:
            self._build(case, variant)
        model = self.models[BASE] if isinstance(self.models[BASE], Exception) else self.models[variant]
        if isinstance(model, Exception):
            raise model
        return model

    def _build(self, case: Case, variant: str) -> None:
        from interpbench.twins import TwinNotApplicable, make_twin

        start = time.perf_counter()
        try:
            with case_lock(self.run_dir, case):
                if variant == BASE:
                    self.models[BASE] = self._saved(compile_case(case), BASE)
                    return
                base = self.models[BASE]
                if isinstance(base, CompiledCase):
                    self.models[variant] = self._saved(make_twin(base, variant), variant)
        except TwinNotApplicable as exc:
            self.models[variant] = str(exc)
        except Exception as exc:  # remembered: a broken case is not rebuilt for every cell
            self.models[variant] = exc
        finally:
            self.build_seconds += time.perf_counter() - start

    def _saved(self, compiled: CompiledCase, variant: str) -> CompiledCase:
        folder = case_folder(self.run_dir, compiled.case, variant)
        if not (folder / "manifest.json").exists():
            compiled.save(folder, durable=False)  # hash-checked on load (CompiledCase.load)
        return compiled
