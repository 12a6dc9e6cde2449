"""``rectgrad reproduce``: the paper's quantitative experiments (Figs. 2, 3, 7, 8, 9, Table 1) on real data."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from rectgrad.cli import _options


def register(app: typer.Typer) -> None:
    app.command("reproduce")(reproduce)


def reproduce(
    dataset: str = typer.Option(..., help="fashion-mnist, cifar10, or folder: your own images in --data-dir "
                                          "(ROOT/train/<class>/..., ROOT/test/<class>/...)."),
    scale: str = typer.Option("quick", help="smoke (about a minute, CI), quick (about 16 min on 2 idle CPU cores) or "
                                            "paper (the full protocol: 270 ROAR/KAR trainings of 20 epochs)."),
    overrides: Optional[List[str]] = typer.Option(
        None, "--set", metavar="KEY=VALUE", help="Replace one of the scale's parameters (repeatable; VALUE in JSON), "
        "e.g. --set roar_epochs=10 --set repeats=2 --set 'fractions=[0.1,0.5,0.9]' --set model_images=null (all); "
        "docs/evaluation.md lists the keys."),
    out: Path = typer.Option(..., parser=_options.path, help="Report folder: PNG figures, CSV tables, README.md."),
    work_dir: Optional[Path] = typer.Option(None, parser=_options.path, help="Results folder (models, attribution "
                                            "maps, measurements; reused on reruns). Default: OUT/work."),
    methods: str = typer.Option("all", help="Comma-separated methods, or 'all' (the paper's: random, rectgrad, "
                                            "rectgrad_prr, saliency, guided_bp, smoothgrad, grad_input, intgrad, "
                                            "deeplift; deconv and eps_lrp may be named too). A --work-dir of "
                                            "other methods keeps them and takes these too."),
    data_dir: Optional[Path] = typer.Option(None, parser=_options.path,
                                            help="Folder holding the dataset files (for folder: ROOT)."),
    image_size: Optional[int] = typer.Option(None, help="folder only: the side images are resized to "
                                                        "(a multiple of 4, default 32)."),
    masks: Optional[Path] = typer.Option(None, parser=_options.path,
                                         help="cifar10 only: folder of the paper's masked images "
                                              "(<class>_<n>.jpg + _mask.jpg). Default: "
                                              "cifar10_masks in $RECTGRAD_DATA, else in ~/.cache/rectgrad."),
    download: bool = typer.Option(False, help="Download a missing dataset into --data-dir (or the cache), and for "
                                               "cifar10 the paper's masked images into --masks (or the cache)."),
    device: str = typer.Option("auto", help=_options.DEVICE_HELP),
    group: int = typer.Option(0, help="ROAR/KAR models trained at once on the device (0: 135 on CUDA, a "
                                     "whole ROAR or KAR sweep of the paper scale; 1 on CPU). Lower it on small GPUs."),
    precision: str = typer.Option("fp32", help="fp32, or bf16: bfloat16 autocast for the models trained at once "
                                               "(--group > 1), about twice as fast on recent GPUs."),
    deterministic: bool = typer.Option(True, "--deterministic/--nondeterministic",
                                       help="cuDNN mode of the models trained at once: deterministic (rerunnable "
                                            "bit for bit), or its fastest algorithms."),
    backend: str = typer.Option("local", help="local, or ray: run the ROAR/KAR trainings as Ray tasks."),
    address: Optional[str] = typer.Option(None, help="Ray cluster address (default: a running or new local one)."),
    ray_cpus: float = typer.Option(1.0, help="CPUs per Ray training task."),
    ray_gpus: float = typer.Option(0.0, help="GPUs per Ray training task (a fraction shares a GPU); > 0 trains "
                                             "on CUDA inside the tasks."),
    seed: int = typer.Option(0, help="Seed of the clean and patch models (initial weights, batch order), of "
                                     "SmoothGrad's noise, of Fig. 2's random orders and of ROAR/KAR's tie-breaking "
                                     "noise and random masks. Not of the ROAR/KAR retrainings: seeds 0 .. repeats-1 "
                                     "whatever it is; the random patch: seed 100."),
    tie_noise: float = typer.Option(1e-4, help="Standard deviation of the Gaussian noise added to the ROAR/KAR "
                                               "pixel scores (channel-summed maps) to break ties: absolute, 1e-4 as "
                                               "the paper's code; 0 breaks ties by pixel index. Part of the results' "
                                               "configuration."),
    progress: bool = typer.Option(True, help="Show progress bars."),
) -> None:
    """The paper's evaluation (Figs. 2, 3, 7, 8, 9, Table 1): figures, tables and a README with its numbers.

    Trains (or reuses) the clean and patch-occluded models and runs every experiment for every method.

    Resumable: rerun the same command after Ctrl-C or SIGTERM (models being trained save their state first).
    """
    import math
    import time

    import torch

    from rectgrad.evaluation import METHODS, LocalBackend, RayBackend, Settings
    from rectgrad.evaluation import reproduce as run
    from rectgrad.report import check_report_folder, write_report
    from rectgrad.train_many import TrainingInterrupted

    start = time.perf_counter()
    # Before torch starts its CPU threads (they inherit the setting): ROAR/KAR images with large constant
    # regions drive the weights' gradients to subnormal floats, which made CPU trainings up to 7x slower.
    flushed_before = _denormals_flushed()
    torch.set_flush_denormal(True)
    try:
        device = _options.device(device)
        _options.seed(seed)
        if not (math.isfinite(tie_noise) and tie_noise >= 0):  # (refused as tie_noise, a name the command lacks)
            raise ValueError(f"--tie-noise must be a finite standard deviation >= 0, got {tie_noise}")
        names = _options.methods(methods, METHODS, every=METHODS)
        if group < 0:
            raise ValueError(f"--group must be >= 0, got {group}")
        if precision not in ("fp32", "bf16"):
            raise ValueError(f"--precision must be fp32 or bf16, got {precision!r}")
        if backend == "local":
            given = [option for option, value, default in (("--address", address, None), ("--ray-cpus", ray_cpus, 1.0),
                                                           ("--ray-gpus", ray_gpus, 0.0)) if value != default]
            if given:
                raise ValueError(f"{' and '.join(given)} need{'s' if len(given) == 1 else ''} --backend ray")
            runner, retrain_device = LocalBackend(group or (135 if device.startswith("cuda") else 1)), device
        elif backend == "ray":
            if group:
                raise ValueError("--group applies to --backend local: a Ray task trains one model (--ray-gpus shares a "
                                 "GPU between tasks)")
            if not (0 < ray_cpus < math.inf and 0 <= ray_gpus < math.inf):  # (NaN fails too)
                raise ValueError(f"--ray-cpus must be > 0 and --ray-gpus >= 0, both finite, got {ray_cpus} and "
                                 f"{ray_gpus}")
            if any(0 < share < 1e-4 for share in (ray_cpus, ray_gpus)):
                raise ValueError("--ray-cpus and --ray-gpus: Ray counts them in steps of 0.0001 and refuses a smaller "
                                 f"share: give at least 0.0001 (or --ray-gpus 0), got {ray_cpus} and {ray_gpus}")
            runner, retrain_device = RayBackend(address, ray_cpus, ray_gpus), "cuda" if ray_gpus > 0 else "cpu"
        else:
            raise ValueError(f"--backend must be local or ray, got {backend!r}")
        if precision == "bf16" and not (backend == "local" and runner.group > 1):  # (it would change nothing)
            raise ValueError("--precision bf16 applies to the models trained at once: --backend local with --group > 1 "
                             "(the default on CUDA; 1 on CPU)")
        _options.input_folder(data_dir, "--data-dir")
        _options.input_folder(masks, "--masks")
        _options.output_folder(out, "--out")
        check_report_folder(out)
        work = _options.output_folder(work_dir, "--work-dir") if work_dir is not None else out / "work"
        _results_folder_not_report(out, work)
        if dataset == "folder" and data_dir is not None:
            for path, option in ((out, "--out"), (work_dir, "--work-dir")):  # (the default work folder is in OUT)
                if path is not None:
                    _options.outside_splits(path, option, data_dir)
        settings = Settings(device=device, backend=runner, retrain_device=retrain_device, precision=precision,
                            deterministic=deterministic, progress=progress)
        try:
            run(dataset, scale, work, data_dir=data_dir, masks_dir=masks, download=download, methods=names, seed=seed,
                settings=settings, image_size=_image_size(dataset, image_size), overrides=_overrides(overrides or []),
                tie_noise=tie_noise)
            readme = write_report(work, out)
        except TrainingInterrupted as stopped:  # Ctrl-C or SIGTERM while models train: say where their state is
            typer.echo(str(stopped), err=True)
            raise
        except KeyboardInterrupt:
            if work.is_dir():  # (else stopped before the results folder was made: nothing to resume)
                typer.echo(f"stopped: every finished unit of work is saved in {work}; run the same command again to "
                           "resume", err=True)
            raise
        typer.echo(f"report written to {readme} ({time.perf_counter() - start:.0f} s); results in {work}")
    finally:  # the process's setting as it was (the command may run inside a Python session)
        torch.set_flush_denormal(flushed_before)


def _denormals_flushed() -> bool:
    """Whether this thread flushes subnormal floats to zero (``torch.set_flush_denormal``, which has no getter)."""
    import torch

    return bool((torch.tensor([1e-40]) * 1.0).item() == 0.0)


def _results_folder_not_report(out: Path, work: Path) -> None:
    """``--out`` is no results folder (one holding a ``config.json``) but that of the results themselves: the run
    would start again from nothing in OUT/work, inside it, rather than resume it."""
    from rectgrad.evaluation.store import CONFIG

    if (out / CONFIG).is_file() and not (work.is_dir() and work.resolve() == out.resolve()):
        raise ValueError(f"--out {out} is a results folder (it holds {CONFIG}): give it as --work-dir to resume "
                         f"it, and another folder as --out for the report (e.g. --work-dir {out} --out "
                         f"{out.parent / 'report'})")


def _image_size(dataset: str, image_size: int | None) -> int:
    """``--image-size`` applies to the folder dataset only (default 32), checked by its name before any work."""
    from rectgrad.data import check_image_size

    if image_size is not None and dataset != "folder":
        raise ValueError(f"--image-size applies to --dataset folder only; {dataset} images have their own size")
    if image_size is not None:
        check_image_size(image_size, "--image-size")
    return 32 if image_size is None else image_size


def _overrides(items: list[str]) -> dict:
    """``--set KEY=VALUE`` options as a dict of JSON values (the scale checks keys and values)."""
    import json

    overrides = {}
    for item in items:
        key, sign, value = item.partition("=")
        key = key.strip()
        if not sign or not key:
            raise ValueError(f"--set takes KEY=VALUE, e.g. --set roar_epochs=10, got {item!r}")
        if key in overrides:
            raise ValueError(f"--set gives {key} twice")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            raise ValueError(f"--set {key}: {value!r} is no JSON value; e.g. 10, null (all images), "
                             "[0.1,0.5,0.9] or '{\"smoothgrad\": {\"samples\": 10}}'") from None
    return overrides
