"""Progress bars on stderr for long commands: one row per stage, with elapsed and remaining time."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import typer

EXIT_INTERRUPTED = 130
"""Exit code after Ctrl-C (128 + SIGINT), as shells report it."""

Update = Callable[[str, int, int], None]
"""``update(stage, done, total)``: how far a stage of the work is (its row appears on first call)."""


@contextmanager
def progress_rows(show: bool, unit: str) -> Iterator[Update]:
    """Rich progress bars on stderr, one row per stage (``"simulating"``, ``"before: accuracy,
    montecarlo"``), each counting ``unit`` (repeats, images) with the time elapsed and an estimate
    of the time left. With ``show`` false (``--json``, ``--no-progress``) nothing is drawn."""
    if not show:
        yield lambda stage, done, total: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(unit),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
    )
    tasks: dict[str, int] = {}

    def update(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = bar.add_task(stage, total=total)
        bar.update(tasks[stage], completed=done, total=total)

    with bar:
        yield update


@contextmanager
def resumable(output: Path) -> Iterator[None]:
    """On Ctrl-C, say that the finished points are kept in ``output`` and how to compute only the
    rest, and exit with :data:`EXIT_INTERRUPTED` (no traceback)."""
    try:
        yield
    except KeyboardInterrupt:
        typer.echo(
            f"\ninterrupted: every finished point is kept in {output}; run the same command with "
            "--resume to compute only the rest.",
            err=True,
        )
        raise typer.Exit(code=EXIT_INTERRUPTED) from None
