"""Bad input gets a clear error before any work, in one line on the command line (exit code 2) and
as a ValueError/TypeError naming the parameter in Python (issue 12's classes)."""

from __future__ import annotations

import time

import pytest
import torch
from typer.testing import CliRunner

from noiseprop import Network, Noise, accuracy, propagate, simulate
from noiseprop.cli import app


def one_line_error(*args: str) -> str:
    """Run the command line; it must fail with exit code 2 and one line on stderr."""
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr, result.exception)
    assert result.stderr.count("\n") == 1, result.stderr
    return result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "--output", "/proc/nope/net.safetensors", "--epochs", "1"],
         "Error: --output: cannot make the folder '/proc/nope'"),
        (["mitigate", "default", "--output", "/proc/x.safetensors", "--ghost", "--noise", "AU=0.02",
          "--images", "mnist:50"], "Error: --output: cannot write in the folder '/proc'"),
        (["accuracy-curve", "--output", "/proc/nope/curve.png"], "Error: --output: cannot make"),
    ],
)  # fmt: skip
def test_output_paths_are_checked_before_the_work(args, message):
    """These wrote their result only at the end, after tens of seconds of work: the check comes
    first now. The error is the only line on stderr, where the work would have printed its epochs
    (train) or its progress rows (mitigate, accuracy-curve) first."""
    assert message in one_line_error(*args)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["simulate", "--seed", "99999999999999999999999", "--repeats", "10"],
         "Error: --seed: expected an integer from 0 to 2^63 - 1; got 99999999999999999999999."),
        (["simulate", "--seed", "-1", "--repeats", "10"],
         "Error: --seed: expected an integer from 0 to 2^63 - 1; got -1."),
        (["simulate", "--repeats", "99999999999999999999"], "Error: --repeats: expected an integer "
         "from 2 to 2^53"),
        (["simulate", "--noise", "AU=1e300", "--repeats", "10", "--no-progress"],
         "Error: --noise: noise AU=1e+300: its standard deviation overflows torch.float32"),
        (["predict", "--width", "100000000", "--depth", "2"],
         "Error: --width: a 100000000-wide network of depth 2 does not fit in memory"),
        (["accuracy", "--images", "mnist:20000"],  # was silently cut to the 10,000 there are
         "Error: --images: the MNIST test set has 10,000 images; got 'mnist:20000'"),
        (["predict", "--network", "default", "--input", "mnist-train:70000"],
         "Error: --input: the MNIST train set has 60,000 images; got 'mnist-train:70000'."),
    ],
)  # fmt: skip
def test_numbers_out_of_range_are_one_line_errors(args, message):
    assert message in one_line_error(*args)


def test_devices_are_checked_in_python():
    net = Network.symmetric(width=3, depth=2)
    images, labels = [[0.5, 0.5, 0.5]], [0]
    calls = [
        lambda device: simulate(net, Noise(AU=1e-3), 0.5, repeats=10, device=device),
        lambda device: propagate(net, Noise(AU=1e-3), 0.5, device=device),
        lambda device: accuracy(net, Noise(AU=1e-3), images, labels, device=device),
    ]
    for call in calls:
        with pytest.raises(ValueError, match="device must be 'cpu', 'cuda' or 'cuda:N'; got 'banana'"):
            call("banana")
        if not torch.cuda.is_available():
            with pytest.raises(ValueError, match="device 'cuda': CUDA is not available"):
                call("cuda")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--workers", "0"], "Error: --workers: expected an integer >= 1 (worker processes); got 0."),
        (["--scheduler", "notaurl"], "Error: --scheduler: expected an address such as tcp://"),
    ],
)
def test_cluster_options_are_named_right(tmp_path, args, message):
    """These were reported as --output."""
    base = ["sweep", "symmetric", "--output", str(tmp_path / "sweep"), "--grid", "width=3"]
    assert message in one_line_error(*base, *args)


def test_a_sweep_with_failed_points_exits_1_and_says_how_many(tmp_path):
    """One of two points fails (a negative width): the other is kept, the failure listed, and the
    exit code is 1, not 0."""
    result = CliRunner().invoke(
        app,
        ["sweep", "symmetric", "--output", str(tmp_path / "sweep"), "--grid", "width=3,-1",
         "--set", "repeats=100", "--no-progress"],
    )  # fmt: skip
    assert result.exit_code == 1, (result.stdout, result.stderr)
    assert "1 of the points failed" in result.stdout
    assert "rows from 1 points" in result.stdout


def test_results_print_in_one_line():
    """``print(stats)`` dumped every tensor (94 kB for a 64-wide network); now one line each."""
    net = Network.random([64, 64, 64, 10], "sigmoid", seed=0)
    predicted = propagate(net, Noise(AU=1e-3), torch.rand(5, 64), covariance=True)
    assert repr(predicted).startswith("NoiseStatistics(covariance, 5 inputs; variance 1: 0.001,")
    assert len(repr(predicted)) < 200 and "\n" not in repr(predicted)
    assert (
        repr(predicted[0]) == "LayerStatistics(5 inputs x 64 neurons; variance 0.001, with covariance)"
    )
    assert "<table" in predicted._repr_html_()
    result = accuracy(net, Noise(AU=1e-3), torch.rand(5, 64), [0, 1, 2, 3, 4], repeats=10)
    assert repr(result).startswith("Accuracy(") and "montecarlo, 10 repeats; 5 images)" in repr(result)


def test_piped_tables_keep_every_number():
    """Through a pipe rich used to shrink a wide table to 80 columns and cut numbers to
    ``0.002...``; the command line widens a non-terminal's tables instead."""
    import os
    import subprocess
    import sys

    environment = {key: value for key, value in os.environ.items() if key != "COLUMNS"}
    script = "from noiseprop.cli import main; main()"
    done = subprocess.run(
        [sys.executable, "-c", script, "predict", "--width", "10", "--depth", "3", "--method",
         "covariance", "--per-input"],
        capture_output=True, text=True, timeout=120, check=True, env=environment,
    )  # fmt: skip
    assert "…" not in done.stdout and "..." not in done.stdout.replace("│   ... │", "")
    assert max(len(line) for line in done.stdout.splitlines()) > 80


def test_network_default_works_wherever_a_network_is_taken():
    """``--network default`` (the shipped MNIST network) worked in ``mitigate`` only."""
    for command in (["predict", "--input", "mnist:2"], ["accuracy", "--images", "mnist:20"]):
        result = CliRunner().invoke(app, [*command, "--network", "default", "--json"])
        assert result.exit_code == 0, (result.stdout, result.stderr)
        assert "784-100x2-10" in result.stdout


def test_a_sweep_folder_in_use_is_refused(tmp_path):
    """Two runs on one folder both recomputed every point; the second is refused while the first
    holds the folder's lock (``flock``, released by the system even when a run is killed), and a
    lock file left behind by a finished run does not block the next."""
    import fcntl

    from noiseprop import sweep

    grid = {"width": [3], "repeats": [100]}
    first = sweep("symmetric", grid, output=tmp_path / "runs")
    assert first.computed == 1 and (tmp_path / "runs" / ".noiseprop.lock").exists()
    with open(tmp_path / "runs" / ".noiseprop.lock", "a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # another run holds it
        with pytest.raises(ValueError, match="is in use by another noiseprop run"):
            sweep("symmetric", grid, output=tmp_path / "runs", resume=True)
    again = sweep("symmetric", grid, output=tmp_path / "runs", resume=True)
    assert again.computed == 0


def test_images_are_also_input():
    """``--input mnist:N`` in predict/simulate/compare, ``--images mnist:N`` in accuracy: both
    spellings work where images are taken."""
    for spelling in ("--images", "--input"):
        result = CliRunner().invoke(
            app, ["accuracy", spelling, "mnist:20", "--method", "montecarlo", "--repeats", "5", "--json"]
        )
        assert result.exit_code == 0, (result.stdout, result.stderr)
        assert '"images": 20' in result.stdout


def test_help_texts_show_no_flag_types_and_plain_defaults():
    """Every command's --help: a flag shows no type (``--json``, not ``--json <bool>``) and a
    described default reads ``[default: 100]``, not ``[default: (100)]``."""
    import typer

    commands = typer.main.get_command(app).commands
    assert len(commands) >= 10
    for name in commands:
        result = CliRunner().invoke(app, [name, "--help"], env={"COLUMNS": "200"})
        assert result.exit_code == 0, (name, result.stdout)
        assert "<bool>" not in result.stdout and "[default: (" not in result.stdout, name
    widths = CliRunner().invoke(app, ["predict", "--help"], env={"COLUMNS": "200"}).stdout
    assert "symmetric network. [default: 100]" in widths


def test_ctrl_c_stops_a_sweep_cleanly_and_keeps_its_points(tmp_path):
    """SIGINT (Ctrl-C) once the first point is written: exit code 130, no traceback, a line that
    says the finished points are kept and how to finish the rest, and those points on disk."""
    import signal
    import subprocess
    import sys
    from pathlib import Path

    binary = Path(sys.executable).parent / "noiseprop"
    output = tmp_path / "sweep"
    grid = ["--grid", "depth=2,3,4,5,6,7,8,9", "--set", "repeats=2000000", "--set", "width=50"]
    # as from a terminal: SIGINT handled by default (a background job of a non-interactive shell,
    # as CI may run the tests, inherits it ignored, and Python then never raises KeyboardInterrupt)
    process = subprocess.Popen(
        [str(binary), "sweep", "symmetric", "--output", str(output), *grid, "--no-progress"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    points = output / "points"
    while process.poll() is None and not (points.is_dir() and any(points.glob("*.parquet"))):
        time.sleep(0.05)
    assert process.poll() is None, "the sweep ended before it could be interrupted"
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert f"interrupted: every finished point is kept in {output}; run the same command" in stderr
    assert 1 <= len(list(points.glob("*.parquet"))) < 8
