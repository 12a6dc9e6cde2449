"""Section 5.2, Figs. 5a and 12: coherence of every method across classes and within a class."""
from __future__ import annotations

import itertools

from torch import nn

from rectgrad import viz
from rectgrad.attr._arguments import check_internal_batch_size
from rectgrad.studies._common import (COMPARED, Images, StudyResult, check_out, check_show, display_maps,
                                      finite_mean, leaves_model_as_it_was, method_attributions, method_label,
                                      method_names, predict, skipped_note, spearman, summed_maps)


@leaves_model_as_it_was
def coherence(model: nn.Module, images: Images, out=None, *, methods=COMPARED, seed: int = 0,
              internal_batch_size: int | None = 16, show: int = 8, progress: bool = False) -> StudyResult:
    """All methods' maps for ``images``, without and with final thresholding (Figs. 5a, 12), with numbers.

    The paper asks that maps highlight similar features for images of the same class. As a number, per
    method: the mean rank correlation (Spearman) of the channel-summed maps over pairs of images of the
    same class ("within") and of different classes ("across"), on raw maps and on thresholded ones
    (baselines keep their top 5%; RectGrad's maps are left as they are, as the paper shows them). The class is
    the true label where ``images`` has labels, else the predicted class. Spatial correlation is a crude proxy:
    it rewards maps that fall on the same place, which same-class photos need not share. ``show``: how many
    images (the first) the figures draw, 0 for none, None for all; the numbers use all. ``progress``: a bar over
    the methods.
    """
    show = check_show(show, len(images))
    methods = method_names(methods)
    internal_batch_size = check_internal_batch_size(internal_batch_size)
    check_out(out, "coherence", ("similarity",), ("maps", "maps_thresholded") if show else ())
    predicted, _ = predict(model, images.x, internal_batch_size)
    classes = (images.labels if images.labels is not None else predicted).tolist()
    attributions, skipped = method_attributions(model, images.x, predicted, methods, seed=seed,
                                                internal_batch_size=internal_batch_size, progress=progress)
    pairs = list(itertools.combinations(range(len(images)), 2))
    rows = []
    for method, attr in attributions.items():
        row = {"method": method_label(method)}
        for thresholded, suffix in ((False, ""), (True, ", thresholded")):
            maps = summed_maps(attr, method, thresholded)
            within = [spearman(maps[i], maps[j]) for i, j in pairs if classes[i] == classes[j]]
            across = [spearman(maps[i], maps[j]) for i, j in pairs if classes[i] != classes[j]]
            row |= {f"within{suffix}": finite_mean(within), f"across{suffix}": finite_mean(across)}
        rows.append(row)
    counts = {"same": sum(classes[i] == classes[j] for i, j in pairs),
              "different": sum(classes[i] != classes[j] for i, j in pairs)}
    labels = [f"{n}: {images.class_name(int(c))[:20]}" for n, c in zip(images.names, predicted)]
    figures = {}
    for thresholded, name in ((False, "maps"), (True, "maps_thresholded")) if show else ():
        figures[name] = viz.grid(images.x[:show], {method_label(m): display_maps(a[:show], m, thresholded)
                                                   for m, a in attributions.items()}, row_labels=labels[:show],
                                 title="Coherence " + ("with" if thresholded else "without") + " final threshold",
                                 **images.display())
    notes = _NOTES.format(**counts) + skipped_note(skipped)
    result = StudyResult("coherence", {"similarity": rows}, figures, notes=notes)
    if out is not None:
        result.save(out)
    return result


_NOTES = """Section 5.2 / Figs. 5a, 12. Every method explains the predicted class; RectGrad uses q = 98 and the
padding trick. `within` / `across`: mean Spearman rank correlation of channel-summed maps over the
{same} pairs of images of the same class / the {different} pairs of different classes
(NaN: no such pair or constant maps); `thresholded`: after the final threshold of the baselines (top 5% per
map; RectGrad's maps are not thresholded, as in the paper). Coherence in the paper's sense shows as within > across."""
