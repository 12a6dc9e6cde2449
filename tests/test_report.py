"""The report's numbers, tables and claims (``rectgrad.report``) on small hand-made result folders, by hand."""
import csv
import json

import pytest
import torch

from rectgrad import report as module
from rectgrad.report import _Report

FRACTIONS = [0.1, 0.5, 0.9]  # AUC = (y0 + 2 y1 + y2) / 4 by the trapezoid rule over a span of 0.8
METHODS = ["random", "rectgrad", "saliency", "guided_bp"]


def make_report(tmp_path, repeats=1, methods=METHODS, **results) -> _Report:
    """A report over a work folder holding only ``results`` (``{relative path: JSON value}``)."""
    work = tmp_path / "work"
    for name, value in results.items():
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        (work / name).write_text(json.dumps(value))
    config = {"methods": methods, "parameters": {"fractions": FRACTIONS, "repeats": repeats}, "data": {}}
    return _Report(work, tmp_path / "out", config)


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def claim(report: _Report, start: str) -> tuple[str, str]:
    """The measurement and verdict of the one claim starting with ``start``."""
    (found,) = [(measured, holds) for text, measured, holds in report.claims if text.startswith(start)]
    return found


# Per method: ROAR accuracies of repeats 0 and 1, then KAR accuracies (both repeats), at FRACTIONS
ROAR_KAR = {"rectgrad": ([.8, .4, .2], [.8, .6, .2], [.3, .5, .7]),  # ROAR AUC .45 and .55: .5 +- .0707; KAR AOC .5
            "saliency": ([.9, .7, .5], [.9, .7, .5], [.2, .4, .6]),  # ROAR AUC .7; KAR AOC .6
            "guided_bp": ([.8, .5, .4], [.8, .5, .4], [.5, .6, .7]),  # ROAR AUC .55; KAR AOC .4
            "random": ([.9, .6, .3], [.9, .6, .3], [.1, .2, .3])}  # ROAR AUC .6; KAR AOC .8


def roar_kar_results() -> dict:
    files = {}
    for method, (roar0, roar1, kar) in ROAR_KAR.items():
        for r, (roar_curve, kar_curve) in enumerate(((roar0, kar), (roar1, kar))):
            for f, roar_accuracy, kar_accuracy in zip(FRACTIONS, roar_curve, kar_curve):
                files[f"roar/{method}-p{f!r}-r{r}.json"] = {"accuracy": roar_accuracy}
                files[f"kar/{method}-p{f!r}-r{r}.json"] = {"accuracy": kar_accuracy}
    return files


def test_table1_scores_spreads_paper_columns_and_claims_by_hand(tmp_path, monkeypatch):
    plotted = {}
    original = module.line_plot
    monkeypatch.setattr(module, "line_plot", lambda x, curves, *args: plotted.setdefault(args[-1], curves)
                        and original(x, curves, *args))
    report = make_report(tmp_path, repeats=2, **roar_kar_results())
    report._metadata = {"clean": {"classes": list("ab"), "majority_accuracy": 0.5}, "patch": None}
    text = report.roar_kar()
    table = {row["method"]: row for row in read_csv(report.out / "table1.csv")}
    expected = {"rectgrad": (.5, 2 ** .5 * .05, .5, 0, .5385, .3382), "saliency": (.7, 0, .6, 0, .5568, .4455),
                "guided_bp": (.55, 0, .4, 0, .5504, .4270), "random": (.6, 0, .8, 0, .5562, .4438)}
    for method, values in expected.items():
        got = [float(table[method][k]) for k in ("roar_auc", "roar_auc_std", "kar_aoc", "kar_aoc_std",
                                                 "paper_roar_auc", "paper_kar_aoc")]
        assert got == pytest.approx(values, abs=1e-6), method
    assert "| RectGrad | 0.5000 ± 0.0707 | 0.5385 | 0.5000 | 0.3382 |" in text
    assert "| Guided BP | 0.5500 | 0.5504 | 0.4000 | 0.4270 |" in text
    rows = read_csv(report.out / "roar-kar.csv")
    assert {"mode": "roar", "method": "rectgrad", "fraction": "0.5", "repeat": "1", "test_accuracy": "0.6"} in rows
    # the curves: the mean over the repeats at each fraction
    assert list(plotted["ROAR (Fig. 9)"]["RectGrad"][0]) == pytest.approx([.8, .5, .2])
    # the best baseline is the lowest; RectGrad's lead of .05 is within its spread over repeats (.0707)
    assert claim(report, "Table 1: RectGrad has a lower ROAR AUC than every baseline") == (
        "RectGrad 0.5; best baseline Guided BP 0.55 (difference within the spread over repeats)", "yes")
    assert claim(report, "Table 1: RectGrad has a lower KAR AOC than every baseline") == (
        "RectGrad 0.5; best baseline Guided BP 0.4", "**no**")
    assert claim(report, "Table 1: RectGrad has a lower ROAR AUC than Random") == ("RectGrad 0.5000 vs Random 0.6000",
                                                                                   "yes")
    # chance 50%: the best retrained model (90%) is far above it, though every method's worst is not
    assert "chance level" not in text


def test_noise_level_columns_and_claims_by_hand(tmp_path):
    per_image = {  # outside, outside share, TV, TV relative: three images per method
        "rectgrad": ([1, 1, 7], [.1, .1, .7], [1, 2, 30], [.1, .2, .3]),
        "saliency": ([2, 2, 2], [.2, .2, .2], [3, 3, 3], [.5, .5, .5]),
        "guided_bp": ([4, 4, 4], [.4, .4, .4], [5, 5, 5], [.6, .6, .6]),
        "random": ([5, 5, 5], [.5, .5, .5], [9, 9, 9], [.9, .9, .9])}
    noise = {m: {"outside": o, "outside_fraction": s, "total_variation": tv, "total_variation_relative": rel,
                 "outside_raw": [2 * v for v in o], "total_variation_raw": [3 * v for v in tv]}
             for m, (o, s, tv, rel) in per_image.items()}
    report = make_report(tmp_path, **{"results/noise.json": noise})
    report.noise()
    rectgrad = next(r for r in read_csv(report.out / "noise-level.csv") if r["method"] == "rectgrad")
    assert {k: float(v) for k, v in rectgrad.items() if k != "method"} == pytest.approx({
        "outside_total": 9, "outside_mean": 3, "outside_std": 8 ** .5, "outside_share_mean": .3, "tv_median": 2,
        "tv_mean": 11, "outside_total_without_final_threshold": 18, "tv_median_without_final_threshold": 6,
        "tv_relative_median": .2}, rel=1e-5)  # the CSV keeps 6 digits
    # each claim on its own statistic: total and mean share outside (RectGrad's one bad image counts), median TV
    assert claim(report, "Fig. 8: RectGrad puts less attribution on the background") == (
        "RectGrad 9; best baseline Saliency 6", "**no**")
    assert claim(report, "Fig. 8, scale-free check: RectGrad puts a smaller share") == (
        "RectGrad 0.3; best baseline Saliency 0.2", "**no**")
    assert claim(report, "Fig. 8: RectGrad maps have lower total variation") == (
        "RectGrad 2; best baseline Saliency 3", "yes")


def test_occlusion_table_and_claim_by_hand(tmp_path):
    curves = {"results/occlusion-conv1.json": {"fractions": [0, .5, 1], "margins": [[2, 1, 0], [4, 3, -.5]]},
              "results/occlusion-conv2.json": {"fractions": [0, .5, 1], "margins": [[2, 2, 1], [2, 1, 1]]}}
    report = make_report(tmp_path, **curves)
    text = report.occlusion()
    rows = [r for r in read_csv(report.out / "feature-map-occlusion.csv") if r["layer"] == "conv1"]
    assert [(float(r["mean_margin"]), float(r["share_positive"])) for r in rows] == [(3, 1), (2, 1), (-.25, 0)]
    # nothing zeroed, all background zeroed, lowest, images still correct (a margin of 0 is no correct class)
    assert "| conv1 | 3.00 | -0.25 | -0.25 | 0% |" in text and "| conv2 | 2.00 | 1.00 | 1.00 | 100% |" in text
    assert claim(report, "Fig. 2: the mean margin stays positive") == ("lowest mean margin -0.25", "**no**")


def test_compute_time_in_minutes(tmp_path):
    report = make_report(tmp_path, **{"seconds/models/clean.json": {"seconds": 120.0},
                                      "seconds/roar/rectgrad-p0.1-r0.json": {"seconds": 60.0}})
    text = report.compute_time()
    assert "**3.0 minutes** of recorded work" in text
    assert "| models | 1 | 120.0 |" in text and "| roar | 1 | 60.0 |" in text


def test_patch_table_and_claims_by_hand(tmp_path):
    per_image = {"random": ([.5, .5, .5], [.5, .5, .5]), "rectgrad": ([1, 2, 9], [.1, .2, .3]),  # inside, share raw
                 "rectgrad_prr": ([3, 3, 3], [.2, .2, .2]), "saliency": ([5, 5, 5], [.3, .3, .3]),
                 "guided_bp": ([6, 6, 6], [.4, .4, .4])}
    patch = {m: {"inside": inside, "inside_raw": [2 * v for v in inside], "fraction_raw": share}
             for m, (inside, share) in per_image.items()}
    report = make_report(tmp_path, methods=list(per_image), **{"results/patch.json": patch})
    maps = torch.arange(2 * 64, dtype=torch.float32).reshape(2, 1, 8, 8)
    torch.save({"inputs": maps / 128, "maps": {m: maps for m in per_image}}, report.work / "results/patch-examples.pt")
    text = report.patch()
    rectgrad = next(r for r in read_csv(report.out / "patch-attribution.csv") if r["method"] == "rectgrad")
    assert {k: float(v) for k, v in rectgrad.items() if k != "method"} == pytest.approx({
        "mean": 4, "median": 2, "std": (38 / 3) ** .5, "mean_without_final_threshold": 8,
        "mean_share_without_final_threshold": .2, "images": 3}, rel=1e-5)  # the CSV keeps 6 digits
    assert "| RectGrad | 4 | 2 | 8 | 0.200 |" in text
    assert claim(report, "Fig. 7: RectGrad puts less attribution") == (
        "RectGrad 4, RectGrad PRR 3; best baseline Saliency 5", "yes")
    assert claim(report, "Fig. 7: RectGrad PRR assigns the least") == ("least: RectGrad PRR (3)", "yes")
