"""Metrics and ROAR/KAR perturbations (rectgrad.metrics) against hand-computed values."""
import math

import pytest
import torch

from rectgrad.metrics import (
    attribution_in_region,
    attribution_outside,
    channel_mean,
    kar_aoc,
    pixel_count,
    random_removal_mask,
    rank_pixels,
    removal_mask,
    replace_pixels,
    roar_auc,
    total_variation,
)

# Two images, two channels, 2x2 pixels.
ATTR = torch.tensor(
    [
        [[[1.0, -2.0], [3.0, 0.0]], [[-1.0, 1.0], [0.0, 4.0]]],  # |.| channel-summed: [[2, 3], [3, 4]]
        [[[0.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]],
    ]
)
OBJECT = torch.tensor([[True, False], [False, False]])  # object = top-left pixel


def gen(seed):
    return torch.Generator().manual_seed(seed)


# --- attribution in region / outside mask (Figs. 7, 8) -------------------------------------------------

def test_attribution_in_region_hand_values():
    assert attribution_in_region(ATTR, OBJECT).tolist() == [2.0, 0.0]
    per_image = torch.tensor([[[False, True], [False, True]], [[True, True], [True, True]]])
    assert attribution_in_region(ATTR, per_image).tolist() == [7.0, 0.0]


def test_attribution_outside_raw_and_normalized():
    assert attribution_outside(ATTR, OBJECT).tolist() == [10.0, 0.0]
    frac = attribution_outside(ATTR, OBJECT, normalize=True)
    assert frac[0].item() == pytest.approx(10 / 12)
    assert frac[1].item() == 0.0  # zero total mass -> 0, not NaN


def test_attribution_outside_sums_abs_per_channel_not_abs_of_sum():
    attr = torch.tensor([[[[1.0]], [[-1.0]]]])  # channel sum 0, abs sum 2
    assert attribution_outside(attr, torch.tensor([[False]])).item() == 2.0
    assert attribution_outside(attr.sum(1, keepdim=True), torch.tensor([[False]])).item() == 0.0


def test_per_image_regions_and_per_image_normalization():
    # Two non-zero images with their own regions: each image uses its own mask and its own total.
    attr = torch.tensor([[[[1.0, -2.0], [3.0, 4.0]]], [[[0.0, 5.0], [-5.0, 10.0]]]])  # |.| totals 10 and 20
    region = torch.tensor([[[True, False], [False, False]], [[False, False], [False, True]]])
    assert attribution_in_region(attr, region).tolist() == [1.0, 10.0]
    assert attribution_outside(attr, region).tolist() == [9.0, 10.0]
    assert attribution_outside(attr, region, normalize=True).tolist() == pytest.approx([0.9, 0.5], rel=1e-6)
    # an (H, W) mask applies to every image: outside = 9 of 10 and 20 of 20
    assert attribution_outside(attr, region[0], normalize=True).tolist() == pytest.approx([0.9, 1.0], rel=1e-6)


def test_normalize_that_is_no_bool_is_refused():
    # normalize="no" is truthy: the fraction was returned for it
    for normalize in ("no", 0, None):
        with pytest.raises(TypeError, match=f"normalize must be True or False, got {normalize!r}"):
            attribution_outside(ATTR, OBJECT, normalize=normalize)


def test_normalized_outside_fraction_is_scale_free():
    # A fraction of the image's own total: the same for maps scaled by 1e-3 or 1e3 (tiny gradients included).
    for scale in (1e-3, 1.0, 1e3):
        frac = attribution_outside(ATTR.double() * scale, OBJECT, normalize=True)
        assert frac.tolist() == pytest.approx([10 / 12, 0.0], rel=1e-12)


def test_region_sums_every_channel():
    # Five channels of |.| 1, 2, 3, 4, 5 on the one region pixel: 15, not the first channels only.
    attr = torch.zeros(1, 5, 2, 2, dtype=torch.float64)
    attr[0, :, 0, 0] = torch.tensor([1.0, -2.0, 3.0, -4.0, 5.0])
    attr[0, :, 1, 1] = 100.0  # outside the region: 500 in all
    assert attribution_in_region(attr, OBJECT).tolist() == [15.0]
    assert attribution_outside(attr, OBJECT).tolist() == [500.0]
    assert attribution_outside(attr, OBJECT, normalize=True).tolist() == [500.0 / 515.0]


def test_float64_maps_stay_float64():
    # Sums keep the attributions' precision: 1 + 1e-9 is 1 in float32.
    attr = torch.tensor([[[[1.0, 1e-9]]]], dtype=torch.float64)
    everywhere = torch.tensor([[True, True]])
    left = torch.tensor([[True, False]])
    results = [attribution_in_region(attr, everywhere), attribution_outside(attr, left),
               attribution_outside(attr, left, normalize=True), total_variation(attr)]
    assert all(r.dtype == torch.float64 for r in results)
    assert [r.item() for r in results] == [1.0 + 1e-9, 1e-9, 1e-9 / (1.0 + 1e-9), 1.0 - 1e-9]


def test_transposed_mask_of_non_square_map_is_refused():
    attr = torch.ones(1, 1, 2, 3)
    with pytest.raises(ValueError, match=r"\(3, 2\).*\(1, 1, 2, 3\)"):
        attribution_outside(attr, torch.ones(3, 2, dtype=torch.bool))


# --- total variation (Fig. 8) ----------------------------------------------------------------------------

def test_total_variation_hand_values():
    m = torch.tensor([[1.0, 2.0, 4.0], [0.0, 0.0, 1.0], [3.0, 3.0, 3.0]])
    # vertical |diffs|: (1+2+3) + (3+3+2) = 14; horizontal: (1+2) + (0+1) + (0+0) = 4
    attr = torch.stack([m, torch.zeros(3, 3)])[None]
    assert total_variation(attr).tolist() == [18.0]
    assert total_variation(ATTR).tolist() == [10.0, 0.0]  # summed map [[0, -1], [3, 4]]: 3+5 + 1+1


def test_total_variation_sums_channels_first():
    attr = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]], [[-1.0, 0.0], [0.0, 0.0]]]])  # cancels to zero
    assert total_variation(attr).item() == 0.0


def test_total_variation_row_and_column_maps():
    # 0, 1, 3, 6 along a line: 1 + 2 + 3 = 6 whichever axis it lies on, and no wrap-around term (6 - 0).
    line = torch.tensor([0.0, 1.0, 3.0, 6.0])
    assert total_variation(line.view(1, 1, 1, 4)).tolist() == [6.0]
    assert total_variation(line.view(1, 1, 4, 1)).tolist() == [6.0]


def test_total_variation_matches_naive_loops():
    # Equal to the definition written as loops over neighbour pairs, per image, for a non-square batch.
    attr = torch.randn(3, 2, 5, 4, generator=gen(0), dtype=torch.float64)
    expected = []
    for m in attr.sum(1):
        tv = sum(abs(m[i + 1, j] - m[i, j]).item() for i in range(4) for j in range(4))
        tv += sum(abs(m[i, j + 1] - m[i, j]).item() for i in range(5) for j in range(3))
        expected.append(tv)
    assert total_variation(attr).tolist() == pytest.approx(expected, rel=1e-12)
    # invariant under transposition, negation and an added constant
    assert torch.allclose(total_variation(attr.transpose(2, 3)), total_variation(attr), rtol=1e-12)
    assert torch.allclose(total_variation(-attr + 3.0), total_variation(attr), rtol=1e-12)


# --- ranking -----------------------------------------------------------------------------------------

def test_rank_pixels_without_noise_is_descending_and_stable():
    attr = torch.tensor([[[[1.0, 5.0, 1.0], [3.0, 1.0, 3.0]]]])
    assert rank_pixels(attr, tie_noise=0).tolist() == [[1, 3, 5, 0, 2, 4]]


def test_rank_pixels_uses_channel_sum():
    attr = torch.tensor([[[[2.0, 0.0]], [[-3.0, 0.5]]]])  # sums: -1, 0.5
    assert rank_pixels(attr, tie_noise=0).tolist() == [[1, 0]]


def test_rank_pixels_seeded_noise_breaks_ties_reproducibly():
    attr = torch.zeros(2, 1, 4, 4)
    a, b = rank_pixels(attr, generator=gen(0)), rank_pixels(attr, generator=gen(0))
    assert torch.equal(a, b)
    assert not torch.equal(a[0], a[1])  # each image gets its own noise
    assert not torch.equal(a, rank_pixels(attr, generator=gen(1)))
    assert not torch.equal(a[0], torch.arange(16))


def test_ties_of_low_precision_maps_are_broken_in_float32():
    for dtype in (torch.float16, torch.bfloat16):
        attr = torch.ones(1, 1, 8, 8, dtype=dtype)  # 1 + 1e-4 noise rounds back to 1 in 16 bits
        assert torch.equal(rank_pixels(attr, generator=gen(0)), rank_pixels(attr.float(), generator=gen(0)))
        assert not removal_mask(attr, 0.25, generator=gen(0))[0, :2].all()  # not simply the first rows


def test_rank_pixels_without_noise_breaks_long_ties_by_flat_index():
    # 12x12 tied scores: an unstable sort reorders ties of this length; the order must be the flat index.
    attr = torch.zeros(2, 3, 12, 12)
    attr[1, :, 5, 7] = 1.0  # one top pixel, then the 143 tied ones in index order
    order = rank_pixels(attr, tie_noise=0)
    assert order[0].tolist() == list(range(144))
    assert order[1].tolist() == [5 * 12 + 7] + [i for i in range(144) if i != 5 * 12 + 7]


def test_tie_noise_is_a_standard_deviation():
    # 1024 scores 1e-2 apart: std 1e-4 noise never swaps them, std 1e-2 (variance 1e-4) would.
    attr = (torch.arange(1024.0, 0, -1) * 1e-2).view(1, 1, 32, 32)
    assert torch.equal(rank_pixels(attr, generator=gen(0)), torch.arange(1024)[None])
    assert not torch.equal(rank_pixels(attr, tie_noise=1e-2, generator=gen(0)), torch.arange(1024)[None])


def test_rank_pixels_noise_is_one_standard_normal_draw_per_pixel():
    # The scores are the channel sums plus tie_noise * randn((N, H*W)) from the generator, in the scores' dtype
    # (float64 here): a naive re-implementation gives the same order, so seeded rankings are reproducible.
    attr = torch.randn(2, 3, 6, 6, generator=gen(3), dtype=torch.float64) * 1e-4
    noise = torch.randn(2, 36, generator=gen(4), dtype=torch.float64)
    expected = torch.argsort(attr.sum(1).flatten(1) + 1e-4 * noise, dim=1, descending=True)
    assert torch.equal(rank_pixels(attr, generator=gen(4)), expected)


# --- ROAR / KAR masks --------------------------------------------------------------------------------

def test_removal_mask_hand_example():
    attr = torch.tensor([[[[4.0, 1.0], [3.0, 2.0]]]])
    assert removal_mask(attr, 0.5, tie_noise=0).tolist() == [[[True, False], [True, False]]]
    assert removal_mask(attr, 0.5, keep=True, tie_noise=0).tolist() == [[[False, True], [False, True]]]
    assert removal_mask(attr, 0.25, tie_noise=0).tolist() == [[[True, False], [False, False]]]


@pytest.mark.parametrize("fraction", [0.1, 0.3, 0.5, 0.7, 0.9])
def test_removal_mask_exact_counts_and_top_pixels(fraction):
    attr = torch.randn(5, 3, 8, 8, generator=gen(1))
    k = round(fraction * 64)
    scores = attr.sum(1).flatten(1)
    roar = removal_mask(attr, fraction, generator=gen(2))
    kar = removal_mask(attr, fraction, keep=True, generator=gen(2))
    assert roar.shape == (5, 8, 8) and roar.dtype == torch.bool
    assert roar.flatten(1).sum(1).tolist() == [k] * 5
    assert kar.flatten(1).sum(1).tolist() == [64 - k] * 5
    assert torch.equal(kar, ~roar)
    for s, r in zip(scores, roar.flatten(1)):
        assert s[r].min() > s[~r].max()  # removed pixels are exactly the top-k
    expected = torch.zeros(5, 64, dtype=torch.bool).scatter_(1, rank_pixels(attr, generator=gen(2))[:, :k], True)
    assert torch.equal(roar.flatten(1), expected)


def test_removal_mask_rounds_half_to_even():
    attr = torch.randn(1, 1, 2, 5, generator=gen(0))  # 10 pixels
    counts = [removal_mask(attr, f, tie_noise=0).sum().item() for f in (0.25, 0.15, 0.44, 0.46)]
    assert counts == [2, 2, 4, 5]


@pytest.mark.parametrize("fraction, size, k", [(0.7, (45, 45), 1418), (0.02, (35, 35), 24), (0.06, (15, 15), 14),
                                               (0.26, (15, 15), 58)])
def test_pixel_count_rounds_exact_halves_of_the_fraction_as_written_to_even(fraction, size, k):
    # 0.7 x 2025 = 1417.5 exactly, which halves to even is 1418; the float product 1417.4999999999998 gave 1417 (and
    # 0.02 x 1225 = 24.500000000000004 gave 25): one pixel off the documented rule, at these exact halves only
    assert pixel_count(fraction, size) == k
    attr = torch.randn(2, 1, *size, generator=gen(0))
    assert removal_mask(attr, fraction, tie_noise=0).sum((1, 2)).tolist() == [k, k]


def test_removal_mask_ties_broken_deterministically():
    attr = torch.ones(3, 3, 6, 6)
    a = removal_mask(attr, 0.3, generator=gen(7))
    assert torch.equal(a, removal_mask(attr, 0.3, generator=gen(7)))
    assert not torch.equal(a, removal_mask(attr, 0.3, generator=gen(8)))
    assert a.flatten(1).sum(1).tolist() == [round(0.3 * 36)] * 3


def test_removal_mask_input_untouched():
    attr = torch.randn(2, 3, 4, 4, generator=gen(0))
    before = attr.clone()
    removal_mask(attr, 0.5, generator=gen(0))
    assert torch.equal(attr, before)


def test_random_removal_mask_bernoulli():
    roar = random_removal_mask((8, 32, 32), 0.3, generator=gen(0))
    kar = random_removal_mask((8, 32, 32), 0.3, keep=True, generator=gen(0))
    assert roar.shape == (8, 32, 32) and roar.dtype == torch.bool
    assert roar.float().mean().item() == pytest.approx(0.3, abs=0.01)
    assert kar.float().mean().item() == pytest.approx(0.7, abs=0.01)
    assert len(set(roar.flatten(1).sum(1).tolist())) > 1  # counts are random, not exact
    assert torch.equal(roar, random_removal_mask((8, 32, 32), 0.3, generator=gen(0)))


def test_refused_fraction_leaves_the_generator_untouched():
    # The fraction is checked before any noise is drawn: a refused call does not advance the user's generator.
    g = gen(0)
    state = g.get_state()
    with pytest.raises(ValueError, match="fraction"):
        removal_mask(torch.zeros(1, 1, 4, 4), 1.5, generator=g)
    assert torch.equal(g.get_state(), state)


def test_a_seed_given_as_generator_is_refused_with_how_to_make_one():
    for call in (lambda: rank_pixels(torch.zeros(1, 1, 2, 2), generator=0),
                 lambda: removal_mask(torch.zeros(1, 1, 2, 2), 0.5, generator=3),
                 lambda: random_removal_mask((1, 2, 2), 0.5, generator=0)):
        with pytest.raises(TypeError, match=r"generator must be a torch.Generator \(e.g. torch.Generator\(\)"
                                            r".manual_seed\((0|3)\) for a seed\) or None, got"):
            call()


def test_keep_that_is_no_bool_is_refused_before_any_draw():
    # keep="no" is truthy: it was read as KAR. The generator stays untouched, as for a refused fraction.
    g = gen(0)
    state = g.get_state()
    for keep in ("no", 1, None):
        with pytest.raises(TypeError, match=f"keep must be True or False, got {keep!r}"):
            removal_mask(torch.zeros(1, 1, 4, 4), 0.5, keep=keep, generator=g)
        with pytest.raises(TypeError, match=f"keep must be True or False, got {keep!r}"):
            random_removal_mask((1, 4, 4), 0.5, keep=keep, generator=g)
    assert torch.equal(g.get_state(), state)


def test_random_removal_mask_is_uniform_draws_below_p():
    # Pixel replaced iff its U(0, 1) draw is below p (fraction for ROAR, 1 - fraction for KAR): a naive
    # re-implementation gives the same mask, and ROAR at p equals KAR at 1 - p for the same seed.
    draws = torch.rand(2, 5, 5, generator=gen(0))
    assert torch.equal(random_removal_mask((2, 5, 5), 0.3, generator=gen(0)), draws < 0.3)
    assert torch.equal(random_removal_mask((2, 5, 5), 0.3, keep=True, generator=gen(0)), draws < 0.7)
    assert torch.equal(random_removal_mask((2, 5, 5), 0.25, generator=gen(0)),
                       random_removal_mask((2, 5, 5), 0.75, keep=True, generator=gen(0)))
    # strictly below: a draw equal to p keeps its pixel (P(U < p) = p exactly on float32's grid of draws)
    p = draws[0, 0, 0].item()
    assert not random_removal_mask((2, 5, 5), p, generator=gen(0))[0, 0, 0]
    assert torch.equal(random_removal_mask((2, 5, 5), p, generator=gen(0)), draws < p)


# --- replacement -------------------------------------------------------------------------------------

def test_replace_pixels_uint8_rounds_fill_and_copies():
    images = torch.arange(2 * 3 * 2 * 2, dtype=torch.uint8).view(2, 3, 2, 2)
    before = images.clone()
    out = replace_pixels(images, OBJECT, [100.4, 120.6, 7.0])
    assert torch.equal(images, before)
    assert out.dtype == torch.uint8
    assert out[:, :, 0, 0].tolist() == [[100, 121, 7]] * 2
    keep = ~OBJECT
    assert torch.equal(out[:, :, keep], images[:, :, keep])


def test_replace_pixels_float_per_image_mask():
    images = torch.zeros(2, 2, 1, 2)
    mask = torch.tensor([[[True, False]], [[False, False]]])
    out = replace_pixels(images, mask, torch.tensor([0.25, -0.5]))
    assert out.tolist() == [[[[0.25, 0.0]], [[-0.5, 0.0]]], [[[0.0, 0.0]], [[0.0, 0.0]]]]


def test_channel_mean_hand_values():
    images = torch.tensor([[[[0, 255]], [[10, 20]]], [[[255, 255]], [[30, 41]]]], dtype=torch.uint8)
    mean = channel_mean(images)
    assert mean.dtype == torch.float64
    assert mean.tolist() == [191.25, 25.25]
    assert channel_mean(images.float()).tolist() == [191.25, 25.25]


def test_replace_pixels_integer_fill_rounds_halves_to_even():
    # As documented (torch.round): 127.5 -> 128, 128.5 -> 128, 0.5 -> 0.
    images = torch.zeros(1, 3, 2, 2, dtype=torch.uint8)
    assert replace_pixels(images, OBJECT, [127.5, 128.5, 0.5])[0, :, 0, 0].tolist() == [128, 128, 0]


def test_channel_mean_accumulates_exactly():
    # float16 images: 1024 pixels of 100 sum to 102400, beyond float16's 65504; the mean is still 100.
    assert channel_mean(torch.full((1, 1, 32, 32), 100.0, dtype=torch.float16)).tolist() == [100.0]
    # wider integer images are not squeezed into 8 bits: (1000 - 4 + 70000 + 2) / 4 = 70998 / 4
    images = torch.tensor([[[[1000, -4]]], [[[70000, 2]]]], dtype=torch.int64)
    assert channel_mean(images).tolist() == [17749.5]


# --- ROAR AUC / KAR AOC (Table 1) ----------------------------------------------------------------------

GRID = [0.1, 0.3, 0.5, 0.7, 0.9]


def test_auc_aoc_constant_curve():
    assert roar_auc(GRID, [0.7] * 5) == pytest.approx(0.7)
    assert kar_aoc(GRID, [0.7] * 5) == pytest.approx(0.3)


def test_auc_linear_curve():
    # acc = 1 - f: mean height over [0.1, 0.9] is 1 - 0.5
    assert roar_auc(GRID, [1 - f for f in GRID]) == pytest.approx(0.5)


def test_auc_trapezoid_weights_not_plain_mean():
    assert roar_auc(GRID, [1, 0, 0, 0, 0]) == pytest.approx(1 / 8)
    assert roar_auc(GRID, [0, 1, 0, 0, 0]) == pytest.approx(2 / 8)
    # uneven spacing: triangle of area 0.2 * 1 / 2 over a span of 0.8
    assert roar_auc(torch.tensor([0.1, 0.3, 0.9]), torch.tensor([1.0, 0.0, 0.0])) == pytest.approx(0.125)
    assert kar_aoc([0.1, 0.3, 0.9], [1.0, 0.0, 0.0]) == pytest.approx(0.875)


def test_random_baseline_auc_plus_aoc_is_one():
    # Random ROAR at p and random KAR at 1 - p replace the same pixel distribution (Table 1: .5562 + .4438).
    roar = [0.72, 0.68, 0.6, 0.5, 0.3]
    assert roar_auc(GRID, roar) + kar_aoc(GRID, roar[::-1]) == pytest.approx(1.0)


def test_auc_aoc_match_a_naive_float64_trapezoid():
    # Full float64 accuracy (no float32 step, no rounding) against the trapezoid rule written out by hand.
    x = [0.1, 0.25, 0.5, 0.7, 0.95]
    y = [0.9123456789, 0.8765432198, 0.7, 0.512345678, 0.3]
    area = sum((x[i + 1] - x[i]) * (y[i] + y[i + 1]) / 2 for i in range(4)) / (x[-1] - x[0])
    assert roar_auc(x, y) == pytest.approx(area, rel=1e-14, abs=0)
    assert kar_aoc(x, y) == pytest.approx(1 - area, rel=1e-14, abs=0)
    assert roar_auc(x, [0.0] * 5) == 0.0 and roar_auc(x, [1.0] * 5) == 1.0  # the closed bounds are accepted


# --- validation -----------------------------------------------------------------------------------------

def test_mask_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(3, 2\).*\(2, 2, 2, 2\)"):
        attribution_outside(ATTR, torch.ones(3, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"\(3, 2, 2\).*\(2, 2, 2, 2\)"):
        attribution_in_region(ATTR, torch.ones(3, 2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="bool"):
        attribution_in_region(ATTR, OBJECT.float())
    with pytest.raises(ValueError, match=r"\(1, 3\).*\(2, 3, 2, 2\)"):
        replace_pixels(torch.zeros(2, 3, 2, 2), torch.ones(1, 3, dtype=torch.bool), [0, 0, 0])


@pytest.mark.parametrize(
    "fn", [attribution_outside, attribution_in_region, total_variation, rank_pixels, removal_mask]
)
@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_attributions_rejected(fn, bad):
    attr = ATTR.clone()
    attr[1, 0, 1, 1] = bad
    args = {attribution_outside: (OBJECT,), attribution_in_region: (OBJECT,), removal_mask: (0.5,)}.get(fn, ())
    with pytest.raises(ValueError, match="NaN"):
        fn(attr, *args)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_maps_are_summed_in_float32(dtype):
    attr = torch.ones(1, 3, 224, 224, dtype=dtype)  # 150528 in all: beyond float16's 65504
    half = torch.zeros(224, 224, dtype=torch.bool)
    half[:112] = True
    assert attribution_outside(attr, half).tolist() == [75264.0]
    assert attribution_outside(attr, half, normalize=True).tolist() == [0.5]
    assert attribution_in_region(attr, half).dtype == torch.float32
    checker = torch.ones(1, 1, 224, 224, dtype=dtype)
    checker[..., ::2, :] = -1  # rows alternate: 223 row steps of 2 in each of 224 columns
    assert total_variation(checker).tolist() == [2.0 * 223 * 224]


def test_a_fraction_of_no_pixel_or_of_all_is_refused():
    attr = torch.randn(2, 1, 4, 4, generator=gen(0))  # 16 pixels
    assert pixel_count(0.5, (4, 4)) == 8 and removal_mask(attr, 0.04).sum().item() == 2  # 0.64 pixels -> 1
    for fraction, k in ((0.03, 0), (0.97, 16)):
        with pytest.raises(ValueError, match=rf"fraction {fraction} of 4x4 pixels rounds to {k} pixels"):
            removal_mask(attr, fraction)


@pytest.mark.parametrize("attr", [torch.zeros(2, 2, 2), torch.zeros(1, 1, 2, 2, dtype=torch.int64)])
def test_attribution_shape_and_dtype_rejected(attr):
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        total_variation(attr)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5, math.nan])
def test_fraction_outside_open_unit_interval(fraction):
    with pytest.raises(ValueError, match="fraction"):
        removal_mask(ATTR, fraction)
    with pytest.raises(ValueError, match="fraction"):
        random_removal_mask((1, 2, 2), fraction)


def test_bad_tie_noise_and_shape():
    for tie_noise in (-1e-4, math.inf, math.nan):
        with pytest.raises(ValueError, match="tie_noise"):
            rank_pixels(ATTR, tie_noise=tie_noise)
    for shape in ((2, 2), (1, 0, 4), (1, -2, 4), (1, 2.0, 2)):
        with pytest.raises(ValueError, match="shape"):
            random_removal_mask(shape, 0.5)


def test_random_removal_mask_takes_a_shape_of_numpy_or_tensor_integers():
    # (n, h, w) read off an array or a tensor's element was refused as "no positive ints"
    import numpy as np

    expected = random_removal_mask((2, 3, 4), 0.5, generator=gen(0))
    for shape in ((np.int64(2), 3, 4), np.array([2, 3, 4]), torch.tensor([2, 3, 4]), [2, torch.tensor(3), 4]):
        assert torch.equal(random_removal_mask(shape, 0.5, generator=gen(0)), expected)
    with pytest.raises(ValueError, match=r"shape must be three positive ints \(N, H, W\), got \(True, 3, 4\)"):
        random_removal_mask((True, 3, 4), 0.5)


def test_bad_fill():
    images = torch.zeros(1, 3, 2, 2, dtype=torch.uint8)
    with pytest.raises(ValueError, match="3 finite"):
        replace_pixels(images, OBJECT, [1.0, 2.0])
    with pytest.raises(ValueError, match="3 finite"):
        replace_pixels(images, OBJECT, [1.0, math.nan, 2.0])
    with pytest.raises(ValueError, match="4 finite"):  # a (2, 2) fill holds 4 values but is no (C,) vector
        replace_pixels(torch.zeros(1, 4, 2, 2), OBJECT, [[0.0, 1.0], [2.0, 3.0]])
    with pytest.raises(ValueError, match="fit"):
        replace_pixels(images, OBJECT, [1.0, 300.0, 2.0])
    with pytest.raises(ValueError, match="fit"):
        replace_pixels(images, OBJECT, [1.0, -1.0, 2.0])  # below uint8's 0 (rounds to -1, would wrap to 255)
    assert replace_pixels(images, OBJECT, [-0.4, 255.4, 0.0])[0, :, 0, 0].tolist() == [0, 255, 0]  # rounds in range


def test_channel_mean_of_no_pixels_is_refused():
    # it was NaN, which replace_pixels then refused as a fill that is not finite
    for images in (torch.zeros(0, 3, 2, 2, dtype=torch.uint8), torch.zeros(2, 3, 0, 2)):
        with pytest.raises(ValueError, match=r"images hold no pixels, got .* shape \(\d, 3, \d, 2\): no mean"):
            channel_mean(images)


def test_bool_images_rejected():
    images = torch.zeros(1, 3, 2, 2, dtype=torch.bool)
    with pytest.raises(ValueError, match=r"numeric \(N, C, H, W\)"):
        replace_pixels(images, OBJECT, [0.0, 1.0, 0.0])
    with pytest.raises(ValueError, match=r"numeric \(N, C, H, W\)"):
        channel_mean(images)


@pytest.mark.parametrize(
    "fractions, accuracies, match",
    [
        ([0.1, 0.3], [0.5], "equal length"),
        ([0.5], [0.5], "equal length"),
        ([0.1, 0.3, 0.3], [0.5] * 3, "strictly increasing"),
        ([0.5, 0.3], [0.5] * 2, "strictly increasing"),
        ([0.0, 0.5], [0.5] * 2, "strictly increasing"),
        ([0.5, 1.0], [0.5] * 2, "strictly increasing"),
        ([0.1, 0.3], [0.5, 1.2], r"\[0, 1\]"),
        ([0.1, 0.3], [0.5, math.nan], r"\[0, 1\]"),
        ([0.1, 0.3], [0.5, -0.1], r"\[0, 1\]"),
        ([[0.1, 0.3], [0.5, 0.7]], [[0.5, 0.5], [0.5, 0.5]], "1-D"),
        ([0.1, 0.3], [[0.5], [0.5]], "1-D"),
        ([[0.1], [0.3]], [0.5, 0.5], "1-D"),
    ],
)
def test_bad_curves(fractions, accuracies, match):
    for fn in (roar_auc, kar_aoc):
        with pytest.raises(ValueError, match=match):
            fn(fractions, accuracies)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_a_fill_beyond_the_range_of_low_precision_images_is_refused(dtype):
    # a fill float16 cannot hold became inf in the images, silently; the images are left as they were
    images = torch.zeros(1, 3, 2, 2, dtype=dtype)
    huge = torch.finfo(dtype).max * 2.0
    with pytest.raises(ValueError, match=f"fit images of dtype {dtype}"):
        replace_pixels(images, OBJECT, [0.0, huge, 0.0])
    assert torch.equal(images, torch.zeros(1, 3, 2, 2, dtype=dtype))
    assert replace_pixels(images, OBJECT, [0.0, 100.0, 0.0])[0, 1, 0, 0].item() == 100.0  # values it holds pass


def test_a_bool_or_string_tie_noise_or_fraction_is_refused():
    # float() read True as a standard deviation of 1.0 and "0.5" as a fraction: a wrong argument went through
    for tie_noise in (True, "1e-4"):
        with pytest.raises(TypeError, match="tie_noise must be a number"):
            rank_pixels(ATTR, tie_noise=tie_noise)
    for fraction in (True, "0.5"):
        with pytest.raises(TypeError, match="fraction must be a number"):
            removal_mask(ATTR, fraction)
        with pytest.raises(TypeError, match="fraction must be a number"):
            random_removal_mask((1, 2, 2), fraction)
    from decimal import Decimal
    from fractions import Fraction

    for fraction in (Fraction(1, 2), Decimal("0.5"), torch.tensor(0.5)):  # numbers of other kinds still count
        assert removal_mask(ATTR, fraction, tie_noise=0).sum().item() == 4
    assert torch.equal(rank_pixels(ATTR, tie_noise=torch.tensor(0.0)), rank_pixels(ATTR, tie_noise=0))


# --- mutation round: properties no test above pinned ---------------------------------------------------

def test_removal_mask_of_a_non_square_map_is_shaped_h_by_w():
    # 2x3 map ranked 6 > 5 > 4 > 3 > 2 > 1: half the pixels (k = 3) are the first row
    attr = torch.tensor([[[[6.0, 5.0, 4.0], [3.0, 2.0, 1.0]]]])
    first_row = [[[True, True, True], [False, False, False]]]
    assert removal_mask(attr, 0.5, tie_noise=0).tolist() == first_row
    assert removal_mask(attr, 0.5, keep=True, tie_noise=0).tolist() == [[[False] * 3, [True] * 3]]
    # one pixel: the 6 of the top-left corner; 1/3 of the pixels (k = 2): 6 and 5
    assert removal_mask(attr, 1 / 6, tie_noise=0).tolist() == [[[True, False, False], [False, False, False]]]
    assert removal_mask(attr, 1 / 3, tie_noise=0).tolist() == [[[True, True, False], [False, False, False]]]
    tall = attr.view(1, 1, 3, 2)  # [[6, 5], [4, 3], [2, 1]]
    assert removal_mask(tall, 0.5, tie_noise=0).tolist() == [[[True, True], [True, False], [False, False]]]


def test_channel_mean_of_integer_images_is_exact_beyond_float32s_integers():
    # 300x300 pixels of 255 but one of 254: the sum 22949999 lies above 2**24, where float32 holds only even
    # integers; the mean is that exact sum over 90000 pixels (and 0 for the second, black, channel)
    images = torch.zeros(1, 2, 300, 300, dtype=torch.uint8)
    images[:, 0] = 255
    images[0, 0, 17, 42] = 254
    assert 255 * 90000 - 1 == 22949999 > 2 ** 24
    assert channel_mean(images).tolist() == [22949999 / 90000, 0.0]


def test_a_bool_tensor_or_array_tie_noise_or_fraction_is_refused():
    # float() reads a one-element bool tensor or 0-d bool array as 1.0 or 0.0, as it does a bool
    import numpy as np

    for flag_value in (torch.tensor(True), np.array(True), torch.tensor(False)):
        with pytest.raises(TypeError, match="tie_noise must be a number"):
            rank_pixels(ATTR, tie_noise=flag_value)
        with pytest.raises(TypeError, match="fraction must be a number"):
            removal_mask(ATTR, flag_value)
        with pytest.raises(TypeError, match="fraction must be a number"):
            random_removal_mask((1, 2, 2), flag_value)


@pytest.mark.parametrize("dtype", [torch.int8, torch.int16, torch.int32, torch.int64])
def test_replace_pixels_rounds_the_fill_of_every_integer_dtype_and_checks_its_range(dtype):
    # signed integer images too: 2.7 -> 3 and -1.6 -> -2 (not truncated to 2 and -1), 2.5 -> 2 (halves to even)
    images = torch.full((1, 3, 2, 2), 7, dtype=dtype)
    out = replace_pixels(images, OBJECT, [2.7, -1.6, 2.5])
    assert out.dtype == dtype and out[0, :, 0, 0].tolist() == [3, -2, 2] and out[0, :, 1, 1].tolist() == [7, 7, 7]
    if dtype == torch.int8:  # 200 does not fit int8 (-128 .. 127): refused, not wrapped round to -56
        with pytest.raises(ValueError, match="does not fit images of dtype torch.int8"):
            replace_pixels(images, OBJECT, [0.0, 200.0, 0.0])


def test_region_sums_of_large_attributions_are_not_capped():
    # Gradient * Input on 0-255 inputs reaches large values: the sums are those of the hand values above, x 1e8
    assert attribution_in_region(ATTR * 1e8, ~OBJECT).tolist() == [10e8, 0.0]
    assert attribution_outside(ATTR * 1e8, OBJECT).tolist() == [10e8, 0.0]
