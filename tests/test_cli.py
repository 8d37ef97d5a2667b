"""CLI smoke tests through typer's runner, plus exit codes for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from typer.testing import CliRunner

from interpbench.cli import app

runner = CliRunner()


def test_list_cases_json_names_suite_slash_case() -> None:
    res = runner.invoke(app, ["list", "cases", "--json"])
    assert res.exit_code == 0, res.output
    cases = json.loads(res.stdout)
    names = {c["name"] for c in cases}
    assert "tracr_lib/reverse" in names and all("/" in n for n in names)
    assert len(cases) >= 27


def test_list_methods_json_has_name_and_family() -> None:
    res = runner.invoke(app, ["list", "methods", "--json"])
    assert res.exit_code == 0, res.output
    methods = {m["name"]: m for m in json.loads(res.stdout)}
    assert methods["oracle"]["family"] == "baseline"
    assert methods["integrated_gradients"]["family"] == "attribution"
    assert methods["attention_last_layer"]["family"] == "attention"


def test_list_metrics_and_suites() -> None:
    metrics = json.loads(runner.invoke(app, ["list", "metrics", "--json"]).stdout)
    assert any(m["name"] == "auroc" and m["higher_is_better"] for m in metrics)
    suites = {s["name"] for s in json.loads(runner.invoke(app, ["list", "suites", "--json"]).stdout)}
    assert {"tracr_lib", "algorithmic"} <= suites


def test_show_names_components_and_truth() -> None:
    res = runner.invoke(app, ["show", "tracr_lib/reverse"])
    assert res.exit_code == 0, res.output
    assert "Aggregate" in res.stdout and "SelectorWidth" in res.stdout
    assert "defined output rows" in res.stdout


def test_unknown_case_exits_2_with_suggestion(tmp_path: Path) -> None:
    res = runner.invoke(app, ["run", "--case", "tracr_lib/revrse", "--out", str(tmp_path / "r")])
    assert res.exit_code == 2
    assert "did you mean" in res.output and "tracr_lib/reverse" in res.output
    assert not (tmp_path / "r").exists()  # nothing written


def test_unknown_method_and_listing_exit_2() -> None:
    assert runner.invoke(app, ["run", "--method", "orcale"]).exit_code == 2
    assert runner.invoke(app, ["list", "metrix"]).exit_code == 2


def test_run_then_leaderboard_then_score(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    res = runner.invoke(app, ["run", "--case", "tracr_lib/reverse", "--method", "oracle,uniform", "--out", str(run_dir)])
    assert res.exit_code == 0, res.output
    long = pd.read_parquet(run_dir / "leaderboard.parquet")
    assert set(long["method"]) == {"oracle", "uniform"}
    wide = pd.read_csv(run_dir / "leaderboard.csv")
    assert list(wide.sort_values("method")["auroc"]) == [1.0, 0.5]
    res = runner.invoke(app, ["leaderboard", str(run_dir), "--out", str(tmp_path / "results")])
    assert res.exit_code == 0 and (tmp_path / "results" / "leaderboard.csv").exists()
    assert runner.invoke(app, ["score", str(run_dir)]).exit_code == 0
    again = runner.invoke(app, ["run", "--case", "tracr_lib/reverse", "--out", str(run_dir)])
    assert again.exit_code == 2 and "--resume" in again.output


def test_score_and_leaderboard_refuse_non_runs(tmp_path: Path) -> None:
    assert runner.invoke(app, ["score", str(tmp_path)]).exit_code == 2
    assert runner.invoke(app, ["leaderboard", str(tmp_path / "missing")]).exit_code == 2


def test_export_writes_files(tmp_path: Path) -> None:
    res = runner.invoke(app, ["export", "tracr_lib/reverse", "--out", str(tmp_path / "x")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "x" / "weights.npz").exists() and (tmp_path / "x" / "FORMAT.md").exists()


def test_show_a_synthesis_cell_prints_and_runs_its_programs(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    res = runner.invoke(app, ["run", "--case", "tracr_lib/reverse", "--method", "head_program_synthesis,uniform",
                              "--out", str(run_dir)])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "synthesis section" in res.stdout
    cell = run_dir / "cells" / "tracr_lib__reverse" / "base" / "head_program_synthesis" / "seed0"
    res = runner.invoke(app, ["show", str(cell), "--input", "a b c d"])
    assert res.exit_code == 0, res.output
    assert "def attention(tokens)" in res.stdout and "soft_iou" in res.stdout
    # the reverse head's recovered program, run on the typed input: query i reads key n-1-i
    from interpbench.recovered import execute, load_cell

    heads = execute(load_cell(cell).explanation, list("abcd"))["heads"]
    reverse_heads = [m for m in heads.values() if np.allclose(m[1:, 1:], np.eye(4)[::-1])]
    assert reverse_heads, "no recovered head reads the mirrored position"
    synth = pd.read_csv(run_dir / "synthesis.csv")
    assert set(synth["method"]) == {"head_program_synthesis", "uniform"}
    assert (synth.set_index("method").loc["head_program_synthesis", "soft_iou"] >= 0.99)


def test_show_refuses_bad_tokens_and_program_less_cells(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    assert runner.invoke(app, ["run", "--case", "tracr_lib/reverse", "--method", "uniform", "--out", str(run_dir)]).exit_code == 0
    cell = run_dir / "cells" / "tracr_lib__reverse" / "base" / "uniform" / "seed0"
    res = runner.invoke(app, ["show", str(cell), "--input", "a b"])
    assert res.exit_code == 2 and "no recovered program" in res.output
    res = runner.invoke(app, ["show", "tracr_lib/reverse", "--input", "a zz"])
    assert res.exit_code == 2 and "'zz' is not in the vocabulary" in res.output
    res = runner.invoke(app, ["show", str(tmp_path)])
    assert res.exit_code == 2 and "neither a case name nor a run cell" in res.output


def test_show_case_runs_program_and_model_on_an_input() -> None:
    res = runner.invoke(app, ["show", "tracr_lib/reverse", "--input", "a b c"])
    assert res.exit_code == 0, res.output
    assert "program: c b a" in res.stdout and "model:   c b a" in res.stdout


def test_show_runs_a_recovered_whole_program_on_a_longer_input(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    res = runner.invoke(app, ["run", "--case", "tracr_lib/reverse", "--method", "program_synthesis", "--out", str(run_dir)])
    assert res.exit_code == 0, res.output
    cell = run_dir / "cells" / "tracr_lib__reverse" / "base" / "program_synthesis" / "seed0"
    # seven tokens: longer than the model accepts (max_seq_len 5), so only the program can answer
    res = runner.invoke(app, ["show", str(cell), "--input", "a b c d a b b"])
    assert res.exit_code == 0, res.output
    assert "from tracr.rasp import rasp" in res.stdout and "program_accuracy" in res.stdout
    assert "output: b b a d c b a" in res.stdout
