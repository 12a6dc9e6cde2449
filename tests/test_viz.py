"""Tests for rectgrad.viz (Appendix F.1 visualization); expected values are worked out by hand."""
import io
import re
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from rectgrad import viz


def test_channel_sum_tensor_and_array():
    a = torch.tensor([[[[1.0, 2.0]], [[10.0, 20.0]], [[100.0, 200.0]]]])  # (1,3,1,2)
    assert np.array_equal(viz.channel_sum(a), [[[111.0, 222.0]]])
    b = np.stack([np.ones((2, 2)), -3 * np.ones((2, 2))])  # (2,2,2) = (C,H,W)
    out = viz.channel_sum(b)
    assert out.shape == (2, 2) and np.all(out == -2.0)
    with pytest.raises(ValueError):
        viz.channel_sum(np.zeros((4, 4)))


def test_clip_outliers_per_image_percentiles():
    # 0..200 (201 values): 0.5th pct = 0.005*200 = 1, 99.5th = 199; the second image is 10x larger.
    img = np.arange(201.0).reshape(3, 67)
    out = viz.clip_outliers(np.stack([img, 10 * img]))
    assert (out[0].min(), out[0].max()) == (1.0, 199.0)
    assert (out[1].min(), out[1].max()) == (10.0, 1990.0)
    assert out[0, 0, 0] == 1.0 and out[0, -1, -1] == 199.0 and out[0, 1, 5] == img[1, 5]
    with pytest.raises(ValueError, match=r"^need percentiles 0 <= low <= high <= 100, got low=90 and high=10$"):
        viz.clip_outliers(img, 90, 10)
    assert np.array_equal(viz.clip_outliers(img, None, 99.5, symmetric=True), viz.clip_outliers(img, symmetric=True))


def test_clip_outliers_symmetric_cap():
    # -50..150: |m| sorted has 150 at rank 200 and 149 at rank 199 = 99.5th pct -> cap +-149, -50 untouched.
    m = (np.arange(201.0) - 50).reshape(3, 67)
    out = viz.clip_outliers(m, symmetric=True)
    assert (out.min(), out.max()) == (-50.0, 149.0)
    assert viz.clip_outliers(m).min() == -49.0  # the default (asymmetric) rule differs here
    flipped = viz.clip_outliers(-m, symmetric=True)  # -150..50: the cap is |value|'s 99.5th percentile still
    assert (flipped.min(), flipped.max()) == (-149.0, 50.0)
    assert np.array_equal(viz.prepare(-m, grayscale=True, symmetric=True), flipped[None])


def test_final_threshold_top_keeps_exactly_top_five_percent():
    rng = np.random.default_rng(0)
    img = rng.permutation(400).reshape(20, 20).astype(float)  # 95th pct = 379.05 -> 380..399 survive
    out = viz.final_threshold(np.stack([img, img - 1000]), "top")
    assert np.count_nonzero(out[0]) == 20
    assert sorted(out[0][out[0] != 0]) == list(range(380, 400))
    assert sorted(out[1][out[1] != 0]) == list(range(-620, -600))  # per image, negatives included
    ties = np.arange(21.0).reshape(3, 7)  # 95th pct = 19 exactly: values equal to it are kept
    assert np.sort(viz.final_threshold(ties, "top").ravel())[-3:].tolist() == [0.0, 19.0, 20.0]


def test_final_threshold_positive_and_bad_mode():
    m = np.array([[-2.0, 3.0], [0.0, -0.5]])
    assert np.array_equal(viz.final_threshold(m, "positive"), [[0.0, 3.0], [0.0, 0.0]])
    with pytest.raises(ValueError):
        viz.final_threshold(m, "abs")


def test_final_threshold_checks_its_percentile_as_the_evaluations_does():
    # True was read as the 1st percentile, a string or None failed inside numpy, 150 with numpy's words
    import re

    from rectgrad.evaluation.maps import final_threshold

    m = np.arange(20.0).reshape(4, 5)  # the 50th percentile of 0..19 is 9.5: 10..19 kept
    assert np.count_nonzero(viz.final_threshold(m, "top", np.float32(50))) == 10
    assert np.count_nonzero(viz.final_threshold(m, "top", 0)) == 19 and viz.final_threshold(m, "top", 100).sum() == 19
    for percentile in (True, "95", None, -1, 150, float("nan"), torch.tensor(95.0)):
        message = rf"^percentile must be a number in \[0, 100\], got {re.escape(repr(percentile))}$"
        for mode in ("top", "positive"):
            with pytest.raises(ValueError, match=message):
                viz.final_threshold(m, mode, percentile)
        with pytest.raises(ValueError, match=message):  # the same words as the evaluation's
            final_threshold(torch.from_numpy(m).view(1, 1, 4, 5), "saliency", percentile)
        with pytest.raises(ValueError, match=message):
            viz.prepare(m[None, None], threshold="top", percentile=percentile)


def test_clip_outliers_checks_its_percentiles_as_final_threshold_does():
    # True was read as the 1st percentile, a string failed in the comparison, a tensor reached numpy
    import re

    img = np.arange(201.0).reshape(3, 67)
    out = viz.clip_outliers(img, np.float32(1), np.int64(99))  # numpy's numbers are numbers: caps 2 and 198
    assert (out.min(), out.max()) == (2.0, 198.0)
    for bad in (True, "0.5", None, -1, 150, float("nan"), torch.tensor(0.5), np.array([0.5])):
        for name, args in (("low", (bad, 99.5)), ("high", (0.5, bad))):
            message = rf"^{name} must be a number in \[0, 100\], got {re.escape(repr(bad))}$"
            with pytest.raises(ValueError, match=message):
                viz.clip_outliers(img, *args)
            with pytest.raises(ValueError, match=message):
                viz.prepare(img[None, None], low=args[0], high=args[1])
        with pytest.raises(ValueError, match=rf"^high must be a number in \[0, 100\], got {re.escape(repr(bad))}$"):
            viz.clip_outliers(img, 0.5, bad, symmetric=True)
    assert np.array_equal(viz.clip_outliers(img, True, 99.5, symmetric=True), viz.clip_outliers(img, symmetric=True))


def test_prepare_pipeline_with_top_threshold():
    s = np.arange(400.0).reshape(1, 20, 20)
    attr = torch.tensor(np.stack([s / 2, s / 2], axis=1))  # (1,2,20,20): channels sum to 0..399
    out = viz.prepare(attr, threshold="top")
    # kept 380..399; 99.5th pct of the thresholded map = 397 + 0.005 = 397.005; the rest are 0
    assert out.shape == (1, 20, 20)
    assert np.count_nonzero(out == 0) == 380
    assert np.sort(out[out > 0])[:2].tolist() == [380.0, 381.0]
    assert out[out > 397].tolist() == pytest.approx([397.005, 397.005])  # 398 and 399 capped
    top_tenth = viz.prepare(attr, threshold="top", percentile=90, low=0, high=100)  # 90th pct 359.1: 360..399
    assert np.array_equal(top_tenth, np.where(s >= 360, s, 0.0))


def test_prepare_positive_and_grayscale():
    attr = np.array([[[[-5.0, 1.0], [2.0, 3.0]]]])  # (1,1,2,2)
    out = viz.prepare(attr, threshold="positive", low=0.0, high=100.0)
    assert np.array_equal(out, [[[0.0, 1.0], [2.0, 3.0]]])
    dense = np.ones((1, 1, 20, 20))
    dense[0, 0, 0, 0] = -5.0  # one zeroed value in 400: the 0.5th-percentile cap (1.0) must not lift it
    out = viz.prepare(dense, threshold="positive")
    assert out[0, 0, 0] == 0.0 and np.count_nonzero(out) == 399
    maps = np.random.default_rng(1).normal(size=(3, 8, 8))
    assert np.array_equal(viz.prepare(maps, grayscale=True), viz.prepare(maps[:, None]))
    assert viz.prepare(maps).shape == (1, 8, 8)  # without grayscale=True a 3-D input is one (C,H,W) image
    with pytest.raises(ValueError, match=r"grayscale maps must be \(N,H,W\), \(H,W\) or \(N,1,H,W\)"):
        viz.prepare(np.zeros((2, 3, 8, 8)), grayscale=True)
    s = np.arange(400.0).reshape(1, 20, 20) - 1000  # all negative: the top 5% (-620..-601) stay, negative
    top = viz.prepare(s, grayscale=True, threshold="top", low=0, high=100)
    assert np.array_equal(top, np.where(s >= -620, s, 0.0))


def test_to_display_image_ranges_and_layout():
    x = torch.tensor([-1.0, 0.0, 0.5, 1.0, 3.0]).reshape(1, 1, 1, 5).repeat(2, 3, 1, 1)
    out = viz.to_display_image(x)
    assert out.shape == (2, 1, 5, 3)
    assert np.allclose(out[0, 0, :, 1], [0.0, 0.5, 0.75, 1.0, 1.0])  # (x+1)/2, then clipped to [0,1]
    grey = viz.to_display_image(torch.zeros(1, 4, 6))
    assert grey.shape == (4, 6) and np.all(grey == 0.5)


def test_to_display_image_undoes_normalization():
    img = np.random.default_rng(2).uniform(size=(3, 4, 4))
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    x = (img - mean[:, None, None]) / std[:, None, None]
    assert np.allclose(viz.to_display_image(x, mean, std), img.transpose(1, 2, 0))


def test_color_scale_symmetric_and_zero_is_white():
    m = np.array([[-4.0, 0.0], [0.5, 3.0]])
    assert viz.color_limits(m) == (-4.0, 4.0)  # from max|m|, not max(m)
    assert viz.color_limits(np.zeros((2, 2))) == (-1.0, 1.0)
    fig = viz.grid(None, [m[None]])
    im = fig.axes[0].images[0]
    assert im.get_clim() == (-4.0, 4.0) and im.get_cmap().name == viz.CMAP
    assert im.get_interpolation() == "nearest"  # one block per pixel, as the paper draws its maps
    assert np.allclose(im.to_rgba(0.0)[:3], 1.0, atol=0.01)  # white at zero
    assert im.to_rgba(4.0)[0] > 0.9 and im.to_rgba(4.0)[2] < 0.1  # red at +max
    assert im.to_rgba(-4.0)[2] > 0.9 and im.to_rgba(-4.0)[0] < 0.1  # blue at -max


def test_grid_layout_and_png(tmp_path):
    images = torch.rand(2, 3, 8, 8) * 2 - 1
    maps = {name: np.random.default_rng(i).normal(size=(2, 8, 8)) for i, name in enumerate(["A", "B", "C"])}
    fig = viz.grid(images, maps, row_labels=["r0", "r1"], title="t")
    assert len(fig.axes) == 2 * 4
    rows = {round(ax.get_position().y0, 3) for ax in fig.axes}
    cols = {round(ax.get_position().x0, 3) for ax in fig.axes}
    assert len(rows) == 2 and len(cols) == 4
    assert [ax.get_title() for ax in fig.axes[:4]] == ["Input", "A", "B", "C"]
    assert fig.axes[0].get_ylabel() == "r0" and fig.axes[4].get_ylabel() == "r1"
    assert fig.get_suptitle() == "t"
    assert fig.axes[0].images[0].get_array().shape == (8, 8, 3)
    fig = viz.grid(torch.zeros(2, 4, 8, 8), [np.zeros((2, 8, 8))])  # RGBA, as matplotlib draws it
    assert fig.axes[0].images[0].get_array().shape == (8, 8, 4)
    path = viz.save_figure(fig, tmp_path / "sub" / "dir" / "grid.png", dpi=50)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    w, h = Image.open(path).size
    assert (w, h) == (round(fig.get_figwidth() * 50), round(fig.get_figheight() * 50))
    (tmp_path / "link.png").symlink_to(tmp_path / "new" / "sub" / "target.png")  # its folders do not exist yet
    viz.save_figure(fig, tmp_path / "link.png", dpi=20)
    for dpi in (0, True, 2.5):
        with pytest.raises(ValueError, match=rf"dpi must be a positive integer, got {dpi}"):
            viz.save_figure(fig, tmp_path / "bad.png", dpi=dpi)
    # too few dots per inch for the 7-point labels: a clear error, not FreeType's "invalid ppem value"
    for dpi in (1, 2, viz.MIN_DPI - 1):
        with pytest.raises(ValueError, match=rf"^dpi must be at least {viz.MIN_DPI} \(the figures' text cannot be "
                                             rf"drawn at fewer dots per inch\), got {dpi}$"):
            viz.save_figure(fig, tmp_path / "bad.png", dpi=dpi)
    assert not (tmp_path / "bad.png").exists()
    labelled = viz.grid(images, maps, row_labels=["r0", "r1"], title="t")  # (its text drawn at the least dpi)
    assert Image.open(viz.save_figure(labelled, tmp_path / "least.png", dpi=viz.MIN_DPI)).size[0] > 0
    assert (tmp_path / "link.png").is_symlink() and (tmp_path / "new" / "sub" / "target.png").is_file()
    with pytest.raises(ValueError):
        viz.grid(images, {"A": maps["A"][:1]})
    with pytest.raises(ValueError):
        viz.grid(images, maps, col_labels=["only", "three", "labels"])


def test_boxplot_and_line_plot():
    fig = viz.boxplot({"RectGrad": [1.0, 2.0, 3.0], "Saliency": [4.0, 5.0]}, ylabel="sum |a|", title="t")
    ax = fig.axes[0]
    assert ax.get_title() == "t"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["RectGrad", "Saliency"]
    assert ax.get_ylabel() == "sum |a|"
    fig = viz.line_plot([10, 30, 50], {"a": ([0.1, 0.2, 0.3], [0.01, 0.01, 0.02]), "b": ([0.3, 0.2, 0.1], None)},
                        xlabel="p", ylabel="acc")
    ax = fig.axes[0]
    assert [line.get_label() for line in ax.get_lines()] == ["a", "b"]
    assert len(ax.collections) == 1  # only "a" has a std band
    fig.canvas.draw()
    assert ax.get_legend().get_window_extent().x0 >= ax.get_window_extent().x1  # beside the axes, off the curves


def test_figures_stay_out_of_pyplot_state(tmp_path):
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    fig = viz.grid(np.zeros((1, 3, 4, 4)), {"m": np.ones((1, 4, 4))})
    viz.save_figure(viz.boxplot({"m": [1.0, 2.0]}, ylabel="y"), tmp_path / "b.png")
    viz.save_figure(fig, tmp_path / "g.png")
    assert plt.get_fignums() == before  # no pyplot-managed figures were opened


def test_a_figure_interrupted_while_written_leaves_the_old_file_whole(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    viz.save_figure(viz.boxplot({"m": [1.0, 2.0]}, ylabel="y"), tmp_path / "b.png")
    before = (tmp_path / "b.png").read_bytes()

    def half_then_ctrl_c(self, f, **kwargs):
        f.write(b"\x89PNG half a figure")
        raise KeyboardInterrupt

    monkeypatch.setattr(Figure, "savefig", half_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        viz.save_figure(viz.boxplot({"m": [3.0, 4.0]}, ylabel="y"), tmp_path / "b.png")
    assert (tmp_path / "b.png").read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["b.png"]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_maps_and_images(dtype):
    attr = torch.tensor([[[[-2.0, 1.0], [0.5, 3.0]]]], requires_grad=True).to(dtype)  # (1,1,2,2), as explain gives
    assert np.array_equal(viz.prepare(attr, low=0.0, high=100.0), [[[-2.0, 1.0], [0.5, 3.0]]])
    fig = viz.grid(torch.zeros(1, 3, 2, 2, dtype=dtype), {"m": torch.ones(1, 2, 2, dtype=dtype)})
    assert fig.axes[1].images[0].get_clim() == (-1.0, 1.0)
    assert viz.color_limits(attr[0, 0]) == (-3.0, 3.0)
    viz.boxplot({"m": torch.tensor([1.0, 2.0], dtype=dtype)}, ylabel="y")


def test_to_display_image_refuses_mean_std_of_another_channel_count():
    grey = torch.zeros(1, 1, 4, 6)
    with pytest.raises(ValueError, match="mean has 3 values for images of 1 channels"):
        viz.to_display_image(grey, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))  # was a (1,4,6,3) colour image
    with pytest.raises(ValueError, match="std has 2 values for images of 3 channels"):
        viz.grid(torch.zeros(1, 3, 4, 4), [np.zeros((1, 4, 4))], mean=0.5, std=(0.5, 0.5))
    assert viz.to_display_image(grey, mean=0.5, std=(0.5,)).shape == (1, 4, 6)


def test_grid_rows_follow_the_aspect_of_non_square_images():
    fig = viz.grid(torch.zeros(2, 1, 64, 128), {"m": np.ones((2, 64, 128))}, cell=2.0)
    assert (fig.get_figwidth(), fig.get_figheight()) == (4.0, 2.0)  # 2 rows of 2 x 1 inch panels, not 2 x 2
    fig = viz.grid(None, [np.ones((1, 8, 8))], title="t", cell=2.0)
    assert fig.get_figheight() == pytest.approx(2.4)  # square panels as before, plus the title


@pytest.mark.parametrize("case", [str.lower, str.upper])  # (capitals are wider than the average letter)
def test_long_grid_labels_stay_beside_their_own_panel(case):
    rows = [case(r) for r in ("tabby cat -> Egyptian cat (p=0.93)", "golden retriever, the dog with a long name", "x")]
    ones = np.ones((3, 32, 32))
    columns = {case("RectGrad (PRR) with the padding trick"): ones, case("Saliency"): ones}
    fig = viz.grid(torch.zeros(3, 3, 32, 32), columns, row_labels=rows)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    axes = np.array(fig.axes).reshape(3, 3)
    for i in range(3):  # a label no taller than its row: it overlapped the next rows' labels
        label, panel = axes[i, 0].yaxis.label.get_window_extent(renderer), axes[i, 0].get_window_extent(renderer)
        assert panel.y0 - 1 <= label.y0 and label.y1 <= panel.y1 + 1
    for j in range(3):  # a title no wider than its column (and the gap beside it)
        title, panel = axes[0, j].title.get_window_extent(renderer), axes[0, j].get_window_extent(renderer)
        assert title.width <= panel.width * 1.1
    assert axes[2, 0].get_ylabel() == case("x") and axes[0, 2].get_title() == case("Saliency")  # short: as they were
    assert axes[1, 0].get_ylabel().replace("\n", " ") == rows[1]  # broken at spaces, nothing lost


def test_labels_with_blank_words_draw():
    labels = ["cat \xa0 dog", "\u3000", " cat ", "two  spaces"]  # blank-only words: an empty path; blank ends
    fig = viz.grid(None, {label: np.ones((1, 8, 8)) for label in labels}, row_labels=labels[:1])
    fig.canvas.draw()  # raised AttributeError from matplotlib's TextPath when measuring "\xa0" alone
    assert [ax.get_title() for ax in fig.axes] == labels  # short labels come back as they were, blanks and all
    long = " leading and trailing blanks stay when a label is broken "
    assert viz._wrapped(long, 1.0).count("\n") >= 2 and viz._wrapped(long, 1.0).replace("\n", " ") == long
    assert viz._width("$x$") == viz._width("SxS")  # a $ measured as an S, not as the start of mathtext
    assert viz._width("\xa0") > 0 and viz._width(" ") > 0 and viz._width("aa") > viz._width("a") > 0


def test_an_all_zero_map_says_so():
    fig = viz.grid(None, {"zero": np.zeros((2, 8, 8)), "some": np.eye(8)[None].repeat(2, 0)})
    assert [[t.get_text() for t in ax.texts] for ax in fig.axes] == [["all zero"], [], ["all zero"], []]


def test_grid_says_what_maps_it_takes():
    images = torch.zeros(2, 3, 8, 8)
    with pytest.raises(ValueError, match=r"display-ready \(N,H,W\) maps; viz.prepare\(attributions\) makes them, "
                                         r"got shape \(2, 3, 8, 8\)"):
        viz.grid(images, {"raw": torch.zeros(2, 3, 8, 8)})  # explain's output as it is
    with pytest.raises(ValueError, match=r"display-ready \(N,H,W\) maps, got shape \(8, 8\)"):
        viz.grid(None, [np.zeros((8, 8))])  # was "with N=8": the map's height read as its count
    # prepare's (N,H,W) maps given alone: each map was read as a column, "must be (N,H,W) maps, got shape (8, 8)"
    for alone in (np.zeros((2, 8, 8)), torch.zeros(2, 8, 8)):
        with pytest.raises(ValueError, match=r"^maps is one array of shape \(2, 8, 8\), but grid takes columns of "
                                             r"maps: give a list of them, \[maps\], or a dict \{name: maps\}$"):
            viz.grid(images, alone)
    columns = np.stack([np.ones((2, 8, 8)), np.zeros((2, 8, 8))])  # (columns, N, H, W): a list's array
    assert len(viz.grid(images, columns).axes) == 6


def test_figures_show_themselves_in_a_notebook_without_pyplot():
    import pickle

    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    for fig in (viz.grid(None, [np.ones((1, 4, 4))]), viz.boxplot({"m": [1.0, 2.0]}, ylabel="y"),
                viz.line_plot([1, 2], {"a": ([1.0, 2.0], None)}, "x", "y")):
        png = fig._repr_png_()  # what IPython's display shows when no inline formatter is registered for Figure
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        size = Image.open(io.BytesIO(png)).size
        assert size == (round(fig.get_figwidth() * fig.dpi), round(fig.get_figheight() * fig.dpi))
        assert pickle.loads(pickle.dumps(fig)).get_figwidth() == fig.get_figwidth()
    assert plt.get_fignums() == before


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_maps_holding_nan_or_inf_are_named_not_drawn_blank(bad):
    maps = np.ones((3, 4, 4))
    maps[1, 2, 3] = bad  # image 1 only
    with pytest.raises(ValueError, match=r"NaN or Inf values in maps\['RectGrad'\] of image\(s\) \[1\]"):
        viz.grid(None, {"Saliency": np.ones((3, 4, 4)), "RectGrad": maps})  # drew image 1 blank, clim (-1, 1)
    with pytest.raises(ValueError, match=r"NaN or Inf values in maps\[0\] of image\(s\) \[1\]"):
        viz.grid(torch.zeros(3, 1, 4, 4), [maps])
    with pytest.raises(ValueError, match=r"NaN or Inf values in the maps of image\(s\) \[1\]"):
        viz.prepare(maps, grayscale=True)  # the percentile caps made all of image 1 NaN
    with pytest.raises(ValueError, match=r"NaN or Inf values in the maps of image\(s\) \[1\]"):
        viz.prepare(torch.tensor(maps[:, None]), threshold="top")  # the threshold zeroed all of image 1
    with pytest.raises(ValueError, match=r"NaN or Inf values in the map: such a map cannot be scaled or drawn"):
        viz.color_limits(maps[1])  # was (-1, 1) for NaN, (-inf, inf) for Inf
    fig = viz.grid(None, [np.ones((1, 4, 4))])
    with pytest.raises(ValueError, match=r"NaN or Inf values in the map"):
        viz.plot_map(fig.axes[0], maps[1])
    assert len(fig.axes[0].images) == 1  # nothing half-drawn
    assert np.array_equal(viz.prepare(maps[[0, 2]], grayscale=True), np.ones((2, 4, 4)))  # finite maps as before


def test_line_plot_says_what_a_curve_must_be():
    must = r"line_plot curve 'a' must be \(mean, std or None\), one value per x \(3; a std may be one for all; a " \
           r"curve with no band: \(values, None\)\), got "
    with pytest.raises(ValueError, match=must + "list of 3 values"):  # was "too many values to unpack"
        viz.line_plot([10, 30, 50], {"a": [0.1, 0.2, 0.3]}, "p", "acc")
    with pytest.raises(ValueError, match=must + r"a mean of shape \(3,\) and a std of shape \(2,\)"):
        viz.line_plot([10, 30, 50], {"a": ([0.1, 0.2, 0.3], [0.01, 0.02])}, "p", "acc")  # was a numpy broadcast error
    with pytest.raises(ValueError, match=must + "ndarray$"):  # a 0-d curve: its own error, not len()'s
        viz.line_plot([10, 30, 50], {"a": np.array(0.5)}, "p", "acc")
    with pytest.raises(ValueError, match=must + "tuple of 3 values"):  # ragged: not numpy's inhomogeneous error
        viz.line_plot([10, 30, 50], {"a": ([1, 2, 3], [1, 2], [5])}, "p", "acc")
    with pytest.raises(ValueError, match=r"curve 'a' .* one value per x \(2; .* got a mean of shape \(\) and a std of "
                                         r"shape \(\)"):
        viz.line_plot([10, 30], {"a": [0.1, 0.2]}, "p", "acc")  # two values were read as a scalar mean and std
    fig = viz.line_plot([10, 30], {"a": ([0.1, 0.2], None), "b": np.array([[0.3, 0.4], [0.05, 0.1]]),
                                   "c": (np.array([[0.5], [0.6]]), 0.1)}, "p", "acc")  # (F, 1) mean, one std for all
    a, b, c = fig.axes[0].get_lines()
    assert a.get_ydata().tolist() == [0.1, 0.2] and b.get_ydata().tolist() == [0.3, 0.4]
    assert c.get_ydata().tolist() == [0.5, 0.6]
    bands = [band.get_paths()[0].vertices[:, 1] for band in fig.axes[0].collections]
    assert len(bands) == 2  # b's std band, from the (2, len(x)) array's second row, and c's
    assert np.allclose(sorted(set(np.round(bands[1], 6))), [0.4, 0.5, 0.6, 0.7])


def test_grid_takes_one_image_as_a_batch_of_one():
    image = torch.linspace(-1, 1, 3 * 4 * 6).reshape(3, 4, 6)
    fig = viz.grid(image, {"m": viz.prepare(image)})  # was "images must be (N,C,H,W), got shape (3, 4, 6)"
    assert len(fig.axes) == 2 and [ax.get_title() for ax in fig.axes] == ["Input", "m"]
    assert np.array_equal(fig.axes[0].images[0].get_array(), viz.to_display_image(image))
    grey = viz.grid(torch.zeros(1, 4, 6), [np.ones((1, 4, 6))])
    assert grey.axes[0].images[0].get_array().shape == (4, 6)
    with pytest.raises(ValueError, match=r"images of shape \(5, 4, 6\) are one \(C,H,W\) image, for 5 rows of maps: "
                                         r"give \(N,C,H,W\) images \(grayscale: \(N,1,H,W\)\)"):
        viz.grid(torch.zeros(5, 4, 6), [np.ones((5, 4, 6))])  # five grayscale images without their channel axis
    with pytest.raises(ValueError, match=r"images must be \(N,C,H,W\) or one \(C,H,W\) image, got shape \(4, 6\)"):
        viz.grid(torch.zeros(4, 6), [np.ones((1, 4, 6))])


def test_images_to_draw_need_one_three_or_four_channels_first():
    for images, order in ((torch.zeros(2, 8, 8, 3), r"0, 3, 1, 2"), (np.zeros((2, 8, 8, 1)), r"0, 3, 1, 2"),
                          (torch.zeros(8, 8, 3), r"2, 0, 1")):  # was matplotlib's "Invalid shape (8, 3, 8)"
        shape = str(tuple(images.shape)).replace("(", r"\(").replace(")", r"\)")
        with pytest.raises(ValueError, match=rf"3 \(RGB\) or 4 \(RGBA\) channels, got shape {shape}; they look "
                                             rf"channels-last .*: give x.permute\({order}\)"):
            viz.grid(images, [np.zeros((len(images) if images.ndim == 4 else 1, 8, 8))])
    with pytest.raises(ValueError, match=r"or 4 \(RGBA\) channels, got shape \(2, 2, 8, 8\)$"):  # no layout to suggest
        viz.to_display_image(torch.zeros(2, 2, 8, 8))
    fig = viz.grid(torch.zeros(2, 8, 8, 3).permute(0, 3, 1, 2), [np.zeros((2, 8, 8))])  # the permutation named draws
    assert fig.axes[0].images[0].get_array().shape == (8, 8, 3)
    fig = viz.grid(torch.zeros(2, 4, 8, 8), [np.zeros((2, 8, 8))])  # RGBA, as matplotlib draws it
    assert fig.axes[0].images[0].get_array().shape == (8, 8, 4)


def test_bad_shapes_and_percentiles_get_viz_own_errors():
    # (numpy's AxisError and percentile errors are ValueErrors too, so the messages are what is checked)
    with pytest.raises(ValueError, match=r"expected \(C,H,W\) or \(N,C,H,W\), got shape \(4, 4\)"):
        viz.channel_sum(np.zeros((4, 4)))
    with pytest.raises(ValueError, match=r"^high must be a number in \[0, 100\], got 100.5$"):
        viz.clip_outliers(np.zeros((4, 4)), high=100.5, symmetric=True)
    with pytest.raises(ValueError, match=r"every column must be \(N,H,W\) with N=2, got shape \(3, 4, 4\)"):
        viz.grid(None, [np.ones((2, 4, 4)), np.ones((3, 4, 4))])  # a longer column too: its extra rows were dropped
    maps = np.ones((4, 2, 2))
    maps[1, 0, 0] = maps[3, 1, 1] = np.nan
    with pytest.raises(ValueError, match=r"the maps of image\(s\) \[1, 3\]"):  # every bad image named
        viz.prepare(maps, grayscale=True)


def test_symmetric_caps_and_prepare_defaults_are_per_image():
    m = (np.arange(201.0) - 50).reshape(3, 67)  # cap +-149 (see test_clip_outliers_symmetric_cap)
    out = viz.clip_outliers(np.stack([m, 10 * m]), symmetric=True)
    assert (out[0].min(), out[0].max(), out[1].min(), out[1].max()) == (-50.0, 149.0, -500.0, 1490.0)
    img = np.arange(201.0).reshape(1, 3, 67)  # prepare caps at the 0.5th / 99.5th percentiles by default: 1 and 199
    assert (viz.prepare(img, grayscale=True).min(), viz.prepare(img, grayscale=True).max()) == (1.0, 199.0)
    # after a threshold too, symmetric=True caps at +-the 99.5th percentile of |value| only: 1 is not lifted to the
    # 0.5th percentile 1 + 0.005 * 199 = 1.995 as the default rule lifts it
    ramp = np.arange(1.0, 201.0).reshape(1, 10, 20)
    assert viz.prepare(ramp, grayscale=True, threshold="positive", symmetric=True).min() == 1.0
    assert viz.prepare(ramp, grayscale=True, threshold="positive").min() == pytest.approx(1.995)


def test_to_display_image_with_only_a_mean_or_only_a_std():
    x = np.array([[[-0.5, 0.25, 0.5, 2.0]]])  # (1,1,4): one grayscale image
    assert np.allclose(viz.to_display_image(x, mean=0.5), [[0.0, 0.75, 1.0, 1.0]])  # x + 0.5 (std 1)
    assert np.allclose(viz.to_display_image(x, std=0.5), [[0.0, 0.125, 0.25, 1.0]])  # x * 0.5 (mean 0)


def test_color_limits_of_a_small_map_are_its_own():
    assert viz.color_limits(np.array([[0.25, -0.5]])) == (-0.5, 0.5)  # not (-1, 1): that is for all-zero maps only


def test_grayscale_inputs_drawn_grey_from_0_to_1():
    fig = viz.grid(torch.zeros(1, 1, 4, 4), [np.ones((1, 4, 4))])  # all 0.5 grey: autoscaled it drew black
    im = fig.axes[0].images[0]
    assert im.get_cmap().name == "gray" and im.get_clim() == (0.0, 1.0)


def test_grid_rows_as_tall_as_the_tallest_panel():
    fig = viz.grid(torch.zeros(2, 3, 4, 8), {"m": np.ones((2, 8, 8))}, cell=1.0)  # wide inputs, square maps
    assert (fig.get_figwidth(), fig.get_figheight()) == (2.0, 2.0)


def test_labels_break_where_the_words_and_the_space_between_them_do_not_fit():
    words = viz._width("ab") * 2
    inches = (words + viz._width(" ") / 2) / (72 * 0.75)  # room for both words, not for the space between them
    assert viz._wrapped("ab ab", inches) == "ab\nab"
    assert viz._wrapped("ab ab", (words + 2 * viz._width(" ")) / (72 * 0.75)) == "ab ab"


def test_save_figure_formats(tmp_path):
    fig = viz.boxplot({"m": [1.0, 2.0]}, ylabel="y")
    starts = {"a.PDF": b"%PDF", "b.svg": b"<?xml", "c.jpg": b"\xff\xd8", "d": b"\x89PNG"}  # the suffix's case aside
    for name, start in starts.items():
        assert viz.save_figure(fig, tmp_path / name, dpi=10).read_bytes().startswith(start), name
    with pytest.raises(ValueError, match=r"cannot write a figure as e.txt: name a .png / .pdf"):
        viz.save_figure(fig, tmp_path / "e.txt")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(starts)
    w, h = Image.open(viz.save_figure(fig, tmp_path / "default.png")).size  # 150 dpi unless told
    assert (w, h) == (round(fig.get_figwidth() * 150), round(fig.get_figheight() * 150))


def test_save_figure_under_a_file_taken_for_a_folder_names_that_file(tmp_path):
    # the error was "File exists: .../notes.txt", or "Not a directory: .../notes.txt/sub", a folder that is not there
    fig = viz.boxplot({"m": [1.0, 2.0]}, ylabel="y")
    notes = tmp_path / "notes.txt"
    notes.write_text("kept")
    for path in (notes / "grid.png", notes / "sub" / "grid.png"):
        with pytest.raises(NotADirectoryError, match=rf"^{re.escape(str(notes))} is a file, not a folder: cannot write "
                                                     rf"{re.escape(str(path))} in it; give a path in a folder$"):
            viz.save_figure(fig, path)
    assert notes.read_text() == "kept" and [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_boxplot_boxes_under_their_own_names():
    values = {"RectGrad": [1.0, 2.0, 3.0], "Saliency": [4.0, 5.0], "c": [0.0], "d": [0.0], "e": [0.0], "f": [0.0]}
    fig = viz.boxplot(values, ylabel="y")
    ax = fig.axes[0]
    names = dict(zip(ax.get_xticks(), [t.get_text() for t in ax.get_xticklabels()]))
    levels = {}  # the caps and the median of each box: horizontal segments, by their centre
    for line in ax.lines:
        x, y = line.get_xdata(), line.get_ydata()
        if len(x) == 2 and y[0] == y[1]:
            levels.setdefault(names[round(float(np.mean(x)))], set()).add(float(y[0]))
    assert levels["RectGrad"] == {1.0, 2.0, 3.0} and levels["Saliency"] == {4.0, 4.5, 5.0}
    assert fig.get_figwidth() == pytest.approx(1.0 + 0.9 * 6)  # wider with more boxes


def test_line_plot_axes_labels_and_bands_per_x():
    fig = viz.line_plot([10, 30, 50], {"a": ([0.1, 0.2, 0.3], [0.01, 0.01, 0.02])}, xlabel="p", ylabel="acc")
    ax = fig.axes[0]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("p", "acc")
    band = {(float(x), round(float(y), 6)) for x, y in ax.collections[0].get_paths()[0].vertices}
    assert band == {(10, 0.09), (10, 0.11), (30, 0.19), (30, 0.21), (50, 0.28), (50, 0.32)}  # mean +- its own std


def test_boxplot_and_line_plot_draw_dollars_and_backslashes_as_typed(tmp_path):
    name, label = r"cost $\frac$ and $5", r"a $\x$ b"  # as mathtext: a parse error when drawn, or garbled
    fig = viz.boxplot({name: [1.0, 2.0]}, ylabel=label, title=label)
    viz.save_figure(fig, tmp_path / "b.png", dpi=10)
    ax = fig.axes[0]
    texts = [ax.get_xticklabels()[0], ax.yaxis.label, ax.title]
    assert [t.get_text() for t in texts] == [name, label, label] and not any(t.get_parse_math() for t in texts)
    fig = viz.line_plot([1, 2], {name: ([0.1, 0.2], None)}, xlabel=label, ylabel=label, title=label)
    viz.save_figure(fig, tmp_path / "l.png", dpi=10)
    ax = fig.axes[0]
    texts = [ax.get_legend().get_texts()[0], ax.xaxis.label, ax.yaxis.label, ax.title]
    assert [t.get_text() for t in texts] == [name, label, label, label] and not any(t.get_parse_math() for t in texts)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_boxplot_names_samples_holding_nan_or_inf_rather_than_drop_their_box(bad):
    with pytest.raises(ValueError, match=r"NaN or Inf values in the samples of 'Saliency': its box"):
        viz.boxplot({"RectGrad": [1.0, 2.0], "Saliency": torch.tensor([1.0, bad, 2.0])}, ylabel="y")


@pytest.mark.parametrize("shape", [(0, 4, 5), (2, 0, 5), (2, 4, 0)])
def test_empty_maps_are_named_not_a_numpy_index_error(shape):
    maps = np.zeros(shape)
    for draw in (viz.clip_outliers, lambda m: viz.final_threshold(m, "top"), viz.prepare, viz.color_limits,
                 lambda m: viz.grid(None, {"m": m})):
        with pytest.raises(ValueError, match=rf"no values in .*, got shape \({shape[0]}, {shape[1]}, {shape[2]}\)"):
            draw(maps if draw is not viz.prepare else maps[:, None])
    with pytest.raises(ValueError, match=r"no values in images, got shape \(0, 3, 4, 5\)"):
        viz.grid(np.zeros((0, 3, 4, 5)), {})


def test_uint8_images_are_drawn_on_the_0_255_scale():
    pixels = [0, 51, 255]  # a dataset's raw images (ImageDataset.images): read as [-1, 1], all but 0 drew white
    for x in (torch.tensor(pixels, dtype=torch.uint8).view(1, 1, 3), np.array(pixels, dtype=np.uint8).reshape(1, 1, 3)):
        assert np.allclose(viz.to_display_image(x), [[0.0, 0.2, 1.0]])
    fig = viz.grid(torch.tensor(pixels, dtype=torch.uint8).view(1, 1, 1, 3).repeat(1, 3, 1, 1), [np.ones((1, 1, 3))])
    assert np.allclose(fig.axes[0].images[0].get_array()[0, :, 0], [0.0, 0.2, 1.0])


@pytest.mark.parametrize("x", [torch.tensor([0, 51, 255]).view(1, 1, 3), np.array([0, 51, 255]).reshape(1, 1, 3),
                               np.array([0, 13107, 65535], dtype=np.uint16).reshape(1, 1, 3),
                               torch.tensor([False, True, True]).view(1, 1, 3)])
def test_integer_images_other_than_uint8_are_refused_saying_what_to_give(x):
    # int64 pixels (torch.tensor of a list, np.array(...).astype(int)) were read as [-1, 1]: all but 0 drew white
    with pytest.raises(TypeError, match=rf"^images of dtype {re.escape(str(x.dtype))} are neither uint8 pixels "
                                        r"\(0-255\) nor floats: give uint8 pixels \(x.to\(torch.uint8\); a numpy "
                                        r"array: x.astype\(np.uint8\)\) or floats"):
        viz.to_display_image(x)
    with pytest.raises(TypeError, match="are neither uint8 pixels"):
        viz.grid(x[None], [np.ones((1, 1, 3))])


def test_a_list_of_images_is_read_by_its_images_types():
    # a list of uint8 images was read as [-1, 1], drawn white but for the zeros, unlike the same images stacked
    image = torch.tensor([0, 51, 255], dtype=torch.uint8).view(1, 1, 3)
    for images in ([image, image], [image.numpy(), image.numpy()], (image, image)):
        assert np.array_equal(viz.to_display_image(images), viz.to_display_image(torch.stack([image, image])))
    for images in ([image.long(), image.long()], [image, image.float()]):
        with pytest.raises(TypeError, match="are neither uint8 pixels"):
            viz.to_display_image(images)
    with pytest.raises(ValueError, match="uint8 images are raw pixels"):
        viz.to_display_image([image], mean=[0.5], std=[0.5])


def test_uint8_images_with_a_mean_and_std_are_refused_as_raw_pixels():
    # raw pixels un-normalised as x * std + mean came out all white but for the zeros
    x = torch.tensor([0, 51, 255], dtype=torch.uint8).view(1, 1, 3)
    with pytest.raises(ValueError, match=r"^uint8 images are raw pixels \(0-255\), drawn as they are: mean and std "
                                         r"un-normalise floats, the model's inputs; give these images without them$"):
        viz.to_display_image(x, mean=[0.5], std=[0.5])
    with pytest.raises(ValueError, match="uint8 images are raw pixels"):
        viz.grid(x[None], [np.ones((1, 1, 3))], mean=[0.5], std=[0.5])


def test_yes_no_settings_take_true_or_false_only():
    maps = np.arange(16.0).reshape(1, 4, 4) - 8  # symmetric="no" capped symmetrically, grayscale="no" read no channels
    with pytest.raises(TypeError, match="symmetric must be True or False, got 'no'"):
        viz.clip_outliers(maps, symmetric="no")
    with pytest.raises(TypeError, match="symmetric must be True or False, got 'no'"):
        viz.prepare(maps[:, None], symmetric="no")
    with pytest.raises(TypeError, match="grayscale must be True or False, got 'no'"):
        viz.prepare(maps, grayscale="no")
    assert np.array_equal(viz.prepare(maps, grayscale=np.bool_(True), low=0, high=100), maps)


def test_lists_of_tensors_are_read_as_tensors_are():
    # per-image values gathered in a list: requiring grad or bfloat16, numpy could not read them
    grad = [torch.tensor(v, requires_grad=True) * 1 for v in (1.0, 2.0, 3.0)]
    half = [torch.tensor(v, dtype=torch.bfloat16) for v in (4.0, 5.0, 6.0)]
    ax = viz.boxplot({"grad": grad, "bfloat16": half}, ylabel="y").axes[0]
    medians = sorted(float(line.get_ydata()[0]) for line in ax.lines if line.get_color() == "C1")
    assert medians == [2.0, 5.0]
    ax = viz.line_plot(half[:2], {"a": (grad[:2], [grad[0], grad[0]])}, xlabel="x", ylabel="y").axes[0]
    assert ax.lines[0].get_xydata().tolist() == [[4.0, 1.0], [5.0, 2.0]]
    rows = [[torch.tensor([[1.0, -2.0]], requires_grad=True)], [torch.tensor([[3.0, 0.0]], dtype=torch.bfloat16)]]
    assert np.array_equal(viz.prepare(rows, low=0, high=100), [[[1.0, -2.0]], [[3.0, 0.0]]])  # two (1,1,2) images


def test_a_list_of_arrays_of_different_shapes_names_their_shapes():
    # numpy's "setting an array element with a sequence. The requested array has an inhomogeneous shape after 2
    # dimensions" named neither the list nor the shapes
    for draw, parts, shapes in ((viz.prepare, [torch.zeros(3, 4, 4), np.zeros((3, 5, 5))], "(3, 4, 4), (3, 5, 5)"),
                                (lambda v: viz.boxplot({"m": v}, ylabel="y"), [[1.0, 2.0], [3.0]], "(2,), (1,)")):
        with pytest.raises(ValueError, match=rf"^the 2 arrays of a list differ in shape: {re.escape(shapes)}; give "
                                             r"arrays of one shape \(or one array\)$"):
            draw(parts)


def test_mean_and_std_may_be_tensors_as_the_model_keeps_them():
    # (1, C, 1, 1) normalisation constants beside the model: on its GPU or in its bfloat16, numpy could not read them
    mean = torch.tensor([0.5, 0.25, 0.0], dtype=torch.bfloat16).view(1, 3, 1, 1)
    std = torch.tensor([0.5, 0.5, 1.0], requires_grad=True).view(1, 3, 1, 1)
    x = torch.tensor([1.0, 0.5, 0.25]).view(3, 1, 1)
    assert np.allclose(viz.to_display_image(x, mean, std), [[[1.0, 0.5, 0.25]]])  # x * std + mean, per channel


def test_channels_last_attributions_are_refused_with_the_permute_not_summed_over_their_height():
    # a TF-style (N,H,W,C) map was summed over H: (2,6,5,3) drew two 5x3 maps
    with pytest.raises(ValueError, match=r"shape \(2, 6, 5, 3\) look channels-last \(N,H,W,C\): give "
                                         r"x.permute\(0, 3, 1, 2\)"):
        viz.prepare(np.zeros((2, 6, 5, 3)))
    with pytest.raises(ValueError, match=r"shape \(6, 5, 1\) look channels-last \(H,W,C\): give x.permute\(2, 0, 1\)"):
        viz.channel_sum(torch.zeros(6, 5, 1))
    assert viz.channel_sum(np.ones((2, 3, 6, 4))).shape == (2, 6, 4)  # channels first, 4 wide: as before


@pytest.mark.parametrize("size", [(8, 64), (2, 200)])
def test_very_wide_panels_keep_rows_tall_enough_for_their_labels(tmp_path, size):
    fig = viz.grid(np.zeros((2, 3, *size)), {"RectGrad": np.ones((2, *size))}, row_labels=["cat", "dog"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 2 x 200: "constrained_layout not applied because axes sizes collapsed to zero"
        viz.save_figure(fig, tmp_path / "g.png", dpi=50)
    first, second = (fig.axes[i].yaxis.label.get_window_extent() for i in (0, 2))  # (row-major axes: 2 per row)
    assert first.y0 > second.y1 and second.y0 >= 0  # one row's label above the other's, both in the figure


def test_long_box_and_curve_names_are_broken_into_lines_not_crushing_the_axes(tmp_path):
    name = "RectGrad PRR with the padding trick, q = 98, on the clean model"  # its rotated label took the figure
    fig = viz.boxplot({name: [1.0, 2.0, 3.0], "b": [2.0, 3.0]}, ylabel="y")
    viz.save_figure(fig, tmp_path / "b.png", dpi=20)
    text = fig.axes[0].get_xticklabels()[0].get_text()
    assert text.count("\n") >= 2 and text.replace("\n", " ") == name and fig.axes[0].get_position().width > 0.5
    fig = viz.line_plot([1, 2], {name: ([1.0, 2.0], None), "b": ([2.0, 1.0], None)}, xlabel="x", ylabel="y")
    viz.save_figure(fig, tmp_path / "l.png", dpi=20)
    text = fig.axes[0].get_legend().get_texts()[0].get_text()
    assert text.count("\n") >= 2 and text.replace("\n", " ") == name and fig.axes[0].get_position().width > 0.5


def test_titles_wider_than_the_figure_are_broken_into_lines_not_cut_at_both_edges(tmp_path):
    title = "efficientnet_lite0.ra_in1k from a checkpoint, final threshold"  # rectgrad explain --methods rectgrad
    figures = {"grid": viz.grid(np.zeros((1, 3, 8, 8)), {"RectGrad": np.ones((1, 8, 8))}, title=title),
               "box": viz.boxplot({"a": [1.0, 2.0]}, ylabel="y", title=title * 2),
               "line": viz.line_plot([1, 2], {"a": ([1.0, 2.0], None)}, xlabel="x", ylabel="y", title=title * 2)}
    for name, fig in figures.items():
        viz.save_figure(fig, tmp_path / f"{name}.png", dpi=50)
        text = fig._suptitle if name == "grid" else fig.axes[0].title
        box = text.get_window_extent(fig.canvas.get_renderer())
        assert 0 <= box.x0 and box.x1 <= fig.bbox.width, name


@pytest.mark.parametrize("cell", [0, -1.0, float("nan"), float("inf"), "1.6", None, True])
def test_grid_cell_must_be_a_positive_number_of_inches(cell):
    with pytest.raises(ValueError, match=r"cell must be a positive, finite number of inches, got "):
        viz.grid(None, [np.ones((1, 4, 4))], cell=cell)  # 0 failed at save ("cannot write empty image")


def test_boxplot_and_line_plot_say_they_take_a_dict_of_names():
    with pytest.raises(TypeError, match=r"boxplot values must be a dict \{name: samples\}, got list"):
        viz.boxplot([[1.0, 2.0], [3.0]], ylabel="y")  # grid takes a list too; this one needs names for its boxes
    with pytest.raises(TypeError, match=r"line_plot curves must be a dict \{name: \(mean, std or None\)\}, got tuple"):
        viz.line_plot([1, 2], (([1.0, 2.0], None),), xlabel="x", ylabel="y")


def test_boxplot_names_a_name_with_no_samples_rather_than_leave_its_place_blank():
    with pytest.raises(ValueError, match=r"no samples for 'Saliency': its box cannot be drawn"):
        viz.boxplot({"RectGrad": [1.0, 2.0], "Saliency": np.zeros((0,))}, ylabel="y")


def test_line_plot_curve_names_starting_with_an_underscore_stay_in_the_legend():
    fig = viz.line_plot([1, 2], {"_baseline": ([1.0, 2.0], None), "b": ([2.0, 1.0], None)}, xlabel="x", ylabel="y")
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["_baseline", "b"]  # matplotlib hid it


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_images_holding_nan_or_inf_are_named_not_drawn(bad):
    images = np.zeros((3, 1, 4, 4))
    images[2, 0, 1, 1] = bad  # image 2 only: NaN drew as a hole, Inf as a white or black pixel
    with pytest.raises(ValueError, match=r"NaN or Inf values in image\(s\) \[2\]: such an image cannot be drawn"):
        viz.to_display_image(images)
    with pytest.raises(ValueError, match=r"NaN or Inf values in image\(s\) \[2\]"):
        viz.grid(torch.tensor(images), [np.ones((3, 4, 4))])
    with pytest.raises(ValueError, match=r"NaN or Inf values in the image: such an image cannot be drawn"):
        viz.to_display_image(images[2], mean=0.5, std=0.5)  # one (C,H,W) image
    assert viz.to_display_image(images[:2]).shape == (2, 4, 4)  # finite images as before


def test_boxplot_and_line_plot_with_nothing_to_draw_are_refused():
    with pytest.raises(ValueError, match=r"boxplot values is empty: give at least one \{name: samples\}"):
        viz.boxplot({}, ylabel="y")  # (an empty figure: axes and no box)
    with pytest.raises(ValueError, match=r"line_plot curves is empty: give at least one \{name: \(mean, std or None\)"):
        viz.line_plot([1, 2], {}, xlabel="x", ylabel="y")  # (empty axes and an empty legend)


def test_maps_of_finite_values_near_the_largest_float_are_drawn_not_called_nan_or_inf():
    attr = np.random.default_rng(0).uniform(-1.0, 1.0, (2, 3, 5, 5))
    shown, reference = viz.prepare(attr * 1.5e308), viz.prepare(attr)  # finite, but their channel sums overflowed
    assert np.isfinite(shown).all()
    peak = (np.abs(shown).max(axis=(1, 2), keepdims=True), np.abs(reference).max(axis=(1, 2), keepdims=True))
    assert np.allclose(shown / peak[0], reference / peak[1])  # the same maps, drawn the same
    with pytest.raises(ValueError, match=r"too large"):  # channel_sum alone cannot give a sum past float64's range
        viz.channel_sum(np.full((3, 2, 2), 1.5e308))
    pair = np.array([[[-1.5e308, 1.5e308]]])  # a percentile between them overflowed to -inf or inf
    assert np.array_equal(viz.clip_outliers(pair, 50, 50), [[[0.0, 0.0]]])  # both capped at the median, 0
    assert np.array_equal(viz.final_threshold(pair, "top", 50), [[[0.0, 1.5e308]]])
    fig = viz.grid(None, [np.array([[[-1.5e308, 1.5e308], [0.0, 1.0]]])])
    image = fig.axes[0].images[0]  # (the colour scale's range, 2 * 1.5e308, overflowed: NaN colours)
    assert np.allclose(image.norm(image.get_array()), [[0.0, 1.0], [0.5, 0.5]])


def test_save_figure_refuses_a_dpi_too_large_to_draw_before_drawing(tmp_path):
    fig = viz.boxplot({"a": [1.0, 2.0]}, ylabel="y")  # 4 x 3.5 inches: Agg allocated 560 GB (bad_alloc, or OOM-killed)
    with pytest.raises(ValueError, match=r"dpi 100000 makes a 400000 x 350000 pixel image of this 4 x 3.5 inch figure, "
                                         r"over .*: give a smaller dpi \(at most \d+") as refused:
        viz.save_figure(fig, tmp_path / "big.png", dpi=100000)
    best = int(re.search(r"at most (\d+)", str(refused.value))[1])
    assert 4 * best * 3.5 * best <= viz.MAX_PIXELS < 4 * (best + 1) * 3.5 * (best + 1)
    assert not (tmp_path / "big.png").exists()
    assert (viz.save_figure(fig, tmp_path / "big.svg", dpi=100000)).stat().st_size > 0  # vector: no pixels to draw
