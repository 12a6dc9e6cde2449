"""RectGrad's per-layer gate on the CPU as one compiled pass over the layer (optional, exact).

The pure-PyTorch selection (:mod:`rectgrad.selection`) needs five passes over a layer's scores (product,
sample, comparison, ``nonzero``, output); ``cpu_gate.cpp`` does it in one: per sample it bounds the q-th
percentile from below with a strided sample, writes ``g`` where ``a * g >= bound`` (0 elsewhere) while collecting
those candidates, selects the exact t-th largest among them and zeroes the candidates at or below it. Same
numbers as :func:`rectgrad.selection.where_above_percentile`, bit for bit (tested); whenever the bound turns out
wrong (too few or too many candidates) the caller recomputes the layer with it.

The C++ file has no Python or PyTorch headers: it is compiled on first use with the system's C++ compiler
(``$CXX``, else ``c++``; about a second) into a cache folder (``$RECTGRAD_CACHE``, else
``$XDG_CACHE_HOME/rectgrad``, else ``~/.cache/rectgrad``) and loaded with ctypes (which releases the GIL). Built with
``-fopenmp`` it runs on ``torch.get_num_threads()`` threads of the OpenMP runtime PyTorch has already loaded (a
second runtime's threads would fight PyTorch's still-spinning ones for the cores); a compiler without OpenMP gives a
one-thread kernel, used only where PyTorch has at most two threads. Without a compiler RectGrad warns once and keeps
the PyTorch selection; ``RECTGRAD_CPU_KERNEL=0`` turns the kernel off.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import subprocess
import sys
import tempfile
import threading
import warnings
from pathlib import Path

import torch
from torch import Tensor

from rectgrad.selection import nearest_rank, sample_plan

SOURCE = Path(__file__).with_name("cpu_gate.cpp")
FLAGS = ("-O3", "-std=c++17", "-shared", "-fPIC")
VARIANTS = (("-fopenmp",), ())  # tried in turn: e.g. Apple's clang has no OpenMP
_SUFFIX = {torch.float32: "f32", torch.float64: "f64"}

_lock = threading.Lock()
_library: ctypes.CDLL | bool | None = None  # False: could not be built


def enabled() -> bool:
    """Whether the kernel may be used (``RECTGRAD_CPU_KERNEL`` is not ``0``)."""
    return os.environ.get("RECTGRAD_CPU_KERNEL", "1") != "0"


def library() -> ctypes.CDLL | None:
    """The compiled kernel, built on first use; None when it cannot be built."""
    global _library
    with _lock:
        if _library is None:
            _library = _build() or False
    return _library or None


def _cache() -> Path:
    """``$RECTGRAD_CACHE``, else ``$XDG_CACHE_HOME/rectgrad``, else ``~/.cache/rectgrad`` (a temporary folder
    without a home)."""
    if os.environ.get("RECTGRAD_CACHE"):
        return Path(os.environ["RECTGRAD_CACHE"])
    try:
        home = Path.home()
    except RuntimeError:  # no home directory (Python >= 3.12; older ones return "~")
        home = Path("~")
    home_cache = home / ".cache" if home.is_absolute() else None
    return Path(os.environ.get("XDG_CACHE_HOME") or home_cache or tempfile.gettempdir()) / "rectgrad"


def _build() -> ctypes.CDLL | None:
    compiler = os.environ.get("CXX", "c++")
    root = _cache()
    errors = []
    for flags in (FLAGS + variant for variant in VARIANTS):
        key = hashlib.sha256(b"\0".join([SOURCE.read_bytes(), " ".join(
            (compiler, *flags, sys.platform, platform.machine())).encode()])).hexdigest()[:16]
        path = root / f"cpu_gate-{key}.so"
        try:
            if not path.exists():
                root.mkdir(parents=True, exist_ok=True)
                with tempfile.TemporaryDirectory(dir=root) as tmp:  # built aside, then renamed: never half a file
                    built = Path(tmp) / path.name
                    subprocess.run([compiler, *flags, str(SOURCE), "-o", str(built)], check=True,
                                   capture_output=True, timeout=300)
                    os.replace(built, path)
            return _declare(ctypes.CDLL(str(path)))
        except (OSError, subprocess.SubprocessError) as error:
            detail = getattr(error, "stderr", None) or str(error)
            errors.append(detail.decode(errors="replace") if isinstance(detail, bytes) else detail)
    warnings.warn(f"rectgrad could not build its CPU gate kernel ({errors[-1].strip()[:300]}); RectGrad on the CPU "
                  "uses the slower PyTorch selection (same results). Set RECTGRAD_CPU_KERNEL=0 to skip the kernel.",
                  RuntimeWarning, stacklevel=3)
    return None


def _declare(lib: ctypes.CDLL) -> ctypes.CDLL:
    pointer, integer, int32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    for suffix in _SUFFIX.values():
        getattr(lib, f"scan_tasks_{suffix}").argtypes = [pointer] * 3 + [integer] * 5 + [int32] + [integer] * 2 + [
            pointer, integer] + [pointer] * 4 + [int32]
        getattr(lib, f"select_rows_{suffix}").argtypes = [pointer] + [integer] * 5 + [pointer, integer] + [
            pointer] * 4 + [int32]
        getattr(lib, f"candidate_size_{suffix}").restype = integer
    lib.openmp.restype = int32
    return lib


def gate_above_percentile(a: Tensor, g: Tensor, q: float, absolute: bool, scratch,
                          workers: int | None = None) -> Tensor | None:
    """``where(score > q-th percentile of its sample, g, 0)`` for tensors of shape ``(N, ...)``, score ``a * g`` (PR1)
    or ``|a * g|`` (PR2), the percentile over all units of a sample; None when the kernel does not apply (not a CPU
    float32/float64 layer, a small or low-percentile layer, no compiler) or its bound failed: the caller then uses
    :mod:`rectgrad.selection`. The result is a tensor of its own (not a view), as autograd likes to accumulate into."""
    n = a.shape[0] if a.dim() else 0
    m = a.numel() // n if n else 0
    if (a.device.type != "cpu" or a.dtype not in _SUFFIX or g.dtype != a.dtype or m < 4096 or m >= 2**31
            or not enabled()):
        return None
    t = m - nearest_rank(q, m)  # the percentile is the t-th largest score
    if t * 8 > m:
        return None  # a percentile below 87.5: its candidates would not fit, selection.py selects directly
    lib = library()
    workers = workers or torch.get_num_threads()
    if lib is None or (workers > 2 and not lib.openmp()):  # one thread would be slower than PyTorch on many
        return None
    suffix = _SUFFIX[a.dtype]
    a, g = a.contiguous(), g.contiguous()
    # rows cut in pieces when there are fewer rows than threads; pieces of 4096 values at least (none empty)
    pieces = min(-(-workers // n), m // 4096)
    length = -(-m // pieces)
    stride, rank = sample_plan(t * length / m, length)  # each piece bounds its share of the t largest
    capacity, limit = min(length, m // 2 + 1), m // 2  # more candidates than half a row: the bound failed
    out = torch.empty_like(g, memory_format=torch.contiguous_format)
    candidates = scratch.bytes(n * pieces * capacity * getattr(lib, f"candidate_size_{suffix}")())
    counts = torch.empty(n * pieces, dtype=torch.int64)
    bounds = torch.empty(n * pieces, dtype=a.dtype)
    nonnegative = torch.zeros(n * pieces, dtype=torch.int64)
    status = torch.zeros(n, dtype=torch.int8)
    getattr(lib, f"scan_tasks_{suffix}")(a.data_ptr(), g.data_ptr(), out.data_ptr(), n, m, pieces, stride, rank,
                                         int(absolute), t, limit, candidates.data_ptr(), capacity, counts.data_ptr(),
                                         bounds.data_ptr(), nonnegative.data_ptr(), status.data_ptr(), workers)
    if pieces > 1:
        getattr(lib, f"select_rows_{suffix}")(out.data_ptr(), n, m, pieces, t, limit, candidates.data_ptr(), capacity,
                                              counts.data_ptr(), bounds.data_ptr(), nonnegative.data_ptr(),
                                              status.data_ptr(), workers)
    return None if bool(status.any()) else out
