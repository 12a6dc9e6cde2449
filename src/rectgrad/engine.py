"""The backward-rule engine: modified gradients through activations, convolutions and max-pools.

A rule is a few lines of data (:class:`Rule`); the engine intercepts the activation *op* during
the forward pass (a :class:`~torch.overrides.TorchFunctionMode`, as TorchRay does), so
``nn.ReLU``, ``nn.ReLU(inplace=True)``, ``F.relu``, ``torch.relu``, ``Tensor.relu``, ``relu_`` and
one module called several times all follow the rule. Nothing is registered on the model: the mode
lives for one forward pass of one thread, so concurrent calls with different rules do not interact.
Code compiled with ``torch.compile`` runs as plain PyTorch meanwhile, so the mode sees its operations.

Backward rule at an activation with output ``a`` and incoming gradient ``R`` (paper Sec. 4.1)::

    R_in = 1[score(a, R) > tau] * R          score = a * R (PR1, RectGrad), |a * R| (PR2), a (PR3), R (PR4)

``tau`` is a constant or, per sample, the q-th percentile of the scores over all units of the layer
(numpy's ``nearest`` method, strict ``>``). For ReLU the indicator *replaces* the ReLU gate
``1[z > 0]`` exactly as the paper's Listing 1 does (so with a negative ``tau`` inactive units pass
the gradient, as in the reference code). Other activations (ReLU6/hardtanh, LeakyReLU, PReLU, RReLU,
ELU, SELU, CELU, Threshold, GELU, SiLU, Hardswish, Mish) keep their own derivative and the indicator gates it:
``R_in = 1[score > tau] * f'(z) * R``.
Guided Backprop is PR4 with ``tau = 0`` keeping the ReLU gate (Eq. 5); Deconvolution is PR4 with
``tau = 0`` and no gate at all (Eq. 3).

The modified gradients of epsilon-LRP and DeepLIFT (Ancona et al., 2018) are the second kind of
rule (:class:`MultiplierRule`): the activation's derivative is replaced by a multiplier ``m(z, a)``.

Two more techniques (Appendix C): the padding trick zeroes a 1-pixel border of the gradient with
respect to the output of every SAME ``conv1d/2d/3d``, as Listing 2 does, along every side: zero-padded ones,
whatever the kernel size (a conv whose input comes straight from a zero ``F.pad``, as TensorFlow-style "same"
padding does, included), and those with a 1 x ... x 1 kernel; the proportional redistribution rule
(PRR, Listing 3) passes a max-pool's (1d, 2d, 3d, adaptive) gradient to every input of its window in
proportion to its activation.
"""
from __future__ import annotations

import importlib.util
import os
import sys
import threading
import warnings
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.modules._functions import BackwardHookFunction
from torch.overrides import TorchFunctionMode
from torch.utils.checkpoint import CheckpointFunction

from rectgrad.cpu_gate import gate_above_percentile
from rectgrad.operations import (ADAPTIVE_MAX_POOL_PAIRS, ATEN_ALIASES, ATEN_REWRITES, CLAMPS, ELEMENTWISE,
                                 FUSED_RELUS, KNOWN_ACTIVATIONS, MAX_REDUCTIONS, MAXIMUMS, OTHER_NONLINEAR, RELU,
                                 RRELUS_WITH_NOISE, UnsupportedModel, depends_on_input, is_inplace, is_zero,
                                 refuse_undefined, refuse_unknown, tensors_in)
from rectgrad.selection import where_above_percentile

SCORES = {  # importance score of a unit from its output a and incoming gradient g, written into `out()`
    "pr1": lambda a, g, out: torch.mul(a, g, out=out()),
    "pr2": lambda a, g, out: torch.mul(a, g, out=out()).abs_(),
    "pr3": lambda a, g, out: a,
    "pr4": lambda a, g, out: g,
}


class Scratch:
    """A buffer reused for the scores of every layer of one attribution call: a fresh large tensor
    costs a page fault per 4 KiB on first touch, as much as the multiplication itself."""

    def __init__(self):
        self._buffer: Tensor | None = None
        self._bytes: Tensor | None = None

    def like(self, t: Tensor) -> Tensor:
        b = self._buffer
        if b is None or b.numel() < t.numel() or b.dtype != t.dtype or b.device != t.device:
            b = self._buffer = torch.empty(t.numel(), dtype=t.dtype, device=t.device)
        return b[: t.numel()].view(t.shape)

    def bytes(self, size: int) -> Tensor:
        """``size`` bytes of CPU memory (the candidates of :mod:`rectgrad.cpu_gate`)."""
        if self._bytes is None or self._bytes.numel() < size:
            self._bytes = torch.empty(size, dtype=torch.uint8)
        return self._bytes[:size]


@dataclass(frozen=True)
class Rule:
    """A backward rule at activations (paper Sec. 4.1 and Appendix B.1).

    ``score`` names the importance score; ``top_score`` replaces it at the activation nearest the
    output (RectGradMod: PR1 there, PR2 elsewhere). Exactly one of ``q`` (per-sample percentile)
    and ``tau`` (constant) sets the threshold. ``relu_gate`` keeps ReLU's own ``1[z > 0]``;
    ``derivative`` keeps the derivative of the other activations.
    """

    score: str = "pr1"
    q: float | None = None
    tau: float | None = None
    top_score: str | None = None
    relu_gate: bool = False
    derivative: bool = True

    @property
    def per_sample(self) -> bool:
        """Whether the rule reads dim 0 of an activation as the sample (one percentile per sample)."""
        return self.q is not None

    def gate(self, a: Tensor, grad: Tensor, is_top: bool, is_relu: bool, scratch: Scratch) -> Tensor:
        """``grad`` where the unit's score exceeds the threshold (and, with ``relu_gate`` at a ReLU,
        where ``a > 0``), 0 elsewhere."""
        name = self.top_score if is_top and self.top_score else self.score
        relu_gate = self.relu_gate and is_relu
        if self.q is not None and name in ("pr1", "pr2"):  # one compiled pass on the CPU, when it applies
            gated = gate_above_percentile(a, grad, self.q, name == "pr2", scratch)
            if gated is not None:
                return torch.where(a > 0, gated, 0.0) if relu_gate else gated
        score = SCORES[name]
        if a.dtype in (torch.float16, torch.bfloat16):  # thresholds in float32
            a, grad_scores = a.float(), grad.float()
        else:
            grad_scores = grad
        s = score(a, grad_scores, lambda: scratch.like(grad_scores))
        if self.q is None:
            keep = (s > self.tau) & (a > 0) if relu_gate else s > self.tau
            return torch.where(keep, grad, 0.0)
        gated = where_above_percentile(s.reshape(a.shape[0], -1), grad, self.q)
        return torch.where(a > 0, gated, 0.0) if relu_gate else gated


GUIDED_BACKPROP = Rule(score="pr4", tau=0.0, relu_gate=True)
DECONVOLUTION = Rule(score="pr4", tau=0.0, relu_gate=False, derivative=False)


@dataclass(frozen=True)
class MultiplierRule:
    """A rule replacing an activation's derivative by ``multiplier(z, a, derivative)`` (the modified
    gradients of Ancona et al., 2018: epsilon-LRP, DeepLIFT Rescale). ``derivative(t)`` evaluates the
    activation's own derivative at ``t``. Defined for networks of linear layers, pooling and
    element-wise activations: the engine refuses products of input-dependent tensors and other
    non-linearities under such a rule."""

    name: str
    multiplier: Callable[[Tensor, Tensor, Callable[[Tensor], Tensor]], Tensor]
    per_sample: bool = False  # reads dim 0 as the sample (DeepLIFT pairs each input with its reference by it)


def eps_lrp_rule(eps: float) -> MultiplierRule:
    """epsilon-LRP: f'(z) becomes f(z) / (z + eps sign(z)), sign(0) = +1; the sign in z's dtype (float32 at least),
    so a float64 model's eps is not rounded to float32."""
    def multiplier(z: Tensor, a: Tensor, derivative) -> Tensor:
        sign = torch.where(z >= 0, 1.0, -1.0).to(torch.promote_types(z.dtype, torch.float32))
        return a / (z + eps * sign)

    return MultiplierRule("eps_lrp", multiplier)


def _rescale(z: Tensor, a: Tensor, derivative) -> Tensor:
    n = len(z) // 2  # the batch is [inputs; references]
    dz, da = z[:n] - z[n:], a[:n] - a[n:]
    m = torch.where(dz.abs() >= 1e-6, da / dz, derivative((z[:n] + z[n:]) / 2))
    return torch.cat([m, m])


DEEPLIFT_RESCALE = MultiplierRule("deeplift", _rescale, per_sample=True)
"""DeepLIFT Rescale: f'(z) becomes (f(z) - f(z0)) / (z - z0) with z0 the reference's activation input
(the second half of the batch), f' at the midpoint where |z - z0| < 1e-6."""


@dataclass(frozen=True)
class Options:
    """What the engine modifies during one attribution call."""

    rule: Rule | MultiplierRule | None = None
    padding_trick: bool = False
    prr: bool = False


@dataclass
class _Site:
    """One activation call of the forward pass."""

    call: object  # re-applies the activation to a tensor (for the local derivative)
    is_relu: bool
    rule: Rule
    scratch: Scratch
    name: str  # the function called, for messages
    is_top: bool = False

    @property
    def keeps_input(self) -> bool:
        """What the backward pass keeps, as PyTorch's own activations do: a ReLU's output (enough for the gating
        rules), another activation's input (the output is recomputed from it)."""
        return isinstance(self.rule, MultiplierRule) or not self.is_relu


class _RuleAtActivation(torch.autograd.Function):
    """The activation ``site.call`` with the site's rule as its backward pass. Like PyTorch's own backward, it
    keeps the output of a ReLU and the input of every other activation (recomputing the output from it), so
    code that modifies a GELU's or SiLU's output in place works as it does without the engine."""

    @staticmethod
    def forward(ctx, x, site: _Site, inplace: bool):
        z = x.clone() if site.keeps_input and inplace else x
        out = site.call(x)
        if inplace:
            ctx.mark_dirty(x)
        ctx.site, ctx.inplace = site, inplace
        ctx.save_for_backward(z if site.keeps_input else out)
        return out

    @staticmethod
    def backward(ctx, grad):
        site: _Site = ctx.site
        try:
            (saved,) = ctx.saved_tensors
        except RuntimeError as error:
            if "modified by an inplace operation" not in str(error) or not site.keeps_input:
                raise
            raise UnsupportedModel(f"the rule keeps the input of {site.name} for the backward pass (as PyTorch does "
                                   "for activations other than ReLU; DeepLIFT and eps-LRP for ReLUs too), but the "
                                   "model changes that input in place after the activation (e.g. y = F.relu(h); "
                                   "h += 1, or h[:, :4] = F.relu(h[:, :4])): write that step out of place (h = h + 1, "
                                   "torch.cat), or explain the model with another method") from None
        if site.keeps_input:
            z = saved
            with torch.no_grad():
                a = site.call(z.clone() if ctx.inplace else z)
        else:
            z, a = None, saved
        rule = site.rule
        if isinstance(rule, MultiplierRule):
            return grad * rule.multiplier(z, a, lambda t: _local_gradient(site.call, t, torch.ones_like(t))), None, None
        gated = rule.gate(a, grad, site.is_top, site.is_relu, site.scratch)
        if site.is_relu or not rule.derivative:
            return gated, None, None
        return _local_gradient(site.call, z, gated), None, None


_RRELUS = (F.rrelu, F.rrelu_, torch.rrelu)  # F.rrelu_ is torch.rrelu_


def _as_called(func, args, kwargs, rule) -> Callable[[Tensor], Tensor]:
    """The activation call ``func(*args, **kwargs)`` as a function of its tensor. A randomised leaky ReLU in training
    mode (``nn.RReLU`` in train mode, ``F.rrelu(training=True)``, ``torch._C._nn.rrelu_with_noise``, which writes them
    into its noise tensor) draws its slopes here, once, as the call would:
    its output and derivative, recomputed by the rule, are those of the forward pass (DeepLIFT, whose input and
    reference would get different slopes, refuses it)."""
    rest = args[1:]
    fifth = "inplace" if func is F.rrelu else "generator"  # torch.rrelu(input, lower, upper, training, generator)
    names = ("lower", "upper", "training", fifth)
    if func in RRELUS_WITH_NOISE:  # torch._C._nn.rrelu_with_noise(input, noise, lower, upper, training, generator)
        names = ("noise", *names)
    values = dict(zip(names, rest), **kwargs)
    bounds = {k: values[k] for k in ("lower", "upper") if k in values}
    if func in RRELUS_WITH_NOISE and not values.get("training"):  # a leaky ReLU, its noise unused: of any batch size
        public = torch.rrelu_ if is_inplace(func, args, kwargs) else torch.rrelu
        return lambda t: public(t, **bounds)
    if (func not in _RRELUS and func not in RRELUS_WITH_NOISE) or not values.get("training"):
        return lambda t: func(t, *rest, **kwargs)
    if isinstance(rule, MultiplierRule) and rule.per_sample:
        raise UnsupportedModel(f"{rule.name} compares each input with its reference through the same network, but "
                               f"{func.__name__} in training mode (nn.RReLU in train mode) draws other random slopes "
                               "for each: call model.eval() first")
    slopes = values["noise"] if "noise" in values else torch.empty_like(args[0])  # 1 where the input is positive
    with torch.no_grad():
        torch.ops.aten.rrelu_with_noise(args[0], slopes, training=True, **bounds,
                                        **({"generator": values["generator"]} if "generator" in values else {}))
    if "noise" in values:  # the caller's noise tensor holds the slopes, as after the call; the rule keeps its own
        slopes = slopes.clone()
    return (lambda t: t.mul_(slopes)) if is_inplace(func, args, kwargs) else (lambda t: t * slopes)


def _local_gradient(call, z: Tensor, grad: Tensor) -> Tensor:
    """``grad`` times the derivative of the activation ``call`` at ``z``."""
    with torch.enable_grad():
        zz = z.detach().requires_grad_()
        (local,) = torch.autograd.grad(call(zz.clone()), zz, grad)
    return local


def _zero_border(bordered: tuple[bool, ...]):
    """Gradient hook zeroing a 1-pixel border along each ``bordered`` spatial dimension (padding trick, Appendix
    C.1, Listing 2); ``bordered`` holds one flag per spatial dimension, the last ``len(bordered)`` of the tensor."""

    def hook(grad: Tensor) -> Tensor:
        grad = grad.clone()
        for dim, border in enumerate(bordered, start=grad.dim() - len(bordered)):
            if border:
                grad.narrow(dim, 0, 1).zero_()
                grad.narrow(dim, grad.shape[dim] - 1, 1).zero_()
        return grad

    return hook


_AVERAGE_POOL = {F.max_pool1d: F.avg_pool1d, F.max_pool2d: F.avg_pool2d, F.max_pool3d: F.avg_pool3d,
                 torch.max_pool1d: F.avg_pool1d, torch.max_pool2d: F.avg_pool2d, torch.max_pool3d: F.avg_pool3d,
                 F.adaptive_max_pool1d: F.adaptive_avg_pool1d, F.adaptive_max_pool2d: F.adaptive_avg_pool2d,
                 F.adaptive_max_pool3d: F.adaptive_avg_pool3d}


class _ProportionalMaxPool(torch.autograd.Function):
    """Max-pool whose backward redistributes in proportion to the inputs (PRR, Listing 3):
    ``R_in = x * avgpool_backward(R / (avgpool(x) + 1e-10))`` over the max-pool's own windows. Inputs at -inf
    (the padding of a "same" max-pool written as ``F.pad(x, value=-inf)``, timm's ``MaxPool2dSame``) count as
    padding: 0, as ``padding=`` would give."""

    @staticmethod
    def forward(ctx, x, max_pool: Callable[[Tensor], Tensor], average: Callable[[Tensor], Tensor]):
        ctx.average = average
        ctx.save_for_backward(x)
        return max_pool(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        with torch.enable_grad():  # in float32 at least: the 1e-10 of Listing 3 vanishes in float16
            xx = x.detach().to(torch.promote_types(x.dtype, torch.float32))
            if torch.isneginf(xx).any():  # a copy only then: no second layer-sized tensor otherwise
                xx = xx.masked_fill(torch.isneginf(xx), 0.0)
            xx.requires_grad_()
            mean = ctx.average(xx)
            (spread,) = torch.autograd.grad(mean, xx, grad.to(xx.dtype) / (mean.detach() + 1e-10))
        return spread.mul_(xx.detach()).to(x.dtype), None, None  # in place: no second layer-sized tensor


# autograd Functions the rules follow: the engine's, and the identity through which PyTorch runs module backward
# hooks (register_full_backward_hook); every other one is the model's own (refused or warned about)
_FOLLOWED_FUNCTIONS = (_RuleAtActivation, _ProportionalMaxPool, BackwardHookFunction)
_CONVOLUTIONS = {F.conv1d: 1, F.conv2d: 2, F.conv3d: 3}  # -> spatial dimensions


def _conv_same(args, kwargs) -> bool:
    """Whether the padding trick zeroes a convolution's border (Listing 2: every SAME convolution): one that zero-pads,
    or whose kernel is 1 x ... x 1 (SAME and VALID are then the same computation; the reference's TF-slim models
    write them SAME), unless declared ``padding="valid"``."""
    padding = kwargs.get("padding", args[4] if len(args) > 4 else 0)
    if padding == "valid":
        return False
    weight = kwargs.get("weight", args[1] if len(args) > 1 else None)
    if weight is not None and all(k == 1 for k in weight.shape[2:]):
        return True
    if isinstance(padding, str):  # "same"
        return weight is not None
    return any(p > 0 for p in ((padding,) if isinstance(padding, int) else padding))


def _zero_pad(args, kwargs) -> tuple[bool, ...]:
    """Whether an ``F.pad`` call pads each of its input's dimensions with zeros (one flag per dimension)."""
    values = dict(zip(("input", "pad", "mode", "value"), args))
    values.update(kwargs)
    x, pad, mode, value = values["input"], values["pad"], values.get("mode", "constant"), values.get("value")
    padded = [False] * x.dim()
    if mode == "constant" and not value:
        for i in range(len(pad) // 2):  # (left, right) of the last dimension, then of the one before, ...
            padded[-1 - i] = pad[2 * i] > 0 or pad[2 * i + 1] > 0
    return tuple(padded)


_MAX_POOL_ARGS = ("kernel_size", "stride", "padding", "dilation", "ceil_mode")
# max-pools without a proportional rule: those returning indices (nn.MaxPool2d(return_indices=True) calls
# max_pool2d_with_indices), used to unpool the selected units, and the fractional ones, whose windows are random
_MAX_POOLS_WITHOUT_RULE = (F.max_pool1d_with_indices, F.max_pool2d_with_indices, F.max_pool3d_with_indices,
                           F.adaptive_max_pool1d_with_indices, F.adaptive_max_pool2d_with_indices,
                           F.adaptive_max_pool3d_with_indices, F.fractional_max_pool2d, F.fractional_max_pool3d,
                           F.fractional_max_pool2d_with_indices, F.fractional_max_pool3d_with_indices,
                           torch.max_pool1d_with_indices)
# Functions whose first argument, the tensor the rules follow, may be given as ``input=``.
_INPUT_FIRST = frozenset({*ELEMENTWISE, *_CONVOLUTIONS, *_AVERAGE_POOL, *_MAX_POOLS_WITHOUT_RULE,
                          *ADAPTIVE_MAX_POOL_PAIRS, F.pad, torch.max, torch.amax})


def _pools(func, x: Tensor, args, kwargs) -> bool:
    """Whether a ``max`` / ``amax`` call looks like a global max-pool: the maximum of a feature map (N, C, ...) over
    dimensions after the channels, dropping them (a numerically stable softmax keeps them: ``keepdim=True``), not
    two tensors' elementwise maximum."""
    values = dict(zip(("dim", "keepdim"), args[1:]), **kwargs)
    dim = values.get("dim", () if func in (torch.amax, torch.Tensor.amax) else None)
    if dim is None or isinstance(dim, Tensor) or values.get("keepdim") or x.dim() < 3:
        return False
    dims = [d % x.dim() for d in ((dim,) if isinstance(dim, int) else dim)] or range(x.dim())
    return all(d >= 2 for d in dims)


def _average_pool(func, args, kwargs) -> Callable[[Tensor], Tensor]:
    """The average pool over the windows of a max-pool call (padding excluded from the average, as TensorFlow's
    SAME average pooling does); a dilated pool, whose windows no average pool has, is refused."""
    average = _AVERAGE_POOL[func]
    if func in (F.adaptive_max_pool1d, F.adaptive_max_pool2d, F.adaptive_max_pool3d):
        size = kwargs.get("output_size", args[1] if len(args) > 1 else None)
        return lambda x: average(x, size)
    values = dict(zip(_MAX_POOL_ARGS, args[1:]))
    values.update({k: v for k, v in kwargs.items() if k in _MAX_POOL_ARGS})
    dilation = values.get("dilation", 1)
    if any(d != 1 for d in ((dilation,) if isinstance(dilation, int) else dilation)):
        raise UnsupportedModel(f"the proportional redistribution rule supports {func.__name__} without dilation "
                               f"(got dilation={dilation})")
    kernel = values["kernel_size"]
    stride, padding, ceil_mode = values.get("stride") or kernel, values.get("padding", 0), values.get("ceil_mode")
    return lambda x: average(x, kernel, stride, padding, bool(ceil_mode), count_include_pad=False)


def rule_gradients(output: Tensor, inputs: Sequence[Tensor], sources: int | None = None) -> tuple[Tensor, ...]:
    """``torch.autograd.grad(output, inputs)`` after a forward pass (under a :class:`RuleMode`, or none for the plain
    gradient), zeros for an input that the output does not reach; a ``ValueError`` if it reaches none of the first
    ``sources`` (default: all), the attribution's own inputs (a forward pass that cuts them off, e.g. a frozen stem
    under ``torch.no_grad()``).

    Activation checkpointing (``torch.utils.checkpoint``) recomputes parts of the forward pass during the backward
    pass, without the mode, to get back the tensors the operations saved. The rules save what PyTorch's own
    activations mostly save (a ReLU's output, another activation's input), so those come back unchanged; the
    mode refuses, as the forward pass runs, every activation whose recomputation would give back something else
    (:func:`_recomputed_alike`: DeepLIFT at a ReLU, PReLU, an in-place ELU, ...) and max-pools under PRR.
    PyTorch's own checkpoint errors (e.g. reentrant checkpointing under ``torch.autograd.grad``) become a
    ``ValueError`` that says what to do.
    """
    inputs = tuple(inputs)
    try:
        grads = torch.autograd.grad(output, inputs, allow_unused=True) if output.requires_grad else [None] * len(inputs)
    except RuntimeError as error:  # CheckpointError is one
        if "checkpoint" not in str(error).lower():
            raise
        raise UnsupportedModel(_CHECKPOINTING + f" (PyTorch: {str(error).splitlines()[0]})") from None
    if all(g is None for g in grads[:sources]):
        raise ValueError("the model's output does not depend on its inputs through autograd: its forward pass cuts "
                         "them off (a torch.no_grad() block, .detach(), a detour through numpy, ...), so no gradient "
                         "can reach them; keep the path from the inputs to the logits differentiable")
    return tuple(torch.zeros_like(x) if g is None else g for g, x in zip(grads, inputs))


def _package_dir(name: str) -> str:
    return os.path.dirname(importlib.util.find_spec(name).origin) + os.sep


_RECTGRAD, _BELOW_USER = _package_dir("rectgrad"), (_package_dir("captum"), _package_dir("torch"))


class AttributionWarning(UserWarning):
    """What an attribution call warns about (maps all zero or NaN, activations it cannot gate, a model in training
    mode, ...); silence them with ``warnings.filterwarnings("ignore", category=rectgrad.AttributionWarning)``."""


def warn(message: str) -> None:
    """``warnings.warn(message, AttributionWarning)`` shown at the user's line: the caller of the outermost rectgrad
    function (past Captum's and PyTorch's wrappers, e.g. ``NoiseTunnel``), however deep in the model the engine noticed
    it."""
    files = []
    frame = sys._getframe(1)
    while frame is not None:
        files.append(frame.f_code.co_filename)
        frame = frame.f_back
    caller = max(i for i, file in enumerate(files) if file.startswith(_RECTGRAD)) + 1
    while caller < len(files) and files[caller].startswith(_BELOW_USER):
        caller += 1
    warnings.warn(message, AttributionWarning, stacklevel=caller + 2)


_CHECKPOINTING = ("the model recomputes activations in the backward pass (activation checkpointing: "
                  "torch.utils.checkpoint, e.g. DenseNet(memory_efficient=True) or timm's set_grad_checkpointing()); "
                  "this method changes the backward pass of the activations as the forward pass runs, so turn "
                  "checkpointing off to explain the model")


_SAVED_TENSOR_HOOKS = getattr(torch._C._autograd, "_top_saved_tensors_default_hooks", None)  # torch >= 2.8


def _checkpointing() -> bool:
    """Whether saved-tensor hooks are active that may recompute, as ``torch.utils.checkpoint`` installs them for its
    region; ``torch.autograd.graph.save_on_cpu`` only moves the saved tensors (unknown before torch 2.8: then only
    PyTorch's own checkpoint errors guard the recomputation)."""
    hooks = _SAVED_TENSOR_HOOKS(True) if _SAVED_TENSOR_HOOKS is not None else None
    return hooks is not None and getattr(hooks[0], "__module__", None) != "torch.autograd.graph"


def _recomputed_alike(site: _Site, x: Tensor) -> bool:
    """Whether the backward pass of a checkpointed block, recomputing this activation without the engine, gets back
    what the rule saved: the plain activation must save one tensor equal to it (a ReLU's output, another
    activation's input; not the two tensors of PReLU or RReLU, nor the output of an in-place ELU)."""
    saved = []
    start = x.detach().clone().requires_grad_().clone()  # not a leaf: an in-place activation may run on it
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        out = site.call(start)
    return len(saved) == 1 and torch.equal(saved[0], x if site.keeps_input else out)


_eager_lock = threading.Lock()
_eager_calls = 0
_eager_prior = None


@contextmanager
def _compiled_code_runs_eagerly() -> Iterator[None]:
    """``torch.compile``'d models and functions run their Python code meanwhile (the compiler's ``force_eager``
    stance, torch >= 2.6), so an engine mode sees their operations; otherwise dynamo would trace the mode itself and
    compile again for each rule setting. The stance is global: the first of concurrent calls sets it, the last restores
    the stance from before (meanwhile other threads' compiled code runs eagerly too, with the same results)."""
    global _eager_calls, _eager_prior
    set_stance = getattr(torch.compiler, "set_stance", None)
    if set_stance is None or "torch._dynamo" not in sys.modules:  # nothing compiled yet: spare its import (~1 s)
        yield
        return
    with _eager_lock:
        if _eager_calls == 0:
            _eager_prior = set_stance("force_eager")  # set now; its __exit__ restores the stance before it
        _eager_calls += 1
    try:
        yield
    finally:
        with _eager_lock:
            _eager_calls -= 1
            if _eager_calls == 0:
                _eager_prior.__exit__(None, None, None)


@dataclass
class RuleMode(TorchFunctionMode):
    """Intercepts activations (and, on request, SAME convs, zero pads and max-pools) for one forward pass."""

    options: Options
    batch: int | None = None  # samples per forward pass: dim 0 of every activation, for per-sample rules
    sites: list[_Site] = field(default_factory=list)
    input_nodes: set = field(default_factory=set)  # graph nodes of activation outputs (they depend on the inputs)
    scratch: Scratch = field(default_factory=Scratch)
    zero_padded: dict = field(default_factory=dict)  # id(F.pad output) -> (weakref to it, padded per dimension)
    warned: set = field(default_factory=set)  # what this call has warned about (once each): keys, Functions

    def __post_init__(self):
        super().__init__()

    def __enter__(self):
        with ExitStack() as entering:
            entering.enter_context(_compiled_code_runs_eagerly())
            mode = super().__enter__()
            self._context = entering.pop_all()
        return mode

    def __exit__(self, *exc):
        with self._context:
            return super().__exit__(*exc)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        func = ATEN_ALIASES.get(func, func)
        if func in ATEN_REWRITES:
            func, args, kwargs = ATEN_REWRITES[func](args, kwargs) or (func, args, kwargs)
        options = self.options
        multiplier = isinstance(options.rule, MultiplierRule)
        if options.rule is not None:
            self.check_custom_functions(tensors_in(args, kwargs))
        if multiplier and func in OTHER_NONLINEAR:
            refuse_undefined(options.rule.name, func, args, kwargs, self.input_nodes)
        activation = options.rule is not None and func in (ELEMENTWISE if multiplier else KNOWN_ACTIVATIONS)
        if not args and "input" in kwargs and func in _INPUT_FIRST:  # torch.relu(input=x), F.conv2d(input=x, ...)
            kwargs = dict(kwargs)
            args = (kwargs.pop("input"),)
        if not args or not isinstance(args[0], Tensor) or not (torch.is_grad_enabled() and args[0].requires_grad):
            return self._unchanged(func, args, kwargs)
        x = args[0]
        if options.rule is not None and not multiplier:
            self._warn_ungated(func, args, kwargs)
        if activation and depends_on_input(x, self.input_nodes):  # not a weight computed from parameters
            inplace = is_inplace(func, args, kwargs)
            if inplace and (x._base if x._is_view() else x).is_leaf:  # the input, or a view of it: PyTorch refuses
                return func(*args, **kwargs)  # before changing it (the rule's Function would change it first)
            others = [t for t in tensors_in(args[1:], kwargs) if depends_on_input(t, self.input_nodes)]
            if others and multiplier:
                raise UnsupportedModel(f"{options.rule.name} cannot handle a product of two input-dependent tensors "
                                       f"({getattr(func, '__name__', func)} with a weight that depends on the input; "
                                       "a tensor requiring grad that is not an nn.Parameter counts as an input): "
                                       "its rule is defined for networks of linear layers, pooling and element-wise "
                                       "activations")
            self._check_batch(func, x)
            site = _Site(call=_as_called(func, args, kwargs, options.rule), is_relu=func in RELU, rule=options.rule,
                         scratch=self.scratch, name=getattr(func, "__name__", str(func)))
            if _checkpointing() and not _recomputed_alike(site, x):
                raise UnsupportedModel(f"{_CHECKPOINTING} ({site.name} inside a checkpointed block "
                                       "would be recomputed differently)")
            self.sites.append(site)
            out = _RuleAtActivation.apply(x, site, inplace)
            if others:  # a weight computed from the input (F.prelu's): its plain gradient, adding 0 to the output
                plain = func(x.detach(), *args[1:], **kwargs)
                out = out + (plain - plain.detach()).nan_to_num(0.0, 0.0, 0.0)  # (inf - inf: 0, as the value is out)
            self.input_nodes.add(out.grad_fn)
            return out
        if options.padding_trick and func is F.pad:
            out = func(*args, **kwargs)
            padded = _zero_pad(args, kwargs)
            if any(padded):
                self.zero_padded[id(out)] = (weakref.ref(out), padded)
            return out
        if options.padding_trick and func in _CONVOLUTIONS:
            dims = _CONVOLUTIONS[func]
            same = _conv_same(args, kwargs)
            before = self.zero_padded.get(id(x))
            if before is not None and before[0]() is x:  # "same" padding done by a separate F.pad / ZeroPad2d
                same = same or any(before[1][-dims:])
            out = func(*args, **kwargs)
            sides = out.shape[-dims:]
            if same and any(side > 1 for side in sides):  # a 1-pixel side has no border (Listing 2 fails there)
                # a hook on the tensor sees the gradient of this value even if later ops are in-place
                out.register_hook(_zero_border(tuple(side > 1 for side in sides)))
                if 2 in sides:
                    self._warn_once("border", f"the padding trick zeroes the whole gradient of a {tuple(sides)} "
                                    "convolution output (its 1-pixel border is all of it): nothing reaches the input "
                                    "through it (all-zero maps unless skip connections pass around it); give larger "
                                    "inputs or use padding_trick=False")
            return out
        if options.prr and (func in _AVERAGE_POOL or func in ADAPTIVE_MAX_POOL_PAIRS):
            if _checkpointing():  # PyTorch's max-pool keeps its indices too: the recomputed tensors would not match
                raise UnsupportedModel(f"{_CHECKPOINTING} (a max-pool under PRR inside a checkpointed block)")
            pool = ADAPTIVE_MAX_POOL_PAIRS.get(func, func)  # the values alone, of a pool returning its indices too
            values = _ProportionalMaxPool.apply(x, lambda t: pool(t, *args[1:], **kwargs),
                                                _average_pool(pool, args, kwargs))
            return values if pool is func else (values, func(x.detach(), *args[1:], **kwargs)[1])
        if options.prr and func in MAX_REDUCTIONS and _pools(func, x, args, kwargs) and depends_on_input(
                x, self.input_nodes):
            self._warn_once("max", f"{func.__name__}(x, dim) over a feature map's spatial or time dimensions: if it "
                            "is a max-pool (a global max over time in a text CNN), PRR does not reach it, as it "
                            "redistributes at max-pool functions only; write it as F.adaptive_max_pool1d(x, 1) / "
                            "F.max_pool1d to have PRR apply")
        if options.prr and func in _MAX_POOLS_WITHOUT_RULE:
            raise UnsupportedModel(f"the proportional redistribution rule does not support {func.__name__} (max-pools "
                                   "returning indices, e.g. for MaxUnpool or in an exported program decomposed to core "
                                   "ATen, and fractional max-pools); use prr=False")
        return self._unchanged(func, args, kwargs)

    def check_custom_functions(self, tensors: Sequence[Tensor]) -> None:
        """A user's ``torch.autograd.Function`` (e.g. a memory-efficient Swish) whose output, computed from the inputs,
        is used (or returned: :func:`rectgrad.methods._modified_gradient` asks for the logits): its operations run with
        gradients off, unseen, and its own backward is used. A multiplier rule, which can neither change that backward
        nor know it to be linear, refuses it; a gating rule warns, once per Function (the rule does not reach an
        activation written so)."""
        for t in tensors:
            function = getattr(type(t.grad_fn), "_forward_cls", None)  # the Function of a custom Function's node
            if (function is None or function in _FOLLOWED_FUNCTIONS or function in self.warned
                    or not depends_on_input(t, self.input_nodes)):
                continue
            if function is CheckpointFunction:
                raise UnsupportedModel(f"{_CHECKPOINTING} (a reentrant torch.utils.checkpoint block)")
            if not isinstance(self.options.rule, MultiplierRule):
                self._warn_once(function, f"{function.__name__} is the model's own torch.autograd.Function: the rule "
                                "does not reach inside it and its own backward is used there; if it is an activation "
                                "(e.g. EfficientNet-PyTorch's memory-efficient Swish), write it with PyTorch "
                                "operations (e.g. F.silu) to have the rule apply")
                continue
            raise UnsupportedModel(f"{self.options.rule.name} cannot follow the custom torch.autograd.Function "
                                   f"{function.__name__}: its backward is the model's own, which the rule can neither "
                                   "change nor know to be linear; write it with PyTorch operations (e.g. F.silu for a "
                                   "memory-efficient Swish), or explain this model with another method")

    def _check_batch(self, func, x: Tensor) -> None:
        """A per-sample rule reads an activation's dim 0 as the sample: refuse a layout that puts another
        dimension first, which would mix samples (or pair the wrong ones) silently."""
        if self.batch is None or not self.options.rule.per_sample or (x.dim() > 0 and x.shape[0] == self.batch):
            return
        paired = isinstance(self.options.rule, MultiplierRule)
        what, batch = (("pairs each input with its reference", f"{self.batch // 2} inputs and their references")
                       if paired else ("thresholds each sample at its own percentile", str(self.batch)))
        raise UnsupportedModel(f"the rule {what} along dim 0, but an activation ({getattr(func, '__name__', func)}) "
                               f"gets a tensor of shape {tuple(x.shape)} for a batch of {batch}: the model puts "
                               "another dimension first (inputs without their batch dimension: one image (C, H, W) "
                               "needs x[None]; a sequence-first (L, N, C) layout, e.g. nn.TransformerEncoderLayer "
                               "without batch_first=True; or samples folded into dim 0); make dim 0 the batch"
                               + ("" if paired else ", or give a constant threshold tau instead of q"))

    def _warn_ungated(self, func, args, kwargs) -> None:
        """ReLUs a gating rule cannot reach: inside a fused ``nn.RNN``, or written as a clamp or a maximum with 0."""
        if func in FUSED_RELUS:
            self._warn_once("fused", f"the ReLUs inside {func.__name__} (nn.RNN with nonlinearity='relu', one fused "
                            "operation) are out of the rules' reach: they pass the plain gradient")
        bound = kwargs.get("min", args[1] if len(args) > 1 else None) if func in CLAMPS else None
        if is_zero(bound) and depends_on_input(args[0], self.input_nodes):
            self._warn_once("clamp", f"{func.__name__}(min=0) works as a ReLU here but the rules gate activation "
                            "functions only: it passes the plain gradient (write it as F.relu / F.relu6 / F.hardtanh "
                            "to have the rule apply)")
        other = kwargs.get("other", args[1] if len(args) > 1 else None) if func in MAXIMUMS else None
        if (isinstance(other, Tensor) and not other.requires_grad and not bool(other.any())
                and depends_on_input(args[0], self.input_nodes)):
            self._warn_once("maximum", f"{func.__name__}(x, 0) works as a ReLU here but the rules gate activation "
                            "functions only: it passes the plain gradient (write it as F.relu to have the rule apply)")

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self.warned:
            self.warned.add(key)
            warn(message)

    def _unchanged(self, func, args, kwargs):
        """An operation no rule changes; a multiplier rule passes it as linear, so it must be (``LINEAR_OPS``),
        and no mask may be computed from the input (``COMPARISONS``)."""
        out = func(*args, **kwargs)
        if isinstance(self.options.rule, MultiplierRule):
            refuse_unknown(self.options.rule.name, func, args, kwargs, out, self.input_nodes)
        return out

    def mark_top(self) -> None:
        """Flag the activation nearest the output (the last one called in the forward pass)."""
        if self.sites:
            self.sites[-1].is_top = True
