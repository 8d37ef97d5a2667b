"""The HTML report's data: a run directory gathered into one JSON-safe dict (tables, heatmaps, figures).

Everything the page draws comes from here; the page itself only lays it out. Floats are
rounded (maps to 3 decimals, table values to 3 decimals or 3 significant digits when
smaller) and every case shows at most `max_inputs` evaluation inputs, so a full bench
stays a few megabytes.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from interpbench.errors import BadInputError
from interpbench.leaderboard import base_rows, method_summary, twin_table
from interpbench.report_figures import case_figures, num
from interpbench.run import collect_failures, collect_rows

MAX_INPUTS = 2
PROVENANCE = ("interpbench_version", "tracr_version", "torch_version", "captum_version", "git_sha")
TABLE_COLUMNS = (
    "case", "variant", "method", "family", "seed", "metric", "value", "ci_low", "ci_high", "n",
    "n_undefined", "seconds", "zero_rows_share",
)  # fmt: skip


def table_json(df: pd.DataFrame) -> dict[str, Any]:
    """{"columns": [...], "rows": [[...]]} with every cell passed through `num`."""
    return {"columns": [str(c) for c in df.columns], "rows": [[num(v) for v in r] for r in df.itertuples(index=False)]}


def metric_info(rows: pd.DataFrame) -> list[dict[str, Any]]:
    """Each metric in the rows with its level, direction and range (registry range, else the data's)."""
    from interpbench.metrics import METRICS, load_metrics

    load_metrics()
    out = []
    for name, sub in rows.groupby("metric", sort=False):
        vals = sub["value"].to_numpy(dtype=np.float64)
        finite = vals[np.isfinite(vals)]
        low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        desc = ""
        if name in METRICS:
            m = METRICS.get(str(name))
            low, high, desc = (m.low if math.isfinite(m.low) else low), (m.high if math.isfinite(m.high) else high), m.description
        out.append({"name": str(name), "level": str(sub["level"].iloc[0]) if "level" in sub else "",
                    "higher_is_better": bool(sub["higher_is_better"].iloc[0]), "low": num(low), "high": num(high),
                    "description": desc})  # fmt: skip
    order = {"token": 0, "head": 1, "program": 2}
    return sorted(out, key=lambda m: (order.get(m["level"], 3), m["name"] != "auroc", m["name"]))


def heatmap(rows: pd.DataFrame, metric: dict[str, Any]) -> dict[str, Any]:
    """Method x case grid of one metric (mean over seeds), methods best first; NaN where unscored."""
    sub = rows.assign(label=_case_label(rows))  # labels from all rows: the same columns for every metric
    sub = sub[sub["metric"] == metric["name"]]
    g = sub.groupby(["method", "label"], sort=False)[["value", "ci_low", "ci_high"]].mean()
    cases = list(dict.fromkeys(sub["label"]))
    means = g["value"].groupby(level="method").mean()
    methods = sorted(means.index, key=lambda m: (math.isnan(means[m]), -means[m] if metric["higher_is_better"] else means[m], m))
    cells = [[[num(v) for v in g.loc[(m, c)]] if (m, c) in g.index else [None, None, None] for c in cases] for m in methods]
    return {"metric": metric["name"], "methods": methods, "cases": cases, "cells": cells}


def _case_label(df: pd.DataFrame) -> pd.Series:
    """`suite/case`, with `@variant` when the run has more than one variant."""
    label = df["suite"].astype(str) + "/" + df["case"].astype(str)
    return label + "@" + df["variant"].astype(str) if df["variant"].nunique() > 1 else label


def check_run_dir(run_dir: Path) -> None:
    """Raises BadInputError unless `run_dir` is a run directory (run.json and cells/)."""
    if not run_dir.is_dir():
        raise BadInputError(f"{run_dir} is not a directory")
    if not (run_dir / "run.json").is_file() or not (run_dir / "cells").is_dir():
        raise BadInputError(f"{run_dir} is not a run directory (needs run.json and cells/)")


def report_data(run_dir: Path, *, max_inputs: int = MAX_INPUTS) -> dict[str, Any]:
    """Everything the report shows, JSON-safe.

    Raises:
        BadInputError: `run_dir` is not a run directory, or holds neither scored nor failed cells.
    """
    check_run_dir(run_dir)
    try:
        spec = json.loads((run_dir / "run.json").read_text())
    except json.JSONDecodeError as exc:
        raise BadInputError(f"{run_dir / 'run.json'} is not valid JSON: {exc}") from None
    rows = collect_rows(run_dir)
    failures = collect_failures(run_dir)
    if rows.empty and not failures:
        raise BadInputError(f"{run_dir} holds no finished cell")
    metrics = metric_info(rows) if not rows.empty else []
    return {
        "title": run_dir.resolve().name,
        "provenance": _provenance(spec, rows),
        "counts": _counts(spec, run_dir, rows, failures),
        "failures": [{k: f.get(k) for k in ("case", "variant", "method", "seed", "error")} for f in failures],
        "metrics": metrics,
        "summaries": {m["name"]: table_json(method_summary(rows, m["name"])) for m in metrics},
        "leaderboard": _leaderboard(rows),
        "heatmaps": {m["name"]: heatmap(base_rows(rows), m) for m in metrics},
        "twins": table_json(twin_table(rows)) if not rows.empty else {"columns": [], "rows": []},
        "cases": [case_figures(run_dir, folder, rows, max_inputs=max_inputs)
                  for folder in sorted((run_dir / "cases").glob("*")) if (folder / "case.json").is_file()],  # fmt: skip
    }


def _leaderboard(rows: pd.DataFrame) -> dict[str, Any]:
    """The long rows as a table, the case column labelled `suite/case` (the variant has its own column)."""
    if rows.empty:
        return {"columns": list(TABLE_COLUMNS), "rows": []}
    return table_json(rows.assign(case=rows["suite"].astype(str) + "/" + rows["case"].astype(str))[list(TABLE_COLUMNS)])


def _provenance(spec: dict[str, Any], rows: pd.DataFrame) -> dict[str, Any]:
    """Versions and SHA as recorded in the rows (every distinct value), run creation time, seeds."""
    out: dict[str, Any] = {"run_created_at": spec.get("created_at"), "format": spec.get("format")}
    for col in PROVENANCE:
        out[col] = sorted({str(v) for v in rows[col]}) if col in rows else []
    out["scored_at"] = sorted({str(v) for v in rows["created_at"]}) if "created_at" in rows else []
    out["seeds"] = sorted({int(c["seed"]) for c in spec.get("cells", [])})
    return out


def _counts(spec: dict[str, Any], run_dir: Path, rows: pd.DataFrame, failures: list[dict[str, Any]]) -> dict[str, Any]:
    """Planned cases, methods and cells; finished cells by status (ok, failed, not_applicable, ...); rows."""
    cells = spec.get("cells", [])
    status: dict[str, int] = {}
    for path in (run_dir / "cells").glob("*/*/*/*/cell.json"):
        try:
            s = str(json.loads(path.read_text()).get("status", "unknown"))
        except json.JSONDecodeError:
            s = "unreadable"
        status[s] = status.get(s, 0) + 1
    return {
        "cases": len({c["case"] for c in cells}), "methods": len({c["method"] for c in cells}),
        "variants": sorted({str(c.get("variant", "base")) for c in cells}), "cells_planned": len(cells),
        "cells_by_status": dict(sorted(status.items())), "cells_failed": len(failures),
        "cells_missing": max(len(cells) - sum(status.values()), 0), "rows": len(rows),
    }  # fmt: skip
