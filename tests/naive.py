"""Naive re-implementations of the engine's rules, for comparison in tests.

Module hooks on distinct ``nn.ReLU`` / ``nn.Conv2d`` / ``nn.MaxPool2d`` modules and thresholds from
``numpy.percentile``: slow and limited to simple models, but written straight from the paper.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

SCORES = {
    "pr1": lambda a, g: a * g,
    "pr2": lambda a, g: np.abs(a * g),
    "pr3": lambda a, g: a,
    "pr4": lambda a, g: g,
}


def naive_rectgrad(model: nn.Module, x: torch.Tensor, target: torch.Tensor, *, q=None, tau=None, score="pr1",
                   padding_trick=False, prr=False, final_threshold=True) -> torch.Tensor:
    """RectGrad by Listing 1 of the paper: ``R_in = where(score(a, R) > tau, R, 0)`` at every ReLU."""
    handles = []

    def remember_output(module, inputs, output):
        module.saved_output = output.detach()

    def relu_rule(module, grad_input, grad_output):
        a = module.saved_output.numpy()
        g = grad_output[0].detach().numpy()
        s = SCORES[score](a, g).reshape(len(g), -1)
        thresholds = np.percentile(s, q, axis=1, method="nearest") if q is not None else np.full(len(g), tau)
        kept = np.where(s > thresholds[:, None], g.reshape(len(g), -1), 0.0).reshape(g.shape)
        return (torch.from_numpy(kept),)

    def zero_border(module, inputs, output):  # Listing 2; a 1-pixel side has no border
        def hook(grad):
            grad = grad.clone()
            if grad.shape[-2] > 1:
                grad[..., [0, -1], :] = 0
            if grad.shape[-1] > 1:
                grad[..., :, [0, -1]] = 0
            return grad
        output.register_hook(hook)

    def proportional(module, grad_input, grad_output):
        x_in = module.saved_input.numpy()
        g = grad_output[0].detach().numpy()
        n, c, h, w = x_in.shape
        windows = x_in.reshape(n, c, h // 2, 2, w // 2, 2)
        mean = windows.mean(axis=(3, 5))
        share = np.repeat(np.repeat(g / (mean + 1e-10), 2, axis=2), 2, axis=3) / 4.0
        return (torch.from_numpy(x_in * share),)

    def remember_input(module, inputs):
        module.saved_input = inputs[0].detach()

    for module in model.modules():
        if isinstance(module, nn.ReLU):
            handles += [module.register_forward_hook(remember_output), module.register_full_backward_hook(relu_rule)]
        if padding_trick and isinstance(module, nn.Conv2d) and module.padding != "valid" and (
                module.padding != (0, 0) or module.kernel_size == (1, 1)):
            handles.append(module.register_forward_hook(zero_border))
        if prr and isinstance(module, nn.MaxPool2d):
            handles += [module.register_forward_pre_hook(remember_input),
                        module.register_full_backward_hook(proportional)]
    try:
        x = x.detach().clone().requires_grad_()
        out = model(x)
        (grad,) = torch.autograd.grad(out.gather(1, target[:, None]).sum(), x)
    finally:
        for handle in handles:
            handle.remove()
        for module in model.modules():
            for name in ("saved_output", "saved_input"):
                if hasattr(module, name):
                    delattr(module, name)
    attribution = x.detach() * grad
    return attribution.clamp(min=0) if final_threshold else attribution
