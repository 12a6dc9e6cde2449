"""rectgrad: Rectified Gradient and the attribution methods it is compared with, for any PyTorch model."""
__version__ = "0.1.0"

from rectgrad.models import PaperCNN  # noqa: E402

__all__ = ["PaperCNN", "__version__"]
