"""Training and evaluation of classifiers on in-memory ``ImageDataset``s, as in the paper (Appendix F.2):
Adam, lr 1e-3, batch 100, 20 epochs, cross-entropy, no augmentation.

The loop is built for the hundreds of retrainings of ROAR/KAR: the whole uint8 dataset sits on the
device as one tensor, each epoch indexes it with a random permutation, and the only per-batch work
besides the optimizer step is an index, a scaling and device-side accumulation of loss and accuracy.
Training runs in channels-last memory format, measured faster on CPU and, for 3-channel images, on
CUDA (benchmarks/train_speed.py); ``torch.compile`` measured slower on both and is not used.
"""
from __future__ import annotations

import contextlib
import time

import torch
import torch.nn.functional as F
from torch import nn

from rectgrad.data import ImageDataset, to_inputs
from rectgrad.models import PaperCNN
from rectgrad.progress import progress_bar


def new_model(dataset: ImageDataset, seed: int = 0) -> PaperCNN:
    """The paper's CNN shaped for ``dataset``, initialised from ``seed`` (the global RNG is left untouched)."""
    _, channels, height, width = dataset.images.shape
    if height != width:
        raise ValueError(f"PaperCNN needs square images, got {height}x{width}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return PaperCNN(channels, height, len(dataset.classes))


def train_model(model: nn.Module, train: ImageDataset, *, epochs: int = 20, batch_size: int = 100,
                lr: float = 1e-3, seed: int = 0, device=None, progress: bool = True,
                test: ImageDataset | None = None, channels_last: bool = True) -> dict:
    """Train ``model`` in place with Adam on ``train``; return the history.

    ``seed`` fixes the batch order; the initial weights are the caller's (``new_model(train, seed)``
    gives seeded ones), so a seeded model trained with the same seed on the same device is bitwise
    reproducible (cuDNN runs in deterministic mode). ``device`` defaults to the model's device. The model
    comes back in eval mode. History: ``loss`` and ``train_accuracy`` per epoch, ``seconds``, and
    ``test_accuracy`` (None without ``test``). ``channels_last`` trains in that memory format (the
    weights are handed back in the default format).
    """
    if len(train) == 0:
        raise ValueError("the training set is empty")
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be positive, got {epochs} and {batch_size}")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model.to(device, memory_format=memory_format).train()
    images, labels = train.images.to(device), train.labels.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    n, steps = len(train), -(-len(train) // batch_size)
    history = {"loss": [], "train_accuracy": [], "seconds": 0.0, "test_accuracy": None}
    start = time.perf_counter()
    bar = progress_bar(epochs * steps, f"train {train.name}", progress, unit="batch")
    with torch.backends.cudnn.flags(enabled=True, benchmark=False, deterministic=True):
        for epoch in range(epochs):
            order = torch.randperm(n, generator=generator).to(device)
            loss_sum = torch.zeros((), device=device)
            correct = torch.zeros((), dtype=torch.long, device=device)
            for step in range(steps):
                index = order[step * batch_size:(step + 1) * batch_size]
                target = labels[index]
                logits = model(to_inputs(images[index]).contiguous(memory_format=memory_format))
                loss = F.cross_entropy(logits, target)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                loss_sum += loss.detach() * len(index)
                correct += (logits.argmax(1) == target).sum()
                if bar is not None:
                    bar.update()
                    if step % 50 == 49 or step == steps - 1:
                        seen = min((step + 1) * batch_size, n)
                        bar.set_postfix(epoch=epoch + 1, loss=f"{loss_sum.item() / seen:.4f}",
                                        acc=f"{correct.item() / seen:.4f}", refresh=False)  # drawn at its pace
            history["loss"].append(loss_sum.item() / n)
            history["train_accuracy"].append(correct.item() / n)
    history["seconds"] = time.perf_counter() - start
    if bar is not None:
        bar.close()
    model.to(memory_format=torch.contiguous_format).eval()
    if test is not None:
        history["test_accuracy"] = evaluate(model, test, device=device)
    return history


@contextlib.contextmanager
def evaluating(model: nn.Module):
    """``model`` in eval mode meanwhile; each module's own mode is restored on exit, also on error."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


@torch.no_grad()
def predict_logits(model: nn.Module, inputs: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Logits of float ``inputs`` computed in batches (no gradient), on the inputs' device."""
    return torch.cat([model(inputs[i:i + batch_size]) for i in range(0, len(inputs), batch_size)])


@torch.no_grad()
def evaluate(model: nn.Module, dataset: ImageDataset, batch_size: int = 1000, device=None) -> float:
    """Accuracy of ``model`` (put in eval mode) on ``dataset``; ``device`` defaults to the model's."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.to(device).eval()
    correct = torch.zeros((), dtype=torch.long, device=device)
    for i in range(0, len(dataset), batch_size):
        logits = model(dataset.inputs(slice(i, i + batch_size), device=device))
        correct += (logits.argmax(1) == dataset.labels[i:i + batch_size].to(device)).sum()
    return correct.item() / max(len(dataset), 1)
