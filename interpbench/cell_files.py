"""The files of one finished cell: its explanation and a cell.json holding status, hashes and scored rows.

A cell folder holds `explanation.npz` and `explanation.json` (what the method returned)
and `cell.json`, written last: the cell's identity, params, seconds, status, the sha256
of each explanation file, and the scored rows (one record per metric). Keeping the rows
in cell.json makes a finished cell one small JSON read and three writes; reading a
Parquet file per cell cost more than scoring it.

Cell files are renamed into place (atomic against a killed process) without an fsync
each: after a power loss a finished-looking cell could hold a stale or empty file, so
`verified` compares the recorded hashes and such a cell counts as unfinished and is run
again. Run format 1 kept the rows in `rows.parquet`; those folders still read.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from interpbench.explanation import Explanation
from interpbench.storage import atomic_write_json

EXPLANATION_FILES = ("explanation.npz", "explanation.json")
FLOAT_COLUMNS = ("value", "ci_low", "ci_high", "seconds", "zero_rows_share")
LEGACY_ROWS = "rows.parquet"  # run format 1


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def finite_or_none(x: float) -> float | None:
    """A float for strict JSON: NaN and infinities become None (null)."""
    x = float(x)
    return x if math.isfinite(x) else None


def records_to_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows from JSON records, with null read back as NaN in the float columns."""
    df = pd.DataFrame.from_records(records)
    for col in FLOAT_COLUMNS:
        if col in df.columns:
            df[col] = pd.to_numeric(df[col], errors="coerce").astype("float64")
    return df


def read_meta(folder: Path) -> dict[str, Any] | None:
    """The cell's cell.json, or None when it is missing or unreadable (an unfinished cell)."""
    try:
        meta = json.loads((folder / "cell.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return meta if isinstance(meta, dict) else None


def verified(folder: Path, meta: dict[str, Any]) -> bool:
    """Whether the explanation files match the hashes cell.json recorded (True when it recorded none)."""
    try:
        return all(file_sha256(folder / name) == digest for name, digest in meta.get("files", {}).items())
    except OSError:
        return False


def write_finished(
    folder: Path, meta: dict[str, Any], explanation: Explanation, rows: list[dict[str, Any]]
) -> dict[str, str]:
    """Saves the explanation, then cell.json with its hashes and `rows` (JSON records; the finishing write).

    Returns:
        The sha256 of each explanation file.
    """
    explanation.save(folder, durable=False)
    return write_meta(folder, meta, rows)


def write_meta(folder: Path, meta: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, str]:
    """(Re)writes cell.json for the explanation already in `folder`, with `rows` (JSON records) and the files' hashes."""
    files = {name: file_sha256(folder / name) for name in EXPLANATION_FILES}
    atomic_write_json(folder / "cell.json", {**meta, "files": files, "rows": rows}, durable=False, indent=None)
    (folder / LEGACY_ROWS).unlink(missing_ok=True)
    return files


def cell_rows(folder: Path, meta: dict[str, Any]) -> pd.DataFrame:
    """A finished cell's scored rows (from cell.json, or a format-1 cell's rows.parquet)."""
    if "rows" in meta:
        return records_to_frame(meta["rows"])
    legacy = folder / LEGACY_ROWS
    return pd.read_parquet(legacy) if legacy.exists() else pd.DataFrame()
