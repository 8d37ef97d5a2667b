"""Listings behind `interpbench list`: suites, cases, methods, metrics and variants as JSON-safe records."""

from __future__ import annotations

from typing import Any

from interpbench.errors import BadInputError

KINDS = ("suites", "cases", "methods", "metrics", "variants")


def methods_info() -> list[dict[str, Any]]:
    """Every method (broken adapter files included, as unavailable) with family, kinds and settings."""
    from interpbench.discovery import BROKEN
    from interpbench.method import list_methods

    info = []
    for m in list_methods():
        why = m.unavailable()
        info.append({"name": m.name, "family": m.family, "kinds": list(m.kinds), "version": m.version,
                     "params": m.defaults, "available": why is None,
                     "reason": None if why is None else f"unavailable: {why}"})  # fmt: skip
    info += [{"name": name, "family": "unknown", "kinds": [], "version": None, "params": {},
              "available": False, "reason": f"unavailable: {why}"} for name, why in BROKEN["methods"].items()]  # fmt: skip
    return info


def listing(what: str) -> tuple[list[dict[str, Any]], list[str]]:
    """The records of one listing and the columns a table shows of them.

    Raises:
        BadInputError: `what` is not one of KINDS (with "did you mean").
    """
    from interpbench.case import list_cases
    from interpbench.discovery import BROKEN
    from interpbench.metrics import list_metrics
    from interpbench.registry import unknown_name_message

    if what == "cases":
        data = [{"name": c.full_name, "suite": c.suite, "description": c.description, "vocab": list(c.vocab),
                 "max_seq_len": c.max_seq_len, "causal": c.causal, "reference": c.reference} for c in list_cases()]  # fmt: skip
        cols = ["name", "max_seq_len", "description"]
    elif what == "suites":
        counts: dict[str, int] = {}
        for c in list_cases():
            counts[c.suite] = counts.get(c.suite, 0) + 1
        data = [{"name": s, "cases": n, "available": True} for s, n in counts.items()]
        data += [{"name": s, "cases": 0, "available": False, "reason": f"unavailable: {why}"}
                 for s, why in BROKEN["suites"].items()]  # fmt: skip
        cols = ["name", "cases", "available"]
    elif what == "methods":
        data = sorted(methods_info(), key=lambda m: (m["family"], m["name"]))
        cols = ["family", "name", "kinds", "reason"]
    elif what == "metrics":
        data = [{"name": m.name, "level": m.level, "kind": m.kind, "higher_is_better": m.higher_is_better,
                 "better": "higher" if m.higher_is_better else "lower", "range": [m.low, m.high],
                 "description": m.description} for m in list_metrics()]  # fmt: skip
        cols = ["name", "level", "better", "range", "description"]
    elif what == "variants":
        from interpbench.twins import list_twins

        data = [{"name": "base", "exact": True, "reference": "", "description": "the compiled model itself"}]
        data += [{"name": t.name, "exact": t.exact, "reference": t.reference, "description": t.description}
                 for t in list_twins()]  # fmt: skip
        cols = ["name", "exact", "description"]
    else:
        raise BadInputError(unknown_name_message("listing", what, list(KINDS)))
    return data, cols
