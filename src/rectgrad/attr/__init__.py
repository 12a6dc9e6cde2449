"""Attribution methods built on the rule engine, with Captum's ``attribute(inputs, target=...)`` API."""
from rectgrad.attr.deconvolution import Deconvolution
from rectgrad.attr.guided_backprop import GuidedBackprop
from rectgrad.attr.rectgrad import RectGrad

__all__ = ["Deconvolution", "GuidedBackprop", "RectGrad"]
