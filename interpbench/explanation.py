"""Explanation: what a method returns, saved as npz + JSON before anything scores it."""

from __future__ import annotations

import dataclasses
import json
import numbers
from pathlib import Path
from typing import Any

import numpy as np

from interpbench.storage import atomic_write_bytes, npz_bytes, read_npz

KINDS = ("token_relevance", "head_patterns", "program", "circuit")
# 1: program was source text or None; 2: program is a JSON spec, plus head_programs and source;
# 3: token_relevance is saved as the method returned it and `tie_tolerance` says which of its
#    differences are rounding noise (the scorer groups ties; schema 1-2 files load with the default).
SCHEMA = 3
# Relative tie tolerance of explanations that do not declare one: differences below one part in
# a million of the input's largest |R| are not signal (see token_metrics.snap_ties).
DEFAULT_TIE_TOLERANCE = 1e-6


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
        tie_tolerance: Relative tolerance of `token_relevance`: the scorer treats values of
            one row as tied when a chain of neighbours closer than `tie_tolerance` times
            the input's largest |R| joins them (`token_metrics.snap_ties`). A
            method whose arithmetic is float32 declares a larger one (perturbation
            adapters: 1e-5); 0 keeps every difference. In [0, 1).
    """

    token_relevance: np.ndarray | None = None
    head_patterns: dict[str, np.ndarray] | None = None
    program: dict[str, Any] | None = None
    head_programs: dict[str, dict[str, Any]] | None = None
    source: str | None = None
    circuit: dict[str, float] | None = None
    diagnostics: dict[str, Any] = dataclasses.field(default_factory=dict)
    tie_tolerance: float = DEFAULT_TIE_TOLERANCE

    def __post_init__(self) -> None:
        """Refuses a tie tolerance outside [0, 1): it would merge everything or mean nothing.

        Raises:
            BadInputError: `tie_tolerance` is not a number in [0, 1).
        """
        tol = self.tie_tolerance
        if isinstance(tol, bool) or not isinstance(tol, numbers.Real) or not 0 <= tol < 1:
            from interpbench.errors import BadInputError

            raise BadInputError(f"tie_tolerance must be a number in [0, 1), got {tol!r}")

    @property
    def kinds(self) -> tuple[str, ...]:
        """Which kinds this explanation carries."""
        return tuple(k for k in KINDS if getattr(self, k) is not None)

    def save(self, folder: Path, *, durable: bool = True) -> None:
        """Writes `explanation.npz` and `explanation.json` atomically (`durable`: see `storage.atomic_write_bytes`)."""
        arrays: dict[str, np.ndarray] = {}
        if self.token_relevance is not None:
            arrays["token_relevance"] = np.asarray(self.token_relevance, dtype=np.float64)
        for k, v in (self.head_patterns or {}).items():
            arrays[f"head_pattern.{k}"] = np.asarray(v, dtype=np.float64)
        atomic_write_bytes(folder / "explanation.npz", npz_bytes(arrays), durable=durable)
        meta = {"schema": SCHEMA, "program": self.program, "head_programs": self.head_programs, "source": self.source,
                "circuit": self.circuit, "diagnostics": self.diagnostics,
                "has_head_patterns": self.head_patterns is not None, "tie_tolerance": float(self.tie_tolerance)}  # fmt: skip
        atomic_write_bytes(folder / "explanation.json", json.dumps(meta, indent=1).encode(), durable=durable)

    @classmethod
    def load(cls, folder: Path) -> Explanation:
        """Reads the form written by `save`, in this schema or an older one.

        Schema 1 and 2 files carry no tie tolerance and load with DEFAULT_TIE_TOLERANCE
        (the scorer's relative tolerance of that time, then taken of each row's largest |R|;
        perturbation adapters snapped their own ties before saving, so theirs are exact).

        Raises:
            BadInputError: The folder was written by a newer interpbench, or declares a
                tie tolerance outside [0, 1).
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
            tie_tolerance=meta.get("tie_tolerance", DEFAULT_TIE_TOLERANCE),
        )
