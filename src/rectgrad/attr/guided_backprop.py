"""Guided Backpropagation (Springenberg et al., 2015) on the rule engine: paper Eq. 5."""
from rectgrad.attr._base import ModifiedGradient
from rectgrad.engine import GUIDED_BACKPROP


class GuidedBackprop(ModifiedGradient):
    """Gradient passing an activation only where both its input and the incoming gradient are positive.

    Unlike Captum's, it follows functional, in-place, reused and ReLU6-style activations too.
    """

    RULE = GUIDED_BACKPROP
