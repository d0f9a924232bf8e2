"""``noiseprop sweep`` on the command line: a real in-process Dask sweep and its errors."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from noiseprop.cli import app


def run(*args: str, code: int = 0) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == code, (result.stdout, result.stderr, result.exception)
    return result.stderr if code == 2 else result.stdout  # 1: failed points, listed on stdout


def test_sweep_writes_parquet_and_resumes(tmp_path):
    args = ["sweep", "symmetric", "--output", str(tmp_path), "--grid", "depth=2,3", "--grid",
            "kind=AU,XX", "--set", "width=4", "--set", "repeats=300",
            "--set", "methods=covariance"]  # fmt: skip
    payload = json.loads(run(*args, "--json", code=1))  # two points fail: exit code 1
    assert payload["computed"] == 4 and payload["rows"] == 2 * 2 + 3 * 2
    assert [failure["kind"] for failure in payload["failures"]] == ["XX", "XX"]
    assert "kind must be one of 'AU', 'AC', 'MU', 'MC'; got 'XX'" in payload["failures"][0]["error"]
    table = pd.read_parquet(tmp_path / "results.parquet")
    assert set(table.columns) >= {
        "depth",
        "kind",
        "width",
        "layer",
        "method",
        "variance",
        "point",
        "seed",
    }
    assert "--resume" in run(*args, code=2)
    again = json.loads(run(*args, "--resume", "--json", code=1))
    assert again["computed"] == 2 and again["rows"] == payload["rows"]  # only the failed points rerun


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--grid", "depth"], "--grid: expected NAME=VALUES such as 'depth=2,4,8'"),
        (["--grid", "depth=2", "--grid", "depth=3"], "'depth' is given more than once"),
        (["--grid", "colour=red"], "experiment 'symmetric' takes width, depth"),
    ],
)
def test_sweep_option_errors(tmp_path, extra, message):
    assert message in run("sweep", "symmetric", "--output", str(tmp_path), *extra, code=2)


def test_unknown_experiment(tmp_path):
    assert "EXPERIMENT: expected one of" in run("sweep", "bogus", "--output", str(tmp_path), code=2)
