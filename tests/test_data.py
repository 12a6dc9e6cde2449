"""Dataset readers on tiny files in the real formats, their errors, and the patch transform."""
import gzip
import hashlib
import http.client
import io
import os
import pickle
import re
import shutil
import tarfile
import urllib.error
import warnings
import zlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rectgrad import data, studies
from rectgrad.data import (CIFAR10_CLASSES, ImageDataset, RandomPatch, load_cifar10, load_dataset,
                           load_fashion_mnist, load_masked_images, object_masks_from_images, read_idx,
                           to_inputs, to_uint8)

REAL_MASKS = Path("/work/shared/data/cifar10_masks")


@pytest.fixture(autouse=True)
def no_system_data(tmp_path, monkeypatch):
    """Hide any installed dataset and use an empty cache, so tests see only their own files."""
    monkeypatch.setattr(data, "FASHION_MNIST_SYSTEM_DIR", tmp_path / "no-system-dir")
    monkeypatch.setenv("RECTGRAD_DATA", str(tmp_path / "cache"))


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_fashion(folder: Path, split="train", n=12, seed=0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images, labels = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n, dtype=np.uint8)
    (image_file, _), (label_file, _) = data.FASHION_MNIST_FILES[split]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / image_file).write_bytes(gzip.compress(idx_bytes(images)))
    (folder / label_file).write_bytes(gzip.compress(idx_bytes(labels)))
    return images, labels


def cifar_archive(path: Path, n=4, members=None, batch=None) -> dict:
    """A cifar-10-python.tar.gz with ``n`` random images per batch (or ``batch`` as every batch), in the
    official layout: pickled dicts with bytes keys. Returns the batches by member name."""
    rng = np.random.default_rng(0)
    members = members or [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    batches = {m: batch or {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                            b"labels": rng.integers(0, 10, n).tolist()} for m in members}
    batches["batches.meta"] = {b"label_names": [c.encode() for c in CIFAR10_CLASSES]}
    with tarfile.open(path, "w:gz") as tar:
        for member, content in batches.items():
            # name numpy's unpickling helper as the official archive, pickled by an older numpy, does
            raw = pickle.dumps(content, protocol=2).replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
            info = tarfile.TarInfo(f"cifar-10-batches-py/{member}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return batches


# ---------------------------------------------------------------- ImageDataset

def test_image_dataset_scaling_subset_and_with_images():
    ds = ImageDataset(torch.tensor([0, 255, 128, 1], dtype=torch.uint8).reshape(4, 1, 1, 1),
                      torch.tensor([0, 1, 2, 3]), ["a", "b", "c", "d"], "toy")
    x = ds.inputs()
    assert x.dtype == torch.float32 and x.min() == -1 and x.max() == 1
    assert torch.equal(to_uint8(to_inputs(ds.images)), ds.images)
    assert torch.equal(ds.inputs(torch.tensor([1])), torch.ones(1, 1, 1, 1))
    sub = ds.subset(torch.tensor([3, 0]))
    assert len(sub) == 2 and sub.labels.tolist() == [3, 0] and sub.classes == ds.classes
    assert torch.equal(ds.with_images(ds.images.flip(0)).images[0], ds.images[3])
    with pytest.raises(ValueError, match="expected 4 images"):
        ds.with_images(ds.images[:2])
    with pytest.raises(ValueError, match="uint8"):
        ImageDataset(torch.zeros(2, 1, 3, 3), torch.zeros(2), ["a"], "bad")
    images = torch.zeros(2, 1, 3, 3, dtype=torch.uint8)
    with pytest.raises(ValueError, match="labels must be integer class indices, got torch.float32"):
        ImageDataset(images, torch.tensor([0.7, 1.0]), ["a", "b"], "bad")
    with pytest.raises(ValueError, match=r"labels must be class indices in 0..1 \(2 classes\), got 0..9"):
        ImageDataset(images, torch.tensor([0, 9]), ["a", "b"], "bad")


def test_image_dataset_takes_numpy_arrays_and_label_lists_and_names_what_is_wrong():
    images = torch.randint(0, 256, (4, 1, 8, 8), dtype=torch.uint8)
    for labels in ([0, 1, 0, 1], np.array([0, 1, 0, 1]), torch.tensor([0, 1, 0, 1])):
        ds = ImageDataset(images.numpy(), labels, ("a", "b"), "mine")
        assert torch.equal(ds.images, images) and ds.labels.dtype == torch.int64 and ds.labels.tolist() == [0, 1, 0, 1]
        assert ds.classes == ["a", "b"] and torch.equal(ds.subset(slice(1, 2)).images, images[1:2])
    labels = [0, 1, 0, 1]
    for shape in ((4, 2, 8, 8), (4, 3, 8, 3)):  # channels first where dim 1 may be the channels (PaperCNN takes any)
        assert ImageDataset(torch.zeros(shape, dtype=torch.uint8), labels, ["a", "b"], "mine").images.shape == shape
    for args, error, message in (
            ((torch.zeros(4, 8, 8, 3, dtype=torch.uint8), labels, ["a", "b"]), ValueError,
             r"images of shape \(4, 8, 8, 3\) look channels-last \(N, H, W, C\): .*images.permute\(0, 3, 1, 2\)"),
            ((np.zeros((4, 8, 8, 1), np.uint8), labels, ["a", "b"]), ValueError, r"\(4, 8, 8, 1\) look channels-last"),
            ((images[:, 0], labels, ["a", "b"]), ValueError, r"images must be \(N, C, H, W\), got shape \(4, 8, 8\)"),
            ((images.float() / 255, labels, ["a", "b"]), ValueError, r"must be uint8 \(0..255\), got torch.float32"),
            ((list(images), labels, ["a", "b"]), TypeError, "images must be one of Tensor, ndarray, got list"),
            ((images, "0101", ["a", "b"]), TypeError, "labels must be one of Tensor, ndarray, list, got str"),
            ((images, labels, []), ValueError, "classes is empty: give one name per class"),
            ((images, labels, None), TypeError, "classes must be a list of class names, got NoneType"),
            ((images, labels, ["a", None]), TypeError, r"list of class names \(str, or int\), got None among them"),
            ((images, labels, ["a", True]), TypeError, r"list of class names \(str, or int\), got True among them")):
        with pytest.raises(error, match=message):
            ImageDataset(*args, "bad")
    assert ImageDataset(images, labels, list(range(2)), "mine").classes == ["0", "1"]  # numbered classes
    flipped = images.numpy()[:, :, ::-1]  # a numpy view of negative strides, which torch.as_tensor refuses
    assert torch.equal(ImageDataset(flipped, labels, ["a", "b"], "mine").images, images.flip(2))


def test_image_dataset_refuses_labels_just_outside_the_classes():
    images = torch.zeros(2, 1, 3, 3, dtype=torch.uint8)
    assert ImageDataset(images, [0, 1], ["a", "b"], "ok").labels.tolist() == [0, 1]
    for labels, shown in (([0, 2], "0..2"), ([-1, 1], "-1..1")):
        with pytest.raises(ValueError, match=rf"class indices in 0..1 \(2 classes\), got {shown}"):
            ImageDataset(images, labels, ["a", "b"], "bad")


def test_checksum_chains_images_labels_and_masks_on_request():
    images = torch.arange(8, dtype=torch.uint8).reshape(2, 1, 2, 2)
    plain = ImageDataset(images, [0, 1], ["a", "b"], "toy")
    masks = torch.tensor([[[True, False], [False, False]], [[False, True], [True, True]]])
    masked = data.MaskedImages(images, [0, 1], ["a", "b"], "toy", masks=masks, names=["x", "y"])
    crc = zlib.crc32(plain.labels.numpy(), zlib.crc32(images.numpy()))
    assert data.checksum(plain) == crc == data.checksum(masked)  # masks left out unless asked for
    assert data.checksum(masked, masks=True) == zlib.crc32(masks.numpy(), crc)
    assert data.checksum(plain, masked) == zlib.crc32(plain.labels.numpy(), zlib.crc32(images.numpy(), crc))
    assert data.checksum(plain.with_images(images.flip(0))) != crc  # the images count, not the labels alone

def test_load_dataset_unknown_name():
    with pytest.raises(ValueError, match="known: fashion-mnist, cifar10"):
        load_dataset("mnist", "train")


# ---------------------------------------------------------------- Fashion-MNIST

def test_fashion_mnist_from_data_dir(tmp_path):
    images, labels = write_fashion(tmp_path, "test", n=7)
    ds = load_fashion_mnist("test", data_dir=tmp_path)
    assert ds.images.shape == (7, 1, 28, 28) and ds.images.dtype == torch.uint8
    assert torch.equal(ds.images[:, 0], torch.from_numpy(images))
    assert ds.labels.tolist() == labels.tolist() and ds.labels.dtype == torch.int64
    assert ds.name == "fashion-mnist" and ds.classes[9] == "Ankle boot"
    assert len(load_dataset("fashion-mnist", "test", data_dir=tmp_path)) == 7


def test_fashion_mnist_search_order(tmp_path, monkeypatch):
    write_fashion(tmp_path / "system", n=3)
    write_fashion(tmp_path / "cache" / "fashion-mnist", n=5)
    assert len(load_fashion_mnist("train")) == 5
    monkeypatch.setattr(data, "FASHION_MNIST_SYSTEM_DIR", tmp_path / "system")
    assert len(load_fashion_mnist("train")) == 3


def test_a_given_data_dir_is_the_only_place_looked_at(tmp_path, monkeypatch):
    write_fashion(tmp_path / "system", n=3)
    write_fashion(tmp_path / "system", "test", n=3)
    monkeypatch.setattr(data, "FASHION_MNIST_SYSTEM_DIR", tmp_path / "system")
    write_fashion(tmp_path / "mine", "train", n=4)  # the user's training files, no test files
    assert len(load_fashion_mnist("train", data_dir=tmp_path / "mine")) == 4
    missing = r"not found in .*mine \(missing: t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz\)"
    with pytest.raises(FileNotFoundError, match=missing):
        load_fashion_mnist("test", data_dir=tmp_path / "mine")
    with pytest.raises(FileNotFoundError, match="typo"):
        load_fashion_mnist("train", data_dir=tmp_path / "typo")


def test_unpacked_idx_files_are_read_too(tmp_path):
    images, labels = write_fashion(tmp_path, "test", n=5)
    for packed in tmp_path.iterdir():
        packed.with_suffix("").write_bytes(gzip.decompress(packed.read_bytes()))
        packed.unlink()
    ds = load_fashion_mnist("test", data_dir=tmp_path)
    assert torch.equal(ds.images[:, 0], torch.from_numpy(images)) and ds.labels.tolist() == labels.tolist()


@pytest.mark.parametrize("name", ["train-images-idx3-ubyte.gz", "train-images-idx3-ubyte"])
def test_a_folder_in_an_idx_files_place_is_named_not_reported_missing(tmp_path, name):
    # as cifar-10-python.tar.gz: a folder named like the file (an archive tool's unpacking, say) was 'not found'
    write_fashion(tmp_path, "train", n=3)
    (tmp_path / "train-images-idx3-ubyte.gz").unlink()
    place = tmp_path / name
    place.mkdir()
    with pytest.raises(IsADirectoryError, match=f"^{re.escape(str(place))} is a folder, where the file {name} should "
                                                "be: move it away and put the file there, or pass download=True "
                                                r"\(CLI: --download\)$"):
        load_fashion_mnist("train", data_dir=tmp_path)
    (place / "train-images-idx3-ubyte").write_bytes(b"")  # the file inside it: the one to put there
    with pytest.raises(IsADirectoryError, match=f"; it holds {re.escape(str(place / 'train-images-idx3-ubyte'))}, "
                                                "the file to put there$"):
        load_fashion_mnist("train", data_dir=tmp_path)
    shutil.copytree(tmp_path, tmp_path / "cache" / "fashion-mnist")  # the cache, looked at without data_dir
    with pytest.raises(IsADirectoryError, match=f"^{re.escape(str(tmp_path / 'cache' / 'fashion-mnist' / name))} "
                                                "is a folder"):
        load_fashion_mnist("train")


def test_fashion_mnist_missing_says_how_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"apt-get install dataset-fashion-mnist` \(then give no data "
                                                r"folder\), put them in the folder given as data_dir \(CLI: "
                                                r"--data-dir\), or pass download=True \(CLI: --download\)$"):
        load_fashion_mnist("train", data_dir=tmp_path)


@pytest.mark.parametrize("corrupt, message", [
    (lambda raw: b"\x1f\x8b" + raw, "not a valid gzip"),                          # gzip's magic, no gzip
    (lambda raw: b"<html>" + raw, "wrong magic"),                                 # an error page, say
    (lambda raw: gzip.compress(raw)[:-20], "not a valid gzip"),                   # truncated gzip
    (lambda raw: gzip.compress(b"\x00\x00\x08\x01" + raw[4:]), "wrong magic"),    # labels' magic
    (lambda raw: gzip.compress(raw[:-5]), "wrong size"),
])
def test_idx_corruptions(tmp_path, corrupt, message):
    write_fashion(tmp_path)
    raw = idx_bytes(np.zeros((12, 28, 28), np.uint8))
    bad = tmp_path / "train-images-idx3-ubyte.gz"
    bad.write_bytes(corrupt(raw))
    with pytest.raises(ValueError, match=message) as info:
        load_fashion_mnist("train", data_dir=tmp_path)
    assert str(bad) in str(info.value)  # and what to do: a rerun, even with --download, reads the same file
    assert str(info.value).endswith(": delete it and get the file again (download=True, CLI: --download, fetches a "
                                    "missing one)")


def test_idx_count_mismatch_and_bad_labels(tmp_path):
    write_fashion(tmp_path)
    labels = tmp_path / "train-labels-idx1-ubyte.gz"
    labels.write_bytes(gzip.compress(idx_bytes(np.zeros(11, np.uint8))))
    with pytest.raises(ValueError, match="12 images but .* 11 labels"):
        load_fashion_mnist("train", data_dir=tmp_path)
    labels.write_bytes(gzip.compress(idx_bytes(np.full(12, 10, np.uint8))))
    with pytest.raises(ValueError, match="label 10 out of range"):
        load_fashion_mnist("train", data_dir=tmp_path)
    assert read_idx(labels, ndim=1).shape == (12,)


def test_idx_files_without_images_and_with_absurd_headers(tmp_path):
    empty = tmp_path / "empty-idx3-ubyte"
    empty.write_bytes(idx_bytes(np.zeros((0, 28, 28), np.uint8)))
    assert read_idx(empty, ndim=3).shape == (0, 28, 28)
    huge = tmp_path / "huge-idx3-ubyte"  # the header's size overflowed int64 in the message
    huge.write_bytes(b"\x00\x00\x08\x03" + (2**31).to_bytes(4, "big") * 3)
    with pytest.raises(ValueError, match=f"wrong size, the header says .* \\({2**93 + 16} bytes\\)"):
        read_idx(huge, ndim=3)


@pytest.mark.parametrize("content, gzipped", [(b"", False), (b"", True), (b"\x00\x00\x08", False),
                                              (b"\x00\x00\x08\x03\x00\x00\x00\x0c\x00\x00", True)],
                         ids=["empty", "empty gzip", "half a magic", "half a header"])
def test_idx_file_shorter_than_its_header_is_said_to_be(tmp_path, content, gzipped):
    write_fashion(tmp_path)
    bad = tmp_path / "train-images-idx3-ubyte.gz"  # an interrupted copy, say
    bad.write_bytes(gzip.compress(content) if gzipped else content)
    unpacked = " once unpacked" if gzipped else ""
    with pytest.raises(ValueError, match=rf"^{re.escape(str(bad))} holds {len(content)} bytes{unpacked}, less than the "
                                         r"16-byte header of an idx file with 3 dimension\(s\): delete it and get the "
                                         r"file again \(download=True, CLI: --download, fetches a missing one\)$"):
        load_fashion_mnist("train", data_dir=tmp_path)


def test_read_idx_of_a_missing_file_says_it_is_missing_not_that_it_is_no_gzip(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "nowhere-idx1-ubyte"))):
        read_idx(tmp_path / "nowhere-idx1-ubyte", ndim=1)


def fake_server(files: dict[str, bytes]):
    def urlopen(url, timeout=None):
        name = url.rsplit("/", 1)[-1]
        if name not in files:
            raise urllib.error.URLError("network unreachable")
        return io.BytesIO(files[name])
    return urlopen


def test_fashion_mnist_download_checks_md5(tmp_path, monkeypatch):
    source = tmp_path / "source"
    write_fashion(source, "test", n=4)
    files = {p.name: p.read_bytes() for p in source.iterdir()}
    monkeypatch.setattr(data.urllib.request, "urlopen", fake_server(files))
    cache = tmp_path / "cache" / "fashion-mnist"
    with pytest.raises(ValueError, match="checksum mismatch .*t10k-images"):
        load_fashion_mnist("test", download=True)
    assert not cache.exists() or not any(cache.iterdir())  # nothing half-written kept
    monkeypatch.setitem(data.FASHION_MNIST_FILES, "test",
                        tuple((name, hashlib.md5(files[name]).hexdigest()) for name, _ in
                              data.FASHION_MNIST_FILES["test"]))
    assert len(load_fashion_mnist("test", download=True)) == 4
    assert sorted(p.name for p in cache.iterdir()) == sorted(files)


def test_fashion_mnist_download_fetches_only_the_missing_file(tmp_path, monkeypatch):
    source = tmp_path / "source"
    images, labels = write_fashion(source, "test", n=4)
    (images_file, _), (labels_file, _) = data.FASHION_MNIST_FILES["test"]
    cache = tmp_path / "cache" / "fashion-mnist"
    cache.mkdir(parents=True)
    shutil.copy(source / images_file, cache / images_file)  # already there, of no official md5
    monkeypatch.setattr(data.urllib.request, "urlopen", fake_server({labels_file: (source / labels_file).read_bytes()}))
    monkeypatch.setitem(data.FASHION_MNIST_FILES, "test",
                        ((images_file, "not checked"), (labels_file, hashlib.md5(
                            (source / labels_file).read_bytes()).hexdigest())))
    ds = load_fashion_mnist("test", download=True)
    assert torch.equal(ds.images[:, 0], torch.from_numpy(images)) and ds.labels.tolist() == labels.tolist()

def test_download_offline_says_where_to_put_the_file(monkeypatch):
    monkeypatch.setattr(data.urllib.request, "urlopen", fake_server({}))
    with pytest.raises(FileNotFoundError, match="could not download .*put the file at"):
        load_cifar10("train", download=True)


def test_a_download_cut_short_says_so_and_keeps_nothing(tmp_path, monkeypatch):
    class CutShort(io.BytesIO):  # the connection drops after 3 of 10 bytes: http.client's own error
        def read(self, size=-1):
            raise http.client.IncompleteRead(b"abc", 7)
    monkeypatch.setattr(data.urllib.request, "urlopen", lambda url, timeout=None: CutShort())
    with pytest.raises(FileNotFoundError, match=r"could not download .*cifar-10-python.tar.gz \(IncompleteRead\(3 "
                                                r"bytes read, 7 more expected\)\); without network, put the file at"):
        load_cifar10("train", data_dir=tmp_path / "d", download=True)
    assert list((tmp_path / "d").iterdir()) == []


def test_a_full_disk_during_a_download_is_not_said_to_be_the_network(tmp_path, monkeypatch):
    monkeypatch.setattr(data.urllib.request, "urlopen", lambda url, timeout=None: io.BytesIO(b"x" * 100))

    class FullDisk(io.BytesIO):
        def write(self, chunk):
            raise OSError(28, "No space left on device")
    monkeypatch.setattr(data.os, "fdopen", lambda fd, mode: (os.close(fd), FullDisk())[1])
    with pytest.raises(OSError, match=r"^\[Errno 28\] No space left on device$"):
        load_cifar10("train", data_dir=tmp_path / "d", download=True)
    assert list((tmp_path / "d").iterdir()) == []


def test_object_masks_rule():
    images = torch.zeros(2, 3, 4, 4, dtype=torch.uint8)
    images[0, 1, 1, 2] = 1
    images[1, :, 0, 0] = 30
    masks = object_masks_from_images(images)
    assert masks.shape == (2, 4, 4) and masks.dtype == torch.bool
    assert masks.sum().item() == 2 and masks[0, 1, 2] and masks[1, 0, 0]
    assert object_masks_from_images(images, threshold=10).sum().item() == 1
    assert object_masks_from_images(images, threshold=254).sum().item() == 0
    for same in (9.5, torch.tensor(10), np.uint8(10)):
        assert torch.equal(object_masks_from_images(images, threshold=same), object_masks_from_images(images, 10))
    for threshold in (-1, 255, 300, True, "10"):  # uint8 comparisons would wrap -1 and 300 around
        with pytest.raises(ValueError, match=rf"threshold must be a number in \[0, 255\) .*got {threshold!r}"):
            object_masks_from_images(images, threshold=threshold)


# ---------------------------------------------------------------- CIFAR-10

@pytest.mark.parametrize("pixels", [np.full((2, 3072), 300, dtype=np.int64), np.full((2, 3072), 0.7, np.float32),
                                    [[300] * 3072] * 2])
def test_cifar10_refuses_pixels_that_are_not_uint8(tmp_path, pixels):
    cifar_archive(tmp_path / "cifar-10-python.tar.gz", batch={b"data": pixels, b"labels": [0, 1]})
    with pytest.raises(ValueError, match="data_batch_1 holds (int64|float32) pixels, not the uint8"):
        load_cifar10("train", data_dir=tmp_path)  # a cast would wrap 300 to 44, floor 0.7 to 0


def test_cifar10_reads_pickled_batches_from_archive(tmp_path):
    batches = cifar_archive(tmp_path / "cifar-10-python.tar.gz", n=4)
    train, test = load_cifar10("train", data_dir=tmp_path), load_dataset("cifar10", "test", data_dir=tmp_path)
    assert train.images.shape == (20, 3, 32, 32) and len(test) == 4
    assert test.labels.tolist() == batches["test_batch"][b"labels"]
    assert test.images.dtype == torch.uint8 and test.name == "cifar10" and test.classes == CIFAR10_CLASSES
    image = batches["test_batch"][b"data"][0]  # rows of 1024 red, 1024 green, 1024 blue values, each 32x32 row-major
    assert test.images[0, 1, 2, 3] == image[1024 + 2 * 32 + 3]


def test_cifar10_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"cifar-10-python.tar.gz not found in .*; download it from "
                                                r"https://\S+ into the folder given as data_dir \(CLI: --data-dir\), "
                                                r"or pass download=True \(CLI: --download\)$"):
        load_cifar10("test", data_dir=tmp_path)
    (tmp_path / "cache").mkdir(exist_ok=True)
    cifar_archive(tmp_path / "cache" / "cifar-10-python.tar.gz")
    assert len(load_cifar10("test")) == 4
    with pytest.raises(FileNotFoundError, match=f"not found in {tmp_path / 'mine'};"):  # not the cache's instead
        load_cifar10("test", data_dir=tmp_path / "mine")


def test_cifar10_corruptions(tmp_path):
    path = tmp_path / "cifar-10-python.tar.gz"
    path.write_bytes(b"not an archive")
    with pytest.raises(ValueError, match="not a valid tar.gz"):
        load_cifar10("test", data_dir=tmp_path)
    cifar_archive(path, members=["data_batch_1"])
    with pytest.raises(ValueError, match="test_batch missing"):
        load_cifar10("test", data_dir=tmp_path)
    cifar_archive(path, batch={b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]})
    with pytest.raises(ValueError, match=r"shape \(2, 100\)"):
        load_cifar10("test", data_dir=tmp_path)
    cifar_archive(path, batch={b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, -1]})
    with pytest.raises(ValueError, match=f"{path}: label -1 out of range 0..9"):
        load_cifar10("test", data_dir=tmp_path)
    cifar_archive(path, batch={b"data": os.getcwd, b"labels": []})  # a pickled global: code to run
    with pytest.raises(ValueError, match="not a CIFAR-10 batch .*refusing to load"):
        load_cifar10("test", data_dir=tmp_path)


def test_cifar10_batch_with_more_labels_than_images_is_named(tmp_path):
    cifar_archive(tmp_path / "cifar-10-python.tar.gz",
                  batch={b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1, 2]})
    with pytest.raises(ValueError, match=r"test_batch has data of shape \(2, 3072\) and 3 labels, expected"):
        load_cifar10("test", data_dir=tmp_path)

def test_cifar10_download_checksum_mismatch(tmp_path, monkeypatch):
    monkeypatch.setattr(data.urllib.request, "urlopen", fake_server({"cifar-10-python.tar.gz": b"junk"}))
    with pytest.raises(ValueError, match="checksum mismatch"):
        load_cifar10("train", download=True)
    assert not (tmp_path / "cache" / "cifar-10-python.tar.gz").exists()


@pytest.mark.parametrize("name, archive", [("cifar10", "cifar-10-python.tar.gz"),
                                           ("fashion-mnist", "train-images-idx3-ubyte.gz")])
def test_data_dir_naming_the_archive_itself_is_refused_as_a_file(tmp_path, monkeypatch, name, archive):
    monkeypatch.setattr(data.urllib.request, "urlopen", fake_server({}))
    given = tmp_path / archive
    given.write_bytes(b"the archive")
    for download in (False, True):  # (with download=True: a raw FileExistsError from making the folder)
        with pytest.raises(NotADirectoryError, match=f"^data_dir {re.escape(str(given))} is a file; give the folder "
                                                     "that holds it$"):
            load_dataset(name, "train", data_dir=given, download=download)
    assert sorted(p.name for p in tmp_path.iterdir()) == [archive] and given.read_bytes() == b"the archive"


@pytest.mark.parametrize("name, archive", [("cifar10", "cifar-10-python.tar.gz"),
                                           ("fashion-mnist", "train-images-idx3-ubyte.gz")])
def test_a_folder_where_the_download_goes_is_refused_before_downloading(tmp_path, monkeypatch, name, archive):
    fetched = []
    monkeypatch.setattr(data.urllib.request, "urlopen", lambda url, timeout=None: fetched.append(url) or
                        io.BytesIO(b"x" * 100))
    (tmp_path / archive).mkdir()
    (tmp_path / archive / "kept").write_bytes(b"mine")
    with pytest.raises(IsADirectoryError, match=f"^{re.escape(str(tmp_path / archive))} is a folder, where the "
                                                f"download of {re.escape(archive)} would go; move it away"):
        load_dataset(name, "train", data_dir=tmp_path, download=True)
    assert fetched == []  # refused before any byte was fetched
    assert sorted(p.name for p in tmp_path.iterdir()) == [archive]  # no temporary file left beside it
    assert (tmp_path / archive / "kept").read_bytes() == b"mine"


def test_a_folder_in_the_cifar10_archives_place_is_named_without_download(tmp_path):
    place = tmp_path / "cifar-10-python.tar.gz"
    place.mkdir()
    with pytest.raises(IsADirectoryError, match=f"^{re.escape(str(place))} is a folder, where the archive "
                                                "cifar-10-python.tar.gz should be: move it away and put the archive "
                                                "there"):
        load_cifar10("test", data_dir=tmp_path)
    cifar_archive(place / "cifar-10-python.tar.gz", n=2)  # the archive inside it: that folder is the one to give
    with pytest.raises(IsADirectoryError, match=f"; it holds the archive: give {re.escape(str(place))} as data_dir"):
        load_cifar10("test", data_dir=tmp_path)
    assert len(load_cifar10("test", data_dir=place)) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [place.name]  # the folder left as it was


@pytest.mark.parametrize("given", ["root", "batches"])
def test_cifar10_unpacked_says_how_to_pack_the_archive_it_reads(tmp_path, given):
    cifar_archive(tmp_path / "cifar-10-python.tar.gz", n=2)
    root = tmp_path / "root"
    with tarfile.open(tmp_path / "cifar-10-python.tar.gz") as tar:  # tar xzf, as CIFAR-10's page says
        tar.extractall(root, filter="data")
    batches = root / "cifar-10-batches-py"
    with pytest.raises(FileNotFoundError, match=re.escape(
            f"cifar-10-python.tar.gz not found in {root if given == 'root' else batches} ({batches} holds its batches "
            f"unpacked, but the archive is what is read: pack them again, `tar czf cifar-10-python.tar.gz "
            f"cifar-10-batches-py` in {root}, the folder to give); download it from")):
        load_cifar10("test", data_dir=root if given == "root" else batches)
    (root / "other").mkdir()  # a folder of another name holding batches is not taken for the unpacked archive
    shutil.copy(batches / "data_batch_1", root / "other")
    with pytest.raises(FileNotFoundError, match=r"not found in \S+other; download it from"):
        load_cifar10("test", data_dir=root / "other")
    with tarfile.open(root / "cifar-10-python.tar.gz", "w:gz") as tar:  # as said: the archive read again
        tar.add(batches, "cifar-10-batches-py")
    assert len(load_cifar10("test", data_dir=root)) == 2


# ---------------------------------------------------------------- masked images

def write_jpg(path: Path, array: np.ndarray) -> None:
    Image.fromarray(array).save(path, quality=95)


def test_masked_images(tmp_path):
    for name, color in [("cat_10", (255, 0, 0)), ("cat_2", (0, 255, 0)), ("airplane_1", (0, 0, 255))]:
        write_jpg(tmp_path / f"{name}.jpg", np.full((8, 8, 3), color, np.uint8))
        mask = np.zeros((8, 8), np.uint8)
        mask[2:6, 2:6] = 255
        write_jpg(tmp_path / f"{name}_mask.jpg", mask)
    masked = load_masked_images(tmp_path)
    assert masked.names == ["airplane_1", "cat_2", "cat_10"]
    assert masked.labels.tolist() == [0, 3, 3] and masked.classes == CIFAR10_CLASSES
    assert masked.images.shape == (3, 3, 8, 8) and masked.images.dtype == torch.uint8
    assert masked.images[2, :, 4, 4].tolist()[2] > 240  # red stored as BGR reads back as blue
    assert load_masked_images(tmp_path, bgr=False).images[2, 0, 4, 4] > 240
    assert masked.masks.dtype == torch.bool and masked.masks[0, 2:6, 2:6].all() and masked.masks.sum() == 48
    sub = masked.subset(masked.labels == 3)
    assert sub.names == ["cat_2", "cat_10"] and sub.masks.shape == (2, 8, 8) and len(sub.inputs()) == 2
    with pytest.raises(ValueError, match="masks must be bool"):
        replace(masked, masks=masked.masks[:2])


def test_masked_images_object_pixels_are_200_and_up(tmp_path):
    """The reference code's rule: a mask pixel is object from 200 on, background below (flat 8x8 JPEG blocks keep
    their values exactly)."""
    write_jpg(tmp_path / "dog_1.jpg", np.zeros((16, 16, 3), np.uint8))
    mask = np.full((16, 16), 199, np.uint8)
    mask[:8, :8] = 200
    write_jpg(tmp_path / "dog_1_mask.jpg", mask)
    masks = load_masked_images(tmp_path).masks
    assert masks[0, :8, :8].all() and masks.sum() == 64


def test_masked_images_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_masked_images(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="no <class>_<n>.jpg"):
        load_masked_images(tmp_path)
    write_jpg(tmp_path / "dog_1.jpg", np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(FileNotFoundError, match="dog_1_mask.jpg missing"):
        load_masked_images(tmp_path)
    (tmp_path / "dog_1_mask.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match="dog_1_mask.jpg is not a readable image"):
        load_masked_images(tmp_path)
    write_jpg(tmp_path / "unicorn_1.jpg", np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="unknown class 'unicorn'"):
        load_masked_images(tmp_path)
    (tmp_path / "unicorn_1.jpg").unlink()
    write_jpg(tmp_path / "dog_1.JPEG", np.zeros((8, 8, 3), np.uint8))  # the same image twice
    with pytest.raises(ValueError, match=r"dog_1.JPEG and .*dog_1.jpg are one name with two suffixes: keep one"):
        load_masked_images(tmp_path)


def test_masked_images_of_other_sizes_are_refused_by_name(tmp_path):
    write_jpg(tmp_path / "dog_1.jpg", np.zeros((16, 16, 3), np.uint8))
    write_jpg(tmp_path / "dog_1_mask.jpg", np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError, match=r"dog_1.jpg: image \(16, 16\) and mask \(8, 8\) sizes differ"):
        load_masked_images(tmp_path)
    write_jpg(tmp_path / "dog_1_mask.jpg", np.zeros((16, 16), np.uint8))
    write_jpg(tmp_path / "dog_2.jpg", np.zeros((8, 8, 3), np.uint8))
    write_jpg(tmp_path / "dog_2_mask.jpg", np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError, match=r"dog_2.jpg: image \(8, 8\) and mask \(8, 8\) sizes differ .* from the "
                                         "other images"):
        load_masked_images(tmp_path)

def test_masked_images_in_any_case_with_stray_masks_and_empty_ones_said(tmp_path):
    mask = np.zeros((8, 8), np.uint8)
    mask[2:6, 2:6] = 255
    write_jpg(tmp_path / "cat_1.JPG", np.zeros((8, 8, 3), np.uint8))  # a camera's upper-case suffix
    write_jpg(tmp_path / "cat_1_mask.JPG", mask)
    write_jpg(tmp_path / "dog_2.jpeg", np.zeros((8, 8, 3), np.uint8))
    write_jpg(tmp_path / "dog_2_Mask.jpeg", np.zeros((8, 8), np.uint8))  # marks nothing; _mask in another case
    write_jpg(tmp_path / "frog_3_MASK.jpg", mask)  # no image
    (tmp_path / "frog_99.jpg").mkdir()  # not a file
    with pytest.warns(UserWarning) as caught:
        masked = load_masked_images(tmp_path)
    assert masked.names == ["cat_1", "dog_2"] and masked.masks.sum((1, 2)).tolist() == [16, 0]
    messages = [str(w.message) for w in caught]
    assert "1 mask(s) in " in messages[0] and "have no image and are not used: frog_3_MASK.jpg" in messages[0]
    assert messages[1] == ("the masks of 1 image(s) (dog_2) mark no object pixel (>= 200): every pixel counts as "
                           "background there")
    write_jpg(tmp_path / "cat_1_MASK.jpg", mask)
    twice = r"cat_1_MASK.jpg and cat_1_mask.JPG are both masks of cat_1: keep one"
    with pytest.warns(UserWarning, match="frog_3_MASK.jpg"), pytest.raises(ValueError, match=twice):
        load_masked_images(tmp_path)


def masks_archive(classes=CIFAR10_CLASSES, suffix=".jpg") -> bytes:
    """A CIFAR10_mask.tar as the paper's reference code holds it: CIFAR10_mask/<class>_<n>.jpg and _mask.jpg (one
    image of each class here), with the folder's own entry and a macOS resource fork ("._name") beside them."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        folder = tarfile.TarInfo("CIFAR10_mask")
        folder.type = tarfile.DIRTYPE
        tar.addfile(folder)
        for k, name in enumerate(classes):
            mask = np.zeros((32, 32), np.uint8)
            mask[8:24, 8:24] = 255
            for member, array in ((f"{name}_1{suffix}", np.full((32, 32, 3), 20 * k, np.uint8)),
                                  (f"{name}_1_mask{suffix}", mask), (f"._{name}_1{suffix}", None)):
                encoded = io.BytesIO()
                if array is None:
                    encoded.write(b"\x00\x05\x16\x07 resource fork")
                else:
                    Image.fromarray(array).save(encoded, format="JPEG", quality=95)
                info = tarfile.TarInfo(f"CIFAR10_mask/{member}")
                info.size = len(encoded.getvalue())
                tar.addfile(info, io.BytesIO(encoded.getvalue()))
    return buffer.getvalue()


def test_masked_images_download_into_the_cache_checked_by_reading_them(tmp_path, monkeypatch):
    monkeypatch.setenv("RECTGRAD_DATA", str(tmp_path / "cache"))
    with pytest.raises(FileNotFoundError, match="masked CIFAR-10 images are not in .*cifar10_masks.*--download"):
        data.masked_images_folder()
    assert data.CIFAR10_MASKS_URL.endswith("/CIFAR10_mask.tar") and "1202kbs/Rectified-Gradient" in \
        data.CIFAR10_MASKS_URL
    monkeypatch.setattr(data.urllib.request, "urlopen", fake_server({"CIFAR10_mask.tar": masks_archive()}))
    folder = data.masked_images_folder(download=True)
    assert folder == tmp_path / "cache" / "cifar10_masks"
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{c}_1{m}.jpg" for c in CIFAR10_CLASSES
                                                              for m in ("", "_mask"))  # no fork, no subfolder
    masked = load_masked_images(folder)
    assert masked.labels.tolist() == list(range(10)) and masked.masks.sum(dim=(1, 2)).tolist() == [256] * 10
    assert sorted(p.name for p in folder.parent.iterdir()) == ["cifar10_masks"]  # no archive or partial folder left
    monkeypatch.setattr(data.urllib.request, "urlopen", fake_server({}))  # offline: the folder is there, no download
    assert data.masked_images_folder(tmp_path / "cache" / "cifar10_masks", download=True) == folder


@pytest.mark.parametrize("archive, why", [(masks_archive(CIFAR10_CLASSES[:9]), "no image of truck"),
                                          (b"<html>rate limited</html>", "")], ids=["a class missing", "no tar"])
def test_a_masked_images_download_that_is_not_the_set_saves_nothing(tmp_path, monkeypatch, archive, why):
    monkeypatch.setattr(data.urllib.request, "urlopen", fake_server({"CIFAR10_mask.tar": archive}))
    with pytest.raises(ValueError, match=f"CIFAR10_mask.tar does not hold the paper's masked images .*{why}.*; "
                                         "nothing was saved"):
        data.masked_images_folder(tmp_path / "masks", download=True)
    assert list(tmp_path.iterdir()) == []


def test_masked_images_download_offline_says_where_to_unpack_them(tmp_path, monkeypatch):
    monkeypatch.setattr(data.urllib.request, "urlopen", fake_server({}))
    with pytest.raises(FileNotFoundError, match=r"could not download .*CIFAR10_mask.tar \(.*network unreachable.*\); "
                                                f"without network, unpack its images into {tmp_path / 'masks'}"):
        data.masked_images_folder(tmp_path / "masks", download=True)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "masks").write_text("")
    with pytest.raises(NotADirectoryError, match="masks is a file; give the folder of the paper's masked CIFAR-10"):
        data.masked_images_folder(tmp_path / "masks", download=True)


@pytest.mark.skipif(not REAL_MASKS.is_dir(), reason="the paper's masked images are not here")
def test_paper_masked_images():
    masked = load_masked_images(REAL_MASKS)
    assert masked.images.shape == (204, 3, 32, 32) and masked.masks.shape == (204, 32, 32)
    assert masked.labels.bincount().tolist() == [19, 16, 28, 15, 19, 22, 24, 27, 17, 17]
    assert 0.1 < masked.masks.float().mean() < 0.9


def test_masked_images_skip_hidden_files_as_macos_resource_forks(tmp_path):
    """The reference code's CIFAR10_mask.tar holds a "._<name>.jpg" resource fork beside each image: unpacked by hand
    (or copied by macOS to a USB drive), they are no images of a class "._cat", nor masks without an image."""
    mask = np.zeros((8, 8), np.uint8)
    mask[2:6, 2:6] = 255
    write_jpg(tmp_path / "cat_1.jpg", np.zeros((8, 8, 3), np.uint8))
    write_jpg(tmp_path / "cat_1_mask.jpg", mask)
    for fork in ("._cat_1.jpg", "._cat_1_mask.jpg"):
        (tmp_path / fork).write_bytes(b"\x00\x05\x16\x07 resource fork")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        masked = load_masked_images(tmp_path)
    assert masked.names == ["cat_1"] and masked.labels.tolist() == [3] and masked.masks.sum() == 16


def test_a_masked_images_download_with_an_image_without_its_mask_saves_nothing_and_says_so(tmp_path, monkeypatch):
    whole, cut = tarfile.open(fileobj=io.BytesIO(masks_archive())), io.BytesIO()
    with tarfile.open(fileobj=cut, mode="w") as tar:
        for member in whole.getmembers():
            if not member.name.endswith("/cat_1_mask.jpg"):
                tar.addfile(member, whole.extractfile(member) if member.isfile() else None)
    monkeypatch.setattr(data.urllib.request, "urlopen", fake_server({"CIFAR10_mask.tar": cut.getvalue()}))
    with pytest.raises(ValueError, match=r"CIFAR10_mask.tar does not hold the paper's masked images \(cat_1_mask.jpg "
                                         r"missing \(each image needs its mask\)\); nothing was saved$"):
        data.masked_images_folder(tmp_path / "masks", download=True)  # (was the partial folder's path, deleted)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- random patch

@pytest.mark.parametrize("channels", [1, 3])
def test_random_patch_same_on_every_image_only_corner(channels):
    images = torch.randint(0, 256, (5, channels, 16, 16), dtype=torch.uint8)
    patch = RandomPatch(size=10, seed=100)
    out = patch(images)
    corner = patch.region(16, 16)
    assert corner.sum() == 100 and corner[:10, :10].all()
    assert torch.equal(out[:, :, ~corner], images[:, :, ~corner])
    assert (out[:, :, :10, :10] == out[:1, :, :10, :10]).all()
    assert torch.equal(out[0, :, :10, :10], patch.patch(channels))
    assert torch.equal(RandomPatch(10, 100)(images), out)
    assert not torch.equal(RandomPatch(10, 101)(images), out)
    assert patch.visible_region(16, 16).sum() == 64 and patch.visible_region(16, 16)[:8, :8].all()


def test_random_patch_on_dataset_and_errors():
    ds = ImageDataset(torch.zeros(3, 1, 12, 12, dtype=torch.uint8), torch.arange(3), ["a", "b", "c"], "toy")
    patched = RandomPatch().apply(ds)
    assert patched.labels.tolist() == [0, 1, 2] and patched.images[:, :, :10, :10].any()
    assert not ds.images.any()  # the original is left alone
    with pytest.raises(ValueError, match="smaller than the 10-pixel patch"):
        RandomPatch()(torch.zeros(1, 1, 8, 8, dtype=torch.uint8))


def test_random_patch_fits_an_image_of_its_size_and_spans_0_to_255():
    images = torch.zeros(2, 3, 64, 64, dtype=torch.uint8)
    patch = RandomPatch(size=64, seed=100)
    assert torch.equal(patch(images)[1], patch.patch(3))  # the whole image is the patch
    # 12288 draws from 0..255: both ends included (missing one by chance: about e^-48, whatever the seed)
    assert patch.patch(3).min() == 0 and patch.patch(3).max() == 255


def test_random_patch_of_no_scored_corner_or_of_a_seed_that_is_no_whole_number_is_refused():
    for size in (0, 1, 2, -1, 10.5, "10", True):  # size 1 scored all but the last row and column, 0 all but two
        with pytest.raises(ValueError, match=rf"RandomPatch size must be a whole number of pixels, at least 3 .*"
                                             rf"got {re.escape(repr(size))}$"):
            RandomPatch(size)
    for seed in (1.5, "100", None):
        with pytest.raises(ValueError, match=rf"RandomPatch seed must be a whole number .*got {seed!r}$"):
            RandomPatch(10, seed)
    patch = RandomPatch(np.int64(3), np.int64(100))
    assert patch.visible_region(5, 5).sum() == 1 and patch.region(5, 5).sum() == 9
    assert torch.equal(patch.patch(1), RandomPatch(3, 100).patch(1))


def write_image_folder(root, sizes=((20, 24), (40, 40)), grayscale=False, masks=True):
    """ROOT/{train,test}/{b_dog,a_cat}/: constant-colour images of two sizes (class a_cat red-ish, b_dog blue-ish),
    a mask beside the first test image of each class (left half white), a text file to ignore."""
    for split in ("train", "test"):
        for c, name in enumerate(("b_dog", "a_cat")):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i, (h, w) in enumerate(sizes):
                colour = (200, 10, 60) if name == "a_cat" else (10, 60, 200)
                pixels = np.full((h, w, 3), colour, np.uint8)
                image = Image.fromarray(pixels).convert("L") if grayscale else Image.fromarray(pixels)
                image.save(folder / f"img{i}.{'png' if i else 'jpg'}", quality=100)
                if split == "test" and i == 0 and masks:
                    mask = np.zeros((h, w), np.uint8)
                    mask[:, : w // 2] = 255
                    Image.fromarray(mask).save(folder / f"img{i}_mask.png")
            (folder / "notes.txt").write_text("not an image")


def test_image_folder_classes_sizes_colours_and_masks(tmp_path):
    write_image_folder(tmp_path)
    train = load_dataset("folder", "train", data_dir=tmp_path, image_size=16)
    assert train.classes == ["a_cat", "b_dog"] and sorted(train.labels.tolist()) == [0, 0, 1, 1]
    assert train.images.shape == (4, 3, 16, 16)  # both sizes resized; masks and notes.txt are not images
    colours = {0: [200.0, 10.0, 60.0], 1: [10.0, 60.0, 200.0]}
    for image, label in zip(train.images, train.labels.tolist()):  # the colour survives (JPEG, resize)
        assert torch.allclose(image.flatten(1).float().mean(1), torch.tensor(colours[label]), atol=3)
    test = data.load_image_folder(tmp_path, "test", 16)
    assert test.name == f"{tmp_path.name} (test)" and len(test) == 4
    masked = data.load_image_folder_masks(tmp_path, 16)
    assert sorted(masked.names) == ["a_cat/img0", "b_dog/img0"]
    assert masked.labels.tolist() == [0 if name.startswith("a_cat") else 1 for name in masked.names]
    assert masked.masks[:, :, :8].all() and not masked.masks[:, :, 8:].any()
    for image, label in zip(masked.images, masked.labels.tolist()):  # img0 is the 20x24 JPEG: a test image
        assert any(torch.equal(image, other) for other in test.images[test.labels == label])
    reused = data.load_image_folder_masks(tmp_path, 16, test)  # the loaded test split's images, not read again
    assert torch.equal(reused.images, masked.images) and torch.equal(reused.masks, masked.masks)
    assert torch.equal(reused.labels, masked.labels) and reused.names == masked.names
    for other, why in ((train.subset(slice(0, 3)), "holds 3 images"), (train, "pixels")):
        with pytest.raises(ValueError, match=why):
            data.load_image_folder_masks(tmp_path, 32 if why == "pixels" else 16, other)
    order = next(o for o in (torch.argsort(test.labels), torch.argsort(-test.labels))  # sorted by label, one way
                 if not torch.equal(test.labels[o], test.labels))                     # or the other: its labels move
    for other in (test.subset(order), replace(test, classes=["cat", "dog"])):
        with pytest.raises(ValueError, match="test is not the test split of .* its classes or its labels, in order"):
            data.load_image_folder_masks(tmp_path, 16, other)
    swapped = torch.arange(len(test))
    same = [i for i in range(len(test)) if test.labels[i] == test.labels[0]]
    swapped[same[0]], swapped[same[1]] = same[1], same[0]  # two images of one class swapped: the labels stay
    with pytest.raises(ValueError, match=r"test is not the test split of .* its image of .*img\d\.\w+ differs"):
        data.load_image_folder_masks(tmp_path, 16, test.with_images(test.images[swapped]))


def test_image_folder_masks_in_zero_one_form_and_their_mistakes(tmp_path):
    write_image_folder(tmp_path)
    cat = tmp_path / "test" / "a_cat"
    zero_one = np.zeros((20, 24), np.uint8)
    zero_one[:, :12] = 1  # the left half, written as 0/1 as many tools do
    Image.fromarray(zero_one).save(cat / "img0_mask.png")
    masked = data.load_image_folder_masks(tmp_path, 16)
    assert all(m[:, :8].all() and not m[:, 8:].any() for m in masked.masks)
    Image.fromarray(np.zeros((20, 24), np.uint8)).save(cat / "img0_mask.png")
    with pytest.warns(UserWarning, match=r"the masks of 1 image\(s\) \(a_cat/img0\) mark no object pixel"):
        data.load_image_folder_masks(tmp_path, 16)
    Image.fromarray(np.full((20, 24), 255, np.uint8)).save(cat / "img0_mask.png")
    with pytest.warns(UserWarning, match=r"the masks of 1 image\(s\) \(a_cat/img0\) mark every pixel as object: "
                                         "with no background there, Fig. 2 zeroes nothing"):
        data.load_image_folder_masks(tmp_path, 16)
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(cat / "img0_mask.png")
    with pytest.raises(ValueError, match="img0_mask.png is 5x5 pixels but its image img0.jpg 24x20"):
        data.load_image_folder_masks(tmp_path, 16)
    Image.fromarray(zero_one * 255).save(cat / "img0_mask.png")
    Image.fromarray(zero_one * 255).save(cat / "img0_mask.jpg")
    with pytest.raises(ValueError, match="img0_mask.jpg and img0_mask.png are both masks of .*a_cat/img0: keep one"):
        data.load_image_folder_masks(tmp_path, 16)
    (cat / "img0_mask.jpg").unlink()
    Image.fromarray(np.zeros((20, 24, 3), np.uint8)).save(cat / "img0.png")
    with pytest.raises(ValueError, match="img0_mask.png could be the mask of img0.jpg or img0.png"):
        data.load_image_folder_masks(tmp_path, 16)


def test_image_folder_masks_named_in_upper_case_are_masks(tmp_path):
    write_image_folder(tmp_path)
    for name in ("a_cat", "b_dog"):
        for i, suffix in ((0, "_MASK.PNG"), (1, "_Mask.png")):
            mask = np.full((20, 24) if i == 0 else (40, 40), 255, np.uint8)
            Image.fromarray(mask).save(tmp_path / "test" / name / f"img{i}{suffix}")
        (tmp_path / "test" / name / "img0_mask.png").unlink()
    assert len(data.load_image_folder(tmp_path, "test", 16)) == 4  # the masks are not test images
    with pytest.warns(UserWarning, match=r"the masks of 4 image\(s\) .* mark every pixel as object"):  # all white
        masked = data.load_image_folder_masks(tmp_path, 16)
    assert sorted(masked.names) == ["a_cat/img0", "a_cat/img1", "b_dog/img0", "b_dog/img1"] and masked.masks.all()
    assert [p.name for p in data.image_files([tmp_path / "test" / "a_cat"])] == ["img0.jpg", "img1.png"]


def test_image_folder_masks_without_an_image_are_named_in_a_warning(tmp_path):
    write_image_folder(tmp_path)
    (tmp_path / "test" / "b_dog" / "img0_mask.png").rename(tmp_path / "test" / "b_dog" / "img7_mask.png")
    with pytest.warns(UserWarning, match=r"1 mask\(s\) in .*test have no image and are not used: b_dog/img7_mask.png"):
        masked = data.load_image_folder_masks(tmp_path, 16)
    assert masked.names == ["a_cat/img0"]
    (tmp_path / "test" / "b_dog" / "masks").mkdir()  # masks kept apart, in a folder of their own
    (tmp_path / "test" / "b_dog" / "img7_mask.png").rename(tmp_path / "test" / "b_dog" / "masks" / "img0_mask.png")
    with pytest.warns(UserWarning, match=r"have no image and are not used: b_dog/masks/img0_mask.png"):
        assert data.load_image_folder_masks(tmp_path, 16).names == ["a_cat/img0"]


def test_image_folder_order_is_fixed_and_mixes_the_classes(tmp_path):
    for c in range(3):  # 3 classes of 20 images each: in file order the first 20 would all be class 0
        for split in ("train", "test"):
            folder = tmp_path / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(20):
                Image.fromarray(np.full((16, 16), 50 * c + i, np.uint8)).save(folder / f"{i:02d}.png")
    first = data.load_image_folder(tmp_path, "train", 16)
    again = data.load_image_folder(tmp_path, "train", 16)
    assert torch.equal(first.images, again.images) and torch.equal(first.labels, again.labels)
    assert set(first.labels[:10].tolist()) == {0, 1, 2}  # what the smaller scales take holds every class
    values = first.images[:, 0, 0, 0].long()
    assert sorted(values.tolist()) == [50 * c + i for c in range(3) for i in range(20)]  # every image once
    assert torch.equal(values // 50, first.labels)  # each image keeps its label


def test_image_folder_takes_nested_subfolders_as_torchvision_does(tmp_path):
    from torchvision.datasets import ImageFolder

    write_image_folder(tmp_path)
    for split, name in (("train", "a_cat/day2/more/x.png"), ("train", "b_dog/b.png"), ("test", "a_cat/day2/y.png")):
        (tmp_path / split / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((16, 16, 3), 90, np.uint8)).save(tmp_path / split / name)
    mask = np.zeros((16, 16), np.uint8)
    mask[:, :8] = 255
    Image.fromarray(mask).save(tmp_path / "test" / "a_cat" / "day2" / "y_mask.png")  # beside its image
    expected = ImageFolder(str(tmp_path / "train"), is_valid_file=lambda f: "_mask" not in f and f.endswith("g"))
    files = data.image_folder_split(tmp_path, "train")[0]
    assert sorted((str(path), label) for path, label in files) == sorted(expected.samples)
    assert len(files) == 6 and data.load_image_folder(tmp_path, "train", 16).labels.bincount().tolist() == [3, 3]
    (tmp_path / "train" / "a_cat" / "day2" / "loop").symlink_to(tmp_path / "train" / "a_cat")  # a link loop ends
    for copies in ("b_dog/.thumbnails", "b_dog/@eaDir", ".ipynb_checkpoints"):  # thumbnails, a NAS index: skipped
        (tmp_path / "train" / copies).mkdir()
        Image.fromarray(np.full((16, 16, 3), 90, np.uint8)).save(tmp_path / "train" / copies / "b.png")
    (tmp_path / "train" / "a_cat" / "._img0.png").write_bytes(b"\x00\x05\x16\x07")  # macOS's AppleDouble twin
    assert data.image_folder_split(tmp_path, "train") == (files, ["a_cat", "b_dog"])
    masked = data.load_image_folder_masks(tmp_path, 16)
    assert sorted(masked.names) == ["a_cat/day2/y", "a_cat/img0", "b_dog/img0"]
    assert masked.masks[masked.names.index("a_cat/day2/y")][:, :8].all()
    chosen = studies.images_from_dataset("folder", 3, data_dir=tmp_path, image_size=16)
    assert sorted(chosen.names) == sorted(masked.names)


@pytest.mark.parametrize("split, link, target", [("train", "c_cow", "a_cat"),  # a class folder that is a link
                                                  ("test", "b_dog/more", "a_cat")])  # a link inside another class
def test_image_folder_refuses_one_folder_in_two_classes(tmp_path, split, link, target):
    write_image_folder(tmp_path)
    (tmp_path / split / link).symlink_to(tmp_path / split / target, target_is_directory=True)
    first, second = tmp_path / split / target, tmp_path / split / link
    for read in (lambda: data.image_folder_split(tmp_path, split), lambda: load_dataset(
            "folder", split, data_dir=tmp_path, image_size=16)):
        with pytest.raises(ValueError, match=f"^{re.escape(str(first))} and {re.escape(str(second))} are one "
                                             "folder .* in two classes, 'a_cat' and '(b_dog|c_cow)'"):
            read()
    assert (tmp_path / split / target / "img0.jpg").is_file()  # nothing moved


@pytest.mark.parametrize("link, target", [("test/a_cat", "train/a_cat"),  # a test class folder that is a link
                                          ("test", "train"),  # the whole test split
                                          ("test/b_dog/more", "train/b_dog")])  # a link inside a test class
def test_image_folder_refuses_one_folder_in_both_splits(tmp_path, link, target):
    write_image_folder(tmp_path)
    if (tmp_path / link).exists():
        shutil.rmtree(tmp_path / link)
    (tmp_path / link).symlink_to(tmp_path / target, target_is_directory=True)
    first, second = tmp_path / target, tmp_path / link
    if link == "test":
        first, second = first / "a_cat", second / "a_cat"
    for split in ("train", "test"):  # the training split too: it would hold the test images
        for read in (lambda: data.image_folder_split(tmp_path, split), lambda: load_dataset(
                "folder", split, data_dir=tmp_path, image_size=16)):
            with pytest.raises(ValueError, match=f"^{re.escape(str(first))} and {re.escape(str(second))} are one "
                                                 f"folder .* in both splits, {re.escape(str(tmp_path / 'train'))} "
                                                 f"and {re.escape(str(tmp_path / 'test'))}: its images"):
                read()
    assert (first / "img0.jpg").is_file()  # nothing moved


def test_image_folder_splits_apart_through_links_are_taken(tmp_path):
    # links that keep the splits apart are no leak: the test split elsewhere, reached through a link
    write_image_folder(tmp_path / "elsewhere")
    (tmp_path / "root").mkdir()
    for split in ("train", "test"):
        (tmp_path / "root" / split).symlink_to(tmp_path / "elsewhere" / split, target_is_directory=True)
    assert len(data.image_folder_split(tmp_path / "root", "test")[0]) == 4


def test_image_folder_grayscale_and_no_masks(tmp_path):
    write_image_folder(tmp_path, grayscale=True, masks=False)
    assert data.load_image_folder(tmp_path, "test", 32).images.shape == (4, 1, 32, 32)
    assert data.load_image_folder_masks(tmp_path, 32) is None
    (tmp_path / "test" / "b_dog").rename(tmp_path / "elsewhere")  # a test folder may lack a class
    assert data.load_image_folder(tmp_path, "test", 32).labels.tolist() == [0, 0]


def test_image_folder_reads_the_training_headers_once(tmp_path, monkeypatch):
    write_image_folder(tmp_path, grayscale=True, masks=False)
    opened = []
    monkeypatch.setattr(data, "_image_mode", lambda path, read=data._image_mode: opened.append(path) or read(path))
    data._folder_mode.cache_clear()
    for split in ("train", "test", "train"):
        assert data.load_image_folder(tmp_path, split, 16).images.shape[1] == 1
    assert len(opened) == 4  # the four training images' headers, once for all three loads
    changed = tmp_path / "train" / "a_cat" / "img1.png"
    Image.fromarray(np.full((40, 40, 3), (200, 10, 60), np.uint8)).save(changed)
    os.utime(changed, ns=(0, 10**9))  # a changed file is seen as changed even within the clock's resolution
    assert data.load_image_folder(tmp_path, "test", 16).images.shape[1] == 3


@pytest.mark.parametrize("breakage, error, message", [
    (lambda root: (root / "test" / "a_cat" / "img1.png").write_bytes(b"garbage"), ValueError,
     r"img1.png is not a readable image"),
    (lambda root: (root / "test" / "zebra").mkdir(), ValueError, r"\['zebra'\] have no folder in"),
    (lambda root: [(root / split / "a_cat").rename(root / split / name) for split, name in
                   (("train", "caf\u00e9"), ("test", "cafe\u0301"))],  # one name, composed / decomposed (macOS)
     ValueError, r"'cafe\\u0301' vs 'caf\\xe9': composed and decomposed accents"),
    (lambda root: (root / "train" / "c_emu").mkdir(), ValueError, r"training classes \['c_emu'\] hold no images"),
    (lambda root: shutil.rmtree(root / "train" / "b_dog"), ValueError, "at least two; found \\['a_cat'\\]"),
    (lambda root: shutil.rmtree(root / "test"), FileNotFoundError, "ImageFolder layout"),
])
def test_image_folder_errors(tmp_path, breakage, error, message):
    write_image_folder(tmp_path)
    breakage(tmp_path)
    with pytest.raises(error, match=message):
        data.load_image_folder(tmp_path, "test", 32)


def test_image_folder_names_an_image_too_large_for_pillow(tmp_path, monkeypatch):
    write_image_folder(tmp_path, sizes=((40, 40),))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # an error from twice that: the images hold 40 x 40
    with pytest.raises(ValueError, match=r"img0.jpg is not a readable image \(Image size \(1600 pixels\) exceeds"):
        data.load_image_folder(tmp_path, "test", 32)


def test_image_folder_16_bit_and_float_images(tmp_path):
    for split in ("train", "test"):
        for name in ("a", "b"):
            (tmp_path / split / name).mkdir(parents=True)
    deep = (np.arange(16 * 16).reshape(16, 16) * 250).astype(np.uint16)  # 0 .. 63750: far beyond 8 bits
    Image.fromarray(deep).save(tmp_path / "train" / "a" / "deep.png")
    Image.fromarray(np.full((16, 16), 7, np.uint8)).save(tmp_path / "train" / "b" / "plain.png")
    train = data.load_image_folder(tmp_path, "train", 16)
    deep_image = train.images[train.labels == 0][0, 0]
    assert train.images.shape[1] == 1 and torch.equal(deep_image, torch.from_numpy((deep >> 8).astype(np.uint8)))
    Image.fromarray(deep.astype(">u2")).save(tmp_path / "train" / "a" / "deep.tif")  # 16-bit big-endian: I;16B
    train = data.load_image_folder(tmp_path, "train", 16)
    assert train.images.shape[1] == 1 and torch.equal(train.images[train.labels == 0][0, 0], deep_image)
    Image.fromarray(deep.astype(np.float32)).save(tmp_path / "test" / "a" / "float.tif")
    with pytest.raises(ValueError, match="float.tif: 32-bit integer or floating-point pixels"):
        data.load_image_folder(tmp_path, "test", 16)


def test_image_folder_bad_arguments(tmp_path):
    write_image_folder(tmp_path)
    for size in (30, 12, 100000):
        with pytest.raises(ValueError, match=f"multiple of 4 from 16 to 512 .*got {size}"):
            data.load_image_folder(tmp_path, "train", size)
    with pytest.raises(ValueError, match="needs its folder"):
        load_dataset("folder", "train")
    with pytest.raises(ValueError, match=r"^download=True \(CLI: --download\) does not apply"):
        load_dataset("folder", "train", data_dir=tmp_path, download=True)
    with pytest.raises(ValueError, match="split must be"):
        data.load_image_folder(tmp_path, "validation", 32)


def test_image_folder_sizes_at_the_ends_of_the_range_are_taken(tmp_path):
    write_image_folder(tmp_path)
    for size in (20, 512):  # multiples of 4, not of 8; the largest
        assert len(data.image_folder_files(tmp_path, "test", size)) == 4


def test_image_folder_resizes_images_bilinear_and_masks_nearest(tmp_path):
    write_image_folder(tmp_path, sizes=((16, 16),))
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
    mask = np.where(rng.random((40, 40)) < 0.5, 255, 0).astype(np.uint8)
    folder = tmp_path / "test" / "a_cat"
    Image.fromarray(pixels).save(folder / "img0.png")
    Image.fromarray(mask).save(folder / "img0_mask.png")
    (folder / "img0.jpg").unlink()
    Image.fromarray(np.full((16, 16), 127, np.uint8)).save(tmp_path / "test" / "b_dog" / "img0_mask.png")
    with pytest.warns(UserWarning, match=r"\(b_dog/img0\) mark no object pixel"):  # 127: background, 128 is object
        masked = data.load_image_folder_masks(tmp_path, 16)
    cat = masked.names.index("a_cat/img0")
    expected = np.array(Image.fromarray(pixels).resize((16, 16), Image.BILINEAR))
    assert torch.equal(masked.images[cat], torch.from_numpy(expected).permute(2, 0, 1))
    expected = np.asarray(Image.fromarray(mask).resize((16, 16), Image.NEAREST)) >= 128
    assert torch.equal(masked.masks[cat], torch.from_numpy(expected))
    Image.fromarray(np.full((16, 16), 128, np.uint8)).save(tmp_path / "test" / "b_dog" / "img0_mask.png")
    with pytest.warns(UserWarning, match=r"\(b_dog/img0\) mark every pixel as object"):
        data.load_image_folder_masks(tmp_path, 16)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_image_size_is_that_of_the_upright_image(tmp_path, orientation):
    image = Image.fromarray(np.zeros((20, 24, 3), np.uint8))
    exif = image.getexif()
    exif[0x0112] = orientation
    image.save(tmp_path / "photo.jpg", exif=exif)
    with Image.open(tmp_path / "photo.jpg") as stored:
        assert data.upright_size(tmp_path / "photo.jpg") == data.upright(stored).size


def test_unique_names_give_a_whole_absolute_path_as_it_is_written():
    assert data.unique_names([Path("/t/1.png"), Path("/u/t/1.png")]) == ["/t/1", "u/t/1"]

def test_reading_thousands_of_images_shows_a_progress_bar(tmp_path, capsys):
    for split, count in (("train", 2000), ("test", 10)):
        for c in range(2):
            folder = tmp_path / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(count // 2):
                Image.fromarray(np.full((16, 16), i % 256, np.uint8)).save(folder / f"{i}.png")
    assert len(data.load_image_folder(tmp_path, "train", 16, progress=True)) == 2000
    assert "reading train images" in capsys.readouterr().err
    data.load_image_folder(tmp_path, "train", 16)
    data.load_image_folder(tmp_path, "test", 16, progress=True)  # a few files: no bar
    assert capsys.readouterr().err == ""


def test_image_folder_hidden_resource_forks_of_masks_are_no_stray_masks(tmp_path):
    write_image_folder(tmp_path)
    for fork in ("._img0_mask.png", "._img0.jpg"):  # macOS's, on a USB drive or a network share
        (tmp_path / "test" / "a_cat" / fork).write_bytes(b"\x00\x05\x16\x07 resource fork")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        masked = data.load_image_folder_masks(tmp_path, 16)
    assert sorted(masked.names) == ["a_cat/img0", "b_dog/img0"]


def test_image_folder_size_that_is_no_whole_number_is_refused_by_name(tmp_path):
    write_image_folder(tmp_path)
    for size in (32.0, "32", None, True):  # (a float or a str from a config file; True would be 1)
        with pytest.raises(ValueError, match=rf"image_size must be a multiple of 4 from 16 to 512 .*got {size!r}$"):
            load_dataset("folder", "train", data_dir=tmp_path, image_size=size)
    assert load_dataset("folder", "test", data_dir=tmp_path, image_size=np.int64(16)).images.shape[-1] == 16


def test_image_files_named_with_superscript_or_circled_digits_are_ordered(tmp_path):
    names = ("①2.png", "2²1.png", "10.png", "2.png", "١١.png")  # ² and ① are digits to str.isdigit, not to int()
    for name in names:
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / name)
    assert [p.name for p in data.image_files([tmp_path])] == ["2.png", "2²1.png", "10.png", "١١.png", "①2.png"]


def test_image_folder_names_of_bytes_that_are_no_utf8_read_as_escapes(tmp_path):
    """A class folder or image named in Latin-1 (unzipped from an old archive): its name as a class and as a masked
    image's is printable and writable (a surrogate, '\\udce9', crashed matplotlib and any UTF-8 file or stream)."""
    cafe, image = os.fsdecode(b"caf\xe9"), os.fsdecode(b"\xff0")
    for split in ("train", "test"):
        for name in (cafe, "tea"):
            (tmp_path / split / name).mkdir(parents=True)
            Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / split / name / f"{image}.png")
    mask = np.zeros((8, 8), np.uint8)
    mask[:4] = 255
    Image.fromarray(mask).save(tmp_path / "test" / cafe / f"{image}_mask.png")
    train = data.load_image_folder(tmp_path, "train", 16)
    assert train.classes == ["caf\\xe9", "tea"] and sorted(train.labels.tolist()) == [0, 1]
    assert data.image_folder_split(tmp_path, "test")[1] == train.classes
    test = data.load_image_folder(tmp_path, "test", 16)
    masked = data.load_image_folder_masks(tmp_path, 16, test)
    assert masked.names == ["caf\\xe9/\\xff0"] and masked.classes == train.classes and masked.masks[0, :8].all()


def test_image_folder_class_of_photos_in_other_formats_says_which_it_holds(tmp_path):
    write_image_folder(tmp_path)
    phone = tmp_path / "train" / "c_emu"
    (phone / "day2").mkdir(parents=True)
    for name in ("IMG_1.HEIC", "day2/IMG_2.heic", "saved.jfif", ".DS_Store"):  # an iPhone's, a browser's, macOS's
        (phone / name).write_bytes(b"a photo Pillow does not read")
    with pytest.raises(ValueError, match=r"training classes \['c_emu'\] hold no images in \S+ \(of \.png, .*\.pgm; "
                                         r"they hold \.heic, \.jfif files, not read: convert images of other formats "
                                         r"to one of these\)$"):
        data.load_image_folder(tmp_path, "train", 16)


def test_image_folder_of_splits_named_otherwise_names_them(tmp_path):
    write_image_folder(tmp_path)
    (tmp_path / "test").rename(tmp_path / "Testing")  # as some downloaded datasets name them
    (tmp_path / "val").mkdir()
    with pytest.raises(FileNotFoundError, match=rf"^{re.escape(str(tmp_path / 'test'))} not found: put your images "
                                                rf"in .*; {re.escape(str(tmp_path))} holds the folders 'Testing', "
                                                r"'train', 'val': the splits must be named train and test$"):
        data.load_image_folder(tmp_path, "test", 16)
    shutil.rmtree(tmp_path)
    tmp_path.mkdir()  # an empty folder: nothing to name
    with pytest.raises(FileNotFoundError, match=r"\(torchvision's ImageFolder layout\)$"):
        data.load_image_folder(tmp_path, "train", 16)


# ---------------------------------------------------------------- mutation-testing gaps

def test_image_dataset_labels_of_any_integer_dtype_become_int64():
    # uint8 labels (idx files, numpy) index and compare as int64: cross-entropy wants long targets
    images = torch.zeros(3, 1, 2, 2, dtype=torch.uint8)
    for labels in (np.array([2, 0, 1], np.uint8), np.array([2, 0, 1], np.int32),
                   torch.tensor([2, 0, 1], dtype=torch.int16)):
        ds = ImageDataset(images, labels, ["a", "b", "c"], "toy")
        assert ds.labels.dtype == torch.int64 and ds.labels.tolist() == [2, 0, 1]


def test_masked_images_subset_keeps_each_image_with_its_label_mask_and_name():
    # every field is picked at the same indices, in the order asked (not the first len(index) of any of them)
    images = torch.arange(4, dtype=torch.uint8).reshape(4, 1, 1, 1).expand(4, 1, 2, 2).contiguous()
    masks = torch.zeros(4, 2, 2, dtype=torch.bool)
    for i in range(4):
        masks[i].view(-1)[i] = True  # image i: pixel i is object
    masked = data.MaskedImages(images, [0, 1, 2, 3], list("abcd"), "toy", masks=masks, names=["w", "x", "y", "z"])
    for index, kept in ((torch.tensor([3, 1]), [3, 1]), (torch.tensor([False, True, False, True]), [1, 3]),
                        (slice(2, 4), [2, 3])):
        sub = masked.subset(index)
        assert sub.images[:, 0, 0, 0].tolist() == kept and sub.labels.tolist() == kept
        assert [int(m.view(-1).nonzero()) for m in sub.masks] == kept and sub.names == [masked.names[i] for i in kept]
    with pytest.raises(ValueError, match="masks must be bool"):  # 0/255 masks would count every pixel as object
        data.MaskedImages(images, [0, 1, 2, 3], list("abcd"), "toy", masks=masks.to(torch.uint8) * 255,
                          names=["w", "x", "y", "z"])


def test_to_uint8_clips_inputs_outside_minus_one_to_one():
    # -1.5 would wrap to 192 and 3.0 to 126 in uint8 without the clipping
    assert to_uint8(torch.tensor([-1.5, -1.0, 1.0, 1.2, 3.0])).tolist() == [0, 0, 255, 255, 255]


def test_cifar10_train_split_is_the_five_batches_in_order(tmp_path):
    # data_batch_1 .. data_batch_5 concatenated in that order, each image with its own label
    batches = cifar_archive(tmp_path / "cifar-10-python.tar.gz", n=3)
    train = load_cifar10("train", data_dir=tmp_path)
    order = [f"data_batch_{i}" for i in range(1, 6)]
    assert np.array_equal(train.images.reshape(15, 3072).numpy(), np.concatenate([batches[m][b"data"] for m in order]))
    assert train.labels.tolist() == [label for m in order for label in batches[m][b"labels"]]


def test_cifar10_a_folder_named_as_the_archive_is_no_archive(tmp_path):
    (tmp_path / "cifar-10-python.tar.gz").mkdir()
    with pytest.raises(IsADirectoryError, match="is a folder, where the archive cifar-10-python.tar.gz should be"):
        load_cifar10("test", data_dir=tmp_path)


def test_masked_images_are_turned_upright_as_their_exif_says(tmp_path):
    # a JPEG stored 8 wide x 16 high with orientation 6 (turned a quarter) shows 16 wide x 8 high, as its mask is
    pixels = np.zeros((16, 8, 3), np.uint8)
    pixels[:, :4] = 255  # stored: left half white
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6
    image.save(tmp_path / "dog_1.jpg", exif=exif, quality=95)
    write_jpg(tmp_path / "dog_1_mask.jpg", np.full((8, 16), 255, np.uint8))
    with pytest.warns(UserWarning, match="mark every pixel as object"):
        masked = load_masked_images(tmp_path)
    with Image.open(tmp_path / "dog_1.jpg") as stored:
        expected = np.asarray(data.upright(stored).convert("RGB"))[..., ::-1]
    assert masked.images.shape == (1, 3, 8, 16)
    assert torch.equal(masked.images[0], torch.from_numpy(expected.copy()).permute(2, 0, 1))


def test_folder_masks_are_zero_one_only_when_every_value_is_0_or_1():
    # 0/1 masks: 1 is object; a mask of 0 and 2 is a 0-255 mask whose pixels are all below 128: background
    raw = torch.tensor([[[0, 1], [1, 0]], [[0, 2], [2, 0]], [[0, 128], [127, 255]]], dtype=torch.uint8)
    assert data.folder_mask_objects(raw).tolist() == [[[False, True], [True, False]], [[False, False], [False, False]],
                                                      [[False, True], [False, True]]]


def test_mask_objects_reads_one_mask_file_upright_at_its_own_size(tmp_path):
    from PIL import Image

    pixels = np.array([[0, 255, 127], [128, 0, 0]], np.uint8)
    Image.fromarray(pixels).save(tmp_path / "white.png")
    Image.fromarray((pixels > 0).astype(np.uint16)).save(tmp_path / "zero_one.png")  # 16-bit 0/1: ones are object
    sideways = Image.fromarray(pixels.T.copy())
    exif = sideways.getexif()
    exif[0x0112] = 6  # stored a quarter turn off: turned clockwise to show
    sideways.save(tmp_path / "turned.jpg", exif=exif, quality=100)
    assert data.mask_objects(tmp_path / "white.png").tolist() == [[False, True, False], [True, False, False]]
    assert data.mask_objects(tmp_path / "zero_one.png").tolist() == [[False, True, True], [True, False, False]]
    assert data.mask_objects(tmp_path / "turned.jpg").shape == pixels.shape
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="broken.png is not a readable image"):
        data.mask_objects(tmp_path / "broken.png")


def test_a_sixteen_bit_zero_one_mask_marks_its_ones_as_object(tmp_path):
    write_image_folder(tmp_path)
    zero_one = np.zeros((20, 24), np.uint16)
    zero_one[:, :12] = 1  # the left half
    Image.fromarray(zero_one).save(tmp_path / "test" / "a_cat" / "img0_mask.png")  # mode I;16
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not "mark no object pixel"
        masked = data.load_image_folder_masks(tmp_path, 16)
    mask = masked.masks[masked.names.index("a_cat/img0")]
    assert mask[:, :8].all() and not mask[:, 8:].any()


def test_a_sixteen_bit_mask_is_white_on_the_object(tmp_path):
    # a 16-bit mask of 0 and 65535 (white at 16 bits): the object where it is white, as an 8-bit 0/255 mask
    write_image_folder(tmp_path)
    deep = np.zeros((20, 24), np.uint16)
    deep[:, :12] = 65535
    Image.fromarray(deep).save(tmp_path / "test" / "a_cat" / "img0_mask.png")
    masked = data.load_image_folder_masks(tmp_path, 16)
    mask = masked.masks[masked.names.index("a_cat/img0")]
    assert mask[:, :8].all() and not mask[:, 8:].any()


def test_a_mask_whose_object_vanishes_at_the_image_size_is_said_to(tmp_path):
    write_image_folder(tmp_path, sizes=((64, 64), (40, 40)))
    thin = np.zeros((64, 64), np.uint8)
    thin[3, :] = 255  # a 1-pixel line: 64 white pixels, none of them on the rows nearest-neighbour keeps at 16
    Image.fromarray(thin).save(tmp_path / "test" / "a_cat" / "img0_mask.png")
    with pytest.warns(UserWarning) as caught:
        masked = data.load_image_folder_masks(tmp_path, 16)
    assert not masked.masks[masked.names.index("a_cat/img0")].any()  # (what the warning is about)
    about = [str(w.message) for w in caught if "a_cat/img0" in str(w.message)]
    assert about and all(re.search(r"resiz|image.size", m, re.IGNORECASE) for m in about), about


def test_masks_losing_their_background_in_the_resize_are_told_from_masks_without_any(tmp_path):
    # a thin background line vanishes at 16 pixels (every pixel object): said so, apart from a mask marking nothing
    write_image_folder(tmp_path, sizes=((64, 64), (40, 40)))
    thin = np.full((64, 64), 255, np.uint8)
    thin[3, :] = 0
    Image.fromarray(thin).save(tmp_path / "test" / "a_cat" / "img0_mask.png")
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(tmp_path / "test" / "b_dog" / "img0_mask.png")
    with pytest.warns(UserWarning) as caught:
        masked = data.load_image_folder_masks(tmp_path, 16)
    assert masked.masks[masked.names.index("a_cat/img0")].all()
    assert sorted(str(w.message) for w in caught) == [
        "the masks of 1 image(s) (a_cat/img0) mark a background too thin or small to survive when resized to 16x16 "
        "pixels (nearest neighbour; a larger --image-size keeps it): every pixel counts as object there",
        "the masks of 1 image(s) (b_dog/img0) mark no object pixel (white, or 1 in a 0/1 mask): every pixel counts "
        "as background there"]


def test_image_folder_order_is_a_seed_0_permutation_of_the_class_ordered_files(tmp_path):
    # the documented order: files of class 0, then class 1 ..., shuffled by torch.randperm seeded with 0
    write_image_folder(tmp_path)
    files = data.image_folder_split(tmp_path, "train")[0]
    by_class = sorted(files, key=lambda f: (f[1], f[0]))
    order = torch.randperm(len(files), generator=torch.Generator().manual_seed(0)).tolist()
    assert files == [by_class[i] for i in order]


def test_image_files_in_a_folder_come_in_natural_order_ignoring_case(tmp_path):
    for name in ("10.png", "2.png", "B.png", "a.png", "img10.png", "IMG9.png"):
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / name)
    assert [p.name for p in data.image_files([tmp_path])] == ["2.png", "10.png", "a.png", "B.png", "IMG9.png",
                                                              "img10.png"]


def test_16_bit_pgm_keeps_its_top_byte(tmp_path):
    # Pillow opens a 16-bit PGM as mode I (0-65535): its top byte is the 8-bit value, no clipping to 255
    (tmp_path / "deep.pgm").write_bytes(b"P5\n3 1\n65535\n" + np.array([0x1234, 0xff00, 0x00ff], ">u2").tobytes())
    with Image.open(tmp_path / "deep.pgm") as image:
        assert image.mode == "I" and np.asarray(data.eight_bit(image)).tolist() == [[0x12, 0xff, 0x00]]


@pytest.mark.parametrize("mode", ["LA", "RGBA", "P"])
def test_image_folder_transparent_pixels_read_white(tmp_path, mode):
    # a transparent pixel (alpha 0, or a transparent palette entry) is white, as on a page; an opaque one keeps
    # its value
    write_image_folder(tmp_path, masks=False)
    if mode == "P":
        image = Image.fromarray(np.repeat(np.array([[0] * 8 + [1] * 8], np.uint8), 16, 0), "P")
        image.putpalette([30, 30, 30, 90, 90, 90])
        extra = {"transparency": 0}
    else:
        grey = np.zeros((16, 16, 2), np.uint8)
        grey[:, :8], grey[:, 8:] = (30, 0), (90, 255)  # left half: dark grey, fully transparent
        image, extra = Image.fromarray(grey, "LA").convert(mode), {}
    image.save(tmp_path / "test" / "a_cat" / "img0.png", **extra)
    for name in ("img0.jpg", "img1.png"):
        (tmp_path / "test" / "a_cat" / name).unlink()
    test = data.load_image_folder(tmp_path, "test", 16)
    cat = test.images[test.labels == 0][0]
    assert cat.shape[0] == 3 and (cat[:, :, :8] == 255).all() and (cat[:, :, 8:] == 90).all()


def test_image_folder_mask_alpha_is_dropped_not_laid_over_white(tmp_path):
    # an RGBA mask, object opaque white, background transparent black: the background stays background
    write_image_folder(tmp_path)
    mask = np.zeros((20, 24, 4), np.uint8)
    mask[:, :12] = 255
    Image.fromarray(mask, "RGBA").save(tmp_path / "test" / "a_cat" / "img0_mask.png")
    masked = data.load_image_folder_masks(tmp_path, 16)
    cat = masked.masks[masked.names.index("a_cat/img0")]
    assert cat[:, :8].all() and not cat[:, 8:].any()


def test_image_folder_masks_of_a_grayscale_test_split_given_loaded(tmp_path):
    # the loaded grayscale split's one channel is the mode the masked images are read in
    write_image_folder(tmp_path, grayscale=True)
    test = data.load_image_folder(tmp_path, "test", 16)
    reused = data.load_image_folder_masks(tmp_path, 16, test)
    assert reused.images.shape == (2, 1, 16, 16)
    assert torch.equal(reused.images, data.load_image_folder_masks(tmp_path, 16).images)


def test_random_patch_defaults_and_draw_are_the_papers_10_pixels_seed_100():
    # the paper's patch: 10x10, seed 100; drawn channel by channel, row by row, as one randint of (C, size, size)
    patch = RandomPatch()
    assert (patch.size, patch.seed) == (10, 100)
    expected = torch.randint(0, 256, (3, 10, 10), generator=torch.Generator().manual_seed(100), dtype=torch.uint8)
    assert torch.equal(patch.patch(3), expected)
    assert torch.equal(patch(torch.zeros(1, 3, 12, 12, dtype=torch.uint8))[0, :, :10, :10], expected)


def test_class_names_are_in_the_official_label_order():
    # label i is class i of the datasets' own documentation (Fashion-MNIST's README, CIFAR-10's batches.meta)
    assert data.FASHION_MNIST_CLASSES == ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                                          "Sneaker", "Bag", "Ankle boot"]
    assert CIFAR10_CLASSES == ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def test_image_dataset_needs_one_label_per_image():
    images = torch.zeros(2, 1, 3, 3, dtype=torch.uint8)
    for labels, shown in (([0, 1, 0], r"\(3,\)"), ([0], r"\(1,\)"), ([[0, 1]], r"\(1, 2\)")):
        with pytest.raises(ValueError, match=rf"labels must have shape \(2,\), got {shown}"):
            ImageDataset(images, labels, ["a", "b"], "bad")


def test_checksum_of_non_contiguous_images_is_that_of_their_contiguous_copy():
    # images permuted from channels-last (a view) hash as their values, in (N, C, H, W) order
    last = torch.arange(24, dtype=torch.uint8).reshape(2, 2, 2, 3)
    view = ImageDataset(last.permute(0, 3, 1, 2), [0, 1], ["a", "b"], "toy")
    assert not view.images.is_contiguous()
    assert data.checksum(view) == data.checksum(replace(view, images=view.images.contiguous()))


def test_image_folder_mask_of_an_image_named_in_upper_case(tmp_path):
    # the stem before _mask is the image's, in its own case: IMG0_mask.png is the mask of IMG0.jpg
    write_image_folder(tmp_path)
    cat = tmp_path / "test" / "a_cat"
    (cat / "img0.jpg").rename(cat / "IMG0.jpg")
    (cat / "img0_mask.png").rename(cat / "IMG0_mask.png")
    assert sorted(data.load_image_folder_masks(tmp_path, 16).names) == ["a_cat/IMG0", "b_dog/img0"]


def test_unique_names_lengthen_only_the_names_that_clash():
    # a/x/1 and b/x/1 need two folders each; 2 is alone and keeps its stem
    files = [Path("/d/a/x/1.png"), Path("/d/b/x/1.png"), Path("/d/c/2.png")]
    assert data.unique_names(files) == ["a/x/1", "b/x/1", "2"]


def test_image_folder_takes_image_suffixes_in_any_case(tmp_path):
    # a camera's IMG_0001.JPG is an image like img0.jpg, not a file to skip
    write_image_folder(tmp_path)
    (tmp_path / "train" / "a_cat" / "img0.jpg").rename(tmp_path / "train" / "a_cat" / "IMG0.JPG")
    (tmp_path / "train" / "b_dog" / "img1.png").rename(tmp_path / "train" / "b_dog" / "img1.PNG")
    assert data.load_image_folder(tmp_path, "train", 16).labels.bincount().tolist() == [2, 2]


def test_image_folder_16_bit_png_with_a_transparent_grey_level_reads_white_there(tmp_path):
    # the transparent grey level (0 here) becomes alpha 0, laid over white; 40000 keeps its top byte, 156
    write_image_folder(tmp_path, grayscale=True, masks=False)
    deep = np.zeros((16, 16), np.uint16)
    deep[:, 8:] = 40000
    Image.fromarray(deep).save(tmp_path / "test" / "a_cat" / "img0.png", transparency=0)
    for name in ("img0.jpg", "img1.png"):
        (tmp_path / "test" / "a_cat" / name).unlink()
    test = data.load_image_folder(tmp_path, "test", 16)
    cat = test.images[test.labels == 0][0, 0]
    assert (cat[:, :8] == 255).all() and (cat[:, 8:] == 40000 >> 8).all()


@pytest.mark.parametrize("suffix", [".jpeg", ".JPG"])
def test_masked_images_download_takes_jpeg_files_too(tmp_path, monkeypatch, suffix):
    # load_masked_images reads <class>_<n>.jpeg and .JPG: the download unpacks them as well
    archive = masks_archive(suffix=suffix)
    monkeypatch.setattr(data.urllib.request, "urlopen", fake_server({"CIFAR10_mask.tar": archive}))
    folder = data.masked_images_folder(tmp_path / "masks", download=True)
    assert load_masked_images(folder).labels.tolist() == list(range(10))


# ---------------------------------------------------------------- mutation-testing gaps, second round

def test_image_dataset_refuses_bool_labels():
    # a bool mask given as labels (True = 1) is a mistake, not two classes
    with pytest.raises(ValueError, match="labels must be integer class indices, got torch.bool"):
        ImageDataset(torch.zeros(2, 1, 2, 2, dtype=torch.uint8), torch.tensor([True, False]), ["a", "b"], "bad")


def test_an_empty_dataset_is_taken(tmp_path):
    # no images (an idx file of 0 images, say) has no label range to check: 0 images, 0 labels
    empty = ImageDataset(torch.zeros(0, 1, 28, 28, dtype=torch.uint8), torch.zeros(0, dtype=torch.int64), ["a"], "e")
    assert len(empty) == 0 and empty.inputs().shape == (0, 1, 28, 28)
    (image_file, _), (label_file, _) = data.FASHION_MNIST_FILES["test"]
    (tmp_path / image_file).write_bytes(gzip.compress(idx_bytes(np.zeros((0, 28, 28), np.uint8))))
    (tmp_path / label_file).write_bytes(gzip.compress(idx_bytes(np.zeros(0, np.uint8))))
    assert load_fashion_mnist("test", data_dir=tmp_path).images.shape == (0, 1, 28, 28)


def test_image_dataset_inputs_go_to_the_device_asked_for():
    # ("meta": a device every machine has, holding shapes only)
    ds = ImageDataset(torch.zeros(2, 1, 2, 2, dtype=torch.uint8), [0, 1], ["a", "b"], "toy")
    x = ds.inputs(device="meta")
    assert x.device.type == "meta" and x.shape == (2, 1, 2, 2) and x.dtype == torch.float32
    assert ds.inputs(slice(1, 2), device="meta").shape == (1, 1, 2, 2)


def test_masked_images_need_one_name_per_image():
    images, masks = torch.zeros(2, 1, 2, 2, dtype=torch.uint8), torch.zeros(2, 2, 2, dtype=torch.bool)
    for names in (["x"], ["x", "y", "z"]):
        with pytest.raises(ValueError, match=f"with 2 names, got torch.bool \\(2, 2, 2\\) and {len(names)} names"):
            data.MaskedImages(images, [0, 1], ["a", "b"], "toy", masks=masks, names=names)


def test_masked_images_subset_of_one_index_keeps_one_image():
    # an int picks one image, kept as a dataset of one (N = 1), with its own label, mask and name
    images = torch.arange(3, dtype=torch.uint8).reshape(3, 1, 1, 1)
    masks = torch.tensor([False, True, False]).reshape(3, 1, 1)
    masked = data.MaskedImages(images, [0, 1, 0], ["a", "b"], "toy", masks=masks, names=["x", "y", "z"])
    one = masked.subset(1)
    assert one.images.shape == (1, 1, 1, 1) and one.images.item() == 1 and one.labels.tolist() == [1]
    assert one.masks.tolist() == [[[True]]] and one.names == ["y"]


def test_checksum_with_masks_of_datasets_without_masks_is_their_plain_checksum():
    # masks=True hashes the masks of MaskedImages only: a plain dataset has none to add
    plain = ImageDataset(torch.arange(8, dtype=torch.uint8).reshape(2, 1, 2, 2), [0, 1], ["a", "b"], "toy")
    assert data.checksum(plain, masks=True) == data.checksum(plain)


def test_load_dataset_passes_download_and_the_folder_options_on(tmp_path, monkeypatch):
    # load_dataset(..., download=True) downloads as load_fashion_mnist(..., download=True) does
    source = tmp_path / "source"
    images, labels = write_fashion(source, "test", n=3)
    files = {p.name: p.read_bytes() for p in source.iterdir()}
    monkeypatch.setattr(data.urllib.request, "urlopen", fake_server(files))
    monkeypatch.setitem(data.FASHION_MNIST_FILES, "test", tuple((name, hashlib.md5(files[name]).hexdigest())
                                                                for name, _ in data.FASHION_MNIST_FILES["test"]))
    ds = load_dataset("fashion-mnist", "test", download=True)
    assert torch.equal(ds.images[:, 0], torch.from_numpy(images)) and ds.labels.tolist() == labels.tolist()
    calls = []
    monkeypatch.setattr(data, "load_image_folder", lambda *args, **kwargs: calls.append((args, kwargs)))
    load_dataset("folder", "test", data_dir=tmp_path, image_size=48, progress=True)
    assert calls == [((tmp_path, "test", 48), {"progress": True})]


def test_fashion_mnist_found_is_not_downloaded_again(tmp_path, monkeypatch):
    # download=True fetches missing files only: files in the system folder are read, offline, and nothing is written
    images, _ = write_fashion(tmp_path / "system", "test", n=3)
    monkeypatch.setattr(data, "FASHION_MNIST_SYSTEM_DIR", tmp_path / "system")
    monkeypatch.setattr(data.urllib.request, "urlopen", fake_server({}))
    ds = load_fashion_mnist("test", download=True)
    assert torch.equal(ds.images[:, 0], torch.from_numpy(images)) and not (tmp_path / "cache").exists()


def test_fashion_mnist_with_more_labels_than_images_is_refused(tmp_path):
    write_fashion(tmp_path, n=12)
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.zeros(13, np.uint8))))
    with pytest.raises(ValueError, match="12 images but .* 13 labels"):
        load_fashion_mnist("train", data_dir=tmp_path)


def test_fashion_mnist_gzipped_file_is_read_before_an_unpacked_twin(tmp_path):
    # both name.gz and name there: the .gz, as documented, whatever the unpacked one holds
    images, labels = write_fashion(tmp_path, "test", n=4, seed=1)
    other = tmp_path / "other"
    write_fashion(other, "test", n=4, seed=2)
    for packed in other.iterdir():
        (tmp_path / packed.name).with_suffix("").write_bytes(gzip.decompress(packed.read_bytes()))
    ds = load_fashion_mnist("test", data_dir=tmp_path)
    assert torch.equal(ds.images[:, 0], torch.from_numpy(images)) and ds.labels.tolist() == labels.tolist()


def test_idx_file_with_bytes_after_its_data_is_refused(tmp_path):
    # a longer file than the header says is as wrong as a shorter one (another file appended, a wrong header)
    path = tmp_path / "long-idx1-ubyte"
    path.write_bytes(idx_bytes(np.arange(5, dtype=np.uint8)) + b"\x00")
    with pytest.raises(ValueError, match=r"wrong size, the header says 5 \(13 bytes\) but the file holds 14 bytes"):
        read_idx(path, ndim=1)


def test_idx_dimensions_keep_their_order(tmp_path):
    # (n, rows, columns) as the header lists them: a non-square image is not read transposed
    array = np.arange(2 * 3 * 5, dtype=np.uint8).reshape(2, 3, 5)
    path = tmp_path / "x-idx3-ubyte"
    path.write_bytes(idx_bytes(array))
    assert torch.equal(read_idx(path, ndim=3), torch.from_numpy(array))


def test_cifar10_batch_of_one_dimensional_data_is_refused_by_name(tmp_path):
    cifar_archive(tmp_path / "cifar-10-python.tar.gz", batch={b"data": np.zeros(3072, np.uint8), b"labels": [0]})
    with pytest.raises(ValueError, match=r"test_batch has data of shape \(3072,\) and 1 labels, expected \(n, 3072\)"):
        load_cifar10("test", data_dir=tmp_path)


def test_masked_images_download_skips_a_folder_entry_named_as_an_image(tmp_path, monkeypatch):
    # only regular files are unpacked: a directory entry cat_1.jpg (no content) is no image
    buffer = io.BytesIO(masks_archive())
    with tarfile.open(fileobj=buffer, mode="a") as tar:
        folder = tarfile.TarInfo("CIFAR10_mask/extra/cat_7.jpg")
        folder.type = tarfile.DIRTYPE
        tar.addfile(folder)
    monkeypatch.setattr(data.urllib.request, "urlopen", fake_server({"CIFAR10_mask.tar": buffer.getvalue()}))
    folder = data.masked_images_folder(tmp_path / "masks", download=True)
    assert "cat_7.jpg" not in [p.name for p in folder.iterdir()]
    assert load_masked_images(folder).labels.tolist() == list(range(10))


def test_masks_beside_an_image_given_twice_is_its_mask(tmp_path):
    # one file named twice (explain's arguments, say) is one image, not two images sharing a stem
    image, mask = tmp_path / "0.png", tmp_path / "0_mask.png"
    for path in (image, mask):
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(path)
    assert data.masks_beside([image, image]) == {image: mask}


def test_image_folder_a_folder_named_as_an_image_is_a_subfolder(tmp_path):
    # a folder day.png/ is searched for images as any subfolder, not read as an image itself
    write_image_folder(tmp_path, masks=False)
    sub = tmp_path / "train" / "a_cat" / "day.png"
    sub.mkdir()
    Image.fromarray(np.full((16, 16, 3), 90, np.uint8)).save(sub / "x.png")
    files = data.image_folder_split(tmp_path, "train")[0]
    assert sorted(p.relative_to(tmp_path).as_posix() for p, label in files if label == 0) == [
        "train/a_cat/day.png/x.png", "train/a_cat/img0.jpg", "train/a_cat/img1.png"]
    assert data.load_image_folder(tmp_path, "train", 16).labels.bincount().tolist() == [3, 2]


def test_a_mask_is_an_image_file_named_mask(tmp_path):
    # img_mask.txt (notes on a mask, say) is no mask of img.png: only <stem>_mask.<image suffix> is
    image = tmp_path / "img.png"
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(image)
    (tmp_path / "img_mask.txt").write_text("the object is the cat")
    assert data.masks_beside([image]) == {}
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "img_mask.PNG")
    assert data.masks_beside([image]) == {image: tmp_path / "img_mask.PNG"}


def test_image_folder_files_are_each_folder_then_its_sorted_subfolders_before_the_shuffle(tmp_path):
    # the documented order before the seed-0 shuffle: class by class; in a class, its folder's own images, then each
    # subfolder (sorted by name) with its own subfolders, depth first; made here in an unsorted creation order
    write_image_folder(tmp_path, masks=False)
    cat = tmp_path / "train" / "a_cat"
    for name in ("s5", "s1", "s7", "s0", "s3", "s6", "s2", "s4", "s1/z", "s1/b"):
        (cat / name).mkdir()
        Image.fromarray(np.full((16, 16, 3), 90, np.uint8)).save(cat / name / "x.png")
    in_order = [cat / "img0.jpg", cat / "img1.png"]
    for name in ("s0", "s1", "s1/b", "s1/z", "s2", "s3", "s4", "s5", "s6", "s7"):
        in_order.append(cat / name / "x.png")
    dog = tmp_path / "train" / "b_dog"
    unshuffled = [(p, 0) for p in in_order] + [(dog / "img0.jpg", 1), (dog / "img1.png", 1)]
    order = torch.randperm(len(unshuffled), generator=torch.Generator().manual_seed(0)).tolist()
    assert data.image_folder_split(tmp_path, "train")[0] == [unshuffled[i] for i in order]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
def test_image_files_refuse_a_named_pipe(tmp_path):
    # a pipe is no image file: said by name, not read (which would wait for a writer)
    os.mkfifo(tmp_path / "pipe.png")
    with pytest.raises(ValueError, match="pipe.png is no regular file"):
        data.image_files([tmp_path / "pipe.png"])


def test_unique_names_of_files_differing_only_in_their_extension_are_their_whole_paths():
    # /d/a.png and /d/a.jpg: the whole paths without extension clash, so they keep it
    import threading

    names = []
    worker = threading.Thread(target=lambda: names.append(data.unique_names([Path("/d/a.png"), Path("/d/a.jpg")])),
                              daemon=True)
    worker.start()
    worker.join(5)
    assert names == [["/d/a.png", "/d/a.jpg"]]


def test_unique_names_with_suffixes_a_file_given_twice_and_depths_per_file(tmp_path):
    # suffix=True names keep the extension; one file spelt two ways is one name; a depth per file
    assert data.unique_names([Path("/d/x/1.png"), Path("/d/y/2.png")], suffix=True) == ["1.png", "2.png"]
    (tmp_path / "x").mkdir()
    file = tmp_path / "x" / "1.png"
    file.write_bytes(b"")
    assert data.unique_names([file, tmp_path / "x" / ".." / "x" / "1.png"]) == ["1", "1"]
    assert data.unique_names([Path("/d/x/1.png"), Path("/d/y/2.png")], depth=[2, 1]) == ["x/1", "2"]


def test_32_bit_integer_tiff_is_refused_not_clipped(tmp_path):
    # mode I from a TIFF holds any int32: no top byte to keep, and clipping to 0..255 would hide the range
    Image.fromarray(np.array([[70000, -5]], np.int32)).save(tmp_path / "deep.tif")
    with Image.open(tmp_path / "deep.tif") as image:
        assert (image.mode, image.format) == ("I", "TIFF")
        with pytest.raises(ValueError, match=r"deep.tif: 32-bit integer or floating-point pixels \(mode I\)"):
            data.eight_bit(image, tmp_path / "deep.tif")


def test_on_white_lays_a_palette_image_with_alpha_over_white():
    # mode PA: a palette colour and an alpha per pixel; alpha 0 shows white, alpha 255 its palette colour
    image = Image.new("PA", (2, 1))
    image.putpalette([30, 30, 30, 90, 90, 90])
    image.putpixel((0, 0), (0, 0))
    image.putpixel((1, 0), (1, 255))
    assert np.asarray(data.on_white(image).convert("RGB")).tolist() == [[[255, 255, 255], [90, 90, 90]]]


def test_random_patch_refuses_images_that_are_not_a_batch():
    # one (C, H, W) image is refused by name, as a uint8 batch is what the patch is pasted on
    with pytest.raises(ValueError, match=r"images must be uint8 \(N, C, H, W\), got torch.uint8 \(3, 16, 16\)"):
        RandomPatch()(torch.zeros(3, 16, 16, dtype=torch.uint8))


@pytest.mark.parametrize("height, width", [(8, 16), (16, 8)])
def test_random_patch_refuses_images_too_small_either_way(height, width):
    # the 10-pixel patch needs 10 rows and 10 columns: an image too short or too narrow is refused by name
    with pytest.raises(ValueError, match=rf"images of \({height}, {width}\) are smaller than the 10-pixel patch"):
        RandomPatch()(torch.zeros(1, 1, height, width, dtype=torch.uint8))


def test_random_patch_on_non_square_images_and_its_regions_there():
    # rows 0..9 and columns 0..9 of a 12 x 20 image, whatever its shape; the regions are (H, W) masks of that corner
    images = torch.zeros(2, 3, 12, 20, dtype=torch.uint8)
    patch = RandomPatch()
    out = patch(images)
    region, visible = patch.region(12, 20), patch.visible_region(12, 20)
    assert region.shape == visible.shape == (12, 20)
    rows, columns = torch.arange(12)[:, None], torch.arange(20)[None, :]
    assert torch.equal(region, (rows < 10) & (columns < 10)) and torch.equal(visible, (rows < 8) & (columns < 8))
    assert torch.equal(out[:, :, region], patch.patch(3)[None].expand(2, 3, 10, 10).reshape(2, 3, 100))
    assert not out[:, :, ~region].any()


def test_image_files_of_a_folder_of_photos_in_other_formats_says_which_it_holds(tmp_path):
    for name in ("IMG_1.HEIC", "IMG_2.heic", "._IMG_1.HEIC"):  # an iPhone's photos, with macOS's resource fork
        (tmp_path / name).write_bytes(b"a photo Pillow does not read")
    with pytest.raises(ValueError, match=rf"^no image files \(\.png, .*\.pgm\) in folder {re.escape(str(tmp_path))}; "
                                         r"it holds \.heic files, not read: convert images of other formats to one "
                                         r"of these$"):
        data.image_files([tmp_path])


def test_image_files_of_nothing_is_an_error():
    with pytest.raises(ValueError, match="no images given"):
        data.image_files([])


def test_image_folder_16_bit_pgm_keeps_its_top_byte(tmp_path):
    # read through upright (a copy, which has no format of its own): a 16-bit PGM is still known as one, its
    # top byte kept, not refused as 32-bit
    write_image_folder(tmp_path, grayscale=True, masks=False)
    for name in ("img0.jpg", "img1.png"):
        (tmp_path / "test" / "a_cat" / name).unlink()
    deep = np.full((16, 16), 0x9abc, ">u2")
    (tmp_path / "test" / "a_cat" / "deep.pgm").write_bytes(b"P5\n16 16\n65535\n" + deep.tobytes())
    test = data.load_image_folder(tmp_path, "test", 16)
    assert (test.images[test.labels == 0] == 0x9a).all()


def test_idx_gzip_with_a_corrupt_deflate_stream_is_named(tmp_path):
    # a gzip header with garbage after it fails in zlib (not gzip's own checks): still one ValueError naming the file
    packed = bytearray(gzip.compress(idx_bytes(np.zeros((2, 28, 28), np.uint8))))
    packed[10:14] = b"\xff\xff\xff\xff"  # the first deflate block: an invalid block type
    path = tmp_path / "bad-idx3-ubyte.gz"
    path.write_bytes(bytes(packed))
    with pytest.raises(ValueError, match=f"{path} is not a valid gzip file .*invalid block type"):
        read_idx(path, ndim=3)


def test_masked_images_refuse_masks_of_the_images_turned_a_quarter():
    # (N, W, H) masks of (N, C, H, W) images: as many pixels, in the wrong shape
    images = torch.zeros(2, 1, 2, 3, dtype=torch.uint8)
    with pytest.raises(ValueError, match=r"masks must be bool \(2, 2, 3\) with 2 names, got torch.bool \(2, 3, 2\)"):
        data.MaskedImages(images, [0, 1], ["a", "b"], "toy", masks=torch.zeros(2, 3, 2, dtype=torch.bool),
                          names=["x", "y"])


def test_image_files_of_every_documented_suffix_are_images(tmp_path):
    # the formats the folder dataset names (its error messages list them): none skipped in silence
    suffixes = [".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"]
    for i, suffix in enumerate(suffixes):
        mode = "L" if suffix == ".pgm" else "RGB"
        Image.new(mode, (4, 4)).save(tmp_path / f"{i}{suffix}")
    assert [p.name for p in data.image_files([tmp_path])] == [f"{i}{s}" for i, s in enumerate(suffixes)]


def test_image_folder_of_grey_images_with_alpha_is_grayscale(tmp_path):
    # LA images (grey + alpha) are grey: one channel, transparent pixels white as on a page
    write_image_folder(tmp_path, masks=False)
    for path in (tmp_path / "train").rglob("img*"):
        grey = np.zeros((16, 16, 2), np.uint8)
        grey[:, :8], grey[:, 8:] = (30, 0), (90, 255)
        path.unlink()
        Image.fromarray(grey, "LA").save(path.with_suffix(".png"))
    train = data.load_image_folder(tmp_path, "train", 16)
    assert train.images.shape == (4, 1, 16, 16)
    assert (train.images[:, :, :, :8] == 255).all() and (train.images[:, :, :, 8:] == 90).all()


def test_cache_dir_is_rectgrad_data_else_the_home_cache(tmp_path, monkeypatch):
    # $RECTGRAD_DATA when set (and not empty), else ~/.cache/rectgrad
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("RECTGRAD_DATA", str(tmp_path / "mine"))
    assert data.cache_dir() == tmp_path / "mine"
    for unset in (lambda: monkeypatch.delenv("RECTGRAD_DATA"), lambda: monkeypatch.setenv("RECTGRAD_DATA", "")):
        unset()
        assert data.cache_dir() == tmp_path / "home" / ".cache" / "rectgrad"


def test_cache_dir_of_a_tilde_left_unexpanded_is_in_the_home_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("RECTGRAD_DATA", "~/data")  # RECTGRAD_DATA="~/data" (quoted) or a docker env file
    monkeypatch.chdir(tmp_path)
    assert data.cache_dir() == tmp_path / "home" / "data"
    with pytest.raises(FileNotFoundError, match=f"not found in {re.escape(str(tmp_path / 'home' / 'data'))};"):
        load_cifar10("test")
    assert not (tmp_path / "~").exists()


def test_a_masked_images_download_without_the_first_class_saves_nothing(tmp_path, monkeypatch):
    # class 0 (airplane) counts as any other: missing, it is named and nothing is kept
    archive = masks_archive(CIFAR10_CLASSES[1:])
    monkeypatch.setattr(data.urllib.request, "urlopen", fake_server({"CIFAR10_mask.tar": archive}))
    with pytest.raises(ValueError, match=r"does not hold the paper's masked images \(no image of airplane\)"):
        data.masked_images_folder(tmp_path / "masks", download=True)
    assert list(tmp_path.iterdir()) == []


def test_masked_images_masks_are_read_as_grey_levels(tmp_path):
    # a colour mask counts by its grey level (L = 0.299 R + 0.587 G + 0.114 B): pure red is 76, background;
    # white is object
    write_jpg(tmp_path / "dog_1.jpg", np.zeros((16, 16, 3), np.uint8))
    mask = np.full((16, 16, 3), 255, np.uint8)
    mask[:, :8] = (255, 0, 0)
    write_jpg(tmp_path / "dog_1_mask.jpg", mask)
    masks = load_masked_images(tmp_path).masks
    assert not masks[0, :, :8].any() and masks[0, :, 8:].all()


def test_random_patch_is_uint8():
    # the documented (C, size, size) uint8 patch: its values pasted as they are, in the images' own dtype
    assert RandomPatch().patch(3).dtype == torch.uint8


def test_image_folder_files_read_no_image_header(tmp_path, monkeypatch):
    # the file list alone needs no image mode: thousands of headers are not opened for it
    write_image_folder(tmp_path, masks=False)
    monkeypatch.setattr(data, "_image_mode", lambda path: pytest.fail(f"header of {path} read"))
    assert len(data.image_folder_files(tmp_path, "test", 16)) == 4


def test_image_folder_names_a_decomposed_training_class_and_its_composed_test_twin(tmp_path):
    # the look-alike hint works both ways: the training folder decomposed (macOS), the test folder composed
    write_image_folder(tmp_path, masks=False)
    (tmp_path / "train" / "a_cat").rename(tmp_path / "train" / "cafe\u0301")
    (tmp_path / "test" / "a_cat").rename(tmp_path / "test" / "caf\u00e9")
    with pytest.raises(ValueError, match=r"'caf\\xe9' vs 'cafe\\u0301': composed and decomposed accents"):
        data.load_image_folder(tmp_path, "test", 16)


@pytest.mark.parametrize("name, content", [
    ("img1.png", lambda png: png[:8] + (5).to_bytes(4, "big") + png[12:]),  # an IHDR chunk said to be 5 bytes long
    ("img1.ppm", lambda png: b"P6\n2x 2\n255\n" + bytes(12)),  # a PPM header whose width is no number
])
def test_image_folder_names_an_image_whose_header_pillow_refuses_with_a_value_error(tmp_path, name, content):
    # Pillow refuses these headers with a bare ValueError ("Truncated IHDR chunk", "invalid literal for int()"),
    # which named no file among thousands
    write_image_folder(tmp_path, masks=False)
    png = (tmp_path / "test" / "a_cat" / "img1.png").read_bytes()
    (tmp_path / "test" / "a_cat" / "img1.png").unlink()
    (tmp_path / "test" / "a_cat" / name).write_bytes(content(png))
    with pytest.raises(ValueError, match=rf"a_cat.{re.escape(name)} is not a readable image \("):
        data.load_image_folder(tmp_path, "test", 16)
    with pytest.raises(ValueError, match=rf"{re.escape(name)} is not a readable image \("):
        data.mask_objects(tmp_path / "test" / "a_cat" / name)


def test_an_image_whose_exif_block_pillow_cannot_parse_or_write_again_is_read_as_its_orientation_says(tmp_path):
    # Pillow raised a bare SyntaxError ("not a TIFF file") for an EXIF block it cannot parse, naming no file, and a
    # struct.error for one whose orientation it reads but whose other tags it cannot write back (a string in a
    # number's tag); a viewer shows the first as stored and turns the second
    pixels = np.zeros((4, 6), np.uint8)
    pixels[:, :3] = 255  # left half white, 6 wide and 4 high
    exif = Image.Exif()
    exif[0x0112], exif[0x010F] = 6, "Canon"  # turned a quarter; the camera's make
    good = exif.tobytes()
    odd_tag = good.replace(b"\x01\x0f\x00\x02", b"\x01\x53\x00\x02")  # the make's string in SampleFormat's tag
    assert odd_tag != good
    for name, block in (("good", good), ("odd_tag", odd_tag), ("unparsable", b"Exif\x00\x00XX\x00*\x00\x00\x00\x08"),
                        ("none", None)):
        Image.fromarray(pixels).save(tmp_path / f"{name}_mask.png", **({} if block is None else {"exif": block}))
    turned, stored = data.mask_objects(tmp_path / "good_mask.png"), data.mask_objects(tmp_path / "none_mask.png")
    assert turned.shape == (6, 4) and stored.shape == (4, 6)
    assert torch.equal(data.mask_objects(tmp_path / "odd_tag_mask.png"), turned)
    assert data.upright_size(tmp_path / "odd_tag_mask.png") == (4, 6)
    assert torch.equal(data.mask_objects(tmp_path / "unparsable_mask.png"), stored)
    assert data.upright_size(tmp_path / "unparsable_mask.png") == (6, 4)


def test_a_downloaded_file_gets_the_permissions_of_any_file_made_there(tmp_path, monkeypatch):
    # the download was written to a mkstemp file, private (0600), and kept so: a dataset downloaded into a shared
    # cache could be read by no one else
    archive = tmp_path / "source.tar.gz"
    cifar_archive(archive, n=2)
    monkeypatch.setattr(data.urllib.request, "urlopen", fake_server({data.CIFAR10_FILE: archive.read_bytes()}))
    monkeypatch.setattr(data, "CIFAR10_MD5", hashlib.md5(archive.read_bytes()).hexdigest())
    assert len(load_cifar10("test", data_dir=tmp_path / "d", download=True)) == 2
    made = tmp_path / "d" / "made.txt"
    made.write_text("made by open()")
    assert (tmp_path / "d" / data.CIFAR10_FILE).stat().st_mode == made.stat().st_mode


def test_masked_images_take_numpy_masks_as_images_and_labels_are_taken():
    # numpy bool masks were refused with "masks must be bool (2, 4, 4) ..., got bool (2, 4, 4)": numpy's bool is not
    # torch's
    masks = np.zeros((2, 4, 4), bool)
    masks[1, :2] = True
    masked = data.MaskedImages(np.zeros((2, 1, 4, 4), np.uint8), np.array([0, 1]), ["a", "b"], "x", masks=masks,
                               names=["p", "q"])
    assert masked.masks.dtype == torch.bool and torch.equal(masked.masks, torch.from_numpy(masks))
    with pytest.raises(TypeError, match="masks must be one of Tensor, ndarray, got list"):
        data.MaskedImages(np.zeros((2, 1, 4, 4), np.uint8), [0, 1], ["a", "b"], "x", masks=masks.tolist(),
                          names=["p", "q"])
    with pytest.raises(ValueError, match=r"masks must be bool \(2, 4, 4\) with 2 names, got torch.uint8"):
        data.MaskedImages(np.zeros((2, 1, 4, 4), np.uint8), [0, 1], ["a", "b"], "x", masks=masks.astype(np.uint8),
                          names=["p", "q"])


@pytest.mark.parametrize("index", [1, -2, np.int64(1), torch.tensor(1)])
def test_image_dataset_subset_of_one_index_keeps_one_image_as_masked_images_do(index):
    # an int gave images (C, H, W), refused as "images must be (N, C, H, W)", though MaskedImages.subset takes it
    images = torch.arange(3, dtype=torch.uint8).reshape(3, 1, 1, 1).expand(3, 1, 2, 2).contiguous()
    one = ImageDataset(images, [0, 1, 0], ["a", "b"], "toy").subset(index)
    assert one.images.shape == (1, 1, 2, 2) and (one.images == 1).all() and one.labels.tolist() == [1]


def test_to_inputs_and_to_uint8_refuse_each_others_kind_rather_than_scale_it_again():
    # float images in [0, 1] became inputs near -1 (all but black), and uint8 images given to to_uint8 wrapped at 255
    images = torch.tensor([[0, 128, 255]], dtype=torch.uint8)
    with pytest.raises(ValueError, match=r"to_inputs takes uint8 images \(0..255\), got torch.float32"):
        to_inputs(images.float() / 255)
    with pytest.raises(ValueError, match=r"to_uint8 takes float inputs in \[-1, 1\], got torch.uint8"):
        to_uint8(images)
    assert torch.equal(to_uint8(to_inputs(images)), images)
    assert torch.equal(to_uint8(to_inputs(images).double()), images)


def test_cifar10_batch_whose_unpickling_fails_otherwise_is_named_as_no_batch(tmp_path):
    # unpickling corrupt bytes can raise any error (pickle's documentation says so): an encoding name cut by a flipped
    # byte raised a LookupError, a pickled array in the batch's place an IndexError, naming neither archive nor member
    path = tmp_path / "cifar-10-python.tar.gz"
    batch = {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]}
    good = pickle.dumps(batch, protocol=2)
    assert b"latin1" in good
    for raw in (good.replace(b"latin1", b"latiq1"), pickle.dumps(np.zeros(3, np.uint8), protocol=2)):
        with tarfile.open(path, "w:gz") as tar:
            info = tarfile.TarInfo("cifar-10-batches-py/test_batch")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
        with pytest.raises(ValueError, match=rf"{re.escape(str(path))}: cifar-10-batches-py/test_batch is not a "
                                             r"CIFAR-10 batch \((LookupError|IndexError)"):
            load_cifar10("test", data_dir=tmp_path)


@pytest.mark.parametrize("labels", [[0.0, 1.7], ["0", "1"], [True, False]])
def test_cifar10_refuses_labels_that_are_not_integers_rather_than_cast_them(tmp_path, labels):
    # a cast to int64 floored 1.7 to 1 and read "1" as 1, as it would have wrapped pixels (refused already)
    cifar_archive(tmp_path / "cifar-10-python.tar.gz", batch={b"data": np.zeros((2, 3072), np.uint8),
                                                              b"labels": labels})
    with pytest.raises(ValueError, match=r"test_batch holds (float64|<U1|bool) labels, not the integer class indices"):
        load_cifar10("test", data_dir=tmp_path)
    cifar_archive(tmp_path / "cifar-10-python.tar.gz", batch={b"data": np.zeros((2, 3072), np.uint8),
                                                              b"labels": np.array([3, 1], np.uint8)})
    assert load_cifar10("test", data_dir=tmp_path).labels.tolist() == [3, 1]


def test_image_folder_progress_bar_is_closed_when_an_image_cannot_be_read(tmp_path, monkeypatch):
    # the bar was closed only after the last image: an unreadable one left it open (its line unended before the error,
    # a notebook's widget running), as the bars of training and evaluation are not
    import rectgrad.progress

    bars = []

    class Bar:
        closed = False

        def update(self):
            pass

        def close(self):
            self.closed = True
    monkeypatch.setattr(rectgrad.progress, "progress_bar", lambda *args, **kwargs: bars.append(Bar()) or bars[-1])
    write_image_folder(tmp_path, masks=False)
    (tmp_path / "test" / "a_cat" / "img1.png").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="img1.png is not a readable image"):
        data.load_image_folder(tmp_path, "test", 16, progress=True)
    assert len(bars) == 1 and bars[0].closed


def test_image_dataset_refuses_rgba_images_channels_last_as_it_refuses_rgb_ones():
    # np.stack of RGBA PNGs read with numpy is (N, H, W, 4): it was taken as H channels of H x 4 pixels
    labels = [0, 1, 0, 1]
    with pytest.raises(ValueError, match=r"images of shape \(4, 8, 8, 4\) look channels-last .*permute\(0, 3, 1, 2\)"):
        ImageDataset(np.zeros((4, 8, 8, 4), np.uint8), labels, ["a", "b"], "rgba")
    rgba = ImageDataset(np.zeros((4, 4, 8, 8), np.uint8), labels, ["a", "b"], "rgba")  # channels first: taken
    assert rgba.images.shape == (4, 4, 8, 8)


def test_a_cifar10_archive_cut_short_says_to_get_it_again_as_idx_files_do(tmp_path):
    # the error named the archive and gzip's complaint but not what to do, where a cut idx file's says it
    path = tmp_path / "cifar-10-python.tar.gz"
    cifar_archive(path, n=2)
    path.write_bytes(path.read_bytes()[:len(path.read_bytes()) // 2])
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))} is not a valid tar.gz archive \(.*\): delete it "
                                         r"and get the file again \(download=True"):
        load_cifar10("test", data_dir=tmp_path)
