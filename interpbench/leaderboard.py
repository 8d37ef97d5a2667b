"""Leaderboards: long Parquet (one row per suite/case/variant/method/metric) and a wide CSV summary."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd

from interpbench.storage import atomic_write_bytes

KEYS = ["suite", "case", "variant", "method", "family", "seed"]
LONG_COLUMNS = [
    "suite", "case", "variant", "method", "family", "metric", "value", "ci_low", "ci_high", "n",
    "n_undefined", "seconds", "seed", "params", "interpbench_version", "tracr_version",
    "torch_version", "captum_version", "git_sha", "created_at",
]  # fmt: skip


def long_table(rows: pd.DataFrame) -> pd.DataFrame:
    """The long leaderboard: the DESIGN columns first, any extra columns after."""
    extra = [c for c in rows.columns if c not in LONG_COLUMNS]
    return rows[LONG_COLUMNS + extra].reset_index(drop=True)


def wide_table(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per (suite, case, variant, method, family, seed), metrics as columns.

    For each metric m: `m`, `m_ci_low`, `m_ci_high`, `m_n_undefined`; then the cell's
    `seconds` and `zero_rows_share` (share of all-zero relevance rows).
    """
    if rows.empty:
        return pd.DataFrame(columns=KEYS)
    parts = []
    for col, suffix in (("value", ""), ("ci_low", "_ci_low"), ("ci_high", "_ci_high"), ("n_undefined", "_n_undefined")):
        p = rows.set_index(KEYS + ["metric"])[col].unstack("metric")
        p.columns = [f"{m}{suffix}" for m in p.columns]
        parts.append(p)
    cell = rows.groupby(KEYS, dropna=False)[["seconds", "zero_rows_share"]].first()
    wide = pd.concat(parts + [cell], axis=1).reset_index()
    metrics = sorted(rows["metric"].unique())
    order = KEYS + [f"{m}{s}" for m in metrics for s in ("", "_ci_low", "_ci_high", "_n_undefined")]
    order += ["seconds", "zero_rows_share"]
    return wide[order]


def method_summary(rows: pd.DataFrame, metric: str = "auroc") -> pd.DataFrame:
    """Per method: mean of `metric` over cases, mean rank (1 = best), cases scored, seconds."""
    sub = rows[rows["metric"] == metric]
    if sub.empty:
        return pd.DataFrame(columns=["method", "family", metric, "mean_rank", "cases", "seconds"])
    higher = bool(sub["higher_is_better"].iloc[0]) if "higher_is_better" in sub else True
    per_case = sub.groupby(["suite", "case", "variant", "method", "family"], as_index=False)["value"].mean()
    per_case["rank"] = per_case.groupby(["suite", "case", "variant"])["value"].rank(ascending=not higher, method="average")
    out = per_case.groupby(["method", "family"]).agg(
        value=("value", "mean"), mean_rank=("rank", "mean"), cases=("value", lambda v: int(np.isfinite(v).sum()))
    )
    secs = sub.groupby(["method", "family"])["seconds"].sum()
    out["seconds"] = secs
    out = out.reset_index().rename(columns={"value": metric})
    return out.sort_values(metric, ascending=not higher).reset_index(drop=True)


SYNTHESIS_METRICS = ("soft_iou", "argmax_agreement", "jsd", "replacement_accuracy", "program_accuracy", "program_exact")


def synthesis_table(rows: pd.DataFrame) -> pd.DataFrame:
    """The synthesis section: per case and method, head- and program-level scores side by side.

    Every method that returned head patterns (attention inspection, head-program
    synthesis, baselines) or a program (whole-program synthesis) gets one row per case;
    a metric the method's explanation does not support is empty.
    """
    cols = ["suite", "case", "variant", "method", "family", "seed", *SYNTHESIS_METRICS]
    sub = rows[rows["metric"].isin(SYNTHESIS_METRICS)] if not rows.empty else rows
    if sub.empty:
        return pd.DataFrame(columns=cols)
    wide = sub.pivot_table(index=KEYS, columns="metric", values="value", aggfunc="first", dropna=False).reset_index()
    for m in SYNTHESIS_METRICS:
        if m not in wide.columns:
            wide[m] = np.nan
    wide = wide.dropna(subset=list(SYNTHESIS_METRICS), how="all")
    return wide[cols].sort_values(["suite", "case", "variant", "family", "method", "seed"]).reset_index(drop=True)


def synthesis_summary(rows: pd.DataFrame) -> pd.DataFrame:
    """Per method: mean head/program scores over cases, and how many programs were recovered.

    `recovered` counts cases with program_accuracy = 1 (functionally right on every
    held-out input, longer ones included); `exact` counts cases with program_exact = 1.
    """
    table = synthesis_table(rows)
    cols = ["method", "family", *SYNTHESIS_METRICS, "recovered", "exact", "cases"]
    if table.empty:
        return pd.DataFrame(columns=cols)
    g = table.groupby(["method", "family"])
    out = g[list(SYNTHESIS_METRICS)].mean()
    out["recovered"] = g["program_accuracy"].apply(lambda v: int((v == 1.0).sum()))
    out["exact"] = g["program_exact"].apply(lambda v: int((v == 1.0).sum()))
    out["cases"] = g["case"].nunique()
    return out.reset_index()[cols].sort_values(["family", "method"]).reset_index(drop=True)


def write_leaderboard(rows: pd.DataFrame, out_dir: Path) -> tuple[Path, Path]:
    """Writes `leaderboard.parquet` (long), `leaderboard.csv` (wide) and `synthesis.csv` atomically.

    Returns the Parquet and wide CSV paths; `synthesis.csv` (the synthesis section) sits
    next to them.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    pq, csv = out_dir / "leaderboard.parquet", out_dir / "leaderboard.csv"
    buf = io.BytesIO()
    long_table(rows).to_parquet(buf, index=False)
    atomic_write_bytes(pq, buf.getvalue())
    atomic_write_bytes(csv, wide_table(rows).to_csv(index=False, float_format="%.6g").encode())
    atomic_write_bytes(out_dir / "synthesis.csv", synthesis_table(rows).to_csv(index=False, float_format="%.6g").encode())
    return pq, csv


def read_leaderboard(path: Path) -> pd.DataFrame:
    """Reads a long leaderboard Parquet file or a run directory's rows."""
    if path.is_dir():
        from interpbench.run import collect_rows

        return collect_rows(path)
    return pd.read_parquet(path)
