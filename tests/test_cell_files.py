"""A finished cell's files: rows kept in cell.json as strict JSON, hashes that catch files lost to a power cut."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from interpbench.case import get_case
from interpbench.cell_files import cell_rows, finite_or_none, read_meta, records_to_frame, verified
from interpbench.method import get_method
from interpbench.run import Cell, is_done, run_grid


def test_rows_round_trip_through_strict_json_with_nan_as_null() -> None:
    records = [
        {"metric": "auroc", "value": finite_or_none(0.75), "ci_low": finite_or_none(np.nan),
         "ci_high": finite_or_none(np.inf), "n": 3, "higher_is_better": True},
        {"metric": "jsd", "value": finite_or_none(np.float64("nan")), "ci_low": None, "ci_high": finite_or_none(1),
         "n": 0, "higher_is_better": False},
    ]  # fmt: skip
    text = json.dumps(records, allow_nan=False)  # raises on NaN/inf: the records are strict JSON
    assert records[1]["value"] is None and records[0]["ci_high"] is None and records[1]["ci_high"] == 1.0
    back = records_to_frame(json.loads(text))
    assert back["value"].dtype == np.float64 and back["ci_low"].dtype == np.float64  # an all-null column too
    assert back["value"].iloc[0] == 0.75 and math.isnan(back["value"].iloc[1])
    assert back["n"].tolist() == [3, 0] and back["higher_is_better"].tolist() == [True, False]


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    run_dir = tmp_path_factory.mktemp("cells") / "run"
    rows = run_grid([get_case("tracr_lib/reverse")], [get_method("uniform"), get_method("attention_last_layer")], run_dir)
    return run_dir, rows


def test_a_cell_whose_file_was_lost_counts_unfinished_and_is_run_again(
    small_run: tuple[Path, pd.DataFrame], tmp_path: Path
) -> None:
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(small_run[0], run_dir)
    cell = Cell("tracr_lib/reverse", "base", "attention_last_layer", 0)
    folder = cell.folder(run_dir)
    meta = read_meta(folder)
    assert meta is not None and verified(folder, meta) and is_done(cell, run_dir, verify=True)
    (folder / "explanation.npz").write_bytes(b"")  # what a power cut can leave of an unsynced file
    assert is_done(cell, run_dir) and not is_done(cell, run_dir, verify=True)
    untouched = Cell("tracr_lib/reverse", "base", "uniform", 0).folder(run_dir) / "cell.json"
    stamp = untouched.stat().st_mtime_ns
    rows = run_grid([get_case("tracr_lib/reverse")], [get_method("uniform"), get_method("attention_last_layer")], run_dir)
    assert untouched.stat().st_mtime_ns == stamp  # the sound cell is not run again
    assert verified(folder, read_meta(folder))
    pd.testing.assert_frame_equal(rows.drop(columns=["created_at", "seconds"]),
                                  small_run[1].drop(columns=["created_at", "seconds"]))  # fmt: skip


def test_cell_rows_equal_what_the_run_returned(small_run: tuple[Path, pd.DataFrame]) -> None:
    run_dir, rows = small_run
    folder = Cell("tracr_lib/reverse", "base", "uniform", 0).folder(run_dir)
    mine = cell_rows(folder, read_meta(folder))
    theirs = rows[rows["method"] == "uniform"].reset_index(drop=True)
    pd.testing.assert_frame_equal(mine.sort_values("metric").reset_index(drop=True)[theirs.columns],
                                  theirs.sort_values("metric").reset_index(drop=True))  # fmt: skip
