"""The Dyck twin: a hand-built stack-attention model for the tracr Shuffle-Dyck cases (Wen et al. 2023).

tracr decides Shuffle-Dyck with uniform attention over each prefix in which matched pairs
cancel (share of opens minus share of closes). `dyck_stack` builds, directly in numpy, a three-layer model of
the same architecture that decides it with stack-style attention instead:

    L0H0  counting head: position p attends uniformly to BOS and positions 1..p; its value
          (+1 open, -1 close, per bracket kind) gives depth_frac = depth / (p + 1).
    L0MLP depth: depth = (p + 1) depth_frac, depth^2 and the depth before p, squared
          (ReLU staircases gated by the position, exact at integers).
    L1Hk  stack head of kind k: a closing bracket attends to its matching opening bracket,
          the latest position i <= p whose depth before i equals the depth after p (the top
          of the stack); no match (an unmatched close), opens and other kinds: BOS. Value
          1 for a bracket, 0 for BOS, so `match:k` is 1 exactly at matched closes.
    L2H0  every position attends uniformly to the brackets; value 1 - 2 match gives
          unmatched_share = (n - 2 matched pairs) / n, 0 iff every bracket is matched.
    L2MLP balanced = [unmatched_share < 1/8] as a one-hot read-out (BOS reads True, as tracr's).

Residual layout (one labelled direction each; no rotation):

    tokens:<t> (every input id) | one | indices:0..L-1 | per kind k: depth_frac:k, depth:k,
    depth_sq:k, pre_depth_sq:k, match:k | unmatched_share | balanced:False | balanced:True
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import numpy as np

from interpbench.compiled import CompiledCase
from interpbench.components import Component, Edge
from interpbench.errors import VerificationError
from interpbench.twin_dyck_weights import MARGIN, Layout, stack_weights
from interpbench.twin_reshuffle import WEN
from interpbench.twins import LOGIT_ATOL, TwinModel, TwinNotApplicable, twin
from interpbench.weights import ModelWeights

REFERENCE = (f"{WEN}; stack attention after Yao et al. 2021, Self-Attention Networks Can Process "
             "Bounded Hierarchical Languages")
PAIRS = {"(": ")", "[": "]", "{": "}", "<": ">"}
MAX_ENUMERATED = 4096  # domains up to this size are checked input by input at build time


def bracket_kinds(vocab: tuple[Any, ...]) -> list[tuple[str, str]]:
    """The (open, close) pairs a vocabulary is made of, in vocabulary order.

    Raises:
        TwinNotApplicable: some token is not half of a bracket pair present in the vocabulary.
    """
    kinds = [(t, PAIRS[t]) for t in vocab if t in PAIRS and PAIRS[t] in vocab]
    if not kinds or set(vocab) - {t for k in kinds for t in k}:
        raise TwinNotApplicable(f"not a Dyck case: vocabulary {list(vocab)} is not made of bracket pairs")
    return kinds


def matches(xs: list[Any], kinds: list[tuple[str, str]]) -> list[int]:
    """Stack reference: for each position (0-based), its matching open's position, else -1."""
    out, stacks = [-1] * len(xs), {o: [] for o, _ in kinds}
    opener = {c: o for o, c in kinds}
    for i, x in enumerate(xs):
        if x in stacks:
            stacks[x].append(i)
        elif stacks[opener[x]]:
            out[i] = stacks[opener[x]].pop()
    return out


def balanced(xs: list[Any], kinds: list[tuple[str, str]]) -> bool:
    """Shuffle-Dyck: every bracket kind balanced on its own."""
    return 2 * sum(m >= 0 for m in matches(xs, kinds)) == len(xs)


def _patterns(compiled: CompiledCase, kinds: list[tuple[str, str]]) -> dict[str, np.ndarray]:
    """True patterns of the hand-built heads on the evaluation inputs (query rows 1..n)."""
    n, t = compiled.tokens.shape
    out = {"L0H0": np.zeros((n, t, t)), "L2H0": np.zeros((n, t, t))}
    out.update({f"L1H{k}": np.zeros((n, t, t)) for k in range(len(kinds))})
    for b, xs in enumerate(compiled.inputs):
        length, found = len(xs), matches(list(xs), kinds)
        for p in range(1, length + 1):
            out["L0H0"][b, p, : p + 1] = 1.0 / (p + 1)
            out["L2H0"][b, p, 1 : length + 1] = 1.0 / length
            for k, (_, c) in enumerate(kinds):
                key = found[p - 1] + 1 if xs[p - 1] == c and found[p - 1] >= 0 else 0
                out[f"L1H{k}"][b, p, key] = 1.0
    return out


def _components(lay: Layout, units: int) -> tuple[tuple[Component, ...], tuple[Edge, ...]]:
    """Components (the RASP-like nodes of the module docstring) and the edges between them.

    Args:
        lay: The residual layout.
        units: Hidden units of L0MLP (all of them compute `depth`).
    """
    names = [f"{o}{c}" for o, c in lay.kinds]
    toks = tuple(lab for lab in lay.labels if lab.startswith("tokens:"))
    idxs = tuple(lab for lab in lay.labels if lab.startswith("indices:"))
    fracs = tuple(f"depth_frac:{m}" for m in names)
    depth = {m: (f"depth:{m}", f"depth_sq:{m}", f"pre_depth_sq:{m}") for m in names}
    out = ("balanced:False", "balanced:True")

    def comp(name: str, layer: int, head: int | None, node: str | None, expr: str | None, role: str,
             reads: tuple[str, ...] = (), writes: tuple[str, ...] = (),
             neurons: tuple[int, ...] = ()) -> Component:  # fmt: skip
        kind = "mlp" if head is None else "head"
        return Component(name, kind, layer, head, neurons, node, expr, role, reads, writes, node is not None)

    comps = [comp("L0H0", 0, 0, "depth_frac", "Aggregate", "aggregate", (*toks, *idxs), fracs),
             comp("L0MLP", 0, None, "depth", "SequenceMap", "sequence_map", (*fracs, *toks, *idxs, "one"),
                  tuple(x for m in names for x in depth[m]), tuple(range(units))),
             comp("L1MLP", 1, None, None, None, "inert"),
             comp("L2H0", 2, 0, "unmatched_share", "Aggregate", "aggregate",
                  (*toks, *(f"match:{m}" for m in names)), ("unmatched_share",)),
             comp("L2MLP", 2, None, "balanced", "Map", "map", ("one", "unmatched_share", lay.bos), out, (0, 1, 2))]
    comps += [comp(f"L1H{k}", 1, k, f"match:{m}", "Aggregate", "aggregate",
                   (*toks, *idxs, "one", *depth[m]), (f"match:{m}",)) for k, m in enumerate(names)]  # fmt: skip
    comps += [comp(f"L{l}H{h}", l, h, None, None, "inert") for l in (0, 2) for h in range(1, len(names))]
    comps.sort(key=lambda c: (c.layer, c.kind != "head", c.head or 0, c.name))
    edges = [Edge("embed:tokens", "L0H0", toks), Edge("embed:indices", "L0H0", idxs), Edge("L0H0", "L0MLP", fracs),
             Edge("embed:tokens", "L0MLP", toks), Edge("embed:indices", "L0MLP", idxs)]  # fmt: skip
    for k, m in enumerate(names):
        edges += [Edge("L0MLP", f"L1H{k}", depth[m]), Edge("embed:tokens", f"L1H{k}", toks),
                  Edge("embed:indices", f"L1H{k}", idxs), Edge(f"L1H{k}", "L2H0", (f"match:{m}",))]  # fmt: skip
    edges += [Edge("embed:tokens", "L2H0", toks), Edge("L2H0", "L2MLP", ("unmatched_share",)),
              Edge("embed:tokens", "L2MLP", (lay.bos,)), Edge("L2MLP", "unembed", out)]  # fmt: skip
    return tuple(comps), tuple(edges)


def domain_inputs(compiled: CompiledCase, rng: np.random.Generator, n_random: int = 2000) -> list[list[Any]]:
    """Every input of the case's domain, or `n_random` draws from it when it has more than MAX_ENUMERATED."""
    case = compiled.case
    dom, alphabet = case.domain, case.domain.tokens(case.vocab)
    hi = dom.max_len if dom.max_len is not None else case.max_seq_len
    if sum(len(alphabet) ** n for n in range(dom.min_len, hi + 1)) > MAX_ENUMERATED:
        return dom.sample(rng, n_random, case.vocab, case.max_seq_len)
    every = (list(xs) for n in range(dom.min_len, hi + 1) for xs in itertools.product(alphabet, repeat=n))
    return [xs for xs in every if dom.contains(xs, case.vocab, case.max_seq_len)]


def _check_domain(compiled: CompiledCase, weights: ModelWeights, inputs: list[list[Any]]) -> float:
    """Largest read-out difference from the base model over `inputs` (BOS and real positions)."""
    import torch

    from interpbench.runtime import build_runtime

    tokens, lengths = compiled.encode(inputs)
    with torch.no_grad():
        ids = torch.from_numpy(tokens)
        diff = np.abs(build_runtime(weights)(ids).numpy() - compiled.model(ids).numpy())
    real = np.arange(tokens.shape[1])[None, :] <= lengths[:, None]
    err = np.where(real[:, :, None], diff, 0.0).max(axis=(1, 2))
    if not err.max() <= LOGIT_ATOL:
        bad = int(np.nan_to_num(err, nan=np.inf).argmax())
        raise VerificationError(f"{compiled.case.full_name} (dyck_stack): read-out differs from the base "
                                f"model's by {err[bad]:.2e} on input {inputs[bad]}")  # fmt: skip
    return float(err.max())


@twin("dyck_stack", exact=False, reference=REFERENCE, everywhere=False)
def dyck_stack(compiled: CompiledCase, rng: np.random.Generator) -> TwinModel:
    """A hand-built model deciding Shuffle-Dyck with stack attention (close to its matching open), not cancellation.

    Applies to cases whose vocabulary is made of bracket pairs, whose output is the
    categorical (False, True) and whose program gives Shuffle-Dyck (every kind balanced,
    at every position) on every evaluation input. The model is built directly (module
    docstring); besides `make_twin`'s check on the evaluation inputs, its read-out is
    checked against the base model's on every domain input (or 2000 draws from a large
    domain). The truth's heads and components are the hand-built ones; token truth and
    the program are the case's.
    """
    w, case = compiled.weights, compiled.case
    kinds = bracket_kinds(tuple(case.vocab))
    if w.output_values != (False, True):
        raise TwinNotApplicable(f"not a Dyck case: outputs {w.output_values} are not (False, True)")
    for xs, row, n in zip(compiled.inputs, compiled.outputs, compiled.lengths):
        if not np.array_equal(row[1 : n + 1], np.full(n, float(balanced(list(xs), kinds)))):
            raise TwinNotApplicable(f"not a Dyck case: the program's output on {list(xs)} is not Shuffle-Dyck")
    if w.key_size < case.max_seq_len + 3:
        raise TwinNotApplicable(f"key size {w.key_size} < max_seq_len + 3 leaves no room for the stack head's score")
    weights, lay = stack_weights(compiled, kinds)
    inputs = domain_inputs(compiled, rng)
    err = _check_domain(compiled, weights, inputs)
    comps, edges = _components(lay, weights.layers[0]["w_in"].shape[1])
    truth = dataclasses.replace(compiled.truth, patterns=_patterns(compiled, kinds), components=comps, edges=edges)
    notes = {"stack_heads": [f"L1H{k}" for k in range(len(kinds))], "counting_head": "L0H0",
             "kinds": [o + c for o, c in kinds], "domain_inputs_checked": len(inputs),
             "domain_max_logit_error": err, "margin": MARGIN, "n_layers": weights.n_layers,
             "n_heads": weights.n_heads, "d_model": weights.d_model}  # fmt: skip
    return TwinModel(weights, truth, notes)
