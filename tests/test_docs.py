"""The documentation's Python examples run as written, and its links between pages resolve.

The examples load EfficientNet-Lite0 and photos; here ``zoo.load`` hands them a small ReLU CNN with the same
1000 ImageNet classes instead, and the photos are small image files, so that they run offline in a second. What is
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
