"""Section 5.2, Figs. 6 and 11: Saliency and RectGrad attributions at intermediate layers (noise accumulation)."""
from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

import torch
from torch import nn

from rectgrad import viz
from rectgrad._checks import did_you_mean
from rectgrad.attr._arguments import check_internal_batch_size, check_threshold
from rectgrad.engine import Options, Rule
from rectgrad.studies._common import (Images, StudyResult, check_out, check_show, engine_gradients, finite_mean,
                                      image_chunks, leaves_model_as_it_was, outside_fraction, predict,
                                      refuse_inlined_layers, one_or_many, resize_masks, spread)


@leaves_model_as_it_was
def hidden_layers(model: nn.Module, x, names: list[str] | str | None = None,
                  max_layers: int = 8) -> list[tuple[str, nn.Module]]:
    """The modules whose inputs the study attributes to, in the order the forward pass calls them.

    ``names`` (one name, or several) picks modules by their ``named_modules`` names; each must be called by the
    forward pass on a feature map (N, C, H, W). Otherwise: the ``nn.Conv2d`` modules without groups (no depthwise
    convolutions) whose input is a spatial hidden tensor (not the model input, larger than 1x1),
    ``max_layers`` of them evenly spread from the first to the last.
    """
    refuse_inlined_layers(model, "layers")
    names = list(dict.fromkeys(one_or_many(() if names is None else names)))  # a name given twice is one layer
    modules = dict(model.named_modules())
    unknown = [n for n in names if n not in modules]
    if unknown:  # (a name from another model's printout: told which names this one's modules have)
        convs = [n for n, m in modules.items() if isinstance(m, nn.Conv2d)]
        such = (f", such as its convolutions {', '.join(convs[:8])}{', ...' if len(convs) > 8 else ''}" if convs
                else "")
        raise ValueError(f"no module named {', '.join(map(repr, unknown))} in the model"
                         f"{did_you_mean(unknown[0], modules)}: name its modules as model.named_modules() lists "
                         f"them{such}")
    candidates = ({n: modules[n] for n in names} if names else
                  {n: m for n, m in modules.items() if isinstance(m, nn.Conv2d) and m.groups == 1})
    calls = _module_inputs(model, x, candidates)
    refuse_inlined_layers(model, "layers", seen_any=bool(calls))
    if names:
        _check_named(names, calls)
        return [(n, modules[n]) for n in names]
    called = list({name: candidates[name] for name, t in calls
                   if _is_feature_map(t) and t is not x and t.shape[-2:].numel() > 1}.items())
    if not called:
        raise ValueError("the model has no convolution over a hidden feature map: name the layers to attribute to")
    return spread(called, max_layers)


def _module_inputs(model: nn.Module, x, modules: dict[str, nn.Module]) -> list[tuple[str, object]]:
    """``(name, first argument)`` of every call of ``modules`` during one forward pass on ``x``, in call order."""
    calls = []

    def hook(name):
        def record(module, args):
            calls.append((name, args[0] if args else None))
        return record

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in modules.items()]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    return calls


def _is_feature_map(t) -> bool:
    return isinstance(t, torch.Tensor) and t.dim() == 4


def _check_named(names: list[str], calls: list[tuple[str, object]]) -> None:
    """Every named module is called, and always on a feature map (N, C, H, W)."""
    for name in names:
        inputs = [t for n, t in calls if n == name]
        if not inputs:
            raise ValueError(f"the forward pass never calls module {name!r}: name a module the model uses")
        bad = [t for t in inputs if not _is_feature_map(t)]
        if any(t is None for t in bad):
            raise ValueError(f"module {name!r} is called with keyword arguments only (module(input=x)): the study "
                             "attributes to a module's first positional input; name a module called as module(x)")
        if bad:
            got = f"shape {tuple(bad[0].shape)}" if isinstance(bad[0], torch.Tensor) else type(bad[0]).__name__
            raise ValueError(f"the input of module {name!r} is not an (N, C, H, W) feature map (got {got}): "
                             "name a module over a spatial map, such as a convolution")


@dataclass
class _Layer:
    """What one layer's numbers and figure column need, gathered chunk by chunk of images."""

    size: tuple[int, int]
    nonzero: Counter = field(default_factory=Counter)  # method -> non-zero values of h x gradient
    values: Counter = field(default_factory=Counter)  # method -> values of h x gradient
    background: dict = field(default_factory=lambda: defaultdict(list))  # method or "gradient" -> share per image
    shown: dict = field(default_factory=lambda: defaultdict(list))  # method -> the shown images' maps, per chunk


@leaves_model_as_it_was
def layers(model: nn.Module, images: Images, out=None, *, q: float = 98.0, padding_trick: bool = True,
           layer_names: list[str] | str | None = None, max_layers: int = 8, internal_batch_size: int | None = 16,
           show: int = 4) -> StudyResult:
    """Saliency and RectGrad attributions to the input of hidden layers, input (left) to output (right).

    The attribution to a hidden tensor ``h`` is ``h * dlogit/dh`` with the plain gradient (Saliency row) or
    RectGrad's rectified gradient (``q``, ``padding_trick``) for the predicted class, averaged over channels
    (the paper's "channel-wise average attributions for hidden layer inputs"). Both rows use ``h * gradient``,
    so they differ only by the backward rule. Numbers per layer: the fraction of non-zero attribution values
    (all images' values pooled) and, where ``images`` has object masks, the fraction of ``|attribution|`` outside
    the object (mask resized to the layer; mean over the images), also of the plain gradient alone (a Saliency map
    proper): the paper's noise accumulation shows as Saliency's background share growing towards the input while
    RectGrad's stays low. ``layer_names``: the modules whose inputs to attribute to, one name or several (default:
    ``max_layers`` convolutions spread over the network, :func:`hidden_layers`). ``internal_batch_size``: images
    per forward/backward pass (None: all at once); it bounds memory and changes no number or map beyond float
    rounding (each image's maps are its own, RectGrad's threshold too). ``show``: how many images (the first) the
    figure draws, 0 for none, None for all; the numbers use all.
    """
    q, _ = check_threshold(q, None)
    show = check_show(show, len(images))
    internal_batch_size = check_internal_batch_size(internal_batch_size)
    check_out(out, "layers", ("layers",), ("grid",) if show else ())
    chunks = image_chunks(len(images), internal_batch_size)
    predicted, _ = predict(model, images.x, internal_batch_size)
    chosen = hidden_layers(model, images.x[chunks[0]], layer_names, max_layers)  # on a batch the passes take
    methods = {"Saliency": Options(), "RectGrad": Options(rule=Rule(score="pr1", q=q), padding_trick=padding_trick)}
    found: dict[str, _Layer] = {}  # layer label -> its tallies, input first
    for chunk in chunks:
        x, masks = images.x[chunk], None if images.masks is None else images.masks[chunk]
        shown = max(show - chunk.start, 0)  # images of this chunk the figure draws
        for method, options in methods.items():
            grad, hidden = engine_gradients(model, x, predicted[chunk], options, chosen)
            for label, h, g in _labelled([("x (input)", x, grad)] + hidden):
                attr = h * g
                layer = found.setdefault(label, _Layer(tuple(attr.shape[-2:])))
                layer.nonzero[method] += int((attr != 0).sum())
                layer.values[method] += attr.numel()
                mean = attr.mean(1)  # (n, h, w) channel-mean attribution
                layer.shown[method].append(mean[:shown].clone())  # (a view would keep the whole chunk)
                if masks is not None:
                    layer.background[method] += outside_fraction(mean, masks).tolist()
                    if method == "Saliency":
                        layer.background["gradient"] += outside_fraction(g.mean(1), masks).tolist()
    rows = []
    for label, layer in found.items():
        row = {"layer": label, "size": f"{layer.size[0]}x{layer.size[1]}"}
        row |= {f"{m} nonzero": layer.nonzero[m] / layer.values[m] for m in methods}
        if images.masks is not None:
            row["background area"] = 1 - float(resize_masks(images.masks, layer.size).double().mean())
            row |= {f"{m} background": finite_mean(layer.background[m]) for m in methods}
            row["gradient background"] = finite_mean(layer.background["gradient"])
        rows.append(row)
    maps = {label: {m: torch.cat(layer.shown[m]) for m in methods} for label, layer in found.items()}
    figures = {"grid": _grid(images, maps, list(methods), show)} if show else {}
    result = StudyResult("layers", {"layers": rows}, figures, notes=_NOTES.format(q=q, padding=padding_trick))
    if out is not None:
        result.save(out)
    return result


def _labelled(calls):
    """``(label, input, gradient)`` per module call: its name, ``name#2``, ``name#3`` ... for a module called again."""
    seen = Counter()
    for name, h, g in calls:
        seen[name] += 1
        yield (name if seen[name] == 1 else f"{name}#{seen[name]}"), h, g


def _grid(images: Images, maps, methods, show: int):
    """Rows: each image's Saliency then RectGrad; columns: the input image, then layers input -> output."""
    n = min(show, len(images))
    order = [i for i in range(n) for _ in methods]  # image of each row
    columns = {}
    for label, per_method in maps.items():
        stacked = torch.stack([per_method[m][:n] for m in methods], 1).flatten(0, 1)
        columns[_wrap(label)] = viz.prepare(stacked, grayscale=True)
    row_labels = [f"{images.names[i]} {m}" for i in range(n) for m in methods]
    return viz.grid(images.x[order], columns, row_labels=row_labels,
                    title="Attribution to hidden layer inputs (channel mean), input to output", **images.display())


def _wrap(name: str, width: int = 16) -> str:
    """A long module name over two lines, broken after its last dot."""
    head, dot, tail = name.rpartition(".")
    return f"{head}.\n{tail}" if len(name) > width and dot else name


_NOTES = """Section 5.2 / Figs. 6, 11. Attribution to the input h of each hidden layer = h x gradient
(Saliency: plain gradient; RectGrad: rectified gradient, q = {q:g}, padding trick: {padding}), predicted class,
mean over channels for the figure; layers ordered from the input (first column / row) to the output (last).
`nonzero`: share of non-zero values of h x gradient; `background`: share of |channel-mean attribution| outside the
object mask resized to the layer (mean over the images whose map is not all zero); `background area`: share of the
layer's positions outside the mask, what a uniform map would score; `gradient background`: the same for the plain
gradient alone (a Saliency map proper; the rows compare h x gradient, which differ by the backward rule only)."""
