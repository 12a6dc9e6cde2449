"""What every study shares: the images it explains, its result (tables + figures), rank correlation."""
from __future__ import annotations

import csv
import functools
import io
import itertools
import json
import math
import os
import sys
import warnings
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import Tensor, nn

from rectgrad import viz
from rectgrad._checks import did_you_mean, positive_int
from rectgrad.attr._arguments import check_internal_batch_size, looks_like_probabilities
from rectgrad.attr._base import modules_of, named_errors, preserved_buffers, user_call, warn_if_ungated
from rectgrad.checkpoint import listed_files, refuse_folders, refuse_replacing, write_text_atomically
from rectgrad.data import check_mask_size, image_files, masks_beside, unique_names
from rectgrad.engine import Options, RuleMode, rule_gradients
from rectgrad.methods import explain, get_method
from rectgrad.methods import predict as methods_predict
from rectgrad.operations import UnsupportedModel


@dataclass
class Images:
    """Model inputs (N, C, H, W) with what a study needs to show and label them.

    ``mean``/``std`` describe the model's input space as for :func:`rectgrad.viz.to_display_image`: pixels
    in [0, 1] are ``x * std + mean``; both None means the inputs are pixels scaled to [-1, 1] (the
    paper's preprocessing). ``masks`` (N, H, W), True (or 1, in any dtype) on the object, enable the background
    numbers (kept on the device of ``x``). ``names`` must be unique: tables and figure files are labelled by them.
    ``labels``, the true classes (one per image, a tensor or a list), group the images by class where a study
    compares classes.
    """

    x: Tensor
    names: list[str]
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    classes: list[str] | None = None
    labels: Tensor | None = None
    masks: Tensor | None = None

    def __post_init__(self):
        if self.x.dim() != 4 or len(self.names) != len(self.x):
            raise ValueError(f"expected (N, C, H, W) inputs with one name each, got {tuple(self.x.shape)} "
                             f"and {len(self.names)} names")
        repeated = [name for name, count in Counter(self.names).items() if count > 1]
        if repeated:
            raise ValueError(f"image names must be unique, got {', '.join(map(repr, repeated[:5]))} more than once")
        if self.masks is not None:  # on the images' device: the studies compare them with maps made there
            self.masks = _bool_masks(self.masks, (len(self.x), *self.x.shape[-2:])).to(self.x.device)
        if self.labels is not None:
            self.labels = torch.as_tensor(self.labels)
            if self.labels.shape != (len(self.x),):
                raise ValueError(f"labels must be one class index per image, ({len(self.x)},), got shape "
                                 f"{tuple(self.labels.shape)}")

    def __len__(self) -> int:
        return len(self.x)

    def to(self, device) -> Images:
        return replace(self, x=self.x.to(device), masks=None if self.masks is None else self.masks.to(device))

    def class_name(self, index: int) -> str:
        return self.classes[index] if self.classes and 0 <= index < len(self.classes) else str(index)

    def display(self) -> dict:
        """Keyword arguments of :func:`rectgrad.viz.grid` that un-normalize these inputs."""
        return {"mean": self.mean, "std": self.std}

    def to_pixels(self, x: Tensor) -> Tensor:
        return to_pixels(x, self.mean, self.std)

    def from_pixels(self, p: Tensor) -> Tensor:
        return from_pixels(p, self.mean, self.std)


def _bool_masks(masks, shape: tuple[int, ...]) -> Tensor:
    """Object masks of ``shape`` (N, H, W) as bool: True/False, or 0/1 in any dtype."""
    if not isinstance(masks, Tensor):
        raise TypeError(f"masks must be a torch tensor, got {type(masks).__name__}")
    if masks.shape != shape:
        raise ValueError(f"masks must be (N, H, W) = {shape}, got {tuple(masks.shape)}")
    if masks.dtype != torch.bool and not bool(((masks == 0) | (masks == 1)).all()):
        raise ValueError(f"masks must hold only 0/1 (or True/False) values, object = 1, got {masks.dtype} values "
                         f"from {masks.min().item():g} to {masks.max().item():g}")
    return masks.bool()


def _stats(x: Tensor, mean, std) -> tuple[Tensor, Tensor]:
    """Per-channel ``mean`` and ``std`` shaped (1, C, 1, 1) like ``x`` (0 and 1 where None)."""
    m = torch.as_tensor(0.0 if mean is None else mean, dtype=x.dtype, device=x.device)
    s = torch.as_tensor(1.0 if std is None else std, dtype=x.dtype, device=x.device)
    return m.reshape(1, -1, 1, 1), s.reshape(1, -1, 1, 1)


def to_pixels(x: Tensor, mean=None, std=None) -> Tensor:
    """Model inputs ``(pixel01 - mean) / std`` -> pixels in [-1, 1], the paper's input space (identity
    when ``mean`` and ``std`` are both None: the inputs are already pixels in [-1, 1])."""
    if mean is None and std is None:
        return x
    m, s = _stats(x, mean, std)
    return 2 * (x * s + m) - 1


def from_pixels(p: Tensor, mean=None, std=None) -> Tensor:
    """Pixels in [-1, 1] -> model inputs (inverse of :func:`to_pixels`)."""
    if mean is None and std is None:
        return p
    m, s = _stats(p, mean, std)
    return ((p + 1) / 2 - m) / s


@dataclass
class StudyResult:
    """A study's numbers (``tables``: name -> rows of plain values), its figures and a markdown summary."""

    name: str
    tables: dict[str, list[dict]]
    figures: dict[str, Figure] = field(default_factory=dict)
    notes: str = ""

    def markdown(self) -> str:
        parts = [_title(self.name)] + ([self.notes.strip()] if self.notes else [])
        for table, rows in self.tables.items():
            parts += [f"## {table}", markdown_table(rows)]
        return "\n\n".join(parts) + "\n"

    def save(self, out, dpi: int = 150) -> list[Path]:
        """Write ``<name>_<table>.csv`` per table, ``<name>.md`` and ``<name>_<figure>.png`` into ``out``, listed in
        ``.rectgrad-<name>.json``; the files the earlier run listed there that this one does not write are removed (a
        table or figure it had and this one has not would pass for this run's), never a file of the user's. A file of
        one of these names that no study wrote is refused (:func:`check_study_folder`), before anything is written."""
        out = Path(out)
        prefix = self.name.replace("-", "_")
        tables = {out / f"{prefix}_{table}.csv": rows for table, rows in self.tables.items()}
        figures = {out / f"{prefix}_{name}.png": fig for name, fig in self.figures.items()}
        md = out / f"{prefix}.md"
        names = {path.name for path in (*tables, md, *figures)}
        check_study_folder(out, self.name, sorted(names))
        out.mkdir(parents=True, exist_ok=True)
        manifest = out / f".rectgrad-{prefix}.json"
        earlier = {name for name in listed_files(manifest) if Path(name).name == name and name.startswith(f"{prefix}_")}

        def remove(stale):
            for name in stale:
                if (out / name).is_file():
                    (out / name).unlink()

        # first: a run stopped while writing (a figure too large for its dpi, Ctrl-C) leaves none of the earlier
        # run's files beside its own, and its manifest lists what it may have written
        remove(earlier - names)
        write_text_atomically(manifest, json.dumps(sorted(names)))
        written = []
        try:
            for path, rows in tables.items():
                text = io.StringIO(newline="")
                writer = csv.DictWriter(text, fieldnames=list(rows[0]) if rows else [])
                writer.writeheader()
                writer.writerows(rows)
                write_text_atomically(path, text.getvalue())
                written.append(path)
            write_text_atomically(md, self.markdown())
            written.append(md)
            for path, fig in figures.items():
                written.append(viz.save_figure(fig, path, dpi=dpi))
        except BaseException:  # the earlier run's versions of the files not written would pass for this run's
            remove(earlier - {path.name for path in written})
            raise
        return written


def file_names(study: str, tables, figures) -> list[str]:
    """The files :meth:`StudyResult.save` writes for ``study``'s ``tables`` and ``figures`` (their names), as it names
    them: ``<study>_<table>.csv`` per table, ``<study>.md`` and ``<study>_<figure>.png`` per figure (checked before a
    study's work by the command line, :func:`check_study_folder`)."""
    prefix = study.replace("-", "_")
    return [f"{prefix}_{t}.csv" for t in tables] + [f"{prefix}.md"] + [f"{prefix}_{f}.png" for f in figures]


def _title(study: str) -> str:
    """The first line of a study's summary, ``<study>.md``."""
    return f"# rectgrad study {study}"


def check_study_folder(out, study: str, names) -> None:
    """Refuse to write the files ``names`` of ``study`` into the folder ``out`` where one of them is a file that no
    rectgrad study wrote, as in a folder of a project's own (its ``threshold.md``): the study would replace it. A file
    is the study's when its manifest ``.rectgrad-<study>.json`` lists it; where none lists any (a folder of a study made
    before manifests), every file is when ``<study>.md`` opens with the study's title. A folder of one of these names
    is refused too (the writing would fail on it, after the files before it), as is an ``out`` that is a file."""
    out = Path(out)
    if out.exists() and not out.is_dir():  # (else told by the folder's making, once the work is done)
        raise NotADirectoryError(f"{out} exists and is not a folder: a study writes its files into a folder; give "
                                 "another folder (--out)")
    refuse_folders(out, names, "study")
    prefix = study.replace("-", "_")
    listed = set(listed_files(out / f".rectgrad-{prefix}.json"))
    found = [name for name in names if name not in listed and os.path.lexists(out / name)]
    if not found or (not listed and _opens_with(out / f"{prefix}.md", _title(study))):
        return
    refuse_replacing(out, found, "study")


def check_out(out, study: str, tables, figures) -> None:
    """Given ``out``, :func:`check_study_folder` of the files the call of ``study`` will write there (its ``tables``
    and ``figures``, named as :func:`file_names` names them), before its work: a file of the user's of one of these
    names is refused then, not by :meth:`StudyResult.save` once the work is done."""
    if out is not None:
        check_study_folder(out, study, sorted(file_names(study, tables, figures)))


def _opens_with(path: Path, title: str) -> bool:
    """Whether the file ``path`` is there and its first line is ``title``."""
    try:
        with open(path, encoding="utf-8", errors="replace") as file:
            return file.readline(len(title) + 3).rstrip() == title
    except OSError:  # (none there, a folder, unreadable)
        return False


def markdown_table(rows: list[dict]) -> str:
    if not rows:
        return "(no rows)"
    header = list(rows[0])

    def cell(v) -> str:
        if isinstance(v, float):
            return "nan" if math.isnan(v) else f"{v:.4g}"
        return str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(r.get(k, "")) for k in header) + " |" for r in rows]
    return "\n".join(lines)


def new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def as_numpy(x) -> np.ndarray:
    """A tensor (any device) or array-like as float64 numpy."""
    if isinstance(x, Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def ranks(a: np.ndarray) -> np.ndarray:
    """Ranks of a 1-D array, ties sharing their average rank (as Spearman's correlation needs)."""
    order = np.argsort(a, kind="stable")
    ordered = a[order]
    first = np.r_[True, ordered[1:] != ordered[:-1]]
    starts = np.flatnonzero(first)
    counts = np.diff(np.r_[starts, a.size])
    result = np.empty(a.size)
    result[order] = np.repeat(starts + (counts - 1) / 2, counts)
    return result


def spearman(a, b) -> float:
    """Spearman rank correlation of two maps (flattened); NaN when either is constant (e.g. all zero)."""
    ra, rb = (ranks(np.ravel(as_numpy(m))) for m in (a, b))
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denominator = math.sqrt(float((ra * ra).sum() * (rb * rb).sum()))
    return float((ra * rb).sum() / denominator) if denominator > 0 else float("nan")


def finite_mean(values) -> float:
    """Mean of the finite values; NaN when there is none."""
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else float("nan")


def leaves_model_as_it_was(fn):
    """Decorate ``fn(model, ...)`` to use the model as :func:`rectgrad.explain` does: its buffers (BatchNorm
    statistics in train mode) restored afterwards, even on error, one warning per call, not per inner call, when
    the model is in training mode, and inputs (a tensor given second) of another dtype than the model's weights
    named as such."""
    @functools.wraps(fn)
    def wrapper(model, *args, **kwargs):
        modules = modules_of(model)
        inputs = tuple(a for a in args[:1] if isinstance(a, Tensor))
        with user_call(modules), named_errors(modules, inputs), preserved_buffers(modules):
            return fn(model, *args, **kwargs)
    return wrapper


def refuse_inlined_layers(model, study: str, seen_any: bool = True) -> None:
    """Refuse a model whose graph runs its layers' operations inline, so that ``study`` cannot watch them as the
    forward pass calls them: TorchScript, always; an exported program (``torch.export``, whose inputs carry their
    example values; not a ``torch.fx.symbolic_trace``, which still calls its layers) once its forward pass was seen
    to call none of them (``seen_any`` false)."""
    if isinstance(model, (torch.jit.ScriptModule, torch.jit.ScriptFunction)):
        kind = "a TorchScript model"
    elif not seen_any and isinstance(model, torch.fx.GraphModule) and any(
            "val" in node.meta for node in model.graph.nodes if node.op == "placeholder"):
        kind = "an exported program (torch.export)"
    else:
        return
    raise ValueError(f"study {study} watches the model's layers as its forward pass calls them, but {kind} runs their "
                     "operations inline: give the Python model (saved whole, torch.save(model, path), or a rectgrad "
                     "checkpoint)")


@leaves_model_as_it_was
@torch.no_grad()
def predict(model: nn.Module, x: Tensor, internal_batch_size: int | None = 16) -> tuple[Tensor, Tensor]:
    """Predicted classes and their softmax probabilities (the outputs themselves where they are probabilities), from
    :func:`rectgrad.methods.predict`'s logits, ``internal_batch_size`` images at a time (None: all at once)."""
    logits = methods_predict(model, x, internal_batch_size=internal_batch_size)
    probs = logits if looks_like_probabilities(logits) else logits.softmax(1)
    return probs.argmax(1), probs.max(1).values


def quiet(fn, *args, **kwargs):
    """Call ``fn`` silencing the engine's all-zero warning: studies report empty maps in their numbers. The warning
    that the model calls no activation the engine knows is kept: without it a study's rule-based maps would equal
    the plain gradient's, every q and rule alike, unexplained."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is all zero.*")
        return fn(*args, **kwargs)


def check_show(show, count: int) -> int:
    """``show``, how many of ``count`` images a study's figures draw, checked: a whole number, 0 for no image
    figures, None for all."""
    if show is None:
        return count
    if isinstance(show, bool) or not isinstance(show, (int, np.integer)) or show < 0:
        error = ValueError if isinstance(show, (int, np.integer)) else TypeError
        raise error(f"show must be a whole number of images, 0 for none, None for all, got {show!r}")
    return int(show)


def image_chunks(count: int, internal_batch_size: int | None) -> list[slice]:
    """``count`` images as slices of at most ``internal_batch_size`` (all at once when None), for a study that runs
    one forward/backward pass per slice; the size checked as ``explain`` checks it (a one-element tensor or array
    counts as its value)."""
    size = check_internal_batch_size(internal_batch_size)
    size = count if size is None else size
    return [slice(start, start + size) for start in range(0, count, max(size, 1))]


def spread(items: list, count: int | None) -> list:
    """At most ``count`` of ``items``, evenly spread from the first to the last (all when ``count`` is None); the
    studies' ``max_layers``, a positive integer."""
    if count is None:
        return items
    count = positive_int("max_layers", count)  # (2.5 failed in range())
    if len(items) <= count:
        return items
    step = (len(items) - 1) / max(count - 1, 1)
    return [items[round(i * step)] for i in range(count)]


def resize_masks(masks: Tensor, size: tuple[int, int]) -> Tensor:
    """Object masks (N, H, W) at another resolution: a cell is object when at least half of it is."""
    resized = torch.nn.functional.interpolate(masks[:, None].float(), size=size, mode="area")
    return resized[:, 0] >= 0.5


def outside_fraction(maps: Tensor, masks: Tensor) -> Tensor:
    """Per image, the fraction of ``|map|`` mass (maps (N, h, w)) on the background; NaN for an all-zero map, which
    has none to share (0 would score it as the cleanest; :func:`finite_mean` leaves it out of a mean)."""
    masks = resize_masks(masks, tuple(maps.shape[-2:]))
    mass = maps.abs()
    total = mass.sum((1, 2))
    outside = (mass * ~masks).sum((1, 2))
    return torch.where(total > 0, outside / total.clamp_min(1e-30), float("nan"))


@leaves_model_as_it_was
def engine_gradients(model: nn.Module, x: Tensor, target: Tensor | None, options: Options,
                     modules: list[tuple[str, nn.Module]] = ()) -> tuple[Tensor, list[tuple[str, Tensor, Tensor]]]:
    """The engine's modified gradient of the target logits with respect to ``x`` and to the inputs of ``modules``.

    Drives :class:`rectgrad.engine.RuleMode` as the attribution methods do (forward pass under the rule,
    backward pass outside it); forward pre-hooks record each module's input during that pass and are
    removed afterwards, and buffers are restored, so the model is left untouched. Returns the input gradient
    and, per module call, ``(name, module input, gradient)``; ``target`` None explains each sample's predicted
    class.
    """
    recorded: list[tuple[str, Tensor]] = []

    def recorder(name):
        def hook(module, args):
            if args and isinstance(args[0], Tensor) and args[0].requires_grad:
                recorded.append((name, args[0]))
        return hook

    handles = [module.register_forward_pre_hook(recorder(name)) for name, module in modules]
    leaf = x.detach().requires_grad_()
    mode = RuleMode(options, batch=len(leaf))
    try:
        with torch.enable_grad():
            with mode:
                logits = model(leaf)
            mode.mark_top()
            targets = logits.detach().argmax(1) if target is None else target.to(logits.device)
            score = logits.gather(1, targets[:, None]).sum()
            tensors = [leaf] + [t for _, t in recorded]
            grads = rule_gradients(score, tensors, sources=1)
    finally:
        for handle in handles:
            handle.remove()
    warn_if_ungated(options, mode)
    return grads[0], [(name, t.detach(), g) for (name, t), g in zip(recorded, grads[1:])]


#: The methods of the paper's qualitative comparison (Sec. 5.2, Figs. 5, 12, 13), RectGrad last.
COMPARED = ("saliency", "grad_input", "guided_bp", "smoothgrad", "intgrad", "eps_lrp", "deeplift", "rectgrad",
            "rectgrad_prr")


def is_rectgrad(method: str) -> bool:
    """RectGrad-like methods: their maps are shown and measured without their final (zero) threshold."""
    return "final_threshold" in get_method(method).defaults


def method_attributions(model: nn.Module, x: Tensor, target: Tensor, methods, *, seed: int = 0,
                        internal_batch_size: int | None = None, progress: bool = False,
                        description: str = "maps") -> tuple[dict[str, Tensor], dict[str, str]]:
    """Raw attributions per method (RectGrad without its final threshold), and the methods skipped with why.

    A method that cannot handle the model (e.g. DeepLIFT on a gated block) raises
    :class:`rectgrad.operations.UnsupportedModel`: it is skipped, not fatal, unless every method is (then that error
    is raised, with each method's reason); other errors are fatal. Stochastic methods
    draw from ``seed``, so two calls share their noise. ``progress``: a bar over the methods, named ``description``.
    """
    from rectgrad.progress import progress_bar

    methods = tuple(methods)
    maps, skipped = {}, {}
    bar = progress_bar(len(methods), description, progress, unit="method")
    try:
        for method in methods:
            if bar is not None:  # drawn now on a terminal; in a log, with the bar's next line
                bar.set_postfix_str(method, refresh=sys.stderr.isatty())
            extra = {"final_threshold": False} if is_rectgrad(method) else {}
            try:
                maps[method] = quiet(explain, model, x, target, method, seed=seed,
                                     internal_batch_size=internal_batch_size, **extra)
            except UnsupportedModel as exc:
                skipped[method] = str(exc)
            if bar is not None:
                bar.update()
    finally:
        if bar is not None:
            bar.close()
    if skipped and not maps:  # nothing left to compare: an empty table would look like a result
        raise UnsupportedModel("none of the methods asked for can explain this model: "
                               + "; ".join(f"{method_label(m)}: {why}" for m, why in skipped.items()))
    return maps, skipped


def summed_maps(attr: Tensor, method: str, thresholded: bool) -> np.ndarray:
    """Channel-summed maps (N, H, W), with the final threshold of Sec. 5.2 when ``thresholded``: a baseline keeps
    its top 5%, RectGrad is left as it is (the paper visualizes RectGrad "without final zero thresholding" and
    thresholds "the baselines" to RectGrad's sparsity; the reference's coherence notebook does the same)."""
    maps = viz.channel_sum(attr)
    return viz.final_threshold(maps, "top") if thresholded and not is_rectgrad(method) else maps


def display_maps(attr: Tensor, method: str, thresholded: bool) -> np.ndarray:
    """Appendix F.1 display maps, with or without the final threshold (for the baselines, as :func:`summed_maps`)."""
    return viz.prepare(attr, threshold="top" if thresholded and not is_rectgrad(method) else None)


def one_or_many(names) -> tuple[str, ...]:
    """One name alone (not read letter by letter), or any iterable of them (read once), as a tuple."""
    return (names,) if isinstance(names, str) else tuple(names)


def method_names(methods) -> tuple[str, ...]:
    """A study's ``methods`` as a tuple of known names: one name alone, or any iterable of them (read once); none is
    refused (an empty table would look like a result), as is an unknown one, before any work."""
    names = one_or_many(methods)
    if not names:
        raise ValueError(f"no methods given: name one or more, e.g. methods=('saliency', 'rectgrad'), or leave the "
                         f"default, the paper's comparison ({', '.join(COMPARED)})")
    for name in names:
        get_method(name)
    return names


def method_label(method: str) -> str:
    return get_method(method).label


def skipped_note(skipped: dict[str, str]) -> str:
    return "".join(f"\n\nSkipped {method_label(m)}: {why}" for m, why in skipped.items())


def images_from_files(loaded, paths) -> Images:
    """Images for a :class:`rectgrad.zoo.LoadedModel` from files or folders, preprocessed as the model needs.

    An image ``<stem>.<ext>`` with a ``<stem>_mask.*`` file beside it (:func:`rectgrad.data.masks_beside`) gets
    that object mask (white, >= 128, or 1 in a 0/1 mask = object; of the image's pixel size), sent through
    the same resizing and cropping. Images are named by their file stem, with as many parent folders as it takes
    to tell apart files whose stems coincide (:func:`unique_names`). ``paths``: one path, or several.
    """
    files = image_files([paths] if isinstance(paths, (str, os.PathLike)) else paths)  # one path, not its letters
    repeated = [str(f) for f, count in Counter(f.resolve() for f in files).items() if count > 1]
    if repeated:
        raise ValueError(f"image {repeated[0]} is given more than once")
    x = loaded.load_images(files)
    mask_of = masks_beside(files)
    mask_files = [mask_of.get(f) for f in files]
    masks = None
    if any(mask_files):
        if not all(mask_files):
            missing = [str(f) for f, m in zip(files, mask_files) if m is None]
            raise ValueError(f"some images have a <name>_mask file and some do not: {', '.join(missing[:5])} "
                             "lack one")
        masks = _object_masks(loaded, files, mask_files)
    return Images(x=x, names=unique_names(files), mean=loaded.mean, std=loaded.std,
                  classes=list(loaded.labels) if loaded.labels else None, masks=masks)


def images_from_dataset(name: str, count: int, per_class: int = 1, data_dir=None, image_size: int = 32,
                        download: bool = False, loaded=None) -> Images:
    """``count`` test images of ``"fashion-mnist"``, ``"cifar10"``, ``"cifar10-masked"`` (the paper's masked CIFAR-10
    images in ``data_dir``, else in the data cache, :func:`rectgrad.data.masked_images_folder`; their JPEGs hold BGR,
    flipped to RGB by :func:`rectgrad.data.load_masked_images`) or
    ``"folder"`` (your own, in ``data_dir``): the first ``per_class`` of classes 0, 1, ... (``download``: a missing
    dataset is downloaded, as :func:`rectgrad.data.load_dataset` does).

    Inputs are scaled to [-1, 1] as the paper's CNNs see them; Fashion-MNIST images get object masks
    (every non-black pixel, :func:`rectgrad.data.object_masks_from_images`). Of your own images, those with a mask
    beside them are taken when there are any (:func:`rectgrad.data.load_image_folder_masks`, as ``rectgrad
    reproduce`` does); they are named by their path in the test folder (``cat/12``, ``cat/day2/12``), the standard
    datasets' images by their index in the test set (``test 12``). Your own images are resized to ``image_size`` x
    ``image_size``, or, given ``loaded`` (a :class:`rectgrad.zoo.LoadedModel`), read as :func:`images_from_files`
    reads files for it: its input size, preprocessing and class names (their masks resized alike, object where at
    least half is); given ``loaded``, the standard datasets' images are normalised with the mean and std it
    declares (:func:`_own_normalisation`), else kept in [-1, 1].
    """
    from rectgrad.data import (MaskedImages, image_folder_files, load_dataset, load_image_folder_masks,
                               load_masked_images, masked_images_folder, object_masks_from_images)

    count, per_class = positive_int("count", count), positive_int("per_class", per_class)  # (2.5 failed in a slice)
    check_dataset(name, data_dir, download)
    if name == "folder" and loaded is not None and data_dir is not None and not download:  # else load_dataset refuses
        return _folder_images_for(loaded, data_dir, count, per_class)
    if name == "cifar10-masked":
        data = load_masked_images(masked_images_folder(data_dir, download))
    else:
        data = load_dataset(name, "test", data_dir=data_dir, download=download, image_size=image_size)
    if name == "folder":
        data = load_image_folder_masks(data_dir, image_size, data) or data
    masked = name == "folder" and isinstance(data, MaskedImages)
    index = _first_of_classes(data.labels.tolist(), len(data.classes), count, per_class, masked)
    chosen = data.subset(torch.tensor(index))
    if isinstance(chosen, MaskedImages):
        masks, names = chosen.masks, chosen.names
    elif name == "folder":
        files = image_folder_files(data_dir, "test", image_size)
        masks, names = None, _folder_names(data_dir, [files[i] for i in index])
    else:
        masks = object_masks_from_images(chosen.images) if name == "fashion-mnist" else None
        names = [f"test {i}" for i in index]
    x, mean, std = chosen.inputs(), None, None
    if loaded is not None and _own_normalisation(loaded, x.shape[1]):
        mean, std = loaded.mean, loaded.std  # the model's own normalisation, as files are read for it
        x = loaded.normalise(chosen.images.float() / 255)
    return Images(x=x, names=names, classes=list(data.classes), labels=chosen.labels, masks=masks, mean=mean, std=std)


def check_dataset(name: str, data_dir=None, download: bool = False) -> None:
    """The dataset options of :func:`images_from_dataset` checked before anything is read (``rectgrad study`` checks
    them before the model loads, which may download hundreds of MB): a known ``name``; for ``"folder"``, its
    ``data_dir`` given and no ``download``."""
    from rectgrad.data import DATASETS, check_folder_options

    if name not in (*DATASETS, "cifar10-masked"):
        raise ValueError(f"unknown dataset {name!r}{did_you_mean(name, (*DATASETS, 'cifar10-masked'))}; known: "
                         f"{', '.join(DATASETS)}, cifar10-masked")
    if name == "folder":
        check_folder_options(data_dir, download)


def _own_normalisation(loaded, channels: int) -> bool:
    """Whether a standard dataset's images go to ``loaded`` normalised its way rather than in the paper's [-1, 1]:
    when it declares a mean and std (a model file's ``.json``, a registry model) other than 0.5 and 0.5, which are
    [-1, 1], for as many channels as the images have (other channels: the model is refused with them later)."""
    declared = not loaded.normalisation_assumed and len(loaded.mean) == channels
    return declared and set(loaded.mean) | set(loaded.std) != {0.5}


def _first_of_classes(labels: list[int], classes: int, count: int, per_class: int, masked: bool) -> list[int]:
    """Indices of ``count`` of ``labels``: the first ``per_class`` of classes 0, 1, ..., in turn; a warning when
    there are fewer (``masked``: fewer because only the images with a mask are candidates)."""
    bad = next((i for i, label in enumerate(labels) if not 0 <= label < classes), None)
    if bad is not None:
        raise ValueError(f"test image {bad} has label {labels[bad]}, outside the {classes} classes 0..{classes - 1}")
    index = []
    for k in itertools.cycle(range(classes)):
        if len(index) >= min(count, len(labels)):
            break
        members = [i for i, label in enumerate(labels) if label == k]
        taken = sum(labels[i] == k for i in index)
        index += members[taken:taken + per_class][: count - len(index)]
    if len(index) < count:
        why = "only these have a mask beside them" if masked else "there are no more"
        warnings.warn(f"{len(index)} test images taken, not the {count} asked: {why}", stacklevel=3)
    return index


def _folder_images_for(loaded, root, count: int, per_class: int) -> Images:
    """:func:`images_from_dataset` of the folder dataset at ``root`` for the model ``loaded``: the files read and
    preprocessed, and masks read, as :func:`images_from_files` does."""
    from rectgrad.data import image_folder_split

    files, classes = image_folder_split(root, "test")
    mask_of = masks_beside([path for path, _ in files])
    masked = [(path, label) for path, label in files if path in mask_of]
    pool = masked or files
    index = _first_of_classes([label for _, label in pool], len(classes), count, per_class, bool(masked))
    paths = [pool[i][0] for i in index]
    x = loaded.load_images(paths)
    masks = None
    if masked:
        masks = _object_masks(loaded, paths, [mask_of[path] for path in paths])
    return Images(x=x, names=_folder_names(root, paths), mean=loaded.mean,
                  std=loaded.std, classes=list(loaded.labels) or None,
                  labels=torch.tensor([pool[i][1] for i in index]), masks=masks)


def _object_masks(loaded, files: list[Path], mask_files: list[Path]) -> Tensor:
    """The object masks of ``files`` in ``mask_files`` for the model ``loaded``: object pixels by the folder
    dataset's rule (:func:`rectgrad.data.mask_objects`: white, or 1 in a 0/1 mask), resized as the images
    are (one at a time), object where at least half is."""
    from PIL import Image

    from rectgrad.data import mask_objects, upright_size

    def binary(path: Path, mask_file: Path):
        check_mask_size(mask_file, upright_size(mask_file), path, upright_size(path))
        return Image.fromarray(mask_objects(mask_file).numpy().astype(np.uint8) * 255)

    binaries = (binary(path, mask_file) for path, mask_file in zip(files, mask_files))
    return to_pixels(loaded.preprocess(binaries), loaded.mean, loaded.std).mean(1) >= 0


def _folder_names(root, paths: list[Path]) -> list[str]:
    """The folder dataset's images named by their path in ``root/test`` (``cat/12``, ``cat/day2/12``)."""
    return unique_names(paths, [len(path.relative_to(Path(root) / "test").parts) for path in paths])
