"""Datasets of the paper's experiments, held in memory as uint8 tensors.

* Fashion-MNIST from its idx files (``*-idx3-ubyte.gz``): a real image dataset that works offline
  once ``apt-get install dataset-fashion-mnist`` has put it in ``/usr/share/datasets/fashion-mnist``.
* CIFAR-10 from the official python archive ``cifar-10-python.tar.gz``.
* The paper's masked evaluation images (``<class>_<n>.jpg`` + ``<class>_<n>_mask.jpg``).
* Your own images in torchvision's ImageFolder layout (``ROOT/train/<class>/...``, ``ROOT/test/<class>/...``),
  with optional object masks beside the test images.
* ``RandomPatch``: the fixed random patch pasted on every image (paper Sec. 3 and 5.3).

Models see images scaled to [-1, 1] (``x / 127.5 - 1``, as in the paper); ``ImageDataset.inputs``
makes such float batches on the fly from the uint8 images.
"""
from __future__ import annotations

import codecs
import functools
import gzip
import hashlib
import http.client
import math
import numbers
import os
import pickle
import re
import shutil
import struct
import tarfile
import tempfile
import unicodedata
import urllib.request
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from rectgrad._checks import did_you_mean
from rectgrad.checkpoint import _UMASK, one_line

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
DATASETS = ("fashion-mnist", "cifar10", "folder")

FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
FASHION_MNIST_FILES = {  # split -> ((images file, md5), (labels file, md5)); md5 of the official .gz files
    "train": (("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
              ("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe")),
    "test": (("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"),
             ("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310")),
}
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MASKS_URL = ("https://github.com/1202kbs/Rectified-Gradient/raw/f59b8c1ffdc7597bb2b493efe8cef91d8ac84684/"
                     "CIFAR10_mask.tar")  # the paper's masked images, in its reference code at a fixed commit
CIFAR10_FILE = "cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_MEMBERS = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}


@dataclass
class ImageDataset:
    """Images as a uint8 tensor (N, C, H, W) with int64 labels (N,), class names and a dataset name. Images and labels
    may be given as numpy arrays (labels as a list too), classes as a tuple."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    name: str

    def __post_init__(self):
        self.images = _as_tensor("images", self.images, (np.ndarray,))
        self.labels = _as_tensor("labels", self.labels, (np.ndarray, list))
        shape = tuple(self.images.shape)
        if self.images.dtype != torch.uint8:
            raise ValueError(f"images must be uint8 (0..255), got {self.images.dtype}")
        if len(shape) != 4:
            raise ValueError(f"images must be (N, C, H, W), got shape {shape}")
        if shape[1] not in (1, 3, 4) and shape[3] in (1, 3, 4):  # (grey, RGB, RGBA)
            raise ValueError(f"images of shape {shape} look channels-last (N, H, W, C): give (N, C, H, W), "
                             "images.permute(0, 3, 1, 2) (numpy: images.transpose(0, 3, 1, 2))")
        if not isinstance(self.classes, (list, tuple)):
            raise TypeError(f"classes must be a list of class names, got {type(self.classes).__name__}")
        names = [c for c in self.classes if not isinstance(c, (str, numbers.Integral)) or isinstance(c, bool)]
        if names:
            raise TypeError(f"classes must be a list of class names (str, or int), got {names[0]!r} among them")
        if not self.classes:
            raise ValueError("classes is empty: give one name per class")
        self.classes = [str(c) for c in self.classes]  # (ints, e.g. list(range(10)), named as they print)
        if self.labels.shape != (len(self.images),):
            raise ValueError(f"labels must have shape ({len(self.images)},), got {tuple(self.labels.shape)}")
        if self.labels.is_floating_point() or self.labels.is_complex() or self.labels.dtype == torch.bool:
            raise ValueError(f"labels must be integer class indices, got {self.labels.dtype}")
        self.labels = self.labels.long()
        if len(self.labels) and not 0 <= int(self.labels.min()) <= int(self.labels.max()) < len(self.classes):
            raise ValueError(f"labels must be class indices in 0..{len(self.classes) - 1} ({len(self.classes)} "
                             f"classes), got {int(self.labels.min())}..{int(self.labels.max())}")

    def __len__(self) -> int:
        return len(self.images)

    def inputs(self, index=None, device=None) -> torch.Tensor:
        """Float32 model inputs in [-1, 1] for all images or ``index`` (LongTensor or slice)."""
        images = self.images if index is None else self.images[index]
        return to_inputs(images.to(device) if device is not None else images)

    def subset(self, index) -> ImageDataset:
        """The images and labels at ``index`` (LongTensor, bool mask or slice; an int: a dataset of that one image)."""
        images, labels = self.images[index], self.labels[index]
        if labels.dim() == 0:  # (one image: kept as a batch of one, as MaskedImages.subset keeps it)
            images, labels = images[None], labels[None]
        return replace(self, images=images, labels=labels)

    def with_images(self, images: torch.Tensor) -> ImageDataset:
        """The same labels and classes with new uint8 images (e.g. occluded ones)."""
        if len(images) != len(self):
            raise ValueError(f"expected {len(self)} images, got {len(images)}")
        return replace(self, images=images)


@dataclass
class MaskedImages(ImageDataset):
    """Images with boolean object masks (N, H, W) (True = object) and their file names (no extension). Masks may be
    given as a numpy array."""

    masks: torch.Tensor
    names: list[str]

    def __post_init__(self):
        super().__post_init__()
        self.masks = _as_tensor("masks", self.masks, (np.ndarray,))
        n, _, height, width = self.images.shape
        if self.masks.dtype != torch.bool or self.masks.shape != (n, height, width) or len(self.names) != n:
            raise ValueError(f"masks must be bool ({n}, {height}, {width}) with {n} names, got "
                             f"{self.masks.dtype} {tuple(self.masks.shape)} and {len(self.names)} names")

    def subset(self, index) -> MaskedImages:
        keep = torch.arange(len(self))[index].reshape(-1)
        return replace(self, images=self.images[keep], labels=self.labels[keep], masks=self.masks[keep],
                       names=[self.names[i] for i in keep.tolist()])


def _as_tensor(name: str, value, convertible: tuple[type, ...]) -> torch.Tensor:
    """``value``, a tensor or one of the ``convertible`` types (converted); a ``TypeError`` naming any other type."""
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, convertible):  # (a numpy view of negative strides, images[:, ::-1], copied first)
        return torch.as_tensor(np.ascontiguousarray(value) if isinstance(value, np.ndarray) else value)
    kinds = ", ".join(t.__name__ for t in (torch.Tensor, *convertible))
    raise TypeError(f"{name} must be one of {kinds}, got {type(value).__name__}")


def checksum(*datasets: ImageDataset, masks: bool = False) -> int:
    """A CRC-32 of the datasets' images and labels and, with ``masks``, of the object masks of those that are
    :class:`MaskedImages`."""
    crc = 0
    for d in datasets:
        tensors = [d.images, d.labels] + ([d.masks] if masks and isinstance(d, MaskedImages) else [])
        for tensor in tensors:
            crc = zlib.crc32(tensor.cpu().contiguous().numpy(), crc)
    return crc


def to_inputs(images: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float32 inputs in [-1, 1] (``x / 127.5 - 1``); other dtypes are refused (float inputs would
    be scaled twice, float images in [0, 1] end near -1)."""
    if images.dtype != torch.uint8:
        raise ValueError(f"to_inputs takes uint8 images (0..255), got {images.dtype}: float inputs in [-1, 1] are "
                         "scaled already; float images in [0, 1] become uint8 as (images * 255).round().byte()")
    return images.float() / 127.5 - 1


def to_uint8(inputs: torch.Tensor) -> torch.Tensor:
    """Inverse of ``to_inputs``: float inputs in [-1, 1] -> uint8 images (rounded, clipped); integer tensors (uint8
    images already) are refused."""
    if not inputs.is_floating_point():
        raise ValueError(f"to_uint8 takes float inputs in [-1, 1], got {inputs.dtype}: uint8 images are images "
                         "already (to_inputs makes inputs of them)")
    return ((inputs.detach() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)


def cache_dir() -> Path:
    """Where downloads go: ``$RECTGRAD_DATA`` (a leading ``~`` is the home folder, as an env file or a quoted shell
    assignment leaves it unexpanded) or ``~/.cache/rectgrad``."""
    return Path(os.environ.get("RECTGRAD_DATA") or Path.home() / ".cache" / "rectgrad").expanduser()


def load_dataset(name: str, split: str = "train", data_dir=None, download: bool = False,
                 image_size: int = 32, progress: bool = False) -> ImageDataset:
    """Load ``"fashion-mnist"``, ``"cifar10"`` or ``"folder"`` (your own images in ``data_dir``, resized to
    ``image_size``; :func:`load_image_folder`, with a progress bar on request), ``split`` ``"train"`` or
    ``"test"``."""
    loaders = {"fashion-mnist": load_fashion_mnist, "cifar10": load_cifar10}
    if name == "folder":
        check_folder_options(data_dir, download)
        return load_image_folder(data_dir, split, image_size, progress=progress)
    if name not in loaders:
        raise ValueError(f"unknown dataset {name!r}{did_you_mean(name, DATASETS)}; known: {', '.join(DATASETS)}")
    return loaders[name](split, data_dir=data_dir, download=download)


def check_folder_options(data_dir, download: bool) -> None:
    """The folder dataset's options, checked before anything is read: its folder given, and no download."""
    if data_dir is None:
        raise ValueError("the folder dataset needs its folder (--data-dir ROOT, data_dir=): "
                         "ROOT/train/<class>/<image> and ROOT/test/<class>/<image>")
    if download:
        raise ValueError("download=True (CLI: --download) does not apply to your own images (the folder dataset)")


def _data_folder(data_dir) -> Path:
    """``data_dir`` as a path, refused when it names a file (the dataset's archive itself, say) rather than a folder."""
    folder = Path(data_dir)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"data_dir {folder} is a file; give the folder that holds it")
    return folder


def _folder_in_place(place: Path, what: str, inside: str = "") -> IsADirectoryError:
    """The error for a folder found where a dataset's ``what`` (file, archive) named ``place.name`` should be: it is
    there, not "not found", but as a folder (an archive tool's unpacking, say); ``inside``: a hint on its content."""
    return IsADirectoryError(f"{place} is a folder, where the {what} {place.name} should be: move it away and put the "
                             f"{what} there, or pass download=True (CLI: --download){inside}")


def _check_split(split: str) -> None:
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")


# ---------------------------------------------------------------- Fashion-MNIST

def load_fashion_mnist(split: str = "train", data_dir=None, download: bool = False) -> ImageDataset:
    """Fashion-MNIST (60k train / 10k test, 1x28x28) from its idx files (``*-ubyte.gz``, or unpacked ``*-ubyte``).

    Reads ``data_dir`` when given (and only it: a folder without the files is an error, not a fallback);
    otherwise the first of ``/usr/share/datasets/fashion-mnist`` (Debian package ``dataset-fashion-mnist``)
    and ``cache_dir() / "fashion-mnist"`` that holds them. With ``download=True`` missing files are downloaded
    (into ``data_dir``, else the cache) and checked against the official md5 sums.
    """
    _check_split(split)
    names = [name for name, _ in FASHION_MNIST_FILES[split]]
    folders = [_data_folder(data_dir)] if data_dir is not None else [FASHION_MNIST_SYSTEM_DIR,
                                                                     cache_dir() / "fashion-mnist"]
    folder = next((f for f in folders if all(_idx_path(f, n) for n in names)), None)
    if folder is None and download:
        folder = folders[-1]
        for name, md5 in FASHION_MNIST_FILES[split]:
            if not _idx_path(folder, name):
                _download(FASHION_MNIST_URL + name, folder / name, md5)
    if folder is None:
        for f, name in ((f, n) for f in folders for n in names if not _idx_path(f, n)):
            for place in (f / name, f / name.removesuffix(".gz")):  # (not "not found": it is, but as a folder)
                if place.is_dir():
                    inside = next((i for i in (place / name, place / name.removesuffix(".gz")) if i.is_file()), None)
                    raise _folder_in_place(place, "file", "" if inside is None else
                                           f"; it holds {inside}, the file to put there")
        where = (f"{data_dir} (missing: {', '.join(n for n in names if not _idx_path(folders[0], n))})"
                 if data_dir is not None else ", ".join(map(str, folders)))
        raise FileNotFoundError(
            f"Fashion-MNIST {split} files ({', '.join(names)}) not found in {where}; install them with "
            "`apt-get install dataset-fashion-mnist` (then give no data folder), put them in the folder given as "
            "data_dir (CLI: --data-dir), or pass download=True (CLI: --download)")
    images_path, labels_path = (_idx_path(folder, n) for n in names)
    images, labels = read_idx(images_path, ndim=3), read_idx(labels_path, ndim=1)
    if len(images) != len(labels):
        raise ValueError(f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels")
    _check_labels(labels, labels_path)
    return ImageDataset(images.unsqueeze(1), labels.long(), list(FASHION_MNIST_CLASSES), "fashion-mnist")


def _idx_path(folder: Path, name: str) -> Path | None:
    """``folder / name`` (gzipped), else the unpacked file without ``.gz``, else None."""
    for path in (folder / name, folder / name.removesuffix(".gz")):
        if path.is_file():
            return path
    return None


GET_AGAIN = "delete it and get the file again (download=True, CLI: --download, fetches a missing one)"


def read_idx(path, ndim: int) -> torch.Tensor:
    """Read an idx file of unsigned bytes (magic ``0x0000080N``) with ``ndim`` dimensions, gzipped or not."""
    path = Path(path)
    with open(path, "rb") as f:  # (a missing or unreadable file: its own OSError, naming it)
        gzipped = f.read(2) == b"\x1f\x8b"
    try:
        with (gzip.open(path) if gzipped else open(path, "rb")) as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise ValueError(f"{path} is not a valid gzip file ({exc}): {GET_AGAIN}") from None
    magic, header = bytes([0, 0, 8, ndim]), 4 + 4 * ndim
    if len(raw) >= 4 and raw[:4] != magic:
        raise ValueError(f"{path}: wrong magic number {raw[:4].hex()}, expected {magic.hex()} "
                         f"(an idx file of unsigned bytes with {ndim} dimension(s), gzipped or not): {GET_AGAIN}")
    if len(raw) < header:  # (a copy or download that stopped short, or an empty file)
        raise ValueError(f"{path} holds {len(raw)} bytes{' once unpacked' if gzipped else ''}, less than the "
                         f"{header}-byte header of an idx file with {ndim} dimension(s): {GET_AGAIN}")
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    expected = header + math.prod(dims)
    if len(raw) != expected:
        raise ValueError(f"{path}: wrong size, the header says {'x'.join(map(str, dims))} "
                         f"({expected} bytes) but the file holds {len(raw)} bytes: {GET_AGAIN}")
    return torch.from_numpy(np.frombuffer(raw, np.uint8, offset=header).copy()).reshape(dims)


def _check_labels(labels: torch.Tensor, source) -> None:
    outside = labels[(labels < 0) | (labels >= 10)]
    if len(outside):
        raise ValueError(f"{source}: label {int(outside[0])} out of range 0..9")


def object_masks_from_images(images: torch.Tensor, threshold: float = 0) -> torch.Tensor:
    """Object masks (N, H, W) of images on a black background, such as Fashion-MNIST.

    Rule: a pixel is object when its raw 0-255 value exceeds ``threshold`` in any channel. Fashion-MNIST
    backgrounds are exactly 0, so the default marks every non-black pixel as object, the faint
    anti-aliased rim included; gaps enclosed by the object (between sandal straps, inside a bag's
    handle) are black and stay background.
    """
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise ValueError(f"images must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
    if isinstance(threshold, torch.Tensor) and threshold.numel() == 1:
        threshold = threshold.item()
    if not isinstance(threshold, numbers.Real) or isinstance(threshold, bool) or not 0 <= threshold < 255:
        raise ValueError(f"threshold must be a number in [0, 255) (a pixel is object when a raw value exceeds it), "
                         f"got {threshold!r}")
    return (images > threshold).any(dim=1)


# ---------------------------------------------------------------- CIFAR-10

def load_cifar10(split: str = "train", data_dir=None, download: bool = False) -> ImageDataset:
    """CIFAR-10 (50k train / 10k test, 3x32x32) read straight from ``cifar-10-python.tar.gz``.

    Reads the archive from ``data_dir`` when given (only there), else from ``cache_dir()``; with
    ``download=True`` a missing archive is downloaded there and checked against the official md5.
    """
    _check_split(split)
    folder = _data_folder(data_dir) if data_dir is not None else cache_dir()
    path = folder / CIFAR10_FILE if (folder / CIFAR10_FILE).is_file() else None
    if path is None and download:
        path = folder / CIFAR10_FILE
        _download(CIFAR10_URL, path, CIFAR10_MD5)
    if path is None and (folder / CIFAR10_FILE).is_dir():  # (not "not found": it is, but as a folder)
        place = folder / CIFAR10_FILE
        inside = (f"; it holds the archive: give {place} as data_dir (CLI: --data-dir)"
                  if (place / CIFAR10_FILE).is_file() else "")
        raise _folder_in_place(place, "archive", inside)
    if path is None:
        unpacked = next((f for f in (folder / "cifar-10-batches-py", folder)  # (tar xzf, as CIFAR-10's page says)
                         if f.name == "cifar-10-batches-py" and (f / "data_batch_1").is_file()), None)
        hint = ("" if unpacked is None else f" ({unpacked} holds its batches unpacked, but the archive is what is "
                f"read: pack them again, `tar czf {CIFAR10_FILE} cifar-10-batches-py` in {unpacked.parent}, the folder "
                "to give)")
        raise FileNotFoundError(
            f"{CIFAR10_FILE} not found in {folder}{hint}; download it from {CIFAR10_URL} into the folder given as "
            "data_dir (CLI: --data-dir), or pass download=True (CLI: --download)")
    try:
        with tarfile.open(path, "r:gz") as tar:
            batches = [_read_cifar_batch(tar, path, member) for member in CIFAR10_MEMBERS[split]]
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise ValueError(f"{path} is not a valid tar.gz archive ({exc}): {GET_AGAIN}") from None
    images = torch.from_numpy(np.concatenate([b[0] for b in batches])).reshape(-1, 3, 32, 32)
    labels = torch.from_numpy(np.concatenate([b[1] for b in batches]))
    _check_labels(labels, path)
    return ImageDataset(images, labels, list(CIFAR10_CLASSES), "cifar10")


_RECONSTRUCT = np.empty(0).__reduce__()[0]  # numpy's array-unpickling helper, wherever this numpy keeps it
_PICKLE_GLOBALS = {("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
                   ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
                   ("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
                   ("_codecs", "encode"): codecs.encode}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists and numpy arrays only: a stray archive cannot run code."""

    def find_class(self, module, name):
        if (module, name) not in _PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return _PICKLE_GLOBALS[module, name]


def _read_cifar_batch(tar: tarfile.TarFile, path: Path, member: str) -> tuple[np.ndarray, np.ndarray]:
    name = f"cifar-10-batches-py/{member}"
    try:
        f = tar.extractfile(name)
    except KeyError:
        raise ValueError(f"{path}: member {name} missing from the archive") from None
    try:
        batch = _ArrayUnpickler(f, encoding="bytes").load()
        data = np.asarray(batch[b"data"])
        labels = np.asarray(batch[b"labels"])
    except (OSError, zlib.error, MemoryError):  # (the archive's own damage, said by the caller; too little memory)
        raise
    except Exception as exc:  # (unpickling corrupt bytes may raise any other error, as pickle's documentation says)
        raise ValueError(f"{path}: {name} is not a CIFAR-10 batch ({exc!r})") from None
    if data.dtype != np.uint8:  # a cast would wrap 300 to 44 and floor 0.7 to 0
        raise ValueError(f"{path}: {name} holds {data.dtype} pixels, not the uint8 of CIFAR-10's python archive")
    if labels.size and labels.dtype.kind not in "iu":  # a cast would floor 1.7 to 1 and read "1" as 1
        raise ValueError(f"{path}: {name} holds {labels.dtype} labels, not the integer class indices of CIFAR-10's "
                         "python archive")
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or labels.shape != (len(data),):
        raise ValueError(f"{path}: {name} has data of shape {data.shape} and {labels.size} labels, "
                         "expected (n, 3072) and n labels")
    return data, labels.astype(np.int64)


def _download(url: str, dest: Path, md5: str | None, offline: str | None = None) -> None:
    """Download ``url`` to ``dest`` through a temporary file; keep it only if its md5 matches (when one is known).
    ``offline``: what to do without network (default: put the file at ``dest``). A folder at ``dest`` is refused
    before anything is fetched (the finished download could not take its place)."""
    if dest.is_dir():
        raise IsADirectoryError(f"{dest} is a folder, where the download of {dest.name} would go; move it away (or "
                                "remove it) and run again; nothing was downloaded")
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
    digest = hashlib.md5()
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # as open() would create it, not mkstemp's private 0600 (a shared cache)
        with os.fdopen(fd, "wb") as out:
            for chunk in _fetch(url, offline or f"put the file at {dest}"):
                digest.update(chunk)
                out.write(chunk)  # (a full disk is an OSError of its own, not a network's)
        if md5 is not None and digest.hexdigest() != md5:
            raise ValueError(f"checksum mismatch for {url}: md5 {digest.hexdigest()}, expected {md5}; "
                             "nothing was saved")
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _fetch(url: str, offline: str) -> Iterator[bytes]:
    """The bytes at ``url``, a MiB at a time; a download that fails or is cut short (``http.client.IncompleteRead``)
    is a ``FileNotFoundError`` ending in ``offline``, what to do without network."""
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            while chunk := response.read(1 << 20):
                yield chunk
    except (OSError, http.client.HTTPException) as exc:
        raise FileNotFoundError(f"could not download {url} ({exc}); without network, {offline}") from None


# ---------------------------------------------------------------- masked images

def default_masks_folder() -> Path:
    """Where the paper's masked CIFAR-10 images are looked for when no folder is given: ``cifar10_masks`` in the
    data cache (``$RECTGRAD_DATA``, else ``~/.cache/rectgrad``), beside the downloaded datasets."""
    return cache_dir() / "cifar10_masks"


def masked_images_folder(folder=None, download: bool = False) -> Path:
    """The folder of the paper's masked CIFAR-10 images: ``folder``, else :func:`default_masks_folder`. Where it does
    not exist, ``download=True`` fetches ``CIFAR10_mask.tar`` from the paper's reference code (at a fixed commit) and
    unpacks its images there; the archive has no published checksum, so they are checked by reading them
    (:func:`load_masked_images`: each image with its mask, every CIFAR-10 class) before the folder appears. Else a
    ``FileNotFoundError`` says where the set comes from."""
    folder = Path(default_masks_folder() if folder is None else folder)
    if folder.is_dir():
        return folder
    if folder.exists():
        raise NotADirectoryError(f"{folder} is a file; give the folder of the paper's masked CIFAR-10 images")
    if not download:
        raise FileNotFoundError(f"the paper's masked CIFAR-10 images are not in {folder}: they come with the paper's "
                                f"reference code (https://github.com/1202kbs/Rectified-Gradient, 204 <class>_<n>.jpg "
                                f"images, each with its <class>_<n>_mask.jpg); give their folder as masks_dir "
                                f"(CLI: --masks DIR), put them in {default_masks_folder()}, or download them there "
                                "with download=True (CLI: --download)")
    archive, partial = folder.with_name(f".{folder.name}.tar"), folder.with_name(f".{folder.name}.partial")
    try:
        _download(CIFAR10_MASKS_URL, archive, None, offline=f"unpack its images into {folder}")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir()
        with tarfile.open(archive) as tar:  # the images by their own names alone: no path inside can escape
            for member in tar.getmembers():
                name = Path(member.name).name
                if member.isfile() and re.fullmatch(r"[a-z]+_\d+(_mask)?\.jpe?g", name, re.IGNORECASE):
                    with tar.extractfile(member) as source, open(partial / name, "wb") as out:
                        shutil.copyfileobj(source, out)
        try:
            found = set(load_masked_images(partial).labels.tolist())
        except FileNotFoundError as exc:  # an image without its mask: not the set either
            raise ValueError(str(exc).replace(f"{partial}{os.sep}", "")) from None
        missing = [c for i, c in enumerate(CIFAR10_CLASSES) if i not in found]
        if missing:
            raise ValueError(f"no image of {', '.join(missing)}")
        os.replace(partial, folder)
    except (tarfile.TarError, ValueError) as exc:
        raise ValueError(f"{CIFAR10_MASKS_URL} does not hold the paper's masked images "
                         f"({one_line(exc, 200)}); nothing was saved") from None
    finally:
        archive.unlink(missing_ok=True)
        shutil.rmtree(partial, ignore_errors=True)
    return folder


def load_masked_images(folder, bgr: bool = True) -> MaskedImages:
    """The paper's evaluation images: ``<class>_<n>.jpg`` with ``<class>_<n>_mask.jpg`` (CIFAR-10 classes; ``_mask``
    and the suffix in any case); hidden files (``._cat_1.jpg``, macOS's resource forks) are skipped.

    Images come back RGB (``bgr=True`` flips the channels of JPEGs stored BGR, as the paper's are);
    masks are True where the grayscale mask pixel is >= 200 (object). Sorted by class, then ``n``.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"masked image folder {folder} not found")
    entries, files = [], sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in (".jpg", ".jpeg")
                                and not p.name.startswith("."))  # (macOS's resource forks, ._cat_1.jpg)
    stems = {p.stem for p in files}
    twice = [p for p in files if sum(q.stem == p.stem for q in files) > 1]
    if twice:
        raise ValueError(f"{twice[0]} and {twice[1]} are one name with two suffixes: keep one of them")
    _warn_unused_masks(folder, [p.name for p in files if _is_mask(p) and p.stem[:-len("_mask")] not in stems])
    for path in files:
        if _is_mask(path):
            continue
        match = re.fullmatch(r"(.+)_(\d+)", path.stem)
        if match is None:
            raise ValueError(f"{path}: expected a name <class>_<n>.jpg")
        if match[1] not in CIFAR10_CLASSES:
            raise ValueError(f"{path}: unknown class {match[1]!r}; known: {', '.join(CIFAR10_CLASSES)}")
        entries.append((CIFAR10_CLASSES.index(match[1]), int(match[2]), path))
    if not entries:
        raise ValueError(f"no <class>_<n>.jpg images in {folder}")
    entries.sort()
    mask_of: dict[str, Path] = {}  # image stem: its mask
    for mask in filter(_is_mask, files):
        stem = mask.stem[:-len("_mask")]
        if stem in mask_of:
            raise ValueError(f"{mask_of[stem]} and {mask.name} are both masks of {stem}: keep one")
        mask_of[stem] = mask

    def read(path: Path, mode: str) -> np.ndarray:
        with _open_image(path) as image:
            return np.asarray(upright(image).convert(mode))

    images, masks = [], []
    for _, _, path in entries:
        if path.stem not in mask_of:
            raise FileNotFoundError(f"{path.with_name(path.stem + '_mask.jpg')} missing (each image needs its mask)")
        image, mask = read(path, "RGB"), read(mask_of[path.stem], "L")
        if mask.shape != image.shape[:2] or (images and image.shape != images[0].shape):
            raise ValueError(f"{path}: image {image.shape[:2]} and mask {mask.shape} sizes differ from "
                             "each other or from the other images")
        images.append(image[..., ::-1] if bgr else image)
        masks.append(mask >= 200)
    _warn_odd_masks([p.stem for _, _, p in entries], masks, ">= 200")
    return MaskedImages(images=torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous(),
                        labels=torch.tensor([c for c, _, _ in entries]), classes=list(CIFAR10_CLASSES),
                        name=folder.name, masks=torch.from_numpy(np.stack(masks)),
                        names=[p.stem for _, _, p in entries])


# ---------------------------------------------------------------- your own images

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
_GRAYSCALE_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")


def load_image_folder(root, split: str = "train", image_size: int = 32, progress: bool = False) -> ImageDataset:
    """Your own images in torchvision's ImageFolder layout: ``root/<split>/<class>/<image>``.

    The classes are the subfolders of ``root/train`` in sorted order (``root/test`` may lack some, not add
    any); a class holds the images in its folder and its subfolders at any depth, as in torchvision. Every image
    is resized to ``image_size`` x ``image_size`` (bilinear, not cropped: the paper's CNN takes square images, side
    divisible by 4) and kept RGB, or grayscale when every training image is.
    The images come in one fixed shuffled order (seed 0), as the standard datasets' files do, so that the
    first ``n`` of them (what the smaller scales use) hold every class. Files named ``<name>_mask.<ext>`` are
    object masks (:func:`load_image_folder_masks`), not images. ``progress`` shows a bar while thousands of
    files are read.
    """
    _check_split(split)
    files, classes, mode = _image_folder(root, split, image_size)
    labels = torch.tensor([label for _, label in files])
    images = _read_images([path for path, _ in files], image_size, mode, progress=progress,
                          description=f"reading {split} images")
    return ImageDataset(images, labels, classes, f"{Path(root).name} ({split})")


def _warn_unused_masks(folder: Path, names: list[str]) -> None:
    """Warn, naming them, about the masks in ``folder`` that match no image."""
    if names:
        warnings.warn(f"{len(names)} mask(s) in {folder} have no image and are not used: {', '.join(names[:5])}"
                      f"{', ...' if len(names) > 5 else ''}", stacklevel=3)


def _warn_odd_masks(names: list[str], masks, object_pixels: str, files: list[Path] | None = None) -> None:
    """Warn, naming the images, about masks that mark no object pixel (``object_pixels`` says which pixels would), and
    about masks that mark no background pixel; with the mask ``files`` they were resized from, those whose object (or
    background) was there and vanished in the resize are told apart."""
    empty = [i for i, mask in enumerate(masks) if not mask.any()]
    full = [i for i, mask in enumerate(masks) if mask.all()]
    at_full_size = {i: mask_objects(files[i]) for i in empty + full} if files is not None else {}
    lost_object = [i for i in empty if i in at_full_size and at_full_size[i].any()]
    lost_background = [i for i in full if i in at_full_size and not at_full_size[i].all()]
    resized = (f"when resized to {'x'.join(map(str, masks[0].shape))} pixels (nearest neighbour; a larger "
               "--image-size keeps it)")
    for odd, what in ((sorted(set(empty) - set(lost_object)),
                       f"mark no object pixel ({object_pixels}): every pixel counts as background there"),
                      (lost_object, f"mark an object too thin or small to survive {resized}: every pixel counts as "
                                    "background there"),
                      (sorted(set(full) - set(lost_background)),
                       "mark every pixel as object: with no background there, Fig. 2 zeroes nothing and Fig. 8 finds "
                       "no attribution outside the object"),
                      (lost_background, f"mark a background too thin or small to survive {resized}: every pixel "
                                        "counts as object there")):
        if odd:
            listed = [names[i] for i in odd]
            warnings.warn(f"the masks of {len(odd)} image(s) ({', '.join(listed[:5])}"
                          f"{', ...' if len(odd) > 5 else ''}) {what}", stacklevel=3)


def mask_objects(path: Path) -> torch.Tensor:
    """The object pixels (H, W) of the mask file ``path`` at its own size, upright: white, or 1 in a 0/1 mask at any
    depth (:func:`folder_mask_objects`); a file Pillow cannot read gives a ``ValueError`` naming it."""
    with _open_image(path) as image:
        pixels = np.array(eight_bit(upright(image), path, mask=True).convert("L"))
    return folder_mask_objects(torch.from_numpy(pixels)[None])[0]


def image_folder_files(root, split: str = "test", image_size: int = 32) -> list[Path]:
    """The image files of :func:`load_image_folder` ``(root, split, image_size)``, in its order: image ``i`` of the
    dataset was read from file ``i``."""
    return [path for path, _ in _image_folder(root, split, image_size, scan_mode=False)[0]]


def load_image_folder_masks(root, image_size: int = 32, test: ImageDataset | None = None,
                            progress: bool = False) -> MaskedImages | None:
    """The test images of :func:`load_image_folder` that have an object mask beside them, for Figs. 2 and 8:
    ``<name>_mask.<ext>`` next to ``<name>.<ext>``, of the image's size, white (>= 128 after conversion to
    grayscale) on the object, or 1 in a 0/1 mask (one whose values are all 0 or 1); resized like the images
    (nearest neighbour). None when no test image has a mask. ``test``: the test split already loaded with the
    same ``image_size`` (its channels spare reading every training image's header); it is checked to be that split,
    its classes, labels and masked images as read here, and refused otherwise (reordered, say)."""
    from PIL import Image

    files, classes, mode = _image_folder(root, "test", image_size, scan_mode=test is None)
    if test is not None:
        if len(test) != len(files) or test.images.shape[-2:] != (image_size, image_size):
            raise ValueError(f"test holds {len(test)} images of {tuple(test.images.shape[-2:])} pixels, not the "
                             f"{len(files)} test images of {root} at {image_size} x {image_size}")
        if test.classes != classes or test.labels.tolist() != [label for _, label in files]:
            raise ValueError(f"test is not the test split of {root} as load_image_folder loads it: its classes or "
                             "its labels, in order, differ (a subset, a reordered or another dataset)")
        mode = "L" if test.images.shape[1] == 1 else "RGB"
    mask_of = masks_beside([path for path, _ in files])
    used, test_folder = set(mask_of.values()), Path(root) / "test"
    folders = {f for d in test_folder.iterdir() if _holds_images(d) for f in _folders_under(d)}  # masks alone too
    _warn_unused_masks(test_folder, sorted(mask.relative_to(test_folder).as_posix()
                                           for folder in folders for mask in folder.iterdir()
                                           if _is_mask(mask) and mask not in used and not mask.name.startswith(".")))
    masked = [i for i, (path, _) in enumerate(files) if path in mask_of]
    if not masked:
        return None
    paths = [files[i][0] for i in masked]
    for path in paths:
        check_mask_size(mask_of[path], upright_size(mask_of[path]), path.name, upright_size(path))
    raw = _read_images([mask_of[path] for path in paths], image_size, "L", Image.NEAREST, progress=progress,
                       description="reading masks", masks=True)[:, 0]
    masks = folder_mask_objects(raw)
    names = [_shown(path.relative_to(Path(root) / "test").with_suffix("").as_posix()) for path in paths]
    _warn_odd_masks(names, masks, "white, or 1 in a 0/1 mask", [mask_of[path] for path in paths])
    images = _read_images(paths, image_size, mode, progress=progress, description="reading masked images")
    wrong = [] if test is None else [path for path, given, read in zip(paths, test.images[masked].cpu(), images)
                                     if not torch.equal(given, read)]
    if wrong:
        raise ValueError(f"test is not the test split of {root} as load_image_folder loads it: its image of {wrong[0]} "
                         "differs from that file's (a reordered or another dataset)")
    return MaskedImages(images, torch.tensor([files[i][1] for i in masked]), classes,
                        f"{Path(root).name} (masked test)", masks=masks, names=names)


def folder_mask_objects(raw: torch.Tensor) -> torch.Tensor:
    """The object pixels of grayscale uint8 masks (N, H, W) of the folder dataset: >= 128, or 1 in a 0/1 mask (one
    whose values are all 0 or 1)."""
    zero_one = raw.flatten(1).amax(1) <= 1
    return raw >= torch.where(zero_one, 1, 128).to(raw.dtype)[:, None, None]


def masks_beside(images: list[Path]) -> dict[Path, Path]:
    """``{image: its <stem>_mask.<ext> file}`` (``_mask`` in any case) for the images that have one; two masks for
    one image, or one mask for two images sharing a stem (``0.png`` and ``0.jpg``), are refused by name."""
    wanted: dict[tuple[Path, str], list[Path]] = {}
    for path in images:
        same_stem = wanted.setdefault((path.parent, path.stem), [])
        if path not in same_stem:
            same_stem.append(path)
    found: dict[tuple[Path, str], Path] = {}
    for folder in {path.parent for path in images}:
        for mask in sorted(folder.iterdir()):
            key = (folder, mask.stem[:-len("_mask")])
            if not (_is_mask(mask) and key in wanted):
                continue
            if key in found:
                raise ValueError(f"{found[key]} and {mask.name} are both masks of {folder / key[1]}: keep one")
            if len(wanted[key]) > 1:
                names = " or ".join(sorted(p.name for p in wanted[key]))
                raise ValueError(f"{mask} could be the mask of {names}: give each image its own name")
            found[key] = mask
    return {wanted[key][0]: mask for key, mask in found.items()}


def check_mask_size(mask: Path, mask_size: tuple[int, int], image, image_size: tuple[int, int]) -> None:
    """A mask must have its image's (width, height), each as its EXIF orientation turns it (``image``: how the
    error names the image)."""
    if mask_size != image_size:
        raise ValueError(f"{mask} is {'x'.join(map(str, mask_size))} pixels but its image {image} "
                         f"{'x'.join(map(str, image_size))} (each as its EXIF orientation turns it): a mask must "
                         "have its image's size")


def upright_size(path: Path) -> tuple[int, int]:
    """(width, height) of the image at ``path`` as :func:`upright` turns it, from its header and EXIF."""
    with _open_image(path) as image:
        width, height = image.size
        sideways = _orientation(image) in (5, 6, 7, 8)  # turned a quarter
        return (height, width) if sideways else (width, height)


def check_image_size(image_size: int, name: str = "image_size") -> None:
    """Refuse a folder dataset's ``image_size`` (the option ``name``, e.g. ``--image-size``) the paper's CNN cannot
    take or that would not fit in memory."""
    if (not isinstance(image_size, numbers.Integral) or isinstance(image_size, bool) or not 16 <= image_size <= 512
            or image_size % 4):
        raise ValueError(f"{name} must be a multiple of 4 from 16 to 512 (the paper's CNN pools twice, the random "
                         "patch is 10 pixels, and its dense layer grows with the image: 268M weights at 512), "
                         f"got {image_size!r}")


def _image_folder(root, split: str, image_size: int,
                  scan_mode: bool = True) -> tuple[list[tuple[Path, int]], list[str], str | None]:
    """The (image, label) files of ``root/<split>`` in their fixed shuffled order, the classes and the Pillow mode
    (``L`` or ``RGB``, from every training image's header; None when not ``scan_mode``)."""
    check_image_size(image_size)
    files, classes, train = _folder_split(root, split)
    return files, classes, _folder_mode(tuple(_stamped(p) for p, _ in train)) if scan_mode else None


def image_folder_split(root, split: str = "test") -> tuple[list[tuple[Path, int]], list[str]]:
    """The (image file, label) pairs of :func:`load_image_folder` ``(root, split)`` in its order, and the classes,
    at no image size: for a model that reads the files itself (``rectgrad study --dataset folder``)."""
    _check_split(split)
    return _folder_split(root, split)[:2]


def _folder_split(root, split: str) -> tuple[list[tuple[Path, int]], list[str], list[tuple[Path, int]]]:
    """The (image, label) files of ``root/<split>`` in their fixed shuffled order, the classes and the training
    files."""
    root = Path(root)
    for folder in (root / "train", root / split):
        if not folder.is_dir():
            held = sorted(d.name for d in root.iterdir() if _holds_images(d)) if root.is_dir() else []
            raise FileNotFoundError(f"{folder} not found: put your images in ROOT/train/<class>/ and "
                                    "ROOT/test/<class>/ (torchvision's ImageFolder layout)"
                                    + (f"; {root} holds the folders {', '.join(map(repr, held[:5]))}: the splits "
                                       "must be named train and test" if held else ""))
    classes = sorted(d.name for d in (root / "train").iterdir() if _holds_images(d))
    if len(classes) < 2:
        raise ValueError(f"{root / 'train'} needs one subfolder per class, at least two; found {classes}")
    extra = sorted(d.name for d in (root / split).iterdir() if _holds_images(d) and d.name not in classes)
    if extra:
        spelt = {unicodedata.normalize("NFC", c): c for c in classes}
        twins = [f"{ascii(c)} vs {ascii(spelt[unicodedata.normalize('NFC', c)])}" for c in extra
                 if unicodedata.normalize("NFC", c) in spelt]
        raise ValueError(f"{root / split}: the classes {extra} have no folder in {root / 'train'}"
                         + (f"; some look alike but are encoded otherwise ({', '.join(twins)}: composed and decomposed "
                            "accents, as macOS writes names): rename one folder" if twins else ""))
    owner: dict[Path, tuple[Path, str]] = {}  # the folders read, across both splits: none may be in both
    train = _labelled_images(root / "train", classes, owner)
    test = _labelled_images(root / "test", classes, owner) if split == "test" or (root / "test").is_dir() else []
    files = train if split == "train" else test
    if not files:
        raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {root / split}/<class>/")
    present = {label for _, label in train}
    empty = [c for label, c in enumerate(classes) if label not in present]
    if empty:
        others = _other_files(folder for c in empty for folder in _folders_under(root / "train" / c))
        raise ValueError(f"the training classes {empty} hold no images in {root / 'train'}"
                         + (f" (of {', '.join(IMAGE_SUFFIXES)}; they hold {', '.join(others[:5])} files, not read: "
                            "convert images of other formats to one of these)" if others else ""))
    order = torch.randperm(len(files), generator=torch.Generator().manual_seed(0)).tolist()
    return [files[i] for i in order], [_shown(c) for c in classes], train


def _labelled_images(folder: Path, classes: list[str], owner: dict[Path, tuple[Path, str]]) -> list[tuple[Path, int]]:
    """The (image, label) files of the class folders ``folder / <class>`` (those there): the images in each and, as
    torchvision's ImageFolder takes them, in its subfolders at any depth, in the order of :func:`_folders_under`;
    refused where two classes reach one same folder through a symbolic link: its images would have two labels.
    ``owner`` (resolved folder -> the path and class it was first read as) holds the folders of the training split,
    read before: one reached again from the test split ``folder`` (a test class folder linked to the training one)
    is refused too."""
    files = []
    for label, c in enumerate(classes):
        for sub in _folders_under(folder / c):
            first, other = owner.setdefault(sub.resolve(), (sub, c))
            if first != sub and not first.is_relative_to(folder):  # (paths as listed: a split's own are under it)
                raise ValueError(f"{first} and {sub} are one folder ({sub.resolve()}, through a symbolic link) in "
                                 f"both splits, {folder.parent / 'train'} and {folder}: its images would be trained "
                                 "on and tested on; remove the link, or give each split images of its own")
            if other != c:
                raise ValueError(f"{first} and {sub} are one folder ({sub.resolve()}, through a symbolic link) in two "
                                 f"classes, {_shown(other)!r} and {_shown(c)!r}: its images would be read twice, "
                                 "with two labels; remove the link, or put the images of each class in its own folder")
            files += [(p, label) for p in _images_in(sub)]
    return files


def _stamped(path: Path) -> tuple[Path, int, int]:
    stat = path.stat()
    return path, stat.st_mtime_ns, stat.st_size


@functools.lru_cache(maxsize=4)
def _folder_mode(files: tuple[tuple[Path, int, int], ...]) -> str:
    """``L`` when every image (path, modification time, size) is grayscale, else ``RGB``; remembered, so that loading
    the test split after the training split does not read every training header again."""
    return "L" if all(_image_mode(path) in _GRAYSCALE_MODES for path, _, _ in files) else "RGB"


def _images_in(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not _is_mask(p)
                  and not p.name.startswith(".") and p.is_file())


def _holds_images(folder: Path) -> bool:
    """Whether ``folder`` is one whose images count: a folder, neither hidden (``.thumbnails``,
    ``.ipynb_checkpoints``) nor a NAS indexer's (``@eaDir``), which hold copies."""
    return folder.is_dir() and not folder.name.startswith((".", "@"))


def _is_mask(path: Path) -> bool:
    """Whether ``path`` is named as an object mask, ``<stem>_mask.<ext>`` of an image suffix, ``_mask`` in any case
    (``_MASK``, ``_Mask``)."""
    return path.suffix.lower() in IMAGE_SUFFIXES and path.stem.lower().endswith("_mask")


def _folders_under(folder: Path, seen: set[Path] | None = None) -> list[Path]:
    """``folder`` and its subfolders at any depth: each folder before its subfolders, those in sorted order;
    symbolic links are followed, each folder listed once (a link loop ends there); hidden subfolders
    (``.thumbnails``, ``.ipynb_checkpoints``) and those of NAS indexers (``@eaDir``) are skipped: they hold copies."""
    seen = set() if seen is None else seen
    if not folder.is_dir() or folder.resolve() in seen:
        return []
    seen.add(folder.resolve())
    subfolders = sorted(d for d in folder.iterdir() if _holds_images(d))
    return [folder] + [f for sub in subfolders for f in _folders_under(sub, seen)]


NO_REGULAR_FILE = "{path} is no regular file (a pipe or a device): save the image to a file and give that"


def image_files(paths) -> list[Path]:
    """Image files named by ``paths`` (files or folders, folders in natural order: 2.jpg before 10.jpg).

    Files named ``<stem>_mask.<ext>`` (``_mask`` in any case) are object masks of ``<stem>.<ext>``, not images.
    """
    files = []
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(_images_in(path), key=natural_order)
            if not found:
                held = ("; subfolders are not searched: give them as arguments"
                        if any(p.is_dir() for p in path.iterdir()) else "")
                masks = ("; its files named <stem>_mask.<ext> are object masks, not images"
                         if any(_is_mask(p) for p in path.iterdir()) else "")
                others = _other_files([path])
                formats = (f"; it holds {', '.join(others[:5])} files, not read: convert images of other formats "
                           "to one of these" if others else "")
                raise ValueError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in folder {path}{masks}{formats}{held}")
            files += found
        elif path.is_file():
            files.append(path)
        elif path.exists():
            raise ValueError(NO_REGULAR_FILE.format(path=path))
        else:
            raise FileNotFoundError(f"image or folder {path} not found")
    if not files:
        raise ValueError("no images given")
    return files


def unique_names(files: list[Path], depth: int | list[int] = 1, *, suffix: bool = False) -> list[str]:
    """Each file's stem (``suffix``: its name), preceded by as many of its folders as it takes to tell it from the
    other files (``a/x/1`` and ``b/x/1``; ``2`` alone), and by at least ``depth - 1`` of them (one depth for all files
    or one each); the whole path where only the extension differs. A file given twice (however its path is spelled)
    gets one name. The names are for display: bytes of a file name that are no UTF-8 read ``\\xe9``."""
    def name(f: Path, depth: int) -> str:
        named = f if suffix else f.with_suffix("")
        if depth < len(named.parts):
            return "/".join(named.parts[-depth:])
        return str(named if depth == len(named.parts) else f)  # the whole path, then with its extension

    real = [f.resolve() for f in files]
    depths = list(depth) if isinstance(depth, list) else [depth] * len(files)
    while True:
        names = [name(f, depth) for f, depth in zip(files, depths)]
        owners: dict[str, set] = {}
        for n, file in zip(names, real):
            owners.setdefault(n, set()).add(file)
        if all(len(owners[n]) == 1 for n in names):
            return [_shown(n) for n in names]
        depths = [depth + (len(owners[n]) > 1) for n, depth in zip(names, depths)]


def _other_files(folders) -> list[str]:
    """The suffixes (a name, for a file without one) of the files in ``folders`` that are neither hidden nor masks:
    what a folder with no image read holds instead (an iPhone's .heic photos, say)."""
    return sorted({p.suffix.lower() or p.name for folder in folders for p in folder.iterdir()
                   if p.is_file() and not p.name.startswith(".") and not _is_mask(p)})


def _shown(name: str) -> str:
    """A file or folder name for display: bytes that are no UTF-8 (surrogates, which no stream, file or font takes)
    read ``\\xe9``."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def natural_order(path: Path) -> list:
    """Sort key for file names reading their digits as numbers and ignoring case: ``conv2`` before ``Conv10``."""
    return [(0, int(part), "") if part.isdecimal() else (1, 0, part)  # (not isdigit: int() refuses ² and ①)
            for part in re.split(r"(\d+)", path.name.lower()) if part]


@contextmanager
def _open_image(path: Path) -> Iterator:
    """``PIL.Image.open(path)``; a file Pillow cannot read, decode or will not (over ``PIL.Image.MAX_IMAGE_PIXELS``)
    gives one ``ValueError`` naming it."""
    from PIL import Image, UnidentifiedImageError

    unreadable = (UnidentifiedImageError, OSError, Image.DecompressionBombError)
    try:
        opened = Image.open(path)
    except (*unreadable, ValueError) as exc:  # (Pillow's own ValueError for some broken headers: PNG's, PPM's)
        raise ValueError(f"{path} is not a readable image ({exc})") from None
    try:
        with opened as image:
            yield image
    except unreadable as exc:
        raise ValueError(f"{path} is not a readable image ({exc})") from None


def _image_mode(path: Path) -> str:
    with _open_image(path) as image:  # reads the header only
        return image.mode


def upright(image):
    """A loaded copy of a Pillow image turned as its EXIF orientation says, as viewers show it (phone cameras store
    the pixels sideways and say so there); masks beside photos are turned by their own EXIF, if any. An EXIF block
    Pillow cannot parse has no orientation; one whose orientation it reads but whose other tags it cannot write back (a
    string in a number's tag) turns the image all the same."""
    from PIL import Image, ImageOps

    try:
        turned = ImageOps.exif_transpose(image)
    except (SyntaxError, struct.error):  # an EXIF block Pillow cannot parse, or cannot write back once turned
        turns = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
                 5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
                 8: Image.Transpose.ROTATE_90}  # (exif_transpose's own)
        orientation = _orientation(image)
        turned = image.transpose(turns[orientation]) if orientation in turns else image.copy()
    turned.format = image.format  # eight_bit needs it; the copy has none
    return turned


def _orientation(image):
    """The EXIF orientation of a Pillow image (1 to 8 where it has one); an EXIF block Pillow cannot parse (a broken
    header, a tag cut short) says none, and the image is shown as stored, as viewers show it and as Pillow reads a
    JPEG's."""
    from PIL import ExifTags

    try:
        return image.getexif().get(ExifTags.Base.Orientation)
    except (SyntaxError, struct.error):
        return None


def eight_bit(image, path="image", mask: bool = False):
    """A Pillow image with 8 bits per channel: 16-bit images (mode ``I;16``, or ``I`` from a PGM / PPM file, which
    Pillow scales to 0-65535, or from a 16-bit PNG, as Pillow < 10.3 opens it) keep their top byte (Pillow's own
    conversion would clip them), their transparent grey level, if any, becoming an alpha channel; 32-bit integer and
    floating-point images, whose range is unknown, are refused. A ``mask`` of 16 or 32-bit integers, or of palette
    indices (mode ``P``, as segmentation tools save class maps), holding only 0 and 1 (a label map) keeps its values:
    its top byte would mark nothing, nor would the grey level of the palette's colour for 1 (VOC's dark red)."""
    from PIL import Image

    if mask and (image.mode.startswith("I") or image.mode == "P"):
        values = np.asarray(image)
        if values.size and values.min() >= 0 and values.max() <= 1:
            return Image.fromarray(values.astype(np.uint8))
    if image.mode.startswith("I;16") or (image.mode == "I" and image.format in ("PNG", "PPM")):
        deep = np.asarray(image).astype(np.uint16)
        top = (deep >> 8).astype(np.uint8)
        if not isinstance(image.info.get("transparency"), int):
            return Image.fromarray(top)
        alpha = np.where(deep == image.info["transparency"], 0, 255).astype(np.uint8)  # its transparent grey level
        return Image.fromarray(np.stack([top, alpha], axis=-1))  # LA: laid over white by on_white
    if image.mode in ("I", "F"):
        raise ValueError(f"{path}: 32-bit integer or floating-point pixels (mode {image.mode}) have no fixed range "
                         "to map to 0-255; save the images with 8 or 16 bits per channel")
    return image


def on_white(image):
    """A Pillow image with its transparent pixels (an alpha channel, a transparent palette entry or colour) laid over
    white, as a viewer shows them on a white page (dropping the alpha would leave whatever colour they store, black in
    most files); an opaque image as it is."""
    from PIL import Image

    if image.mode not in ("RGBA", "LA", "PA") and "transparency" not in image.info:
        return image
    rgba = image.convert("RGBA")
    return Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba)


def _read_images(paths: list[Path], size: int, mode: str, resample=None, progress: bool = False,
                 description: str = "reading images", masks: bool = False) -> torch.Tensor:
    """uint8 (N, C, size, size) images in Pillow ``mode`` (``L``: one channel, ``RGB``: three), transparent pixels
    white (:func:`on_white`), unless they are ``masks`` (whose alpha is dropped); ``progress``: a bar when there are
    thousands of them."""
    from PIL import Image

    from rectgrad.progress import progress_bar

    resample = Image.BILINEAR if resample is None else resample
    images = np.empty((len(paths), size, size, 1 if mode == "L" else 3), dtype=np.uint8)
    bar = progress_bar(len(paths), description, progress and len(paths) >= 2000, unit="image")
    try:
        for i, path in enumerate(paths):
            with _open_image(path) as image:
                image = eight_bit(upright(image), path, mask=masks)
                image = (image if masks else on_white(image)).convert(mode)
                if image.size != (size, size):
                    image = image.resize((size, size), resample)
                images[i] = np.asarray(image).reshape(size, size, -1)
            if bar is not None:
                bar.update()
    finally:  # (an unreadable image, a Ctrl-C: the bar's line ends before the message)
        if bar is not None:
            bar.close()
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()


# ---------------------------------------------------------------- random patch occlusion

class RandomPatch:
    """A fixed random ``size x size`` uint8 patch pasted at the top-left corner of every image.

    The patch is drawn uniformly from 0..255 by a generator seeded with ``seed`` (the paper's reference
    uses seed 100), one value per channel and pixel, so every call and every image gets the same patch.
    """

    def __init__(self, size: int = 10, seed: int = 100):
        if not isinstance(size, numbers.Integral) or isinstance(size, bool) or size < 3:
            raise ValueError(f"RandomPatch size must be a whole number of pixels, at least 3 (its scored inner corner, "
                             f"visible_region, is size - 2 pixels wide), got {size!r}")
        if not isinstance(seed, numbers.Integral) or isinstance(seed, bool):
            raise ValueError(f"RandomPatch seed must be a whole number (the paper's: 100), got {seed!r}")
        self.size, self.seed = int(size), int(seed)

    def patch(self, channels: int) -> torch.Tensor:
        """The (channels, size, size) uint8 patch."""
        generator = torch.Generator().manual_seed(self.seed)
        return torch.randint(0, 256, (channels, self.size, self.size), generator=generator, dtype=torch.uint8)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """A copy of the uint8 images (N, C, H, W) with the patch in their top-left corner."""
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        if min(images.shape[-2:]) < self.size:
            raise ValueError(f"images of {tuple(images.shape[-2:])} are smaller than the {self.size}-pixel patch")
        out = images.clone()
        out[:, :, :self.size, :self.size] = self.patch(images.shape[1]).to(images.device)
        return out

    def apply(self, dataset: ImageDataset) -> ImageDataset:
        """The dataset with every image patched."""
        return dataset.with_images(self(dataset.images))

    def region(self, height: int, width: int) -> torch.Tensor:
        """Bool (H, W) mask of the patched corner."""
        return self._corner(height, width, self.size)

    def visible_region(self, height: int, width: int) -> torch.Tensor:
        """Bool (H, W) mask of the patch's inner ``(size-2) x (size-2)`` corner, the part the paper and its
        reference code score (8x8 of the 10x10 patch, Fig. 3), given the first layer's 3x3 receptive field."""
        return self._corner(height, width, self.size - 2)

    @staticmethod
    def _corner(height: int, width: int, side: int) -> torch.Tensor:
        mask = torch.zeros(height, width, dtype=torch.bool)
        mask[:side, :side] = True
        return mask
