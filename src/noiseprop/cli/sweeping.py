"""``noiseprop sweep``: run a grid of experiment points on Dask (noiseprop.sweeps)."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import typer

from noiseprop.cli._app import app
from noiseprop.cli._options import (
    EXIT_FAILED_POINTS,
    JsonOption,
    ProgressOption,
    SchedulerOption,
    WorkersOption,
    fail,
    reported_as,
)
from noiseprop.cli._output import print_json, print_notes, records
from noiseprop.cli._progress import progress_rows, resumable


def parse_value(text: str) -> Any:
    """A grid value from the command line: an integer, a float, true/false, or else the string.

    Example:
        >>> [parse_value(t) for t in ("3", "1e-3", "sigmoid:gain=4", "true", "False")]
        [3, 0.001, 'sigmoid:gain=4', True, False]
    """
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_assignments(items: list[str], option: str, *, lists: bool) -> dict[str, list[Any]]:
    """``name=v1,v2`` items (``lists``) or ``name=value`` items into ``{name: [values]}``.

    Example:
        >>> parse_assignments(["depth=2,4", "kind=AU"], "--grid", lists=True)
        {'depth': [2, 4], 'kind': ['AU']}
    """
    grid: dict[str, list[Any]] = {}
    for item in items:
        name, sep, raw = item.partition("=")
        name = name.strip()
        if not sep or not name.isidentifier() or not raw.strip():
            example = "depth=2,4,8" if lists else "repeats=2000"
            fail(option, f"expected NAME=VALUE{'S' if lists else ''} such as {example!r}; got {item!r}.")
        if name in grid:
            fail(option, f"{name!r} is given more than once.")
        values = raw.split(",") if lists else [raw]
        grid[name] = [parse_value(value.strip()) for value in values]
    return grid


@app.command()
def sweep(
    experiment: Annotated[str, typer.Argument(help="Experiment to run at every point, e.g. symmetric.")],
    output: Annotated[Path, typer.Option(help="Folder for the results (Parquet, one file per point).")],
    grid: Annotated[
        list[str] | None,
        typer.Option("--grid", help="A swept parameter NAME=V1,V2,...; repeat for a grid."),
    ] = None,
    fixed: Annotated[
        list[str] | None,
        typer.Option("--set", help="A fixed parameter NAME=VALUE (a one-value grid); repeatable."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Sweep seed; every point's seed derives from it.")] = 0,
    workers: WorkersOption = None,
    scheduler: SchedulerOption = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the sweep in --output.")] = False,
    progress: ProgressOption = True,
    as_json: JsonOption = False,
) -> None:
    """Run an experiment over a grid of parameters on Dask; results go to OUTPUT/results.parquet.

    Exits with code 1 when some points failed (they are listed; the others are kept).
    """
    from noiseprop.experiments import EXPERIMENTS, parameters_of

    if experiment not in EXPERIMENTS:
        fail("EXPERIMENT", f"expected one of {', '.join(sorted(EXPERIMENTS))}; got {experiment!r}.")
    points = {
        **parse_assignments(grid or [], "--grid", lists=True),
        **parse_assignments(fixed or [], "--set", lists=False),
    }
    if not points:
        fail("--grid", "give at least one --grid NAME=V1,V2 (or --set NAME=VALUE).")
    known = parameters_of(experiment)
    unknown = sorted(set(points) - set(known))
    if unknown:
        fail("--grid", f"experiment {experiment!r} takes {', '.join(known)}; got unknown {unknown}.")

    from rich.console import Console

    from noiseprop.sweeps import sweep as run_sweep

    with (
        progress_rows(progress and not as_json, "points") as update,
        resumable(output),
        reported_as("--scheduler" if scheduler else "--output"),
    ):
        result = run_sweep(
            experiment, points, output=output, seed=seed, resume=resume, workers=workers,
            scheduler=scheduler, progress=partial(update, "sweep"),
        )  # fmt: skip
    failed = len(result.failures)
    if as_json:
        print_json(
            {
                "output": str(result.path),
                "computed": result.computed,
                "rows": len(result.table),
                "failures": records(result.failures.drop(columns="traceback", errors="ignore")),
            }
        )
        if failed:
            raise typer.Exit(code=EXIT_FAILED_POINTS)
        return
    console = Console()
    console.print(
        f"{len(result.table)} rows from {result.table['point'].nunique() if len(result.table) else 0} "
        f"points ({result.computed} computed now) -> {result.path / 'results.parquet'}",
        highlight=False,
    )
    for failure in records(result.failures.drop(columns="traceback", errors="ignore")):
        console.print(f"[red]failed[/red] {json.dumps(failure)}", highlight=False)
    if failed:
        print_notes(console, [f"tracebacks: {result.path / 'failures'}"])
        console.print(f"[red]{failed} of the points failed[/red]", highlight=False)
        raise typer.Exit(code=EXIT_FAILED_POINTS)
