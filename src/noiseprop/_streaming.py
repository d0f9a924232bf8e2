"""Streaming statistics of Monte Carlo runs: chunks of repeats, reusable buffers, float64 sums.

Shared by the dense engine (:mod:`noiseprop.montecarlo`) and the engine for any model
(:mod:`noiseprop.model_montecarlo`); the statistics are described in the docstring of
:mod:`noiseprop.montecarlo`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch import Tensor

from noiseprop.results import LayerStatistics

__all__ = ["Accumulator", "Workspace", "chunk_repeats", "chunks"]

_CHUNK_BYTES = 2**22  # one chunk's widest (repeats, batch, width) tensor: 4 MiB (BENCHMARKS.md)
_CHUNK_REPEATS, _CHUNK_BYTES_MAX = 8, 2**25  # ... but 8 repeats while that stays within 32 MiB


def chunk_repeats(elements: int, dtype: torch.dtype) -> int:
    """Repeats per chunk when one repeat's widest tensor holds ``elements`` values: that tensor fits
    ``_CHUNK_BYTES``, but a chunk holds at least ``_CHUNK_REPEATS`` repeats while it fits
    ``_CHUNK_BYTES_MAX`` (with many inputs, one-repeat chunks spend more on the float64 sums than on
    the network). A function of the shapes only, never of free memory (reproducibility)."""
    per_repeat = torch.finfo(dtype).bits // 8 * elements
    return max(1, _CHUNK_BYTES // per_repeat, min(_CHUNK_REPEATS, _CHUNK_BYTES_MAX // per_repeat))


def chunks(repeats: int, groups: int, chunk: int) -> Iterator[tuple[int, int, bool]]:
    """The chunks of a simulation, as ``(repeats, whole_groups, closes_a_group)``.

    The repeats form ``groups`` consecutive groups whose sizes differ by at most one. A group larger
    than ``chunk`` runs as several chunks (``whole_groups = 0``; the last one closes it); smaller
    groups of equal size run together, as many as fit in ``chunk`` (``whole_groups = k``), so that
    small groups do not make small chunks.
    """
    small, extra = divmod(repeats, groups)
    for size, number in ((small + 1, extra), (small, groups - extra)):
        if number == 0:
            continue
        if size <= chunk:
            together = chunk // size
            for first in range(0, number, together):
                count = min(together, number - first)
                yield count * size, count, False
        else:
            for _ in range(number):
                for start in range(0, size, chunk):
                    count = min(chunk, size - start)
                    yield count, 0, start + count == size


class Workspace:
    """Named flat buffers of ``size`` elements, allocated on first use and reused for every chunk
    (fresh tensors per operation would cost an allocation and its page faults each time)."""

    def __init__(self, size: int, dtype: torch.dtype, device: torch.device) -> None:
        self.size, self.dtype, self.device = size, dtype, device
        self._buffers: dict[str, Tensor] = {}

    def take(self, name: str, shape: tuple[int, ...]) -> Tensor:
        """A contiguous ``shape`` view of buffer ``name`` (its previous content is overwritten)."""
        buffer = self._buffers.get(name)
        if buffer is None:
            buffer = torch.empty(self.size, dtype=self.dtype, device=self.device)
            self._buffers[name] = buffer
        return buffer[: math.prod(shape)].view(shape)


class Accumulator:
    """Streaming float64 sums of one layer's deviations, with batch-means standard errors."""

    def __init__(self, batch: int, width: int, covariance: bool, device: torch.device) -> None:
        zeros = lambda *shape: torch.zeros(*shape, dtype=torch.float64, device=device)  # noqa: E731
        self.count = 0
        self.total = zeros(batch, width)
        self.total_sq = zeros(batch, width)
        self.group_count = 0
        self.group = zeros(batch, width)
        self.group_sq = zeros(batch, width)
        self.group_variance_sum = zeros(batch, width)
        self.group_variance_sq = zeros(batch, width)
        self.input_variances: list[Tensor] = []  # per group: (batch,) averages over the neurons
        self.comoment = zeros(batch, width, width) if covariance else None

    def add(self, signal: Tensor, reference: Tensor, work: Workspace, whole_groups: int) -> None:
        """Add a chunk ``(count, batch, width)`` of noisy outputs whose noise-free value is
        ``reference``: part of the current group (``whole_groups = 0``), or ``whole_groups`` whole
        groups of equal size. Sums over the chunk are taken in the run dtype, then added in float64."""
        deviation = torch.sub(signal, reference, out=work.take("deviation", signal.shape))
        if self.comoment is not None:
            wide = deviation.to(torch.float64).permute(1, 0, 2)
            self.comoment += torch.matmul(wide.transpose(1, 2), wide)
        if whole_groups == 0:
            self.group_count += deviation.shape[0]
            self.group += deviation.sum(0)
            self.group_sq += deviation.square_().sum(0)
            return
        size = deviation.shape[0] // whole_groups
        by_group = deviation.view(whole_groups, size, *deviation.shape[1:])
        sums = by_group.sum(1)
        self._close(sums, by_group.square_().sum(1), size)

    def end_group(self) -> None:
        """Close the group whose chunks :meth:`add` received one by one."""
        self._close(self.group.unsqueeze(0), self.group_sq.unsqueeze(0), self.group_count)
        self.group_count = 0
        self.group.zero_()
        self.group_sq.zero_()

    def _close(self, sums: Tensor, squares: Tensor, n: int) -> None:
        """Record ``k`` finished groups of ``n`` repeats each, given their ``(k, batch, width)`` sums
        of deviations and of squared deviations (converted to float64 here)."""
        sums, squares = sums.double(), squares.double()
        variance = torch.addcmul(squares, sums, sums, value=-1.0 / n).div_(n - 1)
        self.input_variances.extend(variance.mean(-1).unbind(0))
        self.count += n * sums.shape[0]
        if sums.shape[0] == 1:  # the common case: one group, no reductions needed
            sums, squares, variance = sums[0], squares[0], variance[0]
            self.group_variance_sq.addcmul_(variance, variance)
        else:
            self.group_variance_sq += variance.square().sum(0)
            sums, squares, variance = sums.sum(0), squares.sum(0), variance.sum(0)
        self.group_variance_sum += variance
        self.total += sums
        self.total_sq += squares

    def result(self, signal: Tensor) -> LayerStatistics:
        n = self.count
        mean_deviation = self.total / n
        variance = ((self.total_sq - self.total * mean_deviation) / (n - 1)).clamp_min_(0)
        groups = len(self.input_variances)
        group_mean = self.group_variance_sum / groups
        spread = (self.group_variance_sq - groups * group_mean.square()).clamp_min_(0) / (groups - 1)
        per_input = torch.stack(self.input_variances)  # (groups, batch)
        covariance = None
        if self.comoment is not None:
            covariance = self.comoment - n * mean_deviation.unsqueeze(-1) * mean_deviation.unsqueeze(-2)
            covariance /= n - 1
        return LayerStatistics(
            mean=signal + mean_deviation,
            variance=variance,
            covariance=covariance,
            mean_stderr=(variance / n).sqrt(),
            variance_stderr=(spread / groups).sqrt(),
            input_variance_stderr=per_input.std(0) / math.sqrt(groups),
            layer_variance_stderr=float(per_input.mean(1).std() / math.sqrt(groups)),
        )
