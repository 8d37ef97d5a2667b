"""Plain-text summaries of a compiled case, for `interpbench show`."""

from __future__ import annotations

import numpy as np

from interpbench.compiled import CompiledCase


def informative_share(compiled: CompiledCase) -> float:
    """Share of defined output rows whose G row has both relevant and irrelevant inputs."""
    t = compiled.truth
    flags = []
    for b, i in zip(*np.nonzero(t.valid_out)):
        g = t.relevance[b, i, t.valid_in[b]]
        flags.append(0 < g.sum() < g.size)
    return float(np.mean(flags)) if flags else float("nan")


def case_summary(compiled: CompiledCase) -> str:
    """Program, component map and ground-truth summary of a case as text."""
    c, t, w = compiled.case, compiled.truth, compiled.weights
    lines = [
        f"{c.full_name}: {c.description}",
        f"reference: {c.reference}",
        f"vocab {list(c.vocab)}, max_seq_len {c.max_seq_len}, causal {c.causal}, "
        f"output {'categorical ' + str(list(w.output_values)) if w.categorical else 'numerical'}",
        f"model: {w.n_layers} layers x {w.n_heads} heads, d_model {w.d_model}; key {compiled.key}",
        "",
        "program (RASP graph, children first):",
    ]
    for node in t.program_graph:
        extra = f" [{node['predicate']}]" if "predicate" in node else ""
        enc = f" ({node['encoding']})" if "encoding" in node else ""
        lines.append(f"  {node['label']} = {node['type']}({', '.join(node['children'])}){extra}{enc}")
    lines += ["", "components (what implements what):"]
    for comp in t.components:
        what = f"{comp.node} ({comp.expr})" if comp.node else "inert"
        extra = f" neurons {len(comp.neurons)}" if comp.kind == "mlp" and comp.neurons else ""
        path = "" if comp.on_output_path or not comp.node else " [off output path]"
        lines.append(f"  {comp.name:<22} {what}{extra}{path}")
    lines += ["", "edges:"]
    lines += [f"  {e.src} -> {e.dst} ({len(e.subspace)} dims)" for e in t.edges]
    n_rows = int(t.valid_out.sum())
    lines += [
        "",
        "ground truth:",
        f"  evaluation inputs: {len(compiled.tokens)} (lengths {int(compiled.lengths.min())}-{int(compiled.lengths.max())})",
        f"  defined output rows: {n_rows}; undefined (RASP None): {t.n_undefined_outputs}",
        f"  informative token rows (G neither all 0 nor all 1): {informative_share(compiled):.0%}",
        f"  mean relevant inputs per row: {t.relevance.sum() / max(n_rows, 1):.2f}",
        f"  heads with a true pattern: {', '.join(sorted(t.patterns)) or 'none'}",
        f"  verification: {compiled.info}",
    ]
    return "\n".join(lines)


def case_run_text(compiled: CompiledCase, tokens: list) -> str:
    """The true program's output and the compiled model's decoded output on one input."""
    import torch

    from interpbench.program import evaluate, relabel

    c, w = compiled.case, compiled.weights
    truth = evaluate(relabel(c.program()), tokens)
    lines = [f"input: {' '.join(str(t) for t in tokens)}"]
    if not c.domain.contains(tokens, c.vocab, c.max_seq_len):
        lines.append("note: this input is outside the case's domain (ground truth is only defined on the domain)")
    lines.append("program: " + " ".join("None" if v is None else str(v) for v in truth))
    if len(tokens) > c.max_seq_len:
        lines.append(f"model: not run (it accepts at most {c.max_seq_len} tokens)")
        return "\n".join(lines)
    ids, _ = compiled.encode([tokens])
    with torch.no_grad():
        t = torch.as_tensor(ids)
        logits = compiled.model(t, compiled.model.key_mask(t)).numpy()
    decoded = compiled.decode(logits)[0, 1 : len(tokens) + 1]
    values = [w.output_values[int(k)] for k in decoded] if w.categorical else [f"{v:.4g}" for v in decoded]
    lines.append("model:   " + " ".join(str(v) for v in values))
    return "\n".join(lines)
