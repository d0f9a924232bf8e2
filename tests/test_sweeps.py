"""Sweeps on Dask: seeds per point, two real workers, kill-and-resume, failures, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from noiseprop.sweeps import grid_points, point_id, point_seed, sweep

GRID = {"depth": [2, 3], "kind": ["AU", "AC", "MC"], "width": [4]}
FIXED = {"repeats": [400], "methods": ["covariance"]}


def _sorted(table: pd.DataFrame) -> pd.DataFrame:
    return table.sort_values(["point", "method", "layer"]).reset_index(drop=True)


def test_points_and_seeds_depend_only_on_parameters():
    points = grid_points({"b": [1, 2], "a": ["x"]})
    assert points == [{"b": 1, "a": "x"}, {"b": 2, "a": "x"}]
    assert point_id({"a": "x", "b": 1}) == point_id({"b": 1, "a": "x"})
    seeds = {point_seed(7, p) for p in grid_points(GRID)}
    assert len(seeds) == 6  # all distinct
    assert point_seed(7, {"depth": 2}) != point_seed(8, {"depth": 2})


@pytest.mark.parametrize(
    ("grid", "error", "message"),
    [
        ({}, ValueError, "grid must be a non-empty mapping"),
        ({"depth": []}, ValueError, r"grid\['depth'\] must be a non-empty list"),
        ({"depth": "12"}, ValueError, r"grid\['depth'\] must be a non-empty list"),
        ({"not a name": [1]}, ValueError, "grid parameter names must be identifiers"),
        ({"depth": [object()]}, TypeError, "must be JSON-serialisable"),
    ],
)
def test_bad_grids(grid, error, message):
    with pytest.raises(error, match=message):
        grid_points(grid)


def test_two_worker_cluster_gives_the_in_process_numbers(tmp_path):
    grid = {**GRID, **FIXED}
    here = sweep("symmetric", grid, output=tmp_path / "a", seed=11)
    there = sweep("symmetric", grid, output=tmp_path / "b", seed=11, workers=2)
    assert here.computed == there.computed == 6 and here.failures.empty
    assert len(here.table) == 6 * 2.5 * 2  # points x layers (2 or 3) x methods (montecarlo, covariance)
    pd.testing.assert_frame_equal(_sorted(here.table), _sorted(there.table))
    stored = pd.read_parquet(tmp_path / "a" / "results.parquet")
    pd.testing.assert_frame_equal(_sorted(stored), _sorted(here.table))


SLOW_GRID = {"depth": [2], "kind": ["AU", "AC", "MU", "MC"], "intensity": [1e-3, 2e-3, 3e-3],
             "width": [64], "repeats": [60_000], "methods": ["covariance"]}  # fmt: skip


def test_killed_sweep_resumes_without_redoing_or_losing_points(tmp_path):
    """A real process, really killed (SIGKILL) once some points are on disk, then resumed."""
    output = tmp_path / "killed"
    script = (
        "import json, sys; from noiseprop.sweeps import sweep; "
        "sweep('symmetric', json.loads(sys.argv[1]), output=sys.argv[2], seed=5)"
    )
    process = subprocess.Popen([sys.executable, "-c", script, json.dumps(SLOW_GRID), str(output)])
    points = output / "points"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list(points.glob("*.parquet")):
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    before = {path.name: path.stat().st_mtime_ns for path in points.glob("*.parquet")}
    assert 1 <= len(before) < 12, f"kill came too late: {len(before)} points"

    resumed = sweep("symmetric", SLOW_GRID, output=output, seed=5, resume=True)
    assert resumed.computed == 12 - len(before)
    after = {path.name: path.stat().st_mtime_ns for path in points.glob("*.parquet")}
    assert len(after) == 12 and all(after[name] == time_ for name, time_ in before.items())
    assert not list(points.glob(".*.tmp"))  # a file killed mid-write is removed, never counted
    assert resumed.table["point"].value_counts().eq(4).all()  # each point once: 2 layers x 2 methods
    whole = sweep("symmetric", SLOW_GRID, output=tmp_path / "whole", seed=5)
    pd.testing.assert_frame_equal(_sorted(resumed.table), _sorted(whole.table))


def test_a_failing_point_is_recorded_and_the_others_complete(tmp_path):
    grid = {"depth": [2], "kind": ["AU", "XX", "AC"], "width": [4], **FIXED}
    result = sweep("symmetric", grid, output=tmp_path, seed=0)
    assert sorted(result.table["kind"].unique()) == ["AC", "AU"]
    assert len(result.failures) == 1
    failure = result.failures.iloc[0]
    assert failure["kind"] == "XX" and "XX" in failure["error"] and "Traceback" in failure["traceback"]
    assert (tmp_path / "failures" / f"{failure['point']}.json").is_file()


def test_output_is_protected_and_resume_must_match(tmp_path):
    grid = {"depth": [2], "kind": ["AU"], "width": [4], **FIXED}
    sweep("symmetric", grid, output=tmp_path, seed=0)
    with pytest.raises(FileExistsError, match="is not empty; pass resume=True"):
        sweep("symmetric", grid, output=tmp_path, seed=0)
    with pytest.raises(ValueError, match="resume: the sweep in .* has other settings"):
        sweep("symmetric", grid, output=tmp_path, seed=1, resume=True)
    with pytest.raises(FileNotFoundError, match="holds no sweep to resume"):
        sweep("symmetric", grid, output=tmp_path / "new", seed=0, resume=True)
    again = sweep("symmetric", grid, output=tmp_path, seed=0, resume=True)
    assert again.computed == 0 and len(again.table) == 4


def test_experiment_and_cluster_arguments(tmp_path: Path):
    with pytest.raises(ValueError, match="experiment must be one of"):
        sweep("nothing", {"a": [1]}, output=tmp_path)
    with pytest.raises(ValueError, match="give workers .* or scheduler .*, not both"):
        sweep("symmetric", {"depth": [1]}, output=tmp_path, workers=2, scheduler="tcp://x:1")
    with pytest.raises(ValueError, match="workers must be an integer >= 1; got 0"):
        sweep("symmetric", {"depth": [1]}, output=tmp_path, workers=0)
