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
        return _kth_largest(scores, from_top)[0]
    return -_kth_largest(-scores, k + 1)[0]


def where_above_percentile(scores: Tensor, values: Tensor, q: float) -> Tensor:
    """``where(scores > q-th percentile of each row, values, 0)`` for ``(N, M)`` tensors (strict ``>``).

    When the percentile was found among a few candidates, only those are compared and copied.
    """
    n, m = scores.shape
    k = nearest_rank(q, m)
    from_top = m - k
    if from_top <= k + 1:
        tau, candidates = _kth_largest(scores, from_top)
        if candidates is not None:
            flat, rows, candidate_scores = candidates
            kept = flat[candidate_scores > tau.index_select(0, rows)]
            out = torch.zeros_like(values).reshape(-1)
            out.index_copy_(0, kept, values.reshape(-1).index_select(0, kept))
            return out.view_as(values)
    else:
        tau = -_kth_largest(-scores, k + 1)[0]
    return torch.where(scores > tau[:, None], values, 0)


def _kth_largest(x: Tensor, t: int) -> tuple[Tensor, tuple[Tensor, Tensor, Tensor] | None]:
    """Per-row t-th largest value (t >= 1) of a ``(N, M)`` tensor and, when it was found without a
    full selection, the candidates it was selected from (every value >= it): their flat indices into
    ``x``, their rows and their values."""
    n, m = x.shape
    if t == 1:
        return x.amax(dim=1), None
    width = 1 << max(m // (4 * t), 1).bit_length() - 1  # a power of two giving at least 4t blocks
    while m % width:
        width //= 2
    if m < 4096 or width < 4:
        return x.topk(t, dim=1, sorted=False).values.amin(dim=1), None
    # t blocks have a maximum >= the t-th largest block maximum, so at least t values are >= it:
    # the t-th largest value lies among the candidates >= that bound, all inside blocks whose
    # maximum reaches the bound.
    blocks = m // width
    by_block = x.reshape(n * blocks, width)
    block_max = by_block.amax(dim=1).view(n, blocks)
    bound = block_max.topk(t, dim=1, sorted=False).values.amin(dim=1, keepdim=True)
    if bool((bound <= 0).any()):
        # Sparse scores (mostly exact zeros, the positives clustered in few blocks): a row with at least
        # t positive values has a positive t-th largest value, and its positive values are candidates
        # enough. Rows with fewer positives fail the count check below and are selected directly.
        bound = torch.where(bound > 0, bound, torch.nextafter(bound.new_zeros(()), bound.new_ones(())))
    hit_blocks = (block_max >= bound).view(-1).nonzero().squeeze(1)  # row * blocks + block
    inside = by_block.index_select(0, hit_blocks) >= bound.index_select(0, hit_blocks // blocks)
    block_index, offset = inside.nonzero(as_tuple=True)
    candidates = hit_blocks.index_select(0, block_index) * width + offset  # flat index into x
    rows = candidates // m
    counts = torch.bincount(rows, minlength=n)
    widest = int(counts.max())
    if widest * 4 > m or int(counts.min()) < t:  # heavy ties at the bound, or NaN scores: select directly
        return x.topk(t, dim=1, sorted=False).values.amin(dim=1), None
    starts = torch.cumsum(counts, 0) - counts
    slots = rows * widest + torch.arange(candidates.numel(), device=x.device) - starts.index_select(0, rows)
    packed = x.new_full((n * widest,), float("-inf"))
    values = x.reshape(-1).index_select(0, candidates)
    packed.index_copy_(0, slots, values)
    return packed.view(n, widest).topk(t, dim=1, sorted=False).values.amin(dim=1), (candidates, rows, values)
