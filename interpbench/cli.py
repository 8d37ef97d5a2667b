"""The `interpbench` command: a thin shell over the library."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from interpbench.errors import BadInputError, InterpbenchError
from interpbench.registry import split_names

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Score interpretability methods against compiled ground truth.")
out = Console()
err = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])


def _errors(fn: F) -> F:
    """Turns library errors into one line on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except InterpbenchError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def _table(title: str, columns: list[str], rows: list[list[Any]]) -> Table:
    t = Table(title=title)
    for c in columns:
        t.add_column(c, overflow="fold")  # wrap long names instead of cutting them
    for r in rows:
        t.add_row(*[_fmt(v) for v in r])
    return t


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "nan" if v != v else f"{v:.3f}"
    return str(v)


def _methods_info() -> list[dict[str, Any]]:
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


@app.command("list")
@_errors
def list_(
    what: Annotated[str, typer.Argument(help="suites, cases, methods or metrics")] = "cases",
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """List suites, cases, methods or metrics."""
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
        data = sorted(_methods_info(), key=lambda m: (m["family"], m["name"]))
        cols = ["family", "name", "kinds", "reason"]
    elif what == "metrics":
        data = [{"name": m.name, "level": m.level, "kind": m.kind, "higher_is_better": m.higher_is_better,
                 "range": [m.low, m.high], "description": m.description} for m in list_metrics()]  # fmt: skip
        cols = ["name", "level", "higher_is_better", "range", "description"]
    else:
        raise BadInputError(unknown_name_message("listing", what, ["suites", "cases", "methods", "metrics"]))
    if as_json:
        typer.echo(json.dumps(data, indent=1, default=str))
    else:
        out.print(_table(what, cols, [[d.get(c, "") if d.get(c) is not None else "" for c in cols] for d in data]))


@app.command()
@_errors
def show(
    target: Annotated[str, typer.Argument(help="Case name (suite/case) or a run cell directory.")],
    input_text: Annotated[str | None, typer.Option("--input", help='Tokens to run, e.g. "a b c" or "3,1,2".')] = None,
) -> None:
    """Show a case (program, components, ground truth) or a run cell (scores, recovered program).

    With --input, run the case's true program and compiled model, or the cell's recovered
    program(s), on that input.
    """
    from interpbench.case import get_case
    from interpbench.recovered import cell_text, execute, execution_text, is_cell, load_cell, parse_input

    path = Path(target)
    if is_cell(path):
        view = load_cell(path)
        out.print(cell_text(view), markup=False, highlight=False)
        if input_text is not None:
            if view.explanation is None:
                raise BadInputError(f"{path} is a failed cell; nothing to run")
            tokens = parse_input(input_text, get_case(view.meta["case"]).vocab)
            out.print("\n" + execution_text(execute(view.explanation, tokens), tokens), markup=False, highlight=False)
        return
    if path.exists():
        raise BadInputError(f"{path} is neither a case name nor a run cell directory (no cell.json)")
    from interpbench.compiled import compile_case
    from interpbench.report_text import case_run_text, case_summary

    c = get_case(target)
    tokens = parse_input(input_text, c.vocab) if input_text is not None else None
    with err.status(f"compiling {c.full_name}"):
        compiled = compile_case(c)
    out.print(case_summary(compiled), markup=False, highlight=False)
    if tokens is not None:
        out.print("\n" + case_run_text(compiled, tokens), markup=False, highlight=False)


def _select(suite: list[str] | None, case: list[str] | None, method: list[str] | None) -> tuple[list[Any], list[Any]]:
    from interpbench.case import get_case, list_cases
    from interpbench.method import get_method, list_methods

    cases = [get_case(n) for n in split_names(case)] if case else list_cases(split_names(suite) or None)
    if case and suite:
        cases = [c for c in cases if c.suite in split_names(suite)]
    if method:
        methods = [get_method(n) for n in split_names(method)]
        for m in methods:
            if m.unavailable():
                raise BadInputError(f"method {m.name!r} is unavailable: {m.unavailable()}")
    else:
        methods = [m for m in list_methods() if not m.unavailable()]
    if not cases:
        raise BadInputError("the selection contains no case")
    return cases, methods


@app.command()
@_errors
def run(
    suite: Annotated[list[str] | None, typer.Option(help="Suite(s); repeatable or comma-separated.")] = None,
    case: Annotated[list[str] | None, typer.Option(help="Case(s) as suite/case.")] = None,
    method: Annotated[list[str] | None, typer.Option(help="Method(s).")] = None,
    variant: Annotated[list[str] | None, typer.Option(help="Model variant(s).")] = None,
    seed: Annotated[list[str] | None, typer.Option(help="Seed(s).")] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="New run directory.")] = None,
    resume: Annotated[Path | None, typer.Option(help="Finish an interrupted run directory.")] = None,
) -> None:
    """Run methods on cases, save explanations, score them and write the run's leaderboard."""
    from interpbench.leaderboard import method_summary, write_leaderboard
    from interpbench.run import default_run_dir, plan, run_grid

    cases, methods = _select(suite, case, method)
    variants = split_names(variant) or ["base"]
    try:
        seeds = [int(s) for s in split_names(seed)] or [0]
    except ValueError:
        raise BadInputError(f"--seed takes integers, got {seed}") from None
    if resume is not None:
        if not (resume / "run.json").exists():
            raise BadInputError(f"{resume} is not a run directory (no run.json)")
        run_dir = resume
    else:
        run_dir = out_dir or default_run_dir()
        if (run_dir / "run.json").exists():
            raise BadInputError(f"{run_dir} already holds a run; use --resume {run_dir} or another --out")
    total = len(plan(cases, methods, variants, seeds))
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err, transient=True) as bar:
        task = bar.add_task("running", total=total)

        def step(label: str) -> None:
            bar.update(task, description=label)
            bar.advance(task)

        rows = run_grid(cases, methods, run_dir, variants=variants, seeds=seeds, on_progress=step)
    write_leaderboard(rows, run_dir)
    out.print(_table(f"run {run_dir}", ["method", "family", "auroc", "mean_rank", "cases", "seconds"],
                     method_summary(rows).values.tolist()))  # fmt: skip
    _print_synthesis(rows, by_case=False)
    _print_failures(run_dir)
    out.print(f"rows: {len(rows)}; leaderboard: {run_dir / 'leaderboard.parquet'}", highlight=False)


def _print_synthesis(rows: Any, *, by_case: bool) -> None:
    from interpbench.leaderboard import synthesis_summary, synthesis_table

    table = synthesis_table(rows) if by_case else synthesis_summary(rows)
    if table.empty:
        return
    if by_case:
        table = table.assign(case=table["suite"] + "/" + table["case"])
        table = table[["case", "method", "soft_iou", "replacement_accuracy", "program_accuracy", "program_exact"]]
        table = table.rename(columns={"replacement_accuracy": "replaced", "program_accuracy": "prog_acc", "program_exact": "exact"})
    else:  # the terminal summary keeps the headline columns (80 wide); the CSVs have all of them
        table = table[["method", "soft_iou", "replacement_accuracy", "program_accuracy", "recovered", "exact", "cases"]]
        table = table.rename(columns={"replacement_accuracy": "replaced", "program_accuracy": "prog_acc"})
    out.print(_table("synthesis section (head patterns and programs)", list(table.columns), table.values.tolist()))


def _print_failures(run_dir: Path) -> None:
    from interpbench.run import collect_failures

    failures = collect_failures(run_dir)
    if failures:
        out.print(_table(f"{len(failures)} failed cells", ["case", "method", "seed", "error"],
                         [[f["case"], f["method"], f["seed"], f["error"]] for f in failures]))  # fmt: skip


@app.command()
@_errors
def score(run_dir: Annotated[Path, typer.Argument(help="A run directory.")]) -> None:
    """Re-score a run from its saved explanations and ground truth (no method re-runs)."""
    from interpbench.leaderboard import write_leaderboard
    from interpbench.run import rescore

    rows = rescore(run_dir)
    write_leaderboard(rows, run_dir)
    out.print(f"re-scored {len(rows)} rows into {run_dir / 'leaderboard.parquet'}", highlight=False)


@app.command()
@_errors
def leaderboard(
    source: Annotated[Path, typer.Argument(help="Run directory or leaderboard Parquet.")],
    out_dir: Annotated[Path | None, typer.Option("--out", help="Also write leaderboard.parquet/csv here.")] = None,
    metric: Annotated[str, typer.Option(help="Metric to summarise.")] = "auroc",
    by_case: Annotated[bool, typer.Option("--by-case", help="Show a case x method table.")] = False,
    synthesis: Annotated[bool, typer.Option("--synthesis", help="Show the synthesis section (head and program scores per case).")] = False,
) -> None:
    """Print a leaderboard (per-method summary, or case x method) and optionally write it."""
    from interpbench.leaderboard import method_summary, read_leaderboard, write_leaderboard
    from interpbench.metrics import get_metric

    if not source.exists():
        raise BadInputError(f"{source} does not exist")
    get_metric(metric)
    rows = read_leaderboard(source)
    if rows.empty:
        raise BadInputError(f"{source} holds no scored rows")
    if synthesis:
        _print_synthesis(rows, by_case=True)
    elif by_case:
        sub = rows[rows["metric"] == metric]
        grid = sub.pivot_table(index=["suite", "case"], columns="method", values="value", aggfunc="mean")
        table = _table(f"{metric} by case", ["case", *grid.columns],
                       [[f"{s}/{c}", *vals] for (s, c), vals in zip(grid.index, grid.values.tolist())])  # fmt: skip
        out.print(table)
    else:
        summary = method_summary(rows, metric)
        out.print(_table(f"{metric} by method", list(summary.columns), summary.values.tolist()))
    if out_dir is not None:
        pq, csv = write_leaderboard(rows, out_dir)
        out.print(f"wrote {pq} and {csv}", highlight=False)


@app.command()
@_errors
def compare(
    old: Annotated[Path, typer.Argument(help="Reference leaderboard (.parquet long or .csv wide).")],
    new: Annotated[Path, typer.Argument(help="Leaderboard to check against it.")],
    tolerance: Annotated[float, typer.Option(help="Absolute change that still counts as unchanged "
                                                  "(the wide CSV keeps 6 significant digits).")] = 1e-6,
) -> None:
    """Compare two leaderboards per method and metric; exit 1 if any row regressed or vanished."""
    from interpbench.compare import compare as compare_tables
    from interpbench.compare import read_long

    result = compare_tables(read_long(old), read_long(new), tolerance=tolerance)
    moved = result.moved
    if not moved.empty:
        cols = ["status", "suite", "case", "method", "metric", "old", "new", "delta"]
        out.print(_table(f"{len(moved)} rows moved (tolerance {tolerance:g})", cols, moved[cols].values.tolist()))
    summary = result.summary()
    summary = summary[summary[["regressed", "improved", "added", "removed"]].sum(axis=1) > 0]
    if not summary.empty:
        out.print(_table("by method and metric", list(summary.columns), summary.values.tolist()))
    n_bad = len(result.regressed)
    out.print(f"{n_bad} regressed, {len(moved) - n_bad} other changes, {len(result.rows) - len(moved)} unchanged",
              highlight=False)  # fmt: skip
    if n_bad:
        raise typer.Exit(1)


@app.command()
@_errors
def export(
    case: Annotated[str, typer.Argument(help="Case name, suite/case.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder to write.")],
) -> None:
    """Export a compiled case (weights, labels, inputs, outputs, ground truth) as npz/JSON."""
    from interpbench.case import get_case
    from interpbench.compiled import compile_case
    from interpbench.export import export_case

    compiled = compile_case(get_case(case))
    files = export_case(compiled, out_dir)
    out.print(f"wrote {len(files)} files to {out_dir} (see FORMAT.md)", highlight=False)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
