"""``rectgrad train``: train the paper's CNN on Fashion-MNIST, CIFAR-10 or your own images, clean or patch-occluded."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from rectgrad.cli import _options


def register(app: typer.Typer) -> None:
    app.command("train")(train)


def train(
    dataset: str = typer.Option(..., help="fashion-mnist, cifar10, or folder: your own images in --data-dir "
                                          "(ROOT/train/<class>/..., ROOT/test/<class>/...)."),
    out: Path = typer.Option(..., parser=_options.path, help="Checkpoint to write, a .pt, .pth or .ckpt file "
                                                              "(loadable with rectgrad.load_model)."),
    patch: bool = typer.Option(False, help="Paste the fixed 10x10 random patch (seed 100) on every "
                                            "train and test image (paper Sec. 3 and 5.3)."),
    epochs: int = typer.Option(20, help="Training epochs."),
    seed: int = typer.Option(0, help="Seed of the initial weights and of the batch order."),
    batch_size: int = typer.Option(100, help="Batch size."),
    lr: float = typer.Option(1e-3, help="Adam learning rate."),
    data_dir: Optional[Path] = typer.Option(None, parser=_options.path,
                                            help="Folder holding the dataset files (for folder: ROOT)."),
    image_size: Optional[int] = typer.Option(None, help="folder only: the side images are resized to "
                                                        "(a multiple of 4, default 32)."),
    download: bool = typer.Option(False, help="Download a missing dataset into --data-dir, or the cache "
                                              "($RECTGRAD_DATA or ~/.cache/rectgrad) without one."),
    device: str = typer.Option("auto", help=_options.DEVICE_HELP),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Train the paper's CNN (Adam, lr 1e-3, batch 100, 20 epochs) and save a checkpoint.

    Resumable: Ctrl-C or SIGTERM saves its state beside --out (a.unfinished.pt for a.pt); the same command resumes."""
    from rectgrad.checkpoint import save_checkpoint
    from rectgrad.cli.reproduce import _image_size
    from rectgrad.data import RandomPatch, load_dataset
    from rectgrad.train import TrainingInterrupted, new_model, train_model

    device = _options.device(device)
    _options.output_file(out, "--out", (".pt", ".pth", ".ckpt"))  # (not an image's suffix, a .json sidecar's)
    unfinished = _options.output_file(out.with_name(f"{out.stem}.unfinished{out.suffix}"), "--out's state file")
    _options.positive_int(epochs, "--epochs")
    _options.positive_int(batch_size, "--batch-size")
    _options.positive_number(lr, "--lr")
    _options.seed(seed)
    _options.input_folder(data_dir, "--data-dir")
    if dataset == "folder" and data_dir is not None:  # (its state file goes into the same folder)
        _options.no_new_class(out, "--out", data_dir)
    size = _image_size(dataset, image_size)
    train_set = load_dataset(dataset, "train", data_dir=data_dir, download=download, image_size=size, progress=progress)
    test_set = load_dataset(dataset, "test", data_dir=data_dir, download=download, image_size=size, progress=progress)
    occlusion = RandomPatch() if patch else None
    if occlusion is not None:
        train_set, test_set = occlusion.apply(train_set), occlusion.apply(test_set)
    model = new_model(train_set, seed)

    def save(history: dict) -> None:
        save_checkpoint(model, out, dataset=dataset,
                        patch={"size": occlusion.size, "seed": occlusion.seed} if occlusion else None,
                        epochs=epochs, seed=seed, batch_size=batch_size, lr=lr, classes=train_set.classes,
                        test_accuracy=history["test_accuracy"], train_loss=history["loss"],
                        train_accuracy=history["train_accuracy"], train_seconds=history["seconds"],
                        device=str(device))

    try:  # the model is saved before its training's state is deleted
        history = train_model(model, train_set, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                              device=device, progress=progress, test=test_set, checkpoint=unfinished, save=save)
    except TrainingInterrupted as stopped:  # Ctrl-C or SIGTERM: its state (or the model) is saved
        typer.echo(str(stopped).replace("run again", "run the same command again"), err=True)
        raise
    typer.echo(f"test accuracy {history['test_accuracy']:.4f} after {epochs} epoch{'s' if epochs != 1 else ''} "
               f"({history['seconds']:.0f} s); saved {out}")
