"""Runs: a grid of cells (case x variant x method x seed), each saved then scored, resumable.

Run directory layout (all open formats, no pickles):
    run.json                                  grid spec, versions, created_at
    cases/{suite}__{case}/                    compiled artefacts + ground truth (see export)
    cases/{suite}__{case}/twins/{variant}/    the same for each adversarial twin
    cells/{suite}__{case}/{variant}/{method}/seed{n}/
        explanation.npz, explanation.json     what the method returned
        cell.json                             params, seconds, status (written last):
                                              ok, failed (with error) or not_applicable
                                              (a twin that does not apply to the case);
                                              the explanation files' hashes and the scored
                                              rows (interpbench.cell_files)
    .locks/{suite}__{case}.lock               lets one process at a time compile and save a case

Cells run in this process or in parallel (interpbench.executors); either way each cell
is written the same way, so a run started with one executor can be resumed with another.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from interpbench.case import Case
from interpbench.cell_files import cell_rows, finite_or_none, read_meta, records_to_frame, verified, write_finished
from interpbench.compiled import CompiledCase, zero_row_share
from interpbench.errors import BadInputError
from interpbench.explanation import Explanation
from interpbench.method import Method
from interpbench.metrics import aggregate, applicable
from interpbench.provenance import provenance
from interpbench.run_models import BASE, CaseModels, case_folder  # noqa: F401 - case_folder: part of this module's API
from interpbench.storage import atomic_write_json
from interpbench.twins import get_twin, list_twins

if TYPE_CHECKING:
    from interpbench.executors import Executor

RUN_FORMAT = 2  # 2: rows and file hashes in cell.json (1: rows.parquet per cell)
BEHAVIOUR_ONLY = ("behaviour-only method: this twin computes the base model's function on all token inputs, "
                  "so its explanation cannot move")  # fmt: skip


def known_variants() -> list[str]:
    """`base` and every registered twin, in registration order."""
    return [BASE, *(t.name for t in list_twins())]


def expand_variants(names: Sequence[str]) -> list[str]:
    """Variant names with `all` expanded to every known variant (order kept, no repeats)."""
    out: list[str] = []
    for n in names:
        out += known_variants() if n == "all" else [n]
    return list(dict.fromkeys(out))


@dataclasses.dataclass(frozen=True)
class Cell:
    """One unit of work: explain one case variant with one method under one seed."""

    case: str
    variant: str
    method: str
    seed: int

    def folder(self, run_dir: Path) -> Path:
        """Where the cell's explanation, rows and status live inside `run_dir`."""
        suite, name = self.case.split("/", 1)
        return run_dir / "cells" / f"{suite}__{name}" / self.variant / self.method / f"seed{self.seed}"


def plan(cases: Sequence[Case], methods: Sequence[type[Method]], variants: Sequence[str], seeds: Sequence[int]) -> list[Cell]:
    """The grid in a stable order: case-major (each case is compiled once), base before twins."""
    known = known_variants()
    for v in variants:
        if v not in known:
            from interpbench.registry import unknown_name_message

            raise BadInputError(unknown_name_message("variant", v, known))
    variants = sorted(dict.fromkeys(variants), key=known.index)
    return [Cell(c.full_name, v, m.name, s) for c in cases for v in variants for m in methods for s in seeds]


def score_explanation(
    explanation: Explanation, compiled: CompiledCase, cell: Cell, method_cls: type[Method], params: dict[str, Any],
    seconds: float, info: dict[str, Any], base: Explanation | None = None,
) -> list[dict[str, Any]]:
    """Long-format rows, one per applicable metric, with provenance, as JSON records (NaN as None).

    Twin-level metrics (e.g. `twin_consistency`) compare the explanation of a twin with
    `base`, the same method's explanation of the base model under the same seed; they
    are scored only when that base explanation exists, and never for methods that do
    not read the model (baselines: consistent by construction). `cell_files.records_to_frame`
    turns the records into a DataFrame.
    """
    common = {
        "suite": compiled.case.suite, "case": compiled.case.name, "variant": cell.variant, "method": cell.method,
        "family": method_cls.family, "seconds": finite_or_none(seconds), "seed": cell.seed,
        "params": json.dumps(params, sort_keys=True, default=str),
        "zero_rows_share": finite_or_none(zero_rows_share(explanation, compiled)),
    }  # fmt: skip
    rows = []
    for m in applicable(explanation):
        if m.level == "twin" and (base is None or not method_cls.reads_model):
            continue
        scores = m.fn(explanation, compiled, base) if m.level == "twin" else m.fn(explanation, compiled)
        s = aggregate(scores, seed=cell.seed)
        rows.append({
            **common, "metric": m.name, "level": m.level, "higher_is_better": m.higher_is_better,
            "value": finite_or_none(s.value), "ci_low": finite_or_none(s.ci_low), "ci_high": finite_or_none(s.ci_high),
            "n": s.n, "n_undefined": s.n_undefined, **info,
        })  # fmt: skip
    return rows


def zero_rows_share(explanation: Explanation, compiled: CompiledCase) -> float:
    """The leaderboard's `zero_rows_share` column (NaN for explanations without token relevance)."""
    r = explanation.token_relevance
    return float("nan") if r is None else zero_row_share(compiled, np.asarray(r))


def run_cell(
    cell: Cell, compiled: CompiledCase, method_cls: type[Method], run_dir: Path, info: dict[str, Any]
) -> list[dict[str, Any]]:
    """Explains (or reuses a cached explanation with the same content key), scores, and saves the cell.

    cell.json, holding the rows, is written last: a cell without it is unfinished.
    """
    from interpbench import cell_cache

    folder = cell.folder(run_dir)
    if folder.exists():
        shutil.rmtree(folder)  # unfinished leftovers of an interrupted run
    folder.mkdir(parents=True)
    instance = method_cls()
    params = instance.params()
    key = cell_cache.cell_key(compiled, cell.variant, method_cls, params, cell.seed)
    hit = cell_cache.lookup(cell.method, key) if cell_cache.reuse_enabled() else None
    if hit is None:
        start = time.perf_counter()
        explanation = instance.explain(compiled, seed=cell.seed)
        seconds = time.perf_counter() - start
    else:
        explanation, seconds = hit
    rows = score_explanation(explanation, compiled, cell, method_cls, params, seconds, info, base_explanation(cell, run_dir))
    files = write_finished(folder, {
        **dataclasses.asdict(cell), "family": method_cls.family, "method_version": method_cls.version,
        "params": params, "seconds": seconds, "status": "ok", "case_key": compiled.key, "cell_key": key,
        "reused": hit is not None,
    }, explanation, rows)  # fmt: skip
    if hit is None:
        cell_cache.store(cell.method, key, folder, seconds, files)
    if cell.variant == BASE:  # its twins, later in this process, compare with it
        _BASES[folder] = (files, explanation)
        while len(_BASES) > BASES_KEPT:
            _BASES.pop(next(iter(_BASES)))
    return rows


BASES_KEPT = 64  # a case's base explanations, one per method: its twin cells follow them
_BASES: dict[Path, tuple[dict[str, str], Explanation]] = {}


def base_explanation(cell: Cell, run_dir: Path) -> Explanation | None:
    """The same method's saved explanation of the base model (same case and seed), for a twin cell."""
    if cell.variant == BASE:
        return None
    folder = dataclasses.replace(cell, variant=BASE).folder(run_dir)
    meta = read_meta(folder)
    if meta is None or meta.get("status") != "ok":
        return None
    kept = _BASES.get(folder)
    if kept is not None and kept[0] == meta.get("files"):
        return kept[1]  # the one this process wrote there (the same files)
    return Explanation.load(folder)


def is_done(cell: Cell, run_dir: Path, *, verify: bool = False) -> bool:
    """A cell is finished once its cell.json (written last) says ok, failed or not_applicable.

    `verify` also checks the explanation files against the hashes cell.json recorded
    (resuming a run: a cell damaged by a power loss counts as unfinished).
    """
    folder = cell.folder(run_dir)
    meta = read_meta(folder)
    if meta is None or meta.get("status") not in ("ok", "failed", "not_applicable"):
        return False
    return not verify or verified(folder, meta)


def run_grid(
    cases: Sequence[Case],
    methods: Sequence[type[Method]],
    run_dir: Path,
    *,
    variants: Sequence[str] = ("base",),
    seeds: Sequence[int] = (0,),
    on_progress: Callable[[str], None] | None = None,
    executor: Executor | None = None,
) -> pd.DataFrame:
    """Runs every cell not already finished in `run_dir` and returns all rows of the run.

    `executor` (default: serial, in this process) decides where cells run; every
    executor writes the same cells and rows. `on_progress` is called once per cell
    with a label naming it.
    """
    from interpbench.executors import SERIAL, check_registered, groups_of, open_executor

    executor = executor or SERIAL
    cells = plan(cases, methods, variants, seeds)
    pending = [c for c in cells if not is_done(c, run_dir, verify=True)]
    if executor.kind == "local" and min(executor.jobs, len(groups_of(pending))) <= 1:
        executor = SERIAL  # nothing to spread: spare the worker start-up
    if executor.kind == "serial":
        run_serial(cells, cases, methods, run_dir, _start(run_dir, cells), on_progress)
        return collect_rows(run_dir)
    check_registered(cases, methods)
    with open_executor(executor) as run_cells:
        info = _start(run_dir, cells)
        if on_progress:  # cells finished before this call count as progress too
            for cell in set(cells) - set(pending):
                on_progress(cell_label(cell))
        run_cells(pending, run_dir.resolve(), info, on_progress)
    return collect_rows(run_dir)


def _start(run_dir: Path, cells: Sequence[Cell]) -> dict[str, Any]:
    """Creates the run directory and its run.json (once); returns the provenance every row carries."""
    run_dir.mkdir(parents=True, exist_ok=True)
    info = provenance()
    spec_path = run_dir / "run.json"
    if not spec_path.exists():
        atomic_write_json(spec_path, {
            "format": RUN_FORMAT, "cells": [dataclasses.asdict(c) for c in cells], "created_at": info["created_at"],
        })  # fmt: skip
    return info


def run_serial(
    cells: Sequence[Cell], cases: Sequence[Case], methods: Sequence[type[Method]], run_dir: Path,
    info: dict[str, Any], on_progress: Callable[[str], None] | None = None,
) -> CaseModels:
    """Runs `cells` one after the other in this process (methods need not be registered).

    Returns:
        The models used, whose `build_seconds` says how long compiling and twin building took.
    """
    import torch

    # The models are tiny: intra-op threads only spin; parallelism belongs to processes.
    torch.set_num_threads(1)
    by_name = {c.full_name: c for c in cases}
    method_by_name = {m.name: m for m in methods}
    models = CaseModels(run_dir)
    for cell in cells:
        if on_progress:
            on_progress(cell_label(cell))
        run_pending_cell(cell, by_name[cell.case], method_by_name[cell.method], models, run_dir, info)
    return models


def cell_label(cell: Cell) -> str:
    """How progress names a cell."""
    return f"{cell.case} {cell.variant} {cell.method}"


def run_pending_cell(
    cell: Cell, case: Case, method_cls: type[Method], models: CaseModels, run_dir: Path, info: dict[str, Any]
) -> None:
    """Runs one cell unless it is finished; records it not applicable or failed instead where so."""
    if is_done(cell, run_dir, verify=True):
        return
    if cell.variant != BASE and method_cls.behaviour_only and get_twin(cell.variant).everywhere:
        record_status(cell, run_dir, "not_applicable", reason=BEHAVIOUR_ONLY)
        return
    try:
        compiled = models.get(case, cell.variant)
        if isinstance(compiled, str):
            record_status(cell, run_dir, "not_applicable", reason=compiled)
            return
        run_cell(cell, compiled, method_cls, run_dir, info)
    except Exception as exc:  # one broken method or case must not stop the grid
        record_failure(cell, run_dir, exc)


def record_failure(cell: Cell, run_dir: Path, exc: BaseException) -> None:
    """Marks a cell failed with a one-line reason; its explanation and rows are discarded."""
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    record_status(cell, run_dir, "failed", error=f"{type(exc).__name__}: {msg}")


def record_status(cell: Cell, run_dir: Path, status: str, **fields: str) -> None:
    """Marks a cell finished without rows (`failed` or `not_applicable`), discarding leftovers."""
    folder = cell.folder(run_dir)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    atomic_write_json(folder / "cell.json", {**dataclasses.asdict(cell), "status": status, **fields}, durable=False)


def cell_metas(run_dir: Path) -> list[tuple[Path, dict[str, Any]]]:
    """(folder, cell.json) of every cell of a run with a readable cell.json, in path order."""
    out = []
    for path in sorted((run_dir / "cells").glob("*/*/*/*/cell.json")):
        meta = read_meta(path.parent)
        if meta is not None:
            out.append((path.parent, meta))
    return out


def collect_failures(run_dir: Path, status: str = "failed") -> list[dict[str, Any]]:
    """Every cell of a run with `status` (default: failed, with its `error`)."""
    return [meta for _, meta in cell_metas(run_dir) if meta.get("status") == status]


def collect_rows(run_dir: Path) -> pd.DataFrame:
    """All scored rows of finished cells, in a stable order."""
    records, legacy = [], []
    for folder, meta in cell_metas(run_dir):
        if meta.get("status") != "ok":
            continue
        if "rows" in meta:
            records += meta["rows"]
        else:
            legacy.append(cell_rows(folder, meta))
    frames = [f for f in [records_to_frame(records) if records else None, *legacy] if f is not None and len(f)]
    if not frames:
        return pd.DataFrame()
    df = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    return df.sort_values(["suite", "case", "variant", "method", "seed", "metric"], kind="stable").reset_index(drop=True)


def default_run_dir() -> Path:
    """results/runs/<UTC timestamp>."""
    return Path("results") / "runs" / dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
