"""Attribution-map visualization (paper Appendix F.1, Figures 1, 4, 5a), as pure functions.

Pipeline (:func:`prepare`): sum the attribution over colour channels, optionally apply the
"final threshold" of Section 5.2 (baselines keep their per-image top 5%, RectGrad its positive
part), then cap outliers at the per-image 0.5th / 99.5th percentiles. Maps are drawn with a
diverging colormap centred at zero (:data:`CMAP`, limits +-max|map|, zero is white). A map holding NaN or Inf
is a ValueError naming it, in every step: it has no percentiles or colour limits (it drew blank).

Figures use the object-oriented API (:class:`matplotlib.figure.Figure` + ``FigureCanvasAgg``), so
nothing here needs a display or touches pyplot's global state. In Jupyter a returned figure shows as a cell's
last expression or with ``IPython.display.display(fig)`` (it renders itself as a PNG, with or without pyplot's
inline backend); ``plt.show()`` does not show it, as pyplot does not manage it. :func:`save_figure` writes it.
"""
from __future__ import annotations

import functools
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.textpath import TextPath

from rectgrad._checks import flag, positive_int, real
from rectgrad._checks import percentile as check_percentile
from rectgrad.checkpoint import write_atomically

CMAP = "bwr"
THRESHOLD_MODES = ("top", "positive")


def _numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):  # any device, requiring grad or not; bfloat16 has no numpy dtype
        x = x.detach().to("cpu", torch.float64).numpy()
    elif isinstance(x, (list, tuple)) and any(isinstance(v, (torch.Tensor, list, tuple)) for v in x):
        x = [_numpy(v) for v in x]  # tensors in a list too: numpy reads none that is on a GPU, needs grad or bfloat16
    try:
        return np.asarray(x, dtype=np.float64)
    except ValueError:  # (numpy's "inhomogeneous shape after 2 dimensions" named neither the list nor the shapes)
        shapes = [v.shape for v in x] if isinstance(x, (list, tuple)) and all(
            isinstance(v, np.ndarray) for v in x) else []
        if len(set(shapes)) < 2:
            raise
        raise ValueError(f"the {len(shapes)} arrays of a list differ in shape: {', '.join(map(str, shapes[:10]))}"
                         f"{', ...' if len(shapes) > 10 else ''}; give arrays of one shape (or one array)") from None


def _refuse_non_finite(m: np.ndarray, what: str) -> None:
    """A ValueError naming ``what`` (one map, or (N,H,W) maps: then the images too) where ``m`` holds NaN or Inf:
    percentile caps, thresholds and colour limits are undefined there (the map drew blank, or all zero)."""
    bad = ~np.isfinite(m)
    if bad.any():
        where = f" of image(s) {np.flatnonzero(bad.reshape(len(m), -1).any(1))[:10].tolist()}" if m.ndim == 3 else ""
        raise ValueError(f"NaN or Inf values in {what}{where}: such a map cannot be scaled or drawn")


def _refuse_empty(m: np.ndarray, what: str) -> None:
    """A ValueError naming ``what`` where ``m`` holds no values (N, H or W is 0): no percentiles or colour limits."""
    if not m.size:
        raise ValueError(f"no values in {what}, got shape {m.shape}: nothing to scale or draw")


#: Maps whose largest |value| passes this (float64's largest is about 2**1024) are divided by a power of two (exactly)
#: where their channel sums, percentiles and colour scale are computed: these overflowed past float64's range there.
LARGE = 2.0 ** 1000


def _shift(m: np.ndarray) -> int:
    """The ``k`` for which ``np.ldexp(m, -k)`` (``m / 2**k``) holds values of at most 1 in magnitude, where ``m``'s
    largest finite |value| passes :data:`LARGE`; 0 (nothing to scale) otherwise, and for NaN or Inf values."""
    top = float(np.max(np.abs(m), initial=0.0))
    return int(np.frexp(top)[1]) if LARGE < top < math.inf else 0


def _percentile(m: np.ndarray, q, **kwargs) -> np.ndarray:
    """``np.percentile(m, q, **kwargs)``, taken on ``m / 2**k`` (:func:`_shift`) and scaled back: numpy interpolated
    between two values near float64's largest and of opposite signs as -inf or inf."""
    k = _shift(m)
    return np.ldexp(np.percentile(np.ldexp(m, -k) if k else m, q, **kwargs), k)


def _maps(maps) -> np.ndarray:
    """``maps`` (H,W) or (N,H,W) as float64 numpy, or a ValueError for another shape, no values or NaN / Inf values."""
    m = _numpy(maps)
    if m.ndim not in (2, 3):
        raise ValueError(f"expected (H,W) or (N,H,W) maps, got shape {m.shape}")
    _refuse_empty(m, "the maps")
    _refuse_non_finite(m, "the maps")
    return m


def channel_sum(attr) -> np.ndarray:
    """Sum an attribution over its colour channels (Appendix F.1): (C,H,W) -> (H,W), (N,C,H,W) -> (N,H,W).

    Accepts a torch tensor or array-like; returns float64 numpy. Channels-last attributions (as TensorFlow gives them:
    C not 1, 3 or 4 but the last dimension is) are a ValueError saying how to permute them, and finite values whose
    sum passes float64's range (about 1.8e308) one saying they are too large (:func:`prepare` scales them down).
    """
    a = _numpy(attr)
    if a.ndim not in (3, 4):
        raise ValueError(f"expected (C,H,W) or (N,C,H,W), got shape {a.shape}")
    if a.shape[-3] not in (1, 3, 4) and a.shape[-1] in (1, 3, 4):  # summed over H, they drew H-wide slivers
        single = a.ndim == 3
        order = "2, 0, 1" if single else "0, 3, 1, 2"
        raise ValueError(f"attributions of shape {a.shape} look channels-last ({'' if single else 'N,'}H,W,C): give "
                         f"x.permute({order}) (a numpy array: x.transpose({order})) to sum their channels")
    with np.errstate(over="ignore"):
        total = a.sum(axis=-3)
    if (np.isinf(total) & np.isfinite(a).all(axis=-3)).any():  # (it was then called "NaN or Inf values")
        raise ValueError(f"attributions with values up to {np.abs(a).max():.3g} are too large to sum over their "
                         f"channels: the sums pass float64's largest ({np.finfo(np.float64).max:.3g}); scale them "
                         "down first (viz.prepare does, as the maps drawn are the same at any scale)")
    return total


def clip_outliers(maps, low: float = 0.5, high: float = 99.5, *, symmetric: bool = False) -> np.ndarray:
    """Cap each map (H,W) or each of (N,H,W) at its own ``low``-th / ``high``-th percentile (Appendix F.1).

    The paper caps RGB maps at the 0.5th / 99.5th percentiles and says it "only capped outlying
    values" for grayscale images: we read this as the same per-image capping with no channel sum
    (a single channel has nothing to sum), so the default applies to both. ``symmetric=True``
    instead caps to +-(``high``-th percentile of |value|), keeping the map's zero centred. ``low`` and ``high``:
    numbers in [0, 100] (``low`` <= ``high``), checked as :func:`final_threshold` checks its percentile.
    """
    m = _maps(maps)
    symmetric = flag("symmetric", symmetric)  # "no" would read as True
    high = check_percentile("high", high)
    if symmetric:  # (symmetric caps read high only)
        cap = _percentile(np.abs(m), high, axis=(-2, -1), keepdims=True)
        return np.clip(m, -cap, cap)
    low = check_percentile("low", low)
    if low > high:  # (it gave a constant map)
        raise ValueError(f"need percentiles 0 <= low <= high <= 100, got low={low:g} and high={high:g}")
    lo, hi = _percentile(m, [low, high], axis=(-2, -1), keepdims=True)
    return np.clip(m, lo, hi)


def final_threshold(maps, mode: str, percentile: float = 95.0) -> np.ndarray:
    """The "with final threshold" view of Section 5.2, per map (H,W) or per image of (N,H,W).

    ``mode="top"`` (baselines): keep values >= the map's own ``percentile``-th percentile, set the
    rest to 0 (the top 5% by default). ``mode="positive"`` (RectGrad): keep the positive part. ``percentile``: a
    number in [0, 100], checked in either mode, as :func:`rectgrad.evaluation.final_threshold` checks it.
    """
    percentile = check_percentile("percentile", percentile)
    m = _maps(maps)
    if mode == "top":
        cut = _percentile(m, percentile, axis=(-2, -1), keepdims=True)
        return np.where(m >= cut, m, 0.0)
    if mode == "positive":
        return np.maximum(m, 0.0)
    raise ValueError(f"mode must be one of {THRESHOLD_MODES}, got {mode!r}")


def prepare(attr, *, grayscale: bool = False, threshold: str | None = None, low: float = 0.5,
            high: float = 99.5, symmetric: bool = False, percentile: float = 95.0) -> np.ndarray:
    """Appendix F.1 pipeline: channel sum -> optional final threshold -> outlier capping; returns (N,H,W).

    ``attr`` is (N,C,H,W) or one (C,H,W) image (summed over C; C=1 is grayscale). With
    ``grayscale=True`` it is instead already channel-free: (N,H,W), (H,W) or (N,1,H,W).
    ``threshold`` is None, "top" or "positive" (see :func:`final_threshold`); it is applied before
    capping, so the 99.5th-percentile cap of a "top" map is taken over the same top values as in the
    paper's reference code, and the values it zeroes stay 0 (the 0.5th-percentile cap would lift them on a
    map where fewer than 0.5% of the values are zeroed). ``low``, ``high`` and ``symmetric`` go to
    :func:`clip_outliers`. Attributions holding values past :data:`LARGE` (2**1000, near float64's largest) are first
    divided by a power of two, so that their channel sums do not overflow: the maps drawn are the same.
    """
    a = _numpy(attr)
    k = _shift(a)
    a = np.ldexp(a, -k) if k else a
    if flag("grayscale", grayscale):
        if a.ndim == 4 and a.shape[1] == 1:
            a = a[:, 0]
        elif a.ndim not in (2, 3):
            raise ValueError(f"grayscale maps must be (N,H,W), (H,W) or (N,1,H,W), got shape {a.shape}")
        maps = a
    else:
        maps = channel_sum(a)
    if maps.ndim == 2:
        maps = maps[None]
    if threshold is None:
        return clip_outliers(maps, low, high, symmetric=symmetric)
    maps = final_threshold(maps, threshold, percentile)
    return np.where(maps == 0, 0.0, clip_outliers(maps, low, high, symmetric=symmetric))


def to_display_image(x, mean=None, std=None) -> np.ndarray:
    """Input image(s) (C,H,W) or (N,C,H,W) -> floats in [0,1] for imshow: (H,W,3)/(N,H,W,3), or (H,W)/(N,H,W) if C=1.
    C must be 1, 3 or 4 (RGBA; channels-last images are a ValueError saying how to permute them).

    Without ``mean``/``std`` the input is taken to be scaled to [-1,1] (the paper's preprocessing), and uint8 images
    (a dataset's raw pixels) to [0,255]; otherwise it is un-normalized as ``x * std + mean`` (one value per channel,
    or one for all; a missing one is 0 or 1). Values are clipped to [0,1]. Other integer (or bool) images are a
    TypeError, and uint8 images with a ``mean`` or ``std`` a ValueError: either drew white; images holding NaN or Inf
    are a ValueError naming them.
    """
    dtypes = _dtypes(x)
    kinds = set(map(_kind, dtypes))
    pixels = kinds == {"pixels"}
    if not (pixels or kinds <= {"float"}):  # (or uint8 and float images in one list)
        dtype = " and ".join(sorted(map(str, dtypes)))
        raise TypeError(f"images of dtype {dtype} are neither uint8 pixels (0-255) nor floats: give uint8 pixels "
                        "(x.to(torch.uint8); a numpy array: x.astype(np.uint8)) or floats (in [-1, 1], or normalised "
                        "with the mean and std given)")
    if pixels and (mean is not None or std is not None):
        raise ValueError("uint8 images are raw pixels (0-255), drawn as they are: mean and std un-normalise floats, "
                         "the model's inputs; give these images without them")
    a = _numpy(x)
    shape, single = a.shape, a.ndim == 3
    if single:
        a = a[None]
    if a.ndim != 4:
        raise ValueError(f"expected (C,H,W) or (N,C,H,W), got shape {a.shape}")
    if a.shape[1] not in (1, 3, 4):
        order = "2, 0, 1" if single else "0, 3, 1, 2"
        hint = (f"; they look channels-last ({'' if single else 'N,'}H,W,C): give x.permute({order}) (a numpy array: "
                f"x.transpose({order}))" if a.shape[-1] in (1, 3, 4) else "")
        raise ValueError(f"images to draw must be (C,H,W) or (N,C,H,W) with 1 (grayscale), 3 (RGB) or 4 (RGBA) "
                         f"channels, got shape {shape}{hint}")
    bad = ~np.isfinite(a).reshape(len(a), -1).all(1)
    if bad.any():  # (clipped to [0, 1], NaN drew as a hole and Inf as a white or black pixel)
        which = "the image" if single else f"image(s) {np.flatnonzero(bad)[:10].tolist()}"
        raise ValueError(f"NaN or Inf values in {which}: such an image cannot be drawn")
    if mean is None and std is None:
        a = a / 255.0 if pixels else (a + 1.0) / 2.0
    else:
        m = _numpy(0.0 if mean is None else mean).reshape(1, -1, 1, 1)  # tensors on any device and of any dtype too
        s = _numpy(1.0 if std is None else std).reshape(1, -1, 1, 1)
        for name, v in (("mean", m), ("std", s)):  # 3 values would silently turn a grayscale image into colour
            if v.size not in (1, a.shape[1]):
                raise ValueError(f"{name} has {v.size} values for images of {a.shape[1]} channels: give one per "
                                 "channel or one for all")
        a = a * s + m
    a = np.clip(a, 0.0, 1.0).transpose(0, 2, 3, 1)
    if a.shape[-1] == 1:
        a = a[..., 0]
    return a[0] if single else a


def _kind(dtype) -> str:
    """A torch or numpy dtype as images are read by it: ``pixels`` (uint8), ``float`` (or complex) or ``integer``."""
    if dtype in (torch.uint8, np.uint8):
        return "pixels"
    floating = dtype.is_floating_point or dtype.is_complex if isinstance(dtype, torch.dtype) else dtype.kind in "fc"
    return "float" if floating else "integer"


def _dtypes(x) -> set:
    """The dtypes of ``x``, a tensor or numpy array, or of those in a list of them (none for plain numbers)."""
    if isinstance(x, (torch.Tensor, np.ndarray)):
        return {x.dtype}
    return set().union(*map(_dtypes, x)) if isinstance(x, (list, tuple)) else set()


def color_limits(m) -> tuple[float, float]:
    """Symmetric colour limits (-v, v), v = max|m|: zero is the colormap's white centre; (-1, 1) for an all-zero map.
    A map holding NaN or Inf, or no values, is a ValueError (it would draw blank)."""
    m = _numpy(m)
    _refuse_empty(m, "the map")
    _refuse_non_finite(m, "the map")
    v = float(np.max(np.abs(m)))
    v = v if v > 0 else 1.0
    return -v, v


def _bare(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def plot_map(ax, m) -> None:
    """Draw one (H,W) attribution map on ``ax`` with :data:`CMAP` and symmetric limits (see :func:`color_limits`);
    an all-zero map, blank white, says "all zero" in its middle."""
    m = _numpy(m)
    vmin, vmax = color_limits(m)
    k = _shift(m)  # (the colour scale's range, vmax - vmin, passed float64's largest: NaN colours)
    if k:
        m, vmin, vmax = np.ldexp(m, -k), math.ldexp(vmin, -k), math.ldexp(vmax, -k)
    ax.imshow(m, cmap=CMAP, vmin=vmin, vmax=vmax, interpolation="nearest")
    if not np.any(m):
        ax.text(0.5, 0.5, "all zero", transform=ax.transAxes, ha="center", va="center", fontsize=7, color="0.5")
    _bare(ax)


class _Figure(Figure):
    """A :class:`Figure` that Jupyter displays as a PNG where no pyplot backend has registered a formatter for figures
    (pyplot never imported): without this a cell showed only ``<Figure size 960x320 with 10 Axes>``."""

    def _repr_png_(self) -> bytes:
        buffer = io.BytesIO()
        self.savefig(buffer, format="png")
        return buffer.getvalue()


def _figure(width: float, height: float, **kwargs) -> Figure:
    fig = _Figure(figsize=(width, height), **kwargs)
    FigureCanvasAgg(fig)
    return fig


def grid(images, maps: Mapping[str, np.ndarray] | Sequence[np.ndarray], *, row_labels: Sequence[str] | None = None,
         col_labels: Sequence[str] | None = None, title: str | None = None, mean=None, std=None,
         cell: float = 1.6) -> Figure:
    """Images as rows, methods as columns, first column the input image (paper Figs. 1, 4, 5a).

    ``images``: (N,C,H,W) inputs, or one (C,H,W) input as a batch of one (converted by :func:`to_display_image`
    with ``mean``/``std``), or None for no input column. ``maps``: display-ready (N,H,W) maps per column (e.g. from
    :func:`prepare`), as a dict {column name: maps} or a list. Column labels default to "Input" plus
    the dict's keys. ``cell`` is the width of one panel in inches; rows are as tall as the panels' height / width
    ratio makes them (the tallest panel's), and at least :data:`MIN_ROW`.
    """
    if not (real(cell) and math.isfinite(cell) and cell > 0):  # 0 failed at save, a string in numpy
        raise ValueError(f"cell must be a positive, finite number of inches, got {cell!r}")
    if isinstance(maps, (torch.Tensor, np.ndarray)) and maps.ndim < 4:  # (its maps were read as the columns)
        raise ValueError(f"maps is one array of shape {tuple(maps.shape)}, but grid takes columns of maps: give a list "
                         "of them, [maps], or a dict {name: maps}")
    names = list(maps) if isinstance(maps, Mapping) else None
    columns = [_numpy(c) for c in (maps.values() if isinstance(maps, Mapping) else maps)]
    inputs = None if images is None else _numpy(images)
    if inputs is not None and inputs.ndim not in (3, 4):
        raise ValueError(f"images must be (N,C,H,W) or one (C,H,W) image, got shape {inputs.shape}")
    batch = None if inputs is None else inputs[None] if inputs.ndim == 3 else inputs
    if batch is None and not columns:
        raise ValueError("nothing to draw: no images and no maps")
    nrows = len(columns[0]) if columns else len(batch)
    for k, c in enumerate(columns):
        if c.ndim != 3:  # explain's (N,C,H,W) maps, or one (H,W) map whose height would be read as N
            hint = "; viz.prepare(attributions) makes them" if c.ndim == 4 else ""
            raise ValueError(f"every column must be display-ready (N,H,W) maps{hint}, got shape {c.shape}")
        if len(c) != nrows:
            raise ValueError(f"every column must be (N,H,W) with N={nrows}, got shape {c.shape}")
        _refuse_empty(c, f"maps[{names[k]!r}]" if names is not None else f"maps[{k}]")
        _refuse_non_finite(c, f"maps[{names[k]!r}]" if names is not None else f"maps[{k}]")
    if batch is not None and len(batch) != nrows:
        if inputs.ndim == 3:  # (N,H,W) grayscale inputs read as one image of N channels
            raise ValueError(f"images of shape {inputs.shape} are one (C,H,W) image, for {nrows} rows of maps: give "
                             f"(N,C,H,W) images (grayscale: (N,1,H,W))")
        raise ValueError(f"{len(batch)} images for {nrows} rows")
    if batch is not None:
        _refuse_empty(batch, "images")
    pics = None if inputs is None else to_display_image(images, mean, std)  # its errors name the shape given
    pics = pics[None] if inputs is not None and inputs.ndim == 3 else pics
    panels = ([pics] if pics is not None else []) + columns
    ncols = len(panels)
    if col_labels is None and names is not None:
        col_labels = (["Input"] if pics is not None else []) + names
    for labels, n, what in ((col_labels, ncols, "col_labels"), (row_labels, nrows, "row_labels")):
        if labels is not None and len(labels) != n:
            raise ValueError(f"{what} has {len(labels)} entries for {n} {what[:3]}s")
    aspect = max(p.shape[1] / p.shape[2] for p in panels)  # rows as tall as the panels: no blank bands on wide images
    row = max(cell * aspect, MIN_ROW)  # but room for a row label and the column labels: wide panels collapsed
    fig = _figure(cell * ncols, row * nrows + (0.4 if title else 0.0), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for j, panel in enumerate(panels):
        for i in range(nrows):
            ax = axes[i, j]
            if pics is not None and j == 0:
                ax.imshow(panel[i], cmap="gray" if panel[i].ndim == 2 else None, vmin=0.0, vmax=1.0)
                _bare(ax)
            else:
                plot_map(ax, panel[i])
    if col_labels is not None:
        for j, label in enumerate(col_labels):
            axes[0, j].set_title(_wrapped(label, cell), fontsize=LABEL_SIZE, parse_math=False)  # file names: $ is $
    if row_labels is not None:
        for i, label in enumerate(row_labels):
            axes[i, 0].set_ylabel(_wrapped(label, row), fontsize=LABEL_SIZE, parse_math=False)
    if title:
        _fit(fig.suptitle(title, parse_math=False), 0.95 * cell * ncols)
    return fig


LABEL_SIZE = 9  # points
MIN_ROW = 0.5  # inches: a grid's least row height
NAME_WIDTH = 2.0  # inches: boxplot and line_plot names are broken into lines about this wide (longer crushed the axes)


def _wrapped(label, inches: float) -> str:
    """``label`` broken at spaces into lines that fit a panel of ``inches`` at :data:`LABEL_SIZE` in the default font,
    measured, so that a long row or column label stays beside its own panel (a word longer than that stays whole);
    panels give up about a quarter of their cell to the labels and the gaps between them."""
    room, lines, space = inches * 72 * 0.75, [], _width(" ")
    for line in str(label).split("\n"):
        first, *rest = line.split(" ")
        current, width = first, _width(first)
        for word in rest:
            size = _width(word)
            if current and width + space + size > room:
                lines.append(current)
                current, width = word, size
            else:
                current, width = f"{current} {word}", width + space + size
        lines.append(current)
    return "\n".join(lines)


def _fit(text, inches: float) -> None:
    """Break a title ``text`` (a :class:`~matplotlib.text.Text` of any font size) into lines that fit ``inches``: one
    wider than its figure was cut at both edges (matplotlib's ``wrap=True`` would read a ``$`` as mathtext)."""
    text.set_text(_wrapped(text.get_text(), inches * LABEL_SIZE / text.get_fontsize() / 0.75))


def _width(text: str) -> float:
    """The width of ``text`` at :data:`LABEL_SIZE` in the default font, in points (about: a ``$`` is measured as an
    ``S``, not as the start of mathtext). Measured between two letters, so that blanks alone (an empty path) and
    blanks at either end count."""
    return _extent(f"a{text.replace('$', 'S')}a") - _extent("aa") if text else 0.0


@functools.lru_cache(maxsize=4096)
def _extent(text: str) -> float:
    """The width of the path of ``text``'s glyphs at :data:`LABEL_SIZE` in the default font, in points."""
    return TextPath((0, 0), text, size=LABEL_SIZE, prop=FontProperties()).get_extents().width


#: The fewest dots per inch a figure is written at: below it, the 7-point labels come to under half a pixel and
#: FreeType refuses to draw them (``FT_Set_Char_Size ... invalid ppem value``).
MIN_DPI = 10
FIGURE_SUFFIXES = tuple(f".{kind}" for kind in ("png", "pdf", "svg", "jpg", "jpeg", "tif", "tiff", "webp", "eps"))
#: The most pixels a figure is drawn in (2**30, 4 GiB of RGBA pixels to the Agg renderer, which itself refuses only
#: sides of 2**23 pixels and more: a larger one ran out of memory, or was killed for it, without a word). An explain
#: grid of all methods passes it at about 1800 images.
MAX_PIXELS = 2 ** 30
VECTOR_FORMATS = ("pdf", "svg", "eps")  # drawn without pixels, but for the artists set to be rasterised


def save_figure(fig: Figure, path, *, dpi: int = 150) -> Path:
    """Write ``fig`` at ``path`` (parent directories created) with the Agg renderer, in the format its suffix
    names (:data:`FIGURE_SUFFIXES`; PNG without one); returns the path. A ``dpi`` that would draw it in over
    :data:`MAX_PIXELS` pixels is a ValueError naming the size and the largest dpi that fits, raised before drawing (PDF,
    SVG and EPS have no pixels, but for rasterised artists)."""
    path = Path(path)
    kind = path.suffix.lower()[1:] or "png"
    if f".{kind}" not in FIGURE_SUFFIXES:
        raise ValueError(f"cannot write a figure as {path.name}: name a {' / '.join(FIGURE_SUFFIXES)} file")
    dpi = positive_int("dpi", dpi)
    if dpi < MIN_DPI:
        raise ValueError(f"dpi must be at least {MIN_DPI} (the figures' text cannot be drawn at fewer dots per inch), "
                         f"got {dpi}")
    if kind not in VECTOR_FORMATS or any(artist.get_rasterized() for artist in fig.findobj()):
        _refuse_too_many_pixels(fig, dpi)
    write_atomically(path, lambda f: fig.savefig(f, format=kind, dpi=dpi))  # through a link, into new folders
    return path


class FigureTooLargeError(ValueError):
    """A figure that :func:`save_figure` would draw in over :data:`MAX_PIXELS` pixels. Its ``size`` says so (``dpi <N>
    makes a <width> x <height> pixel image of this ... figure, over ...``); the message adds what to do."""

    def __init__(self, size: str, fix: str):
        super().__init__(f"{size}: {fix}")
        self.size = size


def _refuse_too_many_pixels(fig: Figure, dpi: int) -> None:
    """A :class:`FigureTooLargeError` naming ``dpi`` and the figure's size where it would be drawn in over
    :data:`MAX_PIXELS` pixels."""
    inches = fig.get_size_inches()
    width, height = (int(side * dpi) for side in inches)
    if width * height > MAX_PIXELS:
        best = math.isqrt(int(MAX_PIXELS / (inches[0] * inches[1])))  # (floored: at most MAX_PIXELS)
        fix = (f"give a smaller dpi (at most {best} for this figure)" if best >= MIN_DPI else
               f"it is too large even at the least dpi, {MIN_DPI}: write it as PDF or SVG, or draw fewer panels")
        size = (f"dpi {dpi} makes a {width} x {height} pixel image of this {inches[0]:g} x {inches[1]:g} inch figure, "
                f"over {MAX_PIXELS:,} pixels ({MAX_PIXELS * 4 // 2**30} GiB of RGBA pixels to draw)")
        raise FigureTooLargeError(size, fix)


def boxplot(values: Mapping[str, np.ndarray], ylabel: str, title: str | None = None) -> Figure:
    """One box per method (e.g. the paper's Figs. 3, 7, 8): ``values`` maps a name to its 1-D samples. Names and
    labels are drawn as typed (no mathtext: ``$`` is ``$``), as in :func:`grid`; long names are broken into lines
    about :data:`NAME_WIDTH` wide. Samples holding NaN or Inf, or none, are a
    ValueError naming them: matplotlib drew no box for them; so is an empty ``values`` (an empty figure)."""
    if not isinstance(values, Mapping):  # (a list failed with "'list' object has no attribute 'values'")
        raise TypeError(f"boxplot values must be a dict {{name: samples}}, got {type(values).__name__}")
    if not values:  # (an empty figure: axes and no box)
        raise ValueError("boxplot values is empty: give at least one {name: samples}")
    names = list(values)
    samples = [np.ravel(_numpy(v)) for v in values.values()]
    for name, sample in zip(names, samples):
        if not sample.size:  # (matplotlib left its place blank, under its name)
            raise ValueError(f"no samples for {name!r}: its box cannot be drawn (it would be left out)")
        if not np.isfinite(sample).all():
            raise ValueError(f"NaN or Inf values in the samples of {name!r}: its box cannot be drawn (it would be "
                             "left out)")
    fig = _figure(max(4.0, 1.0 + 0.9 * len(names)), 3.5, layout="constrained")
    ax = fig.subplots()
    ax.boxplot(samples)
    ax.set_xticks(range(1, len(names) + 1), [_wrapped(n, NAME_WIDTH) for n in names], rotation=30, ha="right",
                  parse_math=False)
    ax.set_ylabel(ylabel, parse_math=False)
    if title:
        _fit(ax.set_title(title, parse_math=False), 0.8 * fig.get_figwidth())
    return fig


def line_plot(x, curves: Mapping[str, tuple], xlabel: str, ylabel: str, title: str | None = None) -> Figure:
    """Curves against ``x`` (e.g. Fig. 2, Fig. 9): ``curves`` maps a name to (mean, std or None), each one value per
    x; std is shaded. The legend stands right of the axes, off the curves. Names and labels are drawn as typed (no
    mathtext: ``$`` is ``$``), as in :func:`grid`; long names are broken into lines about :data:`NAME_WIDTH` wide.
    No curves (an empty dict) is a ValueError."""
    if not isinstance(curves, Mapping):
        raise TypeError(f"line_plot curves must be a dict {{name: (mean, std or None)}}, got {type(curves).__name__}")
    if not curves:  # (empty axes)
        raise ValueError("line_plot curves is empty: give at least one {name: (mean, std or None)}")
    xs = _numpy(x)
    bands = {name: _curve(name, curve, xs.shape) for name, curve in curves.items()}  # all checked before drawing
    fig = _figure(6.2, 3.5, layout="constrained")
    ax = fig.subplots()
    lines = []
    for name, (mu, sd) in bands.items():
        lines += ax.plot(xs, mu, marker="o", markersize=3, label=_wrapped(name, NAME_WIDTH))
        if sd is not None:
            ax.fill_between(xs, mu - sd, mu + sd, alpha=0.2)
    ax.set_xlabel(xlabel, parse_math=False)
    ax.set_ylabel(ylabel, parse_math=False)
    if title:
        _fit(ax.set_title(title, parse_math=False), 0.6 * fig.get_figwidth())  # (the legend takes the rest)
    legend_beside(ax, lines)  # each curve by name: matplotlib leaves out those that start with "_"
    return fig


def _curve(name: str, curve, shape: tuple) -> tuple[np.ndarray, np.ndarray | None]:
    """A :func:`line_plot` curve as (mean, std or None) arrays of x's ``shape`` (one value each, in any shape: (F, 1)
    say; a std may be one value for all), or a ValueError saying what it must be (a plain list of values was unpacked
    as "too many values", and two values as a scalar mean and std)."""
    try:
        mean, std = curve
        mu, sd = _numpy(mean), None if std is None else _numpy(std)
    except (TypeError, ValueError):
        mu = sd = None
    size = int(np.prod(shape))
    if mu is not None and mu.size == size and (sd is None or sd.size in (1, size)):
        return mu.reshape(shape), None if sd is None else np.broadcast_to(sd.reshape(-1), size).reshape(shape)
    if mu is not None:
        got = f"a mean of shape {mu.shape}" + ("" if sd is None else f" and a std of shape {sd.shape}")
    else:
        try:
            got = f"{type(curve).__name__} of {len(curve)} values"
        except TypeError:  # a number, a 0-d array
            got = type(curve).__name__
    raise ValueError(f"line_plot curve {name!r} must be (mean, std or None), one value per x ({size}; a std may "
                     f"be one for all; a curve with no band: (values, None)), got {got}")


def legend_beside(ax, handles=None) -> None:
    """The legend of ``ax`` (of ``handles``, else of its labelled artists) right of it, off the curves (the constrained
    layout makes room); its names as typed."""
    where = {"fontsize": 8, "loc": "upper left", "bbox_to_anchor": (1.01, 1.0), "frameon": False}
    legend = ax.legend(**where) if handles is None else ax.legend(handles=handles, **where)
    for text in legend.get_texts():
        text.set_parse_math(False)
