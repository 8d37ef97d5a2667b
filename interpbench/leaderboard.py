"""Leaderboards: long Parquet (one row per suite/case/variant/method/metric) and a wide CSV summary."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd

from interpbench.ranking import case_table, versus_best
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


def base_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """The base-model rows when there are any (summaries count cases, not case x twin), else all rows."""
    if "variant" in rows and (rows["variant"] == "base").any():
        return rows[rows["variant"] == "base"]
    return rows


def method_summary(rows: pd.DataFrame, metric: str = "auroc") -> pd.DataFrame:
    """Per method: mean of `metric` over cases, mean rank, paired test against the best, seconds.

    Columns: `method`, `family`, the metric's mean over cases (seeds averaged first),
    `mean_rank` (1 = best, over the cases every ranked method was scored on; a method
    with no value anywhere is not ranked), `best` (the best-ranked method, which the
    next three columns compare against), `wins_vs_best` / `losses_vs_best` (cases
    strictly better / worse than it), `p_vs_best` (Wilcoxon signed-rank over cases, Holm-adjusted;
    see `interpbench.ranking`), `cases` (cases with a value) and `seconds` (total).
    Sorted best first by mean value. Only the base models count when the rows have them
    (twins are compared with their base in `twin_table`).
    """
    cols = ["method", "family", metric, "mean_rank", "best", "wins_vs_best", "losses_vs_best", "p_vs_best", "cases",
            "seconds"]  # fmt: skip
    sub = base_rows(rows[rows["metric"] == metric] if not rows.empty else rows)
    if sub.empty:
        return pd.DataFrame(columns=cols)
    higher = bool(sub["higher_is_better"].iloc[0]) if "higher_is_better" in sub else True
    table = case_table(sub, metric)
    out = pd.DataFrame({
        "method": table.columns,
        metric: table.mean(axis=0, skipna=True).to_numpy(),
        "cases": table.notna().sum(axis=0).astype(int).to_numpy(),
    })  # fmt: skip
    families = sub.groupby("method")["family"].first()
    out["family"] = out["method"].map(families)
    out["seconds"] = out["method"].map(sub.groupby("method")["seconds"].sum())
    out = out.merge(versus_best(sub, metric, higher_is_better=higher), on="method", how="left")
    return out[cols].sort_values([metric, "method"], ascending=[not higher, True]).reset_index(drop=True)


def summary_table(rows: pd.DataFrame) -> pd.DataFrame:
    """`method_summary` for every metric in `rows`, stacked with a leading `metric` column."""
    if rows.empty:
        return pd.DataFrame(columns=["metric", "method", "family", "value", "mean_rank", "best", "wins_vs_best",
                                     "losses_vs_best", "p_vs_best", "cases", "seconds"])  # fmt: skip
    parts = []
    for m in sorted(rows["metric"].unique()):
        part = method_summary(rows, m).rename(columns={m: "value"})
        part.insert(0, "metric", m)
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


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
    Base models only when the rows have them, as in `method_summary`.
    """
    table = synthesis_table(base_rows(rows) if not rows.empty else rows)
    cols = ["method", "family", *SYNTHESIS_METRICS, "recovered", "exact", "cases"]
    if table.empty:
        return pd.DataFrame(columns=cols)
    g = table.groupby(["method", "family"])
    out = g[list(SYNTHESIS_METRICS)].mean()
    out["recovered"] = g["program_accuracy"].apply(lambda v: int((v == 1.0).sum()))
    out["exact"] = g["program_exact"].apply(lambda v: int((v == 1.0).sum()))
    out["cases"] = g["case"].nunique()
    return out.reset_index()[cols].sort_values(["family", "method"]).reset_index(drop=True)


TWIN_COLUMNS = ["method", "family", "variant", "metric", "higher_is_better", "base", "twin", "delta", "cases"]


def twin_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Base vs twin per method, twin and metric: which methods hold up when internals change.

    For every twin variant and metric, `base` and `twin` are the method's means over the
    cases (and seeds) scored on both, `delta` = twin - base, `cases` how many. A method
    fooled by internals has a large |delta| on a twin whose function is unchanged; metrics
    of the twin level (`twin_consistency`) have no base value and show the twin's score.
    """
    if rows.empty or not (rows["variant"] != "base").any():
        return pd.DataFrame(columns=TWIN_COLUMNS)
    key = ["suite", "case", "method", "family", "seed", "metric"]
    base = rows[rows["variant"] == "base"].set_index(key)["value"]
    twins = rows[rows["variant"] != "base"]
    paired = twins.join(base.rename("base"), on=key)
    paired = paired.rename(columns={"value": "twin"})
    both = paired[paired["twin"].notna() & (paired["base"].notna() | (paired["level"] == "twin"))]
    g = both.groupby(["method", "family", "variant", "metric", "higher_is_better"], sort=True)
    out = g.agg(base=("base", "mean"), twin=("twin", "mean"), cases=("case", "nunique")).reset_index()
    out["delta"] = out["twin"] - out["base"]
    return out[TWIN_COLUMNS]


def write_leaderboard(rows: pd.DataFrame, out_dir: Path) -> tuple[Path, Path]:
    """Writes `leaderboard.parquet` (long), `leaderboard.csv` (wide) and the section CSVs.

    Each file is written atomically. Returns the Parquet and wide CSV paths; next to
    them: `synthesis.csv` (head and program scores per case), `summary.csv` (per metric
    and method: mean, mean rank, paired test against the best) and `twins.csv` (base vs
    twin per method, twin and metric).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    pq, csv = out_dir / "leaderboard.parquet", out_dir / "leaderboard.csv"
    buf = io.BytesIO()
    long_table(rows).to_parquet(buf, index=False)
    atomic_write_bytes(pq, buf.getvalue())
    atomic_write_bytes(csv, wide_table(rows).to_csv(index=False, float_format="%.6g").encode())
    atomic_write_bytes(out_dir / "synthesis.csv", synthesis_table(rows).to_csv(index=False, float_format="%.6g").encode())
    atomic_write_bytes(out_dir / "summary.csv", summary_table(rows).to_csv(index=False, float_format="%.6g").encode())
    atomic_write_bytes(out_dir / "twins.csv", twin_table(rows).to_csv(index=False, float_format="%.6g").encode())
    return pq, csv


def read_leaderboard(path: Path) -> pd.DataFrame:
    """Reads a long leaderboard Parquet file or a run directory's rows."""
    if path.is_dir():
        from interpbench.run import collect_rows

        return collect_rows(path)
    return pd.read_parquet(path)
