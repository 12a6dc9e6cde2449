"""``rectgrad explain``, ``rectgrad demo`` and ``rectgrad --version`` end to end, one clear line for each bad input."""
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rectgrad import AttributionWarning, PaperCNN
from rectgrad.checkpoint import save_checkpoint
from rectgrad.cli import main
from rectgrad.data import CIFAR10_CLASSES


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(0)
    images = []
    for i, size in enumerate(((40, 30), (16, 16))):
        path = tmp_path / f"image{i}.png"
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
        images.append(str(path))
    checkpoint = tmp_path / "cnn.pt"
    save_checkpoint(PaperCNN(3, 8, 10), checkpoint, dataset="cifar10", classes=list(CIFAR10_CLASSES))
    return tmp_path, images, str(checkpoint)


def run(capsys, *argv):
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_explain_all_methods_writes_the_grid_and_prints_top5(files, capsys):
    tmp_path, images, checkpoint = files
    grid = tmp_path / "grid.png"
    status, out, err = run(capsys, "explain", *images, "--model", checkpoint, "--methods", "all", "--q", "90",
                           "--out", str(grid), "--no-progress", "--device", "cpu")
    assert status == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("image0.png: ") and lines[1].startswith("image1.png: ")
    assert lines[0].count("%") == 5 and any(name in lines[0] for name in CIFAR10_CLASSES)
    assert lines[-1] == f"wrote {grid}"
    with Image.open(grid) as picture:
        assert picture.format == "PNG" and picture.width > picture.height  # 12 columns, 2 rows


def test_explain_saves_the_maps(files, capsys):
    from rectgrad import explain, zoo
    from rectgrad.cli.explain import RECTGRAD_METHODS

    tmp_path, images, checkpoint = files
    saved = tmp_path / "maps" / "raw.npz"
    status, out, err = run(capsys, "explain", *images, "--model", checkpoint, "--methods", "saliency,rectgrad",
                           "--final-threshold", "--out", str(tmp_path / "g.png"), "--save-maps", str(saved),
                           "--no-progress")
    assert status == 0, err
    assert out.splitlines()[-2:] == [f"wrote {saved}", f"wrote {tmp_path / 'g.png'}"]  # the maps first
    loaded = zoo.load(checkpoint, "cpu")
    x = loaded.load_images(images)
    targets = loaded.model(x).argmax(1)
    with np.load(saved) as arrays:
        assert sorted(arrays.files) == ["classes", "images", "rectgrad", "saliency", "targets"]
        assert arrays["images"].tolist() == ["image0.png", "image1.png"]
        assert arrays["targets"].tolist() == targets.tolist()
        assert arrays["classes"].tolist() == [CIFAR10_CLASSES[t] for t in targets.tolist()]
        for method in ("saliency", "rectgrad"):  # as the methods return them: saliency's top 5% is only drawn
            options = {"final_threshold": True} if method in RECTGRAD_METHODS else {}
            expected = explain(loaded.model, x, targets, method, **options)
            np.testing.assert_allclose(arrays[method], expected.numpy(), rtol=1e-5, atol=1e-7)
    status, out, err = run(capsys, "explain", *images, "--model", checkpoint, "--save-maps", str(tmp_path / "m.npy"))
    assert status == 2 and err == f"error: --save-maps must name a .npz file, got {tmp_path / 'm.npy'}\n"


def test_a_map_holding_nan_is_saved_and_drawn_blank_with_a_warning(files, capsys, monkeypatch):
    import importlib

    from rectgrad import viz

    module = importlib.import_module("rectgrad.methods")  # (rectgrad.methods is the function methods())
    tmp_path, images, checkpoint = files
    explain = module.explain

    def nan_for_saliency_on_the_second_image(model, x, target, method, **kwargs):
        maps = explain(model, x, target, method, **kwargs)
        if method == "saliency" and x.shape[-1] == 8 and kwargs["seed"] == 1:  # (image i has seed i; resized to 8x8)
            maps[0, 0, 0, 0] = float("nan")
        drawn.append(method)
        return maps

    drawn, grids, figures, grid = [], [], [], viz.grid
    monkeypatch.setattr(module, "explain", nan_for_saliency_on_the_second_image)
    monkeypatch.setattr(viz, "grid", lambda images, columns, **k: grids.append(columns)
                        or figures.append(grid(images, columns, **k)) or figures[-1])
    saved = tmp_path / "maps.npz"
    status, out, err = run(capsys, "explain", *images, "--model", checkpoint, "--methods", "saliency,rectgrad",
                           "--save-maps", str(saved), "--out", str(tmp_path / "g.png"), "--no-progress")
    assert status == 0 and err == "warning: saliency on image1.png: its map holds NaN or Inf values, drawn blank\n"
    with np.load(saved) as arrays:  # saved as the method returned them
        assert np.isnan(arrays["saliency"][1]).sum() == 1 and np.isfinite(arrays["saliency"][0]).all()
    (columns,) = grids
    assert np.all(columns["Saliency"][1] == 0) and np.any(columns["Saliency"][0] != 0)  # the other image drawn
    assert np.any(columns["RectGrad"][1] != 0)
    panels = [[text.get_text() for text in ax.texts] for ax in figures[0].axes]  # rows of input, Saliency, RectGrad
    assert panels[4] == ["NaN or Inf"] and panels[1] == [] and panels[5] == []  # not "all zero"


def test_files_of_one_name_in_different_folders_are_told_apart(files, capsys, monkeypatch):
    from rectgrad import viz

    tmp_path, images, checkpoint = files
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        Image.open(images[0]).save(tmp_path / folder / "cat.png")
    drawn = []
    grid = viz.grid
    monkeypatch.setattr(viz, "grid", lambda *args, **kw: drawn.append(kw["row_labels"]) or grid(*args, **kw))
    monkeypatch.chdir(tmp_path)
    status, out, err = run(capsys, "explain", "a/cat.png", str(tmp_path / "b" / "cat.png"), "image1.png", "--model",
                           checkpoint, "--methods", "saliency", "--save-maps", "maps.npz", "--no-progress")
    assert status == 0, err
    names = ["a/cat.png", "b/cat.png", "image1.png"]  # the shortest telling path; a name of its own stays as it is
    assert [line.split(": ")[0] for line in out.splitlines()[:3]] == names
    assert [label.split("\n")[0] for label in drawn[0]] == names
    with np.load(tmp_path / "maps.npz") as arrays:
        assert arrays["images"].tolist() == names
    from rectgrad.data import unique_names

    deeper = [Path("x/a/cat.png"), Path("y/a/cat.png"), Path("b/cat.png"), Path("cat.png"), Path("./b/cat.png")]
    assert unique_names(deeper, suffix=True) == ["x/a/cat.png", "y/a/cat.png", "b/cat.png", "cat.png", "b/cat.png"]


def test_version(capsys):
    import captum

    import rectgrad

    status, out, err = run(capsys, "--version")
    assert status == 0 and out.startswith(f"rectgrad {rectgrad.__version__} (torch {torch.__version__}, "
                                          f"captum {captum.__version__}, Python ")


def test_the_command_without_its_extra_says_what_to_install(monkeypatch, capsys):
    import sys

    from rectgrad.__main__ import main as command  # the console script's: it exits with what this returns

    # in this process (a new one spent seconds importing torch) as without typer: rectgrad.cli is imported anew
    monkeypatch.setitem(sys.modules, "typer", None)
    for name in [name for name in sys.modules if name == "rectgrad.cli" or name.startswith("rectgrad.cli.")]:
        monkeypatch.delitem(sys.modules, name)
    capsys.readouterr()
    assert command() == 2 and capsys.readouterr().err == ("error: the rectgrad command needs the cli extra (typer is "
                                                          "not installed): pip install 'rectgrad[cli]' (in a clone: "
                                                          "pip install -e \".[cli]\")\n")


def test_explain_a_folder_of_images(files, capsys):
    tmp_path, images, checkpoint = files  # the folder holds image0.png, image1.png and the model file
    status, out, err = run(capsys, "explain", str(tmp_path), "--model", checkpoint, "--methods", "saliency",
                           "--out", str(tmp_path / "figures" / "folder.png"), "--no-progress")
    assert status == 0, err
    assert [line.split(":")[0] for line in out.splitlines()[:2]] == ["image0.png", "image1.png"]
    assert out.splitlines()[2] == f"wrote {tmp_path / 'figures' / 'folder.png'}"


@pytest.mark.filterwarnings("always::rectgrad.AttributionWarning")  # the command shows them
def test_warnings_are_one_line(files, capsys, monkeypatch):
    tmp_path, images, checkpoint = files
    argv = ("explain", *images[:2], "--model", checkpoint, "--methods", "rectgrad", "--q", "100", "--out",
            str(tmp_path / "q.png"), "--no-progress")
    status, out, err = run(capsys, *argv)  # q = 100: no unit is strictly above the maximum, the map is all zero
    assert status == 0, err
    assert err.splitlines() == [f"warning: rectgrad on {Path(image).name}: the attribution is all zero: a thresholded "
                                "layer passed no gradient (e.g. a percentile q too high for a small layer), or the "
                                "model's own gradient is zero there (e.g. a zero-initialised head)"
                                for image in images[:2]]  # each image named, none swallowed as a repeat
    monkeypatch.setenv("RECTGRAD_DEBUG", "0")  # off, as unset
    assert run(capsys, *argv)[2].startswith("warning: rectgrad on image0.png: the attribution")
    monkeypatch.setenv("RECTGRAD_DEBUG", "1")  # Python's own warnings
    with pytest.warns(UserWarning, match=r"rectgrad on image[01].png: the attribution is all zero"):
        assert run(capsys, *argv)[0] == 0


def test_a_warning_under_a_progress_bar_starts_a_line_of_its_own(capsys, monkeypatch):
    import sys

    from tqdm import tqdm

    from rectgrad.cli import _show_warning

    for terminal, ends in ((False, "\n"), (True, "\r")):  # a log: a new line; a terminal: the bar cleared first
        monkeypatch.setattr(sys.stderr, "isatty", lambda: terminal)
        bar = tqdm(total=3, desc="ROAR trainings", file=sys.stderr)
        bar.update(1)
        _show_warning("a group starts over", RuntimeWarning, "f.py", 1)
        bar.close()
        before, after = capsys.readouterr().err.split("warning: a group starts over")
        assert "ROAR trainings" in before and before.endswith(ends) and after.startswith("\n")
    _show_warning("no bar", UserWarning, "f.py", 1)
    assert capsys.readouterr().err == "warning: no bar\n"
    shown = set()  # the CLI's: each warning once a run, however often a study's settings repeat it
    for message in ("twice", "other", "twice"):
        _show_warning(message, UserWarning, "f.py", 1, shown=shown)
    assert capsys.readouterr().err == "warning: twice\nwarning: other\n"


def test_an_error_quoting_a_traceback_is_one_line(files, capsys, monkeypatch):
    from rectgrad import zoo

    def scripted(path):  # as a TorchScript model's error quotes its code
        raise ValueError("the model cannot take the images: The following operation failed in the TorchScript "
                         "interpreter.\nTraceback of TorchScript (most recent call last):\n  File \"code.py\", line 9\n"
                         + "    x = conv(x)\n" * 100 + "; give its input size in  my model.json")

    tmp_path, images, checkpoint = files
    monkeypatch.setattr(zoo, "read_image", scripted)
    status, _, err = run(capsys, "explain", images[0], "--model", checkpoint, "--out", str(tmp_path / "m.png"))
    assert status == 2 and err.count("\n") == 1 and err.startswith("error: the model cannot take the images: The "
                                                                    "following operation failed in the TorchScript")
    assert " ... " in err and err.endswith("; give its input size in  my model.json\n") and len(err) < 820


def test_running_out_of_memory_is_one_clear_line(files, capsys, monkeypatch):
    from rectgrad import zoo

    def huge(path):
        raise MemoryError

    tmp_path, images, checkpoint = files
    monkeypatch.setattr(zoo, "read_image", huge)
    status, _, err = run(capsys, "explain", images[0], "--model", checkpoint, "--out", str(tmp_path / "m.png"))
    assert status == 2 and err == ("error: out of memory (the allocation failed): use fewer or smaller images or a "
                                   "smaller --internal-batch-size\n")  # the options explain has

    def gpu_full(path):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(zoo, "read_image", gpu_full)  # a RuntimeError, not a MemoryError: the same advice
    status, _, err = run(capsys, "explain", images[0], "--model", checkpoint, "--out", str(tmp_path / "m.png"))
    assert status == 2 and err.startswith("error: out of memory (CUDA out of memory. Tried to allocate 2.00 GiB): "
                                          "use fewer or smaller images")
    from rectgrad.cli import _memory_advice

    assert _memory_advice(["train", "--dataset", "cifar10"]) == ("use fewer or smaller images (--image-size) or a "
                                                                "smaller --batch-size")
    assert _memory_advice(["study", "threshold", "--dataset", "cifar10"]).endswith("(--count) or a smaller "
                                                                                   "--internal-batch-size")
    assert _memory_advice(["reproduce", "--dataset", "folder"]) == ("use fewer or smaller images (--scale, "
                                                                     "--image-size) or a smaller --group")
    assert _memory_advice(["demo"]) == "use a smaller --internal-batch-size"  # no images of its own to reduce


def test_explain_with_final_threshold_and_target(files, capsys):
    tmp_path, images, checkpoint = files
    status, out, err = run(capsys, "explain", images[0], "--model", checkpoint, "--methods", "saliency,rectgrad_prr",
                           "--final-threshold", "--target", "3", "--out", str(tmp_path / "t.png"), "--no-progress")
    assert status == 0, err
    assert (tmp_path / "t.png").is_file() and out.splitlines()[0] == "explaining class 3 (cat) in every image"
    # any case, a unique beginning; an index with a leading zero is no prefix
    for name, said in (("cat", "3 (cat)"), ("CAT", "3 (cat)"), ("tru", "9 (truck)"), ("03", "3 (cat)")):
        status, out, err = run(capsys, "explain", images[0], "--model", checkpoint, "--methods", "saliency",
                               "--target", name, "--out", str(tmp_path / "n.png"), "--no-progress")
        assert status == 0, err
        prefix = ": --target 'tru' matched it by prefix" if name == "tru" else ""
        assert out.splitlines()[0] == f"explaining class {said} in every image{prefix}"
        assert out.splitlines()[1].startswith("image0.png: ")
    from rectgrad.cli.explain import _class_index

    assert _class_index("cat", CIFAR10_CLASSES) == 3 and _class_index("tru", CIFAR10_CLASSES) == 9
    assert _class_index("7", CIFAR10_CLASSES) == 7 and _class_index(None, CIFAR10_CLASSES) is None
    assert _class_index("class 3", []) == 3 == _class_index("Class  3", [])  # as printed for classes without names
    for target, labels in (("class 3", CIFAR10_CLASSES), ("cat", []), ("class", [])):  # (a named class wins)
        with pytest.raises(ValueError, match="is no class of this model|classes have no names"):
            _class_index(target, labels)


def test_explain_saved_module_and_torchscript(files, capsys):
    tmp_path, images, _ = files
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 5, stride=4), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten(), torch.nn.Linear(4, 3)).eval()
    torch.save(model, tmp_path / "module.pt")
    torch.jit.script(model).save(str(tmp_path / "scripted.pt"))
    for name in ("module.pt", "scripted.pt"):
        status, out, err = run(capsys, "explain", images[0], "--model", str(tmp_path / name), "--methods",
                               "saliency,intgrad", "--out", str(tmp_path / "s.png"), "--no-progress")
        assert status == 0, err
        assert "note: " in err and "assuming 3x224x224" in err and "class 0" in out
    batch = torch.export.Dim("batch", min=1, max=1024)
    program = torch.export.export(model, (torch.randn(2, 3, 48, 48),), dynamic_shapes=({0: batch},))
    torch.export.save(program, tmp_path / "exported.pt2")
    status, out, err = run(capsys, "explain", images[0], "--model", str(tmp_path / "exported.pt2"), "--methods",
                           "rectgrad,deeplift", "--out", str(tmp_path / "e.png"), "--no-progress")
    assert status == 0 and "assuming inputs normalised" in err and (tmp_path / "e.png").is_file(), err
    (tmp_path / "module.json").write_text('{"input_size": [3, 64, 64], "mean": 0.5, "std": 0.25, "crop_pct": 0.9, '
                                          '"interpolation": "bicubic", "label_names": ["cat", "dog", "owl"]}')
    status, out, err = run(capsys, "explain", images[0], "--model", str(tmp_path / "module.pt"), "--methods",
                           "saliency", "--target", "owl", "--out", str(tmp_path / "s.png"), "--no-progress")
    assert status == 0 and "note" not in err and all(f"{name} " in out for name in ("cat", "dog", "owl"))
    status, out, err = run(capsys, "explain", images[0], "--model", str(tmp_path / "scripted.pt"), "--methods",
                           "guided_bp", "--out", str(tmp_path / "s.png"), "--no-progress")
    assert status == 2 and "error: --methods guided_bp: these methods modify the backward pass" in err
    status, out, err = run(capsys, "explain", images[0], "--model", str(tmp_path / "scripted.pt"), "--out",
                           str(tmp_path / "d.png"), "--no-progress", "--save-maps", str(tmp_path / "d.npz"))
    assert status == 0, err  # the default methods: those with rules left out, once each, the others drawn
    rules = ("deconv", "guided_bp", "eps_lrp", "deeplift", "rectgrad", "rectgrad_prr")
    assert all(err.count(f"warning: {method} left out: ") == 1 for method in rules)
    assert sorted(np.load(tmp_path / "d.npz")) == sorted(["saliency", "grad_input", "smoothgrad", "intgrad", "images",
                                                          "targets", "classes"])


@pytest.mark.filterwarnings("always::rectgrad.AttributionWarning")  # the command shows them
def test_a_model_returning_probabilities_is_warned_about_once(files, capsys):
    tmp_path, images, _ = files
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 5, stride=4), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten(), torch.nn.Linear(4, 3), torch.nn.Softmax(1)).eval()
    torch.save(model, tmp_path / "softmax.pt")
    status, out, err = run(capsys, "explain", *images, "--model", str(tmp_path / "softmax.pt"), "--methods",
                           "saliency,rectgrad", "--out", str(tmp_path / "p.png"), "--no-progress")
    assert status == 0, err
    assert err.count("look like probabilities") == 1  # said of the model, not of each of the 2 x 2 maps
    shown = [float(v) for v in out.splitlines()[0].split(": ")[1].replace("%", "").split(", class")[0].split()[-1:]]
    from rectgrad import zoo
    loaded = zoo.load(str(tmp_path / "softmax.pt"), "cpu")
    with torch.no_grad():
        top = model(loaded.load_images(images[:1])).max().item()
    assert shown == [pytest.approx(100 * top, abs=0.05)]  # the model's own probability, not a softmax of it


def test_a_target_that_reads_two_ways_is_refused():
    from torchvision.models import ResNet50_Weights

    from rectgrad.cli.explain import _class_index, _target_line

    numbered = sorted(str(k) for k in range(1, 11))  # class folders 1 to 10, sorted as names: 1, 10, 2, ..., 9
    with pytest.raises(ValueError, match=r"^--target '1' is ambiguous: class index 1 is '10', but class 0 is named "
                                         r"'1'; give --target index:1 or --target name:1$"):
        _class_index("1", numbered)
    with pytest.raises(ValueError, match="class index 10 is out of range, but class 1 is named '10'"):
        _class_index("10", numbered)
    assert [_class_index(t, numbered) for t in ("index:1", "name:1", "Name: 10", "INDEX:0")] == [1, 0, 1, 0]
    assert _class_index("3", ["a", "b", "c", "3"]) == 3  # the same class either way
    with pytest.raises(ValueError, match="give a class number after index:"):
        _class_index("index:cat", numbered)
    for odd in ("index:--1", "index:\u00b2"):  # not numbers, though str.isdigit says so of the superscript
        with pytest.raises(ValueError, match="give a class number after index:"):
            _class_index(odd, numbered)
    for empty in ("name:", " "):
        with pytest.raises(ValueError, match="names no class: give a class index or name$"):
            _class_index(empty, numbered)
    imagenet = ResNet50_Weights.IMAGENET1K_V1.meta["categories"]
    with pytest.raises(ValueError, match=r"^--target 'cat' is ambiguous: tiger cat \(282\), Persian cat \(283\), "
                                         r"Siamese cat \(284\), Egyptian cat \(285\), Madagascar cat \(383\), "
                                         r"catamaran \(484\); give a whole name or an index$"):
        _class_index("cat", imagenet)
    assert _class_index("tiger", imagenet) == 292 and _class_index("egyptian", imagenet) == 285
    assert _target_line("cat", 1, "tiger cat") == ("explaining class 1 (tiger cat) in every image: --target 'cat' "
                                                   "matched it by a word of its name")
    assert _target_line("name:1", 0, "1") == "explaining class 0 (1) in every image"


def test_a_malformed_target_is_refused_before_the_model_loads(files, capsys, monkeypatch):
    from rectgrad import zoo

    tmp_path, images, checkpoint = files
    loads = []
    monkeypatch.setattr(zoo, "load", lambda *args, **kwargs: loads.append(args))  # (would load, slowly, or download)
    for target, message in (("index:abc", "error: --target 'index:abc': give a class number after index:\n"),
                            ("name: ", "error: --target 'name: ' names no class: give a class index or name\n")):
        status, out, err = run(capsys, "explain", *images, "--model", checkpoint, "--target", target, "--out",
                               str(tmp_path / "never.png"), "--no-progress")
        assert (status, err) == (2, message) and loads == []


def test_q_and_seed_given_for_methods_that_use_neither_are_said_to_have_no_effect(files, capsys, monkeypatch):
    from rectgrad import zoo

    tmp_path, images, checkpoint = files

    def refuse(*args, **kwargs):
        raise ValueError("not loaded")  # (the warnings come before the model loads)

    monkeypatch.setattr(zoo, "load", refuse)

    def warnings_of(*options):
        status, out, err = run(capsys, "explain", *images, "--model", checkpoint, *options, "--out",
                               str(tmp_path / "never.png"), "--no-progress")
        assert status == 2 and err.endswith("error: not loaded\n")
        return err.splitlines()[:-1]

    assert warnings_of("--methods", "saliency,intgrad", "--q", "90", "--seed", "3") == [
        "warning: --q has no effect on the chosen methods (saliency, intgrad): only rectgrad and rectgrad_prr use it",
        "warning: --seed has no effect on the chosen methods (saliency, intgrad): only smoothgrad and random use it"]
    assert warnings_of("--methods", "rectgrad", "--q", "90", "--seed", "3") == [
        "warning: --seed has no effect on the chosen methods (rectgrad): only smoothgrad and random use it"]
    assert warnings_of("--methods", "random", "--q", "90", "--seed", "3") == [
        "warning: --q has no effect on the chosen methods (random): only rectgrad and rectgrad_prr use it"]
    assert warnings_of("--methods", "smoothgrad,rectgrad_prr", "--q", "90", "--seed", "3") == []
    assert warnings_of("--q", "90", "--seed", "3") == []  # the default methods use both
    assert warnings_of("--methods", "saliency") == []  # neither given


@pytest.mark.parametrize("case, message", [
    ("method", "error: unknown method 'lime'; known methods: saliency, grad_input, deconv"),
    ("model", "error: unknown model 'alexnet' (and no such file); known models: efficientnet-lite0, inception-v4"),
    ("unreadable", "error: cannot read image"),
    ("missing", "error: image or folder"),
    ("empty folder", "error: no image files (.png, .jpg"),
    ("class folders", "error: no image files (.png, .jpg, .jpeg, .bmp, .gif, .tif, .tiff, .webp, .ppm, .pgm) in "
                      "folder classes; subfolders are not searched: give them as arguments"),
    ("checkpoint", "error:"),
    ("target", "error: --target 10 is out of range: this model has 10 classes, so give an index from 0 to 9 (or a "
               "class name)"),
    ("negative target", "error: --target -1 is out of range: this model has 10 classes"),
    ("target name", "error: --target 'dgo' is no class of this model; did you mean dog?"),
    ("ambiguous", "error: --target 'a' is ambiguous: airplane (0), automobile (1)"),
    ("device", "error: --device must be cpu, cuda, cuda:N or auto"),
    ("method typo", "error: unknown method 'rectgrd' (did you mean 'rectgrad'?); known methods: saliency,"),
    ("model typo", "error: unknown model 'resnet5' (and no such file; did you mean 'resnet50'?); known models:"),
    ("weights folder", "error: weights file empty is a folder; give the state-dict file in it"),
    ("weights of a file", "error: weights (--weights) apply to the registry models only: the model "
                          "file cnn.pt holds its own weights; give them only with a registry name"),
])
def test_bad_input_is_one_clear_line(files, capsys, monkeypatch, case, message):
    tmp_path, images, checkpoint = files
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x00garbage" * 10)
    unreadable = tmp_path / "notes.png"
    unreadable.write_text("not a picture")
    empty = tmp_path / "empty"
    empty.mkdir()
    (tmp_path / "classes" / "cat").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    argv = {"method": [*images, "--model", checkpoint, "--methods", "saliency,lime"],
            "model": [*images, "--model", "alexnet"],
            "unreadable": [images[0], str(unreadable), "--model", checkpoint],
            "missing": [str(tmp_path / "missing.png"), "--model", checkpoint],
            "empty folder": [str(empty), "--model", checkpoint],
            "class folders": ["classes", "--model", checkpoint],
            "checkpoint": [*images, "--model", str(corrupt)],
            "target": [*images, "--model", checkpoint, "--target", "10"],
            "negative target": [*images, "--model", checkpoint, "--target", "-1"],
            "target name": [*images, "--model", checkpoint, "--target", "dgo"],
            "ambiguous": [*images, "--model", checkpoint, "--target", "a"],
            "device": [*images, "--model", checkpoint, "--device", "tpu"],
            "method typo": [*images, "--model", checkpoint, "--methods", "saliency,rectgrd"],
            "model typo": [*images, "--model", "resnet5"],
            "weights folder": [*images, "--model", "efficientnet-lite0", "--weights", "empty"],
            "weights of a file": [*images, "--model", "cnn.pt", "--weights", checkpoint]}[case]
    status, out, err = run(capsys, "explain", *argv, "--out", str(tmp_path / "never.png"), "--no-progress")
    assert status == 2 and "explaining" not in out  # no class announced before --target 10 is refused
    assert err.startswith(message) and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "never.png").exists()


@pytest.mark.parametrize("options, message", [
    (["--q", "101"], "error: --q must be a percentile in [0, 100], got 101.0"),
    (["--internal-batch-size", "0"], "error: --internal-batch-size must be a positive integer, got 0"),
    (["--seed", "-1"], "error: --seed must be an integer in [0, 2**63), got -1"),
    (["--methods", ""], "error: --methods is empty"),
    (["--methods", "saliency,rectgrad,saliency"], "error: --methods names saliency more than once"),
    (["--methods", "all,rectgrad"], "error: --methods: 'all' cannot be combined with other names; "
                                    "give it alone or list the methods"),
    (["--out", "grid.gif"], "error: --out must name a .png / .pdf / .svg"),
    (["--out", "."], "error: --out . is a folder; give a file name"),
    (["--save-maps", "maps.txt"], "error: --save-maps must name a .npz file, got maps.txt"),
    (["--out", "/proc/grid.png"], "error: --out /proc/grid.png: cannot write in /proc"),
    (["--out", "g" * 252 + ".png"], "error: --out " + "g" * 252 + ".png: the name gggggggggggggggggggg... is 256 "
                                    "bytes long; the file system of "),
    (["--save-maps", "new/" + "é" * 126 + ".npz"], "error: --save-maps new/" + "é" * 126 + ".npz: the name "
                                                    + "é" * 20 + "... is 256 bytes long"),  # bytes, not characters
])
def test_options_are_refused_before_any_work(tmp_path, capsys, monkeypatch, options, message):
    from rectgrad import zoo

    def never(*args, **kwargs):
        raise AssertionError("loaded the model before checking the options")

    monkeypatch.setattr(zoo, "load", never)
    monkeypatch.chdir(tmp_path)
    Image.new("RGB", (8, 8)).save(tmp_path / "image.png")
    status, out, err = run(capsys, "explain", "image.png", "--model", "m.pt", *options)
    assert status == 2 and err.startswith(message) and err.count("\n") == 1, err


@pytest.mark.parametrize("command, option", [("explain", "--out"), ("explain", "--save-maps"), ("demo", "--out"),
                                             ("demo", "--save-maps"), ("train", "--out")])
def test_an_empty_output_path_is_refused_by_its_option(tmp_path, capsys, monkeypatch, command, option):
    # '' was read as Path('.'), the current folder: refused as "--out . is a folder", a name never given
    from rectgrad import zoo

    monkeypatch.setattr(zoo, "load", lambda *a, **k: pytest.fail("loaded a model"))
    monkeypatch.chdir(tmp_path)
    Image.new("RGB", (8, 8)).save(tmp_path / "image.png")
    given = {"explain": ["image.png", "--model", "m.pt"], "demo": [], "train": ["--dataset", "fashion-mnist"]}[command]
    status, out, err = run(capsys, command, *given, option, "")
    assert status == 2 and f"Invalid value for '{option}': an empty path names no file or folder (it would read " \
        "as ., the current folder): give a name" in err, err
    assert [p.name for p in tmp_path.iterdir()] == ["image.png"]


@pytest.mark.parametrize("given, name", [(["explain", "", "--model", "m.pt"], "images"),
                                         (["explain", "image.png", "--model", "resnet50", "--weights", ""],
                                          "--weights"),
                                         (["train", "--dataset", "folder", "--out", "m.pt", "--data-dir", ""],
                                          "--data-dir")])
def test_an_empty_input_path_is_refused_not_read_as_the_current_folder(tmp_path, capsys, monkeypatch, given, name):
    # '' was read as Path('.'): the images (or the dataset) of the current folder read, or --weights named it
    from rectgrad import zoo

    monkeypatch.setattr(zoo, "load", lambda *a, **k: pytest.fail("loaded a model"))
    monkeypatch.chdir(tmp_path)
    Image.new("RGB", (8, 8)).save(tmp_path / "image.png")
    status, out, err = run(capsys, *given)
    assert status == 2 and f"Invalid value for '{name}': an empty path names no file or folder (it would read " \
        "as ., the current folder): give a name" in err, err
    assert [p.name for p in tmp_path.iterdir()] == ["image.png"]


@pytest.mark.parametrize("images, options, message", [
    (["image.png"], ["--out", "image.png"], "error: --out image.png is the input image image.png: give another"),
    (["photos"], ["--out", "photos/grid.png"], "error: --out photos/grid.png is in the input folder photos: a rerun"),
    (["photos/"], ["--out", "./photos/grid.PNG"], "error: --out photos/grid.PNG is in the input folder photos: a "),
    (["photos"], ["--out", "photos/cat_mask.png"], "error: --out photos/cat_mask.png is in the input folder photos: "
                                                   "a rerun would take it for an image or a mask"),
    (["photos"], ["--out", "g.png", "--save-maps", "photos/../photos/m.npz"], None),
    (["photos"], ["--out", "photos/grid.pdf"], None),  # a folder lists no PDF as an image
    (["photos"], ["--out", "photos/sub/grid.png"], None),  # nor the images of its subfolders
])
def test_outputs_keep_apart_from_the_inputs(tmp_path, capsys, monkeypatch, images, options, message):
    from rectgrad import zoo

    def loaded(*args, **kwargs):
        raise RuntimeError("model loads")

    monkeypatch.setattr(zoo, "load", loaded)
    monkeypatch.chdir(tmp_path)
    Image.new("RGB", (8, 8)).save(tmp_path / "image.png")
    (tmp_path / "photos").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "photos" / "cat.png")
    status, out, err = run(capsys, "explain", *images, "--model", "m.pt", *options)
    assert status == 2 and err.startswith(message or "error: model loads") and err.count("\n") == 1, err


def test_figures_are_written_in_the_format_their_suffix_names(files, capsys):
    tmp_path, images, checkpoint = files
    for name, magic in (("grid.pdf", b"%PDF"), ("grid.svg", b"<?xml"), ("grid.JPG", b"\xff\xd8")):
        status, _, err = run(capsys, "explain", images[0], "--model", checkpoint, "--methods", "saliency",
                             "--out", str(tmp_path / name), "--no-progress")
        assert status == 0, err
        assert (tmp_path / name).read_bytes().startswith(magic), name


def test_demo_offline_on_scikit_image_photos(tmp_path, capsys):
    # The full demo (10 methods, SmoothGrad and IntegGrad with 50 samples) takes minutes on 2 CPU cores;
    # two methods exercise the same path: pretrained EfficientNet-Lite0, bundled photos, grid, top-5.
    out_file = tmp_path / "demo.png"
    status, out, err = run(capsys, "demo", "--methods", "saliency,rectgrad", "--out", str(out_file), "--no-progress")
    assert status == 0, err
    assert "coffee: espresso" in out and out.splitlines()[-1] == f"wrote {out_file}"
    assert out_file.stat().st_size > 10_000


def _commands(command, path=()):
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _commands(sub, (*path, name))


def test_help_paragraphs_have_no_hard_line_breaks():
    """Typer's help keeps a line break inside a paragraph of a docstring as it is, which breaks a sentence in two
    in the middle of the terminal's line: each paragraph is one line (blank lines between paragraphs)."""
    import inspect

    import typer

    from rectgrad.cli import app

    for path, command in _commands(typer.main.get_command(app)):
        for paragraph in inspect.cleandoc(command.help or "").split("\n\n"):
            assert "\n" not in paragraph, f"rectgrad {' '.join(path)}: {paragraph!r}"


def test_help_at_80_columns_shows_every_option_and_command_whole(monkeypatch, capsys):
    """An 80-column terminal shows each option's full names (Typer's boxed tables cut them: --internal-batch-…) and
    each sub-command's whole first paragraph in its group's list (click cuts at the first ". ": "Figs.")."""
    import inspect

    import typer

    from rectgrad.cli import app

    monkeypatch.setenv("COLUMNS", "80")
    for path, command in _commands(typer.main.get_command(app)):
        assert main([*path, "--help"]) == 0
        shown = capsys.readouterr().out
        assert max(map(len, shown.splitlines())) <= 80, path
        for parameter in command.params:
            for name in (*parameter.opts, *parameter.secondary_opts):
                assert name in shown, f"rectgrad {' '.join(path)} --help: {name}"
        if any("--device" in parameter.opts for parameter in command.params):  # (cuda:N is taken: said so)
            assert "cuda:N" in shown, f"rectgrad {' '.join(path)} --help: --device"
        for name, sub in getattr(command, "commands", {}).items():
            summary = inspect.cleandoc(sub.help or "").split("\n\n")[0]
            assert " ".join(summary.split()) in " ".join(shown.split()), f"rectgrad {' '.join(path)}: {name}"
    monkeypatch.setenv("COLUMNS", "200")  # a wide terminal is used, up to 120 columns
    assert main(["study", "threshold", "--help"]) == 0
    assert 100 < max(map(len, capsys.readouterr().out.splitlines())) <= 120


class Squeezed(torch.nn.Module):
    """(1, classes) logits squeezed to (classes,) for a batch of one: every method refuses its output."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x).squeeze()


def test_a_method_refusing_the_model_fails_before_the_costly_maps(files, capsys, monkeypatch):
    """eps_lrp and deeplift refuse a LayerNorm: named, the run must stop before SmoothGrad's and IntegGrad's many
    forward passes, not after them; in the default methods, they are left out with a warning (and the maps of the
    methods that ran stay in method order)."""
    import importlib

    from rectgrad import zoo

    registry = importlib.import_module("rectgrad.methods")  # (rectgrad.methods is the function)
    tmp_path, images, _ = files
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 5, stride=4), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten(), torch.nn.LayerNorm(4), torch.nn.Linear(4, 3)).eval()
    torch.save(model, tmp_path / "normed.pt")
    called = []
    explain = registry.explain
    monkeypatch.setattr(registry, "explain", lambda *a, **k: called.append(a[3]) or explain(*a, **k))
    status, out, err = run(capsys, "explain", *images, "--model", str(tmp_path / "normed.pt"), "--methods",
                           "smoothgrad,intgrad,eps_lrp", "--out", str(tmp_path / "n.png"), "--no-progress")
    assert status == 2 and "error: eps_lrp cannot handle" in err
    assert "smoothgrad" not in called and "intgrad" not in called and called.count("eps_lrp") == 1
    assert not (tmp_path / "n.png").exists()
    called.clear()
    status, out, err = run(capsys, "explain", *images, "--model", str(tmp_path / "normed.pt"), "--out",
                           str(tmp_path / "n.png"), "--save-maps", str(tmp_path / "d.npz"), "--no-progress")
    assert status == 0, err  # the default methods: the two that refuse the model are left out, once each
    for method in ("eps_lrp", "deeplift"):
        assert err.count(f"warning: {method} left out: {method} cannot handle") == 1 and called.count(method) == 1
    assert "(--methods names the methods to run)" in err
    assert "eps_lrp" not in np.load(tmp_path / "d.npz") and "smoothgrad" in np.load(tmp_path / "d.npz")
    called.clear()
    torch.save(Squeezed(model), tmp_path / "squeezed.pt")
    status, out, err = run(capsys, "explain", *images, "--model", str(tmp_path / "squeezed.pt"), "--out",
                           str(tmp_path / "s.png"), "--no-progress")
    assert status == 2 and "drops the batch dimension for a batch of one" in err and "left out" not in err
    assert not (tmp_path / "s.png").exists()  # not a figure of whichever method survived (deeplift: a batch of 2)
    called.clear()
    grid = tmp_path / "g.npz"
    status, out, err = run(capsys, "explain", *images, "--model", str(tmp_path / "normed.pt"), "--methods",
                           "smoothgrad,saliency,rectgrad", "--out", str(tmp_path / "n.png"), "--save-maps", str(grid),
                           "--no-progress")
    assert status == 0, err
    saved = np.load(grid)
    assert list(saved.keys())[:3] == ["smoothgrad", "saliency", "rectgrad"]
    loaded = zoo.load(str(tmp_path / "normed.pt"), "cpu")
    x = loaded.load_images(images)
    for i in range(2):
        expected = explain(model, x[i:i + 1], None, "smoothgrad", internal_batch_size=25, seed=i)
        assert np.array_equal(saved["smoothgrad"][i:i + 1], expected.numpy())


def _colour_model(tmp_path):
    """A saved module with named classes whose top class is known by hand: class 0 ('red') sums the red channel's
    positive part, class 1 ('green') the green one's (1x1 convolution, ReLU, mean, identity head)."""
    conv = torch.nn.Conv2d(3, 2, 1, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0] = conv.weight[1, 1] = 1.0
    model = torch.nn.Sequential(conv, torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()).eval()
    torch.save(model, tmp_path / "colours.pt")
    (tmp_path / "colours.json").write_text('{"input_size": [3, 16, 16], "mean": 0.5, "std": 0.25, '
                                           '"label_names": ["red", "green"]}')
    rng = np.random.default_rng(1)
    images = []
    for name, channel in (("reddish.png", 0), ("greenish.png", 1)):
        pixels = rng.integers(0, 120, (16, 16, 3), dtype=np.uint8)
        pixels[..., channel] = rng.integers(150, 256, (16, 16), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / name)
        images.append(str(tmp_path / name))
    return model, str(tmp_path / "colours.pt"), images


def test_each_image_is_explained_for_its_own_class_with_the_options_given(tmp_path, capsys, monkeypatch):
    """The default target is each image's own top class (not the first image's), --q and --final-threshold reach
    both RectGrad methods, --seed (plus the image's index) and --internal-batch-size reach the methods; the saved
    maps are the methods' own, in --methods order, and each row label gives that image's probability."""
    import importlib

    from rectgrad import viz, zoo

    registry = importlib.import_module("rectgrad.methods")
    model, path, images = _colour_model(tmp_path)
    calls, grids, explain = [], [], registry.explain
    monkeypatch.setattr(registry, "explain", lambda *a, **k: calls.append((a[3], k)) or explain(*a, **k))
    grid = viz.grid
    monkeypatch.setattr(viz, "grid", lambda *a, **k: grids.append(k) or grid(*a, **k))
    saved = tmp_path / "maps.npz"
    status, out, err = run(capsys, "explain", *images, "--model", path, "--methods", "saliency,rectgrad_prr,rectgrad",
                           "--q", "90", "--final-threshold", "--seed", "5", "--internal-batch-size", "7",
                           "--save-maps", str(saved), "--out", str(tmp_path / "g.png"), "--no-progress")
    assert status == 0, err
    loaded = zoo.load(path, "cpu")
    x = loaded.load_images(images)
    with torch.no_grad():
        logits = model(x)
    assert logits.argmax(1).tolist() == [0, 1]  # (by construction: a red and a green image)
    with np.load(saved) as arrays:
        assert list(arrays.keys())[:3] == ["saliency", "rectgrad_prr", "rectgrad"]
        assert arrays["targets"].tolist() == [0, 1] and arrays["classes"].tolist() == ["red", "green"]
        for method in ("rectgrad_prr", "rectgrad"):
            for i in range(2):
                expected = explain(model, x[i:i + 1], i, method, q=90, final_threshold=True)
                np.testing.assert_allclose(arrays[method][i:i + 1], expected.numpy(), rtol=1e-5, atol=1e-7)
            default_q = explain(model, x, torch.tensor([0, 1]), method, final_threshold=True)
            assert not np.allclose(arrays[method], default_q.numpy())  # (--q 90 changes these maps)
    assert [(k["seed"], k["internal_batch_size"]) for m, k in calls if m == "saliency"] == [(5, 7), (6, 7)]
    probabilities = logits.softmax(1)
    assert [label.split("\n")[1] for label in grids[0]["row_labels"]] == [
        f"red ({float(probabilities[0, 0]):.0%})", f"green ({float(probabilities[1, 1]):.0%})"]
    assert f"{float(probabilities[1, 1]):.0%}" != f"{float(probabilities[0, 1]):.0%}"  # (the rows tell them apart)
    with warnings.catch_warnings():
        warnings.simplefilter("always", AttributionWarning)  # the command shows them
        status, out, err = run(capsys, "explain", *images, "--model", path, "--methods", "saliency", "--target",
                               "green", "--save-maps", str(saved), "--out", str(tmp_path / "g.png"), "--no-progress")
    assert status == 0 and out.splitlines()[0] == "explaining class 1 (green) in every image", err
    # the reddish image's green channel is below the mean everywhere: its ReLU is off, its map all zero
    assert [line for line in err.splitlines() if line.startswith("warning")] == [
        "warning: saliency on reddish.png: the attribution by saliency is all zero: the model's own gradient is zero "
        "there (e.g. a zero-initialised head, or no ReLU active)"]
    with np.load(saved) as arrays:  # the maps of the class named, for every image
        assert arrays["targets"].tolist() == [1, 1] and arrays["classes"].tolist() == ["green", "green"]
        with pytest.warns(AttributionWarning, match=r"^the attribution by saliency of sample\(s\) \[0\] is all "):
            expected = explain(model, x, torch.tensor([1, 1]), "saliency")
        np.testing.assert_allclose(arrays["saliency"], expected.numpy(), rtol=1e-5, atol=1e-7)
        assert not np.allclose(arrays["saliency"][0], explain(model, x[:1], 0, "saliency").numpy()[0])


def test_final_threshold_draws_the_baselines_top_5_percent_and_rectgrads_positive_part(files, capsys, monkeypatch):
    """Sec. 5.2 as drawn: with --final-threshold a baseline column keeps only its top 5% of pixels, RectGrad's column
    is non-zero exactly where its channel-summed map is positive, and the title says so; without it both are raw
    (RectGrad's map signed, though the method's own default is its positive part)."""
    from rectgrad import viz

    tmp_path, images, checkpoint = files
    grids, grid = [], viz.grid
    monkeypatch.setattr(viz, "grid", lambda im, columns, **k: grids.append((columns, k)) or grid(im, columns, **k))
    saved = tmp_path / "maps.npz"
    for final in (True, False):
        status, out, err = run(capsys, "explain", *images, "--model", checkpoint, "--methods", "saliency,rectgrad",
                               "--q", "80", *(["--final-threshold"] if final else []), "--save-maps", str(saved),
                               "--out", str(tmp_path / "g.png"), "--no-progress")
        assert status == 0, err
        columns, kwargs = grids[-1]
        with np.load(saved) as arrays:
            positive = arrays["rectgrad"].sum(1) > 0
            assert (arrays["rectgrad"] < 0).any() != final  # without: RectGrad's signed map, as the others are raw
        pixels = positive[0].size
        for i in range(2):
            kept = np.count_nonzero(columns["Saliency"][i])
            rect = columns["RectGrad"][i] != 0
            if final:
                assert kept <= 0.05 * pixels + 2 and kwargs["title"].endswith(", final threshold")
                assert np.array_equal(rect, positive[i]) and positive[i].sum() > 0.06 * pixels
            else:
                assert kept > 0.5 * pixels and ", final threshold" not in kwargs["title"]


def test_a_refusal_stops_the_run_before_the_other_images(files, capsys, monkeypatch):
    """Every method's first image comes before any second image: a named method refusing the model stops the run
    having computed one map of the others; a default method refusing only a later image stops the run (it is not
    left out after its first map was drawn), nor does one where every default method refuses the model."""
    import importlib

    from rectgrad.operations import UnsupportedModel

    registry = importlib.import_module("rectgrad.methods")
    tmp_path, images, checkpoint = files
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 5, stride=4), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten(), torch.nn.LayerNorm(4), torch.nn.Linear(4, 3)).eval()
    torch.save(model, tmp_path / "normed.pt")
    called, explain = [], registry.explain
    monkeypatch.setattr(registry, "explain", lambda *a, **k: called.append(a[3]) or explain(*a, **k))
    status, out, err = run(capsys, "explain", *images, "--model", str(tmp_path / "normed.pt"), "--methods",
                           "rectgrad,eps_lrp", "--out", str(tmp_path / "n.png"), "--no-progress")
    assert status == 2 and "error: eps_lrp cannot handle" in err and called == ["rectgrad", "eps_lrp"]

    def deconv_refuses_the_second_image(model, x, target, method, **kwargs):
        if method == "deconv" and kwargs["seed"] == 1:
            raise UnsupportedModel("deconv cannot handle image two")
        return torch.ones_like(x)  # (the other maps do not matter here)

    monkeypatch.setattr(registry, "explain", deconv_refuses_the_second_image)
    status, out, err = run(capsys, "explain", *images, "--model", checkpoint, "--internal-batch-size", "2",
                           "--out", str(tmp_path / "d.png"), "--no-progress")
    assert status == 2 and err == "error: deconv cannot handle image two\n"
    assert not (tmp_path / "d.png").exists()

    def every_method_refuses(model, x, target, method, **kwargs):
        raise UnsupportedModel(f"{method} cannot handle it")

    monkeypatch.setattr(registry, "explain", every_method_refuses)  # the last default method stops the run: no
    status, out, err = run(capsys, "explain", *images, "--model", checkpoint, "--out", str(tmp_path / "d.png"),
                           "--no-progress")  # figure of the images alone
    assert status == 2 and err.count(" left out: ") == 9 and err.splitlines()[-1].startswith("error: ")
    assert not (tmp_path / "d.png").exists()


def test_option_bounds(tmp_path, capsys, monkeypatch):
    """The edges of the option checks: --q 0 and --seed 2**63 - 1 are taken, --q nan and --seed 2**63 refused;
    --methods names are stripped, kept in the order given and known before the model loads; --save-maps may not
    overwrite an input file; demo checks --internal-batch-size before loading its model; --device auto is cuda
    exactly when one is available."""
    from rectgrad import zoo
    from rectgrad.cli import _options

    def loaded(*args, **kwargs):
        raise RuntimeError("model loads")

    monkeypatch.setattr(zoo, "load", loaded)
    monkeypatch.chdir(tmp_path)
    Image.new("RGB", (8, 8)).save(tmp_path / "image.png")
    (tmp_path / "maps.npz").write_bytes(b"")
    for options, message in ((["--q", "0"], "error: model loads"),
                             (["--seed", str(2**63 - 1)], "error: model loads"),
                             (["--methods", " rectgrad , saliency,"], "error: model loads"),
                             (["--q", "nan"], "error: --q must be a percentile in [0, 100], got nan"),
                             (["--methods", "saliency,rectgrd"], "error: unknown method 'rectgrd'"),
                             (["--seed", str(2**63)], "error: --seed must be an integer in [0, 2**63)")):
        status, out, err = run(capsys, "explain", "image.png", "--model", "m.pt", *options)
        assert status == 2 and err.startswith(message) and err.count("\n") == 1, (options, err)
    status, out, err = run(capsys, "explain", "image.png", "maps.npz", "--model", "m.pt", "--save-maps", "maps.npz")
    assert status == 2 and err.startswith("error: --save-maps maps.npz is the input image maps.npz"), err
    status, out, err = run(capsys, "demo", "--internal-batch-size", "0")
    assert status == 2 and err == "error: --internal-batch-size must be a positive integer, got 0\n"
    assert _options.methods(" rectgrad , saliency,", ()) == ["rectgrad", "saliency"]
    for available, expected in ((True, "cuda"), (False, "cpu")):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
        assert _options.device("auto") == expected


def test_target_names_match_whole_words_and_say_how():
    """A name given as a word matches a class holding it as a whole word only (not 'catfish' for 'cat'); the line
    says how a beginning was matched (any case) and shows no name for a class without one; a number that another
    class is named (spaces around it) is ambiguous; an ambiguous name lists ten classes at most."""
    from rectgrad.cli.explain import _class_index, _target_line

    assert _class_index("cat", ["a cat", "the catfish"]) == 0
    assert _target_line("Tru", 9, "truck") == ("explaining class 9 (truck) in every image: --target 'Tru' matched it "
                                               "by prefix")
    for count in (10, 11):  # the first ten names of an ambiguous beginning, and "..." when there are more
        with pytest.raises(ValueError) as refused:
            _class_index("dog", [f"dog {k}" for k in range(count)])
        assert str(refused.value).count("(") == 10 and str(refused.value).endswith(
            ", ...; give a whole name or an index" if count > 10 else "(9); give a whole name or an index")
    assert _target_line("2", 2, "class 2") == "explaining class 2 in every image"
    with pytest.raises(ValueError, match="class index 0 is 'x', but class 2 is named '0'"):
        _class_index("0", ["x", "y", " 0 "])


def test_exit_statuses_of_interruptions_empty_messages_and_bugs(tmp_path, capsys, monkeypatch):
    """Ctrl-C exits with 130 and one line; a user error without a message is named by its type; an error that is no
    user error (a bug) is not hidden as one; RECTGRAD_DEBUG=no / false (any case, spaces) is off, any other value
    shows the traceback instead of the line; a message over several lines is said on one; no command is a usage
    error."""
    from rectgrad import zoo

    Image.new("RGB", (8, 8)).save(tmp_path / "image.png")
    argv = ("explain", str(tmp_path / "image.png"), "--model", "m.pt", "--out", str(tmp_path / "g.png"))

    def raising(error):
        def read_image(path):
            raise error
        return read_image

    monkeypatch.setattr(zoo, "read_image", raising(KeyboardInterrupt()))
    assert run(capsys, *argv)[::2] == (130, "interrupted\n")
    monkeypatch.setattr(zoo, "read_image", raising(FileNotFoundError()))
    assert run(capsys, *argv)[::2] == (2, "error: FileNotFoundError\n")
    monkeypatch.setattr(zoo, "read_image", raising(AssertionError("a bug")))
    with pytest.raises(AssertionError, match="a bug"):
        main(list(argv))
    monkeypatch.setattr(zoo, "read_image", raising(ValueError("bad image")))
    for value in ("no", " FALSE ", "0", ""):
        monkeypatch.setenv("RECTGRAD_DEBUG", value)
        assert run(capsys, *argv)[::2] == (2, "error: bad image\n"), value
    for value in ("1", "yes"):
        monkeypatch.setenv("RECTGRAD_DEBUG", value)
        with pytest.raises(ValueError, match="bad image"):
            main(list(argv))

    from rectgrad.cli import _one_line

    assert _one_line("Traceback:\n\n    x = conv(x)  \n  File 'code.py'\n") == "Traceback: x = conv(x) File 'code.py'"
    status, out, err = run(capsys)  # no command: the usage, and the status of a usage error
    assert status == 2 and "Usage: rectgrad [OPTIONS] COMMAND" in out + err


def test_advice_repeated_in_a_run_is_said_once_and_again_in_the_next_run(monkeypatch, capsys):
    # main() keeps the lines said in this run: a study repeating one warning at each setting (from anywhere) says
    # it once, another warning still shows, and the next run starts afresh
    import warnings

    import rectgrad.cli

    def work(argv):
        for where in ("a.py", "b.py", "a.py"):
            warnings.warn_explicit("the same advice", UserWarning, where, 1)  # (no registry: never filtered out)
        warnings.warn_explicit("other advice", UserWarning, "c.py", 1)
        return 0

    monkeypatch.delenv("RECTGRAD_DEBUG", raising=False)
    monkeypatch.setattr(rectgrad.cli, "_run", work)
    for _ in range(2):
        assert main(["study"]) == 0
        assert capsys.readouterr().err == "warning: the same advice\nwarning: other advice\n"


def test_a_missing_module_is_a_user_error_and_an_abort_or_early_ctrl_c_has_its_own_status(tmp_path, capsys,
                                                                                          monkeypatch):
    """A model needing a module that is not installed (ModuleNotFoundError) and an image too large for PIL
    (DecompressionBombError) are one error line each (status 2); a command
    that aborts (typer.Abort) says so with status 1; a Ctrl-C before typer runs the command (while the command line is
    built) is status 130 with one line, as one during the command is."""
    import typer

    import rectgrad.cli
    from rectgrad import zoo

    Image.new("RGB", (8, 8)).save(tmp_path / "image.png")
    argv = ("explain", str(tmp_path / "image.png"), "--model", "m.pt", "--out", str(tmp_path / "g.png"))

    def raising(error):
        def read_image(*args, **kwargs):
            raise error
        return read_image

    monkeypatch.delenv("RECTGRAD_DEBUG", raising=False)
    monkeypatch.setattr(zoo, "read_image", raising(ModuleNotFoundError("No module named 'timm'")))
    assert run(capsys, *argv)[::2] == (2, "error: No module named 'timm'\n")
    bomb = Image.DecompressionBombError("Image size (200000000 pixels) exceeds limit")  # PIL's, no user error class
    monkeypatch.setattr(zoo, "read_image", raising(bomb))
    assert run(capsys, *argv)[::2] == (2, f"error: an image would be too large to hold ({bomb})\n")
    monkeypatch.setattr(zoo, "read_image", raising(typer.Abort()))
    assert run(capsys, *argv)[::2] == (1, "aborted\n")
    monkeypatch.setattr(rectgrad.cli, "app", raising(KeyboardInterrupt()))
    assert run(capsys, *argv)[::2] == (130, "interrupted\n")


def test_a_long_message_is_kept_whole_up_to_800_characters_then_cut_in_the_middle():
    # a message on one line up to head + tail (500 + 300) characters is said whole; a longer one keeps its first 500
    # and its last 300 characters (where rectgrad's own advice stands)
    from rectgrad.cli import _one_line

    whole = "a" * 400 + "b" * 400
    assert _one_line(whole) == whole
    long = "a" * 500 + "x" + "b" * 300
    assert _one_line(long) == "a" * 500 + " ... " + "b" * 300
    assert _one_line("w" * 20 + "\n" + "z" * 20, head=10, tail=5) == "w" * 10 + " ... " + "z" * 5


def test_commands_are_listed_by_their_docstrings_whole_first_paragraph():
    # click would cut a command's listing at its first sentence ("Figs. " ends one); each is listed by its first
    # paragraph, lines and all, in groups too, and a short_help given stays
    import typer

    from rectgrad.cli import _listed_by_first_paragraph

    def command():
        """Figs. 2, 3: the first line,
        and its second line.

        Details."""

    group, inner = typer.Typer(), typer.Typer()
    group.command("a")(command)
    group.command("b", short_help="its own")(command)
    group.command("c", help="Given help.\n\nMore.")(command)
    inner.command("d")(command)
    group.add_typer(inner, name="inner")
    _listed_by_first_paragraph(group)
    assert [info.short_help for info in group.registered_commands] == [
        "Figs. 2, 3: the first line,\nand its second line.", "its own", "Given help."]
    assert inner.registered_commands[0].short_help == "Figs. 2, 3: the first line,\nand its second line."


def test_a_click_error_in_a_command_keeps_its_own_status_and_wording(tmp_path, capsys, monkeypatch):
    # a click exception raised in a command (status 1, unlike a usage error's 2) is shown by click and keeps its status
    import click

    from rectgrad import zoo

    def refusing(*args, **kwargs):
        raise click.ClickException("cannot open it")

    Image.new("RGB", (8, 8)).save(tmp_path / "image.png")
    monkeypatch.setattr(zoo, "read_image", refusing)
    status, _, err = run(capsys, "explain", str(tmp_path / "image.png"), "--model", "m.pt", "--out",
                         str(tmp_path / "g.png"))
    assert (status, err) == (1, "Error: cannot open it\n")


def test_out_of_memory_advice_reaches_every_study_command():
    # the advice follows argv down the group to the command that ran, whichever it is; the group alone has no options
    from rectgrad.cli import _memory_advice

    for command in ("threshold", "coherence", "adversarial", "layers", "feature-maps", "rules"):
        assert _memory_advice(["study", command, "--count", "3"]) == ("use fewer or smaller images (--count) or a "
                                                                      "smaller --internal-batch-size"), command
    assert _memory_advice(["study"]) == "free memory or use a machine with more"


def test_an_image_named_with_dollar_signs_is_drawn(files, capsys):
    # a file name is no mathtext: "a$\\bad$.png" is drawn as it is (it failed after the maps, naming no file)
    tmp_path, images, checkpoint = files
    named = tmp_path / "a$\\bad$.png"
    named.write_bytes(Path(images[1]).read_bytes())
    grid = tmp_path / "grid.png"
    status, out, err = run(capsys, "explain", str(named), "--model", checkpoint, "--methods", "saliency",
                           "--out", str(grid), "--no-progress", "--device", "cpu")
    assert status == 0, err
    assert grid.is_file()


def test_an_image_name_with_dollar_signs_is_shown_as_it_is():
    # 'cost 5$ to 6$.png' is no 'cost 5' + italic 'to6' + '.png'
    from rectgrad import viz

    name = "cost 5$ to 6$.png"
    fig = viz.grid(torch.zeros(1, 3, 8, 8), {"saliency": np.ones((1, 8, 8))}, row_labels=[name])
    label = fig.axes[0].yaxis.label
    assert label._preprocess_math(label.get_text()) == (name, False)  # drawn literally, not as mathtext


def test_an_input_that_is_a_pipe_is_not_called_missing(files, capsys):
    import os

    tmp_path, images, checkpoint = files
    pipe = tmp_path / "photo.png"
    os.mkfifo(pipe)
    status, out, err = run(capsys, "explain", str(pipe), "--model", checkpoint, "--methods", "saliency",
                           "--out", str(tmp_path / "never.png"), "--no-progress")
    assert status == 2 and err.startswith("error: ") and err.count("\n") == 1 and str(pipe) in err
    assert f"error: {pipe} is no regular file (a pipe or a device): save the image to a file" in err  # not missing
    from rectgrad import zoo

    with pytest.raises(ValueError, match="is no regular file"):  # the Python API's reader too
        zoo.read_image(pipe)


def test_a_folder_of_masks_only_says_its_files_are_taken_for_masks(files, capsys):
    tmp_path, images, checkpoint = files
    masks = tmp_path / "masks"
    masks.mkdir()
    (masks / "cat_mask.png").write_bytes(Path(images[1]).read_bytes())
    status, out, err = run(capsys, "explain", str(masks), "--model", checkpoint, "--methods", "saliency",
                           "--out", str(tmp_path / "never.png"), "--no-progress")
    assert status == 2 and err.startswith("error: ") and err.count("\n") == 1 and str(masks) in err
    assert f"in folder {masks}; its files named <stem>_mask.<ext> are object masks, not images" in err


def test_an_image_named_in_latin1_is_drawn(files, capsys):
    # a Latin-1 file name (a surrogate escape in Python) is printed and drawn, not a failure after the maps
    import os

    tmp_path, images, checkpoint = files
    named = tmp_path / os.fsdecode(b"caf\xe9.png")
    named.write_bytes(Path(images[1]).read_bytes())
    grid = tmp_path / "grid.png"
    status, out, err = run(capsys, "explain", str(named), "--model", checkpoint, "--methods", "saliency",
                           "--out", str(grid), "--no-progress", "--device", "cpu")
    assert status == 0, err
    assert grid.is_file() and "caf\\xe9.png" in out  # its top-5 line, the undecodable byte shown escaped


def test_explain_holds_one_image_at_full_size_at_a_time(files, capsys, full_size_images):
    # a folder of phone photos must not be decoded into memory all at once: each is reduced before the next is read
    tmp_path, images, checkpoint = files
    more = [str(tmp_path / f"more{i}.png") for i in range(3)]
    for path in more:
        Image.open(images[0]).save(path)
    status, _, err = run(capsys, "explain", *images, *more, "--model", checkpoint, "--methods", "saliency",
                         "--out", str(tmp_path / "grid.png"), "--no-progress", "--device", "cpu")
    assert status == 0, err
    # every image is read to check it, then again to preprocess it
    assert len(full_size_images) == 2 * 5 and max(full_size_images) == 1


def test_an_exported_program_of_a_bounded_batch_takes_internal_batch_size_batches_or_refuses_at_once(files, capsys):
    # Its top-5 pass ran every image as one batch (a raw AssertionError over the bound); a larger
    # --internal-batch-size failed only after the rule-based maps
    tmp_path, images, _ = files
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten(), torch.nn.Linear(4, 3)).eval()
    batch = torch.export.Dim("batch", min=1, max=2)
    program = torch.export.export(model, (torch.randn(2, 3, 16, 16),), dynamic_shapes=({0: batch},))
    torch.export.save(program, tmp_path / "bounded.pt2")
    three = [*images, images[0].replace("image0", "image2")]
    Image.open(images[0]).save(three[-1])
    status, out, err = run(capsys, "explain", *three, "--model", str(tmp_path / "bounded.pt2"), "--methods",
                           "saliency,smoothgrad", "--internal-batch-size", "2", "--out", str(tmp_path / "b.png"),
                           "--no-progress")
    assert status == 0 and (tmp_path / "b.png").is_file(), err
    status, out, err = run(capsys, "explain", *three, "--model", str(tmp_path / "bounded.pt2"), "--methods",
                           "rectgrad,smoothgrad", "--out", str(tmp_path / "c.png"), "--no-progress")
    assert status == 2 and out == "" and err.endswith(
        f"error: --internal-batch-size 25: {tmp_path / 'bounded.pt2'} was exported for batches of at most 2; pass "
        "--internal-batch-size 2\n"), err


def test_a_model_of_one_output_shows_that_output_not_a_softmax_of_100_percent(files, capsys):
    # A binary classifier's single logit: softmax over one class is 1 whatever the logit, printed as "class 0 100.0%"
    tmp_path, images, _ = files
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten(), torch.nn.Linear(4, 1)).eval()
    torch.save(model, tmp_path / "one.pt")
    (tmp_path / "one.json").write_text('{"input_size": [3, 16, 16], "mean": 0.5, "std": 0.5, "crop_pct": null, '
                                       '"label_names": ["cat"]}')
    status, out, err = run(capsys, "explain", images[1], "--model", str(tmp_path / "one.pt"), "--methods",
                           "saliency", "--out", str(tmp_path / "o.png"), "--no-progress")
    from rectgrad import zoo
    loaded = zoo.load(tmp_path / "one.pt")
    with torch.no_grad():
        logit = float(model(loaded.load_images([images[1]])))
    assert status == 0 and "%" not in out and out.splitlines()[0] == f"image1.png: cat output {logit:.3g}", (out, err)


def test_ctrl_c_while_the_command_imports_exits_130_with_one_line(tmp_path, monkeypatch, capsys):
    # the console script imported rectgrad.__main__, and so rectgrad/__init__ and torch (seconds), before any code of
    # rectgrad ran: a Ctrl-C then printed a traceback. Its entry point lives outside the package, and imports it inside
    import os
    import re
    import subprocess
    import sys
    import types

    import _rectgrad_launcher
    import rectgrad.__main__

    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    assert re.search(r'^rectgrad = "_rectgrad_launcher:main"', pyproject.split("[project.scripts]")[1], re.M)
    imported = subprocess.run([sys.executable, "-c", "import sys, _rectgrad_launcher; print(sorted({'rectgrad', "
                               "'torch'} & set(sys.modules)))"], capture_output=True, text=True, timeout=60,
                              env={**os.environ, "PYTHONPATH": str(Path(_rectgrad_launcher.__file__).parent)})
    assert imported.stdout == "[]\n", imported.stderr  # importing the entry point runs nothing of rectgrad or torch
    (tmp_path / "importing_torch.py").write_text("raise KeyboardInterrupt\n")  # Ctrl-C in the middle of an import
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(_rectgrad_launcher, "COMMAND", "importing_torch")
    assert _rectgrad_launcher.main() == 130
    assert capsys.readouterr().err == "interrupted\n"

    class Interrupted(types.ModuleType):  # python -m rectgrad: a Ctrl-C while the command's modules import
        def __getattr__(self, name):
            raise KeyboardInterrupt

    monkeypatch.setitem(sys.modules, "rectgrad.cli", Interrupted("rectgrad.cli"))
    assert rectgrad.__main__.main() == 130
    assert capsys.readouterr().err == "interrupted\n"


def test_explain_a_figure_too_large_to_draw_says_to_explain_fewer_images(files, capsys, monkeypatch):
    # explain draws at 150 dpi and takes no --dpi: save_figure's "give a smaller dpi" could not be followed
    from rectgrad import viz

    tmp_path, images, checkpoint = files
    monkeypatch.setattr(viz, "MAX_PIXELS", 1000)  # (as many rows as would pass 2**30 pixels: about 1800 images)
    status, out, err = run(capsys, "explain", images[1], "--model", checkpoint, "--methods", "saliency", "--out",
                           str(tmp_path / "g.png"), "--save-maps", str(tmp_path / "m.npz"), "--no-progress")
    assert status == 2 and err.startswith("error: dpi 150 makes a ") and err.count("\n") == 1, err
    assert f"to draw), for its 1 row of images: explain fewer at once (the maps of all are in {tmp_path / 'm.npz'})" \
           in err and "smaller dpi" not in err
    assert (tmp_path / "m.npz").is_file() and not (tmp_path / "g.png").exists()
