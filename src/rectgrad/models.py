"""The paper's CNN (Appendix F.2): one definition for CIFAR-10 (3x32x32) and Fashion-MNIST (1x28x28)."""
from __future__ import annotations

import re

from torch import nn


class PaperCNN(nn.Sequential):
    """conv3x3(32)-relu, conv3x3(32)-relu, maxpool2, conv3x3(64)-relu, conv3x3(64)-relu, maxpool2,
    dense(256)-relu, dense(classes). SAME padding and biases, as in the paper's reference code.

    ``features`` and ``classifier`` are kept as named children so experiments can address a layer
    (e.g. ``model.features[3]``) by name.
    """

    def __init__(self, in_channels: int = 3, image_size: int = 32, num_classes: int = 10):
        if image_size % 4:
            raise ValueError(f"image_size must be divisible by 4 (two 2x2 max-pools), got {image_size}")
        self.in_channels, self.image_size, self.num_classes = in_channels, image_size, num_classes
        features = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3, padding=1), nn.ReLU(),
            nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
            nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),
        )
        side = image_size // 4
        classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(64 * side * side, 256), nn.ReLU(),
            nn.Linear(256, num_classes),
        )
        super().__init__()
        self.add_module("features", features)
        self.add_module("classifier", classifier)

    def config(self) -> dict:
        """Constructor arguments, stored in checkpoints so ``load_model`` can rebuild the network."""
        return {"in_channels": self.in_channels, "image_size": self.image_size, "num_classes": self.num_classes}


def architecture(model: nn.Module) -> str:
    """The layers of ``model`` as ``repr`` lists them, without their ``inplace`` flags (an in-place activation
    computes what its out-of-place twin does), for comparing two models' architectures."""
    return re.sub(r",? ?inplace=(?:True|False)", "", repr(model))
