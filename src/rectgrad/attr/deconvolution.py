"""Deconvolution (Zeiler & Fergus, 2014) on the rule engine: paper Eq. 3."""
from __future__ import annotations

from captum._utils.common import _format_output, _is_tuple
from captum.log import log_usage

from rectgrad.attr._base import EngineAttribution
from rectgrad.engine import DECONVOLUTION, Options


class Deconvolution(EngineAttribution):
    """Gradient passing an activation where the incoming gradient is positive, whatever the activation."""

    @log_usage()
    def attribute(self, inputs, target=None, additional_forward_args=None, internal_batch_size: int | None = None):
        """The deconvnet signal of ``target`` (``None``: predicted class) with respect to ``inputs``."""
        is_tuple = _is_tuple(inputs)
        _, grads = self._engine_gradients(inputs, target, additional_forward_args, Options(rule=DECONVOLUTION),
                                          internal_batch_size)
        return _format_output(is_tuple, grads)
