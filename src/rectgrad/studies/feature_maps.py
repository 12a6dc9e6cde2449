"""Section 3, Fig. 10: the feature maps of every convolutional layer for an image with a noisy saliency map."""
from __future__ import annotations

import hashlib
import itertools
import math
from collections import Counter

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from rectgrad import viz
from rectgrad._checks import positive_int
from rectgrad.attr._arguments import check_internal_batch_size
from rectgrad.engine import Options
from rectgrad.operations import KNOWN_ACTIVATIONS
from rectgrad.studies._common import (Images, StudyResult, check_out, check_show, engine_gradients, image_chunks,
                                      leaves_model_as_it_was, new_figure, outside_fraction, predict,
                                      refuse_inlined_layers, resize_masks, spread)


class _ActivationRecorder(TorchFunctionMode):
    """Records the spatial outputs (N, C, H, W), H x W > 1, of every activation call of one forward pass."""

    def __init__(self):
        super().__init__()
        self.outputs: list[Tensor] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func in KNOWN_ACTIVATIONS and isinstance(out, Tensor) and out.dim() == 4 and out.shape[-2:].numel() > 1:
            self.outputs.append(out.detach().clone())
        return out


@leaves_model_as_it_was
def activations(model: nn.Module, x: Tensor, max_layers: int | None = None) -> list[tuple[int, Tensor]]:
    """The feature maps after each activation (ReLU, ReLU6, ...) over a spatial map, in forward order.

    Activations are caught as the engine catches them (functional and module ReLUs alike). Returns
    ``(position, maps)`` pairs, ``position`` counting from 1 in forward order; with ``max_layers`` only that
    many, evenly spread from the first to the last.
    """
    refuse_inlined_layers(model, "feature-maps")
    recorder = _ActivationRecorder()
    with torch.no_grad(), recorder:
        model(x)
    if not recorder.outputs:
        refuse_inlined_layers(model, "feature-maps", seen_any=False)
        raise ValueError("the model applies no known activation to a spatial feature map")
    return spread(list(enumerate(recorder.outputs, start=1)), max_layers)


@leaves_model_as_it_was
def feature_maps(model: nn.Module, images: Images, out=None, *, channels: int = 8,
                 max_layers: int | None = 8, internal_batch_size: int | None = 16, show: int = 4) -> StudyResult:
    """Per image: its saliency map and the ``channels`` most active channels of each convolutional layer.

    Section 3 argues that saliency maps are noisy because background features pass through the ReLUs:
    the CNN does not filter them out. Numbers per layer (the units of all images pooled): the fraction of
    active units (``a > 0``) and, where ``images`` has object masks, that fraction on the background and on
    the object and the share of the activation mass on the background. Per image: the share of the saliency
    map's mass, ``|gradient summed over channels|``, on the background (how noisy it is). One figure per
    image for ``show`` images (0: none, None: all): those with the noisiest saliency maps where masks exist,
    else the first; the numbers use all. ``internal_batch_size``: images per forward/backward pass (None: all at
    once); it bounds memory and changes no number or figure beyond float rounding.
    """
    show = check_show(show, len(images))
    channels = positive_int("channels", channels)
    internal_batch_size = check_internal_batch_size(internal_batch_size)
    # the figures of the images it may draw: the first, or, where masks choose the noisiest, any
    drawable = images.names if images.masks is not None else images.names[:show]
    check_out(out, "feature-maps", ("layers", "images"), figure_names(drawable) if show else ())
    chunks = image_chunks(len(images), internal_batch_size)
    predicted, _ = predict(model, images.x, internal_batch_size)
    saliency = torch.cat([torch.as_tensor(viz.channel_sum(engine_gradients(model, images.x[c], predicted[c],
                                                                            Options())[0])) for c in chunks])
    shares = ([0.0] * len(images) if images.masks is None
              else outside_fraction(saliency, images.masks.cpu()).tolist())  # per image
    noisiest = sorted(range(len(images)), key=lambda i: 1.0 if math.isnan(shares[i]) else -shares[i])  # NaN last
    drawn = {i: [] for i in noisiest[:show]}  # image -> per layer (position, its most active channels, their maps)
    counts: dict[int, Counter] = {}  # activation position -> units counted over all images
    shapes = {}
    for chunk in chunks:
        masks = None if images.masks is None else images.masks[chunk]
        for k, a in activations(model, images.x[chunk], max_layers):
            shapes[k] = a.shape[1:]
            counts.setdefault(k, Counter()).update(_unit_counts(a, masks))
            for i in drawn.keys() & range(chunk.start, chunk.start + len(a)):
                drawn[i].append((k, *_most_active(a[i - chunk.start], channels)))
    rows = []
    for k, count in counts.items():
        row = {"layer": f"activation {k}", "shape": "x".join(map(str, shapes[k])),
               "active fraction": count["active"] / count["units"]}
        if images.masks is not None:
            row |= {"background area": count["background"] / count["units"],
                    "active on background": _ratio(count["active on background"], count["background"]),
                    "active on object": _ratio(count["active on object"], count["object"]),
                    "mass on background": _ratio(count["mass on background"], count["mass"])}
        rows.append(row)
    per_image = []
    for i, name in enumerate(images.names):
        row = {"image": name, "predicted": images.class_name(int(predicted[i]))}
        if images.masks is not None:
            row["saliency mass on background"] = shares[i]
        per_image.append(row)
    shown = noisiest[:show]
    figures = {key: _figure(images, i, saliency[i], drawn[i])
               for key, i in zip(figure_names([images.names[i] for i in shown]), shown)}
    result = StudyResult("feature-maps", {"layers": rows, "images": per_image}, figures, notes=_NOTES)
    if out is not None:
        result.save(out)
    return result


def _unit_counts(a: Tensor, masks: Tensor | None) -> dict:
    """Of feature maps ``a`` (n, C, h, w): units, active ones (a > 0) and, with object ``masks`` (n, H, W) resized to
    the layer, those on the background and on the object, and the activation mass (sum of ``|a|``, in float64)."""
    active = a > 0
    counts = {"units": a.numel(), "active": int(active.sum())}
    if masks is not None:
        obj = resize_masks(masks, tuple(a.shape[-2:]))[:, None].expand_as(a)
        mass = a.abs().double()
        counts |= {"background": int((~obj).sum()), "object": int(obj.sum()),
                   "active on background": int((active & ~obj).sum()), "active on object": int((active & obj).sum()),
                   "mass": float(mass.sum()), "mass on background": float(mass[~obj].sum())}
    return counts


def _ratio(part: float, whole: float) -> float:
    return part / whole if whole else float("nan")


def _most_active(a: Tensor, channels: int) -> tuple[list[int], Tensor]:
    """The ``channels`` most active channels of one image's feature maps ``a`` (C, h, w): their indices, their maps."""
    top = a.flatten(1).sum(1).argsort(descending=True)[:channels]
    return top.tolist(), a[top].cpu()


def figure_names(names) -> list[str]:
    """The names of the figures of the images ``names``, drawn in this order: each image's name as part of a file name,
    numbered where two share one (names are unique, their file-name forms, "a/b" and "a_b", need not be). Those of
    all the images hold those of any of them that :func:`feature_maps` draws."""
    keys: list[str] = []
    for name in names:
        slug = key = _slug(name)
        for n in itertools.count(1):
            if key not in keys:
                break
            key = f"{slug}_{n}"
        keys.append(key)
    return keys


def _slug(name: str, longest: int = 120) -> str:
    """``name`` as part of a file name: characters other than letters, digits, - and _ replaced by _; one longer than
    ``longest`` bytes cut there, with a hash of the whole name to keep cut names apart (a file name may have only
    255 bytes, and the figure's adds ``feature_maps_`` and ``.png``)."""
    slug = "".join(c if c.isalnum() or c in "-_" else "_" for c in name)
    if len(slug.encode()) <= longest:
        return slug
    digest = hashlib.sha1(name.encode()).hexdigest()[:8]
    return f"{slug.encode()[:longest - 9].decode(errors='ignore')}_{digest}"


def _figure(images: Images, i: int, saliency: Tensor, layers: list[tuple[int, list[int], Tensor]]):
    """Top row: the input, its saliency map (and mask); then one row per layer, its most active channels (``layers``:
    position, channel indices, their maps), as many columns as the most drawn in a row: ``channels`` beyond every
    layer's own count (1000 on a model of 64) draws no empty columns."""
    ncols = max(3, *(len(top) for _, top, _ in layers))
    fig = new_figure(1.3 * ncols, 1.3 * (len(layers) + 1) + 0.4)
    axes = fig.subplots(len(layers) + 1, ncols, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    picture = viz.to_display_image(images.x[i], **images.display())
    axes[0, 0].imshow(picture, cmap="gray" if picture.ndim == 2 else None, vmin=0, vmax=1)
    axes[0, 0].set_title("input", fontsize=8)
    viz.plot_map(axes[0, 1], viz.prepare(saliency, grayscale=True)[0])
    axes[0, 1].set_axis_on()
    axes[0, 1].set_title("saliency", fontsize=8)
    if images.masks is not None:
        axes[0, 2].imshow(images.masks[i].cpu().numpy(), cmap="gray", vmin=0, vmax=1)
        axes[0, 2].set_title("object mask", fontsize=8)
    for row, (k, top, a) in enumerate(layers, start=1):
        for col, (c, fmap) in enumerate(zip(top, a)):
            ax = axes[row, col]
            ax.imshow(fmap.numpy(), cmap="viridis", vmin=0, vmax=max(float(fmap.max()), 1e-12),
                      interpolation="nearest")
            ax.set_title(f"ch {c}", fontsize=7)
        axes[row, 0].set_axis_on()
        axes[row, 0].set_xticks([])
        axes[row, 0].set_yticks([])
        axes[row, 0].set_ylabel(f"activation {k}\n{a.shape[-2]}x{a.shape[-1]}", fontsize=8)
    fig.suptitle(f"{images.names[i]}: feature maps after each activation (most active channels)", fontsize=10)
    return fig


_NOTES = """Section 3 / Fig. 10. Feature maps after each activation over a spatial map (forward order; at most
the configured number of layers, evenly spread). `active fraction`: share of units (channels x positions) with
a > 0, over all images; with object masks (resized to the layer): the same on the background and on the
object, and the share of the activation mass on the background. `saliency mass on background`: share of the
saliency map's mass outside the object, |gradient summed over channels| (the map as drawn)."""
