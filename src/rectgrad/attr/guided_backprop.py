"""Guided Backpropagation (Springenberg et al., 2015) on the rule engine: paper Eq. 5."""
from __future__ import annotations

from captum._utils.common import _format_output, _is_tuple
from captum.log import log_usage

from rectgrad.attr._base import EngineAttribution
from rectgrad.engine import GUIDED_BACKPROP, Options


class GuidedBackprop(EngineAttribution):
    """Gradient passing an activation only where both its input and the incoming gradient are positive.

    Unlike Captum's, it follows functional, in-place, reused and ReLU6-style activations too.
    """

    @log_usage()
    def attribute(self, inputs, target=None, additional_forward_args=None, internal_batch_size: int | None = None):
        """The guided gradient of ``target`` (``None``: predicted class) with respect to ``inputs``."""
        is_tuple = _is_tuple(inputs)
        _, grads = self._engine_gradients(inputs, target, additional_forward_args, Options(rule=GUIDED_BACKPROP),
                                          internal_batch_size)
        return _format_output(is_tuple, grads)
