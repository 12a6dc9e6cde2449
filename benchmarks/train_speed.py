"""Training speed of the paper's CNN with ``rectgrad.train.train_model``: images/second over one epoch,
median of a few timed epochs, on CPU and on CUDA when available, in the default channels-last memory
format and in the contiguous one (optionally also under ``torch.compile``). The images are random
uint8 tensors of the dataset's shape: speed does not depend on their content.

    python benchmarks/train_speed.py [--dataset fashion-mnist|cifar10] [--images 10000] [--repeats 3]
                                     [--devices cpu,cuda] [--compile]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from rectgrad.data import ImageDataset
from rectgrad.train import new_model, train_model

SHAPES = {"fashion-mnist": ((1, 28, 28), 60000), "cifar10": ((3, 32, 32), 50000)}


def random_dataset(shape, images: int, name: str) -> ImageDataset:
    """``images`` random uint8 images of ``shape`` with random labels (speed does not depend on content)."""
    g = torch.Generator().manual_seed(0)
    return ImageDataset(torch.randint(0, 256, (images, *shape), generator=g, dtype=torch.uint8),
                        torch.randint(0, 10, (images,), generator=g), [str(i) for i in range(10)], name)


def epoch_runner(dataset: ImageDataset, device: str, channels_last: bool, compile_model: bool):
    """A warmed-up function training one model (continuing each call) for one epoch of ``dataset``."""
    model = new_model(dataset).to(device)
    if compile_model:
        model = torch.compile(model)

    def run(data: ImageDataset = dataset) -> None:  # ends with .item(): CUDA work is done on return
        train_model(model, data, epochs=1, device=device, progress=False, channels_last=channels_last)

    run(dataset.subset(slice(0, 1000)))  # warm-up: allocator, cuDNN, compilation
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", choices=sorted(SHAPES), default="fashion-mnist")
    parser.add_argument("--images", type=int, default=10000, help="images per timed epoch")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--devices", default="cpu,cuda", help="comma-separated; cuda is skipped when absent")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile'd models")
    args = parser.parse_args()

    shape, full_size = SHAPES[args.dataset]
    dataset = random_dataset(shape, args.images, args.dataset)
    print(f"{args.dataset}: epochs of {args.images} images {shape}, batch 100, median of {args.repeats}; "
          f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    devices = [d for d in args.devices.split(",") if d != "cuda" or torch.cuda.is_available()]
    for device in devices:
        name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
        variants = {("channels-last" if cl else "contiguous") + (" compiled" if comp else ""):
                    epoch_runner(dataset, device, cl, comp)
                    for comp in ([False, True] if args.compile else [False]) for cl in (True, False)}
        times = {variant: [] for variant in variants}
        for _ in range(args.repeats):  # interleaved, so drifts in machine load hit every variant alike
            for variant, run in variants.items():
                if device == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
                run()
                times[variant].append(time.perf_counter() - start)
        for variant, seconds in times.items():
            rate = args.images / statistics.median(seconds)
            print(f"{name:>24} {variant:<24} {rate:9.0f} images/s   full epoch ({full_size}) "
                  f"{full_size / rate:6.1f} s   20 epochs {20 * full_size / rate / 60:6.1f} min", flush=True)


if __name__ == "__main__":
    main()
