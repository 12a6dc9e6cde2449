"""The method registry: every method on real architectures, and the properties that define each one."""
import functools
import math
import re
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from captum.attr import DeepLift, IntegratedGradients, Saliency
from captum.attr import GuidedBackprop as CaptumGuidedBackprop
from torch import nn

import rectgrad
from rectgrad import PaperCNN, RectGrad, engine
from rectgrad.attr._arguments import looks_like_probabilities
from rectgrad.methods import METHOD_NAMES, METHODS, explain, methods, predict
from rectgrad.operations import UnsupportedModel


def relu6_net():
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU6(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU6(),
                         nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 5)).eval()


class Residual(nn.Module):
    """Functional, reused, ReLU6 and clamp activations around a residual add: what Captum's hooks cannot follow."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 6, 3, padding=1), nn.Conv2d(6, 6, 3, padding=1)
        self.act = nn.ReLU6()
        self.fc = nn.Linear(6, 4)

    def forward(self, x):
        h = F.relu(self.conv1(x))
        h = self.act(self.conv2(h) + h)
        return self.fc(self.act(h).clamp(max=0.3).mean((2, 3)))


@pytest.fixture(scope="module")
def resnet18():
    from torchvision.models import resnet18

    return resnet18(num_classes=10).eval()


def test_registry_lists_the_papers_methods_in_order():
    assert METHOD_NAMES == ("saliency", "grad_input", "deconv", "guided_bp", "smoothgrad", "intgrad", "eps_lrp",
                            "deeplift", "rectgrad", "rectgrad_prr", "random")
    info = methods()
    assert list(info) == list(METHOD_NAMES)
    assert info["smoothgrad"]["defaults"] == {"samples": 50, "noise_level": 0.1}
    assert info["intgrad"]["defaults"]["steps"] == 50 and info["intgrad"]["defaults"]["baseline"] == 0.0
    assert info["eps_lrp"]["defaults"] == {"eps": 1e-4}
    assert info["rectgrad"]["defaults"]["q"] == 98.0 and info["rectgrad"]["defaults"]["padding_trick"]
    assert info["rectgrad_prr"]["defaults"]["prr"] and not info["rectgrad"]["defaults"]["prr"]
    assert rectgrad.explain is explain and rectgrad.methods is methods


def test_methods_prints_as_a_table_and_stays_a_dict():
    import json
    import re

    info = methods()
    assert isinstance(info, dict) and json.loads(json.dumps(info))["rectgrad"]["defaults"]["q"] == 98.0
    lines = repr(info).splitlines()
    assert len(lines) == 1 + len(METHOD_NAMES) and str(info) == repr(info)
    columns = [[cell.strip() for cell in re.split(r"\s{2,}", line)] for line in lines]
    assert columns[0] == ["name", "implementation", "defaults"] and columns[1] == ["saliency", "captum", "abs=False"]
    assert columns[5] == ["smoothgrad", "rectgrad loop over Captum gradients", "samples=50, noise_level=0.1"]
    assert columns[-1] == ["random", "torch", "-"]
    assert len({line.index(row[1], len(row[0])) for line, row in zip(lines, columns)}) == 1  # aligned columns
    info["rectgrad"]["implementation"] = None  # a cell changed into another type: shown as it prints
    assert repr(info).splitlines()[9].split()[:2] == ["rectgrad", "None"]
    info["mine"] = "not a method's entry"
    assert repr(info).startswith("{'saliency': {")  # a dict changed into another shape shows as a dict


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_every_method_on_the_paper_cnn_and_resnet18(method, resnet18):
    # RectGrad's padding trick zeroes ResNet's 2 x 2 maps whole (its 1 x 1 downsampling too, as Listing 2 does)
    side = 128 if method.startswith("rectgrad") else 32
    for model, x in ((PaperCNN().eval(), torch.randn(2, 3, 32, 32)), (resnet18, torch.randn(2, 3, side, side))):
        before = {k: v.clone() for k, v in model.state_dict().items()}
        maps = explain(model, x, method=method, internal_batch_size=25, seed=0)
        assert maps.shape == x.shape and torch.isfinite(maps).all() and maps.abs().sum() > 0
        assert not model.training
        assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
        assert not any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks for m in model.modules())


def test_guided_bp_follows_relu6_unlike_captum():
    model, x = relu6_net(), torch.randn(2, 3, 8, 8)
    gradient = explain(model, x, target=1, method="saliency")
    ours = explain(model, x, target=1, method="guided_bp")
    captum = CaptumGuidedBackprop(model).attribute(x.clone().requires_grad_(), target=1)
    torch.testing.assert_close(captum, gradient)  # Captum's hooks miss ReLU6: the plain gradient
    assert not torch.allclose(ours, gradient)


def test_eps_lrp_equals_grad_input_on_relu_networks(resnet18):
    for model in (PaperCNN().double().eval(), resnet18.double()):
        x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
        grad_input = explain(model, x, method="grad_input")
        torch.testing.assert_close(explain(model, x, method="eps_lrp", eps=1e-12), grad_input)
        default = explain(model, x, method="eps_lrp")
        assert torch.corrcoef(torch.stack([default.flatten(), grad_input.flatten()]))[0, 1] > 0.99
    resnet18.float()


def test_eps_lrp_differs_from_grad_input_where_relu6_saturates():
    model, x = relu6_net().double(), 20 * torch.randn(2, 3, 8, 8, dtype=torch.float64)
    assert not torch.allclose(explain(model, x, method="eps_lrp"), explain(model, x, method="grad_input"))


def test_intgrad_completeness():
    model = PaperCNN(image_size=16).double().eval()
    x = torch.randn(3, 3, 16, 16, dtype=torch.float64)
    with torch.no_grad():
        logits = model(x)
        target = logits.argmax(1)
        delta = logits.gather(1, target[:, None])[:, 0] - model(torch.zeros_like(x)).gather(1, target[:, None])[:, 0]
    paper = explain(model, x, method="intgrad").sum((1, 2, 3))
    torch.testing.assert_close(paper, delta, rtol=0.05, atol=1e-3 * delta.abs().max().item())
    finer = explain(model, x, method="intgrad", steps=200, integration="gausslegendre", internal_batch_size=200)
    torch.testing.assert_close(finer.sum((1, 2, 3)), delta, rtol=0.01, atol=1e-4 * delta.abs().max().item())


def test_intgrad_and_deeplift_take_a_per_channel_baseline_in_the_models_dtype():
    model, x = PaperCNN(image_size=16).eval(), torch.randn(2, 3, 16, 16)
    per_channel = torch.tensor([0.1, -0.2, 0.3])[:, None, None]
    for method in ("intgrad", "deeplift"):
        full = per_channel.expand(2, 3, 16, 16)
        torch.testing.assert_close(explain(model, x, target=1, method=method, baseline=per_channel),
                                   explain(model, x, target=1, method=method, baseline=full))
        assert explain(model.bfloat16(), x.bfloat16(), target=1, method=method).dtype == torch.bfloat16
        model.float()


def test_intgrad_and_deeplift_take_none_as_zeros_and_a_numpy_baseline_as_its_tensor():
    # Captum reads baselines=None as zeros, and references computed with numpy are arrays: both were refused
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 3)).eval()
    x = torch.randn(2, 3, 6, 6)
    per_channel = np.array([0.1, -0.2, 0.3])[:, None, None]  # float64, as numpy gives them, for a float32 model
    for method in ("intgrad", "deeplift"):
        zero = explain(model, x, target=1, method=method, baseline=0.0)
        assert torch.equal(explain(model, x, target=1, method=method, baseline=None), zero)
        assert torch.equal(explain(model, (x,), target=1, method=method, baseline=(None,))[0], zero)
        tensor = explain(model, x, target=1, method=method, baseline=torch.from_numpy(per_channel).float())
        assert not torch.allclose(tensor, zero)  # the reference matters
        assert torch.equal(explain(model, x, target=1, method=method, baseline=per_channel), tensor)
        reversed_ = np.ascontiguousarray(per_channel[::-1])[::-1]  # the same values, as a view of negative strides
        reversed_ = explain(model, x, target=1, method=method, baseline=reversed_)
        assert torch.equal(reversed_, tensor)
        for odd in (np.zeros((3, 1, 1), dtype=bool), np.array(["0"] * 3)):  # no numbers: named, not read as 0 / 1
            with pytest.raises(TypeError, match=f"baseline array must hold numbers, got dtype {odd.dtype}"):
                explain(model, x, target=1, method=method, baseline=odd)
        with pytest.raises(ValueError, match="baseline contains NaN or Inf"):
            explain(model, x, target=1, method=method, baseline=np.full((3, 1, 1), np.nan))
    captum = IntegratedGradients(model).attribute(x, baselines=None, target=1, n_steps=50, method="riemann_right")
    torch.testing.assert_close(explain(model, x, target=1, method="intgrad", baseline=None), captum)


def test_intgrad_and_deeplift_take_an_integer_numpy_baseline_as_its_values():
    # a reference read as pixels (uint8) or computed with integers holds numbers too: taken in the inputs' dtype
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).double().eval()
    x = torch.randn(2, 3, dtype=torch.float64) + 2
    for method in ("intgrad", "deeplift"):
        floats = explain(model, x, target=1, method=method, baseline=torch.tensor([1.0, 2.0, 0.0]))
        assert not torch.allclose(floats, explain(model, x, target=1, method=method, baseline=0.0))
        for dtype in (np.uint8, np.int64):
            integers = np.array([1, 2, 0], dtype=dtype)
            assert torch.equal(explain(model, x, target=1, method=method, baseline=integers), floats)


def test_deeplift_equals_captum_where_captum_applies():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                          nn.Flatten(), nn.Linear(8 * 6 * 6, 16), nn.ReLU(), nn.Linear(16, 4)).double().eval()
    x = torch.randn(3, 3, 6, 6, dtype=torch.float64)
    captum = DeepLift(model).attribute(x.clone().requires_grad_(), baselines=0.0, target=2)
    torch.testing.assert_close(explain(model, x, target=2, method="deeplift"), captum)


def test_deeplift_summation_to_delta_with_functional_reused_relu6():
    model = Residual().double().eval()
    x, reference = torch.randn(3, 3, 8, 8, dtype=torch.float64), torch.full((1, 3, 1, 1), 0.3, dtype=torch.float64)
    maps = explain(model, x, target=1, method="deeplift", baseline=reference, internal_batch_size=2)
    with torch.no_grad():
        delta = model(x)[:, 1] - model(reference.expand_as(x))[:, 1]
    torch.testing.assert_close(maps.sum((1, 2, 3)), delta)
    captum = DeepLift(model).attribute(x.clone().requires_grad_(), target=1, baselines=reference.expand_as(x))
    assert not torch.allclose(captum.sum((1, 2, 3)), delta, rtol=1e-3)  # Captum misses the functional ReLU


class Elementwise(nn.Module):
    def __init__(self, function):
        super().__init__()
        self.function = function

    def forward(self, x):
        return self.function(x)

    def __repr__(self):
        method = getattr(torch.Tensor, self.function.__name__, None) is self.function
        return ("Tensor." if method else "") + self.function.__name__


@pytest.mark.parametrize("activation", [nn.PReLU(init=0.2), nn.SELU(), nn.CELU(0.5), nn.Threshold(0.1, -0.5),
                                        nn.LogSigmoid(), nn.Softsign(), nn.Tanhshrink(), nn.Softshrink(0.3),
                                        nn.Hardshrink(0.3), nn.Hardswish(), nn.Mish(), Elementwise(torch.erf),
                                        Elementwise(torch.special.expit), Elementwise(torch.sin),
                                        Elementwise(torch.square), nn.Hardsigmoid(), nn.Hardsigmoid(inplace=True),
                                        nn.Softplus(), nn.Sigmoid(), nn.Tanh(), *map(Elementwise, (
                                            torch.ops.aten.softplus, torch.ops.aten.hardsigmoid, torch.ops.aten.sigmoid,
                                            torch.ops.aten.sigmoid_, torch.ops.aten.tanh, torch.ops.aten.tanh_,
                                            torch.Tensor.sigmoid, torch.Tensor.tanh, torch.abs, torch.Tensor.abs,
                                            torch.Tensor.erf, torch.erfc, torch.Tensor.erfc, torch.Tensor.sin,
                                            torch.cos, torch.Tensor.cos, torch.atan, torch.Tensor.atan,
                                            torch.Tensor.square, torch.selu, torch.celu,
                                            F.tanhshrink, F.hardshrink, F.softshrink))], ids=repr)
def test_deeplift_rescales_every_elementwise_activation(activation):
    torch.manual_seed(3)  # summation to delta holds exactly only if the activation's secant replaces its slope
    model = nn.Sequential(nn.Linear(6, 12), activation, nn.Linear(12, 3)).double().eval()
    x, reference = torch.randn(4, 6, dtype=torch.float64) * 2, torch.full((1, 6), 0.3, dtype=torch.float64)
    maps = explain(model, x, target=2, method="deeplift", baseline=reference)
    with torch.no_grad():
        delta = model(x)[:, 2] - model(reference.expand_as(x))[:, 2]
    torch.testing.assert_close(maps.sum(1), delta)


@pytest.mark.parametrize("method", ["eps_lrp", "deeplift"])
def test_multiplier_rules_take_an_in_place_elementwise_function_as_its_out_of_place_one(method):
    # h.sigmoid_(), torch.tanh_(h), h.clamp_(...) change h in place: the rule's Function must mark it so, or the
    # multiplier would be computed from the function's output taken for its input
    torch.manual_seed(3)
    first, last = nn.Linear(6, 12).double(), nn.Linear(12, 3).double()
    x = torch.randn(4, 6, dtype=torch.float64) * 2
    pairs = [(torch.sigmoid_, torch.sigmoid), (torch.Tensor.sigmoid_, torch.sigmoid), (torch.tanh_, torch.tanh),
             (torch.Tensor.tanh_, torch.tanh), (functools.partial(torch.clamp_, min=-0.5, max=0.5),
                                               functools.partial(torch.clamp, min=-0.5, max=0.5)),
             (functools.partial(torch.Tensor.clamp_, min=-0.5), functools.partial(torch.clamp, min=-0.5))]
    for in_place, plain in pairs:
        def changed(t, f=in_place):
            h = first(t)
            f(h)
            return last(h)

        expected = explain(lambda t, f=plain: last(f(first(t))), x, target=2, method=method)
        torch.testing.assert_close(explain(changed, x, target=2, method=method), expected, rtol=1e-12, atol=0)


def _linear(weight, out=None) -> nn.Linear:
    """A float64 linear layer without bias, its weight given (one output unless ``out`` rows are given)."""
    layer = nn.Linear(len(weight), 1 if out is None else len(out), bias=False).double()
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([weight] if out is None else out, dtype=torch.float64))
    return layer


def test_eps_lrp_takes_the_sign_of_zero_as_plus_one():
    # f(z) / (z + eps sign(z)) by hand, sign(0) = +1, sign(-1) = -1: z = x1 + x2 into a sigmoid, the logit is its
    # output; in float64 throughout (eps = 0.01 once went through float32: 2e-8 off)
    model = nn.Sequential(_linear([1.0, 1.0]), nn.Sigmoid(), _linear([1.0], out=[[1.0], [0.0]]))
    x = torch.tensor([[1.0, -1.0], [2.0, -1.0], [-2.0, 1.0]], dtype=torch.float64)  # z = 0, z = 1, z = -1
    multiplier = torch.tensor([0.5 / 0.01, 1 / (1 + math.exp(-1.0)) / 1.01, 1 / (1 + math.exp(1.0)) / -1.01],
                              dtype=torch.float64)
    torch.testing.assert_close(explain(model, x, target=0, method="eps_lrp", eps=0.01), x * multiplier[:, None],
                               rtol=1e-12, atol=0)


@pytest.mark.parametrize("activation", [Elementwise(torch.square), nn.ReLU()], ids=repr)
def test_deeplift_takes_the_derivative_at_the_midpoint_where_input_and_reference_nearly_agree(activation):
    # |z - z0| = 8e-7 < 1e-6: f'((z + z0) / 2) = f'(0) = 0 replaces the secant (for the square it is the secant,
    # so the map sums to delta = 0 exactly); f'(z) would give 6.4e-13 and 8e-7, the ReLU's secant 4e-7
    model = nn.Sequential(_linear([1.0]), activation, _linear([1.0], out=[[1.0], [0.0]]))
    x = torch.tensor([[4e-7]], dtype=torch.float64)
    with pytest.warns(rectgrad.AttributionWarning, match="the attribution by deeplift is all zero"):
        maps = explain(model, x, target=0, method="deeplift", baseline=-4e-7)
    assert torch.equal(maps, torch.zeros(1, 1, dtype=torch.float64))


class Checkpointed(nn.Module):
    """A block run under activation checkpointing (torch.utils.checkpoint), as DenseNet(memory_efficient=True)."""

    def __init__(self, activation: nn.Module, reentrant: bool = False):
        super().__init__()
        self.block = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 6, 3, padding=1), activation)
        self.head, self.checkpointed, self.reentrant = nn.Linear(6 * 8 * 8, 4), True, reentrant

    def forward(self, x):
        from torch.utils.checkpoint import checkpoint

        h = checkpoint(self.block, x, use_reentrant=self.reentrant) if self.checkpointed else self.block(x)
        return self.head(h.flatten(1))


@pytest.mark.skipif(engine._SAVED_TENSOR_HOOKS is None, reason="torch < 2.8 cannot tell whether checkpointing is on")
@pytest.mark.parametrize("activation", [nn.ReLU(), nn.ReLU(inplace=True), nn.SiLU(), nn.GELU(), nn.ReLU6(inplace=True),
                                        nn.ELU(inplace=True), nn.PReLU(), nn.RReLU(), nn.Sigmoid()], ids=repr)
def test_activation_checkpointing_gives_the_same_maps_or_a_clear_error(activation):
    # The backward pass recomputes a checkpointed block without the engine: never a silently different map
    torch.manual_seed(4)
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    model = Checkpointed(activation).double().eval()
    outcomes = {}
    for method in ("rectgrad", "rectgrad_prr", "guided_bp", "deconv", "eps_lrp", "deeplift"):
        model.checkpointed = True
        try:
            maps = explain(model, x, target=1, method=method)
        except ValueError as error:
            assert "activation checkpointing" in str(error) and "turn checkpointing off" in str(error)
            outcomes[method] = "refused"
            continue
        model.checkpointed = False
        assert torch.equal(maps, explain(model, x, target=1, method=method)), method
        outcomes[method] = "same"
    gating = {outcomes[m] for m in ("rectgrad", "rectgrad_prr", "guided_bp", "deconv")}
    # PyTorch keeps two tensors for PReLU / RReLU and the output of an in-place ELU: the rules cannot follow
    assert gating == ({"refused"} if isinstance(activation, (nn.PReLU, nn.RReLU, nn.ELU)) else {"same"})
    assert outcomes["deeplift"] == outcomes["eps_lrp"] == "refused"  # the ReLU in the block keeps its output


class _AtenAdaptiveMaxPool(nn.Module):
    def forward(self, x):
        return torch.ops.aten.adaptive_max_pool2d(x, [8, 8])[0]  # as an exported program calls it: values, indices


@pytest.mark.skipif(engine._SAVED_TENSOR_HOOKS is None, reason="torch < 2.8 cannot tell whether checkpointing is on")
def test_an_exported_adaptive_max_pool_under_prr_and_checkpointing_is_refused():
    torch.manual_seed(4)
    model, x = Checkpointed(_AtenAdaptiveMaxPool()).double().eval(), torch.randn(2, 3, 8, 8, dtype=torch.float64)
    with pytest.raises(ValueError, match="activation checkpointing.*a max-pool under PRR"):
        explain(model, x, target=1, method="rectgrad_prr")
    model.checkpointed = False
    assert explain(model, x, target=1, method="rectgrad_prr").shape == x.shape


@pytest.mark.parametrize("activation", [nn.PReLU(), nn.ELU(inplace=True)], ids=repr)
def test_saved_tensors_moved_to_cpu_are_not_checkpointing(activation):
    # save_on_cpu's saved-tensor hooks give back what was saved: nothing is recomputed, nothing to refuse
    torch.manual_seed(5)
    model, x = Checkpointed(activation).double().eval(), torch.randn(2, 3, 8, 8, dtype=torch.float64)
    model.checkpointed = False
    for method in ("rectgrad", "deeplift"):
        with torch.autograd.graph.save_on_cpu():
            maps = explain(model, x, target=1, method=method)
        assert torch.equal(maps, explain(model, x, target=1, method=method)), method


@pytest.mark.parametrize("method", ["rectgrad", "deeplift", "eps_lrp"])
def test_reentrant_checkpointing_is_a_clear_error(method):
    model = Checkpointed(nn.ReLU(), reentrant=True).double().eval()
    with pytest.raises(ValueError, match="activation checkpointing.*turn checkpointing off"):
        explain(model, torch.randn(2, 3, 8, 8, dtype=torch.float64), target=1, method=method)


def test_pytorchs_own_checkpoint_error_in_the_backward_pass_is_a_clear_error():
    # reentrant checkpointing under torch.autograd.grad, which no rule's forward pass saw (a pass without a rule):
    # PyTorch's RuntimeError becomes the ValueError that says what to do; other errors stay as they are
    model = Checkpointed(nn.ReLU(), reentrant=True).double().eval()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PyTorch's advice on use_reentrant
        logits = model(x)
    with pytest.raises(UnsupportedModel, match="activation checkpointing.*turn checkpointing off"):
        engine.rule_gradients(logits[:, 1].sum(), [x])
    model.checkpointed = False
    with pytest.raises(RuntimeError, match="grad can be implicitly created only for scalar outputs") as error:
        engine.rule_gradients(model(x), [x])  # (2, 4) logits: not a scalar
    assert not isinstance(error.value, ValueError)


def test_an_activation_output_modified_in_place_afterwards():
    # PyTorch keeps a GELU's input, so code may change its output in place; the engine keeps the input too
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.inplace = nn.Linear(6, 8), nn.Linear(8, 3), True

        def forward(self, x):
            h = F.gelu(self.a(x))
            return self.b(h.add_(1.0) if self.inplace else h + 1.0)

    torch.manual_seed(5)
    model, x = Net().double(), torch.randn(4, 6, dtype=torch.float64)
    for method in ("rectgrad", "guided_bp", "deeplift"):
        model.inplace = True
        in_place = explain(model, x, target=0, method=method, q=50.0) if method == "rectgrad" else explain(
            model, x, target=0, method=method)
        model.inplace = False
        again = explain(model, x, target=0, method=method, q=50.0) if method == "rectgrad" else explain(
            model, x, target=0, method=method)
        assert torch.equal(in_place, again) and in_place.abs().sum() > 0


class FrozenStem(nn.Module):
    """A linear probe on a frozen stem run under torch.no_grad(): no gradient reaches the input."""

    def __init__(self):
        super().__init__()
        self.stem, self.head = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()), nn.Sequential(nn.Flatten(),
                                                                                         nn.Linear(64, 3))

    def forward(self, x):
        with torch.no_grad():
            h = self.stem(x)
        return self.head(F.relu(h))


@pytest.mark.parametrize("method", sorted(set(METHOD_NAMES) - {"random"}))
def test_a_model_that_cuts_its_inputs_off_is_a_clear_error(method):
    # not all-zero maps, a false "no activation" warning or Captum's "appears to not have been used in the graph"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match=r"the model's output does not depend on its inputs through autograd: "
                                             r"its forward pass cuts them off \(a torch.no_grad\(\) block"):
            explain(FrozenStem().eval(), torch.randn(2, 3, 6, 6), method=method,
                    **{"smoothgrad": {"samples": 2}, "intgrad": {"steps": 2}}.get(method, {}))


class _NormalisesInPlace(nn.Module):
    def __init__(self, inplace: bool):
        super().__init__()
        self.inplace, self.conv, self.fc = inplace, nn.Conv2d(3, 4, 3), nn.Linear(4, 3)

    def forward(self, x):
        x = x.sub_(0.5) if self.inplace else x - 0.5
        return self.fc(F.relu(self.conv(x)).mean((2, 3)))


@pytest.mark.parametrize("method", ["saliency", "intgrad", "rectgrad", "eps_lrp", "deeplift"])
def test_a_model_changing_its_input_in_place_leaves_the_inputs_be(method):
    # the predicted classes' forward pass changed the caller's inputs (every method then explained other inputs;
    # DeepLIFT, whose batch is a copy, silently); the gradient passes got PyTorch's "leaf Variable" error
    torch.manual_seed(0)
    model, x = _NormalisesInPlace(inplace=True).eval(), torch.randn(2, 3, 6, 6)
    given = x.clone()
    try:
        maps = explain(model, x, method=method)
    except ValueError as error:
        assert "the model changes its input in place" in str(error) and method != "deeplift"
    else:
        model.inplace = False
        torch.testing.assert_close(maps, explain(model, x, method=method))
    assert torch.equal(x, given)


class _ScalesInPlace(nn.Module):
    def __init__(self, inplace: bool):
        super().__init__()
        self.inplace, self.conv, self.fc = inplace, nn.Conv2d(3, 4, 3), nn.Linear(4, 3)

    def forward(self, x):
        x = x.mul_(2.0) if self.inplace else x * 2.0
        return self.fc(F.relu(self.conv(x)).mean((2, 3)))


@pytest.mark.parametrize("requiring_grad", ["inputs", "baseline"])
def test_intgrad_through_a_model_scaling_its_input_in_place_is_refused_whatever_requires_grad(requiring_grad):
    # as without requires_grad and by every other method: Captum's scaled inputs are leaves, so the in-place op is
    # refused (not a gradient taken w.r.t. the changed tensor, missing the op's derivative: half the maps here)
    torch.manual_seed(0)
    model, x = _ScalesInPlace(inplace=True).eval(), torch.randn(2, 3, 6, 6)
    baseline = torch.full((1, 3, 1, 1), 0.1)
    given = (x.clone().requires_grad_(), baseline) if requiring_grad == "inputs" else (
        x.clone(), baseline.clone().requires_grad_())
    with pytest.raises(ValueError, match="the model changes its input in place"):
        explain(model, given[0], target=0, method="intgrad", baseline=given[1])
    assert given[0].grad is None and given[1].grad is None


class _HeadOnFeatures(nn.Module):
    """A head explained on pre-activation features, beginning with an in-place ReLU of its input (or of a view)."""

    def __init__(self, view: bool):
        super().__init__()
        self.view, self.relu, self.fc = view, nn.ReLU(inplace=True), nn.Linear(4, 3)

    def forward(self, x):
        if self.view:
            self.relu(x[:, :2])
            return self.fc(x)
        return self.fc(self.relu(x))


@pytest.mark.parametrize("view", [False, True])
@pytest.mark.parametrize("method", ["saliency", "deconv", "guided_bp", "rectgrad", "eps_lrp"])
def test_an_in_place_activation_of_the_input_is_refused_and_leaves_the_input_be(method, view):
    # the engine's rule ran the in-place ReLU on the caller's input (its leaf shares the storage) before PyTorch
    # refused it: a failed call zeroed the input's negative values (and, on the input itself, gave PyTorch's raw
    # "leaf Variable ... has been used" error where the Captum methods name the problem)
    x = torch.tensor([[1.0, -2.0, 3.0, -4.0], [-1.0, 2.0, -3.0, 4.0]])
    given = x.clone()
    with pytest.raises(ValueError, match="the model changes its input in place"):
        explain(_HeadOnFeatures(view).eval(), x, target=0, method=method)
    assert torch.equal(x, given)



def test_a_model_returning_probabilities_gets_a_warning():
    torch.manual_seed(0)
    logits = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3)).eval()
    x = torch.randn(2, 4)
    for last, warned in ((nn.Softmax(1), True), (nn.LogSoftmax(1), False), (nn.Identity(), False)):
        model = nn.Sequential(logits, last)
        for call in (lambda: explain(model, x, method="saliency"), lambda: RectGrad(model).attribute(x, q=50.0)):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                call()
            messages = [str(w.message) for w in caught if "look like probabilities" in str(w.message)]
            assert len(messages) == warned and all("drop the final softmax" in m for m in messages)
    counts = nn.Sequential(logits, nn.Softmax(1), _Rounded())  # an integer output cannot be differentiated
    with pytest.raises(TypeError, match="the model must return real floating-point logits, got torch.int64"):
        explain(counts, x, method="saliency")
    rows = torch.full((2, 3), 1 / 3, dtype=torch.bfloat16)  # 1/3 rounds to 0.334 in bfloat16: the rows sum to
    assert rows.sum(1, dtype=torch.float32).sub(1).abs().min() > 1e-3  # 1.002, still probabilities
    assert looks_like_probabilities(rows) and not looks_like_probabilities(rows.float())


class _Rounded(nn.Module):
    def forward(self, x):
        return x.round().long()


def test_a_relu_input_modified_in_place_afterwards():
    # DeepLIFT and eps-LRP keep a ReLU's input (PyTorch keeps its output): a clear error, not autograd's
    class Net(nn.Module):
        def forward(self, x):
            y = F.relu(x)
            x += 1.0
            return torch.cat([y, x], 1)

    model, x = nn.Sequential(nn.Linear(6, 4), Net(), nn.Linear(8, 3)).eval(), torch.randn(2, 6)
    for method in ("deeplift", "eps_lrp"):
        with pytest.raises(ValueError, match=r"keeps the input of relu .*changes that input in place after the "
                                             r"activation .*write that step out of place"):
            explain(model, x, target=0, method=method)
    assert explain(model, x, target=0, method="rectgrad", q=50.0).shape == x.shape  # it keeps the output


class Gated(nn.Module):
    def __init__(self, gate: str):
        super().__init__()
        self.conv, self.gate = nn.Conv2d(3, 4, 3, padding=1), gate
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        h = F.relu(self.conv(x))
        if self.gate == "product":
            h = h * torch.sigmoid(h.mean((2, 3), keepdim=True))
        elif self.gate == "glu":
            h = F.glu(torch.cat([h, h], 1), dim=1)
        elif self.gate == "maximum":
            h = torch.maximum(h, torch.full_like(h, 0.5))
        elif self.gate == "where":
            h = torch.where(h > 0.5, h, 0.5)
        elif self.gate == "reciprocal":
            h = 1 / (h + 1)
        elif self.gate == "log1p":
            h = h.log1p()
        elif self.gate == "hand-written norm":
            h = (h - h.mean(1, keepdim=True)) / h.std(1, keepdim=True)
        elif self.gate == "mask":
            h = (h - 0.5).masked_fill(h < 0.5, 0.0)  # a ReLU by hand
        elif self.gate == "addcmul":
            h = torch.addcmul(h, h, h.mean((2, 3), keepdim=True))  # h + h * mean(h): a product of two
        elif self.gate == "addcdiv":
            h = torch.addcdiv(h, torch.ones_like(h), h + 1)  # h + 1 / (h + 1): an input-dependent divisor
        elif self.gate == "addcmul keywords":
            h = h.addcmul(h, tensor2=h.mean((2, 3), keepdim=True))
        elif self.gate == "addcmul deprecated":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # PyTorch's deprecation of this overload, which a model may still use
                h = torch.addcmul(h, 0.5, h, h.mean((2, 3), keepdim=True))  # (input, value, tensor1, tensor2)
        elif self.gate == "addcdiv keywords":
            h = torch.addcdiv(h, tensor1=torch.ones_like(h), tensor2=h + 1)
        elif self.gate == "div keyword":
            h = torch.div(torch.ones_like(h), other=h + 1)
        elif self.gate == "amax":
            h = h - torch.amax(h, (2, 3), keepdim=True)  # no max-pool
        elif self.gate == "max":
            h = h - torch.max(h, 1, keepdim=True)[0]  # (values, indices)
        elif self.gate == "bmm":
            h = torch.bmm(h.flatten(2), h.flatten(2).transpose(1, 2))[..., None]  # a Gram matrix
        elif self.gate == "argmax mask":
            h = h * F.one_hot(h.flatten(2).argmax(2), h[0, 0].numel()).view(h.shape)  # the maximum alone: no max-pool
        elif self.gate == "mask by a tensor":
            h = h * (h > torch.full_like(h, 0.5))
        elif self.gate == "sign without grad":
            with torch.no_grad():
                sign = h.sign()  # a mask (h > 0) all the same
            h = h * sign
        elif self.gate == "mul keyword":
            h = torch.mul(h, other=h.mean((2, 3), keepdim=True))
        elif self.gate == "prelu keyword":
            h = F.prelu(h, weight=h.mean().reshape(1))  # a slope computed from the input
        else:
            h = F.normalize(h, dim=1) if self.gate == "normalize" else h.softmax(1)
        return self.fc(h.mean((2, 3)))


@pytest.mark.parametrize("method", ["eps_lrp", "deeplift"])
@pytest.mark.parametrize("gate, message", [("product", "product of two input-dependent tensors"),
                                           ("softmax", "non-linearity softmax"),
                                           ("normalize", "non-linearity normalize"),
                                           ("glu", "non-linearity glu"),
                                           ("maximum", "non-linearity maximum"),
                                           ("where", "follow a mask computed from the input"),
                                           ("reciprocal", "follow __rdiv__: not an operation it knows"),
                                           ("log1p", "follow log1p"),
                                           ("hand-written norm", "follow std"),
                                           ("addcmul", "product of two input-dependent tensors"),
                                           ("addcdiv", "follow addcdiv: not an operation it knows"),
                                           ("addcmul keywords", "product of two input-dependent tensors"),
                                           ("addcmul deprecated", "product of two input-dependent tensors"),
                                           ("addcdiv keywords", "follow addcdiv: not an operation it knows"),
                                           ("div keyword", "follow div: not an operation it knows"),
                                           ("amax", "follow amax: not an operation it knows"),
                                           ("max", "follow max: not an operation it knows"),
                                           ("bmm", "product of two input-dependent tensors"),
                                           ("argmax mask", "follow a mask computed from the input"),
                                           ("mask by a tensor", "follow a mask computed from the input"),
                                           ("sign without grad", "follow a mask computed from the input"),
                                           ("mul keyword", "product of two input-dependent tensors"),
                                           ("prelu keyword", "product of two input-dependent tensors"),
                                           ("mask", "follow a mask computed from the input")])
def test_modified_gradients_refuse_layers_they_cannot_handle(method, gate, message):
    with pytest.raises(ValueError, match=f"{method} cannot (handle (a|the)|follow) {message.replace('follow ', '')}"):
        explain(Gated(gate).eval(), torch.randn(2, 3, 6, 6), method=method)
    assert explain(Gated(gate).eval(), torch.randn(2, 3, 6, 6), method="saliency").shape == (2, 3, 6, 6)



class _Swish(torch.autograd.Function):
    """A memory-efficient Swish, as EfficientNet-PyTorch writes it: its forward runs with gradients off."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * torch.sigmoid(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        s = torch.sigmoid(x)
        return grad * s * (1 + x * (1 - s))


class _Positive(torch.autograd.Function):
    """An autograd Function of the parameters alone (a constrained weight): nothing the rules need to follow."""

    forward = staticmethod(lambda ctx, w: w.abs())
    backward = staticmethod(lambda ctx, grad: grad)


@pytest.mark.parametrize("method", ["eps_lrp", "deeplift"])
@pytest.mark.parametrize("last", [False, True])
def test_modified_gradients_refuse_a_users_autograd_function(method, last):
    # its operations run unseen with gradients off and its own backward is used: passing it would silently break
    # DeepLIFT's summation to delta; one computing the logits, after which no operation runs, is refused too
    torch.manual_seed(0)
    conv, fc = nn.Conv2d(3, 4, 3), nn.Linear(4, 3)
    weight = nn.Parameter(torch.randn(3, 4))

    def model(x):
        h = F.relu(conv(x)).mean((2, 3))
        return _Swish.apply(fc(h)) if last else F.linear(_Swish.apply(h), _Positive.apply(weight))

    with pytest.raises(ValueError, match=f"{method} cannot follow the custom torch.autograd.Function _Swish"):
        explain(model, torch.randn(2, 3, 6, 6), target=1, method=method)
    model = functools.partial(lambda x: F.linear(F.silu(F.relu(conv(x)).mean((2, 3))), _Positive.apply(weight)))
    assert torch.isfinite(explain(model, torch.randn(2, 3, 6, 6), target=1, method=method)).all()


@pytest.mark.parametrize("method", ["rectgrad", "guided_bp", "deconv"])
def test_gating_rules_warn_once_about_a_users_autograd_function(method):
    # the rule does not reach inside it (an activation written so is not gated) and its own backward is used: a
    # warning naming it, once per call however often it runs; a Function of the parameters alone is no concern
    torch.manual_seed(0)
    conv, fc = nn.Conv2d(3, 4, 3), nn.Linear(4, 3)
    weight = nn.Parameter(torch.randn(4, 4))

    def model(x, swish=_Swish.apply):
        h = swish(F.relu(conv(x)))
        return fc(F.linear(swish(h.mean((2, 3))), _Positive.apply(weight)))

    def functions_warned(model):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            maps = explain(model, x, target=1, method=method)
        return maps, [str(w.message) for w in caught if "autograd.Function" in str(w.message)]

    x = torch.randn(2, 3, 6, 6)
    maps, warned = functions_warned(model)
    assert len(warned) == 1 and warned[0].startswith("_Swish is the model's own torch.autograd.Function: the rule does "
                                                     "not reach inside it and its own backward is used there")
    plain, warned = functions_warned(functools.partial(model, swish=lambda t: t * torch.sigmoid(t)))
    assert warned == []
    torch.testing.assert_close(maps, plain)  # its own backward: the gradient of the Swish, not gated


def test_a_pass_without_a_rule_warns_about_nothing_a_rule_would_miss():
    # a clamp at 0, a maximum with 0 and the model's own autograd.Function each get their own warning from a gating
    # rule, which does not reach them; a pass without a rule (the plain gradient) changes nothing, so misses nothing
    fc = nn.Linear(3, 4)

    def forward(t):
        h = fc(t)
        return _Swish.apply(h.clamp(min=0)) + torch.maximum(h, torch.zeros(4))

    for options, warned in ((engine.Options(), []), (engine.Options(rule=engine.Rule(tau=0.0)),
                                                      ["_Swish is", "clamp(min=0)", "maximum(x, 0)"])):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with engine.RuleMode(options, batch=2):
                forward(torch.randn(2, 3, requires_grad=True))
        messages = sorted(str(w.message) for w in caught)
        assert len(messages) == len(warned) and all(m.startswith(w) for m, w in zip(messages, warned)), messages


@pytest.mark.parametrize("method", ["eps_lrp", "deeplift"])
def test_modified_gradients_follow_a_model_with_backward_hooks(method):
    # PyTorch runs module backward hooks through an identity autograd Function of its own: not the model's
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(64, 3)).eval()
    x = torch.randn(2, 3, 6, 6)
    plain = explain(model, x, target=1, method=method)
    handles = [model[0].register_full_backward_hook(lambda m, gi, go: None),
               model[3].register_full_backward_pre_hook(lambda m, go: None)]
    try:
        assert torch.equal(explain(model, x, target=1, method=method), plain)
    finally:
        for handle in handles:
            handle.remove()


def test_modified_gradients_refuse_an_exported_models_gating_too():
    # an exported program multiplies with aten.mul.Tensor, not torch.mul: the product is found by name
    model, x = Gated("product").eval(), torch.randn(2, 3, 6, 6)
    exported = torch.export.export(model, (x,), dynamic_shapes=({0: torch.export.Dim("batch", max=64)},)).module()
    with pytest.raises(ValueError, match="deeplift cannot handle a product of two input-dependent tensors"):
        explain(exported, x, method="deeplift")

class LinearOps(nn.Module):
    """Operations DeepLIFT passes as linear: resizing, pixel shuffle, eval BatchNorm, views, a divisor made from
    parameters only (weight-normalised), padding."""

    def __init__(self):
        super().__init__()
        self.conv, self.norm = nn.Conv2d(3, 8, 3), nn.BatchNorm2d(2)
        self.scale, self.fc = nn.Parameter(torch.tensor([2.0, -3.0])), nn.Linear(2 * 8 * 8, 3)

    def forward(self, x):
        h = F.pixel_shuffle(F.relu(self.conv(x)), 2)  # 8 x 4 x 4 -> 2 x 8 x 8
        h = self.norm(F.interpolate(h, size=(6, 6), mode="bilinear"))
        h = F.pad(torch.tanh(h), (1, 1, 1, 1)) / self.scale.abs().view(1, 2, 1, 1)
        return self.fc(F.dropout(h.transpose(2, 3), 0.5, training=False, inplace=True).flatten(1))


def test_deeplift_follows_linear_operations_and_sums_to_delta():
    torch.manual_seed(7)
    model = LinearOps().double().eval()
    model.norm.running_mean.uniform_(-1, 1)
    x = torch.randn(4, 3, 6, 6, dtype=torch.float64)
    maps = explain(model, x, target=1, method="deeplift")
    with torch.no_grad():
        torch.testing.assert_close(maps.flatten(1).sum(1), model(x)[:, 1] - model(torch.zeros_like(x))[:, 1])
    # an exported program calls the ATen operations instead (aten.view, aten.constant_pad_nd, aten.dropout_, ...)
    exported = torch.export.export(model, (x,), dynamic_shapes=({0: torch.export.Dim("batch", max=64)},)).module()
    torch.testing.assert_close(explain(exported, x, target=1, method="deeplift"), maps)
    pooled = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.MaxPool2d(2, return_indices=True)).double()
    with_indices = explain(nn.Sequential(_First(pooled), nn.Flatten(), nn.Linear(16, 2).double()), x, method="deeplift")
    assert with_indices.shape == x.shape  # a max-pool passes its gradient to the maximum, with or without indices


class MoreLinearOps(nn.Module):
    """Further linear operations (what chunk and split become in a decomposed exported program, reorderings,
    cumulative sums, timm ResMLP's affine layer ``addcmul(beta, alpha, x)``) around functional ReLUs."""

    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 8, 3, padding=1), nn.Linear(8 * 6 * 6, 3)
        self.alpha, self.beta = nn.Parameter(torch.randn(1, 8, 1, 1)), nn.Parameter(torch.randn(1, 8, 1, 1))
        self.mix = nn.Parameter(torch.randn(8 * 6 * 6, 8 * 6 * 6) / 20)

    def forward(self, x):
        h = F.relu(self.conv(x))
        h = torch.cat(torch.split_with_sizes(h, [3, 5], 1)[::-1], 1).swapaxes(2, 3)
        h = torch.rot90(torch.moveaxis(h, 1, 3), 1, (1, 2)).moveaxis(3, 1).cumsum(3)
        h = torch.addcmul(self.beta, self.alpha, h).type(torch.float64).clone().neg_()
        h = torch.addcdiv(h, tensor1=h, tensor2=self.alpha.abs() + 1).addcmul(self.beta, tensor2=h)
        h = torch.divide(torch.hstack([F.relu(h), torch.broadcast_to(h[:, :1], h.shape)])[:, :8], 2.0)
        flat = h.ravel().view(len(x), -1)
        return self.fc(torch.addmm(flat, flat, self.mix))  # flat + flat @ mix: the added input is no factor


def test_multiplier_rules_take_the_input_of_addcmul_given_by_keyword_for_no_factor():
    # addcmul(input=h, tensor1=h, tensor2=c) is h + h * c, linear in h: the input, given by keyword, is only added
    torch.manual_seed(8)
    first, last = nn.Linear(5, 6).double(), nn.Linear(6, 2).double()
    scale = nn.Parameter(torch.randn(6, dtype=torch.float64))

    def model(t):
        h = F.relu(first(t))
        return last(torch.addcdiv(input=torch.addcmul(input=h, tensor1=h, tensor2=scale), tensor1=h, tensor2=scale))

    x = torch.randn(3, 5, dtype=torch.float64)
    maps = explain(model, x, target=1, method="deeplift")
    with torch.no_grad():
        torch.testing.assert_close(maps.sum(1), model(x)[:, 1] - model(torch.zeros_like(x))[:, 1])
    assert torch.isfinite(explain(model, x, target=1, method="eps_lrp")).all()


def test_deeplift_follows_more_linear_operations_decomposed_too():
    torch.manual_seed(8)
    model, x = MoreLinearOps().double().eval(), torch.randn(3, 3, 6, 6, dtype=torch.float64)
    maps = explain(model, x, target=2, method="deeplift")
    with torch.no_grad():
        torch.testing.assert_close(maps.flatten(1).sum(1), model(x)[:, 2] - model(torch.zeros_like(x))[:, 2])
    halves = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), _Chunked(), nn.Flatten(), nn.Linear(64, 3)).double().eval()
    exported = torch.export.export(halves, (x,), dynamic_shapes=({0: torch.export.Dim("batch", max=64)},))
    decomposed = exported.run_decompositions().module()  # chunk becomes aten.split_with_sizes (ShuffleNet's split)
    assert "split_with_sizes" in str(decomposed.graph)
    for method in ("deeplift", "eps_lrp"):
        torch.testing.assert_close(explain(decomposed, x, target=2, method=method),
                                   explain(halves, x, target=2, method=method))


class _Chunked(nn.Module):
    def forward(self, h):
        left, right = h.chunk(2, dim=1)
        return torch.cat([right, left], 1)


class _First(nn.Module):
    def __init__(self, module):
        super().__init__()
        self.module = module

    def forward(self, x):
        return self.module(x)[0]


class Recurrent(nn.Module):
    def __init__(self, layer: nn.Module):
        super().__init__()
        self.input, self.layer, self.head = nn.Linear(4, 4), layer, nn.Linear(6, 3)

    def forward(self, x):
        h = F.relu(self.input(x))
        out = self.layer(h if isinstance(self.layer, (nn.LSTM, nn.GRU, nn.RNN)) else h[:, -1])
        out = out[0] if isinstance(out, tuple) else out
        return self.head(out[:, -1] if out.dim() == 3 else out)


@pytest.mark.parametrize("layer", [nn.LSTM(4, 6, batch_first=True), nn.GRU(4, 6, batch_first=True),
                                   nn.RNN(4, 6, batch_first=True, nonlinearity="relu"), nn.LSTMCell(4, 6),
                                   nn.RNNCell(4, 6), nn.RNNCell(4, 6, nonlinearity="relu")],
                         ids=["LSTM", "GRU", "RNN", "LSTMCell", "RNNCell", "RNNCell_relu"])
def test_fused_recurrent_layers(layer):
    # their gates and activations run inside one operation: multiplier rules refuse them; the gating rules
    # warn where ReLUs hide inside (nn.RNN(nonlinearity="relu"))
    model, x = Recurrent(layer).eval(), torch.randn(2, 5, 4)
    name = {nn.LSTM: "lstm", nn.GRU: "gru", nn.RNN: "rnn_relu", nn.LSTMCell: "lstm_cell",
            nn.RNNCell: f"rnn_{getattr(layer, 'nonlinearity', None)}_cell"}[type(layer)]
    with pytest.raises(ValueError, match=f"deeplift cannot handle the non-linearity {name}"):
        explain(model, x, method="deeplift")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert explain(model, x, method="rectgrad", q=50.0).shape == x.shape
    hidden = [str(w.message) for w in caught if "out of the rules' reach" in str(w.message)]
    assert len(hidden) == (1 if name.startswith("rnn_relu") else 0)  # nn.RNNCell(nonlinearity="relu") too


def test_rectgrad_entries_are_the_papers_settings():
    model, x = PaperCNN().eval(), torch.randn(2, 3, 32, 32)
    expected = RectGrad(model).attribute(x, q=98.0, padding_trick=True, prr=True, final_threshold=True)
    torch.testing.assert_close(explain(model, x, method="rectgrad_prr"), expected)
    assert (explain(model, x, method="rectgrad") >= 0).all()
    raw = explain(model, x, method="rectgrad", final_threshold=False)
    assert (raw < 0).any()
    guided = explain(model, x, method="guided_bp")
    torch.testing.assert_close(explain(model, x, method="rectgrad", tau=0.0, padding_trick=False),
                               (guided * x).clamp(min=0))


def test_smoothgrad_noise_is_a_tenth_of_each_samples_range():
    class Square(nn.Module):  # gradient of the target = x, so SmoothGrad - x is the mean noise
        def forward(self, x):
            return torch.stack([0.5 * (x ** 2).sum(1), x.sum(1)], dim=1)

    x = torch.stack([torch.linspace(-1, 1, 2000), torch.linspace(0, 20, 2000)]).double()
    samples = 400
    maps = explain(Square(), x, target=0, method="smoothgrad", samples=samples, seed=3, internal_batch_size=300)
    sigma = (maps - x).std(dim=1) * samples ** 0.5
    torch.testing.assert_close(sigma, torch.tensor([0.2, 2.0], dtype=torch.float64), rtol=0.06, atol=0)


def test_seeds_make_stochastic_methods_reproducible():
    model, x = PaperCNN().eval(), torch.randn(2, 3, 32, 32)
    a = explain(model, x, method="smoothgrad", samples=4, seed=1)
    assert torch.equal(a, explain(model, x, method="smoothgrad", samples=4, seed=1))
    assert not torch.equal(a, explain(model, x, method="smoothgrad", samples=4, seed=2))
    noise = explain(model, x, method="random", seed=5)
    assert torch.equal(noise, explain(model, x, method="random", seed=np.int64(5)))  # a numpy integer seeds alike
    assert 0 <= noise.min() and noise.max() < 1


@pytest.mark.parametrize("method", ["saliency", "intgrad", "eps_lrp", "deeplift", "rectgrad", "guided_bp"])
def test_internal_batch_size_does_not_change_the_maps(method):
    model, x = PaperCNN(image_size=16).double().eval(), torch.randn(5, 3, 16, 16, dtype=torch.float64)
    chunked = explain(model, x, method=method, internal_batch_size=2)
    torch.testing.assert_close(chunked, explain(model, x, method=method))


def test_smoothgrad_noise_does_not_depend_on_internal_batch_size():
    # 3x9x9 = 243 values per sample, not a multiple of the 16 values torch.randn fills at a time: a draw of k
    # copies at once is not the stream of k draws of one copy, so the noise must be drawn copy by copy
    model = nn.Sequential(nn.Flatten(), nn.Linear(243, 16), nn.ReLU(), nn.Linear(16, 4))
    x = torch.randn(2, 3, 9, 9)
    maps = [explain(model, x, target=1, method="smoothgrad", samples=6, seed=0, internal_batch_size=size)
            for size in (None, 2, 5)]
    for other in maps[1:]:
        torch.testing.assert_close(other, maps[0])


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_no_grad_around_the_call_does_not_change_the_maps(method):
    model, x = PaperCNN(image_size=16).double().eval(), torch.randn(3, 3, 16, 16, dtype=torch.float64)
    small = {"smoothgrad": {"samples": 3}, "intgrad": {"steps": 5}}.get(method, {})
    maps = explain(model, x, target=1, method=method, seed=0, **small)
    with torch.no_grad():
        torch.testing.assert_close(explain(model, x, target=1, method=method, seed=0, **small), maps)
    assert maps.abs().sum() > 0


def test_inference_mode_is_a_clear_error_and_its_tensors_are_explained():
    model = PaperCNN(image_size=16).eval()
    with torch.inference_mode():
        x = torch.randn(2, 3, 16, 16)
        for call in (lambda: explain(model, x, method="rectgrad"), lambda: RectGrad(model).attribute(x, target=0)):
            with pytest.raises(RuntimeError, match=r"need autograd, which torch.inference_mode\(\) turns off"):
                call()
    assert x.is_inference()
    for method in ("rectgrad", "deeplift", "saliency"):
        torch.testing.assert_close(explain(model, x, target=1, method=method),
                                   explain(model, x.clone(), target=1, method=method))
    torch.testing.assert_close(RectGrad(model).attribute(x, target=1), RectGrad(model).attribute(x.clone(), target=1))



def test_a_model_made_under_inference_mode_is_a_clear_error_and_a_copy_is_explained():
    # weights built or loaded inside torch.inference_mode() cannot be saved for backward: PyTorch's raw error said to
    # clone "a tensor"
    import copy

    torch.manual_seed(0)
    with torch.inference_mode():
        model = PaperCNN(image_size=16).eval()
    x = torch.randn(2, 3, 16, 16)
    for call in [lambda method=method: explain(model, x, target=1, method=method)
                 for method in ("rectgrad", "guided_bp", "deeplift", "saliency", "intgrad")] + [
                     lambda: RectGrad(model).attribute(x, target=1)]:
        with pytest.raises(ValueError, match=r"the model's weights were made under torch.inference_mode\(\) .*: build "
                                             r"or load the model outside inference_mode, or explain a copy, model = "
                                             r"copy.deepcopy\(model\) \(PyTorch: Inference tensors cannot be saved"):
            call()
    copied = copy.deepcopy(model)
    plain = PaperCNN(image_size=16).eval()
    plain.load_state_dict(model.state_dict())
    for method in ("rectgrad", "deeplift"):
        torch.testing.assert_close(explain(copied, x, target=1, method=method),
                                   explain(plain, x, target=1, method=method))


def test_maps_are_detached_from_the_inputs_graph():
    model, x = PaperCNN(image_size=16).eval(), torch.randn(2, 3, 16, 16, requires_grad=True)
    assert not RectGrad(model).attribute(x, target=1).requires_grad
    assert not explain(model, x, target=1).requires_grad and x.grad is None


def test_target_none_is_the_predicted_class():
    model, x = PaperCNN().eval(), torch.randn(4, 3, 32, 32)
    predicted = model(x).argmax(1)
    for method in ("saliency", "deeplift", "smoothgrad"):
        torch.testing.assert_close(explain(model, x, method=method, seed=0),
                                   explain(model, x, target=predicted, method=method, seed=0))


class _SavesItsGradient(nn.Module):
    """The PyTorch Grad-CAM tutorial's pattern: a tensor hook registered in the forward pass, which fails where
    gradients are off."""

    def __init__(self):
        super().__init__()
        self.features = relu6_net()[:4]
        self.fc = nn.Linear(8 * 8 * 8, 5)
        self.gradients = []

    def forward(self, x):
        h = self.features(x)
        h.register_hook(self.gradients.append)
        return self.fc(h.flatten(1))


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_target_none_on_a_model_registering_a_tensor_hook_in_its_forward_pass(method):
    model, x = _SavesItsGradient().eval().requires_grad_(False), torch.randn(3, 3, 8, 8)
    small = {"smoothgrad": {"samples": 3}, "intgrad": {"steps": 4}}.get(method, {})
    predicted = model(x.requires_grad_()).argmax(1)
    maps = explain(model, x, method=method, seed=0, **small)  # the predicted classes, found by a forward pass first
    torch.testing.assert_close(maps, explain(model, x, target=predicted, method=method, seed=0, **small))
    assert x.grad is None and not maps.requires_grad


def test_predict_on_a_model_registering_a_tensor_hook_in_its_forward_pass():
    # the CLI's top-5 line and the studies call predict: it failed under no_grad ("cannot register a hook on a tensor
    # that doesn't require gradient"); a model running without gradients still runs without them
    model, x = _SavesItsGradient().eval(), torch.randn(3, 3, 8, 8)
    torch.testing.assert_close(predict(model, x, internal_batch_size=2), model(x.requires_grad_()).detach())
    grads = []
    plain = PaperCNN().eval()
    plain.register_forward_hook(lambda module, args, out: grads.append(torch.is_grad_enabled()))
    predict(plain, torch.randn(2, 3, 32, 32))
    assert grads == [False]


def test_intgrad_honours_an_internal_batch_size_below_the_batch():
    model, x = PaperCNN().eval(), torch.randn(5, 3, 32, 32)
    sizes = []
    model.register_forward_pre_hook(lambda module, args: sizes.append(len(args[0])))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Captum warns when its internal batch is below the samples
        chunked = explain(model, x, target=[0, 1, 2, 3, 4], method="intgrad", steps=4, internal_batch_size=2)
    assert max(sizes) == 2
    torch.testing.assert_close(chunked, explain(model, x, target=[0, 1, 2, 3, 4], method="intgrad", steps=4))


def test_a_given_target_costs_the_engine_methods_no_extra_forward_pass():
    model, x = PaperCNN().eval(), torch.randn(5, 3, 32, 32)
    calls = []
    model.register_forward_pre_hook(lambda module, args: calls.append(len(args[0])))
    for method in ("rectgrad", "guided_bp", "deconv", "eps_lrp", "deeplift"):
        calls.clear()
        explain(model, x, target=[0, 1, 2, 3, 4], method=method, internal_batch_size=2)
        assert calls == ([4, 4, 2] if method == "deeplift" else [2, 2, 1]), method  # DeepLIFT: inputs + references
        for bad, message in ((10, "target 10 is out of range for a model with 10 classes"),
                             ([1, 2], "target has 2 entries but the batch has 5 samples"),
                             (torch.tensor([1, 2, 3, 4, -1]), "target -1 is out of range")):
            with pytest.raises(ValueError, match=message):
                explain(model, x, target=bad, method=method, internal_batch_size=2)
    calls.clear()
    explain(model, x, method="rectgrad")  # the predicted classes: found by a forward pass first
    assert calls == [5, 5]


@pytest.mark.parametrize("huge", [2**70, -2**70, 2**63], ids=["2**70", "-2**70", "2**63"])
def test_a_target_beyond_int64_is_named_with_the_models_classes(huge):
    # torch's own errors for it were an overflow ("int too big to convert", "Overflow when unpacking long long"),
    # naming neither the target nor the classes
    model, x = _relu_net(), torch.randn(4, 4, dtype=torch.float64)
    message = f"^target {huge} is out of range for a model with 3 classes$"
    forms = [huge, [0, huge, 1, 2], (huge,)] + ([np.array([huge] * 4, dtype=np.uint64)] if 0 < huge < 2**64 else [])
    for target in forms:
        for method in ("saliency", "intgrad", "guided_bp", "rectgrad", "deeplift"):
            for size in (None, 2):
                with pytest.raises(ValueError, match=message):
                    explain(model, x, target=target, method=method, internal_batch_size=size)
        for attribution in (RectGrad(model), rectgrad.GuidedBackprop(model)):
            for size in (None, 2):
                with pytest.raises(ValueError, match=message):
                    attribution.attribute(x, target=target, internal_batch_size=size)
    with pytest.raises(ValueError, match=f"^target {huge} is out of range: a class index is below the model's number "
                                         "of classes$"):  # before the forward pass, which names them
        rectgrad.attr._arguments.target_indices(huge, 4, "cpu")


def test_a_model_output_of_the_wrong_shape_is_named_with_the_callers_batch():
    class Column(nn.Module):
        def forward(self, x):
            return x.flatten(1)[:, :10, None]  # (N, 10, 1): not (N, classes)

    x = torch.randn(4, 3, 8, 8)
    for target in (None, 1):
        for method in ("deeplift", "rectgrad"):
            with pytest.raises(ValueError, match=r"shape \(N, classes\) = \(2, C\), got \(2, 10, 1\)"):
                explain(Column(), x, target=target, method=method, internal_batch_size=2)


@pytest.mark.parametrize("method", ["rectgrad", "saliency", "intgrad", "deeplift"])
def test_one_image_without_its_batch_dimension_gets_the_hint(method):
    # (C, H, W) from a torchvision transform: the model fails on it, and the error says how to add the batch
    model, x = PaperCNN(in_channels=1, image_size=28).eval(), torch.randn(1, 28, 28)
    with pytest.raises(RuntimeError, match=r"\(the inputs have shape \(1, 28, 28\): dim 0 is the batch; if that is "
                                           r"one image \(C, H, W\) or one vector without its batch dimension, pass "
                                           r"x\[None\]\)") as error:
        explain(model, x, method=method)
    assert isinstance(error.value.__cause__, RuntimeError)  # PyTorch's own error, kept
    if method == "rectgrad":  # with a target no forward pass runs first: the rule sees the unbatched activation
        with pytest.raises(UnsupportedModel, match="one image \\(C, H, W\\) needs x\\[None\\]"):
            RectGrad(model).attribute(x, target=0)
    assert explain(model, x[None], target=0, method=method).shape == (1, 1, 28, 28)


def test_a_batched_input_gets_no_batch_hint():
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))  # wants 12 features: (2, 3, 5) is refused as it is
    with pytest.raises(RuntimeError, match="mat1 and mat2 shapes cannot be multiplied") as error:
        explain(model, torch.randn(2, 3, 5), target=0, method="saliency")
    assert "pass x[None]" in str(error.value)  # 3-D: perhaps one sample
    with pytest.raises(RuntimeError, match="mat1 and mat2 shapes cannot be multiplied") as error:
        explain(model, torch.randn(2, 3, 5, 1), target=0, method="saliency")
    assert "x[None]" not in str(error.value)  # 4-D: a batch of images, the model's own error alone


def test_bad_arguments():
    model, x = PaperCNN().eval(), torch.randn(2, 3, 32, 32)
    with pytest.raises(ValueError, match="unknown method 'lime'; known methods: saliency, grad_input"):
        explain(model, x, method="lime")
    for name, meant in (("Integrated_Gradients", "intgrad"), ("input_x_gradient", "grad_input"),
                        ("rectgard", "rectgrad")):
        with pytest.raises(ValueError, match=f"unknown method '{name}' \\(did you mean '{meant}'\\?\\); known"):
            explain(model, x, method=name)
    for far in ("gradcam", "grad"):  # nothing close: no suggestion (they were 'random' and 'intgrad')
        with pytest.raises(ValueError, match=f"unknown method '{far}'; known methods"):
            explain(model, x, method=far)
    with pytest.raises(TypeError, match="has no hyper-parameter 'steps'.*samples, noise_level"):
        explain(model, x, method="smoothgrad", steps=3)
    with pytest.raises(ValueError, match="target 10 is out of range for a model with 10 classes"):
        explain(model, x, target=10, method="saliency")
    with pytest.raises(ValueError, match="samples must be a positive integer"):
        explain(model, x, method="smoothgrad", samples=0)
    with pytest.raises(ValueError, match="internal_batch_size"):
        explain(model, x, method="saliency", internal_batch_size=0)
    for level in (float("nan"), float("inf"), -0.1):
        with pytest.raises(ValueError, match="noise_level must be a finite non-negative number"):
            explain(model, x, method="smoothgrad", noise_level=level)
    with pytest.raises(ValueError, match="unknown integration 'simpson'; choose one of riemann_right"):
        explain(model, x, method="intgrad", integration="simpson")
    with pytest.raises(ValueError, match=r"baseline of shape \(2, 2\) does not broadcast"):
        explain(model, x, method="intgrad", baseline=torch.zeros(2, 2))
    for method in ("intgrad", "deeplift"):  # a NaN reference would give NaN maps (IG: NaN integration points)
        for bad in (float("nan"), float("inf")):
            with pytest.raises(ValueError, match="baseline must be a finite number, got (nan|inf)"):
                explain(model, x, method=method, baseline=bad)
            with pytest.raises(ValueError, match="baseline contains NaN or Inf values"):
                explain(model, x, method=method, baseline=torch.zeros(3, 1, 1).index_fill(0, torch.tensor([1]), bad))
        with pytest.raises(ValueError, match="baseline contains NaN or Inf values"):
            explain(model, x, method=method, baseline=(torch.full((3, 1, 1), float("nan")),))
    for eps in (float("nan"), float("inf"), 0.0, -1e-4):
        with pytest.raises(ValueError, match=f"eps must be a finite positive number, got {eps}"):
            explain(model, x, method="eps_lrp", eps=eps)
    with pytest.raises(ValueError, match="give either q .* or tau .*, not both"):
        explain(model, x, method="rectgrad", q=50.0, tau=0.0)
    for seed in (1.5, -1, 2**64):
        with pytest.raises(ValueError, match=rf"seed must be an integer in \[0, 2\*\*64\) or None, got {seed}"):
            explain(model, x, method="random", seed=seed)
    scripted = torch.jit.trace(model, x)
    with pytest.raises(ValueError, match="guided_bp modifies the backward pass.*TorchScript"):
        explain(scripted, x, method="guided_bp")
    torch.testing.assert_close(explain(scripted, x, method="saliency"), explain(model, x, method="saliency"))
    elsewhere = PaperCNN().to("meta")  # weights on another device than the inputs (cuda vs cpu, usually)
    for call in (lambda: explain(elsewhere, x, method="deeplift"), lambda: RectGrad(elsewhere).attribute(x)):
        with pytest.raises(ValueError, match=r"the inputs are on cpu but the model's weights on meta: move one"):
            call()
    for call in (lambda: explain(model, x.double(), method="saliency"), lambda: RectGrad(model).attribute(x.double()),
                 lambda: explain(model, x.double(), target=0, method="deeplift")):
        with pytest.raises(TypeError, match=r"the inputs are torch.float64 but the model's weights torch.float32: "
                                            r"convert the inputs \(e.g. inputs.to\(torch.float32\); numpy arrays"):
            call()
    on_meta = x.to("meta")
    for call in (lambda: explain(model, on_meta, method="saliency"), lambda: RectGrad(model).attribute(on_meta)):
        with pytest.raises(ValueError, match=r"the inputs are on meta but the model's weights on cpu: move one"):
            call()  # not the NaN check's "cannot call item() on meta tensors"
    pair = (x, on_meta)  # each input of a tuple is checked, not the first alone
    for call in (lambda: explain(lambda a, b: model(a + b), pair, method="saliency"),
                 lambda: RectGrad(lambda a, b: model(a + b)).attribute(pair)):
        with pytest.raises(ValueError, match=r"the inputs are on meta but the model's weights on cpu: move one"):
            call()


def test_large_finite_inputs_are_accepted_and_saliency_abs_is_the_magnitude():
    from rectgrad.attr._arguments import format_inputs
    huge = torch.full((2, 3, 4, 4), 3e38)  # every value finite, their sum not: still valid inputs
    assert format_inputs(huge)[0] is huge
    with pytest.raises(ValueError, match="inputs contain NaN or Inf values"):
        format_inputs(huge.index_fill(3, torch.tensor([2]), float("nan")))
    model, x = PaperCNN().eval(), torch.randn(2, 3, 32, 32)
    signed = explain(model, x, target=[1, 4], method="saliency")
    assert (signed < 0).any()
    torch.testing.assert_close(explain(model, x, target=[1, 4], method="saliency", abs=True), signed.abs())
    assert {name for name, entry in methods().items() if entry["stochastic"]} == {"smoothgrad", "random"}


def test_a_model_that_takes_one_batch_size_runs_with_that_internal_batch_size():
    class FixedBatch(nn.Module):  # a hard-coded reshape: batches of 2 only
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(12, 6), nn.Linear(6, 3)

        def forward(self, x):
            return self.b(torch.relu(self.a(x.view(2, 12))))

    model, x = FixedBatch(), torch.randn(2, 3, 2, 2)
    for method in METHOD_NAMES:
        options = {"samples": 3} if method == "smoothgrad" else {"steps": 3} if method == "intgrad" else {}
        if method == "deeplift":  # inputs and references in one pass: 4 samples
            with pytest.raises(RuntimeError, match=r"shape '\[2, 12\]' is invalid"):
                explain(model, x, target=0, method=method, internal_batch_size=2)
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # (rectgrad: all-zero maps of a random net at q=98)
            assert explain(model, x, target=0, method=method, internal_batch_size=2, seed=0, **options).shape == x.shape
    with pytest.raises(RuntimeError, match="invalid for input of size 72"):  # all 3 steps at once
        explain(model, x, target=0, method="intgrad", steps=3)


@pytest.mark.filterwarnings("ignore:the model is in training mode:rectgrad.AttributionWarning")
def test_model_left_as_it_was_in_train_mode():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(64, 3)).train()
    x = torch.randn(3, 3, 6, 6)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for method in METHOD_NAMES:
        if method in ("eps_lrp", "deeplift"):  # batch statistics are not linear: refused, model untouched as well
            with pytest.raises(ValueError, match="batch_norm in training mode.*model.eval()"):
                explain(model, x, method=method)
            continue
        explain(model, x, method=method, seed=0, **({"samples": 2} if method == "smoothgrad" else {}))
    assert model.training and all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert set(METHODS) == set(METHOD_NAMES)


@pytest.mark.parametrize("method", ["eps_lrp", "deeplift"])
@pytest.mark.filterwarnings("ignore:BatchNorm2d without running statistics:rectgrad.AttributionWarning")
def test_a_batchnorm_without_running_statistics_is_not_told_to_call_eval(method):
    # track_running_stats=False normalises with the batch's statistics in eval mode too: model.eval(), the advice
    # given, changed nothing
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, track_running_stats=False), nn.ReLU(), nn.Flatten(),
                          nn.Linear(64, 3)).eval()
    with pytest.raises(ValueError, match=r"cannot follow batch_norm without running statistics \(a BatchNorm with "
                                         r"track_running_stats=False, which normalises with the batch's statistics in "
                                         r"eval mode too\): not a linear map; explain this model with another method$"):
        explain(model, torch.randn(3, 3, 6, 6), target=0, method=method)


class _Wrapper:
    """A user's callable object around a model (as a normalising wrapper would be)."""

    def __init__(self, model):
        self.model = model

    def __call__(self, x):
        return sum(model(x * 1.0) for model in self.model) if isinstance(self.model, list) else self.model(x * 1.0)


def _batchnorm_net():
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(64, 3)).train()


_GLOBAL_NET = _batchnorm_net()


def _forward_through_a_global(x):
    return _GLOBAL_NET(x)


_TABLE = [[0.0] * 1000 for _ in range(100)]  # 100,000 numbers: more than the search looks at


def _forward_naming_a_big_list_first(x):
    return len(_TABLE) * 0 + _GLOBAL_NET(x)  # the model is found before the list's items are looked at


def test_a_model_wrapped_in_a_callable_is_left_as_it_was_too():
    x = torch.randn(3, 3, 6, 6)
    model = _batchnorm_net()
    models = {"net": model}
    wrappers = {model: (lambda t: model(t), functools.partial(model), model.forward, _Wrapper(model),
                        lambda t: models["net"](t), _Wrapper([model]),  # through a dict or list too
                        lambda t, net=model: net(t), lambda t, *, net=model: net(t),  # default arguments
                        lambda t, nets={"net": model}: nets["net"](t)),
                _GLOBAL_NET: (_forward_through_a_global, _forward_naming_a_big_list_first)}
    for net, callables in wrappers.items():
        before = {k: v.clone() for k, v in net.state_dict().items()}
        for forward in callables:
            for call in (lambda: explain(forward, x, method="saliency"), lambda: explain(forward, x, method="rectgrad"),
                         lambda: RectGrad(forward).attribute(x, target=0)):
                with pytest.warns(UserWarning, match="the model is in training mode: BatchNorm2d"):
                    call()
            assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items()), forward
    if x.dim() > 9:
        teacher = model  # never assigned: the closure's cell for it stays empty
    forward = lambda t: teacher(t) if x.dim() > 9 else model(t)  # noqa: E731
    with pytest.warns(UserWarning, match="the model is in training mode: BatchNorm2d"):
        RectGrad(forward).attribute(x, target=0)
    elsewhere = PaperCNN().to("meta")
    with pytest.raises(ValueError, match="the inputs are on cpu but the model's weights on meta"):
        explain(lambda t: elsewhere(t), torch.randn(1, 3, 32, 32), method="saliency")


@torch.jit.script
def _scripted_head(x):
    return torch.relu(x)[:, :3]


def test_a_torchscript_submodule_is_refused_by_the_rules_by_name():
    block = torch.jit.script(nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU()))
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Sequential(nn.Identity(), block),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).eval()
    x = torch.randn(2, 3, 8, 8)
    for method in ("guided_bp", "deeplift", "rectgrad"):  # named by its path in the model, and its class
        with pytest.raises(ValueError, match=rf"{method} modifies .*TorchScript module '2\.1' \(Sequential\): use"):
            explain(model, x, method=method)
    with pytest.raises(ValueError, match="RectGrad modifies .*TorchScript module 'Sequential': use the Python"):
        RectGrad(block).attribute(torch.randn(2, 4, 8, 8), target=0)
    for forward in (lambda t: model(t), lambda t, net=model: net(t), lambda t, *, nets=[model]: nets[0](t)):
        with pytest.raises(ValueError, match="RectGrad modifies the backward pass.*TorchScript module"):
            RectGrad(forward).attribute(x, target=0)
    members = [nn.Sequential(nn.Flatten(), nn.Linear(192, 3)), torch.jit.script(nn.Sequential(nn.Flatten(),
                                                                                            nn.Linear(192, 3)))]
    with pytest.raises(ValueError, match="RectGrad modifies the backward pass.*TorchScript module"):
        RectGrad(lambda t: members[0](t) + members[1](t)).attribute(torch.randn(2, 3, 8, 8), target=0)  # in a list
    with pytest.raises(ValueError, match="GuidedBackprop modifies .*TorchScript function '_scripted_head'"):
        rectgrad.GuidedBackprop(_scripted_head).attribute(torch.randn(2, 5), target=0)
    target = model(x).argmax(1)
    torch.testing.assert_close(explain(model, x, method="saliency"), Saliency(model).attribute(x, target, abs=False))


@torch.jit.script
def _scripted_gelu(x):  # a fused GELU as BERT-era code writes it
    return x * 0.5 * (1.0 + torch.erf(x / 1.41421))


@torch.jit.script
def _scripted_relu(x):
    return torch.relu(x)


class _CallsScriptedFunctions(nn.Module):
    def __init__(self, activation=None):
        super().__init__()
        self.conv1, self.conv2, self.fc = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1), nn.Linear(4, 3)
        self.activation = activation

    def forward(self, x):
        h = F.relu(self.conv1(x))
        h = self.activation(self.conv2(h)) if self.activation is not None else _scripted_gelu(self.conv2(h))
        return self.fc(h.mean((2, 3)))


def test_a_torchscript_function_the_model_calls_is_refused_by_the_rules_by_name():
    x = torch.randn(2, 3, 8, 8)
    every = ("deconv", "guided_bp", "eps_lrp", "deeplift", "rectgrad")
    for model, name, refusing in ((_CallsScriptedFunctions(), "'_scripted_gelu'", ("eps_lrp", "deeplift")),
                                  (_CallsScriptedFunctions(_scripted_relu), "'activation'", every)):
        model.eval()
        for method in refusing:  # the rules would skip its operations (a hand-written GELU: a multiplier rule's)
            with pytest.raises(ValueError, match=rf"{method} modifies .*TorchScript function {name} called by "
                                                 r"_CallsScriptedFunctions.forward \(it computes [^)]*(erf|relu)"
                                                 r"[^)]*\): use the Python function"):
                explain(model, x, target=0, method=method)
        if refusing == every:
            with pytest.raises(ValueError, match=f"RectGrad modifies .*TorchScript function {name}"):
                RectGrad(lambda t: model(t)).attribute(x, target=0)
        torch.testing.assert_close(explain(model, x, target=0, method="saliency"),
                                   Saliency(model).attribute(x, 0, abs=False))


def _size_scale(x):  # DeBERTa's scaled_size_sqrt: arithmetic on a size, no activation
    return torch.sqrt(torch.tensor(x.size(-1), dtype=torch.float) * 2.0)


_scripted_size_scale = torch.jit.script(_size_scale)


class _ScalesBySize(nn.Module):
    def __init__(self, scale):
        super().__init__()
        self.conv, self.fc, self.scale = nn.Conv2d(3, 4, 3, padding=1), nn.Linear(4, 3), scale

    def forward(self, x):
        return self.fc(F.relu(self.conv(x)).mean((2, 3)) / self.scale(x))


@torch.jit.script
def _scripted_leaky(x):  # compiled with an `if inplace:` block: its leaky_relu is not at the graph's top level
    return F.leaky_relu(x, 0.1)


@torch.jit.script
def _scripted_norm(x):  # a layer norm by hand: no activation, but nothing a multiplier rule may pass as linear
    return (x - x.mean(1, keepdim=True)) / x.pow(2).mean(1, keepdim=True).sqrt()


def test_what_a_torchscript_function_hides_is_seen_in_its_blocks_and_by_each_kind_of_rule():
    x = torch.randn(2, 3, 8, 8)
    leaky, norm = _CallsScriptedFunctions(_scripted_leaky).eval(), _CallsScriptedFunctions(_scripted_norm).eval()
    for method in ("guided_bp", "rectgrad", "deeplift"):
        with pytest.raises(UnsupportedModel, match=r"'activation' called by .* \(it computes leaky_relu"):
            explain(leaky, x, target=0, method=method)
    for method in ("eps_lrp", "deeplift"):  # they must check every operation, as in Python
        with pytest.raises(UnsupportedModel, match=r"'activation' called by .* \(it computes div, mean, pow"):
            explain(norm, x, target=0, method=method)
    explain(norm, x, target=0, method="guided_bp")  # a gate rule changes no operation of it


@torch.jit.script
def _scripted_clamp(x):  # a ReLU written as a clamp: the gate rules warn about it in Python
    return x.clamp(min=0.0)


@torch.jit.script
def _scripted_maximum(x):  # a ReLU written as a maximum with 0
    return torch.maximum(x, torch.zeros_like(x))


@torch.jit.script
def _scripted_max_pool(x):  # a max-pool, which PRR changes
    return F.max_pool2d(x, 2).repeat_interleave(2, 2).repeat_interleave(2, 3)


@torch.jit.script
def _scripted_global_max(x):  # a global max over space, which PRR warns about in Python
    return x * torch.amax(x, dim=(2, 3))[:, :, None, None]


@torch.jit.script
def _scripted_relu_in_place(x):
    return torch.relu_(x * 1.0)


@pytest.mark.parametrize("scripted, hidden", [(_scripted_clamp, "clamp"), (_scripted_maximum, "maximum"),
                                              (_scripted_max_pool, "max_pool2d"), (_scripted_global_max, "amax"),
                                              (_scripted_relu_in_place, "relu_")],
                         ids=["clamp", "maximum", "max_pool2d", "amax", "relu_"])
def test_a_torchscript_function_hiding_what_a_gate_rule_looks_at_is_refused(scripted, hidden):
    # clamps and maxima with 0 (ReLUs the rules warn about), max-pools and max reductions (PRR's): hidden in
    # TorchScript, the rules could neither change nor warn about them
    model, x = _CallsScriptedFunctions(scripted).eval(), torch.randn(2, 3, 8, 8)
    for method in ("guided_bp", "rectgrad", "rectgrad_prr"):
        with pytest.raises(UnsupportedModel, match=rf"'activation' called by .* \(it computes [^)]*{hidden}"):
            explain(model, x, target=0, method=method)


def test_a_torchscript_helper_computing_sizes_is_not_refused():
    torch.manual_seed(0)
    python, x = _ScalesBySize(_size_scale).eval(), torch.randn(2, 3, 8, 8)
    scripted = _ScalesBySize(_scripted_size_scale).eval()
    scripted.load_state_dict(python.state_dict())
    for method in ("guided_bp", "rectgrad", "deconv"):  # (it was refused: 'scale' called by _ScalesBySize.forward)
        torch.testing.assert_close(explain(scripted, x, target=1, method=method),
                                   explain(python, x, target=1, method=method))
    with pytest.raises(UnsupportedModel, match=r"it computes mul, sqrt"):  # a multiplier rule cannot tell constants
        explain(scripted, x, target=1, method="deeplift")


@pytest.mark.filterwarnings("ignore:the attribution.* holds NaN:rectgrad.AttributionWarning")  # the NaN statistic
def test_a_pending_graph_of_the_users_survives_an_attribution():
    model = _batchnorm_net().eval()  # its buffers are saved by the user's graph; the attribution must not write them
    model[1].running_var[0] = float("nan")  # a NaN statistic is unchanged too
    x = torch.randn(2, 3, 6, 6)
    loss = model(x).nansum()
    for method in ("saliency", "rectgrad", "deeplift"):
        explain(model, x, method=method)
    loss.backward()  # "modified by an inplace operation" if a call wrote the buffers back
    assert model[0].weight.grad is not None


def test_a_pending_training_step_survives_an_attribution_of_a_model_in_train_mode():
    # the attribution's forward pass moves the BatchNorm statistics the user's graph saved; writing them back must
    # not invalidate that graph (Captum's own attributions leave it valid), nor change its gradients
    model, x = _batchnorm_net(), torch.randn(2, 3, 6, 6)
    model(x).sum().backward()
    expected = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    loss = model(x[[1, 0]]).sum()  # the same batch reordered, so the same gradients
    statistics = [b.clone() for b in model.buffers()]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the training-mode warning
        RectGrad(model).attribute(x, target=0)
        explain(model, x, method="saliency")
    loss.backward()
    for p, grad in zip(model.parameters(), expected):
        torch.testing.assert_close(p.grad, grad)
    for buffer, value in zip(model.buffers(), statistics):
        torch.testing.assert_close(buffer, value)  # those of the user's forward pass: ours left no trace


class _SparseMixing(nn.Module):
    """A graph-network style layer: a sparse adjacency buffer mixes the features."""

    def __init__(self):
        super().__init__()
        self.register_buffer("adjacency", torch.eye(4).to_sparse())
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(torch.relu(torch.sparse.mm(self.adjacency, x.t()).t()))


@pytest.mark.filterwarnings("ignore:the attribution.* is all zero:rectgrad.AttributionWarning")  # q = 98 of 4 units
def test_sparse_buffers_are_kept_as_they_were():
    model, x = _SparseMixing().eval(), torch.randn(2, 4)
    for method in ("saliency", "rectgrad", "guided_bp"):
        assert explain(model, x, target=0, method=method).shape == (2, 4)
    assert torch.equal(model.adjacency.to_dense(), torch.eye(4))


_FLAT = [0.0] * 60_000
_MODELS = {"net": _GLOBAL_NET}


def _forward_naming_big_lists_before_a_dict(x):
    return len(_TABLE) * 0 + len(_FLAT) * 0 + _MODELS["net"](x)  # 160,000 numbers named before the model's dict


def test_the_model_is_found_behind_big_lists_named_first():
    from rectgrad.attr._base import modules_of

    assert _GLOBAL_NET in modules_of(_forward_naming_big_lists_before_a_dict)


class Counting(nn.Module):
    """Counts its calls in a buffer it reassigns (not updated in place)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.register_buffer("calls", torch.zeros(()))

    def forward(self, x):
        self.calls = self.calls + 1
        return self.fc(torch.relu(x))


@pytest.mark.filterwarnings("ignore:the attribution.* is all zero:rectgrad.AttributionWarning")  # q = 98 of 4 units
def test_a_buffer_the_forward_pass_reassigns_is_restored_too():
    model, x = Counting(), torch.randn(2, 4)
    original = model.calls
    for method in ("saliency", "rectgrad", "deeplift"):
        explain(model, x, method=method)
        assert model.calls is original and model.calls.item() == 0
    RectGrad(model).attribute(x, target=0, q=50.0)
    assert model.calls is original and model.calls.item() == 0


def test_a_model_in_training_mode_is_a_warning_once_per_call():
    def net(norm, drop):
        return nn.Sequential(nn.Conv2d(3, 4, 3), norm, nn.ReLU(), nn.Flatten(), drop, nn.Linear(64, 3))

    def warnings_of(call):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            call()
        return [str(w.message) for w in caught if "training mode" in str(w.message)]

    x = torch.randn(3, 3, 6, 6)
    model = net(nn.BatchNorm2d(4), nn.Dropout(0.5)).train()
    for call in (lambda: explain(model, x, method="saliency"), lambda: explain(model, x, method="rectgrad"),
                 lambda: RectGrad(model).attribute(x, target=0, internal_batch_size=1)):
        assert warnings_of(call) == ["the model is in training mode: BatchNorm2d normalises with the batch's "
                                     "statistics; Dropout drops units at random, so the maps depend on the batch "
                                     "and change from call to call; call model.eval() first (rectgrad leaves the "
                                     "mode as it is)"]
    assert model.training
    quiet = (model.eval(), net(nn.Identity(), nn.Identity()).train())  # nothing behaves differently in training mode
    for model in quiet:
        assert warnings_of(lambda: explain(model, x, method="guided_bp")) == []
    # a BatchNorm without running statistics uses the batch's statistics in eval mode too: model.eval() changes
    # nothing, so it gets a warning of its own (below), not this one
    model = net(nn.BatchNorm2d(4, track_running_stats=False), nn.Dropout(0.0)).train()
    with pytest.warns(rectgrad.AttributionWarning) as caught:
        explain(model, x, method="guided_bp")
    assert [str(w.message).split(" (")[0] for w in caught] == ["BatchNorm2d without running statistics"]


def test_a_batchnorm_without_running_statistics_is_a_warning_once_per_call():
    # track_running_stats=False normalises with the batch's statistics in eval mode too: the gating methods' maps
    # (and the others') depended on the other images of the batch, without a word
    def warnings_of(call):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            maps = call()
        return maps, [str(w.message) for w in caught if issubclass(w.category, rectgrad.AttributionWarning)]

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, track_running_stats=False), nn.ReLU(), nn.Flatten(),
                          nn.Linear(64, 3)).eval()
    x = torch.randn(3, 3, 6, 6)
    expected = ("BatchNorm2d without running statistics (track_running_stats=False) normalises with the statistics "
                "of the batch it runs on, in eval mode too, so each map depends on the other images of the batch and "
                "on internal_batch_size (SmoothGrad's noisy copies and IntegGrad's steps run as batches too); for "
                "maps of each image alone, use BatchNorm with running statistics (track_running_stats=True)")
    for method in ("guided_bp", "deconv", "rectgrad", "saliency"):
        whole, said = warnings_of(lambda: explain(model, x, target=0, method=method, q=50.0)
                                  if method == "rectgrad" else explain(model, x, target=0, method=method))
        assert said == [expected], method
        part, _ = warnings_of(lambda: explain(model, x[:2], target=0, method=method))
        assert not torch.allclose(whole[:2], part), method  # what the warning is about: the same images, other maps
    _, said = warnings_of(lambda: RectGrad(model).attribute(x, target=0, internal_batch_size=1))
    assert said == [expected]
    assert not model.training
    for quiet in (nn.BatchNorm2d(4).eval(), nn.InstanceNorm2d(4)):  # running statistics; per-image statistics
        model[1] = quiet
        assert warnings_of(lambda: explain(model, x, target=0, method="guided_bp"))[1] == []


class _Residual(nn.Module):
    def __init__(self, drop):
        super().__init__()
        self.conv, self.drop, self.fc = nn.Conv2d(3, 3, 3, padding=1), drop, nn.Linear(3, 2)

    def forward(self, x):
        return self.fc((x + self.drop(F.relu(self.conv(x)))).mean((2, 3)))


def test_a_model_in_training_mode_with_stochastic_depth_is_a_warning():
    # ConvNeXt, Swin, EfficientNet: torchvision's StochasticDepth and timm's DropPath drop residual branches at random
    # (timm's DropBlock2d blocks of units)
    # in training mode, so the maps changed from call to call without the warning BatchNorm and dropout get
    from torchvision.ops import StochasticDepth
    timm = pytest.importorskip("timm")

    def warnings_of(model):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            explain(model, torch.randn(4, 3, 5, 5), target=0, method="guided_bp")
        return [str(w.message) for w in caught if "training mode" in str(w.message)]

    for drop in (StochasticDepth(0.5, "row"), timm.layers.DropPath(0.5)):
        assert warnings_of(_Residual(drop).train()) == [
            f"the model is in training mode: {type(drop).__name__} drops residual branches at random, so the maps "
            "depend on the batch and change from call to call; call model.eval() first (rectgrad leaves the mode as "
            "it is)"]
    assert warnings_of(_Residual(timm.layers.DropBlock2d(0.5, block_size=3)).train()) == [
        "the model is in training mode: DropBlock2d drops blocks of units at random, so the maps depend on the batch "
        "and change from call to call; call model.eval() first (rectgrad leaves the mode as it is)"]
    for quiet in (_Residual(StochasticDepth(0.5, "row")).eval(), _Residual(StochasticDepth(0.0, "row")).train(),
                  _Residual(timm.layers.DropPath(0.0)).train(), _Residual(timm.layers.DropBlock2d(0.0)).train()):
        assert warnings_of(quiet) == []


@pytest.mark.parametrize("method", ["saliency", "grad_input", "intgrad"])
def test_captum_methods_give_captums_maps_bit_for_bit(method):
    # we sum the target logits before the backward pass instead of Captum's one autograd output per sample
    from captum.attr import InputXGradient, IntegratedGradients, Saliency

    model = PaperCNN().double().eval()
    x = torch.randn(6, 3, 32, 32, dtype=torch.float64)
    target = torch.tensor([0, 3, 3, 9, 1, 2])
    inputs = x.clone().requires_grad_()
    captum = {"saliency": lambda: Saliency(model).attribute(inputs, target=target, abs=False),
              "grad_input": lambda: InputXGradient(model).attribute(inputs, target=target),
              "intgrad": lambda: IntegratedGradients(model).attribute(inputs, baselines=0.0, target=target, n_steps=50,
                                                                      method="riemann_right")}[method]()
    assert torch.equal(explain(model, x, target=target, method=method), captum)
    assert torch.equal(explain(model, x, target=3, method=method)[1:3], captum[1:3])


def test_explain_docstring_names_every_method():
    words = set(rectgrad.explain.__doc__.replace(",", " ").split())
    assert [name for name in METHOD_NAMES if name not in words] == []  # help(rectgrad.explain) lists them all


class TwoInputs(nn.Module):
    """Two inputs, and a per-sample scale as an additional forward argument (Captum's module hooks see the ReLUs)."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.head = nn.Linear(4, 8), nn.Linear(5, 8), nn.Linear(8, 3)
        self.relu_a, self.relu_b, self.relu = nn.ReLU(), nn.ReLU(), nn.ReLU()

    def forward(self, x, z, scale):
        return self.head(self.relu(self.relu_a(self.a(x)) * scale[:, None] - self.relu_b(self.b(z))))


def _gradients(model, inputs, extra, target):
    leaves = tuple(x.detach().requires_grad_() for x in inputs)
    return torch.autograd.grad(model(*leaves, *extra)[:, target].sum(), leaves)


def _direct_maps(method, model, inputs, extra, target):
    """Each method computed without explain: by autograd, or by Captum's own class where its hooks apply."""
    from captum.attr import Deconvolution, GuidedBackprop, IntegratedGradients

    leaves = tuple(x.clone().requires_grad_() for x in inputs)
    if method in ("saliency", "grad_input", "eps_lrp"):  # epsilon-LRP with a tiny eps: Grad*Input on ReLU nets
        grads = _gradients(model, inputs, extra, target)
        return grads if method == "saliency" else tuple(x * g for x, g in zip(inputs, grads))
    if method in ("deconv", "guided_bp", "rectgrad", "rectgrad_prr"):  # RectGrad with tau = 0: Guided BP x input
        captum = {"deconv": Deconvolution}.get(method, GuidedBackprop)(model)
        maps = captum.attribute(leaves, target=target, additional_forward_args=extra)
        return maps if method in ("deconv", "guided_bp") else tuple(x * m for x, m in zip(inputs, maps))
    if method == "intgrad":
        return IntegratedGradients(model).attribute(leaves, baselines=tuple(0 * x for x in inputs), target=target,
                                                    additional_forward_args=extra, n_steps=50, method="riemann_right")
    if method == "deeplift":
        return DeepLift(model).attribute(leaves, baselines=tuple(torch.full_like(x, 0.3) for x in inputs),
                                         target=target, additional_forward_args=extra)
    generator = torch.Generator().manual_seed(0)
    if method == "random":
        return tuple(torch.rand(x.shape, generator=generator, dtype=x.dtype) for x in inputs)
    total = [torch.zeros_like(x) for x in inputs]  # smoothgrad: sigma = 0.1 (max - min) of each sample of each input
    for _ in range(3):
        noisy = [x + 0.1 * (x.amax(1, keepdim=True) - x.amin(1, keepdim=True)) *
                 torch.randn(x.shape, generator=generator, dtype=x.dtype) for x in inputs]
        total = [t + g for t, g in zip(total, _gradients(model, noisy, extra, target))]
    return tuple(t / 3 for t in total)


@pytest.mark.parametrize("method", METHOD_NAMES)
@pytest.mark.parametrize("z_as", ["input", "argument"])
def test_every_method_explains_several_inputs_and_takes_additional_forward_args(method, z_as):
    torch.manual_seed(1)  # a model whose guided gradient reaches every sample
    model = TwoInputs().double().eval()
    x, z, scale = (torch.randn(5, 4, dtype=torch.float64), torch.randn(5, 5, dtype=torch.float64),
                   torch.rand(5, dtype=torch.float64) + 0.5)
    inputs, extra = ((x, z), (scale,)) if z_as == "input" else ((x,), (z, scale))
    hyperparameters = {"eps_lrp": {"eps": 1e-12}, "deeplift": {"baseline": 0.3}, "smoothgrad": {"samples": 3},
                       "rectgrad": {"tau": 0.0, "final_threshold": False},
                       "rectgrad_prr": {"tau": 0.0, "final_threshold": False}}.get(method, {})
    maps = explain(model, inputs if z_as == "input" else x, target=1, method=method, additional_forward_args=extra,
                   internal_batch_size=2, seed=0, **hyperparameters)
    maps = maps if z_as == "input" else (maps,)
    assert isinstance(maps, tuple) and [m.shape for m in maps] == [i.shape for i in inputs]
    for ours, direct in zip(maps, _direct_maps(method, model, inputs, extra, 1)):
        torch.testing.assert_close(ours, direct)
    assert (sum(m.abs().sum(1) for m in maps) > 0).all()


def test_a_tuple_baseline_gives_one_reference_per_input():
    from captum.attr import IntegratedGradients

    torch.manual_seed(0)
    model = TwoInputs().double().eval()
    inputs = torch.randn(3, 4, dtype=torch.float64), torch.randn(3, 5, dtype=torch.float64)
    scale = torch.ones(3, dtype=torch.float64)
    references = torch.full_like(inputs[0], 0.5), torch.full((3, 5), -1.0, dtype=torch.float64)
    leaves = tuple(x.clone().requires_grad_() for x in inputs)
    direct = {"intgrad": IntegratedGradients(model).attribute(leaves, baselines=references, target=0, n_steps=50,
                                                              method="riemann_right", additional_forward_args=scale),
              "deeplift": DeepLift(model).attribute(leaves, baselines=references, target=0,
                                                    additional_forward_args=scale)}
    for method in ("intgrad", "deeplift"):
        maps = explain(model, inputs, target=0, method=method, baseline=(0.5, torch.full((5,), -1.0)),
                       additional_forward_args=scale)
        torch.testing.assert_close(maps, direct[method])
        with pytest.raises(ValueError, match="baseline is a tuple of 1 but there are 2 inputs"):
            explain(model, inputs, target=0, method=method, baseline=(0.5,), additional_forward_args=scale)
        with pytest.raises(ValueError, match="baseline is a tuple of 3 but there are 2 inputs"):  # not cut to two
            explain(model, inputs, target=0, method=method, baseline=(0.5, -1.0, 2.0), additional_forward_args=scale)


SMALL = {"smoothgrad": {"samples": 3}, "intgrad": {"steps": 5}, "rectgrad": {"q": 50.0},
         "rectgrad_prr": {"q": 50.0}}  # fewer samples and steps; q = 98 passes no unit of a layer of 6 or 8


class SharedBank(nn.Module):
    """A bank of vectors shared by every sample, sum-pooled: the map changes if the bank is split or repeated."""

    def __init__(self):
        super().__init__()
        self.a, self.head = nn.Linear(3, 6), nn.Linear(6, 3)

    def forward(self, x, bank):
        return self.head(torch.relu(self.a(torch.tanh(x + bank.sum(0)))))


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_a_shared_argument_as_long_as_a_chunk_is_not_taken_for_a_per_sample_one(method):
    # decided once against the whole batch: a (2, 3) bank beside chunks of 2 samples (a (1, 3) one beside the last,
    # lone sample of 5) is still shared, not split, doubled with DeepLIFT's references or repeated with the steps
    torch.manual_seed(0)
    model = SharedBank().double().eval()
    small = SMALL.get(method, {})
    for n, banked in ((4, 2), (5, 1)):
        x, bank = torch.randn(n, 3, dtype=torch.float64), torch.randn(banked, 3, dtype=torch.float64)
        whole = explain(model, x, target=2, method=method, additional_forward_args=(bank,), seed=0, **small)
        assert (whole.abs().sum(1) > 0).all()  # the guided methods too: target 2's weights are not all negative
        torch.testing.assert_close(explain(model, x, target=2, method=method, additional_forward_args=(bank,), seed=0,
                                           internal_batch_size=2, **small), whole)


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_an_argument_shared_by_the_batch_is_passed_as_it_is(method):
    # not repeated with the samples, noisy copies or integration steps, as Captum repeats every tensor argument
    torch.manual_seed(1)  # a model whose guided gradient reaches every sample
    model, x, z, scale = TwoInputs().eval(), torch.randn(3, 4), torch.randn(5), torch.rand(3) + 0.5
    small = SMALL.get(method, {})
    shared = explain(model, x, target=2, method=method, additional_forward_args=(z, scale), seed=0,
                     internal_batch_size=2, **small)
    assert (shared.abs().sum(1) > 0).all()
    torch.testing.assert_close(shared, explain(model, x, target=2, method=method, seed=0, internal_batch_size=2,
                                               additional_forward_args=(z.expand(3, 5), scale), **small))


@pytest.mark.parametrize("method", ["saliency", "smoothgrad", "intgrad", "deeplift", "rectgrad"])
def test_a_shared_argument_follows_every_input_of_a_tuple(method):
    # the model held with its shared arguments takes all the inputs before them, not the first alone
    torch.manual_seed(1)
    model, x, z, scale = TwoInputs().eval(), torch.randn(3, 4), torch.randn(3, 5), torch.tensor([0.7])
    small = SMALL.get(method, {})
    maps = explain(model, (x, z), target=2, method=method, additional_forward_args=scale, seed=0, **small)
    direct = explain(lambda x, z: model(x, z, scale), (x, z), target=2, method=method, seed=0, **small)
    assert len(maps) == 2 and maps[0].abs().sum() > 0
    for ours, expected in zip(maps, direct):
        torch.testing.assert_close(ours, expected)


def _tanh_net():
    """A small float64 net whose gradient changes with its input (the noise and the integration path matter)."""
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)).double().eval()


def _relu_net():
    torch.manual_seed(1)  # a net whose guided gradient reaches every sample
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).double().eval()


def test_smoothgrad_without_noise_is_the_gradient_of_each_samples_own_target():
    # noise_level = 0 is a valid setting (the mean of identical gradients), and every copy keeps its sample's class
    model, x, target = _tanh_net(), torch.randn(3, 4, dtype=torch.float64), [2, 0, 1]
    saliency = explain(model, x, target=target, method="saliency")
    for size in (None, 4):
        torch.testing.assert_close(explain(model, x, target=target, method="smoothgrad", noise_level=0.0, samples=3,
                                           seed=0, internal_batch_size=size), saliency)


def test_smoothgrad_draws_copy_by_copy_with_several_inputs_and_per_sample_arguments_whatever_internal_batch_size():
    # several copies in one pass (no internal_batch_size, or a multiple of the batch) draw the same noise as one copy
    # a pass, and repeat the per-sample arguments with the copies
    torch.manual_seed(1)
    model = TwoInputs().double().eval()
    x, z, scale = (torch.randn(5, 4, dtype=torch.float64), torch.randn(5, 5, dtype=torch.float64),
                   torch.rand(5, dtype=torch.float64) + 0.5)
    direct = _direct_maps("smoothgrad", model, (x, z), (scale,), 1)  # 3 copies, seed 0
    for size in (None, 2, 10):
        torch.testing.assert_close(explain(model, (x, z), target=1, method="smoothgrad", additional_forward_args=scale,
                                           samples=3, seed=0, internal_batch_size=size), direct)


@pytest.mark.parametrize("integration", ["riemann_right", "riemann_left", "riemann_middle", "riemann_trapezoid",
                                         "gausslegendre"])
def test_intgrad_takes_its_steps_and_each_of_captums_integrations(integration):
    from captum.attr import IntegratedGradients

    model, x = _tanh_net(), torch.randn(3, 4, dtype=torch.float64)
    captum = IntegratedGradients(model).attribute(x.clone().requires_grad_(), baselines=0.0, target=1, n_steps=7,
                                                  method=integration)
    torch.testing.assert_close(explain(model, x, target=1, method="intgrad", steps=7, integration=integration),
                               captum)


def test_intgrad_with_one_step_is_refused_by_name_where_captum_asserts():
    model, x = _tanh_net(), torch.randn(3, 4, dtype=torch.float64)
    for integration in ("riemann_right", "riemann_left", "riemann_middle", "riemann_trapezoid"):
        with pytest.raises(ValueError, match=f"steps must be at least 2 for integration='{integration}', got 1"):
            explain(model, x, target=1, method="intgrad", steps=1, integration=integration)
    # one Gauss-Legendre point: the midpoint, weight 1, so the map is (x - 0) * gradient at x / 2
    leaf = (x / 2).requires_grad_()
    gradient, = torch.autograd.grad(model(leaf)[:, 1].sum(), leaf)
    torch.testing.assert_close(explain(model, x, target=1, method="intgrad", steps=1, integration="gausslegendre"),
                               x * gradient)


def test_a_baseline_tensor_is_taken_in_the_models_dtype():
    # a float32 reference beside a bfloat16 model: converted, not promoted (the model would refuse float32)
    model, x = _relu_net().bfloat16(), torch.randn(3, 4).bfloat16()
    reference = torch.tensor([0.5, -0.25, 0.0, 1.0])  # exact in bfloat16
    for method in ("intgrad", "deeplift"):
        maps = explain(model, x, target=1, method=method, baseline=reference)
        assert maps.dtype == torch.bfloat16
        assert torch.equal(maps, explain(model, x, target=1, method=method, baseline=reference.bfloat16()))


def test_a_method_name_given_as_the_target_says_to_pass_it_by_keyword():
    model, x = _tanh_net(), torch.randn(2, 4, dtype=torch.float64)
    for name in ("saliency", "rectgrad"):  # explain(model, x, "rectgrad"): the third argument is the target
        with pytest.raises(TypeError, match=f"got the method name '{name}': the third argument of explain is the "
                                            f"target; give the method by keyword, explain\\(model, x, "
                                            f"method='{name}'\\)"):
            explain(model, x, name)
    with pytest.raises(TypeError, match="target must be None, an int, a list, .* got str"):  # another string
        explain(model, x, "cat", method="saliency")


def test_an_unknown_hyperparameter_gets_a_did_you_mean():
    model, x = _tanh_net(), torch.randn(2, 4, dtype=torch.float64)
    for method, given, meant in (("rectgrad", "Q", "q"), ("rectgrad", "final_thresold", "final_threshold"),
                                 ("smoothgrad", "n_samples", "samples"), ("smoothgrad", "nt_samples", "samples"),
                                 ("smoothgrad", "stdevs", "noise_level"), ("intgrad", "n_steps", "steps"),
                                 ("intgrad", "baselines", "baseline"), ("deeplift", "baselines", "baseline"),
                                 ("eps_lrp", "epsilon", "eps")):  # typos, and Captum's names for ours
        with pytest.raises(TypeError, match=f"method '{method}' has no hyper-parameter '{given}' \\(did you mean "
                                            f"'{meant}'\\?\\); its hyper-parameters: "):
            explain(model, x, target=0, method=method, **{given: 1})
    # another method's hyper-parameter: which methods take it (a final threshold is RectGrad's alone)
    with pytest.raises(TypeError, match=r"'saliency' has no hyper-parameter 'final_threshold' \(a hyper-parameter of "
                                        r"rectgrad, rectgrad_prr\); its hyper-parameters: abs$"):
        explain(model, x, target=0, method="saliency", final_threshold=True)
    with pytest.raises(TypeError, match=r"'random' has no hyper-parameter 'samples' \(a hyper-parameter of "
                                        r"smoothgrad\); its hyper-parameters: none$"):
        explain(model, x, target=0, method="random", samples=3)
    with pytest.raises(TypeError, match=r"'rectgrad' has no hyper-parameter 'foo'; its hyper-parameters: q, tau"):
        explain(model, x, target=0, method="rectgrad", foo=1)


def test_a_one_element_tensor_counts_as_its_value_for_every_hyperparameter():
    # values swept over torch.linspace / arange are 0-d tensors: taken as q and tau always were, not refused
    model, x = _relu_net(), torch.randn(3, 4, dtype=torch.float64)
    for method, values in (("eps_lrp", {"eps": 0.5}), ("smoothgrad", {"samples": 3, "noise_level": 0.25}),
                           ("intgrad", {"steps": 4}), ("rectgrad", {"q": 50.0, "final_threshold": False}),
                           ("saliency", {"abs": True})):
        as_tensors = {name: torch.tensor(value) for name, value in values.items()}
        assert torch.equal(explain(model, x, target=1, method=method, seed=torch.tensor(5), **as_tensors,
                                   internal_batch_size=torch.tensor(2)),
                           explain(model, x, target=1, method=method, seed=5, **values, internal_batch_size=2))
    with pytest.raises(ValueError, match="samples must be a positive integer, got 3.0"):  # its value, checked
        explain(model, x, target=1, method="smoothgrad", samples=torch.tensor(3.0))
    with pytest.raises(ValueError, match=r"eps must be a finite positive number, got tensor\(\[0.1000, 0.2000\]\)"):
        explain(model, x, target=1, method="eps_lrp", eps=torch.tensor([0.1, 0.2]))


def test_bad_hyperparameter_values_of_the_wrong_type_are_named():
    model, x = _tanh_net(), torch.randn(2, 4, dtype=torch.float64)
    with pytest.raises(TypeError, match="abs must be True or False, got 'yes'"):
        explain(model, x, target=0, method="saliency", abs="yes")
    with pytest.raises(ValueError, match="noise_level must be a finite non-negative number, got '0.1'"):
        explain(model, x, target=0, method="smoothgrad", noise_level="0.1")
    with pytest.raises(ValueError, match="eps must be a finite positive number, got '0.01'"):
        explain(model, x, target=0, method="eps_lrp", eps="0.01")
    with pytest.raises(ValueError, match="steps must be a positive integer, got 0"):
        explain(model, x, target=0, method="intgrad", steps=0)
    for method in ("intgrad", "deeplift"):
        with pytest.raises(TypeError, match=r"baseline must be a number, a tensor, a numpy array or None \(zeros\), "
                                            "got str"):
            explain(model, x, target=0, method=method, baseline="0")
    with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 2\*\*64\) or None, got True"):
        explain(model, x, target=0, method="random", seed=True)


def test_bools_are_no_numbers_for_any_hyperparameter():
    # True would pass as 1 (a noise of the whole range, eps 1, a white reference) where steps and seed refuse it
    model, x = _tanh_net(), torch.randn(2, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match="noise_level must be a finite non-negative number, got True"):
        explain(model, x, target=0, method="smoothgrad", noise_level=True)
    with pytest.raises(ValueError, match="eps must be a finite positive number, got True"):
        explain(model, x, target=0, method="eps_lrp", eps=True)
    for method in ("intgrad", "deeplift"):
        for baseline in (False, np.bool_(True), (True,)):
            with pytest.raises(TypeError, match="baseline must be a number, .* got (bool|bool_)"):
                explain(model, x, target=0, method=method, baseline=baseline)
        for odd in (torch.tensor([True, False] * 2), torch.tensor(True), torch.zeros(4, dtype=torch.complex64)):
            for baseline in (odd, (odd,)):  # were read as 0 / 1 (a complex one: its imaginary part dropped)
                with pytest.raises(TypeError, match=f"baseline tensor must hold numbers, got dtype {odd.dtype}$"):
                    explain(model, x, target=0, method=method, baseline=baseline)
    assert explain(model, x, target=0, method="intgrad", baseline=np.float32(0.0)).any()  # numpy numbers are numbers


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_the_inputs_are_left_requiring_grad_or_not_and_the_maps_are_detached(method):
    model = _relu_net()
    signed = {"tau": 0.0, "final_threshold": False}  # RectGrad's signed map: no sample's is all zero
    small = {"smoothgrad": {"samples": 2}, "intgrad": {"steps": 3}, "rectgrad": signed,
             "rectgrad_prr": signed}.get(method, {})
    for requires_grad in (False, True):
        x = torch.randn(3, 4, dtype=torch.float64, requires_grad=requires_grad)
        maps = explain(model, x, target=0, method=method, seed=0, **small)
        assert x.requires_grad == requires_grad and x.grad is None
        assert not maps.requires_grad and maps.grad_fn is None


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_internal_batch_size_bounds_the_samples_of_every_forward_pass(method):
    # below the batch too, where a pass holds part of one noisy copy (SmoothGrad) or of one integration step (IG)
    model, sizes = _relu_net(), []
    model.register_forward_pre_hook(lambda module, args: sizes.append(len(args[0])))
    signed = {"tau": 0.0, "final_threshold": False}
    small = {"smoothgrad": {"samples": 3}, "intgrad": {"steps": 3}, "rectgrad": signed,
             "rectgrad_prr": signed}.get(method, {})
    for target in (None, 0):
        sizes.clear()
        explain(model, torch.randn(5, 4, dtype=torch.float64), target=target, method=method, internal_batch_size=2,
                seed=0, **small)
        assert max(sizes) == (4 if method == "deeplift" else 2)  # DeepLIFT: inputs + references


@pytest.mark.parametrize("rule", ["pr2", "mod"])
def test_rectgrad_takes_its_propagation_rule(rule):
    model, x = PaperCNN(image_size=16).eval(), torch.randn(2, 3, 16, 16)
    expected = RectGrad(model).attribute(x, target=1, q=90.0, padding_trick=True, final_threshold=True, rule=rule)
    assert not torch.equal(expected, RectGrad(model).attribute(x, target=1, q=90.0, padding_trick=True))
    torch.testing.assert_close(explain(model, x, target=1, method="rectgrad", q=90.0, rule=rule), expected)


class _FeaturesFirst(nn.Module):
    """Transposes its activations to (features, N): dim 0 is no longer the batch."""

    def __init__(self):
        super().__init__()
        self.a, self.head = nn.Linear(4, 6), nn.Linear(2, 3)

    def forward(self, x):
        return self.head(torch.relu(self.a(x).t()).t()[:, :2])


def test_deeplift_refuses_an_activation_whose_dim_0_is_not_the_batch():
    # the rule pairs the first half of dim 0 (the inputs) with the second (the references): a (6, 2N) activation
    # would be paired feature with feature, silently
    with pytest.raises(UnsupportedModel, match=r"pairs each input with its reference along dim 0.*shape \(6, 4\) "
                                               r"for a batch of 2 inputs and their references"):
        explain(_FeaturesFirst().double(), torch.randn(2, 4, dtype=torch.float64), target=0, method="deeplift")


@pytest.mark.parametrize("method", ["deconv", "guided_bp", "eps_lrp", "deeplift", "rectgrad", "rectgrad_prr"])
def test_every_method_of_the_rule_engine_refuses_a_torchscript_submodule(method):
    block = torch.jit.script(nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU()))
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), block, nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(64, 3)).eval()
    with pytest.raises(ValueError, match=rf"{method} modifies the backward pass.*TorchScript module '2'"):
        explain(model, torch.randn(2, 3, 8, 8), target=0, method=method)


def test_captums_names_of_the_methods_point_to_ours():
    model, x = _tanh_net(), torch.randn(2, 4, dtype=torch.float64)
    for captum, ours in (("NoiseTunnel", "smoothgrad"), ("LRP", "eps_lrp"), ("IntegratedGradients", "intgrad"),
                         ("InputXGradient", "grad_input"), ("GuidedBackprop", "guided_bp"),
                         ("Deconvolution", "deconv")):
        with pytest.raises(ValueError, match=f"unknown method '{captum}' \\(did you mean '{ours}'\\?\\)"):
            explain(model, x, method=captum)


def test_predict_checks_the_device_bounds_its_passes_and_returns_detached_logits():
    model, x = PaperCNN(image_size=16).eval(), torch.randn(5, 3, 16, 16)
    with pytest.raises(ValueError, match=r"the inputs are on cpu but the model's weights on meta: move one"):
        predict(PaperCNN(image_size=16).to("meta"), x)
    sizes = []
    model.register_forward_pre_hook(lambda module, args: sizes.append(len(args[0])))
    torch.testing.assert_close(predict(model, x, internal_batch_size=2), model(x).detach())
    assert sizes == [2, 2, 1, 5]
    hooked = _SavesItsGradient().eval()  # run with gradients on: its logits are still detached
    logits = predict(hooked, torch.randn(3, 3, 8, 8))
    assert not logits.requires_grad and logits.grad_fn is None


def test_a_models_own_runtime_error_is_raised_after_one_forward_pass():
    # only an error about gradients (a tensor hook registered in the forward pass) is worth a pass with them on
    calls = []

    def broken(x):
        calls.append(torch.is_grad_enabled())
        raise RuntimeError("the model's own failure")

    for call in (lambda: predict(broken, torch.randn(2, 3)),
                 lambda: explain(broken, torch.randn(2, 3), method="saliency")):
        calls.clear()
        with pytest.raises(RuntimeError, match="the model's own failure"):
            call()
        assert calls == [False]


def test_shared_whole_number_and_yes_no_helpers_by_hand():
    """rectgrad._checks: integer / positive_int take ints (numpy's, a 0-d integer tensor) as plain ints and refuse
    bools of every kind (Python, numpy, a torch bool tensor), 5.0 and strings; flag takes only True / False; real
    numbers exclude bools and complex numbers."""
    from rectgrad import _checks

    for value, expected in ((5, 5), (np.int64(5), 5), (torch.tensor(3), 3), (-2, -2)):
        assert _checks.integer("n", value) == expected and type(_checks.integer("n", value)) is int
    for value in (True, np.bool_(False), torch.tensor(True), np.array(True), 5.0, "5"):
        with pytest.raises(TypeError, match=f"^n must be an integer, got {re.escape(repr(value))}$"):
            _checks.integer("n", value)
    for value, expected in ((1, 1), (np.int64(7), 7), (np.uint8(2), 2)):
        assert _checks.positive_int("k", value) == expected and type(_checks.positive_int("k", value)) is int
    for value in (0, -1, True, False, 1.0, "1", np.float64(2.0)):
        with pytest.raises(ValueError, match=f"^k must be a positive integer, got {re.escape(repr(value))}$"):
            _checks.positive_int("k", value)
    assert _checks.flag("f", np.bool_(True)) is True and _checks.flag("f", False) is False
    for value in (1, 0, "yes", "", None, [True]):
        with pytest.raises(TypeError, match="^f must be True or False, got "):
            _checks.flag("f", value)
    assert all(_checks.real(v) for v in (1, 1.5, np.float32(2), np.int64(3), float("nan")))
    assert not any(_checks.real(v) for v in (True, np.bool_(False), 1j, "1", None, torch.tensor(1.0)))


def test_shared_fraction_lists_by_hand():
    """ROAR / KAR fractions: a non-empty ordered sequence (list, tuple, 1-d array or tensor) of reals strictly
    increasing inside (0, 1); 0 and 1 themselves, repeats, a decreasing pair, an empty list, sets (no order), a lone
    number or a 2-d array, and bools are refused."""
    import decimal

    from rectgrad._checks import fractions

    assert fractions([0.1, 0.5, 0.9]) == (0.1, 0.5, 0.9)
    assert fractions(np.array([0.25, 0.75])) == (0.25, 0.75)
    assert fractions(torch.tensor([0.25, 0.5], dtype=torch.float64)) == (0.25, 0.5)
    assert fractions((decimal.Decimal("0.5"),)) == (0.5,) and fractions([1e-9, 1 - 1e-9]) == (1e-9, 1 - 1e-9)
    for value in ([0.0, 0.5], [0.5, 1.0], [0.3, 0.3], [0.5, 0.3], [], [-0.1], [float("nan")]):
        with pytest.raises(ValueError, match="strictly increasing values in the open interval"):
            fractions(value)
    for value in ({0.1, 0.3}, frozenset({0.2}), np.array(0.5), np.array([[0.1, 0.2]]), "0.5", 0.5, [True], [0.1, "x"]):
        with pytest.raises(TypeError, match="^fractions must be "):
            fractions(value)


def test_shared_name_suggestions_by_hand():
    """did_you_mean: a typo close enough (5 of 6 letters: ratio 0.83, over the 0.8 cutoff), in any case, is named;
    a farther name (resnet18 for resnet50: 0.75) is not; another library's exact name (an alias) wins over a close
    spelling; nothing close gives ""."""
    from rectgrad._checks import did_you_mean

    assert did_you_mean("DECOMV", ["saliency", "deconv"]) == " (did you mean 'deconv'?)"
    assert did_you_mean("Salency", ["saliency"], before=": ", after="") == ": did you mean 'saliency'?"
    assert did_you_mean("resnet18", ["resnet50"]) == "" and did_you_mean("zzz", ["saliency"]) == ""
    aliases = {"inputxgradient": "grad_input"}
    assert did_you_mean("InputXGradient", ["grad_input", "inputxgradients"], aliases=aliases) == \
        " (did you mean 'grad_input'?)"


# Exploratory bug hunt (the attribution API with Captum): each xfail pins a bug found, and passes once it is fixed


def test_deeplift_on_a_one_score_output_names_the_callers_shape_and_the_fix():
    score = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1), nn.Flatten(0)).double()
    x = torch.randn(3, 3, dtype=torch.float64)
    hint = r"got \(3,\); a model scoring each sample with one number: explain lambda x: model\(x\)\[:, None\]"
    for method in ("saliency", "eps_lrp", "rectgrad"):  # these name it (pass)
        with pytest.raises(ValueError, match=hint):
            explain(score, x, target=0, method=method)
    with pytest.raises(ValueError, match=hint):
        explain(score, x, target=0, method="deeplift")


def test_deeplift_refuses_an_output_of_another_batch_size_rather_than_cutting_it_to_the_inputs_rows():
    # DeepLIFT's pass holds the inputs and their references (2N rows): the first N rows of its output are the inputs'
    # logits only when the output has 2N rows; an output of other rows is the model's error, not a batch to cut
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 3)).double()
    x = torch.randn(2, 3, dtype=torch.float64)
    for wrong in (lambda x: net(x).reshape(-1, 1), lambda x: net(x).repeat(2, 1)):
        for method in ("deeplift", "eps_lrp"):
            with pytest.raises(ValueError, match=r"the model output must have shape \(N, classes\) = \(2, C\)"):
                explain(wrong, x, target=0, method=method)


class _TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.out = nn.Linear(3, 8), nn.Linear(2, 8), nn.Linear(8, 4)

    def forward(self, x, z):
        return self.out(torch.relu(self.a(x) + self.b(z)))


def test_one_float64_input_of_a_tuple_into_a_float32_model_is_named():
    torch.manual_seed(0)
    model = _TwoInputs()
    x, z = torch.randn(3, 3), torch.from_numpy(np.random.default_rng(0).standard_normal((3, 2)))  # float64
    with pytest.raises(TypeError, match="the inputs are torch.float64 but the model's weights torch.float32"):
        explain(model, (x.double(), z), target=0, method="saliency")  # both float64: named (passes)
    for call in (lambda: RectGrad(model).attribute((x, z), target=0),
                 lambda: explain(model, (x, z), target=0, method="saliency"),
                 lambda: explain(model, (x, z), target=0, method="rectgrad")):
        with pytest.raises(TypeError, match=r"inputs\[1\] of the tuple is torch.float64 but the model's "
                                            r"weights torch.float32: convert the inputs \(e.g. inputs\[1\].to\("):
            call()  # the one input to convert is named, not all of them


def test_the_flatten_hint_explains_a_segmentation_output_as_captums_tuple_target_does():
    # the error for an (N, C, H, W) output says: explain lambda x: model(x).flatten(1) with the flattened index;
    # that gives Captum's maps for the tuple target (c, h, w), for every method Captum has
    from captum.attr import Deconvolution as CaptumDeconvolution
    from captum.attr import InputXGradient, IntegratedGradients

    torch.manual_seed(0)
    seg = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 1)).double().eval()
    x, target, index = torch.randn(2, 3, 5, 5, dtype=torch.float64), (1, 2, 3), 1 * 25 + 2 * 5 + 3
    captum = {"saliency": lambda: Saliency(seg).attribute(x, target=target, abs=False),
              "grad_input": lambda: InputXGradient(seg).attribute(x, target=target),
              "guided_bp": lambda: CaptumGuidedBackprop(seg).attribute(x, target=target),
              "deconv": lambda: CaptumDeconvolution(seg).attribute(x, target=target),
              "intgrad": lambda: IntegratedGradients(seg).attribute(x, target=target, n_steps=50,
                                                                     method="riemann_right"),
              "deeplift": lambda: DeepLift(seg).attribute(x, target=target)}
    for method, theirs in captum.items():
        ours = explain(lambda t: seg(t).flatten(1), x, target=index, method=method)
        expected = theirs()
        torch.testing.assert_close(ours, expected, rtol=1e-10, atol=1e-14)
        assert expected.abs().sum() > 0, method


def test_predict_takes_a_tuple_of_inputs_as_explain_does_or_says_it_takes_one_tensor():
    torch.manual_seed(0)
    model, x, z = _TwoInputs(), torch.randn(2, 3), torch.randn(2, 2)
    try:
        logits = predict(model, (x, z))
    except (TypeError, ValueError) as error:
        assert "unpack" not in str(error) and "tuple" in str(error)
    else:
        assert torch.equal(logits, model(x, z).detach())


@pytest.mark.parametrize("method", ["rectgrad", "saliency", "deeplift"])
def test_explain_names_a_model_that_is_not_callable(method):
    x = torch.randn(2, 3, 8, 8)
    state_dict = PaperCNN(image_size=8).state_dict()
    for model in ("efficientnet-lite0", state_dict):
        for target in (None, 0):
            with pytest.raises(TypeError, match="model must be") as error:
                explain(model, x, target=target, method=method)
            assert "object is not callable" not in str(error.value)


@pytest.mark.parametrize("method", [m for m in METHOD_NAMES if m not in ("rectgrad", "rectgrad_prr", "random")])
def test_explain_warns_about_any_methods_all_zero_map_naming_the_method(method):
    # a zero-initialised head: every gradient-based map is zero; RectGrad alone warned about it
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).double()
    nn.init.zeros_(model[2].weight)
    x = torch.rand(2, 3, dtype=torch.float64) + 0.5
    with pytest.warns(rectgrad.AttributionWarning,
                      match=rf"^the attribution by {method} of sample\(s\) \[0, 1\] is all zero: ") as caught:
        maps = explain(model, x, target=0, method=method)
    assert not maps.any() and len(caught) == 1
    with pytest.warns(rectgrad.AttributionWarning, match=rf"^the attribution by {method} is all zero: "):
        explain(model, x[:1], target=0, method=method)


def test_explain_warns_about_a_non_finite_map_of_any_method_and_once_about_rectgrads():
    # sqrt at 0 has an infinite derivative: the saliency map holds Inf at that element of each sample
    head = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).double()
    x = torch.rand(2, 3, dtype=torch.float64) + 0.5
    x[:, 0] = 0.0
    model = lambda t: head(torch.cat([t[:, :1].sqrt(), t[:, 1:]], 1))  # noqa: E731
    with pytest.warns(rectgrad.AttributionWarning,
                      match=r"^the attribution by saliency of sample\(s\) \[0, 1\] holds NaN or Inf") as caught:
        maps = explain(model, x, target=0, method="saliency")
    assert (~torch.isfinite(maps)).sum(1).tolist() == [1, 1] and len(caught) == 1
    with pytest.warns(rectgrad.AttributionWarning, match=r"^the attribution of sample\(s\) \[0, 1\] holds") as caught:
        explain(model, x, target=0, method="rectgrad", tau=0.0)  # RectGrad's own warning, not a second one
    assert len(caught) == 1


@pytest.mark.parametrize("d, pool", [(1, nn.AvgPool1d(2)), (2, nn.AvgPool2d(2)), (3, nn.AvgPool3d(2))],
                         ids=["1d", "2d", "3d"])
def test_multiplier_rules_pass_average_pooling_as_the_linear_map_it_is(d, pool):
    # relu -> average pool of 2^d-unit windows -> linear, from a zero reference: the ReLU's Rescale multiplier is
    # relu(z) / z (1 where z > 0, 0 below), eps-LRP's relu(z) / (z + 1e-4 sign(z)); each input gets its window's
    # weight / 2^d, by hand
    torch.manual_seed(0)
    x = torch.randn(2, 1, *[2] * (d - 1), 4, dtype=torch.float64)
    model = nn.Sequential(nn.ReLU(), pool, nn.Flatten(), nn.Linear(2, 2, bias=False)).double()
    w = model[3].weight[1].detach().repeat_interleave(2)  # the window of each input along the last dimension
    share = w / 2 ** d
    deeplift = explain(model, x, target=1, method="deeplift")
    torch.testing.assert_close(deeplift, x.clamp(min=0) * share, rtol=1e-12, atol=0)
    lrp = explain(model, x, target=1, method="eps_lrp")
    torch.testing.assert_close(lrp, x * torch.where(x > 0, x / (x + 1e-4), 0.0) * share, rtol=1e-12, atol=0)
