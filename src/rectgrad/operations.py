"""What the engine knows about PyTorch's operations: which are activations (and which of them run in place),
which other element-wise functions a multiplier rule follows, which operations it may pass as linear, and what
it refuses. The rules themselves are in :mod:`rectgrad.engine`."""
from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from torch import Tensor


class UnsupportedModel(ValueError):
    """The method cannot explain this model as it is: its rule is undefined for one of the model's operations
    (eps-LRP or DeepLIFT on a LayerNorm or a gate) or cannot reach it (TorchScript, activation checkpointing, PRR on a
    max-pool returning indices); other methods may. A ``ValueError``, as before it had a class of its own."""


def _inplace_position(func) -> int:
    return list(inspect.signature(func).parameters).index("inplace")


RELU = {F.relu: False, torch.relu: False, torch.Tensor.relu: False, torch.relu_: True, torch.Tensor.relu_: True}


# What an exported program's in-place ATen activations do, as functions the rules can call (ATen has no Python
# functional of their own; the others are PyTorch's own, e.g. F.elu_).
def gelu_(input: Tensor, approximate: str = "none") -> Tensor:
    return input.copy_(F.gelu(input.clone(), approximate=approximate))  # F.gelu keeps its input for the backward


def silu_(input: Tensor) -> Tensor:
    return F.silu(input, inplace=True)


def hardswish_(input: Tensor) -> Tensor:
    return F.hardswish(input, inplace=True)


def mish_(input: Tensor) -> Tensor:
    return F.mish(input, inplace=True)


_ATEN_ACTIVATIONS = {torch._C._nn.elu, torch.rrelu, gelu_, silu_, hardswish_, mish_}  # with ATen's arguments
_ACTIVATION_FUNCTIONALS = (F.relu6, F.hardtanh, F.leaky_relu, F.elu, F.selu, F.celu, F.rrelu, F.threshold, F.silu,
                           F.hardswish, F.mish)
_OTHER_FUNCTIONALS = (F.hardsigmoid,)
# Python functionals with an ``inplace`` argument: its position.
_WITH_INPLACE_ARG = {f: _inplace_position(f) for f in _ACTIVATION_FUNCTIONALS + _OTHER_FUNCTIONALS}


def _private(*names: str) -> set:
    """The built-ins ``torch._C._nn.<name>`` that this PyTorch has."""
    return {getattr(torch._C._nn, name) for name in names if hasattr(torch._C._nn, name)}


# the private spellings the functionals call (F.hardtanh calls torch._C._nn.hardtanh, F.silu(inplace=True)
# torch._C._nn.silu_), which some models call themselves: the functionals' leading arguments, no ``inplace``
# (F.hardtanh_, F.leaky_relu_, F.elu_, F.gelu and F.elu's torch._C._nn.elu are these built-ins already), and the
# randomised leaky ReLU torch.rrelu calls, rrelu_with_noise(_)(input, noise, lower, upper, training, generator)
RRELUS_WITH_NOISE = _private("rrelu_with_noise", "rrelu_with_noise_")
_PRIVATE_SPELLINGS = _private("relu6", "hardtanh", "leaky_relu", "silu", "hardswish", "mish", "rrelu_with_noise")
_INPLACE_BUILTINS = {F.hardtanh_, F.leaky_relu_, F.elu_, F.selu_, F.celu_, F.rrelu_, F.threshold_, gelu_, silu_,
                     hardswish_, mish_,
                     *_private("relu6_", "silu_", "hardswish_", "mish_", "gelu_", "rrelu_with_noise_")}
# the torch-namespace spellings of F.selu, F.celu, F.threshold and F.prelu (same leading arguments, never in place)
_TORCH_SPELLINGS = {torch.selu, torch.celu, torch.threshold, torch.Tensor.prelu}
KNOWN_ACTIVATIONS = (set(RELU) | set(_ACTIVATION_FUNCTIONALS) | _INPLACE_BUILTINS | _ATEN_ACTIVATIONS | _TORCH_SPELLINGS
                     | _PRIVATE_SPELLINGS | {F.gelu, F.prelu})
# Further element-wise functions a multiplier rule must follow (-> in-place?); gate rules leave them be.
_ELEMENTWISE = {torch.sigmoid: False, torch.Tensor.sigmoid: False, torch.sigmoid_: True, torch.Tensor.sigmoid_: True,
                torch.tanh: False, torch.Tensor.tanh: False, torch.tanh_: True, torch.Tensor.tanh_: True,
                F.softplus: False, torch.clamp: False, torch.Tensor.clamp: False, torch.clamp_: True,
                torch.Tensor.clamp_: True, torch.clip: False, torch.Tensor.clip: False, torch.abs: False,
                torch.Tensor.abs: False, F.logsigmoid: False, F.softsign: False, F.tanhshrink: False,
                F.hardshrink: False, F.softshrink: False, torch.special.expit: False, torch.erf: False,
                torch.Tensor.erf: False, torch.erfc: False, torch.Tensor.erfc: False, torch.sin: False,
                torch.Tensor.sin: False, torch.cos: False, torch.Tensor.cos: False, torch.atan: False,
                torch.Tensor.atan: False, torch.square: False, torch.Tensor.square: False,
                **dict.fromkeys(_private("hardsigmoid"), False), **dict.fromkeys(_private("hardsigmoid_"), True)}
ELEMENTWISE = KNOWN_ACTIVATIONS | set(_ELEMENTWISE) | set(_OTHER_FUNCTIONALS)
OTHER_NONLINEAR = {F.softmax, torch.softmax, torch.Tensor.softmax, F.log_softmax, torch.log_softmax,
                   torch.Tensor.log_softmax, F.layer_norm, F.group_norm, F.instance_norm, torch.exp,
                   torch.Tensor.exp, torch.log, torch.Tensor.log, torch.sqrt, torch.Tensor.sqrt, torch.rsqrt,
                   torch.Tensor.rsqrt, torch.pow, torch.Tensor.pow, torch.Tensor.__pow__, F.softmin, F.glu,
                   F.normalize, F.local_response_norm, F.scaled_dot_product_attention, torch.norm, torch.Tensor.norm,
                   torch.linalg.vector_norm, torch.maximum, torch.Tensor.maximum, torch.minimum,
                   torch.Tensor.minimum, torch.fmax, torch.fmin, torch.where, torch.Tensor.where,
                   *filter(None, [getattr(F, "rms_norm", None)]),
                   # fused recurrent layers (nn.LSTM, nn.GRU, nn.RNN and their cells): gates and activations inside
                   torch.lstm, torch.gru, torch.rnn_tanh, torch.rnn_relu, torch.lstm_cell, torch.gru_cell,
                   torch.rnn_tanh_cell, torch.rnn_relu_cell}
FUSED_RELUS = {torch.rnn_relu, torch.rnn_relu_cell}  # nn.RNN(nonlinearity="relu"): ReLUs out of the rules' reach
MAXIMUMS = {torch.maximum, torch.Tensor.maximum, torch.fmax, torch.Tensor.fmax, torch.max, torch.Tensor.max}
CLAMPS = {torch.clamp, torch.Tensor.clamp, torch.clamp_, torch.Tensor.clamp_, torch.clip, torch.Tensor.clip,
          torch.clamp_min, torch.Tensor.clamp_min, torch.clamp_min_, torch.Tensor.clamp_min_}


def _aten(names: dict[str, object]) -> dict:
    """``{ATen operation: value}`` for the operations ``names`` (their packet, ``torch.ops.aten.relu``, whose
    overload is picked as it runs, and its ``default`` and ``padding`` overloads)."""
    found = {}
    for name, value in names.items():
        packet = getattr(torch.ops.aten, name, None)
        if packet is None:
            continue
        found[packet] = value
        for overload in ("default", "padding"):  # conv2d.padding: padding given as "same" / "valid"
            if overload in packet.overloads():
                found[getattr(packet, overload)] = value
    return found


# The ATen operations a ``torch.export``-ed model calls, as the functions the rules know (same arguments).
ATEN_ALIASES = _aten({
    "relu": torch.relu, "relu_": torch.relu_, "hardtanh": F.hardtanh, "hardtanh_": F.hardtanh_,
    "leaky_relu": F.leaky_relu, "leaky_relu_": F.leaky_relu_, "gelu": F.gelu, "gelu_": gelu_, "silu": F.silu,
    "silu_": silu_, "hardswish": F.hardswish, "hardswish_": hardswish_, "mish": F.mish, "mish_": mish_,
    "elu": torch._C._nn.elu, "elu_": F.elu_, "selu": F.selu, "selu_": F.selu_, "celu": F.celu, "celu_": F.celu_,
    "prelu": F.prelu, "_prelu_kernel": F.prelu, "rrelu": torch.rrelu, "rrelu_": F.rrelu_, "threshold": F.threshold,
    "threshold_": F.threshold_,
    "sigmoid": torch.sigmoid, "sigmoid_": torch.sigmoid_, "tanh": torch.tanh, "tanh_": torch.tanh_,
    "hardsigmoid": F.hardsigmoid, "softplus": F.softplus,
    "conv1d": F.conv1d, "conv2d": F.conv2d, "conv3d": F.conv3d, "max_pool1d": F.max_pool1d,
    "max_pool2d": F.max_pool2d, "max_pool3d": F.max_pool3d, "max_pool1d_with_indices": F.max_pool1d_with_indices,
    "max_pool2d_with_indices": F.max_pool2d_with_indices, "max_pool3d_with_indices": F.max_pool3d_with_indices,
    "pad": F.pad})
# Adaptive max-pools that return their values and indices (an exported program's, and the built-in
# torch.adaptive_max_pool1d), as the functional that computes the values alone.
ADAPTIVE_MAX_POOL_PAIRS = {**_aten({"adaptive_max_pool1d": F.adaptive_max_pool1d,
                                    "adaptive_max_pool2d": F.adaptive_max_pool2d,
                                    "adaptive_max_pool3d": F.adaptive_max_pool3d}),
                           torch.adaptive_max_pool1d: F.adaptive_max_pool1d}
MAX_REDUCTIONS = {torch.max, torch.Tensor.max, torch.amax, torch.Tensor.amax}  # a global max-pool in all but name
_CONVOLUTION_ARGS = ("input", "weight", "bias", "stride", "padding", "dilation", "transposed", "output_padding",
                     "groups")


def as_functional_convolution(args, kwargs):
    """An ``aten.convolution`` call as the ``F.conv1d/2d/3d`` call it is (``func, args, kwargs``), or None for a
    transposed convolution."""
    values = dict(zip(_CONVOLUTION_ARGS, args), **kwargs)
    if values["transposed"]:
        return None
    conv = {3: F.conv1d, 4: F.conv2d, 5: F.conv3d}[values["weight"].dim()]
    return conv, tuple(values[k] for k in ("input", "weight", "bias", "stride", "padding", "dilation", "groups")), {}


def as_functional_pad(args, kwargs):
    """An ``aten.constant_pad_nd`` call as the ``F.pad`` call it is (``func, args, kwargs``)."""
    values = dict(zip(("input", "pad", "value"), args), **kwargs)
    return F.pad, (values["input"], list(values["pad"])), {"value": values.get("value", 0)}


# ATen operations a decomposed exported program calls for a functional the rules know, with other arguments:
# ``op -> rewrite(args, kwargs)`` giving that functional's call (None: leave the call as it is)
ATEN_REWRITES = _aten({"convolution": as_functional_convolution, "constant_pad_nd": as_functional_pad})


def split_activation(modules) -> tuple[str, str] | None:
    """``(activation, operation)`` where an exported program computes an activation by other operations (a
    program decomposed to core ATen, ``ExportedProgram.run_decompositions()``: SiLU as sigmoid and mul), which no
    rule can recognise; None if none does. The graph's nodes remember the operation they came from (compared by
    name: that record is another object than ``torch.ops.aten``'s)."""
    for module in modules:
        for part in module.modules():
            for node in part.graph.nodes if isinstance(part, torch.fx.GraphModule) else ():
                original = str(node.meta.get("original_aten"))
                if node.op == "call_function" and original in _ATEN_ACTIVATION_NAMES and original != str(node.target):
                    return original, str(node.target)
    return None


_ATEN_ACTIVATION_NAMES = frozenset(str(op) for op, function in ATEN_ALIASES.items() if function in KNOWN_ACTIVATIONS)


def is_zero(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == 0


def is_inplace(func, args, kwargs) -> bool:
    if func in RELU:
        return RELU[func] or bool(kwargs.get("inplace", args[1] if len(args) > 1 else False))
    if func in _INPLACE_BUILTINS:
        return True
    if func in _ELEMENTWISE:
        return _ELEMENTWISE[func]
    position = _WITH_INPLACE_ARG.get(func)
    if position is None:
        return False
    return bool(kwargs.get("inplace", args[position] if len(args) > position else False))


def tensors_in(args, kwargs) -> list[Tensor]:
    flat = [*args, *kwargs.values()]
    return [a for a in flat if isinstance(a, Tensor)] + [
        t for a in flat if isinstance(a, (list, tuple)) for t in a if isinstance(t, Tensor)]


def depends_on_input(t: Tensor, known: set | frozenset = frozenset()) -> bool:
    """Whether ``t`` was computed from a leaf that is not a parameter (the attribution's inputs), by its graph;
    the walk stops at the graph nodes in ``known`` (already known to depend on the inputs)."""
    if not t.requires_grad:
        return False
    nodes, seen = [t.grad_fn], set()
    if nodes[0] is None:
        return not isinstance(t, torch.nn.Parameter)
    while nodes:
        node = nodes.pop()
        if node is None or node in seen:
            continue
        if node in known:
            return True
        seen.add(node)
        leaf = getattr(node, "variable", None)  # AccumulateGrad: a leaf
        if leaf is not None and not isinstance(leaf, torch.nn.Parameter):
            return True
        nodes.extend(following for following, _ in node.next_functions)
    return False


def refuse_undefined(method: str, func, args, kwargs, known: set | frozenset = frozenset()) -> None:
    """A multiplier rule is undefined for the non-linearities of ``OTHER_NONLINEAR`` on an input-dependent tensor
    (refused before they run, by name; products are refused by :func:`refuse_unknown`). ``known``: graph nodes
    known to depend on the input (:func:`depends_on_input`)."""
    if any(depends_on_input(t, known) for t in tensors_in(args, kwargs)):  # not a weight computed from parameters
        raise UnsupportedModel(f"{method} cannot handle the non-linearity {getattr(func, '__name__', repr(func))}: "
                               "its rule is defined for networks of linear layers, pooling and element-wise "
                               "activations")


# What a multiplier rule passes as it is: operations linear in each input-dependent argument (the divisions in
# the numerator; batch_norm outside training), by name so that methods, functions, operators and the ATen
# operations of exported programs all count, and the max-pools, whose gradient goes to the maximum as in the
# reference code.
LINEAR_OPS = frozenset("""
    conv1d conv2d conv3d conv_transpose1d conv_transpose2d conv_transpose3d linear matmul mm bmm mv addmm addmv baddbmm
    einsum __matmul__ __rmatmul__ add add_ __add__ __radd__ __iadd__ sub sub_ __sub__ __rsub__ __isub__ rsub neg
    __neg__ negative mul mul_ __mul__ __rmul__ __imul__ div div_ __truediv__ __itruediv__ true_divide sum mean
    __getitem__ __get__ chunk split tensor_split unbind narrow select contiguous flatten unflatten view view_as reshape
    reshape_as permute transpose t squeeze unsqueeze expand expand_as repeat repeat_interleave tile cat concat
    concatenate stack roll flip movedim index_select gather masked_fill clone to float double half bfloat16 type_as
    avg_pool1d avg_pool2d avg_pool3d adaptive_avg_pool1d adaptive_avg_pool2d adaptive_avg_pool3d batch_norm dropout
    dropout1d dropout2d dropout3d alpha_dropout feature_alpha_dropout dropout_ alpha_dropout_ feature_alpha_dropout_
    pad interpolate upsample upsample_nearest upsample_bilinear pixel_shuffle pixel_unshuffle channel_shuffle
    native_channel_shuffle unfold fold masked_fill_ copy_ index_put index_put_ __setitem__
    alias _to_copy _unsafe_view slice index as_strided _native_batch_norm_legit_no_training constant_pad_nd
    reflection_pad1d reflection_pad2d reflection_pad3d replication_pad1d replication_pad2d replication_pad3d
    upsample_nearest1d upsample_nearest2d upsample_nearest3d _upsample_nearest_exact1d _upsample_nearest_exact2d
    _upsample_nearest_exact3d upsample_linear1d upsample_bilinear2d upsample_bicubic2d upsample_trilinear3d
    _upsample_bilinear2d_aa _upsample_bicubic2d_aa split_with_sizes unsafe_split unsafe_split_with_sizes unsafe_chunk
    hsplit vsplit dsplit swapaxes swapdims moveaxis ravel broadcast_to rot90 cumsum cumsum_ type hstack vstack dstack
    column_stack neg_ negative_ fliplr flipud diff squeeze_ unsqueeze_ transpose_ t_ addcmul addcmul_ addcdiv
    addcdiv_ slice_scatter select_scatter""".split())
_MAX_POOL_NAMES = frozenset("""max_pool1d max_pool2d max_pool3d adaptive_max_pool1d adaptive_max_pool2d
    adaptive_max_pool3d max_pool1d_with_indices max_pool2d_with_indices max_pool3d_with_indices
    adaptive_max_pool1d_with_indices adaptive_max_pool2d_with_indices adaptive_max_pool3d_with_indices""".split())


# What a TorchScript function may hide from the rules, by ATen name as in its graph: from a gate rule (Guided BP,
# Deconvolution, RectGrad) the activations and max-pools it changes; from a multiplier rule (eps-LRP, DeepLIFT) any
# operation but those on sizes and constants, as it must check every one (as it does in Python).
_GATED_IN_SCRIPT = {getattr(f, "__name__", "").rstrip("_")
                    for f in KNOWN_ACTIVATIONS | CLAMPS | MAXIMUMS | MAX_REDUCTIONS} | _MAX_POOL_NAMES
_SIZES_IN_SCRIPT = frozenset("size numel dim len tensor scalar_tensor Int Float Bool ScalarImplicit".split())


def ruled_in_script(function, multiplier: bool = False) -> list[str]:
    """The operations of the TorchScript ``function`` (the functions it calls inlined, the blocks of its ifs and
    loops included) that a gate rule changes, or (``multiplier``) that a multiplier rule would have to check."""
    graph = function.inlined_graph  # (kept: its blocks and nodes live as long as it does)
    kinds, blocks = set(), [graph]
    while blocks:
        for node in blocks.pop().nodes():
            blocks.extend(node.blocks())
            if node.kind().startswith("aten::"):
                kinds.add(node.kind().split("::", 1)[1])
    if multiplier:
        return sorted(kind for kind in kinds if kind not in _SIZES_IN_SCRIPT)
    return sorted(kind for kind in kinds if kind.rstrip("_") in _GATED_IN_SCRIPT)


_DIVISIONS = frozenset({"div", "div_", "divide", "divide_", "__truediv__", "__itruediv__", "true_divide"})
_PRODUCT_NAMES = frozenset("""mul mul_ __mul__ __rmul__ __imul__ matmul mm bmm mv addmm addmv baddbmm einsum
    __matmul__ __rmatmul__""".split())  # linear in each factor alone: at most one may depend on the input
# input + value * tensor1 * tensor2 (or / tensor2), input + mat1 @ mat2 (addmm, addmv, baddbmm): a product or
# quotient of the tensors after the input, which is only added
_ADD_PRODUCTS, _ADD_QUOTIENTS = frozenset({"addcmul", "addcmul_"}), frozenset({"addcdiv", "addcdiv_"})
_ADDED_TO_INPUT = _ADD_PRODUCTS | _ADD_QUOTIENTS | frozenset("addmm addmm_ addmv addmv_ baddbmm baddbmm_".split())
_FACTORS = _PRODUCT_NAMES | _DIVISIONS | _ADD_PRODUCTS  # at most one operand may depend on the input
_QUOTIENTS = _DIVISIONS | _ADD_QUOTIENTS  # the divisor may not
# A mask computed from the input makes the operations it selects with piecewise linear: x * (x > 0) is a ReLU.
COMPARISONS = frozenset("""gt lt ge le eq ne greater less greater_equal less_equal __gt__ __lt__ __ge__ __le__
    __eq__ __ne__ sign signbit heaviside argmax argmin argsort""".split())


def _operands(name: str, args, kwargs) -> list[Tensor]:
    """The tensors a product or quotient combines: for addcmul/addcdiv/addmm/... the tensors after the input, in
    order, however given (positionally, after a value in the deprecated ``addcmul(input, value, tensor1,
    tensor2)``, or by keyword); for the others every tensor argument."""
    if name in _ADDED_TO_INPUT:
        return [a for a in args[1:] if isinstance(a, Tensor)] + [
            value for key, value in kwargs.items() if key not in ("input", "self") and isinstance(value, Tensor)]
    return tensors_in(args, kwargs)


def _divisor(name: str, args, kwargs):
    """What a quotient divides by: addcdiv's ``tensor2`` (the last of its operands), a division's ``other``."""
    if name in _ADD_QUOTIENTS:
        return (_operands(name, args, kwargs) or [None])[-1]
    return kwargs.get("other", args[1] if len(args) > 1 else None)


def refuse_unknown(method: str, func, args, kwargs, out, known: set | frozenset = frozenset()) -> None:
    """A multiplier rule passes an operation it does not change (here: ``func(*args, **kwargs) = out``) as linear:
    true for ``LINEAR_OPS``; any other operation on an input-dependent tensor (``1 / x``, ``log1p``, a hand-written
    normalisation, ...) is refused, and so is a mask computed from the input (``COMPARISONS``). ``known``: graph
    nodes known to depend on the input, where the walks of :func:`depends_on_input` stop."""
    name = getattr(func, "_opname", None) or getattr(func, "__name__", repr(func))  # ATen operations: no overload
    if not any(t.requires_grad for t in (out if isinstance(out, (tuple, list)) else [out]) if isinstance(t, Tensor)):
        if name in COMPARISONS and any(depends_on_input(t, known) for t in tensors_in(args, kwargs)):
            raise UnsupportedModel(f"{method} cannot follow a mask computed from the input ({name}, e.g. x * (x > 0) "
                                   "as a hand-written ReLU): the operations it selects with are not linear; use the "
                                   "activation functions instead")
        return
    if name in _MAX_POOL_NAMES:
        return
    if name in _FACTORS and sum(depends_on_input(t, known) for t in _operands(name, args, kwargs)) >= 2:
        raise UnsupportedModel(f"{method} cannot handle a product of two input-dependent tensors ({name}, e.g. "
                               "gating or attention): its rule is defined for networks of linear layers, pooling and "
                               "element-wise activations")
    if name in _QUOTIENTS:  # a divisor that depends on the input
        suspects = [d for d in [_divisor(name, args, kwargs)] if isinstance(d, Tensor)]
    elif name == "batch_norm":
        suspects = args[:1] if kwargs.get("training", args[5] if len(args) > 5 else False) else []
    else:
        suspects = [] if name in LINEAR_OPS else tensors_in(args, kwargs)
    if any(depends_on_input(t, known) for t in suspects):
        if name == "batch_norm" and kwargs.get("running_mean", args[1] if len(args) > 1 else None) is None:
            raise UnsupportedModel(f"{method} cannot follow batch_norm without running statistics (a BatchNorm with "
                                   "track_running_stats=False, which normalises with the batch's statistics in eval "
                                   "mode too): not a linear map; explain this model with another method")
        if name == "batch_norm":
            raise UnsupportedModel(f"{method} cannot follow batch_norm in training mode: it normalises with the "
                                   "batch's statistics, not a linear map (put the model in eval mode: model.eval())")
        raise UnsupportedModel(f"{method} cannot follow {name}: not an operation it knows to be linear (its rule is "
                               "defined for networks of linear layers, pooling and element-wise activations; see "
                               "docs/engine.md); explain this model with another method")
