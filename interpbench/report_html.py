"""`interpbench report`: a run directory as one self-contained HTML page (inline CSS, JS and data).

The page needs no network: its stylesheet and scripts (`interpbench/report_assets/`) are
inlined, the data is embedded as JSON, and a Content-Security-Policy forbids every
fetch. It draws the leaderboard (sortable), a method x case heatmap and, per case, the
ground truth next to each method's relevance maps and head patterns.
"""

from __future__ import annotations

import html
import json
import re
from importlib import resources
from pathlib import Path
from typing import Any

from interpbench.report_data import MAX_INPUTS, report_data
from interpbench.storage import atomic_write_bytes

PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")


def _asset(name: str) -> str:
    """Text of one file under `interpbench/report_assets/` (package data)."""
    return resources.files("interpbench").joinpath("report_assets", name).read_text(encoding="utf-8")


def embed_json(data: Any) -> str:
    """JSON safe inside `<script type="application/json">`: `<`, `>` and `&` are escaped as \\u sequences."""
    text = json.dumps(data, separators=(",", ":"), allow_nan=False, ensure_ascii=False)
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


def render(data: dict[str, Any]) -> str:
    """The page for report data (see `interpbench.report_data.report_data`)."""
    from interpbench import __version__

    parts = {
        "title": html.escape(str(data["title"])),
        "version": html.escape(__version__),
        "css": _asset("report.css"),
        "errors_js": _asset("errors.js"),
        "js": _asset("report.js"),
        "data": embed_json(data),
    }
    # One pass over the template only: placeholders inside the inlined parts are left alone.
    return PLACEHOLDER.sub(lambda m: parts[m.group(1)], _asset("report.html"))


def build_report(run_dir: Path, *, max_inputs: int = MAX_INPUTS) -> str:
    """The HTML report of a run directory.

    Raises:
        BadInputError: `run_dir` is not a run directory or holds no finished cell.
    """
    return render(report_data(Path(run_dir), max_inputs=max_inputs))


def write_report(run_dir: Path, out_path: Path, *, max_inputs: int = MAX_INPUTS) -> Path:
    """Builds the report and writes it atomically to `out_path` (nothing is written on bad input)."""
    page = build_report(run_dir, max_inputs=max_inputs)
    atomic_write_bytes(Path(out_path), page.encode("utf-8"))
    return Path(out_path)
