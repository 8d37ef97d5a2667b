"""Re-scoring a run directory from its saved explanations and ground truth, without running a method.

Everything is read and scored first; only when every cell has been scored are the
cells' rows (in cell.json) replaced, so a damaged run directory is reported in one
line and left exactly as it was. A run-format-1 cell (rows in `rows.parquet`) is
rewritten in the current format.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from interpbench.compiled import CompiledCase
from interpbench.errors import BadInputError
from interpbench.explanation import Explanation
from interpbench.provenance import provenance
from interpbench.cell_files import cell_rows, write_meta
from interpbench.run import RUN_FORMAT, Cell, base_explanation, case_folder, collect_rows, score_explanation


def rescore(run_dir: Path) -> pd.DataFrame:
    """Recomputes every row of a run from what it saved, and returns all rows.

    Provenance columns are kept from the rows being replaced (the versions and commit
    that produced the explanation), so re-scoring an unchanged run reproduces its rows.

    Raises:
        BadInputError: `run_dir` is not a run directory, was written by a newer
            interpbench, or a saved file cannot be read (the message names it).
    """
    from interpbench.case import get_case
    from interpbench.method import get_method

    if not (run_dir / "cells").is_dir():
        raise BadInputError(f"{run_dir} is not a run directory (no cells/ folder)")
    spec = _read(run_dir / "run.json", lambda p: json.loads(p.read_text())) if (run_dir / "run.json").exists() else {}
    fmt = int(spec.get("format", 1))
    if fmt > RUN_FORMAT:
        raise BadInputError(f"{run_dir} has run format {fmt}; this interpbench reads up to {RUN_FORMAT}")
    current: tuple[tuple[str, str], CompiledCase] | None = None
    now = provenance()  # once: it reads package metadata and asks git
    scored: list[tuple[Path, dict[str, Any], list[dict[str, Any]]]] = []
    for meta_path in sorted((run_dir / "cells").glob("*/*/*/*/cell.json")):
        meta = _read(meta_path, lambda p: json.loads(p.read_text()))
        if meta.get("status") != "ok":
            continue
        folder = meta_path.parent
        cell = Cell(meta["case"], meta["variant"], meta["method"], int(meta["seed"]))
        if current is None or current[0] != (cell.case, cell.variant):
            case = get_case(cell.case)
            source = case_folder(run_dir, case, cell.variant)
            current = ((cell.case, cell.variant), _read(source, lambda p, c=case: CompiledCase.load(c, p)))
        explanation = _read(folder, Explanation.load)
        old = _read(folder / "cell.json", lambda _p, f=folder, m=meta: cell_rows(f, m))
        info: dict[str, Any] = {k: old[k].iloc[0] for k in now if k in old.columns and len(old)} or now
        base = _read(folder, lambda _p, c=cell: base_explanation(c, run_dir))
        rows = score_explanation(explanation, current[1], cell, get_method(cell.method), meta["params"],
                                 meta["seconds"], info, base)  # fmt: skip
        scored.append((folder, meta, rows))
    for folder, meta, rows in scored:
        write_meta(folder, {k: v for k, v in meta.items() if k not in ("rows", "files")}, rows)
    return collect_rows(run_dir)


def _read(path: Path, load: Any) -> Any:
    """`load(path)`, with any failure to read saved artefacts turned into one line naming `path`."""
    try:
        return load(path)
    except BadInputError:
        raise
    except Exception as exc:  # noqa: BLE001 - a damaged file of any kind is bad input
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise BadInputError(f"{path}: cannot be read ({type(exc).__name__}: {first})") from None
