"""Quantitative evaluation: noise metrics and ROAR/KAR perturbations (paper Section 5.3, Figs. 7-9, Table 1).

Pure, vectorised torch functions. Attributions are float tensors shaped like the inputs, ``(N, C, H, W)``;
masks and regions are bool, ``(N, H, W)`` or ``(H, W)`` (the latter broadcast over the batch). Per-image
metrics return an ``(N,)`` tensor in the attributions' dtype, float32 for half-precision maps (float16 sums
overflow at 65504 and bfloat16 keeps 3 digits: they are summed in float32).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from decimal import Decimal

import numpy as np
import torch

from rectgrad._checks import describe, flag, integer
from rectgrad._checks import fractions as check_fractions
from rectgrad._checks import generator as check_generator

Curve = Sequence[float] | torch.Tensor

__all__ = [
    "attribution_outside",
    "attribution_in_region",
    "total_variation",
    "rank_pixels",
    "pixel_count",
    "removal_mask",
    "random_removal_mask",
    "replace_pixels",
    "channel_mean",
    "roar_auc",
    "kar_aoc",
    "TIE_NOISE",
]

#: Standard deviation of the tie-breaking noise; the reference adds ``np.random.normal(scale=1e-4)``.
TIE_NOISE = 1e-4


def _check_attr(attr: torch.Tensor) -> torch.Tensor:
    """Validate attributions; return them in float32 at least (sums of half-precision maps overflow)."""
    if not isinstance(attr, torch.Tensor) or not attr.is_floating_point() or attr.dim() != 4:
        raise ValueError(f"attributions must be a floating (N, C, H, W) tensor, got {describe(attr)}")
    if not torch.isfinite(attr).all():
        raise ValueError("attributions contain NaN or inf")
    return attr.to(torch.promote_types(attr.dtype, torch.float32))


def _check_images(images: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.dtype == torch.bool:
        raise ValueError(f"images must be a numeric (N, C, H, W) tensor, got {describe(images)}")


def _pixel_mask(mask: torch.Tensor, ref: torch.Tensor, name: str, ref_name: str) -> torch.Tensor:
    """Validate a bool ``(H, W)`` / ``(N, H, W)`` mask against ``ref`` ``(N, C, H, W)``; return it as (N, H, W)."""
    n, _, h, w = ref.shape
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        raise ValueError(f"{name} must be a bool tensor, got {describe(mask)}")
    if tuple(mask.shape) not in ((h, w), (n, h, w)):
        raise ValueError(
            f"{name} shape {tuple(mask.shape)} does not match {ref_name} shape {tuple(ref.shape)}: "
            f"expected (H, W) = {(h, w)} or (N, H, W) = {(n, h, w)}"
        )
    return mask.to(ref.device).expand(n, h, w)


def _number(name: str, value) -> float:
    """``value`` as a float, or a ``TypeError`` naming ``name`` for a bool or a string (which ``float`` would read as
    1.0 or parse)."""
    if isinstance(value, (bool, np.bool_, str, bytes)) or getattr(value, "dtype", None) in (torch.bool, np.bool_):
        raise TypeError(f"{name} must be a number, got {value!r}")
    return float(value)


def _check_fraction(fraction: float) -> float:
    fraction = _number("fraction", fraction)
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must lie in the open interval (0, 1), got {fraction}")
    return fraction


def pixel_count(fraction: float, size: tuple[int, int]) -> int:
    """``k = round(fraction * H * W)`` (Python's ``round``: nearest integer, halves to even), the pixels ROAR
    replaces and KAR keeps; a fraction that rounds to none or all of them is refused. The product is exact, of the
    fraction as written (its shortest decimal form, ``repr``): 0.7 of 45x45 is 1417.5, so 1418 (the float product
    1417.4999999999998 would round down)."""
    fraction = _check_fraction(fraction)
    h, w = size
    k = round(Decimal(repr(fraction)) * h * w)
    if k in (0, h * w):
        raise ValueError(f"fraction {fraction} of {h}x{w} pixels rounds to {k} pixels: ROAR and KAR would then "
                         "change nothing or everything; use larger images or fractions further inside (0, 1)")
    return k


def attribution_in_region(attr: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """Per-image sum of ``|attr|`` over channels and the pixels where ``region`` is True.

    Training-set occlusion (Fig. 7): the amount of attribution on the random patch; the reference sums the
    8x8 top-left corner of the 10x10 patch.
    """
    attr = _check_attr(attr)
    region = _pixel_mask(region, attr, "region", "attributions")
    return (attr.abs().sum(1) * region).sum((1, 2))


def attribution_outside(attr: torch.Tensor, mask: torch.Tensor, *, normalize: bool = False) -> torch.Tensor:
    """Per-image sum of ``|attr|`` over channels and the background (pixels where ``mask`` is False).

    ``mask`` is the object segmentation (True = object). Noise level, Fig. 8 (top): the paper compares raw
    sums; the reference first thresholds the baselines at their 95th percentile and keeps RectGrad's positive
    part (the caller's job), and takes ``|.|`` of the channel-summed map: pass ``attr.sum(1, keepdim=True)``
    for that. ``normalize=True`` returns the scale-free fraction of the image's total ``|attr|`` that lies
    outside the object, defined as 0 for an image whose attribution is identically zero.
    """
    attr = _check_attr(attr)
    outside = attribution_in_region(attr, ~_pixel_mask(mask, attr, "mask", "attributions"))
    if not flag("normalize", normalize):
        return outside
    total = attr.abs().sum((1, 2, 3))
    return torch.where(total > 0, outside / torch.where(total > 0, total, 1), 0)


def total_variation(attr: torch.Tensor) -> torch.Tensor:
    """Per-image anisotropic total variation of the channel-summed map ``m = attr.sum(1)`` (Fig. 8, bottom).

    ``TV = sum |m[i+1, j] - m[i, j]| + sum |m[i, j+1] - m[i, j]|``. Channels are summed first, as the
    visualization (Appendix F.1) and the reference (``tf.image.total_variation`` of the summed map) do.
    """
    m = _check_attr(attr).sum(1)
    return (m[:, 1:] - m[:, :-1]).abs().sum((1, 2)) + (m[:, :, 1:] - m[:, :, :-1]).abs().sum((1, 2))


def check_tie_noise(tie_noise: float) -> float:
    """``tie_noise`` as a float; a ``ValueError`` unless it is a finite standard deviation >= 0 (a ``TypeError`` for a
    bool or a string)."""
    tie_noise = _number("tie_noise", tie_noise)
    if not (math.isfinite(tie_noise) and tie_noise >= 0):
        raise ValueError(f"tie_noise must be a finite standard deviation >= 0, got {tie_noise}")
    return tie_noise


def rank_pixels(
    attr: torch.Tensor, *, tie_noise: float = TIE_NOISE, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Per-image pixel ranking for ROAR/KAR (Fig. 9): ``(N, H*W)`` row-major flat indices, most important first.

    The score is the channel-summed attribution (in float32 at least) plus i.i.d. Gaussian noise of standard
    deviation ``tie_noise`` (the paper's "N(0, 1e-4)" is the reference's ``np.random.normal(scale=1e-4)``, a
    std), drawn from ``generator`` (on its own device) for reproducibility. The noise is absolute, not
    relative: it can also reorder distinct scores closer than about ``tie_noise``. With ``tie_noise=0`` the
    order is deterministic and ties go to the lower flat index. The reference ranks RectGrad's positive part
    and the baselines' signed attributions; that preprocessing is the caller's.
    """
    attr = _check_attr(attr)  # the noise survives in float32
    tie_noise, generator = check_tie_noise(tie_noise), check_generator(generator)
    scores = attr.sum(1).flatten(1)
    if tie_noise > 0:
        noise = torch.randn(scores.shape, generator=generator, dtype=scores.dtype,
                            device=scores.device if generator is None else generator.device)
        scores = scores + tie_noise * noise.to(scores.device)
    return torch.argsort(scores, dim=1, descending=True, stable=True)


def ranked_mask(order: torch.Tensor, fraction: float, size: tuple[int, int], *, keep: bool = False) -> torch.Tensor:
    """Bool ``(N, H, W)`` mask of the pixels to replace given a ranking ``order`` from :func:`rank_pixels`:
    the ``k =`` :func:`pixel_count` first (ROAR), or all but them (KAR, ``keep=True``)."""
    k = pixel_count(fraction, size)
    h, w = size
    top = torch.zeros(order.shape[0], h * w, dtype=torch.bool, device=order.device)
    top.scatter_(1, order[:, :k], True)
    return (~top if keep else top).view(-1, h, w)


def removal_mask(
    attr: torch.Tensor,
    fraction: float,
    *,
    keep: bool = False,
    tie_noise: float = TIE_NOISE,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Bool ``(N, H, W)`` mask of the pixels to replace, ranked by :func:`rank_pixels` (Fig. 9, Table 1).

    With ``k = round(fraction * H * W)`` (Python's ``round``: nearest integer, halves to even), ROAR
    (``keep=False``) replaces exactly the ``k`` top-ranked pixels of each image and KAR (``keep=True``) keeps
    them and replaces the other ``H*W - k``. The reference thresholds at ``np.percentile`` instead, so its
    counts are only approximately ``k``. A fraction that rounds to none or all of the pixels is refused.
    """
    _check_fraction(fraction)
    keep = flag("keep", keep)
    order = rank_pixels(attr, tie_noise=tie_noise, generator=generator)
    return ranked_mask(order, fraction, tuple(attr.shape[2:]), keep=keep)


def random_removal_mask(
    shape: Sequence[int],
    fraction: float,
    *,
    keep: bool = False,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Random baseline of Fig. 9 / Table 1: bool mask of ``shape`` ``(N, H, W)`` (positive integers, numpy's or
    tensors' too), each pixel replaced independently.

    As the reference, a pixel is replaced with probability ``fraction`` for ROAR (``keep=False``) and
    ``1 - fraction`` for KAR (``keep=True``), so the per-image counts are random (Binomial), not exact.
    """
    fraction = _check_fraction(fraction)
    keep, generator = flag("keep", keep), check_generator(generator)
    shape = _mask_shape(shape)
    p = 1.0 - fraction if keep else fraction
    draws = torch.rand(shape, generator=generator, device=device if generator is None else generator.device)
    return draws < p if device is None else (draws < p).to(device)


def _mask_shape(shape: Sequence[int]) -> tuple[int, int, int]:
    """``shape`` as three positive ints (N, H, W); numpy and tensor integers are ints too, bools and floats not."""
    shape = tuple(shape)
    try:
        dims = tuple(integer("shape", s) for s in shape)
    except TypeError:
        dims = ()
    if len(dims) != 3 or min(dims) < 1:
        raise ValueError(f"shape must be three positive ints (N, H, W), got {shape}")
    return dims


def replace_pixels(images: torch.Tensor, mask: torch.Tensor, fill: Sequence[float] | torch.Tensor) -> torch.Tensor:
    """New tensor equal to ``images`` ``(N, C, H, W)`` except at masked pixels, set to ``fill`` ``(C,)``.

    ``fill`` is the per-channel dataset mean (:func:`channel_mean`) in the images' own units. The result keeps
    the images' dtype; for integer images (e.g. uint8 CIFAR-10) the fill is rounded to the nearest integer
    (halves to even, as torch.round: 127.5 -> 128, 128.5 -> 128); the fill must fit the dtype (a float16 one
    too). The input is not modified.
    """
    _check_images(images)
    mask = _pixel_mask(mask, images, "mask", "images")
    c = images.shape[1]
    fill = torch.as_tensor(fill, dtype=torch.float64)
    if fill.shape != (c,) or not torch.isfinite(fill).all():
        raise ValueError(f"fill must hold {c} finite per-channel values, got {describe(fill)}")
    if not images.is_floating_point():
        fill = fill.round()
        info = torch.iinfo(images.dtype)
        if fill.min() < info.min or fill.max() > info.max:
            raise ValueError(f"fill {fill.tolist()} does not fit images of dtype {images.dtype}")
    elif not torch.isfinite(fill.to(images.dtype)).all():  # (float16 ends at 65504)
        raise ValueError(f"fill {fill.tolist()} does not fit images of dtype {images.dtype}")
    fill = fill.to(dtype=images.dtype, device=images.device).view(1, c, 1, 1)
    return torch.where(mask[:, None], fill, images)


def channel_mean(images: torch.Tensor) -> torch.Tensor:
    """Per-channel mean ``(C,)`` (float64) of ``images`` ``(N, C, H, W)`` over images and pixels.

    The ROAR/KAR replacement value; the reference takes it over the raw (0-255) training images.
    """
    _check_images(images)
    if not images.numel():
        raise ValueError(f"images hold no pixels, got {describe(images)}: no mean to replace pixels with")
    if images.is_floating_point():
        total = images.sum((0, 2, 3), dtype=torch.float64)
    else:
        total = images.sum((0, 2, 3)).double()  # exact int64 accumulation
    return total / (images.numel() // images.shape[1])


def _normalized_area(fractions: Curve, accuracies: Curve) -> float:
    x = torch.as_tensor(fractions, dtype=torch.float64, device="cpu")  # (one on a GPU, one a list: one device)
    y = torch.as_tensor(accuracies, dtype=torch.float64, device="cpu")
    if x.dim() != 1 or x.shape != y.shape or len(x) < 2:
        raise ValueError(
            "fractions and accuracies must be 1-D of equal length >= 2, "
            f"got shapes {tuple(x.shape)} and {tuple(y.shape)}"
        )
    check_fractions(x)
    if not ((y >= 0) & (y <= 1)).all():
        raise ValueError(f"accuracies must lie in [0, 1], got {y.tolist()}")
    return float(torch.trapezoid(y, x) / (x[-1] - x[0]))


def roar_auc(fractions: Curve, accuracies: Curve) -> float:
    """ROAR area under the curve (Table 1; lower is better).

    ``AUC = trapezoid(accuracies, fractions) / (fractions[-1] - fractions[0])``: the trapezoid-rule area under
    the test-accuracy-versus-removed-fraction curve over the measured fractions only (no point for the
    unmodified model), divided by their span, i.e. the curve's mean height, in [0, 1]. For the paper's grid
    (0.1, 0.3, 0.5, 0.7, 0.9) the weights are (1, 2, 2, 2, 1) / 8. The unit-width normalisation is what
    Table 1 implies: its random row gives AUC + AOC = .5562 + .4438 = 1 (random ROAR at p and KAR at 1 - p
    replace pixels alike), and an unnormalised area over [0.1, 0.9] could not reach KAR AOC .3382 with
    accuracies below .75. Whether the paper used trapezoids or the plain mean cannot be told from Table 1.
    """
    return _normalized_area(fractions, accuracies)


def kar_aoc(fractions: Curve, accuracies: Curve) -> float:
    """KAR area over the curve (Table 1; lower is better): ``1 - roar_auc(fractions, accuracies)``.

    ``fractions`` are the kept fractions; the area is the same normalised trapezoid area as :func:`roar_auc`,
    taken over the curve inside the unit box (accuracy 1).
    """
    return 1.0 - _normalized_area(fractions, accuracies)
