"""Figures, CSV tables and a README for the experiments of ``rectgrad reproduce``, built from the saved
results alone (the work folder of :func:`rectgrad.evaluation.reproduce`), in the form of the paper's
Figs. 2, 3, 7, 8, 9 and Table 1, with our numbers beside the paper's and its claims checked."""
from __future__ import annotations

import csv
import functools
import io
import json
import re
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from rectgrad.checkpoint import listed_files, load_checkpoint, refuse_folders, refuse_replacing, write_text_atomically
from rectgrad.data import natural_order
from rectgrad.evaluation.occlusion import conv_activations
from rectgrad.evaluation.roar import RoarKarResult, read_accuracy, result_name
from rectgrad.evaluation.store import (CONFIG, RERUN, UNKNOWN_CONFIG, ResultStore, corrupt, known_methods, read_json,
                                      read_torch)
from rectgrad.methods import get_method
from rectgrad.metrics import TIE_NOISE
from rectgrad.viz import boxplot, grid, line_plot, prepare, save_figure

#: Paper Table 1 (CIFAR-10): ROAR AUC, KAR AOC; lower is better.
PAPER_TABLE1 = {"random": (.5562, .4438), "rectgrad": (.5385, .3382), "saliency": (.5568, .4455),
                "guided_bp": (.5504, .4270), "smoothgrad": (.5536, .4444), "grad_input": (.5408, .4176),
                "intgrad": (.5428, .4185), "deeplift": (.5519, .3928)}
BASELINES = ("saliency", "guided_bp", "smoothgrad", "grad_input", "intgrad", "deeplift")
#: Every file a report may write besides README.md, and the list of those it wrote, kept beside them.
REPORT_FILES = ("models.csv", "fig2-feature-map-occlusion.png", "feature-map-occlusion.csv", "fig3-patch-maps.png",
                "fig7-patch-attribution.png", "patch-attribution.csv", "noise-level.csv",
                "fig8-background-attribution.png", "fig8-total-variation.png", "roar-kar.csv", "fig9-roar.png",
                "fig9-kar.png", "table1.csv", "compute-time.csv")
MANIFEST = ".rectgrad-report.json"
# what to do about a saved model whose metadata is damaged (or made by hand): the results beside it were made with it
_MODEL_REMEDY = ("delete it and rerun to train it again (retrain it on the device and versions that trained it, which "
                 "give it again bit for bit, or start from an empty results folder)")


def _chance(meta: dict | None) -> float | None:
    """The chance accuracy on a model's test split: always predicting its most frequent label (1 / classes for
    models saved without it)."""
    classes = len((meta or {}).get("classes") or [])
    return (meta or {}).get("majority_accuracy") or (1 / classes if classes else None)


def _at_chance(accuracy: float, chance: float | None) -> bool:
    """Whether ``accuracy`` is within 5% of the way from ``chance`` to a perfect score (4.5 points over 10% chance; on
    a test split 96% of one class, 96.2%), the level at which a model has learned next to nothing."""
    return chance is not None and accuracy <= chance + 0.05 * (1 - chance)


def _apart(a: float, b: float, spec: str) -> tuple[str, str]:
    """``a`` and ``b`` in the format ``spec`` (``".4g"``, ``".2f"``), with as many more digits as it takes to show
    two different values differently: a verdict on their order beside two equal numbers reads as a tie judged."""
    digits, kind = int(spec[1:-1]), spec[-1]
    while a != b and f"{a:.{digits}{kind}}" == f"{b:.{digits}{kind}}" and digits < 17:
        digits += 1
    return f"{a:.{digits}{kind}}", f"{b:.{digits}{kind}}"


def _cell(text: str) -> str:
    """``text`` for a Markdown table cell: a ``|`` in it (``|attribution|``, a class folder's name) would end the cell
    and push the rest of the row out of the table."""
    return text.replace("|", "\\|")


class _Saved(dict):
    """A saved result read back; a key it lacks, or a value that is not the numbers it should be (a file edited by
    hand), is an error naming the file, as a damaged file is, with the ``remedy`` for it."""

    def __init__(self, path: Path, value: dict, remedy: str = RERUN):
        super().__init__(value)
        self.path, self.remedy = path, remedy

    def __getitem__(self, key):
        if key not in self:
            raise corrupt(self.path, f"no {key!r}", self.remedy)
        value = super().__getitem__(key)
        return _Saved(self.path, value, self.remedy) if isinstance(value, dict) else value

    def numbers(self, key: str, ndim: int = 1) -> np.ndarray:
        """``self[key]`` as an ``ndim``-dimensional float array."""
        value = self[key]
        try:
            value = np.asarray(value, dtype=float)
        except (TypeError, ValueError):  # (strings, nested lists of unequal lengths)
            value = None
        if value is None or value.ndim != ndim:
            raise corrupt(self.path, f"{key!r} holds no {ndim}-D array of numbers", self.remedy)
        return value


def label(method: str) -> str:
    """A method's name as the figures and tables show it (``ValueError`` naming the known methods otherwise)."""
    return get_method(method).label


TITLE = "# RectGrad quantitative experiments"


def check_report_folder(out_dir) -> None:
    """Refuse a report folder holding files of the report's names (``README.md``, ``models.csv``, ...) that no rectgrad
    report wrote, as in a folder of a project's own: the report would replace them. A folder holding a
    :data:`MANIFEST`, or a ``README.md`` of a report (made before manifests), is a report's. A folder where one of
    those files should be is refused too (the report would fail on it once its work is done)."""
    out = Path(out_dir)
    names = ["README.md", *REPORT_FILES]
    refuse_folders(out, names, "report")
    found = [name for name in names if (out / name).exists()]
    if not found or (out / MANIFEST).is_file():
        return
    if (out / "README.md").is_file():
        with open(out / "README.md", encoding="utf-8", errors="replace") as file:
            if file.readline().startswith(TITLE):
                return
    refuse_replacing(out, found, "report")


def write_report(work_dir, out_dir) -> Path:
    """Write the figures, CSVs and ``README.md`` for the results in ``work_dir`` to ``out_dir``; the files an earlier
    report wrote there (listed in its :data:`MANIFEST`) that this one does not (its Fig. 2, say) are removed, so that
    none is taken for this run's."""
    config = ResultStore.read_config(work_dir)
    if config is None:
        raise FileNotFoundError(f"no results in {work_dir} (no config.json): run `rectgrad reproduce` first")
    work, out = Path(work_dir), Path(out_dir)
    report = _Report(work, out, config)  # (a config of another shape or version refused before any file is written)
    check_report_folder(out)
    out.mkdir(parents=True, exist_ok=True)
    earlier = set(listed_files(out / MANIFEST))
    # every name listed before any file is written: a report stopped or failing part-way (a corrupt result) leaves
    # the files it wrote marked as a report's, for the next one to replace, or remove where it does not write them
    write_text_atomically(out / MANIFEST, json.dumps(sorted(earlier | set(REPORT_FILES))))
    sections = [report.header(), report.models(), report.occlusion(), report.patch(), report.noise(),
                report.roar_kar(), report.compute_time()]
    text = "\n".join([*sections[:2], report.claims_table(), *sections[2:]])
    for name in sorted(set(REPORT_FILES) & earlier - report.written):  # never a user's file
        (out / name).unlink(missing_ok=True)
    write_text_atomically(out / MANIFEST, json.dumps(sorted(report.written)))
    write_text_atomically(out / "README.md", text)  # each file of the report whole, even if interrupted
    return out / "README.md"


class _Report:
    def __init__(self, work: Path, out: Path, config: dict):
        # a key the config lacks (edited by hand, another program's) is an error naming it, not a bare KeyError
        config = _Saved(work / CONFIG, config, UNKNOWN_CONFIG)
        self.work, self.out, self.config = work, out, config
        methods = config["methods"]
        if not isinstance(methods, list) or not all(isinstance(m, str) for m in methods):
            raise corrupt(config.path, "'methods' holds no list of method names", config.remedy)
        self.methods = known_methods(config.path, methods)
        self.p = config["parameters"]
        self.claims: list[tuple[str, str, str]] = []
        self.written: set[str] = set()  # the files of REPORT_FILES written
        # Figs. 7-8 plot the paper's methods: random noise maps would flatten the axes (tables keep them)
        self.plotted = [m for m in self.methods if m != "random"] or self.methods

    def _json(self, name: str):
        path = self.work / name
        return _Saved(path, read_json(path, numbers=())) if path.is_file() else None

    def _csv(self, name: str, header: list[str], rows: list[list]) -> None:
        text = io.StringIO(newline="")
        writer = csv.writer(text)
        writer.writerow(header)
        writer.writerows([[f"{v:.6g}" if isinstance(v, float) else v for v in row] for row in rows])
        write_text_atomically(self.out / name, text.getvalue())
        self.written.add(name)

    def _figure(self, fig, name: str) -> str:
        save_figure(fig, self.out / name)
        self.written.add(name)
        return f"![{name}]({name})"

    def _claim(self, claim: str, measured: str, holds: bool | None) -> None:
        self.claims.append((claim, measured, "n/a" if holds is None else ("yes" if holds else "**no**")))

    def header(self) -> str:
        c, p, d = self.config, self.p, self.config["data"]
        first = lambda n, total: f"all {total}" if n is None or n >= total else f"first {n} of {total}"  # noqa: E731
        skipped = self._masked_skipped is not None
        fig2 = ("skipped (see below)" if skipped else
                f"{self._masked_used()}, {p['occlusion_steps']} fractions, {p['occlusion_orders']} random orders")
        hp = "; ".join(f"{m}: {', '.join(f'{k}={v}' for k, v in kw.items())}" for m, kw in p["hyperparameters"].items())
        return "\n".join([
            f"{TITLE}: {c['dataset']}, `{c['scale']}` scale"
            + "".join(f"{', with' if i == 0 else ','} {k}={json.dumps(v)}" for i, (k, v) in
                      enumerate(c.get("overrides", {}).items())),
            "",
            "Generated by `rectgrad reproduce` from the saved results alone; the protocol and every choice are "
            "documented in rectgrad's `docs/evaluation.md`. The paper's numbers are for CIFAR-10.",
            "",
            "| parameter | value |", "|---|---|",
            f"| dataset (train / test images) | {c['dataset']} ({c['data']['train']} / {c['data']['test']}"
            + (f"; {c['data']['image_size']}x{c['data']['image_size']}, {c['data']['masked']} masked test images"
               if c["dataset"] == "folder" else "") + ") |",
            f"| clean and patch models | {first(p['model_images'], d['train'])} training images, "
            f"{p['model_epochs']} epoch(s) |",
            f"| Fig. 2 | {_cell(fig2)} |",
            f"| Fig. 7 | {first(p['patch_images'], d['test'])} test images, patched |",
            f"| Fig. 8 | {'skipped (see below)' if skipped else 'the Fig. 2 images'} |",
            f"| ROAR / KAR | {first(p['roar_train_images'], d['train'])} train / "
            f"{first(p['roar_test_images'], d['test'])} test images, {p['roar_epochs']} epoch(s), "
            f"{p['repeats']} repeat(s), fractions {p['fractions']}, tie-breaking noise of standard deviation "
            f"{c.get('tie_noise', TIE_NOISE):g} |",  # (folders made before it was recorded used the default)
            f"| attribution overrides | {hp or 'none (paper defaults)'} |",
            f"| methods | {', '.join(self.methods)} |", ""])

    @functools.cached_property
    def _metadata(self) -> dict[str, dict | None]:
        """The clean and patch models' checkpoint metadata (None for a model not trained yet); a key the report reads
        missing, or ``classes`` (lacking in models saved before 2026-11-27) that is no list, makes its file corrupt."""
        metadata = {}
        for name in ("clean", "patch"):
            path = self.work / "models" / f"{name}.pt"
            meta = _Saved(path, load_checkpoint(path)[1], _MODEL_REMEDY) if path.is_file() else None
            if meta is not None and not isinstance(meta.get("classes") or [], (list, tuple)):  # (len(10) failed)
                raise corrupt(path, "'classes' holds no list of class names", _MODEL_REMEDY)
            metadata[name] = meta
        return metadata

    @functools.cached_property
    def _chosen(self) -> dict | None:
        """The masked images Figs. 2 and 8 use (``results/masked.json``), None before they are chosen."""
        return self._json("results/masked.json")

    def _masked_used(self) -> str:
        """The masked images Figs. 2 and 8 use: how many, and of which classes when not the scale's full share."""
        chosen, per_class = self._chosen, self.p["per_class"]
        if chosen is None:
            return f"up to {per_class} correctly classified masked images per class"
        classes = (self._metadata["clean"] or {}).get("classes")  # results made before 2026-11-27 lack them
        count = f"{len(chosen['names'])} correctly classified masked images"
        if not classes:
            return f"{count} (up to {per_class} per class)"
        counts = np.bincount(np.array(chosen["labels"], dtype=int), minlength=len(classes))
        if (counts == per_class).all():
            return f"{count}, {per_class} per class"
        return f"{count} (up to {per_class} per class: " + ", ".join(f"{c} {n}" for c, n in zip(classes, counts)) + ")"

    @functools.cached_property
    def _masked_skipped(self) -> str | None:
        """Why Figs. 2 and 8 have no images, or None when they have (or may still get) some."""
        if self.config["data"].get("masked") == 0:
            return ("Skipped: none of the test images has an object mask (`<name>_mask.<ext>` beside `<name>.<ext>`, "
                    "white on the object).")
        chosen = self._chosen
        if chosen is not None and not chosen["names"]:
            return (f"Skipped: the clean model classifies none of the masked images ({chosen['source']}) correctly; "
                    "a model trained on more images or for more epochs (a larger `--scale`, or `--set model_epochs=N`) "
                    "will.")
        return None

    def models(self) -> str:
        rows, chance = [], []
        for name, meta in self._metadata.items():
            if meta is not None:
                rows.append([name, meta["train_images"], meta["epochs"], meta["test_accuracy"]])
                level = _chance(meta)
                if _at_chance(meta["test_accuracy"], level):
                    chance.append(f"{name} {meta['test_accuracy']:.1%}, chance {level:.1%}")
        self._csv("models.csv", ["model", "train_images", "epochs", "test_accuracy"], rows)
        lines = ["## Models", "", "| model | training images | epochs | test accuracy |", "|---|---|---|---|"]
        lines += [f"| {r[0]} | {r[1]} | {r[2]} | {r[3]:.4f} |" for r in rows]
        lines += ["", "Paper (CIFAR-10, 20 epochs): 74.6% clean, 73.1% patch-occluded.", ""]
        if chance:
            lines += [f"**At chance level** ({'; '.join(chance)}): the experiments below "
                      "explain models that have learned next to nothing, so their verdicts say nothing about the "
                      "methods. Use more images and epochs (a larger `--scale`, or `--set model_epochs=N`).", ""]
        return "\n".join(lines)

    def occlusion(self) -> str:
        curves, strays = self._occlusion_results()
        stray_note = ([f"Left out: {', '.join(f'`results/{name}`' for name in strays)}, no result of this run (it "
                       "writes `occlusion-<layer>.json` for each layer it occludes: "
                       f"{', '.join(self._fig2_layers or ['conv1', 'conv2', '...'])}).", ""] if strays else [])
        if not curves:
            return "\n".join(["## Fig. 2: feature-map occlusion", "", self._not_run(), "", *stray_note])
        rows, plot, summary = [], {}, []
        for layer, data in curves.items():
            margins = data.numbers("margins", ndim=2)
            mean, std = margins.mean(0), margins.std(0)
            plot[layer] = (mean, None)
            rows += [[layer, f, m, s, float((margins[:, i] > 0).mean())]
                     for i, (f, m, s) in enumerate(zip(data["fractions"], mean, std))]
            correct = float((margins[:, -1] > 0).mean())  # (short of all or none: never shown as 100% or 0%)
            summary.append(f"| {layer} | {mean[0]:.2f} | {mean[-1]:.2f} | {mean.min():.2f} | "
                           f"{_apart(correct, float(correct >= .5), '.0%')[0]} |")
        fractions = next(iter(curves.values()))["fractions"]
        figure = self._figure(line_plot(fractions, plot, "fraction of background activations zeroed",
                                        "mean (true logit - best other)", "Feature-map occlusion (Fig. 2)"),
                              "fig2-feature-map-occlusion.png")
        self._csv("feature-map-occlusion.csv", ["layer", "fraction", "mean_margin", "std_margin",
                                                "share_positive"], rows)
        # The layers where some background unit was zeroed (none where no mask has one at the layer's size; results
        # saved before the units were counted are taken to have zeroed some)
        zeroed = {layer: d for layer, d in curves.items() if any(d.get("background_units", [True]))}
        untouched = [layer for layer in curves if layer not in zeroed]
        pending = [layer for layer in self._fig2_layers or [] if layer not in curves]  # (a run stopped during Fig. 2)
        claim = ("Fig. 2: the mean margin stays positive while all background activations are zeroed (background "
                 "activations are irrelevant)")
        if pending:
            self._claim(claim, f"not done yet at {', '.join(pending)}", None)
        elif zeroed:
            lowest = min(d.numbers("margins", ndim=2).mean(0).min() for d in zeroed.values())
            self._claim(claim, f"lowest mean margin {_apart(lowest, 0.0, '.2f')[0]}", bool(lowest > 0))
        else:
            self._claim(claim, "no background activation was zeroed: the masks mark no background", None)
        note = ([f"Nothing was zeroed at {', '.join(untouched)} (no mask marks a background unit at the layer's size): "
                 "flat curves, left out of the claim.", ""] if untouched else [])
        if pending:
            note += [f"Not done yet at {', '.join(pending)}: the claim waits for every layer.", ""]
        note += stray_note
        return "\n".join(["## Fig. 2: feature-map occlusion", "", figure, "", *note,
                          "| layer | margin, nothing zeroed | margin, all background zeroed | lowest | images still "
                          "correct, all zeroed |", "|---|---|---|---|---|", *summary, ""])

    def _occlusion_results(self) -> tuple[dict[str, _Saved], list[str]]:
        """Fig. 2's results per layer, in the layers' order, read from the files the run writes,
        ``results/occlusion-<layer>.json`` for its layers (those of the clean model, :func:`conv_activations`' names
        ``convK`` where it is not saved); and the names of the other ``occlusion-*.json`` files there (a copy, a
        backup: their name is no layer's, and must not pass for one, or replace one's curve)."""
        known = self._fig2_layers
        curves, strays = {}, []
        for path in sorted((self.work / "results").glob("occlusion-*.json"), key=natural_order):
            layer = path.name[len("occlusion-"):-len(".json")]
            if (layer in known) if known is not None else re.fullmatch(r"conv[1-9][0-9]*", layer):
                curves[layer] = self._json(f"results/{path.name}")
            else:
                strays.append(path.name)
        if known is not None:
            curves = {layer: curves[layer] for layer in known if layer in curves}
        return curves, strays

    @functools.cached_property
    def _fig2_layers(self) -> list[str] | None:
        """The layers Fig. 2 occludes: each convolution's activation in the clean model (None before it is trained)."""
        path = self.work / "models" / "clean.pt"
        return list(conv_activations(load_checkpoint(path)[0])) if path.is_file() else None

    def _not_run(self) -> str:
        """Why an experiment on the masked images has no results."""
        return self._masked_skipped or "Not run yet."

    def patch(self) -> str:
        data, examples_file = self._json("results/patch.json"), self.work / "results/patch-examples.pt"
        if data is None or not examples_file.is_file():  # (reproduce computes both again when either is missing)
            return "## Figs. 3 and 7: training-set random patch\n\nNot run yet.\n"
        values = {m: data[m].numbers("inside") for m in self.methods}
        examples = read_torch(examples_file)
        known_methods(examples_file, examples["maps"])
        maps = {label(m): prepare(v) for m, v in examples["maps"].items()}
        fig3 = grid(examples["inputs"], maps, title="Maps of the patch model (8x8 scored corner in red; Fig. 3)")
        for ax in fig3.axes:
            ax.add_patch(Rectangle((-0.5, -0.5), 8, 8, fill=False, edgecolor="red", linewidth=1))
        rows = [[m, float(v.mean()), float(np.median(v)), float(v.std()), float(data[m].numbers("inside_raw").mean()),
                 float(data[m].numbers("fraction_raw").mean()), len(v)] for m, v in values.items()]
        self._csv("patch-attribution.csv", ["method", "mean", "median", "std", "mean_without_final_threshold",
                                            "mean_share_without_final_threshold", "images"], rows)
        means = {m: float(v.mean()) for m, v in values.items()}
        self._compare("Fig. 7: RectGrad puts less attribution on the random patch than every baseline (mean)", means)
        self._compare("Fig. 7, scale-free check: RectGrad puts a smaller share of its map on the patch than every "
                      "baseline (mean share, no final threshold)",
                      {m: float(data[m].numbers("fraction_raw").mean()) for m in self.methods})
        ranked = {m: v for m, v in means.items() if m != "random"}
        prr = "Fig. 7: RectGrad PRR assigns the least attribution to the patch (mean)"
        if "rectgrad_prr" in ranked:
            least = min(ranked.values())
            best = [m for m in ranked if ranked[m] == least]  # every method tied for least (a tie is no)
            self._claim(prr, f"least: {', '.join(map(label, best))} ({least:.3g})", best == ["rectgrad_prr"])
        else:  # (listed, as the claims on methods the run lacks are: not left out of the table)
            self._claim(prr, "not measured", None)
        return "\n".join([
            "## Figs. 3 and 7: training-set random patch", "",
            self._figure(fig3, "fig3-patch-maps.png"), "",
            self._figure(boxplot({label(m): values[m] for m in self.plotted}, "sum |attribution| in the patch",
                                 "Attribution in the random patch (Fig. 7)"), "fig7-patch-attribution.png"), "",
            "| method | mean | median | mean, no final threshold | share of total, no final threshold |",
            "|---|---|---|---|---|",
            *[f"| {label(r[0])} | {r[1]:.4g} | {r[2]:.4g} | {r[4]:.4g} | {r[5]:.3f} |" for r in rows], ""])

    def noise(self) -> str:
        data = self._json("results/noise.json")
        if data is None:
            return f"## Fig. 8: noise level\n\n{self._not_run()}\n"
        outside = {m: data[m].numbers("outside") for m in self.methods}
        tv = {m: data[m].numbers("total_variation") for m in self.methods}
        share = {m: data[m].numbers("outside_fraction") for m in self.methods}
        tv_relative = {m: data[m].numbers("total_variation_relative") for m in self.methods}
        rows = [[m, float(outside[m].sum()), float(outside[m].mean()), float(outside[m].std()), float(share[m].mean()),
                 float(np.median(tv[m])), float(tv[m].mean()), float(data[m].numbers("outside_raw").sum()),
                 float(np.median(data[m].numbers("total_variation_raw"))), float(np.median(tv_relative[m]))]
                for m in self.methods]
        self._csv("noise-level.csv", ["method", "outside_total", "outside_mean", "outside_std", "outside_share_mean",
                                      "tv_median", "tv_mean", "outside_total_without_final_threshold",
                                      "tv_median_without_final_threshold", "tv_relative_median"], rows)
        background = {"Fig. 8: RectGrad puts less attribution on the background than every baseline (total)":
                      {m: float(v.sum()) for m, v in outside.items()},
                      "Fig. 8, scale-free check: RectGrad puts a smaller share of its attribution on the background "
                      "than every baseline (mean share)": {m: float(v.mean()) for m, v in share.items()}}
        # no attribution outside the masks by any method, even the random one: the masks mark no background
        nothing_outside = not any(outside[m].any() or data[m].numbers("outside_raw").any() for m in self.methods)
        for claim, values in background.items():
            if nothing_outside:
                self._claim(claim, "no attribution outside the masks: they mark no background", None)
            else:
                self._compare(claim, values)
        self._compare("Fig. 8: RectGrad maps have lower total variation than every baseline (median)",
                      {m: float(np.median(v)) for m, v in tv.items()})
        self._compare("Fig. 8, scale-free check: lower total variation per unit of total |attribution| (median)",
                      {m: float(np.median(v)) for m, v in tv_relative.items()})
        bars = self._bars({label(m): (outside[m].mean(), outside[m].std()) for m in self.plotted},
                          "mean sum |attribution| outside the object", "Attribution outside the mask (Fig. 8, top)")
        note = (["No method puts any attribution outside the masks: they mark no background (every pixel is object), "
                 "so the background is not compared.", ""] if nothing_outside else [])
        return "\n".join([
            "## Fig. 8: noise level", "", *note, self._figure(bars, "fig8-background-attribution.png"), "",
            self._figure(boxplot({label(m): tv[m] for m in self.plotted}, "total variation",
                                 "Total variation of the maps (Fig. 8, bottom)"), "fig8-total-variation.png"), "",
            "| method | outside, total | outside, share of map | TV, median | TV / total, median | outside, no final "
            "threshold | TV median, no final threshold |", "|---|---|---|---|---|---|---|",
            *[f"| {label(r[0])} | {r[1]:.4g} | {r[4]:.3f} | {r[5]:.4g} | {r[9]:.3f} | {r[7]:.4g} | {r[8]:.4g} |"
              for r in rows],
            ""])

    def roar_kar(self) -> str:
        fractions, repeats = tuple(self.p["fractions"]), self.p["repeats"]
        results, missing, rows, unfinished = {}, 0, [], {}
        for keep, mode in ((False, "roar"), (True, "kar")):
            result = RoarKarResult(keep, fractions)
            unfinished[mode] = []
            for m in self.methods:
                paths = [[self.work / result_name(keep, m, f, r) for f in fractions] for r in range(repeats)]
                absent = sum(not path.is_file() for row in paths for path in row)
                if absent:
                    missing += absent
                    unfinished[mode].append(m)
                    continue
                result.accuracies[m] = np.array([[read_accuracy(path) for path in row] for row in paths])
                rows += [[mode, m, f, r, result.accuracies[m][r, i]] for r in range(repeats)
                         for i, f in enumerate(fractions)]
            results[mode] = result
        self._csv("roar-kar.csv", ["mode", "method", "fraction", "repeat", "test_accuracy"], rows)
        lines = ["## Fig. 9 and Table 1: ROAR and KAR", ""]
        if missing:
            lines += [f"{missing} trainings are not done yet; methods with missing trainings are left out.", ""]
        for mode, result in results.items():
            if result.accuracies:
                curves = {label(m): (a.mean(0), result.accuracy_std(m)) for m, a in result.accuracies.items()}
                x = "fraction of pixels " + ("kept" if result.keep else "removed")
                lines += [self._figure(line_plot(fractions, curves, x, "test accuracy", f"{mode.upper()} (Fig. 9)"),
                                       f"fig9-{mode}.png"), ""]
        if repeats > 1 and any(r.accuracies for r in results.values()):
            lines += [f"Curves: the mean test accuracy over the {repeats} repeats; shaded: ± its standard deviation "
                      "over the repeats at each fraction.", ""]
        table = []
        for m in self.methods:
            cells = [m, *[v for r in results.values() for v in ((r.score(m), r.score_std(m)) if m in r.accuracies
                                                                  else (None, None))],
                     *PAPER_TABLE1.get(m, (None, None))]
            table.append(cells)
        self._csv("table1.csv", ["method", "roar_auc", "roar_auc_std", "kar_aoc", "kar_aoc_std", "paper_roar_auc",
                                 "paper_kar_aoc"], table)
        fmt = lambda v, s=None: "-" if v is None else (f"{v:.4f}" + (f" ± {s:.4f}" if s else ""))  # noqa: E731
        lines += ["Table 1 (lower is better; ± is the standard deviation over repeats of each repeat's own score):", "",
                  "| method | ROAR AUC (ours) | ROAR AUC (paper) | KAR AOC (ours) | KAR AOC (paper) |",
                  "|---|---|---|---|---|"]
        lines += [f"| {label(t[0])} | {fmt(t[1], t[2])} | {fmt(t[5])} | {fmt(t[3], t[4])} | {fmt(t[6])} |"
                  for t in table]
        chance = self._roar_chance()
        for mode, result in results.items():
            compared = {"every baseline": ["rectgrad", *BASELINES], "Random": ["rectgrad", "random"]}
            waiting = {than: [m for m in unfinished[mode] if m in methods] for than, methods in compared.items()}
            for than in [than for than, methods in waiting.items() if methods]:  # judged once all are done
                self._claim(f"Table 1: RectGrad has a lower {result.measure} than {than}",
                            f"not done yet: {', '.join(label(m) for m in waiting[than])}", None)
            accuracies = [a.max() for a in result.accuracies.values()]
            if accuracies and _at_chance(max(accuracies), chance):
                at_chance = f"every retrained model is at chance level (accuracy <= {max(accuracies):.4f})"
                lines += ["", f"**{mode.upper()}: {at_chance}**, chance {chance:.4f}: the scores say nothing about "
                          "the methods. Use more images and epochs (a larger `--scale`, or `--set roar_epochs=N`)."]
                for than in [than for than in compared if not waiting[than]]:
                    self._claim(f"Table 1: RectGrad has a lower {result.measure} than {than}", at_chance, None)
                continue
            scores = {m: result.score(m) for m in result.accuracies}
            spread = {m: result.score_std(m) for m in result.accuracies}
            if not waiting["every baseline"]:
                self._compare(f"Table 1: RectGrad has a lower {result.measure} than every baseline", scores, spread)
            if "random" in scores and "rectgrad" in scores:
                ours, theirs = _apart(scores["rectgrad"], scores["random"], ".4f")
                self._claim(f"Table 1: RectGrad has a lower {result.measure} than Random",
                            f"RectGrad {ours} vs Random {theirs}" + self._spread_note(scores, spread, "random"),
                            scores["rectgrad"] < scores["random"])
            elif not waiting["Random"]:  # a run without Random or RectGrad: listed, as against the baselines
                self._claim(f"Table 1: RectGrad has a lower {result.measure} than Random", "not measured", None)
        lines += ["", "ROAR AUC and KAR AOC: `metrics.roar_auc` / `metrics.kar_aoc`, the trapezoid area under the "
                  "accuracy curve over the measured fractions divided by their span (KAR AOC = 1 - that); see "
                  "docs/evaluation.md.", ""]
        return "\n".join(lines)

    def _roar_chance(self) -> float | None:
        """The chance accuracy on the test images the retrained models are scored on (the first
        ``roar_test_images``); of the whole test split for results saved before 2026-11-29."""
        path = self.work / "results" / "roar-test.json"
        if path.is_file():
            return read_json(path, numbers=("majority_accuracy",))["majority_accuracy"]
        return _chance(self._metadata["clean"])

    def _compare(self, claim: str, values: dict[str, float], spread: dict[str, float] | None = None) -> None:
        """Record whether RectGrad's value is below every baseline's, with the best baseline for reference."""
        baselines = {m: v for m, v in values.items() if m in BASELINES}
        if "rectgrad" not in values or not baselines:
            self._claim(claim, "not measured", None)
            return
        best = min(baselines, key=baselines.get)
        ours = values["rectgrad"]
        ours_text, best_text = _apart(ours, baselines[best], ".4g")
        measured = f"RectGrad {ours_text}"
        if "rectgrad_prr" in values:
            measured += f", RectGrad PRR {values['rectgrad_prr']:.4g}"
        measured += f"; best baseline {label(best)} {best_text}"
        self._claim(claim, measured + self._spread_note(values, spread, best), ours < baselines[best])

    @staticmethod
    def _spread_note(values: dict[str, float], spread: dict[str, float] | None, other: str) -> str:
        """A note when RectGrad's value and ``other``'s differ by less than the larger of their spreads over repeats
        (the verdict is the values' order all the same)."""
        if spread is not None and abs(values["rectgrad"] - values[other]) < max(spread.get("rectgrad", 0),
                                                                                spread.get(other, 0)):
            return " (difference within the spread over repeats)"
        return ""

    def compute_time(self) -> str:
        """Seconds of work per part, as recorded when each unit was done (``seconds/`` in the work folder)."""
        parts: dict[str, list] = {}
        for unit, seconds in ResultStore.read_seconds(self.work).items():
            kind, _, name = unit.partition("/")  # (a file directly in seconds/, no unit's: a part of its own name)
            part = f"maps: {name.rsplit('-', 1)[0]}" if kind == "maps" and name else kind
            parts.setdefault(part, [0, 0.0])
            parts[part][0] += 1
            parts[part][1] += seconds
        order = ["models", "occlusion", "maps: masked", "maps: patch", "maps: roar-train", "maps: roar-test", "roar",
                 "kar"]
        rows = [[part, *parts[part]] for part in sorted(parts, key=lambda p: (order + [p]).index(p))]
        self._csv("compute-time.csv", ["part", "units", "seconds"], rows)
        if not rows:
            return "## Compute time\n\nNot recorded (results made before rectgrad recorded compute times).\n"
        total = sum(row[2] for row in rows)
        lines = ["## Compute time", "",
                 f"**{total / 60:.1f} minutes** of recorded work: each unit's time as measured when it was done, on "
                 "the device of the run that did it (an interrupted and resumed run adds up its parts). Loading the "
                 "data, the metrics and this report are not counted.", "",
                 "| part | units | seconds |", "|---|---|---|"]
        lines += [f"| {part} | {count} | {seconds:.1f} |" for part, count, seconds in rows]
        return "\n".join(lines + [""])

    def claims_table(self) -> str:
        lines = ["## The paper's claims, as measured here", "", "| claim | measured | holds |", "|---|---|---|"]
        lines += [f"| {_cell(c)} | {_cell(m)} | {h} |" for c, m, h in self.claims]
        absent = [label(m) for m in BASELINES if m not in self.methods]
        if absent:  # (a verdict "yes" against "every baseline" would read as one against the paper's six)
            lines += ["", f"\"Every baseline\" is every baseline this run has; not run: {', '.join(absent)} (the "
                      "paper's claims are on all six)."]
        lines += ["", "A verdict compares the values measured, shown with the digits it takes to tell them apart "
                  "(a tie is no); a Table 1 difference smaller than the larger of the two methods' standard "
                  "deviations over repeats is marked \"within the spread over repeats\": the verdict stands, but "
                  "repeats could reverse it."]
        return "\n".join(lines + [""])

    @staticmethod
    def _bars(values: dict[str, tuple[float, float]], ylabel: str, title: str) -> Figure:
        fig = Figure(figsize=(max(4.0, 1.0 + 0.9 * len(values)), 3.5), layout="constrained")
        FigureCanvasAgg(fig)
        ax = fig.subplots()
        names = list(values)
        ax.bar(range(len(names)), [v[0] for v in values.values()], yerr=[v[1] for v in values.values()], capsize=3)
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        return fig
