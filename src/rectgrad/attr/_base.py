"""The driver shared by the engine's methods: one forward pass under a rule, one backward pass."""
from __future__ import annotations

import collections
import contextlib
import functools
import inspect
import itertools
import re
import threading
from collections.abc import Iterable

import torch
from captum._utils.common import _format_output, _is_tuple
from captum.attr import GradientAttribution
from captum.log import log_usage
from torch import Tensor, nn
from torch.nn.parameter import is_lazy

from rectgrad._checks import EXPORT_FREE_BATCH
from rectgrad.attr._arguments import (batches, check_device, check_logits, check_model, format_additional_args,
                                      format_inputs, resolve_targets)
from rectgrad.engine import MultiplierRule, Options, Rule, RuleMode, rule_gradients, warn
from rectgrad.operations import UnsupportedModel, ruled_in_script, split_activation


_IN_TRAINING = {nn.modules.batchnorm._BatchNorm: "normalises with the batch's statistics",
                nn.modules.dropout._DropoutNd: "drops units at random",
                nn.RReLU: "draws random slopes for its negative inputs"}
# timm's and torchvision's random drops, by class name -> (their drop probability's attribute, what they drop)
_DROPPING = {"StochasticDepth": ("p", "drops residual branches at random"),
             "DropPath": ("drop_prob", "drops residual branches at random"),
             "DropBlock2d": ("drop_prob", "drops blocks of units at random")}
_call = threading.local()


def modules_of(model, *additional_forward_args) -> tuple[nn.Module, ...]:
    """The ``nn.Module``s a forward callable runs, so that every call can leave them as they were: the module
    itself, those passed to it among ``additional_forward_args`` (``forward(x, model)``), a bound method's owner, a
    ``functools.partial``'s function and arguments, what a function or lambda closes over, takes as default arguments
    (``lambda x, model=model: ...``) or names as a global, an object's attributes (a wrapper with ``__call__``), the
    items of the lists, tuples and dicts among these (``models["net"]``): up to three steps from ``model`` and
    ``additional_forward_args``, nearest first, the first 1,000 items of a container and
    at most 50,000 objects a step (a function naming big global lists of data costs little more)."""
    found: dict[int, nn.Module] = {}
    level = [model, *additional_forward_args]
    for step in range(4):
        for obj in level:
            if isinstance(obj, nn.Module):
                found.setdefault(id(obj), obj)
        if step < 3:
            level = list(itertools.islice(itertools.chain.from_iterable(
                _parts(obj) for obj in level if not isinstance(obj, nn.Module)), 50_000))
    return tuple(found.values())


def _parts(obj) -> Iterable:
    """What a forward callable (or a container it holds) holds, which may be or hold a module."""
    if isinstance(obj, (list, tuple, dict)):
        return itertools.islice(obj.values() if isinstance(obj, dict) else obj, 1000)
    if isinstance(obj, functools.partial):
        return (obj.func, *obj.args, *obj.keywords.values())
    if inspect.ismethod(obj):
        return (obj.__self__, obj.__func__)
    if inspect.isfunction(obj):
        cells = [cell.cell_contents for cell in obj.__closure__ or ()
                 if _filled(cell) and cell.cell_contents is not cell]
        defaults = [*(obj.__defaults__ or ()), *(obj.__kwdefaults__ or {}).values()]
        return cells + defaults + [obj.__globals__[name] for name in obj.__code__.co_names if name in obj.__globals__]
    if callable(obj) and not inspect.isbuiltin(obj) and not inspect.isclass(obj) and hasattr(obj, "__dict__"):
        return vars(obj).values()
    return ()


def _filled(cell) -> bool:
    """Whether a closure cell holds a value (a variable assigned only in a branch not taken leaves it empty)."""
    try:
        cell.cell_contents
    except ValueError:
        return False
    return True


def scripted_part(model, modules: tuple[nn.Module, ...], multiplier: bool = False) -> tuple[str, str, str] | None:
    """``(kind, name, remedy)`` of TorchScript in ``model`` (a scripted function, model or submodule, or a scripted
    function a module calls that hides operations from the rule, a ``multiplier`` rule's or a gate rule's), or None;
    a submodule is named by its path in the model and its class, ``'inner' (Sequential)``."""
    resave = "save a model with torch.save(model, path) instead of torch.jit.script / trace"
    scripted = [(path, s) for m in modules for path, s in m.named_modules() if isinstance(s, torch.jit.ScriptModule)]
    if scripted:
        path, module = scripted[0]
        kind = getattr(module, "original_name", type(module).__name__)
        return "module", f"{path!r} ({kind})" if path else repr(kind), resave
    if isinstance(model, torch.jit.ScriptFunction):
        return "function", repr(model.name), resave
    return _scripted_function_called(modules, multiplier)


def _scripted_function_called(modules: tuple[nn.Module, ...], multiplier: bool) -> tuple[str, str, str] | None:
    """``("function", name, remedy)`` of a TorchScript function a module's ``forward`` calls: one it names as a
    global (a ``@torch.jit.script`` helper, e.g. a fused GELU) or holds as an attribute (``self.act = scripted``),
    computing an operation the rules change or refuse (:func:`ruled_in_script`; a helper computing sizes is fine)."""
    for model in modules:
        for m in model.modules():
            forward = getattr(type(m), "forward", None)
            named = {}
            if inspect.isfunction(forward):
                named = {name: forward.__globals__[name] for name in _names_used(forward.__code__)
                         if name in forward.__globals__}
            for name, value in itertools.chain(vars(m).items(), named.items()):
                hidden = ruled_in_script(value, multiplier) if isinstance(value, torch.jit.ScriptFunction) else []
                if hidden:
                    return ("function", f"{name!r} called by {type(m).__name__}.forward (it computes "
                            f"{', '.join(hidden)})", "drop its torch.jit.script")
    return None


@functools.lru_cache(maxsize=1024)
def _names_used(code) -> frozenset[str]:
    """The global and attribute names a function's code uses, its nested functions and comprehensions included."""
    return frozenset(code.co_names).union(*(_names_used(c) for c in code.co_consts if inspect.iscode(c)))


def check_reachable(model, modules: tuple[nn.Module, ...], what: str, multiplier: bool = False) -> None:
    """A rule (a ``multiplier`` rule's or a gate rule's) cannot reach the activations inside TorchScript (a scripted
    function, model or submodule), nor those a decomposed exported program computes by other operations."""
    part = scripted_part(model, modules, multiplier)
    if part is not None:
        kind, name, how = part
        raise UnsupportedModel(f"{what} modifies the backward pass of activations, which cannot be reached inside the "
                               f"TorchScript {kind} {name}: use the Python {kind} ({how})")
    split = split_activation(modules)
    if split is not None:
        raise UnsupportedModel(f"{what} modifies the backward pass of activations, but the exported program "
                               f"computes {split[0]} by other operations ({split[1]}, ...: "
                               "ExportedProgram.run_decompositions()), which no rule can recognise: explain "
                               "torch.export.export(...).module() without run_decompositions, or the Python model")


@contextlib.contextmanager
def user_call(modules: tuple[nn.Module, ...]):
    """One public call on a user's model (however calls nest inside it): a warning if the model is in training
    mode with modules that behave differently there (BatchNorm with running statistics, dropout, stochastic depth),
    and one if it has BatchNorm without running statistics, which normalises with the batch's in eval mode too."""
    if getattr(_call, "active", False):
        yield
        return
    found = {type(m).__name__: why for model in modules for m in model.modules() for kind, why in _IN_TRAINING.items()
             if m.training and isinstance(m, kind) and getattr(m, "track_running_stats", True) and getattr(m, "p", 1)}
    found.update({type(m).__name__: _DROPPING[type(m).__name__][1] for model in modules for m in model.modules()
                  if m.training and type(m).__name__ in _DROPPING and getattr(m, _DROPPING[type(m).__name__][0], 0)})
    if found:
        warn(f"the model is in training mode: {'; '.join(f'{name} {why}' for name, why in sorted(found.items()))}, "
             "so the maps depend on the batch and change from call to call; call model.eval() first (rectgrad "
             "leaves the mode as it is)")
    unbatched = sorted({type(m).__name__ for model in modules for m in model.modules()
                        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is None
                        and m.running_var is None})  # PyTorch's own test: batch statistics in eval mode too
    if unbatched:
        warn(f"{', '.join(unbatched)} without running statistics (track_running_stats=False) normalises with the "
             "statistics of the batch it runs on, in eval mode too, so each map depends on the other images of the "
             "batch and on internal_batch_size (SmoothGrad's noisy copies and IntegGrad's steps run as batches too); "
             "for maps of each image alone, use BatchNorm with running statistics (track_running_stats=True)")
    _call.active, _call.said = True, set()
    try:
        yield
    finally:
        _call.active, _call.said = False, None


def warn_if_ungated(options: Options, mode: RuleMode) -> None:
    """After a pass under ``mode``: warn, once per public call (:func:`user_call`) however often the work inside
    repeats it (a study's every setting), when ``options`` has a rule but the model called no activation the engine
    knows, so the maps are the plain gradient's."""
    if options.rule is None or mode.sites:
        return
    said = getattr(_call, "said", None)
    if said is not None:
        if NO_ACTIVATION in said:
            return
        said.add(NO_ACTIVATION)
    warn(NO_ACTIVATION)


_DTYPE_MISMATCH = ("expected scalar type", "should be the same", "must have the same dtype", "expected both inputs",
                   "same dtype")  # PyTorch's wordings (convolutions, linear layers, matmul, ...)


@contextlib.contextmanager
def named_errors(modules: tuple[nn.Module, ...], inputs: tuple[Tensor, ...], paired: bool = False):
    """PyTorch's errors for ``inputs`` of another floating type than every weight of the model (float64 from numpy
    into a float32 model, all of them or one of a tuple), as a ``TypeError`` saying what to convert, and for a model
    that changes its inputs in place (``x.sub_(mean)``: autograd cannot differentiate that), as a ``ValueError``
    saying what to write, for a model whose weights are inference tensors as a ``ValueError`` saying how to get
    others, and for an exported program of fixed shapes run on a batch of another size, as a
    ``ValueError`` saying how to export it (``paired``: DeepLIFT, whose passes hold each input and its reference, so
    twice ``internal_batch_size``). Other errors of 1-D or 3-D inputs, perhaps one sample without its batch
    dimension, say how to add it."""
    try:
        yield
    except AssertionError as error:  # torch.export's module checks its inputs' shapes with assertions
        if not str(error).startswith("Guard failed"):
            raise
        guard, larger = str(error).splitlines()[0], ("(the methods also run DeepLIFT's references, SmoothGrad's noisy "
                                                     "copies and IntegGrad's steps as larger batches)")
        bound = re.fullmatch(r"Guard failed: .*\.size\(\)\[0\] <= (\d+)", guard)  # Dim("batch", max=N)
        if bound:
            size = max(1, int(bound[1]) // 2) if paired else int(bound[1])
            pairs = (f" (DeepLIFT runs each input with its reference: passes of {2 * size} for internal_batch_size="
                     f"{size})" if paired else "")
            raise ValueError(f"the model is an exported program whose batch is bounded at {bound[1]}, run here on a "
                             f"larger batch {larger}: pass internal_batch_size={size} (CLI: --internal-batch-size "
                             f"{size}){pairs} (PyTorch: {guard})") from error
        raise ValueError(f"the model is an exported program of fixed shapes, run here on a batch of another size "
                         f"{larger}: {EXPORT_FREE_BATCH} (PyTorch: {guard})") from error
    except RuntimeError as error:
        if "Inference tensors cannot be saved for backward" in str(error) and any(
                t.is_inference() for m in modules for t in itertools.chain(m.parameters(), m.buffers())):
            raise ValueError("the model's weights were made under torch.inference_mode() (built or loaded inside such "
                             "a block), and autograd cannot differentiate through them: build or load the model "
                             "outside inference_mode, or explain a copy, model = copy.deepcopy(model) (PyTorch: "
                             f"{str(error).splitlines()[0]})") from error
        if "leaf Variable that requires grad is being used in an in-place operation" in str(error):
            raise ValueError("the model changes its input in place (e.g. x.sub_(mean), x /= 255 or an in-place "
                             "activation of the input, nn.ReLU(inplace=True), in its forward pass), which autograd "
                             "cannot differentiate: write that step out of place (x = x - mean, nn.ReLU()) "
                             f"(PyTorch: {str(error).splitlines()[0]})") from error
        weights = collections.Counter(t.dtype for m in modules for t in m.parameters() if t.is_floating_point())
        odd = [i for i, x in enumerate(inputs) if x.dtype not in weights]  # of no weight's type
        if not weights or not odd or not any(words in str(error) for words in _DTYPE_MISMATCH):
            unbatched = [tuple(x.shape) for x in inputs if x.dim() in (1, 3)]
            if not unbatched:
                raise
            raise RuntimeError(f"{error} (the inputs have shape {unbatched[0]}: dim 0 is the batch; if that is one "
                               "image (C, H, W) or one vector without its batch dimension, pass x[None])") from error
        usual, given = weights.most_common(1)[0][0], ", ".join(sorted({str(inputs[i].dtype) for i in odd}))
        which, example = (("the inputs are", "inputs") if len(odd) == len(inputs) else (
            f"{' and '.join(f'inputs[{i}]' for i in odd)} of the tuple {'is' if len(odd) == 1 else 'are'}",
            f"inputs[{odd[0]}]"))
        noise = ("; inputs given in half precision and run as float32 were promoted by a wrapper's float32 noise "
                 "(Captum's NoiseTunnel adds it): use rectgrad.explain(..., method='smoothgrad'), which keeps the "
                 "inputs' type, or run the model in float32"
                 if given == "torch.float32" and usual in (torch.float16, torch.bfloat16) else "")
        raise TypeError(f"{which} {given} but the model's weights {usual}: convert the inputs (e.g. "
                        f"{example}.to({usual}); numpy arrays give float64) or the model{noise} (PyTorch: "
                        f"{str(error).splitlines()[0]})") from error


@contextlib.contextmanager
def preserved_buffers(modules: tuple[nn.Module, ...]):
    """Restore every buffer (e.g. BatchNorm statistics of a model in train mode) on exit, even on error: its value
    (and size), where the forward pass changed it, and the tensor itself, where it assigned a new one (``self.count =
    self.count + 1``). Buffers left as they were are not written to, and changed ones are written through ``.data``,
    unseen by autograd as BatchNorm's own update: a versioned write would invalidate the autograd graphs that saved
    them, the user's own pending ones (a training step's loss, whose BatchNorm saved its statistics) and another
    thread's."""
    check_initialised(modules)
    owners = {(id(m), name): (m, name, b) for model in modules for m in model.modules()
              for name, b in m._buffers.items() if b is not None}
    saved = [(m, name, b, b.detach().clone()) for m, name, b in owners.values()]
    try:
        yield
    finally:
        with torch.no_grad():
            for module, name, buffer, value in saved:
                module._buffers[name] = buffer
                if not _unchanged(buffer, value):  # BatchNorm's kernel updates its statistics unversioned: so do we
                    if buffer.shape != value.shape:  # resized in place (buffer.resize_): its size back first
                        buffer.resize_(value.shape)
                    buffer.data.copy_(value)


def check_initialised(modules: tuple[nn.Module, ...]) -> None:
    """Lazy modules (``nn.LazyLinear``, ``nn.LazyBatchNorm1d``) must be initialised before a call: their first forward
    pass would draw their weights and create their statistics, changing the model the call is to leave as it was."""
    lazy = sorted({type(m).__name__ for model in modules for m in model.modules()
                   if any(is_lazy(t) for t in itertools.chain(m._parameters.values(), m._buffers.values()))})
    if lazy:
        raise ValueError(f"the model has lazy modules not initialised yet ({', '.join(lazy)}): initialise them first "
                         "by running the model once on a batch (model(x))")


def _unchanged(buffer: Tensor, value: Tensor) -> bool:
    """Whether ``buffer`` still holds ``value`` (NaN where it was NaN); buffers that cannot be compared (sparse, on
    the meta device) count as changed: writing them back is what keeps them as they were."""
    if buffer.layout != torch.strided or buffer.is_meta or buffer.shape != value.shape:
        return False
    if torch.equal(buffer, value):
        return True
    return (buffer.is_floating_point() or buffer.is_complex()) and bool(
        torch.isclose(buffer, value, rtol=0, atol=0, equal_nan=True).all())


class EngineAttribution(GradientAttribution):
    """A Captum ``GradientAttribution`` whose gradient runs through the rule engine."""

    def __init__(self, model):
        check_model(model)
        super().__init__(model)

    def _engine_gradients(self, inputs, target, additional_forward_args, options: Options,
                          internal_batch_size: int | None) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]]:
        """Validated inputs and the modified gradients of the target logits with respect to them."""
        inputs, additional_forward_args = format_inputs(inputs), format_additional_args(additional_forward_args)
        modules = modules_of(self.forward_func, *additional_forward_args)
        if options.rule is not None:
            check_reachable(self.forward_func, modules, type(self).__name__, isinstance(options.rule, MultiplierRule))
        check_device(modules, inputs)
        with user_call(modules), named_errors(modules, inputs):
            chunks = [self._chunk_gradients(*chunk, modules, options)
                      for chunk in batches(inputs, target, additional_forward_args, internal_batch_size)]
        grads = tuple(torch.cat(parts) for parts in zip(*chunks))
        return inputs, grads

    def _chunk_gradients(self, inputs, target, additional_forward_args, modules: tuple[nn.Module, ...],
                         options: Options) -> tuple[Tensor, ...]:
        leaves = tuple(x.detach().requires_grad_() for x in inputs)
        mode = RuleMode(options, batch=leaves[0].shape[0])
        with preserved_buffers(modules), torch.enable_grad():
            with mode:
                logits = self.forward_func(*leaves, *additional_forward_args)
            logits = check_logits(logits, leaves[0].shape[0])
            targets = resolve_targets(target, logits)
            mode.mark_top()
            score = logits.gather(1, targets[:, None]).sum()
            grads = rule_gradients(score, leaves)
        warn_if_ungated(options, mode)
        return grads


NO_ACTIVATION = ("the model calls no activation function the engine knows (the ReLU family, ELU, SELU, CELU, GELU, "
                 "SiLU, Hardswish, Mish; see docs/engine.md): the attribution equals the plain gradient (x input)")


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


_RECTGRAD_ZERO = ("a thresholded layer passed no gradient (e.g. a percentile q too high for a small layer), or the "
                 "model's own gradient is zero there (e.g. a zero-initialised head)")


def warn_if_degenerate(attributions: tuple[Tensor, ...], method: str | None = None,
                       zero_cause: str = _RECTGRAD_ZERO) -> None:
    """Warn about samples whose whole attribution is zero (``zero_cause`` says why it may be: by default, a thresholded
    layer passed nothing) or holds NaN/Inf (e.g. a gradient overflowing in a float16 model); ``method`` names the
    method in the message ("the attribution by saliency ...")."""
    flat = [a.detach().reshape(a.shape[0], -1) for a in attributions]
    the = "the attribution" if method is None else f"the attribution by {method}"
    for problem, bad in ((f"is all zero: {zero_cause}", sum(f.abs().sum(dim=1) for f in flat) == 0),
                         ("holds NaN or Inf values (a gradient overflowed? try float32)",
                          sum((~torch.isfinite(f)).sum(dim=1) for f in flat) > 0)):
        samples = bad.nonzero().flatten().tolist()
        if samples:
            shown = f"{samples[:10]}{'...' if len(samples) > 10 else ''}"
            warn(f"{the} {problem}" if len(bad) == 1 else f"{the} of sample(s) {shown} {problem}")
