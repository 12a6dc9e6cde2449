"""``rectgrad explain`` and ``rectgrad demo``: the paper's Figure 1 (methods side by side) for any model.

Rows are images, columns the input and one attribution map per method, drawn as in Appendix F.1
(:mod:`rectgrad.viz`). Without ``--final-threshold`` (the paper's figures) every map is shown raw,
RectGrad included; with it, baselines keep their top 5% and RectGrad its positive part (Sec. 5.2).
"""
from __future__ import annotations

import difflib
import re
import warnings
from pathlib import Path
from typing import List, Optional

import typer

from rectgrad.cli import _options

DEMO_PHOTOS = ("chelsea", "coffee", "rocket", "camera")  # scikit-image's bundled, freely licensed photos
RECTGRAD_METHODS = ("rectgrad", "rectgrad_prr")


def register(app: typer.Typer) -> None:
    app.command("explain")(explain_images)
    app.command("demo")(demo)


def _figure_methods() -> tuple[str, ...]:
    from rectgrad.methods import METHOD_NAMES

    return tuple(name for name in METHOD_NAMES if name != "random")


METHODS_HELP = ("Comma-separated method names, or 'all' alone for every method (default: every method but the "
                "random baseline).")
FINAL_THRESHOLD_HELP = "Baselines keep their top 5% and RectGrad its positive part (paper Sec. 5.2)."
SAVE_MAPS_HELP = ("Also write the attribution maps to this .npz file: one array per method (images x channels x "
                  "height x width, as the method returns it: the baselines' top 5% is only drawn), the image names "
                  "and the explained classes.")


def _check_options(out: Path, save_maps: Path | None, q: float, internal_batch_size: int, images=(),
                   seed: int = 0) -> None:
    """The options the comparison could refuse, refused before any work; the outputs must keep apart from the input
    ``images`` (files or folders)."""
    from rectgrad import viz

    _options.output_file(out, "--out", viz.FIGURE_SUFFIXES)
    _options.apart_from_inputs(out, "--out", images)
    if save_maps is not None:
        _options.output_file(save_maps, "--save-maps", (".npz",))
        _options.apart_from_inputs(save_maps, "--save-maps", images)
    _options.percentile(q)
    _options.positive_int(internal_batch_size, "--internal-batch-size")
    _options.seed(seed)


def _warn_unused(ctx: typer.Context, names: list[str]) -> None:
    """Say that ``--q`` or ``--seed``, given on the command line, has no effect when none of the chosen methods uses
    it (``--q``: RectGrad's; ``--seed``: the stochastic methods')."""
    from rectgrad.methods import METHOD_NAMES, get_method

    users = {"q": RECTGRAD_METHODS, "seed": tuple(name for name in METHOD_NAMES if get_method(name).stochastic)}
    for option, using in users.items():
        if ctx.get_parameter_source(option).name == "COMMANDLINE" and not set(names) & set(using):
            warnings.warn(f"--{option} has no effect on the chosen methods ({', '.join(names)}): only "
                          f"{' and '.join(using)} use it", UserWarning, stacklevel=2)


def _check_model(model, names: list[str]) -> None:
    """The methods the loaded model cannot take, refused before any map is computed."""
    from rectgrad.attr._base import modules_of, scripted_part
    from rectgrad.methods import get_method

    rules = [name for name in names if get_method(name).rules]
    part = scripted_part(model, modules_of(model)) if rules else None
    if part is not None:
        kind, name, how = part
        raise ValueError(f"--methods {', '.join(rules)}: these methods modify the backward pass of activations, "
                         f"which cannot be reached inside the TorchScript {kind} {name} ({how}); saliency, "
                         "grad_input, smoothgrad and intgrad work")


def explain_images(
    ctx: typer.Context,
    images: List[Path] = typer.Argument(..., parser=_options.path,
                                        help="Image files (any format Pillow reads) or folders of them."),
    model: str = typer.Option(..., help="A registry name (efficientnet-lite0, inception-v4, resnet50, vgg16) or "
                                        "the path of a rectgrad checkpoint, a torch.save'd module, TorchScript or an "
                                        "exported program (.pt2)."),
    methods: Optional[str] = typer.Option(None, help=METHODS_HELP),
    q: float = typer.Option(98.0, help="RectGrad's threshold percentile."),
    out: Path = typer.Option(Path("rectgrad-explain.png"), parser=_options.path,
                             help="The grid to write (.png, .pdf, .svg, .jpg, ...)."),
    target: Optional[str] = typer.Option(None, help="Class to explain, by index or name, e.g. 3 or 'tabby' "
                                                    "(index:3 or name:3 where a class is named by a number; "
                                                    "default: each image's top class)."),
    final_threshold: bool = typer.Option(False, help=FINAL_THRESHOLD_HELP),
    weights: Optional[Path] = typer.Option(None, parser=_options.path,
                                           help="Local state-dict file for a registry model (offline use)."),
    internal_batch_size: int = typer.Option(25, help="Samples per forward pass for SmoothGrad and IntegGrad, and "
                                                     "images per pass for the top-5 classes."),
    seed: int = typer.Option(0, help="Seed of SmoothGrad's noise (and the random baseline's)."),
    device: str = typer.Option("auto", help=_options.DEVICE_HELP),
    progress: bool = typer.Option(True, help="Show a progress bar."),
    save_maps: Optional[Path] = typer.Option(None, parser=_options.path, help=SAVE_MAPS_HELP),
) -> None:
    """Attribution maps of IMAGES by several methods, side by side in one figure; prints the top-5 classes."""
    from rectgrad import zoo
    from rectgrad.data import image_files, unique_names

    names = _options.methods(methods, _figure_methods())
    _check_options(out, save_maps, q, internal_batch_size, images, seed)
    _check_target(target)  # (its class names come with the model, which may take long to load)
    _warn_unused(ctx, names)
    images = image_files(images)
    for path in images:  # each is read (and let go) before the model loads, which may download it: a bad file first
        zoo.read_image(path)
    loaded = zoo.load(model, _options.device(device), weights=weights)
    for line in (loaded.note or "").splitlines():
        typer.echo(f"note: {line}", err=True)
    if methods is not None:  # named: refused before any map; a default method the model refuses is left out later
        _check_model(loaded.model, names)
    _check_batch_bound(loaded.model, model, internal_batch_size)
    index = _class_index(target, loaded.labels)
    _compare(loaded, loaded.load_images(images), unique_names(images, suffix=True), names, q=q, out=out,
             target=index, final_threshold=final_threshold, internal_batch_size=internal_batch_size, seed=seed,
             progress=progress, save_maps=save_maps, named=methods is not None,
             target_line=None if index is None else _target_line(target, index, loaded.label(index)))


def _check_batch_bound(model, name: str, internal_batch_size: int) -> None:
    """An exported program of a bounded batch refuses an ``--internal-batch-size`` above its bound before any map (it
    failed after the rule-based maps, or on the top-5 pass over many images, with a raw traceback)."""
    from rectgrad.checkpoint import exported_batch_bound

    bound = exported_batch_bound(model)
    if bound is not None and internal_batch_size > bound:
        raise ValueError(f"--internal-batch-size {internal_batch_size}: {name} was exported for batches of at most "
                         f"{bound}; pass --internal-batch-size {bound}")


def _is_index(target: str) -> bool:
    return re.fullmatch(r"\s*-?[0-9]+\s*", target) is not None


def _split_target(target: str) -> tuple[str | None, str]:
    """The reading an ``index:`` or ``name:`` prefix of ``--target`` insists on (None without one), and the rest."""
    text = target.strip()
    for kind in ("index", "name"):
        if text.lower().startswith(f"{kind}:"):
            return kind, text[len(kind) + 1:].strip()
    return None, text


def _check_target(target: str | None) -> None:
    """Refuse a ``--target`` that names no class of any model: nothing after ``name:`` (or nothing at all), or no
    number after ``index:``."""
    if target is None:
        return
    kind, text = _split_target(target)
    if kind == "index" and not _is_index(text):
        raise ValueError(f"--target {target!r}: give a class number after index:")
    if not text:
        raise ValueError(f"--target {target!r} names no class: give a class index or name")


def _class_index(target: str | None, labels: list[str]) -> int | None:
    """``--target`` as a class index: a number (``index:N`` to insist), or a class name (``name:TEXT`` to insist;
    any case; a beginning or whole word of one name will do). A number that is also the name of another class is
    ambiguous."""
    if target is None:
        return None
    _check_target(target)
    kind, text = _split_target(target)
    if kind == "name" or (kind is None and not _is_index(text)):
        return _named_class(target, text, labels)
    index = int(text)
    named = [i for i, label in enumerate(labels) if label.strip().lower() == text.lower()]
    if kind is None and named and named[0] != index:
        meant = f"is {labels[index]!r}" if 0 <= index < len(labels) else "is out of range"
        raise ValueError(f"--target {target!r} is ambiguous: class index {index} {meant}, but class {named[0]} is "
                         f"named {text!r}; give --target index:{index} or --target name:{text}")
    return index


def _named_class(target: str, text: str, labels: list[str]) -> int:
    """The class named ``text``: the one whose name it is, else the one whose name begins with it or holds it as a
    whole word (``cat`` is ambiguous among ImageNet's catamaran, tiger cat, Persian cat, ...); on a model whose
    classes have no names, ``class N`` (as printed) is class N."""
    wanted = text.lower()
    exact = [i for i, label in enumerate(labels) if label.lower() == wanted]
    word = re.compile(rf"(?<!\w){re.escape(wanted)}(?!\w)")
    matches = exact or [i for i, label in enumerate(labels)
                        if label.lower().startswith(wanted) or word.search(label.lower())]
    if len(matches) == 1:
        return matches[0]
    if not labels:
        shown = re.fullmatch(r"class\s+(\d+)", wanted, flags=re.ASCII)  # as the top-5 line names them
        if shown:
            return int(shown.group(1))
        raise ValueError(f"--target {target!r}: this model's classes have no names; give a class index")
    if matches:
        raise ValueError(f"--target {target!r} is ambiguous: " + ", ".join(f"{labels[i]} ({i})" for i in matches[:10])
                         + (", ..." if len(matches) > 10 else "") + "; give a whole name or an index")
    close = difflib.get_close_matches(wanted, [label.lower() for label in labels], n=5)
    raise ValueError(f"--target {target!r} is no class of this model" + (f"; did you mean {', '.join(close)}?"
                                                                        if close else ""))


def _target_line(target: str, index: int, name: str) -> str:
    """The class ``--target`` chose, and whether only a beginning or a word of its name was given."""
    kind, text = _split_target(target)
    line = f"explaining class {index}{'' if name == f'class {index}' else f' ({name})'} in every image"
    if kind == "index" or (kind is None and _is_index(text)) or text.lower() == name.lower():
        return line
    how = "prefix" if name.lower().startswith(text.lower()) else "a word of its name"
    return f"{line}: --target {target!r} matched it by {how}"


def demo(
    out: Path = typer.Option(Path("rectgrad-demo.png"), parser=_options.path,
                             help="The grid to write (.png, .pdf, .svg, .jpg, ...)."),
    methods: Optional[str] = typer.Option(None, help=METHODS_HELP),
    final_threshold: bool = typer.Option(False, help=FINAL_THRESHOLD_HELP),
    internal_batch_size: int = typer.Option(25, help="Samples per forward pass for SmoothGrad and IntegGrad, and "
                                                     "images per pass for the top-5 classes."),
    device: str = typer.Option("auto", help=_options.DEVICE_HELP),
    progress: bool = typer.Option(True, help="Show a progress bar."),
    save_maps: Optional[Path] = typer.Option(None, parser=_options.path, help=SAVE_MAPS_HELP),
) -> None:
    """Offline demo: pretrained EfficientNet-Lite0 on scikit-image's photos, every method, one grid."""
    import skimage.data
    from PIL import Image

    from rectgrad import zoo

    names = _options.methods(methods, _figure_methods())
    _check_options(out, save_maps, 98.0, internal_batch_size)
    loaded = zoo.load("efficientnet-lite0", _options.device(device))
    pictures = [Image.fromarray(getattr(skimage.data, photo)()) for photo in DEMO_PHOTOS]
    _compare(loaded, loaded.preprocess(pictures), list(DEMO_PHOTOS), names, q=98.0, out=out, target=None,
             final_threshold=final_threshold, internal_batch_size=internal_batch_size, seed=0, progress=progress,
             save_maps=save_maps, named=methods is not None)


def _compare(loaded, inputs, image_names: list[str], names: list[str], *, q: float, out: Path, target, final_threshold,
             internal_batch_size: int, seed: int, progress: bool, save_maps: Path | None = None,
             target_line: str | None = None, named: bool = True) -> None:
    """``target_line`` once the target is known to be in range, top-5 classes, then every method on every image,
    then the grid (and the raw maps, on request). Methods the user has not ``named`` (the default list) that refuse
    the model are left out with a warning; named ones stop the run."""
    import torch

    from rectgrad import viz
    from rectgrad.attr._arguments import looks_like_probabilities, resolve_targets
    from rectgrad.methods import METHODS, explain, get_method, predict
    from rectgrad.operations import UnsupportedModel
    from rectgrad.progress import progress_bar

    with warnings.catch_warnings(record=True) as caught:  # said of the model: once, not again for every map
        warnings.simplefilter("always")
        logits = predict(loaded.model, inputs, internal_batch_size)
    caught = [w for w in caught if not issubclass(w.category, (DeprecationWarning, PendingDeprecationWarning))]
    of_the_model = {str(warning.message) for warning in caught}
    for warning in caught:
        warnings.warn(warning.message, warning.category, stacklevel=2)
    classes = logits.shape[1]
    if target is not None and not 0 <= target < classes:  # resolve_targets' error would not name the option
        raise ValueError(f"--target {target} is out of range: this model has {classes} classes, so give an index "
                         f"from 0 to {classes - 1} (or a class name)")
    targets = resolve_targets(target, logits)
    if target_line is not None:
        typer.echo(target_line)
    probabilities = (logits if looks_like_probabilities(logits) or classes == 1 else logits.softmax(dim=1)).cpu()
    for name, row in zip(image_names, probabilities):
        top = row.topk(min(5, row.numel()))
        typer.echo(f"{name}: " + ", ".join(f"{loaded.label(i)} {_score(p, classes)}" for p, i in
                                           zip(top.values.tolist(), top.indices.tolist())))
    columns, maps, refused = {}, {method: [None] * len(inputs) for method in names}, {}
    # The first image by every method first, the rule-based methods (those that may refuse the model: eps_lrp and
    # deeplift refuse gating and normalisation) before the others: a refusal costs a few maps, not SmoothGrad's and
    # IntegGrad's many passes over every image.
    order = sorted(names, key=lambda method: not get_method(method).rules)
    steps = [(method, 0) for method in order] + [(method, i) for method in order for i in range(1, len(inputs))]
    bar = progress_bar(len(steps), "attribution", progress, unit="map")
    for method, i in steps:
        if method in refused:
            if bar is not None:
                bar.update()
            continue
        if bar is not None:
            bar.set_description(method, refresh=False)
        options = {"q": q, "final_threshold": final_threshold} if method in RECTGRAD_METHODS else {}
        with warnings.catch_warnings(record=True) as caught:  # said of this image, by name
            warnings.simplefilter("always")
            try:
                maps[method][i] = explain(loaded.model, inputs[i:i + 1], targets[i:i + 1], method,
                                          internal_batch_size=internal_batch_size, seed=seed + i, **options).cpu()
            except UnsupportedModel as exc:  # (eps_lrp on a gated block): a method of the default list is left out
                if named or i > 0 or len(refused) == len(names) - 1:
                    raise
                refused[method] = exc
        for warning in caught:
            if (not issubclass(warning.category, (DeprecationWarning, PendingDeprecationWarning))
                    and str(warning.message) not in of_the_model):  # (said of the model above)
                warnings.warn(f"{method} on {image_names[i]}: {warning.message}", warning.category, stacklevel=2)
        if method in refused:
            warnings.warn(f"{method} left out: {refused[method]} (--methods names the methods to run)", UserWarning,
                          stacklevel=2)
        if bar is not None:
            bar.update()
    if bar is not None:
        bar.close()
    raw = {method: torch.cat(maps.pop(method)) for method in names if method not in refused}  # (one copy at a time)
    if save_maps is not None:  # first: the costly part, should the figure fail
        _save_maps(save_maps, raw, image_names, targets.tolist(), [loaded.label(t) for t in targets.tolist()])
        typer.echo(f"wrote {save_maps}")
    blank = []  # (row, column) of the maps holding NaN or Inf
    for column, (method, maps) in enumerate(raw.items(), start=1):
        finite = torch.isfinite(maps.flatten(1)).all(1)
        for i in (~finite).nonzero().flatten().tolist():  # (viz refuses them: no percentiles, no colour limits)
            warnings.warn(f"{method} on {image_names[i]}: its map holds NaN or Inf values, drawn blank",
                          RuntimeWarning, stacklevel=2)
            blank.append((i, column))
        threshold = ("positive" if method in RECTGRAD_METHODS else "top") if final_threshold else None
        shown = torch.where(finite.view(-1, *[1] * (maps.dim() - 1)), maps, torch.zeros((), dtype=maps.dtype))
        columns[METHODS[method].label] = viz.prepare(shown, threshold=threshold)
    rows = [f"{name}\n{loaded.label(t)} ({_score(float(probabilities[i, t]), classes, short=True)})" for i, (name, t)
            in enumerate(zip(image_names, targets.tolist()))]
    figure = viz.grid(inputs.cpu(), columns, row_labels=rows, mean=loaded.mean, std=loaded.std,
                      title=f"{loaded.name}{', final threshold' if final_threshold else ''}")
    for i, column in blank:  # drawn as zeros, which the panel would call "all zero"
        for text in figure.axes[i * (len(columns) + 1) + column].texts:
            text.set_text("NaN or Inf")
    try:
        typer.echo(f"wrote {viz.save_figure(figure, out)}")
    except viz.FigureTooLargeError as exc:  # (explain draws at save_figure's dpi: it has no --dpi to lower)
        kept = f" (the maps of all are in {save_maps})" if save_maps is not None else " (--save-maps keeps their maps)"
        raise ValueError(f"{exc.size}, for its {len(rows)} row{'s' if len(rows) > 1 else ''} of images: explain "
                         f"fewer at once{kept}") from None


def _score(value: float, classes: int, short: bool = False) -> str:
    """A class's probability as a percentage; a model of one output (a binary classifier's logit, or a score) has
    no softmax over classes (it would always be 100%): its output as it is."""
    if classes == 1:
        return f"output {value:.3g}"
    return f"{value:.0%}" if short else f"{value:.1%}"


def _save_maps(path: Path, maps: dict, image_names: list[str], targets: list[int], classes: list[str]) -> None:
    """The maps as float32 arrays named by method, beside ``images``, ``targets`` and ``classes``."""
    import numpy as np

    from rectgrad.checkpoint import write_atomically

    arrays = {method: m.float().numpy() for method, m in maps.items()}
    write_atomically(path, lambda f: np.savez_compressed(f, **arrays, images=np.array(image_names),
                                                         targets=np.array(targets), classes=np.array(classes)))
