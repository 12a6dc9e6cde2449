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
import math
import pickle
import re
import signal
import threading
import time
import warnings
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from rectgrad._checks import generator_seed, integer, positive_int
from rectgrad.checkpoint import _is_exported_program, _is_torchscript, one_line, regular_file, write_atomically
from rectgrad.data import ImageDataset, to_inputs
from rectgrad.models import PaperCNN
from rectgrad.progress import progress_bar


#: With a checkpoint, :func:`train_model` saves its state at the end of an epoch when this many seconds have passed
#: since the last save (10 to 15 MB for the paper's CNN: a few tens of milliseconds a save).
SAVE_EVERY = 60.0


def new_model(dataset: ImageDataset, seed: int = 0) -> PaperCNN:
    """The paper's CNN shaped for ``dataset``, initialised from ``seed`` on the CPU (the same weights on every
    machine), then moved to the default device; the global RNGs, CPU and CUDA, are left untouched."""
    _, channels, height, width = dataset.images.shape
    if height != width:
        raise ValueError(f"PaperCNN needs square images, got {height}x{width}")
    seed = generator_seed("seed", seed)  # (numpy integers too; not 5.7, which torch.manual_seed refused as well)
    default_device = torch.empty(0).device  # (torch.get_default_device misses `with torch.device(...)` before 2.8)
    with torch.random.fork_rng(devices=[]), torch.device("cpu"):
        torch.default_generator.manual_seed(seed)  # (torch.manual_seed would reseed the CUDA generators too)
        model = PaperCNN(channels, height, len(dataset.classes))
    return model.to(default_device)


def train_model(model: nn.Module, train: ImageDataset, *, epochs: int = 20, batch_size: int = 100,
                lr: float = 1e-3, seed: int = 0, device=None, progress: bool = True,
                test: ImageDataset | None = None, channels_last: bool = True, checkpoint=None,
                save: Callable[[dict], None] | None = None) -> dict:
    """Train ``model`` in place with Adam on ``train``; return the history.

    ``seed`` fixes the batch order; the initial weights are the caller's (``new_model(train, seed)``
    gives seeded ones), so a seeded model trained with the same seed on the same device is bitwise
    reproducible (cuDNN runs in deterministic mode). ``device`` defaults to the model's device. The model
    comes back in eval mode. History: ``loss`` and ``train_accuracy`` per epoch, ``seconds``, and
    ``test_accuracy`` (None without ``test``). ``channels_last`` trains in that memory format (the
    weights are handed back in the default format). A call that fails before its first step (a model with no output
    for the highest label, or one that fails on the images; a Ctrl-C) leaves the model as it was given: its modes,
    device, memory format, weights, gradients and buffers.

    With a ``checkpoint`` path the training can be stopped and resumed: the first Ctrl-C or SIGTERM saves its state
    there after the current step (or, during the test evaluation, the trained state) and raises
    :class:`TrainingInterrupted` (a second one interrupts at once); the state is also saved at the end of an epoch
    when :data:`SAVE_EVERY` seconds have passed since the last save, so that a crash (``kill -9``, out of memory)
    loses about that much and the epoch in progress, and when the evaluation or ``save`` fails. A later call with the
    same arguments resumes from it, bit for bit on the same device (``seconds`` counts every part of the training).
    ``save(history)`` (writing the model, say) runs under the same signal handling before the state is deleted.
    """
    if len(train) == 0:
        raise ValueError("the training set is empty")
    if test is not None and len(test) == 0:  # (refused before the training: its accuracy would read 0)
        raise ValueError(f"the test set {test.name} is empty: no test accuracy can be measured on it")
    if test is not None and test.images.shape[1:] != train.images.shape[1:]:  # (the evaluation would fail after it)
        raise ValueError(f"the test set's images are {tuple(test.images.shape[1:])} (C, H, W), the training set's "
                         f"{tuple(train.images.shape[1:])}: give test images of the training images' shape")
    # (as ints: a numpy number in the saved state would make it unloadable with weights_only)
    epochs, batch_size = integer("epochs", epochs), integer("batch_size", batch_size)
    seed = generator_seed("seed", seed)
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be positive, got {epochs} and {batch_size}")
    if checkpoint is not None:
        regular_file(checkpoint)  # a folder refused now, not when the state is written
        checkpoint = Path(checkpoint)
    lr = learning_rate(lr)
    _check_trainable(model)
    n, steps, top_label = len(train), -(-len(train) // batch_size), int(train.labels.max())
    identity = None if checkpoint is None else {
        "images": n, "data": fingerprint(train),
        "epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed, "channels_last": bool(channels_last),
        "model": type(model).__qualname__, "tensors": {k: list(v.shape) for k, v in model.state_dict().items()},
        "dtype": _dtypes(model),  # (load_state_dict would convert a float32 state into a float64 model)
        "frozen": [name for name, p in model.named_parameters() if not p.requires_grad]}
    state = _saved_state(checkpoint, identity)  # another training's refused before the model is moved or changed
    if state is not None:
        check_place(checkpoint, "train_model", state, epochs, steps, [state.get("losses")])
    device = torch.device(device) if device is not None else next(model.parameters()).device
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    dtype = input_dtype(model)
    images, labels = train.images.to(device), train.labels.to(device)
    # until the first step is taken, a failure (or Ctrl-C) leaves the model as it was given
    first = _UntilFirstStep(model, loading=state is not None)
    with first:
        if state is not None:
            model.load_state_dict(state["model"])
        model.to(device, memory_format=memory_format).train()
        # in float16 the unfused Adam's eps (1e-8) is 0: a weight whose gradient is 0 becomes 0 / 0 = NaN; the fused
        # Adam (train_many's) computes in float32
        half = any(p.dtype == torch.float16 for p in model.parameters())
        optimizer = torch.optim.Adam(model.parameters(), lr=lr, **({"fused": True} if half else {}))
        generator = torch.Generator().manual_seed(seed)
        history = {"loss": [], "train_accuracy": [], "seconds": 0.0, "test_accuracy": None}
        if state is not None:
            optimizer.load_state_dict(state["optimizer"])
            generator.set_state(state["generator"])
            history["loss"], history["train_accuracy"] = state["losses"], state["accuracies"]
    first_epoch, first_step, earlier = (state["epoch"], state["step"], state["seconds"]) if state else (0, 0, 0.0)

    def save_state(generator_state, epoch, step, loss_sum=None, correct=None):
        state = {"identity": identity, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "generator": generator_state, "epoch": epoch, "step": step,
                 "loss_sum": torch.zeros(()) if loss_sum is None else loss_sum,
                 "correct": torch.zeros((), dtype=torch.long) if correct is None else correct,
                 "losses": history["loss"], "accuracies": history["train_accuracy"],
                 "seconds": history["seconds"] if epoch == epochs else earlier + time.perf_counter() - start}
        write_atomically(checkpoint, lambda f: torch.save(state, f))

    def interrupt(generator_state, epoch, step, loss_sum=None, correct=None):
        save_state(generator_state, epoch, step, loss_sum, correct)
        if bar is not None:
            bar.close()  # (a log's last bar line ends before the message)
        where = "after the last batch" if epoch == epochs else f"at epoch {epoch + 1}/{epochs}, batch {step}/{steps}"
        raise TrainingInterrupted(f"stopped training {where}; its state is saved in {checkpoint}: run again to resume")

    start = last_save = time.perf_counter()
    bar = None
    with (first, cudnn_mode(benchmark=False, deterministic=True),
          stop_requests() if checkpoint is not None else contextlib.nullcontext() as requested):
        bar = progress_bar(epochs * steps, f"train {train.name}", progress, unit="batch",
                           initial=first_epoch * steps + first_step)  # resumed: its rate counts this run's batches
        for epoch in range(first_epoch, epochs):
            at_epoch_start = generator.get_state()
            order = torch.randperm(n, generator=generator).to(device)
            loss_sum = torch.zeros((), device=device)
            correct = torch.zeros((), dtype=torch.long, device=device)
            if state and epoch == first_epoch:
                loss_sum, correct = state["loss_sum"].to(device), state["correct"].to(device)
            for step in range(first_step if epoch == first_epoch else 0, steps):
                if requested is not None and requested.is_set():
                    interrupt(at_epoch_start, epoch, step, loss_sum, correct)
                index = order[step * batch_size:(step + 1) * batch_size]
                target = labels[index]
                logits = model(to_inputs(images[index]).to(dtype).contiguous(memory_format=memory_format))
                _check_outputs(logits, model, train, top_label)
                loss = F.cross_entropy(logits, target)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                first.taken = True
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
            if checkpoint is not None and epoch + 1 < epochs and time.perf_counter() - last_save >= SAVE_EVERY:
                save_state(generator.get_state(), epoch + 1, 0)  # a crash (or kill -9) loses this epoch at most
                last_save = time.perf_counter()

        def stop_if_asked() -> None:  # asked during the last step or the evaluation: the trained state is saved
            if requested is not None and requested.is_set():
                interrupt(generator.get_state(), epochs, 0)

        history["seconds"] = earlier + time.perf_counter() - start  # (the trained state's: without the evaluation)
        stop_if_asked()
        if bar is not None:
            bar.close()
        model.to(memory_format=torch.contiguous_format).eval()
        try:
            if test is not None:
                history["test_accuracy"] = evaluate(model, test, device=device)
            stop_if_asked()
            if save is not None:
                save(history)
        except Exception:  # out of memory, a full disk: the trained state is kept, the rerun evaluates and saves
            if checkpoint is not None:
                save_state(generator.get_state(), epochs, 0)
            raise
    if checkpoint is not None:
        regular_file(checkpoint).unlink(missing_ok=True)  # (through a symbolic link, as it was written)
        if save is not None and requested.is_set():  # asked during save: honoured once everything is saved
            raise TrainingInterrupted("stopped once the trained model was saved")
    return history


def learning_rate(lr) -> float:
    """``lr`` as a float, or a ``ValueError`` unless it is finite and not negative (0 leaves the weights as they are),
    raised before the model is touched: Adam refused NaN and negative ones only once the model was moved and in
    training mode, and trained inf into NaN weights. Shared with train_many."""
    try:
        lr = float(lr)
    except (TypeError, ValueError) as exc:  # (float()'s words named neither lr nor what it takes)
        raise type(exc)(f"lr must be a finite number >= 0, got {lr!r}") from None
    if not math.isfinite(lr) or lr < 0:
        raise ValueError(f"lr must be a finite number >= 0, got {lr}")
    return lr


def _check_trainable(model: nn.Module) -> None:
    """Refuse, before it is moved, a model without parameters to train: the first step would fail in PyTorch's words
    ('element 0 of tensors does not require grad'), or the model's device could not be read (StopIteration)."""
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError(f"the {type(model).__name__} has no parameters to train (none, or all frozen with "
                         "requires_grad=False)")


class _UntilFirstStep:
    """The blocks of :func:`train_model` it guards (``with``, once or more) put ``model`` back as it was when this was
    made if they fail (or are interrupted) before the first optimizer step is taken (``taken``): each module's mode,
    and its parameters (and their gradients) and buffers as they were (the tensors themselves: their device and memory
    format; the buffers' values, which a forward pass in training mode updates, as BatchNorm's running statistics; and
    with ``loading``, the parameters' values too, which loading a saved state overwrites)."""

    def __init__(self, model: nn.Module, loading: bool = False):
        self.taken = False
        self.modes = [(module, module.training) for module in model.modules()]
        self.parameters = [(module, name, p, p.data, p.data.clone() if loading else None, p.grad)
                           for module in model.modules() for name, p in module.named_parameters(recurse=False)]
        self.buffers = [(module, name, b, b.clone()) for module in model.modules()
                        for name, b in module.named_buffers(recurse=False)]

    def __enter__(self):
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if kind is not None and not self.taken:
            self.restore()

    def restore(self) -> None:
        for module, training in self.modes:
            module.training = training
        with torch.no_grad():
            for module, name, parameter, data, values, grad in self.parameters:
                parameter.data = data  # (moved or converted in place, or replaced: model.to does either)
                if values is not None:
                    data.copy_(values)
                parameter.grad = grad
                setattr(module, name, parameter)
            for module, name, buffer, values in self.buffers:
                buffer.copy_(values)
                setattr(module, name, buffer)


def _check_outputs(logits: torch.Tensor, model: nn.Module, train: ImageDataset, top: int) -> None:
    """Refuse a model with no output for ``top``, the highest label of ``train``, before its loss is computed:
    cross-entropy would blame the labels ('Target 3 is out of bounds'; a device-side assert on CUDA, which breaks the
    process's CUDA). Labels, not classes, count: a subset of a dataset keeps the names of classes it has no image of."""
    if logits.ndim == 2 and logits.shape[1] <= top:
        raise ValueError(f"the {type(model).__name__} gives {logits.shape[1]} outputs per image but {train.name} has "
                         f"labels up to {top} ({train.classes[top]}): give the model one output (logit) per class")


def _saved_state(checkpoint, identity: dict | None) -> dict | None:
    """The state a :func:`train_model` saved in ``checkpoint``, None when there is none. The state of another
    training (``identity``) is refused, naming the difference."""
    state = saved_training(checkpoint, "train_model")
    if state is not None and isinstance(state["identity"], dict):
        identity = recorded(identity, state["identity"], ("dtype", "frozen"))  # (a state saved before they were)
    if state is not None and (not isinstance(state["identity"], dict) or state["identity"].keys() != identity.keys()):
        raise ValueError(f"{checkpoint} holds a training state that this version of train_model did not write (another "
                         "rectgrad version's, or train_many's), which it cannot resume; delete it to start over")
    if state is not None and state["identity"] != identity:
        differing = "; ".join(difference(key, state["identity"].get(key), value) for key, value in identity.items()
                              if state["identity"].get(key) != value)
        raise ValueError(f"{checkpoint} holds the state of another training ({differing}); delete it to start over")
    return state


def fingerprint(dataset: ImageDataset) -> int:
    """A checksum of ``dataset``'s images and labels (CRC-32 of their bytes), which a saved training state records to
    tell its data from others. Shared with train_many."""
    return zlib.crc32(dataset.labels.cpu().contiguous().numpy(), zlib.crc32(dataset.images.cpu().contiguous().numpy()))


def check_place(checkpoint, function: str, state: dict, epochs: int, steps: int, losses: list) -> None:
    """Refuse a saved state of ``function`` whose place (its ``epoch`` and ``step``, and ``losses``, the epochs' losses
    it holds: one list per model) a training of ``epochs`` epochs of ``steps`` steps is never at, which rectgrad never
    writes: it would resume into nonsense (no epoch trained, or more). Shared with train_many."""
    epoch, step = state.get("epoch"), state.get("step")
    counts = {len(one) if isinstance(one, list) else None for one in losses} if isinstance(losses, list) else {None}
    if not (type(epoch) is int and type(step) is int and 0 <= epoch <= epochs and 0 <= step < steps
            and (epoch < epochs or step == 0) and counts <= {epoch}):
        raise ValueError(f"{checkpoint} holds the saved state of {_SAVED[function][0]} at epoch {epoch}, step {step} "
                         f"(its losses of {' or '.join(map(str, sorted(counts, key=str)))} epochs), which a training "
                         f"of {epochs} epoch{'s' if epochs != 1 else ''} of {steps} step{'s' if steps != 1 else ''} "
                         "never is (damaged, or edited by hand?); delete it to start over")


def recorded(identity: dict, there: dict, later: tuple[str, ...]) -> dict:
    """``identity`` (a training's settings, as its saved state records them) without the keys of ``later`` that
    ``there`` (a saved state's record) lacks: the settings a state saved before they were recorded compares on, its
    others still counting. Shared with train_many."""
    return {key: value for key, value in identity.items() if key in there or key not in later}


def _dtypes(model: nn.Module) -> str:
    """The types of ``model``'s weights, e.g. ``float32``, or ``features.0.weight float64, ...`` where they differ.
    Shared with train_many."""
    return per_weight(model, lambda p: str(p.dtype).removeprefix("torch."))


def per_weight(model: nn.Module, what: Callable[[torch.Tensor], str]) -> str:
    """``what`` of ``model``'s weights: the one value they share, or each weight's named where they differ. Shared
    with train_many."""
    named = {name: what(p) for name, p in model.named_parameters()}
    if len(set(named.values())) == 1:
        return next(iter(named.values()))
    return ", ".join(f"{name} {value}" for name, value in named.items())


def difference(key: str, there, here) -> str:
    """How the setting ``key`` of a saved training (``there``) differs from this one's (``here``): for the weights'
    shapes, only the tensors that differ (the whole lists run to hundreds of characters). Shared with train_many."""
    if key == "data":
        return "other images or labels (another dataset, patch or image size?)"
    if key == "frozen" and isinstance(there, list):
        return f"frozen weights: {', '.join(there) or 'none'} there, {', '.join(here) or 'none'} here"
    if key == "tensors" and isinstance(there, dict):
        return "weights' shapes: " + ", ".join(f"{name} {there.get(name)} there, {here.get(name)} here"
                                               for name in {**there, **here} if there.get(name) != here.get(name))
    return f"{key}: {there!r} there, {here!r} here"


class TrainingInterrupted(KeyboardInterrupt):
    """A training stopped by Ctrl-C or SIGTERM after saving its state (:func:`train_model`,
    :func:`rectgrad.train_many.train_many` with a ``checkpoint``): rerun to resume."""


@contextlib.contextmanager
def stop_requests() -> Iterator[threading.Event]:
    """An event set by the first Ctrl-C (SIGINT) or SIGTERM while the block runs; a second one interrupts at once.
    Signal handlers live in the main thread only: elsewhere the event is never set."""
    requested = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield requested
        return

    def handler(signum, frame):
        if requested.is_set():
            raise KeyboardInterrupt
        requested.set()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield requested
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


@contextlib.contextmanager
def cudnn_mode(*, benchmark: bool, deterministic: bool) -> Iterator[None]:
    """cuDNN on, in the given benchmark and deterministic modes, while the block runs; restored after. Its other
    settings stay the user's: ``torch.backends.cudnn.flags`` also resets TF32 (``allow_tf32``) to on and the
    benchmark limit to its default."""
    cudnn = torch.backends.cudnn
    saved = cudnn.enabled, cudnn.benchmark, cudnn.deterministic
    cudnn.enabled, cudnn.benchmark, cudnn.deterministic = True, benchmark, deterministic
    try:
        yield
    finally:
        cudnn.enabled, cudnn.benchmark, cudnn.deterministic = saved


_SAVED = {"train_model": ("a train_model training", "its training"),
          "train_many": ("a train_many group", "its group of trainings")}


def saved_training(checkpoint, function: str, resuming: bool = True) -> dict | None:
    """The state an interrupted ``function`` (train_model, train_many) saved in ``checkpoint``; None when there is none
    or it is corrupt (damaged outside rectgrad: writes are atomic), with a warning when ``resuming``: the training
    starts over and overwrites it."""
    if checkpoint is None or not Path(checkpoint).is_file():
        return None
    saved_by, trainings = _SAVED[function]
    Path(checkpoint).open("rb").close()  # unreadable: an error of its own, not a corrupt state to start over from
    # a model file of the user's, which torch.load refuses: no damage to start over from (and delete when done)
    kind = ("a TorchScript model" if _is_torchscript(Path(checkpoint))
            else "a torch.export-ed program" if _is_exported_program(Path(checkpoint)) else None)
    if kind is not None:
        raise ValueError(f"{checkpoint} is {kind}, not the saved state of {saved_by}: give another checkpoint path (it "
                         "would be overwritten) or delete it")
    try:
        state = torch.load(checkpoint, map_location="cpu", mmap=not resuming, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - damaged or foreign bytes fail in many ways (KeyError, struct.error, ...)
        # a whole torch file of objects weights_only refuses (a model saved whole, another library's checkpoint) is
        # no damage, and its own: it is not started over and then deleted (torch >= 2.4 names a "GLOBAL", 2.3 a class)
        held = re.search(r"(?:GLOBAL|Unsupported class) ([\w.]+)", str(exc))
        if isinstance(exc, pickle.UnpicklingError) and held:
            raise ValueError(f"{checkpoint} is a torch file but not the saved state of {saved_by} (it holds a "
                             f"{held[1]}): give another checkpoint path (it would be overwritten) or delete "
                             "it") from None
        if resuming:
            warnings.warn(f"{checkpoint} is corrupt ({one_line(exc)}): {trainings} starts over", RuntimeWarning,
                          stacklevel=3)
        return None
    if not isinstance(state, dict) or not {"identity", "seconds"} <= state.keys():
        raise ValueError(f"{checkpoint} is a torch file but not the saved state of {saved_by}: give another "
                         "checkpoint path (it would be overwritten) or delete it")
    return state


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


def model_weight(model: nn.Module, default: torch.Tensor) -> torch.Tensor:
    """The model's first floating parameter (or buffer), whose device and dtype its inputs take; ``default`` for a
    model without either."""
    tensors = (t for t in (*model.parameters(), *model.buffers()) if t.is_floating_point())
    return next(tensors, default)


def input_dtype(model: nn.Module) -> torch.dtype:
    """The floating type of ``model``'s weights (:func:`model_weight`; float32 where it has none): the images are fed
    in it, as a float64 or bfloat16 model refuses float32 inputs ('mat1 and mat2 must have the same dtype')."""
    return model_weight(model, torch.empty(0)).dtype


@torch.no_grad()
def predict_logits(model: nn.Module, inputs: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Logits of float ``inputs`` computed in batches (no gradient), on the inputs' device."""
    batch_size = positive_int("batch_size", batch_size)
    return torch.cat([model(inputs[i:i + batch_size]) for i in range(0, len(inputs), batch_size)])


@torch.no_grad()
def evaluate(model: nn.Module, dataset: ImageDataset, batch_size: int = 1000, device=None) -> float:
    """Accuracy of ``model`` (put in eval mode) on ``dataset``; ``device`` defaults to the model's."""
    batch_size = positive_int("batch_size", batch_size)  # (a negative one made no batch: an accuracy of 0)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.to(device).eval()
    dtype = input_dtype(model)
    correct = torch.zeros((), dtype=torch.long, device=device)
    for i in range(0, len(dataset), batch_size):
        logits = model(dataset.inputs(slice(i, i + batch_size), device=device).to(dtype))
        correct += (logits.argmax(1) == dataset.labels[i:i + batch_size].to(device)).sum()
    return correct.item() / max(len(dataset), 1)
