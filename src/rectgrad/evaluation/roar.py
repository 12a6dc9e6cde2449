"""ROAR and KAR (Hooker et al., 2018; paper Sec. 5.3, Fig. 9, Table 1): remove (or keep) the pixels an
attribution ranks highest, retrain from scratch, and follow the test accuracy.

Protocol (the paper and its reference code): the pixels of each image are ranked by its channel-summed
attribution (RectGrad by its positive part, the baselines signed) plus N(0, 1e-4) tie-breaking noise (an absolute
standard deviation, ``tie_noise``);
ROAR replaces the top ``p`` of the pixels, KAR keeps them and replaces the rest, with the per-channel mean
of the training images; the train and the test set are both modified, with attributions of the model
trained on clean data; a model is retrained from scratch ``repeats`` times per (method, p). The random
baseline replaces each pixel independently with probability ``p`` (ROAR) or ``1 - p`` (KAR).
"""
from __future__ import annotations

import gc
import hashlib
import importlib.util
import inspect
import json
import math
import os
import signal
import socket
import sys
import threading
import time
import warnings
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from itertools import islice
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from rectgrad._checks import describe, flag, install_hint, integer, positive_int, real
from rectgrad._checks import fractions as check_fractions
from rectgrad.checkpoint import write_text_atomically
from rectgrad.data import ImageDataset, checksum
from rectgrad.evaluation.store import ResultStore, corrupt, read_json
from rectgrad.metrics import (TIE_NOISE, channel_mean, check_tie_noise, kar_aoc, pixel_count, random_removal_mask,
                              rank_pixels, ranked_mask, removal_mask, replace_pixels, roar_auc)
from rectgrad.progress import progress_bar
from rectgrad.train_many import checkpoint_seconds

FRACTIONS = (0.1, 0.3, 0.5, 0.7, 0.9)
#: The file of a store that records the arguments of :func:`roar_kar` its results were made with.
ARGUMENTS = "roar-kar.json"

#: ``train_fn(train, test, seed) -> test accuracy``: trains a fresh model on ``train`` (initial weights and
#: batch order from ``seed``) and scores it on ``test``. It may offer ``.many([(train, test, seed), ...])``
#: to train several at once, ``.many(jobs, checkpoint=path)`` to stop and resume such a group, and
#: ``.many(jobs, checkpoint=path, save=fn)`` to hand ``fn`` the accuracies before deleting that state
#: (:class:`rectgrad.train_many.Retrainer`).
TrainFn = Callable[[ImageDataset, ImageDataset, int], float]


def occlude_dataset(dataset: ImageDataset, maps: Tensor | None, fraction: float, *, keep: bool,
                    fill: Sequence[float] | Tensor, generator: torch.Generator | None = None,
                    tie_noise: float = TIE_NOISE) -> ImageDataset:
    """The ROAR (``keep=False``) or KAR (``keep=True``) copy of ``dataset`` for one fraction.

    With ``maps`` ``(N, C, H, W)`` exactly ``round(fraction * H * W)`` top-ranked pixels per image are
    replaced (ROAR) or kept (KAR) (:func:`rectgrad.metrics.removal_mask`, ranked with ``tie_noise``); with
    ``maps=None`` pixels are replaced at random (:func:`rectgrad.metrics.random_removal_mask`). Replaced pixels
    take ``fill``. The work happens on the images' device; the noise comes from ``generator`` wherever it lives (a
    CPU generator gives the same datasets on every device).
    """
    n, _, h, w = dataset.images.shape
    device = dataset.images.device
    pixel_count(fraction, (h, w))
    if maps is None:
        mask = random_removal_mask((n, h, w), fraction, keep=keep, generator=generator, device=device)
    else:
        _check_maps(maps, dataset, "maps")
        mask = removal_mask(maps.to(device), fraction, keep=keep, tie_noise=tie_noise, generator=generator)
    return dataset.with_images(replace_pixels(dataset.images, mask, fill))


@dataclass
class RoarKarResult:
    """Test accuracies ``accuracies[method]`` of shape ``(repeats, len(fractions))`` for ROAR or KAR."""

    keep: bool
    fractions: tuple[float, ...]
    accuracies: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def measure(self) -> str:
        return "KAR AOC" if self.keep else "ROAR AUC"

    def _area(self, curve) -> float:
        if len(self.fractions) < 2:
            raise ValueError(f"a {self.measure} needs at least two fractions, this result has {list(self.fractions)}: "
                             "compare the accuracies themselves (result.accuracies[method])")
        return (kar_aoc if self.keep else roar_auc)(self.fractions, curve)

    def _curves(self, method: str) -> np.ndarray:
        """``accuracies[method]`` (an array or nested lists) as a float array ``(repeats, len(fractions))``."""
        if method not in self.accuracies:
            raise KeyError(f"this {self.measure} result has no method {method!r}, only {list(self.accuracies)}")
        curves = np.asarray(self.accuracies[method], dtype=float)
        if curves.ndim != 2 or curves.shape[1] != len(self.fractions):
            raise ValueError(f"accuracies[{method!r}] must be one row per repeat of {len(self.fractions)} accuracies "
                             f"(one per fraction), got shape {curves.shape}")
        return curves

    def score(self, method: str) -> float:
        """ROAR AUC or KAR AOC (Table 1, lower is better) of the curve averaged over the repeats."""
        return self._area(self._curves(method).mean(0))

    def score_std(self, method: str) -> float:
        """Standard deviation over the repeats of each repeat's own AUC / AOC (0 for one repeat)."""
        scores = [self._area(row) for row in self._curves(method)]
        return float(np.std(scores, ddof=1)) if len(scores) > 1 else 0.0

    def accuracy_std(self, method: str) -> np.ndarray | None:
        """Standard deviation over the repeats of the accuracy at each fraction (Fig. 9's band; ddof 1, as
        :meth:`score_std`), None for one repeat."""
        curves = self._curves(method)
        return curves.std(0, ddof=1) if len(curves) > 1 else None


@dataclass
class Job:
    """One training of the sweep."""

    key: str
    train: ImageDataset
    test: ImageDataset
    seed: int


def roar_kar(train_set: ImageDataset, test_set: ImageDataset, attributions: Mapping[str, tuple[Tensor, Tensor] | None],
             train_fn: TrainFn, fractions: Sequence[float] = FRACTIONS, repeats: int = 3, keep: bool = False, *,
             store: ResultStore | None = None, backend=None, seed: int = 0, tie_noise: float = TIE_NOISE,
             device=None, progress: bool = True) -> RoarKarResult:
    """Run ROAR (``keep=False``) or KAR (``keep=True``) for every method of ``attributions``.

    ``attributions[method]`` is ``(train maps, test maps)``, each ``(N, C, H, W)`` and ranked by its channel
    sum (pass RectGrad's positive part, the baselines signed), or ``None`` for the random baseline. Each
    (method, fraction) dataset pair is built once and trained on ``repeats`` times with seeds ``0 ..
    repeats - 1`` (initial weights and batch order) by ``train_fn``; the tie-breaking noise and the random
    masks are seeded from ``seed``, so reruns rebuild identical datasets. The tie-breaking noise is Gaussian, of
    absolute standard deviation ``tie_noise`` (:func:`rectgrad.metrics.rank_pixels`): a method whose maps' median
    nonzero |score| is under 10 x ``tie_noise`` gets a warning, as the noise then reorders distinct pixels too;
    ``tie_noise=0`` breaks ties by pixel index. With a ``store`` each finished training is saved at once and
    skipped when run again; the store records ``seed``, ``tie_noise`` and a checksum of the images and labels
    (:data:`ARGUMENTS`) and refuses other ones, but not other maps or another ``train_fn``: its configuration must
    name them. ``backend`` runs the trainings (:class:`LocalBackend` by default, or
    :class:`RayBackend`). The modified datasets are made, and handed to ``train_fn``, on ``device`` (default: the
    CPU), e.g. the GPU that trains them.
    """
    if not isinstance(attributions, Mapping):
        raise TypeError(f"attributions must be a dict {{method name: (train maps, test maps), or None for the random "
                        f"baseline}}, got {type(attributions).__name__}")
    _check_datasets(train_set, test_set)
    fractions = check_fractions(fractions)
    repeats = positive_int("repeats", repeats)
    keep = flag("keep", keep)
    seed = integer("seed", seed)  # (a numpy integer seeds the noise as the int does, and is recorded in the store)
    tie_noise = check_tie_noise(tie_noise)
    for fraction in fractions:
        pixel_count(fraction, tuple(train_set.images.shape[-2:]))
    for method, pair in attributions.items():
        _check_method_name(method)
        if pair is not None:
            if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                raise ValueError(f"attributions[{method!r}] must be a (train maps, test maps) pair or None")
            for maps, dataset in zip(pair, (train_set, test_set)):
                _check_maps(maps, dataset, f"attributions[{method!r}]")
    if store is not None:
        store.bind(ARGUMENTS, {"seed": seed, "tie_noise": tie_noise, "data": checksum(train_set, test_set)},
                   "ROAR/KAR results")
    mode = "kar" if keep else "roar"
    keys = {(m, f, r): result_name(keep, m, f, r) for m in attributions for f in fractions for r in range(repeats)}
    results = {key: read_accuracy(store.path(key)) for key in keys.values() if store is not None and store.has(key)}
    fill = channel_mean(train_set.images)
    device = torch.device(device or "cpu")
    sets = [replace(d, images=d.images.to(device), labels=d.labels.to(device)) for d in (train_set, test_set)]

    todo = {(m, f): [r for r in range(repeats) if keys[m, f, r] not in results]  # the repeats left to train
            for m in attributions for f in fractions}
    _warn_if_noise_reorders({method: pair for method, pair in attributions.items()
                             if pair is not None and any(todo[method, f] for f in fractions)}, tie_noise)

    def jobs() -> Iterator[Job]:
        for method, pair in attributions.items():
            orders = None  # the pixel rankings of the train and test maps, shared by the fractions (nested sets)
            for fraction in fractions:
                if not todo[method, fraction]:
                    continue
                if pair is not None and orders is None:
                    maps = [m.to(device) for m in pair]
                    orders = [rank_pixels(m, tie_noise=tie_noise, generator=_generator(seed, method, i))
                              for i, m in enumerate(maps)]
                train, test = (dataset.with_images(replace_pixels(dataset.images, mask, fill)) for dataset, mask in
                               zip(sets, _masks(sets, orders, fraction, keep, (seed, method, mode, fraction))))
                for r in todo[method, fraction]:
                    yield Job(keys[method, fraction, r], train, test, r)

    bar = progress_bar(len(keys), f"{mode.upper()} trainings", progress, unit="model", initial=len(results))

    def done(job: Job, accuracy: float, seconds: float) -> None:
        accuracy = _as_number(accuracy)
        if not (real(accuracy) or isinstance(accuracy, Decimal)) or not 0.0 <= float(accuracy) <= 1.0:
            raise ValueError(f"train_fn returned {accuracy!r} for {job.key[:-len('.json')]}: it must return the test "
                             "accuracy as a fraction in [0, 1] (not a percentage); nothing was saved for it")
        results[job.key] = float(accuracy)
        if store is not None:  # its time first: a rerun skips a saved result and would never time it
            store.save_seconds(job.key[:-len(".json")], seconds)
            store.save_json(job.key, {"accuracy": float(accuracy), "seed": job.seed})
        if bar is not None:
            bar.set_postfix_str(f"{job.key.split('/')[1][:-5]}: {float(accuracy):.3f}", refresh=False)
            bar.update()

    try:
        (backend or LocalBackend()).run(jobs(), train_fn, done,
                                        checkpoints=None if store is None else store.path(f"{mode}/unfinished"))
    finally:
        if bar is not None:
            bar.close()
    accuracies = {m: np.array([[results[keys[m, f, r]] for f in fractions] for r in range(repeats)])
                  for m in attributions}
    return RoarKarResult(keep, fractions, accuracies)


def _as_number(accuracy):
    """A training's result as a number: a one-element tensor or numpy array gives the value it holds (a 0-d array
    is what ``(correct / total).numpy()`` returns); anything else is returned as it is, to be checked."""
    if isinstance(accuracy, (Tensor, np.ndarray)) and math.prod(accuracy.shape) == 1:
        return accuracy.item()
    return accuracy


def _check_datasets(train_set: ImageDataset, test_set: ImageDataset) -> None:
    """Two non-empty image datasets of one image space (channels and size) and, where both name them, one list of
    classes."""
    for name, dataset in (("train_set", train_set), ("test_set", test_set)):
        if not isinstance(dataset, ImageDataset):
            raise TypeError(f"{name} must be a rectgrad.data.ImageDataset (uint8 images (N, C, H, W), labels, class "
                            f"names), got {type(dataset).__name__}: wrap your tensors as ImageDataset(images, labels, "
                            "classes, name)")
        if len(dataset) == 0:
            raise ValueError(f"{name} ({dataset.name}) holds no images")
    if train_set.images.shape[1:] != test_set.images.shape[1:]:
        raise ValueError(f"the train and test images must have the same channels and size (C, H, W), got "
                         f"{tuple(train_set.images.shape[1:])} and {tuple(test_set.images.shape[1:])}")
    if train_set.classes and test_set.classes and train_set.classes != test_set.classes:
        raise ValueError(f"the train and test sets must have the same classes, in the same order (a label names one "
                         f"class in both), got {train_set.classes!r} and {test_set.classes!r}")


def _check_method_name(method) -> None:
    """A method's name names its result files (:func:`result_name`): a non-empty string that is no path."""
    if not isinstance(method, str) or not method or any(c in method for c in "/\\\0"):
        raise ValueError(f"method name {method!r} cannot name its result files (roar/<method>-p<fraction>-r<repeat>"
                         ".json): give a non-empty string without '/', '\\' or NUL")


def _check_maps(maps, dataset: ImageDataset, name: str) -> None:
    """Refuse, before any training, maps that do not fit the images or cannot be ranked."""
    n, _, h, w = dataset.images.shape
    if not isinstance(maps, Tensor) or maps.dim() != 4 or maps.shape[0] != n or tuple(maps.shape[2:]) != (h, w):
        raise ValueError(f"{name} ({describe(maps)}) do not match the {len(dataset)} images of size {h}x{w}: "
                         f"expected a tensor ({n}, C, {h}, {w})")
    if not maps.is_floating_point():
        raise ValueError(f"{name} must be floating point maps, got {maps.dtype}")
    if not bool(torch.isfinite(maps).all()):
        raise ValueError(f"{name} hold NaN or Inf values: they cannot be ranked")


def _warn_if_noise_reorders(attributions: Mapping[str, tuple[Tensor, Tensor]], tie_noise: float) -> None:
    """One warning naming the methods whose maps (train and test) are small for the tie-breaking noise: the median
    of their nonzero |ranking scores| (channel sums) is under 10 x ``tie_noise``, so the noise reorders distinct
    pixels, not only ties, and pulls the ranking toward random."""
    if tie_noise == 0:
        return
    small = []
    for method, maps in attributions.items():
        scores = torch.cat([m.float().sum(1).flatten() for m in maps]).abs()
        nonzero = scores[scores != 0]
        median = nonzero.median().item() if len(nonzero) else float("inf")  # all ties: what the noise is for
        if median < 10 * tie_noise:
            small.append(f"{method!r} ({median:.2g})")
    if small:
        warnings.warn(f"the median nonzero |ranking score| is under 10 x the tie-breaking noise's standard deviation "
                      f"{tie_noise:g} for attributions {', '.join(small)}: the noise will reorder distinct pixels, "
                      "not only ties; pass tie_noise=0 (rectgrad reproduce --tie-noise 0) for ties broken by pixel "
                      "index, or rescale the maps", RuntimeWarning, stacklevel=3)


def result_name(keep: bool, method: str, fraction: float, repeat: int) -> str:
    """The store's file for one training, e.g. ``roar/rectgrad-p0.1-r0.json`` (the fraction exactly, as ``repr``)."""
    return f"{'kar' if keep else 'roar'}/{method}-p{float(fraction)!r}-r{repeat}.json"


def read_accuracy(path: Path) -> float:
    """The test accuracy a saved result (:func:`result_name`) holds; one that is no fraction in [0, 1] (NaN, a
    percentage written by hand or another tool) makes the file corrupt, named in the error."""
    accuracy = read_json(path, numbers=("accuracy",))["accuracy"]
    if not 0.0 <= accuracy <= 1.0:
        raise corrupt(path, f"accuracy {accuracy!r}, not a fraction in [0, 1]")
    return float(accuracy)


def _masks(sets: list[ImageDataset], orders: list[Tensor] | None, fraction: float, keep: bool,
           noise: tuple) -> Iterator[Tensor]:
    """The train and test masks of one fraction: from the rankings, or at random (seeded by ``noise``)."""
    for i, dataset in enumerate(sets):
        n, _, h, w = dataset.images.shape
        if orders is None:
            yield random_removal_mask((n, h, w), fraction, keep=keep, generator=_generator(*noise, i),
                                      device=dataset.images.device)
        else:
            yield ranked_mask(orders[i], fraction, (h, w), keep=keep)


def _generator(*parts) -> torch.Generator:
    """A CPU generator seeded from ``parts`` (the same numbers whatever device trains). The ranking noise depends on
    (seed, method, split) only, so the pixel sets are nested across fractions and shared by ROAR and KAR; the random
    masks also depend on (mode, fraction)."""
    return torch.Generator().manual_seed(zlib.crc32(repr(parts).encode()))


class LocalBackend:
    """Runs the trainings in this process, one after the other or ``group`` at a time when ``train_fn``
    has a ``many`` method (several models trained at once on one device, :mod:`rectgrad.train_many`); a group
    that runs out of GPU memory is trained in halves, and later groups are made that small, with a warning.

    A backend's ``run(jobs, train_fn, done, checkpoints=None)`` calls ``done(job, accuracy, seconds)`` as each
    training finishes (``seconds``: its compute time; models trained at once share their group's time equally).
    With a ``checkpoints`` folder, a group interrupted by Ctrl-C or SIGTERM saves its state there (when
    ``train_fn.many`` takes a ``checkpoint``) and the same group resumes from it when run again, whatever
    ``group`` is then: a saved group is formed again as it was (its trainings are listed beside its state). When
    ``many`` also takes a ``save``, the group's results are recorded before its state is deleted."""

    def __init__(self, group: int = 1):
        self.group = positive_int("group", group)  # (2.5 would never fill a chunk: all trainings in one group)

    def run(self, jobs: Iterable[Job], train_fn: TrainFn, done: Callable[[Job, float, float], None],
            checkpoints=None) -> None:
        many = getattr(train_fn, "many", None)
        if checkpoints is not None and not (many and "checkpoint" in inspect.signature(many).parameters):
            checkpoints = None
        saved = _saved_groups(checkpoints)
        if many and (self.group > 1 or saved):
            chunks = self._chunks(jobs, saved)
            while True:
                start = time.perf_counter()  # making the jobs' datasets counts too
                chunk = next(chunks, None)
                if chunk is None:
                    break
                self._train_group(chunk, train_fn, done, checkpoints, start)
            for keys in saved:  # a saved group not formed again (some of its trainings no longer asked for)
                state = _group_checkpoint(checkpoints, keys)
                if state.is_file():
                    warnings.warn(f"{state} held a group of trainings not all of which this run asks for: they "
                                  "were trained anew, and it is deleted", RuntimeWarning, stacklevel=2)
                    state.unlink()
                    state.with_suffix(".json").unlink(missing_ok=True)
        else:
            start = time.perf_counter()
            for job in jobs:
                accuracy = train_fn(job.train, job.test, job.seed)
                done(job, accuracy, time.perf_counter() - start)
                start = time.perf_counter()

    def _chunks(self, jobs: Iterable[Job], saved: list[list[str]]) -> Iterator[list[Job]]:
        """The jobs ``group`` at a time, except that a group saved unfinished (``saved``: each one's keys) is formed
        again as it was, whatever jobs come between its own (those of methods added since); a job of a saved group
        ends the chunk being filled, so that the chunks around it are those of the run that saved it."""
        group_of = {key: tuple(keys) for keys in saved for key in keys}
        waiting: dict[tuple[str, ...], dict[str, Job]] = {}
        chunk: list[Job] = []
        for job in jobs:
            keys = group_of.get(job.key)
            if keys is None:
                chunk.append(job)
                if len(chunk) == self.group:
                    yield chunk
                    chunk = []
                continue
            if chunk:
                yield chunk
                chunk = []
            members = waiting.setdefault(keys, {})
            members[job.key] = job
            if len(members) == len(keys):
                yield [members[key] for key in keys]
                del waiting[keys]
        if chunk:
            yield chunk
        for keys, members in waiting.items():  # a saved group some of whose trainings are done after all
            yield [members[key] for key in keys if key in members]

    def _train_group(self, chunk: list[Job], train_fn: TrainFn, done: Callable[[Job, float, float], None],
                     checkpoints, start: float) -> None:
        """Train ``chunk`` at once; out of GPU memory, in two halves (and ``group`` halves for the rest)."""
        args, earlier, listing, recorded = [(j.train, j.test, j.seed) for j in chunk], 0.0, None, []

        def record(accuracies) -> None:
            accuracies = list(accuracies)
            if len(accuracies) != len(chunk):
                raise ValueError(f"train_fn.many returned {len(accuracies)} accuracies for {len(chunk)} trainings")
            seconds = (earlier + time.perf_counter() - start) / len(chunk)
            for job, accuracy in zip(chunk, accuracies):
                done(job, accuracy, seconds)
            recorded.append(True)
            if listing is not None:  # (its state goes next)
                listing.unlink(missing_ok=True)

        try:
            if checkpoints is not None:  # one file per group, named by its trainings, which a file beside it lists
                checkpoint = _group_checkpoint(checkpoints, [j.key for j in chunk])
                listing = checkpoint.with_suffix(".json")
                if not listing.is_file():
                    write_text_atomically(listing, json.dumps([j.key for j in chunk]))
                earlier = checkpoint_seconds(checkpoint)
                saving = {"save": record} if "save" in inspect.signature(train_fn.many).parameters else {}
                accuracies = train_fn.many(args, checkpoint=checkpoint, **saving)  # saved before its state is deleted
            else:
                accuracies = train_fn.many(args)
        except torch.cuda.OutOfMemoryError:
            if len(chunk) == 1:
                raise
        else:
            if not recorded:
                record(accuracies)
            return
        # Out of memory. Past the except clause, whose error held the failed group's tensors (its traceback's frames)
        gc.collect()
        torch.cuda.empty_cache()
        if listing is not None and not listing.with_suffix(".pt").is_file():
            listing.unlink(missing_ok=True)  # nothing of this group was saved: the halves are groups of their own
        self.group = half = -(-len(chunk) // 2)
        warnings.warn(f"out of GPU memory training {len(chunk)} models at once: {half} at a time from now on "
                      "(set --group to choose)", RuntimeWarning, stacklevel=2)
        for part in (chunk[:half], chunk[half:]):
            self._train_group(part, train_fn, done, checkpoints, time.perf_counter())


def _group_checkpoint(checkpoints, keys: list[str]) -> Path:
    """Where the state of the group of trainings ``keys`` is saved (its listing beside it, as .json)."""
    return Path(checkpoints) / (hashlib.sha1("\n".join(keys).encode()).hexdigest()[:16] + ".pt")


def _saved_groups(checkpoints) -> list[list[str]]:
    """The unfinished groups saved in ``checkpoints``: the keys of each one's trainings."""
    saved = []
    for listing in sorted(Path(checkpoints).glob("*.json")) if checkpoints is not None else ():
        if listing.with_suffix(".pt").is_file():
            try:
                keys = json.loads(listing.read_text())
            except (ValueError, UnicodeDecodeError):
                continue  # the group then starts over, as with a damaged state
            if isinstance(keys, list) and keys and all(isinstance(k, str) for k in keys):
                saved.append(keys)
    return saved


class RayBackend:
    """Runs each training as a Ray task (``num_cpus`` CPUs and ``num_gpus`` GPUs, possibly a fraction, each)
    on the cluster at ``address`` (``None``: the running Ray instance, or a new local one). Results come back
    to this process as they finish, so they are saved one by one; at most ``max_in_flight`` tasks (default:
    twice the cluster's CPUs) are pending, which bounds the datasets held in Ray's object store. A task runs
    torch on ``int(num_cpus)`` threads (at least one): its results equal the local backend's run on as many
    threads; on others they differ by float rounding, so resume a sweep with the backend and threads it began
    with. An ``address`` where nothing listens is a ``ConnectionError`` at once (Ray would retry it for minutes), as
    is one where something else than Ray listens (no gRPC server: Ray would wait on it for ever). Groups of trainings
    a local run saved unfinished in ``checkpoints`` cannot be resumed one model per task: a warning says so, their
    trainings start over and their states are deleted once the sweep is done."""

    def __init__(self, address: str | None = None, num_cpus: float = 1, num_gpus: float = 0,
                 max_in_flight: int | None = None):
        if not (real(num_cpus) and 0 < num_cpus < math.inf and real(num_gpus) and 0 <= num_gpus < math.inf):
            raise ValueError(f"num_cpus must be > 0 and num_gpus >= 0, both finite, got {num_cpus!r} and {num_gpus!r}")
        if any(0 < share < 1e-4 for share in (num_cpus, num_gpus)):  # (Ray refuses it only as the tasks start)
            raise ValueError("num_cpus and num_gpus: Ray counts them in steps of 0.0001 and refuses a smaller share: "
                             f"give at least 0.0001 (or num_gpus=0), got {num_cpus!r} and {num_gpus!r}")
        if max_in_flight is not None:
            max_in_flight = positive_int("max_in_flight", max_in_flight)
        if importlib.util.find_spec("ray") is None:  # before any work, not when the sweep reaches the trainings
            raise ModuleNotFoundError(f"the Ray backend needs Ray: {install_hint('ray')}, or use the local backend",
                                      name="ray")
        _check_reachable(address)
        self.address, self.num_cpus, self.num_gpus, self.max_in_flight = address, num_cpus, num_gpus, max_in_flight

    def run(self, jobs: Iterable[Job], train_fn: TrainFn, done: Callable[[Job, float, float], None],
            checkpoints=None) -> None:  # one model per task: nothing to checkpoint (a local run's states: deleted)
        import ray

        saved = _saved_groups(checkpoints)  # a local run's: one model per task cannot resume them
        if saved:
            warnings.warn(f"{len(saved)} group{'s' if len(saved) > 1 else ''} of trainings a local run saved "
                          f"unfinished in {checkpoints} {'are' if len(saved) > 1 else 'is'} not resumed on Ray (one "
                          "model per task): the trainings of them this run asks for start over, and the saved states "
                          "are deleted once it is done (stop it and rerun with the local backend to resume them)",
                          RuntimeWarning, stacklevel=2)
        started = not ray.is_initialized()
        handlers = {stop: signal.getsignal(stop) for stop in (signal.SIGINT, signal.SIGTERM)}
        if started:  # (Ray sets its own SIGTERM handler and leaves it after shutdown)
            ray.init(address=self.address, include_dashboard=False, log_to_driver=False)
        pending, last = {}, None
        try:  # from here on a Ray instance started here is shut down whatever happens
            self._check_resources(ray.cluster_resources(), started)
            task = ray.remote(num_cpus=self.num_cpus, num_gpus=self.num_gpus)(_train_task)
            limit = self.max_in_flight or max(2, 2 * int(ray.cluster_resources().get("CPU", 1)))
            function = ray.put(train_fn)
            threads = max(1, int(self.num_cpus))
            iterator = iter(jobs)
            while True:
                for job in islice(iterator, max(0, limit - len(pending))):
                    if last is None or last[0] is not job.train or last[1] is not job.test:
                        # the repeats of one (method, fraction) share one pair of datasets
                        last = (job.train, job.test, ray.put(job.train), ray.put(job.test))
                    pending[task.remote(function, last[2], last[3], job.seed, threads)] = job
                if not pending:
                    break
                ready, _ = ray.wait(list(pending), num_returns=1)
                job = pending.pop(ready[0])
                try:
                    result = ray.get(ready[0])
                except ray.exceptions.WorkerCrashedError as error:
                    raise RuntimeError(f"the Ray worker training {job.key[:-len('.json')]} died, on every retry: "
                                       "train_fn exited (sys.exit, os._exit) or the process crashed; Ray's "
                                       "python-core-worker-*.log files say why") from error
                done(job, *result)
            for keys in saved:  # every training asked for is done: what they held is stale
                state = _group_checkpoint(checkpoints, keys)
                state.unlink(missing_ok=True)
                state.with_suffix(".json").unlink(missing_ok=True)
        finally:
            for ref in pending:
                ray.cancel(ref)
            if started:
                ray.shutdown()
                if threading.current_thread() is threading.main_thread():  # (only it may set handlers)
                    for stop, handler in handlers.items():
                        if handler is not None:  # (None: set outside Python, cannot be set back)
                            signal.signal(stop, handler)

    def check_local_instance(self) -> None:
        """Refuse before any work what :meth:`run` would refuse once the sweep reaches it, where Ray is to start a
        local instance (no ``address`` nor ``$RAY_ADDRESS``, no cluster of ``ray start`` recorded on this machine):
        tasks asking for more CPUs or GPUs than this machine has. A cluster's resources are checked when reached."""
        import ray

        local = self.address == "local" or (self.address is None and not os.environ.get("RAY_ADDRESS")
                                            and _ray_start_address() is None)
        if not local or ray.is_initialized():  # (run takes a Ray this process started, whatever it is)
            return
        self._check_resources({"CPU": os.cpu_count() or 1, "GPU": torch.cuda.device_count()}, started=True,
                              where="this machine (where Ray will start a local instance)")

    def _check_resources(self, cluster: dict, started: bool, where: str = "the cluster") -> None:
        """A task asking for more than the cluster has would wait for ever, silently: refused on a local instance
        started here, a warning on a cluster (an autoscaler may add the nodes)."""
        have = {"CPU": cluster.get("CPU", 0), "GPU": cluster.get("GPU", 0)}
        if self.num_cpus <= have["CPU"] and self.num_gpus <= have["GPU"]:
            return
        message = (f"each training asks Ray for {self.num_cpus:g} CPU(s) and {self.num_gpus:g} GPU(s), but {where} "
                   f"has {have['CPU']:g} CPU(s) and {have['GPU']:g} GPU(s) (--ray-cpus, --ray-gpus)")
        if started:
            raise ValueError(message)
        warnings.warn(message + ": the tasks wait until nodes that have them join", RuntimeWarning, stacklevel=3)


def _ray_start_address() -> str | None:
    """The address of the cluster ``ray start`` last started on this machine, which ``ray.init()`` joins; None where
    there is none (it then starts a local instance), or where Ray's internals cannot tell (``"unknown"``)."""
    try:
        from ray._private.utils import read_ray_address

        return read_ray_address()
    except Exception:  # noqa: BLE001 - another Ray version: its own check at run time stays
        return "unknown"


def _check_reachable(address: str | None, timeout: float = 10.0) -> None:
    """A Ray cluster's address (``address``, else ``$RAY_ADDRESS``; ``HOST:PORT`` or ``ray://HOST:PORT``) where
    something listens, and answers gRPC's handshake as Ray does (:func:`_not_grpc`): Ray itself retries an address
    where nothing does for minutes, and waits for ever on something else, reached only once the sweep's trainings
    start; ``None`` is that of the cluster ``ray start`` recorded on this machine, where there is one (a
    cluster that died without ``ray stop`` leaves it), and so is ``auto``, refused where there is none. ``local`` is
    Ray's to start, and the addresses of other clients (``anyscale://...``) and a ``ray://HOST`` without a port Ray's to
    find. A Ray this process started is used as it is (:meth:`RayBackend.run`): nothing to check."""
    ray = sys.modules.get("ray")
    if ray is not None and getattr(ray, "is_initialized", lambda: False)():
        return
    given = address if address not in (None, "auto") else os.environ.get("RAY_ADDRESS") or address
    name = "--address" if given == address else "RAY_ADDRESS"
    if given in (None, "auto") and _ray_start_address() not in (None, "unknown"):  # ray.init() joins it
        given, name = _ray_start_address(), "the cluster `ray start` recorded on this machine (`ray stop` forgets it)"
    if given == "auto" and _ray_start_address() is None:  # (ray.init would fail once the trainings start)
        raise ConnectionError(f"{name} auto: no Ray cluster runs on this machine (none that `ray start` recorded): "
                              "start one (ray start --head), give a cluster's address, or none for a new local "
                              "instance")
    if given in (None, "auto", "local"):
        return
    scheme, _, target = given.rpartition("://")
    host, sep, port = target.rpartition(":")
    host = host.strip("[]")  # (an IPv6 address in brackets)
    if scheme not in ("", "ray") or (scheme and not sep):
        return
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{name} {given!r} is no Ray cluster address: give HOST:PORT (its head node, e.g. "
                         "10.0.0.5:6379) or ray://HOST:PORT (Ray Client)")
    try:
        conn = socket.create_connection((host, int(port)), timeout=timeout)
    except OSError as exc:
        raise ConnectionError(f"{name} {given}: no Ray cluster answers there ({exc.strerror or exc}); start one "
                              "(ray start --head) or give its address") from None
    with conn:  # (with TLS, RAY_USE_TLS, a plain handshake is refused by Ray too: the connection is all there is)
        why = None if os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true") else _not_grpc(conn, timeout)
    if why is not None:
        raise ConnectionError(f"{name} {given}: what listens there is no Ray cluster ({why}); give the address of "
                              "one: HOST:PORT of its head node (`ray start --head` prints it; port 6379 by default) "
                              "or ray://HOST:PORT of its Ray Client server (port 10001 by default)")


_HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])  # and an empty SETTINGS


def _not_grpc(conn: socket.socket, timeout: float) -> str | None:
    """Why what ``conn`` reaches is no gRPC server, or None where it is one: Ray's GCS and its Ray Client server speak
    gRPC (over HTTP/2), and answer the connection preface of HTTP/2 with a SETTINGS frame at once; Ray's own
    handshake would wait for it for ever where something else listens (a plain TCP server, another service)."""
    head = b""
    try:
        conn.sendall(_HTTP2_PREFACE)
        while len(head) < 9 and (chunk := conn.recv(9 - len(head))):
            head += chunk
    except TimeoutError:
        return f"no answer to the handshake of gRPC, which Ray speaks, within {timeout:g} s"
    except OSError as exc:
        return f"the connection broke at the handshake of gRPC, which Ray speaks ({exc.strerror or exc})"
    if len(head) == 9 and head[3] == 4 and head[5:] == bytes(4):  # a SETTINGS frame, of the connection (stream 0)
        return None
    answer = f"it answered {head!r}" if head else "it closed the connection"
    return f"{answer} to the handshake of gRPC, which Ray speaks"


def _train_task(train_fn: TrainFn, train: ImageDataset, test: ImageDataset, seed: int,
                threads: int) -> tuple[float, float]:
    """One training on a Ray worker: its test accuracy and seconds."""
    torch.set_flush_denormal(True)  # as rectgrad reproduce does: subnormal gradients slow CPU training
    torch.set_num_threads(threads)
    start = time.perf_counter()
    accuracy = train_fn(train, test, seed)  # checked where it is saved, as the local backend's
    return _as_number(accuracy), time.perf_counter() - start
