"""Sweeps: a grid of experiment points run on Dask, written to Parquet as points finish.

A sweep runs one *experiment* (a function ``f(seed=..., **parameters) -> pandas.DataFrame``, see
:mod:`noiseprop.experiments`) at every point of a grid (the Cartesian product of the values given for
each parameter). Guarantees:

* **Seeds.** Each point's seed is derived from the sweep's seed and the point's parameters only
  (``SeedSequence([seed, *sha256(canonical JSON of the parameters)])``), so results do not depend on
  the order, the scheduling or the number of workers.
* **Nothing lost, nothing redone.** Each finished point is written at once, atomically, as
  ``points/<id>.parquet`` in the output folder. ``resume=True`` skips the points already there; an
  interrupted sweep (Ctrl-C, a killed worker, a killed process) resumes where it stopped. The output
  folder's ``sweep.json`` records the experiment, grid and seed; resuming with other settings is an
  error.
* **Failures are data.** A point that raises is recorded in ``failures/<id>.json`` with its error and
  does not stop the others; a resumed sweep retries it.
* **Where it runs.** In-process by default (a ``distributed`` client without worker processes),
  ``workers=N`` for a local cluster of N single-threaded worker processes, ``scheduler=ADDRESS`` for
  an existing cluster. Each task pins torch's and BLAS's threads (``threads`` per task), so workers do
  not fight over cores.

Start a cluster of your own with ``dask scheduler`` on one machine and ``dask worker ADDRESS
--nthreads 1`` on each worker machine (noiseprop installed everywhere), then pass
``scheduler="tcp://ADDRESS:8786"``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from noiseprop._validation import check_positive_int

__all__ = ["SweepResult", "grid_points", "point_id", "point_seed", "sweep"]

_MANIFEST = "sweep.json"
_RESULTS = "results.parquet"


def grid_points(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """The Cartesian product of a grid, in the grid's order (last parameter fastest).

    Example:
        >>> grid_points({"depth": [1, 2], "kind": ["AU", "AC"]})
        [{'depth': 1, 'kind': 'AU'}, {'depth': 1, 'kind': 'AC'}, {'depth': 2, 'kind': 'AU'}, {'depth': 2, 'kind': 'AC'}]
    """  # noqa: E501
    if not isinstance(grid, Mapping) or not grid:
        raise ValueError(f"grid must be a non-empty mapping of parameter -> values; got {grid!r}.")
    for name, values in grid.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"grid parameter names must be identifiers; got {name!r}.")
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
            raise ValueError(f"grid[{name!r}] must be a non-empty list of values; got {values!r}.")
        try:
            json.dumps(list(values))
        except TypeError:
            raise TypeError(
                f"grid[{name!r}] values must be JSON-serialisable; got {values!r}."
            ) from None
    names = list(grid)
    return [dict(zip(names, combo)) for combo in itertools.product(*(grid[name] for name in names))]


def _canonical(parameters: Mapping[str, Any]) -> str:
    return json.dumps(parameters, sort_keys=True, separators=(",", ":"))


def point_id(parameters: Mapping[str, Any]) -> str:
    """A stable 16-hex-digit identifier of a point's parameters."""
    return hashlib.sha256(_canonical(parameters).encode()).hexdigest()[:16]


def point_seed(seed: int, parameters: Mapping[str, Any]) -> int:
    """The seed of one point: a function of the sweep's seed and the point's parameters only.

    Example:
        >>> point_seed(0, {"depth": 3}) == point_seed(0, {"depth": 3}) != point_seed(1, {"depth": 3})
        True
    """
    digest = hashlib.sha256(_canonical(parameters).encode()).digest()
    words = [int.from_bytes(digest[i : i + 4], "little") for i in range(0, 16, 4)]
    return int(np.random.SeedSequence([seed, *words]).generate_state(1, dtype=np.uint32)[0])


@dataclass(frozen=True, eq=False)
class SweepResult:
    """What a sweep produced.

    Attributes:
        table: every row of every finished point, with the point's parameters, ``point`` (its id)
            and ``seed`` as columns.
        failures: one row per failed point: its parameters, ``point``, ``error`` and ``traceback``.
        path: the output folder (``results.parquet`` holds ``table``).
        computed: points computed by this call (the others were already on disk).
    """

    table: pd.DataFrame
    failures: pd.DataFrame
    path: Path
    computed: int


def sweep(
    experiment: str | Callable[..., pd.DataFrame],
    grid: Mapping[str, Sequence[Any]],
    *,
    output: str | Path,
    seed: int = 0,
    resume: bool = False,
    workers: int | None = None,
    scheduler: str | None = None,
    threads: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> SweepResult:
    """Run ``experiment`` at every point of ``grid`` on Dask; see the module docstring.

    Args:
        experiment: the name of an experiment of :mod:`noiseprop.experiments`, or a picklable
            function ``f(seed=..., **parameters) -> DataFrame``.
        grid: parameter -> list of values (JSON-serialisable).
        output: folder for the results (created; must be new or empty unless ``resume``).
        seed: the sweep's seed, from which every point's seed is derived.
        resume: continue a sweep in ``output``, skipping its finished points.
        workers: run on a local cluster of this many worker processes (default: in-process).
        scheduler: address of an existing Dask scheduler (exclusive with ``workers``).
        threads: torch/BLAS threads per task (default: the cores divided among the workers).
        progress: called as ``progress(finished, total)`` after every point (finished includes
            points already on disk).

    Returns:
        A :class:`SweepResult`.
    """
    from noiseprop.experiments import resolve

    function, name = resolve(experiment)
    points = grid_points(grid)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an integer; got {type(seed).__name__} {seed!r}.")
    if workers is not None and scheduler is not None:
        raise ValueError("give workers (a local cluster) or scheduler (an existing one), not both.")
    if workers is not None:
        workers = check_positive_int("workers", workers)
    path = Path(output)
    manifest = {"experiment": name, "grid": {k: list(v) for k, v in grid.items()}, "seed": seed}
    path.mkdir(parents=True, exist_ok=True)
    with _exclusive(path):
        _prepare_output(path, manifest, resume)

        for stale in (path / "points").glob(".*.tmp"):  # left by a process killed mid-write
            stale.unlink()
        done = {file.stem for file in (path / "points").glob("*.parquet")}
        todo = [(point_id(p), p) for p in points if point_id(p) not in done]
        finished = len(points) - len(todo)
        if progress is not None:
            progress(finished, len(points))
        if threads is None:
            threads = max(1, (os.cpu_count() or 1) // (workers or 1))
        threads = check_positive_int("threads", threads)

        if todo:
            with _client(workers, scheduler) as client:
                from distributed import as_completed

                futures = [
                    client.submit(
                        _run_point,
                        function,
                        parameters,
                        point_seed(seed, parameters),
                        threads,
                        key=f"noiseprop-point-{identifier}",
                        pure=False,
                    )  # fmt: skip
                    for identifier, parameters in todo
                ]
                for future in as_completed(futures):
                    _write_point(path, future.result())
                    finished += 1
                    if progress is not None:
                        progress(finished, len(points))

        table, failures = _collect(path, points)
        table.to_parquet(path / _RESULTS, index=False)
        return SweepResult(table=table, failures=failures, path=path, computed=len(todo))


def _prepare_output(path: Path, manifest: dict[str, Any], resume: bool) -> None:
    manifest_file = path / _MANIFEST
    if resume:
        if not manifest_file.is_file():
            raise FileNotFoundError(
                f"output {str(path)!r} holds no sweep to resume ({_MANIFEST} is missing)."
            )
        previous = json.loads(manifest_file.read_text())
        if previous != json.loads(json.dumps(manifest)):
            raise ValueError(
                f"resume: the sweep in {str(path)!r} has other settings ({previous}); got "
                f"{manifest}. Resume with the same experiment, grid and seed, or use a new output."
            )
    elif path.exists() and any(item.name != _LOCK for item in path.iterdir()):
        raise FileExistsError(
            f"output {str(path)!r} is not empty; pass resume=True (--resume) to continue the sweep "
            "in it, or choose a new folder."
        )
    (path / "points").mkdir(parents=True, exist_ok=True)
    (path / "failures").mkdir(exist_ok=True)
    if not manifest_file.exists():
        _atomic_write(manifest_file, json.dumps(manifest, indent=2).encode())


_LOCK = ".noiseprop.lock"
"""The lock file of a sweep's output folder: one run at a time in a folder."""


@contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (``flock`` on its lock file; the system releases it when
    the process ends, even when killed) while a sweep runs there: a second run on the same folder,
    ``resume`` or not, is refused instead of recomputing every point beside the first."""
    try:
        import fcntl
    except ImportError:  # no flock on this platform: no lock
        yield
        return
    with open(path / _LOCK, "a") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ValueError(
                f"output {str(path)!r} is in use by another noiseprop run; wait for it to finish, or "
                "choose another folder."
            ) from None
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


@contextmanager
def _client(workers: int | None, scheduler: str | None) -> Iterator[Any]:
    """An in-process client, a client of a local cluster, or a connection to a scheduler."""
    from distributed import Client, LocalCluster

    if scheduler is not None:
        client = Client(scheduler)
    elif workers is not None:
        cluster = LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
        )
        client = Client(cluster)
    else:
        client = Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=None)
    try:
        yield client
    finally:
        client.close()
        if scheduler is None and workers is not None:
            cluster.close()


def _run_point(
    function: Callable[..., pd.DataFrame], parameters: dict[str, Any], seed: int, threads: int
) -> dict[str, Any]:
    """Run one point on a worker; failures are returned, not raised."""
    import torch

    identifier = point_id(parameters)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with the scientific stack
        threadpool_limits = None
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        if threadpool_limits is not None:
            with threadpool_limits(limits=threads):
                frame = function(seed=seed, **parameters)
        else:  # pragma: no cover
            frame = function(seed=seed, **parameters)
        if not isinstance(frame, pd.DataFrame):
            raise TypeError(f"experiment must return a pandas DataFrame; got {type(frame).__name__}.")
        return {"id": identifier, "parameters": parameters, "seed": seed, "frame": frame}
    except Exception as error:  # noqa: BLE001 - a failing point is recorded, not fatal
        return {
            "id": identifier,
            "parameters": parameters,
            "seed": seed,
            "error": f"{type(error).__name__}: {error}",
            "traceback": traceback.format_exc(),
        }
    finally:
        torch.set_num_threads(previous)


def _atomic_write(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


def _write_point(path: Path, outcome: dict[str, Any]) -> None:
    identifier = outcome["id"]
    if "frame" in outcome:
        frame = outcome["frame"].copy()
        for key, value in reversed(outcome["parameters"].items()):
            if key not in frame.columns:
                frame.insert(
                    0,
                    key,
                    [value] * len(frame)
                    if not isinstance(value, list)
                    else [json.dumps(value)] * len(frame),
                )
        frame["point"] = identifier
        frame["seed"] = outcome["seed"]
        # not *.parquet: a file killed mid-write must never count as a finished point
        temporary = path / "points" / f".{identifier}.parquet.tmp"
        frame.to_parquet(temporary, index=False)
        os.replace(temporary, path / "points" / f"{identifier}.parquet")
        (path / "failures" / f"{identifier}.json").unlink(missing_ok=True)
    else:
        record = {key: outcome[key] for key in ("parameters", "seed", "error", "traceback")}
        _atomic_write(path / "failures" / f"{identifier}.json", json.dumps(record, indent=2).encode())


def _collect(path: Path, points: list[dict[str, Any]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    frames, failures = [], []
    for parameters in points:
        identifier = point_id(parameters)
        part = path / "points" / f"{identifier}.parquet"
        if part.is_file():
            frames.append(pd.read_parquet(part))
            continue
        failure = path / "failures" / f"{identifier}.json"
        if failure.is_file():
            record = json.loads(failure.read_text())
            failures.append({**parameters, "point": identifier, "error": record["error"],
                             "traceback": record["traceback"]})  # fmt: skip
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return table, pd.DataFrame(failures)
