"""Exact per-sample percentiles without sorting (the per-layer threshold of paper Sec. 4.1).

``torch.quantile`` refuses more than 2^24 elements and sorts; ``kthvalue``/``topk`` over a whole
layer are exact but slow. For the high percentiles RectGrad uses (q = 98) the threshold is among
the few largest scores of a row, so we first bound it from below with block maxima, keep only the
candidates above that bound and select among them. The result is bit-identical to
``numpy.percentile(row, q, method="nearest")``.
"""
from __future__ import annotations

import torch
from torch import Tensor


def nearest_rank(q: float, n: int) -> int:
    """0-based index of the q-th percentile of ``n`` sorted values, numpy's ``nearest`` method.

    numpy computes ``around((n - 1) * q / 100)`` in float64 with round-half-to-even, as Python's
    ``round`` does.
    """
    return min(max(round((n - 1) * (q / 100.0)), 0), n - 1)


def percentile_nearest(scores: Tensor, q: float) -> Tensor:
    """Per-row q-th percentile (``method="nearest"``) of a ``(N, M)`` tensor, shape ``(N,)``."""
    n, m = scores.shape
    k = nearest_rank(q, m)
    from_top = m - k  # the percentile is the `from_top`-th largest value
    if from_top <= k + 1:
        return _kth_largest(scores, from_top)
    return -_kth_largest(-scores, k + 1)


def _kth_largest(x: Tensor, t: int) -> Tensor:
    """Per-row t-th largest value (t >= 1) of a ``(N, M)`` tensor."""
    n, m = x.shape
    if t == 1:
        return x.amax(dim=1)
    blocks = 4 * t
    if m < 4096 or blocks * 8 > m:
        return x.topk(t, dim=1, sorted=False).values.amin(dim=1)
    # t rows-blocks have a maximum >= the t-th largest block maximum, so at least t values are >= it:
    # the t-th largest value lies among the candidates >= that bound.
    width = m // blocks
    block_max = x[:, : blocks * width].reshape(n, blocks, width).amax(dim=2)
    bound = block_max.topk(t, dim=1, sorted=False).values.amin(dim=1, keepdim=True)
    rows, cols = (x >= bound).nonzero(as_tuple=True)
    counts = torch.bincount(rows, minlength=n)
    widest = int(counts.max())
    if widest * 4 > m:  # heavy ties at the bound (e.g. many zero scores): select directly
        return x.topk(t, dim=1, sorted=False).values.amin(dim=1)
    starts = torch.cumsum(counts, 0) - counts
    packed = x.new_full((n, widest), float("-inf"))
    packed[rows, torch.arange(rows.numel(), device=x.device) - starts[rows]] = x[rows, cols]
    return packed.topk(t, dim=1, sorted=False).values.amin(dim=1)
