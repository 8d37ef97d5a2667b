"""The compile stage: RASP -> tracr graph -> craft model -> weights (the only JAX/tracr-compiler user).

We run tracr's stages ourselves (as `compile_rasp_to_model` does) so the RASP graph and
the craft model survive: they say which node each head and MLP neuron implements.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax

jax.config.update("jax_enable_x64", True)  # tracr's weights and forward in float64

import jax.numpy as jnp  # noqa: E402
import networkx as nx  # noqa: E402
import numpy as np  # noqa: E402
from tracr.compiler import (  # noqa: E402
    assemble,
    basis_inference,
    craft_graph_to_model,
    craft_model_to_transformer,
    expr_to_craft_graph,
    nodes,
    rasp_to_graph,
    validating,
)
from tracr.craft import bases, transformers  # noqa: E402
from tracr.rasp import rasp  # noqa: E402

from interpbench.case import Case  # noqa: E402
from interpbench.components import Component, Edge  # noqa: E402
from interpbench.errors import CompileError  # noqa: E402
from interpbench.program import relabel  # noqa: E402
from interpbench.storage import jsonable  # noqa: E402
from interpbench.weights import ModelWeights  # noqa: E402

BOS = "compiler_bos"
PAD = "compiler_pad"


@dataclasses.dataclass
class TracrStages:
    """Everything tracr's stages produce for one case, kept for introspection."""

    program: rasp.SOp
    graph: nx.DiGraph
    sink: dict[str, Any]
    craft_model: transformers.SeriesWithResiduals
    assembled: assemble.AssembledTransformerModel
    jit_forward: Any = None


def build_program(case: Case) -> rasp.SOp:
    """A fresh program from the case's factory, with stable labels."""
    program = case.program()
    if not isinstance(program, rasp.SOp):
        raise CompileError(f"{case.full_name}: factory returned {type(program).__name__}, not a RASP SOp")
    return relabel(program)


def rasp_to_stages(case: Case) -> TracrStages:
    """Runs tracr's compile stages on the case, keeping graph and craft model.

    Raises:
        CompileError: tracr refuses the program; the message names the expression.
    """
    program = build_program(case)
    unsupported = validating.static_validate(program)
    if unsupported:
        first = unsupported[0]
        raise CompileError(f"{case.full_name}: tracr cannot compile {first.expr.label}: {first.reason}")
    try:
        extracted = rasp_to_graph.extract_rasp_graph(program)
        graph, sources, sink = extracted.graph, extracted.sources, extracted.sink
        basis_inference.infer_bases(graph, sink, set(case.vocab), case.max_seq_len)
        expr_to_craft_graph.add_craft_components_to_rasp_graph(
            graph,
            bos_dir=bases.BasisDirection(rasp.tokens.label, BOS),
            mlp_exactness=case.mlp_exactness,
            causal=case.causal,
        )
        craft_model = craft_graph_to_model.craft_graph_to_model(graph, sources)
        assembled = craft_model_to_transformer.craft_model_to_transformer(
            craft_model=craft_model,
            graph=graph,
            sink=sink,
            max_seq_len=case.max_seq_len,
            causal=case.causal,
            compiler_bos=BOS,
            compiler_pad=PAD,
        )
    except (NotImplementedError, ValueError, KeyError, AssertionError, TypeError) as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CompileError(f"{case.full_name}: tracr failed: {msg}") from exc
    return TracrStages(program, graph, sink, craft_model, assembled)


def stages_to_weights(stages: TracrStages, case: Case) -> ModelWeights:
    """Reads tracr's assembled parameters into TransformerLens-oriented numpy arrays."""
    a = stages.assembled
    p = {k: {kk: np.asarray(vv, dtype=np.float64) for kk, vv in v.items()} for k, v in a.params.items()}
    cfg = a.model_config
    h, ks = cfg.num_heads, cfg.key_size
    layers = []
    for l in range(cfg.num_layers):
        att, mlp = f"transformer/layer_{l}/attn", f"transformer/layer_{l}/mlp"

        def heads_in(name: str) -> tuple[np.ndarray, np.ndarray]:
            w, b = p[f"{att}/{name}"]["w"], p[f"{att}/{name}"]["b"]
            return w.reshape(w.shape[0], h, ks).transpose(1, 0, 2), b.reshape(h, ks)

        w_q, b_q = heads_in("query")
        w_k, b_k = heads_in("key")
        w_v, b_v = heads_in("value")
        lin = p[f"{att}/linear"]
        layers.append(
            {
                "w_q": w_q, "b_q": b_q, "w_k": w_k, "b_k": b_k, "w_v": w_v, "b_v": b_v,
                "w_o": lin["w"].reshape(h, ks, -1), "b_o": lin["b"],
                "w_in": p[f"{mlp}/linear_1"]["w"], "b_in": p[f"{mlp}/linear_1"]["b"],
                "w_out": p[f"{mlp}/linear_2"]["w"], "b_out": p[f"{mlp}/linear_2"]["b"],
            }
        )  # fmt: skip
    labels = tuple(a.residual_labels)
    out_basis = list(stages.sink[nodes.OUTPUT_BASIS])
    # Rebuild the read-out from output-space labels; never assume it is the first dims.
    unembed = np.zeros((len(labels), len(out_basis)))
    for k, direction in enumerate(out_basis):
        unembed[labels.index(str(direction)), k] = 1.0
    categorical = rasp.is_categorical(stages.sink[nodes.EXPR])
    enc = a.input_encoder.encoding_map
    input_tokens = tuple(jsonable(v) for v, _ in sorted(enc.items(), key=lambda kv: kv[1]))
    return ModelWeights(
        token_embed=p["token_embed"]["embeddings"],
        pos_embed=p["pos_embed"]["embeddings"],
        layers=tuple(layers),
        unembed=unembed,
        residual_labels=labels,
        input_tokens=input_tokens,
        output_values=tuple(jsonable(d.value) for d in out_basis) if categorical else None,
        key_size=int(ks),
        causal=case.causal,
        bos_id=int(enc[BOS]),
        pad_id=int(enc[PAD]),
    )


def _labels(space: bases.VectorSpaceWithBasis) -> tuple[str, ...]:
    return tuple(str(d) for d in space.basis)


def _role(expr: rasp.RASPExpr) -> str:
    if isinstance(expr, rasp.Aggregate):
        return "aggregate"
    if isinstance(expr, rasp.SelectorWidth):
        return "selector_width"
    if isinstance(expr, rasp.SequenceMap):
        return "sequence_map"
    return "map"


def stages_to_components(stages: TracrStages) -> tuple[list[Component], list[Edge]]:
    """Maps every head and MLP neuron to its RASP node, and builds the component DAG."""
    graph, sink = stages.graph, stages.sink
    cfg = stages.assembled.model_config
    _, module_names = assemble._get_model_config_and_module_names(stages.craft_model)
    head_owner: dict[int, str] = {}
    mlp_hidden: dict[str, set[str]] = {}
    for node_id, node in graph.nodes.items():
        block = node.get(nodes.MODEL_BLOCK)
        if isinstance(block, transformers.SeriesWithResiduals):  # SelectorWidth: attn + mlp
            head_owner[id(block.blocks[0])] = node_id
            mlp_hidden[node_id] = set(_labels(block.blocks[1].fst.output_space))
        elif isinstance(block, transformers.AttentionHead):
            head_owner[id(block)] = node_id
        elif isinstance(block, transformers.MLP):
            mlp_hidden[node_id] = set(_labels(block.fst.output_space))
    on_path = set(nx.ancestors(graph, sink[nodes.ID])) | {sink[nodes.ID]}

    def make(node_id: str | None, **kw: Any) -> Component:
        expr = graph.nodes[node_id][nodes.EXPR] if node_id else None
        return Component(
            node=node_id,
            expr=type(expr).__name__ if expr is not None else None,
            role=_role(expr) if expr is not None else "inert",
            on_output_path=node_id in on_path if node_id else False,
            **kw,
        )

    comps: list[Component] = []
    seen_layers: dict[tuple[int, str], bool] = {}
    for module_name, block in zip(module_names, stages.craft_model.blocks):
        layer = int(module_name.split("/")[1].split("_")[1])
        if isinstance(block, transformers.MLP):
            seen_layers[(layer, "mlp")] = True
            hidden = _labels(block.fst.output_space)
            owners = [n for n in mlp_hidden if mlp_hidden[n] & set(hidden)]
            for n in owners:
                neurons = tuple(i for i, lab in enumerate(hidden) if lab in mlp_hidden[n])
                name = f"L{layer}MLP" if len(owners) == 1 else f"L{layer}MLP:{n}"
                blk = graph.nodes[n][nodes.MODEL_BLOCK]
                mlp = blk.blocks[1] if isinstance(blk, transformers.SeriesWithResiduals) else blk
                comps.append(make(n, name=name, kind="mlp", layer=layer, head=None, neurons=neurons,
                                  reads=_labels(mlp.fst.input_space), writes=_labels(mlp.snd.output_space)))
        else:
            seen_layers[(layer, "attn")] = True
            heads = list(block.as_multi().heads())
            for hi, head in enumerate(heads):
                n = head_owner.get(id(head))
                reads = _labels(head.w_qk.left_space) + _labels(head.w_qk.right_space) + _labels(head.w_ov.input_space)
                comps.append(make(n, name=f"L{layer}H{hi}", kind="head", layer=layer, head=hi, neurons=(),
                                  reads=tuple(dict.fromkeys(reads)), writes=_labels(head.w_ov.output_space)))
            for hi in range(len(heads), cfg.num_heads):
                comps.append(make(None, name=f"L{layer}H{hi}", kind="head", layer=layer, head=hi,
                                  neurons=(), reads=(), writes=()))
    for layer in range(cfg.num_layers):
        if (layer, "attn") not in seen_layers:
            for hi in range(cfg.num_heads):
                comps.append(make(None, name=f"L{layer}H{hi}", kind="head", layer=layer, head=hi,
                                  neurons=(), reads=(), writes=()))
        if (layer, "mlp") not in seen_layers:
            comps.append(make(None, name=f"L{layer}MLP", kind="mlp", layer=layer, head=None,
                              neurons=(), reads=(), writes=()))
    comps.sort(key=lambda c: (c.layer, c.kind != "head", c.head or 0, c.name))
    return comps, _edges(stages, comps)


def _edges(stages: TracrStages, comps: Sequence[Component]) -> list[Edge]:
    """Component -> component edges, looking through selectors to the SOps they read."""
    graph = stages.graph
    by_node: dict[str, list[Component]] = {}
    for c in comps:
        if c.node:
            by_node.setdefault(c.node, []).append(c)

    def sources(node_id: str) -> set[str]:
        found: set[str] = set()
        for pred in graph.predecessors(node_id):
            if pred in by_node:
                found.add(pred)
            elif pred in (rasp.tokens.label, rasp.indices.label):
                found.add(pred)
            else:
                found |= sources(pred)
        return found

    def names(node_id: str) -> list[tuple[str, tuple[str, ...]]]:
        """Where a node's value leaves from: its MLP for SelectorWidth, else all its parts."""
        if node_id in (rasp.tokens.label, rasp.indices.label):
            space = [f"{node_id}:{v}" for v in sorted(graph.nodes[node_id][nodes.VALUE_SET], key=str)]
            return [(f"embed:{node_id}", tuple(space))]
        cs = by_node[node_id]
        if any(c.role == "selector_width" for c in cs):
            cs = [c for c in cs if c.kind == "mlp"]
        return [(c.name, c.writes) for c in cs]

    def readers(node_id: str) -> list[Component]:
        """Where a node's inputs arrive: its head for SelectorWidth, else all its parts."""
        cs = by_node[node_id]
        if any(c.role == "selector_width" for c in cs):
            return [c for c in cs if c.kind == "head"]
        return cs

    edges: dict[tuple[str, str], Edge] = {}
    for node_id in by_node:
        for src in sources(node_id):
            for src_name, space in names(src):
                for c in readers(node_id):
                    edges[(src_name, c.name)] = Edge(src_name, c.name, space)
    sink = stages.sink[nodes.ID]
    for src_name, space in names(sink) if sink in by_node else []:
        edges[(src_name, "unembed")] = Edge(src_name, "unembed", space)
    # Within a SelectorWidth node the head feeds its own MLP.
    for cs in by_node.values():
        heads = [c for c in cs if c.kind == "head"]
        mlps = [c for c in cs if c.kind == "mlp"]
        for h in heads:
            for m in mlps:
                edges[(h.name, m.name)] = Edge(h.name, m.name, h.writes)
    return sorted(edges.values(), key=lambda e: (e.src, e.dst))


def tracr_residuals(stages: TracrStages, token_ids: np.ndarray, pad_id: int) -> list[np.ndarray]:
    """tracr's own forward on a padded batch: [embeddings, resid after each half-layer], each [n, T, d].

    tracr's model masks PAD keys when given its `pad_token` (the assembled `forward` is
    built without one), so inputs of every length run in one call, jitted once per case:
    one XLA compile instead of one per input length. At real positions the result equals
    the unpadded forward (a masked key's weight is exactly 0).
    """
    import haiku as hk

    a = stages.assembled
    if stages.jit_forward is None:

        def forward(tokens: Any) -> Any:
            model = a.get_compiled_model()
            model.pad_token = pad_id
            model.use_unembed_argmax = False
            return model(tokens, use_dropout=False).transformer_output

        stages.jit_forward = jax.jit(hk.without_apply_rng(hk.transform(forward)).apply)
    params = jax.tree_util.tree_map(lambda x: jnp.asarray(x, dtype=jnp.float64), a.params)
    out = stages.jit_forward(params, jnp.asarray(token_ids))
    return [np.asarray(out.input_embeddings)] + [np.asarray(r) for r in out.residuals]


def release_jax_memory() -> None:
    """Drops JAX's compiled programs once a case is compiled and verified.

    tracr's assembly and the verification forward compile XLA programs for this case's
    shapes, which later cases mostly do not reuse; kept, they grow a worker process by
    about 50 MB per case compiled (0.6 GB instead of 1.2 GB after 12 cases), at the cost
    of recompiling the few shared ones (a cold compile takes ~30% longer).
    """
    jax.clear_caches()


def tracr_version() -> str:
    """Installed version of the tracr distribution."""
    from importlib.metadata import version

    return version("tracr-pypi")
