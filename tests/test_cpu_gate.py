"""The compiled CPU gate (rectgrad.cpu_gate) against the PyTorch selection it replaces, bit for bit."""
import tempfile
import warnings
from pathlib import Path

import pytest
import torch

from rectgrad import PaperCNN, RectGrad, cpu_gate
from rectgrad.engine import Scratch
from rectgrad.selection import where_above_percentile

pytestmark = pytest.mark.skipif(cpu_gate.library() is None, reason="no C++ compiler")


def reference(a, g, q, absolute):
    s = a * g
    return where_above_percentile((s.abs() if absolute else s).reshape(len(a), -1), g, q)


def check(a, g, q, absolute=False, workers=2, used=True):
    out = cpu_gate.gate_above_percentile(a, g, q, absolute, Scratch(), workers=workers)
    if used:
        assert out is not None, "the kernel fell back"
    if out is not None:
        assert out.shape == g.shape and out._base is None
        assert torch.equal(out, reference(a, g, q, absolute))
        assert torch.equal(out.signbit(), reference(a, g, q, absolute).signbit())  # zeros are +0, as torch.where's
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("workers", [1, 2, 3, 8])  # 8 workers for 3 rows: rows cut in pieces
@pytest.mark.parametrize("absolute", [False, True])
def test_relu_like_layers_match_the_pytorch_selection(dtype, workers, absolute):
    for shape in [(3, 4096), (3, 4097), (3, 16, 33, 31), (1, 65537), (1, 3 * 4096 + 5)]:  # last: 3 pieces at most
        a = torch.relu(torch.randn(shape, dtype=dtype))
        g = torch.randn(shape, dtype=dtype)
        for q in [88, 90, 95, 98, 99, 99.9, 100]:
            check(a, g, q, absolute, workers)


def test_ties_nan_and_signed_zeros():
    a = torch.relu(torch.randn(4, 9000))
    g = torch.randn(4, 9000)
    a[0, :5000] = 1.0
    g[0, :5000] = 0.5  # a tie across the top of row 0
    g[1, ::7] = float("nan")  # NaN ranks lowest and never passes
    g[2] = -g[2].abs()  # no positive score: tau = 0 needs t non-negative scores (zeros from a = 0)
    a[3, 100:] = -0.0
    for q in [90, 98, 99.5]:
        check(a, g, q, used=False)
    assert check(a[1:2], g[1:2], 98) is not None
    assert check(a[2:3], g[2:3], 98).count_nonzero() == 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])  # float32: SIMD scan; float64: the scalar one
def test_sparse_rows_take_threshold_zero(dtype):
    # fewer positive scores than the percentile keeps (a max-pooled layer's gradient): every positive one passes,
    # the smallest positive number (the candidates' bound then) too
    a = torch.rand(2, 50000, dtype=dtype)
    g = torch.zeros(2, 50000, dtype=dtype)
    g[:, ::100] = torch.rand(2, 500, dtype=dtype) + 0.1
    a[:, 1::200], g[:, 1::200] = 1.0, torch.finfo(dtype).tiny * torch.finfo(dtype).eps  # scores of exactly that
    out = check(a, g, 98, workers=1)
    assert torch.equal(out != 0, g != 0) and (out[:, 1::200] > 0).all()
    check(a, g, 98, workers=4)  # pieces whose bounds are all the smallest positive value


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_exactly_t_non_negative_scores_take_threshold_zero_in_the_kernel(dtype):
    # m = 8192, q = 98: the percentile is the 165th largest score; 100 positive and 65 zero scores make it 0
    a = torch.ones(2, 8192, dtype=dtype)
    g = -torch.rand(2, 8192, dtype=dtype) - 0.1
    g[:, :100], g[:, 100:165] = torch.rand(2, 100, dtype=dtype) + 0.1, 0.0
    out = check(a, g, 98, workers=1)  # the kernel itself: no fallback
    assert torch.equal(out != 0, g > 0)
    check(a, g, 98, workers=4)  # rows in two pieces, all 165 non-negative scores in the first: joined, still 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_one_non_negative_score_short_of_t_takes_a_negative_threshold(dtype):
    # m = 8192, q = 98: t = 165; 100 positive and 64 zero scores (inactive units, a = 0, with g = -1) leave the 165th
    # largest score negative: the zeros pass their -1 too. The kernel's candidates are the positive scores: it must
    # not take tau = 0 there (in one piece or several), but fall back or agree
    a = torch.ones(2, 8192, dtype=dtype)
    g = -torch.rand(2, 8192, dtype=dtype) - 0.1
    g[:, :100] = torch.rand(2, 100, dtype=dtype) + 0.1
    a[:, 100:164], g[:, 100:164] = 0.0, -1.0
    passed = torch.arange(8192).expand(2, 8192) < 164
    assert torch.equal(reference(a, g, 98, False) != 0, passed)
    for workers in (1, 4):
        check(a, g, 98, workers=workers, used=False)


def test_a_threshold_tied_with_the_pieces_bounds_is_selected_in_the_kernel():
    # rows cut in 4 pieces; 40% of the scores are 1.0, fewer than t = 329 above it: the 98th percentile (1.0) is
    # each piece's sampled bound itself, and the candidates >= it are every value >= it, so the kernel selects exactly
    torch.manual_seed(0)
    a = torch.ones(2, 16384)
    g = -torch.rand(2, 16384) - 0.1
    for row in range(2):
        g[row, torch.randperm(16384)[:6554]] = 1.0
    g[:, ::164] = 2.0 + torch.rand(2, 100)  # 100 scores above the tie
    out = check(a, g, 98, workers=4)
    assert torch.equal(out != 0, g > 1.0)


def test_a_bound_the_sample_overestimates_is_caught():
    # large values exactly on the sampling stride make the sample's bound too high: the kernel must notice
    a = torch.ones(2, 40000)
    g = torch.rand(2, 40000) * 0.1
    fell_back = []
    for stride in (7, 13, 29):  # the kernel samples every 13th value of these rows
        g2 = g.clone()
        g2[:, ::stride] = 10 + torch.rand(g2[:, ::stride].shape)
        for workers in (1, 4):
            fell_back.append(check(a, g2, 98, workers=workers, used=False) is None)
    assert fell_back[2]  # stride 13, one piece per row: every sampled value is large


def test_not_applicable_returns_none(monkeypatch):
    a, g = torch.rand(2, 8192), torch.randn(2, 8192)
    scratch = Scratch()
    assert cpu_gate.gate_above_percentile(a[:, :4095], g[:, :4095], 98, False, scratch) is None  # small layer
    assert cpu_gate.gate_above_percentile(a, g, 80, False, scratch) is None  # low percentile
    assert cpu_gate.gate_above_percentile(a.half(), g.half(), 98, False, scratch) is None
    monkeypatch.setenv("RECTGRAD_CPU_KERNEL", "0")
    assert cpu_gate.gate_above_percentile(a, g, 98, False, scratch) is None


def test_channels_last_layers():
    a = torch.relu(torch.randn(2, 16, 40, 40)).to(memory_format=torch.channels_last)
    g = torch.randn(2, 16, 40, 40).to(memory_format=torch.channels_last)
    check(a, g, 98)


def test_maps_identical_with_and_without_the_kernel(monkeypatch):
    model = PaperCNN().eval()
    x = torch.randn(8, 3, 32, 32)
    calls = []
    original = cpu_gate.gate_above_percentile
    monkeypatch.setattr("rectgrad.engine.gate_above_percentile",
                        lambda *args, **kwargs: calls.append(original(*args, **kwargs)) or calls[-1])
    for options in [dict(q=98.0), dict(q=95.0, rule="pr2", prr=True)]:
        calls.clear()
        monkeypatch.setenv("RECTGRAD_CPU_KERNEL", "1")
        fast = RectGrad(model).attribute(x, **options)
        assert any(c is not None for c in calls)
        monkeypatch.setenv("RECTGRAD_CPU_KERNEL", "0")
        assert torch.equal(fast, RectGrad(model).attribute(x, **options))


def test_no_compiler_warns_once_and_falls_back(monkeypatch, tmp_path):
    monkeypatch.setattr(cpu_gate, "_library", None)
    monkeypatch.setenv("RECTGRAD_CACHE", str(tmp_path))
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    with pytest.warns(RuntimeWarning, match="could not build its CPU gate kernel"):
        assert cpu_gate.library() is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cpu_gate.library() is None  # not tried again
    assert cpu_gate.gate_above_percentile(torch.rand(2, 8192), torch.randn(2, 8192), 98, False, Scratch()) is None
    assert list(tmp_path.iterdir()) == []  # nothing half-built left behind


def test_builds_into_the_cache_once(monkeypatch, tmp_path):
    monkeypatch.setattr(cpu_gate, "_library", None)
    monkeypatch.setenv("RECTGRAD_CACHE", str(tmp_path))
    assert cpu_gate.library().openmp() == 1  # CI builds with g++, which has OpenMP
    built = list(tmp_path.iterdir())
    assert len(built) == 1 and built[0].suffix == ".so"
    monkeypatch.setattr(cpu_gate, "_library", None)
    stamp = built[0].stat().st_mtime_ns
    assert cpu_gate.library() is not None and built[0].stat().st_mtime_ns == stamp  # reused, not rebuilt
    monkeypatch.setattr(cpu_gate, "_library", None)
    monkeypatch.setenv("CXX", str(tmp_path / "another-compiler"))  # its own build: not the other compiler's library
    with pytest.warns(RuntimeWarning, match="could not build its CPU gate kernel"):
        assert cpu_gate.library() is None


def test_a_kernel_without_openmp_serves_two_threads_at_most(monkeypatch, tmp_path):
    monkeypatch.setattr(cpu_gate, "_library", None)
    monkeypatch.setattr(cpu_gate, "VARIANTS", ((),))
    monkeypatch.setenv("RECTGRAD_CACHE", str(tmp_path))
    assert cpu_gate.library().openmp() == 0
    a, g = torch.relu(torch.randn(3, 9000)), torch.randn(3, 9000)
    check(a, g, 98, workers=2)
    assert cpu_gate.gate_above_percentile(a, g, 98, False, Scratch(), workers=4) is None


def test_cache_folder(monkeypatch, tmp_path):
    monkeypatch.delenv("RECTGRAD_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setattr(Path, "home", lambda: tmp_path)
    assert cpu_gate._cache() == tmp_path / ".cache" / "rectgrad"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cpu_gate._cache() == tmp_path / "xdg" / "rectgrad"
    monkeypatch.delenv("XDG_CACHE_HOME")
    for no_home in (lambda: Path("~"), lambda: (_ for _ in ()).throw(RuntimeError("no home"))):
        monkeypatch.setattr(Path, "home", no_home)  # a user without a home: never a relative "~" folder
        assert cpu_gate._cache() == Path(tempfile.gettempdir()) / "rectgrad"
    monkeypatch.setenv("RECTGRAD_CACHE", str(tmp_path / "mine"))
    assert cpu_gate._cache() == tmp_path / "mine"


def test_mixed_dtypes_are_left_to_the_pytorch_selection():
    # the kernel reads a and g as one dtype: a float64 gradient for float32 activations (or the reverse) would be
    # read as the wrong type's bytes, so the layer goes to the PyTorch selection
    a, g = torch.rand(2, 8192), torch.randn(2, 8192)
    scratch = Scratch()
    assert cpu_gate.gate_above_percentile(a, g.double(), 98, False, scratch, workers=2) is None
    assert cpu_gate.gate_above_percentile(a.double(), g, 98, False, scratch, workers=2) is None
    assert cpu_gate.gate_above_percentile(a, g, 98, False, scratch, workers=2) is not None  # the same layer, one dtype
