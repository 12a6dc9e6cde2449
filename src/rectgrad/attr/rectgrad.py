"""Rectified Gradient (paper Sec. 4.1, Appendix C)."""
from __future__ import annotations

from captum._utils.common import _format_output, _is_tuple
from captum.log import log_usage

from rectgrad._checks import flag
from rectgrad.attr._arguments import check_threshold
from rectgrad.attr._base import EngineAttribution, warn_if_degenerate
from rectgrad.engine import Options, Rule

RULES = ("pr1", "pr2", "pr3", "pr4", "mod")


class RectGrad(EngineAttribution):
    """RectGrad: the gradient passes an activation only where ``a * R`` exceeds a per-sample threshold.

    ``attribute`` returns ``x * R`` (paper Sec. 4.1), kept positive when ``final_threshold`` is true.

    >>> attr = RectGrad(model).attribute(x, target=y, q=98.0)
    """

    @log_usage()
    def attribute(self, inputs, target=None, additional_forward_args=None, q: float | None = None,
                  tau: float | None = None, padding_trick: bool = False, prr: bool = False,
                  final_threshold: bool = True, rule: str = "pr1", internal_batch_size: int | None = None):
        """Attribution of ``target`` (``None``: each sample's predicted class) to ``inputs``.

        Args:
            q: threshold at the q-th percentile of each sample's importance scores ``a * R`` over all
                units of a layer (default 98, numpy's ``nearest`` percentile, strict ``>``).
            tau: a constant threshold instead of ``q`` (``tau=0`` gives Guided Backprop x input, Claim 2).
            padding_trick: zero the gradient's border before SAME convolutions, zero-padded or 1 x 1 (Appendix
                C.1, Listing 2).
            prr: proportional redistribution through max-pooling (Appendix C.2).
            final_threshold: keep only the positive part of ``x * R``.
            rule: the propagation rule of Appendix B: ``pr1`` (RectGrad), ``pr2`` ``|a R| > tau``,
                ``pr3`` ``a > tau``, ``pr4`` ``R > tau``, ``mod`` (RectGradMod: PR1 at the layer nearest
                the output, PR2 elsewhere).
            internal_batch_size: process at most this many samples at a time (bounds memory).
        """
        q, tau = check_threshold(q, tau)
        padding_trick, prr, final_threshold = (flag(name, value) for name, value in (
            ("padding_trick", padding_trick), ("prr", prr), ("final_threshold", final_threshold)))
        if rule not in RULES:
            raise ValueError(f"unknown rule {rule!r}; choose one of {', '.join(RULES)}")
        engine_rule = (Rule(score="pr2", top_score="pr1", q=q, tau=tau) if rule == "mod"
                       else Rule(score=rule, q=q, tau=tau))
        options = Options(rule=engine_rule, padding_trick=padding_trick, prr=prr)
        is_tuple = _is_tuple(inputs)
        inputs, grads = self._engine_gradients(inputs, target, additional_forward_args, options, internal_batch_size)
        attributions = tuple(x.detach() * g for x, g in zip(inputs, grads))
        if final_threshold:
            attributions = tuple(a.clamp(min=0) for a in attributions)
        warn_if_degenerate(attributions)
        return _format_output(is_tuple, attributions)

    @property
    def multiplies_by_inputs(self) -> bool:
        return True
