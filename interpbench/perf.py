"""Speed figures (`interpbench perf`): a registry of named measurements, each checked against a target.

A figure is a function decorated with `@figure(name, target=, unit=, higher_is_better=)`
that returns its measured value and details. Ratios are measured side by side in one
process (`time_pair`): both sides run interleaved on the same inputs and the best of k
repetitions of each is compared, after one untimed warm-up call of each side (which
also triggers any JIT compilation). Figures live in `interpbench/perf_*.py` modules,
found and imported by `load_figures`, so a later part adds a figure (harness overhead,
`make bench` wall time, peak memory, executor speed-ups, scaling) by adding a module;
`results/perf.json` is a list of records keyed by `name`, and `write_perf(merge=True)`
replaces records by name while keeping the others.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import pkgutil
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from interpbench.errors import BadInputError
from interpbench.registry import Registry

Measure = Callable[[bool], tuple[float, dict[str, Any]]]


@dataclasses.dataclass(frozen=True)
class FigureSpec:
    """A registered figure: how to measure it and what it should reach.

    Attributes:
        name: Stable identifier (the key in perf.json).
        measure: `measure(quick) -> (value, details)`; `quick` asks for a tiny setting.
        target: The value to reach; None for a figure that is reported without a target
            (e.g. a scaling table).
        unit: Unit of the value ("x" for a speed ratio, "s", "GB", "%").
        higher_is_better: Whether `value >= target` (True) or `value <= target` (False) meets it.
        description: One line saying what is measured against what.
    """

    name: str
    measure: Measure
    target: float | None
    unit: str
    higher_is_better: bool
    description: str


@dataclasses.dataclass(frozen=True)
class Figure:
    """One measured figure, as written to perf.json.

    Attributes:
        name: The figure's name.
        value: The measured value; None when the measurement failed (details say why).
        target: The value to reach (None: reported without a target).
        unit: Unit of value and target.
        higher_is_better: Direction of the target.
        met: Whether the value reaches the target (False when there is no value; None when
            there is no target).
        details: Sizes, repetitions, cases used, side timings, and `error` on failure.
    """

    name: str
    value: float | None
    target: float | None
    unit: str
    higher_is_better: bool
    met: bool | None
    details: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        """The perf.json record."""
        return dataclasses.asdict(self)

    def table_row(self) -> list[str]:
        """[figure, value, target, unit, met] as printed by `interpbench perf`."""
        value = f"{self.value:.4g}" if self.value is not None else "error"
        if self.target is None:
            return [self.name, value, "(reported)", self.unit, "-"]
        target = f"{'>=' if self.higher_is_better else '<='} {self.target:g}"
        return [self.name, value, target, self.unit, "yes" if self.met else "NO"]


def meets(value: float | None, target: float | None, higher_is_better: bool) -> bool | None:
    """Whether `value` reaches `target` in the figure's direction (None and NaN never do; no target: None)."""
    if target is None:
        return None
    if value is None or math.isnan(value):
        return False
    return value >= target if higher_is_better else value <= target


FIGURES: Registry[FigureSpec] = Registry("perf figure")


def figure(
    name: str, *, target: float | None, unit: str, higher_is_better: bool, description: str = ""
) -> Callable[[Measure], Measure]:
    """Decorator registering `measure(quick) -> (value, details)` as the figure `name`.

    Example:
        @figure("forward_vs_tracr_apply", target=1000, unit="x", higher_is_better=True)
        def forward_vs_tracr_apply(quick: bool) -> tuple[float, dict]:
            ...
    """

    def register(fn: Measure) -> Measure:
        doc = description or (fn.__doc__ or "").strip().split("\n")[0]
        FIGURES.add(name, FigureSpec(name, fn, None if target is None else float(target), unit, higher_is_better, doc))
        return fn

    return register


def load_figures() -> list[FigureSpec]:
    """Imports every `interpbench.perf_*` module (each registers its figures) and lists them all."""
    import interpbench

    for info in sorted(pkgutil.iter_modules(interpbench.__path__), key=lambda i: i.name):
        if info.name.startswith("perf_"):
            importlib.import_module(f"interpbench.{info.name}")
    return [spec for _, spec in FIGURES.items()]


def select_figures(names: Sequence[str] | None = None) -> list[FigureSpec]:
    """The registered figures named in `names` (all when None), with "did you mean" for unknown names.

    Raises:
        UnknownNameError: A name is not registered (checked before anything is measured).
    """
    specs = load_figures()
    if not names:
        return specs
    return [FIGURES.get(n) for n in dict.fromkeys(names)]


def measure_figure(spec: FigureSpec, quick: bool = False) -> Figure:
    """Runs one figure; a failure becomes a Figure with no value and the error in its details."""
    try:
        value, details = spec.measure(quick)
        value = float(value)
    except Exception as exc:  # a broken figure must not hide the others
        last = traceback.extract_tb(exc.__traceback__)[-1]
        details = {"error": f"{type(exc).__name__}: {exc} ({Path(last.filename).name}:{last.lineno})"}
        value = None
    if value is not None and math.isnan(value):
        value = None
    import torch

    details = {"description": spec.description, "quick": quick, "torch_threads": torch.get_num_threads(), **details}
    return Figure(spec.name, value, spec.target, spec.unit, spec.higher_is_better,
                  meets(value, spec.target, spec.higher_is_better), details)  # fmt: skip


def run_perf(
    names: Sequence[str] | None = None,
    quick: bool = False,
    on_figure: Callable[[Figure], None] | None = None,
) -> list[Figure]:
    """Measures the named figures (all when None), one after another.

    Args:
        names: Figure names; unknown names raise UnknownNameError before any measurement.
        quick: Tiny settings (one small case, a few inputs, one repetition): for tests.
        on_figure: Called with each figure as soon as it is measured.

    Returns:
        The figures, in registration order (or the order of `names`).
    """
    import torch

    specs = select_figures(names)
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # as the harness runs (run.run_grid): the models are tiny
    try:
        figures = []
        for spec in specs:
            fig = measure_figure(spec, quick)
            figures.append(fig)
            if on_figure is not None:
                on_figure(fig)
        return figures
    finally:
        torch.set_num_threads(before)


def write_perf(figures: Sequence[Figure], path: Path, *, merge: bool = False) -> Path:
    """Atomically writes perf.json: a list of figure records.

    Args:
        figures: The figures to write.
        path: Target file.
        merge: Keep the records of an existing file whose names are not among `figures`
            (records with the same name are replaced in place; new ones are appended).

    Raises:
        BadInputError: `merge` is set and the existing file is not a perf.json list.
    """
    import json

    from interpbench.storage import atomic_write_json

    path = Path(path)
    records = [f.to_json() for f in figures]
    if merge and path.exists():
        try:
            old = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise BadInputError(f"{path} is not readable JSON: {exc}") from None
        if not isinstance(old, list) or not all(isinstance(r, dict) and "name" in r for r in old):
            raise BadInputError(f"{path} is not a perf.json list of figures")
        new = {r["name"]: r for r in records}
        merged = [new.pop(r["name"], r) for r in old]
        records = merged + list(new.values())
    atomic_write_json(path, records)
    return path


def best_time(fn: Callable[[], Any], number: int = 1) -> float:
    """Seconds per call of `fn`, timing `number` back-to-back calls once."""
    start = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - start) / number


def best_of(fn: Callable[[], Any], repeats: int) -> float:
    """Seconds of one call of `fn`: one untimed warm-up call, then the best of `repeats` timed calls."""
    fn()
    return min(best_time(fn) for _ in range(repeats))


def time_pair(
    fast: Callable[[], Any],
    slow: Callable[[], Any],
    *,
    repeats: int,
    fast_number: int = 1,
    slow_number: int = 1,
    warm_slow: bool = True,
) -> dict[str, Any]:
    """Times two ways of computing the same thing, interleaved, best of `repeats` each.

    Each side is called once untimed first (warm-up: JIT compiles, caches, allocator);
    `warm_slow=False` skips the slow side's call when the caller has just run it on the
    same inputs (e.g. to check its numbers). Then each repetition times `slow_number` calls of `slow` and `fast_number` calls of
    `fast`, back to back, so both sides see the same machine load.

    Returns:
        `ratio` (best slow seconds per call / best fast seconds per call), the best
        seconds per call of each side, and the counts used.
    """
    fast()
    if warm_slow:
        slow()
    t_fast, t_slow = math.inf, math.inf
    for _ in range(repeats):
        t_slow = min(t_slow, best_time(slow, slow_number))
        t_fast = min(t_fast, best_time(fast, fast_number))
    return {
        "ratio": t_slow / t_fast,
        "fast_seconds": t_fast,
        "slow_seconds": t_slow,
        "repeats": repeats,
        "fast_calls_per_repeat": fast_number,
        "slow_calls_per_repeat": slow_number,
        "warmup_calls": {"fast": 1, "slow": 1 if warm_slow else 0},
    }
