"""The documentation's Python examples run as written, and its links between pages resolve.

The examples load EfficientNet-Lite0 and photos; here ``zoo.load`` hands them a small ReLU CNN with the same
1000 ImageNet classes instead, and the photos are small image files, so that they run offline in a second. The
Fashion-MNIST examples get small random datasets of its shape, the ROAR/KAR example a stand-in for the 20-epoch
retraining, and the names the evaluation example leaves to the reader (model, maps, datasets) are given. What is
checked is the examples' own code: every name, argument and call of the block.
"""
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from rectgrad import zoo

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def python_block(page: str, heading: str) -> str:
    """The first ```python block after ``heading`` (a whole heading line) of ``page``."""
    text = (ROOT / page).read_text()
    start = re.search(rf"^{re.escape(heading)}$", text, re.M)
    assert start, f"{page} has no heading {heading!r}"
    block = re.search(r"^```python\n(.*?)^```", text[start.end():], re.M | re.S)
    assert block, f"{page} has no python block after {heading!r}"
    return block.group(1)


@pytest.fixture
def small_zoo(tmp_path, monkeypatch):
    """``zoo.load`` of any name gives a small ReLU CNN with ImageNet's classes; cat.jpg and dog.jpg exist."""
    def load(name, device="cpu", *, weights=None):
        assert name in zoo.MODEL_NAMES, f"the docs load {name!r}, which the zoo does not have"
        model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                              nn.Linear(4 * 8 * 8, 1000)).eval()
        return zoo.LoadedModel(str(name), model, (16, 16), zoo.LITE_MEAN, zoo.LITE_STD, zoo.imagenet_labels())

    from PIL import Image

    generator = np.random.default_rng(0)
    for name in ("cat.jpg", "dog.jpg"):
        Image.fromarray(generator.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(tmp_path / name)
    monkeypatch.setattr(zoo, "load", load)
    monkeypatch.chdir(tmp_path)


@pytest.mark.filterwarnings("ignore::UserWarning")  # a small random model's maps may come out all zero
def test_readme_use_it_block_runs(small_zoo):
    namespace = {}
    exec(python_block("README.md", "## Use it"), namespace)
    x = namespace["x"]
    assert x.shape == (2, 3, 16, 16)
    assert namespace["attr"].shape == x.shape and namespace["g"].shape == x.shape  # "shape of x"
    assert namespace["maps"].shape == x.shape
    assert isinstance(namespace["rectgrad"].methods(), dict)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_methods_page_examples_run(small_zoo):
    loaded = zoo.load("efficientnet-lite0")
    namespace = {"model": loaded.model, "x": torch.randn(3, 3, 16, 16), "y": [1, 2, 3]}
    exec(python_block("docs/methods-and-cli.md", "## One call, every method"), namespace)
    assert namespace["maps"].shape == (3, 3, 16, 16)

    namespace = {}
    exec(python_block("docs/methods-and-cli.md", "## Visualization (Appendix F.1)"), namespace)
    assert set(namespace["maps"]) == {"saliency", "rectgrad"} and namespace["fig"].axes

    namespace = {}
    exec(python_block("docs/methods-and-cli.md", "## Model registry (`rectgrad.zoo`)"), namespace)
    assert namespace["x"].shape == (1, 3, 16, 16)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_studies_page_example_runs(small_zoo, tmp_path):
    (tmp_path / "photos").mkdir()
    for name in ("cat.jpg", "dog.jpg"):
        (tmp_path / name).rename(tmp_path / "photos" / name)
    namespace = {}
    exec(python_block("docs/studies.md", "# Studies: the paper's pictures as commands, with numbers"), namespace)
    assert [row["setting"] for row in namespace["result"].tables["sparsity"]][:2] == ["tau = 0", "q = 0"]
    assert {"threshold.md", "threshold_sparsity.csv"} <= {f.name for f in (tmp_path / "out" / "threshold").iterdir()}


@pytest.fixture
def small_fashion_mnist(monkeypatch):
    """``rectgrad.data.load_dataset`` of any name gives random 1x28x28 images of Fashion-MNIST's classes: 100 train
    (one batch), 20 test."""
    from rectgrad import data

    def load(name, split="train", data_dir=None, download=False, image_size=32, progress=False):
        assert name in data.DATASETS, f"the docs load {name!r}, which rectgrad.data does not have"
        count = {"train": 100, "test": 20}[split]
        generator = torch.Generator().manual_seed(count)
        images = torch.randint(0, 256, (count, 1, 28, 28), dtype=torch.uint8, generator=generator)
        return data.ImageDataset(images, torch.arange(count) % 10, list(data.FASHION_MNIST_CLASSES), name)

    monkeypatch.setattr(data, "load_dataset", load)
    return load


def test_data_and_training_page_examples_run(small_fashion_mnist, tmp_path, monkeypatch):
    page = "docs/data-and-training.md"
    namespace = {}
    exec(python_block(page, "## Datasets"), namespace)
    x = namespace["x"]
    assert x.shape == (100, 1, 28, 28) and x.dtype == torch.float32 and -1 <= x.min() and x.max() <= 1

    namespace["test"] = small_fashion_mnist("fashion-mnist", "test")
    exec(python_block(page, "### Random-patch occlusion"), namespace)
    patch = namespace["patch"]
    assert patch.region(28, 28).sum() == 100 and patch.visible_region(28, 28).sum() == 64  # "10x10", "8x8"

    namespace["train"] = namespace["train"].subset(slice(10))  # (its 20 epochs, on 10 images: the call is checked)
    exec(python_block(page, "## Training"), namespace)
    history = namespace["history"]
    assert len(history["loss"]) == len(history["train_accuracy"]) == 20 and 0 <= history["test_accuracy"] <= 1

    from rectgrad.cli import main

    monkeypatch.chdir(tmp_path)  # the checkpoint's layout as `rectgrad train` writes it
    assert main(["train", "--dataset", "fashion-mnist", "--out", "model.pt", "--epochs", "1", "--device", "cpu",
                 "--no-progress"]) == 0
    written = torch.load("model.pt", weights_only=True)
    shown = eval(python_block(page, "## Checkpoints"))
    assert set(shown) == set(written) and shown["config"] == written["config"]
    assert set(shown["metadata"]) == set(written["metadata"])


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # random maps' tiny scores: the tie-breaking noise warns
def test_evaluation_page_example_runs(monkeypatch):
    from rectgrad import evaluation, train_many
    from rectgrad.data import ImageDataset
    from rectgrad.models import PaperCNN

    trainings = []

    def retrainer(epochs):
        def train_fn(train, test, seed):
            trainings.append((epochs, len(train.images), seed))
            return 0.5
        return train_fn

    monkeypatch.setattr(train_many, "Retrainer", retrainer)  # (20 epochs of the paper's training: the call is checked)
    occlusion = evaluation.feature_map_occlusion
    monkeypatch.setattr(evaluation, "feature_map_occlusion",  # (100 steps x 50 orders of forward passes: 3 x 2)
                        lambda *args, **kwargs: occlusion(*args, **({"steps": 3, "orders": 2} | kwargs)))
    generator = torch.Generator().manual_seed(0)
    train, test = (ImageDataset(torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=generator),
                                torch.arange(n) % 10, [str(c) for c in range(10)], "random") for n in (20, 10))
    model = PaperCNN(in_channels=3, image_size=32).eval()
    masks = torch.zeros(4, 32, 32, dtype=torch.bool)
    masks[:, 8:24, 8:24] = True
    namespace = {"model": model, "inputs": test.inputs(torch.arange(4)), "masks": masks, "labels": test.labels[:4],
                 "maps": torch.rand(4, 1, 32, 32, generator=generator), "train": train, "test": test,
                 "train_maps": torch.rand(20, 1, 32, 32, generator=generator),
                 "test_maps": torch.rand(10, 1, 32, 32, generator=generator)}
    exec(python_block("docs/evaluation.md", "## Library"), namespace)
    assert namespace["curve"].margins.shape == (4, 3)
    assert namespace["inside"].shape == (4,) and {"outside", "total_variation"} <= set(namespace["noise"])
    result = namespace["result"]
    assert set(result.accuracies) == {"rectgrad", "random"} and result.score("rectgrad") == pytest.approx(0.5)
    assert {epochs for epochs, _, _ in trainings} == {20} and len(trainings) == 2 * 5 * 3


def github_anchors(page: Path) -> set[str]:
    """The anchors GitHub gives the headings of ``page`` (outside code blocks)."""
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.M | re.S)
    anchors, seen = set(), {}
    for heading in re.findall(r"^#+\s+(.*?)\s*$", text, re.M):
        anchor = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        count = seen.get(anchor, 0)
        seen[anchor] = count + 1
        anchors.add(anchor if count == 0 else f"{anchor}-{count}")
    return anchors


def test_github_anchors_of_headings(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Padding trick (Appendix C.1)\n\n## `rectgrad.zoo`: models\n\n```bash\n# not a heading\n```\n"
                    "## Output\n\n### Output\n")
    assert github_anchors(page) == {"padding-trick-appendix-c1", "rectgradzoo-models", "output", "output-1"}


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_links_between_pages_resolve(page):
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.M | re.S)
    broken = []
    for link in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", link):
            continue
        path, _, anchor = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        if not target.exists():
            broken.append(f"{link}: no such file")
        elif anchor and target.suffix == ".md" and anchor not in github_anchors(target):
            broken.append(f"{link}: no heading with that anchor")
    assert broken == []


def cli_commands() -> dict[str, object]:
    """Every command of the ``rectgrad`` CLI by its name (``""``, ``explain``, ``study threshold``, ...)."""
    import typer

    from rectgrad.cli import app

    commands, stack = {}, [((), typer.main.get_command(app))]
    while stack:
        path, command = stack.pop()
        commands[" ".join(path)] = command
        stack += [((*path, name), sub) for name, sub in getattr(command, "commands", {}).items()]
    return commands


def options_of(command) -> dict[str, object]:
    """Every option name of a click ``command`` (``--x``, ``--no-x``) with its parameter."""
    return {name: parameter for parameter in command.params for name in (*parameter.opts, *parameter.secondary_opts)
            if name.startswith("--")}


NOT_RECTGRAD_OPTIONS = {"--head"}  # `ray start --head` (docs/evaluation.md)


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_option_the_docs_name_exists(page):
    """A stale or misspelt option name in the docs (``--internal-batchsize``, a renamed option) is no option of any
    command; links' anchors (``#your-own-images---dataset-folder``) are not options."""
    known = {name for command in cli_commands().values() for name in options_of(command)} | {"--help"}
    text = re.sub(r"\]\([^)\s]*\)", "]()", page.read_text())
    named = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9]*(?:-[a-z0-9]+)*", text))
    assert named - known - NOT_RECTGRAD_OPTIONS == set()


def test_explain_options_table_matches_the_command():
    """The option table of docs/methods-and-cli.md lists every option of ``rectgrad explain``, no other, with its
    default where the table gives a number or a file name."""
    text = (ROOT / "docs/methods-and-cli.md").read_text()
    rows = re.findall(r"^\| `(--[a-z-]+)(?:/--[a-z-]+)?(?: [^`]*)?` \|([^|]*)\|", text, re.M)
    options = options_of(cli_commands()["explain"])
    assert {name for name, _ in rows} == {name for name in options if not name.startswith("--no-")} - {"--help"}
    for name, default in rows:
        shown = default.strip().strip("`")
        if re.fullmatch(r"[0-9.]+", shown):
            assert float(options[name].default) == float(shown), name
        elif shown.endswith(".png"):
            assert str(options[name].default) == shown, name


def test_demo_options_sentence_matches_the_command():
    """docs/methods-and-cli.md's "`demo` takes ..." names every option of ``rectgrad demo``, no other."""
    text = (ROOT / "docs/methods-and-cli.md").read_text()
    sentence = re.search(r"^`demo` takes (.*?)\.", text, re.M | re.S).group(1)
    listed = set(re.findall(r"`(--[a-z-]+)`", sentence))
    options = options_of(cli_commands()["demo"])
    assert listed == {name for name in options if not name.startswith("--no-")} - {"--help"}


def test_train_usage_block_matches_the_command():
    """docs/data-and-training.md's ``rectgrad train`` synopsis: its options exist, with the defaults it shows."""
    text = (ROOT / "docs/data-and-training.md").read_text()
    block = re.search(r"^```bash\n(rectgrad train --dataset \{.*?)^```", text, re.M | re.S).group(1)
    options = options_of(cli_commands()["train"])
    shown = re.findall(r"(--[a-z-]+)(?: ([^\]\s]+))?", block)
    assert shown and {name for name, _ in shown} <= set(options)
    for name, value in shown:
        default = options[name].default
        if re.fullmatch(r"[0-9.e-]+", value) and default is not None:
            assert float(default) == float(value), name


def test_scale_keys_listed_are_the_scale_parameters():
    """docs/evaluation.md lists the keys of ``--set KEY=VALUE`` (reproduce's --help points there): all of them."""
    import dataclasses

    from rectgrad.evaluation import Scale

    text = (ROOT / "docs/evaluation.md").read_text()
    sentence = re.search(r"The keys \(`rectgrad\.evaluation\.Scale`\):(.*?) image counts take", text, re.S).group(1)
    listed = set(re.findall(r"`([a-z_]+)`", sentence))
    assert listed == {field.name for field in dataclasses.fields(Scale)}


def test_readme_command_table_lists_every_command():
    """README's command-line table: every command, and every study of ``rectgrad study {...}``, as the CLI has them."""
    text = (ROOT / "README.md").read_text()
    table = text[text.index("## Command line"):text.index("## Development")]
    commands = cli_commands()
    assert set(re.findall(r"^\| `rectgrad ([a-z-]+)", table, re.M)) == {name for name in commands if " " not in name
                                                                          and name}
    studies = re.search(r"`rectgrad study \{([a-z,-]+)\}", table).group(1).split(",")
    assert set(studies) == {name.split()[1] for name in commands if name.startswith("study ")}
    page = (ROOT / "docs/studies.md").read_text()
    assert set(re.findall(r"^\| \[`([a-z-]+)`\]", page, re.M)) == set(studies)
