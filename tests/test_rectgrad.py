"""RectGrad, Guided Backprop and Deconvolution on the engine: exactness, invariances, bad input."""
import copy
import functools
import math
import re
import sys
import threading
import time
import warnings
from contextlib import nullcontext
from fractions import Fraction

import captum.attr as captum_attr
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from captum.metrics import infidelity, sensitivity_max
from torch import nn

from naive import naive_rectgrad

import rectgrad
from rectgrad import AttributionWarning, Deconvolution, GuidedBackprop, PaperCNN, RectGrad, explain
from rectgrad.engine import Options, Rule, RuleMode, rule_gradients


@pytest.fixture(scope="module")
def cnn():
    torch.manual_seed(1)
    return PaperCNN().double().eval()


@pytest.fixture(scope="module")
def batch(cnn):
    torch.manual_seed(2)
    x = torch.randn(6, 3, 32, 32, dtype=torch.float64)
    return x, cnn(x).argmax(1)


def test_claim2_tau0_is_guided_backprop_times_input(cnn, batch):
    x, y = batch
    ours = RectGrad(cnn).attribute(x, target=y, tau=0.0)
    guided = captum_attr.GuidedBackprop(cnn).attribute(x, target=y)
    torch.testing.assert_close(ours, (guided * x).clamp(min=0), rtol=1e-10, atol=1e-12)
    assert (ours > 0).any()


def test_claim2_holds_on_relu6_networks_not_at_activations_going_negative():
    torch.manual_seed(0)
    x = torch.randn(4, 3, 8, 8, dtype=torch.float64)
    for activation, holds in ((nn.ReLU6(), True), (nn.GELU(), False), (nn.LeakyReLU(0.1), False)):
        model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), activation, nn.Flatten(), nn.Linear(512, 3)).double()
        with torch.no_grad():
            model[0].weight.mul_(8)  # some ReLU6 units saturate at 6
        ours = RectGrad(model.eval()).attribute(x, target=1, tau=0.0, final_threshold=False)
        guided = GuidedBackprop(model).attribute(x, target=1) * x
        assert torch.allclose(ours, guided, rtol=1e-12, atol=1e-14) is holds, activation  # a * R > 0 vs R > 0


def test_claim1_deconvolution(cnn, batch):
    x, y = batch
    ours = Deconvolution(cnn).attribute(x, target=y)
    torch.testing.assert_close(ours, captum_attr.Deconvolution(cnn).attribute(x, target=y), rtol=1e-10, atol=1e-12)
    # Claim 1: Deconv x input (thresholded at 0) is RectGrad with the rule 1[(a + eps) R > 0] R
    via_rule = naive_rectgrad(cnn, x, y, tau=0.0, score="pr4")  # (a + eps) > 0 so the test is on R alone
    torch.testing.assert_close((ours * x).clamp(min=0), via_rule, rtol=1e-10, atol=1e-12)


def test_deconvolution_ignores_the_forward_pass_at_every_activation():
    # Eq. 3 (docs/engine.md): 1[R > 0] R whatever the activation and its input; here x = -1 (LeakyReLU slope 0.1,
    # GELU's slope about -0.08) and x = 10 (ReLU6 saturated, slope 0): R = +2 passes whole, R = -3 not at all
    for activation, x in ((nn.LeakyReLU(0.1), -1.0), (nn.GELU(), -1.0), (nn.ReLU6(), 10.0)):
        model = nn.Sequential(nn.Linear(1, 1, bias=False), activation, nn.Linear(1, 2, bias=False)).double()
        with torch.no_grad():
            model[0].weight.fill_(1.0), model[2].weight.copy_(torch.tensor([[2.0], [-3.0]]))
        inputs = torch.full((2, 1), x, dtype=torch.float64)
        maps = Deconvolution(model).attribute(inputs, target=torch.tensor([0, 1]))
        assert maps.flatten().tolist() == [2.0, 0.0], activation


def test_guided_backprop_matches_captum(cnn, batch):
    x, y = batch
    torch.testing.assert_close(GuidedBackprop(cnn).attribute(x, target=y),
                               captum_attr.GuidedBackprop(cnn).attribute(x, target=y), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("q", [0.0, 20.0, 80.0, 90.0, 98.0, 99.5])
def test_rectgrad_matches_naive_percentile_implementation(cnn, batch, q):
    x, y = batch
    ours = RectGrad(cnn).attribute(x, target=y, q=q, final_threshold=False)
    torch.testing.assert_close(ours, naive_rectgrad(cnn, x, y, q=q, final_threshold=False), rtol=1e-9, atol=1e-12)


def test_rectgrad_without_a_threshold_uses_the_papers_q_98(cnn, batch):
    x, y = batch
    torch.testing.assert_close(RectGrad(cnn).attribute(x, target=y), naive_rectgrad(cnn, x, y, q=98.0),
                               rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("rule", ["pr2", "pr3", "pr4"])
def test_propagation_rules_match_naive(cnn, batch, rule):
    x, y = batch
    ours = RectGrad(cnn).attribute(x, target=y, q=90.0, rule=rule)
    torch.testing.assert_close(ours, naive_rectgrad(cnn, x, y, q=90.0, score=rule), rtol=1e-9, atol=1e-12)


def test_padding_trick_and_prr_match_naive(cnn, batch):
    x, y = batch
    for kwargs in ({"padding_trick": True}, {"prr": True}, {"padding_trick": True, "prr": True}):
        ours = RectGrad(cnn).attribute(x, target=y, q=98.0, **kwargs)
        torch.testing.assert_close(ours, naive_rectgrad(cnn, x, y, q=98.0, **kwargs), rtol=1e-9, atol=1e-12)
        assert not torch.equal(ours, RectGrad(cnn).attribute(x, target=y, q=98.0))


def test_prr_gives_a_window_of_zeros_no_attribution_not_nan():
    # Listing 3's + 1e-10: a window whose inputs are all 0 (black pixels pooled straight from the image) passes
    # 0 / (0 + 1e-10) * R = 0 to them, not 0 / 0; the other windows share R in proportion to their inputs
    torch.manual_seed(0)
    model = nn.Sequential(nn.MaxPool2d(2), nn.Conv2d(1, 4, 1), nn.ReLU(), nn.Flatten(), nn.Linear(16, 2)).double()
    x = torch.rand(3, 1, 4, 4, dtype=torch.float64)
    x[:, :, :2, :2] = 0
    y = torch.tensor([0, 1, 1])
    ours = RectGrad(model).attribute(x, target=y, tau=0.0, prr=True, final_threshold=False)
    assert torch.isfinite(ours).all() and (ours[:, :, :2, :2] == 0).all() and (ours != 0).any()
    torch.testing.assert_close(ours, naive_rectgrad(model, x, y, tau=0.0, prr=True, final_threshold=False),
                               rtol=1e-9, atol=1e-12)
    # in float16 too: the 1e-10 vanishes in float16 (0 / 0), so PRR divides in float32
    half = RectGrad(model.half()).attribute(x.half(), target=y, tau=0.0, prr=True, final_threshold=False)
    assert torch.isfinite(half).all() and (half[:, :, :2, :2] == 0).all()
    torch.testing.assert_close(half.double(), ours, rtol=1e-2, atol=1e-2)


def test_padding_trick_zeroes_every_same_convolution_as_listing_2():
    # Listing 2 zeroes the border of every SAME convolution along both sides: 1x1 ones (SAME and VALID alike in
    # PyTorch, SAME in the reference's TF-slim models) and 1x3 / 3x1 ones padding one side (Inception's), not VALID
    # ones; a 1-pixel side has no border (a 1x1 convolution on pooled features, an SE block's, passes)
    torch.manual_seed(8)
    model = nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 1), nn.ReLU(),
                          nn.Conv2d(4, 4, (1, 3), padding=(0, 1)), nn.ReLU(), nn.Conv2d(4, 4, (3, 1), padding=(1, 0)),
                          nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Conv2d(6, 32, 1), nn.ReLU(), nn.Flatten(), nn.Linear(32, 3)).double()
    x, y = torch.randn(4, 2, 10, 10, dtype=torch.float64), torch.tensor([0, 1, 2, 0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no side of 2 pixels: no warning
        for kwargs in ({"padding_trick": True}, {"padding_trick": True, "prr": True}):
            ours = RectGrad(model).attribute(x, target=y, q=80.0, **kwargs)
            torch.testing.assert_close(ours, naive_rectgrad(model, x, y, q=80.0, **kwargs), rtol=1e-9, atol=1e-12)
        assert not torch.equal(ours, RectGrad(model).attribute(x, target=y, q=80.0, prr=kwargs.get("prr", False)))
    valid = copy.deepcopy(model)
    valid[2].padding = "valid"  # declared VALID: left alone
    left_alone = RectGrad(valid).attribute(x, target=y, q=80.0, padding_trick=True)
    torch.testing.assert_close(left_alone, naive_rectgrad(valid, x, y, q=80.0, padding_trick=True), rtol=1e-9,
                               atol=1e-12)
    assert not torch.equal(left_alone, RectGrad(model).attribute(x, target=y, q=80.0, padding_trick=True))


class SeparatelyPadded(nn.Module):
    """The paper CNN's convolutions with TensorFlow-style "same" padding done first by ``ZeroPad2d`` /
    ``F.pad`` (as EfficientNet ports do), then ``padding=0``; the same weights as ``cnn``."""

    def __init__(self, cnn: PaperCNN, pad_value=0.0, pad_mode="constant"):
        super().__init__()
        self.cnn, self.pad_value, self.pad_mode = cnn, pad_value, pad_mode

    def forward(self, x):
        for i, layer in enumerate(self.cnn.features):
            if isinstance(layer, nn.Conv2d):
                x = (nn.ZeroPad2d(1)(x) if i == 0 and self.pad_mode == "constant" and self.pad_value == 0
                     else F.pad(x, (1, 1, 1, 1), mode=self.pad_mode, value=self.pad_value
                                if self.pad_mode == "constant" else None))
                x = F.conv2d(x, layer.weight, layer.bias)
            else:
                x = layer(x)
        return self.cnn.classifier(x)


def test_padding_trick_reaches_convs_padded_by_a_separate_zero_pad(cnn, batch):
    x, y = batch
    same = RectGrad(cnn).attribute(x, target=y, q=98.0, padding_trick=True)
    separate = RectGrad(SeparatelyPadded(cnn)).attribute(x, target=y, q=98.0, padding_trick=True)
    torch.testing.assert_close(separate, same, rtol=1e-9, atol=1e-12)
    plain = RectGrad(cnn).attribute(x, target=y, q=98.0)
    for other in (SeparatelyPadded(cnn, pad_value=0.5), SeparatelyPadded(cnn, pad_mode="reflect")):
        # not zero padding: not the trick's business (maps of another network, so only compare to its own)
        with_trick = RectGrad(other).attribute(x, target=y, q=98.0, padding_trick=True)
        assert torch.equal(with_trick, RectGrad(other).attribute(x, target=y, q=98.0))
    assert not torch.equal(same, plain)


class OneSidedPad(nn.Module):
    """TensorFlow's "same" padding of an even kernel, one side only: F.pad(x, pad), then a 2 x 2 convolution of ones
    with ``padding=0``, a ReLU and a linear layer summing the 4 x 4 map (class 0)."""

    def __init__(self, pad):
        super().__init__()
        self.pad, self.conv, self.fc = pad, nn.Conv2d(1, 1, 2, bias=False), nn.Linear(16, 2, bias=False)
        with torch.no_grad():
            self.conv.weight.fill_(1.0), self.fc.weight.zero_(), self.fc.weight[0].fill_(1.0)

    def forward(self, x):
        return self.fc(F.relu(self.conv(F.pad(x, self.pad))).flatten(1))


def test_padding_trick_reaches_convs_padded_on_one_side_by_a_separate_zero_pad():
    # The trick zeroes the conv output's border: only outputs (1..2, 1..2) pass R = 1; input pixel i of a row
    # reaches outputs i - 1, i (padded after) or i, i + 1 (padded before): counts r[i] of those inside, map r r^T
    x = torch.ones(1, 1, 4, 4, dtype=torch.float64)
    for pad, r in (((0, 1, 0, 1), [0.0, 1, 2, 1]), ((1, 0, 1, 0), [1.0, 2, 1, 0])):
        maps = RectGrad(OneSidedPad(pad).double()).attribute(x, target=0, tau=0.0, padding_trick=True)
        torch.testing.assert_close(maps[0, 0], torch.outer(torch.tensor(r), torch.tensor(r)).double())


class ValidConvs(nn.Module):
    """Convolutions the padding trick leaves alone: a 1 x 3 kernel without padding, and one fed by an ``F.pad`` that
    pads the channels only (a CIFAR ResNet's "option A" shortcut pads them so)."""

    def __init__(self):
        super().__init__()
        self.wide, self.mix, self.fc = nn.Conv2d(2, 3, (1, 3)), nn.Conv2d(5, 4, 3), nn.Linear(4 * 4 * 2, 3)

    def forward(self, x):
        h = F.relu(self.wide(x))
        return self.fc(F.relu(self.mix(F.pad(h, (0, 0, 0, 0, 1, 1)))).flatten(1))


def test_padding_trick_leaves_valid_convs_alone():
    torch.manual_seed(5)
    model, x = ValidConvs().double(), torch.randn(3, 2, 6, 6, dtype=torch.float64)
    for options in ({"q": 60.0}, {"tau": 0.0}):
        assert torch.equal(RectGrad(model).attribute(x, target=1, padding_trick=True, **options),
                           RectGrad(model).attribute(x, target=1, **options))


class DiscardedPad(nn.Module):
    """A VALID convolution of a tensor made just after a zero-padded ``F.pad`` output was dropped: CPython gives the new
    tensor the freed pad output's address, so its ``id``; ``reused`` records whether it did."""

    def __init__(self):
        super().__init__()
        self.first, self.conv, self.fc = nn.Conv2d(2, 3, 3), nn.Conv2d(3, 4, 3), nn.Linear(4 * 4 * 4, 3)
        self.reused = []

    def forward(self, x):
        h = F.relu(self.first(x))
        freed = id(F.pad(h, (1, 1, 1, 1)))  # dropped at once
        with torch._C.DisableTorchFunction():  # made unseen by the engine (as by a C++ extension): the next object
            g = h * 1.0  # allocated, so it gets the freed address; not the pad's output, whatever its id
        self.reused.append(id(g) == freed)
        return self.fc(F.relu(self.conv(g)).flatten(1))


def test_padding_trick_takes_no_tensor_for_a_freed_pad_output_of_the_same_id():
    # the trick remembers zero-padded F.pad outputs by id; a later tensor given the id of one that died is no pad
    # output, so the VALID convs of this model keep their border: the trick changes nothing
    torch.manual_seed(5)
    model, x = DiscardedPad().double(), torch.randn(2, 2, 8, 8, dtype=torch.float64)
    expected = RectGrad(model).attribute(x, target=1, q=60.0)
    model.reused.clear()
    assert torch.equal(RectGrad(model).attribute(x, target=1, q=60.0, padding_trick=True), expected)
    assert any(model.reused)  # (the id was reused: the test can fail)


class PerSampleConv(nn.Module):
    """A SAME convolution called on each sample without its batch dimension, (C, H, W), as a loop over samples does."""

    def __init__(self, batched: nn.Module):
        super().__init__()
        self.batched = batched

    def forward(self, x):
        conv, *rest = self.batched
        return nn.Sequential(*rest)(torch.stack([conv(sample) for sample in x]))


def test_padding_trick_on_a_convolution_of_an_unbatched_sample():
    torch.manual_seed(5)
    batched = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 5 * 6, 3)).double()
    x = torch.randn(3, 2, 5, 6, dtype=torch.float64)
    expected = RectGrad(batched).attribute(x, target=1, q=60.0, padding_trick=True)
    assert not torch.equal(expected, RectGrad(batched).attribute(x, target=1, q=60.0))
    assert torch.equal(RectGrad(PerSampleConv(batched)).attribute(x, target=1, q=60.0, padding_trick=True), expected)


def test_padding_trick_reaches_a_conv_declared_same():
    torch.manual_seed(5)
    padded = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 5 * 6, 3)).double()
    declared = copy.deepcopy(padded)
    declared[0].padding = "same"
    x = torch.randn(3, 2, 5, 6, dtype=torch.float64)
    expected = RectGrad(padded).attribute(x, target=1, q=60.0, padding_trick=True)
    assert not torch.equal(expected, RectGrad(padded).attribute(x, target=1, q=60.0))
    assert torch.equal(RectGrad(declared).attribute(x, target=1, q=60.0, padding_trick=True), expected)
    # the ATen overloads an exported program calls: conv2d.padding (padding "same"), conv2d.default (integers)
    conv, rest = padded[0], padded[1:]
    for aten, padding in ((torch.ops.aten.conv2d.padding, "same"), (torch.ops.aten.conv2d.default, [1, 1])):
        def exported(t, aten=aten, padding=padding):
            return rest(aten(t, conv.weight, conv.bias, [1, 1], padding, [1, 1], 1))

        assert torch.equal(RectGrad(exported).attribute(x, target=1, q=60.0, padding_trick=True), expected)


@pytest.mark.parametrize("dims", [1, 3])
def test_padding_trick_reaches_the_aten_convolutions_and_pads_of_exported_programs(dims):
    # aten.conv1d / aten.conv3d and aten.pad / constant_pad_nd, as an exported program calls them, are F.conv1d /
    # F.conv3d and F.pad: the trick zeroes the border of a zero-padded conv's output whichever is called
    torch.manual_seed(5)
    conv = (nn.Conv1d, nn.Conv3d)[dims == 3](2, 3, 3).double()
    fc = nn.Linear(3 * 4 ** dims, 2).double()
    functional, aten = (F.conv1d, F.conv3d)[dims == 3], (torch.ops.aten.conv1d, torch.ops.aten.conv3d)[dims == 3]

    def forward(t, conv_call, pad_call, separate):
        padded = pad_call(t, [1, 1] * dims) if separate else t
        return fc(torch.relu(conv_call(padded, conv.weight, conv.bias, [1] * dims, [0 if separate else 1] * dims))
                  .flatten(1))

    x = torch.randn(3, 2, *[4] * dims, dtype=torch.float64)
    for separate in (False, True):  # "same" by the conv's padding, or by a separate zero pad
        plain = functools.partial(forward, conv_call=functional, pad_call=F.pad, separate=separate)
        expected = RectGrad(plain).attribute(x, target=1, q=60.0, padding_trick=True)
        assert not torch.equal(expected, RectGrad(plain).attribute(x, target=1, q=60.0))
        for pad in (torch.ops.aten.pad, torch.ops.aten.constant_pad_nd):  # (its value 0 by default)
            exported = functools.partial(forward, conv_call=aten, pad_call=pad, separate=separate)
            assert torch.equal(RectGrad(exported).attribute(x, target=1, q=60.0, padding_trick=True), expected)


def test_prr_on_a_ceil_mode_max_pool_is_the_pool_of_a_minus_infinity_padded_map():
    # MaxPool2d(2, ceil_mode=True) over 5 x 5 = MaxPool2d(2) over the map padded to 6 x 6 with -inf (PRR's padding)
    torch.manual_seed(5)
    conv, fc = nn.Conv2d(2, 3, 3, padding=1).double(), nn.Linear(3 * 3 * 3, 3).double()
    ceil = nn.Sequential(conv, nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True), nn.Flatten(), fc)
    padded = nn.Sequential(conv, nn.ReLU(), nn.ZeroPad2d(0), nn.Flatten(), fc)
    padded[2] = _Lambda(lambda h: F.max_pool2d(F.pad(h, (0, 1, 0, 1), value=float("-inf")), 2))
    x = torch.randn(3, 2, 5, 5, dtype=torch.float64)
    expected = RectGrad(padded).attribute(x, target=1, q=60.0, prr=True)
    assert not torch.allclose(expected, RectGrad(padded).attribute(x, target=1, q=60.0))
    torch.testing.assert_close(RectGrad(ceil).attribute(x, target=1, q=60.0, prr=True), expected, rtol=1e-8, atol=0)


class _Lambda(nn.Module):
    def __init__(self, function):
        super().__init__()
        self.function = function

    def forward(self, x):
        return self.function(x)


def _same_weights(source: nn.Module, target: nn.Module, reshape) -> nn.Module:
    with torch.no_grad():
        for (_, a), (_, b) in zip(source.named_parameters(), target.named_parameters()):
            b.copy_(reshape(a) if a.dim() > 2 else a)
    return target


def test_padding_trick_and_prr_in_1d_and_3d_equal_their_2d_counterparts():
    # Conv1d / MaxPool1d / AdaptiveMaxPool1d over L are Conv2d / MaxPool2d / AdaptiveMaxPool2d over a 1 x L image;
    # the 3d ones with a depth-1 kernel over a 1 x H x W volume are the 2d ones over H x W (2d: naive-checked)
    torch.manual_seed(3)

    def net(conv, pool, adaptive, kernel, padding, window, out, features):
        return nn.Sequential(conv(2, 4, kernel, padding=padding), nn.ReLU(), pool(window), conv(4, 4, kernel,
                             padding=padding), nn.ReLU(), adaptive(out), nn.Flatten(), nn.Linear(features, 3)).double()
    one_d = net(nn.Conv1d, nn.MaxPool1d, nn.AdaptiveMaxPool1d, 3, 1, 2, 3, 12)
    flat = _same_weights(one_d, net(nn.Conv2d, nn.MaxPool2d, nn.AdaptiveMaxPool2d, (1, 3), (0, 1), (1, 2), (1, 3),
                                    12), lambda w: w[:, :, None])
    two_d = net(nn.Conv2d, nn.MaxPool2d, nn.AdaptiveMaxPool2d, 3, 1, 2, 2, 16)
    three_d = _same_weights(two_d, net(nn.Conv3d, nn.MaxPool3d, nn.AdaptiveMaxPool3d, (1, 3, 3), (0, 1, 1),
                                       (1, 2, 2), (1, 2, 2), 16), lambda w: w[:, :, None])
    fixed_windows = copy.deepcopy(two_d)
    fixed_windows[5] = nn.MaxPool2d(3)  # = AdaptiveMaxPool2d(2) over the 6 x 6 maps
    x1, x2 = torch.randn(5, 2, 24, dtype=torch.float64), torch.randn(5, 2, 12, 12, dtype=torch.float64)
    for kwargs in ({"padding_trick": True}, {"prr": True}, {"padding_trick": True, "prr": True}):
        ours = RectGrad(one_d).attribute(x1, target=0, q=80.0, **kwargs)
        torch.testing.assert_close(ours, RectGrad(flat).attribute(x1[:, :, None], target=0, q=80.0, **kwargs)[:, :, 0],
                                   rtol=1e-9, atol=1e-12)
        assert not torch.equal(ours, RectGrad(one_d).attribute(x1, target=0, q=80.0))
        ours = RectGrad(three_d).attribute(x2[:, :, None], target=0, q=80.0, **kwargs)[:, :, 0]
        torch.testing.assert_close(ours, RectGrad(two_d).attribute(x2, target=0, q=80.0, **kwargs),
                                   rtol=1e-9, atol=1e-12)
        assert not torch.equal(ours, RectGrad(two_d).attribute(x2, target=0, q=80.0))
        torch.testing.assert_close(RectGrad(fixed_windows).attribute(x2, target=0, q=80.0, **kwargs), ours,
                                   rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("separate_pad", [False, True])
def test_padding_trick_zeroes_the_border_along_every_dimension_of_a_3d_conv(separate_pad):
    torch.manual_seed(4)
    weight, bias = torch.rand(1, 1, 3, 3, 3, dtype=torch.float64), torch.ones(1, dtype=torch.float64)

    class Volume(nn.Module):  # positive input, weights and bias: every ReLU unit is on and passes at tau = -1e9
        def forward(self, x):
            z = (F.conv3d(F.pad(x, (1,) * 6), weight, bias) if separate_pad
                 else F.conv3d(x, weight, bias, padding=1))
            return torch.cat([F.relu(z).flatten(1).sum(1, keepdim=True), torch.zeros(len(x), 1)], 1)

    x = torch.rand(2, 1, 4, 5, 6, dtype=torch.float64)
    interior = torch.zeros(2, 1, 4, 5, 6, dtype=torch.float64)
    interior[:, :, 1:-1, 1:-1, 1:-1] = 1  # the output gradient with its border zeroed (by hand)
    expected = x * F.conv_transpose3d(interior, weight, padding=1)
    ours = RectGrad(Volume()).attribute(x, target=0, tau=-1e9, padding_trick=True)
    torch.testing.assert_close(ours, expected, rtol=1e-12, atol=1e-12)


def test_padding_trick_on_a_feature_map_it_covers_whole_is_a_warning():
    def net(side):
        torch.manual_seed(6)
        return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 8, 3, padding=1),
                             nn.ReLU(), nn.Flatten(), nn.Linear(8 * (side // 2) ** 2, 3))

    with (pytest.warns(AttributionWarning, match="all zero"),
          pytest.warns(AttributionWarning, match=r"zeroes the whole gradient of a \(2, 2\) convolution output")):
        tiny = RectGrad(net(4)).attribute(torch.randn(2, 3, 4, 4), target=0, q=50.0, padding_trick=True)
    assert not tiny.any()
    flat = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 2 * 6, 3))
    with (pytest.warns(AttributionWarning, match="all zero"),
          pytest.warns(AttributionWarning, match=r"zeroes the whole gradient of a \(2, 6\) convolution output")):
        assert not RectGrad(flat).attribute(torch.randn(2, 3, 2, 6), target=0, q=50.0, padding_trick=True).any()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 4 x 4 maps keep an inside: no warning
        assert RectGrad(net(8)).attribute(torch.randn(2, 3, 8, 8), target=0, q=50.0, padding_trick=True).any()


def test_one_filter_silences_the_attribution_warnings_alone():
    model = nn.Sequential(nn.Linear(4, 3), nn.Softmax(1))  # probabilities, and no activation the engine knows
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.filterwarnings("ignore", category=rectgrad.AttributionWarning)
        RectGrad(model).attribute(torch.randn(2, 4), target=0)
        warnings.warn("another library's", UserWarning)
    assert [str(w.message) for w in caught] == ["another library's"]
    assert issubclass(rectgrad.AttributionWarning, UserWarning)
    with pytest.warns(rectgrad.AttributionWarning) as shown:
        RectGrad(model).attribute(torch.randn(2, 4), target=0)
    assert sorted(str(w.message)[:20] for w in shown) == ["the model calls no a", "the model's outputs "]


def test_warnings_point_at_the_users_line():
    def places(call):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            call()
        return {(warning.filename, warning.lineno) for warning in caught}

    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 2 * 2, 3))
    x, options, here = torch.randn(2, 3, 2, 2), {"target": 0, "padding_trick": True}, sys._getframe().f_lineno
    # the border warning comes from inside the model's forward pass, the all-zero one from the attribution class
    assert places(lambda: RectGrad(model).attribute(x, **options)) == {(__file__, here + 2)}
    noise = captum_attr.NoiseTunnel(RectGrad(model))
    assert places(lambda: noise.attribute(x, nt_type="smoothgrad", nt_samples=2, **options)) == {(__file__, here + 4)}
    linear = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    assert places(lambda: rectgrad.explain(linear, x, target=0, method="rectgrad")) == {(__file__, here + 6)}


class SamePool(nn.Module):
    """A max-pool with 1 pixel of padding, written three ways: padding=1, timm's MaxPool2dSame (-inf padding), the
    torch-namespace function."""

    def __init__(self, spelling):
        super().__init__()
        self.conv, self.fc, self.spelling = nn.Conv2d(3, 4, 3, padding=1), nn.Linear(4 * 3 * 3, 3), spelling

    def forward(self, x):
        h = F.relu(self.conv(x))
        if self.spelling == "-inf":
            h = F.max_pool2d(F.pad(h, (1, 1, 1, 1), value=float("-inf")), 3, 2)
        else:
            h = (torch.max_pool2d if self.spelling == "torch" else F.max_pool2d)(h, 3, 2, 1)
        return self.fc(h.flatten(1))


def test_prr_takes_minus_infinity_padding_as_padding_and_every_spelling_of_the_pool():
    torch.manual_seed(0)
    nets = {spelling: SamePool(spelling).double() for spelling in ("padding", "-inf", "torch")}
    for net in nets.values():
        net.load_state_dict(nets["padding"].state_dict())
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    expected = RectGrad(nets["padding"]).attribute(x, target=1, q=50.0, prr=True)
    assert not torch.allclose(expected, RectGrad(nets["padding"]).attribute(x, target=1, q=50.0))  # PRR matters
    for spelling in ("-inf", "torch"):
        torch.testing.assert_close(RectGrad(nets[spelling]).attribute(x, target=1, q=50.0, prr=True), expected,
                                   rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("pool, match", [
    (nn.MaxPool2d(2, return_indices=True), "max_pool2d_with_indices"),
    (nn.AdaptiveMaxPool2d(4, return_indices=True), "adaptive_max_pool2d_with_indices"),
    (nn.FractionalMaxPool2d(2, output_size=4), "fractional_max_pool2d"),
    (nn.MaxPool1d(2, dilation=2), "max_pool1d without dilation"),
])
@pytest.mark.filterwarnings("ignore:the attribution.* is all zero:rectgrad.AttributionWarning")  # the first 3 outputs
def test_prr_refuses_max_pools_it_has_no_rule_for(pool, match):
    class Net(nn.Module):
        def forward(self, x):
            y = pool(torch.relu(x).flatten(2) if isinstance(pool, nn.MaxPool1d) else torch.relu(x))
            return (y[0] if isinstance(y, tuple) else y).flatten(1)[:, :3]

    x = torch.randn(2, 1, 8, 8)
    with pytest.raises(ValueError, match=match):
        RectGrad(Net()).attribute(x, target=0, q=50.0, prr=True)
    assert RectGrad(Net()).attribute(x, target=0, q=50.0).shape == x.shape  # without PRR: the plain pool


class Toy(nn.Module):
    """Appendix B.2: f(a) = a1 + 10 a2 - 100 a3 + 1000 a4 + b, with a = relu(x); a second logit is 0."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 2)
        with torch.no_grad():
            self.linear.weight.copy_(torch.tensor([[1.0, 10.0, -100.0, 1000.0], [0.0, 0.0, 0.0, 0.0]]))
            self.linear.bias.copy_(torch.tensor([5.0, 0.0]))

    def forward(self, x):
        return self.linear(torch.relu(x))


@pytest.mark.parametrize("rule, chosen", [("pr1", 1), ("pr2", 2), ("pr3", 0), ("pr4", 3)])
def test_appendix_b2_toy_by_hand(rule, chosen):
    # a = (3, 2, 1, 0), R = (1, 10, -100, 1000); with q = 74 over 4 units one unit passes:
    # PR1 a*R = (3, 20, -100, 0) -> a2; PR2 |a*R| -> a3; PR3 a -> a1; PR4 R -> a4 (paper B.2)
    x = torch.tensor([[3.0, 2.0, 1.0, 0.0]])
    with pytest.warns(AttributionWarning, match="is all zero") if chosen == 3 else nullcontext():  # x4 = 0
        attribution = RectGrad(Toy()).attribute(x, target=0, q=74.0, rule=rule, final_threshold=False)
    expected = torch.zeros(1, 4)
    expected[0, chosen] = x[0, chosen] * torch.tensor([1.0, 10.0, -100.0, 1000.0])[chosen]
    assert torch.equal(attribution, expected)


def test_toy_tau_rules_by_hand():
    x = torch.tensor([[3.0, 2.0, 1.0, 0.0]])
    # tau = 0: scores (3, 20, -100, 0) -> a1, a2 pass; x*R = (3, 20, 0, 0)
    assert torch.equal(RectGrad(Toy()).attribute(x, target=0, tau=0.0), torch.tensor([[3.0, 20.0, 0.0, 0.0]]))
    # tau = -200: every unit passes, even the inactive a4 (Listing 1 replaces the ReLU gate); x4 = 0 though
    r = RectGrad(Toy()).attribute(torch.tensor([[3.0, 2.0, 1.0, -1.0]]), target=0, tau=-200.0, final_threshold=False)
    assert torch.equal(r, torch.tensor([[3.0, 20.0, -100.0, -1000.0]]))


def test_mod_rule_uses_pr1_at_top_and_pr2_below():
    torch.manual_seed(0)  # every sample's map nonzero and unlike PR1's and PR2's alone
    model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3)).double()
    x = torch.randn(4, 5, dtype=torch.float64)
    mod = RectGrad(model).attribute(x, target=0, q=60.0, rule="mod", final_threshold=False)
    # by hand: PR1 at the second ReLU, PR2 at the first
    def above_percentile(scores):
        tau = torch.from_numpy(np.percentile(scores.numpy(), 60, axis=1, method="nearest"))
        return scores > tau[:, None]

    with torch.no_grad():
        a1 = torch.relu(model[0](x))
        a2 = torch.relu(model[2](a1))
        r2 = model[4].weight[0].expand(4, 8)
        r1 = (r2 * above_percentile(a2 * r2)) @ model[2].weight
        expected = x * ((r1 * above_percentile((a1 * r1).abs())) @ model[0].weight)
    torch.testing.assert_close(mod, expected)
    for rule in ("pr1", "pr2"):
        other = RectGrad(model).attribute(x, target=0, q=60.0, rule=rule, final_threshold=False)
        assert ((other - mod).abs().amax(1) > 1e-3).all()


def relu_variant(variant: str) -> nn.Module:
    """The same small CNN with its ReLUs written in different ways."""

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.c2 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
            self.fc = nn.Linear(8 * 8 * 8, 5)
            self.r1, self.r2, self.r3 = nn.ReLU(), nn.ReLU(inplace=True), nn.ReLU()
            self.shared = nn.ReLU(inplace=True)

        def act(self, x, i):
            if variant == "module":
                return (self.r1, self.r3, nn.ReLU())[i](x)
            if variant == "inplace_module":
                return nn.ReLU(inplace=True)(x)
            if variant == "reused":
                return self.shared(x)
            if variant == "functional":
                return F.relu(x)
            if variant == "functional_inplace":
                return F.relu(x, inplace=True)
            if variant == "torch":
                return torch.relu(x)
            if variant == "method":
                return x.relu()
            if variant == "method_inplace":
                x.relu_()
                return x
            if variant == "torch_inplace":
                return torch.relu_(x)
            if variant == "keyword":
                return torch.relu(input=x)
            if variant == "aten":
                return torch.ops.aten.relu(x)
            raise AssertionError(variant)

        def forward(self, x):
            x = F.max_pool2d(self.act(self.c1(x), 0), 2)
            x = F.max_pool2d(self.act(self.c2(x), 1), 2)
            return self.fc(self.act(x.flatten(1), 2))

    torch.manual_seed(4)
    return Net().double().eval()


VARIANTS = ["inplace_module", "reused", "functional", "functional_inplace", "torch", "method", "method_inplace",
            "torch_inplace", "keyword", "aten"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_functional_inplace_and_reused_relus_give_identical_maps(variant):
    x = torch.randn(3, 3, 32, 32, dtype=torch.float64)
    reference = relu_variant("module")
    other = relu_variant(variant)
    for kwargs in ({"q": 95.0}, {"tau": 0.0}, {"q": 98.0, "prr": True, "padding_trick": True}):
        expected = RectGrad(reference).attribute(x, target=1, **kwargs)
        assert (expected != 0).any()
        assert torch.equal(RectGrad(other).attribute(x, target=1, **kwargs), expected), (variant, kwargs)
    assert torch.equal(GuidedBackprop(other).attribute(x, target=1), GuidedBackprop(reference).attribute(x, target=1))


def test_sample_map_does_not_depend_on_batch(cnn, batch):
    x, y = batch
    together = RectGrad(cnn).attribute(x, target=y, q=98.0, prr=True)
    for i in range(len(x)):
        alone = RectGrad(cnn).attribute(x[i:i + 1], target=y[i:i + 1], q=98.0, prr=True)
        torch.testing.assert_close(alone, together[i:i + 1], rtol=1e-9, atol=1e-12)


def test_internal_batch_size_gives_the_same_maps(cnn, batch):
    x, y = batch
    full = RectGrad(cnn).attribute(x, target=y.tolist())
    for target, size in ((y.tolist(), 4), (y.numpy(), np.int64(4)), (y, 5)):
        torch.testing.assert_close(RectGrad(cnn).attribute(x, target=target, internal_batch_size=size), full,
                                   rtol=1e-9, atol=1e-12)
    column = y[:, None]  # one class per sample as a column, cut by the chunks as the samples are
    torch.testing.assert_close(RectGrad(cnn).attribute(x, target=column, internal_batch_size=4), full,
                               rtol=1e-9, atol=1e-12)


class _Scaled(nn.Module):
    """Logits scaled by a per-sample column, a bank shared by the batch (its row mean) and a 0-d temperature."""

    def __init__(self):
        super().__init__()
        self.a, self.relu, self.out = nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 4)  # modules: Captum's hooks

    def forward(self, x, scale, bank=None, temperature=None):
        out = self.out(self.relu(self.a(x) * scale))
        out = out if bank is None else out * bank.mean(0)
        return out if temperature is None else out / temperature


def test_internal_batch_size_cuts_per_sample_arguments_and_passes_shared_ones_whole():
    # 6 samples in chunks of 4 and 2: the (6, 1) scale is cut with them; the (7, 4) bank and the 0-d temperature
    # are the batch's, passed whole to every chunk (Captum, unchunked, is the reference)
    torch.manual_seed(4)
    model = _Scaled().double()
    x = torch.randn(6, 3, dtype=torch.float64)
    scale, bank = torch.rand(6, 1, dtype=torch.float64) + 0.5, torch.rand(7, 4, dtype=torch.float64) + 0.5
    temperature = torch.tensor(2.0, dtype=torch.float64)
    for extra in (scale, (scale,), (scale, bank, temperature)):
        expected = captum_attr.GuidedBackprop(model).attribute(x, target=1, additional_forward_args=extra)
        assert expected.abs().sum(1).gt(0).all()
        for size in (4, 5, None):
            torch.testing.assert_close(GuidedBackprop(model).attribute(
                x, target=1, additional_forward_args=extra, internal_batch_size=size), expected, rtol=1e-12, atol=0)


def test_a_list_additional_argument_is_one_argument_as_in_captum():
    # Captum wraps any non-tuple additional_forward_args, a list included, as one argument
    class Weighted(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.relu, self.out = nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)

        def forward(self, x, weights):
            return self.out(self.relu(self.a(x) * weights[0])) * weights[1]

    torch.manual_seed(6)
    model, x = Weighted().double(), torch.randn(3, 3, dtype=torch.float64)
    expected = captum_attr.GuidedBackprop(model).attribute(x, target=1, additional_forward_args=[2.0, -1.0])
    assert expected.any()
    for size in (None, 2):
        torch.testing.assert_close(GuidedBackprop(model).attribute(
            x, target=1, additional_forward_args=[2.0, -1.0], internal_batch_size=size), expected, rtol=0, atol=0)


@pytest.mark.parametrize("method", [RectGrad, GuidedBackprop])
def test_a_target_of_another_length_is_refused_whatever_internal_batch_size(cnn, batch, method):
    # 3 classes for a batch of 6 cut in chunks of 3 were taken as the classes of each chunk: no error, wrong maps
    x, y = batch
    for target in (y[:3], y[:3].numpy(), y[:2, None]):
        for size in (None, 3, 2, 4):
            with pytest.raises(ValueError, match=f"target has {len(target)} entries but the batch has 6 samples"):
                method(cnn).attribute(x, target=target, internal_batch_size=size)
    for size in (None, 3):  # six entries, but not one class per sample: Captum refuses it as well
        with pytest.raises(ValueError, match=r"one class per sample, shape \(N,\), got shape \(2, 3\)"):
            method(cnn).attribute(x, target=y.reshape(2, 3), internal_batch_size=size)


def test_target_none_explains_the_predicted_class(cnn, batch):
    x, y = batch
    assert torch.equal(RectGrad(cnn).attribute(x), RectGrad(cnn).attribute(x, target=y))
    one = RectGrad(cnn).attribute(x, target=3)
    assert torch.equal(one, RectGrad(cnn).attribute(x, target=torch.full((6,), 3)))
    assert torch.equal(one, RectGrad(cnn).attribute(x, target=torch.tensor(3)))
    assert torch.equal(RectGrad(cnn).attribute(x, target=y.numpy()), RectGrad(cnn).attribute(x, target=y))
    assert torch.equal(one, RectGrad(cnn).attribute(x, target=np.int64(3)))
    labels = [torch.tensor(3)] * 3 + [np.array([3])] * 3  # collected in a loop: one-element tensors and arrays
    assert torch.equal(one, RectGrad(cnn).attribute(x, target=labels))


def snapshot(model):
    return {
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "training": [m.training for m in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "attributes": [sorted(vars(m)) for m in model.modules()],
    }


def assert_untouched(model, before):
    after = snapshot(model)
    assert after["training"] == before["training"]
    assert after["requires_grad"] == before["requires_grad"]
    assert after["attributes"] == before["attributes"]
    assert before["state"].keys() == after["state"].keys()
    for key, value in before["state"].items():
        assert torch.equal(value, after["state"][key]), key
    for module in model.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks and not module._backward_hooks
        assert not getattr(module, "_backward_pre_hooks", None)
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.filterwarnings("ignore:the model is in training mode:rectgrad.AttributionWarning")
def test_model_untouched_after_success_and_after_error():
    from torchvision.models import resnet18

    model = resnet18(num_classes=7)
    model.train()  # BatchNorm would update its running statistics
    model.layer1[0].conv1.weight.requires_grad_(False)
    before = snapshot(model)
    x = torch.randn(2, 3, 64, 64)
    for method in (RectGrad(model), GuidedBackprop(model), Deconvolution(model)):
        method.attribute(x, target=[1, 2])
        assert_untouched(model, before)
    with pytest.raises(ValueError, match="out of range"):
        RectGrad(model).attribute(x, target=9)
    assert_untouched(model, before)
    assert x.grad is None and not x.requires_grad


def test_a_model_found_three_steps_away_or_deep_in_a_list_is_left_as_it_was():
    # a partial (1 step) of a function (2) closing over a dict (3) holding the model; a partial holding it as a
    # keyword; the last of a dozen models in a list: each found, warned about, its BatchNorm statistics kept
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2)).double().train()
    models, ensemble = {"net": model}, [nn.Identity() for _ in range(11)] + [model]

    def scaled(t, scale):
        return models["net"](t) * scale

    def run(t, net):
        return net(t)

    before = snapshot(model)
    for forward in (functools.partial(scaled, scale=2.0), functools.partial(run, net=model),
                    lambda t: ensemble[-1](ensemble[0](t))):
        with pytest.warns(AttributionWarning, match="the model is in training mode: BatchNorm1d"):
            GuidedBackprop(forward).attribute(torch.randn(5, 3, dtype=torch.float64), target=0)
        assert_untouched(model, before)


def test_a_model_passed_to_a_partial_positionally_is_left_as_it_was():
    # functools.partial(run, model): the model among the partial's positional arguments is found, warned about, its
    # BatchNorm statistics kept
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2)).double().train()

    def run(net, t):
        return net(t)

    before = snapshot(model)
    with pytest.warns(AttributionWarning, match="the model is in training mode: BatchNorm1d"):
        GuidedBackprop(functools.partial(run, model)).attribute(torch.randn(5, 3, dtype=torch.float64), target=0)
    assert_untouched(model, before)


@pytest.mark.parametrize("buffer", [torch.ones(1, 4).expand(3, 4), torch.full((1,), float("nan")).expand(4),
                                    torch.empty(4, device="meta")], ids=["expanded", "nan-expanded", "meta"])
def test_buffers_the_forward_pass_leaves_alone_are_not_written_to(buffer):
    # writing one back would fail where its elements share memory (expanded; NaN still counts as unchanged) and on
    # the meta device comparing it would: a model holding one is explained as Captum explains it, the buffer kept
    torch.manual_seed(5)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3)).double()
    model.register_buffer("extra", buffer)
    x = torch.randn(3, 4, dtype=torch.float64)
    expected = captum_attr.GuidedBackprop(model).attribute(x, target=1)
    assert expected.any()
    torch.testing.assert_close(GuidedBackprop(model).attribute(x, target=1), expected, rtol=0, atol=0)
    assert model.extra is buffer


class _ResizesItsHistory(nn.Module):
    """A forward pass that resizes a buffer in place (a history of its last calls, kept short)."""

    def __init__(self):
        super().__init__()
        self.fc, self.relu = nn.Linear(3, 2), nn.ReLU()
        self.register_buffer("history", torch.arange(4.0, dtype=torch.float64))

    def forward(self, x):
        self.history.resize_(2)
        return self.fc(self.relu(x))


def test_a_buffer_the_forward_pass_resizes_in_place_is_restored():
    # every buffer is restored on exit, its value where the forward pass changed it: here its shape too; the map, by
    # hand, is Guided Backprop's through one ReLU: the target's weights where positive, where x is positive
    model = _ResizesItsHistory().double()
    x = torch.tensor([[1.0, -2.0, 3.0], [-1.0, 2.0, 0.5]], dtype=torch.float64)
    expected = model.fc.weight[0].detach().clamp(min=0) * (x > 0)
    torch.testing.assert_close(GuidedBackprop(model).attribute(x, target=0), expected, rtol=0, atol=0)
    assert torch.equal(model.history, torch.arange(4.0, dtype=torch.float64))
    assert explain(model, x, target=0, method="intgrad", steps=4).shape == x.shape  # Captum's methods too
    assert torch.equal(model.history, torch.arange(4.0, dtype=torch.float64))


def test_maps_of_inputs_that_require_grad_are_detached_and_leave_the_inputs_alone(cnn, batch):
    # a tensor of the user's graph (x.requires_grad) gives maps as plain tensors (.numpy() works), not x * R with
    # a grad_fn holding x's graph
    x, y = batch
    x = x[:2].clone().requires_grad_()
    for method in (RectGrad(cnn), GuidedBackprop(cnn), Deconvolution(cnn)):
        maps = method.attribute(x, target=y[:2])
        assert not maps.requires_grad and maps.grad_fn is None and maps.numpy().shape == x.shape
    assert x.grad is None


@pytest.mark.filterwarnings("ignore:the model is in training mode:rectgrad.AttributionWarning")
def test_model_untouched_when_forward_raises():
    class Failing(nn.Module):
        def __init__(self):
            super().__init__()
            self.bn = nn.BatchNorm1d(4)

        def forward(self, x):
            torch.relu(self.bn(x))
            raise RuntimeError("boom")

    model = Failing().train()
    before = snapshot(model)
    with pytest.raises(RuntimeError, match="boom"):
        RectGrad(model).attribute(torch.randn(3, 4))
    assert_untouched(model, before)
    # the interception does not outlive the call
    assert torch.equal(torch.relu(torch.tensor([-1.0, 2.0])), torch.tensor([0.0, 2.0]))


def test_a_model_that_is_not_callable_is_refused_by_name():
    for method in (RectGrad, GuidedBackprop, Deconvolution):
        with pytest.raises(TypeError, match="model must be a torch.nn.Module or a callable, got int"):
            method(5)
        # a module's class was called with the inputs as its constructor's arguments: its raw TypeError
        for cls in (nn.Linear, nn.Sequential):
            with pytest.raises(TypeError, match=rf"got the class {cls.__name__} itself: build the model first, e.g. "
                                                rf"{cls.__name__}\(\.\.\.\)\.eval\(\)"):
                method(cls)
    with pytest.raises(TypeError, match="got the class Sequential itself"):
        rectgrad.explain(nn.Sequential, torch.randn(2, 4), target=0, method="saliency")


def test_a_map_of_cancelling_signs_is_not_taken_for_all_zero():
    # x = (1, 1) through a ReLU into weights (1, -1), tau = -5 passes both units: x * R = (1, -1), summing to 0
    model = nn.Sequential(nn.ReLU(), nn.Linear(2, 1, bias=False)).double()
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[1.0, -1.0]]))
    x = torch.ones(1, 2, dtype=torch.float64)
    maps = RectGrad(model).attribute(x, target=0, tau=-5.0, final_threshold=False)
    assert torch.equal(maps, torch.tensor([[1.0, -1.0]], dtype=torch.float64))


@pytest.mark.parametrize("n, shown", [(10, "[0, 1, 2, 3, 4, 5, 6, 7, 8, 9] is"),
                                      (11, "[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]... is")])
def test_all_zero_samples_are_listed_up_to_ten(n, shown):
    # tau = 1e9: no unit passes, every sample's map is zero
    model = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 2)).double()
    with pytest.warns(AttributionWarning, match=re.escape(f"the attribution of sample(s) {shown} all zero")):
        RectGrad(model).attribute(torch.randn(n, 2, dtype=torch.float64), target=0, tau=1e9)


def test_a_single_sample_all_zero_is_warned_about_without_a_sample_list():
    # one sample: "the attribution is all zero", no list of sample indices (tau = 1e9 passes no unit)
    model = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 2)).double()
    with pytest.warns(AttributionWarning, match=r"^the attribution is all zero: a thresholded layer") as caught:
        RectGrad(model).attribute(torch.randn(1, 2, dtype=torch.float64), target=0, tau=1e9)
    assert not any("sample(s)" in str(w.message) for w in caught)


def test_one_all_zero_sample_of_a_batch_of_several_is_named_by_its_index():
    # the list is left out for a batch of one, not for one sample of several: x = 0 makes x * R zero whatever R
    model = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 2)).double()
    x = torch.randn(3, 2, dtype=torch.float64)
    x[1] = 0.0
    with pytest.warns(AttributionWarning, match=re.escape("the attribution of sample(s) [1] is all zero")):
        maps = RectGrad(model).attribute(x, target=0, tau=-1e9, final_threshold=False)
    assert maps[[0, 2]].flatten(1).any(1).all()  # the premise: the other two are not


def test_a_single_non_finite_element_per_sample_is_warned_about():
    # sqrt at 0 has an infinite derivative: x * R is 0 * inf = NaN at that one element of each sample
    head = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).double()
    x = torch.rand(2, 3, dtype=torch.float64) + 0.5
    x[:, 0] = 0.0
    with pytest.warns(AttributionWarning, match=r"sample\(s\) \[0, 1\] holds NaN or Inf"):
        maps = RectGrad(lambda t: head(torch.cat([t[:, :1].sqrt(), t[:, 1:]], 1))).attribute(x, target=0, tau=0.0)
    assert (~torch.isfinite(maps)).sum(1).tolist() == [1, 1]


@pytest.mark.parametrize("kwargs, error, match", [
    ({"q": -1.0}, ValueError, r"q must be a percentile in \[0, 100\]"),
    ({"q": 100.5}, ValueError, r"q must be a percentile"),
    ({"q": float("nan")}, ValueError, r"q must be a percentile"),
    ({"q": 98.0, "tau": 0.0}, ValueError, "not both"),
    ({"tau": float("inf")}, ValueError, "tau must be a finite number"),
    ({"tau": True}, ValueError, "tau must be a finite number, got True"),
    ({"tau": torch.tensor(True)}, ValueError, "tau must be a finite number, got True"),
    ({"target": 10}, ValueError, "target 10 is out of range"),
    ({"target": -1}, ValueError, "out of range"),
    ({"target": [0, 1]}, ValueError, "target has 2 entries but the batch has 6"),
    ({"target": torch.tensor([0.5] * 6)}, TypeError, "integer class indices"),
    ({"target": "cat"}, TypeError, "target must be None"),
    ({"target": np.full(6, 0.5)}, TypeError, "integer class indices, got torch.float64"),
    ({"target": torch.ones(6, dtype=torch.bool)}, TypeError, "integer class indices, got torch.bool"),
    ({"target": [True] * 6}, TypeError, "target list must hold one integer class index per sample"),
    ({"target": True}, TypeError, "target must be None, an int, .* got bool"),
    ({"rule": "pr9"}, ValueError, "unknown rule"),
    ({"padding_trick": "no"}, TypeError, "padding_trick must be True or False, got 'no'"),  # (read by its truth)
    ({"prr": 1}, TypeError, "prr must be True or False, got 1"),
    ({"final_threshold": []}, TypeError, r"final_threshold must be True or False, got \[\]"),
    ({"final_threshold": np.bool_(False), "padding_trick": True}, None, None),
    ({"internal_batch_size": 0}, ValueError, "internal_batch_size must be a positive integer"),
    ({"internal_batch_size": 100}, None, None),
])
def test_bad_arguments(cnn, batch, kwargs, error, match):
    x, _ = batch
    if error is None:  # a valid neighbour of the bad values
        assert RectGrad(cnn).attribute(x, **kwargs).shape == x.shape
        return
    with pytest.raises(error, match=match):
        RectGrad(cnn).attribute(x, **kwargs)


def test_the_classes_take_a_one_element_internal_batch_size_as_explain_does():
    # explain took internal_batch_size=torch.tensor(2) as 2 (a value swept over torch.arange), the classes refused it
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).double()
    x = torch.randn(5, 4, dtype=torch.float64)
    for attribution, options in ((RectGrad(model), {"q": 50.0}), (GuidedBackprop(model), {}),
                                 (Deconvolution(model), {})):
        expected = attribution.attribute(x, target=1, internal_batch_size=2, **options)
        for size in (torch.tensor(2), np.array([2]), np.int64(2)):
            assert torch.equal(attribution.attribute(x, target=1, internal_batch_size=size, **options), expected)
        for bad, shown in ((torch.tensor(2.5), "2.5"), (torch.tensor([2, 3]), re.escape("tensor([2, 3])"))):
            with pytest.raises(ValueError, match=f"internal_batch_size must be a positive integer, got {shown}"):
                attribution.attribute(x, target=1, internal_batch_size=bad, **options)


@pytest.mark.parametrize("rule", ["pr5", "PR1", "pr", "mod1", ""])
def test_rule_names_outside_the_five_are_refused(rule):
    # the engine's Rule takes any score name: RectGrad is where a near miss must stop, not silently explain otherwise
    model = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 2)).double()
    with pytest.raises(ValueError, match=f"unknown rule {rule!r}; choose one of pr1, pr2, pr3, pr4, mod"):
        RectGrad(model).attribute(torch.randn(2, 2, dtype=torch.float64), target=0, rule=rule)


def test_threshold_bounds_are_inclusive_and_strings_are_refused(cnn, batch):
    x, y = batch
    # q = 100 is a valid percentile: the threshold is each layer's largest score, which no unit exceeds (strict >)
    with pytest.warns(AttributionWarning, match=r"sample\(s\) \[0, 1, 2, 3, 4, 5\] is all zero"):
        assert not RectGrad(cnn).attribute(x, target=y, q=100.0).any()
    for kwargs, match in (({"tau": "0.5"}, "tau must be a finite number, got '0.5'"),
                          ({"q": "98"}, "q must be a percentile in \\[0, 100\\], got '98'"),
                          ({"q": True}, "q must be a percentile in \\[0, 100\\], got True")):
        with pytest.raises(ValueError, match=match):
            RectGrad(cnn).attribute(x, target=y, **kwargs)


def test_thresholds_given_as_one_element_tensors_or_arrays(cnn, batch):
    # e.g. a q computed with torch or numpy, or any real number (a Fraction): its value, as a float would give it
    x, y = batch
    for kwargs, same in (({"q": torch.tensor(90.0)}, {"q": 90.0}), ({"q": np.array([90])}, {"q": 90.0}),
                         ({"tau": torch.tensor(1e-4, dtype=torch.float64)}, {"tau": 1e-4}),
                         ({"q": Fraction(90)}, {"q": 90.0}), ({"tau": Fraction(1, 10**4)}, {"tau": 1e-4})):
        maps = RectGrad(cnn).attribute(x, target=y, **kwargs)
        assert torch.equal(maps, RectGrad(cnn).attribute(x, target=y, **same)) and maps.flatten(1).any(1).all()


def test_bad_inputs(cnn):
    with pytest.raises(TypeError, match="floating point"):
        RectGrad(cnn).attribute(torch.zeros(2, 3, 32, 32, dtype=torch.long))
    bad = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    bad[1, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or Inf"):
        RectGrad(cnn).attribute(bad)
    bad[1, 0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="NaN or Inf"):
        GuidedBackprop(cnn).attribute(bad)
    with pytest.raises(TypeError, match="must be torch tensors, got list$"):
        RectGrad(cnn).attribute([[1.0]])
    with pytest.raises(TypeError, match=r"got list: a model of several inputs takes them as a tuple \(x1, x2\), a "
                                        r"batch of images as one tensor \(torch.stack\(images\)\)"):
        RectGrad(cnn).attribute([torch.zeros(3, 32, 32), torch.zeros(3, 32, 32)])


def test_empty_and_ragged_inputs_are_refused_by_name(cnn, batch):
    x, _ = batch
    with pytest.raises(ValueError, match="inputs is empty"):
        RectGrad(cnn).attribute(())
    with pytest.raises(ValueError, match=r"non-empty batch dimension first, got shape \(0, 3, 32, 32\)"):
        GuidedBackprop(cnn).attribute(x[:0])
    with pytest.raises(ValueError, match=r"non-empty batch dimension first, got shape \(\)"):
        RectGrad(cnn).attribute(torch.tensor(1.0, dtype=torch.float64))
    head = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).double()
    x, z = torch.randn(5, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"all inputs must share the batch size, got \[5, 4\]"):
        GuidedBackprop(lambda a, b: head(a) + head(b).sum()).attribute((x, z), target=0)


def test_a_model_output_for_another_batch_size_is_refused():
    # (1, C) for a batch of 3 (e.g. a model summing over the batch) would explain one summed score
    head = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 5)).double()
    x = torch.randn(3, 3, dtype=torch.float64)
    for target in (None, 1):
        with pytest.raises(ValueError, match=r"shape \(N, classes\) = \(3, C\), got \(1, 5\)"):
            RectGrad(lambda t: head(t).sum(0, keepdim=True)).attribute(x, target=target)
    with pytest.raises(ValueError, match=r"got \(1, 3, 5\)$"):  # 3-D but not per sample: no hint to flatten it
        RectGrad(lambda t: head(t)[None]).attribute(x, target=1)


def test_unbatched_inputs_get_the_hint_and_other_assertions_are_left_as_they_are():
    head = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    with pytest.raises(RuntimeError, match=r"the inputs have shape \(3,\): dim 0 is the batch; .* pass x\[None\]"):
        GuidedBackprop(head).attribute(torch.randn(3), target=0)  # one vector of 3 features for a model of 4

    def checked(x):
        if not (x > -10).all():  # a model's own check: not torch.export's "Guard failed"
            raise AssertionError("inputs out of range")
        return head(x)

    with pytest.raises(AssertionError, match="^inputs out of range$"):
        GuidedBackprop(checked).attribute(torch.full((2, 4), -20.0), target=0)


def test_out_of_range_and_non_integer_targets_are_named(cnn, batch):
    x, _ = batch
    with pytest.raises(ValueError, match="target 12 is out of range for a model with 10 classes"):
        RectGrad(cnn).attribute(x, target=[1, 12, 2, -3, 4, 5])  # the first bad one is named
    with pytest.raises(TypeError, match="integer class indices, got torch.complex64"):
        GuidedBackprop(cnn).attribute(x, target=torch.full((6,), 1, dtype=torch.complex64))


def test_a_list_of_several_element_tensors_is_a_clear_error(cnn, batch):
    # [tensor([1, 2]), ...] names no single class per sample: the same TypeError as any other non-integer entry,
    # not torch's "a Tensor with 2 elements cannot be converted to Scalar"; a two-element q is no percentile
    x, _ = batch
    with pytest.raises(TypeError, match="target list must hold one integer class index per sample"):
        RectGrad(cnn).attribute(x, target=[torch.tensor([1, 2])] * 6)
    with pytest.raises(ValueError, match=r"q must be a percentile in \[0, 100\]"):
        RectGrad(cnn).attribute(x, q=torch.tensor([90.0, 95.0]))


def test_a_softmax_with_underflowed_zeros_is_taken_for_probabilities():
    # a confident float32 softmax rounds the other classes to exactly 0: still probabilities, still a warning
    model = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 3), nn.Softmax(1))
    with torch.no_grad():
        model[2].weight.mul_(1000.0)
    x = torch.randn(4, 2)
    rows = model(x)
    assert (rows == 0).any() and torch.allclose(rows.sum(1), torch.ones(4))  # the premise: exact zeros
    with pytest.warns(AttributionWarning, match="look like probabilities"):
        GuidedBackprop(model).attribute(x, target=0)


def test_one_score_per_sample_is_never_taken_for_probabilities():
    # an (N, 1) output is one score per sample, whatever its value: 1.0 here (a histogram's total), no warning
    model = nn.Sequential(nn.ReLU(), nn.Linear(3, 1, bias=False)).double()
    with torch.no_grad():
        model[1].weight.fill_(1.0)
    x = torch.softmax(torch.randn(4, 3, dtype=torch.float64), dim=1)
    assert torch.allclose(model(x), torch.ones(4, 1, dtype=torch.float64))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        maps = GuidedBackprop(model).attribute(x, target=0)
    assert torch.equal(maps, torch.ones_like(x))  # x > 0 everywhere, the weights all 1: every unit passes 1


def test_probability_rows_are_summed_exactly_not_in_their_own_dtype():
    # 0.5 + 0.25 + 0.267578125 = 1.017578125 (each exact in bfloat16) is off 1 by more than 2 eps = 0.015625; the sum
    # rounded to bfloat16, 1.015625, would hide that
    from rectgrad.attr._arguments import looks_like_probabilities

    rows = torch.tensor([[0.5, 0.25, 0.267578125]], dtype=torch.bfloat16)
    assert rows.double().sum().item() == 1.017578125 and 2 * torch.finfo(torch.bfloat16).eps == 0.015625
    assert not looks_like_probabilities(rows)
    rows = torch.tensor([[0.5, 0.25, 0.265625]], dtype=torch.bfloat16)  # off by exactly 2 eps: still probabilities
    assert looks_like_probabilities(rows)


def test_probabilities_are_non_negative_rows_summing_to_one_within_1e_3():
    from rectgrad.attr._arguments import looks_like_probabilities

    # a float16 softmax cast to float32 (a half model's final .float()) is off 1 by about 2e-4, far beyond float32's
    # own 2 eps: still probabilities, the tolerance is at least 1e-3 whatever the dtype
    torch.manual_seed(0)
    rows = torch.softmax(torch.randn(8, 10, dtype=torch.float16) * 3, 1).float()
    off = (rows.double().sum(1) - 1).abs().max().item()
    assert 2 * torch.finfo(torch.float32).eps < off <= 1e-3  # the premise
    assert looks_like_probabilities(rows)
    # 1e-3 is the bound: off by 9e-4 is a probability row, off by 2e-3 is not (ReLU scores that happen to sum near 1)
    assert looks_like_probabilities(torch.tensor([[0.5, 0.5009]], dtype=torch.float64))
    assert not looks_like_probabilities(torch.tensor([[0.5, 0.502]], dtype=torch.float64))
    # logits summing to 1 with a negative entry are no probabilities; nor are integer scores, nor an empty batch
    assert not looks_like_probabilities(torch.tensor([[2.0, -1.0], [0.5, 0.5]], dtype=torch.float64))
    assert not looks_like_probabilities(torch.tensor([[0, 1], [1, 0]]))
    assert not looks_like_probabilities(torch.empty(0, 3))


def test_a_model_mixing_dtypes_keeps_pytorchs_own_error():
    # the inputs are float32 as the first layer's weights: no advice to convert them, PyTorch's error as it is
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2).double())
    with pytest.raises(RuntimeError, match="mat1 and mat2 must have the same dtype") as error:
        GuidedBackprop(model).attribute(torch.randn(2, 3), target=0)
    assert type(error.value) is RuntimeError


def test_errors_that_are_not_about_dtypes_get_no_dtype_advice():
    # float64 inputs cast by the model itself to its float32 weights, then of the wrong width: PyTorch's shape error
    # as it is, not "convert the inputs to float32"
    model = nn.Sequential(_Lambda(lambda t: t.float()), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied") as error:
        GuidedBackprop(model).attribute(torch.randn(2, 5, dtype=torch.float64), target=0)
    assert type(error.value) is RuntimeError


def test_a_dtype_error_names_the_dtype_most_weights_have():
    # three float32 layers and a float64 head, float16 inputs: convert to float32, the dtype of most weights
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4), nn.ReLU(),
                          nn.Linear(4, 2).double())
    with pytest.raises(TypeError, match="the inputs are torch.float16 but the model's weights torch.float32"):
        GuidedBackprop(model).attribute(torch.randn(2, 3, dtype=torch.float16), target=0)
    head_first = nn.Sequential(nn.Linear(3, 4).double(), nn.ReLU(), nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    with pytest.raises(TypeError, match="the inputs are torch.float16 but the model's weights torch.float32"):
        GuidedBackprop(head_first).attribute(torch.randn(2, 3, dtype=torch.float16), target=0)  # most, not first


def test_model_output_must_be_logits():
    conv = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    with pytest.raises(ValueError, match=r"shape \(N, classes\) .* model\(x\).flatten\(1\) with the flattened"):
        RectGrad(conv).attribute(torch.randn(2, 3, 8, 8))
    score = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1), nn.Flatten(0))  # one logit per sample: (N,)
    x = torch.randn(2, 3)
    with pytest.raises(ValueError, match=r"got \(2,\); .* explain lambda x: model\(x\)\[:, None\] \(class 0\)"):
        GuidedBackprop(score).attribute(x)
    torch.testing.assert_close(GuidedBackprop(lambda x: score(x)[:, None]).attribute(x),
                               captum_attr.GuidedBackprop(score).attribute(x), rtol=0, atol=0)
    squeezed = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 5), nn.Flatten(0))  # .squeeze(): a batch of 1
    one = torch.randn(1, 3)
    with pytest.raises(ValueError, match=r"got \(5,\); the model drops the batch dimension for a batch of one .* "
                                         r"explain lambda x: model\(x\)\.reshape\(len\(x\), -1\)"):
        RectGrad(squeezed).attribute(one, target=2)
    torch.testing.assert_close(RectGrad(lambda x: squeezed(x).reshape(len(x), -1)).attribute(one, target=2, tau=-1.0),
                               RectGrad(squeezed[:3]).attribute(one, target=2, tau=-1.0), rtol=0, atol=0)
    # a 1-D output of a batch of several (every logit flattened together) is no dropped batch dimension: no hint
    with pytest.raises(ValueError, match=r"= \(2, C\), got \(10,\)$"):
        RectGrad(squeezed).attribute(torch.randn(2, 3), target=2)
    with pytest.raises(TypeError, match=r"tensor of logits, got tuple; wrap it .* output\[0\]"):
        RectGrad(lambda x: (x, x)).attribute(torch.randn(2, 3))
    with pytest.raises(TypeError, match=r"got dict; wrap it .*output\['logits'\]"):
        RectGrad(lambda x: {"logits": x}).attribute(torch.randn(2, 3))
    from types import SimpleNamespace  # an output object holding its logits as an attribute gets the hint too

    with pytest.raises(TypeError, match=r"got SimpleNamespace; wrap it .*output\['logits'\]"):
        RectGrad(lambda x: SimpleNamespace(logits=x)).attribute(torch.randn(2, 3))


def test_warns_without_known_activation_and_equals_gradient_times_input():
    model = nn.Sequential(nn.Linear(4, 3)).double()
    x = torch.randn(5, 4, dtype=torch.float64)
    with pytest.warns(UserWarning, match="no activation function the engine knows") as caught:
        attribution = RectGrad(model).attribute(x, target=2, final_threshold=False, internal_batch_size=2)
    torch.testing.assert_close(attribution, x * model[0].weight[2])
    assert sum("no activation function" in str(w.message) for w in caught) == 1  # once per call, not per chunk


def test_a_module_free_callable_is_warned_about_once_per_call_too():
    w = torch.randn(3, 4, dtype=torch.float64)
    x = torch.randn(5, 3, dtype=torch.float64)
    with pytest.warns(AttributionWarning, match="no activation function the engine knows") as caught:
        maps = RectGrad(lambda t: t @ w).attribute(x, target=1, final_threshold=False, internal_batch_size=2)
    torch.testing.assert_close(maps, x * w[:, 1])  # the plain gradient x input
    assert sum("no activation function" in str(c.message) for c in caught) == 1  # once per call, not per chunk


def test_a_pass_without_a_rule_is_never_warned_about_as_ungated():
    # the plain gradient (Options() without a rule: the studies' Saliency) of a model calling no activation the
    # engine knows is what was asked for: the "no activation" warning is for a rule that found nothing to change
    from rectgrad.attr._base import warn_if_ungated
    from rectgrad.engine import Options, Rule, RuleMode

    model = nn.Linear(3, 2)
    for options, warns in ((Options(), False), (Options(rule=Rule(score="pr1", tau=0.0)), True)):
        mode = RuleMode(options, batch=2)
        with mode:
            model(torch.randn(2, 3))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            warn_if_ungated(options, mode)
        assert any("no activation function the engine knows" in str(w.message) for w in caught) is warns


@torch.jit.script
def _scripted_relu(x):
    return torch.relu(x)


class _ScriptedInANestedFunction(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.fc = nn.Linear(3, 4), nn.Linear(3, 4), nn.Linear(8, 2)

    def forward(self, x):
        def branch(layer):  # the scripted ReLU is named by this nested function's code, not by forward's own
            return _scripted_relu(layer(x))

        return self.fc(torch.cat([branch(self.a), branch(self.b)], 1))


def test_a_torchscript_function_called_from_a_nested_function_is_refused_by_name():
    # the rules cannot reach the ReLU inside it: a clear refusal, not the plain gradient passed off as the method's
    model, x = _ScriptedInANestedFunction(), torch.randn(2, 3)
    for method in (RectGrad, GuidedBackprop, Deconvolution):
        with pytest.raises(ValueError, match=rf"{method.__name__} modifies .*TorchScript function '_scripted_relu' "
                                             r"called by _ScriptedInANestedFunction.forward \(it computes relu"):
            method(model).attribute(x, target=0)


@pytest.mark.filterwarnings("ignore:the attribution.* is all zero:rectgrad.AttributionWarning")
def test_warns_when_a_clamp_at_zero_stands_for_a_relu():
    class Clamped(nn.Module):
        def __init__(self, clamp):
            super().__init__()
            self.a, self.b, self.clamp = nn.Linear(4, 30), nn.Linear(30, 2), clamp

        def forward(self, x):
            return self.b(self.clamp(torch.relu(self.a(x)) - 0.1))

    x = torch.randn(2, 4)
    # every spelling, in place or not: clamp, clip, clamp_min (the in-place ones change h - 0.1, no leaf)
    for as_relu in (lambda h: h.clamp(min=0), lambda h: torch.clamp(h, 0, 6), lambda h: h.clamp_min(0.0),
                    lambda h: torch.clamp_min(h, 0), lambda h: torch.clamp_min_(h, 0), lambda h: h.clamp_min_(0),
                    lambda h: torch.clamp_(h, min=0), lambda h: h.clamp_(0, 6), lambda h: torch.clip(h, 0),
                    lambda h: h.clip(min=0)):
        with pytest.warns(UserWarning, match=r"(clamp|clamp_min|clip)_?\(min=0\) works as a ReLU here"):
            RectGrad(Clamped(as_relu)).attribute(x, target=0, q=50.0)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*works as a ReLU")  # a clamp elsewhere (e.g. at 1e-6): no ReLU
        weight = nn.Parameter(torch.rand(30))  # a clamp of a parameter (non-negative weights): no ReLU of the input
        for other in (lambda h: h.clamp(min=1e-6), lambda h: h.clamp(min=-1), lambda h: h.clamp(min=torch.zeros(30)),
                      lambda h: h.clamp(max=0), lambda h: h * weight.clamp(min=0)):
            RectGrad(Clamped(other)).attribute(x, target=0, q=50.0)


@pytest.mark.filterwarnings("ignore:the model calls no activation:rectgrad.AttributionWarning")
def test_warns_when_a_maximum_with_zero_stands_for_a_relu():
    model = nn.Sequential(nn.Linear(4, 30), nn.ReLU(), nn.Linear(30, 30), nn.Linear(30, 2))
    x = torch.randn(2, 4)

    def with_maximum(maximum):
        def forward(t):
            h = model[2](model[1](model[0](t)))
            return model[3](maximum(h, torch.zeros_like(h)))
        return forward

    for maximum in (torch.maximum, torch.fmax, torch.max, torch.Tensor.maximum, torch.Tensor.fmax, torch.Tensor.max,
                    lambda h, zero: torch.maximum(h, other=zero)):
        with pytest.warns(UserWarning, match=r"(maximum|fmax|max)\(x, 0\) works as a ReLU here"):
            RectGrad(with_maximum(maximum)).attribute(x, target=0, q=50.0)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*works as a ReLU")
        RectGrad(lambda t: model[3](torch.maximum(model[0](t), torch.full((30,), 0.1)))).attribute(x, 0, q=50.0)
        partly_zero = torch.cat([torch.zeros(15), torch.full((15,), 0.1)])  # zero in places only: no ReLU
        RectGrad(lambda t: model[3](torch.maximum(model[0](t), partly_zero))).attribute(x, 0, q=50.0)
        # a floor that is learned (a parameter, zero for now), and a maximum of the weights alone: no ReLU
        floor, weight = nn.Parameter(torch.zeros(30)), nn.Parameter(torch.randn(30))
        RectGrad(lambda t: model[3](torch.maximum(model[0](t), floor))).attribute(x, 0, q=50.0)
        RectGrad(lambda t: model[3](model[0](t) * torch.maximum(weight, torch.zeros(30)))).attribute(x, 0, q=50.0)


class SequenceFirst(nn.Module):
    """A 1-d CNN whose head works on (L, N, C), as nn.TransformerEncoderLayer does without batch_first=True."""

    def __init__(self):
        super().__init__()
        self.conv, self.mix, self.out = nn.Conv1d(4, 8, 3, padding=1), nn.Linear(8, 8), nn.Linear(8, 3)

    def forward(self, x):
        h = F.relu(self.conv(x)).permute(2, 0, 1)
        return self.out(F.relu(self.mix(h)).mean(0))


def test_per_sample_rules_refuse_a_batch_that_is_not_dim_0():
    torch.manual_seed(0)
    model, x = SequenceFirst().double().eval(), torch.randn(3, 4, 10, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"thresholds each sample at its own percentile along dim 0, but an activation "
                                         r"\(relu\) gets a tensor of shape \(10, 3, 8\) for a batch of 3"):
        RectGrad(model).attribute(x, target=1, q=90.0)
    with pytest.raises(ValueError, match=r"pairs each input with its reference .* shape \(10, 6, 8\) for a batch of 3 "
                                         "inputs and their references"):
        rectgrad.explain(model, x, target=1, method="deeplift")
    one_by_one = torch.cat([RectGrad(model).attribute(x[i:i + 1], target=1, tau=0.0) for i in range(3)])
    torch.testing.assert_close(RectGrad(model).attribute(x, target=1, tau=0.0), one_by_one)  # element-wise: fine
    for method in ("guided_bp", "deconv", "eps_lrp"):
        rectgrad.explain(model, x, target=1, method=method)
    cnn = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))  # Conv2d takes (C, H, W)
    with pytest.raises(ValueError, match=r"shape \(4, 6, 6\) for a batch of 1: .*inputs without their batch dimension: "
                                         r"one image \(C, H, W\) needs x\[None\]"):
        RectGrad(cnn).attribute(torch.rand(1, 8, 8), target=0)


class NonNegativeWeights(nn.Module):
    """A layer whose weights pass through a ReLU (computed from parameters only): not an activation of the input."""

    def __init__(self, weight_activation):
        super().__init__()
        self.hidden, self.weight = nn.Linear(5, 8), nn.Parameter(torch.randn(3, 8))
        self.weight_activation = weight_activation

    def forward(self, x):
        return F.linear(torch.relu(self.hidden(x)), self.weight_activation(self.weight) - 0.5)


@pytest.mark.filterwarnings("error:.*works as a ReLU")  # a clamp of weights is no ReLU of the input
def test_an_activation_of_parameters_alone_is_no_rule_site():
    torch.manual_seed(0)
    with_relu, with_clamp = NonNegativeWeights(F.relu).double(), NonNegativeWeights(lambda w: w.clamp(min=0)).double()
    with_clamp.load_state_dict(with_relu.state_dict())
    x = torch.randn(4, 5, dtype=torch.float64)
    for kwargs in ({"rule": "mod", "q": 50.0}, {"q": 50.0}):  # "mod": PR1 at the hidden ReLU, nearest the output
        torch.testing.assert_close(RectGrad(with_relu).attribute(x, target=1, **kwargs),
                                   RectGrad(with_clamp).attribute(x, target=1, **kwargs))
    deeplift = rectgrad.explain(with_relu, x, target=1, method="deeplift")
    delta = with_relu(x)[:, 1] - with_relu(torch.zeros_like(x))[:, 1]
    torch.testing.assert_close(deeplift.sum(1), delta.detach())


def test_warns_when_a_small_layer_blocks_everything():
    # logits through a ReLU over 10 units: with q = 98 the threshold is the largest score, strict > passes nothing
    model = nn.Sequential(nn.Linear(6, 10), nn.ReLU())
    with pytest.warns(UserWarning, match="all zero"):
        attribution = RectGrad(model).attribute(torch.randn(2, 6), target=0, q=98.0)
    assert torch.count_nonzero(attribution) == 0


class _Called(nn.Module):
    """An activation called as ``function(x, *args)``: the in-place built-ins (``F.elu_``, ...) and the ATen operations
    an exported program calls (``torch.ops.aten.silu_``, ...), which no module calls."""

    def __init__(self, function, *args):
        super().__init__()
        self.function, self.args = function, args

    def forward(self, x):
        out = self.function(x, *self.args)
        return x if self.function.__name__.endswith("_") else out  # in place: the caller goes on with x

    def __repr__(self):
        where = ("aten" if "aten" in str(self.function) else "torch" if self.function in _TORCH_FUNCTIONS
                 else "Tensor" if getattr(torch.Tensor, self.function.__name__, None) is self.function else "F")
        return f"{where}.{self.function.__name__}{self.args}"


_TORCH_FUNCTIONS = {torch.selu, torch.celu, torch.threshold}


_IN_PLACE_AND_ATEN = [_Called(F.hardtanh_, -1.0, 2.0), _Called(F.leaky_relu_, 0.1), _Called(F.elu_), _Called(F.selu_),
                      _Called(F.celu_, 0.5), _Called(F.rrelu_), _Called(F.threshold_, 0.1, -0.5),
                      _Called(torch.ops.aten.relu_), _Called(torch.ops.aten.hardtanh_, -1.0, 2.0),
                      _Called(torch.ops.aten.leaky_relu_, 0.1), _Called(torch.ops.aten.elu, 0.5, 1.5, 2.0),
                      _Called(torch.ops.aten.elu_), _Called(torch.ops.aten.selu), _Called(torch.ops.aten.celu, 0.5),
                      _Called(torch.ops.aten.celu_, 0.5), _Called(torch.ops.aten.threshold, 0.1, -0.5),
                      _Called(torch.ops.aten.threshold_, 0.1, -0.5), _Called(torch.ops.aten.gelu_),
                      _Called(torch.ops.aten.silu_), _Called(torch.ops.aten.hardswish_), _Called(torch.ops.aten.mish),
                      _Called(torch.ops.aten.mish_), _Called(torch.ops.aten.rrelu)]
# the torch-namespace spellings beside torch.relu (their in-place forms are F.selu_, ... above): passed the plain
# gradient under the gate rules, and were refused as unknown by DeepLIFT and eps-LRP
_TORCH_NAMESPACE = [_Called(torch.selu), _Called(torch.celu, 0.5), _Called(torch.threshold, 0.1, -0.5),
                    _Called(torch.Tensor.prelu, torch.tensor([0.2], dtype=torch.float64))]


@pytest.mark.parametrize("activation", [nn.ReLU6(), nn.Hardtanh(-1.0, 2.0), nn.LeakyReLU(0.1), nn.ELU(), nn.GELU(),
                                        nn.SiLU(), nn.Hardswish(), nn.Mish(), nn.PReLU(init=0.2), nn.SELU(),
                                        nn.CELU(0.5), nn.RReLU().eval(), nn.Threshold(0.1, -0.5),
                                        nn.ReLU6(inplace=True), nn.SiLU(inplace=True), nn.Hardswish(inplace=True),
                                        nn.Mish(inplace=True), nn.LeakyReLU(0.1, inplace=True), nn.SELU(inplace=True),
                                        nn.CELU(inplace=True), nn.RReLU(inplace=True).eval(),
                                        nn.Threshold(0.1, -0.5, inplace=True), *_IN_PLACE_AND_ATEN,
                                        *_TORCH_NAMESPACE], ids=repr)
def test_other_activations_gate_their_own_derivative(activation):
    # every spelling: the in-place built-ins and the ATen operations of exported programs are the activations they
    # stand for (in place where they are), gated by hand below as the module would be
    torch.manual_seed(3)  # no sample's map all zero, with any of the activations
    model = nn.Sequential(nn.Linear(6, 12), activation, nn.Linear(12, 3)).double()
    x = torch.randn(4, 6, dtype=torch.float64) * 3
    ours = RectGrad(model).attribute(x, target=1, q=50.0, final_threshold=False)
    # by hand: R_in = 1[a * R > tau] f'(z) R with tau the per-sample median score
    z = model[0](x).detach().requires_grad_()
    a = activation(z.clone())
    r = model[2].weight[1].detach().expand(4, 12)
    scores = a.detach() * r
    tau = torch.from_numpy(np.percentile(scores.numpy(), 50, axis=1, method="nearest"))
    (local,) = torch.autograd.grad(a, z, r * (scores > tau[:, None]), retain_graph=True)
    torch.testing.assert_close(ours, x * (local @ model[0].weight))
    assert ours.any(1).all()
    guided = GuidedBackprop(model).attribute(x, target=1)
    (expected_guided,) = torch.autograd.grad(a, z, r.clamp(min=0))
    torch.testing.assert_close(guided, expected_guided @ model[0].weight)


_PRIVATE = [(name, public, args) for name, public, args in [
    ("relu6", F.relu6, ()), ("relu6_", F.relu6, ()), ("hardtanh", F.hardtanh, (-1.0, 2.0)),
    ("leaky_relu", F.leaky_relu, (0.1,)), ("silu", F.silu, ()), ("silu_", F.silu, ()), ("hardswish", F.hardswish, ()),
    ("hardswish_", F.hardswish, ()), ("mish", F.mish, ()), ("mish_", F.mish, ()), ("gelu_", F.gelu, ()),
    ("hardsigmoid", F.hardsigmoid, ()), ("hardsigmoid_", F.hardsigmoid, ())] if hasattr(torch._C._nn, name)]


@pytest.mark.parametrize("name, public, args", _PRIVATE, ids=[f"torch._C._nn.{name}" for name, _, _ in _PRIVATE])
def test_the_private_spellings_of_activations_follow_the_rules_as_the_public_ones(name, public, args):
    # the built-ins the functionals call (F.hardtanh calls torch._C._nn.hardtanh, F.silu(inplace=True)
    # torch._C._nn.silu_), which some models call themselves: they passed the plain gradient under the gate rules,
    # and eps-LRP and DeepLIFT refused them as operations they do not know
    torch.manual_seed(3)
    private = nn.Sequential(nn.Linear(6, 12), _Called(getattr(torch._C._nn, name), *args), nn.Linear(12, 3)).double()
    same = nn.Sequential(private[0], _Called(public, *args), private[2])
    x = torch.randn(4, 6, dtype=torch.float64) * 3
    gated = ("deconv", "guided_bp", "rectgrad") if "hardsigmoid" not in name else ()  # a multiplier rule's alone
    for method in (*gated, "eps_lrp", "deeplift"):
        options = {"q": 50.0, "final_threshold": False} if method == "rectgrad" else {}
        ours = explain(private, x, target=1, method=method, **options)
        torch.testing.assert_close(ours, explain(same, x, target=1, method=method, **options), rtol=0, atol=0)
    if gated:  # the rule changes the map: the two are not both the plain gradient
        assert not torch.allclose(explain(private, x, target=1, method="deconv"),
                                  explain(private, x, target=1, method="saliency"))


_RRELU_WITH_NOISE = [name for name in ("rrelu_with_noise", "rrelu_with_noise_") if hasattr(torch._C._nn, name)]


@pytest.mark.parametrize("name", _RRELU_WITH_NOISE, ids=[f"torch._C._nn.{name}" for name in _RRELU_WITH_NOISE])
def test_the_private_rrelu_with_noise_follows_the_rules_as_a_leaky_relu_in_eval_mode(name):
    # torch._C._nn.rrelu_with_noise(x, noise, lower, upper, training=False), what F.rrelu calls, is a leaky ReLU of
    # slope (lower + upper) / 2: it passed the plain gradient under the gate rules and was refused by eps-LRP/DeepLIFT
    torch.manual_seed(3)
    noise = torch.full((4, 12), 7.0, dtype=torch.float64)
    private = nn.Sequential(nn.Linear(6, 12), _Called(getattr(torch._C._nn, name), noise, 0.1, 0.3, False),
                            nn.Linear(12, 3)).double()
    same = nn.Sequential(private[0], _Called(F.leaky_relu, 0.2), private[2])
    x = torch.randn(4, 6, dtype=torch.float64) * 3
    for method in ("deconv", "guided_bp", "rectgrad", "eps_lrp", "deeplift"):
        options = {"q": 50.0, "final_threshold": False} if method == "rectgrad" else {}
        torch.testing.assert_close(explain(private, x, target=1, method=method, **options),
                                   explain(same, x, target=1, method=method, **options))
    assert not torch.allclose(explain(private, x, target=1, method="deconv"),
                              explain(private, x, target=1, method="saliency"))
    assert torch.equal(noise, torch.full((4, 12), 7.0, dtype=torch.float64))  # eval mode: the noise is not drawn


@pytest.mark.parametrize("name", _RRELU_WITH_NOISE, ids=[f"torch._C._nn.{name}" for name in _RRELU_WITH_NOISE])
def test_the_private_rrelu_with_noise_in_training_mode_keeps_the_slopes_it_draws(name):
    # in training mode it draws a slope per unit into its noise tensor, as F.rrelu(training=True) does: the rules
    # gate it with the slopes of the forward pass (the same as F.rrelu's from the same seed), and the noise tensor
    # holds those slopes afterwards, as after the plain call
    torch.manual_seed(3)
    first, last = nn.Linear(6, 12).double(), nn.Linear(12, 3).double()
    x = torch.randn(4, 6, dtype=torch.float64) * 3
    noise = torch.zeros(4, 12, dtype=torch.float64)
    private = nn.Sequential(first, _Called(getattr(torch._C._nn, name), noise, 0.1, 0.3, True), last)
    public = nn.Sequential(first, _Called(F.rrelu, 0.1, 0.3, True), last)
    torch.manual_seed(1)
    torch._C._nn.rrelu_with_noise(first(x), noise, 0.1, 0.3, True)
    drawn = noise.clone()
    for method in ("deconv", "guided_bp", "rectgrad"):
        options = {"q": 50.0, "final_threshold": False} if method == "rectgrad" else {}
        torch.manual_seed(1)
        ours = explain(private, x, target=1, method=method, **options)
        assert torch.equal(noise, drawn)
        torch.manual_seed(1)
        torch.testing.assert_close(ours, explain(public, x, target=1, method=method, **options), rtol=0, atol=0)
    torch.manual_seed(1)
    assert not torch.allclose(explain(private, x, target=1, method="deconv"),
                              explain(private, x, target=1, method="saliency"))
    with pytest.raises(ValueError, match="deeplift compares each input with its reference.*call model.eval"):
        explain(private, x, target=1, method="deeplift")


class _InputSlopePReLU(nn.Module):
    """A PReLU whose slope is computed from the input (a dynamic activation): slope = sigmoid(mean of x)."""

    def __init__(self):
        super().__init__()
        self.a, self.o = nn.Linear(5, 5), nn.Linear(5, 2)

    def forward(self, x):
        return self.o(F.prelu(self.a(x), torch.sigmoid(x.mean()).reshape(1)))


def test_an_activation_weight_computed_from_the_input_keeps_its_gradient():
    # the rule's Function took the gradient of F.prelu's input alone: the path through a slope computed from the
    # input was dropped silently (with every unit passing, RectGrad was not gradient x input)
    torch.manual_seed(0)
    model, x = _InputSlopePReLU().double().eval(), torch.randn(3, 5, dtype=torch.float64)
    x_ = x.clone().requires_grad_()
    (gradient,) = torch.autograd.grad(model(x_)[:, 0].sum(), x_)
    every_unit = RectGrad(model).attribute(x, target=0, tau=-1e30, final_threshold=False)  # every score passes
    torch.testing.assert_close(every_unit, x * gradient, rtol=1e-12, atol=1e-14)
    # the multiplier rules are not defined for it: a product of two input-dependent tensors
    with pytest.raises(ValueError, match="product of two input-dependent tensors"):
        rectgrad.explain(model, x, target=0, method="eps_lrp")


def test_an_input_dependent_activation_weight_leaves_an_overflowing_forward_value_as_it_is():
    # the weight's path adds (plain - plain.detach()) to the activation's output: inf - inf made it NaN where the
    # value overflows, and the logits NaN where PyTorch's are finite (tanh of it)
    from rectgrad.engine import Options, Rule, RuleMode

    class Overflowing(_InputSlopePReLU):
        def forward(self, x):
            return torch.tanh(F.prelu(self.a(x) * 3e38 * 10, torch.sigmoid(x.mean()).reshape(1)))

    torch.manual_seed(0)
    model, x = Overflowing().eval(), torch.randn(3, 5)
    assert not (model.a(x) * 3e38 * 10).isfinite().all()
    for rule in (Rule(q=98), Rule(score="pr4", tau=0.0, relu_gate=True)):
        with RuleMode(Options(rule=rule), batch=len(x)):
            logits = model(x.clone().requires_grad_())
        assert torch.equal(logits, model(x))


@pytest.mark.parametrize("inplace", [False, True])
def test_rrelu_in_training_mode_keeps_the_slopes_of_its_forward_pass(inplace):
    # nn.RReLU in train mode draws a random slope per unit: the rules must not draw other ones for the backward pass
    torch.manual_seed(5)
    model = nn.Sequential(nn.Linear(6, 12), nn.RReLU(0.1, 0.3, inplace=inplace), nn.Linear(12, 3)).double().train()
    with torch.no_grad():
        model[2].weight.abs_()  # every incoming gradient positive: Guided BP passes every unit, as the gradient does
    x = torch.randn(4, 6, dtype=torch.float64) * 3
    x_ = x.clone().requires_grad_()
    torch.manual_seed(9)
    (plain,) = torch.autograd.grad(model(x_)[:, 1].sum(), x_)
    for call, expected in ((lambda: RectGrad(model).attribute(x, target=1, tau=-1e30, final_threshold=False),
                            x * plain), (lambda: GuidedBackprop(model).attribute(x, target=1), plain)):
        torch.manual_seed(9)  # the slopes of the plain forward pass
        with pytest.warns(UserWarning, match="training mode: RReLU draws random slopes"):
            torch.testing.assert_close(call(), expected)
    with pytest.warns(UserWarning, match="training mode"), pytest.raises(ValueError, match="deeplift compares each "
                                                                        "input with its reference.*call model.eval"):
        rectgrad.explain(model, x, target=1, method="deeplift")
    assert model.training


def test_rrelu_in_training_mode_draws_from_the_generator_it_is_given():
    # torch.rrelu's fifth positional argument is a generator (F.rrelu's is inplace): its slopes come from it, and
    # the global random stream moves as after a plain forward pass
    torch.manual_seed(5)
    first, last = nn.Linear(6, 12).double(), nn.Linear(12, 3).double()
    x = torch.randn(4, 6, dtype=torch.float64) * 3
    generator = torch.Generator()
    for act in (lambda h: torch.rrelu(h, 0.1, 0.3, True, generator), lambda h: torch.rrelu_(h, 0.1, 0.3, True,
                                                                                           generator),
                lambda h: torch.rrelu(h, 0.1, 0.3, True, generator=generator), lambda h: F.rrelu(h, 0.1, 0.3, True),
                lambda h: torch.ops.aten.rrelu(h, 0.1, 0.3, True, generator)):  # (as an exported program calls it)
        model = lambda t: last(act(first(t)))  # noqa: E731
        x_ = x.clone().requires_grad_()
        torch.manual_seed(1), generator.manual_seed(7)
        (plain,) = torch.autograd.grad(model(x_)[:, 1].sum(), x_)
        after_plain = torch.rand(3)
        torch.manual_seed(1), generator.manual_seed(7)
        torch.testing.assert_close(RectGrad(model).attribute(x, target=1, tau=-1e30, final_threshold=False), x * plain)
        assert torch.equal(torch.rand(3), after_plain)


def test_guided_backprop_follows_relu6_where_captum_does_not():
    torch.manual_seed(6)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU6(), nn.Flatten(), nn.Linear(8 * 6 * 6, 4)).eval()
    x = torch.randn(2, 3, 8, 8) * 4
    x_ = x.clone().requires_grad_()
    (plain,) = torch.autograd.grad(model(x_)[:, 0].sum(), x_)
    assert not torch.allclose(GuidedBackprop(model).attribute(x, target=0), plain)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert torch.allclose(captum_attr.GuidedBackprop(model).attribute(x, target=0), plain)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_dtypes(dtype):
    torch.manual_seed(7)
    model = PaperCNN(in_channels=1, image_size=28).to(dtype).eval()
    x = torch.randn(3, 1, 28, 28, dtype=dtype)
    attribution = RectGrad(model).attribute(x, q=98.0, prr=True, padding_trick=True)
    assert attribution.dtype == dtype and attribution.shape == x.shape
    assert torch.isfinite(attribution.float()).all() and (attribution > 0).any()
    if dtype == torch.float32:  # same map as in float64 (no threshold sits within rounding of a score here)
        reference = RectGrad(model.double()).attribute(x.double(), q=98.0, prr=True, padding_trick=True)
        model.float()
        torch.testing.assert_close(attribution.double(), reference, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_scores_are_compared_in_float32(dtype):
    # scores a * R: (1 + e)^2 beats 1 + 2e by e^2, which the product rounded to the model's dtype loses (a tie at the
    # threshold: nothing would pass); with q = 74 over 4 units only the first one passes
    e = torch.finfo(dtype).eps
    model = nn.Sequential(nn.ReLU(), nn.Linear(4, 2, bias=False)).to(dtype)
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[1 + e, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]]))
    x = torch.tensor([[1 + e, 1 + 2 * e, 0.5, 0.25]], dtype=dtype)
    attribution = RectGrad(model).attribute(x, target=0, q=74.0, final_threshold=False)
    assert torch.equal(attribution != 0, torch.tensor([[True, False, False, False]]))


class _Float64ThenFloat32(nn.Module):
    """relu(x) in float64, then a float32 part: relu(W a) with W = [[1, 0], [0, 1], [1, 0], [0, 1]], and w = (1, 1, 2,
    2) to the logit."""

    def forward(self, x):
        w = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
        h = torch.relu(torch.relu(x).float() @ w.T)
        return h @ torch.tensor([[1.0], [1.0], [2.0], [2.0]])


def test_a_float64_layer_after_a_float32_one_keeps_its_scores_in_float64():
    # the backward pass gates the float32 ReLU first (scores h R = (1, 1, 2, 2), q = 0: the last two pass, R = 2 back
    # to both units of the float64 ReLU), then the float64 one: its scores 2 and 2 (1 + 2^-40) differ only in float64,
    # so the second alone beats the minimum (the scratch buffer of float32 scores must not be reused for them: both
    # would round to 2, a tie passing nothing)
    x = torch.tensor([[1.0, 1.0 + 2.0**-40]], dtype=torch.float64)
    grad = _rule_gradient(_Float64ThenFloat32(), x, Rule(q=0.0))
    assert grad.dtype == torch.float64 and grad.tolist() == [[0.0, 2.0]]


def test_two_threads_with_different_q_match_sequential_results(cnn, batch):
    x, y = batch
    expected = {q: RectGrad(cnn).attribute(x, target=y, q=q) for q in (90.0, 99.0)}
    results, errors = {}, []

    def work(q):
        try:
            for i in range(3):
                results[(q, i)] = RectGrad(cnn).attribute(x, target=y, q=q)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(q,)) for q in expected]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for (q, _), value in results.items():
        assert torch.equal(value, expected[q])
    assert not torch.equal(expected[90.0], expected[99.0])


def _counting_compiler(compiles: list):
    def backend(graph, example_inputs):  # counts compilations, runs the captured graph as it is
        compiles.append(graph)
        return graph.forward
    return backend


needs_stance = pytest.mark.skipif(not hasattr(torch.compiler, "set_stance"), reason="torch < 2.6: no force_eager")


@needs_stance
def test_exported_models_get_the_same_maps(cnn, batch):
    # torch.export: the program calls ATen operations (aten.relu.default, aten.conv2d.default, ...)
    x, y = batch
    samples = torch.export.Dim("samples", min=1, max=64)  # DeepLIFT runs inputs and references as one batch
    exported = torch.export.export(cnn, (x,), dynamic_shapes=({0: samples},)).module()
    for method in ("rectgrad", "rectgrad_prr", "guided_bp", "deconv", "deeplift", "eps_lrp"):
        assert torch.equal(rectgrad.explain(exported, x, target=y, method=method),
                           rectgrad.explain(cnn, x, target=y, method=method)), method


@pytest.mark.parametrize("method, images", [("deeplift", 2), ("smoothgrad", 2), ("intgrad", 2), ("rectgrad", 3)])
def test_an_exported_program_of_fixed_batch_size_says_how_to_export_it(method, images):
    # exported without dynamic_shapes, the program asserts its batch size: PyTorch's raw "Guard failed" came through
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(32, 3)).eval()
    exported = torch.export.export(model, (torch.randn(2, 1, 4, 4),)).module()
    with pytest.raises(ValueError, match=r"exported program of fixed shapes.*dynamic_shapes=\(\{0: torch.export"
                                         r".*\(PyTorch: Guard failed"):
        rectgrad.explain(exported, torch.randn(images, 1, 4, 4), target=0, method=method)


def test_an_exported_program_with_a_bounded_batch_run_past_its_bound_says_to_bound_internal_batch_size():
    # Dim("batch", max=64) past its bound (SmoothGrad's 2 x 50 noisy copies): internal_batch_size=64 gives the maps
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(32, 3)).eval()
    x = torch.randn(2, 1, 4, 4)
    exported = torch.export.export(model, (x,), dynamic_shapes=({0: torch.export.Dim("batch", max=64)},)).module()
    torch.testing.assert_close(rectgrad.explain(exported, x, target=0, method="smoothgrad", seed=0,
                                                internal_batch_size=64),
                               rectgrad.explain(model, x, target=0, method="smoothgrad", seed=0))
    with pytest.raises(ValueError, match=r"an exported program whose batch is bounded at 64, run here on a larger "
                                         r"batch .*: pass internal_batch_size=64 \(CLI: --internal-batch-size 64\) "
                                         r"\(PyTorch: Guard failed: .*<= 64\)$"):
        rectgrad.explain(exported, x, target=0, method="smoothgrad", seed=0)



def test_deeplift_on_an_exported_program_with_a_bounded_batch_is_told_half_the_bound():
    # DeepLIFT runs each input with its reference: internal_batch_size=8 makes passes of 16 on a program bounded at 8,
    # so the advice to pass 8 failed again with the same advice
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(32, 3)).eval()
    x = torch.randn(6, 1, 4, 4)
    exported = torch.export.export(model, (x[:2],), dynamic_shapes=({0: torch.export.Dim("batch", max=8)},)).module()
    for internal_batch_size in (None, 8):
        with pytest.raises(ValueError, match=r"bounded at 8, .*: pass internal_batch_size=4 \(CLI: "
                                             r"--internal-batch-size 4\) \(DeepLIFT runs each input with its "
                                             r"reference: passes of 8"):
            rectgrad.explain(exported, x, target=0, method="deeplift", internal_batch_size=internal_batch_size)
    torch.testing.assert_close(rectgrad.explain(exported, x, target=0, method="deeplift", internal_batch_size=4),
                               rectgrad.explain(model, x, target=0, method="deeplift"))

class _TextCNN(nn.Module):
    """Conv1d over time, then a global max over time written one of several ways."""

    def __init__(self, pool):
        super().__init__()
        self.conv, self.fc, self.pool = nn.Conv1d(4, 6, 3, padding=1), nn.Linear(6, 3), pool

    def forward(self, x):
        return self.fc(self.pool(torch.relu(self.conv(x))))


def test_keyword_inputs_and_builtin_max_pools_follow_the_padding_trick_and_prr():
    torch.manual_seed(0)
    x, options = torch.randn(3, 4, 9, dtype=torch.float64), {"q": 50.0, "padding_trick": True, "prr": True}
    model = _TextCNN(lambda h: F.adaptive_max_pool1d(h, 1).squeeze(-1)).double().eval()
    expected = RectGrad(model).attribute(x, target=1, **options)
    keyword = _TextCNN(lambda h: F.adaptive_max_pool1d(h, 1).squeeze(-1)).double().eval()
    keyword.load_state_dict(model.state_dict())
    keyword.forward = lambda t: keyword.fc(keyword.pool(torch.relu(F.conv1d(
        input=t, weight=keyword.conv.weight, bias=keyword.conv.bias, padding=1))))
    builtin = _TextCNN(lambda h: torch.adaptive_max_pool1d(h, 1)[0].squeeze(-1)).double().eval()  # values, indices
    builtin.load_state_dict(model.state_dict())
    for other in (keyword, builtin):
        assert torch.equal(RectGrad(other).attribute(x, target=1, **options), expected)
    reduced = _TextCNN(lambda h: torch.max(h, -1)[0]).double().eval()
    reduced.load_state_dict(model.state_dict())
    for pool in (lambda h: torch.max(h, -1)[0], lambda h: torch.amax(input=h, dim=-1)):
        reduced.pool = pool
        with pytest.warns(UserWarning, match=r"max\(x, dim\) over a feature map's .*: if it is a max-pool .*PRR "
                                             r"does not reach it"):
            RectGrad(reduced).attribute(x, target=1, **options)
    reduced.pool = lambda h: (h - h.amax(-1, keepdim=True)).softmax(-1).sum(-1)  # a stable softmax: no max-pool
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        RectGrad(reduced).attribute(x, target=1, **options)
        # no max-pool either: maxima over the channels, the channels and time, every dimension (dim=()), of the
        # weights alone; nor a max over time without PRR, which then has nothing to miss
        weight = reduced.conv.weight
        for pool in (lambda h: (h * torch.amax(h, 1)[:, None]).mean(-1), lambda h: torch.max(h, 1)[0][:, :6],
                     lambda h: h.mean(-1) * torch.amax(h, (1, 2))[:, None], lambda h: h.mean(-1) * torch.amax(h, ()),
                     lambda h: h.mean(-1) * torch.amax(weight.abs(), -1).sum(1)):
            reduced.pool = pool
            RectGrad(reduced).attribute(x, target=1, **options)
        reduced.pool = lambda h: torch.max(h, -1)[0]
        RectGrad(reduced).attribute(x, target=1, q=50.0, padding_trick=True)
    with_indices = _TextCNN(lambda h: torch.max_pool1d_with_indices(h, 9)[0].squeeze(-1)).double().eval()
    with pytest.raises(ValueError, match="does not support max_pool1d_with_indices"):
        RectGrad(with_indices).attribute(x, target=1, **options)


EXPORTED_ACTIVATIONS = [nn.ELU(), nn.ELU(inplace=True), nn.SELU(), nn.SELU(inplace=True), nn.CELU(), nn.PReLU(),
                        nn.Threshold(0.1, 0.0), nn.RReLU(), nn.LeakyReLU(0.1, inplace=True), nn.ReLU6(inplace=True),
                        nn.SiLU(inplace=True), nn.Hardswish(inplace=True), nn.Mish(inplace=True), nn.GELU("tanh")]


@needs_stance
@pytest.mark.parametrize("activation", EXPORTED_ACTIVATIONS, ids=repr)
def test_exported_activations_and_adaptive_max_pools_follow_the_rules(activation):
    # each exports as its own ATen operation (aten.elu_, aten.prelu, ...); aten's adaptive max-pool returns indices too
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), activation, nn.AdaptiveMaxPool2d(2), nn.Flatten(),
                          nn.Linear(16, 3)).eval()
    x = torch.randn(2, 3, 8, 8)
    exported = torch.export.export(model, (x,), dynamic_shapes=({0: torch.export.Dim("batch")},)).module()
    for options in ({"tau": 0.0}, {"q": 50.0, "prr": True, "padding_trick": True}):
        expected = RectGrad(model).attribute(x, target=1, final_threshold=False, **options)
        assert torch.equal(RectGrad(exported).attribute(x, target=1, final_threshold=False, **options), expected)
    assert torch.equal(GuidedBackprop(exported).attribute(x, target=1), GuidedBackprop(model).attribute(x, target=1))


class _AtenGelu(nn.Module):
    def forward(self, x):
        return torch.ops.aten.gelu_(x * 1.0)  # as an exported program may call it


class _AddmmHead(nn.Module):
    """A dense layer written with torch.addmm, as Hugging Face's Conv1D is."""

    def __init__(self):
        super().__init__()
        self.weight, self.bias = nn.Parameter(torch.randn(192, 3)), nn.Parameter(torch.zeros(3))

    def forward(self, x):
        return torch.addmm(self.bias, x.flatten(1), self.weight)


def test_aten_gelu_in_place_and_addmm_follow_the_rules():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 8)
    conv, head = nn.Conv2d(3, 3, 3, padding=1), _AddmmHead()
    plain, aten = (nn.Sequential(conv, activation, head).eval() for activation in (nn.GELU(), _AtenGelu()))
    samples = torch.export.Dim("samples", min=1, max=64)
    exported = torch.export.export(aten, (x,), dynamic_shapes=({0: samples},)).module()
    for method in ("rectgrad", "guided_bp", "deeplift"):
        expected = rectgrad.explain(plain, x, target=1, method=method)
        assert torch.equal(rectgrad.explain(aten, x, target=1, method=method), expected), method
        assert torch.equal(rectgrad.explain(exported, x, target=1, method=method), expected), method


@needs_stance
def test_decomposed_exported_programs_get_the_same_maps_or_a_clear_error(cnn, batch):
    x, y = batch
    samples = torch.export.Dim("samples", min=1, max=64)
    decomposed = torch.export.export(cnn, (x,), dynamic_shapes=({0: samples},)).run_decompositions().module()
    for method in ("rectgrad", "guided_bp", "deconv", "deeplift", "eps_lrp"):  # aten.convolution: padding trick too
        assert torch.equal(rectgrad.explain(decomposed, x, target=y, method=method),
                           rectgrad.explain(cnn, x, target=y, method=method)), method
    padded = torch.export.export(SeparatelyPadded(cnn), (x,), dynamic_shapes=({0: samples},))  # aten.constant_pad_nd
    torch.testing.assert_close(rectgrad.explain(padded.run_decompositions().module(), x, target=y, method="rectgrad"),
                               rectgrad.explain(cnn, x, target=y, method="rectgrad"), rtol=1e-9, atol=1e-12)
    with pytest.raises(ValueError, match="does not support max_pool2d_with_indices .*decomposed to core ATen"):
        rectgrad.explain(decomposed, x, target=y, method="rectgrad_prr")
    silu = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.SiLU(), nn.Flatten(), nn.Linear(256, 3)).eval()
    split = torch.export.export(silu, (x[:, :, :8, :8].float(),), dynamic_shapes=({0: samples},))
    for method in ("rectgrad", "guided_bp", "deeplift"):
        with pytest.raises(ValueError, match=r"computes aten.silu.default by other operations \(aten.sigmoid.default"):
            rectgrad.explain(split.run_decompositions().module(), x[:, :, :8, :8].float(), target=1, method=method)
    rectgrad.explain(split.module(), x[:, :, :8, :8].float(), target=1, method="rectgrad")  # not decomposed: fine


def test_compiled_models_get_the_same_maps_and_stay_compiled(cnn, batch):
    x, y = batch
    torch.compiler.reset()
    compiles = []
    compiled = torch.compile(cnn, backend=_counting_compiler(compiles))
    nested = nn.Sequential(torch.compile(cnn.features, backend=_counting_compiler(compiles)), cnn.classifier)
    for model in (compiled, nested):
        model(x)
        with torch.no_grad():  # as rectgrad.explain predicts the classes
            model(x)
    assert len(compiles) == 4
    for method in ("rectgrad", "rectgrad_prr", "guided_bp", "deconv", "eps_lrp", "deeplift"):
        expected = rectgrad.explain(cnn, x, target=y, method=method)
        assert torch.equal(rectgrad.explain(compiled, x, target=y, method=method), expected)
        assert torch.equal(rectgrad.explain(nested, x, target=y, method=method), expected)
    assert len(compiles) == 4  # the rules saw the Python code run: nothing traced or compiled meanwhile

    class Broken(nn.Module):
        def forward(self, inputs):
            raise RuntimeError("broken")

    with pytest.raises(RuntimeError, match="broken"):
        RectGrad(nn.Sequential(compiled, Broken())).attribute(x, target=y)
    compiled(x[:2])
    assert len(compiles) == 5  # and afterwards, also after an error, the compiler works as before


@needs_stance
def test_overlapping_calls_leave_the_compiler_as_it_was(cnn, batch):
    x, y = batch
    first_inside, both_inside = threading.Event(), threading.Barrier(2, timeout=30)

    class Meet(nn.Module):  # the first call enters first and leaves first, while the second is inside
        def forward(self, inputs):
            if threading.current_thread().name == "first":
                first_inside.set()
                both_inside.wait()
            else:
                both_inside.wait()
                time.sleep(0.3)
            return inputs

    model, maps = nn.Sequential(Meet(), cnn), {}
    first = threading.Thread(target=lambda: maps.update(first=RectGrad(model).attribute(x, target=y)), name="first")
    second = threading.Thread(target=lambda: (first_inside.wait(30), maps.update(
        second=RectGrad(model).attribute(x, target=y))), name="second")
    for thread in (first, second):
        thread.start()
    for thread in (first, second):
        thread.join()
    assert torch.equal(maps["first"], maps["second"])
    torch.compiler.reset()
    compiles = []
    torch.compile(lambda t: t * 2, backend=_counting_compiler(compiles))(x)
    assert len(compiles) == 1  # not stuck in the stance of the first call to enter, which left first


def test_captum_wrappers_and_metrics_accept_rectgrad(cnn, batch):
    x, y = batch
    method = RectGrad(cnn)
    smooth = captum_attr.NoiseTunnel(method).attribute(x[:2], nt_type="smoothgrad", nt_samples=3, stdevs=0.1,
                                                       target=y[:2])
    assert smooth.shape == x[:2].shape and (smooth > 0).any()
    assert sensitivity_max(method.attribute, x[:2], target=y[:2], n_perturb_samples=2).shape == (2,)

    def perturb(inputs):
        noise = torch.randn_like(inputs) * 0.01
        return noise, inputs - noise

    maps = method.attribute(x[:2], target=y[:2])
    assert infidelity(cnn, perturb, x[:2], maps, target=y[:2], n_perturb_samples=2).shape == (2,)


def test_rectgrad_multiplies_by_inputs_as_captum_expects_of_x_times_gradient_methods():
    # Captum's wrappers (NoiseTunnel, infidelity's normalisation) read this: True for x * R, False for the
    # modified gradients, as Captum's own InputXGradient and GuidedBackprop say
    model = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 2))
    assert RectGrad(model).multiplies_by_inputs is captum_attr.InputXGradient(model).multiplies_by_inputs is True
    assert GuidedBackprop(model).multiplies_by_inputs is captum_attr.GuidedBackprop(model).multiplies_by_inputs
    assert Deconvolution(model).multiplies_by_inputs is False


def test_one_class_for_every_sample_as_captum_writes_it(cnn, batch):
    # Captum's NoiseTunnel and sensitivity_max expand a batch of one, but not a one-element tensor target nor a tuple
    x, y = batch
    one, noise = x[:1], captum_attr.NoiseTunnel(GuidedBackprop(cnn))
    for target in (torch.tensor([3]), np.array([3]), (3,), [(3,)] * 6):
        assert torch.equal(RectGrad(cnn).attribute(x, target=target), RectGrad(cnn).attribute(x, target=3))
        torch.manual_seed(0)
        smooth = noise.attribute(one, nt_samples=2, stdevs=0.1, target=target if len(target) == 1 else 3)
        torch.manual_seed(0)
        torch.testing.assert_close(smooth, noise.attribute(one, nt_samples=2, stdevs=0.1, target=3), rtol=0, atol=0)
    assert sensitivity_max(RectGrad(cnn).attribute, one, target=torch.tensor([3]), n_perturb_samples=2).shape == (1,)
    assert torch.equal(rectgrad.explain(cnn, x, target=(3,), method="guided_bp"),
                       rectgrad.explain(cnn, x, target=3, method="guided_bp"))
    with pytest.raises(ValueError, match=r"target \(1, 2\) is a tuple, which Captum reads as one index per output"):
        RectGrad(cnn).attribute(x[:2], target=(1, 2))


def test_tuple_inputs_and_additional_forward_args():
    torch.manual_seed(8)

    class TwoInputs(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(3, 6), nn.Linear(2, 6)
            self.out, self.relu = nn.Linear(6, 4), nn.ReLU()  # a module: Captum's hooks need one

        def forward(self, x, z, scale):
            return self.out(self.relu(self.a(x) + self.b(z))) * scale

    model = TwoInputs().double()
    x, z = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 2, dtype=torch.float64)
    ax, az = RectGrad(model).attribute((x, z), target=1, additional_forward_args=(2.0,), tau=0.0)
    gx, gz = captum_attr.GuidedBackprop(model).attribute((x, z), target=1, additional_forward_args=(2.0,))
    torch.testing.assert_close(ax, (gx * x).clamp(min=0))
    torch.testing.assert_close(az, (gz * z).clamp(min=0))


def test_layer_larger_than_torch_quantile_limit():
    # 64 x 520 x 520 > 2^24 units in one layer of one sample: torch.quantile would refuse
    model = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(64 * 520 * 520, 2))
    x = torch.randn(1, 3, 520, 520)
    attribution = RectGrad(model).attribute(x, target=0, q=98.0, final_threshold=False)
    assert 64 * 520 * 520 > 2 ** 24 and torch.count_nonzero(attribution) > 0
    expected = naive_rectgrad(model, x, torch.tensor([0]), q=98.0, final_threshold=False)
    torch.testing.assert_close(attribution, expected)


# The engine's rules in cases the tests above leave open (found by mutation testing of engine.py / operations.py)


def _rule_gradient(model, x, rule, target=0, **options):
    """The gradient of logit ``target`` with respect to ``x`` under the engine's ``rule`` (no final x * ...)."""
    x = x.clone().requires_grad_()
    with RuleMode(Options(rule=rule, **options), batch=len(x)):
        out = model(x)
    (grad,) = torch.autograd.grad(out[:, target].sum(), x)
    return grad


def _above_percentile(scores, q):
    tau = np.percentile(scores.reshape(len(scores), -1).numpy(), q, axis=1, method="nearest")
    return scores > torch.from_numpy(tau).reshape(-1, *[1] * (scores.dim() - 1))


def test_a_percentile_rule_with_the_relu_gate_blocks_inactive_units_even_below_a_negative_threshold():
    # Rule(q, relu_gate=True): R_in = 1[a R > tau] 1[a > 0] R. With R = -1 at every unit and 5% inactive ones, the
    # 90th percentile of the scores -a is negative: the inactive units' score 0 beats it, yet the gate blocks them
    torch.manual_seed(0)
    x = torch.rand(3, 40, dtype=torch.float64) + 0.1
    x[:, ::20] = -1.0  # inactive
    model = nn.Sequential(nn.ReLU(), nn.Linear(40, 1, bias=False)).double()
    with torch.no_grad():
        model[1].weight.fill_(-1.0)
    r = -torch.ones_like(x)
    a = torch.relu(x)
    keep = _above_percentile(a * r, 90.0)
    assert keep[:, ::20].all()  # without the gate the inactive units would pass
    gated = _rule_gradient(model, x, Rule(q=90.0, relu_gate=True))
    torch.testing.assert_close(gated, torch.where(keep & (a > 0), r, 0.0), rtol=0, atol=0)
    ungated = _rule_gradient(model, x, Rule(q=90.0))
    torch.testing.assert_close(ungated, torch.where(keep, r, 0.0), rtol=0, atol=0)


@pytest.mark.parametrize("rule", ["pr2", "pr3", "pr4"])
@pytest.mark.parametrize("activation", [nn.LeakyReLU(0.1), nn.ELU(), nn.GELU()], ids=repr)
def test_every_score_gates_the_derivative_of_activations_going_negative(rule, activation):
    # the scores of Sec. 4.1 at an activation whose output a and gradient R take both signs (PR2 |a R|, PR3 a,
    # PR4 R; PR1 is checked above): R_in = 1[score > per-sample median] f'(z) R, by hand
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(6, 12), activation, nn.Linear(12, 3)).double()
    x = torch.randn(4, 6, dtype=torch.float64) * 3
    ours = RectGrad(model).attribute(x, target=1, q=50.0, rule=rule, final_threshold=False)
    z = model[0](x).detach().requires_grad_()
    a = activation(z)
    r = model[2].weight[1].detach().expand(4, 12)
    scores = {"pr2": (a.detach() * r).abs(), "pr3": a.detach(), "pr4": r}[rule]
    assert (a < 0).any() and (r < 0).any()
    (local,) = torch.autograd.grad(a, z, r * _above_percentile(scores, 50.0))
    torch.testing.assert_close(ours, x * (local @ model[0].weight), rtol=1e-12, atol=1e-14)


def test_deeplift_takes_the_secant_where_input_and_reference_differ_by_more_than_1e_6():
    # Rescale: (f(z) - f(z0)) / (z - z0) as soon as |z - z0| > 1e-6 (the midpoint derivative only below): a ReLU
    # unit with z = 5e-6, z0 = -5e-6 gets the secant 0.5, so the map x - x0 times it is 5e-6 = relu(z) - relu(z0)
    # (f'(0) = 0 at the midpoint would give 0)
    model = nn.Sequential(nn.Linear(1, 1, bias=False), nn.ReLU(), nn.Linear(1, 2, bias=False)).double()
    with torch.no_grad():
        model[0].weight.fill_(1.0), model[2].weight.copy_(torch.tensor([[1.0], [0.0]]))
    x = torch.tensor([[5e-6]], dtype=torch.float64)
    maps = rectgrad.explain(model, x, target=0, method="deeplift", baseline=-5e-6)
    torch.testing.assert_close(maps, torch.tensor([[5e-6]], dtype=torch.float64), rtol=1e-9, atol=0)


def test_prr_regularises_by_the_mean_over_the_window_without_its_padding():
    # Listing 3: R_in = x * avgpool_backward(R / (avgpool(x) + 1e-10)) with the average over the window's own inputs
    # (TensorFlow's SAME average pool leaves padding out): one 3 x 3 window (padding 1) over a 2 x 2 map of 1e-10
    # passes each input x / (4 x + 4e-10) R = R / 8 (counting the 5 padded pixels: 1e-10 / 1.3e-9 = R / 13)
    model = nn.Sequential(nn.ReLU(), nn.MaxPool2d(3, stride=3, padding=1), nn.Flatten(), nn.Linear(1, 2, bias=False))
    model = model.double()
    with torch.no_grad():
        model[3].weight.copy_(torch.tensor([[1.0], [0.0]]))
    x = torch.full((1, 1, 2, 2), 1e-10, dtype=torch.float64)
    grad = _rule_gradient(model, x, Rule(tau=-1e30), prr=True)
    torch.testing.assert_close(grad, torch.full_like(x, 1 / 8), rtol=1e-12, atol=0)


class ChannelPadded(nn.Module):
    """A SAME (padding=1) convolution of a map whose channels a zero ``F.pad`` padded (a CIFAR ResNet's "option A"
    shortcut pads them so)."""

    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(4, 3, 3, padding=1), nn.Linear(3 * 5 * 5, 2)
        self.r1, self.r2 = nn.ReLU(), nn.ReLU()  # modules, for the naive implementation's hooks

    def forward(self, x):
        return self.fc(self.r2(self.conv(F.pad(self.r1(x), (0, 0, 0, 0, 1, 1)))).flatten(1))


def test_padding_trick_reaches_a_same_conv_whose_input_a_pad_widened_in_channels_only():
    # a zero F.pad of the channels alone does not make the convolution SAME, nor does it make a SAME one VALID
    torch.manual_seed(5)
    model, x, y = ChannelPadded().double(), torch.randn(3, 2, 5, 5, dtype=torch.float64), torch.tensor([0, 1, 1])
    ours = RectGrad(model).attribute(x, target=y, q=60.0, padding_trick=True)
    torch.testing.assert_close(ours, naive_rectgrad(model, x, y, q=60.0, padding_trick=True), rtol=1e-9, atol=1e-12)
    assert not torch.equal(ours, RectGrad(model).attribute(x, target=y, q=60.0))


def _summed_relu(conv):
    """A model summing ReLU(conv(x)) into class 0 (class 1: zero); positive input, weights and bias keep every unit
    on and let every unit pass at tau = -1e9, so RectGrad's map is x times the plain gradient of that sum, with the
    conv output's gradient border zeroed where the padding trick applies."""

    class Summed(nn.Module):
        def forward(self, x):
            return torch.cat([F.relu(conv(x)).flatten(1).sum(1, keepdim=True), torch.zeros(len(x), 1)], 1)

    return Summed()


def _by_hand(conv, x, zeroed: bool):
    # x times the gradient of sum(conv(x) * mask), mask: ones, its 1-pixel border zeroed along each spatial dimension
    # longer than 1 if ``zeroed`` (Listing 2's slice of the gradient, computed here by plain autograd)
    xx = x.clone().requires_grad_()
    z = conv(xx)
    mask = torch.ones_like(z)
    if zeroed:
        for dim in range(2, z.dim()):
            if z.shape[dim] > 1:
                mask.narrow(dim, 0, 1).zero_()
                mask.narrow(dim, z.shape[dim] - 1, 1).zero_()
    (grad,) = torch.autograd.grad((z * mask).sum(), xx)
    return x * grad


def _positive(*shape):
    return torch.rand(*shape, dtype=torch.float64) + 0.1


def _padding_cases():
    """(convolution, whether the trick zeroes its output's border, input shape) by name; made under a fixed seed."""
    w2, w1, w3, b = _positive(2, 2, 3, 3), _positive(2, 2, 3), _positive(2, 2, 3, 3, 3), torch.ones(2).double()

    def module(mode):
        conv = nn.Conv2d(2, 2, 3, padding=1, padding_mode=mode).double()
        with torch.no_grad():
            conv.weight.copy_(w2), conv.bias.copy_(b)
        return conv

    return {
        # SAME-padded whatever the stride or dilation: the output's border is zeroed
        "stride 2, padding 1": (lambda t: F.conv2d(t, w2, b, 2, 1), True, (2, 2, 7, 8)),
        "dilation 2, padding 2": (lambda t: F.conv2d(t, w2, b, 1, 2, 2), True, (2, 2, 6, 7)),
        "padding 'same', dilation 2": (lambda t: F.conv2d(t, w2, b, padding="same", dilation=2), True, (2, 2, 6, 7)),
        "1x1, stride 2": (lambda t: F.conv2d(t, w2[:, :, :1, :1], b, 2), True, (2, 2, 7, 8)),
        "keywords only": (lambda t: F.conv2d(input=t, weight=w2, bias=b, padding=1), True, (2, 2, 5, 6)),
        "1x1, keywords only": (lambda t: F.conv2d(input=t, weight=w2[:, :, :1, :1], bias=b), True, (2, 2, 5, 6)),
        "padding 'same', weight by keyword": (lambda t: F.conv2d(t, weight=w2, bias=b, padding="same"), True,
                                              (2, 2, 5, 6)),
        "1x1, padding 0": (lambda t: F.conv2d(t, w2[:, :, :1, :1], b, 1, 0), True, (2, 2, 5, 6)),
        # VALID: left alone, strided or not, and a conv with no padding argument at all
        "3x1, no padding": (lambda t: F.conv2d(t, w2[:, :, :, :1], b), False, (2, 2, 5, 6)),
        "3d, 3x1x1, no padding": (lambda t: F.conv3d(t, w3[:, :, :, :1, :1], b), False, (2, 2, 4, 5, 6)),
        "stride 2, padding 0": (lambda t: F.conv2d(t, w2, b, 2, 0), False, (2, 2, 7, 8)),
        "no padding argument": (lambda t: F.conv2d(t, w2, b), False, (2, 2, 5, 6)),
        "padding 'valid', keyword": (lambda t: F.conv2d(t, w2, b, padding="valid"), False, (2, 2, 5, 6)),
        # padded by a non-zero mode, by the conv module or a separate F.pad: no out-of-distribution zeros, left alone
        **{f"Conv2d padding_mode={mode}": (module(mode), False, (2, 2, 5, 6))
           for mode in ("reflect", "replicate", "circular")},
        **{f"F.pad mode={mode}": (lambda t, mode=mode: F.conv2d(F.pad(t, (1, 1, 1, 1), mode=mode), w2, b), False,
                                  (2, 2, 5, 6)) for mode in ("replicate", "circular")},
        # nn.ZeroPad2d, nn.ConstantPad2d(0) and F.pad with its mode and value given by position: zero pads
        "ZeroPad2d": (lambda t: F.conv2d(nn.ZeroPad2d(1)(t), w2, b), True, (2, 2, 5, 6)),
        "ConstantPad2d(1, 0.0)": (lambda t: F.conv2d(nn.ConstantPad2d(1, 0.0)(t), w2, b), True, (2, 2, 5, 6)),
        "F.pad, positional constant 0": (lambda t: F.conv2d(F.pad(t, (1, 1, 1, 1), "constant", 0.0), w2, b), True,
                                         (2, 2, 5, 6)),
        "F.pad, positional constant 0.5": (lambda t: F.conv2d(F.pad(t, (1, 1, 1, 1), "constant", 0.5), w2, b), False,
                                           (2, 2, 5, 6)),
        # a zero pad of one spatial dimension makes the conv SAME (Listing 2: its whole border is zeroed)
        "F.pad of the height only": (lambda t: F.conv2d(F.pad(t, (0, 0, 1, 1)), w2[:, :, :, :1], b), True,
                                     (2, 2, 5, 6)),
        "3d, F.pad of the depth only": (lambda t: F.conv3d(F.pad(t, (0, 0, 0, 0, 1, 1)), w3[:, :, :, :1, :1], b),
                                        True, (2, 2, 4, 5, 6)),
        # a negative "pad" crops: no zeros, the VALID conv after it is left alone
        "F.pad cropping": (lambda t: F.conv2d(F.pad(t, (-1, -1, -1, -1)), w2, b), False, (2, 2, 7, 8)),
        # a 1-d conv of a map whose channels alone a zero pad widened: VALID still; of its length: SAME
        "1d, F.pad of the channels": (lambda t: F.conv1d(F.pad(t, (0, 0, 1, 1)), w1.repeat(1, 2, 1), b), False,
                                      (2, 2, 7)),
        "1d, F.pad of the length": (lambda t: F.conv1d(F.pad(t, (1, 1)), w1, b), True, (2, 2, 7)),
    }


@pytest.mark.parametrize("case", [
    "stride 2, padding 1", "dilation 2, padding 2", "padding 'same', dilation 2", "1x1, stride 2", "keywords only",
    "1x1, keywords only", "padding 'same', weight by keyword", "1x1, padding 0", "3x1, no padding",
    "3d, 3x1x1, no padding", "ZeroPad2d", "ConstantPad2d(1, 0.0)", "F.pad, positional constant 0",
    "F.pad, positional constant 0.5",
    "stride 2, padding 0", "no padding argument", "padding 'valid', keyword", "Conv2d padding_mode=reflect",
    "Conv2d padding_mode=replicate", "Conv2d padding_mode=circular", "F.pad mode=replicate", "F.pad mode=circular",
    "F.pad of the height only", "3d, F.pad of the depth only", "F.pad cropping", "1d, F.pad of the channels",
    "1d, F.pad of the length"])
def test_padding_trick_zeroes_exactly_the_border_of_zero_padded_convolutions(case):
    # the trick zeroes the conv output gradient's 1-pixel border when the conv zero-pads (itself, or through a zero
    # F.pad of a spatial dimension), whatever its stride, dilation or spelling, and never otherwise
    torch.manual_seed(7)
    conv, zeroed, shape = _padding_cases()[case]
    x = _positive(*shape)
    ours = RectGrad(_summed_relu(conv)).attribute(x, target=0, tau=-1e9, padding_trick=True)
    torch.testing.assert_close(ours, _by_hand(conv, x, zeroed), rtol=1e-12, atol=1e-12)
    assert not torch.allclose(_by_hand(conv, x, True), _by_hand(conv, x, False))  # (the test can fail)


@pytest.mark.parametrize("conv, shape, sides", [(nn.Conv3d, (2, 1, 2, 4, 4), r"\(2, 4, 4\)"),
                                                (nn.Conv3d, (2, 1, 4, 4, 2), r"\(4, 4, 2\)"),
                                                (nn.Conv1d, (2, 1, 2), r"\(2,\)")],
                         ids=["3d depth 2", "3d width 2", "1d length 2"])
def test_padding_trick_on_a_side_it_covers_whole_is_a_warning_in_1d_and_3d(conv, shape, sides):
    # a side of 2 along any spatial dimension (the depth or width of a volume, a 1-d sequence) is all border:
    # all-zero maps, said so
    torch.manual_seed(6)
    model = nn.Sequential(conv(1, 2, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(2 * math.prod(shape[2:]), 3))
    with (pytest.warns(AttributionWarning, match="all zero"),
          pytest.warns(AttributionWarning, match=f"zeroes the whole gradient of a {sides} convolution output")):
        assert not RectGrad(model).attribute(torch.randn(*shape), target=0, q=50.0, padding_trick=True).any()


def test_padding_trick_leaves_the_gradient_of_a_skip_connection_around_the_conv_whole():
    # h = conv(x) + x: the sum's backward hands one gradient to both branches; the trick zeroes the border of the
    # conv's share only (by hand: x * (conv's gradient with its border zeroed + 1) at tau = -1e9), not the skip's
    torch.manual_seed(7)
    w, b, x = _positive(2, 2, 3, 3), torch.ones(2, dtype=torch.float64), _positive(2, 2, 5, 6)
    model = _summed_relu(lambda t: F.conv2d(t, w, b, padding=1) + t)
    ours = RectGrad(model).attribute(x, target=0, tau=-1e9, padding_trick=True)
    expected = _by_hand(lambda t: F.conv2d(t, w, b, padding=1), x, True) + x
    torch.testing.assert_close(ours, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("relu_", [torch.relu_, torch.Tensor.relu_, lambda h: F.relu(h, inplace=True),
                                   lambda h: F.relu(h, True), lambda h: torch.relu_(h[:, :4]),
                                   lambda h: h.view(2, 4).relu_()],
                         ids=["torch.relu_", "Tensor.relu_", "F.relu(inplace=True)", "F.relu(h, True)",
                              "relu_ of a slice", "relu_ of a view"])
def test_every_in_place_relu_of_the_input_is_refused_and_leaves_the_input_be(relu_):
    # each spelling of an in-place ReLU counts as in place (inplace given by position too), on the input or a view
    # of it: PyTorch refuses it on the input before changing it, where the rule's Function, run first, would zero
    # the caller's negative values (the leaf shares their storage)
    x = torch.tensor([[1.0, -2.0, 3.0, -4.0], [-1.0, 2.0, -3.0, 4.0]])
    given = x.clone()
    fc = nn.Linear(4, 3)
    with pytest.raises(ValueError, match="the model changes its input in place"):
        RectGrad(lambda t: fc(relu_(t))).attribute(x, target=0, q=50.0)
    assert torch.equal(x, given)


class _AtenTanhGelu(nn.Module):
    def forward(self, x):
        return torch.ops.aten.gelu_(x * 1.0, approximate="tanh")  # as an exported program may call it


def test_aten_gelu_in_place_keeps_its_tanh_approximation():
    torch.manual_seed(0)
    conv, head = nn.Conv2d(3, 3, 3, padding=1).double(), nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 3)).double()
    plain, aten = (nn.Sequential(conv, activation, head) for activation in (nn.GELU("tanh"), _AtenTanhGelu()))
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    assert not torch.allclose(plain(x), nn.Sequential(conv, nn.GELU(), head)(x), rtol=1e-9, atol=0)
    for attribution in (lambda m: RectGrad(m).attribute(x, target=1, q=50.0, final_threshold=False),
                        lambda m: GuidedBackprop(m).attribute(x, target=1)):
        assert torch.equal(attribution(aten), attribution(plain))


def test_an_activation_of_a_tensor_computed_from_parameters_alone_is_no_rule_site():
    # the walk back from relu(2 w) reaches the parameter w only: no input, so no site (it would be the one nearest
    # the output, and its dim 0 is no batch); the maps are those of relu(w), half of relu(2 w)
    torch.manual_seed(0)
    direct, computed = NonNegativeWeights(F.relu).double(), NonNegativeWeights(lambda w: F.relu(2 * w) / 2).double()
    computed.load_state_dict(direct.state_dict())
    x = torch.randn(4, 5, dtype=torch.float64)
    for kwargs in ({"rule": "mod", "q": 50.0}, {"tau": 0.0}):
        torch.testing.assert_close(RectGrad(computed).attribute(x, target=1, **kwargs),
                                   RectGrad(direct).attribute(x, target=1, **kwargs), rtol=1e-12, atol=0)


class _EinsumOfAList(nn.Module):
    """h * h written as torch.einsum with its operands in a list, the older spelling."""

    def __init__(self):
        super().__init__()
        self.a, self.o = nn.Linear(3, 4), nn.Linear(4, 2)

    def forward(self, x):
        h = torch.relu(self.a(x))
        return self.o(torch.einsum("bi,bi->bi", [h, h]))


@pytest.mark.parametrize("method", ["eps_lrp", "deeplift"])
def test_multiplier_rules_see_the_tensors_inside_a_list_argument(method):
    # the operands of einsum(equation, [h, h]) are in a list: a product of two input-dependent tensors all the same
    with pytest.raises(ValueError, match=r"product of two input-dependent tensors \(einsum"):
        rectgrad.explain(_EinsumOfAList(), torch.randn(2, 3), target=0, method=method)


class _PadConv3d(nn.Module):
    """A pad (value ``value``), a 3d convolution and a ReLU, written with ``F`` or, as a decomposed exported program
    calls them, with ``aten.constant_pad_nd`` and ``aten.convolution``."""

    def __init__(self, aten, value):
        super().__init__()
        self.aten, self.value = aten, value
        self.conv, self.fc = nn.Conv3d(2, 3, 3), nn.Linear(3 * 4 * 5 * 6, 2)

    def forward(self, x):
        w, b = self.conv.weight, self.conv.bias
        if self.aten:
            h = torch.ops.aten.constant_pad_nd(x, [1, 1, 1, 1, 1, 1], self.value)
            h = torch.ops.aten.convolution(h, w, b, [1, 1, 1], [0, 0, 0], [1, 1, 1], False, [0, 0, 0], 1)
        else:
            h = F.conv3d(F.pad(x, (1, 1, 1, 1, 1, 1), value=self.value), w, b)
        return self.fc(torch.relu(h).flatten(1))


@pytest.mark.parametrize("value", [0.0, 0.5])
def test_aten_convolution_and_constant_pad_are_the_functionals_they_stand_for(value):
    # aten.convolution with a 5-d weight is F.conv3d, aten.constant_pad_nd pads with its value: same maps (and the
    # padding trick applies after a zero pad only)
    torch.manual_seed(5)
    plain = _PadConv3d(False, value).double()
    aten = _PadConv3d(True, value).double()
    aten.load_state_dict(plain.state_dict())
    x = torch.randn(2, 2, 4, 5, 6, dtype=torch.float64)
    for kwargs in ({"q": 60.0}, {"q": 60.0, "padding_trick": True}):
        expected = RectGrad(plain).attribute(x, target=1, **kwargs)
        torch.testing.assert_close(RectGrad(aten).attribute(x, target=1, **kwargs), expected, rtol=1e-12, atol=0)
    assert torch.equal(expected, RectGrad(plain).attribute(x, target=1, q=60.0)) is (value != 0)


class _AtenSpellings(nn.Module):
    """A transposed convolution and a PReLU, written with ``F`` or with the ATen operations an exported program calls
    (``aten.convolution(transposed=True)``, ``aten._prelu_kernel``)."""

    def __init__(self, aten):
        super().__init__()
        self.aten = aten
        self.up, self.prelu, self.fc = nn.ConvTranspose2d(2, 3, 3), nn.PReLU(init=0.2), nn.Linear(3 * 5 * 5, 2)

    def forward(self, x):
        w, b, slope = self.up.weight, self.up.bias, self.prelu.weight
        if self.aten:
            h = torch.ops.aten.convolution(x, w, b, [1, 1], [0, 0], [1, 1], True, [0, 0], 1)
            h = torch.ops.aten._prelu_kernel(h, slope)
        else:
            h = F.prelu(F.conv_transpose2d(x, w, b), slope)
        return self.fc(h.flatten(1))


def test_aten_transposed_convolution_and_prelu_kernel_are_what_they_stand_for():
    torch.manual_seed(5)
    plain, aten = _AtenSpellings(False).double(), _AtenSpellings(True).double()
    aten.load_state_dict(plain.state_dict())
    x = torch.randn(2, 2, 3, 3, dtype=torch.float64)
    for kwargs in ({"q": 60.0}, {"q": 60.0, "padding_trick": True}):
        expected = RectGrad(plain).attribute(x, target=1, **kwargs)
        torch.testing.assert_close(RectGrad(aten).attribute(x, target=1, **kwargs), expected, rtol=1e-12, atol=0)


@pytest.mark.parametrize("activation, slope", [(nn.Sigmoid(), 1 / (1 + np.exp(1.0)) / (1 + np.exp(-1.0))),
                                               (nn.ELU(), np.exp(-1.0))], ids=["sigmoid", "elu"])
def test_deeplift_takes_the_activations_own_derivative_at_the_midpoint(activation, slope):
    # |z - z0| = 8e-7 < 1e-6 around z = +-1: the multiplier is f' at the midpoint, sigmoid'(1) = s(1) (1 - s(1)),
    # elu'(-1) = exp(-1), so the map is (x - x0) f'
    model = nn.Sequential(nn.Linear(1, 1, bias=False), activation, nn.Linear(1, 2, bias=False)).double()
    with torch.no_grad():
        model[0].weight.fill_(1.0), model[2].weight.copy_(torch.tensor([[1.0], [0.0]]))
    mid = 1.0 if isinstance(activation, nn.Sigmoid) else -1.0
    x = torch.tensor([[mid + 4e-7]], dtype=torch.float64)
    maps = rectgrad.explain(model, x, target=0, method="deeplift", baseline=mid - 4e-7)
    torch.testing.assert_close(maps, (x - (mid - 4e-7)) * slope, rtol=1e-9, atol=0)


def test_prr_on_an_adaptive_max_pool_returning_indices_keeps_its_values_and_indices():
    # torch.adaptive_max_pool1d (and an exported program's aten.adaptive_max_pool2d) return (values, indices): PRR
    # changes the backward pass of the values alone, the forward results are PyTorch's
    torch.manual_seed(0)
    x = torch.randn(2, 3, 10, dtype=torch.float64)
    h = torch.relu(x)
    expected = torch.adaptive_max_pool1d(h, 3)
    with RuleMode(Options(rule=Rule(tau=0.0), prr=True), batch=2):
        values, indices = torch.adaptive_max_pool1d(torch.relu(x.clone().requires_grad_()), 3)
    assert torch.equal(values, expected[0]) and indices.dtype == torch.int64 and torch.equal(indices, expected[1])
    assert values.grad_fn is not None


# Exploratory bug hunt (the attribution API with Captum): each xfail pins a bug found, and passes once it is fixed


def test_a_tuple_target_into_a_segmentation_output_names_the_output_whenever_it_is_read():
    torch.manual_seed(0)
    seg = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 1)).double().eval()
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    shape_error = r"got \(2, 2, 5, 5\); for Captum's tuple targets into more dimensions.*flatten\(1\)"
    with pytest.raises(ValueError, match=shape_error):  # without internal_batch_size: the output is named (works)
        RectGrad(seg).attribute(x, target=(1, 2, 3))
    for call in (lambda: RectGrad(seg).attribute(x, target=(1, 2, 3), internal_batch_size=1),
                 lambda: explain(seg, x, target=(1, 2, 3), method="rectgrad"),
                 lambda: explain(seg, x, target=(1, 2, 3), method="guided_bp")):
        with pytest.raises(ValueError) as error:
            call()
        assert "flatten(1)" in str(error.value)  # the way to explain this model, whoever checks first
        assert "output is (N, classes)" not in str(error.value)  # it is not


def test_a_model_with_a_lazy_batchnorm_is_explained_as_captum_explains_it():
    torch.manual_seed(0)

    def lazy():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(3, 4), nn.LazyBatchNorm1d(), nn.ReLU(), nn.Linear(4, 2)).double().eval()

    x = torch.randn(3, 3, dtype=torch.float64)
    expected = captum_attr.GuidedBackprop(lazy()).attribute(x, target=1)
    for call in (lambda: GuidedBackprop(lazy()).attribute(x, target=1),
                 lambda: explain(lazy(), x, target=1, method="guided_bp")):
        try:
            maps = call()
        except (TypeError, ValueError) as error:  # or a clear refusal: initialise the lazy modules first
            assert "lazy" in str(error).lower() and "detach" not in str(error)
        else:
            torch.testing.assert_close(maps, expected, rtol=0, atol=0)


class _EmptyPart(nn.Module):
    """An activation over an empty slice of features (a split whose second part has no channels)."""

    def __init__(self):
        super().__init__()
        self.a, self.out = nn.Linear(3, 4), nn.Linear(4, 2)

    def forward(self, x):
        h = self.a(x)
        return self.out(torch.cat([torch.relu(h[:, :4]), torch.relu(h[:, 4:])], 1))


def test_an_activation_over_an_empty_slice_passes_nothing_and_breaks_nothing():
    torch.manual_seed(3)
    model, x = _EmptyPart().double(), torch.randn(3, 3, dtype=torch.float64)
    plain = nn.Sequential(model.a, nn.ReLU(), model.out)  # the same network without the empty part
    guided = RectGrad(model).attribute(x, target=0, tau=0.0, final_threshold=False)  # passes
    assert guided.any() and torch.equal(guided, RectGrad(plain).attribute(x, target=0, tau=0.0, final_threshold=False))
    torch.testing.assert_close(RectGrad(model).attribute(x, target=0, q=50.0, final_threshold=False),
                               naive_rectgrad(plain, x, torch.zeros(3, dtype=torch.long), q=50.0,
                                              final_threshold=False), rtol=1e-12, atol=0)


def test_a_model_passed_in_additional_forward_args_is_left_as_it_was():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2)).double()  # train mode

    def forward(x, model):
        return model(x)

    x, before = torch.randn(3, 3, dtype=torch.float64), copy.deepcopy(net.state_dict())
    for call in (lambda: GuidedBackprop(forward).attribute(x, target=0, additional_forward_args=(net,)),
                 lambda: explain(forward, x, target=0, additional_forward_args=(net,), method="guided_bp"),
                 lambda: explain(forward, x, target=0, additional_forward_args=(net,), method="saliency")):
        with pytest.warns(AttributionWarning, match="the model is in training mode: BatchNorm1d"):
            call()
        assert all(torch.equal(value, net.state_dict()[name]) for name, value in before.items())


def _small_cnn():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(100, 6), nn.ReLU(),
                         nn.Linear(6, 3)).double().eval()


@pytest.mark.parametrize("nt_type", ["smoothgrad", "smoothgrad_sq", "vargrad"])
def test_noise_tunnel_over_rectgrad_is_the_statistic_of_rectgrad_on_captums_noisy_copies(nt_type):
    # Captum draws the noise (torch.normal, copy by copy for each partition of nt_samples_batch_size) and repeats
    # the targets; every noisy copy gets RectGrad's own map (its own per-sample percentiles), as the naive one
    model, x, y = _small_cnn(), torch.randn(2, 3, 5, 5, dtype=torch.float64), torch.tensor([0, 2])
    torch.manual_seed(1)
    smooth = captum_attr.NoiseTunnel(RectGrad(model)).attribute(
        x, nt_type=nt_type, nt_samples=4, nt_samples_batch_size=3, stdevs=0.2, target=y, q=50.0,
        final_threshold=False, internal_batch_size=5)
    torch.manual_seed(1)
    parts = []
    for k in (3, 1):  # Captum's partitions: 3 copies, then the remaining one
        noisy = x.repeat_interleave(k, 0) + torch.normal(0, torch.tensor(0.2).repeat((2 * k, 3, 5, 5)))
        parts.append(naive_rectgrad(model, noisy, y.repeat_interleave(k), q=50.0, final_threshold=False).view(
            2, k, 3, 5, 5))
    maps = torch.cat(parts, 1)
    mean, square = maps.mean(1), (maps ** 2).mean(1)
    expected = {"smoothgrad": mean, "smoothgrad_sq": square, "vargrad": square - mean ** 2}[nt_type]
    torch.testing.assert_close(smooth, expected, rtol=1e-12, atol=1e-15)
    assert expected.abs().sum() > 0


def test_noise_tunnel_over_modified_gradients_equals_captums_with_tuple_inputs_and_per_sample_arguments():
    torch.manual_seed(8)

    class TwoInputs(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.out, self.relu = nn.Linear(3, 8), nn.Linear(2, 8), nn.Linear(8, 4), nn.ReLU()

        def forward(self, x, z, weight, scale):
            return self.out(self.relu(self.a(x) * weight + self.b(z))) * scale

    model = TwoInputs().double()
    x, z = torch.randn(3, 3, dtype=torch.float64), torch.randn(3, 2, dtype=torch.float64)
    weight = torch.rand(3, 1, dtype=torch.float64) + 0.5  # one row per sample: Captum repeats it for the copies
    options = dict(nt_type="smoothgrad_sq", nt_samples=5, nt_samples_batch_size=2, stdevs=(0.1, 0.3), target=[1, 0, 3],
                   additional_forward_args=(weight, 2.0))
    for ours, theirs in ((GuidedBackprop, captum_attr.GuidedBackprop), (Deconvolution, captum_attr.Deconvolution)):
        for size in (None, 2):
            torch.manual_seed(3)
            got = captum_attr.NoiseTunnel(ours(model)).attribute((x, z), internal_batch_size=size, **options)
            torch.manual_seed(3)
            expected = captum_attr.NoiseTunnel(theirs(model)).attribute((x, z), **options)
            for a, b in zip(got, expected):
                torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-15)
                assert b.abs().sum() > 0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_rectgrad_equals_the_float64_map_where_the_arithmetic_is_exact(dtype):
    # weights and inputs in quarters: every forward value, score and threshold is exact in (b)float16 too, so the
    # map (scores and percentiles taken in float32) must be the float64 one, bit for bit
    model = _small_cnn()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randint(-2, 3, p.shape) / 4)
    x = torch.randint(-4, 5, (3, 3, 5, 5)).double() / 4
    y = torch.tensor([0, 2, 1])
    expected = naive_rectgrad(model, x, y, q=70.0, final_threshold=False)
    assert expected.abs().sum() > 0
    half = copy.deepcopy(model).to(dtype)
    for size in (None, 1):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AttributionWarning)  # a sample may pass nothing at q = 70
            got = RectGrad(half).attribute(x.to(dtype), target=y, q=70.0, final_threshold=False,
                                           internal_batch_size=size)
        assert got.dtype == dtype
        torch.testing.assert_close(got.double(), expected, rtol=0, atol=0)
    guided = GuidedBackprop(half).attribute(x.to(dtype), target=y)
    torch.testing.assert_close(guided.double(), captum_attr.GuidedBackprop(model).attribute(x, target=y),
                               rtol=0, atol=0)


def test_sensitivity_max_of_rectgrad_is_that_of_the_naive_rectgrad():
    # Captum runs the explanation under torch.no_grad() on its perturbed copies (in batches of max_examples_per_batch,
    # the targets repeated): RectGrad's maps there are the naive ones, so the metric is too
    model, x, y = _small_cnn(), torch.randn(2, 3, 5, 5, dtype=torch.float64), torch.tensor([0, 2])

    def naive(inputs, target):
        with torch.enable_grad():
            return (naive_rectgrad(model, inputs[0], torch.as_tensor(target), q=50.0, final_threshold=False),)

    torch.manual_seed(5)
    ours = sensitivity_max(RectGrad(model).attribute, x, target=y, n_perturb_samples=3, max_examples_per_batch=4,
                           q=50.0, final_threshold=False)
    torch.manual_seed(5)
    expected = sensitivity_max(naive, (x,), target=y, n_perturb_samples=3, max_examples_per_batch=4)
    torch.testing.assert_close(ours, expected, rtol=1e-12, atol=0)
    assert (expected > 0).all()


def test_a_target_made_under_inference_mode_is_taken_as_a_copy():
    model, x = _small_cnn(), torch.randn(3, 3, 5, 5, dtype=torch.float64)
    with torch.inference_mode():
        predicted = model(x).argmax(1)
        one = predicted[:1]
    expected = RectGrad(model).attribute(x, target=predicted.tolist(), tau=0.0)  # a list: works
    guided = GuidedBackprop(model).attribute(x, target=int(one))
    assert predicted.is_inference() and expected.abs().sum() > 0
    torch.testing.assert_close(RectGrad(model).attribute(x, target=predicted.int(), tau=0.0), expected, rtol=0, atol=0)
    torch.testing.assert_close(RectGrad(model).attribute(x, target=predicted, tau=0.0), expected, rtol=0, atol=0)
    torch.testing.assert_close(RectGrad(model).attribute(x, target=predicted, tau=0.0, internal_batch_size=2),
                               expected, rtol=0, atol=0)
    torch.testing.assert_close(GuidedBackprop(model).attribute(x, target=one), guided, rtol=0, atol=0)
    for method, settings in (("rectgrad", {"tau": 0.0}), ("saliency", {}), ("deeplift", {})):  # q = 98 passes
        torch.testing.assert_close(explain(model, x, target=predicted, method=method, **settings),  # nothing here
                                   explain(model, x, target=predicted.tolist(), method=method, **settings),
                                   rtol=0, atol=0)


def test_an_additional_forward_argument_made_under_inference_mode_is_taken_as_a_copy():
    torch.manual_seed(7)  # every sample passes something at tau = 0
    layer, out = nn.Linear(3, 4).double(), nn.Linear(4, 3).double()

    def forward(x, mask):
        return out(torch.relu(layer(x)) * mask)

    x = torch.randn(3, 3, dtype=torch.float64)
    with torch.inference_mode():
        mask = (torch.rand(3, 4) > 0.3).double()
    plain = mask.clone()
    for method, settings in (("rectgrad", {"tau": 0.0}), ("saliency", {}), ("intgrad", {})):  # q = 98: nothing
        torch.testing.assert_close(explain(forward, x, target=1, method=method, additional_forward_args=(mask,),
                                           **settings),
                                   explain(forward, x, target=1, method=method, additional_forward_args=(plain,),
                                           **settings), rtol=0, atol=0)
    torch.testing.assert_close(GuidedBackprop(forward).attribute(x, target=1, additional_forward_args=(mask,)),
                               GuidedBackprop(forward).attribute(x, target=1, additional_forward_args=(plain,)),
                               rtol=0, atol=0)


def test_a_reversed_numpy_target_is_read_as_its_values():
    model, x = _small_cnn(), torch.randn(3, 3, 5, 5, dtype=torch.float64)
    reversed_classes = np.array([1, 0, 2])[::-1]
    assert reversed_classes.strides[0] < 0
    expected = RectGrad(model).attribute(x, target=[2, 0, 1], tau=0.0)
    torch.testing.assert_close(RectGrad(model).attribute(x, target=reversed_classes, tau=0.0), expected, rtol=0, atol=0)
    torch.testing.assert_close(RectGrad(model).attribute(x, target=reversed_classes, tau=0.0, internal_batch_size=2),
                               expected, rtol=0, atol=0)
    torch.testing.assert_close(explain(model, x, target=reversed_classes, method="saliency"),
                               explain(model, x, target=[2, 0, 1], method="saliency"), rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_noise_tunnel_over_a_half_precision_model_works_or_names_the_noise(dtype):
    model = _small_cnn().to(dtype)
    x = torch.randn(2, 3, 5, 5).to(dtype)
    try:
        smooth = captum_attr.NoiseTunnel(GuidedBackprop(model)).attribute(x, nt_samples=2, stdevs=0.1, target=1)
    except TypeError as error:  # at least say where the float32 came from, and the way that keeps the type
        assert "Captum's NoiseTunnel adds it): use rectgrad.explain(..., method='smoothgrad')" in str(error)
    else:
        assert smooth.dtype == dtype and torch.isfinite(smooth).all() and smooth.abs().sum() > 0
    kept = explain(model, x, target=1, method="smoothgrad", samples=2)
    assert kept.dtype == dtype and torch.isfinite(kept).all()


class ScaledByInput(nn.Module):
    """Logits scaled by an activation of one number computed from the input (a 0-dim tensor), or of that number
    kept in a 1-element tensor."""

    def __init__(self, shape):
        super().__init__()
        self.hidden, self.out, self.shape = nn.Linear(5, 6), nn.Linear(6, 3), shape

    def forward(self, x):
        scale = F.relu(x.sum().reshape(self.shape)).reshape(())
        return self.out(F.relu(self.hidden(x))) * scale


def test_element_wise_rules_take_an_activation_of_a_0_dim_tensor():
    # Guided BP, Deconv and a constant tau gate unit by unit: a 0-dim activation is one unit (was an IndexError)
    torch.manual_seed(0)
    scalar, vector = ScaledByInput(()).double(), ScaledByInput((1,)).double()
    vector.load_state_dict(scalar.state_dict())
    x = torch.rand(2, 5, dtype=torch.float64)
    for method, kwargs in (("guided_bp", {}), ("deconv", {}), ("rectgrad", {"tau": 0.0, "final_threshold": False})):
        maps = rectgrad.explain(scalar, x, target=0, method=method, **kwargs)
        torch.testing.assert_close(maps, rectgrad.explain(vector, x, target=0, method=method, **kwargs), rtol=0, atol=0)
        assert maps.abs().sum() > 0


def test_deeplift_takes_the_secant_where_input_and_reference_differ_by_exactly_1e_6():
    # the documented rule: f' at the midpoint only where |z - z0| < 1e-6, so the secant at |z - z0| = 1e-6 itself:
    # z = 5e-7, z0 = -5e-7 (their difference is exactly the float64 1e-6: halving is exact) give the secant
    # (5e-7 - 0) / 1e-6 = 0.5 and the map (x - x0) * 0.5 = 5e-7 = relu(z) - relu(z0) (f'(0) = 0 would give 0)
    model = nn.Sequential(nn.Linear(1, 1, bias=False), nn.ReLU(), nn.Linear(1, 2, bias=False)).double()
    with torch.no_grad():
        model[0].weight.fill_(1.0), model[2].weight.copy_(torch.tensor([[1.0], [0.0]]))
    assert 5e-7 - (-5e-7) == 1e-6
    x = torch.tensor([[5e-7]], dtype=torch.float64)
    maps = rectgrad.explain(model, x, target=0, method="deeplift", baseline=-5e-7)
    torch.testing.assert_close(maps, torch.tensor([[5e-7]], dtype=torch.float64), rtol=1e-12, atol=0)


def test_gate_rules_pass_the_plain_derivative_of_sigmoid_tanh_and_softplus():
    # RectGrad, Guided BP and Deconvolution gate the activation functions only: a sigmoid (an SE block's gate), tanh
    # or softplus passes R * f'(z), negative R included; the ReLU below is gated, by hand
    torch.manual_seed(0)
    for squash in (torch.sigmoid, torch.tanh, F.softplus):
        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.a, self.b, self.c = nn.Linear(5, 8), nn.Linear(8, 8), nn.Linear(8, 3)

            def forward(self, x):
                return self.c(squash(self.b(torch.relu(self.a(x)))))

        model = Net().double()
        x = torch.randn(4, 5, dtype=torch.float64)
        with torch.no_grad():
            a1 = torch.relu(model.a(x))
        z2 = model.b(a1).detach().requires_grad_()
        (r2,) = torch.autograd.grad(squash(z2), z2, model.c.weight[0].detach().expand(4, 8))
        assert (r2 < 0).any() and (r2 > 0).any()
        with torch.no_grad():
            r1 = r2 @ model.b.weight
            keep = _above_percentile(a1 * r1, 50.0)
            expected = x * ((r1 * keep) @ model.a.weight)
            guided = (r1.clamp(min=0) * (a1 > 0)) @ model.a.weight
            deconv = r1.clamp(min=0) @ model.a.weight
        ours = RectGrad(model).attribute(x, target=0, q=50.0, final_threshold=False)
        torch.testing.assert_close(ours, expected, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(GuidedBackprop(model).attribute(x, target=0), guided, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(Deconvolution(model).attribute(x, target=0), deconv, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", _RRELU_WITH_NOISE, ids=[f"torch._C._nn.{name}" for name in _RRELU_WITH_NOISE])
def test_two_private_rrelus_in_training_mode_sharing_one_noise_tensor_keep_each_its_own_slopes(name):
    # the second call draws new slopes into the same noise tensor: the first activation's rule must keep the slopes
    # of its own forward pass (a copy), so the maps equal those of two F.rrelu(training=True) calls from the same seed
    torch.manual_seed(3)
    first, middle, last = nn.Linear(6, 12).double(), nn.Linear(12, 12).double(), nn.Linear(12, 3).double()
    x = torch.randn(4, 6, dtype=torch.float64) * 3
    noise = torch.zeros(4, 12, dtype=torch.float64)
    private = _Called(getattr(torch._C._nn, name), noise, 0.1, 0.3, True)
    public = _Called(F.rrelu, 0.1, 0.3, True)
    for method in ("guided_bp", "rectgrad"):
        options = {"q": 50.0, "final_threshold": False} if method == "rectgrad" else {}
        maps = []
        for act in (private, public):
            torch.manual_seed(1)
            maps.append(explain(nn.Sequential(first, act, middle, act, last), x, target=1, method=method, **options))
        torch.testing.assert_close(maps[0], maps[1], rtol=0, atol=0)
        assert maps[0].abs().sum() > 0


def test_rule_gradients_refuses_an_output_that_reaches_none_of_its_sources():
    # only the first `sources` inputs are the attribution's own: an output reaching the others alone is cut off
    leaf, weight = torch.rand(2, 3, dtype=torch.float64, requires_grad=True), torch.rand(3, dtype=torch.float64,
                                                                                         requires_grad=True)
    out = (leaf.detach() * weight).sum()
    with pytest.raises(ValueError, match="does not depend on its inputs through autograd"):
        rule_gradients(out, [leaf, weight], sources=1)
    grads = rule_gradients((leaf.detach() * weight).sum(), [weight, leaf], sources=1)
    assert torch.equal(grads[0], leaf.detach().sum(0)) and torch.equal(grads[1], torch.zeros_like(leaf))


def test_prr_divides_by_the_signed_window_mean_as_listing_3():
    # a max-pool over values of both signs (no ReLU before it): R_i = x_i R / (sum of the window + 4e-10), so the
    # window (1, -3, 2, -4) of sum -4 passes (-1/4, 3/4, -1/2, 1) R: the shares sum to R, signs follow x / sum
    model = nn.Sequential(nn.MaxPool2d(2), nn.Flatten(), nn.Linear(1, 2, bias=False)).double()
    with torch.no_grad():
        model[2].weight.copy_(torch.tensor([[1.0], [0.0]]))
    x = torch.tensor([[[[1.0, -3.0], [2.0, -4.0]]]], dtype=torch.float64)
    grad = _rule_gradient(model, x, None, prr=True)
    torch.testing.assert_close(grad, torch.tensor([[[[-0.25, 0.75], [-0.5, 1.0]]]], dtype=torch.float64),
                               rtol=1e-9, atol=0)
