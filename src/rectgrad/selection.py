"""Exact per-sample percentiles without sorting (the per-layer threshold of paper Sec. 4.1).

``torch.quantile`` refuses more than 2^24 elements and sorts; ``kthvalue``/``topk`` over a whole
layer are exact but slow. For the high percentiles RectGrad uses (q = 98) the threshold is among
the few largest scores of a row, so we bound it from below with a strided sample, keep the
candidates above that bound (one comparison pass) and select among them. The result is bit-identical
to ``numpy.percentile(row, q, method="nearest")``; NaN scores (e.g. a float16 overflow) rank below
every number, so they never pass a threshold.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor


def nearest_rank(q: float, n: int) -> int:
    """0-based index of the q-th percentile of ``n`` sorted values, numpy's ``nearest`` method.

    numpy computes ``around((n - 1) * q / 100)`` in float64 with round-half-to-even, as Python's
    ``round`` does.
    """
    return min(max(round((n - 1) * (q / 100.0)), 0), n - 1)


def percentile_nearest(scores: Tensor, q: float) -> Tensor:
    """Per-row q-th percentile (``method="nearest"``) of a ``(N, M)`` tensor, shape ``(N,)``; NaN counts as
    ``-inf``. Rows of no scores (``M = 0``) have no percentile: a ``ValueError``."""
    if scores.shape[1] == 0:
        raise ValueError(f"rows of no scores have no percentile, got scores of shape {tuple(scores.shape)}")
    return _percentile(scores.contiguous(), q)[0]


def where_above_percentile(scores: Tensor, values: Tensor, q: float) -> Tensor:
    """``where(scores > q-th percentile of each row, values, 0)`` for ``(N, M)`` scores and values of any shape with
    the same elements (strict ``>``). The result has the shape of ``values`` and is not a view (autograd accumulates
    gradients in place only into tensors of their own).

    When the percentile was found among a few candidates, only those are compared and copied. Rows of no scores (an
    activation over an empty slice of features) have no percentile and pass nothing: there is nothing to pass.
    """
    if scores.shape[1] == 0:
        return torch.zeros_like(values, memory_format=torch.contiguous_format)
    scores = scores.contiguous()  # (PR3/PR4 score by a layer's own tensors: transposed, or expanded gradients)
    tau, candidates = _percentile(scores, q)
    if candidates is None:
        return torch.where((scores > tau[:, None]).view(values.shape), values, 0)
    flat, rows, candidate_scores = candidates
    kept = flat[candidate_scores > tau.index_select(0, rows)]
    out = torch.zeros_like(values, memory_format=torch.contiguous_format)
    out.view(-1).index_copy_(0, kept, values.reshape(-1).index_select(0, kept))
    return out


def _percentile(scores: Tensor, q: float) -> tuple[Tensor, tuple[Tensor, Tensor, Tensor] | None]:
    """The per-row percentile and, as :func:`_kth_largest` gives them, the candidates it came from."""
    n, m = scores.shape
    k = nearest_rank(q, m)
    from_top = m - k  # the percentile is the `from_top`-th largest value
    if from_top <= k + 1:
        return _kth_largest(scores, from_top)
    return -_kth_largest(-_nan_lowest(scores), k + 1)[0], None


_STRIDES = (1, 3, 7, 13, 29, 61, 127, 251, 509, 1021, 2039, 4093)  # primes: no aliasing with feature-map widths


def sample_plan(t: float, m: int) -> tuple[int, int]:
    """How to bound the t-th largest of ``m`` values from below: sample every ``stride``-th value (the t-th
    largest then ranks about 32nd in the sample) and take the sample's ``rank``-th largest, four standard
    deviations and 4 above the expected rank (shared with :mod:`rectgrad.cpu_gate`)."""
    stride = max(s for s in _STRIDES if s * 32 <= max(t, 32))
    size = -(-m // stride)
    expected = t * size / m
    return stride, min(size, math.ceil(expected + 4 * math.sqrt(expected) + 4))


def _kth_largest(x: Tensor, t: int) -> tuple[Tensor, tuple[Tensor, Tensor, Tensor] | None]:
    """Per-row t-th largest value (t >= 1) of a ``(N, M)`` tensor and, when it was found without a
    full selection, the candidates it was selected from (every value >= a bound <= it): their flat
    indices into ``x``, their rows and their values."""
    n, m = x.shape
    if t == 1:
        return _nan_lowest(x).amax(dim=1), None
    if m < 4096 or x.is_cuda or n == 0:  # a GPU's topk is a sync-free radix select: faster than ours there
        return _topk_kth(x, t), None  # (and an empty batch has nothing to sample)
    # A bound, probably just below the t-th largest value: the r-th largest of a strided sample, r a few
    # standard deviations above the sample's expected rank. It is checked below (at least t candidates), never
    # trusted. Sparse scores (mostly exact zeros): the positive values are the candidates.
    stride, rank = sample_plan(t, m)
    bound = x[:, ::stride].topk(rank, dim=1, sorted=False).values.amin(dim=1)
    bound.clamp_(min=_smallest_positive(x.dtype))  # NaN stays
    # Candidates: the values >= bound (never NaN).
    rows, columns = (x >= bound[:, None]).nonzero(as_tuple=True)
    candidates = rows * m + columns
    values = x.view(-1).index_select(0, candidates)
    counts = torch.bincount(rows, minlength=n)
    widest = max(int(counts.max()), t)
    short = counts < t  # the sample overestimated (NaN in it, too), or fewer than t positive values
    if widest * 4 > m or (bool(short.any()) and not _zero_where_short(x, t, bound, short)):
        return _topk_kth(x, t), None  # heavy ties at the bound, or an overestimate: select directly
    starts = torch.cumsum(counts, 0) - counts
    slots = torch.arange(len(rows), device=x.device) + (rows * widest - starts.index_select(0, rows))
    packed = x.new_full((n * widest,), float("-inf"))
    packed.index_copy_(0, slots, values)
    kth = packed.view(n, widest).topk(t, dim=1, sorted=False).values.amin(dim=1)
    kth = torch.where(short, 0.0, kth)  # rows with fewer than t positive values, at least t >= 0
    return kth, (candidates, rows, values)


def _zero_where_short(x: Tensor, t: int, bound: Tensor, short: Tensor) -> bool:
    """Whether every short row (fewer than t candidates) took the positive values as candidates, has fewer
    than t of them, and holds at least t values >= 0: its t-th largest value is then exactly 0."""
    if not bool((bound[short] == _smallest_positive(x.dtype)).all()):
        return False
    rows = x if bool(short.all()) else x[short]
    return bool((torch.count_nonzero(rows >= 0, dim=1) >= t).all())


def _smallest_positive(dtype: torch.dtype) -> float:
    """The smallest positive (subnormal) value of ``dtype``."""
    info = torch.finfo(dtype)
    return info.tiny * info.eps


def _nan_lowest(x: Tensor) -> Tensor:
    return torch.nan_to_num(x, nan=-math.inf, posinf=math.inf, neginf=-math.inf)


def _topk_kth(x: Tensor, t: int) -> Tensor:
    return _nan_lowest(x).topk(t, dim=1, sorted=False).values.amin(dim=1)
