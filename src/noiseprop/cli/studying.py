"""``noiseprop study``: the research's findings reproduced, as an HTML report (noiseprop.study)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from noiseprop.cli._app import app
from noiseprop.cli._options import (
    EXIT_FAILED_POINTS,
    JsonOption,
    ProgressOption,
    SchedulerOption,
    SeedOption,
    WorkersOption,
    reported_as,
)
from noiseprop.cli._output import print_json, records
from noiseprop.cli._progress import progress_rows, resumable


@app.command()
def study(
    output: Annotated[Path, typer.Option(help="Folder for report.html, figures/ and tables/.")] = Path(
        "results/study"
    ),
    full: Annotated[
        bool, typer.Option("--full", help="Research scale (wide, deep, many repeats): for a cluster.")
    ] = False,
    seed: SeedOption = 0,
    workers: WorkersOption = None,
    scheduler: SchedulerOption = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted study.")] = False,
    progress: ProgressOption = True,
    as_json: JsonOption = False,
) -> None:
    """Run the study (symmetric networks, slope criterion, width, a trained MNIST network, accuracy
    under noise) and write a self-contained HTML report with its figures and computed findings."""
    from rich.console import Console

    from noiseprop.study import StudyConfig, run_study

    config = StudyConfig.full() if full else StudyConfig.quick()
    with (
        progress_rows(progress and not as_json, "points") as update,
        resumable(output),
        reported_as("--scheduler" if scheduler else "--output"),
    ):
        result = run_study(
            config, output=output, seed=seed, resume=resume, workers=workers, scheduler=scheduler,
            progress=update,
        )  # fmt: skip
    if as_json:
        print_json(
            {
                "report": str(result.report),
                "figures": {name: str(path) for name, path in result.figures.items()},
                "findings": result.findings,
                "disagreements": len(result.disagreements),
                "failures": records(result.failures.drop(columns="traceback", errors="ignore")),
            }
        )
        if not result.failures.empty:
            raise typer.Exit(code=EXIT_FAILED_POINTS)
        return
    console = Console()
    for name, finding in result.findings.items():
        console.print(f"[bold]{name}[/bold]: {finding}", highlight=False)
    console.print(
        f"{len(result.disagreements)} (figure, point, layer, method) rows where theory and simulation "
        f"differ by more than 4 standard errors (listed in the report)",
        highlight=False,
    )
    if not result.failures.empty:
        console.print(f"[red]{len(result.failures)} failed points[/red] (listed in the report)")
    console.print(
        f"report: [link=file://{result.report.resolve()}]{result.report}[/link]", highlight=False
    )
    if not result.failures.empty:
        raise typer.Exit(code=EXIT_FAILED_POINTS)
