"""Section 5.2, Figs. 5b and 13: class sensitivity, maps of an image and of its FGSM adversarial twin."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rectgrad import viz
from rectgrad._checks import real
from rectgrad._checks import seed as check_seed
from rectgrad.attr._arguments import check_internal_batch_size, looks_like_probabilities
from rectgrad.studies._common import (COMPARED, Images, StudyResult, check_out, check_show, display_maps, finite_mean,
                                      from_pixels, leaves_model_as_it_was, method_attributions, method_label,
                                      method_names, predict, skipped_note, spearman, summed_maps, to_pixels)


@leaves_model_as_it_was
def fgsm(model: nn.Module, x: Tensor, eps: float = 0.01, *, target: Tensor | None = None, mean=None,
         std=None, internal_batch_size: int | None = None) -> Tensor:
    """Fast gradient sign method (Goodfellow et al., 2015) with the paper's ``eps`` = 0.01 on [-1, 1] pixels.

    Ascends the cross-entropy of ``target`` (default: each image's predicted class) by one step of ``eps`` (finite,
    positive) in the sign of its gradient, then clips to [-1, 1] (for a model ending in a softmax, the cross-entropy
    of its probabilities themselves, ``-log p``, not of a softmax over them). The step is taken in pixel space scaled to
    [-1, 1] whatever the model's normalization: for a model that sees ``(pixel01 - mean) / std`` (per-channel
    ``mean``/``std``) it moves each pixel by ``eps / 2`` in [0, 1] units; with neither, ``x`` is taken to be
    pixels in [-1, 1]. Returns the adversarial inputs in the model's input space. A model of one output is refused:
    its cross-entropy is constant, so the step would be zero. ``internal_batch_size`` images go forward and backward
    at once (None: all): each image's step is the sign of its own loss's gradient, the same in any chunk.
    """
    _check_eps(eps)
    size = check_internal_batch_size(internal_batch_size)  # (a one-element tensor or array counts as its value)
    size = max(len(x), 1) if size is None else size
    targets = [None] * len(range(0, len(x), size)) if target is None else target.split(size)
    return torch.cat([_fgsm_step(model, chunk, eps, t, mean, std) for chunk, t in zip(x.split(size), targets)])


def _check_eps(eps) -> None:
    """FGSM's ``eps``, a finite positive step (a negative one would step down the loss: no attack)."""
    if not (real(eps) and math.isfinite(eps) and eps > 0):
        raise ValueError(f"eps must be a finite positive step, got {eps!r}")


def _fgsm_step(model: nn.Module, x: Tensor, eps: float, target: Tensor | None, mean, std) -> Tensor:
    """:func:`fgsm` of one chunk of images."""
    pixels = to_pixels(x, mean, std).detach().requires_grad_()
    with torch.enable_grad():
        scores = model(from_pixels(pixels, mean, std))
        if scores.dim() != 2 or scores.shape[1] < 2:
            raise ValueError(f"FGSM needs (N, classes) scores of two or more classes, but the model gives shape "
                             f"{tuple(scores.shape)}: the cross-entropy of one output is 0 whatever the input, so "
                             "no attack; for a binary classifier's single logit z, wrap the model to return (0, z)")
        target = scores.detach().argmax(1) if target is None else target
        loss = (F.nll_loss(scores.clamp_min(torch.finfo(scores.dtype).tiny).log(), target)
                if looks_like_probabilities(scores) else F.cross_entropy(scores, target))
        (grad,) = torch.autograd.grad(loss, pixels)
    return from_pixels((pixels + eps * grad.sign()).clamp(-1, 1), mean, std).detach()


@leaves_model_as_it_was
def adversarial(model: nn.Module, images: Images, out=None, *, eps: float = 0.01, methods=COMPARED,
                seed: int = 0, internal_batch_size: int | None = 16, show: int = 4,
                progress: bool = False) -> StudyResult:
    """Maps of every method for each image and its FGSM twin (Figs. 5b, 13), with class sensitivity as a number.

    Each map explains its own input's predicted class. Per method, the change of a map is
    ``1 - Spearman(map(x), map(x_adv))`` of the channel-summed maps (raw, and thresholded as in Sec. 5.2);
    a class-sensitive method changes its map when the class flips. As a control, the same change under a
    random sign perturbation of the same size (which rarely flips the class) separates class sensitivity
    from mere sensitivity to the input. The figures draw ``show`` images (0: no figures, None: all), those whose
    class flipped first; the numbers use all. ``progress``: a bar over the methods for each of the three inputs.
    ``seed`` (an integer in [0, 2**64)) draws the control's noise and the stochastic methods' (SmoothGrad).
    """
    _check_eps(eps)
    check_seed(seed)  # (before FGSM and the maps)
    internal_batch_size = check_internal_batch_size(internal_batch_size)
    show = check_show(show, len(images))
    methods = method_names(methods)  # run three times: a generator would be spent after the first
    check_out(out, "adversarial", ("sensitivity", "images"), ("maps", "maps_thresholded") if show else ())
    predicted, confidence = predict(model, images.x, internal_batch_size)
    x_adv = fgsm(model, images.x, eps, mean=images.mean, std=images.std, internal_batch_size=internal_batch_size)
    noise = torch.randint(0, 2, images.x.shape, generator=torch.Generator().manual_seed(seed)).to(images.x) * 2 - 1
    x_noise = images.from_pixels((images.to_pixels(images.x) + eps * noise).clamp(-1, 1))
    predicted_adv, confidence_adv = predict(model, x_adv, internal_batch_size)
    predicted_noise, _ = predict(model, x_noise, internal_batch_size)
    flipped = (predicted_adv != predicted).tolist()
    run = dict(methods=methods, seed=seed, internal_batch_size=internal_batch_size, progress=progress)
    clean, skipped = method_attributions(model, images.x, predicted, description="maps, images", **run)
    adv, skipped_adv = method_attributions(model, x_adv, predicted_adv, description="maps, FGSM twins", **run)
    noisy, skipped_noisy = method_attributions(model, x_noise, predicted_noise, description="maps, noise controls",
                                               **run)
    for method in [m for m in clean if m not in adv or m not in noisy]:  # compared on all three or not at all
        skipped[method] = skipped_adv.get(method) or skipped_noisy[method]
        del clean[method]
    rows = []
    for method in clean:
        row = {"method": method_label(method)}
        for thresholded, suffix in ((False, ""), (True, ", thresholded")):
            a, b, c = (summed_maps(m[method], method, thresholded) for m in (clean, adv, noisy))
            change_adv = [1 - spearman(a[i], b[i]) for i in range(len(a))]
            row[f"adversarial change{suffix}"] = finite_mean(change_adv)
            if not thresholded:
                flips = [v for v, f in zip(change_adv, flipped) if f]
                row["adversarial change, class flipped"] = finite_mean(flips)
            row[f"noise change{suffix}"] = finite_mean(1 - spearman(a[i], c[i]) for i in range(len(a)))
            row[f"excess{suffix}"] = row[f"adversarial change{suffix}"] - row[f"noise change{suffix}"]
        rows.append(row)
    per_image = [{"image": name, "class": images.class_name(int(p)), "confidence": float(cp),
                  "adversarial class": images.class_name(int(pa)), "adversarial confidence": float(ca),
                  "flipped": f, "noise flipped": bool(pn != p)}
                 for name, p, cp, pa, ca, f, pn in zip(images.names, predicted, confidence, predicted_adv,
                                                      confidence_adv, flipped, predicted_noise)]
    shown = sorted(range(len(images)), key=lambda i: not flipped[i])[:show]  # flipped images first
    both = torch.stack([images.x[shown], x_adv[shown]], 1).flatten(0, 1)
    labels = [label for i in shown for label in (f"{images.names[i]}: {per_image[i]['class'][:16]}",
                                                 f"adv: {per_image[i]['adversarial class'][:16]}")]
    figures = {}
    for thresholded, name in ((False, "maps"), (True, "maps_thresholded")) if show else ():
        columns = {method_label(m): display_maps(torch.stack([clean[m][shown], adv[m][shown]], 1).flatten(0, 1), m,
                                                 thresholded) for m in clean}
        figures[name] = viz.grid(both, columns, row_labels=labels, **images.display(),
                                 title=f"Image and FGSM twin (eps = {eps:g}), "
                                       + ("with" if thresholded else "without") + " final threshold")
    notes = _NOTES.format(eps=eps, flipped=sum(flipped), n=len(images)) + skipped_note(skipped)
    result = StudyResult("adversarial", {"sensitivity": rows, "images": per_image}, figures, notes=notes)
    if out is not None:
        result.save(out)
    return result


_NOTES = """Section 5.2 / Figs. 5b, 13. FGSM with eps = {eps:g} on pixels in [-1, 1] flipped the predicted class of
{flipped} of {n} images. Each map explains its own input's predicted class (RectGrad: q = 98, padding trick).
`adversarial change`: 1 - Spearman rank correlation between the channel-summed maps of an image and of its
adversarial twin, mean over images (`class flipped`: over the images whose class flipped only); `noise change`:
the same for a random +-eps sign perturbation (control); `excess`: adversarial change - noise change, the part
of the change due to the adversarial direction; `thresholded`: after the final threshold of the baselines (top
5%; RectGrad's maps are not thresholded, as in the paper). Class sensitivity shows as a large excess."""
