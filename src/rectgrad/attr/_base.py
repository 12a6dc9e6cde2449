"""The driver shared by the engine's methods: one forward pass under a rule, one backward pass."""
from __future__ import annotations

import contextlib
import threading

import torch
from captum._utils.common import _format_output, _is_tuple
from captum.attr import GradientAttribution
from captum.log import log_usage
from torch import Tensor, nn

from rectgrad.attr._arguments import batches, check_device, check_logits, format_inputs, resolve_targets
from rectgrad.engine import Options, Rule, RuleMode, rule_gradients, warn


_IN_TRAINING = {nn.modules.batchnorm._BatchNorm: "normalises with the batch's statistics",
                nn.modules.dropout._DropoutNd: "drops units at random"}
_call = threading.local()


@contextlib.contextmanager
def user_call(model: nn.Module | None):
    """One public call on a user's model (however calls nest inside it): a warning if the model is in training
    mode with modules that behave differently there (BatchNorm with running statistics, dropout)."""
    if getattr(_call, "active", False) or model is None:
        yield
        return
    found = {type(m).__name__: why for m in model.modules() for kind, why in _IN_TRAINING.items()
             if m.training and isinstance(m, kind) and getattr(m, "track_running_stats", True) and getattr(m, "p", 1)}
    if found:
        warn(f"the model is in training mode: {'; '.join(f'{name} {why}' for name, why in sorted(found.items()))}, "
             "so the maps depend on the batch and change from call to call; call model.eval() first (rectgrad "
             "leaves the mode as it is)")
    _call.active = True
    try:
        yield
    finally:
        _call.active = False


@contextlib.contextmanager
def preserved_buffers(model: nn.Module | None):
    """Restore every buffer (e.g. BatchNorm statistics of a model in train mode) on exit, even on error."""
    saved = [(b, b.detach().clone()) for b in model.buffers()] if model is not None else []
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, value in saved:
                buffer.copy_(value)


class EngineAttribution(GradientAttribution):
    """A Captum ``GradientAttribution`` whose gradient runs through the rule engine."""

    def __init__(self, model):
        if not callable(model):
            raise TypeError(f"model must be a torch.nn.Module or a callable, got {type(model).__name__}")
        super().__init__(model)

    def _module(self) -> nn.Module | None:
        f = self.forward_func
        owner = f if isinstance(f, nn.Module) else getattr(f, "__self__", None)
        return owner if isinstance(owner, nn.Module) else None

    def _engine_gradients(self, inputs, target, additional_forward_args, options: Options,
                          internal_batch_size: int | None) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]]:
        """Validated inputs and the modified gradients of the target logits with respect to them."""
        inputs = format_inputs(inputs)
        check_device(self._module(), inputs)
        with user_call(self._module()):
            chunks = [self._chunk_gradients(*chunk, options)
                      for chunk in batches(inputs, target, additional_forward_args, internal_batch_size)]
        grads = tuple(torch.cat(parts) for parts in zip(*chunks))
        return inputs, grads

    def _chunk_gradients(self, inputs, target, additional_forward_args, options: Options) -> tuple[Tensor, ...]:
        extra = () if additional_forward_args is None else (
            additional_forward_args if isinstance(additional_forward_args, tuple) else (additional_forward_args,))
        leaves = tuple(x.detach().requires_grad_() for x in inputs)
        mode = RuleMode(options)
        with preserved_buffers(self._module()), torch.enable_grad():
            with mode:
                logits = self.forward_func(*leaves, *extra)
            logits = check_logits(logits, leaves[0].shape[0])
            targets = resolve_targets(target, logits)
            if options.rule is not None and not mode.sites:
                warn("the model calls no activation function the engine knows (the ReLU family, ELU, SELU, CELU, "
                     "GELU, SiLU, Hardswish, Mish; see docs/engine.md): the attribution equals the plain gradient "
                     "(x input)")
            mode.mark_top()
            score = logits.gather(1, targets[:, None]).sum()
            grads = rule_gradients(score, leaves)
        return tuple(torch.zeros_like(x) if g is None else g for g, x in zip(grads, leaves))


class ModifiedGradient(EngineAttribution):
    """The gradient under a fixed rule (``RULE``), returned as it is (not multiplied by the input)."""

    RULE: Rule

    @log_usage()
    def attribute(self, inputs, target=None, additional_forward_args=None, internal_batch_size: int | None = None):
        """The modified gradient of ``target`` (``None``: each sample's predicted class) w.r.t. ``inputs``."""
        is_tuple = _is_tuple(inputs)
        _, grads = self._engine_gradients(inputs, target, additional_forward_args, Options(rule=self.RULE),
                                          internal_batch_size)
        return _format_output(is_tuple, grads)


def warn_if_degenerate(attributions: tuple[Tensor, ...]) -> None:
    """Warn about samples whose whole attribution is zero (a thresholded layer passed nothing) or
    holds NaN/Inf (e.g. a gradient overflowing in a float16 model)."""
    flat = [a.detach().reshape(a.shape[0], -1) for a in attributions]
    for problem, bad in (("is all zero: a thresholded layer passed no gradient (e.g. a percentile q too high "
                          "for a small layer)", sum(f.abs().sum(dim=1) for f in flat) == 0),
                         ("holds NaN or Inf values (a gradient overflowed? try float32)",
                          sum((~torch.isfinite(f)).sum(dim=1) for f in flat) > 0)):
        samples = bad.nonzero().flatten().tolist()
        if samples:
            shown = f"{samples[:10]}{'...' if len(samples) > 10 else ''}"
            warn(f"the attribution of sample(s) {shown} {problem}")
