"""Appendix B: the propagation rule candidates PR1-PR4 and RectGradMod (Fig. 14).

The engine selects a rule with ``RectGrad(model).attribute(..., rule="pr1" | "pr2" | "pr3" | "pr4" | "mod")``.
:func:`toy_b2` reproduces the single-layer example of Appendix B.2 as numbers; :func:`rules` draws
every rule's attribution maps for a model and images (Fig. 14 compares PR1 with RectGradMod).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from rectgrad import viz
from rectgrad._checks import real
from rectgrad.attr import RectGrad
from rectgrad.attr._arguments import check_internal_batch_size, check_threshold
from rectgrad.attr.rectgrad import RULES
from rectgrad.engine import Options, Rule
from rectgrad.studies._common import (Images, StudyResult, check_out, check_show, engine_gradients, finite_mean,
                                      leaves_model_as_it_was, one_or_many, outside_fraction, predict, quiet,
                                      spearman)

B2_WEIGHTS = (1.0, 10.0, -100.0, 1000.0)
B2_ACTIVATIONS = (3.0, 2.0, 1.0, 0.0)
# The importance scores of Appendix B.1, the one the threshold is applied to.
TOY_SCORES = {"pr1": lambda a, r: a * r, "pr2": lambda a, r: (a * r).abs(), "pr3": lambda a, r: a,
              "pr4": lambda a, r: r}
RULE_NAMES = {"pr1": "PR1 (RectGrad)", "pr2": "PR2", "pr3": "PR3", "pr4": "PR4", "mod": "RectGradMod"}


class AffineToy(nn.Module):
    """Appendix B.2: ``f(a) = a1 + 10 a2 - 100 a3 + 1000 a4 + b`` with ``a = relu(x)``; a second logit is 0."""

    def __init__(self, bias: float = 5.0):
        super().__init__()
        self.linear = nn.Linear(4, 2)
        with torch.no_grad():
            self.linear.weight.copy_(torch.tensor([B2_WEIGHTS, (0.0,) * 4]))
            self.linear.bias.copy_(torch.tensor([bias, 0.0]))

    def forward(self, x):
        return self.linear(torch.relu(x))


def toy_b2(q: float = 74.0) -> list[dict]:
    """The units each rule lets the gradient through in the toy of Appendix B.2, one row per rule.

    With ``a = (3, 2, 1, 0)`` and ``R = (1, 10, -100, 1000)`` and ``q = 74`` one of the four units passes:
    PR1 selects a2 (largest contribution ``a R``), PR2 a3 (largest ``|a R|``), PR3 a1 (largest ``a``),
    PR4 a4 (largest ``R``). RectGradMod uses PR1 at the layer nearest the output, the only one here.
    """
    q, _ = check_threshold(q, None)  # (numpy's "Percentiles must be in the range [0, 100]" named no q)
    x = torch.tensor([B2_ACTIVATIONS], dtype=torch.float64)
    incoming = torch.tensor([B2_WEIGHTS], dtype=torch.float64)
    model = AffineToy().double()
    rows = []
    for rule in RULES:
        engine_rule = Rule(score="pr2", top_score="pr1", q=q) if rule == "mod" else Rule(score=rule, q=q)
        scores = TOY_SCORES["pr1" if rule == "mod" else rule](x, incoming)[0]  # its one activation is the top one
        grad, _ = engine_gradients(model, x, torch.tensor([0]), Options(rule=engine_rule))
        passed = grad[0].tolist()
        selected = [f"a{i + 1}" for i, g in enumerate(passed) if g != 0]
        contributions = [a * g for a, g in zip(B2_ACTIVATIONS, passed) if g]
        rows.append({"rule": RULE_NAMES[rule], "scores": _vector(scores.tolist()),
                     "tau": float(np.percentile(scores.numpy(), q, method="nearest")),
                     "selected": " ".join(selected) or "none", "gradient passed": _vector(passed),
                     "contribution a*R of the selected": _vector(contributions)})
    return rows


def _vector(values) -> str:
    return "(" + ", ".join(f"{v:g}" for v in values) + ")"


@leaves_model_as_it_was
def rules(model: nn.Module, images: Images | None = None, out=None, *, q: float = 98.0,
          padding_trick: bool = True, candidates: tuple[str, ...] | str = RULES, toy_q: float = 74.0,
          internal_batch_size: int | None = 16, show: int = 8) -> StudyResult:
    """Appendix B: the B.2 toy numbers and, for ``images``, the maps of the ``candidates`` rules (Fig. 14).

    Per rule: the fraction of non-zero attribution, the number of all-zero maps, the rank correlation
    with PR1's map and, where ``images`` has masks, the fraction of the attribution mass on the background.
    Maps are RectGrad's ``x * R`` with final threshold (positive part), ``q`` and the padding trick.
    ``candidates``: the rules compared, one name or several.
    ``show``: how many images (the first) the figures draw, 0 for none, None for all; the numbers use all.
    """
    if not real(toy_q) or not 0 <= toy_q <= 100:
        raise ValueError(f"toy_q must be a percentile in [0, 100], got {toy_q!r}")
    show = check_show(show, 0 if images is None else len(images))
    internal_batch_size = check_internal_batch_size(internal_batch_size)
    candidates = one_or_many(candidates)  # one rule, not its letters
    if images is not None and not candidates:  # an empty maps table would look like a result
        raise ValueError(f"no rules given: name one or more of {', '.join(RULES)}, or leave the default (all)")
    check_out(out, "rules", ("toy_b2",) + ("maps",) * (images is not None), ("grid",) if images is not None and show
              else ())
    tables = {"toy_b2": toy_b2(toy_q)}
    figures = {}
    if images is not None:
        predicted, _ = predict(model, images.x, internal_batch_size)
        attributions = {rule: quiet(RectGrad(model).attribute, images.x, target=predicted, q=q, rule=rule,
                                    padding_trick=padding_trick, internal_batch_size=internal_batch_size)
                        for rule in candidates}
        summed = {rule: a.sum(1) for rule, a in attributions.items()}
        reference = summed.get("pr1")
        rows = []
        for rule, attr in attributions.items():
            flat = attr.reshape(len(attr), -1)
            row = {"rule": RULE_NAMES[rule], "nonzero fraction": float((flat != 0).double().mean()),
                   "all-zero maps": int((flat.abs().sum(1) == 0).sum())}
            if reference is not None:
                row["rank correlation with PR1"] = finite_mean(spearman(m, r)
                                                               for m, r in zip(summed[rule], reference))
            if images.masks is not None:
                row["background fraction"] = finite_mean(outside_fraction(summed[rule], images.masks).tolist())
            rows.append(row)
        tables["maps"] = rows
        if show:
            maps = {RULE_NAMES[rule]: viz.prepare(a[:show]) for rule, a in attributions.items()}
            labels = [f"{n}: {images.class_name(int(c))}" for n, c in zip(images.names, predicted)]
            figures["grid"] = viz.grid(images.x[:show], maps, row_labels=labels[:show],
                                       title=f"Propagation rules (q = {q:g})", **images.display())
    result = StudyResult("rules", tables, figures, notes=_NOTES.format(q=q, toy_q=toy_q, padding=padding_trick))
    if out is not None:
        result.save(out)
    return result


_NOTES = """Appendix B. `toy_b2`: the affine model f(a) = a1 + 10 a2 - 100 a3 + 1000 a4 + b at a = (3, 2, 1, 0),
gradient R = (1, 10, -100, 1000), threshold at the {toy_q:g}th percentile (one of four units passes).
`maps`: RectGrad with each rule (q = {q:g}, padding trick: {padding}, positive part) for the predicted class;
non-zero fraction over all input values, rank correlation (Spearman) of each channel-summed map with
PR1's, background fraction = share of |attribution| outside the object mask (where masks exist; mean over the maps
that are not all zero)."""
