"""Per-case figure data for the HTML report: G and Gg next to each method's relevance, true vs predicted heads.

Maps are cut to the positions that count (defined output rows x real input columns for
relevance; real query rows x BOS and real keys for attention), so what the page shows is
what the metrics score.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from interpbench.explanation import Explanation
from interpbench.ground_truth import GroundTruth
from interpbench.storage import read_npz
from interpbench.weights import ModelWeights

FAMILY_ORDER = ("baseline", "attention", "attribution", "synthesis")
SIGN_RTOL = 1e-9
MAX_SOURCE_CHARS = 4000


def num(v: Any) -> float | int | str | bool | None:
    """A table cell as JSON: floats rounded to 3 decimals (3 significant digits below 0.001), NaN as null."""
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        f = float(v)
        if not math.isfinite(f):
            return None
        return round(f, 3) if f == 0 or abs(f) >= 1e-3 else float(f"{f:.3g}")
    return None if v is None or v is pd.NA else str(v)


def load_case_arrays(folder: Path) -> tuple[dict[str, Any], ModelWeights, dict[str, np.ndarray], GroundTruth]:
    """A saved case folder's case.json, weights (for the vocabularies), data arrays and ground truth."""
    meta = json.loads((folder / "case.json").read_text())
    truth = GroundTruth.from_saved(read_npz(folder / "truth.npz"), meta["truth"])
    return meta, ModelWeights.load(folder), read_npz(folder / "data.npz"), truth


def load_explanations(run_dir: Path, folder_name: str, variant: str = "base") -> dict[tuple[str, str, int], Explanation]:
    """{(variant, method, seed): explanation} of every finished cell of one case folder and variant."""
    out = {}
    for meta_path in sorted((run_dir / "cells" / folder_name / variant).glob("*/*/cell.json")):
        meta = json.loads(meta_path.read_text())
        if meta.get("status") == "ok":
            out[(str(meta["variant"]), str(meta["method"]), int(meta["seed"]))] = Explanation.load(meta_path.parent)
    return out


def grid(a: np.ndarray) -> list[list[float]]:
    """A 2-D array as nested lists rounded to 3 decimals (non-finite entries become 0)."""
    return np.round(np.nan_to_num(np.asarray(a, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0), 3).tolist()


def pick_inputs(truth: GroundTruth, lengths: np.ndarray, k: int) -> list[int]:
    """Up to `k` evaluation inputs: most defined outputs first, distinct lengths preferred, ties by index."""
    n_out = truth.valid_out.sum(axis=1)
    order = sorted(range(len(lengths)), key=lambda b: (-int(n_out[b]), -int(lengths[b]), b))
    chosen: list[int] = []
    for b in order:
        if len(chosen) < k and all(lengths[b] != lengths[c] for c in chosen):
            chosen.append(b)
    chosen += [b for b in order if b not in chosen][: k - len(chosen)]
    return chosen


def _labels(weights: ModelWeights, tokens: np.ndarray, outputs: np.ndarray, length: int) -> tuple[list[str], list[str]]:
    """Token label per position 0..length (BOS first) and the true output per position ("–" if undefined)."""
    toks = ["BOS"] + [str(weights.input_tokens[int(t)]) for t in tokens[1 : length + 1]]
    outs = []
    for v in outputs[: length + 1]:
        if np.isnan(v):
            outs.append("–")
        elif weights.output_values is not None:
            outs.append(str(weights.output_values[int(v)]))
        else:
            outs.append(str(num(float(v))))
    return toks, outs


def relevance_map(label: str, r: np.ndarray, *, kind: str, scores: dict[str, Any] | None = None) -> dict[str, Any]:
    """One small multiple: `r` divided by its largest |value| (kept if all zero), with its sign flag and scale."""
    scale = float(np.max(np.abs(r))) if r.size else 0.0
    values = r / scale if scale > 0 else r
    signed = bool(scale > 0 and (r < -SIGN_RTOL * scale).any())
    return {"label": label, "kind": kind, "values": grid(values), "signed": signed, "scale": num(scale),
            "scores": scores or {}}  # fmt: skip


def _cell_scores(rows: pd.DataFrame, level: str) -> dict[tuple[str, str, int], dict[str, Any]]:
    """{(variant, method, seed): {metric: value}} for the metrics of one level."""
    out: dict[tuple[str, str, int], dict[str, Any]] = {}
    if rows.empty:
        return out
    for r in rows[rows["level"] == level].itertuples(index=False):
        out.setdefault((str(r.variant), str(r.method), int(r.seed)), {})[str(r.metric)] = num(r.value)
    return out


def _shown(explanations: dict[tuple[str, str, int], Explanation], families: dict[str, str]) -> list[tuple[str, str, int]]:
    """One cell per method (its lowest seed), in family then name order."""
    best: dict[str, tuple[str, str, int]] = {}
    for key in sorted(explanations, key=lambda k: k[2]):
        best.setdefault(key[1], key)
    rank = {f: i for i, f in enumerate(FAMILY_ORDER)}
    return sorted(best.values(), key=lambda k: (rank.get(families.get(k[1], ""), len(rank)), k[1]))


def case_figures(run_dir: Path, folder: Path, rows: pd.DataFrame, *, max_inputs: int) -> dict[str, Any]:
    """The figures of one saved case (base model): per shown input, token maps and head patterns; recovered programs.

    Twins have their own ground truth, so only base-model cells are drawn against the
    case's G and true patterns; twins appear in the tables and heatmap.
    """
    meta, weights, data, truth = load_case_arrays(folder)
    suite, name = str(meta["case"]).split("/", 1)
    mine = rows[(rows["suite"] == suite) & (rows["case"] == name)] if not rows.empty else rows
    families = dict(zip(mine["method"], mine["family"])) if not mine.empty else {}
    explanations = load_explanations(run_dir, folder.name)
    shown = _shown(explanations, families)
    scores = {level: _cell_scores(mine, level) for level in ("token", "head", "program")}
    inputs = []
    for b in pick_inputs(truth, data["lengths"], max_inputs):
        length = int(data["lengths"][b])
        toks, outs = _labels(weights, data["tokens"][b], data["outputs"][b], length)
        in_pos = np.flatnonzero(truth.valid_in[b])
        out_pos = np.flatnonzero(truth.valid_out[b])
        cut = np.ix_(out_pos, in_pos)
        maps = [relevance_map("G", truth.relevance[b][cut].astype(np.float64), kind="truth"),
                relevance_map("Gg", truth.graded[b][cut], kind="truth")]  # fmt: skip
        for key in shown:
            r = explanations[key].token_relevance
            if r is not None:
                maps.append(relevance_map(key[1], np.asarray(r[b], dtype=np.float64)[cut], kind="method",
                                          scores=scores["token"].get(key)))  # fmt: skip
        inputs.append({
            "index": b, "tokens": toks, "outputs": outs, "in_pos": in_pos.tolist(), "out_pos": out_pos.tolist(),
            "maps": maps, "heads": _heads(truth, explanations, shown, scores["head"], b),
        })  # fmt: skip
    programs = [{"method": k[1], "seed": k[2], "source": (explanations[k].source or "")[:MAX_SOURCE_CHARS],
                 "truncated": len(explanations[k].source or "") > MAX_SOURCE_CHARS,
                 "scores": scores["program"].get(k) or scores["head"].get(k, {})}
                for k in shown if explanations[k].source]  # fmt: skip
    return {
        "case": str(meta["case"]), "info": {k: num(v) for k, v in meta.get("info", {}).items()},
        "n_inputs": int(len(data["lengths"])), "program_source": truth.program_source[:MAX_SOURCE_CHARS],
        "inputs": inputs, "programs": programs,
    }  # fmt: skip


def _heads(
    truth: GroundTruth, explanations: dict[tuple[str, str, int], Explanation], shown: list[tuple[str, str, int]],
    scores: dict[tuple[str, str, int], dict[str, Any]], b: int,
) -> list[dict[str, Any]]:
    """True vs predicted pattern (query rows x BOS and real keys) of every head implementing a selector."""
    out = []
    q = np.flatnonzero(truth.pattern_rows[b])
    k = np.concatenate([[0], np.flatnonzero(truth.valid_in[b])])
    for head in sorted(truth.patterns, key=lambda h: (truth.component(h).layer, truth.component(h).head or 0, h)):
        comp = truth.component(head)
        predicted = []
        for key in shown:
            pats = explanations[key].head_patterns or {}
            if head in pats:
                p = np.asarray(pats[head][b], dtype=np.float64)[np.ix_(q, k)]
                predicted.append({"label": key[1], "values": grid(p), "scale": num(max(1.0, float(np.abs(p).max(initial=0.0)))),
                                  "scores": scores.get(key, {})})  # fmt: skip
        out.append({"head": head, "role": comp.role, "node": comp.node, "q_pos": q.tolist(), "k_pos": k.tolist(),
                    "true": grid(truth.patterns[head][b][np.ix_(q, k)]), "predicted": predicted})  # fmt: skip
    return out
