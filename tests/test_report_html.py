"""The HTML report: its data (hand-worked maps), self-containment, bad input, the CLI, and a real headless Chromium."""

from __future__ import annotations

import base64
import json
import os
import re
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from interpbench.case import get_case
from interpbench.cli import app
from interpbench.errors import BadInputError
from interpbench.method import get_method
from interpbench.report_data import heatmap, report_data
from interpbench.report_figures import num, relevance_map
from interpbench.report_html import build_report, embed_json, write_report
from interpbench.run import Cell, collect_rows, record_failure, run_grid

from webdriver import WebDriver, browser_tools

REPO = Path(__file__).resolve().parent.parent
CASES = ["tracr_lib/reverse", "algorithmic/prev_token"]
METHODS = ["oracle", "random", "attention_last_layer", "saliency", "integrated_gradients", "head_program_synthesis",
           "program_synthesis"]  # fmt: skip
# Figures the page must draw for this run, worked out by hand:
#   token maps per shown input = G + Gg + each method with token relevance
#     (oracle, random, attention_last_layer, saliency; integrated_gradients too on prev_token,
#     where it did not fail);
#   head maps per shown input and true head = the truth + each method with head patterns
#     (oracle, random, attention_last_layer, head_program_synthesis);
#   reverse has 2 true heads (length's SelectorWidth, the reversing Aggregate), prev_token 1;
#   2 inputs shown per case, and one heatmap.
EXPECTED_FIGURES = 2 * (6 + 2 * 5) + 2 * (7 + 1 * 5) + 1  # = 57


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small real run (2 cases x 7 methods) in which integrated_gradients failed on reverse."""
    out = tmp_path_factory.mktemp("report_run")
    run_grid([get_case(c) for c in CASES], [get_method(m) for m in METHODS], out)
    record_failure(Cell("tracr_lib/reverse", "base", "integrated_gradients", 0), out, RuntimeError("gradient blew up\nmore"))
    return out


@pytest.fixture(scope="module")
def data(run_dir: Path) -> dict[str, Any]:
    return report_data(run_dir)


def _case(data: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in data["cases"] if c["case"] == name)


def _map(inp: dict[str, Any], label: str) -> dict[str, Any]:
    return next(m for m in inp["maps"] if m["label"] == label)


def test_counts_failures_and_provenance(data: dict[str, Any]) -> None:
    c = data["counts"]
    assert (c["cases"], c["methods"], c["cells_planned"]) == (2, 7, 14)
    assert c["cells_by_status"] == {"failed": 1, "ok": 13} and c["cells_missing"] == 0
    assert data["failures"] == [{"case": "tracr_lib/reverse", "variant": "base", "method": "integrated_gradients",
                                 "seed": 0, "error": "RuntimeError: gradient blew up"}]  # fmt: skip
    p = data["provenance"]
    assert p["seeds"] == [0] and p["interpbench_version"] == ["0.1.0"] and len(p["git_sha"]) == 1


def test_reverse_maps_are_the_antidiagonal(data: dict[str, Any]) -> None:
    reverse = _case(data, "tracr_lib/reverse")
    assert reverse["n_inputs"] == 48
    first, second = reverse["inputs"]
    assert (len(first["in_pos"]), len(second["in_pos"])) == (5, 4)  # longest first, then another length
    anti = [[1.0 if j == 4 - i else 0.0 for j in range(5)] for i in range(5)]
    assert first["in_pos"] == first["out_pos"] == [1, 2, 3, 4, 5]
    assert _map(first, "G")["values"] == anti
    assert _map(first, "Gg")["values"] == anti  # every substitution changes the mirrored output
    assert _map(first, "oracle")["values"] == anti and _map(first, "oracle")["signed"] is False
    assert [m["label"] for m in first["maps"]] == ["G", "Gg", "oracle", "random", "attention_last_layer", "saliency"]
    assert first["tokens"][0] == "BOS" and first["outputs"][1:] == first["tokens"][1:][::-1]


def test_reverse_heads_true_and_predicted(data: dict[str, Any]) -> None:
    heads = _case(data, "tracr_lib/reverse")["inputs"][0]["heads"]
    assert [(h["head"], h["role"]) for h in heads] == [("L0H0", "selector_width"), ("L3H0", "aggregate")]
    length, flip = heads
    assert length["q_pos"] == [1, 2, 3, 4, 5] and length["k_pos"] == [0, 1, 2, 3, 4, 5]
    assert length["true"] == [[0.167] * 6] * 5  # every key plus BOS, 1/6 each
    assert flip["true"] == [[1.0 if k == 6 - q else 0.0 for k in range(6)] for q in range(1, 6)]
    assert [p["label"] for p in flip["predicted"]] == ["oracle", "random", "attention_last_layer", "head_program_synthesis"]
    assert next(p for p in flip["predicted"] if p["label"] == "oracle")["values"] == flip["true"]


def test_prev_token_skips_the_undefined_first_output(data: dict[str, Any]) -> None:
    inp = _case(data, "algorithmic/prev_token")["inputs"][0]
    n = len(inp["in_pos"])
    assert inp["out_pos"] == list(range(2, n + 1)) and inp["outputs"][1] == "–"
    assert _map(inp, "G")["values"] == [[1.0 if j == i else 0.0 for j in range(n)] for i in range(n - 1)]
    assert "integrated_gradients" in [m["label"] for m in inp["maps"]]  # failed on reverse only


def test_programs_and_scores(data: dict[str, Any]) -> None:
    programs = _case(data, "tracr_lib/reverse")["programs"]
    assert [p["method"] for p in programs] == ["head_program_synthesis", "program_synthesis"]
    assert programs[1]["scores"]["program_accuracy"] == 1.0 and "def " in programs[1]["source"]
    assert "L3H0" in programs[0]["source"] and not programs[0]["truncated"]
    # a head-program method has no program scores: its head scores are shown instead
    assert {"soft_iou", "jsd"} <= set(programs[0]["scores"]) and "program_accuracy" not in programs[0]["scores"]


def test_heatmap_orders_by_direction(run_dir: Path, data: dict[str, Any]) -> None:
    rows = collect_rows(run_dir)
    jsd = data["heatmaps"]["jsd"]
    means = rows[rows["metric"] == "jsd"].groupby("method")["value"].mean()
    assert jsd["methods"] == sorted(means.index, key=lambda m: (means[m], m))  # lower is better, ties by name
    assert jsd["methods"][:2] == ["head_program_synthesis", "oracle"] and means["oracle"] == 0.0  # both exact
    assert jsd["cases"] == ["algorithmic/prev_token", "tracr_lib/reverse"]
    auroc = data["heatmaps"]["auroc"]
    means = rows[rows["metric"] == "auroc"].groupby("method")["value"].mean()
    assert auroc["methods"] == sorted(means.index, key=lambda m: (-means[m], m))  # higher is better, ties by name
    # exact here: attention on both cases, oracle, and integrated_gradients on prev_token (its only scored case)
    assert auroc["methods"][:3] == ["attention_last_layer", "integrated_gradients", "oracle"] and means["oracle"] == 1.0
    i, j = auroc["methods"].index("integrated_gradients"), auroc["cases"].index("tracr_lib/reverse")
    assert auroc["cells"][i][j] == [None, None, None]  # failed cell: no score, drawn hatched
    assert {m["name"]: m["higher_is_better"] for m in data["metrics"]}["jsd"] is False
    assert set(data["summaries"]) == set(rows["metric"]) == {m["name"] for m in data["metrics"]}


def test_heatmap_averages_seeds_and_labels_variants() -> None:
    def row(method: str, variant: str, seed: int, metric: str, v: float, lo: float, hi: float) -> dict[str, Any]:
        return {"suite": "s", "case": "c", "variant": variant, "method": method, "seed": seed, "metric": metric,
                "value": v, "ci_low": lo, "ci_high": hi}  # fmt: skip

    rows = pd.DataFrame([
        row("a", "base", 0, "m", 0.6, 0.5, 0.7), row("a", "base", 1, "m", 0.8, 0.7, 0.9),
        row("a", "twin", 0, "m", 0.4, 0.3, 0.5), row("b", "base", 0, "m", 0.9, 0.85, 0.95),
        row("b", "base", 0, "other", 0.1, 0.0, 0.2),
    ])  # fmt: skip
    up = heatmap(rows, {"name": "m", "higher_is_better": True})
    assert up["cases"] == ["s/c@base", "s/c@twin"]
    assert up["methods"] == ["b", "a"]  # means over cases: b 0.9, a (0.7 + 0.4) / 2 = 0.55
    assert up["cells"] == [[[0.9, 0.85, 0.95], [None, None, None]], [[0.7, 0.6, 0.8], [0.4, 0.3, 0.5]]]
    assert heatmap(rows, {"name": "m", "higher_is_better": False})["methods"] == ["a", "b"]
    assert heatmap(rows, {"name": "other", "higher_is_better": True})["cases"] == ["s/c@base"]  # labels from all rows


def test_relevance_map_normalises_and_flags_sign() -> None:
    m = relevance_map("x", np.array([[2.0, -1.0], [0.0, 0.5]]), kind="method")
    assert m["values"] == [[1.0, -0.5], [0.0, 0.25]] and m["signed"] is True and m["scale"] == 2.0
    z = relevance_map("z", np.zeros((2, 3)), kind="method")
    assert z["values"] == [[0.0] * 3] * 2 and z["signed"] is False and z["scale"] == 0.0


def test_num_rounds_for_the_page() -> None:
    assert num(float("nan")) is None and num(float("inf")) is None
    assert (num(0.123456), num(0.000123456), num(12.34567), num(0.0)) == (0.123, 0.000123, 12.346, 0.0)
    assert (num(np.int64(3)), num(np.bool_(True)), num("a")) == (3, True, "a")


def test_embedded_json_cannot_close_the_script() -> None:
    text = embed_json({"s": "</script><b>&amp;"})
    assert "<" not in text and ">" not in text and "&" not in text
    assert json.loads(text) == {"s": "</script><b>&amp;"}


def _page_data(page: str) -> dict[str, Any]:
    m = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', page, re.S)
    assert m is not None
    return json.loads(m.group(1))


def test_page_is_self_contained(run_dir: Path) -> None:
    page = build_report(run_dir)
    for section in ('id="overview"', 'id="scores"', 'id="heatmap"', 'id="leaderboard"', 'id="cases"', 'id="js-errors"'):
        assert section in page
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:|//)""", page, re.I)
    assert not re.search(r"url\(\s*['\"]?\s*(https?:|//)", page, re.I)
    assert "@import" not in page and "<link" not in page.lower() and "<script src" not in page.lower()
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    assert _page_data(page)["counts"]["cells_planned"] == 14
    assert str(run_dir) not in page  # no machine paths


def test_committed_fixture_renders() -> None:
    data = report_data(REPO / "tests" / "fixtures" / "run_schema2")
    (case,) = data["cases"]
    assert case["case"] == "tracr_lib/reverse"
    assert [m["label"] for m in case["inputs"][0]["maps"]] == ["G", "Gg", "uniform"]
    assert [p["method"] for p in case["programs"]] == ["head_program_synthesis", "program_synthesis"]


def test_bad_run_dirs(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="is not a directory"):
        build_report(tmp_path / "missing")
    with pytest.raises(BadInputError, match="not a run directory"):
        build_report(tmp_path)
    (tmp_path / "cells").mkdir()
    (tmp_path / "run.json").write_text(json.dumps({"format": 1, "cells": []}))
    with pytest.raises(BadInputError, match="no finished cell"):
        write_report(tmp_path, tmp_path / "report.html")
    assert not (tmp_path / "report.html").exists()


def test_cli_report(run_dir: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    bad = runner.invoke(app, ["report", str(tmp_path / "nope"), "--out", str(tmp_path / "r.html")])
    assert bad.exit_code == 2 and bad.output.strip().count("\n") == 0 and "is not a directory" in bad.output
    assert not (tmp_path / "r.html").exists()
    ok = runner.invoke(app, ["report", str(run_dir), "--out", str(tmp_path / "r.html")])
    assert ok.exit_code == 0, ok.output
    assert _page_data((tmp_path / "r.html").read_text())["counts"]["rows"] == len(collect_rows(run_dir))
    default = runner.invoke(app, ["report", str(run_dir)])
    assert default.exit_code == 0 and (run_dir / "report.html").is_file()


# ---------- a real browser ----------


@pytest.fixture(scope="module")
def browser(run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    chromium, chromedriver = browser_tools()
    page = write_report(run_dir, tmp_path_factory.mktemp("page") / "report.html")
    driver = WebDriver(chromedriver, chromium, tmp_path_factory.mktemp("profile"))
    try:
        driver.cmd("POST", "/url", {"url": page.resolve().as_uri()})
        yield driver
    finally:
        driver.close()


def test_browser_draws_without_errors(browser: WebDriver) -> None:
    body = browser.js("return Object.assign({}, document.body.dataset)")
    errors = browser.js("return window.reportErrors")
    assert errors == [] and body["errors"] == "0"
    assert body["rendered"] == "ok"
    assert body["figures"] == str(EXPECTED_FIGURES) == str(browser.js("return document.querySelectorAll('svg.fig').length"))
    assert browser.js("return document.getElementById('js-errors').hidden") is True
    assert browser.js("return performance.getEntriesByType('resource').length") == 0  # nothing fetched
    assert browser.js("return document.querySelectorAll('#failures tbody tr').length") == 1


def _column(browser: WebDriver, name: str) -> list[str]:
    return browser.js(
        "const ths = [...document.querySelectorAll('#leaderboard thead th')].map(t => t.textContent);"
        f"const j = ths.indexOf({json.dumps(name)});"
        "return [...document.querySelectorAll('#leaderboard tbody tr')].map(r => r.children[j].textContent);"
    )


def test_clicking_a_header_sorts_the_leaderboard(browser: WebDriver, run_dir: Path) -> None:
    rows = collect_rows(run_dir)
    browser.click("#lb-metric option[value='*']")
    assert len(_column(browser, "metric")) == len(rows)
    j = _column_index(browser, "n")
    browser.click(f"#leaderboard th[data-col='{j}']")
    want = sorted(rows["n"].astype(int))
    assert len({len(str(v)) for v in want}) > 1  # a text sort would differ from a numeric one
    assert [int(v) for v in _column(browser, "n")] == want
    browser.click(f"#leaderboard th[data-col='{j}']")
    assert [int(v) for v in _column(browser, "n")] == want[::-1]
    # zero_rows_share is NaN for cells without token relevance: those sort last both ways
    k = _column_index(browser, "zero_rows_share")
    nan = int(rows["zero_rows_share"].isna().sum())
    assert 0 < nan < len(rows)
    for descending in (False, True):  # a new column sorts ascending first, then descending
        browser.click(f"#leaderboard th[data-col='{k}']")
        got = _column(browser, "zero_rows_share")
        assert got[-nan:] == ["–"] * nan and "–" not in got[:-nan]
        vals = [float(v) for v in got[:-nan]]
        assert vals == sorted(vals, reverse=descending)


def _column_index(browser: WebDriver, name: str) -> int:
    return int(browser.js(f"return [...document.querySelectorAll('#leaderboard thead th')].map(t => t.textContent).indexOf({json.dumps(name)})"))


def test_heatmap_follows_the_metric_and_its_direction(browser: WebDriver, run_dir: Path) -> None:
    browser.click("#metric option[value='jsd']")
    assert browser.js("return document.querySelectorAll('#heatmap svg.fig').length") == 1
    cells = browser.js("return [...document.querySelectorAll('#heatmap svg.fig g')].map(g => "
                       "[g.querySelector('title').textContent, g.querySelector('rect').getAttribute('fill')])")
    jsd = collect_rows(run_dir).query("metric == 'jsd'")
    assert len(cells) == len(jsd) == 8  # 4 methods return head patterns x 2 cases
    best = "rgb(253,231,37)"  # the bright end of the scale
    for r in jsd.itertuples():
        title, fill = next(c for c in cells if c[0].startswith(f"{r.method} · {r.suite}/{r.case}\n"))
        if r.value == 0.0:  # JSD 0 is the best value (lower is better): brightest colour
            assert fill == best, (r.method, r.case)
        elif r.value > 0.05:
            assert fill != best, (r.method, r.case)
    assert sum(v == 0.0 for v in jsd["value"]) >= 4 and sum(v > 0.05 for v in jsd["value"]) >= 2  # both branches ran
    assert browser.js("return document.querySelector('#summary tbody tr td').textContent") in ("head_program_synthesis", "oracle")
    assert browser.js("return document.body.dataset.rendered") == "ok" and browser.js("return window.reportErrors") == []


def test_screenshot(browser: WebDriver, tmp_path: Path) -> None:
    png = base64.b64decode(browser.cmd("GET", "/screenshot"))
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    assert width == 1400 and height > 1000
    assert len(png) > 50_000  # a blank page compresses to a few kB
    (tmp_path / "report.png").write_bytes(png)
    if os.environ.get("INTERPBENCH_REPORT_SCREENSHOT"):
        Path(os.environ["INTERPBENCH_REPORT_SCREENSHOT"]).write_bytes(png)


def test_leaderboard_rows_match_the_run(data: dict[str, Any], run_dir: Path) -> None:
    rows = collect_rows(run_dir)
    table = pd.DataFrame(data["leaderboard"]["rows"], columns=data["leaderboard"]["columns"])
    assert len(table) == len(rows)
    got = table[table["metric"] == "auroc"].set_index(["case", "method"])["value"]
    want = rows[rows["metric"] == "auroc"].assign(case=lambda d: d["suite"] + "/" + d["case"]).set_index(["case", "method"])["value"]
    assert got.sort_index().tolist() == want.sort_index().round(3).tolist()


def test_twins_section(browser: WebDriver, tmp_path: Path) -> None:
    """A run with twins: base vs twin table per metric, heatmap over base models only, drawn without errors."""
    run = tmp_path / "twin_run"
    run_grid([get_case("tracr_lib/reverse")], [get_method(m) for m in ("oracle", "attention_last_layer")], run,
             variants=["base", "rotated", "reshuffled_attention"])  # fmt: skip
    d = report_data(run)
    twins = pd.DataFrame(d["twins"]["rows"], columns=d["twins"]["columns"]).set_index(["method", "variant", "metric"])
    assert twins.loc[("attention_last_layer", "rotated", "twin_consistency"), "twin"] > 0.999
    assert ("oracle", "rotated", "twin_consistency") not in twins.index  # baselines ignore the model
    assert twins.loc[("attention_last_layer", "reshuffled_attention", "twin_consistency"), "twin"] < 0.9
    assert d["heatmaps"]["auroc"]["cases"] == ["tracr_lib/reverse"]  # twins are in the twin table, not as columns
    page = write_report(run, tmp_path / "twins.html")
    back = browser.js("return location.href")
    try:
        browser.cmd("POST", "/url", {"url": page.resolve().as_uri()})
        assert browser.js("return document.body.dataset.rendered") == "ok"
        shown = browser.js("return [...document.querySelectorAll('#twins tbody tr')].map(r => r.children[3].textContent)")
        assert sorted(shown) == ["auroc"] * 4 + ["twin_consistency"] * 2  # 2 methods x 2 twins; consistency: attention only
    finally:
        browser.cmd("POST", "/url", {"url": back})
