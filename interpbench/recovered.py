"""Recovered programs of a run cell: loaded, described as text, and executed on new inputs.

A synthesis method saves its programs as JSON specs inside the cell's explanation.
`interpbench show CELL_DIR --input "..."` prints them and runs them on an input the user
types; the specs are interpreted by interpbench (tracr's RASP evaluator for whole
programs, the selector DSL for heads), never executed as code.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from interpbench.cell_files import cell_rows
from interpbench.errors import BadInputError
from interpbench.explanation import Explanation


@dataclasses.dataclass(frozen=True)
class CellView:
    """One finished cell of a run, as saved.

    Attributes:
        folder: The cell directory.
        meta: Its cell.json (case, method, seed, params, seconds, status).
        explanation: The saved explanation (None for a failed cell).
        rows: Its scored rows (empty for a failed cell).
    """

    folder: Path
    meta: dict[str, Any]
    explanation: Explanation | None
    rows: pd.DataFrame


def is_cell(path: Path) -> bool:
    """Whether `path` is a run cell directory (it holds cell.json)."""
    return (path / "cell.json").is_file()


def load_cell(folder: Path) -> CellView:
    """Reads a cell directory written by `interpbench run`.

    Raises:
        BadInputError: `folder` is not a finished cell.
    """
    if not is_cell(folder):
        raise BadInputError(f"{folder} is not a run cell (no cell.json); cells live under RUN/cells/SUITE__CASE/VARIANT/METHOD/seedN")
    try:
        meta = json.loads((folder / "cell.json").read_text())
    except json.JSONDecodeError as exc:
        raise BadInputError(f"{folder / 'cell.json'} is not valid JSON: {exc}") from None
    if meta.get("status") != "ok":
        return CellView(folder, meta, None, pd.DataFrame())
    explanation = Explanation.load(folder)
    rows = cell_rows(folder, meta)
    return CellView(folder, meta, explanation, rows)


def parse_input(text: str, vocab: Sequence[Any]) -> list[Any]:
    """Splits `text` on spaces or commas and maps each piece to the vocabulary value it names.

    Raises:
        BadInputError: A piece names no vocabulary value, or the input is empty.
    """
    by_text = {str(v): v for v in vocab}
    pieces = [p for p in re.split(r"[\s,]+", text.strip()) if p]
    if not pieces:
        raise BadInputError("the input is empty; give tokens separated by spaces or commas")
    unknown = [p for p in pieces if p not in by_text]
    if unknown:
        raise BadInputError(f"token {unknown[0]!r} is not in the vocabulary {[str(v) for v in vocab]}")
    return [by_text[p] for p in pieces]


def execute(explanation: Explanation, tokens: Sequence[Any]) -> dict[str, Any]:
    """Runs every recovered program of `explanation` on one input.

    Returns:
        {"output": [...]} for a whole program (None where the program is undefined), and
        {"heads": {head: matrix}} for head programs (row/column 0 is BOS).

    Raises:
        BadInputError: The explanation holds no executable program.
    """
    result: dict[str, Any] = {}
    if explanation.program is not None:
        from interpbench.rasp_spec import run_spec

        if explanation.program.get("output") is None:
            result["output"] = None
        else:
            result["output"] = list(run_spec(explanation.program, list(tokens)))
    if explanation.head_programs:
        from interpbench.selector_dsl import SelectorProgram, pattern

        heads = {}
        for name, spec in sorted(explanation.head_programs.items()):
            matrix = pattern(SelectorProgram.from_json(spec), [list(tokens)], len(tokens) + 1)[0]
            heads[name] = matrix
        result["heads"] = heads
    if not result:
        raise BadInputError("this cell holds no recovered program to run (only synthesis methods save programs)")
    return result


def _matrix_text(m: np.ndarray, labels: Sequence[str]) -> list[str]:
    width = max(5, *(len(s) for s in labels))
    lines = [" " * width + " " + " ".join(f"{s:>{width}}" for s in labels)]
    for label, row in zip(labels, m):
        lines.append(f"{label:>{width}} " + " ".join(f"{v:>{width}.2f}" for v in row))
    return lines


def execution_text(result: dict[str, Any], tokens: Sequence[Any]) -> str:
    """The result of `execute` as plain text."""
    lines = [f"input: {' '.join(str(t) for t in tokens)}"]
    if "output" in result:
        out = result["output"]
        lines.append("output: nothing (no program was found)" if out is None else
                     "output: " + " ".join("None" if v is None else str(v) for v in out))  # fmt: skip
    labels = ["BOS", *(str(t) for t in tokens)]
    for name, matrix in result.get("heads", {}).items():
        lines += ["", f"{name} attention (rows: queries, columns: keys):", *_matrix_text(np.asarray(matrix), labels)]
    return "\n".join(lines)


def cell_text(view: CellView) -> str:
    """Cell metadata, scores and the recovered program source as plain text."""
    m = view.meta
    lines = [f"{m.get('case')} / {m.get('variant')} / {m.get('method')} / seed {m.get('seed')}: {m.get('status')}"]
    if m.get("status") != "ok":
        lines.append(f"error: {m.get('error', 'unknown')}")
        return "\n".join(lines)
    lines.append(f"params: {json.dumps(m.get('params', {}), sort_keys=True, default=str)}")
    lines.append(f"seconds: {m.get('seconds', float('nan')):.2f}")
    if not view.rows.empty:
        lines += ["", "scores:"]
        for r in view.rows.itertuples():
            lines.append(f"  {r.metric:<22} {r.value:.4f}  [{r.ci_low:.4f}, {r.ci_high:.4f}]  n={r.n} undefined={r.n_undefined}")
    e = view.explanation
    assert e is not None
    search = e.diagnostics.get("search")
    if search:
        lines += ["", f"search: {json.dumps(search, sort_keys=True, default=str)}"]
    if e.source:
        lines += ["", "recovered program:", e.source.rstrip()]
    elif e.program is None and not e.head_programs:
        lines += ["", f"kinds: {', '.join(e.kinds)} (no recovered program)"]
    return "\n".join(lines)
