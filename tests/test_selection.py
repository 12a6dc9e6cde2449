import numpy as np
import pytest
import torch

from rectgrad import selection
from rectgrad.selection import nearest_rank, percentile_nearest, where_above_percentile

QS = [0, 1, 10, 25, 33.3, 50, 62.5, 74, 90, 95, 98, 99, 99.9, 100]


@pytest.mark.parametrize("m", [1, 2, 3, 4, 7, 10, 256, 4095, 4096, 5000, 16384, 32771])
def test_percentile_matches_numpy_nearest(m):
    x = torch.randn(3, m)
    x[:, ::3] = 0.0  # ties
    for q in QS:
        expected = np.percentile(x.numpy(), q, axis=1, method="nearest")
        assert np.array_equal(percentile_nearest(x, q).numpy(), expected), q


def test_percentile_on_relu_like_scores_with_heavy_ties():
    # the shape of RectGrad's scores: half exact zeros, the rest signed
    x = torch.relu(torch.randn(4, 20000)) * torch.randn(4, 20000)
    x[1] = 0.0  # one row entirely tied
    x[2, :19990] = 1.0  # ties just below the top
    for q in QS:
        expected = np.percentile(x.numpy(), q, axis=1, method="nearest")
        assert np.array_equal(percentile_nearest(x, q).numpy(), expected), q


def test_percentile_float64_and_rows_independent():
    x = torch.randn(5, 9000, dtype=torch.float64)
    full = percentile_nearest(x, 98)
    assert full.dtype == torch.float64
    for i in range(5):
        assert percentile_nearest(x[i:i + 1], 98).item() == full[i].item()


def test_nearest_rank_rounds_half_to_even_like_numpy():
    # (n - 1) * q / 100 = 2.5 -> 2 ; 3.5 -> 4
    assert nearest_rank(50, 6) == 2
    assert nearest_rank(50, 8) == 4
    assert nearest_rank(74, 4) == 2
    assert nearest_rank(100, 10) == 9 and nearest_rank(0, 10) == 0


@pytest.mark.parametrize("q, n", [(99.9, 1501), (33.3, 9501), (99.9, 9501)])
def test_nearest_rank_divides_q_by_100_first_as_numpy(q, n):
    # numpy takes (n - 1) * (q / 100) in float64; (n - 1) * q / 100 rounds differently here and picks a neighbour
    assert nearest_rank(q, n) == np.percentile(np.arange(n), q, method="nearest")


def test_nan_scores_rank_lowest_and_never_pass():
    # a float16 overflow can make some scores NaN: they count as -inf, the other rows keep exact thresholds
    for m in (100, 8192):
        x = torch.randn(4, m)
        x[1, ::7] = float("nan")
        x[2, 1::2] = float("nan")  # more NaN than values above the threshold
        x[3] = float("nan")
        values = torch.randn(4, m)
        as_numpy = np.nan_to_num(x.numpy(), nan=-np.inf)
        for q in (2, 50, 98, 100):
            expected = np.percentile(as_numpy, q, axis=1, method="nearest")
            assert np.array_equal(percentile_nearest(x, q).numpy(), expected), (m, q)
            assert torch.equal(where_above_percentile(x, values, q),
                               torch.where(x > torch.from_numpy(expected)[:, None], values, 0.0)), (m, q)


def test_sparse_clustered_scores_like_deep_resnet_layers(monkeypatch):
    # 95% exact zeros, the positives packed into a few places: fewer than t blocks hold a positive value; the
    # positive values are the candidates, and a row with fewer of them than t has threshold 0, without a full selection
    full_selection = selection._topk_kth
    calls = []
    monkeypatch.setattr(selection, "_topk_kth", lambda x, t: calls.append(t) or full_selection(x, t))
    x = torch.zeros(4, 50176)
    x[:, :2000] = torch.rand(4, 2000) + 0.1
    x[:, 3000:3400] = -torch.rand(4, 400)
    x[3, :2000] = 0.0  # a row with fewer positives than the percentile needs: threshold 0
    x[3, :10] = 1.0
    for q in (90, 98, 99):
        expected = np.percentile(x.numpy(), q, axis=1, method="nearest")
        assert np.array_equal(percentile_nearest(x, q).numpy(), expected), q
        values = torch.randn_like(x)
        expected_values = torch.where(x > torch.from_numpy(expected)[:, None], values, 0.0)
        assert torch.equal(where_above_percentile(x, values, q), expected_values)
    assert calls == []


def test_large_values_on_the_sample_stride_are_caught_by_the_count_check(monkeypatch):
    # the threshold is first bounded from a strided sample (here, m = 9760 and q = 98: t = 196, every 3rd
    # value); 150 large values all on that stride make the sample overestimate it: the count check must catch
    # that and still give numpy's answer
    x = torch.rand(2, 9760)
    x[:, 0:450:3] = 10.0 + torch.rand(2, 150)
    calls = []
    full_selection = selection._topk_kth
    monkeypatch.setattr(selection, "_topk_kth", lambda x, t: calls.append(t) or full_selection(x, t))
    expected = np.percentile(x.numpy(), 98, axis=1, method="nearest")
    values = torch.randn_like(x)
    assert np.array_equal(percentile_nearest(x, 98).numpy(), expected)
    above = torch.where(x > torch.from_numpy(expected)[:, None], values, 0.0)
    assert torch.equal(where_above_percentile(x, values, 98), above)
    assert calls == [196, 196]  # the overestimate was seen, and the full selection took over


def test_subnormal_positive_scores_count_as_positive():
    # fewer positive values than the percentile needs, some of them subnormal: the threshold is exactly 0
    # and every positive value, however small, passes it
    x = torch.zeros(3, 8192)
    x[:, 5:105] = 1e-41
    x[:, 200:210] = 1.0
    x[:, 300:400] = -1.0
    values = torch.randn_like(x)
    expected = np.percentile(x.numpy(), 98, axis=1, method="nearest")
    assert np.array_equal(expected, np.zeros(3))
    assert torch.equal(where_above_percentile(x, values, 98.0), torch.where(x > 0, values, 0.0))


def test_sparse_rows_at_the_edges_of_the_count_check(monkeypatch):
    # m = 8192, q = 98: the threshold is the t = 165th largest value. Three sparse rows whose sample bound is the
    # smallest positive value: (0) exactly t positive values, the smallest of them is the threshold, not 0;
    # (1) t positive values of which 115 are that smallest subnormal itself: the threshold is it (a candidate equal
    # to the bound counts), so those 115 do not pass; (2) 10 positives and exactly t values >= 0: threshold 0
    # without a full selection
    full_selection = selection._topk_kth
    calls = []
    monkeypatch.setattr(selection, "_topk_kth", lambda x, t: calls.append(t) or full_selection(x, t))
    smallest = torch.finfo(torch.float32).tiny * torch.finfo(torch.float32).eps
    x = -torch.rand(3, 8192) - 0.5
    x[0] = 0.0
    x[0, 1000:1165] = torch.rand(165) + 0.5
    x[1] = 0.0
    x[1, :50] = 1.0
    x[1, 100:215] = smallest
    x[2, :10] = 1.0
    x[2, 10:165] = 0.0
    expected = np.percentile(x.numpy(), 98, axis=1, method="nearest")
    assert expected[0] == x[0, 1000:1165].min().item() and expected[1] == smallest and expected[2] == 0.0
    assert np.array_equal(percentile_nearest(x, 98).numpy(), expected)
    values = torch.randn_like(x)
    assert torch.equal(where_above_percentile(x, values, 98),
                       torch.where(x > torch.from_numpy(expected)[:, None], values, 0.0))
    assert calls == []


@pytest.mark.parametrize("m", [100, 9000])  # a full selection, and the sampled bound with its flat candidates
def test_non_contiguous_scores(m):
    # PR3/PR4 score a layer by its activation or gradient itself, which need not be contiguous: a transposed
    # dense layer, or the expanded (stride 0) gradient of a sum
    values = torch.randn(3, m)
    for x in (torch.randn(m, 3).t(), torch.randn(1, m).expand(3, m), torch.randn(3, 2 * m)[:, ::2]):
        expected = np.percentile(x.numpy(), 98, axis=1, method="nearest")
        assert np.array_equal(percentile_nearest(x, 98).numpy(), expected)
        above = torch.where(x > torch.from_numpy(expected)[:, None], values, 0.0)
        assert torch.equal(where_above_percentile(x, values, 98), above)


def test_pr3_on_a_transposed_wide_dense_layer():
    # PR3 scores a layer by its activation, here a non-contiguous (transposed) one: the map is still the gradient
    # through the units whose activation exceeds its sample's 98th percentile
    class Transposed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.dense, self.relu, self.head = torch.nn.Linear(10, 5000), torch.nn.ReLU(), torch.nn.Linear(5000, 3)

        def forward(self, x):
            return self.head(self.relu(self.dense(x).t().contiguous().t()))

    from rectgrad import RectGrad

    torch.manual_seed(0)
    model, x = Transposed().double().eval(), torch.randn(2, 10, dtype=torch.float64)
    attribution = RectGrad(model).attribute(x, target=0, q=98.0, rule="pr3", final_threshold=False)
    with torch.no_grad():
        a = model.relu(model.dense(x))
        tau = torch.from_numpy(np.percentile(a.numpy(), 98, axis=1, method="nearest"))
        expected = x * (((a > tau[:, None]) * model.head.weight[0]) @ model.dense.weight)
    assert torch.allclose(attribution, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("m", [10, 9000])
def test_no_rows(m):
    # an empty batch has no percentiles and passes nothing, whatever the layer's width
    assert percentile_nearest(torch.empty(0, m), 98).shape == (0,)
    assert where_above_percentile(torch.empty(0, m), torch.empty(0, 2, m // 2), 98).shape == (0, 2, m // 2)


def test_rows_of_no_scores_have_no_percentile():
    with pytest.raises(ValueError, match="no scores"):
        percentile_nearest(torch.empty(3, 0), 98)
