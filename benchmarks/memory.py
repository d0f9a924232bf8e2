"""Peak memory of ``simulate``: bounded by the chunk, not by the repeats.

Each measurement runs in a fresh interpreter (``python -m benchmarks.memory REPEATS``), which prints
its peak resident set size after the imports and set-up, and after the simulation: ``VmHWM`` from
``/proc/self/status`` where there is one (Linux), else ``ru_maxrss`` (which on Linux carries the
parent's peak across ``fork`` and ``exec``, and so would measure the benchmark runner instead).
The network and batch are chosen so that the default chunk is smaller than a group of repeats for
every repeat count measured, so that the chunk, not the group, bounds the working set.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

__all__ = ["measure"]

ROOT = Path(__file__).resolve().parent.parent
SIZES = [16, 128, 128]
BATCH = 32
GROUPS = 32


def _peak_mib() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child(repeats: int) -> dict[str, float]:
    import torch

    from noiseprop import Network, Noise, simulate
    from noiseprop.montecarlo import default_chunk

    network = Network.random(SIZES, "sigmoid", seed=0)
    inputs = torch.rand(BATCH, SIZES[0], generator=torch.Generator().manual_seed(0))
    noise = Noise(AU=1e-3, AC=1e-3, MU=1e-3, MC=1e-3)
    simulate(network, noise, inputs, repeats=64, seed=0)  # imports, thread pools, allocator warm
    before = _peak_mib()
    simulate(network, noise, inputs, repeats=repeats, seed=0, groups=GROUPS)
    after = _peak_mib()
    return {
        "repeats": repeats,
        "chunk": default_chunk(network, BATCH, torch.float32),
        "group": repeats // GROUPS,
        "baseline_mib": before,
        "peak_mib": after,
    }


def measure(repeat_counts: tuple[int, ...] = (100_000, 1_000_000)) -> list[dict[str, float]]:
    results = []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    for repeats in repeat_counts:
        completed = subprocess.run(
            [sys.executable, "-m", "benchmarks.memory", str(repeats)],
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
            env=env,
        )
        results.append(json.loads(completed.stdout.strip().splitlines()[-1]))
        row = results[-1]
        print(
            f"  {repeats:>9,} repeats: peak RSS {row['peak_mib']:.0f} MiB "
            f"(after set-up {row['baseline_mib']:.0f} MiB; chunk {row['chunk']} repeats)",
            flush=True,
        )
    return results


def markdown(results: list[dict[str, float]]) -> str:
    lines = [
        "| repeats | chunk (repeats) | group (repeats) | RSS after set-up | peak RSS | peak - set-up |",
        "|---|---|---|---|---|---|",
    ]
    for row in results:
        lines.append(
            f"| {row['repeats']:,} | {row['chunk']} | {row['group']} | {row['baseline_mib']:.0f} MiB | "
            f"{row['peak_mib']:.0f} MiB | {row['peak_mib'] - row['baseline_mib']:.0f} MiB |"
        )
    first, last = results[0], results[-1]
    growth = (last["peak_mib"] - last["baseline_mib"]) / max(
        first["peak_mib"] - first["baseline_mib"], 1
    )
    lines.append("")
    lines.append(
        f"Network {'-'.join(map(str, SIZES))}, {BATCH} inputs, all four kinds of noise, float32. "
        f"{last['repeats'] / first['repeats']:.0f}x the repeats: {growth:.2f}x the memory the "
        "simulation adds."
    )
    return "\n".join(lines)


if __name__ == "__main__":
    print(json.dumps(_child(int(sys.argv[1]))))
