"""Export: a reader with only numpy runs the exported model and reproduces the stored outputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from interpbench.case import get_case
from interpbench.compiled import compile_case
from interpbench.export import export_case
from interpbench.twins import list_twins, make_twin
from interpbench.weights import numpy_forward


def _numpy_only_forward(folder: Path) -> tuple[np.ndarray, dict, dict]:
    """Runs the exported model from its files alone, following FORMAT.md."""
    meta = json.loads((folder / "model.json").read_text())
    w = dict(np.load(folder / "weights.npz", allow_pickle=False))
    data = dict(np.load(folder / "data.npz", allow_pickle=False))
    tokens, lengths = data["tokens"], data["lengths"]
    n, t = tokens.shape
    x = w["token_embed"][tokens] + w["pos_embed"][:t][None]
    real = np.arange(t)[None, :] <= lengths[:, None]
    for l in range(meta["n_layers"]):
        g = lambda k: w[f"blocks.{l}.{k}"]  # noqa: E731
        q = np.einsum("ntd,hde->nhte", x, g("w_q")) + g("b_q")[None, :, None]
        k = np.einsum("ntd,hde->nhte", x, g("w_k")) + g("b_k")[None, :, None]
        v = np.einsum("ntd,hde->nhte", x, g("w_v")) + g("b_v")[None, :, None]
        s = np.einsum("nhqe,nhke->nhqk", q, k) / np.sqrt(meta["key_size"])
        s = np.where(real[:, None, None, :], s, -1e30)
        a = np.exp(s - s.max(-1, keepdims=True))
        a /= a.sum(-1, keepdims=True)
        x = x + np.einsum("nhqk,nhke,hed->nqd", a, v, g("w_o")) + g("b_o")
        x = x + np.maximum(x @ g("w_in") + g("b_in"), 0) @ g("w_out") + g("b_out")
    return x @ w["unembed"], meta, data


def test_exported_reverse_runs_with_numpy_only(tmp_path: Path) -> None:
    out = tmp_path / "reverse"
    files = export_case(compile_case(get_case("tracr_lib/reverse")), out)
    names = {p.name for p in files}
    assert {"weights.npz", "model.json", "data.npz", "truth.npz", "inputs.json", "outputs.json", "FORMAT.md"} <= names
    logits, meta, data = _numpy_only_forward(out)
    pred = logits.argmax(-1)
    defined = ~np.isnan(data["outputs"])
    assert defined.sum() > 0
    assert (pred[defined] == data["outputs"][defined]).all()
    # and the JSON view agrees: output values are the reversed inputs
    inputs = json.loads((out / "inputs.json").read_text())
    outputs = json.loads((out / "outputs.json").read_text())
    assert all(o == list(reversed(i)) for i, o in zip(inputs, outputs))
    decoded = [[meta["output_values"][c] for c in pred[b, 1 : len(i) + 1]] for b, i in enumerate(inputs)]
    assert decoded == outputs
    assert not list(tmp_path.glob(".reverse.*"))  # no temporary leftovers


@pytest.mark.parametrize("variant", [t.name for t in list_twins()])
def test_exported_twin_runs_with_numpy_only(variant: str, tmp_path: Path) -> None:
    """A twin exports like a base model; both numpy forwards reproduce its outputs and its runtime."""
    # a twin for one family of cases only (dyck_stack) is exported from a case of that family
    case = "tracr_lib/shuffle_dyck" if variant == "dyck_stack" else "tracr_lib/reverse"
    twin = make_twin(compile_case(get_case(case)), variant)
    out = tmp_path / variant
    export_case(twin, out)
    logits, meta, data = _numpy_only_forward(out)
    defined = ~np.isnan(data["outputs"])
    assert (logits.argmax(-1)[defined] == data["outputs"][defined]).all()
    assert meta.get("reshuffled_heads", []) == [list(lh) for lh in twin.weights.reshuffled_heads]
    runtime = twin.model(torch.from_numpy(twin.tokens)).numpy()
    assert np.abs(numpy_forward(twin.weights, twin.tokens, twin.lengths) - runtime).max() <= 1e-9
