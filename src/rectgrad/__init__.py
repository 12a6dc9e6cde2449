"""rectgrad: Rectified Gradient and the attribution methods it is compared with, for any PyTorch model."""
__version__ = "0.1.0"

from rectgrad.attr import Deconvolution, GuidedBackprop, RectGrad  # noqa: E402
from rectgrad.checkpoint import load_model  # noqa: E402
from rectgrad.engine import AttributionWarning  # noqa: E402
from rectgrad.methods import explain, methods  # noqa: E402
from rectgrad.models import PaperCNN  # noqa: E402

__all__ = ["AttributionWarning", "Deconvolution", "explain", "GuidedBackprop", "load_model", "methods", "PaperCNN",
           "RectGrad", "__version__"]
