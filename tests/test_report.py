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


def saved_figures(monkeypatch) -> dict:
    """The figures the report saves, by file name, kept instead of written."""
    figures = {}
    monkeypatch.setattr(module, "save_figure", lambda fig, path: figures.setdefault(path.name, fig))
    return figures


def test_table1_scores_spreads_paper_columns_and_claims_by_hand(tmp_path, monkeypatch):
    plotted = {}
    original = module.line_plot
    monkeypatch.setattr(module, "line_plot", lambda x, curves, *args: plotted.setdefault(args[-1], curves)
                        and original(x, curves, *args))
    figures = saved_figures(monkeypatch)
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
    # shaded: +- the standard deviation over the repeats at each fraction (.4 and .6 at 0.5: .1414), said below them
    ax = figures["fig9-roar.png"].axes[0]
    band = ax.collections[[line.get_label() for line in ax.get_lines()].index("RectGrad")].get_paths()[0].vertices
    assert sorted({round(float(y), 4) for x, y in band if x == .5}) == [.3586, .6414]
    assert "Curves: the mean test accuracy over the 2 repeats" in text
    assert ax.get_xlabel() == "fraction of pixels removed"
    assert figures["fig9-kar.png"].axes[0].get_xlabel() == "fraction of pixels kept"
    # the best baseline is the lowest; RectGrad's lead of .05 is within its spread over repeats (.0707)
    assert claim(report, "Table 1: RectGrad has a lower ROAR AUC than every baseline") == (
        "RectGrad 0.5; best baseline Guided BP 0.55 (difference within the spread over repeats)", "yes")
    assert claim(report, "Table 1: RectGrad has a lower KAR AOC than every baseline") == (
        "RectGrad 0.5; best baseline Guided BP 0.4", "**no**")
    assert claim(report, "Table 1: RectGrad has a lower ROAR AUC than Random") == ("RectGrad 0.5000 vs Random 0.6000",
                                                                                   "yes")
    # chance 50%: the best retrained model (90%) is far above it, though every method's worst is not
    assert "chance level" not in text


def test_noise_level_columns_and_claims_by_hand(tmp_path, monkeypatch):
    per_image = {  # outside, outside share, TV, TV relative: three images per method
        "rectgrad": ([1, 1, 7], [.1, .1, .7], [1, 2, 30], [.1, .2, .9]),
        "saliency": ([2, 2, 2], [.2, .2, .2], [3, 3, 3], [.5, .5, .5]),
        "guided_bp": ([4, 4, 4], [.4, .4, .4], [5, 5, 5], [.6, .6, .6]),
        "random": ([5, 5, 5], [.5, .5, .5], [9, 9, 9], [.9, .9, .9])}
    noise = {m: {"outside": o, "outside_fraction": s, "total_variation": tv, "total_variation_relative": rel,
                 "outside_raw": [2 * v for v in o], "total_variation_raw": [3 * v for v in tv]}
             for m, (o, s, tv, rel) in per_image.items()}
    figures = saved_figures(monkeypatch)
    report = make_report(tmp_path, **{"results/noise.json": noise})
    text = report.noise()
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
    assert claim(report, "Fig. 8, scale-free check: lower total variation") == (  # the median .2, not the mean .4
        "RectGrad 0.2; best baseline Saliency 0.5", "yes")
    # outside total, share, TV median, TV / total median, outside and TV median with no final threshold
    assert "| RectGrad | 9 | 0.300 | 2 | 0.200 | 18 | 6 |" in text
    # the bars: the mean outside +- its standard deviation, for the paper's methods (no Random)
    ax = figures["fig8-background-attribution.png"].axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["RectGrad", "Saliency", "Guided BP"]
    assert [bar.get_height() for bar in ax.patches] == pytest.approx([3, 2, 4])
    (low, high), *_ = [segment[:, 1] for segment in ax.containers[-1].errorbar.lines[2][0].get_segments()]
    assert (low, high) == pytest.approx((3 - 8 ** .5, 3 + 8 ** .5))
    ax = figures["fig8-total-variation.png"].axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["RectGrad", "Saliency", "Guided BP"]


def test_occlusion_table_and_claim_by_hand(tmp_path):
    curves = {"results/occlusion-conv1.json": {"fractions": [0, .5, 1], "margins": [[2, 1, 0], [4, 3, -.5]]},
              "results/occlusion-conv2.json": {"fractions": [0, .5, 1], "margins": [[2, 2, 1], [2, 1, 1]]}}
    report = make_report(tmp_path, **curves)
    text = report.occlusion()
    rows = [r for r in read_csv(report.out / "feature-map-occlusion.csv") if r["layer"] == "conv1"]
    assert [(float(r["mean_margin"]), float(r["share_positive"])) for r in rows] == [(3, 1), (2, 1), (-.25, 0)]
    assert [float(r["std_margin"]) for r in rows] == [1, 1, .25]  # over the images (2 and 4, ...)
    # nothing zeroed, all background zeroed, lowest, images still correct (a margin of 0 is no correct class)
    assert "| conv1 | 3.00 | -0.25 | -0.25 | 0% |" in text and "| conv2 | 2.00 | 1.00 | 1.00 | 100% |" in text
    assert claim(report, "Fig. 2: the mean margin stays positive") == ("lowest mean margin -0.25", "**no**")


def test_occlusion_layers_in_numeric_order(tmp_path):
    curve = {"fractions": [0, 1], "margins": [[1, 0]]}
    report = make_report(tmp_path, **{f"results/occlusion-conv{i}.json": curve for i in (10, 2, 1)})
    text = report.occlusion()
    assert text.index("| conv1 |") < text.index("| conv2 |") < text.index("| conv10 |")  # not conv1, conv10, conv2
    assert [r["layer"] for r in read_csv(report.out / "feature-map-occlusion.csv")][::2] == ["conv1", "conv2", "conv10"]


def test_occlusion_reads_only_the_runs_own_result_files(tmp_path):
    # the layer was the text after the last '-': a copy occlusion-old-conv1.json replaced conv1's curve, and
    # occlusion-conv1-backup.json showed as a layer "backup"
    curve, other = {"fractions": [0, 1], "margins": [[2, 1]]}, {"fractions": [0, 1], "margins": [[-5, -5]]}
    strays = {"results/occlusion-old-conv1.json": other, "results/occlusion-conv1-backup.json": other,
              "results/occlusion-conv01.json": other, "results/occlusion-.json": other}
    report = make_report(tmp_path, **{"results/occlusion-conv1.json": curve, **strays})
    text = report.occlusion()
    assert [r["layer"] for r in read_csv(report.out / "feature-map-occlusion.csv")] == ["conv1", "conv1"]
    assert "| conv1 | 2.00 | 1.00 | 1.00 | 100% |" in text and "backup" not in text.split("Left out")[0]
    assert claim(report, "Fig. 2: the mean margin stays positive") == ("lowest mean margin 1.00", "yes")
    assert all(f"`{name}`" in text for name in strays)  # named, not silently dropped
    # with the clean model saved, its layers are the run's: a conv5 it lacks is a stray too
    from rectgrad.checkpoint import save_checkpoint
    from rectgrad.models import PaperCNN

    report = make_report(tmp_path / "model", **{f"results/occlusion-conv{i}.json": curve for i in (1, 2, 5)})
    (report.work / "models").mkdir()
    save_checkpoint(PaperCNN(1, 8, 2), report.work / "models/clean.pt")
    text = report.occlusion()
    assert [r["layer"] for r in read_csv(report.out / "feature-map-occlusion.csv")][::2] == ["conv1", "conv2"]
    assert "`results/occlusion-conv5.json`" in text and "Not done yet at conv3, conv4" in text
    # only strays: the section is not run yet, and says what it left out
    report = make_report(tmp_path / "strays", **strays)
    text = report.occlusion()
    assert "Not run yet." in text and "`results/occlusion-old-conv1.json`" in text
    assert not (report.out / "feature-map-occlusion.csv").exists()


def test_compute_time_in_minutes(tmp_path):
    report = make_report(tmp_path, **{"seconds/models/clean.json": {"seconds": 120.0},
                                      "seconds/roar/rectgrad-p0.1-r0.json": {"seconds": 60.0}})
    text = report.compute_time()
    assert "**3.0 minutes** of recorded work" in text
    assert "| models | 1 | 120.0 |" in text and "| roar | 1 | 60.0 |" in text


def test_patch_table_and_claims_by_hand(tmp_path, monkeypatch):
    per_image = {"random": ([.5, .5, .5], [.5, .5, .5]), "rectgrad": ([1, 2, 9], [.1, .2, .3]),  # inside, share raw
                 "rectgrad_prr": ([3, 3, 3], [.2, .2, .2]), "saliency": ([5, 5, 5], [.3, .3, .3]),
                 "guided_bp": ([6, 6, 6], [.4, .4, .4])}
    patch = {m: {"inside": inside, "inside_raw": [2 * v for v in inside], "fraction_raw": share}
             for m, (inside, share) in per_image.items()}
    figures = saved_figures(monkeypatch)
    report = make_report(tmp_path, methods=list(per_image), **{"results/patch.json": patch})
    assert report.patch().endswith("Not run yet.\n")  # the example maps of Fig. 3 not saved yet
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
    assert claim(report, "Fig. 7, scale-free check") == (  # on the shares, not the sums
        "RectGrad 0.2, RectGrad PRR 0.2; best baseline Saliency 0.3", "yes")
    # Fig. 3: every map (Random's too) and the input, each with the scored 8x8 corner framed
    axes = figures["fig3-patch-maps.png"].axes
    assert [ax.get_title() for ax in axes[:6]] == ["Input", "Random", "RectGrad", "RectGrad PRR", "Saliency",
                                                   "Guided BP"]
    for ax in axes:
        (frame,) = ax.patches
        assert (frame.get_xy(), frame.get_width(), frame.get_height()) == ((-0.5, -0.5), 8, 8)
    ax = figures["fig7-patch-attribution.png"].axes[0]  # Fig. 7: the paper's methods only
    assert [t.get_text() for t in ax.get_xticklabels()] == ["RectGrad", "RectGrad PRR", "Saliency", "Guided BP"]


def test_chance_is_the_majority_rate_else_one_class_in_n_and_its_margin_is_inclusive():
    assert module._chance({"classes": list("abcd"), "majority_accuracy": 0.4}) == 0.4
    assert module._chance({"classes": list("abcd")}) == 0.25  # saved before the majority rate was recorded
    assert module._chance({}) is None and module._chance(None) is None
    assert module._at_chance(0.525, 0.5) and not module._at_chance(0.5251, 0.5)  # 0.5 + 5% of the 0.5 to go


def test_a_manifest_lists_only_names(tmp_path):
    manifest = tmp_path / "manifest.json"
    assert module.listed_files(manifest) == []  # none yet
    for text, listed in (('["a.csv", "b.png"]', ["a.csv", "b.png"]), ("5", []), ('[["a.csv"]]', []),
                         ('["a.csv", 1]', []), ("[", []), ('{"a.csv": 1}', [])):
        manifest.write_text(text)
        assert module.listed_files(manifest) == listed, text


CONFIG = {"dataset": "cifar10", "scale": "smoke", "data": {"train": 200, "test": 60}, "methods": ["rectgrad"],
          "parameters": {"fractions": FRACTIONS, "repeats": 1, "per_class": 2, "occlusion_steps": 3,
                         "occlusion_orders": 2, "hyperparameters": {}, "model_images": 200, "model_epochs": 1,
                         "patch_images": 20, "roar_train_images": None, "roar_test_images": 60, "roar_epochs": 1}}


def _folders_with_config(tmp_path, out: str):
    """A work folder holding CONFIG alone, and an empty report folder ``out`` beside it."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "config.json").write_text(json.dumps(CONFIG))
    (tmp_path / out).mkdir()
    return work, tmp_path / out


def test_header_counts_images_and_says_what_figs_2_and_8_use(tmp_path):
    text = _Report(tmp_path, tmp_path, {**CONFIG, "overrides": {"roar_epochs": 2, "fractions": [0.1, 0.9]}}).header()
    assert text.startswith("# RectGrad quantitative experiments: cifar10, `smoke` scale, with roar_epochs=2, "
                           "fractions=[0.1, 0.9]\n")
    for row in ("| clean and patch models | all 200 training images, 1 epoch(s) |",  # 200 of 200: all
                "| Fig. 2 | up to 2 correctly classified masked images per class, 3 fractions, 2 random orders |",
                "| Fig. 7 | first 20 of 60 test images, patched |", "| Fig. 8 | the Fig. 2 images |",
                "| ROAR / KAR | all 200 train / all 60 test images, 1 epoch(s), 1 repeat(s), fractions "
                "[0.1, 0.5, 0.9], tie-breaking noise of standard deviation 0.0001 |"):  # (none saved: the default)
        assert row in text, row
    masks_lost = _Report(tmp_path, tmp_path, {**CONFIG, "data": {**CONFIG["data"], "masked": 0}})  # none has a mask
    assert "| Fig. 2 | skipped (see below) |" in masks_lost.header()
    assert masks_lost._not_run().startswith("Skipped: none of the test images has an object mask")


def test_masked_images_used_per_class(tmp_path):
    report = _Report(tmp_path, tmp_path, CONFIG)
    report._metadata = {"clean": {"classes": ["cat", "dog"]}, "patch": None}
    report._chosen = {"names": ["x", "y", "z"], "labels": [0, 0, 1], "source": "the masks"}
    assert report._masked_used() == "3 correctly classified masked images (up to 2 per class: cat 2, dog 1)"
    assert report._masked_skipped is None
    report = _Report(tmp_path, tmp_path, CONFIG)
    report._metadata = {"clean": {"classes": ["cat", "dog"]}, "patch": None}
    report._chosen = {"names": ["w", "x", "y", "z"], "labels": [1, 0, 0, 1], "source": "the masks"}
    assert report._masked_used() == "4 correctly classified masked images, 2 per class"
    report = _Report(tmp_path, tmp_path, CONFIG)
    report._metadata = {"clean": {}, "patch": None}  # a model saved before it carried its class names
    report._chosen = {"names": ["x", "y", "z"], "labels": [0, 0, 1], "source": "the masks"}
    assert report._masked_used() == "3 correctly classified masked images (up to 2 per class)"
    report = _Report(tmp_path, tmp_path, CONFIG)
    report._chosen = {"names": [], "labels": [], "source": "the masks"}
    assert report._not_run().startswith("Skipped: the clean model classifies none of the masked images (the masks)")


def test_models_table_and_chance_warning(tmp_path):
    report = make_report(tmp_path)
    report._metadata = {"clean": {"train_images": 100, "epochs": 2, "test_accuracy": 0.42, "classes": list("abc"),
                                  "majority_accuracy": 0.4},
                        "patch": {"train_images": 100, "epochs": 3, "test_accuracy": 0.9, "classes": list("abc")}}
    text = report.models()
    assert "| clean | 100 | 2 | 0.4200 |" in text and "| patch | 100 | 3 | 0.9000 |" in text
    assert [r["epochs"] for r in read_csv(report.out / "models.csv")] == ["2", "3"]
    assert "**At chance level** (clean 42.0%, chance 40.0%):" in text  # 42% <= 40% + 3 points; 90% > 1/3 + 3.3


def test_occlusion_claim_leaves_out_layers_where_nothing_was_zeroed(tmp_path):
    curves = {"results/occlusion-conv1.json": {"fractions": [0, 1], "margins": [[1, 0], [1, 0]],
                                               "background_units": [0, 2]},  # zeroed in the second image
              "results/occlusion-conv2.json": {"fractions": [0, 1], "margins": [[-1, -1], [-1, -1]],
                                               "background_units": [0, 0]}}
    report = make_report(tmp_path, **curves)
    text = report.occlusion()
    assert "Nothing was zeroed at conv2" in text and "Nothing was zeroed at conv1" not in text
    # conv1's margin falls to 0: not positive, and conv2's -1 is not counted
    assert claim(report, "Fig. 2: the mean margin stays positive") == ("lowest mean margin 0.00", "**no**")
    report = make_report(tmp_path / "none", **{"results/occlusion-conv2.json": curves["results/occlusion-conv2.json"]})
    report.occlusion()  # no layer where anything was zeroed: no verdict
    assert claim(report, "Fig. 2: the mean margin stays positive") == (
        "no background activation was zeroed: the masks mark no background", "n/a")


def test_table1_ties_missing_trainings_and_one_repeat(tmp_path):
    files = {}
    for method, (roar, kar) in {"random": ([.9, .6, .3], [.1, .2, .3]), "rectgrad": ([.9, .6, .3], [.1, .2, .3]),
                                "saliency": ([.9, .6, .3], [.1, .2, .3]), "rectgrad_prr": ([.5], [])}.items():
        for f, accuracy in zip(FRACTIONS, roar):
            files[f"roar/{method}-p{f!r}-r0.json"] = {"accuracy": accuracy}
        for f, accuracy in zip(FRACTIONS, kar):
            files[f"kar/{method}-p{f!r}-r0.json"] = {"accuracy": accuracy}
    report = make_report(tmp_path, methods=["random", "rectgrad", "rectgrad_prr", "saliency"], **files)
    text = report.roar_kar()
    assert "5 trainings are not done yet; methods with missing trainings are left out." in text
    assert "| RectGrad PRR | - | - | - | - |" in text  # two of its ROAR trainings and all three KAR ones missing
    assert "| RectGrad | 0.6000 | 0.5385 | 0.8000 | 0.3382 |" in text  # one repeat: no spread
    assert "Curves:" not in text  # one repeat: no mean over repeats, no band
    # a tie is not lower
    assert claim(report, "Table 1: RectGrad has a lower ROAR AUC than Random") == ("RectGrad 0.6000 vs Random 0.6000",
                                                                                   "**no**")
    assert claim(report, "Table 1: RectGrad has a lower ROAR AUC than every baseline") == (
        "RectGrad 0.6; best baseline Saliency 0.6", "**no**")


def test_compute_time_parts_in_pipeline_order(tmp_path):
    seconds = {"kar/rectgrad-p0.1-r0": 1, "maps/roar-train-rectgrad": 2, "maps/roar-train-saliency": 3,
               "models/clean": 4, "maps/masked-rectgrad": 5}
    report = make_report(tmp_path, **{f"seconds/{unit}.json": {"seconds": float(s)} for unit, s in seconds.items()})
    report.compute_time()
    assert [list(r.values()) for r in read_csv(report.out / "compute-time.csv")] == [
        ["models", "1", "4"], ["maps: masked", "1", "5"], ["maps: roar-train", "2", "5"], ["kar", "1", "1"]]


def test_compute_time_of_a_file_directly_in_seconds_is_a_part_of_its_own(tmp_path):
    # a file no unit wrote (no kind folder): its time shown under its name, not "not enough values to unpack"
    seconds = {"models/clean": 6, "extra": 4, "maps": 2}
    report = make_report(tmp_path, **{f"seconds/{unit}.json": {"seconds": float(s)} for unit, s in seconds.items()})
    assert "**0.2 minutes**" in report.compute_time()  # 12 s
    assert [list(r.values()) for r in read_csv(report.out / "compute-time.csv")] == [
        ["models", "1", "6"], ["extra", "1", "4"], ["maps", "1", "2"]]  # the pipeline's parts first


def test_claims_table_escapes_bars(tmp_path):
    report = make_report(tmp_path)
    report._claim("total |attribution| is low", "a|b", None)
    assert "| total \\|attribution\\| is low | a\\|b | n/a |" in report.claims_table()  # a bare | ends the cell


def test_write_report_removes_only_its_own_earlier_files(tmp_path):
    work, out = _folders_with_config(tmp_path, "out")
    for name in ("fig9-roar.png", "notes.txt", "table1.csv"):
        (out / name).write_text("earlier")
    (out / module.MANIFEST).write_text(json.dumps(["fig9-roar.png", "notes.txt", "table1.csv"]))
    text = module.write_report(work, out).read_text()
    written = ["compute-time.csv", "models.csv", "roar-kar.csv", "table1.csv"]  # nothing else has results yet
    assert json.loads((out / module.MANIFEST).read_text()) == written
    # the earlier report's Fig. 9 removed; a file listed by hand that a report never writes kept
    assert sorted(p.name for p in out.iterdir()) == sorted([*written, "notes.txt", "README.md", module.MANIFEST])
    assert text.index("## Models") < text.index("## The paper's claims") < text.index("## Fig. 2")


def test_rectgrad_far_below_the_best_baseline_is_not_within_the_spread(tmp_path):
    report = make_report(tmp_path)
    report._compare("c", {"rectgrad": .3, "saliency": .5}, {"rectgrad": .1, "saliency": 0})
    assert claim(report, "c") == ("RectGrad 0.3; best baseline Saliency 0.5", "yes")  # .2 apart, spread .1


def test_table1_at_chance_level_gives_no_verdict(tmp_path):
    files = {f"{mode}/{m}-p{f!r}-r0.json": {"accuracy": .9} for mode in ("roar", "kar") for m in ("random", "rectgrad")
             for f in FRACTIONS}
    report = make_report(tmp_path, methods=["random", "rectgrad"], **files)
    report._metadata = {"clean": {"classes": list("ab"), "majority_accuracy": 0.9}, "patch": None}  # 90% one class
    text = report.roar_kar()
    assert "**ROAR: every retrained model is at chance level (accuracy <= 0.9000)**, chance 0.9000" in text
    for measure in ("ROAR AUC", "KAR AOC"):
        for than in ("every baseline", "Random"):  # one claim each, and no verdict
            assert claim(report, f"Table 1: RectGrad has a lower {measure} than {than}") == (
                "every retrained model is at chance level (accuracy <= 0.9000)", "n/a")


def test_figures_of_a_random_only_run_show_random(tmp_path, monkeypatch):
    figures = saved_figures(monkeypatch)  # (the paper's methods are plotted without Random: here there is none)
    noise = {"random": {k: [1.0, 2.0] for k in ("outside", "outside_fraction", "total_variation",
                                                "total_variation_relative", "outside_raw", "total_variation_raw")}}
    make_report(tmp_path, methods=["random"], **{"results/noise.json": noise}).noise()
    for name in ("fig8-background-attribution.png", "fig8-total-variation.png"):
        assert [t.get_text() for t in figures[name].axes[0].get_xticklabels()] == ["Random"], name


def _noise_result(outside=(1, 2)) -> dict:
    return {"outside": list(outside), "outside_fraction": [.1, .2], "total_variation": [3, 4],
            "total_variation_relative": [.3, .4], "outside_raw": [2 * v for v in outside],
            "total_variation_raw": [6, 8]}


@pytest.mark.parametrize("name, value, why", [
    ("results/noise.json", {m: _noise_result() for m in METHODS[:-1]}, "no 'guided_bp'"),  # a method's entry gone
    ("results/noise.json", {**{m: _noise_result() for m in METHODS}, "rectgrad": {**_noise_result(), "outside": "x"}},
     "'outside' holds no 1-D array of numbers"),
    ("results/noise.json", [1, 2], "a JSON list, not an object"),
    ("results/occlusion-conv1.json", {"fractions": [0, 1], "margins": [1, 2]}, "'margins' holds no 2-D array"),
    ("results/occlusion-conv1.json", {"fractions": [0, 1], "margins": [[1, 2], [3]]}, "'margins' holds no 2-D"),
    ("results/patch.json", {m: {"inside": [1], "inside_raw": [1]} for m in METHODS}, "no 'fraction_raw'"),
])
def test_a_result_edited_by_hand_is_named_as_corrupt(tmp_path, name, value, why):
    # valid JSON of another shape (a key gone, text for numbers): the error names the file and what to do
    report = make_report(tmp_path, **{name: value})
    (report.work / "results" / "patch-examples.pt").parent.mkdir(parents=True, exist_ok=True)
    torch.save({"inputs": torch.zeros(1, 1, 8, 8), "maps": {m: torch.zeros(1, 1, 8, 8) for m in METHODS}},
               report.work / "results" / "patch-examples.pt")
    section = {"noise": report.noise, "occlu": report.occlusion, "patch": report.patch}[name[8:13]]
    with pytest.raises(ValueError) as refused:
        section()
    assert str(refused.value).startswith(f"{report.work / name} is corrupt ({why}")
    assert str(refused.value).endswith("delete it and rerun to compute it again")


def test_fig8_gives_no_background_verdict_where_the_masks_mark_no_background(tmp_path):
    # no method, not even Random, puts anything outside the masks: they mark no background; TV is still compared
    noise = {m: {**_noise_result(outside=(0, 0)), "total_variation": [v, v]}
             for m, v in zip(METHODS, (9, 1, 2, 3))}
    report = make_report(tmp_path, **{"results/noise.json": noise})
    text = report.noise()
    assert "No method puts any attribution outside the masks: they mark no background" in text
    for start in ("Fig. 8: RectGrad puts less attribution on the background", "Fig. 8, scale-free check: RectGrad"):
        assert claim(report, start) == ("no attribution outside the masks: they mark no background", "n/a")
    assert claim(report, "Fig. 8: RectGrad maps have lower total variation") == (
        "RectGrad 1; best baseline Saliency 2", "yes")
    noise["random"]["outside_raw"] = [0, 1e-9]  # something outside, if only without the final threshold: compared
    report = make_report(tmp_path, **{"results/noise.json": noise})
    assert "No method puts" not in report.noise()
    assert claim(report, "Fig. 8: RectGrad puts less attribution on the background") == (
        "RectGrad 0; best baseline Saliency 0", "**no**")


def test_table1_every_baseline_claim_waits_for_every_baselines_trainings(tmp_path):
    complete = make_report(tmp_path / "complete", repeats=2, **roar_kar_results())
    complete.roar_kar()
    assert claim(complete, "Table 1: RectGrad has a lower KAR AOC than every baseline")[1] == "**no**"  # Guided BP
    files = roar_kar_results()
    del files["kar/guided_bp-p0.9-r1.json"]  # still training
    partial = make_report(tmp_path / "partial", repeats=2, **files)
    assert "1 trainings are not done yet" in partial.roar_kar()
    assert claim(partial, "Table 1: RectGrad has a lower KAR AOC than every baseline")[1] == "n/a"


def test_table1_claims_name_the_methods_they_wait_for(tmp_path):
    # Random's or RectGrad's trainings missing: the claims that compare them wait, naming them; the others are judged
    files = roar_kar_results()
    del files["roar/random-p0.5-r0.json"]
    report = make_report(tmp_path / "random", repeats=2, **files)
    report.roar_kar()
    assert claim(report, "Table 1: RectGrad has a lower ROAR AUC than Random") == ("not done yet: Random", "n/a")
    assert claim(report, "Table 1: RectGrad has a lower ROAR AUC than every baseline")[1] == "yes"  # .5 vs .55, .7
    assert claim(report, "Table 1: RectGrad has a lower KAR AOC than Random")[1] == "yes"  # .5 vs .8: KAR is done
    del files["kar/rectgrad-p0.1-r1.json"]
    report = make_report(tmp_path / "rectgrad", repeats=2, **files)
    report.roar_kar()
    assert [c[1:] for c in report.claims if c[0].startswith("Table 1: RectGrad has a lower KAR AOC")] == [
        ("not done yet: RectGrad", "n/a"), ("not done yet: RectGrad", "n/a")]


def test_a_readme_no_report_wrote_is_never_replaced(tmp_path):
    # a folder of the user's own with a README.md: refused, untouched; an earlier report's README (listed or not) is
    # the report's to rewrite
    work, out = _folders_with_config(tmp_path, "project")
    (out / "README.md").write_text("# My project\n")
    with pytest.raises(FileExistsError, match=f"^{out / 'README.md'} exists and no rectgrad report wrote it: the "
                                              "report would replace it; give another folder"):
        module.write_report(work, out)
    assert sorted(p.name for p in out.iterdir()) == ["README.md"]
    assert (out / "README.md").read_text() == "# My project\n"
    (out / "README.md").write_text(module.TITLE + ": fashion-mnist, `quick` scale\n")  # a report made before manifests
    assert module.write_report(work, out).read_text().startswith(module.TITLE + ": ")
    (out / "README.md").write_text("edited by hand")
    module.write_report(work, out)  # listed in the manifest of the report it belongs to


def test_files_of_the_reports_names_that_no_report_wrote_are_never_replaced(tmp_path):
    # a folder of the user's own without a README.md: its models.csv (or any file of a report's name) is refused, the
    # folder left untouched; a folder in place of a report file is refused before anything is written
    work, out = _folders_with_config(tmp_path, "project")
    (out / "models.csv").write_text("mine")
    with pytest.raises(FileExistsError, match=f"^{out / 'models.csv'} exists and no rectgrad report wrote it: the "
                                              "report would replace it; give another folder"):
        module.write_report(work, out)
    (out / "table1.csv").write_text("mine too")
    with pytest.raises(FileExistsError, match=f"^{out} holds models.csv, table1.csv, which no rectgrad report wrote"):
        module.write_report(work, out)
    assert sorted(p.name for p in out.iterdir()) == ["models.csv", "table1.csv"]
    assert (out / "models.csv").read_text() == "mine" and (out / "table1.csv").read_text() == "mine too"
    for name in ("README.md", "fig9-roar.png"):
        folder = tmp_path / f"with-{name}"
        (folder / name).mkdir(parents=True)
        with pytest.raises(IsADirectoryError, match=f"^{folder / name} is a folder, where the report writes a file of "
                                                    "that name"):
            module.write_report(work, folder)
        assert [p.name for p in folder.iterdir()] == [name]


def test_a_report_failing_part_way_leaves_its_files_to_the_next(tmp_path):
    # a corrupt result stops the report after its first files: the rerun takes them for a report's (not refused as
    # the user's), and removes those it no longer writes
    work, out = tmp_path / "work", tmp_path / "out"
    (work / "results").mkdir(parents=True)
    (work / "config.json").write_text(json.dumps(CONFIG))
    (work / "results/occlusion-conv1.json").write_text(json.dumps({"fractions": [0, 1], "margins": [[1, 0]]}))
    (work / "results/noise.json").write_text("{")
    with pytest.raises(ValueError, match="noise.json is corrupt"):
        module.write_report(work, out)
    assert (out / "fig2-feature-map-occlusion.png").is_file() and (out / "models.csv").is_file()
    (work / "results/noise.json").unlink()
    (work / "results/occlusion-conv1.json").unlink()  # (Fig. 2 not written again)
    module.write_report(work, out)
    written = ["compute-time.csv", "models.csv", "roar-kar.csv", "table1.csv"]
    assert json.loads((out / module.MANIFEST).read_text()) == written
    assert sorted(p.name for p in out.iterdir()) == sorted([*written, "README.md", module.MANIFEST])


@pytest.mark.parametrize("edit, why", [
    (lambda c: c.pop("methods"), "no 'methods'"),
    (lambda c: c.pop("data"), "no 'data'"),
    (lambda c: c["parameters"].pop("occlusion_steps"), "no 'occlusion_steps'"),
    (lambda c: c["parameters"].pop("fractions"), "no 'fractions'"),
    (lambda c: c.update(methods="rectgrad"), "'methods' holds no list of method names"),
])
def test_a_config_lacking_a_key_is_named_as_corrupt(tmp_path, edit, why):
    # a hand-edited or foreign config.json was a bare KeyError: 'methods'
    work, out = tmp_path / "work", tmp_path / "out"
    work.mkdir()
    config = json.loads(json.dumps(CONFIG))
    edit(config)
    (work / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError) as refused:
        module.write_report(work, out)
    assert str(refused.value).startswith(f"{work / 'config.json'} is corrupt ({why})")
    assert "cannot be checked against any configuration" in str(refused.value)


def test_a_method_no_longer_registered_is_named_with_the_known_ones(tmp_path):
    # a method name rectgrad no longer has crashed label() with a bare KeyError: 'gradcam'
    from rectgrad.methods import METHOD_NAMES

    work, out = tmp_path / "work", tmp_path / "out"
    work.mkdir()
    (work / "config.json").write_text(json.dumps({**CONFIG, "methods": ["rectgrad", "gradcam"]}))
    with pytest.raises(ValueError) as refused:
        module.write_report(work, out)
    message = str(refused.value)
    assert message.startswith(f"{work / 'config.json'} names a method this rectgrad does not know, 'gradcam' (known "
                              f"methods: {', '.join(METHOD_NAMES)})")
    assert not out.exists()  # refused before writing anything
    # the Fig. 3 examples of a method the config lacks: named with their file
    report = make_report(tmp_path / "examples", methods=["rectgrad"],
                         **{"results/patch.json": {"rectgrad": {"inside": [1.0], "inside_raw": [1.0],
                                                                "fraction_raw": [0.5]}}})
    torch.save({"inputs": torch.zeros(1, 1, 8, 8), "maps": {m: torch.zeros(1, 1, 8, 8) for m in ("rectgrad", "old")}},
               report.work / "results" / "patch-examples.pt")
    with pytest.raises(ValueError, match=f"^{report.work / 'results' / 'patch-examples.pt'} names a method this "
                                         "rectgrad does not know, 'old'"):
        report.patch()


# --- mutation-testing gaps (second round) ---


def roar_kar_files(curves: dict, repeats=1) -> dict:
    """Result files from ``{(mode, method): curve}``, the same curve (accuracies at FRACTIONS) for every repeat."""
    return {f"{mode}/{method}-p{f!r}-r{r}.json": {"accuracy": a} for (mode, method), curve in curves.items()
            for r in range(repeats) for f, a in zip(FRACTIONS, curve)}


def boxes(monkeypatch) -> dict:
    """The values each box plot is drawn from, by its title, kept as the report passes them."""
    drawn, original = {}, module.boxplot
    monkeypatch.setattr(module, "boxplot", lambda values, ylabel, title=None: drawn.setdefault(
        title, {k: list(map(float, v)) for k, v in values.items()}) and original(values, ylabel, title))
    return drawn


def test_chance_margin_is_5_percent_of_the_way_to_a_perfect_score_not_of_chance():
    # chance 10%: 4.5 points over it (the docstring's example), not 5% of 10% (0.5 points)
    assert module._at_chance(0.144, 0.1) and not module._at_chance(0.146, 0.1)
    assert module._at_chance(0.962, 0.96) and not module._at_chance(0.963, 0.96)  # 96% one class: 96.2%


def test_header_states_the_saved_tie_noise_and_attribution_overrides(tmp_path):
    config = {**CONFIG, "tie_noise": 0.001,
              "parameters": {**CONFIG["parameters"], "hyperparameters": {"rectgrad": {"q": 0.9, "eps": 0}}}}
    text = _Report(tmp_path, tmp_path, config).header()
    assert "tie-breaking noise of standard deviation 0.001 |" in text  # the run's own, not the default 1e-4
    assert "| attribution overrides | rectgrad: q=0.9, eps=0 |" in text


def test_masked_images_per_class_in_the_models_class_order_with_absent_classes(tmp_path):
    report = _Report(tmp_path, tmp_path, CONFIG)
    report._metadata = {"clean": {"classes": ["dog", "cat", "bird"]}, "patch": None}  # not alphabetical
    report._chosen = {"names": ["x", "y", "z"], "labels": [0, 0, 1], "source": "the masks"}
    # label 0 is dog, 1 cat; bird (the last class) has none but is still listed, with 0
    assert report._masked_used() == "3 correctly classified masked images (up to 2 per class: dog 2, cat 1, bird 0)"


def test_masked_images_are_read_from_results_masked_json(tmp_path):
    report = make_report(tmp_path, **{"results/masked.json": {"names": ["x"], "labels": [0], "source": "s"}})
    report._metadata = {"clean": None, "patch": None}  # (the clean model not trained here: no class names)
    report.p["per_class"] = 2
    assert report._masked_used() == "1 correctly classified masked images (up to 2 per class)"  # the one chosen


def test_models_table_reads_the_saved_checkpoints(tmp_path):
    from rectgrad.checkpoint import save_checkpoint
    from rectgrad.models import PaperCNN

    report = make_report(tmp_path)
    (report.work / "models").mkdir(parents=True)
    save_checkpoint(PaperCNN(1, 8, 2), report.work / "models/clean.pt", train_images=10, epochs=1, test_accuracy=0.75,
                    classes=["a", "b"], majority_accuracy=0.5)
    text = report.models()  # the patch model not trained yet: one row
    assert "| clean | 10 | 1 | 0.7500 |" in text and "| patch |" not in text
    assert "Paper (CIFAR-10, 20 epochs): 74.6% clean, 73.1% patch-occluded." in text  # the paper's Sec. 3 / appendix
    assert [r["model"] for r in read_csv(report.out / "models.csv")] == ["clean"]


def test_fig2_plots_each_layers_mean_margin_without_a_band(tmp_path, monkeypatch):
    figures = saved_figures(monkeypatch)
    report = make_report(tmp_path, **{"results/occlusion-conv1.json": {"fractions": [0, .5, 1],
                                                                       "margins": [[2, 1, 0], [4, 3, -.5]]}})
    report.occlusion()
    ax = figures["fig2-feature-map-occlusion.png"].axes[0]
    (line,) = ax.get_lines()
    assert list(line.get_xdata()) == [0, .5, 1] and list(line.get_ydata()) == pytest.approx([3, 2, -.25])
    assert not ax.collections  # one curve per layer, no spread shaded (the paper's Fig. 2 has none)


def test_occlusion_lowest_margin_is_the_curves_minimum_not_its_end(tmp_path):
    # the mean margin dips below 0 half-way and recovers: the lowest is the dip, and the claim fails
    report = make_report(tmp_path, **{"results/occlusion-conv1.json": {"fractions": [0, .5, 1],
                                                                       "margins": [[2, -1, 1], [2, -1, 1]]}})
    text = report.occlusion()
    assert "| conv1 | 2.00 | 1.00 | -1.00 | 100% |" in text
    assert claim(report, "Fig. 2: the mean margin stays positive") == ("lowest mean margin -1.00", "**no**")


def test_patch_share_is_the_mean_over_images_not_the_median(tmp_path):
    share = {"rectgrad": [.1, .1, .7], "saliency": [.2, .2, .2]}  # RectGrad: mean .3, median .1
    patch = {m: {"inside": [1, 1, 1], "inside_raw": [1, 1, 1], "fraction_raw": s} for m, s in share.items()}
    report = make_report(tmp_path, methods=list(share), **{"results/patch.json": patch})
    maps = torch.zeros(1, 1, 8, 8)
    torch.save({"inputs": maps, "maps": {m: maps for m in share}}, report.work / "results/patch-examples.pt")
    text = report.patch()
    rectgrad = next(r for r in read_csv(report.out / "patch-attribution.csv") if r["method"] == "rectgrad")
    assert float(rectgrad["mean_share_without_final_threshold"]) == pytest.approx(.3)
    assert "| RectGrad | 1 | 1 | 1 | 0.300 |" in text
    assert claim(report, "Fig. 7, scale-free check") == ("RectGrad 0.3; best baseline Saliency 0.2", "**no**")


def test_box_plots_show_each_images_own_values(tmp_path, monkeypatch):
    # Fig. 7: the sums in the patch; Fig. 8 (bottom): the total variations (not TV / total), Random left out
    drawn = boxes(monkeypatch)
    saved_figures(monkeypatch)
    methods = ["random", "rectgrad", "saliency"]
    patch = {m: {"inside": [i + 1, 2 * i], "inside_raw": [9, 9], "fraction_raw": [.5, .5]}
             for i, m in enumerate(methods)}
    noise = {m: {"outside": [1, 2], "outside_fraction": [.1, .2], "total_variation": [i + 3, 7 * i],
                 "total_variation_relative": [.5, .25], "outside_raw": [1, 1], "total_variation_raw": [1, 1]}
             for i, m in enumerate(methods)}
    report = make_report(tmp_path, methods=methods, **{"results/patch.json": patch, "results/noise.json": noise})
    maps = torch.zeros(1, 1, 8, 8)
    torch.save({"inputs": maps, "maps": {m: maps for m in methods}}, report.work / "results/patch-examples.pt")
    report.patch()
    report.noise()
    assert drawn["Attribution in the random patch (Fig. 7)"] == {"RectGrad": [2, 2], "Saliency": [3, 4]}
    assert drawn["Total variation of the maps (Fig. 8, bottom)"] == {"RectGrad": [4, 7], "Saliency": [5, 14]}


def test_table1_leaves_out_a_method_with_a_single_missing_training(tmp_path, monkeypatch):
    saved_figures(monkeypatch)  # (not written: faster)
    files = roar_kar_files({(mode, m): [.9, .6, .3] for mode in ("roar", "kar") for m in ("rectgrad", "saliency")})
    del files["kar/rectgrad-p0.9-r0.json"]
    report = make_report(tmp_path, methods=["rectgrad", "saliency"], **files)
    text = report.roar_kar()
    assert "1 trainings are not done yet" in text
    assert "| RectGrad | 0.6000 | 0.5385 | - | 0.3382 |" in text  # its ROAR done, its KAR left out
    assert [r["mode"] for r in read_csv(report.out / "roar-kar.csv") if r["method"] == "rectgrad"] == ["roar"] * 3


def test_curves_note_when_only_roar_is_done(tmp_path, monkeypatch):
    saved_figures(monkeypatch)  # (not written: faster)
    # two repeats, every ROAR training done and no KAR one yet: the ROAR curves are means over the repeats
    files = roar_kar_files({("roar", m): [.9, .6, .3] for m in ("rectgrad", "saliency")}, repeats=2)
    report = make_report(tmp_path, repeats=2, methods=["rectgrad", "saliency"], **files)
    text = report.roar_kar()
    assert "12 trainings are not done yet" in text  # 2 methods x 3 fractions x 2 repeats of KAR
    assert "Curves: the mean test accuracy over the 2 repeats" in text
    assert "fig9-roar.png" in report.written and "fig9-kar.png" not in report.written


def test_table1_rows_in_the_runs_method_order(tmp_path, monkeypatch):
    saved_figures(monkeypatch)  # (not written: faster)
    methods = ["saliency", "rectgrad", "random", "guided_bp"]  # not alphabetical, not the paper's order
    report = make_report(tmp_path, repeats=2, methods=methods, **roar_kar_results())
    text = report.roar_kar()
    assert [r["method"] for r in read_csv(report.out / "table1.csv")] == methods
    rows = [line.split(" | ")[0] for line in text.splitlines() if line.startswith("| ") and "0." in line]
    assert rows == ["| Saliency", "| RectGrad", "| Random", "| Guided BP"]


def test_table1_a_score_of_zero_is_shown_not_dashed(tmp_path, monkeypatch):
    saved_figures(monkeypatch)  # (not written: faster)
    # KAR at 100% accuracy at every kept fraction: AOC 0, a perfect score, not a missing one
    files = roar_kar_files({("roar", "rectgrad"): [.5, .5, .5], ("kar", "rectgrad"): [1, 1, 1]})
    report = make_report(tmp_path, methods=["rectgrad"], **files)
    text = report.roar_kar()
    assert "| RectGrad | 0.5000 | 0.5385 | 0.0000 | 0.3382 |" in text
    assert float(read_csv(report.out / "table1.csv")[0]["kar_aoc"]) == 0


def test_table1_claims_without_rectgrads_scores_are_not_measured(tmp_path, monkeypatch):
    saved_figures(monkeypatch)  # (not written: faster)
    # RectGrad's trainings not done: no verdict against the baselines, and none against Random
    files = roar_kar_files({(mode, m): [.9, .6, .3] for mode in ("roar", "kar") for m in ("random", "saliency")})
    report = make_report(tmp_path, methods=["random", "rectgrad", "saliency"], **files)
    report.roar_kar()
    for than in ("every baseline", "Random"):
        assert claim(report, f"Table 1: RectGrad has a lower ROAR AUC than {than}") == ("not done yet: RectGrad", "n/a")


def test_claims_on_methods_the_run_lacks_are_listed_not_measured(tmp_path, monkeypatch):
    # a run without Random, or without RectGrad PRR: their claims in the table as "not measured" (as the claims
    # against the baselines are without RectGrad), not left out
    saved_figures(monkeypatch)
    files = roar_kar_files({(mode, m): curve for mode in ("roar", "kar")
                            for m, curve in (("rectgrad", [.9, .5, .2]), ("saliency", [.9, .7, .5]))})
    methods = ["rectgrad", "saliency"]
    patch = {m: {"inside": [1], "inside_raw": [1], "fraction_raw": [.5]} for m in methods}
    report = make_report(tmp_path, methods=methods, **files, **{"results/patch.json": patch})
    maps = torch.zeros(1, 1, 8, 8)
    torch.save({"inputs": maps, "maps": {m: maps for m in methods}}, report.work / "results/patch-examples.pt")
    report.patch()
    report.roar_kar()
    assert claim(report, "Fig. 7: RectGrad PRR assigns the least") == ("not measured", "n/a")
    for measure in ("ROAR AUC", "KAR AOC"):
        assert claim(report, f"Table 1: RectGrad has a lower {measure} than Random") == ("not measured", "n/a")
        assert claim(report, f"Table 1: RectGrad has a lower {measure} than every baseline")[1] in ("yes", "**no**")


def test_compare_counts_every_baseline_and_only_the_baselines(tmp_path):
    report = make_report(tmp_path)
    # the paper's six baselines (its Table 1 less Random and RectGrad); Random and RectGrad PRR lower still, but none
    for baseline in ("saliency", "guided_bp", "smoothgrad", "grad_input", "intgrad", "deeplift"):
        report._compare(baseline, {"rectgrad": .5, baseline: .3, "random": .1, "rectgrad_prr": .05})
        assert claim(report, baseline) == (
            f"RectGrad 0.5, RectGrad PRR 0.05; best baseline {module.label(baseline)} 0.3", "**no**")
    report._compare("random only", {"rectgrad": .5, "random": .4})  # no baseline measured: no verdict
    assert claim(report, "random only") == ("not measured", "n/a")


def test_within_the_spread_counts_the_best_baselines_spread_too(tmp_path):
    report = make_report(tmp_path)
    report._compare("c", {"rectgrad": .5, "saliency": .6, "guided_bp": .9}, {"rectgrad": 0, "saliency": .2,
                                                                              "guided_bp": 0})
    assert claim(report, "c") == ("RectGrad 0.5; best baseline Saliency 0.6 (difference within the spread over "
                                  "repeats)", "yes")  # .1 apart, Saliency's own scores spread .2
    report._compare("d", {"rectgrad": .5, "saliency": .6, "guided_bp": .9}, {"rectgrad": 0, "saliency": 0,
                                                                              "guided_bp": .5})
    assert claim(report, "d")[0] == "RectGrad 0.5; best baseline Saliency 0.6"  # another baseline's spread: no


def test_table1_at_chance_states_the_best_accuracy_and_the_chance_level(tmp_path, monkeypatch):
    saved_figures(monkeypatch)  # (not written: faster)
    curves = {"random": [.5, .52, .51], "rectgrad": [.5, .51, .505]}  # best accuracies .52 and .51: .52 stated
    files = roar_kar_files({(mode, m): c for mode in ("roar", "kar") for m, c in curves.items()})
    report = make_report(tmp_path, methods=["random", "rectgrad"], **files)
    report._metadata = {"clean": {"classes": list("ab"), "majority_accuracy": 0.5}, "patch": None}
    text = report.roar_kar()  # every accuracy within 2.5 points of 50% chance
    assert "**ROAR: every retrained model is at chance level (accuracy <= 0.5200)**, chance 0.5000:" in text


def test_header_of_a_folder_dataset_and_the_runs_methods_in_order(tmp_path):
    config = {**CONFIG, "dataset": "folder", "methods": ["saliency", "rectgrad"],
              "data": {"train": 100, "test": 20, "image_size": 64, "masked": 5}}
    text = _Report(tmp_path, tmp_path, config).header()
    assert "| dataset (train / test images) | folder (100 / 20; 64x64, 5 masked test images) |" in text
    assert "| methods | saliency, rectgrad |" in text  # as run, not sorted


def test_write_report_without_results_writes_nothing(tmp_path):
    with pytest.raises(FileNotFoundError, match="no results"):
        module.write_report(tmp_path / "work", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_patch_table_keeps_random(tmp_path, monkeypatch):
    # Figs. 7-8 leave Random out of the plots, but the CSV and the README table keep every method of the run
    saved_figures(monkeypatch)
    methods = ["saliency", "random", "rectgrad"]
    patch = {m: {"inside": [i], "inside_raw": [i], "fraction_raw": [.5]} for i, m in enumerate(methods)}
    report = make_report(tmp_path, methods=methods, **{"results/patch.json": patch})
    maps = torch.zeros(1, 1, 8, 8)
    torch.save({"inputs": maps, "maps": {m: maps for m in methods}}, report.work / "results/patch-examples.pt")
    text = report.patch()
    assert [r["method"] for r in read_csv(report.out / "patch-attribution.csv")] == methods
    assert "| Random | 1 | 1 | 1 | 0.500 |" in text


def test_occlusion_margin_is_the_mean_over_images_not_the_median(tmp_path):
    # three images, one far above the others: mean margins (2, 1), medians (1, 0)
    report = make_report(tmp_path, **{"results/occlusion-conv1.json": {"fractions": [0, 1],
                                                                       "margins": [[1, 0], [1, 0], [4, 3]]}})
    text = report.occlusion()
    assert [float(r["mean_margin"]) for r in read_csv(report.out / "feature-map-occlusion.csv")] == [2, 1]
    assert "| conv1 | 2.00 | 1.00 | 1.00 | 33% |" in text  # one image in three still correct (margin > 0)
    assert claim(report, "Fig. 2: the mean margin stays positive") == ("lowest mean margin 1.00", "yes")


def test_within_the_spread_is_the_larger_spread_not_their_sum(tmp_path):
    report = make_report(tmp_path)
    report._compare("c", {"rectgrad": .5, "saliency": .65}, {"rectgrad": .1, "saliency": .1})
    assert claim(report, "c") == ("RectGrad 0.5; best baseline Saliency 0.65", "yes")  # .15 apart: more than .1


# Table 1 of the paper (CIFAR-10), typed from the paper: ROAR AUC, KAR AOC
PAPER = {"random": (.5562, .4438), "rectgrad": (.5385, .3382), "saliency": (.5568, .4455), "guided_bp": (.5504, .4270),
         "smoothgrad": (.5536, .4444), "grad_input": (.5408, .4176), "intgrad": (.5428, .4185),
         "deeplift": (.5519, .3928)}


def test_table1_paper_columns_are_the_papers_for_every_method(tmp_path, monkeypatch):
    # no training done yet: our columns dashed, the paper's filled in (none for RectGrad PRR, not in the paper)
    methods = [*PAPER, "rectgrad_prr"]
    report = make_report(tmp_path, methods=methods)
    text = report.roar_kar()
    table = {r["method"]: r for r in read_csv(report.out / "table1.csv")}
    for m, (auc, aoc) in PAPER.items():
        assert (float(table[m]["paper_roar_auc"]), float(table[m]["paper_kar_aoc"])) == (auc, aoc), m
        assert f"| {module.label(m)} | - | {auc:.4f} | - | {aoc:.4f} |" in text, m
    assert (table["rectgrad_prr"]["paper_roar_auc"], table["rectgrad_prr"]["roar_auc"]) == ("", "")
    assert f"| {module.label('rectgrad_prr')} | - | - | - | - |" in text
    assert "54 trainings are not done yet" in text  # (ROAR, KAR) x 9 methods x 3 fractions, one repeat


def test_readme_sections_and_claims_in_the_papers_order(tmp_path):
    work = tmp_path / "work"
    (work / "results").mkdir(parents=True)
    (work / "config.json").write_text(json.dumps(CONFIG))
    (work / "results/occlusion-conv1.json").write_text(json.dumps({"fractions": [0, 1], "margins": [[1, 1]]}))
    text = module.write_report(work, tmp_path / "out").read_text()
    headings = [line for line in text.splitlines() if line.startswith("#")]
    assert [h.split(":")[0] for h in headings] == [
        "# RectGrad quantitative experiments", "## Models", "## The paper's claims, as measured here", "## Fig. 2",
        "## Figs. 3 and 7", "## Fig. 8", "## Fig. 9 and Table 1", "## Compute time"]
    # the claims in the order of the figures they are about: Fig. 2, then Table 1's ROAR, then its KAR (each against
    # every baseline and Random, waiting for their trainings)
    section = text[text.index("## The paper's claims"):text.index("## Fig. 2")]
    claims = [line.split(":")[0] for line in section.splitlines() if line.startswith(("| Fig.", "| Table 1"))]
    assert claims == ["| Fig. 2", "| Table 1", "| Table 1", "| Table 1", "| Table 1"]
    assert text.index("lower ROAR AUC than every baseline") < text.index("lower KAR AOC than every baseline")


@pytest.mark.parametrize("classes", [10, "abc", {"a": 0}])
def test_a_models_metadata_classes_that_are_no_list_name_the_file_and_the_key(tmp_path, classes):
    # a hand-made work folder's model with "classes": 10 failed in len()'s words (TypeError), and "abc" was read as
    # three classes; a key the models table needs, missing, was a bare KeyError
    import re

    from rectgrad.checkpoint import save_checkpoint
    from rectgrad.models import PaperCNN

    report = make_report(tmp_path, **{"results/masked.json": {"names": ["x"], "labels": [0], "source": "s"}})
    report.p["per_class"] = 1
    (report.work / "models").mkdir(parents=True)
    path = report.work / "models/clean.pt"
    save_checkpoint(PaperCNN(1, 8, 2), path, train_images=10, epochs=1, test_accuracy=0.75, classes=classes)
    message = f"^{re.escape(str(path))} is corrupt \\('classes' holds no list of class names\\): delete it"
    for section in (report.models, report._masked_used):
        with pytest.raises(ValueError, match=message):
            section()
    save_checkpoint(PaperCNN(1, 8, 2), path, epochs=1, test_accuracy=0.75, classes=["a", "b"])
    report = make_report(tmp_path)
    with pytest.raises(ValueError, match=f"^{re.escape(str(path))} is corrupt \\(no 'train_images'\\): delete it"):
        report.models()


def test_table1_claim_against_random_says_when_the_difference_is_within_the_spread(tmp_path, monkeypatch):
    # RectGrad's ROAR AUCs .45 and .55 (.5 +- .0707), Random's .55 in both repeats: .05 apart, within the spread, said
    # as against the baselines (the verdict "yes" alone read as a clear win)
    saved_figures(monkeypatch)
    files = {}
    for r, rectgrad in enumerate(([.8, .4, .2], [.8, .6, .2])):
        for (mode, method), curve in {("roar", "rectgrad"): rectgrad, ("roar", "random"): [.8, .5, .4],
                                      ("kar", "rectgrad"): [.3, .5, .7], ("kar", "random"): [.1, .2, .3]}.items():
            files.update({f"{mode}/{method}-p{f!r}-r{r}.json": {"accuracy": a} for f, a in zip(FRACTIONS, curve)})
    report = make_report(tmp_path, repeats=2, methods=["random", "rectgrad"], **files)
    report.roar_kar()
    assert claim(report, "Table 1: RectGrad has a lower ROAR AUC than Random") == (
        "RectGrad 0.5000 vs Random 0.5500 (difference within the spread over repeats)", "yes")
    assert claim(report, "Table 1: RectGrad has a lower KAR AOC than Random") == ("RectGrad 0.5000 vs Random 0.8000",
                                                                                  "yes")  # no spread: no note
    assert "a Table 1 difference smaller than the larger of the two methods' standard deviations over repeats is " \
        "marked \"within the spread over repeats\"" in report.claims_table()  # how it judges, said under the claims


def test_claims_show_enough_digits_to_tell_apart_the_values_they_judge(tmp_path, monkeypatch):
    # .53851 against .53849 printed "0.5385" twice beside "**no**" (and .60004 against .60001 "0.6000" twice): the
    # verdict read as a tie judged a loss; the digits now go on until the two differ, and a true tie stays one
    report = make_report(tmp_path)
    report._compare("c", {"rectgrad": .53851, "saliency": .53849, "guided_bp": .6})
    assert claim(report, "c") == ("RectGrad 0.53851; best baseline Saliency 0.53849", "**no**")
    report._compare("tie", {"rectgrad": .5, "saliency": .5})
    assert claim(report, "tie") == ("RectGrad 0.5; best baseline Saliency 0.5", "**no**")
    saved_figures(monkeypatch)
    curves = {"rectgrad": [.80004, .6, .4], "random": [.80001, .6, .4]}  # ROAR AUCs .60001 and .6000025
    files = roar_kar_files({(mode, m): c for mode in ("roar", "kar") for m, c in curves.items()})
    report = make_report(tmp_path, methods=["random", "rectgrad"], **files)
    report.roar_kar()
    assert claim(report, "Table 1: RectGrad has a lower ROAR AUC than Random") == (
        "RectGrad 0.60001 vs Random 0.60000", "**no**")
    # Fig. 2: a lowest mean margin of .004 is above 0 ("yes"), not "0.00"
    report = make_report(tmp_path, **{"results/occlusion-conv1.json": {"fractions": [0, 1],
                                                                       "margins": [[1, .004], [1, .004]]}})
    report.occlusion()
    assert claim(report, "Fig. 2")[0] == "lowest mean margin 0.004"
    assert "A verdict compares the values measured, shown with the digits it takes to tell them apart (a tie is " \
        "no)" in report.claims_table()



def test_claims_against_every_baseline_name_the_baselines_the_run_lacks(tmp_path):
    # a run of RectGrad and Saliency alone judged "RectGrad puts less ... than every baseline" on Saliency alone and
    # said "yes" as if the paper's six baselines had been beaten; the ones not run are now named under the claims
    report = make_report(tmp_path, methods=["random", "rectgrad", "saliency"])
    report._compare("RectGrad is lower than every baseline", {"rectgrad": .3, "saliency": .5, "random": .9})
    assert claim(report, "RectGrad is lower") == ("RectGrad 0.3; best baseline Saliency 0.5", "yes")
    assert ("\"Every baseline\" is every baseline this run has; not run: Guided BP, SmoothGrad, Grad*Input, IntegGrad, "
            "DeepLIFT (the paper's claims are on all six).") in report.claims_table()
    every = ["rectgrad", "saliency", "guided_bp", "smoothgrad", "grad_input", "intgrad", "deeplift"]
    assert "not run" not in make_report(tmp_path, methods=every).claims_table()  # all six: nothing to add


def test_occlusion_share_still_correct_is_never_rounded_to_all_or_none(tmp_path):
    # 999 of 1000 images still correct printed "100%" (as if zeroing the background changed no prediction), 1 of 1000
    # "0%"; a share short of all or none now shows the digits that say so
    margins = {"conv1": [[1, 1]] * 999 + [[1, -1]], "conv2": [[1, -1]] * 999 + [[1, 1]], "conv3": [[1, 1]] * 4}
    report = make_report(tmp_path, **{f"results/occlusion-{layer}.json": {"fractions": [0, 1], "margins": m}
                                      for layer, m in margins.items()})
    text = report.occlusion()
    # margins at the end: (999 - 1) / 1000 = .998 and -.998
    assert "| conv1 | 1.00 | 1.00 | 1.00 | 99.9% |" in text and "| conv2 | 1.00 | -1.00 | -1.00 | 0.1% |" in text
    assert "| conv3 | 1.00 | 1.00 | 1.00 | 100% |" in text  # all: as it was


def test_prr_least_on_the_patch_names_every_method_tied_for_least_whatever_the_run_order(tmp_path, monkeypatch):
    # RectGrad and RectGrad PRR both put nothing on the patch: the first of them in the run's method order was named
    # alone, and the verdict was "yes" with PRR listed first, "no" with RectGrad first; a tie is now named and no
    saved_figures(monkeypatch)
    per_image = {"rectgrad": [0, 0], "rectgrad_prr": [0, 0], "saliency": [2, 4]}
    patch = {m: {"inside": v, "inside_raw": v, "fraction_raw": [0, 0]} for m, v in per_image.items()}
    for methods in (["rectgrad_prr", "rectgrad", "saliency"], ["rectgrad", "rectgrad_prr", "saliency"]):
        report = make_report(tmp_path, methods=methods, **{"results/patch.json": patch})
        maps = torch.zeros(1, 1, 8, 8)
        torch.save({"inputs": maps, "maps": {m: maps for m in methods}}, report.work / "results/patch-examples.pt")
        report.patch()
        names = ", ".join(module.label(m) for m in methods[:2])
        assert claim(report, "Fig. 7: RectGrad PRR assigns the least") == (f"least: {names} (0)", "**no**")
