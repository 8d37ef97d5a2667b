"""Leaderboard comparison: what moved between two leaderboards, and whether anything regressed.

`interpbench compare OLD NEW` is the command a method author puts in CI: it reads two
leaderboards (long Parquet or wide CSV, in any mix), matches rows by (suite, case,
variant, method, seed, metric), and calls a row regressed when its value moved in the
metric's worse direction by more than the tolerance, turned from a number into NaN, or
disappeared.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd

from interpbench.errors import BadInputError

KEY = ["suite", "case", "variant", "method", "seed", "metric"]
WIDE_SUFFIXES = ("_ci_low", "_ci_high", "_n_undefined")
WIDE_EXTRA = {"seconds", "zero_rows_share", "family"}
STATUSES = ("regressed", "improved", "unchanged", "added", "removed")


@dataclasses.dataclass(frozen=True)
class Comparison:
    """Row-by-row comparison of two leaderboards.

    Attributes:
        rows: One row per key in either table: KEY columns, `old`, `new`, `delta`
            (new - old), `higher_is_better` and `status` (one of STATUSES).
        tolerance: Absolute change below which a value counts as unchanged.
    """

    rows: pd.DataFrame
    tolerance: float

    @property
    def regressed(self) -> pd.DataFrame:
        """Rows that got worse, or went missing from the new leaderboard: what fails CI."""
        return self.rows[self.rows["status"].isin(["regressed", "removed"])]

    @property
    def moved(self) -> pd.DataFrame:
        """Every row whose status is not `unchanged`."""
        return self.rows[self.rows["status"] != "unchanged"]

    def summary(self) -> pd.DataFrame:
        """Per method and metric: how many rows regressed, improved, stayed, appeared or vanished."""
        counts = self.rows.groupby(["method", "metric", "status"]).size().unstack("status", fill_value=0)
        for s in STATUSES:
            if s not in counts.columns:
                counts[s] = 0
        return counts[list(STATUSES)].reset_index()


def read_long(path: Path) -> pd.DataFrame:
    """A leaderboard as long rows (KEY + value + higher_is_better), from Parquet or the wide CSV.

    Raises:
        BadInputError: The file is missing, unreadable or not a leaderboard.
    """
    if not path.is_file():
        raise BadInputError(f"{path} does not exist (give a leaderboard .parquet or .csv)")
    try:
        table = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    except Exception as exc:  # noqa: BLE001 - any reader failure is bad input, reported in one line
        raise BadInputError(f"{path} is not a readable leaderboard: {type(exc).__name__}") from None
    if {"metric", "value"} <= set(table.columns):
        long = table
    else:
        long = _melt_wide(table, path)
    missing = [c for c in KEY + ["value"] if c not in long.columns]
    if missing:
        raise BadInputError(f"{path} is not a leaderboard: no column {missing[0]!r}")
    if "higher_is_better" not in long.columns:
        long = long.assign(higher_is_better=long["metric"].map(_direction))
    out = long[KEY + ["value", "higher_is_better"]].copy()
    out["seed"] = out["seed"].astype(int)
    if out.duplicated(KEY).any():
        raise BadInputError(f"{path} has more than one row for some (suite, case, variant, method, seed, metric)")
    return out


def _melt_wide(table: pd.DataFrame, path: Path) -> pd.DataFrame:
    ids = [c for c in ("suite", "case", "variant", "method", "family", "seed") if c in table.columns]
    metrics = [c for c in table.columns
               if c not in ids and c not in WIDE_EXTRA and not c.endswith(WIDE_SUFFIXES)]  # fmt: skip
    if not metrics:
        raise BadInputError(f"{path} is not a leaderboard: no metric columns")
    long = table.melt(id_vars=ids, value_vars=metrics, var_name="metric", value_name="value")
    # A wide CSV leaves a metric empty where it does not apply to the method (program metrics
    # for attention methods): such a cell is no row. A scored metric always has its
    # `m_n_undefined` count, even when its value is NaN (every row undefined).
    counts = [f"{m}_n_undefined" for m in metrics]
    if all(c in table.columns for c in counts):
        scored = table.melt(id_vars=ids, value_vars=counts, var_name="metric", value_name="n_undefined")
        long = long[scored["n_undefined"].notna().to_numpy()]
    return long


def _direction(metric: str) -> bool:
    from interpbench.metrics import get_metric

    return get_metric(metric).higher_is_better


def compare(old: pd.DataFrame, new: pd.DataFrame, *, tolerance: float = 1e-6) -> Comparison:
    """Compares two long leaderboards (as returned by `read_long`).

    A row regresses when its value moves in the worse direction by more than `tolerance`
    (default 1e-6: the wide CSV keeps 6 significant digits, so a CSV and the Parquet of
    one run compare equal),
    when a number becomes NaN, or when the row is missing from `new`. NaN in both is
    unchanged; a NaN becoming a number is an improvement.
    """
    if tolerance < 0 or not np.isfinite(tolerance):
        raise BadInputError(f"tolerance must be a finite number >= 0, got {tolerance}")
    merged = old.merge(new, on=KEY, how="outer", suffixes=("_old", "_new"), indicator=True)
    higher = merged["higher_is_better_new"].where(merged["higher_is_better_new"].notna(), merged["higher_is_better_old"])
    a, b = merged["value_old"].astype(float), merged["value_new"].astype(float)
    gain = np.where(higher.astype(bool), b - a, a - b)
    status = np.select(
        [merged["_merge"] == "left_only", merged["_merge"] == "right_only",
         a.isna() & b.isna(), a.notna() & b.isna(), a.isna() & b.notna(),
         gain < -tolerance, gain > tolerance],
        ["removed", "added", "unchanged", "regressed", "improved", "regressed", "improved"],
        default="unchanged",
    )  # fmt: skip
    rows = merged[KEY].assign(old=a, new=b, delta=b - a, higher_is_better=higher.astype(bool), status=status)
    return Comparison(rows.sort_values(KEY).reset_index(drop=True), tolerance)
