"""Explanation: what a method returns, saved as npz + JSON before anything scores it."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

from interpbench.storage import atomic_write_bytes, npz_bytes, read_npz

KINDS = ("token_relevance", "head_patterns", "program", "circuit")
# 1: program was source text or None; 2: program is a JSON spec, plus head_programs and source.
SCHEMA = 2


@dataclasses.dataclass(frozen=True)
class Explanation:
    """One method's explanation of one compiled case.

    Attributes:
        token_relevance: R [n, out_pos, in_pos] in model coordinates (captum's
            orientation: one relevance row per output position).
        head_patterns: {head name such as `L0H1`: [n, query, key]} predicted attention.
        program: Executable JSON form of a recovered whole program
            (`interpbench.rasp/1`, see `interpbench.rasp_spec`); interpreted, never exec'd.
        head_programs: {head name: executable JSON form of a recovered selector program}
            (`interpbench.selector/1`, see `interpbench.selector_dsl`).
        source: Readable Python source of the recovered program(s), for people.
        circuit: Score per component or edge name.
        diagnostics: Free-form numbers the method wants recorded (JSON-safe).
    """

    token_relevance: np.ndarray | None = None
    head_patterns: dict[str, np.ndarray] | None = None
    program: dict[str, Any] | None = None
    head_programs: dict[str, dict[str, Any]] | None = None
    source: str | None = None
    circuit: dict[str, float] | None = None
    diagnostics: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def kinds(self) -> tuple[str, ...]:
        """Which kinds this explanation carries."""
        return tuple(k for k in KINDS if getattr(self, k) is not None)

    def save(self, folder: Path) -> None:
        """Writes `explanation.npz` and `explanation.json` atomically."""
        arrays: dict[str, np.ndarray] = {}
        if self.token_relevance is not None:
            arrays["token_relevance"] = np.asarray(self.token_relevance, dtype=np.float64)
        for k, v in (self.head_patterns or {}).items():
            arrays[f"head_pattern.{k}"] = np.asarray(v, dtype=np.float64)
        atomic_write_bytes(folder / "explanation.npz", npz_bytes(arrays))
        meta = {"schema": SCHEMA, "program": self.program, "head_programs": self.head_programs, "source": self.source,
                "circuit": self.circuit, "diagnostics": self.diagnostics,
                "has_head_patterns": self.head_patterns is not None}  # fmt: skip
        atomic_write_bytes(folder / "explanation.json", json.dumps(meta, indent=1).encode())

    @classmethod
    def load(cls, folder: Path) -> Explanation:
        """Reads the form written by `save`, in this schema or an older one.

        Raises:
            BadInputError: The folder was written by a newer interpbench.
        """
        arrays = read_npz(folder / "explanation.npz")
        meta = json.loads((folder / "explanation.json").read_text())
        schema = int(meta.get("schema", 1))
        if schema > SCHEMA:
            from interpbench.errors import BadInputError

            raise BadInputError(f"{folder} holds explanation schema {schema}; this interpbench reads up to {SCHEMA}")
        if schema == 1 and isinstance(meta.get("program"), str):  # schema 1 kept program source as text
            meta = {**meta, "source": meta["program"], "program": None}
        patterns = {k.split(".", 1)[1]: v for k, v in arrays.items() if k.startswith("head_pattern.")}
        return cls(
            token_relevance=arrays.get("token_relevance"),
            head_patterns=patterns if meta.get("has_head_patterns") else None,
            program=meta.get("program"),
            head_programs=meta.get("head_programs"),
            source=meta.get("source"),
            circuit=meta.get("circuit"),
            diagnostics=meta.get("diagnostics", {}),
        )
