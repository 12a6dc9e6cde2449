"""Step time of ``rectgrad.train_many`` (several paper CNNs trained at once, the ROAR/KAR retrainings) for
group sizes, precisions and cuDNN modes, and the time the ``paper`` scale's 270 retrainings would take at
that rate (20 epochs x 600 steps of 100 images each). The images are random uint8 tensors of the dataset's
shape: speed does not depend on their content.

    python benchmarks/train_many_speed.py [--dataset fashion-mnist|cifar10] [--groups 45,90] [--steps 30]
                                          [--precisions fp32,bf16] [--modes deterministic,fast] [--device cuda]
"""
from __future__ import annotations

import argparse

import torch

from rectgrad.data import ImageDataset
from rectgrad.train import new_model
from rectgrad.train_many import train_many
from train_speed import SHAPES, random_dataset  # this folder: run as python benchmarks/train_many_speed.py

PAPER_TRAININGS, PAPER_EPOCHS, BATCH = 270, 20, 100


def step_seconds(dataset: ImageDataset, group: int, steps: int, device: str, precision: str,
                 deterministic: bool) -> float:
    """Seconds per step of ``group`` models, timed over ``steps`` steps after a short warm-up."""
    def run(data: ImageDataset) -> float:
        models = [new_model(data, seed) for seed in range(group)]
        history = train_many(models, [data] * group, list(range(group)), epochs=1, device=device,
                             precision=precision, deterministic=deterministic)
        return history[0]["seconds"]  # ends with .tolist(): CUDA work is done

    run(dataset.subset(slice(0, 5 * BATCH)))
    return run(dataset.subset(slice(0, steps * BATCH))) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", choices=sorted(SHAPES), default="fashion-mnist")
    parser.add_argument("--groups", default="45,90")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--modes", default="deterministic,fast", help="cuDNN: deterministic and/or fast")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    shape, train_size = SHAPES[args.dataset]
    dataset = random_dataset(shape, args.steps * BATCH, args.dataset)
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    paper_steps = PAPER_TRAININGS * PAPER_EPOCHS * -(-train_size // BATCH)  # model-steps
    print(f"{args.dataset} {shape}, batch {BATCH}, {args.steps} timed steps, {name}, torch {torch.__version__}")
    for group in (int(g) for g in args.groups.split(",")):
        for precision in args.precisions.split(","):
            for mode in args.modes.split(","):
                seconds = step_seconds(dataset, group, args.steps, args.device, precision, mode == "deterministic")
                rate = group / seconds
                print(f"  {group:4d} models  {precision}  {mode:13s}  {seconds * 1000:7.1f} ms/step  "
                      f"{rate:7.0f} model-steps/s  paper-scale retrainings {paper_steps / rate / 60:5.1f} min",
                      flush=True)


if __name__ == "__main__":
    main()
