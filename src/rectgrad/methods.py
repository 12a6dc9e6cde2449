"""One registry for RectGrad and the attribution methods the paper compares it with (Sec. 5.2, Fig. 1).

>>> maps = rectgrad.explain(model, x, target=y, method="intgrad")   # a tensor shaped like x
>>> rectgrad.methods()                                             # names, defaults, descriptions

Defaults follow the paper's reference code: signed saliency; SmoothGrad with noise sigma =
0.1 x (max - min) of each sample and 50 samples; Integrated Gradients with 50 right-Riemann steps
from a zero baseline; epsilon-LRP with eps = 1e-4; DeepLIFT Rescale from a zero reference;
RectGrad with q = 98, the padding trick and the final threshold (its positive part).

Captum computes the plain gradient (saliency, grad_input, SmoothGrad's inner gradients) and
Integrated Gradients, which need no rule and are correct on any model (with the target logits summed
before the backward pass, :func:`_summed_gradients`, instead of Captum's one autograd output per
sample). Deconv, Guided BP and RectGrad run on the rule engine (:mod:`rectgrad.engine`). epsilon-LRP and
DeepLIFT are the modified gradients of Ancona et al. (2018), as the paper's reference code computes them: the engine's
multiplier rules replace the derivative of every element-wise activation (functional, in-place,
reused and ReLU6 activations included, which Captum's module hooks miss); layers they cannot handle
(products of two input-dependent tensors, softmax, normalisation over features, other non-linear
functions) raise a ``ValueError`` naming the operation.
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np
import torch
from captum._utils.common import _format_output, _is_tuple
from captum.attr import InputXGradient, IntegratedGradients, Saliency
from torch import Tensor

from rectgrad._checks import did_you_mean, flag, positive_int, real
from rectgrad._checks import seed as check_seed
from rectgrad.attr import Deconvolution, GuidedBackprop, RectGrad
from rectgrad.attr._arguments import (batches, beyond_int64, check_device, check_internal_batch_size, check_logits,
                                      check_model, check_threshold, format_additional_args, format_inputs, one_value,
                                      per_sample, repeat_samples, resolve_targets, target_indices)
from rectgrad.attr._base import (check_reachable, modules_of, named_errors, preserved_buffers, user_call,
                                 warn_if_degenerate)
from rectgrad.engine import DEEPLIFT_RESCALE, MultiplierRule, Options, RuleMode, eps_lrp_rule, rule_gradients
from rectgrad.operations import tensors_in


@dataclass(frozen=True)
class Method:
    """One attribution method: ``function(model, inputs, target, additional_forward_args, internal_batch_size=...,
    **defaults)``, ``inputs`` a tuple of tensors and ``additional_forward_args`` a tuple; it returns a tuple of maps."""

    name: str
    label: str
    description: str
    implementation: str
    function: Callable[..., tuple[Tensor, ...]]
    defaults: Mapping[str, object] = field(default_factory=dict)
    stochastic: bool = False  # takes a ``generator`` (seeded by ``explain(seed=...)``)
    rules: bool = False  # modifies the backward pass of activations: cannot reach inside TorchScript

    def __post_init__(self):
        object.__setattr__(self, "defaults", MappingProxyType(dict(self.defaults)))


def _summed_gradients(forward_fn, inputs, target_ind=None, additional_forward_args=None) -> tuple[Tensor, ...]:
    """Captum's ``compute_gradients`` with the target logits summed rather than unbound into one autograd
    output per sample: the same gradients bit for bit (autograd sums over its outputs either way), without a
    graph node per sample (about 15 us of host time each, which held SmoothGrad and Integrated Gradients to
    about 57,000 image-gradients per second on an H100)."""
    with torch.enable_grad():
        logits = forward_fn(*inputs, *format_additional_args(additional_forward_args))
        target = torch.as_tensor(target_ind, device=logits.device).reshape(-1, 1).expand(len(logits), 1)
        return rule_gradients(logits.gather(1, target).sum(), inputs)


def _captum(method, model):
    """A Captum gradient method computing its gradients with :func:`_summed_gradients`."""
    attribution = method(model)
    attribution.gradient_func = _summed_gradients
    return attribution


def _per_chunk(attribute, inputs: tuple[Tensor, ...], target: Tensor, extra: tuple,
               internal_batch_size) -> tuple[Tensor, ...]:
    chunks = [attribute(tuple(x.detach().requires_grad_() for x in xs), t, e)
              for xs, t, e in batches(inputs, target, extra, internal_batch_size)]
    return tuple(torch.cat(parts) for parts in zip(*chunks))


def _saliency(model, inputs, target, extra, *, internal_batch_size, abs=False):
    abs = flag("abs", abs)
    return _per_chunk(lambda x, t, e: _captum(Saliency, model).attribute(x, target=t, abs=abs,
                                                                         additional_forward_args=e),
                      inputs, target, extra, internal_batch_size)


def _grad_input(model, inputs, target, extra, *, internal_batch_size):
    return _per_chunk(lambda x, t, e: _captum(InputXGradient, model).attribute(x, target=t,
                                                                               additional_forward_args=e),
                      inputs, target, extra, internal_batch_size)


def _deconv(model, inputs, target, extra, *, internal_batch_size):
    return Deconvolution(model).attribute(inputs, target=target, additional_forward_args=extra,
                                          internal_batch_size=internal_batch_size)


def _guided_bp(model, inputs, target, extra, *, internal_batch_size):
    return GuidedBackprop(model).attribute(inputs, target=target, additional_forward_args=extra,
                                           internal_batch_size=internal_batch_size)


def _sample_ranges(x: Tensor) -> Tensor:
    """max - min of each sample of ``x``, shaped to broadcast over it."""
    flat = x.detach().reshape(len(x), -1)
    return (flat.amax(1) - flat.amin(1)).view(-1, *[1] * (x.dim() - 1))


def _smoothgrad(model, inputs, target, extra, *, internal_batch_size, generator, samples, noise_level):
    """Mean gradient over ``samples`` noisy copies, sigma = noise_level * (max - min) of each sample of each input
    (Smilkov et al., 2017). Captum's NoiseTunnel takes one sigma for the whole batch, hence this loop."""
    samples = positive_int("samples", samples)
    if not real(noise_level) or not 0 <= noise_level < math.inf:
        raise ValueError(f"noise_level must be a finite non-negative number, got {noise_level!r}")
    n = len(inputs[0])
    sigmas = [noise_level * _sample_ranges(x) for x in inputs]
    draws_per_pass = max(1, (internal_batch_size or n * samples) // n)
    totals = [torch.zeros_like(x) for x in inputs]
    for start in range(0, samples, draws_per_pass):
        k = min(draws_per_pass, samples - start)
        # one draw per copy and input: the same noise whatever internal_batch_size
        noise = [[torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype) for x in inputs]
                 for _ in range(k)]
        noisy = tuple(torch.cat([x.detach() + sigma * copy[i] for copy in noise])
                      for i, (x, sigma) in enumerate(zip(inputs, sigmas)))
        grads = _saliency(model, noisy, target.repeat(k), repeat_samples(extra, n, k),
                          internal_batch_size=internal_batch_size)
        for total, grad in zip(totals, grads):
            total += grad.view(k, *total.shape).sum(0)
    return tuple(total / samples for total in totals)


def _baseline_like(baseline, inputs: Tensor) -> Tensor:
    """``baseline`` (a number, a tensor or numpy array broadcastable to ``inputs``, or None: zeros, as Captum reads
    it) as a reference shaped like ``inputs``, in their dtype and on their device."""
    if baseline is None:
        return torch.zeros_like(inputs)
    if isinstance(baseline, np.ndarray):
        if baseline.dtype.kind not in "iuf":
            raise TypeError(f"baseline array must hold numbers, got dtype {baseline.dtype}")
        baseline = torch.from_numpy(np.ascontiguousarray(baseline))  # (a reversed view: torch cannot take it)
    if real(baseline):
        if not math.isfinite(baseline):
            raise ValueError(f"baseline must be a finite number, got {baseline!r}")
        return torch.full_like(inputs, float(baseline))
    if isinstance(baseline, Tensor):
        if baseline.dtype == torch.bool or baseline.is_complex():  # (as an array: not read as 0 / 1, nor its real part)
            raise TypeError(f"baseline tensor must hold numbers, got dtype {baseline.dtype}")
        if baseline.is_floating_point() and not torch.isfinite(baseline).all():
            raise ValueError("baseline contains NaN or Inf values: the reference must be a finite image")
        try:
            return baseline.to(inputs).expand_as(inputs).contiguous()
        except RuntimeError:
            raise ValueError(f"baseline of shape {tuple(baseline.shape)} does not broadcast to the inputs' "
                             f"{tuple(inputs.shape)}") from None
    raise TypeError(f"baseline must be a number, a tensor, a numpy array or None (zeros), got "
                    f"{type(baseline).__name__}")


def _baselines(baseline, inputs: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """One reference per input: ``baseline`` (a number, a tensor, a numpy array or None) for each, or a tuple of
    them, one per input."""
    if not isinstance(baseline, tuple):
        return tuple(_baseline_like(baseline, x) for x in inputs)
    if len(baseline) != len(inputs):
        raise ValueError(f"baseline is a tuple of {len(baseline)} but there are {len(inputs)} inputs: give one "
                         "number or tensor per input, or one for all")
    return tuple(_baseline_like(b, x) for b, x in zip(baseline, inputs))


_INTEGRATIONS = ("riemann_right", "riemann_left", "riemann_middle", "riemann_trapezoid", "gausslegendre")


def _holding_shared(model, extra: tuple, n: int, m: int):
    """``model`` (taking ``m`` inputs) holding the arguments that are not per-sample for a batch of ``n``, and the
    arguments left, all per-sample: decided once for the whole batch, as a shared argument whose dim 0 happens to
    equal a chunk's size must not be split or repeated with it (nor, by Captum's IntegratedGradients, with the
    integration steps, as it repeats every tensor)."""
    batched = [per_sample(a, n) for a in extra]
    if all(batched):
        return model, extra

    def forward(*args):
        given = iter(args[m:])
        return model(*args[:m], *(next(given) if b else a for b, a in zip(batched, extra)))

    return forward, tuple(a for b, a in zip(batched, extra) if b)


def _intgrad(model, inputs, target, extra, *, internal_batch_size, steps, baseline, integration):
    if integration not in _INTEGRATIONS:
        raise ValueError(f"unknown integration {integration!r}; choose one of {', '.join(_INTEGRATIONS)}")
    steps, m, parts = positive_int("steps", steps), len(inputs), []
    if steps < 2 and integration != "gausslegendre":  # Captum's Riemann sums assert it
        raise ValueError(f"steps must be at least 2 for integration={integration!r}, got {steps} (gausslegendre "
                         "takes 1)")
    for chunk, t, e in batches((*inputs, *_baselines(baseline, inputs)), target, extra, internal_batch_size):
        chunk = tuple(x.detach() for x in chunk)  # Captum's scaled inputs then are leaves: a model changing its input
        parts.append(_captum(IntegratedGradients, model).attribute(  # in place is refused, not silently wrong
            chunk[:m], baselines=chunk[m:], target=t, additional_forward_args=e, n_steps=steps, method=integration,
            internal_batch_size=internal_batch_size))  # Captum's bound: at least the samples
    # Captum integrates a bf16 / fp16 model in float32
    return tuple(torch.cat(maps).to(x.dtype) for maps, x in zip(zip(*parts), inputs))


def _modified_gradient(model, inputs, target, extra, rule: MultiplierRule, references: tuple[Tensor, ...],
                       internal_batch_size) -> tuple[Tensor, ...]:
    """Gradient of the target logits under a multiplier rule (:mod:`rectgrad.engine`); with ``references``
    (one per input, or none), each forward pass runs on [inputs; references] so the rule sees the paired
    activations (DeepLIFT)."""
    chunks, m = [], len(inputs)
    for chunk, t, e in batches((*inputs, *references), target, extra, internal_batch_size):
        leaves = tuple(x.detach().requires_grad_() for x in chunk[:m])
        n = len(leaves[0])
        with torch.enable_grad():
            batch = tuple(torch.cat([x, r]) for x, r in zip(leaves, chunk[m:])) if references else leaves
            e = repeat_samples(e, n, 2) if references else e  # a reference shares its sample's arguments
            with RuleMode(Options(rule=rule), batch=len(batch[0])) as mode:
                output = model(*batch, *e)
                mode.check_custom_functions(tensors_in((output,), {}))  # a model ending in one
            if references and isinstance(output, Tensor) and output.dim() > 0 and len(output) == len(batch[0]):
                output = output[:n]  # the inputs' logits (or scores); the references' follow them
            logits = check_logits(output, n)
            chunks.append(rule_gradients(logits.gather(1, resolve_targets(t, logits)[:, None]).sum(), leaves))
    return tuple(torch.cat(parts) for parts in zip(*chunks))


def _eps_lrp(model, inputs, target, extra, *, internal_batch_size, eps):
    """epsilon-LRP (Bach et al., 2015) as a modified gradient (Ancona et al., 2018): f'(z) becomes
    f(z) / (z + eps * sign(z)) and the map is x * gradient; Grad*Input on ReLU networks as eps -> 0."""
    if not real(eps) or not math.isfinite(eps) or eps <= 0:
        raise ValueError(f"eps must be a finite positive number, got {eps!r}")
    grads = _modified_gradient(model, inputs, target, extra, eps_lrp_rule(eps), (), internal_batch_size)
    return tuple(x * g for x, g in zip(inputs, grads))


def _deeplift(model, inputs, target, extra, *, internal_batch_size, baseline):
    """DeepLIFT with the Rescale rule (Shrikumar et al., 2017) as a modified gradient (Ancona et al.,
    2018); the map is (x - x0) * gradient. Max-pooling passes the gradient."""
    references = _baselines(baseline, inputs)
    grads = _modified_gradient(model, inputs, target, extra, DEEPLIFT_RESCALE, references, internal_batch_size)
    return tuple((x - r) * g for x, r, g in zip(inputs, references, grads))


def _rectgrad(model, inputs, target, extra, *, internal_batch_size, q, tau, padding_trick, prr, final_threshold,
              rule):
    return RectGrad(model).attribute(inputs, target=target, additional_forward_args=extra,
                                     q=None if tau is not None else q, tau=tau, padding_trick=padding_trick, prr=prr,
                                     final_threshold=final_threshold, rule=rule,
                                     internal_batch_size=internal_batch_size)


def _random(model, inputs, target, extra, *, internal_batch_size, generator):
    """Uniform noise in [0, 1) shaped like each input (the model, its arguments and ``internal_batch_size`` are
    irrelevant to noise)."""
    return tuple(torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype) for x in inputs)


_RECTGRAD = {"q": 98.0, "tau": None, "padding_trick": True, "prr": False, "final_threshold": True, "rule": "pr1"}

_REGISTRY = (
    Method("saliency", "Saliency", "signed gradient of the target logit (Simonyan et al., 2014)", "captum",
           _saliency, {"abs": False}),
    Method("grad_input", "Grad*Input", "gradient x input (Shrikumar et al., 2017)", "captum", _grad_input),
    Method("deconv", "Deconv", "deconvnet signal: gradient passing activations where it is positive (Eq. 3)",
           "rectgrad engine", _deconv, rules=True),
    Method("guided_bp", "Guided BP", "guided backpropagation: positive gradient through active units (Eq. 5)",
           "rectgrad engine", _guided_bp, rules=True),
    Method("smoothgrad", "SmoothGrad", "mean gradient over noisy copies, sigma = noise_level * (max - min) per sample",
           "rectgrad loop over Captum gradients", _smoothgrad, {"samples": 50, "noise_level": 0.1},
           stochastic=True),
    Method("intgrad", "IntegGrad", "Integrated Gradients from a baseline (Sundararajan et al., 2017)", "captum",
           _intgrad, {"steps": 50, "baseline": 0.0, "integration": "riemann_right"}),
    Method("eps_lrp", "Epsilon-LRP", "epsilon-LRP as a modified gradient x input (Bach et al., 2015)",
           "rectgrad modified gradient", _eps_lrp, {"eps": 1e-4}, rules=True),
    Method("deeplift", "DeepLIFT", "DeepLIFT Rescale from a reference input (Shrikumar et al., 2017)",
           "rectgrad modified gradient", _deeplift, {"baseline": 0.0}, rules=True),
    Method("rectgrad", "RectGrad", "Rectified Gradient, q = 98 with the padding trick, positive part (Sec. 4.1)",
           "rectgrad engine", _rectgrad, _RECTGRAD, rules=True),
    Method("rectgrad_prr", "RectGrad PRR", "RectGrad with the proportional redistribution rule at max-pools (App. C)",
           "rectgrad engine", _rectgrad, {**_RECTGRAD, "prr": True}, rules=True),
    Method("random", "Random", "uniform noise in [0, 1): a baseline for ROAR / KAR", "torch", _random,
           stochastic=True),
)
METHODS: Mapping[str, Method] = MappingProxyType({m.name: m for m in _REGISTRY})
METHOD_NAMES: tuple[str, ...] = tuple(METHODS)


_NO_GRADIENT = "the model's own gradient is zero there (e.g. a zero-initialised head, or no ReLU active)"
_ZERO_CAUSES = {  # why a method's map may come out all zero (RectGrad's own attribute warns, with its threshold)
    **dict.fromkeys(("grad_input", "eps_lrp"), f"the input is zero, or {_NO_GRADIENT}"),
    **dict.fromkeys(("intgrad", "deeplift"), f"the input equals the baseline, or {_NO_GRADIENT}"),
    **dict.fromkeys(("deconv", "guided_bp"),
                    f"the rule passes only positive gradient and none reached the input, or {_NO_GRADIENT}"),
}


class MethodTable(dict):
    """:func:`methods`' dict, shown (in a REPL, by ``print``) as a table: each method's name, implementation and
    defaults."""

    def __repr__(self) -> str:
        try:
            rows = [("name", "implementation", "defaults")] + [
                (str(name), str(info["implementation"]),
                 ", ".join(f"{k}={v!r}" for k, v in info["defaults"].items()) or "-") for name, info in self.items()]
        except (KeyError, TypeError, AttributeError):  # entries changed into another shape: shown as a dict
            return super().__repr__()
        width = [max(len(str(row[i])) for row in rows) for i in range(2)]
        return "\n".join(f"{name:<{width[0]}}  {how:<{width[1]}}  {defaults}" for name, how, defaults in rows)


def methods() -> MethodTable:
    """Every method by its paper name: label, description, defaults, implementation, stochastic. A dict (of
    dicts), which prints as a table."""
    return MethodTable({m.name: {"label": m.label, "description": m.description, "defaults": dict(m.defaults),
                                 "implementation": m.implementation, "stochastic": m.stochastic} for m in _REGISTRY})


_OTHER_NAMES = {  # what Captum, Zennit and the papers call the methods -> ours, for the error of an unknown name
    "gradient": "saliency", "vanilla_gradient": "saliency", "inputxgradient": "grad_input",
    "input_x_gradient": "grad_input", "gradient_x_input": "grad_input", "deconvolution": "deconv",
    "guidedbackprop": "guided_bp", "guided_backprop": "guided_bp", "noisetunnel": "smoothgrad",
    "integratedgradients": "intgrad", "integrated_gradients": "intgrad", "ig": "intgrad", "lrp": "eps_lrp",
    "epsilon_lrp": "eps_lrp", "rectified_gradient": "rectgrad",
}


def get_method(name: str) -> Method:
    """The registry entry of ``name``; ``ValueError`` listing the known names otherwise."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}{did_you_mean(name, METHOD_NAMES, aliases=_OTHER_NAMES)}; known "
                         f"methods: {', '.join(METHOD_NAMES)}")
    return METHODS[name]


_OTHER_HYPERPARAMETERS = {  # what Captum and the papers call the hyper-parameters -> ours
    "n_samples": "samples", "nt_samples": "samples", "num_samples": "samples", "stdevs": "noise_level",
    "sigma": "noise_level", "noise": "noise_level", "n_steps": "steps", "baselines": "baseline",
    "reference": "baseline", "epsilon": "eps", "percentile": "q", "threshold": "tau", "padding": "padding_trick",
}


def _unknown_hyperparameter(entry: Method, name: str) -> str:
    """The error for a hyper-parameter ``name`` that ``entry`` does not take: its own close or Captum-named one, else
    the methods that take ``name``."""
    aliases = {other: ours for other, ours in _OTHER_HYPERPARAMETERS.items() if ours in entry.defaults}
    hint = did_you_mean(name, entry.defaults, aliases=aliases) if entry.defaults else ""
    takers = [m.name for m in _REGISTRY if name in m.defaults]
    if not hint and takers:
        hint = f" (a hyper-parameter of {', '.join(takers)})"
    known = ", ".join(entry.defaults) or "none"
    return f"method {entry.name!r} has no hyper-parameter {name!r}{hint}; its hyper-parameters: {known}"


def predict(model, inputs: Tensor | tuple[Tensor, ...], internal_batch_size: int | None = None) -> Tensor:
    """The model's logits for ``inputs`` (a tensor, or a tuple of them for a model taking several, as in
    :func:`explain`), checked to be (N, classes) (computed without gradients where the model runs without them)."""
    check_model(model)
    inputs = format_inputs(inputs)
    modules = modules_of(model)
    check_device(modules, inputs)
    return _logits(model, modules, inputs, (), internal_batch_size)


def _logits(model, modules: tuple, inputs: tuple[Tensor, ...], extra: tuple, internal_batch_size: int | None) -> Tensor:
    """:func:`predict` on inputs already checked, with the model's ``modules`` (:func:`modules_of`): without
    gradients, unless the model needs them in its forward pass (it registers a tensor hook there, as Grad-CAM code
    does, which fails under ``torch.no_grad()``): then again with gradients on and inputs requiring grad, as the
    attribution passes run it."""
    try:
        return _forward(model, modules, inputs, extra, internal_batch_size, with_grad=False)
    except RuntimeError as error:
        if not re.search(r"requires? grad", str(error)):
            raise
    return _forward(model, modules, inputs, extra, internal_batch_size, with_grad=True)


def _forward(model, modules: tuple, inputs: tuple[Tensor, ...], extra: tuple, internal_batch_size: int | None,
             with_grad: bool) -> Tensor:
    def logits(xs, e):  # copies: a model changing its input in place leaves it be
        return check_logits(model(*(x.detach().requires_grad_(with_grad).clone() for x in xs), *e), len(xs[0]))

    with torch.set_grad_enabled(with_grad), preserved_buffers(modules):
        return torch.cat([logits(xs, e).detach() for xs, _, e in batches(inputs, None, extra, internal_batch_size)])


def explain(model, inputs: Tensor | tuple[Tensor, ...], target=None, method: str = "rectgrad", *,
            additional_forward_args=None, internal_batch_size: int | None = None, seed: int | None = None,
            **hyperparameters) -> Tensor | tuple[Tensor, ...]:
    """Attribution maps of ``target`` for ``inputs`` (N, ...), a float tensor on the model's device, or a tuple of
    them (a model taking several inputs), as in Captum.

    ``method``: saliency, grad_input, deconv, guided_bp, smoothgrad, intgrad, eps_lrp, deeplift, rectgrad,
    rectgrad_prr or random (:func:`methods` gives their defaults). ``target``: ``None`` (each sample's predicted
    class), an int, or one class per sample (a list, tensor or numpy array). ``additional_forward_args``: further
    arguments of the model after the inputs (a tuple, or one value), not explained; a tensor whose dim 0 is the
    batch goes with its samples.

    Returns raw maps shaped like ``inputs`` (a tuple of maps for a tuple of inputs), detached: signed for the
    baselines, the positive part for RectGrad (its final threshold; ``final_threshold=False`` gives its signed map),
    uniform noise in [0, 1) for random. ``rectgrad.viz.prepare`` turns them into display-ready (N,H,W) maps for
    ``rectgrad.viz.grid``. ``hyperparameters`` override the method's defaults (an unknown one is a ``TypeError``).
    ``internal_batch_size`` bounds how many samples (noisy copies, integration steps, samples of the batch) go
    through the model at once; ``None`` processes everything in one pass. ``seed`` seeds the noise of stochastic
    methods (smoothgrad, random); ``None`` draws from torch's global generator. A sample whose map comes out all zero
    or holding NaN/Inf gets a :class:`rectgrad.AttributionWarning` naming the method ("the attribution by saliency of
    sample(s) [0] is all zero: ..."; RectGrad's own, from its ``attribute``, names none).
    """
    check_model(model)
    if isinstance(target, str) and target in METHOD_NAMES:  # explain(model, x, "rectgrad"): the third is the target
        raise TypeError(f"target must be a class index, got the method name {target!r}: the third argument of "
                        f"explain is the target; give the method by keyword, explain(model, x, method={target!r})")
    entry = get_method(method)
    unknown = sorted(set(hyperparameters) - set(entry.defaults))
    if unknown:
        raise TypeError(_unknown_hyperparameter(entry, unknown[0]))
    # a one-element tensor or array counts as its value (eps swept over torch.logspace), as q and tau take it
    hyperparameters = {k: v if k == "baseline" else one_value(v) for k, v in hyperparameters.items()}
    seed = one_value(seed)
    if hyperparameters.get("q") is not None and hyperparameters.get("tau") is not None:
        check_threshold(hyperparameters["q"], hyperparameters["tau"])  # refuses both
    is_tuple = _is_tuple(inputs)
    inputs = format_inputs(inputs)
    extra = format_additional_args(additional_forward_args)
    modules = modules_of(model, *extra)
    check_device(modules, inputs)
    if entry.rules:
        check_reachable(model, modules, method, multiplier=method in ("eps_lrp", "deeplift"))
    forward, extra = _holding_shared(model, extra, len(inputs[0]), len(inputs))  # the methods see per-sample ones
    internal_batch_size = check_internal_batch_size(internal_batch_size)
    check_seed(seed, allow_none=True)
    device = inputs[0].device
    with user_call(modules), named_errors(modules, inputs, paired=method == "deeplift"):
        # the engine checks the classes on its own forward pass's logits (a class no model has: checked here, on
        # one forward pass more, to name the model's classes)
        if target is not None and entry.rules and beyond_int64(target) is None:
            targets = target_indices(target, len(inputs[0]), device)
        else:  # the predicted classes, or classes checked before a Captum method runs: one forward pass more
            targets = resolve_targets(target, _logits(forward, modules, inputs, extra, internal_batch_size))
        kwargs = {**entry.defaults, **hyperparameters, "internal_batch_size": internal_batch_size}
        if entry.stochastic:
            kwargs["generator"] = None if seed is None else torch.Generator(device).manual_seed(int(seed))
        with preserved_buffers(modules):  # e.g. BatchNorm in train mode
            maps = entry.function(forward, inputs, targets, extra, **kwargs)
    if entry.function is not _rectgrad:  # RectGrad's attribute warns on its own
        warn_if_degenerate(maps, entry.name, _ZERO_CAUSES.get(entry.name, _NO_GRADIENT))
    return _format_output(is_tuple, tuple(m.detach() for m in maps))
