"""``noiseprop study``: the research's findings reproduced, as an HTML report (noiseprop.study)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from noiseprop.cli._app import app
from noiseprop.cli._options import (
    EXIT_FAILED_POINTS,
    JsonOption,
    ProgressOption,
    SchedulerOption,
    SeedOption,
    WorkersOption,
    fail,
    reported_as,
)
from noiseprop.cli._output import print_json, records
from noiseprop.cli._progress import progress_rows, resumable

if TYPE_CHECKING:
    import pandas as pd


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
    pdf: Annotated[
        bool,
        typer.Option(
            "--pdf",
            help="Also print the report to report.pdf beside report.html, with headless Chromium "
            "(apt-get install chromium, or set NOISEPROP_CHROMIUM).",
        ),
    ] = False,
) -> None:
    """Run the study (symmetric networks, the slope criterion, width, a trained MNIST network,
    accuracy under noise, beyond first order, mitigation, the CNN against the MLP, noise before and
    after the activation, noise-aware training, the design noise budget, pooling against noise, the
    mean-field rule through convolutions) and write a self-contained HTML report with its figures
    and computed findings; with --pdf, a PDF of the report too."""
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
    printed, pdf_error = _print_pdf(result.report) if pdf else (None, None)
    if as_json:
        print_json(
            {
                "report": str(result.report),
                "pdf": None if printed is None else str(printed),
                "figures": {name: str(path) for name, path in result.figures.items()},
                "findings": result.findings,
                "disagreements": len(result.disagreements),
                "failures": records(result.failures.drop(columns="traceback", errors="ignore")),
            }
        )
        _exit_on_failures(result.failures, pdf_error)
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
    if printed is not None:
        console.print(f"PDF: [link=file://{printed.resolve()}]{printed}[/link]", highlight=False)
    _exit_on_failures(result.failures, pdf_error)


def _print_pdf(report: Path) -> tuple[Path | None, str | None]:
    """Print ``report`` to ``report.pdf`` beside it: ``(the PDF's path, None)``, or ``(None, why it
    could not)`` when there is no browser or it failed (the study's files are kept either way)."""
    from noiseprop.browser import BrowserError, print_pdf

    try:
        return print_pdf(report, report.with_suffix(".pdf")), None
    except (BrowserError, OSError) as error:
        return None, " ".join(f"could not write the PDF of {report}: {error}".split())


def _exit_on_failures(failures: pd.DataFrame, pdf_error: str | None) -> None:
    """Exit with code 2 and one line naming --pdf if the PDF failed, else with
    :data:`EXIT_FAILED_POINTS` if some of the study's points failed."""
    if pdf_error is not None:
        fail("--pdf", pdf_error)
    if not failures.empty:
        raise typer.Exit(code=EXIT_FAILED_POINTS)
