"""Time RectGrad against the physical floor (one forward + one backward: gradient x input) and
Captum's GuidedBackprop, side by side in one process; prints medians and ratios.

On the CPU RectGrad is timed with its compiled gate (rectgrad.cpu_gate) and with the pure-PyTorch selection.
Both wall-clock and process CPU time are reported: on a shared machine the CPU-time ratio is the
steadier of the two (other processes inflate wall time unevenly).

    python benchmarks/attribution_speed.py [--repeats 7] [--device cpu|cuda] [--models cnn,resnet50]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings

import torch
from captum.attr import GuidedBackprop as CaptumGuidedBackprop

from rectgrad import PaperCNN, RectGrad, cpu_gate


def gradient_x_input(model, x, target):
    x = x.detach().requires_grad_()
    score = model(x).gather(1, target[:, None]).sum()
    (grad,) = torch.autograd.grad(score, x)
    return grad * x


def without_cpu_kernel(fn):
    """``fn()`` with the compiled CPU gate turned off (rectgrad.cpu_gate): the pure-PyTorch selection."""
    before = os.environ.get("RECTGRAD_CPU_KERNEL")
    os.environ["RECTGRAD_CPU_KERNEL"] = "0"
    try:
        return fn()
    finally:
        if before is None:
            del os.environ["RECTGRAD_CPU_KERNEL"]
        else:
            os.environ["RECTGRAD_CPU_KERNEL"] = before


def timed(fn, device) -> tuple[float, float]:
    """Wall-clock and process CPU seconds of one call."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - wall, time.process_time() - cpu


def bench(name, model, x, repeats, device):
    model = model.to(device).eval()
    x = x.to(device)
    target = model(x).argmax(1)
    candidates = {
        "gradient x input": lambda: gradient_x_input(model, x, target),
        "RectGrad q=98": lambda: RectGrad(model).attribute(x, target=target, q=98.0),
        "RectGrad q=98, PyTorch selection": lambda: without_cpu_kernel(
            lambda: RectGrad(model).attribute(x, target=target, q=98.0)),
        "RectGrad q=98 + PRR + padding": lambda: RectGrad(model).attribute(x, target=target, q=98.0, prr=True,
                                                                           padding_trick=True),
        "Captum GuidedBackprop": lambda: CaptumGuidedBackprop(model).attribute(x, target=target),
    }
    times = {key: [] for key in candidates}
    for fn in candidates.values():  # warm-up
        fn()
    for _ in range(repeats):  # interleaved, so drifts in machine load hit every method alike
        for key, fn in candidates.items():
            times[key].append(timed(fn, device))
    floor = [statistics.median(t[i] for t in times["gradient x input"]) for i in (0, 1)]
    print(f"\n{name} ({tuple(x.shape)}, {device}, {repeats} repeats; ratio = time / gradient x input time)")
    for key, values in times.items():
        wall, cpu = (statistics.median(t[i] for t in values) for i in (0, 1))
        print(f"  {key:32s} wall {wall * 1000:8.1f} ms (ratio {wall / floor[0]:4.2f})   "
              f"cpu {cpu * 1000:8.1f} ms (ratio {cpu / floor[1]:4.2f})")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--models", default="cnn,resnet50")
    args = parser.parse_args()
    device = torch.device(args.device)
    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    if device.type == "cpu":
        library = cpu_gate.library()
        print(f"CPU gate kernel: {library._name if library else 'not built, RectGrad uses the PyTorch selection'}; "
              f"{torch.get_num_threads()} threads")
    models = args.models.split(",")
    if "cnn" in models:
        bench("paper CNN", PaperCNN(), torch.randn(256, 3, 32, 32), args.repeats, device)
    if "resnet50" in models:
        from torchvision.models import resnet50

        bench("ResNet-50", resnet50(), torch.randn(16, 3, 224, 224), args.repeats, device)


if __name__ == "__main__":
    main()
