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
    """Streaming float64 sums of one layer's deviations, with batch-means standard errors.

    Per group ``g`` of ``n`` repeats, from its sums ``S_g = sum d`` and ``Q_g = sum d^2``, the
    unbiased variance ``v_g = (Q_g - S_g^2 / n) / (n - 1)``, kept as ``sum_g v_g``, ``sum_g v_g^2``
    and the per-input averages over the neurons ``mean_j v_g``. Groups that fit a chunk are reduced in
    the run dtype, chunk by chunk, and only the chunk's sums over its groups are added in float64 (the
    float64 work is per chunk, not per group); a group spread over several chunks is summed in float64.
    """

    def __init__(self, batch: int, width: int, covariance: bool, device: torch.device) -> None:
        zeros = lambda *shape: torch.zeros(*shape, dtype=torch.float64, device=device)  # noqa: E731
        self.count = 0
        self.total = zeros(batch, width)
        self.total_sq = zeros(batch, width)
        self.group_count = 0  # the group spread over several chunks: its float64 sums, once begun
        self.group: Tensor | None = None
        self.group_sq: Tensor | None = None
        self.group_variance_sum = zeros(batch, width)
        self.group_variance_sq = zeros(batch, width)
        self.input_variances: list[Tensor] = []  # (k, batch) per record: averages over the neurons
        self.comoment = zeros(batch, width, width) if covariance else None

    def add(self, signal: Tensor, reference: Tensor, work: Workspace, whole_groups: int) -> None:
        """Add a chunk ``(count, batch, width)`` of noisy outputs whose noise-free value is
        ``reference``: part of the current group (``whole_groups = 0``), or ``whole_groups`` whole
        groups of equal size. Sums over the chunk are taken in the run dtype, then added in float64."""
        deviation = torch.sub(signal, reference, out=work.take("deviation", signal.shape))
        if self.comoment is not None:
            wide = deviation.to(torch.float64).permute(1, 0, 2)
            self.comoment += torch.matmul(wide.transpose(1, 2), wide)
        count = deviation.shape[0]
        self.count += count
        if whole_groups == 0:
            sums, squares = deviation.sum(0), deviation.square_().sum(0)
            if self.group is None or self.group_sq is None:
                self.group, self.group_sq = sums.double(), squares.double()
            else:
                self.group += sums
                self.group_sq += squares
            self.group_count += count
            return
        size = count // whole_groups
        by_group = deviation.view(whole_groups, size, *deviation.shape[1:])
        shape = (whole_groups, *deviation.shape[1:])
        sums = torch.sum(by_group, 1, out=work.take("group_sums", shape))
        squares = torch.sum(by_group.square_(), 1, out=work.take("group_squares", shape))
        self.total += sums.sum(0)
        self.total_sq += squares.sum(0)
        self._record(_group_variance_(squares, sums, size))

    def end_group(self) -> None:
        """Close the group whose chunks :meth:`add` received one by one."""
        assert self.group is not None and self.group_sq is not None
        self.total += self.group
        self.total_sq += self.group_sq
        variance = _group_variance_(
            self.group_sq.unsqueeze(0), self.group.unsqueeze(0), self.group_count
        )
        self._record(variance)
        self.group_count, self.group, self.group_sq = 0, None, None

    def _record(self, variance: Tensor) -> None:
        """Record the ``(k, batch, width)`` variances of ``k`` finished groups (overwritten here)."""
        self.input_variances.append(variance.mean(-1).to(torch.float64))
        self.group_variance_sum += variance.sum(0)
        self.group_variance_sq += variance.square_().sum(0)

    def result(self, signal: Tensor) -> LayerStatistics:
        """The statistics, with means ``signal + mean deviation`` (``signal``: the noise-free output,
        in any dtype; the means are float64). Few float64 temporaries: each is a pass over
        ``(batch, width)`` and, for many inputs, fresh pages."""
        n = self.count
        mean_deviation = self.total / n
        variance = torch.addcmul(self.total_sq, self.total, mean_deviation, value=-1.0)
        variance.div_(n - 1).clamp_min_(0)
        per_input = torch.cat(self.input_variances)  # (groups, batch)
        groups = per_input.shape[0]
        group_mean = self.group_variance_sum / groups
        # sum_g (v_g - mean)^2 / (groups - 1), then over groups: the squared standard error
        spread = torch.addcmul(self.group_variance_sq, group_mean, group_mean, value=-groups)
        spread.clamp_min_(0).div_(groups - 1).div_(groups)
        covariance = None
        if self.comoment is not None:
            covariance = self.comoment - n * mean_deviation.unsqueeze(-1) * mean_deviation.unsqueeze(-2)
            covariance /= n - 1
        return LayerStatistics(
            mean=mean_deviation.add_(signal.to(mean_deviation.device)),
            variance=variance,
            covariance=covariance,
            mean_stderr=torch.div(variance, n).sqrt_(),
            variance_stderr=spread.sqrt_(),
            input_variance_stderr=per_input.std(0) / math.sqrt(groups),
            layer_variance_stderr=float(per_input.mean(1).std() / math.sqrt(groups)),
        )


def _group_variance_(squares: Tensor, sums: Tensor, n: int) -> Tensor:
    """Unbiased variances ``(Q - S^2 / n) / (n - 1)`` of groups of ``n`` deviations from their sums
    ``S`` and sums of squares ``Q``, written over ``squares`` (in their dtype)."""
    return squares.addcmul_(sums, sums, value=-1.0 / n).div_(n - 1)
