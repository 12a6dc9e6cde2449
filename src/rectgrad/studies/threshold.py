"""Section 5.1, Fig. 4: the effect of the threshold percentile q on RectGrad, as maps and as a sparsity curve."""
from __future__ import annotations

import numpy as np
from torch import nn

from rectgrad import viz
from rectgrad.attr import RectGrad
from rectgrad.attr._arguments import check_internal_batch_size
from rectgrad.studies._common import (Images, StudyResult, check_out, check_show, finite_mean, leaves_model_as_it_was,
                                      predict, quiet, spearman)

QS = (0.0, 10.0, 20.0, 80.0, 90.0, 95.0, 99.0)


@leaves_model_as_it_was
def threshold(model: nn.Module, images: Images, out=None, *, qs=QS, padding_trick: bool = True,
              internal_batch_size: int | None = 16, show: int = 8) -> StudyResult:
    """RectGrad maps for ``tau = 0`` (Guided BP x input, Claim 2) and every q of ``qs`` (Fig. 4), with numbers.

    As in Section 5, the maps are ``x * R`` without the final zero threshold, explaining each image's
    predicted class, with the padding trick. Per setting: the fraction of non-zero attribution values (the
    sparsity curve), the fraction of positive ones, and the rank correlation (Spearman) of the
    channel-summed map with the ``tau = 0`` map: the paper observes that maps for ``20 <= q <= 80``
    resemble Guided BP x input because most importance scores are 0 there. ``show``: how many images (the
    first) the maps figure draws, 0 for none, None for all; the numbers use all. The q values (one number, or
    several) are taken in increasing order, each once.
    """
    qs = (qs,) if np.ndim(qs) == 0 else qs  # one q alone
    show = check_show(show, len(images))
    internal_batch_size = check_internal_batch_size(internal_batch_size)
    check_out(out, "threshold", ("sparsity",), ("maps",) * bool(show) + ("sparsity",))
    predicted, _ = predict(model, images.x, internal_batch_size)
    settings = {"tau = 0": {"tau": 0.0}} | {f"q = {q:.10g}": {"q": q} for q in sorted(set(map(float, qs)))}
    attributions = {name: quiet(RectGrad(model).attribute, images.x, target=predicted, padding_trick=padding_trick,
                                final_threshold=False, internal_batch_size=internal_batch_size, **kwargs)
                    for name, kwargs in settings.items()}
    reference = attributions["tau = 0"].sum(1)
    rows = []
    for name, attr in attributions.items():
        flat = attr.reshape(len(attr), -1)
        nonzero, positive = (flat != 0).double().mean(1), (flat > 0).double().mean(1)
        similarity = finite_mean(spearman(m, r) for m, r in zip(attr.sum(1), reference))
        rows.append({"setting": name, "nonzero fraction": float(nonzero.mean()),
                     "nonzero std": float(nonzero.std()) if len(flat) > 1 else 0.0,
                     "positive fraction": float(positive.mean()), "rank correlation with tau = 0": similarity})
    labels = [f"{n}: {images.class_name(int(c))}" for n, c in zip(images.names, predicted)]
    figures = {}
    if show:
        figures["maps"] = viz.grid(images.x[:show], {name: viz.prepare(a[:show]) for name, a in attributions.items()},
                                   row_labels=labels[:show],
                                   title="RectGrad for threshold tau = 0 and percentiles q (no final threshold)",
                                   **images.display())
    figures["sparsity"] = _sparsity_plot(rows)
    result = StudyResult("threshold", {"sparsity": rows}, figures, notes=_NOTES.format(padding=padding_trick))
    if out is not None:
        result.save(out)
    return result


def _sparsity_plot(rows: list[dict]):
    curve = [r for r in rows if r["setting"].startswith("q")]
    qs = [float(r["setting"].split("=")[1]) for r in curve]
    fig = viz.line_plot(qs, {"non-zero": ([r["nonzero fraction"] for r in curve], [r["nonzero std"] for r in curve]),
                             "positive": ([r["positive fraction"] for r in curve], None)},
                        "threshold percentile q", "fraction of input attribution values",
                        "RectGrad sparsity against q")
    ax = fig.axes[0]
    ax.axhline(rows[0]["nonzero fraction"], linestyle="--", color="gray", label="non-zero, tau = 0")
    ax.set_ylim(bottom=0)
    viz.legend_beside(ax)
    return fig


_NOTES = """Section 5.1 / Fig. 4. RectGrad x*R without final threshold (padding trick: {padding}), explaining the
predicted class. `nonzero fraction`: share of input values (channels x pixels) with non-zero attribution, mean
(and std) over the images; `positive fraction`: share > 0; `rank correlation with tau = 0`: Spearman
correlation of the channel-summed map with the tau = 0 (Guided BP x input) map, mean over images."""
