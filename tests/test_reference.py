"""The regression gate: a fresh quick run must match the committed reference leaderboard."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from interpbench.compare import compare, read_long
from interpbench.leaderboard import write_leaderboard

REFERENCE = Path(__file__).resolve().parent.parent / "results" / "reference" / "leaderboard.csv"


def test_fresh_quick_run_matches_the_reference(tmp_path: Path) -> None:
    from interpbench.case import get_case
    from interpbench.method import get_method
    from interpbench.run import run_grid

    ref = pd.read_csv(REFERENCE)
    cases = [get_case(f"{s}/{c}") for s, c in ref[["suite", "case"]].drop_duplicates().itertuples(index=False)]
    methods = [get_method(m) for m in ref["method"].drop_duplicates()]
    seeds = sorted(int(s) for s in ref["seed"].unique())
    variants = list(ref["variant"].drop_duplicates())
    rows = run_grid(cases, methods, tmp_path / "run", variants=variants, seeds=seeds)
    write_leaderboard(rows, tmp_path)
    result = compare(read_long(REFERENCE), read_long(tmp_path / "leaderboard.csv"))
    moved = result.moved[["status", "case", "method", "metric", "old", "new"]]
    assert moved.empty, (
        "scores moved against results/reference/leaderboard.csv; if intended, run `make reference` "
        f"and commit it:\n{moved.to_string(index=False)}"
    )
