"""``rectgrad study NAME``: the paper's picture-based arguments (Sec. 3, 5.1, 5.2, App. A, B) on your model."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from rectgrad.cli import _options

IMAGES = typer.Argument(None, parser=_options.path,
                        help="Image files or folders (a <name>_mask.* file beside an image is its object mask); or "
                             "use --dataset.", show_default=False)
MODEL = typer.Option("efficientnet-lite0", help="Registry name (efficientnet-lite0, inception-v4, ...) or a model "
                                                "file (rectgrad checkpoint, torch.save'd module, TorchScript, .pt2).")
OUT = typer.Option(..., parser=_options.path,
                   help="Folder for the figures (PNG), numbers (CSV) and summary (markdown).")
DATASET = typer.Option(None, help="Take test images of fashion-mnist, cifar10, cifar10-masked (the paper's "
                                  "masked CIFAR-10 JPEGs in --data-dir, else the cache's cifar10_masks, BGR flipped "
                                  "to RGB, with their masks) or "
                                  "folder (your own, --data-dir ROOT) instead of image files (Fashion-MNIST images "
                                  "get object masks).")
COUNT = typer.Option(4, help="With --dataset: how many test images (the first of classes 0, 1, ...).")
DATA_DIR = typer.Option(None, parser=_options.path, help="With --dataset: folder holding the dataset files.")
DOWNLOAD = typer.Option(False, help="With --dataset: download a missing dataset into --data-dir, or the cache "
                                    "($RECTGRAD_DATA or ~/.cache/rectgrad) without one.")
WEIGHTS = typer.Option(None, parser=_options.path, help="Local state-dict file for a registry model (offline use).")
DEVICE = typer.Option("auto", help=_options.DEVICE_HELP)
DPI = typer.Option(150, help="Resolution of the PNG figures, in dots per inch (at least 10).")
PROGRESS = typer.Option(True, help="Show a progress bar over the methods.")
METHODS = typer.Option(None, "--method", "--methods", help="Attribution methods: comma-separated or repeated, or "
                                                          "'all' alone for every method; default: the paper's "
                                                          "comparison (Sec. 5.2).")
SHOW = typer.Option(None, help="How many images (the first) the figures draw; the numbers use all. "
                               "Default: the study's (4 or 8).")
BATCH = typer.Option(16, help="Process at most this many samples (noisy copies, integration steps) at a "
                              "time: bounds memory.")

IMAGES_BATCH = typer.Option(16, help="Process at most this many images at a time (one forward/backward pass "
                                     "each): bounds memory; the results are one batch's, up to float rounding.")

# The tables and figures each study writes (the command's --show is at least 1: its image figures are all drawn);
# rules writes its toy table alone without images, feature-maps a figure per image drawn, named after it.
_WRITES = {"threshold": (("sparsity",), ("maps", "sparsity")),
           "coherence": (("similarity",), ("maps", "maps_thresholded")),
           "adversarial": (("sensitivity", "images"), ("maps", "maps_thresholded")),
           "layers": (("layers",), ("grid",)),
           "feature-maps": (("layers", "images"), ()),
           "rules": (("toy_b2", "maps"), ("grid",))}
_RULES_TOY_ALONE = (("toy_b2",), ())

study_app = typer.Typer(no_args_is_help=True, help="The paper's figures as commands, each with numbers.")


def register(app: typer.Typer) -> None:
    app.add_typer(study_app, name="study")


def _load(ctx: typer.Context, model: Optional[str], images: Optional[List[Path]], dataset: Optional[str], count: int,
          data_dir: Optional[Path], download: bool, device: str, out: Path, dpi: int, show: Optional[int],
          per_class: int = 1, internal_batch_size: Optional[int] = None, qs: tuple[float, ...] = (),
          weights: Optional[Path] = None):
    """The options of the study ``ctx`` runs checked, and the image files read once, before the model loads (a
    registry model may download hundreds of MB), then the model (eval mode, on ``device``) and the
    :class:`rectgrad.studies.Images` to explain."""
    from rectgrad import zoo
    from rectgrad.data import image_files
    from rectgrad.studies import images_from_dataset, images_from_files
    from rectgrad.studies._common import check_dataset

    study = ctx.info_name  # (threshold, feature-maps, ...)
    device = _options.device(device)
    _check_outputs(out, dpi, show)
    _options.positive_int(count, "--count")
    _options.input_folder(data_dir, "--data-dir")
    _options.positive_int(internal_batch_size, "--internal-batch-size")
    for q in qs:
        _options.percentile(q)
    _options.folder_apart_from_inputs(out, "--out", images, data_dir if dataset == "folder" else None,
                                      study.replace("-", "_"))
    _check_files(out, study, _WRITES[study])
    if bool(images) == (dataset is not None):
        raise ValueError("give image files or folders or --dataset (exactly one of them)")
    if dataset is not None:  # (a mistyped name told now, not once the model has loaded)
        check_dataset(dataset, data_dir, download)
    if images:
        _refuse_given(ctx, ["count", "data_dir", "download"],
                      "with image files (only with --dataset)")
        for path in image_files(images):  # each read (and let go): a mistyped or broken file is told first
            zoo.read_image(path)
    loaded = zoo.load(model, device=device, weights=weights)
    for line in (loaded.note or "").splitlines():
        typer.echo(f"note: {line}", err=True)
    if loaded.channels not in (1, 3):
        raise ValueError(f"{loaded.name} takes {loaded.channels}-channel inputs, but images are read as grayscale "
                         f"(1 channel) or RGB (3) only: make the (N, {loaded.channels}, H, W) input tensor yourself "
                         f"and run the study in Python, rectgrad.studies.{study.replace('-', '_')}(model, "
                         "rectgrad.studies.Images(x, names), out=...)")
    chosen = (images_from_dataset(dataset, count, per_class, data_dir, download=download, loaded=loaded)
              if dataset else images_from_files(loaded, images))
    chosen = _as_model_input(chosen.to(device), loaded.model)
    if study == "feature-maps":  # its figures' names, of the images it may draw, known now (before the work)
        from rectgrad.studies._common import check_study_folder, file_names
        from rectgrad.studies.feature_maps import figure_names

        check_study_folder(out, study, file_names(study, (), figure_names(chosen.names))[1:])
    _probe(loaded, chosen, dataset)
    size, wanted = tuple(chosen.x.shape[-2:]), tuple(loaded.input_size)
    if size != wanted and not loaded.size_assumed:  # a model that pools any size runs, on images it was not made for
        raise ValueError(f"{loaded.name} takes {wanted[0]}x{wanted[1]} images, the {dataset} images are "
                         f"{size[0]}x{size[1]}: give a model trained on {dataset}, or --dataset folder or image files "
                         "(resized to the model's input)")
    return loaded.model, chosen  # zoo.load gives it in eval mode


def _as_model_input(images, model):
    """``images`` in the floating type of the model's weights: image files and datasets are read as float32, which
    a float64 (or half-precision) model refuses, and which the user of the command line cannot change."""
    import dataclasses

    from rectgrad.train import input_dtype

    dtype = input_dtype(model)
    return images if dtype == images.x.dtype else dataclasses.replace(images, x=images.x.to(dtype))


def _probe(loaded, chosen, dataset: Optional[str]) -> None:
    """One image through the model first: a model made for other images fails here, in one clear line, whatever
    it raises (a size check by ``assert`` as much as a convolution's RuntimeError), before the study's work."""
    import torch

    from rectgrad.checkpoint import one_line

    try:
        with torch.no_grad():
            loaded.model(chosen.x[:1])
    except (MemoryError, torch.cuda.OutOfMemoryError):
        raise
    except Exception as exc:  # noqa: BLE001 - the user's model refusing the user's images
        advice = ("give a model made for them, or image files (resized to the model's input)" if dataset else
                  "give a model made for such images, or a model file's input size as input_size [channels, height, "
                  "width] in the .json beside it")
        raise ValueError(f"the model cannot take the {dataset or 'given'} images, "
                         f"{'x'.join(map(str, chosen.x.shape[1:]))} (channels x height x width): {one_line(exc)}; "
                         f"{advice}") from None


def _methods(given: Optional[List[str]], default: tuple[str, ...]) -> tuple[str, ...]:
    """``--method``: repeated, comma-separated (as ``explain``'s ``--methods``) or both, or ``all`` alone; checked
    before the model loads."""
    return tuple(_options.methods(",".join(given) if given else None, default))


def _refuse_given(ctx: typer.Context, names: List[str], why: str) -> None:
    """Refuse the options among ``names`` given on the command line: they would be ignored (``why``)."""
    given = [f"--{name.replace('_', '-')}" for name in names
             if ctx.get_parameter_source(name).name == "COMMANDLINE"]
    if given:
        raise ValueError(f"{', '.join(given)} {'has' if len(given) == 1 else 'have'} no use {why}")


def _check_files(out: Path, study: str, writes: tuple[tuple[str, ...], ...]) -> None:
    """Refuse, before any work, a file of the user's in ``--out`` (or a folder) of a name the study writes (``writes``:
    its tables and figures; feature-maps' figures, named after the images, are checked once they are read)."""
    from rectgrad.studies._common import check_study_folder, file_names

    check_study_folder(out, study, file_names(study, *writes))


def _check_outputs(out: Path, dpi: int, show: Optional[int]) -> None:
    """The output options checked before any work."""
    from rectgrad.viz import MIN_DPI

    _options.output_folder(out, "--out")
    _options.positive_int(dpi, "--dpi")
    if dpi < MIN_DPI:  # (else the numbers written, the figures failing on their text: "invalid ppem value")
        raise ValueError(f"--dpi must be at least {MIN_DPI} (the figures' text cannot be drawn at fewer dots per "
                         f"inch), got {dpi}")
    _options.positive_int(show, "--show")


def _shown(show: Optional[int]) -> dict:
    return {} if show is None else {"show": show}


def _finish(result, out: Path, dpi: int) -> None:
    """Write ``result`` into ``out`` and print its summary; running out of memory there is the figures' size, which
    ``--dpi`` sets (the numbers, written first, are kept)."""
    from rectgrad.viz import FigureTooLargeError

    try:
        files = result.save(out, dpi=dpi)
    except MemoryError:
        raise ValueError(f"--dpi {dpi}: out of memory drawing the figures at this resolution (the numbers and the "
                         f"summary are in {out}); give a smaller --dpi") from None
    except FigureTooLargeError as exc:  # (refused before drawing: "dpi N makes a W x H pixel image ...")
        raise ValueError(f"--{exc}; the numbers and the summary are in {out}") from None
    typer.echo(result.markdown())
    typer.echo(f"wrote {', '.join(path.name for path in files)} to {out}")


@study_app.command("threshold")
def threshold(ctx: typer.Context, images: Optional[List[Path]] = IMAGES, model: str = MODEL, out: Path = OUT,
              weights: Optional[Path] = WEIGHTS,
              q: Optional[List[float]] = typer.Option(None, help="Percentiles (repeatable; taken in increasing "
                                                                  "order, each once); default 0 10 20 80 90 95 99 "
                                                                  "(Fig. 4)."),
              padding_trick: bool = typer.Option(True, help="Zero-padding trick (Appendix C.1)."),
              dataset: Optional[str] = DATASET, count: int = COUNT, data_dir: Optional[Path] = DATA_DIR,
              download: bool = DOWNLOAD, internal_batch_size: Optional[int] = IMAGES_BATCH,
              show: Optional[int] = SHOW, device: str = DEVICE, dpi: int = DPI) -> None:
    """Fig. 4: RectGrad for tau = 0 and each q, with the sparsity curve."""
    from rectgrad import studies

    net, chosen = _load(ctx, model, images, dataset, count, data_dir, download, device, out, dpi, show,
                        internal_batch_size=internal_batch_size, qs=tuple(q or ()), weights=weights)
    kwargs = {"qs": tuple(q)} if q else {}
    _finish(studies.threshold(net, chosen, padding_trick=padding_trick, internal_batch_size=internal_batch_size,
                              **kwargs, **_shown(show)), out, dpi)


@study_app.command("coherence")
def coherence(ctx: typer.Context, images: Optional[List[Path]] = IMAGES, model: str = MODEL, out: Path = OUT,
              weights: Optional[Path] = WEIGHTS,
              method: Optional[List[str]] = METHODS, seed: int = typer.Option(0, help="Seed of SmoothGrad's noise."),
              dataset: Optional[str] = DATASET,
              count: int = typer.Option(8, help="With --dataset: how many test images, the first two of each "
                                                "class in turn."),
              data_dir: Optional[Path] = DATA_DIR, download: bool = DOWNLOAD,
              internal_batch_size: Optional[int] = BATCH, show: Optional[int] = SHOW, device: str = DEVICE,
              dpi: int = DPI, progress: bool = PROGRESS) -> None:
    """Figs. 5a, 12: all methods with and without final threshold; similarity within vs across classes."""
    from rectgrad import studies

    _options.seed(seed)
    names = _methods(method, studies.COMPARED)
    net, chosen = _load(ctx, model, images, dataset, count, data_dir, download, device, out, dpi, show,
                        per_class=2, internal_batch_size=internal_batch_size, weights=weights)
    _finish(studies.coherence(net, chosen, methods=names, seed=seed, internal_batch_size=internal_batch_size,
                              progress=progress, **_shown(show)), out, dpi)


@study_app.command("adversarial")
def adversarial(ctx: typer.Context, images: Optional[List[Path]] = IMAGES, model: str = MODEL, out: Path = OUT,
                weights: Optional[Path] = WEIGHTS,
                eps: float = typer.Option(0.01, help="FGSM step on pixels scaled to [-1, 1] (the paper's 0.01)."),
                method: Optional[List[str]] = METHODS,
                seed: int = typer.Option(0, help="Seed of SmoothGrad's noise and of the control noise."),
                dataset: Optional[str] = DATASET, count: int = COUNT, data_dir: Optional[Path] = DATA_DIR,
                download: bool = DOWNLOAD, internal_batch_size: Optional[int] = BATCH, show: Optional[int] = SHOW,
                device: str = DEVICE, dpi: int = DPI, progress: bool = PROGRESS) -> None:
    """Figs. 5b, 13: maps of each image and its FGSM twin; how much each method's map changes."""
    from rectgrad import studies

    _options.positive_number(eps, "--eps")
    _options.seed(seed)
    names = _methods(method, studies.COMPARED)
    net, chosen = _load(ctx, model, images, dataset, count, data_dir, download, device, out, dpi, show,
                        internal_batch_size=internal_batch_size, weights=weights)
    _finish(studies.adversarial(net, chosen, eps=eps, methods=names, seed=seed,
                                internal_batch_size=internal_batch_size, progress=progress, **_shown(show)), out, dpi)


@study_app.command("layers")
def layers(ctx: typer.Context, images: Optional[List[Path]] = IMAGES, model: str = MODEL, out: Path = OUT,
           weights: Optional[Path] = WEIGHTS,
           q: float = typer.Option(98.0, help="RectGrad's percentile."),
           layer: Optional[List[str]] = typer.Option(None, help="Module name whose input to attribute to "
                                                                "(repeatable); default: spread over the convs."),
           max_layers: int = typer.Option(8, help="Without --layer: how many layers (refused with --layer)."),
           dataset: Optional[str] = DATASET, count: int = COUNT, data_dir: Optional[Path] = DATA_DIR,
           download: bool = DOWNLOAD, internal_batch_size: Optional[int] = IMAGES_BATCH, show: Optional[int] = SHOW,
           device: str = DEVICE, dpi: int = DPI) -> None:
    """Figs. 6, 11: Saliency vs RectGrad at hidden layers; background share per layer."""
    from rectgrad import studies

    _options.positive_int(max_layers, "--max-layers")
    if layer:
        _refuse_given(ctx, ["max_layers"], "with --layer (the layers named are taken, all of them)")
    net, chosen = _load(ctx, model, images, dataset, count, data_dir, download, device, out, dpi, show,
                        internal_batch_size=internal_batch_size, qs=(q,), weights=weights)
    _finish(studies.layers(net, chosen, q=q, layer_names=layer or None, max_layers=max_layers,
                           internal_batch_size=internal_batch_size, **_shown(show)), out, dpi)


@study_app.command("feature-maps")
def feature_maps(ctx: typer.Context, images: Optional[List[Path]] = IMAGES, model: str = MODEL, out: Path = OUT,
                 weights: Optional[Path] = WEIGHTS,
                 channels: int = typer.Option(8, help="Most active channels shown per layer."),
                 max_layers: int = typer.Option(8, help="Layers shown, spread from first to last."),
                 dataset: Optional[str] = DATASET, count: int = COUNT, data_dir: Optional[Path] = DATA_DIR,
                 download: bool = DOWNLOAD, internal_batch_size: Optional[int] = IMAGES_BATCH,
                 show: Optional[int] = SHOW, device: str = DEVICE, dpi: int = DPI) -> None:
    """Fig. 10: feature maps of the convolutional layers; active units on the background."""
    from rectgrad import studies

    _options.positive_int(channels, "--channels")
    _options.positive_int(max_layers, "--max-layers")
    net, chosen = _load(ctx, model, images, dataset, count, data_dir, download, device, out, dpi, show,
                        internal_batch_size=internal_batch_size, weights=weights)
    _finish(studies.feature_maps(net, chosen, channels=channels, max_layers=max_layers,
                                 internal_batch_size=internal_batch_size, **_shown(show)), out, dpi)


@study_app.command("rules")
def rules(ctx: typer.Context, images: Optional[List[Path]] = IMAGES,
          model: Optional[str] = typer.Option(None, help="With images or --dataset: the model to explain (default "
                                                         "efficientnet-lite0)."),
          weights: Optional[Path] = WEIGHTS, out: Path = OUT,
          q: float = typer.Option(98.0, help="Percentile for the maps."),
          dataset: Optional[str] = DATASET, count: int = COUNT, data_dir: Optional[Path] = DATA_DIR,
          download: bool = DOWNLOAD, internal_batch_size: Optional[int] = IMAGES_BATCH,
          show: Optional[int] = SHOW, device: str = DEVICE, dpi: int = DPI) -> None:
    """Appendix B, Fig. 14: the B.2 toy numbers; with images or --dataset, also PR1-PR4 and RectGradMod maps.

    The options other than --out apply only to the maps."""
    from rectgrad import studies

    if images or dataset is not None:  # (--dataset "" is refused as unknown, not taken for no --dataset)
        net, chosen = _load(ctx, model or "efficientnet-lite0", images, dataset, count, data_dir, download,
                            device, out, dpi, show, internal_batch_size=internal_batch_size, qs=(q,), weights=weights)
    else:
        _refuse_given(ctx, ["model", "weights", "q", "count", "data_dir", "download", "internal_batch_size", "show",
                            "device", "dpi"], "without images or --dataset (rules then prints the B.2 toy alone)")
        _check_outputs(out, dpi, show)
        _check_files(out, ctx.info_name, _RULES_TOY_ALONE)
        net, chosen = None, None
    _finish(studies.rules(net, chosen, q=q, internal_batch_size=internal_batch_size, **_shown(show)), out, dpi)
