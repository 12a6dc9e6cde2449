"""The studies (``rectgrad.studies``, ``rectgrad study``) end to end on tiny models and generated images."""
import copy
import csv
import dataclasses
import json
import math
import re
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from rectgrad import AttributionWarning, studies, zoo
from rectgrad.attr import RectGrad
from rectgrad.checkpoint import save_checkpoint
from rectgrad.cli import main
from rectgrad.cli.study import _WRITES
from rectgrad.data import FASHION_MNIST_SYSTEM_DIR
from rectgrad.engine import Options, Rule
from rectgrad.models import PaperCNN
from rectgrad.studies import Images
from rectgrad.studies._common import file_names
from rectgrad.data import image_files, load_image_folder_masks
from rectgrad.methods import explain
from rectgrad.studies._common import (engine_gradients, from_pixels, method_attributions, predict, ranks, resize_masks,
                                      spread, to_pixels, unique_names)
from rectgrad.studies.feature_maps import activations
from rectgrad.studies.layers import hidden_layers

SIZE = 12


def square_images(n: int = 4, channels: int = 1, seed: int = 0) -> Images:
    """Noise with a bright square (the object, also the mask) at a place that depends on the image."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, channels, SIZE, SIZE, generator=g) * 0.4 - 1
    masks = torch.zeros(n, SIZE, SIZE, dtype=torch.bool)
    for i in range(n):
        r, c = 1 + 3 * (i % 2), 1 + 3 * ((i // 2) % 2)
        masks[i, r:r + 6, c:c + 6] = True
    x = torch.where(masks[:, None], x + 1.5, x)
    return Images(x, [f"img{i}" for i in range(n)], classes=["a", "b", "c"],
                  labels=torch.tensor([0, 0, 1, 2] * (n // 4 + 1))[:n], masks=masks)


@pytest.fixture
def cnn():
    torch.manual_seed(0)
    return PaperCNN(in_channels=1, image_size=SIZE, num_classes=3).eval()


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def no_hooks_left(model: nn.Module) -> bool:
    return all(not m._forward_pre_hooks and not m._forward_hooks and not m._backward_hooks for m in model.modules())


# ------------------------------------------------------------------ helpers


def test_spearman_matches_scipy_with_ties():
    scipy_stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 5, 200).astype(float), rng.normal(size=200)
    assert studies.spearman(a, b) == pytest.approx(scipy_stats.spearmanr(a, b).statistic, abs=1e-12)
    assert np.array_equal(ranks(np.array([3.0, 1.0, 3.0, 2.0])), [2.5, 0.0, 2.5, 1.0])
    assert math.isnan(studies.spearman(torch.ones(3, 3), torch.rand(3, 3)))  # a constant map has no ranking


def test_study_helpers_by_hand(cnn):
    """resize_masks: a cell is object when at least half of it is; spread: evenly spaced, rounded to the nearest;
    predict: the softmax probability of the predicted class; method_attributions: a stochastic method draws from
    ``seed``."""
    masks = torch.zeros(1, 4, 4, dtype=torch.bool)
    masks[0, :2, :2] = True  # a whole cell
    masks[0, 0, 2:] = True  # half a cell: object
    masks[0, 2, 2] = True  # a quarter: background
    assert resize_masks(masks, (2, 2)).tolist() == [[[True, True], [False, False]]]
    assert spread(list(range(6)), 4) == [0, 2, 3, 5] and spread(list(range(6)), None) == list(range(6))
    images = square_images(3)
    classes, probabilities = predict(cnn, images.x)
    softmax = cnn(images.x).softmax(1)
    assert torch.equal(classes, softmax.argmax(1)) and torch.allclose(probabilities, softmax.max(1).values)
    maps, skipped = method_attributions(cnn, images.x, classes, ["smoothgrad"], seed=3)
    assert not skipped and torch.equal(maps["smoothgrad"], explain(cnn, images.x, classes, "smoothgrad", seed=3))


def test_pixel_space_round_trip():
    x = torch.rand(2, 3, 4, 4)
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    torch.testing.assert_close(from_pixels(to_pixels(x, mean, std), mean, std), x)
    pixels01 = x * torch.tensor(std).view(1, 3, 1, 1) + torch.tensor(mean).view(1, 3, 1, 1)
    torch.testing.assert_close(to_pixels(x, mean, std), 2 * pixels01 - 1)
    assert to_pixels(x) is x


def test_engine_gradients_match_the_public_api_and_leave_no_hooks(cnn):
    images = square_images()
    target = torch.tensor([0, 1, 2, 0])
    options = Options(rule=Rule(score="pr1", q=90.0), padding_trick=True)
    grad, hidden = engine_gradients(cnn, images.x, target, options, [("features.2", cnn.features[2])])
    expected = RectGrad(cnn).attribute(images.x, target=target, q=90.0, padding_trick=True, final_threshold=False)
    torch.testing.assert_close(images.x * grad, expected)
    assert [name for name, _, _ in hidden] == ["features.2"] and no_hooks_left(cnn)
    # with no rule the hidden gradient is the plain gradient with respect to the module's input
    _, [(_, h, g)] = engine_gradients(cnn, images.x, target, Options(), [("features.3", cnn.features[3])])
    h = h.clone().requires_grad_()
    head = nn.Sequential(*list(cnn.features)[3:], cnn.classifier)
    (plain,) = torch.autograd.grad(head(h).gather(1, target[:, None]).sum(), h)
    torch.testing.assert_close(g, plain)

    class FrozenFeatures(nn.Module):  # a probe on frozen features: the input map would be zero, silently
        def forward(self, x):
            with torch.no_grad():
                features = cnn.features(x)
            return cnn.classifier(features)

    with pytest.raises(ValueError, match="the model's output does not depend on its inputs through autograd"):
        engine_gradients(FrozenFeatures(), images.x, target, options, [("classifier", cnn.classifier)])


def test_hidden_layers_and_activations_follow_the_forward_pass(cnn):
    x = square_images().x
    assert [n for n, _ in hidden_layers(cnn, x)] == ["features.2", "features.5", "features.7"]
    assert [n for n, _ in hidden_layers(cnn, x, max_layers=2)] == ["features.2", "features.7"]
    assert [n for n, _ in hidden_layers(cnn, x, ["features.5", "features.2", "features.5"])] == ["features.5",
                                                                                                "features.2"]
    # an unknown name: the model's own names told (its convolutions; the closest name to a typo)
    convs = ", ".join(n for n, m in cnn.named_modules() if isinstance(m, nn.Conv2d))
    with pytest.raises(ValueError, match=re.escape(f"no module named 'nope' in the model: name its modules as "
                                                   f"model.named_modules() lists them, such as its convolutions "
                                                   f"{convs}")):
        hidden_layers(cnn, x, ["nope"])
    with pytest.raises(ValueError, match=re.escape("no module named 'feature.5' in the model (did you mean "
                                                   "'features.5'?)")):
        hidden_layers(cnn, x, ["feature.5"])
    maps = activations(cnn, x)
    assert [(k, tuple(a.shape[1:])) for k, a in maps] == [(1, (32, 12, 12)), (2, (32, 12, 12)), (3, (64, 6, 6)),
                                                          (4, (64, 6, 6))]
    torch.testing.assert_close(maps[0][1], torch.relu(cnn.features[0](x)))
    assert [k for k, _ in activations(cnn, x, max_layers=2)] == [1, 4]
    assert no_hooks_left(cnn)
    batch = torch.export.Dim("batch", max=64)
    exported = torch.export.export(cnn, (x,), dynamic_shapes=({0: batch},)).module()
    for model, kind in ((torch.jit.trace(cnn, x), "a TorchScript model"),
                        (exported, r"an exported program \(torch.export\)")):
        for call in (lambda m: hidden_layers(m, x), lambda m: hidden_layers(m, x, ["features.2"]),
                     lambda m: activations(m, x)):  # not "no convolution" or "never calls module 'features.2'"
            with pytest.raises(ValueError, match=f"watches the model's layers .* but {kind} runs their operations "
                                                 "inline: give the Python model"):
                call(model)
    traced = torch.fx.symbolic_trace(cnn)  # a graph module that still calls its layers: watched as the model
    assert [n for n, _ in hidden_layers(traced, x)] == [n for n, _ in hidden_layers(cnn, x)]


class BatchNormNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.bn = nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.conv2, self.fc = nn.Conv2d(4, 4, 3, padding=1), nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(torch.relu(self.conv2(torch.relu(self.bn(self.conv1(x))))).mean((2, 3)))


def test_studies_leave_a_train_mode_model_as_it_was_with_one_warning():
    images = square_images(2)
    calls = {"threshold": lambda m: studies.threshold(m, images, qs=(50,)),
             "coherence": lambda m: studies.coherence(m, images, methods=("saliency", "rectgrad")),
             "adversarial": lambda m: studies.adversarial(m, images, methods=("rectgrad",)),
             "layers": lambda m: studies.layers(m, images),
             "feature_maps": lambda m: studies.feature_maps(m, images, show=1),
             "rules": lambda m: studies.rules(m, images, candidates=("pr1", "pr2")),
             "fgsm": lambda m: studies.fgsm(m, images.x),
             "predict": lambda m: predict(m, images.x),
             "hidden_layers": lambda m: hidden_layers(m, images.x),
             "activations": lambda m: activations(m, images.x),
             "engine_gradients": lambda m: engine_gradients(m, images.x, None, Options())}
    for name, call in calls.items():
        model = BatchNormNet().train()
        before = copy.deepcopy(model.state_dict())
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            call(model)
        assert [str(w.message)[:31] for w in caught] == ["the model is in training mode: "], name
        assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()) and model.training, name


def test_masks_of_any_dtype_holding_0_and_1_become_bool(cnn):
    images = square_images(2)
    expected = studies.feature_maps(cnn, images, show=0).tables
    for dtype in (torch.uint8, torch.int64, torch.float32):
        converted = dataclasses.replace(images, masks=images.masks.to(dtype))
        assert converted.masks.dtype == torch.bool and torch.equal(converted.masks, images.masks)
        assert studies.feature_maps(cnn, converted, show=0).tables == expected
    for bad in (images.masks.to(torch.uint8) * 255, images.masks.float() - 0.5):
        with pytest.raises(ValueError, match="masks must hold only 0/1 .* values"):
            Images(images.x, images.names, masks=bad)
    with pytest.raises(TypeError, match="masks must be a torch tensor, got ndarray"):
        Images(images.x, images.names, masks=images.masks.numpy())


# ------------------------------------------------------------------ FGSM


class Flippable(nn.Module):
    """logits = (mean(x) + 0.005, 0): class 0 at x = 0, class 1 once every pixel drops by 0.01."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(SIZE * SIZE, 2)
        with torch.no_grad():
            self.linear.weight.zero_()
            self.linear.weight[0] = 1 / (SIZE * SIZE)
            self.linear.bias.copy_(torch.tensor([0.005, 0.0]))

    def forward(self, x):
        return self.linear(torch.relu(x + 2).flatten(1) - 2)


def test_fgsm_flips_a_tiny_model_with_the_papers_epsilon():
    model = Flippable()
    x = torch.zeros(2, 1, SIZE, SIZE)
    assert model(x).argmax(1).tolist() == [0, 0]
    x_adv = studies.fgsm(model, x, eps=0.01)
    torch.testing.assert_close(x_adv, torch.full_like(x, -0.01))
    assert model(x_adv).argmax(1).tolist() == [1, 1]
    # a normalized model: the step is eps on [-1, 1] pixels, i.e. eps / 2 / std in its input space
    mean, std = (0.5,), (0.25,)
    x_norm = from_pixels(x, mean, std)
    adv_norm = studies.fgsm(lambda t: model(to_pixels(t, mean, std)), x_norm, eps=0.01, mean=mean, std=std)
    torch.testing.assert_close(adv_norm - x_norm, torch.full_like(x, -0.01 / 2 / 0.25))
    # away from class 1 (an explicit target) means upwards here; pixels stay in [-1, 1]
    upwards = studies.fgsm(model, torch.ones_like(x), eps=0.5, target=torch.tensor([1, 1]))
    assert torch.equal(upwards, torch.ones_like(x))


@pytest.mark.parametrize("given, message", [
    ({"eps": -0.01}, "eps must be a finite positive step, got -0.01"),  # was a step down the loss: no attack
    ({"eps": float("nan")}, "eps must be a finite positive step, got nan"),  # was NaN images
    ({"internal_batch_size": 0}, "internal_batch_size must be a positive integer, got 0"),  # was all at once
    ({"internal_batch_size": -1}, "internal_batch_size must be a positive integer, got -1")])  # was torch's split
def test_fgsm_refuses_a_step_or_chunk_size_that_is_no_positive_number(given, message):
    with pytest.raises(ValueError, match=message):
        studies.fgsm(Flippable(), torch.zeros(2, 1, SIZE, SIZE), **given)


def test_fgsm_of_a_model_ending_in_a_softmax_is_the_logits_models():
    # the cross-entropy of probabilities took a second softmax over them: another loss, whose gradient's sign
    # differed at 0.1% of these pixels
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 8 * 8, 10)).double()
    x = torch.rand(16, 3, 8, 8, dtype=torch.float64) * 2 - 1
    assert torch.equal(studies.fgsm(nn.Sequential(net, nn.Softmax(1)), x), studies.fgsm(net, x))


def test_adversarial_study_reports_the_flip(tmp_path):
    model = Flippable()
    images = Images(torch.zeros(2, 1, SIZE, SIZE) + 0.001 * torch.rand(2, 1, SIZE, SIZE), ["p", "q"],
                    classes=["up", "down"])
    result = studies.adversarial(model, images, tmp_path, methods=("saliency", "smoothgrad", "rectgrad"))
    assert [r["flipped"] for r in result.tables["images"]] == [True, True]
    assert [r["adversarial class"] for r in result.tables["images"]] == ["down", "down"]
    assert [r["method"] for r in result.tables["sensitivity"]] == ["Saliency", "SmoothGrad", "RectGrad"]
    assert "flipped the predicted class of\n2 of 2 images" in (tmp_path / "adversarial.md").read_text()



class TwoPatterns(nn.Module):
    """Two logits, each a fixed random pattern of weights over relu(x): Saliency's map of class c is w_c * (x > 0)."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(SIZE * SIZE, 2)
        with torch.no_grad():
            self.linear.weight.copy_(torch.randn(2, SIZE * SIZE, generator=torch.Generator().manual_seed(0)))
            self.linear.bias.zero_()

    def forward(self, x):
        return self.linear(torch.relu(x).flatten(1))


def test_adversarial_study_numbers_by_hand(monkeypatch):
    """Each map explains its own input's predicted class; the class-flipped mean is over the flipped images only;
    excess = adversarial change - noise change; flipped images are drawn first; 'noise flipped' is the control's."""
    import importlib

    model = TwoPatterns().eval()
    x = torch.rand(6, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(1)) * 2 - 1
    images = Images(x, [f"img{i}" for i in range(6)], classes=["a", "b"])
    drawn = []
    adversarial_module = importlib.import_module("rectgrad.studies.adversarial")
    monkeypatch.setattr(adversarial_module.viz, "grid", lambda *args, row_labels, **kwargs: drawn.append(row_labels))
    result = studies.adversarial(model, images, eps=0.05, methods="saliency", show=2)
    predicted, x_adv = model(x).argmax(1), studies.fgsm(model, x, 0.05)
    predicted_adv = model(x_adv).argmax(1)
    flipped = (predicted_adv != predicted).tolist()
    assert flipped == [False, True, True, False, True, True]
    rows = result.tables["images"]
    assert [r["flipped"] for r in rows] == flipped and [r["noise flipped"] for r in rows] == [False] * 6
    clean = explain(model, x, predicted, "saliency").sum(1)
    adv = explain(model, x_adv, predicted_adv, "saliency").sum(1)
    change = [1 - studies.spearman(a, b) for a, b in zip(clean, adv)]
    (row,) = result.tables["sensitivity"]
    assert row["adversarial change"] == pytest.approx(np.mean(change))
    assert row["adversarial change, class flipped"] == pytest.approx(np.mean([c for c, f in zip(change, flipped) if f]))
    assert row["noise change"] > 0.01  # the sign noise moves some pixels across relu's kink: the maps change
    assert row["excess"] == pytest.approx(row["adversarial change"] - row["noise change"])
    assert drawn[0] == ["img1: b", "adv: a", "img2: b", "adv: a"]  # flipped images first
    assert "flipped the predicted class of\n4 of 6 images" in result.notes


# ------------------------------------------------------------------ each study end to end


def test_threshold_study(cnn, tmp_path):
    result = studies.threshold(cnn, square_images(), tmp_path, qs=(95, 0, 99, 50, 95.0))  # in order, each once
    rows = result.tables["sparsity"]
    assert [r["setting"] for r in rows] == ["tau = 0", "q = 0", "q = 50", "q = 95", "q = 99"]
    close = studies.threshold(cnn, square_images(), qs=(99.99991, 99.99994)).tables["sparsity"]
    assert [r["setting"] for r in close] == ["tau = 0", "q = 99.99991", "q = 99.99994"]  # none lost to its label
    nonzero = [r["nonzero fraction"] for r in rows[1:]]
    assert nonzero == sorted(nonzero, reverse=True) and nonzero[-1] < nonzero[0]
    assert rows[0]["rank correlation with tau = 0"] == pytest.approx(1.0)
    assert all(0 < r["positive fraction"] <= r["nonzero fraction"] for r in rows)  # zeros are not positive
    assert {p.name for p in tmp_path.iterdir()} == {".rectgrad-threshold.json", "threshold.md",
                                                    "threshold_sparsity.csv", "threshold_maps.png",
                                                    "threshold_sparsity.png"}
    assert len(read_csv(tmp_path / "threshold_sparsity.csv")) == 5


def test_threshold_study_takes_one_q_alone(cnn):
    # one percentile as a number is that one q (was "TypeError: 'int' object is not iterable")
    images = square_images(2)
    alone = studies.threshold(cnn, images, qs=90, show=0).tables["sparsity"]
    assert [r["setting"] for r in alone] == ["tau = 0", "q = 90"]
    assert alone == studies.threshold(cnn, images, qs=(90,), show=0).tables["sparsity"]


def test_threshold_numbers_by_hand(cnn):
    """Each row from RectGrad's x * R for that setting (no final threshold, padding trick as asked, predicted class):
    tau = 0 is Guided BP x input without the padding trick (Claim 2); per-image shares of non-zero and positive
    values, their mean and sample std; the Spearman correlation of each channel-summed map with the tau = 0 one, mean
    over the images."""
    images = square_images()
    x, predicted = images.x, cnn(images.x).argmax(1)
    for padding in (False, True):
        rows = studies.threshold(cnn, images, qs=(99, 90), padding_trick=padding, show=0).tables["sparsity"]
        maps = {f"q = {q}": RectGrad(cnn).attribute(x, target=predicted, q=float(q), padding_trick=padding,
                                                    final_threshold=False) for q in (90, 99)}
        reference = RectGrad(cnn).attribute(x, target=predicted, tau=0.0, padding_trick=padding, final_threshold=False)
        if not padding:  # (the padding trick zeroes the gradient's border: Guided BP has none)
            assert torch.equal(reference, explain(cnn, x, predicted, "guided_bp") * x)
        maps = {"tau = 0": reference} | maps
        assert [r["setting"] for r in rows] == list(maps)
        for row, attr in zip(rows, maps.values()):
            flat = attr.flatten(1)
            nonzero = (flat != 0).double().mean(1)
            assert row["nonzero fraction"] == pytest.approx(float(nonzero.mean())), (padding, row)
            assert row["nonzero std"] == pytest.approx(float(nonzero.std())), (padding, row)
            assert row["positive fraction"] == pytest.approx(float((flat > 0).double().mean())), (padding, row)
            similarity = np.mean([studies.spearman(a, r) for a, r in zip(attr.sum(1), reference.sum(1))])
            assert row["rank correlation with tau = 0"] == pytest.approx(similarity), (padding, row)
        assert rows[2]["rank correlation with tau = 0"] < 0.99  # q = 99 is no longer Guided BP x input
    assert rows[1]["nonzero std"] > 0  # with the padding trick, the images keep unequal shares at q = 90


def test_studies_say_when_the_model_calls_no_activation_the_rules_know():
    torch.manual_seed(0)  # tanh only: RectGrad is the plain gradient x input, every q and rule alike
    model = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(3 * SIZE * SIZE, 3))
    images = square_images(2)
    calls = {"threshold": lambda: studies.threshold(model, images, qs=(50, 99)),
             "rules": lambda: studies.rules(model, images, candidates=("pr1", "pr3")),
             "coherence": lambda: studies.coherence(model, images, methods=("rectgrad",)),
             "layers": lambda: studies.layers(model, images, layer_names=["1"])}
    for name, call in calls.items():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = call()
        said = [w for w in caught if "calls no activation function the engine knows" in str(w.message)]
        assert len(said) == 1, (name, len(said))  # once a study, not once per q or rule (catch_warnings in quiet)
    rows = result.tables["layers"]  # still computed: RectGrad's row is Saliency's
    assert [r["RectGrad nonzero"] for r in rows] == [r["Saliency nonzero"] for r in rows]


def test_show_0_draws_no_image_figure_and_a_negative_show_is_refused(cnn, tmp_path):
    images = square_images(2)
    calls = {"threshold": (lambda **kw: studies.threshold(cnn, images, qs=(50,), **kw), {"sparsity"}),
             "coherence": (lambda **kw: studies.coherence(cnn, images, methods=("saliency",), **kw), set()),
             "adversarial": (lambda **kw: studies.adversarial(cnn, images, methods=("saliency",), **kw), set()),
             "layers": (lambda **kw: studies.layers(cnn, images, **kw), set()),
             "feature_maps": (lambda **kw: studies.feature_maps(cnn, images, **kw), set()),
             "rules": (lambda **kw: studies.rules(cnn, images, candidates=("pr1",), **kw), set())}
    for name, (call, figures) in calls.items():
        result = call(show=0)  # the numbers alone, as with every image shown
        assert set(result.figures) == figures, name
        assert repr(result.tables) == repr(call(show=1).tables), name  # NaN (no pair of a kind) alike
        with pytest.raises(ValueError, match="show must be a whole number of images, 0 for none, None for all, got -1"):
            call(show=-1)  # not all images but the last
        with pytest.raises(TypeError, match="show must be a whole number of images, .*, got 2.5"):
            call(show=2.5)
        assert set(call(show=None).figures) == set(call(show=2).figures), name  # None: all (layers crashed)
    studies.threshold(cnn, images, tmp_path, qs=(50,), show=0)
    assert {p.name for p in tmp_path.iterdir()} == {".rectgrad-threshold.json", "threshold.md",
                                                    "threshold_sparsity.csv", "threshold_sparsity.png"}


def test_an_all_zero_map_has_no_background_share():
    from rectgrad.studies._common import finite_mean, outside_fraction

    maps, masks = torch.zeros(3, 4, 4), torch.zeros(3, 4, 4, dtype=torch.bool)
    masks[:, :2] = True  # object: the top half
    maps[1, 0, 0], maps[2, 3, 3] = 1.0, 2.0  # on the object; on the background
    shares = outside_fraction(maps, masks)
    assert math.isnan(shares[0]) and shares[1:].tolist() == [0.0, 1.0]  # 0 would score an empty map the cleanest
    assert finite_mean(shares.tolist()) == 0.5


def test_coherence_study(cnn, tmp_path):
    images = square_images()
    result = studies.coherence(cnn, images, tmp_path, methods=("saliency", "intgrad", "deeplift", "rectgrad"))
    rows = result.tables["similarity"]
    assert [r["method"] for r in rows] == ["Saliency", "IntegGrad", "DeepLIFT", "RectGrad"]
    for row in rows:
        assert all(-1 <= row[k] <= 1 for k in ("within", "across", "within, thresholded", "across, thresholded"))
    assert "1 pairs of images of the same class" in result.notes and "5 pairs of different classes" in result.notes
    # the paper thresholds the baselines only: RectGrad is shown and measured as it is (no final zero threshold)
    rectgrad_row, saliency_row = rows[3], rows[0]
    assert rectgrad_row["across"] == rectgrad_row["across, thresholded"]
    assert saliency_row["across"] != saliency_row["across, thresholded"]
    assert (tmp_path / "coherence_maps.png").stat().st_size > 0
    assert (tmp_path / "coherence_maps_thresholded.png").stat().st_size > 0


def test_coherence_numbers_by_hand(cnn):
    """Labels (0, 0, 1, 2): 'within' is the one pair of class 0, 'across' the five others; thresholded: the
    baseline's top 5% per map."""
    from rectgrad import viz

    images = square_images()
    (row,) = studies.coherence(cnn, images, methods="saliency", show=0).tables["similarity"]
    raw = viz.channel_sum(explain(cnn, images.x, cnn(images.x).argmax(1), "saliency"))
    for suffix, maps in (("", raw), (", thresholded", viz.final_threshold(raw, "top"))):
        across = [studies.spearman(maps[i], maps[j]) for i, j in ((0, 2), (0, 3), (1, 2), (1, 3), (2, 3))]
        assert row[f"within{suffix}"] == pytest.approx(studies.spearman(maps[0], maps[1]))
        assert row[f"across{suffix}"] == pytest.approx(np.mean(across))
    assert row["within"] != pytest.approx(row["within, thresholded"])


def test_coherence_draws_smoothgrad_from_the_seed_and_the_thresholded_figure_from_thresholded_maps(cnn, monkeypatch):
    import importlib

    from rectgrad.studies._common import display_maps, summed_maps

    images = square_images()
    coherence_module = importlib.import_module("rectgrad.studies.coherence")
    drawn = {}
    labels = []
    monkeypatch.setattr(coherence_module.viz, "grid", lambda x, columns, title, row_labels, **kwargs: drawn.update(
        {title: columns}) or labels.append(row_labels))
    (row,) = studies.coherence(cnn, images, methods="smoothgrad", seed=3, show=2).tables["similarity"]
    attr = explain(cnn, images.x, cnn(images.x).argmax(1), "smoothgrad", seed=3)
    maps = summed_maps(attr, "smoothgrad", False)
    assert row["within"] == pytest.approx(studies.spearman(maps[0], maps[1]))  # seed 0 draws other noise
    predicted = cnn(images.x).argmax(1).tolist()
    assert labels[0] == [f"img{i}: {images.classes[predicted[i]]}" for i in range(2)]  # the class explained
    assert predicted[:2] != images.labels[:2].tolist()  # (not the true one)
    for thresholded, title in ((False, "without"), (True, "with")):
        (columns,) = [c for t, c in drawn.items() if t.startswith(f"Coherence {title} ")]
        np.testing.assert_allclose(columns["SmoothGrad"], display_maps(attr[:2], "smoothgrad", thresholded), rtol=1e-5)


def test_coherence_skips_a_method_the_model_defeats(tmp_path):
    class Gated(nn.Module):  # a product of two input-dependent tensors: DeepLIFT refuses it
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 3, 3, padding=1)

        def forward(self, x):
            h = torch.relu(self.conv(x))
            return (h * torch.sigmoid(h)).mean((2, 3))

    result = studies.coherence(Gated().eval(), square_images(), methods=("saliency", "deeplift"))
    assert [r["method"] for r in result.tables["similarity"]] == ["Saliency"]
    assert "Skipped DeepLIFT" in result.notes


def test_adversarial_and_coherence_take_one_method_name_or_a_generator_of_them(cnn):
    images = square_images(3)
    for study in (studies.adversarial, studies.coherence):
        expected = study(cnn, images, methods=("saliency", "rectgrad"), show=1).tables
        given = study(cnn, images, methods=(m for m in ("saliency", "rectgrad")), show=1).tables
        assert repr(given) == repr(expected), study.__name__  # not a KeyError once the generator is spent
        alone = study(cnn, images, methods="rectgrad", show=1).tables  # not "unknown method 'r'"
        assert [row["method"] for row in next(iter(alone.values()))] == ["RectGrad"]


def test_layers_takes_one_layer_name_alone(cnn):
    # one name as a string is that one layer, not read letter by letter ("no module named 'f', 'e', ...")
    alone = studies.layers(cnn, square_images(2), layer_names="features.5", show=0).tables["layers"]
    assert [row["layer"] for row in alone] == ["x (input)", "features.5"]


def test_rules_takes_one_rule_name_alone(cnn):
    # one rule as a string is that one rule, not read letter by letter ("unknown rule 'p'")
    rows = studies.rules(cnn, square_images(2), candidates="pr2", show=0).tables["maps"]
    assert [row["rule"] for row in rows] == ["PR2"]
    with pytest.raises(ValueError, match="no rules given: name one or more of pr1, pr2, pr3, pr4, mod"):
        studies.rules(cnn, square_images(2), candidates=())  # was an empty maps table


def test_adversarial_and_coherence_refuse_no_methods(cnn):
    # an empty list of methods gave an empty table (and adversarial its FGSM images' table), which looks like a result
    for study in (studies.adversarial, studies.coherence):
        for none in ((), [], iter(())):
            with pytest.raises(ValueError, match=r"no methods given: name one or more, e.g. methods=\('saliency'"):
                study(cnn, square_images(2), methods=none)


def test_adversarial_refuses_an_unknown_method_before_any_work(cnn, monkeypatch):
    # a misspelt name was refused (with its did-you-mean) only after FGSM and the maps of the methods before it
    import importlib

    monkeypatch.setattr(importlib.import_module("rectgrad.studies.adversarial"), "predict", None)  # no work
    with pytest.raises(ValueError, match=r"unknown method 'rectgrd' \(did you mean 'rectgrad'\?\)"):
        studies.adversarial(cnn, square_images(2), methods=("saliency", "rectgrd"))


@pytest.mark.parametrize("seed", [1.5, -1, 2**64, True, None])
def test_adversarial_refuses_a_seed_that_is_no_whole_number_before_any_work(cnn, seed, monkeypatch):
    # 1.5 and 2**64 were torch's "manual_seed expected a long" and "Overflow when unpacking long long"; -1 was
    # refused only after FGSM and the first maps
    import importlib

    monkeypatch.setattr(importlib.import_module("rectgrad.studies.adversarial"), "predict", None)  # no work
    with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 2\*\*64\), got ") as refused:
        studies.adversarial(cnn, square_images(2), methods=("saliency",), seed=seed)
    assert str(refused.value).endswith(f"got {seed!r}")


def test_adversarial_study_on_a_cnn(cnn, tmp_path):
    result = studies.adversarial(cnn, square_images(3), tmp_path, eps=0.5, methods=("guided_bp", "rectgrad"))
    rows = result.tables["sensitivity"]
    assert all(0 <= r["adversarial change"] <= 2 and 0 <= r["noise change"] <= 2 for r in rows)
    assert rows[1]["excess"] == rows[1]["excess, thresholded"]  # RectGrad: not thresholded, as in the paper
    assert rows[0]["excess"] != rows[0]["excess, thresholded"]
    assert {".rectgrad-adversarial.json", "adversarial.md", "adversarial_sensitivity.csv", "adversarial_images.csv",
            "adversarial_maps.png", "adversarial_maps_thresholded.png"} == {p.name for p in tmp_path.iterdir()}


def test_layers_study(cnn, tmp_path):
    images = square_images()
    result = studies.layers(cnn, images, tmp_path, q=90.0)
    rows = result.tables["layers"]
    assert [(r["layer"], r["size"]) for r in rows] == [("x (input)", "12x12"), ("features.2", "12x12"),
                                                       ("features.5", "6x6"), ("features.7", "6x6")]
    assert rows[0]["background area"] == pytest.approx(1 - 36 / 144)
    for row in rows:
        assert 0 <= row["Saliency background"] <= 1 and 0 <= row["RectGrad background"] <= 1
    assert rows[0]["Saliency nonzero"] == 1.0 and rows[0]["RectGrad nonzero"] < 1.0
    x = images.x.clone().requires_grad_()  # the plain gradient alone, at the input, by hand
    logits = cnn(x)
    (grad,) = torch.autograd.grad(logits.gather(1, logits.argmax(1, keepdim=True)).sum(), x)
    magnitude = grad.mean(1).abs()
    outside = ((magnitude * ~images.masks).sum((1, 2)) / magnitude.sum((1, 2))).mean()
    assert rows[0]["gradient background"] == pytest.approx(float(outside))
    assert no_hooks_left(cnn) and (tmp_path / "layers_grid.png").exists()


def test_layers_numbers_by_hand_on_colour_images(monkeypatch):
    """At the input: h x gradient with the plain gradient (Saliency) and with RectGrad's PR1 rule at q with the padding
    trick; the background shares of their channel means, and of the plain gradient's; the figure's rows pair each
    image with its Saliency and RectGrad maps."""
    import importlib

    from rectgrad.studies._common import finite_mean, outside_fraction

    torch.manual_seed(0)
    model = PaperCNN(in_channels=3, image_size=SIZE, num_classes=3).eval()
    images = square_images(3, channels=3)
    drawn = []
    layers_module = importlib.import_module("rectgrad.studies.layers")
    monkeypatch.setattr(layers_module.viz, "grid", lambda x, columns, row_labels, **kwargs: drawn.append(
        (x, row_labels)))
    rows = studies.layers(model, images, q=90.0, show=2).tables["layers"]
    x, masks = images.x, images.masks
    predicted = model(x).argmax(1)
    gradients = {"Saliency": Options(), "RectGrad": Options(rule=Rule(score="pr1", q=90.0), padding_trick=True)}
    for method, options in gradients.items():
        gradients[method] = engine_gradients(model, x, predicted, options)[0]
        attr = x * gradients[method]
        assert rows[0][f"{method} nonzero"] == pytest.approx(float((attr != 0).double().mean()))
        share = finite_mean(outside_fraction(attr.mean(1), masks).tolist())
        assert rows[0][f"{method} background"] == pytest.approx(share), method
    assert rows[0]["Saliency background"] != pytest.approx(rows[0]["RectGrad background"])
    assert rows[0]["gradient background"] == pytest.approx(
        finite_mean(outside_fraction(gradients["Saliency"].mean(1), masks).tolist()))  # |mean|, not mean |.|
    (x_drawn, labels), = drawn
    assert torch.equal(x_drawn, x[[0, 0, 1, 1]])
    assert labels == ["img0 Saliency", "img0 RectGrad", "img1 Saliency", "img1 RectGrad"]


def test_layers_study_without_the_padding_trick(cnn):
    images = square_images(3)
    x, predicted = images.x, cnn(images.x).argmax(1)
    nonzero = {}
    for padding in (False, True):
        (row, *_) = studies.layers(cnn, images, q=90.0, padding_trick=padding, show=0).tables["layers"]
        grad = engine_gradients(cnn, x, predicted, Options(rule=Rule(score="pr1", q=90.0), padding_trick=padding))[0]
        assert row["RectGrad nonzero"] == pytest.approx(float((x * grad != 0).double().mean())), padding
        nonzero[padding] = row["RectGrad nonzero"]
    assert nonzero[False] != nonzero[True]


def test_hidden_layers_skip_depthwise_and_1x1_inputs_and_a_layer_called_twice_is_two_columns():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3, padding=1)
            self.depthwise = nn.Conv2d(4, 4, 3, padding=1, groups=4)
            self.shared = nn.Conv2d(4, 4, 3, padding=1)
            self.head = nn.Conv2d(4, 3, 1)  # over a 1x1 map

        def forward(self, x):
            h = torch.relu(self.depthwise(torch.relu(self.conv(x))))
            h = torch.relu(self.shared(torch.relu(self.shared(h))))
            return self.head(h.mean((2, 3), keepdim=True)).flatten(1)

    torch.manual_seed(0)
    model, images = Net().eval(), square_images(2)
    assert [n for n, _ in hidden_layers(model, images.x)] == ["shared"]
    rows = studies.layers(model, images, show=0).tables["layers"]
    assert [r["layer"] for r in rows] == ["x (input)", "shared", "shared#2"]


@pytest.mark.parametrize("q", [-5.0, 150.0, float("nan")])
def test_layers_study_refuses_a_percentile_outside_0_100(cnn, q):
    with pytest.raises(ValueError, match=r"q must be a percentile in \[0, 100\], got " + str(q)):
        studies.layers(cnn, square_images(2), q=q)


def test_layers_study_refuses_a_module_whose_input_is_no_feature_map(cnn, model_and_folder, tmp_path, capsys):
    with pytest.raises(ValueError, match=r"the input of module 'classifier.1' is not an \(N, C, H, W\) feature "
                                         r"map \(got shape \(2, 576\)\)"):
        studies.layers(cnn, square_images(2), layer_names=["classifier.1"])
    path, folder, _ = model_and_folder
    (folder / "10.png").unlink()
    assert main(["study", "layers", str(folder), "--model", str(path), "--layer", "classifier.1", "--out",
                 str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the input of module 'classifier.1' is not an (N, C, H, W)") and err.count("\n") == 1


def test_layers_study_refuses_a_module_the_forward_pass_never_calls(cnn):
    class WithSpare(nn.Module):
        def __init__(self):
            super().__init__()
            self.net, self.spare = cnn, nn.Conv2d(32, 32, 3)

        def forward(self, x):
            return self.net(x)

    model = WithSpare()
    with pytest.raises(ValueError, match="the forward pass never calls module 'spare'"):
        studies.layers(model, square_images(2), layer_names=["net.features.2", "spare"])
    assert no_hooks_left(model)

    class ByKeyword(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.fc = nn.Conv2d(1, 4, 3, padding=1), nn.Linear(4, 3)

        def forward(self, x):
            return self.fc(torch.relu(self.conv(input=x)).mean((2, 3)))

    with pytest.raises(ValueError, match=r"module 'conv' is called with keyword arguments only \(module\(input=x\)\)"):
        studies.layers(ByKeyword(), square_images(2), layer_names=["conv"])


def test_feature_maps_study(cnn, tmp_path):
    images = square_images(2)
    result = studies.feature_maps(cnn, images, tmp_path, channels=4, max_layers=3)
    rows = result.tables["layers"]
    assert [(r["layer"], r["shape"]) for r in rows] == [("activation 1", "32x12x12"), ("activation 3", "64x6x6"),
                                                        ("activation 4", "64x6x6")]
    assert all(0 <= r["active on background"] <= 1 and 0 <= r["mass on background"] <= 1 for r in rows)
    assert [r["image"] for r in result.tables["images"]] == ["img0", "img1"]
    assert (tmp_path / "feature_maps_img0.png").exists() and (tmp_path / "feature_maps_img1.png").exists()


def test_feature_maps_figure_is_as_wide_as_the_widest_layer_drawn(cnn):
    # channels=1000 on a model of at most 64 channels drew 1000 columns, most empty: minutes and GBs for one figure
    images = square_images(1)
    widest = max(a.shape[1] for _, a in activations(cnn, images.x))
    for channels, columns in ((1000, widest), (4, 4), (1, 3)):  # (3 at least: input, saliency, mask)
        (figure,) = studies.feature_maps(cnn, images, channels=channels, show=1).figures.values()
        assert figure.axes[0].get_subplotspec().get_gridspec().ncols == columns, channels


@pytest.mark.parametrize("channels", [0, -1, 2.5])
def test_feature_maps_refuses_a_channel_count_that_is_no_positive_integer(cnn, channels):
    # -1 drew all channels but the last (argsort()[:-1]), 0 rows of nothing, 2.5 failed in a slice
    with pytest.raises(ValueError, match=f"channels must be a positive integer, got {channels}"):
        studies.feature_maps(cnn, square_images(2), channels=channels, show=1)


def test_feature_maps_numbers_by_hand_on_colour_images(monkeypatch):
    import importlib

    torch.manual_seed(0)
    model = PaperCNN(in_channels=3, image_size=SIZE, num_classes=3).eval()
    images = square_images(2, channels=3)
    result = studies.feature_maps(model, images, show=0)
    x = images.x.clone().requires_grad_()
    logits = model(x)
    (grad,) = torch.autograd.grad(logits.gather(1, logits.argmax(1, keepdim=True)).sum(), x)
    mass = grad.sum(1).abs()  # the saliency map as drawn: |gradient summed over channels|, not sum of |gradient|
    expected = (mass * ~images.masks).sum((1, 2)) / mass.sum((1, 2))
    shares = [r["saliency mass on background"] for r in result.tables["images"]]
    assert shares == pytest.approx(expected.tolist())
    assert "|gradient summed over channels|" in result.notes
    with torch.no_grad():  # the first activation, units of both images pooled
        a = torch.relu(model.features[0](images.x))
    background = ~images.masks[:, None].expand_as(a)
    first = result.tables["layers"][0]
    assert first["active on background"] == pytest.approx(float((a[background] > 0).double().mean()))
    assert first["mass on background"] == pytest.approx(float(a[background].sum() / a.sum()))
    assert first["active fraction"] == pytest.approx(float((a > 0).double().mean()))
    assert first["background area"] == pytest.approx(float(background.double().mean()))
    assert first["active on object"] == pytest.approx(float((a[~background] > 0).double().mean()))
    # the figure: the image with the noisiest saliency map, and each layer's channels by their total activation
    drawn = []
    monkeypatch.setattr(importlib.import_module("rectgrad.studies.feature_maps"), "_figure",
                        lambda images, i, saliency, layers: drawn.append((i, layers)))
    studies.feature_maps(model, images, channels=3, show=1)
    (i, layers), = drawn
    assert i == int(expected.argmax()) and expected.min() < expected.max()
    assert layers[0][1] == a[i].sum((1, 2)).argsort(descending=True)[:3].tolist()


def assert_same_rows(rows, expected, exact):
    """The same table: the ``exact`` columns (ratios of counts) equal, the others to float32 rounding (the CPU kernels
    round a forward/backward pass of 1, 2 or 5 images differently, by ~1e-9: not bitwise batch invariant)."""
    assert len(rows) == len(expected)
    for row, want in zip(rows, expected):
        assert list(row) == list(want)
        for key, value in row.items():
            if key in exact or isinstance(value, str):
                assert value == want[key], (row, key)
            else:
                assert value == pytest.approx(want[key], rel=1e-6, nan_ok=True), (row, key)


def test_layers_and_feature_maps_give_the_same_results_whatever_internal_batch_size(cnn, monkeypatch):
    import importlib

    images = square_images(5)  # 5 images: chunks of 2 leave one alone; show=3 spans two chunks
    masks = images.masks.clone()
    masks[4, :, SIZE // 2:] = True  # objects of unequal areas: a mean of per-chunk shares would weigh them wrongly
    images = dataclasses.replace(images, masks=masks)
    layers_module = importlib.import_module("rectgrad.studies.layers")
    maps_module = importlib.import_module("rectgrad.studies.feature_maps")
    drawn = []  # what each figure would be drawn from (not drawn: seconds each)
    monkeypatch.setattr(layers_module, "_grid", lambda images, maps, methods, show: drawn.append(maps))
    monkeypatch.setattr(maps_module, "_figure", lambda images, i, saliency, layers: drawn.append(
        (i, saliency, layers)))
    results = {}
    for size in (None, 1, 2):
        drawn.clear()
        results[size] = (studies.layers(cnn, images, q=90.0, show=3, internal_batch_size=size),
                         studies.feature_maps(cnn, images, channels=3, max_layers=3, show=3,
                                              internal_batch_size=size), list(drawn))
    whole, whole_maps, (grid_maps, *figures) = results[None]
    assert len(whole_maps.figures) == 3 and len(figures) == 3 and len(grid_maps["features.5"]["RectGrad"]) == 3
    for size in (1, 2):
        layers_result, maps_result, (chunked_grid, *chunked_figures) = results[size]
        assert_same_rows(layers_result.tables["layers"], whole.tables["layers"],
                         {"Saliency nonzero", "RectGrad nonzero", "background area"})
        assert_same_rows(maps_result.tables["layers"], whole_maps.tables["layers"],
                         {"active fraction", "background area", "active on background", "active on object"})
        assert_same_rows(maps_result.tables["images"], whole_maps.tables["images"], set())
        assert list(maps_result.figures) == list(whole_maps.figures)  # the same noisiest images, in the same order
        for label, per_method in grid_maps.items():  # RectGrad's per-sample threshold: the same zeros, chunk or not
            for method, expected in per_method.items():
                assert torch.equal(chunked_grid[label][method] != 0, expected != 0), (label, method)
                torch.testing.assert_close(chunked_grid[label][method], expected, rtol=1e-5, atol=1e-7)
        for (i, saliency, layers), (j, expected_saliency, expected_layers) in zip(chunked_figures, figures):
            assert i == j
            torch.testing.assert_close(saliency, expected_saliency)
            assert [(k, top) for k, top, _ in layers] == [(k, top) for k, top, _ in expected_layers]
            for (_, _, a), (_, _, b) in zip(layers, expected_layers):
                torch.testing.assert_close(a, b)


def test_layers_keeps_only_the_shown_images_maps_across_chunks(cnn, monkeypatch):
    import importlib
    import types

    layers_module = importlib.import_module("rectgrad.studies.layers")
    kept = []  # the per-chunk pieces of the drawn maps: a view of a chunk's maps would hold all of the chunk's

    class Spy(types.SimpleNamespace):
        def __getattr__(self, name):
            return getattr(torch, name)

    spy = Spy(cat=lambda pieces, *args, **kwargs: kept.extend(pieces) or torch.cat(pieces, *args, **kwargs))
    monkeypatch.setattr(layers_module, "torch", spy)
    monkeypatch.setattr(layers_module, "_grid", lambda *args: None)
    studies.layers(cnn, square_images(4), show=1, internal_batch_size=2)
    assert kept and all(p.untyped_storage().nbytes() == p.numel() * p.element_size() for p in kept)


@pytest.mark.parametrize("study", ["layers", "feature_maps"])
def test_layers_and_feature_maps_refuse_a_bad_internal_batch_size(cnn, study):
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match=f"internal_batch_size must be a positive integer, got {bad!r}"):
            getattr(studies, study)(cnn, square_images(2), internal_batch_size=bad)


@pytest.mark.parametrize("study", ["layers", "feature_maps", "adversarial", "threshold", "rules", "coherence"])
def test_studies_take_a_one_element_tensor_or_array_as_internal_batch_size(cnn, study, monkeypatch):
    # explain() and the attribution classes take torch.tensor(2) as 2: layers, feature_maps and adversarial refused it
    import importlib

    module = importlib.import_module(f"rectgrad.studies.{study}")
    seen = []  # the size the study passes on: a plain int, checked once at its entry
    real_predict = module.predict
    monkeypatch.setattr(module, "predict", lambda model, x, size: seen.append(size) or real_predict(model, x, size))
    options = {"methods": ("saliency",)} if study in ("adversarial", "coherence") else {}
    options |= {"qs": (90.0,)} if study == "threshold" else {}
    for size in (torch.tensor(2), np.array([2])):
        seen.clear()
        getattr(studies, study)(cnn, square_images(3), show=0, internal_batch_size=size, **options)
        assert seen and all(type(s) is int and s == 2 for s in seen)
    with pytest.raises(ValueError, match="internal_batch_size must be a positive integer, got 0"):
        getattr(studies, study)(cnn, square_images(3), show=0, internal_batch_size=torch.tensor(0), **options)


def test_fgsm_takes_a_one_element_tensor_as_internal_batch_size():
    x = torch.zeros(3, 1, SIZE, SIZE)
    expected = studies.fgsm(Flippable(), x, internal_batch_size=2)
    assert torch.equal(studies.fgsm(Flippable(), x, internal_batch_size=torch.tensor(2)), expected)
    assert torch.equal(studies.fgsm(Flippable(), x, internal_batch_size=np.array([2])), expected)


def test_rules_study_toy_b2_numbers():
    rows = {r["rule"]: r for r in studies.toy_b2()}
    # a = (3, 2, 1, 0), R = (1, 10, -100, 1000), q = 74 (Appendix B.2)
    assert {rule: r["selected"] for rule, r in rows.items()} == {
        "PR1 (RectGrad)": "a2", "PR2": "a3", "PR3": "a1", "PR4": "a4", "RectGradMod": "a2"}
    assert rows["PR1 (RectGrad)"]["scores"] == "(3, 20, -100, 0)" and rows["PR1 (RectGrad)"]["tau"] == 3
    assert rows["PR2"]["gradient passed"] == "(0, 0, -100, 0)"
    assert rows["PR4"]["contribution a*R of the selected"] == "(0)"
    assert rows["RectGradMod"]["scores"] == "(3, 20, -100, 0)"  # PR1's, at its one (top) layer


def test_rules_study_maps(cnn, tmp_path):
    result = studies.rules(cnn, square_images(), tmp_path, q=90.0)
    rows = result.tables["maps"]
    assert [r["rule"] for r in rows] == ["PR1 (RectGrad)", "PR2", "PR3", "PR4", "RectGradMod"]
    assert rows[0]["rank correlation with PR1"] == pytest.approx(1.0)
    assert all(0 <= r["background fraction"] <= 1 for r in rows)
    assert (tmp_path / "rules_grid.png").exists() and len(read_csv(tmp_path / "rules_toy_b2.csv")) == 5
    from rectgrad.studies._common import finite_mean, outside_fraction

    images = square_images()
    predicted = cnn(images.x).argmax(1)
    for rule, row in zip(("pr1", "pr2", "pr3", "pr4", "mod"), rows):  # each rule's own maps, by the public API
        attr = RectGrad(cnn).attribute(images.x, target=predicted, q=90.0, rule=rule, padding_trick=True)
        assert row["nonzero fraction"] == pytest.approx(float((attr != 0).double().mean())), rule
        assert row["all-zero maps"] == int((attr.flatten(1).abs().sum(1) == 0).sum()) == 0, rule
        assert row["background fraction"] == pytest.approx(
            finite_mean(outside_fraction(attr.sum(1), images.masks).tolist())), rule
        pr1 = RectGrad(cnn).attribute(images.x, target=predicted, q=90.0, padding_trick=True).sum(1)
        assert row["rank correlation with PR1"] == pytest.approx(
            np.mean([studies.spearman(m, r) for m, r in zip(attr.sum(1), pr1)])), rule
    assert len({round(r["background fraction"], 6) for r in rows}) > 1
    assert rows[1]["rank correlation with PR1"] < 0.99  # PR2 selects other units


# ------------------------------------------------------------------ command line and image folders


@pytest.fixture
def model_and_folder(cnn, tmp_path):
    """A checkpoint of the tiny CNN and a folder of PNG images with object masks beside them."""
    save_checkpoint(cnn, tmp_path / "tiny.pt", dataset="fashion-mnist", classes=["a", "b", "c"])
    folder = tmp_path / "images"
    folder.mkdir()
    images = square_images()
    pixels = ((images.x[:, 0] + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
    for i in range(len(images)):
        Image.fromarray(pixels[i]).save(folder / f"{i + 1}.png")
        Image.fromarray(images.masks[i].numpy().astype(np.uint8) * 255).save(folder / f"{i + 1}_mask.png")
    (folder / "10.png").write_bytes((folder / "1.png").read_bytes())
    return tmp_path / "tiny.pt", folder, images


def test_image_folder_with_masks(model_and_folder):
    from rectgrad import zoo

    path, folder, images = model_and_folder
    assert [p.name for p in image_files([folder])] == ["1.png", "2.png", "3.png", "4.png", "10.png"]
    (folder / "10.png").unlink()
    loaded = studies.images_from_files(zoo.load(path), [folder])
    assert loaded.names == ["1", "2", "3", "4"] and loaded.classes == ["a", "b", "c"]
    torch.testing.assert_close(loaded.x, images.x, atol=1 / 127.5, rtol=0)
    assert torch.equal(loaded.masks, images.masks)


@pytest.mark.parametrize("given, message", [({"count": 2.5}, "count must be a positive integer, got 2.5"),
                                            ({"count": 0}, "count must be a positive integer, got 0"),
                                            ({"per_class": 1.5}, "per_class must be a positive integer, got 1.5")])
def test_images_from_dataset_refuses_counts_that_are_no_positive_integers(given, message):
    # 2.5 images passed the check (>= 1) and failed in a slice after the dataset was read
    with pytest.raises(ValueError, match=message):
        studies.images_from_dataset("fashion-mnist", **{"count": 2, **given}, data_dir=FASHION_MNIST_SYSTEM_DIR)


def test_images_from_files_takes_one_path_alone(model_and_folder):
    # a folder given alone was read letter by letter ("image or folder / not found"), a Path was "not iterable"
    from rectgrad import zoo

    path, folder, _ = model_and_folder
    (folder / "10.png").unlink()  # (it has no mask: the folder would be refused)
    loaded = zoo.load(path)
    expected = studies.images_from_files(loaded, [folder])
    for alone in (folder, str(folder)):
        given = studies.images_from_files(loaded, alone)
        assert given.names == expected.names and torch.equal(given.x, expected.x)
    assert studies.images_from_files(loaded, str(folder / "2.png")).names == ["2"]


def test_a_sixteen_bit_zero_one_mask_beside_an_image_marks_its_ones(model_and_folder):
    # a label map saved at 16 bits (0 and 1): its ones are the object, as in an 8-bit 0/1 mask (not its top byte, 0)
    from rectgrad import zoo

    path, folder, images = model_and_folder
    (folder / "10.png").unlink()
    Image.fromarray(images.masks[0].numpy().astype(np.uint16)).save(folder / "1_mask.png")
    assert Image.open(folder / "1_mask.png").mode.startswith("I")
    assert torch.equal(studies.images_from_files(zoo.load(path), [folder]).masks, images.masks)


def test_image_files_and_masks_are_read_one_at_a_time(model_and_folder, full_size_images):
    # each image and mask is reduced to the model's input before the next is read: a folder of photos fits in memory
    from rectgrad import zoo

    path, folder, images = model_and_folder
    (folder / "10.png").unlink()
    loaded = studies.images_from_files(zoo.load(path), [folder])
    assert torch.equal(loaded.masks, images.masks)
    assert len(full_size_images) == 2 * len(images) and max(full_size_images) == 1


def test_image_names_are_unique(model_and_folder, tmp_path):
    from rectgrad import zoo

    path, folder, _ = model_and_folder
    for target, source in (("a/x/1.png", "1.png"), ("b/x/1.png", "2.png"), ("c/2.png", "3.png")):
        (tmp_path / target).parent.mkdir(parents=True)
        (tmp_path / target).write_bytes((folder / source).read_bytes())
    loaded = zoo.load(path)
    images = studies.images_from_files(loaded, [tmp_path / "a/x", tmp_path / "b/x", tmp_path / "c"])
    assert images.names == ["a/x/1", "b/x/1", "2"]
    result = studies.feature_maps(loaded.model, images, tmp_path / "out", channels=1)  # (1: the smallest figures)
    assert [r["image"] for r in result.tables["images"]] == ["a/x/1", "b/x/1", "2"]
    assert len(list((tmp_path / "out").glob("feature_maps_*.png"))) == 3
    # "a/b" and "a_b" both make feature_maps_a_b.png; the second may not take the name of a third, "a_b_2" or "a_b_3"
    same_file_name = Images(torch.cat([images.x, images.x[:1]]), ["a_b_2", "a_b_3", "a/b", "a_b"])
    assert len(studies.feature_maps(loaded.model, same_file_name, channels=1, show=4).figures) == 4  # one figure each
    assert unique_names([tmp_path / "a/1.png", tmp_path / "a/1.jpg"]) == [str(tmp_path / "a/1.png"),
                                                                         str(tmp_path / "a/1.jpg")]
    with pytest.raises(ValueError, match="is given more than once"):
        studies.images_from_files(loaded, [tmp_path / "c/2.png", tmp_path / "c/../c/2.png"])
    with pytest.raises(ValueError, match="image names must be unique, got 'p' more than once"):
        Images(torch.zeros(2, 1, 4, 4), ["p", "p"])


def test_a_mask_of_another_size_than_its_image_is_refused(model_and_folder, tmp_path):
    from rectgrad import zoo

    path, folder, _ = model_and_folder
    (tmp_path / "wide").mkdir()
    Image.new("L", (2 * SIZE, SIZE)).save(tmp_path / "wide" / "p.png")
    Image.new("L", (SIZE, SIZE), 255).save(tmp_path / "wide" / "p_mask.png")
    with pytest.raises(ValueError, match=f"wide/p_mask.png is {SIZE}x{SIZE} pixels but its image .*wide/p.png "
                                         rf"{2 * SIZE}x{SIZE} \(each as its EXIF orientation turns it\): a mask must"):
        studies.images_from_files(zoo.load(path), [tmp_path / "wide"])


def test_cli_studies_on_an_image_folder(model_and_folder, tmp_path, capsys):
    path, folder, _ = model_and_folder
    (folder / "10.png").unlink()
    for name, extra in (("threshold", ["--q", "50", "--q", "99"]), ("layers", ["--max-layers", "2"]),
                        ("feature-maps", ["--channels", "2"]), ("rules", []),
                        ("coherence", ["--methods", "saliency,rectgrad"]),  # as explain's --methods
                        ("adversarial", ["--method", "rectgrad", "--eps", "0.1"])):
        out = tmp_path / name
        assert main(["study", name, str(folder), "--model", str(path), "--out", str(out), "--dpi", "50"]
                    + extra) == 0, name
        assert any(p.suffix == ".png" for p in out.iterdir()) and any(p.suffix == ".csv" for p in out.iterdir())
        # the files the command checks before the work are those the study writes (feature-maps': and its images')
        written = {p.name for p in out.iterdir()} - {f".rectgrad-{name.replace('-', '_')}.json"}
        checked = set(file_names(name, *_WRITES[name]))
        if name == "feature-maps":
            checked |= {f"feature_maps_{image}.png" for image in ("1", "2", "3", "4")}
        assert written == checked, name
    captured = capsys.readouterr()
    text = captured.out
    assert "| q = 99 |" in text and "RectGrad background" in text and "| PR3 | (3, 2, 1, 0) |" in text
    bars = captured.err.replace("\r", "\n").splitlines()
    assert any(line.startswith("maps: 100%") and "2/2" in line for line in bars)  # coherence: its two methods
    for what in ("images", "FGSM twins", "noise controls"):  # adversarial: its one method on each input
        assert any(line.startswith(f"maps, {what}: 100%") and "1/1" in line for line in bars)
    assert main(["study", "coherence", str(folder), "--model", str(path), "--out", str(tmp_path / "quiet"),
                 "--methods", "saliency", "--dpi", "50", "--no-progress"]) == 0
    assert "maps" not in capsys.readouterr().err


def test_cli_rules_without_a_model_prints_the_toy(tmp_path, capsys):
    assert main(["study", "rules", "--out", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "| PR1 (RectGrad) | (3, 20, -100, 0) | 3 | a2 |" in text
    assert "| PR4 | (1, 10, -100, 1000) | 10 | a4 |" in text
    assert sorted(p.name for p in tmp_path.iterdir()) == [".rectgrad-rules.json", "rules.md", "rules_toy_b2.csv"]
    assert text.endswith(f"wrote rules_toy_b2.csv, rules.md to {tmp_path}\n")  # each file by name


def test_cli_user_errors(model_and_folder, tmp_path, capsys):
    path, folder, _ = model_and_folder
    assert main(["study", "layers", "--model", str(path), "--out", str(tmp_path)]) == 2
    assert main(["study", "layers", str(tmp_path / "missing"), "--model", str(path), "--out", str(tmp_path)]) == 2
    (folder / "1_mask.png").unlink()
    assert main(["study", "layers", str(folder), "--model", str(path), "--out", str(tmp_path)]) == 2
    assert main(["study", "layers", str(folder), "--model", str(path), "--device", "tpu", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "exactly one of them" in err and "not found" in err and "lack one" in err
    assert "--device must be cpu, cuda, cuda:N or auto, got 'tpu'" in err


@pytest.mark.parametrize("argv, message", [
    (["threshold", "--show", "0"], "--show must be a positive integer, got 0"),
    (["threshold", "--dpi", "0"], "--dpi must be a positive integer, got 0"),
    (["layers", "--dpi", "2"], "--dpi must be at least 10 (the figures' text cannot be drawn at fewer dots per "
     "inch), got 2"),  # (was FreeType's "invalid ppem value" once the numbers were written)
    (["feature-maps", "--channels", "0"], "--channels must be a positive integer, got 0"),
    (["layers", "--max-layers", "0"], "--max-layers must be a positive integer, got 0"),
    (["coherence", "--count", "0"], "--count must be a positive integer, got 0"),
    (["adversarial", "--internal-batch-size", "0"], "--internal-batch-size must be a positive integer, got 0"),
    (["layers", "--internal-batch-size", "0"], "--internal-batch-size must be a positive integer, got 0"),
    (["feature-maps", "--internal-batch-size", "-2"], "--internal-batch-size must be a positive integer, got -2"),
    (["threshold", "--q", "50", "--q", "150"], "--q must be a percentile in [0, 100], got 150.0"),
    (["layers", "--q", "-1"], "--q must be a percentile in [0, 100], got -1.0"),
    (["rules", "taken.png", "--q", "101"], "--q must be a percentile in [0, 100], got 101.0"),
    (["adversarial", "--eps", "nan"], "--eps must be a finite positive number, got nan"),
    (["adversarial", "--eps", "-1"], "--eps must be a finite positive number, got -1.0"),
    (["adversarial", "--seed", "-1"], "--seed must be an integer in [0, 2**63), got -1"),
    (["coherence", "--seed", str(2**64)], f"--seed must be an integer in [0, 2**63), got {2**64}"),
    (["coherence", "--out", "taken.png"], "--out taken.png exists and is not a folder"),
    (["layers", "--data-dir", "taken.png"], "--data-dir taken.png is a file; give the folder that holds it"),
    (["coherence", "--method", "saliency,rectgrd"], "unknown method 'rectgrd' (did you mean 'rectgrad'?); known "
     "methods: saliency, grad_input, deconv, guided_bp, smoothgrad, intgrad, eps_lrp, deeplift, rectgrad, "
     "rectgrad_prr, random"),
    (["adversarial", "--methods", "saliency", "--method", "saliency"], "--methods names saliency more than once"),
    (["coherence", "--method", "all", "--method", "rectgrad"], "--methods: 'all' cannot be combined "
     "with other names; give it alone or list the methods"),
    (["rules", "--out", "taken.png"], "--out taken.png exists and is not a folder"),
    (["rules", "--model", "missing.pt"],
     "--model has no use without images or --dataset (rules then prints the B.2 toy alone)"),
    (["rules", "--q", "90", "--dpi", "50", "--device", "cpu"],
     "--q, --device, --dpi have no use without images or --dataset (rules then prints the B.2 toy alone)"),
])
def test_cli_options_are_refused_before_any_work(tmp_path, capsys, monkeypatch, argv, message):
    from rectgrad import zoo

    def never(*args, **kwargs):
        raise AssertionError("loaded the model before checking the options")

    monkeypatch.setattr(zoo, "load", never)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "taken.png").write_bytes(b"")
    out = [] if "--out" in argv else ["--out", "figures"]
    images = [] if argv[0] == "rules" else ["taken.png"]
    assert main(["study", argv[0], *images, *argv[1:], *out]) == 2
    assert capsys.readouterr().err == f"error: {message}\n"


@pytest.mark.parametrize("study", ["threshold", "rules"])
def test_cli_an_empty_out_is_refused_not_the_current_folder(tmp_path, capsys, monkeypatch, study):
    # '' was read as Path('.'): the figures, numbers and summary were written into the current folder
    from rectgrad import zoo

    monkeypatch.setattr(zoo, "load", lambda *a, **k: pytest.fail("loaded the model"))
    monkeypatch.chdir(tmp_path)
    assert main(["study", study, "--out", ""]) == 2
    assert "Invalid value for '--out': an empty path names no file or folder" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("option", ["--data-dir", "--weights"])
def test_cli_an_empty_input_path_is_refused_not_the_current_folder(tmp_path, capsys, monkeypatch, option):
    # '' was read as Path('.'): the dataset was looked for in the current folder, the weights named it
    from rectgrad import zoo

    monkeypatch.setattr(zoo, "load", lambda *a, **k: pytest.fail("loaded the model"))
    monkeypatch.chdir(tmp_path)
    assert main(["study", "threshold", "--dataset", "fashion-mnist", "--out", "figures", option, ""]) == 2
    assert f"Invalid value for '{option}': an empty path names no file or folder" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("study, argv, message", [
    ("threshold", ["--dataset", "fmnist"], "unknown dataset 'fmnist'; known: fashion-mnist, cifar10, folder, "
     "cifar10-masked"),
    ("coherence", ["--dataset", "cifar"], "unknown dataset 'cifar' (did you mean 'cifar10'?)"),
    ("rules", ["--dataset", ""], "unknown dataset ''"),  # not taken for no --dataset (the B.2 toy alone)
    ("layers", ["--dataset", "folder"], "the folder dataset needs its folder (--data-dir ROOT"),
    ("feature-maps", ["--dataset", "folder", "--data-dir", "root", "--download"],
     "download=True (CLI: --download) does not apply to your own images"),
])
def test_cli_study_dataset_options_are_refused_before_the_model_loads(tmp_path, capsys, monkeypatch, study, argv,
                                                                      message):
    # the model may download hundreds of MB: a mistyped --dataset is told first, not after it
    from rectgrad import zoo

    def never(*args, **kwargs):
        raise AssertionError("loaded the model before checking --dataset")

    monkeypatch.setattr(zoo, "load", never)
    monkeypatch.chdir(tmp_path)
    assert main(["study", study, *argv, "--model", "m.pt", "--out", "figures"]) == 2
    assert capsys.readouterr().err.startswith(f"error: {message}")
    assert not (tmp_path / "figures").exists()


@pytest.mark.parametrize("images, out, message", [
    (["photos"], "photos", "--out photos is the input folder photos: a rerun would read its figures as images"),
    (["photos/"], "./photos/", "--out photos is the input folder photos: a rerun would read its figures as images"),
    (["photos/threshold_maps.png"], "photos",
     "--out photos holds the input image photos/threshold_maps.png, which the study writes over"),
    (["--dataset", "folder", "--data-dir", "root"], "root/test/cat/figures",
     "--out root/test/cat/figures is inside root/test, whose images --dataset folder reads"),
    (["--dataset", "folder", "--data-dir", "root"], "root/train/figures",  # a class of its own to train on
     "--out root/train/figures is inside root/train, whose images --dataset folder reads"),
    (["linked.png"], "photos", "--out photos holds the input image linked.png, which the study writes over"),
    # a rerun on the file reads it alone; the figure of the study's name there, no study's, is refused before the work
    (["photos/cat.png"], "photos", "photos/threshold_maps.png exists and no rectgrad study wrote it"),
    (["photos"], "photos/figures", None),  # a folder lists not the images of its subfolders
    (["--dataset", "folder", "--data-dir", "root"], "root/figures", None),
])
def test_cli_study_out_keeps_apart_from_the_inputs(tmp_path, capsys, monkeypatch, images, out, message):
    from rectgrad import zoo

    def loaded(*args, **kwargs):
        raise RuntimeError("model loads")

    monkeypatch.setattr(zoo, "load", loaded)
    monkeypatch.chdir(tmp_path)
    for folder in ("photos", "root/train/cat", "root/test/cat"):
        (tmp_path / folder).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(tmp_path / folder / "cat.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "photos" / "threshold_maps.png")
    (tmp_path / "linked.png").symlink_to(tmp_path / "photos" / "threshold_maps.png")
    assert main(["study", "threshold", *images, "--model", "m.pt", "--out", out]) == 2
    assert capsys.readouterr().err.startswith(f"error: {message or 'model loads'}")


def test_cli_study_downloads_a_missing_dataset_on_request(model_and_folder, tmp_path, capsys, monkeypatch):
    from rectgrad import data

    path, _, _ = model_and_folder
    asked = []

    def offline(url, dest, md5):
        asked.append(url)
        raise FileNotFoundError(f"could not download {url}")

    monkeypatch.setattr(data, "_download", offline)
    (tmp_path / "empty").mkdir()
    argv = ["study", "threshold", "--dataset", "cifar10", "--data-dir", str(tmp_path / "empty"), "--model", str(path),
            "--out", str(tmp_path / "out")]
    assert main(argv) == 2 and "or pass download=True (CLI: --download)\n" in capsys.readouterr().err and not asked
    assert main(argv + ["--download"]) == 2 and asked == [data.CIFAR10_URL]
    assert capsys.readouterr().err == f"error: could not download {data.CIFAR10_URL}\n"


def write_masked_cifar(folder):
    """Two images as the paper's masked CIFAR-10 ones are (RGB, 32 x 32), each with an object on a background."""
    folder.mkdir()
    for name in ("airplane_1", "automobile_1"):
        Image.new("RGB", (32, 32), (200, 10, 60)).save(folder / f"{name}.jpg")
        mask = Image.new("L", (32, 32), 0)
        mask.paste(255, (8, 8, 24, 24))
        mask.save(folder / f"{name}_mask.jpg")


def test_cli_a_dataset_the_model_cannot_take_is_one_clear_line(tmp_path, capsys):
    save_checkpoint(PaperCNN(in_channels=1, image_size=16, num_classes=2).eval(), tmp_path / "gray.pt")
    write_masked_cifar(tmp_path / "rgb")
    assert main(["study", "threshold", "--model", str(tmp_path / "gray.pt"), "--dataset", "cifar10-masked",
                 "--data-dir", str(tmp_path / "rgb"), "--count", "2", "--out", str(tmp_path / "figures")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the model cannot take the cifar10-masked images, 3x32x32 (channels x height x "
                          "width): ")
    assert err.count("\n") == 1


def test_cli_a_dataset_of_another_size_than_the_models_input_is_refused(tmp_path, capsys):
    torch.save(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                             nn.Linear(4, 2)).eval(), tmp_path / "pooling.pt")  # runs on any size
    (tmp_path / "pooling.json").write_text('{"input_size": [3, 64, 64], "mean": 0.5, "std": 0.5, "crop_pct": 1, '
                                           '"interpolation": "bilinear"}')
    write_masked_cifar(tmp_path / "rgb")
    assert main(["study", "threshold", "--model", str(tmp_path / "pooling.pt"), "--dataset", "cifar10-masked",
                 "--data-dir", str(tmp_path / "rgb"), "--count", "2", "--out", str(tmp_path / "figures")]) == 2
    assert capsys.readouterr().err == (f"error: {tmp_path / 'pooling.pt'} takes 64x64 images, the cifar10-masked "
                                       "images are 32x32: give a model trained on cifar10-masked, or --dataset folder "
                                       "or image files (resized to the model's input)\n")
    assert not (tmp_path / "figures").exists()
    (tmp_path / "pooling.json").unlink()  # 224 x 224 then only assumed: the model may well be made for the dataset
    assert main(["study", "threshold", "--model", str(tmp_path / "pooling.pt"), "--dataset", "cifar10-masked",
                 "--data-dir", str(tmp_path / "rgb"), "--count", "2", "--out", str(tmp_path / "figures")]) == 0


def test_folder_dataset_images_take_the_masks_beside_them(model_and_folder, tmp_path):
    _, folder, _ = model_and_folder
    for split in ("train", "test"):
        for label, first in (("a", 1), ("b", 3)):
            (tmp_path / "root" / split / label).mkdir(parents=True)
            for i in (first, first + 1):
                for name in (f"{i}.png", f"{i}_mask.png") if split == "test" and i != 4 else (f"{i}.png",):
                    (tmp_path / "root" / split / label / name).write_bytes((folder / name).read_bytes())
    with pytest.warns(UserWarning, match="3 test images taken, not the 4 asked: only these have a mask beside them"):
        chosen = studies.images_from_dataset("folder", 4, per_class=2, data_dir=tmp_path / "root", image_size=16)
    assert chosen.names == ["a/1", "a/2", "b/3"] and chosen.labels.tolist() == [0, 0, 1]  # b/4 has no mask
    reproduced = load_image_folder_masks(tmp_path / "root", 16)  # what rectgrad reproduce takes, masks and all
    assert torch.equal(chosen.masks, reproduced.masks) and torch.equal(chosen.x, reproduced.inputs())
    assert chosen.masks.double().mean(dim=(1, 2)).tolist() == pytest.approx([0.25] * 3, abs=0.05)  # 6x6 of 12x12
    for path in (tmp_path / "root" / "test").glob("*/*_mask.png"):
        path.unlink()
    unmasked = studies.images_from_dataset("folder", 4, per_class=2, data_dir=tmp_path / "root", image_size=16)
    assert len(unmasked) == 4 and unmasked.masks is None
    assert sorted(unmasked.names) == ["a/1", "a/2", "b/3", "b/4"]  # class folder and file, not the test set index
    for name in chosen.names:  # each name on its own image
        assert torch.equal(unmasked.x[unmasked.names.index(name)], chosen.x[chosen.names.index(name)])
    assert len({image.sum().item() for image in unmasked.x}) == 4
    (tmp_path / "root" / "test" / "b" / "3.jpg").write_bytes((tmp_path / "root" / "test" / "b" / "3.png").read_bytes())
    with pytest.warns(UserWarning, match="5 test images taken, not the 6 asked: there are no more"):
        both = studies.images_from_dataset("folder", 6, per_class=3, data_dir=tmp_path / "root", image_size=16)
    b3 = str(tmp_path / "root" / "test" / "b" / "3")
    assert sorted(both.names) == sorted(["a/1", "a/2", b3 + ".jpg", b3 + ".png", "b/4"])  # whole path: same stem


def test_folder_dataset_images_are_preprocessed_and_named_as_the_model_says(tmp_path, capsys):
    from rectgrad import zoo

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 2)).eval()
    torch.save(model, tmp_path / "wide.pt")
    (tmp_path / "wide.json").write_text('{"input_size": [3, 10, 15], "mean": [0.2, 0.3, 0.4], "std": 0.25, '
                                        '"crop_pct": null, "label_names": ["mine0", "mine1"]}')
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for label in ("cat", "dog"):
            (tmp_path / "root" / split / label).mkdir(parents=True)
            for i in range(2):
                Image.fromarray(rng.integers(0, 256, (30, 45, 3), dtype=np.uint8)).save(
                    tmp_path / "root" / split / label / f"{i}.png")
    mask = np.zeros((30, 45), np.uint8)
    mask[:, :15] = 1  # a 0/1 mask: the left third is the object
    for label in ("cat", "dog"):
        Image.fromarray(mask).save(tmp_path / "root" / "test" / label / "0_mask.png")
    loaded = zoo.load(tmp_path / "wide.pt")
    chosen = studies.images_from_dataset("folder", 2, data_dir=tmp_path / "root", loaded=loaded)
    files = [tmp_path / "root" / "test" / name for name in ("cat/0.png", "dog/0.png")]
    assert chosen.names == ["cat/0", "dog/0"] and chosen.labels.tolist() == [0, 1]  # the masked ones
    assert chosen.classes == ["mine0", "mine1"] and (chosen.mean, chosen.std) == (loaded.mean, loaded.std)
    torch.testing.assert_close(chosen.x, studies.images_from_files(loaded, files).x)  # 10 x 15, as files are read
    assert chosen.masks.shape == (2, 10, 15) and chosen.masks[:, :, :5].all() and not chosen.masks[:, :, 5:].any()
    assert torch.equal(studies.images_from_files(loaded, files).masks, chosen.masks)  # one mask rule for files too
    assert main(["study", "feature-maps", "--dataset", "folder", "--data-dir", str(tmp_path / "root"), "--model",
                 str(tmp_path / "wide.pt"), "--count", "2", "--out", str(tmp_path / "out")]) == 0
    predicted = {row["predicted"] for row in read_csv(tmp_path / "out" / "feature_maps_images.csv")}
    assert predicted and predicted <= {"mine0", "mine1"}  # the model's class names, not the folder's


def test_the_papers_masked_cifar_images_come_flipped_to_rgb_with_their_masks(tmp_path, capsys, monkeypatch):
    for name in ("airplane", "automobile"):
        for k in (1, 2):
            rgb = np.zeros((32, 32, 3), np.uint8)
            rgb[..., 0], rgb[..., 1], rgb[..., 2] = 250, 20 * k, 5  # red: stored BGR, as the paper's JPEGs are
            Image.fromarray(rgb[..., ::-1].copy()).save(tmp_path / f"{name}_{k}.jpg", quality=100)
            mask = np.zeros((32, 32), np.uint8)
            mask[8:24, 8:24] = 255
            Image.fromarray(mask).save(tmp_path / f"{name}_{k}_mask.jpg")
    images = studies.images_from_dataset("cifar10-masked", 4, per_class=2, data_dir=tmp_path)
    assert images.names == ["airplane_1", "airplane_2", "automobile_1", "automobile_2"]
    assert images.labels.tolist() == [0, 0, 1, 1] and images.masks.double().mean().item() == pytest.approx(0.25)
    assert (images.x[:, 0] > 0.9).all() and (images.x[:, 2] < -0.9).all()  # red in channel 0: flipped to RGB
    assert studies.images_from_dataset("cifar10-masked", 4, per_class=2, data_dir=tmp_path, download=True).names == \
        images.names  # a folder that is there is read, not downloaded
    monkeypatch.setenv("RECTGRAD_DATA", str(tmp_path / "cache"))  # without data_dir: the cache's cifar10_masks
    with pytest.raises(FileNotFoundError, match=f"masked CIFAR-10 images are not in {tmp_path / 'cache'}.*--download"):
        studies.images_from_dataset("cifar10-masked", 4)
    with pytest.raises(ValueError, match="unknown dataset 'mnist'; known: fashion-mnist, cifar10, folder, cifar10-ma"):
        studies.images_from_dataset("mnist", 4)
    save_checkpoint(PaperCNN(in_channels=3, image_size=32, num_classes=10).eval(), tmp_path / "cifar.pt")
    checkpoint = studies.images_from_dataset("cifar10-masked", 4, per_class=2, data_dir=tmp_path,
                                             loaded=zoo.load(tmp_path / "cifar.pt"))
    assert torch.equal(checkpoint.x, images.x) and checkpoint.mean is None  # a checkpoint takes [-1, 1], as before
    torch.save(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 30 * 30, 10)).eval(),
               tmp_path / "own.pt")
    (tmp_path / "own.json").write_text('{"input_size": [3, 32, 32], "mean": [0.4, 0.5, 0.6], "std": [0.2, 0.25, 0.3]}')
    own = studies.images_from_dataset("cifar10-masked", 4, per_class=2, data_dir=tmp_path,
                                      loaded=zoo.load(tmp_path / "own.pt"))  # normalised as the model declares
    assert (own.mean, own.std) == ((0.4, 0.5, 0.6), (0.2, 0.25, 0.3))
    torch.testing.assert_close(own.to_pixels(own.x), checkpoint.to_pixels(checkpoint.x))  # the same pixels
    (tmp_path / "own.json").unlink()  # ImageNet's mean and std only assumed: the paper's [-1, 1] stays
    bare = studies.images_from_dataset("cifar10-masked", 4, per_class=2, data_dir=tmp_path,
                                       loaded=zoo.load(tmp_path / "own.pt"))
    assert torch.equal(bare.x, images.x) and bare.mean is None
    assert main(["study", "layers", "--dataset", "cifar10-masked", "--data-dir", str(tmp_path), "--count", "2",
                 "--model", str(tmp_path / "cifar.pt"), "--out", str(tmp_path / "out")]) == 0
    assert "| background area |" in (tmp_path / "out" / "layers.md").read_text()  # the masks came along


def test_adversarial_study_refuses_a_step_that_is_not_finite():
    images = Images(torch.zeros(2, 1, SIZE, SIZE), ["p", "q"], classes=["up", "down"])
    for eps in (float("nan"), 0.0, -0.01, True):  # True is no step of 1
        with pytest.raises(ValueError, match=f"eps must be a finite positive step, got {eps}"):
            studies.adversarial(Flippable(), images, eps=eps)


@pytest.mark.skipif(not (FASHION_MNIST_SYSTEM_DIR / "t10k-images-idx3-ubyte.gz").is_file(),
                    reason="Fashion-MNIST is not installed")
def test_dataset_images_pairs_and_masks(tmp_path):
    images = studies.images_from_dataset("fashion-mnist", 6, per_class=2)
    assert images.labels.tolist() == [0, 0, 1, 1, 2, 2] and images.x.shape == (6, 1, 28, 28)
    assert images.masks.shape == (6, 28, 28) and 0 < images.masks.double().mean() < 1
    assert images.x.min() >= -1 and images.x.max() <= 1
    torch.manual_seed(0)
    save_checkpoint(PaperCNN(1, 28, 10).eval(), tmp_path / "fm.pt", dataset="fashion-mnist")
    assert main(["study", "layers", "--dataset", "fashion-mnist", "--count", "2", "--model", str(tmp_path / "fm.pt"),
                 "--out", str(tmp_path / "out"), "--dpi", "50"]) == 0
    assert math.isfinite(float(read_csv(tmp_path / "out" / "layers_layers.csv")[0]["Saliency background"]))


def test_study_helper_edge_cases_by_hand(cnn):
    """spread refuses no layers (it would return none); a constant map's NaN comes without a division warning;
    engine_gradients without a target explains the predicted class; predict takes a softmax model's outputs as its
    probabilities (a second softmax would flatten the confidence); tables print floats to 4 significant digits."""
    from rectgrad.studies._common import _first_of_classes, markdown_table

    with pytest.raises(ValueError, match="max_layers must be a positive integer, got 0"):
        spread([1, 2, 3], 0)
    with pytest.raises(ValueError, match="max_layers must be a positive integer, got 0"):
        hidden_layers(cnn, square_images(1).x, max_layers=0)
    for study in (studies.layers, studies.feature_maps):  # 2.5 failed in range() ("'float' object ...")
        with pytest.raises(ValueError, match="max_layers must be a positive integer, got 2.5"):
            study(cnn, square_images(1), max_layers=2.5, show=0)
    assert spread([1, 2, 3], 3) == [1, 2, 3] and spread([1, 2, 3], 1) == [1]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert math.isnan(studies.spearman(np.zeros(4), np.arange(4.0)))
    x = square_images().x
    predicted = cnn(x).argmax(1)
    assert torch.equal(engine_gradients(cnn, x, None, Options())[0], engine_gradients(cnn, x, predicted, Options())[0])
    with pytest.warns(AttributionWarning, match="look like probabilities"):
        classes, confidence = predict(nn.Sequential(cnn, nn.Softmax(1)), x)
    assert torch.equal(classes, predicted)
    torch.testing.assert_close(confidence, cnn(x).softmax(1).max(1).values)
    assert markdown_table([{"a": 0.123456, "b": float("nan"), "c": "x"}, {"a": 12346.0, "c": 3}]) == (
        "| a | b | c |\n|---|---|---|\n| 0.1235 | nan | x |\n| 1.235e+04 |  | 3 |")
    assert markdown_table([]) == "(no rows)"
    # the first of each class in turn, then the second of each: labels (0, 0, 1, 1, 1) -> 0, 2, 1, 3
    assert _first_of_classes([0, 0, 1, 1, 1], 2, 4, 1, False) == [0, 2, 1, 3]
    with pytest.warns(UserWarning, match="2 test images taken, not the 3 asked: there are no more"):
        assert _first_of_classes([1, 0], 2, 3, 2, False) == [1, 0]
    for label in (2, -1):  # a label outside the classes is named, not searched for forever
        with pytest.raises(ValueError, match=rf"test image 1 has label {label}, outside the 2 classes 0\.\.1"):
            _first_of_classes([0, label, 1], 2, 3, 1, False)


def test_adversarial_noise_control_by_hand():
    """The control adds eps times a +-1 pattern drawn from ``seed`` to the [-1, 1] pixels (clipped); its map explains
    its own predicted class and is compared with the image's: 1 - Spearman, mean over images."""
    model = TwoPatterns().eval()
    x = torch.rand(8, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(2)) * 0.2 - 0.1  # near relu's kink
    images = Images(x, [f"img{i}" for i in range(8)], classes=["a", "b"])
    predicted = model(x).argmax(1)
    clean = explain(model, x, predicted, "saliency").sum(1)
    changes, noise_flips = {}, []
    for seed in (0, 1):
        result = studies.adversarial(model, images, eps=0.05, methods="saliency", seed=seed, show=0)
        signs = torch.randint(0, 2, x.shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1
        x_noise = (x + 0.05 * signs).clamp(-1, 1)
        predicted_noise = model(x_noise).argmax(1)
        noisy = explain(model, x_noise, predicted_noise, "saliency").sum(1)
        (row,) = result.tables["sensitivity"]
        changes[seed] = row["noise change"]
        assert row["noise change"] == pytest.approx(np.mean([1 - studies.spearman(a, b) for a, b in zip(clean, noisy)]))
        assert [r["noise flipped"] for r in result.tables["images"]] == (predicted_noise != predicted).tolist()
        noise_flips += (predicted_noise != predicted).tolist()
    assert any(noise_flips) and changes[0] != changes[1]  # the noise flips some classes; the seed matters


def test_adversarial_study_steps_in_pixels_for_a_normalised_model():
    """The FGSM step is eps on [-1, 1] pixels, 0.01 / 2 / 0.2 = 0.025 in this model's inputs: it flips both images;
    a step of eps in its inputs (0.004 in pixels) would not."""
    mean, std = (0.5,), (0.2,)

    class Normalised(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = Flippable()

        def forward(self, t):
            return self.net(to_pixels(t, mean, std))

    images = Images(from_pixels(torch.zeros(2, 1, SIZE, SIZE), mean, std), ["p", "q"], mean=mean, std=std)
    result = studies.adversarial(Normalised(), images, methods="saliency", show=0)
    assert [r["flipped"] for r in result.tables["images"]] == [True, True]


class PositivePart(nn.Module):
    """relu(x) and relu(2 x) (a 1x1 convolution), pooled to 1x1, relu again, then a linear layer: an image of negative
    pixels has an all-zero saliency map; one of positive pixels a constant one."""

    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(1, 2, 1), nn.Linear(2, 3)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([1.0, 2.0]).view(2, 1, 1, 1))
            self.conv.bias.zero_()
            self.fc.weight.copy_(torch.tensor([[1.0, 1.0], [0.0, 0.0], [-1.0, 0.0]]))
            self.fc.bias.zero_()

    def forward(self, x):
        return self.fc(torch.relu(nn.functional.adaptive_avg_pool2d(torch.relu(self.conv(x)), 1)).flatten(1))


def test_feature_maps_draw_an_all_zero_saliency_map_last_and_skip_1x1_activations():
    model = PositivePart()
    images = square_images(2)
    images = dataclasses.replace(images, x=torch.stack([-images.x[0].abs() - 0.1, images.x[1].abs() + 0.1]))
    assert [k for k, _ in activations(model, images.x)] == [1]  # not the relu over the 1x1 pooled map
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = studies.feature_maps(model, images, show=1)
    shares = [r["saliency mass on background"] for r in result.tables["images"]]
    assert math.isnan(shares[0]) and shares[1] == pytest.approx(1 - 36 / 144)  # constant map: the background area
    assert list(result.figures) == ["img1"]  # the NaN share is no noisiest map
    # masks with no background: the share of active background units is NaN (none to count), not 0
    whole = dataclasses.replace(images, masks=torch.ones(2, SIZE, SIZE, dtype=torch.bool))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        (row,) = studies.feature_maps(model, whole, show=0).tables["layers"]
    assert row["background area"] == 0.0 and row["active on object"] == row["active fraction"] == 0.5
    assert math.isnan(row["active on background"]) and row["mass on background"] == 0.0


def test_layers_study_takes_max_layers(cnn):
    from rectgrad.studies.layers import _wrap

    assert _wrap("features.block.conv1") == "features.block.\nconv1" and _wrap("features.2") == "features.2"
    rows = studies.layers(cnn, square_images(2), max_layers=2, show=0).tables["layers"]
    assert [r["layer"] for r in rows] == ["x (input)", "features.2", "features.7"]


def test_threshold_study_of_one_image_and_its_sparsity_figure(cnn):
    result = studies.threshold(cnn, square_images(1), qs=(99, 95), show=0)
    rows = result.tables["sparsity"]
    assert [r["nonzero std"] for r in rows] == [0.0] * 3  # one image: no spread (not NaN)
    lines = {line.get_label(): line for line in result.figures["sparsity"].axes[0].lines}
    assert list(lines["non-zero"].get_xdata()) == [95.0, 99.0]
    assert list(lines["non-zero"].get_ydata()) == [r["nonzero fraction"] for r in rows[1:]]
    assert list(lines["non-zero, tau = 0"].get_ydata()) == [rows[0]["nonzero fraction"]] * 2
    assert rows[0]["nonzero fraction"] > rows[1]["nonzero fraction"]  # (the tau = 0 line is not q = 95's)


def test_rules_toy_scores_and_thresholds_by_hand():
    from rectgrad.studies.rules import AffineToy

    # a = (3, 2, 1, 0), R = (1, 10, -100, 1000); tau: the 74th percentile of 4 scores (nearest), the 3rd smallest
    expected = {"PR1 (RectGrad)": ("(3, 20, -100, 0)", 3.0), "PR2": ("(3, 20, 100, 0)", 20.0),
                "PR3": ("(3, 2, 1, 0)", 2.0), "PR4": ("(1, 10, -100, 1000)", 10.0),
                "RectGradMod": ("(3, 20, -100, 0)", 3.0)}
    assert {r["rule"]: (r["scores"], r["tau"]) for r in studies.toy_b2()} == expected
    toy = studies.rules(AffineToy(), toy_q=0.0).tables["toy_b2"]  # the toy at the q asked
    assert toy == studies.toy_b2(0.0) and toy != studies.toy_b2()


@pytest.mark.parametrize("q", [150.0, -1.0, float("nan")])
def test_the_b2_toy_refuses_a_percentile_outside_0_100_by_name(q):
    # numpy's "Percentiles must be in the range [0, 100]" (after the engine's pass) named neither q nor toy_q
    with pytest.raises(ValueError, match=rf"^q must be a percentile in \[0, 100\], got {q}"):
        studies.toy_b2(q)
    with pytest.raises(ValueError, match=rf"^toy_q must be a percentile in \[0, 100\], got {q}"):
        studies.rules(None, toy_q=q)


def test_images_and_study_inputs_are_checked(cnn):
    with pytest.raises(ValueError, match=r"expected \(N, C, H, W\) inputs with one name each, got \(2, 1, 4, 4\) "
                                         "and 3 names"):
        Images(torch.zeros(2, 1, 4, 4), ["a", "b", "c"])
    images = Images(torch.zeros(1, 1, 4, 4), ["a"], classes=["cat", "dog"])
    assert [images.class_name(i) for i in (0, 1, 2, -1)] == ["cat", "dog", "2", "-1"]  # unknown: the index
    with pytest.raises(TypeError, match="the inputs are torch.float64 but the model's weights torch.float32"):
        predict(cnn, square_images(1).x.double())  # a float64 image from numpy, named as such


def test_images_masks_go_to_the_images_device():
    # masks made on the CPU for images on a GPU: layers, feature_maps and rules compared them with maps made there,
    # torch's "Expected all tensors to be on the same device" (the "meta" device stands in for a GPU)
    x = torch.zeros(1, 1, 2, 2, device="meta")
    assert Images(x, ["a"], masks=torch.ones(1, 2, 2, dtype=torch.bool)).masks.device == x.device


def test_images_labels_are_one_class_index_per_image(cnn):
    # a list of labels was kept as given and coherence failed on it ("'list' object has no attribute 'tolist'"); too
    # few labels failed with an IndexError in the pairs
    images = square_images(3)
    as_list = Images(images.x, images.names, labels=[0, 0, 1])
    assert torch.equal(as_list.labels, torch.tensor([0, 0, 1]))
    given = studies.coherence(cnn, as_list, methods=("saliency",), show=0).tables
    assert given == studies.coherence(cnn, dataclasses.replace(images, masks=None), methods=("saliency",),
                                      show=0).tables
    with pytest.raises(ValueError, match=r"labels must be one class index per image, \(3,\), got shape \(2,\)"):
        Images(images.x, images.names, labels=torch.tensor([0, 1]))


def test_rules_study_passes_the_padding_trick(cnn):
    images = square_images(2)
    predicted = cnn(images.x).argmax(1)
    for padding in (False, True):
        (row,) = studies.rules(cnn, images, q=90.0, candidates=("pr1",), padding_trick=padding,
                               show=0).tables["maps"]
        attr = RectGrad(cnn).attribute(images.x, target=predicted, q=90.0, padding_trick=padding)
        assert row["nonzero fraction"] == pytest.approx(float((attr != 0).double().mean())), padding


def test_cli_study_options_reach_the_study(model_and_folder, tmp_path, monkeypatch):
    # every option of each `study` command arrives, unchanged, as the study function's argument (mutation testing:
    # an option dropped or swapped on its way would silently give the default figures)
    path, folder, _ = model_and_folder
    (folder / "10.png").unlink()
    given = {}

    def recorded(name):
        def study(model, images, **kwargs):
            given[name] = dict(kwargs, n=None if images is None else len(images))
            return studies.StudyResult(name, {"rows": [{"a": 1}]})
        return study

    for name in ("threshold", "coherence", "adversarial", "layers", "feature_maps", "rules"):
        monkeypatch.setattr(studies, name, recorded(name))
    common = [str(folder), "--model", str(path), "--dpi", "50"]
    for command, extra in (
            ("threshold", ["--q", "90", "--q", "10", "--no-padding-trick", "--internal-batch-size", "5",
                           "--show", "2"]),
            ("coherence", ["--method", "saliency", "--method", "rectgrad", "--seed", "7", "--internal-batch-size",
                           "3", "--no-progress", "--show", "3"]),
            ("adversarial", ["--methods", "guided_bp,deconv", "--seed", "9", "--eps", "0.25",
                             "--internal-batch-size", "2"]),
            ("layers", ["--q", "42", "--layer", "features.0", "--layer", "features.3", "--internal-batch-size", "3"]),
            ("feature-maps", ["--channels", "5", "--max-layers", "2", "--show", "1"]),
            ("rules", ["--q", "77", "--internal-batch-size", "4"])):
        assert main(["study", command, *common, "--out", str(tmp_path / command), *extra]) == 0, command
    assert given["threshold"] == {"qs": (90.0, 10.0), "padding_trick": False, "internal_batch_size": 5, "show": 2,
                                  "n": 4}
    assert given["coherence"] == {"methods": ("saliency", "rectgrad"), "seed": 7, "internal_batch_size": 3,
                                  "progress": False, "show": 3, "n": 4}
    assert given["adversarial"] == {"eps": 0.25, "methods": ("guided_bp", "deconv"), "seed": 9,
                                    "internal_batch_size": 2, "progress": True, "n": 4}
    assert given["layers"] == {"q": 42.0, "layer_names": ["features.0", "features.3"], "max_layers": 8,
                               "internal_batch_size": 3, "n": 4}
    assert main(["study", "layers", *common, "--out", str(tmp_path / "layers-max"), "--max-layers", "3"]) == 0
    assert given["layers"] == {"q": 98.0, "layer_names": None, "max_layers": 3, "internal_batch_size": 16, "n": 4}
    assert given["feature_maps"] == {"channels": 5, "max_layers": 2, "internal_batch_size": 16, "show": 1, "n": 4}
    assert given["rules"] == {"q": 77.0, "internal_batch_size": 4, "n": 4}
    # the defaults: the studies' own (no qs, no show), the paper's comparison, every layer choice left to the study
    for command in ("threshold", "coherence", "layers", "rules"):
        assert main(["study", command, *common, "--out", str(tmp_path / f"{command}-default")]) == 0, command
    assert given["threshold"] == {"padding_trick": True, "internal_batch_size": 16, "n": 4}
    assert given["coherence"] == {"methods": tuple(studies.COMPARED), "seed": 0, "internal_batch_size": 16,
                                  "progress": True, "n": 4}
    assert given["layers"] == {"q": 98.0, "layer_names": None, "max_layers": 8, "internal_batch_size": 16, "n": 4}
    assert main(["study", "rules", "--out", str(tmp_path / "toy")]) == 0  # no images: the toy alone
    assert given["rules"] == {"q": 98.0, "internal_batch_size": 16, "n": None}


def test_cli_study_dataset_options_reach_the_loaders(model_and_folder, tmp_path, monkeypatch):
    # --dataset, --count, --data-dir, --download reach images_from_dataset (coherence: two images per class), and
    # --model, --device reach zoo.load
    path, folder, _ = model_and_folder
    (folder / "10.png").unlink()
    calls, loads = [], []
    load = zoo.load

    def from_dataset(name, count, per_class, data_dir, download=False, loaded=None):
        calls.append((name, count, per_class, data_dir, download))
        return studies.images_from_files(loaded, [folder])

    def loading(model, **kwargs):
        loads.append((model, kwargs.get("device")))
        return load(model, **kwargs)

    monkeypatch.setattr(studies, "images_from_dataset", from_dataset)
    monkeypatch.setattr(zoo, "load", loading)
    monkeypatch.setattr(studies, "coherence", lambda model, images, **kw: studies.StudyResult("c", {"rows": [{}]}))
    monkeypatch.setattr(studies, "layers", lambda model, images, **kw: studies.StudyResult("l", {"rows": [{}]}))
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    assert main(["study", "coherence", "--dataset", "fashion-mnist", "--count", "6", "--data-dir", str(data_dir),
                 "--download", "--model", str(path), "--device", "cpu", "--out", str(tmp_path / "c")]) == 0
    assert main(["study", "layers", "--dataset", "fashion-mnist", "--model", str(path), "--out",
                 str(tmp_path / "l")]) == 0
    ruled = []
    monkeypatch.setattr(studies, "rules", lambda model, images, **kw: ruled.append(images) or studies.StudyResult(
        "r", {"rows": [{}]}))
    assert main(["study", "rules", "--dataset", "fashion-mnist", "--count", "3", "--model", str(path), "--out",
                 str(tmp_path / "r")]) == 0  # a dataset alone (no image files) also gives rules its maps
    assert ruled[0] is not None and len(ruled[0]) == 4
    assert calls == [("fashion-mnist", 6, 2, data_dir, True), ("fashion-mnist", 4, 1, None, False),
                     ("fashion-mnist", 3, 1, None, False)]
    auto = "cuda" if torch.cuda.is_available() else "cpu"
    assert loads == [(str(path), "cpu"), (str(path), auto), (str(path), auto)]


def test_cli_study_images_and_dataset_together_are_refused(model_and_folder, tmp_path, capsys):
    # exactly one source of images: both given is a user error (exit 2), as none is
    path, folder, _ = model_and_folder
    assert main(["study", "threshold", str(folder), "--dataset", "fashion-mnist", "--model", str(path), "--out",
                 str(tmp_path / "o")]) == 2
    assert "exactly one of them" in capsys.readouterr().err


# ------------------------------------------------------------------ exploratory: the study commands on unusual inputs


def _masked_folder(model_and_folder):
    """The fixture's checkpoint and its folder of four images, each with its mask."""
    path, folder, _ = model_and_folder
    (folder / "10.png").unlink()  # (it has no mask: the folder would be refused)
    return path, folder


def test_cli_layers_refuses_max_layers_with_layer_not_ignores_it(model_and_folder, tmp_path, capsys, monkeypatch):
    from rectgrad import zoo

    path, folder = _masked_folder(model_and_folder)
    loads = []
    monkeypatch.setattr(zoo, "load", lambda *args, **kwargs: loads.append(args))
    status = main(["study", "layers", str(folder), "--model", str(path), "--layer", "features.2", "--layer",
                   "features.5", "--max-layers", "1", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert status == 2 and err.startswith("error: --max-layers has no use with --layer") and not loads


def test_cli_study_does_not_write_through_a_link_in_out_over_an_input_image(model_and_folder, tmp_path, capsys):
    path, folder = _masked_folder(model_and_folder)
    before = (folder / "1.png").read_bytes()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "threshold_maps.png").symlink_to(folder / "1.png")  # docs: "or linking to one" is refused
    status = main(["study", "threshold", str(folder / "1.png"), "--model", str(path), "--out", str(tmp_path / "out"),
                   "--dpi", "30", "--q", "90"])
    assert (folder / "1.png").read_bytes() == before  # the user's image is left as it was
    assert status == 0 or capsys.readouterr().err.startswith("error: --out")  # (refused, or the link replaced)


def test_cli_study_out_a_dangling_link_is_refused_before_any_work(model_and_folder, tmp_path, capsys, monkeypatch):
    from rectgrad import zoo

    path, folder = _masked_folder(model_and_folder)
    loads, load = [], zoo.load
    monkeypatch.setattr(zoo, "load", lambda *args, **kwargs: loads.append(args) or load(*args, **kwargs))
    (tmp_path / "figures").symlink_to(tmp_path / "gone")  # its target was removed (or never made)
    status = main(["study", "threshold", str(folder / "1.png"), "--model", str(path), "--out",
                   str(tmp_path / "figures"), "--q", "90", "--dpi", "30"])
    err = capsys.readouterr().err
    if status == 0:  # written where the link points: fine too
        assert (tmp_path / "gone" / "threshold_sparsity.csv").is_file()
    else:  # else refused before any work, saying why
        assert status == 2 and err.startswith(f"error: --out {tmp_path / 'figures'}") and "Errno" not in err
        assert not loads


def test_cli_study_a_dpi_too_large_is_blamed_on_dpi(model_and_folder, tmp_path, capsys):
    path, folder = _masked_folder(model_and_folder)
    assert main(["study", "rules", str(folder / "1.png"), "--model", str(path), "--out", str(tmp_path / "o"),
                 "--dpi", "100000"]) == 2
    err = capsys.readouterr().err
    assert "--dpi" in err and "--count" not in err


@pytest.mark.parametrize("study", ["coherence", "adversarial"])
def test_cli_study_where_every_method_asked_is_skipped_is_an_error(cnn, model_and_folder, tmp_path, capsys, study):
    _, folder = _masked_folder(model_and_folder)
    torch.jit.trace(cnn, torch.zeros(1, 1, SIZE, SIZE)).save(str(tmp_path / "scripted.pt"))  # RectGrad cannot reach in
    (tmp_path / "scripted.json").write_text(f'{{"input_size": [1, {SIZE}, {SIZE}], "mean": 0.5, "std": 0.5}}')
    status = main(["study", study, str(folder / "1.png"), "--model", str(tmp_path / "scripted.pt"), "--out",
                   str(tmp_path / "o"), "--methods", "rectgrad", "--no-progress", "--dpi", "30"])
    err = capsys.readouterr().err
    assert status == 2 and err.count("error: ") == 1 and "rectgrad" in err.lower() and "TorchScript" in err


def test_cli_study_rerun_into_the_same_out_leaves_no_earlier_results(model_and_folder, tmp_path):
    path, folder = _masked_folder(model_and_folder)
    out = tmp_path / "o"
    assert main(["study", "rules", str(folder / "1.png"), "--model", str(path), "--out", str(out), "--dpi", "30"]) == 0
    assert (out / "rules_maps.csv").exists() and (out / "rules_grid.png").exists()
    (out / "rules_mine.csv").write_text("the user's own")  # not the study's: kept
    assert main(["study", "rules", "--out", str(out)]) == 0  # the toy alone: no maps this time
    assert sorted(p.name for p in out.iterdir()) == [".rectgrad-rules.json", "rules.md", "rules_mine.csv",
                                                      "rules_toy_b2.csv"]
    assert json.loads((out / ".rectgrad-rules.json").read_text()) == ["rules.md", "rules_toy_b2.csv"]


def test_a_rerun_stopped_while_drawing_leaves_no_figure_of_the_earlier_run(tmp_path, monkeypatch):
    # a figure too large for --dpi (or Ctrl-C) after the new numbers were written: the earlier run's figures, of these
    # images or of others, would pass for this run's; a later run still cleans up what this one listed
    from rectgrad import viz
    from rectgrad.studies._common import StudyResult, new_figure

    def result(names, table):
        return StudyResult("feature-maps", {"images": [{"image": name} for name in table]},
                           {name: new_figure(1, 1) for name in names})

    result(["a", "b"], ["a", "b"]).save(tmp_path, dpi=10)
    assert {"feature_maps_a.png", "feature_maps_b.png"} <= {p.name for p in tmp_path.iterdir()}
    (tmp_path / "feature_maps_mine.png").write_text("the user's own")

    def too_large(fig, path, dpi=150):
        raise MemoryError

    monkeypatch.setattr(viz, "save_figure", too_large)
    with pytest.raises(MemoryError):
        result(["c", "b"], ["c", "b"]).save(tmp_path, dpi=10)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".rectgrad-feature_maps.json", "feature_maps.md",
                                                          "feature_maps_images.csv", "feature_maps_mine.png"]
    assert [r["image"] for r in read_csv(tmp_path / "feature_maps_images.csv")] == ["c", "b"]
    monkeypatch.undo()
    (tmp_path / "feature_maps_c.png").write_text("drawn before the stop")  # as if the first figure had been
    result([], ["c"]).save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".rectgrad-feature_maps.json", "feature_maps.md",
                                                          "feature_maps_images.csv", "feature_maps_mine.png"]


def test_a_study_refuses_to_replace_files_no_study_wrote(tmp_path):
    # a project folder of the user's own: its threshold.md (or a CSV or figure of a study's name) is the user's, not
    # the study's to replace; refused before anything is written or removed
    from rectgrad.studies._common import StudyResult, new_figure

    def result():
        return StudyResult("threshold", {"sparsity": [{"q": 90}]}, {"grid": new_figure(1, 1)})

    (tmp_path / "threshold.md").write_text("my notes")
    with pytest.raises(FileExistsError, match=f"^{re.escape(str(tmp_path / 'threshold.md'))} exists and no rectgrad "
                                              "study wrote it: the study would replace it; give another folder"):
        result().save(tmp_path, dpi=10)
    (tmp_path / "threshold_grid.png").write_text("my picture")
    with pytest.raises(FileExistsError, match=f"^{re.escape(str(tmp_path))} holds threshold.md, threshold_grid.png, "
                                              "which no rectgrad study wrote: the study would replace them"):
        result().save(tmp_path, dpi=10)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["threshold.md", "threshold_grid.png"]
    assert (tmp_path / "threshold.md").read_text() == "my notes"
    # the study's own files (listed in its manifest) are replaced on a rerun; a file it did not list is still refused
    (tmp_path / "threshold.md").unlink()
    (tmp_path / "threshold_grid.png").unlink()
    StudyResult("threshold", {"sparsity": [{"q": 90}]}).save(tmp_path)
    (tmp_path / "threshold_grid.png").write_text("my picture")
    with pytest.raises(FileExistsError, match="threshold_grid.png exists and no rectgrad study wrote it"):
        result().save(tmp_path, dpi=10)
    (tmp_path / "threshold_grid.png").unlink()
    result().save(tmp_path, dpi=10)
    result().save(tmp_path, dpi=10)
    assert (tmp_path / "threshold.md").read_text().startswith("# rectgrad study threshold\n")


def test_a_study_refuses_a_folder_in_place_of_one_of_its_files_before_writing_any(tmp_path):
    # a folder named threshold_grid.png: the writing failed on it after the tables and summary were written
    from rectgrad.studies._common import StudyResult, new_figure

    (tmp_path / "threshold_grid.png").mkdir()
    result = StudyResult("threshold", {"sparsity": [{"q": 90}]}, {"grid": new_figure(1, 1)})
    with pytest.raises(IsADirectoryError, match=f"^{re.escape(str(tmp_path / 'threshold_grid.png'))} is a folder, "
                                                "where the study writes a file of that name: give another folder"):
        result.save(tmp_path, dpi=10)
    assert [p.name for p in tmp_path.iterdir()] == ["threshold_grid.png"]


def test_a_study_folder_made_before_manifests_is_the_studys(tmp_path):
    # a folder a study wrote before it listed its files: its <study>.md opens with the study's title
    from rectgrad.studies._common import StudyResult

    result = StudyResult("feature-maps", {"layers": [{"a": 1}]})
    (tmp_path / "feature_maps.md").write_text("# rectgrad study feature-maps\n\nearlier\n")
    (tmp_path / "feature_maps_layers.csv").write_text("a\n0\n")
    result.save(tmp_path)
    assert read_csv(tmp_path / "feature_maps_layers.csv") == [{"a": "1"}]
    other = tmp_path / "other"
    other.mkdir()  # another study's title, or a longer one, is not this study's
    for title in ("# rectgrad study threshold", "# rectgrad study feature-maps and mine"):
        (other / "feature_maps.md").write_text(title + "\n")
        with pytest.raises(FileExistsError, match="feature_maps.md exists and no rectgrad study wrote it"):
            result.save(other)
        assert sorted(p.name for p in other.iterdir()) == ["feature_maps.md"]


def test_cli_study_refuses_a_summary_of_the_users_before_any_work(model_and_folder, tmp_path, capsys, monkeypatch):
    path, folder = _masked_folder(model_and_folder)
    loads = []
    monkeypatch.setattr(zoo, "load", lambda *args, **kwargs: loads.append(args))
    out = tmp_path / "project"
    out.mkdir()
    (out / "threshold.md").write_text("my notes")
    (out / "rules.md").write_text("my rules")
    status = main(["study", "threshold", str(folder), "--model", str(path), "--out", str(out)])
    err = capsys.readouterr().err
    assert status == 2 and not loads and err.startswith(f"error: {out / 'threshold.md'} exists and no rectgrad study "
                                                        "wrote it")
    assert main(["study", "rules", "--out", str(out)]) == 2  # (the toy alone: no model to load)
    assert "rules.md exists and no rectgrad study wrote it" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["rules.md", "threshold.md"]
    assert (out / "threshold.md").read_text() == "my notes"


@pytest.mark.parametrize("argv, name", [
    (["threshold"], "threshold_sparsity.csv"), (["threshold"], "threshold_maps.png"),
    (["coherence"], "coherence_maps_thresholded.png"), (["adversarial"], "adversarial_images.csv"),
    (["layers"], "layers_grid.png"), (["feature-maps"], "feature_maps_layers.csv"), (["rules"], "rules_maps.csv"),
    (["rules"], "rules_grid.png")])
def test_cli_study_refuses_a_table_or_figure_of_the_users_before_any_work(model_and_folder, tmp_path, capsys,
                                                                         monkeypatch, argv, name):
    # only <study>.md was refused before the model loaded; a CSV or figure of the study's name was refused by the
    # save, once all the work was done
    path, folder = _masked_folder(model_and_folder)
    loads = []
    monkeypatch.setattr(zoo, "load", lambda *args, **kwargs: loads.append(args))
    out = tmp_path / "project"
    out.mkdir()
    (out / name).write_text("mine")
    assert main(["study", *argv, str(folder), "--model", str(path), "--out", str(out)]) == 2
    assert capsys.readouterr().err.startswith(f"error: {out / name} exists and no rectgrad study wrote it")
    assert not loads and [p.name for p in out.iterdir()] == [name] and (out / name).read_text() == "mine"


def test_cli_study_refuses_the_toy_table_of_the_users_and_a_figure_named_after_an_image_before_the_work(
        model_and_folder, tmp_path, capsys, monkeypatch):
    path, folder = _masked_folder(model_and_folder)
    out = tmp_path / "project"
    out.mkdir()
    (out / "rules_toy_b2.csv").write_text("mine")
    assert main(["study", "rules", "--out", str(out)]) == 2  # the toy alone
    assert capsys.readouterr().err.startswith(f"error: {out / 'rules_toy_b2.csv'} exists and no rectgrad study")
    (out / "rules_toy_b2.csv").unlink()
    (out / "feature_maps_3.png").write_text("mine")  # named after the image 3.png, known once the images are read
    monkeypatch.setattr(studies, "feature_maps", lambda *args, **kwargs: pytest.fail("the study ran"))
    assert main(["study", "feature-maps", str(folder), "--model", str(path), "--out", str(out), "--show", "1"]) == 2
    assert capsys.readouterr().err.startswith(f"error: {out / 'feature_maps_3.png'} exists and no rectgrad study")
    assert [p.name for p in out.iterdir()] == ["feature_maps_3.png"]


def test_cli_study_count_with_image_files_is_refused_not_ignored(model_and_folder, tmp_path, capsys, monkeypatch):
    from rectgrad import zoo

    path, folder = _masked_folder(model_and_folder)
    loads, load = [], zoo.load
    monkeypatch.setattr(zoo, "load", lambda *args, **kwargs: loads.append(args) or load(*args, **kwargs))
    status = main(["study", "feature-maps", str(folder), "--count", "2", "--model", str(path), "--out",
                   str(tmp_path / "o"), "--show", "1", "--max-layers", "1", "--dpi", "30"])
    if status == 0:  # the first 2 images taken: fine too
        assert len(read_csv(tmp_path / "o" / "feature_maps_images.csv")) == 2
    else:  # else refused before any work
        assert status == 2 and capsys.readouterr().err.startswith("error: --count") and not loads


def test_layers_summary_says_whether_the_padding_trick_was_used(cnn):
    images = square_images(1)
    with_trick = studies.layers(cnn, images, padding_trick=True, show=0).markdown()
    without = studies.layers(cnn, images, padding_trick=False, show=0).markdown()
    assert with_trick.split("## layers")[0] != without.split("## layers")[0]


class SizeGuard(nn.Module):
    """A model that checks its input size with an ``assert`` (as user code often does): made for 12x12 images."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        assert x.shape[-2:] == (SIZE, SIZE), f"expected {SIZE}x{SIZE} images, got {tuple(x.shape[-2:])}"
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))


def test_cli_study_a_model_refusing_the_image_size_otherwise_than_by_runtime_error_is_one_line(model_and_folder,
                                                                                              tmp_path, capsys,
                                                                                              monkeypatch):
    from rectgrad import zoo

    _, folder = _masked_folder(model_and_folder)
    # a model file without a .json: its input size only assumed (224x224 there; 16x16 here), not the one it takes
    monkeypatch.setattr(zoo, "load", lambda *args, **kwargs: zoo.LoadedModel(
        "guarded.pt", SizeGuard().eval(), (16, 16), (0.5,), (0.5,), [], channels=1, size_assumed=True))
    assert main(["study", "threshold", str(folder), "--model", "guarded.pt", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the model cannot take the given images") and err.count("\n") == 1


def test_adversarial_study_of_a_one_output_model_is_not_silently_no_attack():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 1)).eval()
    try:
        result = studies.adversarial(model, square_images(), methods=("saliency",), eps=0.1, show=0)
    except ValueError:
        return  # refused, saying why: fine
    assert result.tables["sensitivity"][0]["adversarial change"] > 0  # the attack moved the images


class PooledBatchNormNet(nn.Module):
    """BatchNorm1d over pooled features: in training mode it takes batches of two or more samples only."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
        self.bn, self.fc = nn.BatchNorm1d(4), nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(self.bn(torch.relu(self.conv2(torch.relu(self.conv1(x)))).mean((2, 3))))


def test_layers_study_of_a_train_mode_model_runs_on_the_batch_it_is_given():
    images = square_images()
    with pytest.warns(AttributionWarning, match="training mode"):
        assert studies.threshold(PooledBatchNormNet().train(), images, qs=(50,), show=0).tables["sparsity"]
    with pytest.warns(AttributionWarning, match="training mode"):
        result = studies.layers(PooledBatchNormNet().train(), images, show=0)
    assert [row["layer"] for row in result.tables["layers"]] == ["x (input)", "conv2"]


def test_cli_study_a_model_of_other_channels_is_pointed_to_the_studies_api(model_and_folder, tmp_path, capsys):
    _, folder = _masked_folder(model_and_folder)
    torch.save(nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                             nn.Linear(4, 3)).eval(), tmp_path / "two.pt")
    assert main(["study", "threshold", str(folder), "--model", str(tmp_path / "two.pt"), "--out",
                 str(tmp_path / "o")]) == 2
    error = capsys.readouterr().err.splitlines()[-1]  # (after the note on what was assumed)
    assert error.startswith("error: ") and "takes 2-channel inputs" in error and "rectgrad.studies" in error


def test_a_palette_mask_holding_0_and_1_marks_its_object(model_and_folder, tmp_path):
    from rectgrad import zoo

    path, _, _ = model_and_folder
    (tmp_path / "voc").mkdir()
    indices = np.zeros((SIZE, SIZE), np.uint8)
    indices[3:9, 3:9] = 1  # 36 object pixels
    mask = Image.frombytes("P", (SIZE, SIZE), indices.tobytes())
    mask.putpalette([0, 0, 0, 128, 0, 0] + [0] * 762)  # index 1 drawn dark red, as in PASCAL VOC
    mask.save(tmp_path / "voc" / "x_mask.png")
    Image.new("L", (SIZE, SIZE), 90).save(tmp_path / "voc" / "x.png")
    # the file holds 0 and 1 (the docs: "or 1 in a mask holding only 0 and 1")
    assert np.unique(np.array(Image.open(tmp_path / "voc" / "x_mask.png"))).tolist() == [0, 1]
    try:
        images = studies.images_from_files(zoo.load(path), [tmp_path / "voc"])
    except ValueError as exc:  # refused, naming the mask: fine too
        assert "x_mask.png" in str(exc)
        return
    assert int(images.masks.sum()) == 36


def test_cli_study_rerun_into_the_same_out_replaces_its_numbers(model_and_folder, tmp_path):
    path, folder = _masked_folder(model_and_folder)
    out = tmp_path / "o"
    for qs in (["--q", "10", "--q", "90"], ["--q", "50"]):
        assert main(["study", "threshold", str(folder / "1.png"), "--model", str(path), "--out", str(out), "--dpi",
                     "30", *qs]) == 0
    assert [row["setting"] for row in read_csv(out / "threshold_sparsity.csv")] == ["tau = 0", "q = 50"]
    summary = (out / "threshold.md").read_text()
    assert "| q = 50 |" in summary and "q = 90" not in summary and summary.count("# rectgrad study threshold") == 1


def test_feature_maps_of_an_image_with_a_long_file_name_are_written(cnn, tmp_path):
    images = square_images(1)
    long_name = Images(images.x, ["x" * 250], masks=images.masks)  # as read from xxx...x.png, 254 bytes
    studies.feature_maps(cnn, long_name, tmp_path, show=1)
    assert len(list(tmp_path.glob("feature_maps_*.png"))) == 1


@pytest.mark.parametrize("image, message", [("missing.png", "image or folder missing.png not found"),
                                            ("broken.png", "cannot read image broken.png")])
def test_cli_study_checks_the_image_arguments_before_the_model_loads(tmp_path, capsys, monkeypatch, image, message):
    from rectgrad import zoo

    def offline(*args, **kwargs):
        raise RuntimeError("could not fetch the pretrained weights (no network)")

    monkeypatch.setattr(zoo, "load", offline)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    assert main(["study", "threshold", image, "--model", "inception-v4", "--out", "o"]) == 2
    assert capsys.readouterr().err.startswith(f"error: {message}")


def test_cli_study_offline_registry_model_advice_fits_the_study_command(model_and_folder, tmp_path, capsys,
                                                                          monkeypatch):
    from rectgrad import zoo

    _, folder = _masked_folder(model_and_folder)

    def offline(weights):
        raise zoo._no_weights("inception-v4", "huggingface.co", "no network")

    monkeypatch.setitem(zoo.REGISTRY, "inception-v4", offline)
    assert main(["study", "threshold", str(folder), "--model", "inception-v4", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: could not fetch the pretrained inception-v4 weights")
    assert "rectgrad explain" not in err  # study's own way: a --weights option of its own, or a model file


def test_cli_study_a_float64_model_file_is_run_or_blamed_on_its_dtype(cnn, model_and_folder, tmp_path, capsys):
    _, folder = _masked_folder(model_and_folder)
    torch.save(copy.deepcopy(cnn).double(), tmp_path / "double.pt")
    (tmp_path / "double.json").write_text(f'{{"input_size": [1, {SIZE}, {SIZE}], "mean": 0.5, "std": 0.5}}')
    status = main(["study", "threshold", str(folder / "1.png"), "--model", str(tmp_path / "double.pt"), "--out",
                   str(tmp_path / "o"), "--q", "90", "--dpi", "30"])
    err = capsys.readouterr().err
    assert status == 0 or (status == 2 and "or image files" not in err and "double" in err)


@pytest.mark.parametrize("study", ["threshold", "coherence", "adversarial", "layers", "feature_maps", "rules"])
def test_studies_send_at_most_internal_batch_size_samples_through_the_model(cnn, study):
    images = square_images(3)
    seen = []
    handle = cnn.register_forward_pre_hook(lambda module, args: seen.append(len(args[0])))
    fewer = {"threshold": {"qs": (50,)}, "coherence": {"methods": ("saliency",)},
             "adversarial": {"methods": ("saliency",)}, "layers": {"max_layers": 1},
             "feature_maps": {"max_layers": 1}, "rules": {"candidates": ("pr1",)}}[study]  # (a fast test)
    try:
        getattr(studies, study)(cnn, images, internal_batch_size=2, show=0, **fewer)
    finally:
        handle.remove()
    assert seen and max(seen) <= 2


def test_fgsm_in_chunks_is_fgsm_of_the_whole_batch(cnn):
    # each image's step is the sign of its own loss's gradient: chunks of 2 (the last of 1) change nothing
    images = square_images(5)
    whole = studies.fgsm(cnn, images.x, 0.05)
    assert torch.equal(studies.fgsm(cnn, images.x, 0.05, internal_batch_size=2), whole)
    target = torch.tensor([2, 0, 1, 1, 0])
    assert torch.equal(studies.fgsm(cnn, images.x, 0.05, target=target, internal_batch_size=2),
                       studies.fgsm(cnn, images.x, 0.05, target=target))
    assert not torch.equal(whole, images.x)


@pytest.mark.parametrize("study, name", [
    ("threshold", "threshold_sparsity.png"), ("coherence", "coherence.md"), ("adversarial", "adversarial_images.csv"),
    ("layers", "layers_grid.png"), ("feature_maps", "feature_maps_img1.png"), ("rules", "rules_maps.csv")])
def test_python_studies_refuse_a_file_of_the_users_in_out_before_any_work(cnn, tmp_path, study, name):
    # a study given out= did all its work (every method's maps) before its save refused the user's file
    (tmp_path / name).write_text("mine")
    calls = []
    handle = cnn.register_forward_pre_hook(lambda module, args: calls.append(len(args[0])))
    try:
        with pytest.raises(FileExistsError, match=f"^{re.escape(str(tmp_path / name))} exists and no rectgrad study "
                                                  "wrote it"):
            getattr(studies, study)(cnn, square_images(2), tmp_path)
    finally:
        handle.remove()
    assert not calls and [p.name for p in tmp_path.iterdir()] == [name] and (tmp_path / name).read_text() == "mine"


def test_python_studies_check_only_the_files_they_write_and_refuse_a_file_as_out(cnn, tmp_path):
    # show=0 draws no figure: a file of the grid figure's name is left alone, the study's own files are written
    (tmp_path / "layers_grid.png").write_text("mine")
    studies.layers(cnn, square_images(2), tmp_path, max_layers=1, show=0)
    assert (tmp_path / "layers_grid.png").read_text() == "mine" and (tmp_path / "layers.md").is_file()
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(NotADirectoryError, match=f"^{re.escape(str(tmp_path / 'file'))} exists and is not a folder"):
        studies.rules(None, out=tmp_path / "file")
