"""Peak memory of RectGrad against the physical floor (one forward + one backward: gradient x input)
and Captum's GuidedBackprop; prints medians and ratios.

Each method runs in a fresh process (nothing another method left cached can hide its peak). After a
warm-up call, the memory a call needs on top of what the process holds is measured: on CUDA with
``torch.cuda.max_memory_allocated``; on the CPU as the resident-set peak (Linux ``VmHWM``, reset through
``/proc/self/clear_refs`` just before the call) minus the resident set after freed memory went back to the
system (``malloc_trim``).

    python benchmarks/attribution_memory.py [--repeats 3] [--device cpu|cuda] [--models cnn,resnet50]
"""
from __future__ import annotations

import argparse
import ctypes
import gc
import json
import re
import statistics
import subprocess
import sys
import warnings

import torch
from captum.attr import GuidedBackprop as CaptumGuidedBackprop

from attribution_speed import gradient_x_input  # the floor, as the speed benchmark times it
from rectgrad import GuidedBackprop, PaperCNN, RectGrad


def candidates(model, x, target):
    quarter = max(1, len(x) // 4)
    return {
        "gradient x input": lambda: gradient_x_input(model, x, target),
        "RectGrad q=98": lambda: RectGrad(model).attribute(x, target=target, q=98.0),
        "RectGrad q=98 + PRR + padding": lambda: RectGrad(model).attribute(x, target=target, q=98.0, prr=True,
                                                                           padding_trick=True),
        f"RectGrad q=98, internal batch {quarter}": lambda: RectGrad(model).attribute(
            x, target=target, q=98.0, internal_batch_size=quarter),
        "rectgrad GuidedBackprop": lambda: GuidedBackprop(model).attribute(x, target=target),
        "Captum GuidedBackprop": lambda: CaptumGuidedBackprop(model).attribute(x, target=target),
    }


def build(name: str):
    torch.manual_seed(0)
    if name == "cnn":
        return "paper CNN", PaperCNN(), torch.randn(256, 3, 32, 32)
    if name == "resnet50":
        from torchvision.models import resnet50

        return "ResNet-50", resnet50(), torch.randn(16, 3, 224, 224)
    raise SystemExit(f"unknown model {name!r}: cnn or resnet50")


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        return int(re.search(rf"{field}:\s+(\d+) kB", status.read()).group(1))


def extra_bytes(fn, device) -> int:
    """Memory one call of ``fn`` needs beyond what the process holds before it."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        result = fn()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
        del result
        return peak - before
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    before = _status_kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")  # resets VmHWM, the resident-set peak, to the current resident set
    result = fn()
    peak = _status_kib("VmHWM")
    del result
    return (peak - before) * 1024


def child(model_name: str, method: str, device: torch.device, repeats: int):
    """Runs in a fresh process: prints the method's peak extra bytes, one per repeat, as JSON."""
    warnings.filterwarnings("ignore")
    _, model, x = build(model_name)
    model, x = model.to(device).eval(), x.to(device)
    with torch.no_grad():
        target = model(x).argmax(1)
    fn = candidates(model, x, target)[method]
    fn()  # warm-up: lazy initialisation, the compiled CPU gate, cuDNN plans
    print(json.dumps([extra_bytes(fn, device) for _ in range(repeats)]))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--models", default="cnn,resnet50")
    parser.add_argument("--child", nargs=2, metavar=("MODEL", "METHOD"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.child:
        return child(*args.child, device, args.repeats)
    for model_name in args.models.split(","):
        title, model, x = build(model_name)
        methods = list(candidates(model, x, torch.zeros(len(x), dtype=torch.long)))
        peaks = {}
        for method in methods:
            out = subprocess.run([sys.executable, __file__, "--child", model_name, method, "--device", args.device,
                                  "--repeats", str(args.repeats)], capture_output=True, text=True, check=True)
            peaks[method] = statistics.median(json.loads(out.stdout.strip().splitlines()[-1]))
        floor = peaks["gradient x input"]
        print(f"\n{title} ({tuple(x.shape)}, {device}, median of {args.repeats}; ratio = peak / gradient x input's)")
        for method, peak in peaks.items():
            print(f"  {method:36s} {peak / 2**20:9.1f} MiB (ratio {peak / floor:4.2f})")


if __name__ == "__main__":
    main()
