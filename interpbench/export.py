"""Export: a compiled case as plain npz + JSON files that a reader with only numpy can run."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

from interpbench.compiled import CompiledCase
from interpbench.storage import atomic_write_bytes, jsonable

FORMAT = """\
# interpbench export: {name}

Files (no pickles; `np.load` reads the npz files with its default settings):

- `model.json`: `residual_labels` (name of each residual dimension), `input_tokens`
  (token value of each id; `compiler_bos` and `compiler_pad` included), `bos_id`, `pad_id`,
  `output_values` (value of each output class, or null for a numerical output),
  `key_size`, `causal`, `n_layers`.
- `weights.npz`: `token_embed` [n_tokens, d], `pos_embed` [max_seq_len + 1, d] (row 0 is the
  BOS position), `unembed` [d, n_out], and per layer l: `blocks.l.w_q|w_k|w_v`
  [heads, d, d_head], `blocks.l.b_q|b_k|b_v` [heads, d_head], `blocks.l.w_o` [heads, d_head, d],
  `blocks.l.b_o` [d], `blocks.l.w_in` [d, d_mlp], `blocks.l.b_in`, `blocks.l.w_out` [d_mlp, d],
  `blocks.l.b_out`.
- `data.npz`: `tokens` [n, max_seq_len + 1] ids (BOS first, PAD after each input), `lengths` [n],
  `outputs` [n, max_seq_len + 1] true output (class index, or value), NaN where undefined.
- `inputs.json` / `outputs.json`: the same inputs and outputs as token and output values.
- `truth.npz`: `relevance` (G), `graded` (Gg) [n, out_pos, in_pos], `valid_in`, `valid_out`,
  `pattern_rows` [n, pos], `pattern.<head>` [n, query, key] true attention per head.
- `case.json`: ground-truth components (head/MLP -> RASP node), edges, program source and
  graph, verification figures.
- `manifest.json`: sha256 of each file.

Forward pass (float64; no LayerNorm; position 0 is BOS):

    x = token_embed[tokens] + pos_embed[:T]
    for each layer:
        q, k, v = x @ w_q + b_q, x @ w_k + b_k, x @ w_v + b_v      # per head
        scores = q k^T / sqrt(key_size); keys at PAD positions (and future keys if
        causal) get -1e30; pattern = softmax over keys
        x = x + sum_heads (pattern @ v) @ w_o + b_o
        x = x + relu(x @ w_in + b_in) @ w_out + b_out
    logits = x @ unembed      # argmax = output class; numerical: logits[..., 0]

At every position where `outputs` is not NaN, argmax(logits) equals `outputs`
(numerical outputs: logits[..., 0] within 1e-4 of `outputs`).
"""


def export_case(compiled: CompiledCase, out: Path) -> list[Path]:
    """Writes the export folder; the folder appears complete or not at all."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        compiled.save(tmp)
        inputs = [[jsonable(x) for x in xs] for xs in compiled.inputs]
        outputs = []
        for b, n in enumerate(compiled.lengths):
            row = []
            for p in range(1, int(n) + 1):
                v = compiled.outputs[b, p]
                if np.isnan(v):
                    row.append(None)
                elif compiled.weights.categorical:
                    row.append(compiled.weights.output_values[int(v)])
                else:
                    row.append(float(v))
            outputs.append(row)
        atomic_write_bytes(tmp / "inputs.json", json.dumps(inputs).encode())
        atomic_write_bytes(tmp / "outputs.json", json.dumps(outputs).encode())
        atomic_write_bytes(tmp / "FORMAT.md", FORMAT.format(name=compiled.case.full_name).encode())
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return sorted(out.iterdir())
