"""Feature-map occlusion (paper Sec. 3, Fig. 2): are background activations relevant to the decision?"""
from __future__ import annotations

import numbers
from dataclasses import dataclass
from fractions import Fraction

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rectgrad._checks import describe, generator as check_generator, positive_int
from rectgrad.data import ImageDataset
from rectgrad.train import evaluating, model_weight, predict_logits


@dataclass
class OcclusionCurve:
    """``margins[i, s]``: image i's (true logit - largest other logit) with ``fractions[s]`` of its background
    activations zeroed, averaged over the random orders; ``background[i]``: how many units of the layer are image i's
    background (all zeroed at fraction 1; none for a mask without background at the layer's size)."""

    fractions: Tensor
    margins: Tensor
    background: Tensor

    def mean(self) -> Tensor:
        return self.margins.mean(0)


#: The activation modules :func:`conv_activations` takes after a convolution.
ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.RReLU, nn.ELU, nn.CELU, nn.SELU, nn.GELU, nn.SiLU, nn.Mish,
               nn.Hardswish, nn.Hardtanh, nn.Softplus, nn.Tanh, nn.Sigmoid)


def conv_activations(model: nn.Module) -> dict[str, nn.Module]:
    """The activation module following each ``Conv2d``, named ``convK`` after the K-th convolution (Fig. 2's layers;
    the reference occludes the ReLU outputs of the four convolutions); a convolution followed by no activation
    before the next one has none. "Following" is in the order the modules are registered, which is the forward order
    of an ``nn.Sequential`` such as PaperCNN; of other models (a ResNet's shared ReLUs, activations declared before
    the convolutions) give ``feature_map_occlusion`` the module yourself."""
    layers, convs, pending = {}, 0, False
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            convs, pending = convs + 1, True
        elif pending and isinstance(module, ACTIVATIONS):
            layers[f"conv{convs}"] = module
            pending = False
    return layers


def correctly_classified(model: nn.Module, dataset: ImageDataset, per_class: int = 10) -> Tensor:
    """Indices of the first ``per_class`` images of each class (in dataset order) that ``model`` classifies
    correctly, class by class (Sec. 3: "10 correctly classified images of each class"). A class with fewer
    correct images contributes what it has. The inputs are given in the dtype of the model's weights."""
    per_class = positive_int("per_class", per_class)
    weight = model_weight(model, torch.empty(0))
    with evaluating(model):
        predictions = predict_logits(model, dataset.inputs(device=weight.device).to(weight.dtype)).argmax(1).cpu()
    correct = predictions == dataset.labels
    chosen = [torch.nonzero(correct & (dataset.labels == c)).flatten()[:per_class] for c in range(len(dataset.classes))]
    return torch.cat(chosen)


def background_at(masks: Tensor, size: tuple[int, int]) -> Tensor:
    """Background (``~mask``) of bool object masks ``(N, H, W)`` resized to a layer's ``size``: a unit is
    background when at least half of the pixels it covers are (area interpolation, threshold 0.5; the
    reference resizes the 0/1 background mask by bicubic interpolation and keeps nonzero values)."""
    if not isinstance(masks, Tensor) or masks.dtype != torch.bool or masks.dim() != 3:
        raise ValueError(f"masks must be a bool (N, H, W) tensor, True on the object, got {describe(masks)}")
    background = F.interpolate((~masks)[:, None].float(), size=size, mode="area")[:, 0]
    return background >= 0.5


@torch.no_grad()
def feature_map_occlusion(model: nn.Module, layer: nn.Module, images: Tensor, masks: Tensor, labels: Tensor, *,
                          steps: int = 100, orders: int = 50, generator: torch.Generator | None = None,
                          batch_size: int = 2000) -> OcclusionCurve:
    """Zero the background activations of ``layer`` in random order and follow the decision (Fig. 2).

    For each image (model inputs ``(N, C, H, W)``, given in the dtype of the model's weights, object masks
    ``(N, H, W)`` True on the object, true ``labels`` ``(N,)``, integer class indices of any integer dtype), the
    background units of ``layer``'s output (every channel at a background position, :func:`background_at`) are put
    in ``orders`` random orders; at each of ``steps`` fractions ``p = linspace(0, 1, steps)`` the first
    ``round(p * n_background)`` units are zeroed and the margin (true-class logit - largest other logit) is
    recorded, then averaged over the orders (the paper's "average over 50 random trials"; the reference averages the
    logits first); the orders are drawn from ``generator`` (a ``torch.Generator`` on any device, or None).
    Reference: 100 correctly classified images, ``steps=100``, ``orders=50``. One forward pass runs at most
    ``batch_size`` rows (orders x steps; an order's steps in several passes when ``batch_size < steps``). The model
    runs in eval mode; its modes are restored after.
    """
    if not isinstance(images, Tensor) or not images.is_floating_point() or images.dim() != 4 or not len(images):
        raise ValueError(f"images must be the model's float inputs (N, C, H, W), N >= 1 (e.g. dataset.inputs()), got "
                         f"{describe(images)}")
    if not bool(torch.isfinite(images).all()):
        raise ValueError("images contain NaN or Inf values")
    n = images.shape[0]
    if not isinstance(masks, Tensor) or masks.shape != (n, *images.shape[2:]) or masks.dtype != torch.bool:
        raise ValueError(f"masks must be a bool (N, H, W) tensor matching images {tuple(images.shape)}, got "
                         f"{describe(masks)}")
    if (not isinstance(labels, Tensor) or labels.shape != (n,) or labels.is_floating_point()
            or labels.dtype == torch.bool):
        raise ValueError(f"labels must be a tensor of integer class indices of shape ({n},), got {describe(labels)}")
    integers = all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in (steps, orders))
    if not integers or steps < 2 or orders < 1:
        raise ValueError(f"need integers steps >= 2 and orders >= 1, got {steps!r} and {orders!r}")
    if not isinstance(layer, nn.Module):
        raise TypeError(f"layer must be a module of the model (e.g. conv_activations(model)['conv2'] or "
                        f"model.get_submodule('features.3')), got {type(layer).__name__}")
    generator, batch_size = check_generator(generator), positive_int("batch_size", batch_size)
    with evaluating(model):
        return _occlusion(model, layer, images, masks, labels, steps, orders, generator, batch_size)


def _occlusion(model, layer, images, masks, labels, steps, orders, generator, batch_size) -> OcclusionCurve:
    n, weight = images.shape[0], model_weight(model, images)
    device = weight.device
    images = images.to(device, weight.dtype)
    labels = labels.to(device, torch.long)  # (a uint8 index would be a bool mask)
    shape, classes = _output_shape(model, layer, images[:1])
    if classes < 2:
        raise ValueError(f"the margin (true-class logit - largest other logit) needs a model of at least 2 classes, "
                         f"this one gives {classes} logit(s)")
    if bool(((labels < 0) | (labels >= classes)).any()):
        bad = labels[(labels < 0) | (labels >= classes)][0].item()
        raise ValueError(f"label {bad} is out of range for a model with {classes} classes")
    units = shape[0] * shape[1] * shape[2]
    background = background_at(masks, shape[1:]).to(device)
    fractions = torch.linspace(0, 1, steps)
    keep = {}
    handle = layer.register_forward_hook(lambda module, args, out: out * keep["mask"])
    margins = torch.zeros(n, steps)
    try:
        for i in range(n):
            candidates = background[i].expand(shape).flatten().nonzero().flatten()
            count = len(candidates)
            zeroed = _zeroed_units(steps, count).to(device)
            total = torch.zeros(steps, device=device)
            per_batch = max(1, batch_size // steps)
            for start in range(0, orders, per_batch):
                k = min(per_batch, orders - start)
                draws = torch.rand(k, count, generator=generator, device=getattr(generator, "device", None))
                order = draws.argsort(1).to(device)  # k random orders, drawn on the generator's device
                rank = torch.full((k, units), units, dtype=torch.long, device=device)
                rank.scatter_(1, candidates[order], torch.arange(count, device=device).expand(k, -1))
                kept = (rank[:, None, :] >= zeroed[None, :, None]).view(k * steps, *shape)
                margin = []
                for rows in kept.split(batch_size):  # (one order's steps in several passes when batch_size < steps)
                    keep["mask"] = rows
                    margin.append(_margin(model(images[i:i + 1].expand(len(rows), -1, -1, -1)), labels[i]))
                total += torch.cat(margin).view(k, steps).sum(0)
            margins[i] = (total / orders).cpu()
    finally:
        handle.remove()
    return OcclusionCurve(fractions, margins, background.flatten(1).sum(1).cpu() * shape[0])


def _zeroed_units(steps: int, count: int) -> Tensor:
    """``round(p * count)`` units at each ``p = s / (steps - 1)``, computed exactly (halves to even, as Python's
    round): float fractions put some halves on the wrong side (0.3 x 95 = 28.500001 in float32)."""
    return torch.tensor([round(Fraction(s * count, steps - 1)) for s in range(steps)])


def _output_shape(model: nn.Module, layer: nn.Module, x: Tensor) -> tuple[tuple[int, int, int], int]:
    """The (C, H, W) of ``layer``'s feature map and the model's number of classes."""
    seen = []
    handle = layer.register_forward_hook(lambda module, args, out: seen.append(tuple(out.shape)))
    try:
        logits = model(x)
    finally:
        handle.remove()
    if not seen:
        raise ValueError("the layer is not called by the model's forward pass")
    if len(seen) > 1:
        raise ValueError(f"the layer runs {len(seen)} times in one forward pass (a module used at several places, "
                         "e.g. one shared nn.ReLU): its background mask would be applied at every call; give a "
                         "module that runs once (an activation module of its own per layer)")
    if len(seen[0]) != 4:
        raise ValueError(f"the layer's output must be a feature map (N, C, H, W), got shape {seen[0]}")
    return seen[0][1:], logits.shape[-1]


def _margin(logits: Tensor, label: Tensor) -> Tensor:
    true = logits[:, label]
    others = logits.clone()
    others[:, label] = float("-inf")
    return true - others.amax(1)
