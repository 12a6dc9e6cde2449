"""Several copies of the paper's CNN trained at once on one device, each on its own data (ROAR/KAR, Sec. 5.3).

The M models' parameters are stacked and one step runs all of them: every convolution becomes one grouped
convolution (``groups=M``) over the models' activations laid side by side as channels, in channels-last
memory format, and every dense layer one batched matrix product, so a GPU sees a few large launches per
layer instead of M small ones. Everything else is :func:`rectgrad.train.train_model`'s protocol model by
model: Adam (elementwise, so one Adam over the stacked tensors is an independent Adam per model), lr 1e-3,
batch 100, mean cross-entropy per model, and each model's own batch order drawn from its own seed, the order
``train_model`` draws. All datasets of a group hold the same number of images (the modified copies of one
training set do), so the models step in lockstep. ``precision="bf16"`` runs the forward pass under bfloat16
autocast (measured about twice as fast on an H100; fp32, the default, is the paper's precision).
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rectgrad._checks import generator_seed, integer
from rectgrad.checkpoint import regular_file, write_atomically
from rectgrad.data import ImageDataset, to_inputs
from rectgrad.models import architecture
from rectgrad.progress import progress_bar
from rectgrad.train import (TrainingInterrupted, _check_outputs, _check_trainable, _dtypes, check_place, cudnn_mode,
                            difference, evaluate, fingerprint, learning_rate, new_model, per_weight, recorded,
                            saved_training, stop_requests, train_model)

PRECISIONS = ("fp32", "bf16")
_LAYERS = (nn.Conv2d, nn.ReLU, nn.MaxPool2d, nn.Flatten, nn.Linear)


def _leaf_layers(models: Sequence[nn.Module]) -> list[nn.Module]:
    """The layers of ``models[0]``, which all models must share, as the stacked step computes them."""
    model = models[0]
    layers = [m for m in model.modules() if not list(m.children())]
    unsupported = sorted({_unsupported(m) for m in layers} - {None})
    if not isinstance(model, nn.Sequential) or unsupported:
        raise ValueError("train_many trains nn.Sequential models of Conv2d (zero padding, one group), ReLU, "
                         "MaxPool2d, Flatten (of C, H, W) and Linear layers with biases (such as PaperCNN); got "
                         f"{type(model).__name__}" + (f" with {', '.join(unsupported)}" if unsupported else ""))
    for i, one in enumerate(models):  # a layer used twice, or tied weights: the stacked step would compute them once
        first = {}  # each weight tensor's first name
        tied = [f"{name} is {first.setdefault(id(p), name)}" for name, p in one.named_parameters(remove_duplicate=False)
                if first.setdefault(id(p), name) != name]
        if tied:
            raise ValueError(f"train_many trains models whose layers hold weights of their own; the "
                             f"{type(one).__name__} (model {i}) shares some ({', '.join(tied)}): train it with "
                             "train_model")
    shared, dtypes, devices = architecture(model), _dtypes(model), _devices(model)
    for i, other in enumerate(models[1:], 1):
        if architecture(other) != shared:
            raise ValueError(f"train_many trains models of one architecture; model {i} differs from model 0:\n"
                             f"{other}\nis not\n{model}")
        if _dtypes(other) != dtypes:  # (stacked, they would all train in the widest type, not each in its own)
            raise ValueError(f"train_many trains models whose weights are of one type; model {i}'s are "
                             f"{_dtypes(other)}, model 0's {dtypes}: convert them alike (model.float(), say)")
        if _devices(other) != devices:  # (stacking their weights failed in PyTorch's words)
            raise ValueError(f"train_many trains models on one device; model {i}'s weights are on {_devices(other)}, "
                             f"model 0's on {devices}: move them to one device first (model.to(device)); device= "
                             "then says where the group trains")
    return layers


def _devices(model: nn.Module) -> str:
    """The devices of ``model``'s weights, e.g. ``cuda:0``, or ``features.0.weight cpu, ...`` where they differ."""
    return per_weight(model, lambda p: str(p.device))


def _frozen(models: Sequence[nn.Module]) -> set[str]:
    """The names of the parameters the models hold frozen (``requires_grad=False``), which train_model leaves as they
    are; refused unless every model freezes the same ones and leaves one to train."""
    _check_trainable(models[0])
    frozen = [{k for k, p in m.named_parameters() if not p.requires_grad} for m in models]
    for i, other in enumerate(frozen[1:], 1):
        if other != frozen[0]:
            raise ValueError(f"train_many trains models frozen alike; model {i} freezes {sorted(other) or 'nothing'}, "
                             f"model 0 {sorted(frozen[0]) or 'nothing'}: freeze the same parameters in each")
    return frozen[0]


def _unsupported(layer: nn.Module) -> str | None:
    """What the stacked step cannot compute in ``layer``, or None."""
    if not isinstance(layer, _LAYERS):
        return type(layer).__name__
    if isinstance(layer, (nn.Conv2d, nn.Linear)) and layer.bias is None:
        return f"{type(layer).__name__}(bias=False)"
    if isinstance(layer, nn.Conv2d) and (layer.groups != 1 or layer.padding_mode != "zeros"):
        return f"Conv2d(groups={layer.groups}, padding_mode={layer.padding_mode!r})"
    if isinstance(layer, nn.MaxPool2d) and layer.return_indices:
        return "MaxPool2d(return_indices=True)"
    if isinstance(layer, nn.Flatten) and (layer.start_dim, layer.end_dim) != (1, -1):
        return repr(layer)
    return None


def _stacked_logits(layers: list[nn.Module], params: list[Tensor], x: Tensor) -> Tensor:
    """Logits (M, B, K) of the M stacked models for their own inputs ``x`` (M, B, C, H, W)."""
    count, batch = x.shape[:2]
    h = x.transpose(0, 1).reshape(batch, -1, *x.shape[3:]).contiguous(memory_format=torch.channels_last)
    weights = iter(params)
    for layer in layers:
        if isinstance(layer, nn.Conv2d):
            w, b = next(weights), next(weights)
            w = w.reshape(-1, *w.shape[2:]).contiguous(memory_format=torch.channels_last)
            h = F.conv2d(h, w, b.reshape(-1), layer.stride, layer.padding, layer.dilation, count)
        elif isinstance(layer, nn.MaxPool2d):
            h = F.max_pool2d(h, layer.kernel_size, layer.stride, layer.padding, layer.dilation, layer.ceil_mode)
        elif isinstance(layer, nn.Flatten):  # per model, in (C, H, W) order as nn.Flatten; flat features stay
            h = h.reshape(batch, count, -1).transpose(0, 1) if h.ndim == 4 else h
        elif isinstance(layer, nn.Linear):
            w, b = next(weights), next(weights)
            h = torch.baddbmm(b[:, None, :], h, w.transpose(1, 2))
        else:
            h = F.relu(h)
    return h


def checkpoint_seconds(checkpoint) -> float:
    """Training seconds an unfinished group's ``checkpoint`` has accumulated (0 when there is none)."""
    state = saved_training(checkpoint, "train_many", resuming=False)
    return 0.0 if state is None else float(state["seconds"])


def train_many(models: Sequence[nn.Module], datasets: Sequence[ImageDataset], seeds: Sequence[int], *,
               epochs: int = 20, batch_size: int = 100, lr: float = 1e-3, device=None, precision: str = "fp32",
               deterministic: bool = True, progress: bool = False, checkpoint=None,
               stop: Callable[[], bool] | None = None, save: Callable[[list[dict]], None] | None = None) -> list[dict]:
    """Train ``models[i]`` on ``datasets[i]`` with batch-order seed ``seeds[i]``, all at once; in place.

    The models must share one architecture (e.g. ``new_model(dataset, seed)``); models given the same dataset
    object (ROAR/KAR's repeats) share its copy on the device. Returns one history per
    model, as :func:`train_model` (``loss`` and ``train_accuracy`` per epoch, ``seconds`` of the whole
    group). The models come back in eval mode on ``device`` (default: the first model's device).
    ``deterministic=False`` lets cuDNN pick its fastest (benchmarked, non-deterministic) algorithms.

    With a ``checkpoint`` path the group can be stopped and resumed: when ``stop()`` turns true (by default:
    on Ctrl-C or SIGTERM, :func:`stop_requests`) it saves its whole state there after the current step and
    raises :class:`TrainingInterrupted`; a later call with the same arguments resumes from it (bit for bit
    with ``deterministic``) and deletes it when done. ``seconds`` then counts every part. ``save(histories)``
    (evaluating and writing the trained models, say) runs under the same signal handling before the state is
    deleted: a request meanwhile is honoured once it returns, and an error in it saves the trained state first.
    """
    if not len(models) == len(datasets) == len(seeds) or not models:
        raise ValueError(f"need as many models, datasets and seeds (at least one), got "
                         f"{len(models)}, {len(datasets)} and {len(seeds)}")
    sizes = {len(d) for d in datasets}
    shapes = {tuple(d.images.shape[1:]) for d in datasets}
    if len(sizes) != 1 or len(shapes) != 1 or 0 in sizes:
        raise ValueError(f"all datasets must hold the same non-zero number of images of one shape, "
                         f"got sizes {sorted(sizes)} and shapes {sorted(shapes)}")
    # (as Python numbers: a numpy number in the saved state would make it unloadable with weights_only)
    epochs, batch_size, lr = integer("epochs", epochs), integer("batch_size", batch_size), learning_rate(lr)
    seeds = [generator_seed(f"seeds[{i}]", s) for i, s in enumerate(seeds)]  # (5.7 is not seed 5, nor True seed 1)
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be positive, got {epochs} and {batch_size}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if stop is not None and checkpoint is None:
        raise ValueError("stop needs a checkpoint: the path to save the group's state to")
    if checkpoint is not None:
        regular_file(checkpoint)  # a folder refused now, not once the group is trained and its state to be deleted
    layers = _leaf_layers(models)
    device = torch.device(device) if device is not None else next(models[0].parameters()).device
    count, n = len(models), sizes.pop()
    names, frozen = [name for name, _ in models[0].named_parameters()], _frozen(models)
    params = [torch.stack([dict(m.named_parameters())[k].detach() for m in models]).to(device)
              .requires_grad_(k not in frozen) for k in names]  # frozen weights stay as they are, as in train_model
    distinct = {id(d): d for d in datasets}  # repeats share one dataset: held once on the device
    images = torch.stack([d.images.to(device) for d in distinct.values()])  # (D, N, C, H, W) uint8
    labels = torch.stack([d.labels.to(device) for d in distinct.values()])
    position = {key: i for i, key in enumerate(distinct)}
    rows = torch.tensor([position[id(d)] for d in datasets], device=device)[:, None]  # each model's dataset
    generators = [torch.Generator().manual_seed(s) for s in seeds]
    top = max(datasets, key=lambda d: int(d.labels.max()))  # the dataset of the highest label: each model needs it
    optimizer = _adam(params, lr)
    steps = -(-n // batch_size)
    histories = [{"loss": [], "train_accuracy": [], "seconds": 0.0, "test_accuracy": None} for _ in models]
    checksums = {} if checkpoint is None else {key: fingerprint(d) for key, d in distinct.items()}
    identity = None if checkpoint is None else {
        "models": count, "images": n, "seeds": seeds, "epochs": epochs, "batch_size": batch_size,
        "lr": lr, "precision": precision, "dtype": _dtypes(models[0]),  # (shared: _leaf_layers checked it)
        "frozen": [name for name in names if name in frozen],  # (shared too: _frozen checked it)
        "pixel_sums": images.flatten(1).sum(1)[rows[:, 0]].tolist(),  # tells the models' datasets apart
        "label_sums": (labels * torch.arange(1, n + 1, device=device)).sum(1)[rows[:, 0]].tolist(),  # and labels
        "data": [checksums[id(d)] for d in datasets]}  # (sums may agree: mirrored images, swapped labels)
    state = _resume(checkpoint, identity, names, params, optimizer, generators, epochs, steps)
    first_epoch, first_step, earlier = (state["epoch"], state["step"], state["seconds"]) if state else (0, 0, 0.0)
    if state:
        for history, losses, accuracies in zip(histories, state["losses"], state["accuracies"]):
            history["loss"], history["train_accuracy"] = losses, accuracies

    def interrupt(generator_states, epoch, step, loss_sum, correct):
        _save(checkpoint, identity, params, optimizer, generator_states, epoch, step, loss_sum, correct, histories,
              earlier + time.perf_counter() - start)
        if bar is not None:
            bar.close()  # (a log's last bar line ends before the message, as train_model's)
        where = "after the last step" if epoch == epochs else f"at epoch {epoch + 1}/{epochs}, step {step}/{steps}"
        raise TrainingInterrupted(f"stopped training {count} models {where}; their state is saved in {checkpoint}: "
                                  "run again to resume")

    bar = progress_bar(epochs * steps, f"train {count} models at once", progress, unit="step", leave=False,
                       initial=first_epoch * steps + first_step)  # resumed: its rate counts this run's steps
    start, checked = time.perf_counter(), False
    with (cudnn_mode(benchmark=not deterministic, deterministic=deterministic),
          stop_requests() if checkpoint is not None and stop is None else nullcontext() as requested):
        stop = stop or (requested.is_set if requested is not None else None)
        for epoch in range(first_epoch, epochs):
            at_epoch_start = [g.get_state() for g in generators]
            orders = torch.stack([torch.randperm(n, generator=g) for g in generators]).to(device)
            loss_sum = torch.zeros(count, device=device)
            correct = torch.zeros(count, dtype=torch.long, device=device)
            if state and epoch == first_epoch:
                loss_sum, correct = state["loss_sum"].to(device), state["correct"].to(device)
            for step in range(first_step if epoch == first_epoch else 0, steps):
                if stop is not None and stop():
                    interrupt(at_epoch_start, epoch, step, loss_sum, correct)
                index = orders[:, step * batch_size:(step + 1) * batch_size]
                target = labels[rows, index]
                with torch.autocast(device.type, torch.bfloat16, enabled=precision == "bf16"):
                    logits = _stacked_logits(layers, params, to_inputs(images[rows, index]).to(params[0].dtype))
                if not checked:  # at the first step (not cross-entropy's raw error): the outputs do not change
                    _check_outputs(logits[0], models[0], top, int(top.labels.max()))
                    checked = True
                logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # bf16's in float32, not f64's
                losses = F.cross_entropy(logits.flatten(0, 1), target.flatten(), reduction="none")
                losses = losses.view(count, -1).mean(1)
                optimizer.zero_grad(set_to_none=True)
                losses.sum().backward()
                optimizer.step()
                loss_sum += losses.detach() * index.shape[1]
                correct += (logits.detach().argmax(-1) == target).sum(1)
                if bar is not None:
                    bar.update()
            for history, loss, right in zip(histories, (loss_sum / n).tolist(), (correct / n).tolist()):
                history["loss"].append(loss)
                history["train_accuracy"].append(right)
        if first_epoch < epochs and stop is not None and stop():  # asked during the last step: saved, as finished
            interrupt([g.get_state() for g in generators], epochs, 0, loss_sum, correct)
        seconds = earlier + time.perf_counter() - start
        if bar is not None:
            bar.close()
        with torch.no_grad():
            for i, model in enumerate(models):
                # (its buffers, which the stacked step reads none of, stay as they are)
                model.to(device).load_state_dict({k: p[i] for k, p in zip(names, params)}, strict=False)
                model.eval()
                histories[i]["seconds"] = seconds
        if save is not None:
            try:
                save(histories)
            except Exception:  # out of memory, a full disk: the trained state is kept, the rerun only saves
                if checkpoint is not None:
                    _save(checkpoint, identity, params, optimizer, [g.get_state() for g in generators], epochs, 0,
                          torch.zeros(count), torch.zeros(count, dtype=torch.long), histories, seconds)
                raise
    if checkpoint is not None:
        regular_file(checkpoint).unlink(missing_ok=True)  # (through a symbolic link, as it was written)
        if save is not None and requested is not None and requested.is_set():  # asked during save: honoured now
            raise TrainingInterrupted(f"stopped once the {count} trained models were saved")
    return histories


def _adam(params: list[Tensor], lr: float) -> torch.optim.Adam:
    """Adam with PyTorch's fused kernel where it has one (CUDA; the CPU from torch 2.4): one pass over the stacked
    weights per step instead of the seven of the multi-tensor Adam, which matters at 135 models (117 million
    weights); it rounds a little differently from the unfused Adam that :func:`train_model` uses."""
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except RuntimeError:  # no fused kernel for this device in this torch
        return torch.optim.Adam(params, lr=lr)


def _save(checkpoint, identity, params, optimizer, generator_states, epoch, step, loss_sum, correct, histories,
          seconds) -> None:
    state = {"identity": identity, "params": [p.detach() for p in params], "optimizer": optimizer.state_dict(),
             "generators": generator_states, "epoch": epoch, "step": step, "loss_sum": loss_sum, "correct": correct,
             "losses": [h["loss"] for h in histories], "accuracies": [h["train_accuracy"] for h in histories],
             "seconds": seconds}
    write_atomically(checkpoint, lambda f: torch.save(state, f))


def _resume(checkpoint, identity, names, params, optimizer, generators, epochs, steps) -> dict | None:
    """Load a saved group state into ``params`` (named ``names``), ``optimizer`` and ``generators``; None when there
    is none. A state of models of another architecture is refused, naming the weights whose shapes differ, as is one
    of models whose weights are of another type."""
    state = saved_training(checkpoint, "train_many")
    if state is None:
        return None
    there = state["identity"] if isinstance(state["identity"], dict) else {}
    identity = recorded(identity, there, ("label_sums", "dtype", "data", "frozen"))  # (saved before they were recorded)
    if there.keys() != identity.keys():  # (told apart setting by setting, every one differed: "models: None there")
        raise ValueError(f"{checkpoint} holds a training state that this version of train_many did not write (another "
                         "rectgrad version's, or train_model's), which it cannot resume; delete it to start over")
    if there != identity:
        what = {"pixel_sums": "other images", "label_sums": "other labels"}
        keys = [key for key, value in identity.items() if there.get(key) != value]
        if {"pixel_sums", "label_sums"} & {*keys}:  # named: the data's checksum then says nothing more
            keys = [key for key in keys if key != "data"]
        differing = "; ".join(what.get(key) or difference(key, there.get(key), identity[key]) for key in keys)
        raise ValueError(f"{checkpoint} holds the state of another group of trainings ({differing}); delete it to "
                         "start over")
    check_place(checkpoint, "train_many", state, epochs, steps, state.get("losses"))
    keys = [*names, *(f"tensor {i}" for i in range(len(names), len(state["params"])))]  # (more saved than here)
    saved_shapes, shapes = ({k: list(p.shape[1:]) for k, p in zip(keys, ps)} for ps in (state["params"], params))
    if saved_shapes != shapes:  # (copy_ failed in PyTorch's words, or zip cut it short)
        raise ValueError(f"{checkpoint} holds the state of a group of models of another architecture "
                         f"({difference('tensors', saved_shapes, shapes)}); delete it to start over")
    with torch.no_grad():
        for p, saved in zip(params, state["params"]):
            p.copy_(saved)
    optimizer.load_state_dict(state["optimizer"])  # moves the moments to the parameters' device
    for g, saved in zip(generators, state["generators"]):
        g.set_state(saved)
    return state


@dataclass(frozen=True)
class Retrainer:
    """The ROAR/KAR training function: a fresh ``new_model(train, seed)`` trained with the paper's protocol,
    scored by its accuracy on ``test``. Picklable, so Ray workers can run it.

    ``retrainer(train, test, seed)`` trains one model (:func:`rectgrad.train.train_model`, fp32);
    ``retrainer.many(jobs, checkpoint=None, save=None)`` trains a list of ``(train, test, seed)`` jobs at once
    (:func:`train_many`, in ``precision``, cuDNN ``deterministic`` or not; stoppable and resumable with a
    ``checkpoint`` path; ``save(accuracies)`` runs before that state is deleted).
    """

    epochs: int = 20
    batch_size: int = 100
    lr: float = 1e-3
    device: str | None = None
    precision: str = "fp32"
    deterministic: bool = True

    def __call__(self, train: ImageDataset, test: ImageDataset, seed: int) -> float:
        model = new_model(train, seed)
        train_model(model, train, epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, seed=seed,
                    device=self._device(), progress=False)
        return evaluate(model, test)

    def many(self, jobs: Sequence[tuple[ImageDataset, ImageDataset, int]], checkpoint=None,
             save: Callable[[list[float]], None] | None = None) -> list[float]:
        models, accuracies = [new_model(train, seed) for train, _, seed in jobs], []

        def score(histories: list[dict]) -> None:  # before the group's state is deleted: then ``save`` them
            accuracies.extend(evaluate(model, test) for model, (_, test, _) in zip(models, jobs))
            if save is not None:
                save(accuracies)

        train_many(models, [train for train, _, _ in jobs], [seed for _, _, seed in jobs], epochs=self.epochs,
                   batch_size=self.batch_size, lr=self.lr, device=self._device(), precision=self.precision,
                   deterministic=self.deterministic, checkpoint=checkpoint, save=score)
        return accuracies

    def _device(self) -> str:
        if self.device is not None:
            return self.device
        return "cuda" if torch.cuda.is_available() else "cpu"
