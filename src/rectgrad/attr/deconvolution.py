"""Deconvolution (Zeiler & Fergus, 2014) on the rule engine: paper Eq. 3."""
from rectgrad.attr._base import ModifiedGradient
from rectgrad.engine import DECONVOLUTION


class Deconvolution(ModifiedGradient):
    """Gradient passing an activation where the incoming gradient is positive, whatever the activation."""

    RULE = DECONVOLUTION
