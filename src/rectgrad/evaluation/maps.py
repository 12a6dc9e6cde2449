"""Attribution maps for the quantitative experiments and the two noise measures on them (paper Sec. 5.3).

Maps are kept channel-summed, ``(N, 1, H, W)`` float32: every measure of Section 5.3 reads the map summed
over colour channels, as the paper's visualization (Appendix F.1) and its reference code do.
"""
from __future__ import annotations


import numpy as np
import torch
from torch import Tensor, nn

from rectgrad._checks import describe, flag, positive_int
from rectgrad._checks import percentile as check_percentile
from rectgrad._checks import seed as check_seed
from rectgrad.metrics import attribution_in_region, attribution_outside, total_variation
from rectgrad.methods import explain, get_method
from rectgrad.train import evaluating, model_weight

#: Per-image percentile a baseline keeps under the final threshold (Sec. 5.2: "95 percentile final threshold").
TOP_PERCENTILE = 95.0


def compute_maps(model: nn.Module, inputs: Tensor, method: str, targets: Tensor, *, batch_size: int = 250,
                 internal_batch_size: int | None = None, seed: int = 0, progress=None,
                 **hyperparameters) -> Tensor:
    """Channel-summed maps ``(N, 1, H, W)`` (float32, CPU; half-precision maps are summed in float32, as their sums
    overflow) of ``method`` for the ``targets`` classes (one per input: a tensor, array or list; None: each input's
    predicted class).

    ``inputs`` are processed ``batch_size`` at a time on the model's device (theirs for a model without weights), in
    eval mode (the model's modes are restored afterwards); stochastic methods are seeded with ``(seed + batch index)
    mod 2**64`` (``seed`` an integer in [0, 2**64)), so a rerun reproduces them.
    ``progress`` (a tqdm bar) advances per image.
    """
    get_method(method)
    batch_size = positive_int("batch_size", batch_size)
    check_seed(seed)
    if not isinstance(inputs, Tensor) or inputs.dim() < 2 or not len(inputs):
        raise ValueError(f"inputs must be a tensor of the model's inputs (N, ...), N >= 1, got {describe(inputs)}")
    if targets is not None:
        targets = torch.as_tensor(targets)
        if targets.shape != (len(inputs),):
            raise ValueError(f"targets must hold one class per input, shape ({len(inputs)},), got "
                             f"{tuple(targets.shape)}")
    device = model_weight(model, inputs).device
    parts = []
    with evaluating(model):
        for index, start in enumerate(range(0, len(inputs), batch_size)):
            x = inputs[start:start + batch_size].to(device)
            t = None if targets is None else targets[start:start + batch_size].to(device)
            maps = explain(model, x, t, method, internal_batch_size=internal_batch_size,
                           seed=(int(seed) + index) % 2 ** 64, **hyperparameters)
            parts.append(maps.sum(1, keepdim=True, dtype=torch.promote_types(maps.dtype, torch.float32)).float().cpu())
            if progress is not None:
                progress.update(len(x))
    return torch.cat(parts)


def uses_positive_part(method: str) -> bool:
    """RectGrad maps are thresholded at zero (their positive part); the baselines at their top 5%."""
    return get_method(method).name.startswith("rectgrad")


def final_threshold(maps: Tensor, method: str, percentile: float = TOP_PERCENTILE) -> Tensor:
    """The final threshold of Sec. 5.2-5.3 on channel-summed maps ``(N, C, H, W) -> (N, 1, H, W)``.

    RectGrad keeps its positive part; a baseline keeps, per image, the values at or above its own
    ``percentile``-th percentile (a number in [0, 100]; numpy's linear interpolation) and is zero elsewhere, as
    :func:`rectgrad.viz.final_threshold` draws it.
    """
    percentile = check_percentile("percentile", percentile)
    summed = _summed(maps).detach()
    broken = (~torch.isfinite(summed)).flatten(1).any(1).nonzero().flatten().tolist()
    if broken:
        raise ValueError(f"the {method} maps of image(s) {broken[:10]} hold NaN or Inf values: no threshold (and "
                         "no noise measure) is defined on them")
    if uses_positive_part(method):
        return summed.clamp(min=0)
    flat = summed.flatten(1).double().cpu().numpy()
    # compared in float64: the cut rounded to the maps' dtype would keep values up to half a unit below it
    kept = flat >= np.percentile(flat, percentile, axis=1, keepdims=True)
    kept = torch.from_numpy(kept).view(summed.shape).to(summed.device)
    return torch.where(kept, summed, torch.zeros((), dtype=summed.dtype))


def _summed(maps: Tensor) -> Tensor:
    """Checked maps ``(N, C, H, W)`` summed over channels, in float32 at least (half-precision sums overflow)."""
    if not isinstance(maps, Tensor) or not maps.is_floating_point() or maps.dim() != 4:
        raise ValueError(f"maps must be a floating (N, C, H, W) tensor (C = 1 for channel-summed maps), got "
                         f"{describe(maps)}")
    return maps.sum(1, keepdim=True, dtype=torch.promote_types(maps.dtype, torch.float32))


def _prepare(maps: Tensor, method: str, threshold: bool) -> Tensor:
    """The maps as the measures read them, summed over channels (in float32 at least: half-precision sums
    overflow)."""
    return final_threshold(maps, method) if flag("threshold", threshold) else _summed(maps)


def patch_attribution(maps: Tensor, method: str, region: Tensor, *, threshold: bool = True) -> Tensor:
    """Training-set occlusion (Figs. 3, 7): per-image sum of ``|map|`` inside the patch ``region`` (H, W).

    ``threshold`` applies :func:`final_threshold` first (Sec. 5.3 compares the methods "with final
    thresholding to the baselines"). The reference scores the 8x8 corner of the 10x10 patch
    (:meth:`rectgrad.data.RandomPatch.visible_region`).
    """
    return attribution_in_region(_prepare(maps, method, threshold), region)


def noise_level(maps: Tensor, method: str, masks: Tensor, *, threshold: bool = True) -> dict[str, Tensor]:
    """Noise level (Fig. 8): per image, the total ``|map|`` outside the object ``masks`` (N, H, W) (True =
    object) and the total variation of the map, after :func:`final_threshold` when ``threshold``; and, as
    methods differ in scale, both divided by the map's total ``|map|`` (0 for an all-zero map)."""
    prepared = _prepare(maps, method, threshold)
    total = prepared.abs().sum((1, 2, 3))
    tv = total_variation(prepared)
    return {"outside": attribution_outside(prepared, masks),
            "outside_fraction": attribution_outside(prepared, masks, normalize=True),
            "total_variation": tv,
            "total_variation_relative": torch.where(total > 0, tv / torch.where(total > 0, total, 1), 0)}
