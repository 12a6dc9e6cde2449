"""Argument handling shared by every attribution method: inputs, targets, thresholds, batching."""
from __future__ import annotations

import itertools
import math
import numbers
import os
from collections.abc import Iterator, Mapping

import numpy as np
import torch
from torch import Tensor

from rectgrad._checks import positive_int, real
from rectgrad.engine import warn


def check_model(model) -> None:
    """The model must be callable: a module or a function, not the name of one nor a state dict of its weights, nor
    a module's class (calling it would build a module from the inputs)."""
    if isinstance(model, type) and issubclass(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module or a callable, got the class {model.__name__} itself: build "
                        f"the model first, e.g. {model.__name__}(...).eval()")
    if callable(model):
        return
    hint = ""
    if isinstance(model, (str, os.PathLike)):
        hint = "; load it first: rectgrad.zoo.load(name_or_path).model or rectgrad.load_model(path)"
    elif isinstance(model, Mapping):
        hint = "; a state dict holds the weights alone: build the model and call model.load_state_dict(state_dict)"
    raise TypeError(f"model must be a torch.nn.Module or a callable, got {type(model).__name__}{hint}")


def format_inputs(inputs) -> tuple[Tensor, ...]:
    """Validate ``inputs`` (a tensor or a tuple of tensors sharing dim 0) and return a tuple (inference
    tensors, made under ``torch.inference_mode()``, as ordinary copies that autograd can follow)."""
    if torch.is_inference_mode_enabled():
        raise RuntimeError("attribution maps need autograd, which torch.inference_mode() turns off: call outside "
                           "the inference_mode block (torch.no_grad() around the call is fine)")
    tensors = inputs if isinstance(inputs, tuple) else (inputs,)
    if not tensors:
        raise ValueError("inputs is empty")
    for x in tensors:
        if not isinstance(x, Tensor):
            hint = ""
            if isinstance(inputs, list) and inputs and all(isinstance(t, Tensor) for t in inputs):
                hint = (": a model of several inputs takes them as a tuple (x1, x2), a batch of images as one "
                        "tensor (torch.stack(images))")
            raise TypeError(f"inputs must be torch tensors, got {type(x).__name__}{hint}")
        if not x.is_floating_point():
            raise TypeError(f"inputs must be floating point (e.g. float32), got {x.dtype}")
        if x.dim() < 1 or x.shape[0] == 0:
            raise ValueError(f"inputs need a non-empty batch dimension first, got shape {tuple(x.shape)}")
        holds_values = x.device.type != "meta"  # meta inputs hold none: check_device names the problem
        # a finite sum means all values are finite: the element-wise check only when the sum is not
        if holds_values and not bool(torch.isfinite(x.sum())) and not bool(torch.isfinite(x).all()):
            raise ValueError("inputs contain NaN or Inf values")
    n = tensors[0].shape[0]
    if any(x.shape[0] != n for x in tensors):
        raise ValueError(f"all inputs must share the batch size, got {[x.shape[0] for x in tensors]}")
    return tuple(x.clone() if x.is_inference() else x for x in tensors)


def format_additional_args(additional_forward_args) -> tuple:
    """``additional_forward_args`` as a tuple, as Captum reads them (``None``: none; one value: a tuple of it), with
    tensors made under ``torch.inference_mode()`` as ordinary copies (autograd saves what the model multiplies)."""
    args = () if additional_forward_args is None else (
        additional_forward_args if isinstance(additional_forward_args, tuple) else (additional_forward_args,))
    return tuple(a.clone() if isinstance(a, Tensor) and a.is_inference() else a for a in args)


def check_device(modules: tuple[torch.nn.Module, ...], inputs: tuple[Tensor, ...]) -> None:
    """The inputs must be on a device that holds the model's weights (a clear error instead of PyTorch's
    "Input type and weight type should be the same" deep in the forward pass)."""
    devices = {t.device for m in modules for t in itertools.chain(m.parameters(), m.buffers())}
    for x in inputs:
        if devices and x.device not in devices:
            held = ", ".join(sorted(map(str, devices)))
            raise ValueError(f"the inputs are on {x.device} but the model's weights on {held}: move one to the "
                             f"other, e.g. inputs.to({held.split(', ')[0]!r}) or model.to({str(x.device)!r})")


def check_logits(logits, batch_size: int) -> Tensor:
    """The model must return (N, classes) scores (pre-softmax logits)."""
    if not isinstance(logits, Tensor):
        hint = ("; wrap it in a module whose forward returns only the logits tensor (e.g. output['logits'] or "
                "output[0])" if isinstance(logits, (tuple, list, dict)) or hasattr(logits, "logits") else "")
        raise TypeError(f"the model must return a tensor of logits, got {type(logits).__name__}{hint}")
    if logits.dim() != 2 or logits.shape[0] != batch_size:
        hint = ""
        if logits.dim() == 1 and len(logits) == batch_size:
            hint = ("; a model scoring each sample with one number: explain lambda x: model(x)[:, None] (class 0), "
                    "as Captum explains an (N,) output")
        elif logits.dim() == 1 and batch_size == 1:
            hint = ("; the model drops the batch dimension for a batch of one (e.g. a .squeeze() in its forward "
                    "pass): explain lambda x: model(x).reshape(len(x), -1)")
        elif logits.dim() > 2 and logits.shape[0] == batch_size:
            hint = ("; for Captum's tuple targets into more dimensions, explain lambda x: model(x).flatten(1) with "
                    "the flattened index as target")
        raise ValueError(f"the model output must have shape (N, classes) = ({batch_size}, C), "
                         f"got {tuple(logits.shape)}{hint}")
    if not logits.is_floating_point():
        raise TypeError(f"the model must return real floating-point logits, got {logits.dtype}")
    if looks_like_probabilities(logits):
        warn("the model's outputs look like probabilities (each row sums to 1): attribution maps explain the "
             "probability, not the logit as in the paper (whose code differentiates the logits); drop the final "
             "softmax to explain logits")
    return logits


def looks_like_probabilities(scores: Tensor) -> bool:
    """Whether (N, classes) floating-point model outputs are non-negative with rows summing to 1 (to the precision of
    their dtype: a bfloat16 row of softmax values may sum to 1 +- 2**-8), as after a final softmax."""
    if not scores.is_floating_point() or scores.shape[0] == 0 or scores.shape[1] < 2:
        return False
    scores, tolerance = scores.detach(), max(1e-3, 2 * torch.finfo(scores.dtype).eps)
    return bool((scores >= 0).all()) and bool(((scores.sum(1, dtype=torch.float32) - 1).abs() <= tolerance).all())


def resolve_targets(target, logits: Tensor) -> Tensor:
    """One class index per sample: ``None`` means each sample's predicted class (the paper's code)."""
    n, classes = logits.shape
    if target is None:
        return logits.detach().argmax(dim=1)
    huge = beyond_int64(target)
    if huge is not None:
        raise ValueError(f"target {huge} is out of range for a model with {classes} classes")
    values = target_indices(target, n, logits.device)
    if bool(((values < 0) | (values >= classes)).any()):
        bad = values[(values < 0) | (values >= classes)][0].item()
        raise ValueError(f"target {bad} is out of range for a model with {classes} classes")
    return values


def target_indices(target, n: int, device) -> Tensor:
    """A given ``target`` (an int, a list, a tensor or a numpy array) as ``n`` class indices, one per sample; whether
    the model has these classes is :func:`resolve_targets`' to check. As in Captum, a one-element tensor or array
    and a tuple ``(class,)`` (Captum's index into the output's dimensions after the batch) name one class for every
    sample: Captum's ``NoiseTunnel`` and metrics pass them on unexpanded to a batch of noisy copies."""
    huge = beyond_int64(target)
    if huge is not None:  # (resolve_targets, which knows the model's classes, names them)
        raise ValueError(f"target {huge} is out of range: a class index is below the model's number of classes")
    target = _captum_tuple(target)
    if isinstance(target, np.ndarray):  # a copy: torch cannot view a reversed array (np.argsort(s)[::-1])
        target = torch.as_tensor(target.copy())
    if isinstance(target, Tensor):
        if target.is_inference():  # made under torch.inference_mode(): autograd cannot save it for gather
            target = target.clone()
        if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
            raise TypeError(f"target tensor must hold integer class indices, got {target.dtype}")
        values = _one_class_per_sample(target).to(device=device, dtype=torch.long)
        if target.numel() == 1:
            values = values.expand(n)
    elif isinstance(target, numbers.Integral) and not isinstance(target, bool):
        values = torch.full((n,), int(target), dtype=torch.long, device=device)
    elif isinstance(target, list):
        target = [one_value(_captum_tuple(t)) for t in target]
        if not all(isinstance(t, numbers.Integral) and not isinstance(t, bool) for t in target):
            raise TypeError("target list must hold one integer class index per sample")
        values = torch.tensor([int(t) for t in target], dtype=torch.long, device=device)
    else:
        raise TypeError("target must be None, an int, a list, a tensor or a numpy array of class indices, got "
                        f"{type(target).__name__}")
    if values.numel() != n:
        raise ValueError(f"target has {values.numel()} entries but the batch has {n} samples")
    return values


def beyond_int64(target) -> int | None:
    """The first class index of ``target`` (an int, a list of them, ``(class,)``, a numpy array) that no tensor of
    indices can hold (outside int64, e.g. 2**70), or None: no model has that class, and torch's own error for it
    would be an overflow naming neither the target nor the classes."""
    if isinstance(target, tuple):
        target = target[0] if len(target) == 1 else None
    for t in target if isinstance(target, list) else [target]:
        t = one_value(t[0] if isinstance(t, tuple) and len(t) == 1 else t)
        if isinstance(t, np.ndarray) and t.dtype.kind == "u" and t.size:  # uint64 above int64's range
            t = int(t.max())
        if isinstance(t, numbers.Integral) and not isinstance(t, (bool, np.bool_)) and not -2**63 <= int(t) < 2**63:
            return int(t)
    return None


def _one_class_per_sample(target: Tensor) -> Tensor:
    """A target tensor flattened to one class per sample, or a ``ValueError`` if it has more than one dimension of
    several entries (Captum refuses those too); a column (N, 1) is one class per sample."""
    if sum(size > 1 for size in target.shape) > 1:
        raise ValueError(f"target must hold one class per sample, shape (N,), got shape {tuple(target.shape)}")
    return target.reshape(-1)


def _captum_tuple(target):
    """A tuple target as Captum reads it, one index per output dimension after the batch: ``(class,)`` for the
    (N, classes) outputs explained here. Read before the forward pass too (to cut it by ``internal_batch_size``),
    so the error of a longer one cannot know the output's shape and names both ways out."""
    if not isinstance(target, tuple):
        return target
    if len(target) != 1:
        raise ValueError(f"target {target!r} is a tuple, which Captum reads as one index per output dimension after "
                         "the batch, the same for every sample: for an (N, classes) output give (class,), or a list "
                         "for one class per sample; for an output of more dimensions explain "
                         "lambda x: model(x).flatten(1) with the flattened index as target")
    return target[0]


def one_value(t):
    """A one-element tensor or array as its Python number (a list of labels collected in a loop, a value of a
    ``torch.linspace`` swept over)."""
    if isinstance(t, Tensor) and t.numel() == 1 or isinstance(t, np.ndarray) and t.size == 1:
        return t.item()
    return t


def check_threshold(q: float | None, tau: float | None) -> tuple[float | None, float | None]:
    """Exactly one of ``q`` (percentile, default 98) and ``tau`` (constant threshold), each a number (a one-element
    tensor or array, ``torch.tensor(90.)``, counts as its value)."""
    if q is not None and tau is not None:
        raise ValueError("give either q (percentile threshold) or tau (constant threshold), not both")
    q, tau = one_value(q), one_value(tau)
    if tau is not None:
        if not real(tau) or not math.isfinite(tau):
            raise ValueError(f"tau must be a finite number, got {tau!r}")
        return None, float(tau)
    q = 98.0 if q is None else q
    if not real(q) or not 0.0 <= float(q) <= 100.0:
        raise ValueError(f"q must be a percentile in [0, 100], got {q!r}")
    return float(q), None


def check_internal_batch_size(value) -> int | None:
    """``internal_batch_size`` as a positive int, or None (everything in one pass); a one-element tensor or array
    counts as its value, as for every hyper-parameter (``torch.tensor(64)``)."""
    value = one_value(value)
    return None if value is None else positive_int("internal_batch_size", value)


def batches(inputs: tuple[Tensor, ...], target, additional_forward_args: tuple, size: int | None) -> Iterator[tuple]:
    """Split a call into chunks of at most ``size`` samples (tensors whose dim 0 is the batch;
    ``additional_forward_args`` as :func:`format_additional_args` gives them)."""
    n = inputs[0].shape[0]
    size = check_internal_batch_size(size)
    if size is None or size >= n:
        yield inputs, target, additional_forward_args
        return

    # one class per sample, checked against the whole batch, then cut as the samples are; a class no model has is
    # left to the forward pass's check, which names the model's classes
    if target is not None and beyond_int64(target) is None:
        target = target_indices(target, n, inputs[0].device)

    def cut(value, start):
        return value[start:start + size] if per_sample(value, n) else value

    for start in range(0, n, size):
        yield (tuple(x[start:start + size] for x in inputs), cut(target, start),
               tuple(cut(a, start) for a in additional_forward_args))


def repeat_samples(additional_forward_args: tuple, n: int, times: int) -> tuple:
    """``additional_forward_args`` for ``times`` copies of a batch of ``n`` samples concatenated along dim 0: each
    tensor whose dim 0 is the batch repeated as the samples are (the others, shared, as they are)."""
    return tuple(torch.cat([a] * times) if per_sample(a, n) else a for a in additional_forward_args)


def per_sample(value, n: int) -> bool:
    """Whether an additional forward argument holds one row per sample (dim 0 the batch of ``n``)."""
    return isinstance(value, Tensor) and value.dim() > 0 and value.shape[0] == n
