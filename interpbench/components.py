"""Component-level ground truth: which RASP node each head and MLP slice implements."""

from __future__ import annotations

import dataclasses
from typing import Any

# Roles a component can play; "inert" components exist in the weights but compute nothing.
ROLES = ("aggregate", "selector_width", "map", "sequence_map", "inert")


@dataclasses.dataclass(frozen=True)
class Component:
    """One head, or the neurons of one MLP layer that implement one RASP node.

    Attributes:
        name: `L{layer}H{head}` for heads, `L{layer}MLP` (+ `:{node}` when shared) for MLPs.
        kind: "head" or "mlp".
        layer: tracr layer (attention and MLP of layer l share the index).
        head: Head index for heads, else None.
        neurons: Hidden-neuron indices of the layer's MLP that belong to the node.
        node: RASP label implemented, or None for inert components.
        expr: RASP expression type (Aggregate, SelectorWidth, Map, SequenceMap, ...).
        role: One of ROLES.
        reads: Residual directions the component reads.
        writes: Residual directions the component writes.
        on_output_path: Whether the program output depends on the node.
    """

    name: str
    kind: str
    layer: int
    head: int | None
    neurons: tuple[int, ...]
    node: str | None
    expr: str | None
    role: str
    reads: tuple[str, ...]
    writes: tuple[str, ...]
    on_output_path: bool

    @property
    def inert(self) -> bool:
        """True for components that do nothing (padding heads, empty MLPs, unused nodes)."""
        return self.role == "inert" or not self.on_output_path

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Component:
        d = dict(d)
        for k in ("neurons", "reads", "writes"):
            d[k] = tuple(d[k])
        return cls(**d)


@dataclasses.dataclass(frozen=True)
class Edge:
    """A dependency between components (or `embed`/`unembed`) through the residual stream.

    Attributes:
        src: Component name, or `embed:tokens` / `embed:indices` for the embeddings.
        dst: Component name, or `unembed`.
        subspace: Residual directions carrying the information (what `src` writes).
    """

    src: str
    dst: str
    subspace: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Edge:
        return cls(src=d["src"], dst=d["dst"], subspace=tuple(d["subspace"]))
