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


@app.command("list")
@_errors
def list_(
    what: Annotated[str, typer.Argument(help="suites, cases, methods, metrics or variants")] = "cases",
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """List suites, cases, methods, metrics or variants (the base model and its twins)."""
    from interpbench.listing import listing

    data, cols = listing(what)
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
    variant: Annotated[list[str] | None, typer.Option(help="Model variant(s): base, twin names, or all.")] = None,
    seed: Annotated[list[str] | None, typer.Option(help="Seed(s).")] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="New run directory.")] = None,
    resume: Annotated[Path | None, typer.Option(help="Finish an interrupted run directory.")] = None,
    executor: Annotated[str, typer.Option(help="Where cells run: serial (this process), local (worker "
                                               "processes) or ray.")] = "local",
    jobs: Annotated[int | None, typer.Option(help="Worker processes (local) or CPUs of the local Ray "
                                                  "instance; default: the available cores.")] = None,
    ray_address: Annotated[str | None, typer.Option(help="Join this Ray cluster instead of starting a "
                                                         "local instance.")] = None,
    reuse: Annotated[bool, typer.Option(help="Reuse explanations cached by earlier runs under the same "
                                             "content key (scores are always recomputed).")] = True,
) -> None:
    """Run methods on cases, save explanations, score them and write the run's leaderboard."""
    if not reuse:  # an environment variable, so worker processes see it too
        import os

        from interpbench.cell_cache import REUSE_ENV

        os.environ[REUSE_ENV] = "0"
    from interpbench.executors import make_executor, start_workers

    where = make_executor(executor, jobs, ray_address)
    start_workers(where)  # first: the workers' imports overlap this process's own from here on
    from interpbench.leaderboard import method_summary, write_leaderboard
    from interpbench.run import default_run_dir, expand_variants, plan, run_grid

    cases, methods = _select(suite, case, method)
    variants = expand_variants(split_names(variant)) or ["base"]
    if "base" not in variants:
        variants = ["base", *variants]
        err.print("note: adding variant base: twins are compared with their base model", highlight=False)
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

        rows = run_grid(cases, methods, run_dir, variants=variants, seeds=seeds, on_progress=step, executor=where)
    write_leaderboard(rows, run_dir)
    _print_summary(f"run {run_dir}", method_summary(rows), "auroc")
    _print_synthesis(rows, by_case=False)
    _print_failures(run_dir)
    out.print(f"rows: {len(rows)}; leaderboard: {run_dir / 'leaderboard.parquet'}", highlight=False)


def _print_summary(title: str, summary: Any, metric: str) -> None:
    """The headline columns of a method summary (80 wide); summary.csv has all of them."""
    cols = ["method", metric, "mean_rank", "p_vs_best", "cases", "seconds"]
    out.print(_table(title, cols, summary[cols].values.tolist()))


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
    from interpbench.rescore import rescore

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
    twins: Annotated[bool, typer.Option("--twins", help="Show base vs twin: the metric's change and twin_consistency.")] = False,
) -> None:
    """Print a leaderboard (per-method summary, case x method, synthesis or twins) and optionally write it."""
    from interpbench.leaderboard import base_rows, method_summary, read_leaderboard, twin_table, write_leaderboard
    from interpbench.metrics import get_metric

    if not source.exists():
        raise BadInputError(f"{source} does not exist")
    get_metric(metric)
    rows = read_leaderboard(source)
    if rows.empty:
        raise BadInputError(f"{source} holds no scored rows")
    if synthesis:
        _print_synthesis(rows, by_case=True)
    elif twins:
        table = twin_table(rows)
        if table.empty:
            raise BadInputError(f"{source} holds no twin rows (run with --variant all)")
        for m, col, title in ((metric, "delta", f"{metric}: twin - base"), ("twin_consistency", "twin", "twin_consistency")):
            grid = table[table["metric"] == m].pivot_table(index="method", columns="variant", values=col)
            out.print(_table(title, ["method", *grid.columns], [[i, *v] for i, v in zip(grid.index, grid.values.tolist())]))
    elif by_case:
        sub = base_rows(rows[rows["metric"] == metric])
        grid = sub.pivot_table(index=["suite", "case"], columns="method", values="value", aggfunc="mean")
        table = _table(f"{metric} by case", ["case", *grid.columns],
                       [[f"{s}/{c}", *vals] for (s, c), vals in zip(grid.index, grid.values.tolist())])  # fmt: skip
        out.print(table)
    else:
        _print_summary(f"{metric} by method", method_summary(rows, metric), metric)
    if out_dir is not None:
        pq, csv = write_leaderboard(rows, out_dir)
        out.print(f"wrote {pq} and {csv}", highlight=False)


@app.command()
@_errors
def report(
    run_dir: Annotated[Path, typer.Argument(help="A run directory.")],
    out_path: Annotated[Path | None, typer.Option("--out", help="HTML file to write (default RUN_DIR/report.html).")] = None,
) -> None:
    """Write a self-contained HTML report: leaderboard, heatmap, ground truth next to each method's maps."""
    from interpbench.report_html import write_report

    path = write_report(run_dir, out_path or run_dir / "report.html")
    out.print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)", highlight=False)


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


@app.command()
@_errors
def perf(
    only: Annotated[list[str] | None, typer.Option(help="Figure(s) to measure; repeatable or comma-separated.")] = None,
    quick: Annotated[bool, typer.Option("--quick", help="Tiny settings (one small case, 4 inputs, 1 repetition).")] = False,
    out_path: Annotated[Path | None, typer.Option("--out", help="perf.json to write (with --only: merged by name).")] = None,
) -> None:
    """Measure the speed figures side by side and print value vs target.

    Exits 0 even when a target is missed (the table says so), 1 when a figure could not
    be measured (its error is in the table and in perf.json), 2 for an unknown name.
    """
    from interpbench.perf import run_perf, select_figures, write_perf

    names = split_names(only) or None
    specs = select_figures(names)  # unknown names fail here, before anything is measured
    with err.status("measuring") as status:
        figures = run_perf([s.name for s in specs], quick=quick,
                           on_figure=lambda f: status.update(f"measured {f.name}"))  # fmt: skip
    rows = [f.table_row() for f in figures]
    out.print(_table("perf" + (" (quick)" if quick else ""), ["figure", "value", "target", "unit", "met"], rows))
    if out_path is not None:
        write_perf(figures, out_path, merge=names is not None)
        out.print(f"wrote {out_path}", highlight=False)
    broken = [f for f in figures if f.value is None]
    for f in broken:  # a missed target exits 0; a figure that could not be measured does not
        typer.echo(f"error: {f.name} not measured: {f.details.get('error', '')}", err=True)
    if broken:
        raise typer.Exit(1)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
