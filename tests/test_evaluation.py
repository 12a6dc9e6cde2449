"""The evaluation library (paper Sec. 3 and 5.3) on hand-made models and data: feature-map occlusion, the
noise measures, the ROAR/KAR dataset modification and sweep (resumption included), the results store and
training several models at once."""
import json
import os
import re
import signal
import threading
import time
import warnings
import weakref
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from rectgrad.data import ImageDataset
from rectgrad.evaluation import (LocalBackend, ResultStore, RoarKarResult, background_at, compute_maps,
                                 conv_activations, correctly_classified, feature_map_occlusion, final_threshold,
                                 noise_level, occlude_dataset, patch_attribution, roar_kar)
from rectgrad.evaluation.roar import Job, RayBackend
from rectgrad.methods import explain
from rectgrad.metrics import kar_aoc, roar_auc
from rectgrad.models import PaperCNN
from rectgrad.train import new_model, train_model
from rectgrad.train_many import Retrainer, TrainingInterrupted, checkpoint_seconds, stop_requests, train_many


def toy_dataset(n=6, size=8, seed=0, name="toy") -> ImageDataset:
    """Images whose pixels are never 128, so every replaced pixel (fill 128) can be counted."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 100, (n, 1, size, size), generator=g, dtype=torch.uint8)
    images[n // 2:] += 150
    return ImageDataset(images, torch.arange(n) % 2, ["a", "b"], name)


# ---------------------------------------------------------------- feature-map occlusion (Fig. 2)

class SumModel(nn.Sequential):
    """conv1x1 (identity) -> ReLU -> flatten -> logits (sum of activations, 0): margin = sum of activations."""

    def __init__(self, size: int):
        conv, linear = nn.Conv2d(1, 1, 1), nn.Linear(size * size, 2)
        with torch.no_grad():
            conv.weight.fill_(1), conv.bias.zero_()
            linear.weight.zero_(), linear.bias.zero_()
            linear.weight[0] = 1
        super().__init__(conv, nn.ReLU(), nn.Flatten(), linear)


def half_object() -> tuple[torch.Tensor, torch.Tensor]:
    """A 4x4 image and its mask: object the left half (value 3 per pixel), background the right half (1)."""
    image = torch.ones(1, 1, 4, 4)
    image[..., :2] = 3
    masks = torch.zeros(1, 4, 4, dtype=torch.bool)
    masks[..., :2] = True
    return image, masks


def test_feature_map_occlusion_follows_the_margin_exactly():
    image, masks = half_object()
    model = SumModel(4)
    curve = feature_map_occlusion(model, model[1], image, masks, torch.tensor([0]), steps=5, orders=3,
                                  generator=torch.Generator().manual_seed(0))
    assert torch.allclose(curve.fractions, torch.tensor([0, .25, .5, .75, 1]))
    # margin = object (8 px x 3) + background units left (8 - round(p * 8))
    assert torch.allclose(curve.margins[0], torch.tensor([32.0, 30, 28, 26, 24]))
    assert curve.background.tolist() == [8]
    all_object = torch.ones_like(masks)
    whole = feature_map_occlusion(model, model[1], image.expand(2, -1, -1, -1), torch.cat([masks, all_object]),
                                  torch.tensor([0, 0]), steps=3, orders=2)
    assert whole.background.tolist() == [8, 0] and whole.margins[1].tolist() == [32.0] * 3  # nothing zeroed
    assert torch.allclose(curve.mean(), curve.margins[0])
    assert model[1]._forward_hooks == {}  # the hook is removed


def test_feature_map_occlusion_counts_every_channel_rounds_the_units_and_averages_every_order_whatever_the_batch():
    image, masks = half_object()
    for channels, expected in ((1, [32.0, 29, 27, 24]), (2, [64.0, 59, 53, 48])):
        # SumModel with `channels` copies of the image: object 24 per channel, then the background units left
        # of 8 per channel: p = 1/3 zeroes round(8/3) = 3 of 8 (not 2), round(16/3) = 5 of 16, p = 2/3 5 and 11
        model = SumModel(4)
        model[0], model[3] = nn.Conv2d(1, channels, 1), nn.Linear(channels * 16, 2)
        with torch.no_grad():
            model[0].weight.fill_(1), model[0].bias.zero_(), model[3].weight.zero_(), model[3].bias.zero_()
            model[3].weight[0] = 1
        for batch_size in (2000, 4, 9):  # every order in one pass, one order per pass, 2 orders then 1
            curve = feature_map_occlusion(model, model[1], image, masks, torch.tensor([0]), steps=4, orders=3,
                                          generator=torch.Generator().manual_seed(0), batch_size=batch_size)
            torch.testing.assert_close(curve.margins[0], torch.tensor(expected))
            assert curve.background.tolist() == [8 * channels]


def test_feature_map_occlusion_zeroes_round_p_times_the_background_units_exactly():
    """95 background units at p = 3/10: round(28.5) = 28 (halves to even, as Python's round), not the 29 of the
    float32 product 0.3 x 95 = 28.500001."""
    image, masks = torch.ones(1, 1, 10, 10), torch.zeros(1, 10, 10, dtype=torch.bool)
    masks[0, 0, :5] = True  # 5 object pixels, 95 background ones, each activation 1: margin = 100 - zeroed
    model = SumModel(10)
    curve = feature_map_occlusion(model, model[1], image, masks, torch.tensor([0]), steps=11, orders=1)
    zeroed = [round(Fraction(s * 95, 10)) for s in range(11)]
    assert zeroed[3] == 28 and curve.margins[0].tolist() == [100.0 - z for z in zeroed]


def test_feature_map_occlusion_bad_input():
    model = SumModel(4)
    image, masks, labels = torch.ones(1, 1, 4, 4), torch.zeros(1, 4, 4, dtype=torch.bool), torch.tensor([0])
    with pytest.raises(ValueError, match="masks must be a bool"):
        feature_map_occlusion(model, model[1], image, masks[:, :3], labels)
    with pytest.raises(ValueError, match=r"masks must be a bool .*got ndarray"):
        feature_map_occlusion(model, model[1], image, masks.numpy(), labels)
    for images, what in ((image.numpy(), "ndarray"), ((image * 255).byte(), r"uint8 tensor of shape \(1, 1, 4, 4"),
                         (image[:0], r"float32 tensor of shape \(0, 1, 4, 4\)")):
        with pytest.raises(ValueError, match=rf"images must be the model's float inputs \(N, C, H, W\).*{what}"):
            feature_map_occlusion(model, model[1], images, masks[:len(images)], labels[:len(images)])
    with pytest.raises(ValueError, match="images contain NaN or Inf"):
        feature_map_occlusion(model, model[1], image * float("nan"), masks, labels)
    with pytest.raises(ValueError, match=r"labels must be a tensor of integer class indices of shape \(1,\), got list"):
        feature_map_occlusion(model, model[1], image, masks, [0])
    for steps, orders in ((2.5, 1), (1, 1), (2, 0), (2, True)):
        with pytest.raises(ValueError, match=r"need integers steps >= 2 and orders >= 1"):
            feature_map_occlusion(model, model[1], image, masks, labels, steps=steps, orders=orders)
    with pytest.raises(ValueError, match="labels"):
        feature_map_occlusion(model, model[1], image, masks, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="feature map"):
        feature_map_occlusion(model, model[3], image, masks, labels)
    with pytest.raises(ValueError, match="not called"):
        feature_map_occlusion(model, nn.ReLU(), image, masks, labels)
    with pytest.raises(ValueError, match="labels must be a tensor of integer class indices"):
        feature_map_occlusion(model, model[1], image, masks, torch.tensor([0.0]))
    one_logit = nn.Sequential(nn.Conv2d(1, 1, 1), nn.ReLU(), nn.Flatten(), nn.Linear(16, 1))
    with pytest.raises(ValueError, match="needs a model of at least 2 classes, this one gives 1 logit"):
        feature_map_occlusion(one_logit, one_logit[1], image, masks, labels)  # (its margin was +inf everywhere)
    for label in (-1, 2):  # -1 would score the last class
        with pytest.raises(ValueError, match=f"label {label} is out of range for a model with 2 classes"):
            feature_map_occlusion(model, model[1], image, masks, torch.tensor([label]))
    with pytest.raises(TypeError, match=r"layer must be a module of the model \(e.g. conv_activations"):
        feature_map_occlusion(model, "conv1", image, masks, labels)
    shared = nn.ReLU()
    twice = nn.Sequential(nn.Conv2d(1, 1, 1), shared, nn.Conv2d(1, 1, 1), shared, nn.Flatten(), nn.Linear(16, 2))
    with pytest.raises(ValueError, match="the layer runs 2 times in one forward pass"):
        feature_map_occlusion(twice, shared, image, masks, labels)
    with pytest.raises(TypeError, match=r"generator must be a torch.Generator \(e.g. torch.Generator\(\)"
                                        r".manual_seed\(0\)"):
        feature_map_occlusion(model, model[1], image, masks, labels, generator=0)  # a seed is no generator
    for batch_size in (0, -5, 2.5):  # 0 and -5 ran one order at a time, unasked
        with pytest.raises(ValueError, match=f"batch_size must be a positive integer, got {batch_size}"):
            feature_map_occlusion(model, model[1], image, masks, labels, batch_size=batch_size)


def test_evaluation_functions_leave_the_models_modes_as_they_were():
    model = PaperCNN(1, 8, 3).train()
    model.features[0].eval()  # a mix of modes, as a user may have
    modes = [m.training for m in model.modules()]
    image, masks = torch.rand(1, 1, 8, 8), torch.ones(1, 8, 8, dtype=torch.bool)
    feature_map_occlusion(model, conv_activations(model)["conv1"], image, masks, torch.tensor([0]), steps=2, orders=1)
    correctly_classified(model, ImageDataset(torch.zeros(2, 1, 8, 8, dtype=torch.uint8), torch.tensor([0, 1]),
                                             ["a", "b", "c"], "zeros"))
    compute_maps(model, image, "saliency", torch.tensor([0]))
    assert [m.training for m in model.modules()] == modes


def test_compute_maps_takes_any_targets_one_per_input():
    model, x = PaperCNN(1, 8, 3).eval(), torch.rand(5, 1, 8, 8) * 2 - 1
    expected = compute_maps(model, x, "saliency", torch.tensor([0, 2, 1, 1, 0]), batch_size=2)
    assert torch.equal(compute_maps(model, x, "saliency", [0, 2, 1, 1, 0], batch_size=2), expected)
    assert torch.equal(compute_maps(model, x, "saliency", np.array([0, 2, 1, 1, 0]), batch_size=2), expected)
    predicted = model(x).argmax(1)
    assert torch.equal(compute_maps(model, x, "saliency", None, batch_size=2),
                       compute_maps(model, x, "saliency", predicted, batch_size=2))
    with pytest.raises(ValueError, match=r"targets must hold one class per input, shape \(5,\), got \(2,\)"):
        compute_maps(model, x, "saliency", [0, 1])
    for batch_size in (0, 2.5):
        with pytest.raises(ValueError, match=rf"batch_size must be a positive integer, got {batch_size}"):
            compute_maps(model, x, "saliency", None, batch_size=batch_size)
    for inputs, what in ((x[:0], r"float32 tensor of shape \(0, 1, 8, 8\)"), (x.numpy(), "ndarray")):
        with pytest.raises(ValueError, match=rf"inputs must be a tensor of the model's inputs \(N, ...\).*{what}"):
            compute_maps(model, inputs, "saliency", None)


def test_compute_maps_checks_its_seed_and_wraps_the_batch_seeds():
    """seed=None was a raw TypeError of None + 0; seed=2**64 - 1 was refused at the second batch for the seed
    2**64, which the user never gave."""
    model, x = PaperCNN(1, 8, 3).eval(), torch.rand(2, 1, 8, 8) * 2 - 1
    top = compute_maps(model, x, "smoothgrad", None, batch_size=1, seed=2 ** 64 - 1, samples=2)
    assert torch.equal(top[1:], compute_maps(model, x[1:], "smoothgrad", None, seed=0, samples=2))
    assert torch.equal(top[:1], compute_maps(model, x[:1], "smoothgrad", None, seed=2 ** 64 - 1, samples=2))
    for seed in (None, -1, 2 ** 64, 1.5, True):
        with pytest.raises(ValueError, match=re.escape(f"seed must be an integer in [0, 2**64), got {seed!r}")):
            compute_maps(model, x, "smoothgrad", None, seed=seed, samples=2)


def test_compute_maps_are_the_channel_sums_of_each_batchs_maps():
    """compute_maps in batches of 2 is explain's maps summed over the colour channels (signed, not |.|), each batch
    with its own targets; a stochastic method's batch k is drawn with seed + k."""
    torch.manual_seed(0)
    model, x = PaperCNN(3, 8, 3).eval(), torch.rand(5, 3, 8, 8) * 2 - 1
    targets = torch.tensor([0, 2, 1, 1, 0])
    plain = compute_maps(model, x, "saliency", targets, batch_size=2)
    noisy = compute_maps(model, x, "smoothgrad", targets, batch_size=2, seed=5, samples=3)
    for k, start in enumerate(range(0, 5, 2)):
        batch = slice(start, start + 2)
        assert torch.equal(plain[batch], explain(model, x[batch], targets[batch], "saliency").sum(1, keepdim=True))
        drawn = explain(model, x[batch], targets[batch], "smoothgrad", seed=5 + k, samples=3).sum(1, keepdim=True)
        assert torch.equal(noisy[batch], drawn)
    assert (plain < 0).any()


def test_background_at_layer_resolution():
    masks = torch.zeros(1, 4, 4, dtype=torch.bool)
    masks[0, :2, :2] = True  # object: top-left 2x2 block
    masks[0, 2, 2] = True  # one object pixel of the bottom-right block: still background (3 of 4 pixels)
    masks[0, 0, 2:] = True  # half of the top-right block: background (threshold >= 0.5)
    assert background_at(masks, (2, 2)).tolist() == [[[False, True], [True, True]]]
    assert torch.equal(background_at(masks, (4, 4)), ~masks)
    for bad in (masks.byte(), masks.float(), masks[0]):  # ~ of 0/1 uint8 is 255/254: all background, silently
        with pytest.raises(ValueError, match=r"masks must be a bool \(N, H, W\) tensor, True on the object"):
            background_at(bad, (2, 2))


def test_conv_activations_and_correct_selection():
    model = PaperCNN(1, 8, 3)
    layers = conv_activations(model)
    assert list(layers) == ["conv1", "conv2", "conv3", "conv4"]
    assert layers["conv1"] is model.features[1] and layers["conv4"] is model.features[8]
    dataset = ImageDataset(torch.zeros(7, 1, 8, 8, dtype=torch.uint8), torch.tensor([0, 1, 0, 2, 0, 1, 0]),
                           ["a", "b", "c"], "zeros")
    predicted = int(model(dataset.inputs()[:1]).argmax())
    chosen = correctly_classified(model, dataset, per_class=2)
    expected = torch.nonzero(dataset.labels == predicted).flatten()[:2]
    assert torch.equal(chosen, expected)


class ThreeClassSumModel(nn.Sequential):
    """conv1x1 (identity) -> ReLU -> flatten -> logits (-S - 1, S, -2S - 5) of the activations' sum S: every logit but
    class 1's is negative, so the margin of class 1 is 2S + 1 and that of class 0 is -2S - 1 (S > 0)."""

    def __init__(self, size: int):
        conv, linear = nn.Conv2d(1, 1, 1), nn.Linear(size * size, 3)
        with torch.no_grad():
            conv.weight.fill_(1), conv.bias.zero_()
            linear.weight.copy_(torch.tensor([-1.0, 1, -2])[:, None].expand(3, size * size))
            linear.bias.copy_(torch.tensor([-1.0, 0, -5]))
        super().__init__(conv, nn.ReLU(), nn.Flatten(), linear)


def test_feature_map_occlusion_scores_each_images_own_label_against_negative_other_logits():
    # two different images with different labels: each curve is the margin of its own image and label; the other
    # logits are all negative, so the true class must be left out of the max by -inf (not by 0)
    images = torch.ones(2, 1, 4, 4)
    images[0, ..., :2], images[1, ..., :2], images[1, ..., 2:] = 3, 5, 2  # object: left half (8 pixels)
    masks = torch.zeros(2, 4, 4, dtype=torch.bool)
    masks[..., :2] = True
    labels = torch.tensor([1, 0])
    model = ThreeClassSumModel(4)
    curve = feature_map_occlusion(model, model[1], images, masks, labels, steps=3, orders=2,
                                  generator=torch.Generator().manual_seed(0))
    left = torch.tensor([8.0, 4, 0])  # background units left at p = 0, 1/2, 1
    sums = (8 * 3 + 1 * left, 8 * 5 + 2 * left)  # S of each image
    torch.testing.assert_close(curve.margins, torch.stack([2 * sums[0] + 1, -2 * sums[1] - 1]))
    assert curve.background.tolist() == [8, 8]


def test_feature_map_occlusion_zeroes_each_background_unit_once_in_a_reproducible_random_order():
    # background pixels of distinct values 1..8 under SumModel, one order and one more unit per step: each step
    # lowers the margin by one background value, all of them once (a permutation); the same seeded generator
    # gives the same order, other seeds other orders
    image = torch.full((1, 1, 4, 4), 10.0)
    image[0, 0, :, 2:] = torch.arange(1.0, 9).view(4, 2)
    masks = torch.zeros(1, 4, 4, dtype=torch.bool)
    masks[..., :2] = True
    model = SumModel(4)

    def curve(seed):
        return feature_map_occlusion(model, model[1], image, masks, torch.tensor([0]), steps=9, orders=1,
                                     generator=torch.Generator().manual_seed(seed)).margins[0]

    first = curve(0)
    assert first[0] == 80 + 36 and first[-1] == 80
    assert sorted((first[:-1] - first[1:]).tolist()) == list(range(1, 9))
    assert torch.equal(curve(0), first)
    assert any(not torch.equal(curve(seed), first) for seed in (1, 2, 3))


def test_feature_map_occlusion_runs_at_most_batch_size_rows_per_forward_pass():
    # batch_size bounds the rows of one forward pass (orders x steps rows): 8 // 4 steps = 2 orders per pass
    model = SumModel(4)
    rows = []
    model[0].register_forward_pre_hook(lambda module, args: rows.append(args[0].shape[0]))
    image, masks = torch.ones(1, 1, 4, 4), torch.zeros(1, 4, 4, dtype=torch.bool)
    feature_map_occlusion(model, model[1], image, masks, torch.tensor([0]), steps=4, orders=5, batch_size=8)
    assert rows[1:] == [8, 8, 4]  # rows[0]: the one-image pass that finds the layer's shape


def test_feature_map_occlusion_splits_an_order_when_batch_size_is_below_the_steps():
    # batch_size 3 < 4 steps: one order's 4 rows ran in one pass of 4; now in passes of at most 3, same curve
    model = SumModel(4)
    image, masks = half_object()
    expected = feature_map_occlusion(model, model[1], image, masks, torch.tensor([0]), steps=4, orders=3,
                                     generator=torch.Generator().manual_seed(0))
    rows = []
    model[0].register_forward_pre_hook(lambda module, args: rows.append(args[0].shape[0]))
    curve = feature_map_occlusion(model, model[1], image, masks, torch.tensor([0]), steps=4, orders=3,
                                  generator=torch.Generator().manual_seed(0), batch_size=3)
    assert rows[1:] == [3, 1, 3, 1, 3, 1] and torch.allclose(curve.margins, expected.margins)
    assert torch.equal(curve.background, expected.background)


def test_background_at_averages_the_covered_area_when_the_layer_is_three_times_smaller():
    # 6x6 mask to 2x2: each unit covers a 3x3 block and is background when >= 5 of its 9 pixels are
    masks = torch.ones(1, 6, 6, dtype=torch.bool)
    masks[0, 1, 1] = False  # top-left block: only its centre pixel is background (1/9): object
    masks[0, 0:3, 3:6] = False  # top-right block: 5/9 background, its centre on the object: background
    masks[0, 1, 4] = masks[0, 0, 3] = masks[0, 2, 5] = masks[0, 0, 5] = True
    masks[0, 3:, 3:] = False  # bottom-right block all background; bottom-left all object
    naive = (~masks).view(1, 2, 3, 2, 3).float().mean((2, 4)) >= 0.5
    assert naive.tolist() == [[[False, True], [False, True]]]
    assert torch.equal(background_at(masks, (2, 2)), naive)


def test_conv_activations_takes_every_kind_of_activation_after_a_convolution():
    conv = lambda: nn.Conv2d(1, 1, 1)  # noqa: E731
    acts = [nn.ReLU(), nn.ReLU6(), nn.LeakyReLU(), nn.ELU(), nn.GELU(), nn.SiLU()]
    model = nn.Sequential(*[m for act in acts for m in (conv(), nn.BatchNorm2d(1), act)], nn.Tanh())
    layers = conv_activations(model)
    assert list(layers) == [f"conv{i}" for i in range(1, 7)]
    assert all(layers[f"conv{i + 1}"] is act for i, act in enumerate(acts))


def test_conv_activations_names_each_activation_by_its_convolutions_number():
    """A convolution followed by a PReLU (not taken then) or by none shifted the names: the ReLU after the second
    convolution was called conv1."""
    conv = lambda: nn.Conv2d(1, 1, 1)  # noqa: E731
    prelu, relu, mish = nn.PReLU(), nn.ReLU(), nn.Mish()
    model = nn.Sequential(conv(), prelu, conv(), relu, conv(), conv(), mish)
    assert conv_activations(model) == {"conv1": prelu, "conv2": relu, "conv4": mish}


def test_correctly_classified_includes_the_last_class():
    # a model that always predicts the last class (2): only its images are correct, in dataset order
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    with torch.no_grad():
        model[1].weight.zero_(), model[1].bias.copy_(torch.tensor([0.0, 0, 1]))
    dataset = ImageDataset(torch.zeros(6, 1, 8, 8, dtype=torch.uint8), torch.tensor([2, 0, 2, 1, 2, 2]),
                           ["a", "b", "c"], "zeros")
    assert correctly_classified(model, dataset, per_class=3).tolist() == [0, 2, 4]


def test_correctly_classified_lists_class_by_class_not_in_dataset_order():
    # logit 1 = sum of the inputs (255 -> +1, 0 -> -1), logit 0 = 0: bright images are class 1, dark ones class 0;
    # the last image (label 0, bright) is misclassified; the dropout left in training mode (it would zero every
    # logit) must be off while classifying
    model = nn.Sequential(nn.Flatten(), nn.Dropout(1.0), nn.Linear(64, 2)).train()
    with torch.no_grad():
        model[2].weight.zero_(), model[2].bias.zero_(), model[2].weight[1].fill_(1)
    labels = torch.tensor([1, 0, 1, 0, 0])
    images = torch.where(torch.tensor([1, 0, 1, 0, 1]).bool()[:, None, None, None], 255, 0).to(torch.uint8)
    dataset = ImageDataset(images.expand(-1, 1, 8, 8).contiguous(), labels, ["a", "b"], "bright")
    assert correctly_classified(model, dataset).tolist() == [1, 3, 0, 2]


def test_correctly_classified_refuses_a_per_class_that_is_no_positive_integer():
    """per_class=-1 sliced off each class's last correct image, silently; 1.5 was a raw TypeError of slicing."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 2))
    dataset = toy_dataset()
    for per_class in (-1, 0, 1.5, True, "2"):
        with pytest.raises(ValueError, match=f"per_class must be a positive integer, got {per_class!r}"):
            correctly_classified(model, dataset, per_class)
    assert len(correctly_classified(model, dataset, np.int64(6))) == len(correctly_classified(model, dataset, 6))


def test_correctly_classified_and_feature_map_occlusion_run_models_of_any_float_dtype():
    """A float64 model got the dataset's float32 inputs (a raw 'Input type (float) and bias type (double)' error), as
    did a float32 model float64 images: the images are given to the model in its own dtype."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 2))
    dataset = toy_dataset()
    chosen = correctly_classified(model, dataset, 3)
    assert torch.equal(correctly_classified(model.double(), dataset, 3), chosen)
    assert next(model.parameters()).dtype == torch.float64  # the model is left as it is
    image, masks = half_object()
    plain = SumModel(4)
    expected = feature_map_occlusion(plain, plain[1], image, masks, torch.tensor([0]), steps=3, orders=1).margins
    assert torch.equal(feature_map_occlusion(plain, plain[1], image.double(), masks, torch.tensor([0]), steps=3,
                                             orders=1).margins, expected)
    wide = SumModel(4).double()
    assert torch.equal(feature_map_occlusion(wide, wide[1], image, masks, torch.tensor([0]), steps=3,
                                             orders=1).margins, expected)


@pytest.mark.filterwarnings("ignore:the attribution by saliency.* is all zero:rectgrad.AttributionWarning")  # ReLU off
def test_the_evaluation_functions_run_models_without_parameters():
    """A model without weights (its device and dtype are then the inputs') was a bare StopIteration."""
    model = nn.Sequential(nn.ReLU(), nn.Flatten(), nn.Unflatten(1, (1, 8, 8)), nn.AdaptiveMaxPool2d((1, 2)),
                          nn.Flatten())  # logits: the max of the left and of the right half
    dataset = toy_dataset()
    predicted = model(dataset.inputs()).argmax(1)
    chosen = correctly_classified(model, dataset, 6)
    assert chosen.tolist() == [i for c in (0, 1) for i in range(6) if dataset.labels[i] == c and predicted[i] == c]
    maps = compute_maps(model, dataset.inputs(), "saliency", None)
    assert maps.shape == (6, 1, 8, 8)
    masks = torch.zeros(6, 8, 8, dtype=torch.bool)
    curve = feature_map_occlusion(model, model[0], dataset.inputs(), masks, dataset.labels, steps=2, orders=1)
    assert curve.margins.shape == (6, 2)
    model.register_buffer("calls", torch.zeros((), dtype=torch.long))  # an integer buffer gives no dtype
    assert torch.equal(correctly_classified(model, dataset, 6), chosen)


def test_feature_map_occlusion_runs_the_model_in_eval_mode():
    # a dropout layer left in training mode by the user must not drop logits during the occlusion: the curve is
    # SumModel's exact margin (see test_feature_map_occlusion_follows_the_margin_exactly)
    image, masks = half_object()
    model = SumModel(4)
    model.insert(3, nn.Dropout(0.5))
    model.train()
    curve = feature_map_occlusion(model, model[1], image, masks, torch.tensor([0]), steps=5, orders=3)
    assert torch.allclose(curve.margins[0], torch.tensor([32.0, 30, 28, 26, 24]))
    assert model.training


def test_feature_map_occlusion_refuses_bool_labels_and_layers_without_a_feature_map():
    model = SumModel(4)
    image, masks = torch.ones(1, 1, 4, 4), torch.zeros(1, 4, 4, dtype=torch.bool)
    with pytest.raises(ValueError, match="labels must be a tensor of integer class indices"):
        feature_map_occlusion(model, model[1], image, masks, torch.tensor([True]))  # would silently be class 1
    with pytest.raises(ValueError, match=r"masks must be a bool \(N, H, W\) tensor matching images"):
        feature_map_occlusion(model, model[1], image, masks.byte(), torch.tensor([0]))  # ~ of uint8 is 255/254
    flat = nn.Sequential(nn.Conv2d(1, 1, 1), nn.Flatten(2), nn.ReLU(), nn.Flatten(), nn.Linear(16, 2))  # (N, 1, 16)
    with pytest.raises(ValueError, match=r"the layer's output must be a feature map \(N, C, H, W\), got shape"):
        feature_map_occlusion(flat, flat[2], image, masks, torch.tensor([0]))


def test_feature_map_occlusion_takes_labels_of_any_integer_dtype():
    """uint8 labels indexed the logits as a bool mask (a raw shape error); int32 ones worked."""
    image, masks = half_object()
    model = SumModel(4)
    expected = feature_map_occlusion(model, model[1], image, masks, torch.tensor([0]), steps=3, orders=1).margins
    for dtype in (torch.uint8, torch.int8, torch.int16, torch.int32):
        curve = feature_map_occlusion(model, model[1], image, masks, torch.tensor([0], dtype=dtype), steps=3, orders=1)
        assert torch.equal(curve.margins, expected)


# ---------------------------------------------------------------- noise measures (Figs. 7, 8)

def test_final_threshold_keeps_rectgrad_positive_part_and_baseline_top_five_percent():
    maps = torch.arange(-10.0, 10.0).view(1, 1, 4, 5)
    assert torch.equal(final_threshold(maps, "rectgrad"), maps.clamp(min=0))
    # numpy's linear 95th percentile of -10..9 is 8.05: only 9 survives
    kept = final_threshold(maps, "saliency")
    assert kept.sum() == 9 and (kept != 0).sum() == 1
    ties = torch.arange(21.0).view(1, 1, 3, 7)  # the 95th percentile is 19 exactly: 19 is kept with 20
    assert final_threshold(ties, "saliency").flatten().nonzero().flatten().tolist() == [19, 20]
    two_channels = torch.stack([maps[0, 0], maps[0, 0]])[None]
    assert torch.equal(final_threshold(two_channels, "rectgrad_prr"), (2 * maps).clamp(min=0))


def test_final_threshold_refuses_unknown_methods_and_broken_maps():
    maps = torch.rand(3, 1, 4, 4)
    for name in ("nosuch", "RectGrad"):
        with pytest.raises(ValueError, match=f"unknown method '{name}'"):
            final_threshold(maps, name)
    with pytest.raises(ValueError, match=r"maps must be a floating \(N, C, H, W\) tensor .*got ndarray"):
        noise_level(maps.numpy(), "saliency", torch.ones(3, 4, 4, dtype=torch.bool))
    for bad in (maps[:, 0], maps.long()):  # channel-summed maps lose their channel dimension by mistake
        for measure in (lambda m: noise_level(m, "saliency", torch.ones(3, 4, 4, dtype=torch.bool), threshold=False),
                        lambda m: final_threshold(m, "rectgrad")):
            with pytest.raises(ValueError, match=rf"maps must be a floating \(N, C, H, W\) tensor .*got "
                                                 rf"{bad.dtype} tensor of shape {re.escape(str(tuple(bad.shape)))}"):
                measure(bad)
    maps[1, 0, 2, 2] = float("nan")
    for method in ("saliency", "rectgrad"):
        with pytest.raises(ValueError, match=rf"the {method} maps of image\(s\) \[1\] hold NaN or Inf"):
            noise_level(maps, method, torch.ones(3, 4, 4, dtype=torch.bool))
    graph = torch.rand(2, 1, 4, 4, requires_grad=True) * 1.0
    assert torch.equal(final_threshold(graph, "saliency"), final_threshold(graph.detach(), "saliency"))


def test_patch_attribution_and_noise_level_by_hand():
    maps = torch.zeros(1, 1, 3, 3)
    maps[0, 0, 0, 0], maps[0, 0, 2, 2], maps[0, 0, 1, 1] = -2.0, 3.0, 1.0
    region = torch.zeros(3, 3, dtype=torch.bool)
    region[:2, :2] = True
    assert patch_attribution(maps, "rectgrad", region).item() == 1.0  # positive part: only the 1 is inside
    assert patch_attribution(maps, "saliency", region, threshold=False).item() == 3.0  # |-2| + 1
    assert patch_attribution(maps, "saliency", region).item() == 0.0  # the baseline keeps only its top (3.0)
    masks = torch.zeros(1, 3, 3, dtype=torch.bool)
    masks[0, 1, 1] = True
    raw = noise_level(maps, "saliency", masks, threshold=False)
    assert raw["outside"].item() == 5.0 and raw["outside_fraction"].item() == pytest.approx(5 / 6)
    # TV of [[-2,0,0],[0,1,0],[0,0,3]]: rows 2+1+1+3 = 7, columns 2+1+1+3 = 7
    assert raw["total_variation"].item() == 14.0 and raw["total_variation_relative"].item() == pytest.approx(14 / 6)
    assert noise_level(maps, "rectgrad", masks)["outside"].item() == 3.0
    zero = noise_level(torch.zeros(1, 1, 3, 3), "saliency", masks, threshold=False)  # no |map|: shares of 0
    assert {key: value.item() for key, value in zero.items()} == {
        "outside": 0.0, "outside_fraction": 0.0, "total_variation": 0.0, "total_variation_relative": 0.0}
    big = torch.full((1, 3, 4, 4), 30000.0, dtype=torch.float16)  # channel sums of 90000: beyond float16's 65504
    assert final_threshold(big, "rectgrad").unique().tolist() == [90000.0]
    ones = torch.ones(1, 1, 300, 300, dtype=torch.float16)  # 90000 in all
    half = noise_level(ones, "saliency", torch.zeros(1, 300, 300, dtype=torch.bool), threshold=False)
    assert half["outside"].tolist() == [90000.0] and half["outside_fraction"].tolist() == [1.0]


def test_noise_level_divides_by_the_total_of_maps_of_tiny_values():
    """Scale-free shares are the same for a map and the map times 1e-32: the total |map| divides as it is."""
    maps = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])  # TV 4, total 2
    masks = torch.zeros(1, 2, 2, dtype=torch.bool)
    for scale in (1.0, 1e-32):
        measures = noise_level(maps * scale, "saliency", masks, threshold=False)
        assert measures["total_variation_relative"].item() == pytest.approx(2.0)
        assert measures["outside_fraction"].item() == pytest.approx(1.0)


def test_noise_level_and_patch_attribution_refuse_a_threshold_that_is_no_bool():
    """threshold="no" is truthy: the maps were thresholded for it."""
    maps, masks = torch.rand(1, 1, 4, 4), torch.zeros(1, 4, 4, dtype=torch.bool)
    for threshold in ("no", 0, None):
        with pytest.raises(TypeError, match=f"threshold must be True or False, got {threshold!r}"):
            noise_level(maps, "saliency", masks, threshold=threshold)
        with pytest.raises(TypeError, match=f"threshold must be True or False, got {threshold!r}"):
            patch_attribution(maps, "saliency", masks[0], threshold=threshold)


def test_final_threshold_takes_each_images_own_percentile():
    """Two images of scales 1 and 100: each keeps its own top value (a percentile over the batch would keep both
    of the large image's top values and none of the small one's)."""
    small = torch.arange(20.0).view(1, 1, 4, 5)
    kept = final_threshold(torch.cat([small, 100 * small]), "saliency")
    assert kept.flatten(1).nonzero().tolist() == [[0, 19], [1, 19]]


def test_final_threshold_takes_its_percentile():
    maps = torch.arange(20.0).view(1, 1, 4, 5)  # the 50th percentile of 0..19 is 9.5: 10..19 kept
    kept = final_threshold(maps, "saliency", percentile=50)
    assert kept.flatten().nonzero().flatten().tolist() == list(range(10, 20))
    assert final_threshold(maps, "saliency", percentile=np.float32(50)).equal(kept)
    # True read as the 1st percentile, a string or None failed inside numpy's division
    for percentile in (True, "95", None, 150, float("nan")):
        message = rf"percentile must be a number in \[0, 100\], got {re.escape(repr(percentile))}"
        with pytest.raises(ValueError, match=message):
            final_threshold(maps, "saliency", percentile=percentile)


def test_final_threshold_compares_with_the_exact_percentile_as_viz_does():
    """Values 1 and 1 + 2^-20 (float32) on top of zeros: the 95th percentile of 20 values is 1 + 0.05 x 2^-20, which
    rounds to 1 in float32, yet 1 lies under it: only the top value is kept, as rectgrad.viz draws it."""
    from rectgrad import viz

    maps = torch.zeros(1, 1, 4, 5)
    maps[0, 0, 3, 3], maps[0, 0, 3, 4] = 1.0, 1.0 + 2 ** -20
    assert final_threshold(maps, "saliency").flatten().nonzero().flatten().tolist() == [19]
    assert np.flatnonzero(viz.final_threshold(maps[:, 0].numpy(), "top")).tolist() == [19]


def test_compute_maps_in_eval_mode_as_float32_and_counts_each_image_once():
    """A dropout model in train mode is explained in eval mode (deterministic maps); float64 inputs give float32
    maps; the progress bar advances by the images of each batch (5, not 3 batches of 2)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(16, 3)).double().train()
    x = torch.rand(5, 1, 4, 4, dtype=torch.float64)

    class Bar:
        n = 0

        def update(self, k):
            self.n += k

    bar = Bar()
    maps = compute_maps(model, x, "saliency", [0, 1, 2, 0, 1], batch_size=2, progress=bar)
    assert maps.dtype == torch.float32 and bar.n == 5 and model.training
    expected = explain(model.eval(), x, torch.tensor([0, 1, 2, 0, 1]), "saliency").float()  # no unit dropped
    assert torch.allclose(maps, expected) and (maps != 0).all()
    with pytest.raises(ValueError, match=r"targets must hold one class per input, shape \(5,\), got \(5, 1\)"):
        compute_maps(model, x, "saliency", torch.zeros(5, 1, dtype=torch.long))


def test_compute_maps_sums_the_channels_of_half_precision_maps_in_float32():
    # three channels of 40000 each fit float16 (65504) but their sum does not: summed in float16 it became inf
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 2)).half().eval()
    with torch.no_grad():
        model[1].weight.fill_(200.0), model[1].bias.zero_()
    x = torch.full((1, 3, 2, 2), 200.0, dtype=torch.float16)
    maps = compute_maps(model, x, "grad_input", [0])
    assert maps.dtype == torch.float32 and maps.flatten().tolist() == [120000.0] * 4


# ---------------------------------------------------------------- ROAR / KAR

@pytest.mark.parametrize("keep", [False, True])
@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.7])
def test_occlude_dataset_replaces_exactly_the_intended_pixels(keep, fraction):
    dataset = toy_dataset()
    maps = torch.randn(6, 1, 8, 8)
    occluded = occlude_dataset(dataset, maps, fraction, keep=keep, fill=[128.0])
    replaced = (occluded.images == 128).flatten(1).sum(1)
    k = round(fraction * 64)
    assert replaced.tolist() == [64 - k if keep else k] * 6
    # ROAR removes the top-ranked pixels; KAR keeps them (here no ties: the ranking is the maps' order)
    top = maps.flatten(1).argsort(1, descending=True)[:, :k]
    assert ((occluded.images.flatten(1).gather(1, top) == 128).all().item()) is (not keep)
    assert occluded.labels is dataset.labels and torch.equal(occluded.images != 128, dataset.images == occluded.images)


def test_occlude_dataset_random_and_bad_input():
    dataset = toy_dataset(n=50, size=16)
    occluded = occlude_dataset(dataset, None, 0.3, keep=False, fill=[128.0], generator=torch.Generator().manual_seed(0))
    assert abs((occluded.images == 128).float().mean().item() - 0.3) < 0.03
    with pytest.raises(ValueError, match="do not match"):
        occlude_dataset(dataset, torch.zeros(50, 1, 8, 8), 0.3, keep=False, fill=[128.0])
    with pytest.raises(ValueError, match=r"maps \(ndarray\) do not match the 50 images of size 16x16"):
        occlude_dataset(dataset, np.zeros((50, 1, 16, 16)), 0.3, keep=False, fill=[128.0])
    with pytest.raises(ValueError, match="open interval"):
        occlude_dataset(dataset, torch.zeros(50, 1, 16, 16), 1.0, keep=False, fill=[128.0])
    for maps in (torch.zeros(50, 1, 16, 16), None):  # 0.001 of 256 pixels: none; KAR would replace them all
        with pytest.raises(ValueError, match="fraction 0.001 of 16x16 pixels rounds to 0 pixels"):
            occlude_dataset(dataset, maps, 0.001, keep=True, fill=[128.0])


class Counting:
    """A training function whose accuracy encodes its inputs: the mean of the test images, divided by 255."""

    def __init__(self, fail_after=None):
        self.calls, self.fail_after = [], fail_after

    def __call__(self, train, test, seed):
        if self.fail_after is not None and len(self.calls) >= self.fail_after:
            raise KeyboardInterrupt
        self.calls.append(seed)
        return test.images.float().mean().item() / 255


def roar_inputs():
    train, test = toy_dataset(8, seed=1, name="train"), toy_dataset(4, seed=2, name="test")
    maps = {"a": (torch.randn(8, 1, 8, 8), torch.randn(4, 1, 8, 8)), "random": None}
    return train, test, maps


def test_roar_kar_resumes_without_recomputing(tmp_path):
    train, test, maps = roar_inputs()
    store = ResultStore(tmp_path / "work", {"experiment": "toy"})
    first = Counting(fail_after=1)
    with pytest.raises(KeyboardInterrupt):
        roar_kar(train, test, maps, first, fractions=(0.2, 0.6), repeats=2, store=store, progress=False)
    assert len(first.calls) == 1
    assert sorted(p.name for p in (tmp_path / "work" / "roar").iterdir()) == ["a-p0.2-r0.json"]
    rerun = Counting()
    result = roar_kar(train, test, maps, rerun, fractions=(0.2, 0.6), repeats=2, store=store, progress=False)
    assert len(rerun.calls) == 2 * 2 * 2 - 1 and rerun.calls.count(0) == 3  # the finished seed-0 training is kept
    again = Counting()
    assert roar_kar(train, test, maps, again, fractions=(0.2, 0.6), repeats=2, store=store,
                    progress=False).accuracies["a"].tolist() == result.accuracies["a"].tolist()
    assert again.calls == [] and not list((tmp_path / "work").rglob("*.tmp"))


def test_the_store_records_the_seed_tie_noise_and_data_of_roar_kar_and_refuses_others(tmp_path):
    """A result is named by mode, method, fraction and repeat: what else makes it is recorded in roar-kar.json."""
    train, test, maps = roar_inputs()
    store = ResultStore(tmp_path, {"experiment": "toy"})

    def run(fn, **changed):
        arguments = {"train_set": train, "test_set": test, "attributions": maps, "fractions": (0.2, 0.6),
                     "repeats": 1, **changed}
        return roar_kar(train_fn=fn, store=store, progress=False, **arguments)

    run(Counting())
    recorded = json.loads((tmp_path / "roar-kar.json").read_text())
    assert set(recorded) == {"seed", "tie_noise", "data"} and recorded["seed"] == 0
    for changed, difference in (({"seed": 5}, "seed: 0 there, 5 here"),
                                ({"tie_noise": 0}, "tie_noise: 0.0001 there, 0.0 here"),
                                ({"train_set": train.with_images(255 - train.images)}, "data: "),
                                ({"test_set": test.subset(torch.tensor([1, 0, 2, 3]))}, "data: ")):
        fn = Counting()
        with pytest.raises(ValueError, match=rf"the ROAR/KAR results in {re.escape(str(tmp_path))} were made with "
                                             rf"other arguments \({difference}.*; recorded in roar-kar.json\): "
                                             "refusing to mix them"):
            run(fn, **changed)
        assert fn.calls == []
    more = Counting()  # other fractions and repeats, and KAR: the same arguments, only the new trainings run
    run(more, fractions=(0.2, 0.4, 0.6), repeats=2, keep=True)
    run(more, fractions=(0.2, 0.4, 0.6), repeats=2)
    assert len(more.calls) == 2 * 3 * 2 + 2 * (3 * 2 - 2)
    (tmp_path / "roar-kar.json").unlink()  # a store written before the arguments were recorded: they are now
    run(Counting())
    assert json.loads((tmp_path / "roar-kar.json").read_text()) == recorded
    (tmp_path / "roar-kar.json").write_text("{")
    with pytest.raises(ValueError, match=r"roar-kar.json is corrupt \(.+\): delete it if the ROAR/KAR results beside "
                                         r"it were made with the arguments of this call"):
        run(Counting())


def test_roar_kar_results_and_scores():
    train, test, maps = roar_inputs()
    fill = train.images.double().mean().round()
    for keep in (False, True):
        result = roar_kar(train, test, maps, Counting(), fractions=(0.2, 0.6), repeats=2, keep=keep, progress=False)
        assert set(result.accuracies) == {"a", "random"} and result.accuracies["a"].shape == (2, 2)
        # each accuracy is the mean of the modified test images: check one against occlude_dataset
        expected = occlude_dataset(test, maps["a"][1], 0.6, keep=keep, fill=[fill.item()])
        assert result.accuracies["a"][0, 1] == pytest.approx(expected.images.float().mean().item() / 255, abs=0.02)
        area = kar_aoc if keep else roar_auc
        assert result.score("a") == pytest.approx(area((0.2, 0.6), result.accuracies["a"].mean(0)))
        assert result.score_std("a") == 0.0  # the repeats see the same data: identical accuracies
        assert result.measure == ("KAR AOC" if keep else "ROAR AUC")


def test_roar_kar_groups_with_many():
    class Many(Counting):
        def many(self, jobs):
            self.groups = getattr(self, "groups", []) + [len(jobs)]
            return [self(*job) for job in jobs]

    train, test, maps = roar_inputs()
    fn = Many()
    roar_kar(train, test, maps, fn, fractions=(0.2, 0.6), repeats=2, backend=LocalBackend(group=3), progress=False)
    assert fn.groups == [3, 3, 2]
    for group in (2.5, True, "3"):  # 2.5 never equalled a chunk's length: every training went in one group
        with pytest.raises((TypeError, ValueError), match=rf"group must be a positive integer, got {group!r}"):
            LocalBackend(group=group)


def test_groups_that_run_out_of_gpu_memory_are_halved(tmp_path):
    class Small(Counting):  # a device that holds at most 2 models at once
        def many(self, jobs, checkpoint=None):
            self.tried = getattr(self, "tried", []) + [len(jobs)]
            if len(jobs) > 2:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
            return [self(*job) for job in jobs]

    train, test, maps = roar_inputs()
    fn, backend, store = Small(), LocalBackend(group=5), ResultStore(tmp_path, {"run": 1})
    with (pytest.warns(RuntimeWarning, match="out of GPU memory training 5 models at once: 3 at a time"),
          pytest.warns(RuntimeWarning, match="out of GPU memory training 3 models at once: 2 at a time")):
        result = roar_kar(train, test, maps, fn, fractions=(0.2, 0.6), repeats=2, backend=backend, store=store,
                          progress=False)
    assert fn.tried[:5] == [5, 3, 2, 1, 2] and backend.group == 2 and max(fn.tried[5:]) == 2
    assert all(a.shape == (2, 2) for a in result.accuracies.values())  # every training done once
    assert len(list((tmp_path / "roar").glob("*.json"))) == 2 * 2 * len(maps)


def test_a_group_out_of_gpu_memory_frees_its_tensors_before_its_halves_train():
    # The failed attempt's tensors (the group's stacked weights, data, activations) live in the frames of the
    # error's traceback: the halves must train once they are freed, else they run out of memory in their turn.
    class Holding(Counting):
        def many(self, jobs, checkpoint=None):
            if len(jobs) > 2:
                stacked = torch.zeros(len(jobs), 1000)  # what the failed group held on the device
                self.failed.append(weakref.ref(stacked))
                raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
            self.alive.append([ref() is not None for ref in self.failed])
            return [self(*job) for job in jobs]

    train, test, maps = roar_inputs()
    fn = Holding()
    fn.failed, fn.alive = [], []
    with pytest.warns(RuntimeWarning, match="out of GPU memory training 4 models at once: 2 at a time"):
        roar_kar(train, test, maps, fn, fractions=(0.2, 0.6), repeats=2, backend=LocalBackend(group=4),
                 progress=False)
    assert len(fn.failed) == 1 and len(fn.alive) == 4 and not any(any(alive) for alive in fn.alive)


def test_roar_kar_resumes_an_interrupted_group_from_its_checkpoint(tmp_path, monkeypatch):
    import rectgrad.train_many as module

    train, test = quadrants(60, 0), quadrants(20, 1)
    maps = {"a": (torch.randn(60, 1, 8, 8), torch.randn(20, 1, 8, 8)), "random": None}
    retrain = Retrainer(epochs=2, batch_size=20, device="cpu")
    options = dict(fractions=(0.2, 0.6), repeats=1, backend=LocalBackend(group=4), progress=False)
    expected = roar_kar(train, test, maps, retrain, store=ResultStore(tmp_path / "straight", {}), **options)
    store = ResultStore(tmp_path / "work", {})
    checks = iter(range(1000))
    original = module.train_many
    monkeypatch.setattr(module, "train_many", lambda *a, **k: original(*a, stop=lambda: next(checks) == 4, **k))
    with pytest.raises(TrainingInterrupted):  # in the first group's second epoch
        roar_kar(train, test, maps, retrain, store=store, **options)
    unfinished = sorted((tmp_path / "work" / "roar" / "unfinished").iterdir())
    assert [p.suffix for p in unfinished] == [".json", ".pt"] and not list((tmp_path / "work" / "roar").glob("*.json"))
    assert json.loads(unfinished[0].read_text()) == ["roar/a-p0.2-r0.json", "roar/a-p0.6-r0.json",
                                                     "roar/random-p0.2-r0.json", "roar/random-p0.6-r0.json"]
    assert checkpoint_seconds(unfinished[1]) > 0
    state = torch.load(unfinished[1], weights_only=True)
    torch.save({**state, "seconds": 1000.0}, unfinished[1])  # as if the first part had taken 1000 s
    monkeypatch.setattr(module, "train_many", original)
    options["backend"] = LocalBackend(group=3)  # another group size: the saved group of 4 is formed again
    resumed = roar_kar(train, test, maps, retrain, store=store, **options)
    for method in maps:
        assert resumed.accuracies[method].tolist() == expected.accuracies[method].tolist()
    assert not list((tmp_path / "work" / "roar" / "unfinished").iterdir())
    assert ResultStore.read_seconds(tmp_path / "work")["roar/a-p0.2-r0"] > 1000 / 4  # both parts, shared by 4


def test_a_saved_group_not_all_of_whose_trainings_are_asked_for_is_deleted_with_a_warning(tmp_path):
    from rectgrad.evaluation.roar import _group_checkpoint

    class Fake:
        def __call__(self, train, test, seed):
            return 0.5

        def many(self, args, checkpoint=None):  # resumes from checkpoint, deletes it when done (as train_many)
            formed.append(checkpoint.name)
            checkpoint.unlink(missing_ok=True)
            return [0.5] * len(args)

    formed, done = [], []
    for keys in (["x1", "x2"], ["y1", "y2"]):  # two groups stopped earlier: x2 is no longer asked for
        state = _group_checkpoint(tmp_path, keys)
        state.write_bytes(b"state")
        state.with_suffix(".json").write_text(json.dumps(keys))
    jobs = [Job(key, None, None, 0) for key in ("x1", "y1", "y2", "z1")]
    with pytest.warns(RuntimeWarning) as caught:
        LocalBackend(group=2).run(jobs, Fake(), lambda job, accuracy, seconds: done.append(job.key), tmp_path)
    assert [str(w.message) for w in caught] == [f"{_group_checkpoint(tmp_path, ['x1', 'x2'])} held a group of "
                                                "trainings not all of which this run asks for: they were trained "
                                                "anew, and it is deleted"]
    assert sorted(done) == ["x1", "y1", "y2", "z1"]
    assert _group_checkpoint(tmp_path, ["y1", "y2"]).name in formed  # the whole saved group, formed again
    assert not list(tmp_path.iterdir())  # no state left behind


def test_a_group_saved_unfinished_is_formed_again_whatever_the_group_size_and_the_jobs_between():
    jobs = [Job(key, None, None, 0) for key in "abcdefgh"]
    backend = LocalBackend(group=3)

    def chunks(saved, order="abcdefgh"):
        return ["".join(j.key for j in chunk) for chunk in backend._chunks([jobs["abcdefgh".index(k)] for k in order],
                                                                           saved)]

    assert chunks([list("cdef")]) == ["ab", "cdef", "gh"]
    assert chunks([["a"], ["g", "h"]]) == ["a", "bcd", "ef", "gh"]
    assert chunks([]) == ["abc", "def", "gh"]
    # methods added since: jobs of theirs come between those of a saved group, which is formed again all the same
    assert chunks([list("bdf")]) == ["a", "c", "e", "bdf", "gh"]
    assert chunks([list("bdf")], order="abcegh") == ["a", "ceg", "h", "b"]  # d, f done after all: b alone


def test_a_numpy_seed_is_the_int_it_holds(tmp_path):
    train, test, maps = roar_inputs()
    maps["tied"] = (torch.zeros(8, 1, 8, 8), torch.zeros(4, 1, 8, 8))  # ranked by the seeded noise alone
    plain = roar_kar(train, test, maps, Counting(), fractions=(0.2, 0.6), seed=3, progress=False)
    stored = roar_kar(train, test, maps, Counting(), fractions=(0.2, 0.6), seed=np.int64(3), progress=False,
                      store=ResultStore(tmp_path, {}))  # recorded in the store's JSON as 3
    assert all(np.array_equal(plain.accuracies[m], stored.accuracies[m]) for m in maps)
    for seed in (1.5, True, "3"):
        with pytest.raises(TypeError, match=f"seed must be an integer, got {seed!r}"):
            roar_kar(train, test, maps, Counting(), seed=seed, progress=False)


def test_roar_kar_bad_input():
    train, test, maps = roar_inputs()
    for fractions in ((0.0, 0.5), (0.5, 1.0), (0.6, 0.2), ()):
        with pytest.raises(ValueError, match="open interval"):
            roar_kar(train, test, maps, Counting(), fractions=fractions, progress=False)
    for fractions in ("0.5", ["0.2", "0.6"], (True, 0.5), {0.2, 0.6}, torch.tensor(0.5), np.array([[0.2], [0.6]])):
        # ("0.5" crashed in float('.'), the strings ran; a set's order is its hash's; a 0-d tensor is one fraction,
        # not a sequence; a numpy column is refused as a torch one is)
        with pytest.raises(TypeError, match="fractions must be (a sequence of fractions|real numbers)"):
            roar_kar(train, test, maps, Counting(), fractions=fractions, progress=False)
    for fraction, pixels in ((0.001, 0), (0.999, 64)):  # of 8x8 = 64 pixels
        with pytest.raises(ValueError, match=rf"fraction {fraction} of 8x8 pixels rounds to {pixels} pixels"):
            roar_kar(train, test, maps, Counting(), fractions=sorted((fraction, 0.5)), progress=False)
    with pytest.raises(ValueError, match="do not match"):
        roar_kar(train, test, {"a": (torch.zeros(8, 1, 8, 8), torch.zeros(3, 1, 8, 8))}, Counting(), progress=False)
    with pytest.raises(ValueError, match="pair or None"):
        roar_kar(train, test, {"a": torch.zeros(8, 1, 8, 8)}, Counting(), progress=False)
    for repeats in (0, 1.5, "2"):
        with pytest.raises(ValueError, match=f"repeats must be a positive integer, got {repeats!r}"):
            roar_kar(train, test, maps, Counting(), repeats=repeats, progress=False)
    fn = Counting()
    for bad, message in (((train.images[:, :1].long(), test.images[:, :1].long()), "must be floating point maps"),
                         ((torch.full((8, 1, 8, 8), float("nan")), torch.zeros(4, 1, 8, 8)), "hold NaN or Inf")):
        with pytest.raises(ValueError, match=rf"attributions\['bad'\] {message}"):  # before any training
            roar_kar(train, test, {"good": maps["a"], "bad": bad}, fn, fractions=(0.2, 0.6), progress=False)
    assert fn.calls == []
    for train_set, test_set, message in (
            (train.subset(slice(0, 0)), test, r"train_set \(train\) holds no images"),
            (train, test.subset(slice(0, 0)), r"test_set \(test\) holds no images"),
            (train, test.with_images(test.images.expand(-1, 3, -1, -1)), r"same channels and size \(C, H, W\), got "
             r"\(1, 8, 8\) and \(3, 8, 8\)"),
            (train, toy_dataset(4, size=10), r"got \(1, 8, 8\) and \(1, 10, 10\)"),
            (train, ImageDataset(test.images, test.labels, ["b", "a"], "test"),
             r"same classes, in the same order \(a label names one class in both\), got \['a', 'b'\] and "
             r"\['b', 'a'\]")):
        with pytest.raises(ValueError, match=message):
            roar_kar(train_set, test_set, {"random": None}, fn, progress=False)
    tensors = torch.utils.data.TensorDataset(train.images, train.labels)
    with pytest.raises(TypeError, match="train_set must be a rectgrad.data.ImageDataset .* got TensorDataset"):
        roar_kar(tensors, test, {"random": None}, fn, progress=False)
    with pytest.raises(TypeError, match=r"fractions must be a sequence of fractions, e.g. \(0.1, 0.3, 0.5\), got 0.5"):
        roar_kar(train, test, {"random": None}, fn, fractions=0.5, progress=False)
    assert fn.calls == []


def test_roar_kar_and_occlude_dataset_refuse_a_keep_that_is_no_bool():
    """keep="no" is truthy: roar_kar ran KAR, and occlude_dataset kept the top pixels, for it."""
    train, test, maps = roar_inputs()
    fn = Counting()
    for keep in ("no", "False", 0, None):
        with pytest.raises(TypeError, match=f"keep must be True or False, got {keep!r}"):
            roar_kar(train, test, maps, fn, fractions=(0.5,), repeats=1, keep=keep, progress=False)
        with pytest.raises(TypeError, match=f"keep must be True or False, got {keep!r}"):
            occlude_dataset(train, None, 0.5, keep=keep, fill=[128])
    assert fn.calls == []
    assert roar_kar(train, test, maps, fn, fractions=(0.5,), repeats=1, keep=np.bool_(True), progress=False).keep


def test_method_names_that_are_no_safe_file_names_are_refused_before_anything_is_written(tmp_path):
    train, test, maps = roar_inputs()
    store = ResultStore(tmp_path / "store", {"run": 1})
    for name in ("../escape", "my/method", "a\\b", "", 3):
        with pytest.raises(ValueError, match=re.escape(f"method name {name!r} cannot name its result files")):
            roar_kar(train, test, {"a": maps["a"], name: None}, Counting(), fractions=(0.5,), repeats=1, store=store,
                     progress=False)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["config.json", "store"]
    result = roar_kar(train, test, {"RectGrad q=98": maps["a"]}, Counting(), fractions=(0.5,), repeats=1, store=store,
                      progress=False)
    assert (tmp_path / "store" / "roar" / "RectGrad q=98-p0.5-r0.json").is_file() and len(result.accuracies) == 1


def test_roar_kar_takes_one_element_tensors_as_accuracies():
    train, test, maps = roar_inputs()
    result = roar_kar(train, test, maps, lambda a, b, seed: torch.tensor([0.25 * (seed + 1)]), fractions=(0.2, 0.6),
                      repeats=2, progress=False)
    assert result.accuracies["a"].tolist() == [[0.25, 0.25], [0.5, 0.5]]


def test_roar_kar_takes_numpy_arrays_and_fractions_as_accuracies():
    """(correct / total).numpy() is a 0-d array; Fraction(correct, total) a number: both were refused as no fraction."""
    train, test, maps = roar_inputs()
    for accuracy in (np.array(0.25), np.array([0.25], dtype=np.float32), Fraction(1, 4), Decimal("0.25")):
        result = roar_kar(train, test, maps, lambda a, b, seed: accuracy, fractions=(0.2, 0.6), repeats=1,
                          progress=False)
        assert result.accuracies["a"].tolist() == [[0.25, 0.25]]
    for accuracy in (np.array(True), np.array([0.25, 0.5]), np.array(87.5)):
        with pytest.raises(ValueError, match="it must return the test accuracy as a fraction in"):
            roar_kar(train, test, maps, lambda a, b, seed: accuracy, fractions=(0.2, 0.6), progress=False)


def test_roar_kar_takes_fractions_as_numpy_or_torch_arrays():
    train, test, maps = roar_inputs()
    for fractions in (np.array([0.2, 0.6]), torch.tensor([0.2, 0.6], dtype=torch.float64), [np.float32(0.5), 0.75],
                      list(torch.tensor([0.25, 0.5])), [Decimal("0.2"), Decimal("0.6")]):
        result = roar_kar(train, test, maps, lambda a, b, seed: 0.5, fractions=fractions, progress=False)
        assert result.fractions == tuple(float(f) for f in fractions) and result.accuracies["a"].shape == (3, 2)


def test_roar_kar_refuses_odd_training_results_and_saves_none_of_them(tmp_path):
    train, test, maps = roar_inputs()
    store = ResultStore(tmp_path, {"run": 1})
    for accuracy in (87.5, float("nan"), None, True):
        with pytest.raises(ValueError, match=rf"train_fn returned {accuracy!r} for roar/a-p0.2-r0: .*in \[0, 1\]"):
            roar_kar(train, test, maps, lambda a, b, s: accuracy, fractions=(0.2, 0.6), store=store, progress=False)
    assert not list(tmp_path.glob("roar/*.json"))

    class Short(Counting):
        def many(self, jobs):
            return [self(*job) for job in jobs][:-1]

    with pytest.raises(ValueError, match="train_fn.many returned 2 accuracies for 3 trainings"):
        roar_kar(train, test, maps, Short(), fractions=(0.2, 0.6), repeats=2, backend=LocalBackend(group=3),
                 progress=False)


def test_roar_kar_keeps_close_fractions_apart():
    train, test, maps = roar_inputs()
    fn = Counting()
    result = roar_kar(train, test, {"a": maps["a"]}, fn, fractions=(0.5000001, 0.5000002), repeats=1, progress=False)
    assert len(fn.calls) == 2 and result.accuracies["a"].shape == (1, 2)


def test_roar_kar_tie_noise_0_breaks_ties_by_pixel_index():
    """All-zero maps tie everywhere: without noise ROAR replaces the first k pixels (row-major) of every image, with
    the default noise k pixels at random; occlude_dataset takes the same option."""
    train, test, _ = roar_inputs()
    zero = (torch.zeros(8, 1, 8, 8), torch.zeros(4, 1, 8, 8))
    fill = train.images.double().mean().round().item()
    replaced = {}

    def record(tie_noise):
        def train_fn(train, test, seed):
            replaced[tie_noise] = (test.images[:, 0] == fill).flatten(1)
            return 0.5
        return train_fn

    first = torch.zeros(4, 64, dtype=torch.bool)
    first[:, :16] = True  # round(0.25 * 64)
    for tie_noise in (0, 1e-4):
        roar_kar(train, test, {"a": zero}, record(tie_noise), fractions=(0.25,), repeats=1, tie_noise=tie_noise,
                 progress=False)
        assert replaced[tie_noise].sum(1).tolist() == [16] * 4
    assert torch.equal(replaced[0], first) and not torch.equal(replaced[1e-4], first)
    alone = occlude_dataset(test, zero[1], 0.25, keep=False, fill=[fill], tie_noise=0)
    assert torch.equal((alone.images[:, 0] == fill).flatten(1), first)
    with pytest.raises(ValueError, match="tie_noise must be a finite standard deviation >= 0, got -1.0"):
        roar_kar(train, test, {"a": zero}, Counting(), tie_noise=-1, progress=False)


def test_roar_kar_ranks_the_signed_maps_of_both_sets():
    """As the reference: the most negative pixels rank last, not first by magnitude. Maps -10 on pixels 0-15 and 1 on
    pixels 16-31: ROAR at 0.25 replaces pixels 16-31 of every train and test image, KAR all the others."""
    train, test, _ = roar_inputs()
    fill = train.images.double().mean().round().item()

    def signed(n):
        maps = torch.zeros(n, 1, 64)
        maps[..., :16], maps[..., 16:32] = -10.0, 1.0
        return maps.view(n, 1, 8, 8)

    top = torch.zeros(64, dtype=torch.bool)
    top[16:32] = True
    for keep in (False, True):
        replaced = {}

        def train_fn(train, test, seed):
            replaced["train"], replaced["test"] = ((d.images[:, 0] == fill).flatten(1) for d in (train, test))
            return 0.5

        roar_kar(train, test, {"a": (signed(8), signed(4))}, train_fn, fractions=(0.25,), repeats=1, keep=keep,
                 tie_noise=0, progress=False)
        for split, n in (("train", 8), ("test", 4)):
            assert torch.equal(replaced[split], (~top if keep else top).expand(n, 64)), (keep, split)


def test_roar_kar_warns_when_the_tie_noise_is_large_for_the_maps():
    """The median nonzero |score| of randn maps is about 0.67: scaled by 1e-3 it is under 10 x 1e-4, by 1e-2 not."""
    train, test, maps = roar_inputs()
    scaled = lambda scale: tuple(m * scale for m in maps["a"])  # noqa: E731
    with pytest.warns(RuntimeWarning, match=r"the median nonzero \|ranking score\| is under 10 x the tie-breaking "
                                            r"noise's standard deviation 0.0001 for attributions 'small' \(0.000\d+\), "
                                            r"'tiny' \(0.000\d+\): the noise will reorder distinct pixels, not only "
                                            r"ties; pass tie_noise=0") as caught:
        roar_kar(train, test, {"small": scaled(1e-3), "a": scaled(1e-2), "tiny": scaled(5e-4)}, Counting(),
                 fractions=(0.2,), repeats=1, progress=False)
    assert len(caught) == 1 and caught[0].filename == __file__  # one warning for all methods, at the caller's line
    zero = (torch.zeros(8, 1, 8, 8), torch.zeros(4, 1, 8, 8))  # all ties: what the noise is for
    quiet = [({"a": scaled(1e-2), "zero": zero, "random": None}, 1e-4), ({"small": scaled(1e-3)}, 0)]
    for attributions, tie_noise in quiet:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            roar_kar(train, test, attributions, Counting(), fractions=(0.2,), repeats=1, tie_noise=tie_noise,
                     progress=False)


def test_result_score_on_a_hand_made_curve():
    # the repeats' own AUCs differ (0.55 and 0.45), so the curve's mean and their spread are both pinned
    result = RoarKarResult(False, (0.1, 0.5, 0.9), {"m": np.array([[0.8, 0.6, 0.2], [0.6, 0.4, 0.4]])})
    assert result.score("m") == pytest.approx((0.7 + 0.5) / 4 + (0.5 + 0.3) / 4)
    assert result.score_std("m") == pytest.approx(0.1 / 2 ** 0.5)  # std of (0.55, 0.45), ddof 1
    assert result.accuracy_std("m") == pytest.approx([0.2 / 2 ** 0.5] * 3)  # ddof 1
    assert RoarKarResult(False, (0.1, 0.5), {"m": np.array([[0.8, 0.6]])}).accuracy_std("m") is None
    one = RoarKarResult(True, (0.5,), {"m": np.array([[0.8], [0.6]])})
    for score in (one.score, one.score_std):
        with pytest.raises(ValueError, match=r"a KAR AOC needs at least two fractions, this result has \[0.5\]: "
                                             r"compare the accuracies themselves \(result.accuracies\[method\]\)"):
            score("m")


def test_a_hand_made_result_takes_lists_and_refuses_curves_of_another_shape():
    """Accuracies read back as lists crashed ('list' has no 'mean'); one curve given flat had an accuracy_std over its
    fractions, a wrong number; an unknown method was a bare KeyError."""
    result = RoarKarResult(False, (0.1, 0.5, 0.9), {"m": [[0.8, 0.6, 0.2], [0.6, 0.4, 0.4]]})
    assert result.score("m") == pytest.approx((0.7 + 0.5) / 4 + (0.5 + 0.3) / 4)
    assert result.score_std("m") == pytest.approx(0.1 / 2 ** 0.5)
    assert result.accuracy_std("m") == pytest.approx([0.2 / 2 ** 0.5] * 3)
    flat = RoarKarResult(False, (0.1, 0.5, 0.9), {"m": np.array([0.8, 0.6, 0.2])})
    for measure in (flat.score, flat.score_std, flat.accuracy_std):
        with pytest.raises(ValueError, match=r"accuracies\['m'\] must be one row per repeat of 3 accuracies \(one per "
                                             r"fraction\), got shape \(3,\)"):
            measure("m")
    with pytest.raises(KeyError, match=r"this ROAR AUC result has no method 'x', only \['m'\]"):
        result.score("x")


def test_roar_kar_takes_accuracies_0_and_1_and_resumes_them(tmp_path):
    """0 and 1 are accuracies (the interval is closed), saved with their seed and read back on a rerun."""
    train, test, maps = roar_inputs()
    store = ResultStore(tmp_path, {"run": 1})
    first = roar_kar(train, test, maps, lambda a, b, seed: float(seed), fractions=(0.2, 0.6), repeats=2, store=store,
                     progress=False)
    assert first.accuracies["a"].tolist() == [[0.0, 0.0], [1.0, 1.0]]
    assert json.loads((tmp_path / "roar" / "a-p0.6-r1.json").read_text()) == {"accuracy": 1.0, "seed": 1}
    again = Counting()
    assert roar_kar(train, test, maps, again, fractions=(0.2, 0.6), repeats=2, store=store,
                    progress=False).accuracies["a"].tolist() == [[0.0, 0.0], [1.0, 1.0]] and again.calls == []


def test_a_finished_sweep_rerun_trains_nothing_and_warns_of_nothing(tmp_path):
    """The tie-noise warning is about rankings still to be made: a method whose results are all saved is quiet."""
    train, test, maps = roar_inputs()
    tiny = {"tiny": tuple(m * 1e-6 for m in maps["a"])}
    store = ResultStore(tmp_path, {"run": 1})
    with pytest.warns(RuntimeWarning, match="'tiny'"):
        roar_kar(train, test, tiny, Counting(), fractions=(0.2,), repeats=1, store=store, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        roar_kar(train, test, tiny, Counting(), fractions=(0.2,), repeats=1, store=store, progress=False)


def test_the_tie_noise_warning_reads_both_sets_and_is_strict_at_10_x_the_noise():
    """Median nonzero |score| exactly 10 x tie_noise (2.5 = 10 x 0.25) is not under it: no warning; train maps small
    and test maps large (their median over both sets, 8 images to 4, is the small one): a warning."""
    train, test, _ = roar_inputs()
    at = (torch.full((8, 1, 8, 8), 2.5), torch.full((4, 1, 8, 8), 2.5))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        roar_kar(train, test, {"at": at}, Counting(), fractions=(0.2,), repeats=1, tie_noise=0.25, progress=False)
    small_train = (torch.full((8, 1, 8, 8), 2.0), torch.full((4, 1, 8, 8), 100.0))
    with pytest.warns(RuntimeWarning, match=r"'small_train' \(2\)"):
        roar_kar(train, test, {"small_train": small_train}, Counting(), fractions=(0.2,), repeats=1, tie_noise=0.25,
                 progress=False)


def test_roar_kar_refuses_a_fraction_too_small_for_the_images_before_any_training():
    train, test, maps = roar_inputs()
    fn = Counting()
    with pytest.raises(ValueError, match="fraction 0.999 of 8x8 pixels rounds to 64 pixels"):
        roar_kar(train, test, maps, fn, fractions=(0.5, 0.999), progress=False)  # the bad one comes second
    assert fn.calls == []
    with pytest.raises(ValueError, match="group must be a positive integer, got 0"):
        LocalBackend(group=0)


def test_the_train_and_test_sets_draw_their_own_random_masks_and_tie_noise():
    """The random baseline's test masks, and the noise ranking tied maps, are not the first rows of the train set's
    (one generator for both sets would replace the same pixels in test image i as in train image i)."""
    train, test, _ = roar_inputs()
    fill = train.images.double().mean().round().item()
    masks = {}

    def train_fn(train, test, seed):
        masks[len(masks)] = [(d.images[:, 0] == fill).flatten(1) for d in (train, test)]
        return 0.5

    zero = (torch.zeros(8, 1, 8, 8), torch.zeros(4, 1, 8, 8))
    roar_kar(train, test, {"random": None, "tied": zero}, train_fn, fractions=(0.5,), repeats=1, progress=False)
    for train_mask, test_mask in masks.values():
        assert not torch.equal(train_mask[:4], test_mask)
    assert masks[1][1].sum(1).tolist() == [32] * 4  # the tied maps: exactly half of each test image


def test_the_seed_draws_the_tie_noise_and_the_random_masks():
    """The same seed rebuilds the same datasets; another seed other tie-breaking noise and other random masks."""
    train, test, _ = roar_inputs()
    fill = train.images.double().mean().round().item()
    zero = (torch.zeros(8, 1, 8, 8), torch.zeros(4, 1, 8, 8))

    def masks(seed):
        drawn = []

        def train_fn(train, test, s):
            drawn.append(torch.cat([(d.images[:, 0] == fill).flatten(1) for d in (train, test)]))
            return 0.5

        roar_kar(train, test, {"random": None, "tied": zero}, train_fn, fractions=(0.5,), repeats=1, seed=seed,
                 progress=False)
        return drawn

    first, again, other = masks(0), masks(0), masks(1)
    for k in range(2):  # random, tied
        assert torch.equal(first[k], again[k]) and not torch.equal(first[k], other[k])


def test_score_averages_the_curves_of_three_repeats():
    # the mean curve (0.6, 0.4, 0.3), not the median one (0.6, 0.3, 0.3): AUC (0.5 + 0.35) / 2 over the span 0.8
    result = RoarKarResult(False, (0.1, 0.5, 0.9), {"m": np.array([[0.6, 0.3, 0.3], [0.6, 0.3, 0.3],
                                                                    [0.6, 0.6, 0.3]])})
    assert result.score("m") == pytest.approx((0.5 * 0.4 + 0.35 * 0.4) / 0.8)


def test_a_saved_group_resumes_with_group_1_and_many_without_checkpoint_takes_a_store(tmp_path):
    """A group saved unfinished is formed again even when the rerun trains one model at a time; a ``many`` that takes
    no checkpoint is called without one, store or not; a single model out of memory is the error itself."""
    from rectgrad.evaluation.roar import _group_checkpoint

    formed = []

    class Fake:
        def __call__(self, train, test, seed):
            return 0.5

        def many(self, args, checkpoint=None):
            formed.append(checkpoint.name)
            checkpoint.unlink(missing_ok=True)
            return [0.5] * len(args)

    state = _group_checkpoint(tmp_path, ["y1", "y2"])
    state.write_bytes(b"state")
    state.with_suffix(".json").write_text(json.dumps(["y1", "y2"]))
    done = []
    LocalBackend(group=1).run([Job(key, None, None, 0) for key in ("x1", "y1", "y2")], Fake(),
                              lambda job, accuracy, seconds: done.append(job.key), tmp_path)
    assert state.name in formed and sorted(done) == ["x1", "y1", "y2"]

    class Many(Counting):
        def many(self, jobs):
            if len(jobs) == 1:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
            return [self(*job) for job in jobs]

    train, test, maps = roar_inputs()
    result = roar_kar(train, test, maps, Many(), fractions=(0.2, 0.6), repeats=2, backend=LocalBackend(group=2),
                      store=ResultStore(tmp_path / "w", {"run": 1}), progress=False)
    assert result.accuracies["a"].shape == (2, 2)

    class Never(Counting):
        def many(self, jobs):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")

    with pytest.raises(torch.cuda.OutOfMemoryError), pytest.warns(RuntimeWarning, match="out of GPU memory"):
        roar_kar(train, test, maps, Never(), fractions=(0.2,), repeats=1, backend=LocalBackend(group=2),
                 progress=False)  # 2 trainings, then halves of 1


def test_a_listing_without_its_saved_state_is_no_saved_group(tmp_path):
    """A group stopped before its state was first saved leaves only its listing: it is formed as any other."""
    from rectgrad.evaluation.roar import _group_checkpoint, _saved_groups

    for keys, state in ((["a1", "a2"], True), (["b1", "b2"], False)):
        listing = _group_checkpoint(tmp_path, keys).with_suffix(".json")
        listing.write_text(json.dumps(keys))
        if state:
            listing.with_suffix(".pt").write_bytes(b"state")
    assert _saved_groups(tmp_path) == [["a1", "a2"]]


def test_occlude_dataset_draws_the_tie_noise_from_its_generator():
    # tied maps are ranked by the noise alone: the same seeded generator gives the same pixels, another seed others
    # (a generator not handed on would draw from the global RNG, which the first call advances)
    dataset, zero = toy_dataset(), torch.zeros(6, 1, 8, 8)

    def replaced(seed):
        occluded = occlude_dataset(dataset, zero, 0.5, keep=False, fill=[128.0],
                                   generator=torch.Generator().manual_seed(seed))
        return occluded.images == 128

    assert torch.equal(replaced(0), replaced(0)) and not torch.equal(replaced(0), replaced(1))


def test_score_std_of_one_repeat_is_0():
    # one repeat has no spread: 0, not the NaN of a ddof-1 standard deviation of one value
    result = RoarKarResult(True, (0.1, 0.5), {"m": np.array([[0.8, 0.6]])})
    assert result.score_std("m") == 0.0


def test_a_nul_in_a_method_name_is_refused_before_any_training(tmp_path):
    train, test, maps = roar_inputs()
    fn = Counting()
    with pytest.raises(ValueError, match=re.escape("method name 'a\\x00b' cannot name its result files")):
        roar_kar(train, test, {"a\0b": maps["a"]}, fn, fractions=(0.5,), repeats=1,
                 store=ResultStore(tmp_path, {"run": 1}), progress=False)
    assert fn.calls == [] and not (tmp_path / "roar").exists()


def test_the_tie_noise_warning_ranks_by_the_channel_sum_over_train_and_test_maps():
    """The ranking score is the channel sum (channels +5 and -5 + 1e-4 sum to 1e-4, small for the noise 1e-4, though
    each channel is large); the test maps count as the train maps do (train maps all 0, test maps 2 < 10 x 0.25)."""
    train, test, _ = roar_inputs()

    def cancelling(n):
        maps = torch.full((n, 2, 8, 8), 5.0, dtype=torch.float64)
        maps[:, 1] = -5.0 + 1e-4
        return maps

    with pytest.warns(RuntimeWarning, match=r"'cancelling' \(0.0001\)"):
        roar_kar(train, test, {"cancelling": (cancelling(8), cancelling(4))}, Counting(), fractions=(0.2,), repeats=1,
                 progress=False)
    small_test = (torch.zeros(8, 1, 8, 8), torch.full((4, 1, 8, 8), 2.0))
    with pytest.warns(RuntimeWarning, match=r"'small_test' \(2\)"):
        roar_kar(train, test, {"small_test": small_test}, Counting(), fractions=(0.2,), repeats=1, tie_noise=0.25,
                 progress=False)


def test_each_method_mode_and_fraction_draws_its_own_noise_and_random_masks():
    """Documented: the tie-breaking noise depends on (seed, method, split), the random masks also on (mode,
    fraction). Two methods of identical tied maps are ranked by different noise; two random baselines get different
    masks; ROAR's random mask at 0.6 does not hold its mask at 0.2, nor KAR's at 0.2 (replacing with probability 0.8)
    ROAR's at 0.2, as masks of one draw would."""
    train, test, _ = roar_inputs()
    fill = train.images.double().mean().round().item()
    zero = (torch.zeros(8, 1, 8, 8), torch.zeros(4, 1, 8, 8))
    masks = {}

    def record(keep):
        def train_fn(train, test, seed):
            masks[keep, len([k for k in masks if k[0] == keep])] = torch.cat(
                [(d.images[:, 0] == fill).flatten(1) for d in (train, test)])
            return 0.5
        return train_fn

    for keep in (False, True):  # the jobs come method by method, fraction by fraction
        roar_kar(train, test, {"tied1": zero, "tied2": zero, "random1": None, "random2": None}, record(keep),
                 fractions=(0.2, 0.6), repeats=1, keep=keep, progress=False)
    roar = [masks[False, i] for i in range(8)]  # tied1 0.2, 0.6, tied2 0.2, 0.6, random1 0.2, 0.6, random2 0.2, 0.6
    assert not torch.equal(roar[0], roar[2])  # the tied methods: own noise
    assert torch.equal(roar[0] & roar[1], roar[0])  # (one method's rankings are shared by its fractions: nested)
    assert not torch.equal(roar[4], roar[6])  # two random baselines: own masks
    assert not torch.equal(roar[4] & roar[5], roar[4])  # a random mask per fraction
    assert not torch.equal(masks[True, 4] & roar[4], roar[4])  # and per mode (KAR at 0.2: one draw < 0.8)


def test_a_train_fn_with_many_trains_one_at_a_time_with_group_1():
    """group=1 (the default) calls train_fn itself: ``many`` only trains groups of several."""
    class Many(Counting):
        def many(self, jobs):
            raise AssertionError("many called with group=1")

    train, test, maps = roar_inputs()
    fn = Many()
    roar_kar(train, test, maps, fn, fractions=(0.2, 0.6), repeats=1, progress=False)
    assert len(fn.calls) == 4


def test_trainings_are_timed_one_by_one_and_a_groups_time_is_shared(monkeypatch):
    """A fake clock advancing only while training: 3 s per model alone is 3 s each (not the time since the first), a
    group of two trained in 6 s is 3 s each."""
    import types

    import rectgrad.evaluation.roar as roar

    now = [0.0]
    monkeypatch.setattr(roar, "time", types.SimpleNamespace(perf_counter=lambda: now[0]))

    class Timed:
        def __call__(self, train, test, seed):
            now[0] += 3.0
            return 0.5

        def many(self, jobs):
            now[0] += 3.0 * len(jobs)
            return [0.5] * len(jobs)

    for group, trains in ((1, Timed().__call__), (2, Timed())):
        seconds = []
        LocalBackend(group=group).run([Job(f"k{i}", None, None, 0) for i in range(4)], trains,
                                      lambda job, accuracy, s: seconds.append(s))
        assert seconds == [3.0] * 4, group


def test_a_group_saved_through_save_is_recorded_once(tmp_path):
    """A ``many`` that hands the accuracies to ``save`` (before deleting its state) and returns them: each training
    is done once, not again with the returned list."""
    class Saving:
        def __call__(self, train, test, seed):
            raise AssertionError("trained alone")

        def many(self, jobs, checkpoint=None, save=None):
            save([0.25] * len(jobs))
            return [0.25] * len(jobs)

    done = []
    LocalBackend(group=2).run([Job(f"k{i}", None, None, 0) for i in range(3)], Saving(),
                              lambda job, accuracy, seconds: done.append(job.key), checkpoints=tmp_path)
    assert done == ["k0", "k1", "k2"] and not list(tmp_path.iterdir())  # (each listing gone once recorded)


def test_the_listing_of_a_group_out_of_memory_before_any_state_goes(tmp_path):
    """A group that ran out of GPU memory before saving anything leaves no listing behind: its halves are groups of
    their own, and the finished sweep leaves its unfinished folder empty."""
    class Small(Counting):
        def many(self, jobs, checkpoint=None):
            if len(jobs) > 2:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
            return [self(*job) for job in jobs]

    train, test, maps = roar_inputs()
    with pytest.warns(RuntimeWarning, match="out of GPU memory training 4 models at once: 2 at a time"):
        roar_kar(train, test, maps, Small(), fractions=(0.2, 0.6), repeats=1, backend=LocalBackend(group=4),
                 store=ResultStore(tmp_path, {"run": 1}), progress=False)
    assert list((tmp_path / "roar" / "unfinished").iterdir()) == []


def test_a_damaged_listing_is_no_saved_group(tmp_path):
    """A listing that is no JSON, or lists no training names, beside a saved state: the group starts over."""
    from rectgrad.evaluation.roar import _saved_groups

    for name, text in (("a", "{"), ("b", "[1, 2]"), ("c", "[]"), ("d", '{"k": 1}'), ("e", '["x1", "x2"]')):
        (tmp_path / f"{name}.json").write_text(text)
        (tmp_path / f"{name}.pt").write_bytes(b"state")
    assert _saved_groups(tmp_path) == [["x1", "x2"]]
    (tmp_path / "f.json").write_bytes(b"\xff\xfe")
    (tmp_path / "f.pt").write_bytes(b"state")
    assert _saved_groups(tmp_path) == [["x1", "x2"]]


def test_roar_kar_takes_numpy_integer_accuracies_0_and_1():
    train, test, maps = roar_inputs()
    result = roar_kar(train, test, maps, lambda a, b, seed: np.int64(seed), fractions=(0.2, 0.6), repeats=2,
                      progress=False)
    assert result.accuracies["a"].tolist() == [[0.0, 0.0], [1.0, 1.0]]


def test_roar_kar_refuses_attributions_that_are_no_pair_before_any_training():
    train, test, maps = roar_inputs()
    fn = Counting()
    for bad in ((maps["a"][0],), (*maps["a"], maps["a"][1]), []):
        with pytest.raises(ValueError, match=r"attributions\['a'\] must be a \(train maps, test maps\) pair or None"):
            roar_kar(train, test, {"a": bad}, fn, fractions=(0.5,), repeats=1, progress=False)
    assert fn.calls == []
    for bad in ([("a", maps["a"])], maps["a"]):  # pairs in a list, or one method's pair without its name
        with pytest.raises(TypeError, match=r"attributions must be a dict \{method name: \(train maps, test maps\), "
                                            r"or None for the random baseline\}, got (list|tuple)"):
            roar_kar(train, test, bad, fn, fractions=(0.5,), repeats=1, progress=False)
    assert fn.calls == []


def test_the_random_baseline_replaces_a_fraction_p_for_roar_and_1_minus_p_for_kar():
    # each pixel independently: at p = 0.2 ROAR replaces about 20% of the 12 x 64 train and test pixels, KAR 80%
    train, test, _ = roar_inputs()
    fill = train.images.double().mean().round().item()
    share = {}

    def train_fn(train, test, seed):
        share[keep] = torch.cat([(d.images == fill).flatten() for d in (train, test)]).double().mean().item()
        return 0.5

    for keep in (False, True):
        roar_kar(train, test, {"random": None}, train_fn, fractions=(0.2,), repeats=1, keep=keep, progress=False)
    assert abs(share[False] - 0.2) < 0.06 and abs(share[True] - 0.8) < 0.06


def test_maps_of_no_dimension_are_refused_as_not_matching():
    train, test, _ = roar_inputs()
    with pytest.raises(ValueError, match=r"attributions\['a'\] \(.*\) do not match the 8 images of size 8x8"):
        roar_kar(train, test, {"a": (torch.tensor(1.0), torch.zeros(4, 1, 8, 8))}, Counting(), progress=False)


def test_maps_with_one_nan_or_inf_value_are_refused():
    # a single non-finite pixel cannot be ranked either (not only all-NaN maps)
    train, test, _ = roar_inputs()
    for value in (float("nan"), float("inf"), -float("inf")):
        bad = torch.zeros(4, 1, 8, 8)
        bad[3, 0, 5, 2] = value
        with pytest.raises(ValueError, match=r"attributions\['a'\] hold NaN or Inf values: they cannot be ranked"):
            roar_kar(train, test, {"a": (torch.zeros(8, 1, 8, 8), bad)}, Counting(), progress=False)



# ---------------------------------------------------------------- results store

def test_store_refuses_another_configuration(tmp_path):
    store = ResultStore(tmp_path / "w", {"scale": "quick", "fractions": (0.1, 0.5)})
    store.save_json("roar/x.json", {"accuracy": 0.5})
    same = ResultStore(tmp_path / "w", {"scale": "quick", "fractions": [0.1, 0.5]})  # tuples read back as lists
    assert same.load_json("roar/x.json") == {"accuracy": 0.5}
    with pytest.raises(ValueError, match="another configuration.*scale: 'quick' there, 'paper' here"):
        ResultStore(tmp_path / "w", {"scale": "paper", "fractions": [0.1, 0.5]})
    nested = ResultStore(tmp_path / "n", {"parameters": {"a": 1, "b": 2, "c": 3}, "scale": "quick"})
    nested.save_json("x.json", {})
    with pytest.raises(ValueError, match=r"\(scale: 'quick' there, 'paper' here; parameters.a: 1 there, 0 here; "
                                         r"parameters.b: 2 there, 0 here; ...\)"):  # the setting first
        ResultStore(tmp_path / "n", {"parameters": {"a": 0, "b": 0, "c": 0}, "scale": "paper"})
    store.save_torch("maps/a.pt", torch.ones(2))
    assert torch.equal(store.load_torch("maps/a.pt"), torch.ones(2))
    assert json.loads((tmp_path / "w" / "config.json").read_text())["scale"] == "quick"
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError):
        ResultStore(tmp_path / "file", {})


def test_a_growing_list_may_take_more_names_and_nothing_else(tmp_path):
    """``growing``: the folder's list of names may be part of the new one (methods added), which config.json records
    once record_growth says the results are in; a list missing a saved name, or another setting changed too, is
    another configuration, named without the list that may grow."""
    ResultStore(tmp_path, {"methods": ["a", "b"], "seed": 0}, growing="methods").save_json("a.json", 1)
    for methods, seed, difference in ((["a", "c"], 0, "(methods: ['a', 'b'] there, ['a', 'c'] here)"),
                                      (["a", "b", "c"], 1, "(seed: 0 there, 1 here)")):
        with pytest.raises(ValueError, match=re.escape(difference)):
            ResultStore(tmp_path, {"methods": methods, "seed": seed}, growing="methods")
    with pytest.raises(ValueError, match="another configuration"):  # without growing, a longer list is another too
        ResultStore(tmp_path, {"methods": ["a", "b", "c"], "seed": 0})
    more = ResultStore(tmp_path, {"methods": ["a", "b", "c"], "seed": 0}, growing="methods")
    assert more.resumed and more.load_json("a.json") == 1
    assert ResultStore.read_config(tmp_path)["methods"] == ["a", "b"]  # until the added results are in
    ResultStore(tmp_path, {"methods": ["a", "b"], "seed": 0}, growing="methods").record_growth()  # nothing added
    assert ResultStore.read_config(tmp_path)["methods"] == ["a", "b"]
    more.record_growth()
    assert ResultStore.read_config(tmp_path) == {"methods": ["a", "b", "c"], "seed": 0}
    assert ResultStore(tmp_path, {"methods": ["a", "b", "c"], "seed": 0}).resumed
    for foreign in (5, None, ["a", ["x"]], "ab"):  # a config.json written elsewhere: another configuration, named
        (tmp_path / "config.json").write_text(json.dumps({"methods": foreign, "seed": 0}))
        with pytest.raises(ValueError, match=re.escape(f"(methods: {foreign!r} there, ['a', 'b'] here)")):
            ResultStore(tmp_path, {"methods": ["a", "b"], "seed": 0}, growing="methods")


def test_a_key_added_to_the_configuration_reads_as_its_old_default_in_older_folders(tmp_path):
    ResultStore(tmp_path, {"seed": 0}).save_json("a.json", 1)  # a folder made before tie_noise was recorded
    assert ResultStore(tmp_path, {"seed": 0, "tie_noise": 1e-4}, defaults={"tie_noise": 1e-4}).resumed
    with pytest.raises(ValueError, match=re.escape("(tie_noise: 0.0001 there, 0 here)")):
        ResultStore(tmp_path, {"seed": 0, "tie_noise": 0}, defaults={"tie_noise": 1e-4})
    assert ResultStore.read_config(tmp_path) == {"seed": 0}  # left as it was


def test_a_folder_holding_only_an_interrupted_write_opens_as_a_new_store(tmp_path):
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / ".config.json.x1.tmp").write_text('{"ru')  # a kill while config.json was being written
    assert not ResultStore(tmp_path / "w", {"run": 1}).resumed
    assert ResultStore(tmp_path / "w", {"run": 1}).resumed


def test_a_corrupt_result_file_is_an_error_naming_it(tmp_path):
    store = ResultStore(tmp_path / "w", {"run": 1})
    store.save_json("roar/x.json", {"accuracy": 0.5})
    store.save_torch("maps/a.pt", torch.ones(2))
    store.save_seconds("maps/a", 1.0)
    from test_train import foreign_bytes

    foreign = [("maps/a.pt", damage) for damage in foreign_bytes()]  # KeyError, IndexError, struct.error
    for name, damage in (("roar/x.json", b'{"accur'), ("maps/a.pt", b""), ("maps/a.pt", b"PK\x03\x04 half a zip"),
                         ("seconds/maps/a.json", b"\xff\xfe"), *foreign):
        (tmp_path / "w" / name).write_bytes(damage)
        load = {".json": store.load_json, ".pt": store.load_torch}[Path(name).suffix]
        remedy = "delete it: the report then lacks that unit's compute time" if name.startswith("seconds") else \
            "delete it and rerun to compute it again"
        with pytest.raises(ValueError, match=rf"{tmp_path / 'w' / name} is corrupt \(.+\): {remedy}$"):
            ResultStore.read_seconds(tmp_path / "w") if name.startswith("seconds") else load(name)
    store.save_torch("maps/b.pt", torch.ones(1000))
    whole = (tmp_path / "w" / "maps" / "b.pt").read_bytes()
    (tmp_path / "w" / "maps" / "b.pt").write_bytes(whole[:-25])  # torch.load: OSError "[Errno 22] Invalid argument"
    with pytest.raises(ValueError, match=r"b.pt is corrupt \(.+\): delete it and rerun to compute it again$"):
        store.load_torch("maps/b.pt")
    (tmp_path / "w" / "config.json").write_text("{")
    with pytest.raises(ValueError, match="config.json is corrupt .+: delete the whole folder, or use another one"):
        ResultStore(tmp_path / "w", {"run": 1})
    (tmp_path / "w" / "config.json").write_text("[1]")  # JSON, but not what rectgrad wrote
    with pytest.raises(ValueError, match=r"config.json is corrupt \(a JSON list, not an object\)"):
        ResultStore(tmp_path / "w", {"run": 1})
    (tmp_path / "w" / "config.json").unlink()  # results without their configuration: neither resumed nor mixed
    with pytest.raises(ValueError, match="is not empty but holds no config.json: it is no results folder"):
        ResultStore(tmp_path / "w", {"run": 2})
    (tmp_path / "w" / "config.json").write_text('{"run": 1}')
    train, test, maps = roar_inputs()
    for damage, why in (("[0.5]", "a JSON list, not an object"), ('{"accuracy": "high"}', "no number 'accuracy'"),
                        ('{"accuracy": 85.0, "seed": 0}', r"accuracy 85.0, not a fraction in \[0, 1\]"),
                        ('{"accuracy": NaN, "seed": 0}', r"accuracy nan, not a fraction in \[0, 1\]")):
        (tmp_path / "w" / "roar" / "a-p0.2-r0.json").write_text(damage)
        with pytest.raises(ValueError, match=rf"a-p0.2-r0.json is corrupt \({why}\): delete it and rerun"):
            roar_kar(train, test, maps, Counting(), fractions=(0.2, 0.6), store=store, progress=False)


def test_saved_accuracies_of_0_and_1_are_fractions_not_corrupt(tmp_path):
    # a model that gets every test image wrong (or right) is a result, not a damaged file
    from rectgrad.evaluation.roar import read_accuracy

    for accuracy in (0.0, 1.0, 0, 1):
        (tmp_path / "r.json").write_text(json.dumps({"accuracy": accuracy, "seed": 0}))
        assert read_accuracy(tmp_path / "r.json") == accuracy
    (tmp_path / "r.json").write_text('{"accuracy": -0.01, "seed": 0}')
    with pytest.raises(ValueError, match=r"r.json is corrupt \(accuracy -0.01, not a fraction in \[0, 1\]\)"):
        read_accuracy(tmp_path / "r.json")


def test_a_recorded_time_that_is_no_duration_is_corrupt(tmp_path):
    # JSON reads NaN and Infinity; a time of NaN, inf or below 0 (written by hand or another tool) made the report's
    # total compute time nan or negative
    store = ResultStore(tmp_path / "w", {"run": 1})
    store.save_seconds("maps/a", 2.5)
    store.save_seconds("maps/b", 0.0)  # a unit done within the clock's resolution
    assert ResultStore.read_seconds(tmp_path / "w") == {"maps/a": 2.5, "maps/b": 0.0}
    for damage in ("NaN", "Infinity", "-1.0"):
        (tmp_path / "w" / "seconds" / "maps" / "a.json").write_text(f'{{"seconds": {damage}}}')
        with pytest.raises(ValueError, match=r"a.json is corrupt \(seconds .+, not a duration >= 0\): delete it"):
            ResultStore.read_seconds(tmp_path / "w")


def test_store_configurations_and_arguments_compare_as_json(tmp_path):
    """Tuples read back as lists, so a configuration (or bound arguments) holding one resumes; a recorded value is
    kept over a default for older folders; a key set to None differs from an absent one."""
    store = ResultStore(tmp_path / "w", {"fractions": (0.1, 0.5), "tie_noise": 0})
    store.bind("args.json", {"pair": (1, 2)}, "results")
    again = ResultStore(tmp_path / "w", {"fractions": (0.1, 0.5), "tie_noise": 0}, defaults={"tie_noise": 1e-4})
    assert again.resumed
    again.bind("args.json", {"pair": (1, 2)}, "results")
    ResultStore(tmp_path / "n", {"a": None}).save_json("x.json", 1)
    with pytest.raises(ValueError, match=re.escape("(a: None there, absent here)")):
        ResultStore(tmp_path / "n", {})
    ResultStore(tmp_path / "t", {"a": 1, "b": 1, "c": 1}).save_json("x.json", 1)
    with pytest.raises(ValueError, match=re.escape("(a: 1 there, 0 here; b: 1 there, 0 here; c: 1 there, 0 here); "
                                                   "refusing")):  # three differences, all named: no '...'
        ResultStore(tmp_path / "t", {"a": 0, "b": 0, "c": 0})


def test_a_failed_write_leaves_the_previous_file_whole(tmp_path):
    """A value that cannot be written (json or torch fails half-way) leaves the file as it was, and no temporary."""
    store = ResultStore(tmp_path, {"run": 1})
    store.save_json("r.json", {"accuracy": 0.5})
    store.save_torch("m.pt", torch.ones(3))
    with pytest.raises(TypeError):
        store.save_json("r.json", {"accuracy": 0.25, "odd": object()})
    with pytest.raises(Exception):
        store.save_torch("m.pt", {"maps": torch.zeros(3), "odd": lambda: 0})
    assert store.load_json("r.json") == {"accuracy": 0.5} and torch.equal(store.load_torch("m.pt"), torch.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "m.pt", "r.json"]


def test_stored_files_holding_other_things_than_rectgrad_writes_are_corrupt(tmp_path):
    """A result whose accuracy is a bool, and a torch file pickling an arbitrary object (which loading would run),
    are refused as corrupt."""
    store = ResultStore(tmp_path, {"run": 1})
    (tmp_path / "roar").mkdir()
    (tmp_path / "roar" / "a-p0.2-r0.json").write_text('{"accuracy": true, "seed": 0}')
    train, test, maps = roar_inputs()
    with pytest.raises(ValueError, match=r"a-p0.2-r0.json is corrupt \(no number 'accuracy'\)"):
        roar_kar(train, test, maps, Counting(), fractions=(0.2, 0.6), store=store, progress=False)
    torch.save({"value": Decimal("1.5")}, tmp_path / "odd.pt")
    with pytest.raises(ValueError, match=r"odd.pt is corrupt \(.+\): delete it and rerun"):
        store.load_torch("odd.pt")


# ---------------------------------------------------------------- several models at once

def quadrants(n: int, seed: int) -> ImageDataset:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 4, (n,), generator=g)
    images = torch.randint(0, 60, (n, 1, 8, 8), generator=g, dtype=torch.uint8)
    for k in range(4):
        r, c = (k // 2) * 4, (k % 2) * 4
        images[labels == k, :, r:r + 4, c:c + 4] += 180
    return ImageDataset(images, labels, ["tl", "tr", "bl", "br"], "quadrants")


def test_train_many_matches_separate_trainings():
    datasets, seeds = [quadrants(60, 0), quadrants(60, 1)], [3, 4]
    alone = [new_model(d, s) for d, s in zip(datasets, seeds)]
    histories = [train_model(m, d, epochs=2, batch_size=25, seed=s, progress=False, channels_last=False)
                 for m, d, s in zip(alone, datasets, seeds)]
    together = [new_model(d, s) for d, s in zip(datasets, seeds)]
    many = train_many(together, datasets, seeds, epochs=2, batch_size=25)
    for a, b, ha, hb in zip(alone, together, histories, many):
        assert np.allclose(ha["loss"], hb["loss"], rtol=1e-3)  # same batches, same gradients
        assert np.allclose(ha["train_accuracy"], hb["train_accuracy"])
        for key, value in a.state_dict().items():  # Adam's normalised steps amplify float rounding a little
            assert torch.allclose(value, b.state_dict()[key], atol=3e-3)
        assert not b.training


def test_train_many_computes_each_layers_options_as_the_models_own_forward_pass():
    """With lr 0 the weights stay put, so each epoch's loss and accuracy are those of the model's own forward pass
    over its dataset: the stacked step honours padding, dilation, stride and ceil_mode."""
    from rectgrad.data import to_inputs

    datasets, seeds = [quadrants(60, 0), quadrants(60, 1)], [3, 4]

    def net(seed):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Conv2d(1, 3, 3, padding=2, dilation=2), nn.ReLU(),  # 8x8
                             nn.MaxPool2d(3, stride=2, ceil_mode=True),  # 4x4 (3x3 without ceil_mode)
                             nn.Conv2d(3, 2, 2, stride=2), nn.ReLU(), nn.Flatten(), nn.Linear(8, 4))

    models = [net(s) for s in seeds]
    with torch.no_grad():
        logits = [m(to_inputs(d.images)) for m, d in zip(models, datasets)]
    histories = train_many(models, datasets, seeds, epochs=2, batch_size=25, lr=0.0)
    for history, out, d in zip(histories, logits, datasets):
        loss = nn.functional.cross_entropy(out, d.labels).item()
        accuracy = (out.argmax(1) == d.labels).float().mean().item()
        assert history["loss"] == pytest.approx([loss] * 2, rel=1e-5)
        assert history["train_accuracy"] == pytest.approx([accuracy] * 2)


def test_train_many_holds_a_shared_dataset_once_and_trains_as_with_copies():
    first, second = quadrants(60, 0), quadrants(60, 1)
    copy = first.with_images(first.images.clone())
    shared = [new_model(first, s) for s in (3, 4, 5)]
    copied = [new_model(first, s) for s in (3, 4, 5)]
    stacked = []
    real_stack = torch.stack

    def recording_stack(tensors, *args, **kwargs):
        stacked.append((len(tensors), tensors[0].dtype))
        return real_stack(tensors, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch, "stack", recording_stack)
        train_many(shared, [first, second, first], [3, 4, 5], epochs=1, batch_size=20)
    assert [n for n, dtype in stacked if dtype == torch.uint8] == [2]  # the images of 2 datasets, not 3
    train_many(copied, [first, second, copy], [3, 4, 5], epochs=1, batch_size=20)
    for a, b in zip(shared, copied):
        for key, value in a.state_dict().items():
            assert torch.equal(value, b.state_dict()[key]), key


def test_train_many_stops_and_resumes_bit_for_bit(tmp_path):
    datasets, seeds = [quadrants(60, 0), quadrants(60, 1)], [3, 4]
    straight = [new_model(d, s) for d, s in zip(datasets, seeds)]
    expected = train_many(straight, datasets, seeds, epochs=3, batch_size=25)
    checkpoint = tmp_path / "group.pt"
    steps = iter(range(100))
    for stop_at in (4, 7):  # stopped twice: mid-epoch (step 1 of epoch 2), then at the start of epoch 3
        models = [new_model(d, s) for d, s in zip(datasets, seeds)]
        with pytest.raises(TrainingInterrupted, match="run again to resume"):
            train_many(models, datasets, seeds, epochs=3, batch_size=25, checkpoint=checkpoint,
                       stop=lambda: next(steps) == stop_at)
        assert checkpoint.is_file() and checkpoint_seconds(checkpoint) > 0
    state = torch.load(checkpoint, weights_only=True)
    state["seconds"] = 1000.0  # the time the interrupted runs trained: counted in the resumed histories
    torch.save(state, checkpoint)
    models = [new_model(d, s) for d, s in zip(datasets, seeds)]  # fresh weights: all of them come from the file
    start = time.perf_counter()
    resumed = train_many(models, datasets, seeds, epochs=3, batch_size=25, checkpoint=checkpoint)
    assert all(1000.0 < h["seconds"] < 1000.0 + time.perf_counter() - start for h in resumed)
    assert not checkpoint.exists() and checkpoint_seconds(checkpoint) == 0.0
    for a, b, ha, hb in zip(straight, models, expected, resumed):
        assert ha["loss"] == hb["loss"] and ha["train_accuracy"] == hb["train_accuracy"]
        for key, value in a.state_dict().items():
            assert torch.equal(value, b.state_dict()[key])
    train_many(models, datasets, seeds, epochs=1, batch_size=25, checkpoint=checkpoint,
               stop=lambda: False)  # a stop that never comes: trains and leaves no file
    assert not checkpoint.exists()


def test_train_many_saves_its_results_before_deleting_its_state(tmp_path):
    """``save(histories)`` runs before the group's state is deleted: a Ctrl-C meanwhile is honoured once it returns,
    and an error in it keeps the trained state, from which the rerun trains nothing."""
    datasets, seeds = [quadrants(60, 0), quadrants(60, 1)], [3, 4]
    straight = [new_model(d, s) for d, s in zip(datasets, seeds)]
    expected = train_many(straight, datasets, seeds, epochs=2, batch_size=25)
    checkpoint, saved = tmp_path / "group.pt", []

    def ctrl_c_while_saving(histories):
        os.kill(os.getpid(), signal.SIGINT)
        saved.append([h["loss"] for h in histories])  # still runs to its end

    with pytest.raises(TrainingInterrupted, match="stopped once the 2 trained models were saved"):
        train_many([new_model(d, s) for d, s in zip(datasets, seeds)], datasets, seeds, epochs=2, batch_size=25,
                   checkpoint=checkpoint, save=ctrl_c_while_saving)
    assert saved == [[h["loss"] for h in expected]] and not checkpoint.exists()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler

    def full_disk(histories):
        raise OSError("disk full")

    start = time.perf_counter()
    with pytest.raises(OSError, match="disk full"):
        train_many([new_model(d, s) for d, s in zip(datasets, seeds)], datasets, seeds, epochs=2, batch_size=25,
                   checkpoint=checkpoint, save=full_disk)
    assert checkpoint.is_file() and 0 < checkpoint_seconds(checkpoint) < time.perf_counter() - start  # its time kept
    models, steps = [new_model(d, 0) for d in datasets], []  # other weights: the trained ones come from the file
    resumed = train_many(models, datasets, seeds, epochs=2, batch_size=25, checkpoint=checkpoint,
                         stop=lambda: steps.append(1) or False, save=lambda histories: saved.append(histories))
    assert steps == [] and saved[-1] is resumed and not checkpoint.exists()  # no training step
    assert [h["loss"] for h in resumed] == [h["loss"] for h in expected]
    for a, b in zip(straight, models):
        assert all(torch.equal(value, b.state_dict()[key]) for key, value in a.state_dict().items())


def test_a_ctrl_c_while_a_group_is_scored_keeps_its_results_and_leaves_nothing_behind(tmp_path, monkeypatch):
    import rectgrad.train_many as module

    train, test = quadrants(60, 0), quadrants(20, 1)
    maps = {"a": (torch.randn(60, 1, 8, 8), torch.randn(20, 1, 8, 8)), "random": None}
    evaluate, asked = module.evaluate, []

    def ctrl_c_while_scoring(model, test_set):
        if not asked:
            asked.append(os.kill(os.getpid(), signal.SIGINT))
        return evaluate(model, test_set)

    monkeypatch.setattr(module, "evaluate", ctrl_c_while_scoring)
    with pytest.raises(TrainingInterrupted, match="stopped once the 4 trained models were saved"):
        roar_kar(train, test, maps, Retrainer(epochs=1, batch_size=20, device="cpu"), fractions=(0.2, 0.6), repeats=1,
                 backend=LocalBackend(group=4), progress=False, store=ResultStore(tmp_path / "work", {}))
    assert len(list((tmp_path / "work" / "roar").glob("*.json"))) == 4  # all four results saved
    assert not list((tmp_path / "work" / "roar" / "unfinished").iterdir())  # neither state nor listing left


def test_a_group_is_recorded_before_its_state_is_deleted(tmp_path):
    """LocalBackend hands ``train_fn.many`` a ``save`` (when it takes one) that records each training's result, so
    that nothing is lost between the group's end and its results' files; a ``many`` without it works as before."""
    events = []

    class Saving:
        def __call__(self, train, test, seed):
            return 0.5

        def many(self, args, checkpoint=None, save=None):
            save([0.25] * len(args))
            events.append("state deleted")
            return [0.25] * len(args)

    class Plain(Saving):
        def many(self, args, checkpoint=None):
            events.append("state deleted")
            return [0.75] * len(args)

    jobs = [Job(key, None, None, 0) for key in "ab"]
    for train_fn, expected in ((Saving(), [("a", 0.25), ("b", 0.25), "state deleted"]),
                               (Plain(), ["state deleted", ("a", 0.75), ("b", 0.75)])):
        events.clear()
        LocalBackend(group=2).run(jobs, train_fn, lambda job, a, seconds: events.append((job.key, a)), tmp_path)
        assert events == expected
    assert not list(tmp_path.iterdir())


def test_train_many_starts_a_group_over_from_a_corrupt_checkpoint(tmp_path):
    datasets, seeds = [quadrants(60, 0), quadrants(60, 1)], [3, 4]
    expected = train_many([new_model(d, s) for d, s in zip(datasets, seeds)], datasets, seeds, epochs=2, batch_size=25)
    checkpoint = tmp_path / "group.pt"
    torch.save({"identity": {}, "seconds": 1.0, "weights": torch.ones(1000)}, checkpoint)
    cut_in_its_index = checkpoint.read_bytes()[:-25]  # torch.load: OSError "[Errno 22] Invalid argument"
    for damage in (b"PK\x03\x04 cut short", cut_in_its_index):
        checkpoint.write_bytes(damage)
        assert checkpoint_seconds(checkpoint) == 0.0
        with pytest.warns(RuntimeWarning, match="group.pt is corrupt .*its group of trainings starts over"):
            again = train_many([new_model(d, s) for d, s in zip(datasets, seeds)], datasets, seeds, epochs=2,
                               batch_size=25, checkpoint=checkpoint)
        assert [h["loss"] for h in again] == [h["loss"] for h in expected] and not checkpoint.exists()


def test_train_many_refuses_another_groups_checkpoint(tmp_path):
    datasets = [quadrants(60, 0), quadrants(60, 1)]
    checkpoint = tmp_path / "group.pt"
    with pytest.raises(TrainingInterrupted):
        train_many([new_model(d) for d in datasets], datasets, [0, 1], epochs=2, batch_size=25,
                   checkpoint=checkpoint, stop=lambda: True)
    with pytest.raises(ValueError, match="another group of trainings"):
        train_many([new_model(d) for d in datasets], datasets, [0, 2], epochs=2, batch_size=25, checkpoint=checkpoint)
    with pytest.raises(ValueError, match="another group of trainings"):  # another learning rate
        train_many([new_model(d) for d in datasets], datasets, [0, 1], epochs=2, batch_size=25, lr=2e-3,
                   checkpoint=checkpoint)
    with pytest.raises(ValueError, match="another group of trainings"):  # another precision
        train_many([new_model(d) for d in datasets], datasets, [0, 1], epochs=2, batch_size=25, precision="bf16",
                   checkpoint=checkpoint)
    other = [datasets[0], quadrants(60, 2)]  # same sizes and seeds, other images
    with pytest.raises(ValueError, match="another group of trainings"):
        train_many([new_model(d) for d in other], other, [0, 1], epochs=2, batch_size=25, checkpoint=checkpoint)
    with pytest.raises(ValueError, match="stop needs a checkpoint"):
        train_many([new_model(d) for d in datasets], datasets, [0, 1], stop=lambda: True)


def test_stop_requests_turn_the_first_signal_into_a_request():
    with stop_requests() as requested:
        signal.raise_signal(signal.SIGINT)
        assert requested.is_set()  # no KeyboardInterrupt: the group stops at its next step
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGTERM)  # the second one interrupts at once
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored
    outside = []
    thread = threading.Thread(target=lambda: outside.append(stop_requests().__enter__().is_set()))
    thread.start()
    thread.join()
    assert outside == [False]  # no handlers outside the main thread


def test_retrainer_one_and_many_and_bad_input():
    train, test = quadrants(80, 0), quadrants(40, 1)
    retrain = Retrainer(epochs=1, device="cpu", batch_size=20)
    single = retrain(train, test, 0)
    both = retrain.many([(train, test, 0), (train, test, 1)])
    assert both[0] == pytest.approx(single, abs=0.05) and all(0 <= a <= 1 for a in both)
    with pytest.raises(ValueError, match="same non-zero number"):
        train_many([new_model(train), new_model(train)], [train, train.subset(slice(0, 10))], [0, 1])
    with pytest.raises(ValueError, match="as many"):
        train_many([new_model(train)], [train, train], [0, 1])
    bigger = ImageDataset(torch.zeros(80, 1, 10, 10, dtype=torch.uint8), train.labels, train.classes, "bigger")
    with pytest.raises(ValueError, match=r"same non-zero number of images of one shape.*\(1, 8, 8\), \(1, 10, 10\)"):
        train_many([new_model(train), new_model(train)], [train, bigger], [0, 1])
    with pytest.raises(ValueError, match="epochs and batch_size must be positive, got 0 and 100"):
        train_many([new_model(train)], [train], [0], epochs=0)
    with pytest.raises(ValueError, match="precision"):
        train_many([new_model(train)], [train], [0], precision="fp16")
    with pytest.raises(ValueError, match="BatchNorm2d"):
        train_many([nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))], [train], [0])
    unsupported = {  # layers the stacked step would compute differently (or not at all): refused by name
        "padding_mode='reflect'": [nn.Conv2d(1, 2, 3, padding=1, padding_mode="reflect"), nn.Flatten(),
                                   nn.Linear(128, 4)],
        r"Conv2d\(bias=False\)": [nn.Conv2d(1, 2, 3, bias=False), nn.Flatten(), nn.Linear(72, 4)],
        r"Linear\(bias=False\)": [nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(72, 4, bias=False)],
        "groups=2": [nn.Conv2d(1, 2, 3), nn.Conv2d(2, 2, 3, groups=2), nn.Flatten(), nn.Linear(32, 4)],
        r"MaxPool2d\(return_indices=True\)": [nn.Conv2d(1, 2, 3), nn.MaxPool2d(2, return_indices=True)],
    }
    for name, layers in unsupported.items():
        with pytest.raises(ValueError, match=name):
            train_many([nn.Sequential(*layers)], [train], [0])
    class Residual(nn.Module):  # supported layers, but a forward of its own: not what the stacked step computes
        def __init__(self):
            super().__init__()
            self.conv, self.flatten, self.linear = nn.Conv2d(1, 1, 3, padding=1), nn.Flatten(), nn.Linear(64, 4)

        def forward(self, x):
            return self.linear(self.flatten(x + self.conv(x)))

    with pytest.raises(ValueError, match="nn.Sequential models .*; got Residual"):
        train_many([Residual()], [train], [0])
    in_place = new_model(train)
    in_place.features[1] = nn.ReLU(inplace=True)  # the same computation: trained with the others
    train_many([new_model(train), in_place], [train, train], [0, 1], epochs=1)
    with pytest.raises(ValueError, match="models of one architecture; model 1 differs from model 0"):
        train_many([new_model(train), nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(72, 4))],
                   [train, train], [0, 1])


def test_retrainer_trains_with_its_seed_and_learning_rate(monkeypatch):
    """Retrainer(...)(train, test, seed) scores new_model(train, seed) trained by train_model with that seed and lr,
    and .many the same models trained by train_many: the scored weights are those, bit for bit."""
    import rectgrad.train_many as module

    train, test = quadrants(60, 0), quadrants(40, 1)
    scored = []
    monkeypatch.setattr(module, "evaluate", lambda model, data: scored.append((model.state_dict(), data)) or 0.5)
    retrain = Retrainer(epochs=1, batch_size=20, lr=3e-3, device="cpu")
    alone, together = [new_model(train, seed) for seed in (1, 2)], [new_model(train, seed) for seed in (1, 2)]
    for seed, model in zip((1, 2), alone):
        assert retrain(train, test, seed) == 0.5
        train_model(model, train, epochs=1, batch_size=20, lr=3e-3, seed=seed, progress=False)
    assert retrain.many([(train, test, 1), (train, test, 2)]) == [0.5, 0.5]
    train_many(together, [train, train], [1, 2], epochs=1, batch_size=20, lr=3e-3)
    assert len(scored) == 4 and all(data is test for _, data in scored)
    for (weights, _), expected in zip(scored, alone + together):
        assert all(torch.equal(weights[k], v) for k, v in expected.state_dict().items())


def test_train_many_keeps_a_stop_asked_for_during_the_last_step(tmp_path):
    datasets, seeds = [quadrants(60, 0), quadrants(60, 1)], [3, 4]
    straight = [new_model(d, s) for d, s in zip(datasets, seeds)]
    expected = train_many(straight, datasets, seeds, epochs=1, batch_size=25)
    checkpoint, checks = tmp_path / "group.pt", []
    models = [new_model(d, s) for d, s in zip(datasets, seeds)]
    with pytest.raises(TrainingInterrupted, match="after the last step"):  # checks before each of 3 steps, then one
        train_many(models, datasets, seeds, epochs=1, batch_size=25, checkpoint=checkpoint,
                   stop=lambda: checks.append(1) or len(checks) > 3)
    models = [new_model(d, s) for d, s in zip(datasets, seeds)]
    resumed = train_many(models, datasets, seeds, epochs=1, batch_size=25, checkpoint=checkpoint,
                         stop=lambda: True)  # a stop asked again: nothing is left to stop
    assert [h["loss"] for h in resumed] == [h["loss"] for h in expected] and not checkpoint.exists()
    for a, b in zip(straight, models):
        for key, value in a.state_dict().items():
            assert torch.equal(value, b.state_dict()[key])


def test_train_many_refuses_a_checkpoint_path_holding_another_torch_file(tmp_path):
    datasets, path = [quadrants(60, 0)], tmp_path / "model.pt"
    torch.save({"weights": torch.zeros(2)}, path)
    for call in (lambda: checkpoint_seconds(path),
                 lambda: train_many([new_model(datasets[0])], datasets, [0], epochs=1, checkpoint=path)):
        with pytest.raises(ValueError, match="model.pt is a torch file but not the saved state of a train_many group"):
            call()
    assert torch.load(path)["weights"].shape == (2,)  # not overwritten


def test_train_many_uses_fused_adam_and_falls_back_where_there_is_none(monkeypatch):
    datasets, seeds = [quadrants(60, 0), quadrants(60, 1)], [3, 4]
    adam, made, refuse = torch.optim.Adam, [], []

    def adam_recorded(params, lr, fused=None):
        if fused and refuse:  # as torch < 2.4 on the CPU
            raise RuntimeError("`fused=True` requires all the params to be floating point Tensors of supported devices")
        made.append(adam(params, lr=lr, fused=fused))
        return made[-1]

    monkeypatch.setattr(torch.optim, "Adam", adam_recorded)
    fused = [new_model(d, s) for d, s in zip(datasets, seeds)]
    train_many(fused, datasets, seeds, epochs=2, batch_size=25)
    refuse.append(True)
    unfused = [new_model(d, s) for d, s in zip(datasets, seeds)]
    train_many(unfused, datasets, seeds, epochs=2, batch_size=25)
    assert [optimizer.defaults["fused"] for optimizer in made] == [True, None]
    for a, b in zip(fused, unfused):  # one pass or seven: the same Adam up to rounding
        for key, value in a.state_dict().items():
            assert torch.allclose(value, b.state_dict()[key], atol=1e-5)


def test_train_many_in_bfloat16_learns():
    train, test = quadrants(200, 0), quadrants(100, 1)
    assert min(Retrainer(epochs=2, device="cpu", batch_size=20, precision="bf16").many([(train, test, 0)])[0],
               Retrainer(epochs=2, device="cpu", batch_size=20).many([(train, test, 0)])[0]) > 0.9


def test_train_many_pools_with_padding_and_dilation_as_the_models_own_forward_pass():
    """With lr 0 each epoch's loss is the model's own forward pass over its dataset: the stacked step also honours
    MaxPool2d's padding and dilation (8x8 -> 3x3 here; 2x2 without the padding, 4x4 without the dilation)."""
    from rectgrad.data import to_inputs

    datasets, seeds = [quadrants(60, 0), quadrants(60, 1)], [3, 4]

    def net(seed):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(),
                             nn.MaxPool2d(3, stride=2, padding=1, dilation=2), nn.Flatten(), nn.Linear(18, 4))

    models = [net(s) for s in seeds]
    with torch.no_grad():
        logits = [m(to_inputs(d.images)) for m, d in zip(models, datasets)]
    histories = train_many(models, datasets, seeds, epochs=1, batch_size=25, lr=0.0)
    for history, out, d in zip(histories, logits, datasets):
        assert history["loss"] == pytest.approx([nn.functional.cross_entropy(out, d.labels).item()], rel=1e-5)


def test_train_many_in_bfloat16_computes_the_logits_in_bfloat16_and_the_loss_in_float32(monkeypatch):
    """precision="bf16": the stacked forward pass runs under bfloat16 autocast (its logits are bfloat16), fp32 does
    not; the loss is the float32 cross-entropy of those logits, each model's batch being its images in the order
    torch.randperm draws from its own seed (one batch of the whole set here, lr 0: the loss is exact)."""
    import rectgrad.train_many as module

    datasets, seeds = [quadrants(40, 0), quadrants(40, 1)], [3, 4]
    stacked, outputs = module._stacked_logits, []
    monkeypatch.setattr(module, "_stacked_logits", lambda *args: outputs.append(stacked(*args)) or outputs[-1])
    for precision, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        outputs.clear()
        histories = train_many([new_model(d, s) for d, s in zip(datasets, seeds)], datasets, seeds, epochs=1,
                               batch_size=40, lr=0.0, precision=precision)
        (logits,) = outputs
        assert logits.dtype == dtype and logits.shape == (2, 40, 4)
        for i, (d, s) in enumerate(zip(datasets, seeds)):
            order = torch.randperm(40, generator=torch.Generator().manual_seed(s))
            loss = nn.functional.cross_entropy(logits[i].detach().float(), d.labels[order]).item()
            assert histories[i]["loss"] == pytest.approx([loss], rel=1e-6, abs=0)


def test_train_many_refuses_empty_datasets_and_a_zero_batch_size():
    train = quadrants(20, 0)
    with pytest.raises(ValueError, match="same non-zero number of images"):
        train_many([new_model(train)], [train.subset(slice(0, 0))], [0])
    with pytest.raises(ValueError, match="epochs and batch_size must be positive, got 1 and 0"):
        train_many([new_model(train)], [train], [0], epochs=1, batch_size=0)


def test_train_many_refuses_a_checkpoint_of_other_epochs_batch_size_or_dataset_assignment(tmp_path):
    """A saved group resumes only with its own epochs, batch size and each model's own dataset: the same datasets
    given to the models in another arrangement (the same distinct datasets, in the same first-seen order) are
    another group."""
    first, second = quadrants(60, 0), quadrants(60, 1)
    checkpoint = tmp_path / "group.pt"
    group = [first, second, first]
    with pytest.raises(TrainingInterrupted):
        train_many([new_model(d) for d in group], group, [0, 1, 2], epochs=2, batch_size=25, checkpoint=checkpoint,
                   stop=lambda: True)
    for datasets, epochs, batch_size in (([first, second, first], 3, 25), ([first, second, first], 2, 20),
                                         ([first, second, second], 2, 25)):
        with pytest.raises(ValueError, match="another group of trainings"):
            train_many([new_model(d) for d in datasets], datasets, [0, 1, 2], epochs=epochs, batch_size=batch_size,
                       checkpoint=checkpoint)
    assert checkpoint.is_file()  # not overwritten by the refused calls


def test_retrainer_many_passes_its_precision_and_cudnn_mode_and_picks_a_device(monkeypatch):
    import rectgrad.train_many as module

    train, test = quadrants(20, 0), quadrants(20, 1)
    original, calls = module.train_many, []
    monkeypatch.setattr(module, "train_many", lambda *a, **k: calls.append(k) or original(*a, **k))
    Retrainer(epochs=1, batch_size=20, device="cpu", precision="bf16", deterministic=False).many([(train, test, 0)])
    Retrainer(epochs=1, batch_size=20, device="cpu").many([(train, test, 0)])
    assert [(k["precision"], k["deterministic"], k["device"]) for k in calls] == [("bf16", False, "cpu"),
                                                                                  ("fp32", True, "cpu")]
    for available, device in ((True, "cuda"), (False, "cpu")):  # the GPU where there is one
        monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
        assert Retrainer()._device() == device and Retrainer(device="meta")._device() == "meta"


def test_train_many_with_a_checkpoint_stops_on_ctrl_c_by_default(tmp_path, monkeypatch):
    """With a checkpoint and no ``stop``, a Ctrl-C during training is a request: the step finishes, the state is
    saved and TrainingInterrupted raised; the rerun resumes to the uninterrupted result."""
    import rectgrad.train_many as module

    datasets, seeds = [quadrants(60, 0), quadrants(60, 1)], [3, 4]
    straight = [new_model(d, s) for d, s in zip(datasets, seeds)]
    expected = train_many(straight, datasets, seeds, epochs=1, batch_size=25)
    stacked, steps = module._stacked_logits, []

    def ctrl_c_in_step_two(*args):
        steps.append(1)
        if len(steps) == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return stacked(*args)

    monkeypatch.setattr(module, "_stacked_logits", ctrl_c_in_step_two)
    checkpoint = tmp_path / "group.pt"
    with pytest.raises(TrainingInterrupted, match="at epoch 1/1, step 2/3"):
        train_many([new_model(d, s) for d, s in zip(datasets, seeds)], datasets, seeds, epochs=1, batch_size=25,
                   checkpoint=checkpoint)
    assert len(steps) == 2 and checkpoint.is_file()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    resumed = train_many([new_model(d, s) for d, s in zip(datasets, seeds)], datasets, seeds, epochs=1,
                         batch_size=25, checkpoint=checkpoint)
    assert len(steps) == 3 and [h["loss"] for h in resumed] == [h["loss"] for h in expected]


def test_retrainer_many_scores_each_model_on_its_own_test_set(monkeypatch):
    import rectgrad.train_many as module

    train, tests = quadrants(20, 0), [quadrants(20, 1), quadrants(20, 2)]
    scored = []
    monkeypatch.setattr(module, "evaluate", lambda model, data: scored.append(data) or 0.5)
    assert Retrainer(epochs=1, batch_size=20, device="cpu").many([(train, tests[0], 0), (train, tests[1], 1)]) == [
        0.5, 0.5]
    assert len(scored) == 2 and scored[0] is tests[0] and scored[1] is tests[1]


def test_the_ray_backend_without_ray_says_what_to_install_before_any_work(monkeypatch):
    import importlib.util

    found = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else found(name, *a))
    with pytest.raises(ModuleNotFoundError, match=r"the Ray backend needs Ray: pip install 'rectgrad\[ray\]'"):
        RayBackend()


def test_ray_backend_checks_its_settings_and_the_clusters_resources():
    for bad in ({"num_cpus": -1}, {"num_gpus": "x"}, {"num_cpus": True}, {"num_gpus": False}, {"max_in_flight": -1},
                {"max_in_flight": 2.5}, {"max_in_flight": True}, {"num_cpus": float("inf")},
                {"num_gpus": float("inf")}, {"num_cpus": float("nan")}):
        with pytest.raises(ValueError, match="num_cpus must be > 0|max_in_flight must be a positive integer"):
            RayBackend(**bad)
    for bad in ({"num_cpus": 1e-5}, {"num_gpus": 5e-5}):  # (Ray refused them only as the sweep's tasks started)
        with pytest.raises(ValueError, match="num_cpus and num_gpus: Ray counts them in steps of 0.0001"):
            RayBackend(**bad)
    backend = RayBackend(num_cpus=1, num_gpus=1)  # no GPU in the cluster: its tasks would wait for ever
    with pytest.raises(ValueError, match=r"asks Ray for 1 CPU\(s\) and 1 GPU\(s\), but the cluster has 2 CPU\(s\) "
                                         r"and 0 GPU\(s\)"):
        backend._check_resources({"CPU": 2.0}, started=True)
    with pytest.warns(RuntimeWarning, match="the tasks wait until nodes that have them join"):
        backend._check_resources({"CPU": 2.0}, started=False)  # a cluster's autoscaler may add them
    RayBackend(num_cpus=2)._check_resources({"CPU": 2.0, "GPU": 1.0}, started=True)


def test_ray_backend_names_a_dying_training_and_shuts_down_what_it_started():
    ray = pytest.importorskip("ray")
    train, test, maps = roar_inputs()
    lock = threading.Lock()
    unpicklable = lambda a, b, s: 0.5 if lock else 0.0  # noqa: E731 (a lock cannot be pickled)
    with pytest.raises(TypeError):
        roar_kar(train, test, {"random": None}, unpicklable, fractions=(0.2, 0.6), repeats=1, progress=False,
                 backend=RayBackend())
    assert not ray.is_initialized()  # the instance it started is gone
    exits = lambda a, b, s: __import__("os")._exit(3)  # noqa: E731 (defined here: pickled by value for the workers)
    with pytest.raises(RuntimeError, match=r"the Ray worker training roar/random-p0.2-r0 died, on every retry"):
        roar_kar(train, test, {"random": None}, exits, fractions=(0.2, 0.6), repeats=1, progress=False,
                 backend=RayBackend(max_in_flight=1))
    assert not ray.is_initialized()


def test_maps_holding_inf_have_no_threshold_or_noise_measure_either():
    # +Inf or -Inf (an overflowing map) is refused as NaN is: a percentile or a total variation over it is meaningless
    maps = torch.rand(3, 1, 4, 4)
    for value in (float("inf"), float("-inf")):
        broken = maps.clone()
        broken[2, 0, 1, 1] = value
        for method in ("saliency", "rectgrad"):
            with pytest.raises(ValueError, match=rf"the {method} maps of image\(s\) \[2\] hold NaN or Inf"):
                final_threshold(broken, method)


def test_map_batches_refuse_inputs_without_a_batch_dimension():
    # a single flat input (N,) is no batch of inputs (N, ...): refused by name before any map is computed
    model = nn.Sequential(nn.Linear(4, 2))
    for inputs in (torch.rand(4), torch.tensor(1.0)):
        with pytest.raises(ValueError, match=r"inputs must be a tensor of the model's inputs \(N, ...\), N >= 1, got "
                                             rf"torch.float32 tensor of shape {re.escape(str(tuple(inputs.shape)))}"):
            compute_maps(model, inputs, "saliency", None)


def test_ray_backend_refuses_no_cpus():
    with pytest.raises(ValueError, match="num_cpus must be > 0 and num_gpus >= 0, both finite, got 0 and 0"):
        RayBackend(num_cpus=0)


def test_a_ray_task_trains_on_its_threads_with_flushed_denormals_and_returns_a_float(monkeypatch):
    """The task a Ray worker runs: torch on ``threads`` threads and subnormals flushed (as rectgrad reproduce does),
    the job's own seed, a one-element tensor accuracy as a float, and the training's time."""
    from rectgrad.evaluation.roar import _train_task

    train, test, _ = roar_inputs()
    seen = {}

    def train_fn(a, b, seed):
        seen.update(threads=torch.get_num_threads(), flushed=(torch.tensor([1e-40]) * 1.0).item() == 0.0, seed=seed,
                    sets=(a, b))
        return torch.tensor([0.75])

    threads = torch.get_num_threads()
    try:
        accuracy, seconds = _train_task(train_fn, train, test, 7, 1)
    finally:
        torch.set_num_threads(threads)
        torch.set_flush_denormal(False)
    assert seen == {"threads": 1, "flushed": True, "seed": 7, "sets": (train, test)}
    assert type(accuracy) is float and accuracy == 0.75 and seconds >= 0


class FakeRay:
    """What RayBackend.run uses of Ray, in this process: a task runs when its result is asked for; ``wait`` returns
    the oldest pending task. Records the resources asked for, the objects put, the tasks' arguments and the most tasks
    pending at once."""

    class WorkerCrashedError(Exception):
        pass

    def __init__(self, cpus: float, initialized: bool = False):
        self.cpus, self.initialized, self.started = cpus, initialized, 0
        self.exceptions = type("exceptions", (), {"WorkerCrashedError": self.WorkerCrashedError})
        self.puts, self.tasks, self.pending, self.most_pending, self.cancelled = [], [], [], 0, []

    def is_initialized(self):
        return self.initialized

    def init(self, **options):
        self.initialized, self.started = True, self.started + 1

    def shutdown(self):
        self.initialized = False

    def cluster_resources(self):
        return {"CPU": self.cpus, "GPU": 1.0}

    def remote(self, **resources):
        self.resources = resources

        def task(function):
            def submit(*args):
                ref = object()
                self.tasks.append(args[3:])  # (seed, threads)
                self.pending.append((ref, function, args))
                self.most_pending = max(self.most_pending, len(self.pending))
                return ref
            return type("Task", (), {"remote": staticmethod(submit)})
        return task

    def put(self, value):
        self.puts.append(value)
        return ("put", len(self.puts) - 1)

    def wait(self, refs, num_returns):
        return refs[:1], refs[1:]

    def get(self, ref):
        (_, function, args), = [p for p in self.pending if p[0] is ref]
        self.pending = [p for p in self.pending if p[0] is not ref]
        return function(*(self.puts[a[1]] if isinstance(a, tuple) else a for a in args))

    def cancel(self, ref):
        self.cancelled.append(ref)


def test_ray_backend_runs_each_training_as_a_task_with_its_resources_and_threads(monkeypatch):
    """On a fake Ray: each task asks for num_cpus and num_gpus and runs torch on int(num_cpus) threads, at least one;
    the repeats of a (method, fraction) share one put of its datasets; at most twice the cluster's CPUs (at least 2),
    or max_in_flight, tasks are pending; a Ray started here is shut down, a running one is left running."""
    import sys

    train, test, maps = roar_inputs()
    threads = torch.get_num_threads()
    try:
        for cpus, backend, most, started in ((1, RayBackend(num_cpus=0.5), 2, True),  # (made before Ray is replaced)
                                             (3, RayBackend(num_cpus=2.5, max_in_flight=3), 3, False),
                                             (4, RayBackend(num_cpus=1, num_gpus=0.5), 8, True)):
            ray = FakeRay(cpus, initialized=not started)
            monkeypatch.setitem(sys.modules, "ray", ray)
            result = roar_kar(train, test, maps, Counting(), fractions=(0.2, 0.6), repeats=3, backend=backend,
                              progress=False)
            alone = roar_kar(train, test, maps, Counting(), fractions=(0.2, 0.6), repeats=3, progress=False)
            assert all(np.array_equal(result.accuracies[m], alone.accuracies[m]) for m in maps)
            assert ray.resources == {"num_cpus": backend.num_cpus, "num_gpus": backend.num_gpus}
            assert ray.tasks == [(seed, max(1, int(backend.num_cpus))) for _ in range(4) for seed in range(3)]
            assert len(ray.puts) == 1 + 2 * 4 and ray.most_pending == most  # train_fn, then each pair once
            assert ray.started == int(started) and ray.initialized is not started and not ray.pending
    finally:
        torch.set_num_threads(threads)
        torch.set_flush_denormal(False)


def test_ray_backend_deletes_the_groups_a_local_run_saved_unfinished_once_it_has_trained_them(tmp_path, monkeypatch):
    # Ray trains one model per task and cannot resume a local run's group: its trainings start over, said at once,
    # and its state goes once they are done (a stale file otherwise, and a later local run would not resume it)
    import sys

    from rectgrad.evaluation.roar import _group_checkpoint

    train, test, maps = roar_inputs()
    store, folder = ResultStore(tmp_path / "work", {}), tmp_path / "work" / "roar" / "unfinished"
    saved = [["roar/a-p0.2-r0.json", "roar/a-p0.6-r0.json"], ["roar/random-p0.2-r0.json", "roar/gone-p0.2-r0.json"]]
    for keys in saved:
        state = _group_checkpoint(folder, keys)
        state.parent.mkdir(parents=True, exist_ok=True)
        state.write_bytes(b"state")
        state.with_suffix(".json").write_text(json.dumps(keys))
    backend, ray = RayBackend(), FakeRay(2)  # (made before Ray is replaced: it looks for the real one)
    monkeypatch.setitem(sys.modules, "ray", ray)
    threads = torch.get_num_threads()
    try:
        interrupted = Counting(fail_after=1)
        with pytest.warns(RuntimeWarning, match=f"^2 groups of trainings a local run saved unfinished in "
                                                f"{re.escape(str(folder))} are not resumed on Ray"):
            with pytest.raises(KeyboardInterrupt):  # stopped: the states stay, for a local run to resume
                roar_kar(train, test, maps, interrupted, fractions=(0.2, 0.6), repeats=1, store=store,
                         backend=backend, progress=False)
        assert len(list(folder.iterdir())) == 4
        with pytest.warns(RuntimeWarning, match="^2 groups of trainings"):
            result = roar_kar(train, test, maps, Counting(), fractions=(0.2, 0.6), repeats=1, store=store,
                              backend=backend, progress=False)
    finally:
        torch.set_num_threads(threads)
        torch.set_flush_denormal(False)
    assert all(result.accuracies[m].shape == (1, 2) for m in maps)
    assert list(folder.iterdir()) == []  # neither state nor listing left
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing saved: nothing said
        roar_kar(train, test, maps, Counting(), fractions=(0.2, 0.6), repeats=1, store=store, backend=backend,
                 progress=False)


def test_ray_backend_gives_back_the_stop_handlers_ray_replaced(monkeypatch):
    # Ray installs its own SIGTERM handler at init and leaves it after shutdown: a later Ctrl-C / SIGTERM in this
    # Python session (a local sweep's, a training's) would reach Ray's handler, not the one set before
    import signal
    import sys

    train, test, maps = roar_inputs()
    backend, ray = RayBackend(), FakeRay(2)

    def init(**options):
        ray.initialized = True
        signal.signal(signal.SIGTERM, lambda *args: None)
        signal.signal(signal.SIGINT, lambda *args: None)

    monkeypatch.setattr(ray, "init", init)
    monkeypatch.setitem(sys.modules, "ray", ray)
    before = {stop: signal.getsignal(stop) for stop in (signal.SIGINT, signal.SIGTERM)}
    threads = torch.get_num_threads()
    try:
        roar_kar(train, test, maps, Counting(), fractions=(0.2,), repeats=1, backend=backend, progress=False)
        assert {stop: signal.getsignal(stop) for stop in before} == before
    finally:
        for stop, handler in before.items():
            signal.signal(stop, handler)
        torch.set_num_threads(threads)
        torch.set_flush_denormal(False)


def test_ray_backend_cancels_the_pending_tasks_when_a_training_fails(monkeypatch):
    import sys

    train, test, maps = roar_inputs()
    backend, ray = RayBackend(), FakeRay(2)  # (made before Ray is replaced: it looks for the real one)
    monkeypatch.setitem(sys.modules, "ray", ray)
    threads = torch.get_num_threads()
    try:
        with pytest.raises(ValueError, match=r"train_fn returned 87.5 for roar/a-p0.2-r0"):
            roar_kar(train, test, maps, lambda a, b, seed: 87.5, fractions=(0.2, 0.6), repeats=1,
                     backend=backend, progress=False)
    finally:
        torch.set_num_threads(threads)
        torch.set_flush_denormal(False)
    assert len(ray.cancelled) == 3 and not ray.initialized  # the other 3 of the first 4 pending, Ray shut down


# ---------------------------------------------------------------- mutation round: properties no test above pinned

def test_feature_map_occlusion_refuses_images_with_a_single_nan_or_inf_value():
    model = SumModel(4)
    images, masks, labels = torch.ones(2, 1, 4, 4), torch.zeros(2, 4, 4, dtype=torch.bool), torch.tensor([0, 1])
    for bad in (float("nan"), float("inf"), -float("inf")):
        one = images.clone()
        one[1, 0, 2, 3] = bad  # one value of the second image
        with pytest.raises(ValueError, match="images contain NaN or Inf"):
            feature_map_occlusion(model, model[1], one, masks, labels, steps=2, orders=1)


def test_a_hand_made_result_refuses_rows_of_another_number_of_fractions():
    # rows of 3 accuracies for 2 fractions: no fraction to pair the third with, whichever measure is asked for
    result = RoarKarResult(False, (0.1, 0.9), {"m": np.array([[0.8, 0.6, 0.2], [0.6, 0.4, 0.4]])})
    for measure in (result.score, result.score_std, result.accuracy_std):
        with pytest.raises(ValueError, match=r"accuracies\['m'\] must be one row per repeat of 2 accuracies \(one per "
                                             r"fraction\), got shape \(2, 3\)"):
            measure("m")


def test_maps_of_another_width_are_refused_before_any_training():
    train, test, _ = roar_inputs()  # 8x8 images
    for train_maps, test_maps in (((8, 1, 8, 9), (4, 1, 8, 8)), ((8, 1, 8, 8), (4, 1, 8, 7))):
        fn = Counting()
        with pytest.raises(ValueError, match=r"do not match the \d images of size 8x8"):
            roar_kar(train, test, {"a": (torch.randn(train_maps), torch.randn(test_maps))}, fn, fractions=(0.5,),
                     repeats=1, progress=False)
        assert fn.calls == []
    with pytest.raises(ValueError, match=r"do not match the 4 images of size 8x8"):
        occlude_dataset(test, torch.randn(4, 1, 8, 9), 0.5, keep=False, fill=[128.0])


def test_fractions_closer_than_two_decimals_keep_their_own_accuracies_and_files(tmp_path):
    train, test, maps = roar_inputs()
    answers = iter([0.25, 0.75])
    store = ResultStore(tmp_path / "work", {"experiment": "toy"})
    result = roar_kar(train, test, {"a": maps["a"]}, lambda train, test, seed: next(answers),
                      fractions=(0.501, 0.502), repeats=1, store=store, progress=False)
    assert result.accuracies["a"].tolist() == [[0.25, 0.75]]
    assert sorted(p.name for p in (tmp_path / "work" / "roar").glob("*.json")) == ["a-p0.501-r0.json",
                                                                                   "a-p0.502-r0.json"]


def test_the_repeats_train_with_seeds_0_to_repeats_minus_1_whatever_the_noise_seed():
    train, test, maps = roar_inputs()
    fn = Counting()
    roar_kar(train, test, {"a": maps["a"]}, fn, fractions=(0.5,), repeats=3, seed=7, progress=False)
    assert fn.calls == [0, 1, 2]


def test_conv_activations_takes_the_remaining_kinds_of_activation():
    # one convolution before each: RReLU, CELU, SELU, Hardswish, Hardtanh, Softplus, Tanh and Sigmoid are taken too
    acts = [nn.RReLU(), nn.CELU(), nn.SELU(), nn.Hardswish(), nn.Hardtanh(), nn.Softplus(), nn.Tanh(), nn.Sigmoid()]
    model = nn.Sequential(*[m for act in acts for m in (nn.Conv2d(1, 1, 1), act)])
    assert conv_activations(model) == {f"conv{i + 1}": act for i, act in enumerate(acts)}


def test_accuracies_of_other_number_types_are_kept_as_a_float64_array():
    # a Fraction, Decimal or float32 accuracy is kept as the float it is: an object array of Decimals would refuse
    # arithmetic with floats, a float32 one round the mean over repeats
    train, test, maps = roar_inputs()
    for accuracy in (Fraction(1, 3), Decimal("0.25"), np.float32(0.1)):
        result = roar_kar(train, test, {"a": maps["a"]}, lambda a, b, seed: accuracy, fractions=(0.2, 0.6),
                          repeats=1, progress=False)
        assert result.accuracies["a"].dtype == np.float64
        assert result.accuracies["a"].tolist() == [[float(accuracy)] * 2]


def test_train_fn_many_returning_more_accuracies_than_trainings_is_refused():
    train, test, maps = roar_inputs()

    class Long(Counting):
        def many(self, jobs):
            return [self(*job) for job in jobs] + [0.5]

    with pytest.raises(ValueError, match="train_fn.many returned 4 accuracies for 3 trainings"):
        roar_kar(train, test, {"a": maps["a"]}, Long(), fractions=(0.2, 0.6), repeats=2,
                 backend=LocalBackend(group=3), progress=False)


def test_occlude_dataset_ranks_with_the_tie_noise_it_is_given():
    # maps 1e-4 apart against noise of that size: the noise's scale matters. ROAR at 0.5 replaces (with fill 128, a
    # value the toy images never hold) the 32 top pixels of channel sum + tie_noise * randn((N, H*W)) of the generator
    dataset = toy_dataset()
    maps = torch.arange(6 * 64, dtype=torch.float32).view(6, 1, 8, 8) * 1e-4
    for tie_noise in (1e-4, 5e-4):
        noise = torch.randn(6, 64, generator=torch.Generator().manual_seed(3))
        noisy = maps.flatten(1) + tie_noise * noise
        expected = torch.zeros(6, 64, dtype=torch.bool)
        for i in range(6):
            expected[i, sorted(range(64), key=lambda j: -noisy[i, j].item())[:32]] = True
        occluded = occlude_dataset(dataset, maps, 0.5, keep=False, fill=[128.0], tie_noise=tie_noise,
                                   generator=torch.Generator().manual_seed(3))
        assert torch.equal((occluded.images[:, 0] == 128).flatten(1), expected)


def test_background_at_is_background_from_half_of_the_covered_pixels_on():
    # 4x4 mask to 2x2: each unit covers a 2x2 block; blocks with 1, 2, 3 and 0 of their 4 pixels background
    masks = torch.ones(1, 4, 4, dtype=torch.bool)
    masks[0, 0, 0] = False  # top-left: 1/4, object
    masks[0, 0, 2:] = False  # top-right: 2/4, background (the threshold itself)
    masks[0, 2:, :2] = False
    masks[0, 3, 1] = True  # bottom-left: 3/4, background; bottom-right all object
    assert background_at(masks, (2, 2)).tolist() == [[[False, True], [True, False]]]
