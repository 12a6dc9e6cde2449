"""``rectgrad reproduce`` end to end at the smoke scale on a tiny generated Fashion-MNIST, locally and on a
local Ray instance; reruns recompute nothing; bad input is refused."""
import contextlib
import csv
import errno
import gzip
import importlib.util
import io
import json
import os
import pickle
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rectgrad import data
from rectgrad.checkpoint import load_checkpoint
from rectgrad.cli import main
from rectgrad.evaluation import pipeline, roar
from rectgrad.evaluation.store import ResultStore
from rectgrad.methods import METHOD_NAMES
from rectgrad.metrics import TIE_NOISE
from rectgrad.report import MANIFEST, REPORT_FILES, write_report
from rectgrad.train_many import Retrainer

METHODS = ["random", "rectgrad", "rectgrad_prr", "saliency", "guided_bp", "smoothgrad", "grad_input", "intgrad",
           "deeplift"]
FIGURES = ["fig2-feature-map-occlusion.png", "fig3-patch-maps.png", "fig7-patch-attribution.png",
           "fig8-background-attribution.png", "fig8-total-variation.png", "fig9-roar.png", "fig9-kar.png"]


SETTINGS_FRAME = bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])  # an empty HTTP/2 SETTINGS frame, what a gRPC server sends first


@contextlib.contextmanager
def server(answer: bytes | None):
    """A local TCP server's port; each connection gets ``answer`` to what it first sends, then is closed (None: no
    answer at all, the connection held open)."""
    stop = threading.Event()
    with socket.create_server(("127.0.0.1", 0)) as listening:
        listening.settimeout(0.05)

        def serve():
            held = []  # (a silent server keeps its connections open)
            while not stop.is_set():
                try:
                    conn, _ = listening.accept()
                except TimeoutError:
                    continue
                if answer is None:
                    held.append(conn)
                    continue
                with conn:
                    conn.settimeout(5)
                    conn.recv(1024)
                    conn.sendall(answer)
            for conn in held:
                conn.close()
        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        try:
            yield listening.getsockname()[1]
        finally:
            stop.set()
            thread.join()


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_tiny_fashion(folder, n_train=400, n_test=100, seed=0):
    """Fashion-MNIST files of block images, on the black background the derived object masks expect."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        labels = rng.integers(0, 10, n)
        images = block_images(rng, labels)[:, 0]
        (image_file, _), (label_file, _) = data.FASHION_MNIST_FILES[split]
        (folder / image_file).write_bytes(gzip.compress(idx_bytes(images)))
        (folder / label_file).write_bytes(gzip.compress(idx_bytes(labels)))


def block_images(rng, labels, channels=1):
    """Learnable images: a bright 10x5 block whose place encodes the class, on a black background."""
    images = np.zeros((len(labels), channels, 28 + 4 * (channels == 3), 28 + 4 * (channels == 3)), np.uint8)
    for i, c in enumerate(labels):
        r, col = 4 + (c // 5) * 12, 2 + (c % 5) * 5
        images[i, :, r:r + 10, col:col + 5] = rng.integers(120, 256, (channels, 10, 5))
    return images


def write_tiny_cifar(folder, masks, n=60, seed=0):
    """A cifar-10-python.tar.gz of block images (n per batch) and a masked-image folder (2 per class, BGR
    JPEGs with their masks, as the paper's)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(folder / data.CIFAR10_FILE, "w:gz") as tar:
        for member in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            labels = rng.integers(0, 10, n)
            raw = pickle.dumps({b"data": block_images(rng, labels, 3).reshape(n, -1), b"labels": labels.tolist()})
            info = tarfile.TarInfo(f"cifar-10-batches-py/{member}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    masks.mkdir(parents=True, exist_ok=True)
    for c, name in enumerate(data.CIFAR10_CLASSES):
        image = block_images(rng, [c, c], 3)
        for k in range(2):
            Image.fromarray(image[k].transpose(1, 2, 0)[..., ::-1].copy()).save(masks / f"{name}_{k + 1}.jpg")
            Image.fromarray((image[k].max(0) > 0).astype(np.uint8) * 255).save(masks / f"{name}_{k + 1}_mask.jpg")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """One local smoke run shared by the tests: (arguments, report folder, work folder)."""
    root = tmp_path_factory.mktemp("reproduce")
    write_tiny_fashion(root / "data")
    args = ["reproduce", "--dataset", "fashion-mnist", "--scale", "smoke", "--data-dir", str(root / "data"),
            "--device", "cpu", "--no-progress"]
    assert main([*args, "--out", str(root / "report")]) == 0
    assert not denormals_flushed()  # flushed while it ran (faster CPU training), as it was afterwards
    return args, root / "report", root / "report" / "work"


@pytest.fixture
def figures_unrendered(monkeypatch):
    """The test's reports build every figure but write each as an empty file of its name instead of rendering it
    (matplotlib's layout and drawing take most of a report's seconds here): for tests of the results folder and the
    report's text, which look at no figure's pixels. The figures are rendered by the ``smoke`` run itself
    (test_smoke_end_to_end) and by the tests that use no such fixture."""
    import rectgrad.report

    def unrendered(fig, path, **options):
        assert fig.axes, path  # a figure was built
        Path(path).write_bytes(b"")
        return Path(path)

    monkeypatch.setattr(rectgrad.report, "save_figure", unrendered)


def denormals_flushed():
    return (torch.tensor([1e-40]) * 1.0).item() == 0.0


def test_a_process_that_flushes_denormals_still_does_after_a_failed_run(smoke, capsys):
    args, _, work = smoke
    torch.set_flush_denormal(True)
    try:
        assert main([*args, "--methods", "magic", "--out", str(work.parent / "bad"), "--work-dir", str(work)]) == 2
        assert denormals_flushed()
    finally:
        torch.set_flush_denormal(False)
    assert "unknown method 'magic'" in capsys.readouterr().err


def test_smoke_end_to_end(smoke):
    _, report, work = smoke
    for name in FIGURES + ["README.md", "table1.csv", "roar-kar.csv", "patch-attribution.csv", "noise-level.csv",
                           "feature-map-occlusion.csv", "models.csv", "compute-time.csv"]:
        assert (report / name).is_file(), name
    with open(report / "table1.csv") as f:
        table = list(csv.DictReader(f))
    assert [row["method"] for row in table] == METHODS
    assert all(0 <= float(row[k]) <= 1 for row in table for k in ("roar_auc", "kar_aoc"))
    assert table[1]["paper_roar_auc"] == "0.5385" and table[2]["paper_roar_auc"] == ""
    readme = (report / "README.md").read_text()
    for section in ("## The paper's claims", "## Fig. 2", "## Figs. 3 and 7", "## Fig. 8", "## Fig. 9 and Table 1"):
        assert section in readme
    assert "not done yet" not in readme and "Not run yet" not in readme
    # 9 methods x 2 fractions x 1 repeat for each of ROAR and KAR, one file per training
    assert len(list((work / "roar").glob("*.json"))) == len(list((work / "kar").glob("*.json"))) == 18
    # every finished unit of work recorded its compute time, and the report adds them up
    seconds = ResultStore.read_seconds(work)
    ranked = [m for m in METHODS if m != "random"]
    expected = ({"models/clean", "models/patch"} | {f"occlusion/conv{i}" for i in range(1, 5)}
                | {f"maps/{s}-{m}" for s in ("masked", "patch") for m in METHODS}
                | {f"maps/{s}-{m}" for s in ("roar-train", "roar-test") for m in ranked}
                | {f"{mode}/{m}-p{f:g}-r0" for mode in ("roar", "kar") for m in METHODS for f in (0.1, 0.9)})
    assert set(seconds) == expected and all(s >= 0 for s in seconds.values())
    with open(report / "compute-time.csv") as f:
        parts = {row["part"]: row for row in csv.DictReader(f)}
    assert int(parts["kar"]["units"]) == 18 and int(parts["maps: roar-train"]["units"]) == 8
    roar_seconds = sum(s for u, s in seconds.items() if u.startswith("roar/"))
    assert float(parts["roar"]["seconds"]) == pytest.approx(roar_seconds, rel=1e-5)  # the CSV keeps 6 digits
    assert "## Compute time" in readme
    # the report folder itself holds no model or attribution tensor (those stay in the work folder)
    assert not [p for p in report.iterdir() if p.suffix == ".pt"]


def table_rows_that_lose_cells(readme: str) -> list[str]:
    """The rows of the Markdown tables in ``readme`` with more cells than their header (a bare ``|`` in a cell):
    Markdown drops the cells past the header's, here a claim's measurement and verdict."""
    cells = lambda row: len(re.split(r"(?<!\\)\|", row.strip())) - 2  # noqa: E731
    bad, header = [], None
    for line in readme.splitlines():
        if not line.startswith("|"):
            header = None
        elif header is None:
            header = cells(line)
        elif cells(line) != header:
            bad.append(line)
    return bad


def test_report_tables_keep_every_cell_of_a_row(smoke, monkeypatch, tmp_path, figures_unrendered):
    _, report, work = smoke
    assert table_rows_that_lose_cells((report / "README.md").read_text()) == []  # 'total |attribution|' in a claim
    from rectgrad import report as module

    def renamed(path, map_location=None):  # a class folder named with a '|', as a user's may be
        model, meta = load_checkpoint(path, map_location)
        return model, {**meta, "classes": ["a|b", *meta["classes"][1:]]}

    monkeypatch.setattr(module, "load_checkpoint", renamed)
    readme = write_report(work, tmp_path / "report").read_text()
    assert table_rows_that_lose_cells(readme) == [] and "a\\|b 1" in readme


def test_report_numbers_are_the_results_own(smoke):
    """feature-map-occlusion.csv's mean and std per fraction are those of the saved margins, and the Fig. 7 claim
    states RectGrad's mean patch attribution (the CSV's 'mean' column)."""
    _, report, work = smoke
    with open(report / "feature-map-occlusion.csv") as f:
        rows = list(csv.DictReader(f))
    checked = 0
    for layer_file in sorted((work / "results").glob("occlusion-*.json")):
        margins = np.array(json.loads(layer_file.read_text())["margins"])
        layer_rows = [r for r in rows if r["layer"] == layer_file.stem.split("-")[-1]]
        assert len(layer_rows) == margins.shape[1]
        for i, row in enumerate(layer_rows):
            assert float(row["mean_margin"]) == pytest.approx(margins[:, i].mean(), rel=1e-5, abs=1e-9)
            assert float(row["std_margin"]) == pytest.approx(margins[:, i].std(), rel=1e-5, abs=1e-9)
            checked += 1
    assert checked
    with open(report / "patch-attribution.csv") as f:
        rectgrad = next(r for r in csv.DictReader(f) if r["method"] == "rectgrad")
    assert f"RectGrad {float(rectgrad['mean']):.4g}" in (report / "README.md").read_text()


def test_rerun_recomputes_nothing(smoke, monkeypatch, tmp_path, figures_unrendered):
    args, report, work = smoke

    def forbidden(*args, **kwargs):
        raise AssertionError("recomputed a saved result")

    for name in ("train_model", "train_many", "compute_maps", "feature_map_occlusion"):
        monkeypatch.setattr(pipeline, name, forbidden)
    monkeypatch.setattr(Retrainer, "__call__", forbidden)
    stale = work / "models" / "unfinished-clean.pt"  # left by a kill once the model was saved, or by another device
    stale.write_bytes(b"state")
    killed_writes = [work / "roar" / ".a1b2.pt.k3j4m5n6.tmp", work / "results" / ".noise.json.x9y8_7w6.tmp"]  # kill -9
    for path in killed_writes:
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"half")
    assert main([*args, "--out", str(tmp_path / "again"), "--work-dir", str(work)]) == 0
    assert not stale.exists() and not any(path.exists() for path in killed_writes)
    assert (tmp_path / "again" / "README.md").read_text() == (report / "README.md").read_text()
    reordered = ["--methods", ",".join(reversed(METHODS))]  # the same run, named in another order
    assert main([*args, *reordered, "--out", str(tmp_path / "reordered"), "--work-dir", str(work)]) == 0
    assert (tmp_path / "reordered" / "README.md").read_text() == (report / "README.md").read_text()


def test_a_folder_of_the_users_is_refused_untouched(smoke, tmp_path, capsys):
    args, _, _ = smoke
    folder = tmp_path / "mine"
    (folder / "sub").mkdir(parents=True)
    files = [folder / "notes.txt", folder / "sub" / ".draft.20240315.tmp"]  # (a name like write_atomically's)
    for path in files:
        path.write_text("mine")
    assert main([*args, "--out", str(tmp_path / "r"), "--work-dir", str(folder)]) == 2
    assert "is not empty but holds no config.json" in capsys.readouterr().err
    assert all(path.read_text() == "mine" for path in files)


def test_a_folder_of_the_users_is_refused_before_the_data_loads_and_gets_no_lock_file(tmp_path, capsys, monkeypatch):
    # it was refused once the dataset was read (a download, say), and left its .lock among the user's files
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    monkeypatch.setattr(pipeline, "load_dataset", lambda *a, **k: pytest.fail("loaded the data"))
    assert main(["reproduce", "--dataset", "fashion-mnist", "--scale", "smoke", "--device", "cpu", "--no-progress",
                 "--out", str(tmp_path / "r"), "--work-dir", str(folder)]) == 2
    assert f"error: {folder} is not empty but holds no config.json" in capsys.readouterr().err
    assert [p.name for p in folder.iterdir()] == ["notes.txt"] and (folder / "notes.txt").read_text() == "mine"
    assert not (tmp_path / "r").exists()


def test_ctrl_c_before_the_results_folder_is_made_claims_no_saved_work(tmp_path, capsys, monkeypatch):
    # it said "every finished unit of work is saved in OUT/work; run the same command again to resume", a folder
    # that did not exist
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "load_dataset", interrupted)
    assert main(["reproduce", "--dataset", "fashion-mnist", "--scale", "smoke", "--device", "cpu", "--no-progress",
                 "--out", str(tmp_path / "r")]) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "saved" not in err, err
    assert not (tmp_path / "r").exists()


def test_a_folder_another_run_is_using_is_refused(smoke, tmp_path, capsys, monkeypatch, figures_unrendered):
    args, _, work = smoke
    hold = ("import fcntl, sys, time; f = open(sys.argv[1], 'a+'); fcntl.flock(f, fcntl.LOCK_EX); f.truncate(0); "
            "f.write('4242'); f.flush(); print('held', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", hold, str(work / ".lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        with monkeypatch.context() as patched:  # refused at once, before the data loads (a download, say)
            patched.setattr(pipeline, "load_dataset", lambda *a, **k: pytest.fail("loaded the data"))
            assert main([*args, "--out", str(tmp_path / "second"), "--work-dir", str(work)]) == 2
        assert f"error: {work} is in use by another run (process 4242): wait for it to end, or stop it" \
            in capsys.readouterr().err
    finally:
        holder.kill()
        holder.wait()
    assert main([*args, "--out", str(tmp_path / "second"), "--work-dir", str(work)]) == 0  # freed with its process


def test_tie_noise_is_part_of_the_configuration_and_older_folders_resume_with_the_defaults(smoke, tmp_path,
                                                                                          monkeypatch, capsys,
                                                                                          figures_unrendered):
    args, report, work = smoke
    assert json.loads((work / "config.json").read_text())["tie_noise"] == TIE_NOISE
    assert "tie-breaking noise of standard deviation 0.0001" in (report / "README.md").read_text()
    copy = tmp_path / "work"
    shutil.copytree(work, copy)
    config = json.loads((copy / "config.json").read_text())
    del config["tie_noise"], config["overrides"]  # as written before --tie-noise and --set existed
    (copy / "config.json").write_text(json.dumps(config))
    monkeypatch.setattr(Retrainer, "__call__", lambda *a: pytest.fail("recomputed a saved result"))
    assert main([*args, "--out", str(tmp_path / "again"), "--work-dir", str(copy)]) == 0
    assert main([*args, "--tie-noise", "0", "--out", str(tmp_path / "again"), "--work-dir", str(copy)]) == 2
    assert "another configuration (tie_noise: 0.0001 there, 0.0 here)" in capsys.readouterr().err
    (copy / "config.json").write_text(json.dumps({**config, "tie_noise": 0}))  # a folder made with --tie-noise 0
    arguments = copy / "roar-kar.json"  # (where roar_kar records its own)
    arguments.write_text(json.dumps({**json.loads(arguments.read_text()), "tie_noise": 0}))
    given, sweep = [], pipeline.roar_kar
    monkeypatch.setattr(pipeline, "roar_kar", lambda *a, **kw: given.append(kw["tie_noise"]) or sweep(*a, **kw))
    assert main([*args, "--tie-noise", "0", "--out", str(tmp_path / "zero"), "--work-dir", str(copy)]) == 0
    assert given == [0, 0] and "standard deviation 0 |" in (tmp_path / "zero" / "README.md").read_text()
    assert main([*args, "--tie-noise", "-1", "--out", str(tmp_path / "negative")]) == 2
    assert "error: --tie-noise must be a finite standard deviation >= 0, got -1.0" in capsys.readouterr().err


def test_each_result_is_its_measure_of_the_scales_images_and_the_saved_maps(smoke):
    """The saved results recomputed from the saved models and maps: each part uses the scale's images, the maps explain
    the model's predicted classes, each measure is thresholded where its name says, Fig. 2's layers have their own
    random orders."""
    from rectgrad.evaluation.maps import compute_maps, noise_level, patch_attribution
    from rectgrad.evaluation.occlusion import conv_activations, feature_map_occlusion
    from rectgrad.train import predict_logits

    _, _, work = smoke
    spec, test = pipeline.SCALES["smoke"], data.load_dataset("fashion-mnist", "test", data_dir=work.parents[1] / "data")
    clean, metadata = load_checkpoint(work / "models" / "clean.pt")
    assert metadata["train_images"] == spec.model_images == 300  # of the 400 training images

    def maps(name):
        return torch.load(work / "maps" / f"{name}.pt")

    assert len(maps("roar-train-saliency")) == spec.roar_train_images == 100
    roar_test = test.subset(slice(0, spec.roar_test_images)).inputs()
    predicted = predict_logits(clean, roar_test).argmax(1)
    assert (predicted != test.labels[:50]).any()  # (so that the labels would give other maps)
    assert torch.equal(maps("roar-test-saliency"), compute_maps(clean, roar_test, "saliency", predicted))

    patch = pipeline.RandomPatch()
    patched = patch.apply(test.subset(slice(0, spec.patch_images)))
    region = patch.visible_region(28, 28)
    results = json.loads((work / "results" / "patch.json").read_text())
    examples = torch.load(work / "results" / "patch-examples.pt")
    assert torch.equal(examples["inputs"], patched.inputs(slice(0, 4)))
    for method in METHODS:
        patch_maps = maps(f"patch-{method}")
        inside, inside_raw = (patch_attribution(patch_maps, method, region, threshold=t) for t in (True, False))
        fraction_raw = inside_raw / patch_maps.abs().sum((1, 2, 3)).clamp(min=1e-30)
        assert len(patch_maps) == spec.patch_images
        assert results[method] == {"inside": inside.tolist(), "inside_raw": inside_raw.tolist(),
                                   "fraction_raw": fraction_raw.tolist()}, method
        assert torch.equal(examples["maps"][method], patch_maps[:4])

    chosen = [int(name.removeprefix("test_")) for name in json.loads((work / "results" / "masked.json").read_text())
              ["names"]]
    masks = data.object_masks_from_images(test.images)[chosen]
    noise = json.loads((work / "results" / "noise.json").read_text())
    for method in METHODS:
        masked_maps = maps(f"masked-{method}")
        thresholded, raw = (noise_level(masked_maps, method, masks, threshold=t) for t in (True, False))
        assert noise[method] == {**{k: v.tolist() for k, v in thresholded.items()},
                                 **{f"{k}_raw": v.tolist() for k, v in raw.items()}}, method

    layers = conv_activations(clean)
    for index in (0, 1):  # conv1's orders from the seed, conv2's from seed + 1
        curve = feature_map_occlusion(clean, layers[f"conv{index + 1}"], test.subset(chosen).inputs(), masks,
                                      test.labels[chosen], steps=spec.occlusion_steps, orders=spec.occlusion_orders,
                                      generator=torch.Generator().manual_seed(index))
        assert json.loads((work / "results" / f"occlusion-conv{index + 1}.json").read_text())["margins"] \
            == curve.margins.tolist()


def test_the_seed_reaches_every_seeded_step(smoke, tmp_path, monkeypatch, figures_unrendered):
    """--seed seeds the models' weights and batch order, SmoothGrad's noise, Fig. 2's orders and ROAR/KAR's noise
    (the smoke run's is 0, every function's default: a folder of seed 3 retrains its models, one layer's Fig. 2
    and the maps of the masked images, which the new clean model may classify otherwise)."""
    args, _, work = smoke
    copy = tmp_path / "work"
    shutil.copytree(work, copy, ignore=shutil.ignore_patterns("models", "occlusion-conv2.json", "noise.json",
                                                              "masked-*.pt"))
    for name in ("config.json", "roar-kar.json"):
        (copy / name).write_text(json.dumps({**json.loads((copy / name).read_text()), "seed": 3}))
    seeds = {}

    def recording(name, seed_of):
        original = getattr(pipeline, name)

        def wrapper(*a, **k):
            seeds.setdefault(name, []).append(seed_of(*a, **k))
            return original(*a, **k)
        monkeypatch.setattr(pipeline, name, wrapper)

    recording("new_model", lambda dataset, seed: seed)
    recording("train_model", lambda *a, seed, **k: seed)
    recording("feature_map_occlusion", lambda *a, generator, **k: generator.initial_seed())
    recording("compute_maps", lambda *a, seed, **k: seed)
    recording("roar_kar", lambda *a, seed, **k: seed)
    assert main([*args, "--seed", "3", "--out", str(tmp_path / "report"), "--work-dir", str(copy)]) == 0
    assert seeds == {"new_model": [3, 3], "train_model": [3, 3], "feature_map_occlusion": [3 + 1],
                     "compute_maps": [3] * len(METHODS), "roar_kar": [3, 3]}


def test_each_model_trains_on_its_own_images_and_each_map_explains_its_own_model(smoke):
    """The patch model is retrained bit for bit on the patched training images (the clean one on the clean ones); each
    checkpoint records its epochs, its accuracy on its own test split and that split's majority-class share. Fig. 7's
    maps explain the patch model; Figs. 2 and 8 use the first masked image of each class the clean model classifies
    correctly, explained for the clean model with the scale's hyperparameters (SmoothGrad's 2 samples)."""
    from rectgrad.evaluation.maps import compute_maps
    from rectgrad.evaluation.occlusion import correctly_classified
    from rectgrad.train import evaluate, new_model, predict_logits, train_model

    _, _, work = smoke
    spec, folder = pipeline.SCALES["smoke"], work.parents[1] / "data"
    train, test = (data.load_dataset("fashion-mnist", split, data_dir=folder) for split in ("train", "test"))
    patch, model_train = pipeline.RandomPatch(), train.subset(slice(0, spec.model_images))
    models = {}
    for name, (train_set, test_set) in {"clean": (model_train, test),
                                        "patch": (patch.apply(model_train), patch.apply(test))}.items():
        model, metadata = load_checkpoint(work / "models" / f"{name}.pt")
        again = new_model(train_set, 0)
        flushed = (torch.tensor([1e-40]) * 1.0).item() == 0.0
        torch.set_flush_denormal(True)  # as the run trained it
        try:
            train_model(again, train_set, epochs=spec.model_epochs, seed=0, device="cpu", progress=False)
        finally:
            torch.set_flush_denormal(flushed)
        for key, value in again.state_dict().items():
            assert torch.equal(model.state_dict()[key], value), (name, key)
        counts = np.bincount(test_set.labels.numpy())
        assert metadata["epochs"] == spec.model_epochs and metadata["test_accuracy"] == evaluate(model, test_set)
        assert metadata["majority_accuracy"] == counts.max() / counts.sum() and counts.max() > counts.min()
        models[name] = model.eval()

    patched = patch.apply(test.subset(slice(0, spec.patch_images))).inputs()
    predicted = predict_logits(models["patch"], patched).argmax(1)
    assert torch.equal(torch.load(work / "maps" / "patch-saliency.pt"),
                       compute_maps(models["patch"], patched, "saliency", predicted))

    chosen = [int(name.removeprefix("test_")) for name in json.loads((work / "results" / "masked.json").read_text())
              ["names"]]
    assert chosen == correctly_classified(models["clean"], test, spec.per_class).tolist()
    inputs = test.subset(chosen).inputs()
    assert torch.equal(predict_logits(models["clean"], inputs).argmax(1), test.labels[chosen])
    for method in ("saliency", "smoothgrad"):
        assert torch.equal(torch.load(work / "maps" / f"masked-{method}.pt"),
                           compute_maps(models["clean"], inputs, method, test.labels[chosen], batch_size=250,
                                        internal_batch_size=2500, seed=0, **spec.hyperparameters.get(method, {}))), \
            method


def test_the_models_checkpoints_name_their_dataset_and_classes(smoke):
    _, _, work = smoke
    for name in ("clean", "patch"):
        metadata = load_checkpoint(work / "models" / f"{name}.pt")[1]
        assert metadata["dataset"] == "fashion-mnist" and metadata["classes"] == list(data.FASHION_MNIST_CLASSES)


def test_interrupted_sweep_resumes(smoke, tmp_path, monkeypatch, capsys, figures_unrendered):
    args, _, work = smoke
    copy = tmp_path / "work"
    shutil.copytree(work, copy)
    for path in sorted((copy / "kar").glob("*.json"))[-4:]:  # as if stopped 4 trainings before the end
        path.unlink()
    calls = []
    train = Retrainer.__call__

    def ctrl_c_at_the_second(self, *a):
        calls.append(a[2])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return train(self, *a)

    monkeypatch.setattr(Retrainer, "__call__", ctrl_c_at_the_second)
    assert main([*args, "--out", str(tmp_path / "report"), "--work-dir", str(copy)]) == 130
    err = [line for line in capsys.readouterr().err.splitlines()  # the smoke model's maps are small for the noise
           if not line.startswith("warning: the median nonzero |ranking score| is under 10 x")]
    assert err == [f"resuming: the finished units of work in {copy} are kept, the rest is computed",
                   f"stopped: every finished unit of work is saved in {copy}; run the same command again to resume",
                   "interrupted"]
    assert len(list((copy / "kar").glob("*.json"))) == 15  # the training before the Ctrl-C was saved
    calls.clear()
    monkeypatch.setattr(Retrainer, "__call__", lambda self, *a: calls.append(a[2]) or train(self, *a))
    assert main([*args, "--out", str(tmp_path / "report"), "--work-dir", str(copy)]) == 0
    assert len(calls) == 3 and len(list((copy / "kar").glob("*.json"))) == 18


def test_each_model_is_saved_as_soon_as_it_is_trained(smoke, tmp_path, monkeypatch, figures_unrendered):
    args, _, work = smoke
    copy = tmp_path / "work"
    shutil.copytree(work, copy, ignore=shutil.ignore_patterns("models"))
    trained, train = [], pipeline.train_model

    def ctrl_c_at_the_second(model, *a, **k):
        if trained:
            raise KeyboardInterrupt
        trained.append(model)
        return train(model, *a, **k)

    monkeypatch.setattr(pipeline, "train_model", ctrl_c_at_the_second)
    assert main([*args, "--out", str(tmp_path / "report"), "--work-dir", str(copy)]) == 130
    assert [p.name for p in (copy / "models").iterdir()] == ["clean.pt"]  # not lost with the patch model's training
    monkeypatch.setattr(pipeline, "train_model", lambda *a, **k: trained.append(a[0]) or train(*a, **k))
    assert main([*args, "--out", str(tmp_path / "report"), "--work-dir", str(copy)]) == 0
    assert len(trained) == 2 and set(ResultStore.read_seconds(copy)) == set(ResultStore.read_seconds(work))


def test_ctrl_c_during_a_models_training_saves_its_state_and_the_rerun_resumes_it(smoke, tmp_path, monkeypatch,
                                                                                    capsys, figures_unrendered):
    args, _, work = smoke
    copy = tmp_path / "work"
    shutil.copytree(work, copy, ignore=shutil.ignore_patterns("patch.pt"))
    calls, train = [], pipeline.train_model

    def ctrl_c_at_the_second_batch(model, *a, **k):
        def hook(module, inputs):
            calls.append(1)
            if len(calls) == 2:
                os.kill(os.getpid(), signal.SIGINT)
        model.register_forward_pre_hook(hook)
        return train(model, *a, **k)

    monkeypatch.setattr(pipeline, "train_model", ctrl_c_at_the_second_batch)
    capsys.readouterr()
    assert main([*args, "--out", str(tmp_path / "report"), "--work-dir", str(copy)]) == 130
    state = copy / "models" / "unfinished-patch.pt"
    assert re.search(rf"stopped training at epoch 1/\d+, batch 2/\d+; its state is saved in {re.escape(str(state))}: "
                     "run again to resume", capsys.readouterr().err)
    assert state.is_file() and not (copy / "models" / "patch.pt").exists()
    assert main([*args, "--out", str(tmp_path / "report"), "--work-dir", str(copy)]) == 0
    assert not state.exists()
    resumed, straight = (load_checkpoint(folder / "models" / "patch.pt")[0].state_dict() for folder in (copy, work))
    assert all(torch.equal(value, resumed[key]) for key, value in straight.items())


def test_a_damaged_model_file_says_what_to_do(smoke, tmp_path, capsys):
    args, _, work = smoke
    copy = tmp_path / "work"
    shutil.copytree(work, copy)
    saved = (copy / "models" / "clean.pt").read_bytes()
    (copy / "models" / "clean.pt").write_bytes(saved[:len(saved) // 2])  # a copy cut short
    assert main([*args, "--out", str(tmp_path / "report"), "--work-dir", str(copy)]) == 2
    assert capsys.readouterr().err.rstrip().endswith(  # (a model trained otherwise would not match its results)
        f"; delete {copy / 'models' / 'clean.pt'} and rerun to train it again (the results made with it are kept: "
        "retrain it on the device and versions that trained it, which give it again bit for bit, or start from an "
        "empty results folder)")


def test_a_patch_example_file_deleted_as_corrupt_is_computed_again(smoke, tmp_path, capsys, figures_unrendered):
    args, report, work = smoke
    copy = tmp_path / "work"
    shutil.copytree(work, copy)
    examples = copy / "results" / "patch-examples.pt"
    examples.write_bytes(examples.read_bytes()[:-25])  # cut short in its last bytes: torch.load's OSError
    assert main([*args, "--out", str(tmp_path / "report"), "--work-dir", str(copy)]) == 2
    assert f"{examples} is corrupt" in capsys.readouterr().err  # named, not "[Errno 22] Invalid argument"
    examples.unlink()  # as the message says; its results/patch.json stays
    assert main([*args, "--out", str(tmp_path / "report"), "--work-dir", str(copy)]) == 0
    assert examples.is_file() and (tmp_path / "report" / "README.md").read_text() == (report / "README.md").read_text()
    (tmp_path / "report" / MANIFEST).write_text("")  # a damaged manifest removes nothing and is rewritten
    assert main([*args, "--out", str(tmp_path / "report"), "--work-dir", str(copy)]) == 0
    assert json.loads((tmp_path / "report" / MANIFEST).read_text())


def test_ctrl_c_while_the_report_is_written_says_how_to_resume(smoke, tmp_path, monkeypatch, capsys):
    import rectgrad.report

    args, _, work = smoke

    def ctrl_c(*a):
        raise KeyboardInterrupt

    monkeypatch.setattr(rectgrad.report, "write_report", ctrl_c)
    assert main([*args, "--out", str(tmp_path / "report"), "--work-dir", str(work)]) == 130
    assert "run the same command again to resume\ninterrupted\n" in capsys.readouterr().err


def test_a_unit_stopped_while_saving_keeps_its_compute_time(smoke, tmp_path, monkeypatch, figures_unrendered):
    args, _, work = smoke
    copy = tmp_path / "work"
    shutil.copytree(work, copy)
    for folder in (copy / "kar", copy / "seconds" / "kar"):  # 4 of the KAR trainings to do again, and their times
        for path in [*folder.glob("intgrad-*.json"), *folder.glob("deeplift-*.json")]:
            path.unlink()
    save = ResultStore.save_seconds

    def ctrl_c_at_the_first_kar_time(self, unit, seconds):
        if unit.startswith("kar/"):
            raise KeyboardInterrupt  # as if killed between a training's time and its result
        save(self, unit, seconds)

    monkeypatch.setattr(ResultStore, "save_seconds", ctrl_c_at_the_first_kar_time)
    assert main([*args, "--out", str(tmp_path / "report"), "--work-dir", str(copy)]) == 130
    monkeypatch.setattr(ResultStore, "save_seconds", save)
    assert main([*args, "--out", str(tmp_path / "report"), "--work-dir", str(copy)]) == 0
    assert set(ResultStore.read_seconds(copy)) == set(ResultStore.read_seconds(work))  # no result without its time


def test_a_full_disk_names_the_file_and_the_rerun_resumes(smoke, tmp_path, monkeypatch, capsys, file_size_limit,
                                                          figures_unrendered):
    args, report, work = smoke
    copy = tmp_path / "work"
    shutil.copytree(work, copy, ignore=shutil.ignore_patterns("roar-test-*.pt"))
    maps = copy / "maps" / "roar-test-rectgrad.pt"  # the first file to write
    with file_size_limit((work / "maps" / maps.name).stat().st_size // 2):  # the system refuses to write it whole
        assert main([*args, "--out", str(tmp_path / "report"), "--work-dir", str(copy)]) == 2
    refused = f"[Errno {errno.EFBIG}] {os.strerror(errno.EFBIG)}: '{maps}'"  # not torch's "unexpected pos 704 vs 598"
    assert capsys.readouterr().err.endswith(f"error: {refused}\n")
    assert not maps.exists() and not list(copy.rglob(".*.tmp"))  # no partial file, no temporary one
    monkeypatch.setattr(Retrainer, "__call__", lambda *a: pytest.fail("recomputed a saved result"))
    assert main([*args, "--out", str(tmp_path / "report"), "--work-dir", str(copy)]) == 0
    for saved in (work / "maps").glob("roar-test-*.pt"):  # computed again, as they were
        assert torch.equal(torch.load(copy / "maps" / saved.name), torch.load(saved))
    for table in ("table1.csv", "roar-kar.csv", "patch-attribution.csv", "noise-level.csv"):
        assert (tmp_path / "report" / table).read_text() == (report / table).read_text()


def test_ctrl_c_during_a_group_saves_it_and_the_rerun_resumes(smoke, tmp_path, monkeypatch, capsys, figures_unrendered):
    import rectgrad.train_many as module

    args, _, work = smoke
    copy = tmp_path / "work"
    shutil.copytree(work, copy, ignore=shutil.ignore_patterns("kar"))  # the 18 KAR trainings, 6 at a time
    original, checks = module.train_many, iter(range(10**6))
    # smoke trainings take one step, checked for a stop before it and after it: stop the second group before it
    monkeypatch.setattr(module, "train_many", lambda *a, **k: original(*a, stop=lambda: next(checks) == 2, **k))
    grouped = [*args, "--out", str(tmp_path / "report"), "--work-dir", str(copy), "--group", "6"]
    assert main(grouped) == 130
    assert "state is saved in" in capsys.readouterr().err
    assert len(list((copy / "kar" / "unfinished").glob("*.pt"))) == 1 and len(list((copy / "kar").glob("*.json"))) == 6
    monkeypatch.setattr(module, "train_many", original)
    assert main(grouped) == 0
    assert len(list((copy / "kar").glob("*.json"))) == 18 and not list((copy / "kar" / "unfinished").iterdir())


def test_smoke_with_ray(smoke, tmp_path, figures_unrendered):
    ray = pytest.importorskip("ray")
    args, _, work = smoke
    copy = tmp_path / "work"
    shutil.copytree(work, copy)
    for path in [*(copy / "kar").glob("intgrad-*.json"), *(copy / "kar").glob("deeplift-*.json")]:
        path.unlink()  # these 4 KAR trainings run on Ray: twice as many as its 1 CPU keeps in flight at once
    assert len(list((copy / "kar").glob("*.json"))) == 18 - 4
    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)  # its own, whatever runs
    try:
        address = ray.get_runtime_context().gcs_address
        with pytest.MonkeyPatch.context() as patch:  # its address passes the check that Ray listens there
            patch.setattr(ray, "is_initialized", lambda: False)
            roar._check_reachable(address, timeout=5)
        assert main([*args, "--out", str(tmp_path / "report"), "--work-dir", str(copy), "--backend", "ray"]) == 0
    finally:
        ray.shutdown()
    assert len(list((copy / "roar").glob("*.json"))) == len(list((copy / "kar").glob("*.json"))) == 18
    assert "## Fig. 9 and Table 1" in (tmp_path / "report" / "README.md").read_text()


@pytest.mark.parametrize("extra, message", [
    (["--scale", "paper"], "another configuration (scale: 'smoke' there, 'paper' here; parameters."),  # scale first
    (["--masks", "/nowhere"], "--masks applies to cifar10 only"),
    (["--set", "repeats=2", "--set", "per_class=1"],  # (smoke's own per_class: not an override)
     "another configuration (overrides.repeats: absent there, 2 here; parameters.repeats"),
    (["--set", "repeat=2"], "no scale parameter 'repeat' (did you mean 'repeats'?); the parameters: model_images,"),
    (["--set", "fractions=0.1,0.5"], "--set fractions: '0.1,0.5' is no JSON value; e.g. 10, null (all images)"),
    (["--set", "roar_epochs=2.5"], "roar_epochs must be a positive integer, got 2.5"),
])
def test_bad_input(smoke, capsys, extra, message):
    # against a finished run's folder: another configuration, or a value the library refuses (the CLI's own option
    # checks: test_cli_reproduce_refuses_bad_options_before_any_work)
    args, _, work = smoke  # a repeated option overrides the earlier one
    assert main([*args, *extra, "--out", str(work.parent / "bad"), "--work-dir", str(work)]) == 2
    err = capsys.readouterr().err
    assert message in err and "resuming" not in err  # a folder of another configuration is not resumed


def test_scale_parameters_set_on_the_command_line(tmp_path, capsys, figures_unrendered):
    write_tiny_fashion(tmp_path / "data", n_train=200, n_test=60)
    args = ["reproduce", "--dataset", "fashion-mnist", "--scale", "smoke", "--data-dir", str(tmp_path / "data"),
            "--device", "cpu", "--no-progress", "--methods", "random,rectgrad", "--out", str(tmp_path / "report"),
            "--set", "repeats=2", "--set", "fractions=[0.3,0.7]", "--set", "roar_train_images=null"]
    assert main(args) == 0
    work = tmp_path / "report" / "work"
    assert sorted(p.name for p in (work / "kar").glob("*.json")) == [  # 2 methods x 2 fractions x 2 repeats
        f"{m}-p{f}-r{r}.json" for m in ("random", "rectgrad") for f in (0.3, 0.7) for r in (0, 1)]
    config = json.loads((work / "config.json").read_text())
    assert config["overrides"] == {"repeats": 2, "fractions": [0.3, 0.7], "roar_train_images": None}
    assert config["parameters"]["repeats"] == 2 and config["parameters"]["occlusion_steps"] == 3  # the rest: smoke's
    readme = (tmp_path / "report" / "README.md").read_text()
    assert readme.startswith("# RectGrad quantitative experiments: fashion-mnist, `smoke` scale, with repeats=2, "
                             "fractions=[0.3, 0.7], roar_train_images=null\n")
    assert "| ROAR / KAR | all 200 train / first 50 of 60 test images" in readme
    capsys.readouterr()
    assert main(args[:-2]) == 2  # one override fewer: another configuration
    assert "another configuration (overrides.roar_train_images: None there, absent here; " \
           "parameters.roar_train_images: None there, 100 here)" in capsys.readouterr().err


@pytest.mark.parametrize("overrides, message", [
    ({"model_images": 0},
     "model_images must be a positive integer or None (all images; --set model_images=null), got 0"),
    ({"patch_images": True}, "patch_images must be a positive integer or None (all images; --set patch_images=null), "
     "got True"),
    ({"per_class": True}, "per_class must be a positive integer, got True"),
    ({"occlusion_steps": 1}, "occlusion_steps must be at least 2"),
    ({"fractions": [0.5, 0.3]}, "strictly increasing values in the open interval (0, 1), got [0.5, 0.3]"),
    ({"fractions": [0.5, 1.0]}, "fractions must be strictly increasing values in the open interval (0, 1)"),
    ({"fractions": 0.5}, "fractions must be a sequence of fractions, e.g. (0.1, 0.3, 0.5), got 0.5"),
    ({"fractions": ["0.5", "0.7"]}, "fractions must be real numbers, e.g. (0.1, 0.3, 0.5), got ['0.5', '0.7']"),
    ({"fractions": [0.5]}, "fractions must be at least two (Table 1's ROAR AUC and KAR AOC are areas"),
    ({"hyperparameters": {"smothgrad": {}}}, "hyperparameters: unknown method 'smothgrad' (did you mean 'smoothgrad'"),
    ({"hyperparameters": {"smoothgrad": {"sample": 3}}},
     "hyperparameters of 'smoothgrad' must map some of samples, noise_level to values, got {'sample': 3}"),
    ({"hyperparameters": {"smoothgrad": 10}},
     "hyperparameters of 'smoothgrad' must map some of samples, noise_level to values, got 10"),
    ({"hyperparameters": [1]}, "hyperparameters must map method names to their settings"),
])
def test_scale_parameters_are_checked(overrides, message):
    with pytest.raises((TypeError, ValueError)) as error:
        pipeline.scale_with("quick", overrides)
    assert message in str(error.value)


@pytest.mark.parametrize("hyperparameters, message", [  # checked by the methods themselves, before any training
    ({"smoothgrad": {"samples": 0}}, "hyperparameters of 'smoothgrad': samples must be a positive integer, got 0"),
    ({"intgrad": {"steps": "10"}}, "hyperparameters of 'intgrad': steps must be a positive integer, got '10'"),
    ({"rectgrad": {"q": 200}}, "hyperparameters of 'rectgrad': q must be a percentile in [0, 100], got 200"),
    ({"rectgrad": {"q": 90, "tau": 0}}, "hyperparameters of 'rectgrad': give either q (percentile threshold) or tau"),
    ({"rectgrad": {"prr": "false"}}, "hyperparameters of 'rectgrad': prr must be True or False, got 'false'"),
    ({"saliency": {"abs": "x"}}, "hyperparameters of 'saliency': abs must be True or False, got 'x'"),
])
def test_scale_hyperparameter_values_are_checked_before_any_work(hyperparameters, message, tmp_path, monkeypatch):
    monkeypatch.setattr(pipeline, "load_dataset", lambda *a, **k: pytest.fail("read data"))
    with pytest.raises(ValueError) as error:
        pipeline.reproduce("fashion-mnist", "smoke", tmp_path / "work", overrides={"hyperparameters": hyperparameters})
    assert message in str(error.value) and not (tmp_path / "work").exists()


@pytest.mark.parametrize("methods", [["rectgrad", "saliency", "rectgrad"], []])
def test_methods_that_repeat_a_name_or_are_none_are_refused_before_any_work(methods, tmp_path, monkeypatch):
    monkeypatch.setattr(pipeline, "load_dataset", lambda *a, **k: pytest.fail("read data"))
    with pytest.raises(ValueError, match=r"methods must be distinct names among saliency, .*, random, got "
                       + re.escape(str(methods))):
        pipeline.reproduce("fashion-mnist", "smoke", tmp_path / "work", methods=methods)
    assert not (tmp_path / "work").exists()


@pytest.mark.parametrize("fractions, message", [
    ([0.0005, 0.5], "fraction 0.0005 of 28x28 pixels rounds to 0 pixels"),  # 0.39 of a pixel
    ([0.5, 0.9995], "fraction 0.9995 of 28x28 pixels rounds to 784 pixels"),  # every pixel
])
def test_fractions_rounding_to_no_pixel_or_all_are_refused_before_any_training(fractions, message, tmp_path,
                                                                              monkeypatch):
    # ROAR/KAR refuse them: once the data is read (the images' size), not after the models are trained
    write_tiny_fashion(tmp_path / "data", n_train=20, n_test=10)
    monkeypatch.setattr(pipeline, "new_model", lambda *a, **k: pytest.fail("trained a model"))
    with pytest.raises(ValueError, match=re.escape(message)):
        pipeline.reproduce("fashion-mnist", "smoke", tmp_path / "work", data_dir=tmp_path / "data",
                           overrides={"fractions": fractions}, settings=pipeline.Settings(progress=False))
    assert not (tmp_path / "work").exists()


def test_scale_with_replaces_only_what_it_is_given():
    scale = pipeline.scale_with("quick", {"roar_epochs": np.int64(5), "fractions": [0.2, 0.4],
                                          "roar_test_images": np.int64(7)})
    assert type(scale.roar_epochs) is int and scale.roar_epochs == 5 and scale.fractions == (0.2, 0.4)
    assert type(scale.roar_test_images) is int and scale.roar_test_images == 7  # (config.json holds it)
    assert scale.repeats == pipeline.SCALES["quick"].repeats and pipeline.SCALES["quick"].roar_epochs == 1


def test_the_roar_kar_part_retrains_with_the_scales_and_the_settings_options(tmp_path, monkeypatch):
    """Both modes get the scale's fractions, repeats and ROAR/KAR epochs (not the models' epochs), the folder's tie
    noise and seed, a Retrainer on --retrain-device (else --device) in --precision and cuDNN mode; the datasets are made
    on --device with the local backend, on the CPU for another (Ray ships CPU tensors)."""
    from rectgrad.evaluation.roar import LocalBackend

    spec = pipeline.scale_with("smoke", {"roar_epochs": 3, "repeats": 2, "fractions": [0.2, 0.7]})
    store = ResultStore(tmp_path, {"tie_noise": 0.5})
    train, test = (data.ImageDataset(torch.zeros(n, 1, 4, 4, dtype=torch.uint8), torch.zeros(n, dtype=torch.long),
                                     ["a", "b"], "x") for n in (3, 2))
    calls = []
    monkeypatch.setattr(pipeline, "roar_kar", lambda *a, **k: calls.append((a, k)))
    other = object()  # another backend (RayBackend)
    for settings, retrain_device, device in (
            (pipeline.Settings(device="cuda:3", retrain_device="cuda:5", precision="bf16", deterministic=False,
                               progress=False), "cuda:5", "cuda:3"),
            (pipeline.Settings(device="cuda:3"), "cuda:3", "cuda:3"),
            (pipeline.Settings(device="cuda:3", backend=other), "cuda:3", "cpu")):
        calls.clear()
        pipeline._Run(store, spec, ("random",), 7, settings).roar_kar(None, train, test)
        retrain = Retrainer(epochs=3, device=retrain_device, precision=settings.precision,
                            deterministic=settings.deterministic)
        assert [a for a, _ in calls] == [(train, test, {"random": None}, retrain, (0.2, 0.7), 2, keep)
                                         for keep in (False, True)]
        for _, options in calls:
            backend = options.pop("backend")
            assert backend is other if settings.backend is other else isinstance(backend, LocalBackend)
            assert options == {"store": store, "seed": 7, "tie_noise": 0.5, "device": device,
                               "progress": settings.progress}


def test_the_paper_scale_is_the_papers_protocol():
    """Sec. 3, Sec. 5.3 and Appendix F.2 (REFERENCE-NOTES): every image, 20 epochs, 10 correctly classified images per
    class, Fig. 2 in 100 steps averaged over 50 random orders, ROAR/KAR retrained 3 times for 20 epochs at
    p = 0.1, 0.3, ..., 0.9, with the methods' default hyperparameters."""
    paper = pipeline.SCALES["paper"]
    assert (paper.model_images, paper.patch_images, paper.roar_train_images, paper.roar_test_images) == (None,) * 4
    assert (paper.model_epochs, paper.roar_epochs, paper.repeats) == (20, 20, 3)
    assert (paper.per_class, paper.occlusion_steps, paper.occlusion_orders) == (10, 100, 50)
    assert paper.fractions == (0.1, 0.3, 0.5, 0.7, 0.9) and paper.hyperparameters == {}


@pytest.mark.parametrize("overrides, message", [
    ({"model_images": 2.5}, "model_images must be a positive integer or None (all images; --set model_images=null), "
     "got 2.5"),
    ({"roar_test_images": -3}, "roar_test_images must be a positive integer or None"),
    ({"occlusion_steps": 2.5}, "occlusion_steps must be a positive integer, got 2.5"),
])
def test_scale_image_counts_and_steps_that_are_no_positive_integers_are_refused(overrides, message):
    # (2.5 images would silently become 2, 2.5 steps reach the occlusion)
    with pytest.raises(ValueError) as error:
        pipeline.scale_with("smoke", overrides)
    assert message in str(error.value)


def test_unknown_methods_are_refused_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setattr(pipeline, "load_dataset", lambda *a, **k: pytest.fail("read data"))
    with pytest.raises(ValueError, match=r"methods must be distinct names among .*, got \['rectgrad', 'magic'\]"):
        pipeline.reproduce("fashion-mnist", "smoke", tmp_path / "work", methods=("rectgrad", "magic"))
    assert not (tmp_path / "work").exists()


def test_a_folder_naming_a_method_rectgrad_lacks_is_refused_before_any_work(tmp_path, monkeypatch):
    # results of another rectgrad version: the name was dropped and the folder refused as "another configuration"
    # (methods differing), once the data was read
    monkeypatch.setattr(pipeline, "load_dataset", lambda *a, **k: pytest.fail("read data"))
    work = tmp_path / "work"
    work.mkdir()
    config = json.dumps({"dataset": "fashion-mnist", "scale": "smoke", "methods": ["rectgrad", "magic", "old_lrp"]})
    (work / "config.json").write_text(config)
    message = (rf"^{re.escape(str(work / 'config.json'))} names a method this rectgrad does not know, 'magic', "
               rf"'old_lrp' \(known methods: {', '.join(METHOD_NAMES)}\): results of another rectgrad version; "
               "resume them with that version, or use another folder$")
    with pytest.raises(ValueError, match=message):
        pipeline.reproduce("fashion-mnist", "smoke", work, methods=("rectgrad", "saliency"))
    assert (work / "config.json").read_text() == config and sorted(p.name for p in work.iterdir()) == [".lock",
                                                                                                        "config.json"]


def test_a_folder_whose_methods_are_no_list_of_names_is_refused_as_a_corrupt_config_before_any_work(tmp_path,
                                                                                                    monkeypatch,
                                                                                                    capsys):
    # a config.json edited by hand or damaged ("methods" a string, an object, null): it was refused as "another
    # configuration" once the data was read, as if the folder held results of other methods
    monkeypatch.setattr(pipeline, "load_dataset", lambda *a, **k: pytest.fail("read data"))
    work = tmp_path / "work"
    work.mkdir()
    message = (f"{work / 'config.json'} is corrupt ('methods' holds no list of method names): the results beside it "
               "cannot be checked against any configuration")
    for methods in ("rectgrad", {"rectgrad": 1}, None, ["rectgrad", 5]):
        config = json.dumps({"dataset": "fashion-mnist", "scale": "smoke", "methods": methods})
        (work / "config.json").write_text(config)
        with pytest.raises(ValueError, match=f"^{re.escape(message)}"):
            pipeline.reproduce("fashion-mnist", "smoke", work, methods=("rectgrad", "saliency"))
        assert (work / "config.json").read_text() == config
    assert main(["reproduce", "--dataset", "fashion-mnist", "--scale", "smoke", "--out", str(tmp_path / "report"),
                 "--work-dir", str(work)]) == 2
    err = capsys.readouterr().err
    assert message in err and "another configuration" not in err


def test_the_seed_option_says_what_it_seeds(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "120")
    assert main(["reproduce", "--help"]) == 0
    shown = " ".join(capsys.readouterr().out.split())
    assert ("Seed of the clean and patch models (initial weights, batch order), of SmoothGrad's noise, of Fig. 2's "
            "random orders and of ROAR/KAR's tie-breaking noise and random masks. Not of the ROAR/KAR retrainings: "
            "seeds 0 .. repeats-1 whatever it is") in shown


def test_a_mistyped_name_gets_the_closest(tmp_path, capsys):
    assert main(["reproduce", "--dataset", "fashion-mnist", "--scale", "smok", "--out", str(tmp_path / "r")]) == 2
    assert "error: unknown scale 'smok' (did you mean 'smoke'?); choose one of" in capsys.readouterr().err
    assert main(["reproduce", "--dataset", "cifar-10", "--scale", "smoke", "--out", str(tmp_path / "r")]) == 2
    assert "error: unknown dataset 'cifar-10' (did you mean 'cifar10'?); choose one of" in capsys.readouterr().err


def test_a_file_given_for_a_folder_is_refused(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    for option in ("--data-dir", "--masks"):
        assert main(["reproduce", "--dataset", "cifar10", "--scale", "smoke", "--out", str(tmp_path / "r"), option,
                     str(tmp_path / "file")]) == 2
        err = capsys.readouterr().err
        assert f"error: {option} {tmp_path / 'file'} is a file; give the folder that holds it" in err


def test_missing_masked_images_are_named_before_the_dataset_is_loaded(tmp_path, capsys, monkeypatch):
    from test_data import fake_server, masks_archive

    from rectgrad import data

    monkeypatch.setenv("RECTGRAD_DATA", str(tmp_path / "cache"))  # the default folder: cifar10_masks in the cache
    assert data.default_masks_folder() == tmp_path / "cache" / "cifar10_masks"
    for masks in ([], ["--masks", str(tmp_path / "nowhere")]):  # (no CIFAR-10 archive in --data-dir either)
        assert main(["reproduce", "--dataset", "cifar10", "--scale", "smoke", "--out", str(tmp_path / "r"),
                     "--data-dir", str(tmp_path), *masks]) == 2
        err = capsys.readouterr().err
        folder = tmp_path / ("nowhere" if masks else "cache/cifar10_masks")
        assert f"error: the paper's masked CIFAR-10 images are not in {folder}: they come with the paper's " \
               "reference code (https://github.com/1202kbs/Rectified-Gradient" in err and \
               f"(CLI: --masks DIR), put them in {tmp_path / 'cache' / 'cifar10_masks'}, or download them there " \
               "with download=True (CLI: --download)" in err
    assert not (tmp_path / "r").exists()
    # --download fetches the masked images first, then CIFAR-10 (offline here: named, the masks kept)
    monkeypatch.setattr(data.urllib.request, "urlopen", fake_server({"CIFAR10_mask.tar": masks_archive()}))
    assert main(["reproduce", "--dataset", "cifar10", "--scale", "smoke", "--out", str(tmp_path / "r"),
                 "--data-dir", str(tmp_path / "cifar"), "--download"]) == 2
    assert "could not download https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in capsys.readouterr().err
    assert len(data.load_masked_images(tmp_path / "cache" / "cifar10_masks")) == 10
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("argv, message", [
    (["--dataset", "fashion-mnist", "--data-dir", "{empty}"], "Fashion-MNIST"),
    (["--dataset", "folder"], "the folder dataset needs its folder (--data-dir ROOT"),
])
def test_a_missing_dataset_leaves_no_results_folder(tmp_path, capsys, argv, message):
    # the data is read before the results folder is made: a failed start leaves nothing to clean up
    (tmp_path / "empty").mkdir()
    argv = [arg.format(empty=tmp_path / "empty") for arg in argv]
    assert main(["reproduce", *argv, "--scale", "smoke", "--out", str(tmp_path / "r")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_report_of_a_partial_run(smoke, tmp_path):
    from rectgrad.report import write_report

    _, _, work = smoke
    copy = tmp_path / "work"
    shutil.copytree(work, copy, ignore=shutil.ignore_patterns("noise.json", "rectgrad-p0.9-r0.json"))
    readme = write_report(copy, tmp_path / "report").read_text()
    assert "## Fig. 8: noise level\n\nNot run yet." in readme
    assert "2 trainings are not done yet" in readme  # RectGrad's last ROAR and KAR trainings
    with pytest.raises(FileNotFoundError, match="no results"):
        write_report(tmp_path / "empty", tmp_path / "report")


def test_cifar10_smoke_with_masked_images(tmp_path):
    write_tiny_cifar(tmp_path / "data", tmp_path / "masks")
    assert main(["reproduce", "--dataset", "cifar10", "--scale", "smoke", "--data-dir", str(tmp_path / "data"),
                 "--masks", str(tmp_path / "masks"), "--device", "cpu", "--no-progress", "--methods",
                 "random,rectgrad,saliency", "--out", str(tmp_path / "report")]) == 0
    readme = (tmp_path / "report" / "README.md").read_text()
    assert "cifar10 (300 / 60)" in readme and "Not run yet" not in readme
    assert len(list((tmp_path / "report" / "work" / "kar").glob("*.json"))) == 3 * 2


def test_mended_masks_are_another_configuration_and_odd_sized_ones_are_refused(tmp_path, capsys, figures_unrendered):
    write_tiny_cifar(tmp_path / "data", tmp_path / "masks")
    run = ["reproduce", "--dataset", "cifar10", "--scale", "smoke", "--data-dir", str(tmp_path / "data"), "--masks",
           str(tmp_path / "masks"), "--device", "cpu", "--no-progress", "--methods", "random,saliency", "--out"]
    assert main([*run, str(tmp_path / "report")]) == 0
    Image.new("L", (32, 32), 255).save(tmp_path / "masks" / "cat_1_mask.jpg")  # one mask mended
    assert main([*run, str(tmp_path / "report")]) == 2  # not resumed with Figs. 2 and 8 of the old masks
    assert "another configuration" in capsys.readouterr().err
    for path in (tmp_path / "masks").glob("*.jpg"):
        Image.open(path).resize((48, 48)).save(path)
    assert main([*run, str(tmp_path / "big")]) == 2
    assert "are (3, 48, 48) (channels, height, width), not CIFAR-10's (3, 32, 32)" in capsys.readouterr().err


def test_fig2_is_not_judged_where_no_background_activation_was_zeroed(smoke, tmp_path, figures_unrendered):
    """Masks marking every pixel as object (all white) leave nothing to zero: the curves are flat, and no verdict."""
    _, _, work = smoke
    copy = tmp_path / "work"
    shutil.copytree(work, copy)
    curves = sorted((copy / "results").glob("occlusion-*.json"))
    assert [p.stem for p in curves] == [f"occlusion-conv{i}" for i in range(1, 5)]
    assert all(min(json.loads(p.read_text())["background_units"]) > 0 for p in curves)  # derived masks: background
    claim = "| Fig. 2: the mean margin stays positive while all background activations are zeroed"
    for untouched in (2, 4):
        for path in curves[:untouched]:  # as with masks that leave no background unit at these layers' sizes
            result = json.loads(path.read_text())
            flat = [[row[0]] * len(row) for row in result["margins"]]
            path.write_text(json.dumps({**result, "margins": flat, "background_units": [0] * len(flat)}))
        readme = write_report(copy, tmp_path / f"report{untouched}").read_text()
        layers = ", ".join(f"conv{i}" for i in range(1, untouched + 1))
        assert f"Nothing was zeroed at {layers} (no mask marks a background unit at the layer's size)" in readme
        verdict = next(line for line in readme.splitlines() if line.startswith(claim))
        assert (verdict.endswith("no background activation was zeroed: the masks mark no background | n/a |")
                if untouched == 4 else "lowest mean margin" in verdict)


def test_a_saved_accuracy_that_is_no_fraction_names_its_file(smoke, tmp_path, capsys, figures_unrendered):
    args, _, work = smoke
    copy = tmp_path / "work"
    shutil.copytree(work, copy)
    bad = copy / "roar" / "saliency-p0.9-r0.json"
    bad.write_text('{"accuracy": 29.0, "seed": 0}')  # a percentage, edited by hand or written by another tool
    message = f"{bad} is corrupt (accuracy 29.0, not a fraction in [0, 1]): delete it and rerun to compute it again"
    with pytest.raises(ValueError) as error:
        write_report(copy, tmp_path / "report")
    assert str(error.value) == message
    assert main([*args, "--out", str(tmp_path / "report"), "--work-dir", str(copy)]) == 2
    assert message in capsys.readouterr().err


def test_report_of_results_without_recorded_times(smoke, tmp_path):
    from rectgrad.report import write_report

    _, _, work = smoke
    copy = tmp_path / "work"
    shutil.copytree(work, copy, ignore=shutil.ignore_patterns("seconds"))
    readme = write_report(copy, tmp_path / "report").read_text()
    assert "## Compute time\n\nNot recorded" in readme and "## Fig. 9 and Table 1" in readme


def write_shape_folder(root, masks: bool, n_train=60, n_test=20, seed=0):
    """Your own images: three classes of bright shapes (disc, square, bar) at random places on dark noise, 36x36
    RGB PNGs in ROOT/{train,test}/<class>/, with the shape's mask beside each test image when ``masks``."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[:36, :36]
    for split, n in (("train", n_train), ("test", n_test)):
        for c, name in enumerate(("disc", "square", "bar")):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                image = rng.integers(0, 60, (36, 36, 3), dtype=np.uint8)
                y, x = rng.integers(9, 27, 2)
                shape = [(rows - y) ** 2 + (cols - x) ** 2 < 36, (abs(rows - y) < 5) & (abs(cols - x) < 5),
                         (abs(rows - y) < 2) & (cols > 3) & (cols < 32)][c]
                image[shape] = rng.integers(150, 256, 3, dtype=np.uint8)
                Image.fromarray(image).save(folder / f"{i:03d}.png")
                if masks and split == "test":
                    Image.fromarray(shape.astype(np.uint8) * 255).save(folder / f"{i:03d}_mask.png")


def test_own_images_smoke_end_to_end(tmp_path, capsys, request):
    images = tmp_path / "images"
    write_shape_folder(images, masks=False)
    args = ["reproduce", "--dataset", "folder", "--data-dir", str(images), "--scale", "smoke", "--device", "cpu",
            "--no-progress", "--methods", "random,rectgrad,saliency"]
    assert main([*args, "--out", str(tmp_path / "report")]) == 0
    request.getfixturevalue("figures_unrendered")  # rendered above; the reports below are about their files
    readme = (tmp_path / "report" / "README.md").read_text()
    assert "| folder (180 / 60; 32x32, 0 masked test images) |" in readme
    assert readme.count("Skipped: none of the test images has an object mask") == 2  # Figs. 2 and 8
    for row in ("| clean and patch models | all 180 training images, 1 epoch(s) |",  # the counts used, not the scale's
                "| Fig. 2 | skipped (see below) |", "| Fig. 7 | first 20 of 60 test images, patched |",
                "| Fig. 8 | skipped (see below) |",
                "| ROAR / KAR | first 100 of 180 train / first 50 of 60 test images"):
        assert row in readme, row
    assert (tmp_path / "report" / "fig9-kar.png").is_file() and not (tmp_path / "report" / "fig2-"
                                                                     "feature-map-occlusion.png").is_file()
    assert len(list((tmp_path / "report" / "work" / "kar").glob("*.json"))) == 3 * 2
    manifest = tmp_path / "report" / MANIFEST
    earlier = json.loads(manifest.read_text())
    assert earlier == sorted(p.name for p in (tmp_path / "report").glob("*.*") if p.name not in ("README.md", MANIFEST))
    for name in ("fig2-feature-map-occlusion.png", "noise-level.csv", "notes.txt"):  # an earlier report's; the user's
        (tmp_path / "report" / name).write_text("earlier")
    for edited in ("5", '[["fig9-kar.png"]]'):  # a manifest edited by hand removes nothing
        manifest.write_text(edited)
        write_report(tmp_path / "report" / "work", tmp_path / "report")
        assert (tmp_path / "report" / "fig2-feature-map-occlusion.png").is_file()
    manifest.write_text(json.dumps([*earlier, "fig2-feature-map-occlusion.png"]))
    write_report(tmp_path / "report" / "work", tmp_path / "report")
    assert sorted(p.name for p in (tmp_path / "report").glob("*.*")) == sorted(
        ["README.md", MANIFEST, "notes.txt", "noise-level.csv", *earlier])
    write_shape_folder(images, masks=True)  # the same images, now with masks: another configuration
    assert main([*args, "--out", str(tmp_path / "report")]) == 2
    assert "another configuration" in capsys.readouterr().err
    assert main([*args, "--image-size", "16", "--out", str(tmp_path / "small")]) == 0
    readme = (tmp_path / "small" / "README.md").read_text()
    assert "16x16, 60 masked test images" in readme and "Skipped" not in readme and "Not run yet" not in readme
    assert sorted(p.name for p in (tmp_path / "small").iterdir()) == sorted([*REPORT_FILES, "README.md", MANIFEST,
                                                                             "work"])
    chosen = json.loads((tmp_path / "small" / "work" / "results" / "masked.json").read_text())
    assert re.search(rf"\| Fig. 2 \| {len(chosen['names'])} correctly classified masked images(, 1 per class| \(up to "
                     r"1 per class: bar \d, disc \d, square \d\)), 3 fractions", readme)


@pytest.mark.parametrize("out, work, message", [
    ("test/disc/report", None, "--out {root}/test/disc/report is inside {root}/test, whose images"),
    ("train", None, "--out {root}/train is {root}/train, whose images"),
    ("report", "test/work", "--work-dir {root}/test/work is inside {root}/test,"),
])
def test_a_report_inside_the_images_is_refused(tmp_path, monkeypatch, capsys, out, work, message):
    import rectgrad.evaluation

    def run(*args, **kwargs):
        raise AssertionError("ran")

    monkeypatch.setattr(rectgrad.evaluation, "reproduce", run)  # refused before any work
    root = tmp_path / "images"
    write_shape_folder(root, masks=True, n_train=2, n_test=2)
    args = ["reproduce", "--dataset", "folder", "--data-dir", str(root), "--scale", "smoke", "--out", str(root / out)]
    assert main([*args, *([] if work is None else ["--work-dir", str(root / work)])]) == 2
    assert message.format(root=root) in capsys.readouterr().err  # a rerun would read its figures as test images


def test_renamed_class_folders_are_another_configuration(tmp_path, monkeypatch):
    from rectgrad.evaluation import pipeline

    class Trained(Exception):
        pass

    def models(self, data):
        raise Trained

    monkeypatch.setattr(pipeline._Run, "models", models)  # the configuration alone: no training
    write_shape_folder(tmp_path / "images", masks=False, n_train=4, n_test=2)
    with pytest.raises(Trained):
        pipeline.reproduce("folder", "smoke", tmp_path / "work", data_dir=tmp_path / "images")
    with pytest.raises(Trained):  # the same data resumes
        pipeline.reproduce("folder", "smoke", tmp_path / "work", data_dir=tmp_path / "images")
    for split in ("train", "test"):  # same images, labels and order: only the names change
        (tmp_path / "images" / split / "bar").rename(tmp_path / "images" / split / "bars")
    with pytest.raises(ValueError, match=r"another configuration \(data.classes: \['bar', 'disc', 'square'\] there, "
                                         r"\['bars', 'disc', 'square'\] here\)"):  # the nested key, by its path
        pipeline.reproduce("folder", "smoke", tmp_path / "work", data_dir=tmp_path / "images")


def test_chance_level_leaves_room_above_a_large_majority_class():
    from rectgrad.report import _at_chance

    assert _at_chance(0.145, 0.1) and not _at_chance(0.146, 0.1)
    assert _at_chance(0.96, 0.96) and not _at_chance(0.99, 0.96)  # 96% of the test split is one class
    assert not _at_chance(0.99, None)


def test_masked_images_none_classified_correctly_skip_figs_2_and_8(tmp_path, monkeypatch, figures_unrendered):
    import torch

    from rectgrad.checkpoint import load_checkpoint, save_checkpoint
    from rectgrad.evaluation import pipeline
    from rectgrad.report import write_report

    write_shape_folder(tmp_path / "images", masks=True, n_train=20, n_test=4)
    for name in ("disc", "square"):  # 4 bars, 3 discs, 3 squares: always saying "bar" scores 40%
        for path in (tmp_path / "images" / "test" / name).glob("000*"):
            path.unlink()
    monkeypatch.setattr(pipeline, "correctly_classified", lambda *args: torch.zeros(0, dtype=torch.long))
    args = ["reproduce", "--dataset", "folder", "--data-dir", str(tmp_path / "images"), "--scale", "smoke",
            "--device", "cpu", "--no-progress", "--methods", "random,rectgrad", "--out", str(tmp_path / "report")]
    for _ in range(2):  # the rerun too (it had failed on an empty batch, again and again)
        assert main(args) == 0
        readme = (tmp_path / "report" / "README.md").read_text()
        assert readme.count("Skipped: the clean model classifies none of the masked images (") == 2  # Figs. 2, 8
        assert "| Fig. 2 | skipped (see below) |" in readme
    work = tmp_path / "report" / "work"
    for clean, patch, warned in ((0.9, 0.9, None), (0.42, 0.9, "clean 42.0%, chance 40.0%"),
                                 (0.42, 0.3, "clean 42.0%, chance 40.0%; patch 30.0%, chance 40.0%")):
        for name, accuracy in (("clean", clean), ("patch", patch)):
            model, meta = load_checkpoint(work / "models" / f"{name}.pt")
            save_checkpoint(model, work / "models" / f"{name}.pt", **{**meta, "test_accuracy": accuracy})
        readme = write_report(work, tmp_path / "report").read_text()
        assert (f"**At chance level** ({warned}):" in readme) if warned else "**At chance level**" not in readme
    for accuracy, verdict in ((0.425, "n/a"), (0.8, None)):  # chance: 40% (always "bar"), + 5% of the 60 to go
        for result in (work / "roar").glob("*.json"):
            result.write_text(json.dumps({"accuracy": accuracy if "random" in result.name else accuracy - 0.01}))
        readme = write_report(work, tmp_path / "report").read_text()
        claim = "| Table 1: RectGrad has a lower ROAR AUC than Random | "
        if verdict:
            assert "**ROAR: every retrained model is at chance level (accuracy <= 0.4250)**" in readme
            assert claim + "every retrained model is at chance level (accuracy <= 0.4250) | n/a |" in readme
        else:
            assert "ROAR: every retrained model" not in readme and claim + "RectGrad 0.7900 vs Random 0.8000 | yes |" \
                in readme
    model, meta = load_checkpoint(work / "models" / "patch.pt")  # as saved before models carried class names
    save_checkpoint(model, work / "models" / "patch.pt",
                    **{k: v for k, v in meta.items() if k not in ("classes", "majority_accuracy")})
    assert "**At chance level** (clean 42.0%, chance 40.0%):" in write_report(work, tmp_path / "report").read_text()
    model, meta = load_checkpoint(work / "models" / "clean.pt")  # as saved before models carried the majority rate
    save_checkpoint(model, work / "models" / "clean.pt", **{k: v for k, v in meta.items() if k != "majority_accuracy"})
    assert "**At chance level**" not in write_report(work, tmp_path / "report").read_text()  # 42% > 1/3 + 3.3 points


def test_train_and_explain_on_own_images(tmp_path, capsys):
    write_shape_folder(tmp_path / "images", masks=False, n_train=40, n_test=10)
    model = tmp_path / "model.pt"
    assert main(["train", "--dataset", "folder", "--data-dir", str(tmp_path / "images"), "--image-size", "24",
                 "--epochs", "1", "--device", "cpu", "--no-progress", "--out", str(model)]) == 0
    assert main(["explain", str(tmp_path / "images" / "test" / "bar" / "000.png"), "--model", str(model),
                 "--methods", "rectgrad,saliency", "--out", str(tmp_path / "grid.png")]) == 0
    out = capsys.readouterr().out
    assert "bar" in out and "disc" in out and (tmp_path / "grid.png").is_file()  # the folder's class names
    assert main(["study", "threshold", "--model", str(model), "--dataset", "folder", "--data-dir",
                 str(tmp_path / "images"), "--count", "3", "--device", "cpu", "--out", str(tmp_path / "study")]) == 0
    assert "q = 99" in capsys.readouterr().out  # test images at the model's 24x24
    assert main(["train", "--dataset", "cifar10", "--image-size", "24", "--out", str(model)]) == 2
    assert "--image-size applies to --dataset folder only" in capsys.readouterr().err


def test_methods_added_to_a_results_folder_are_computed_alone(smoke, tmp_path, monkeypatch, capsys, figures_unrendered):
    """A folder made with fewer methods takes more: the added method's maps and trainings are computed, nothing else,
    and every result equals the all-methods run's (each method's noise, masks and seeds are its own). An addition
    stopped halfway leaves the folder's configuration and report as they were; the next one picks up its maps."""
    args, _, work = smoke
    folder = tmp_path / "work"
    assert main([*args, "--methods", "rectgrad,random", "--out", str(tmp_path / "few"), "--work-dir", str(folder)]) == 0
    computed, trained = [], []
    compute, train = pipeline.compute_maps, Retrainer.__call__

    def ctrl_c_at_the_second_set(model, inputs, method, *a, **k):
        if computed:
            raise KeyboardInterrupt
        computed.append(method)
        return compute(model, inputs, method, *a, **k)

    monkeypatch.setattr(pipeline, "compute_maps", ctrl_c_at_the_second_set)
    for name in ("train_model", "train_many", "feature_map_occlusion"):
        monkeypatch.setattr(pipeline, name, lambda *a, **k: pytest.fail("recomputed a saved result"))
    assert main([*args, "--methods", "saliency", "--out", str(tmp_path / "more"), "--work-dir", str(folder)]) == 130
    assert ResultStore.read_config(folder)["methods"] == ["random", "rectgrad"]
    write_report(folder, tmp_path / "stopped")
    assert "| methods | random, rectgrad |" in (tmp_path / "stopped" / "README.md").read_text()
    monkeypatch.setattr(pipeline, "compute_maps", lambda model, inputs, method, *a, **k:
                        computed.append(method) or compute(model, inputs, method, *a, **k))
    monkeypatch.setattr(Retrainer, "__call__", lambda self, *a: trained.append(a[2]) or train(self, *a))
    capsys.readouterr()
    assert main([*args, "--methods", "saliency", "--out", str(tmp_path / "more"), "--work-dir", str(folder)]) == 0
    assert ("adding saliency to its methods (random, rectgrad); its results of random, rectgrad stay in the report"
            in capsys.readouterr().err)
    config = ResultStore.read_config(folder)
    assert config["methods"] == ["random", "rectgrad", "saliency"]
    assert set(computed) == {"saliency"} and len(computed) == 4  # the masked, patch, roar-train and roar-test maps
    assert len(trained) == len(config["parameters"]["fractions"]) * config["parameters"]["repeats"] * 2  # ROAR, KAR
    readme = (tmp_path / "more" / "README.md").read_text()
    assert "| methods | random, rectgrad, saliency |" in readme

    def same(a, b) -> bool:
        if isinstance(a, dict):
            return set(a) <= set(b) and all(same(a[k], b[k]) for k in a)  # the added run's methods among all
        if isinstance(a, torch.Tensor):
            return torch.equal(a, b)
        return a == b

    files = [p for p in folder.rglob("*") if p.is_file() and p.parts[len(folder.parts)] != "seconds"
             and p.name not in ("config.json", ".lock")]
    assert {p.parts[len(folder.parts)] for p in files} == {"models", "maps", "results", "roar", "kar", "roar-kar.json"}
    for path in files:
        there = work / path.relative_to(folder)
        if path.suffix == ".json":
            assert same(json.loads(path.read_text()), json.loads(there.read_text())), path
        elif path.parent.name == "models":
            assert same(load_checkpoint(path)[0].state_dict(), load_checkpoint(there)[0].state_dict()), path
        else:
            assert same(torch.load(path), torch.load(there)), path


@pytest.mark.parametrize("written", ["all", " all , ", "all,"])
def test_all_is_the_papers_methods_however_written(written, tmp_path, monkeypatch):
    import rectgrad.evaluation

    given = []

    def record(*args, methods, **kwargs):
        given.append(methods)
        raise ValueError("recorded")

    monkeypatch.setattr(rectgrad.evaluation, "reproduce", record)
    assert main(["reproduce", "--dataset", "fashion-mnist", "--scale", "smoke", "--methods", written, "--out",
                 str(tmp_path / "r")]) == 2
    assert given == [METHODS]  # the paper's nine, not deconv and eps_lrp too


def test_cli_reproduce_options_reach_the_pipeline(tmp_path, monkeypatch, capsys):
    # every option of `rectgrad reproduce` arrives, unchanged, at evaluation.reproduce (mutation testing: an option
    # dropped on its way would silently run the defaults), and the report is written from the work folder to --out
    import rectgrad.evaluation
    import rectgrad.report
    from rectgrad.evaluation import LocalBackend, RayBackend

    calls, reports = [], []
    monkeypatch.setattr(rectgrad.evaluation, "reproduce", lambda *args, **kwargs: calls.append((args, kwargs)))
    monkeypatch.setattr(rectgrad.report, "write_report",
                        lambda work, out: reports.append((work, out)) or out / "README.md")
    (tmp_path / "root").mkdir()
    (tmp_path / "masks").mkdir()
    assert main(["reproduce", "--dataset", "folder", "--scale", "smoke", "--data-dir", str(tmp_path / "root"),
                 "--masks", str(tmp_path / "masks"), "--download", "--image-size", "16", "--methods",
                 "saliency,rectgrad", "--seed", "5", "--tie-noise", "0", "--set", "repeats=2", "--set",
                 "fractions=[0.1, 0.9]", "--out", str(tmp_path / "r"), "--work-dir", str(tmp_path / "w"),
                 "--device", "cpu", "--group", "3", "--precision", "bf16", "--nondeterministic",
                 "--no-progress"]) == 0
    (args, kwargs), = calls
    assert args == ("folder", "smoke", tmp_path / "w")
    settings = kwargs.pop("settings")
    assert kwargs == {"data_dir": tmp_path / "root", "masks_dir": tmp_path / "masks", "download": True,
                      "methods": ["saliency", "rectgrad"], "seed": 5, "image_size": 16,
                      "overrides": {"repeats": 2, "fractions": [0.1, 0.9]}, "tie_noise": 0.0}
    assert (settings.device, settings.retrain_device, settings.precision, settings.deterministic,
            settings.progress) == ("cpu", "cpu", "bf16", False, False)
    assert isinstance(settings.backend, LocalBackend) and settings.backend.group == 3
    assert reports == [(tmp_path / "w", tmp_path / "r")]
    assert f"report written to {tmp_path / 'r' / 'README.md'}" in capsys.readouterr().out
    # the defaults: the work folder in OUT, folder images of side 32, every method, one model at a time on CPU
    calls.clear()
    assert main(["reproduce", "--dataset", "folder", "--scale", "smoke", "--data-dir", str(tmp_path / "root"),
                 "--out", str(tmp_path / "r2"), "--device", "cpu"]) == 0
    (args, kwargs), = calls
    assert args == ("folder", "smoke", tmp_path / "r2" / "work")
    settings = kwargs["settings"]
    assert (kwargs["image_size"], kwargs["overrides"], kwargs["download"], kwargs["seed"], kwargs["masks_dir"],
            kwargs["tie_noise"]) == (32, {}, False, 0, None, 1e-4)
    assert list(kwargs["methods"]) == list(rectgrad.evaluation.METHODS)
    assert (settings.precision, settings.deterministic, settings.progress) == ("fp32", True, True)
    assert isinstance(settings.backend, LocalBackend) and settings.backend.group == 1
    # --backend ray: its address and resources reach the Ray backend; the trainings run where its GPUs say
    if importlib.util.find_spec("ray") is None:  # (RayBackend needs Ray installed)
        return
    with server(SETTINGS_FRAME) as port:  # a gRPC server, as Ray's, listens at the address (checked at once)
        address = f"ray://127.0.0.1:{port}"
        for gpus, device in (("0.5", "cuda"), ("0", "cpu")):
            calls.clear()
            assert main(["reproduce", "--dataset", "fashion-mnist", "--scale", "smoke", "--out", str(tmp_path / "r3"),
                         "--device", "cpu", "--backend", "ray", "--address", address, "--ray-cpus", "2",
                         "--ray-gpus", gpus]) == 0
            settings = calls[0][1]["settings"]
            assert isinstance(settings.backend, RayBackend) and settings.retrain_device == device
            assert (settings.backend.address, settings.backend.num_cpus, settings.backend.num_gpus) == \
                (address, 2.0, float(gpus))


@pytest.mark.parametrize("argv, message", [
    (["--group", "-1"], "--group must be >= 0, got -1"),
    (["--precision", "fp16"], "--precision must be fp32 or bf16, got 'fp16'"),
    (["--precision", "bf16", "--device", "cpu"], "--precision bf16 applies to the models trained at "
     "once: --backend local with --group > 1 (the default on CUDA; 1 on CPU)"),
    (["--precision", "bf16", "--group", "1"], "--precision bf16 applies to the models trained at once"),
    (["--precision", "bf16", "--backend", "ray"], "--precision bf16 applies to the models trained at once"),
    (["--backend", "dask"], "--backend must be local or ray, got 'dask'"),
    (["--address", "x"], "--address needs --backend ray"),
    (["--ray-cpus", "2", "--ray-gpus", "1"], "--ray-cpus and --ray-gpus need --backend ray"),
    (["--backend", "ray", "--group", "2"], "--group applies to --backend local: a Ray task trains one model"),
    (["--backend", "ray", "--ray-cpus", "0"], "--ray-cpus must be > 0 and --ray-gpus >= 0, both finite, got 0.0 and "
     "0.0"),
    (["--backend", "ray", "--ray-gpus", "-1"], "--ray-cpus must be > 0 and --ray-gpus >= 0, both finite, got 1.0 and "
     "-1.0"),
    (["--backend", "ray", "--ray-gpus", "inf"], "--ray-cpus must be > 0 and --ray-gpus >= 0, both finite, got 1.0 and "
     "inf"),  # (a task asking for infinitely many waits for ever on a cluster)
    (["--backend", "ray", "--ray-cpus", "nan"], "--ray-cpus must be > 0 and --ray-gpus >= 0, both finite, got nan and "
     "0.0"),
    (["--backend", "ray", "--ray-cpus", "0.00001"], "--ray-cpus and --ray-gpus: Ray counts them in steps of 0.0001 "
     "and refuses a smaller share: give at least 0.0001 (or --ray-gpus 0), got 1e-05 and 0.0"),  # (Ray: at the sweep)
    (["--backend", "ray", "--ray-gpus", "5e-5"], "Ray counts them in steps of 0.0001"),
    (["--image-size", "16"], "--image-size applies to --dataset folder only"),
    (["--set", "repeats"], "--set takes KEY=VALUE, e.g. --set roar_epochs=10, got 'repeats'"),
    (["--set", "=3"], "--set takes KEY=VALUE"),
    (["--set", "repeats=2", "--set", " repeats=3"], "--set gives repeats twice"),
    (["--set", "repeats=two"], "--set repeats: 'two' is no JSON value"),
    (["--seed", "-1"], "--seed must be an integer in [0, 2**63), got -1"),
    (["--tie-noise", "nan"], "--tie-noise must be a finite standard deviation >= 0, got nan"),  # (was: tie_noise)
    (["--tie-noise", "-inf"], "--tie-noise must be a finite standard deviation >= 0, got -inf"),
    (["--methods", "rectgrad,rectgrd"], "unknown method 'rectgrd'"),
    (["--device", "tpu"], "--device must be cpu, cuda, cuda:N or auto, got 'tpu'"),
])
def test_cli_reproduce_refuses_bad_options_before_any_work(tmp_path, monkeypatch, capsys, argv, message):
    # a bad option is a user error (exit 2, one line naming it) before anything runs or is written
    import rectgrad.evaluation

    monkeypatch.setattr(rectgrad.evaluation, "reproduce", lambda *a, **kw: pytest.fail("ran with a bad option"))
    torch.set_flush_denormal(False)
    assert main(["reproduce", "--dataset", "fashion-mnist", "--scale", "smoke", "--out", str(tmp_path / "r"),
                 *argv]) == 2
    assert not denormals_flushed()  # the process's setting restored as it was (here: not flushing)
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err, err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("folders", [["--out", ""], ["--out", "r", "--work-dir", ""], ["--out", "r", "--data-dir", ""],
                                     ["--out", "r", "--masks", ""]])
def test_cli_reproduce_refuses_an_empty_folder_name(tmp_path, monkeypatch, capsys, folders):
    # '' was read as Path('.'): the report (or the results) went into the current folder, the dataset (or the masks)
    # were read from it
    import rectgrad.evaluation

    monkeypatch.setattr(rectgrad.evaluation, "reproduce", lambda *a, **kw: pytest.fail("ran"))
    monkeypatch.chdir(tmp_path)
    assert main(["reproduce", "--dataset", "fashion-mnist", "--scale", "smoke", *folders]) == 2
    option = folders[-2]
    assert f"Invalid value for '{option}': an empty path names no file or folder" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_cli_reproduce_refuses_a_ray_address_where_nothing_listens_before_any_work(tmp_path, monkeypatch, capsys):
    # Ray retries such an address for minutes, and only once the ROAR/KAR trainings start: refused at once instead
    pytest.importorskip("ray")
    import rectgrad.evaluation

    monkeypatch.setattr(rectgrad.evaluation, "reproduce", lambda *a, **kw: pytest.fail("ran with a bad --address"))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with socket.create_server(("127.0.0.1", 0)) as closed:
        port = closed.getsockname()[1]  # closed on leaving: nothing listens there
    argv = ["reproduce", "--dataset", "fashion-mnist", "--scale", "smoke", "--out", str(tmp_path / "r"), "--device",
            "cpu", "--backend", "ray"]
    for address in (f"127.0.0.1:{port}", f"ray://127.0.0.1:{port}"):
        assert main([*argv, "--address", address]) == 2
        assert f"error: --address {address}: no Ray cluster answers there" in capsys.readouterr().err
    assert main([*argv, "--address", "headnode"]) == 2
    assert "--address 'headnode' is no Ray cluster address: give HOST:PORT" in capsys.readouterr().err
    for address in ("anyscale://my-cluster", "ray://headnode"):  # other clients' addresses, Ray Client's port: Ray's
        with pytest.raises(pytest.fail.Exception, match="ran with a bad --address"):
            main([*argv, "--address", address])
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{port}")  # what Ray connects to without --address
    assert main(argv) == 2
    assert f"error: RAY_ADDRESS 127.0.0.1:{port}: no Ray cluster answers there" in capsys.readouterr().err
    monkeypatch.delenv("RAY_ADDRESS")  # else the cluster `ray start` recorded, which died without `ray stop`
    ray = __import__("ray")
    monkeypatch.setattr(ray._private.utils, "read_ray_address", lambda *a: f"127.0.0.1:{port}")
    assert main(argv) == 2
    assert (f"error: the cluster `ray start` recorded on this machine (`ray stop` forgets it) 127.0.0.1:{port}: no "
            "Ray cluster answers there") in capsys.readouterr().err
    monkeypatch.setattr(ray._private.utils, "read_ray_address", lambda *a: None)
    # something else than Ray listens there: Ray's gRPC handshake would wait on it for ever; refused at once
    for answer, why in ((b"HTTP/1.1 400 Bad Request\r\n\r\n", r"it answered b'HTTP/1.1 '"),
                        (b"", "it closed the connection")):
        with server(answer) as other:
            for address in (f"127.0.0.1:{other}", f"ray://127.0.0.1:{other}"):
                assert main([*argv, "--address", address]) == 2
                assert re.search(f"error: --address {address}: what listens there is no Ray cluster \\({why} to the "
                                 "handshake of gRPC, which Ray speaks\\); give the address", capsys.readouterr().err)
    with server(b"\x15\x03\x03\x00\x02\x02\x46") as tls:  # a TLS server's alert to a plain handshake
        monkeypatch.setenv("RAY_USE_TLS", "1")  # Ray's clusters with TLS: the connection is all that is checked
        roar._check_reachable(f"127.0.0.1:{tls}", timeout=0.5)
        monkeypatch.delenv("RAY_USE_TLS")
        with pytest.raises(ConnectionError, match=r"it answered b'\\x15\\x03\\x03\\x00\\x02\\x02F' to the handshake"):
            roar._check_reachable(f"127.0.0.1:{tls}", timeout=0.5)
    with server(None) as silent:
        started = time.monotonic()
        with pytest.raises(ConnectionError, match=f"^--address 127.0.0.1:{silent}: what listens there is no Ray "
                                                  r"cluster \(no answer to the handshake of gRPC, which Ray speaks, "
                                                  r"within 0.5 s\)"):
            roar._check_reachable(f"127.0.0.1:{silent}", timeout=0.5)
        assert time.monotonic() - started < 5
    monkeypatch.setattr(ray, "is_initialized", lambda: True)  # a Ray this process joined is used as it is
    with pytest.raises(pytest.fail.Exception, match="ran with a bad --address"):
        main([*argv, "--address", f"127.0.0.1:{port}"])
    assert not (tmp_path / "r").exists()


def test_cli_reproduce_refuses_ray_address_auto_without_a_cluster_before_any_work(tmp_path, monkeypatch, capsys):
    # Ray's "auto" joins the cluster `ray start` recorded; without one ray.init failed once the trainings started
    pytest.importorskip("ray")
    import ray

    import rectgrad.evaluation

    monkeypatch.setattr(rectgrad.evaluation, "reproduce", lambda *a, **kw: pytest.fail("ran"))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(ray._private.utils, "read_ray_address", lambda *a: None)
    argv = ["reproduce", "--dataset", "fashion-mnist", "--scale", "smoke", "--out", str(tmp_path / "r"), "--device",
            "cpu", "--backend", "ray"]
    assert main([*argv, "--address", "auto"]) == 2
    assert capsys.readouterr().err.startswith("error: --address auto: no Ray cluster runs on this machine")
    monkeypatch.setenv("RAY_ADDRESS", "auto")
    assert main(argv) == 2
    assert capsys.readouterr().err.startswith("error: RAY_ADDRESS auto: no Ray cluster runs on this machine")
    with socket.create_server(("127.0.0.1", 0)) as closed:
        port = closed.getsockname()[1]
    monkeypatch.setattr(ray._private.utils, "read_ray_address", lambda *a: f"127.0.0.1:{port}")  # died unstopped
    assert main([*argv, "--address", "auto"]) == 2
    assert "no Ray cluster answers there" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_cli_reproduce_refuses_a_cuda_device_the_machine_lacks_before_any_work(tmp_path, monkeypatch, capsys):
    # torch accepts "cuda:1" on a one-GPU machine until its first use ("invalid device ordinal"), after the data loads
    import rectgrad.evaluation

    monkeypatch.setattr(rectgrad.evaluation, "reproduce", lambda *a, **kw: pytest.fail("ran with a bad --device"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    for device, message in (("cuda:1", "error: --device cuda:1: this machine has 1 CUDA device (cuda:0)\n"),
                            ("cuda:x", "error: --device must be cpu, cuda, cuda:N or auto, got 'cuda:x'\n")):
        assert main(["reproduce", "--dataset", "fashion-mnist", "--scale", "smoke", "--out", str(tmp_path / "r"),
                     "--device", device]) == 2
        assert capsys.readouterr().err == message
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert main(["reproduce", "--dataset", "fashion-mnist", "--scale", "smoke", "--out", str(tmp_path / "r"),
                 "--device", "cuda:2"]) == 2
    assert "error: --device cuda:2: this machine has 2 CUDA devices (cuda:0 .. cuda:1)" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_cli_reproduce_refuses_a_results_folder_as_out_before_any_work(tmp_path, monkeypatch, capsys):
    # --out WORK would start the run anew in WORK/work, inside the results it meant to resume
    import rectgrad.evaluation
    import rectgrad.report

    calls = []
    monkeypatch.setattr(rectgrad.evaluation, "reproduce", lambda *args, **kwargs: calls.append(args))
    monkeypatch.setattr(rectgrad.report, "write_report", lambda work, out: out / "README.md")
    results = tmp_path / "r" / "work"
    results.mkdir(parents=True)
    (results / "config.json").write_text("{}")
    argv = ["reproduce", "--dataset", "fashion-mnist", "--scale", "smoke", "--device", "cpu", "--out", str(results)]
    assert main(argv) == 2
    assert capsys.readouterr().err == (f"error: --out {results} is a results folder (it holds config.json): give it "
                                       f"as --work-dir to resume it, and another folder as --out for the report (e.g. "
                                       f"--work-dir {results} --out {tmp_path / 'r' / 'report'})\n")
    assert main([*argv, "--work-dir", str(tmp_path / "w")]) == 2 and not calls
    assert not (results / "work").exists() and not (tmp_path / "w").exists()
    assert main([*argv, "--work-dir", str(results)]) == 0  # the report beside its own results: as asked
    assert calls == [("fashion-mnist", "smoke", results)]


def test_cli_reproduce_refuses_ray_resources_this_machine_lacks_before_any_work(tmp_path, monkeypatch, capsys):
    # without an address Ray starts a local instance of this machine's resources: a task asking for more is refused
    # when the sweep reaches the trainings, after the models and the maps; refused before the data loads instead
    ray = pytest.importorskip("ray")
    import os

    monkeypatch.setattr(pipeline, "load_dataset", lambda *a, **k: pytest.fail("loaded the data"))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setattr(ray._private.utils, "read_ray_address", lambda *a: None)  # no `ray start` cluster here
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    argv = ["reproduce", "--dataset", "fashion-mnist", "--scale", "smoke", "--out", str(tmp_path / "r"), "--device",
            "cpu", "--backend", "ray"]
    cpus = os.cpu_count()
    for options, asked in ((["--ray-gpus", "1"], "1 CPU(s) and 1 GPU(s)"),
                           (["--ray-cpus", str(cpus + 1)], f"{cpus + 1} CPU(s) and 0 GPU(s)")):
        assert main([*argv, *options]) == 2
        assert capsys.readouterr().err == (f"error: each training asks Ray for {asked}, but this machine (where Ray "
                                           f"will start a local instance) has {cpus} CPU(s) and 0 GPU(s) "
                                           "(--ray-cpus, --ray-gpus)\n")
    assert not (tmp_path / "r").exists()
    monkeypatch.setattr(ray, "is_initialized", lambda: True)  # a Ray this process joined (a cluster, say) is used:
    with pytest.raises(pytest.fail.Exception, match="loaded the data"):  # its resources are its own
        main([*argv, "--ray-gpus", "1"])
    monkeypatch.undo()
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(pipeline, "load_dataset", lambda *a, **k: pytest.fail("loaded the data"))
    monkeypatch.setattr(ray._private.utils, "read_ray_address", lambda *a: "10.0.0.5:6379")  # Ray would join it
    with pytest.raises(pytest.fail.Exception, match="loaded the data"):
        main([*argv, "--ray-gpus", "1"])


def test_cli_reproduce_out_must_be_a_folder(tmp_path, monkeypatch, capsys):
    # --out naming a file is refused (exit 2) before anything runs
    import rectgrad.evaluation

    monkeypatch.setattr(rectgrad.evaluation, "reproduce", lambda *a, **kw: pytest.fail("ran with a bad --out"))
    (tmp_path / "taken").write_text("")
    assert main(["reproduce", "--dataset", "fashion-mnist", "--scale", "smoke", "--out", str(tmp_path / "taken"),
                 "--work-dir", str(tmp_path / "w")]) == 2
    assert "exists and is not a folder" in capsys.readouterr().err


# ---------------------------------------------------------------- exploratory: `reproduce --dataset folder`

@pytest.fixture(scope="module")
def own_smoke(tmp_path_factory):
    """One smoke run on your own images (3 shape classes, masks beside every test image), its ROAR/KAR models scored
    on the first 5 test images: (arguments, image folder, report folder, work folder)."""
    root = tmp_path_factory.mktemp("own")
    write_shape_folder(root / "images", masks=True, n_train=8, n_test=4)
    args = ["reproduce", "--dataset", "folder", "--data-dir", str(root / "images"), "--scale", "smoke", "--device",
            "cpu", "--no-progress", "--methods", "random,rectgrad", "--set", "roar_test_images=5"]
    assert main([*args, "--out", str(root / "report")]) == 0
    return args, root / "images", root / "report", root / "report" / "work"


def test_own_images_report_needs_every_fig2_layer(own_smoke):
    # the run the fixture made is complete: Fig. 2 has every convolution of the clean model, and its claim a verdict
    _, _, report, work = own_smoke
    assert sorted(p.stem for p in (work / "results").glob("occlusion-*.json")) == [f"occlusion-conv{i}"
                                                                                   for i in range(1, 5)]
    readme = (report / "README.md").read_text()
    verdict = next(line for line in readme.splitlines() if line.startswith("| Fig. 2: the mean margin"))
    assert verdict.endswith(("| yes |", "| **no** |")), verdict


def test_report_of_a_run_stopped_during_fig2_gives_no_verdict_on_the_layers_done(own_smoke, tmp_path):
    _, _, _, work = own_smoke
    copy = tmp_path / "work"
    shutil.copytree(work, copy)
    (copy / "results" / "occlusion-conv4.json").unlink()  # stopped while conv4's curve was computed
    readme = write_report(copy, tmp_path / "report").read_text()
    verdict = next(line for line in readme.splitlines() if line.startswith("| Fig. 2: the mean margin"))
    assert verdict.endswith("| n/a |"), verdict  # conv4 alone may bring the margin below 0
    section = readme.split("## Fig. 2")[1].split("## Figs. 3")[0]
    assert re.search(r"conv4|not done", section), section


def test_roar_chance_level_is_that_of_the_test_images_the_retrained_models_are_scored_on(own_smoke, tmp_path):
    _, images, _, work = own_smoke
    scored = data.load_image_folder(images, "test").labels[:5]  # roar_test_images=5: the first five
    majority = scored.bincount().max().item() / len(scored)  # >= 2/5, while the whole split's is 4/12
    assert majority >= 0.4
    copy = tmp_path / "work"
    shutil.copytree(work, copy)
    for result in [*(copy / "roar").glob("*.json"), *(copy / "kar").glob("*.json")]:
        result.write_text(json.dumps({"accuracy": majority}))  # what "always the majority class" scores there
    readme = write_report(copy, tmp_path / "report").read_text()
    assert "**ROAR: every retrained model is at chance level" in readme
    assert "**KAR: every retrained model is at chance level" in readme


def test_fig8_background_claims_are_not_judged_where_no_mask_marks_background(tmp_path, monkeypatch):
    monkeypatch.setattr(pipeline._Run, "patch", lambda *args: None)  # Figs. 2 and 8 alone
    monkeypatch.setattr(pipeline._Run, "roar_kar", lambda *args: None)
    images = tmp_path / "images"
    write_shape_folder(images, masks=True, n_train=10, n_test=2)
    for mask in (images / "test").rglob("*_mask.png"):
        Image.new("L", (36, 36), 255).save(mask)  # all object
    with pytest.warns(UserWarning, match="mark every pixel as object"):
        pipeline.reproduce("folder", "smoke", tmp_path / "work", data_dir=images,
                           methods=["random", "rectgrad", "saliency"], settings=pipeline.Settings(progress=False))
    readme = write_report(tmp_path / "work", tmp_path / "report").read_text()
    noise = json.loads((tmp_path / "work" / "results" / "noise.json").read_text())
    assert all(value == 0 for m in noise for value in noise[m]["outside"])  # nothing measured outside
    assert "| no background activation was zeroed: the masks mark no background | n/a |" in readme  # Fig. 2
    for claim in ("| Fig. 8: RectGrad puts less attribution on the background than every baseline (total) |",
                  "| Fig. 8, scale-free check: RectGrad puts a smaller share of its attribution on the background"):
        verdict = next(line for line in readme.splitlines() if line.startswith(claim))
        assert verdict.endswith("| n/a |"), verdict


def test_a_fig2_result_without_its_margins_names_its_file(own_smoke, tmp_path, capsys):
    # a result edited by hand into valid JSON of another shape: through the command, one line naming the file and
    # the remedy (was "error: 'margins'")
    args, _, _, work = own_smoke
    copy = tmp_path / "work"
    shutil.copytree(work, copy)
    edited = copy / "results" / "occlusion-conv2.json"
    result = json.loads(edited.read_text())
    edited.write_text(json.dumps({k: v for k, v in result.items() if k != "margins"}))
    assert main([*args, "--out", str(tmp_path / "report"), "--work-dir", str(copy)]) == 2
    err = capsys.readouterr().err
    assert f"{edited} is corrupt" in err and "delete it and rerun" in err, err


def test_a_class_the_scales_cut_leaves_out_is_named(tmp_path, capsys):
    images = tmp_path / "images"
    for name, count in (("a", 100), ("b", 100), ("rare_class", 2)):
        for split in ("train", "test"):
            folder = images / split / name
            folder.mkdir(parents=True)
            for i in range(count if split == "train" else 2):
                Image.new("L", (2, 2), (i * 7 + len(name) * 50) % 256).save(folder / f"{i}.png")
    files, classes = data.image_folder_split(images, "train")
    kept = {label for _, label in files[:100]} == {0, 1, 2}  # smoke's roar_train_images: the first 100
    assert main(["reproduce", "--dataset", "folder", "--data-dir", str(images), "--scale", "smoke", "--image-size",
                 "16", "--device", "cpu", "--no-progress", "--methods", "random", "--out", str(tmp_path / "r")]) == 0
    said = capsys.readouterr().err
    assert not kept and ("warning: roar_train_images=100: the first 100 of the 202 images hold no image of class "
                         "rare_class; `--set roar_train_images=N` with a larger N, or a larger --scale, takes "
                         "more") in said


def test_own_images_rerun_recomputes_nothing_and_a_changed_folder_or_size_is_refused_untouched(own_smoke, tmp_path,
                                                                                               monkeypatch, capsys,
                                                                                               figures_unrendered):
    args, images, report, work = own_smoke
    copy, data_copy = tmp_path / "work", tmp_path / "images"
    shutil.copytree(work, copy)
    shutil.copytree(images, data_copy)
    args = [str(data_copy) if a == str(images) else a for a in args]

    def forbidden(*args, **kwargs):
        raise AssertionError("recomputed a saved result")

    saved = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in copy.rglob("*") if p.is_file() and p.name != ".lock"}
    with monkeypatch.context() as patched:
        for name in ("train_model", "train_many", "compute_maps", "feature_map_occlusion"):
            patched.setattr(pipeline, name, forbidden)
        patched.setattr(Retrainer, "__call__", forbidden)
        assert main([*args, "--out", str(tmp_path / "again"), "--work-dir", str(copy)]) == 0
    assert (tmp_path / "again" / "README.md").read_text() == (report / "README.md").read_text()
    capsys.readouterr()  # the rerun rewrote no file of the work folder either (masked.json was, with the same text)
    assert saved == {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in copy.rglob("*")
                     if p.is_file() and p.name != ".lock"}
    assert main([*args, "--image-size", "16", "--out", str(tmp_path / "small"), "--work-dir", str(copy)]) == 2
    assert "data.image_size: 32 there, 16 here" in capsys.readouterr().err
    mask = sorted((data_copy / "test").rglob("*_mask.png"))[0]
    Image.new("L", (36, 36), 0).save(mask)  # one mask changed: Figs. 2 and 8 were made with the old one
    assert main([*args, "--out", str(tmp_path / "mended"), "--work-dir", str(copy)]) == 2
    assert "holds results of another configuration (data.crc32: " in capsys.readouterr().err
    assert saved == {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in copy.rglob("*")
                     if p.is_file() and p.name != ".lock"}
    assert not (tmp_path / "small").exists() or not any((tmp_path / "small").iterdir())


def test_an_out_folder_with_a_readme_of_its_own_is_refused_before_any_work(tmp_path, capsys, monkeypatch):
    # --out . in a project: its README.md would be replaced by the report's, after the whole run
    monkeypatch.setattr(pipeline, "load_dataset", lambda *a, **k: pytest.fail("read data"))
    (tmp_path / "README.md").write_text("# My project\n")
    assert main(["reproduce", "--dataset", "fashion-mnist", "--scale", "smoke", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err == (f"error: {tmp_path / 'README.md'} exists and no rectgrad report wrote it: the "
                                       "report would replace it; give another folder (--out), or move that file\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md"]



def _paper_scale_tarball(path, work: str) -> None:
    """A tarball as benchmarks/paper_scale.sh run packs it: the work folder ``work`` with its config.json."""
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo(f"{work}/config.json")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"{}"))


def _paper_scale_copy(tmp_path) -> Path:
    """benchmarks/paper_scale.sh copied into a repository root of its own, whose path holds a space."""
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "paper_scale.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    root = tmp_path / "a repo"
    (root / "benchmarks").mkdir(parents=True)
    shutil.copy(script, root / "benchmarks")
    return root


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("tar") is None, reason="needs bash and tar")
def test_paper_scale_script_unpacks_a_dry_runs_tarball_into_a_fresh_folder(tmp_path):
    """benchmarks/paper_scale.sh: `unpack` refused the tarball of a dry run (SCALE=smoke packs work-smoke/, it
    looked for work/ only), so a dry run could not try it; and it failed where .paper-scale did not exist yet."""
    root = _paper_scale_copy(tmp_path)
    _paper_scale_tarball(tmp_path / "smoke.tar.gz", "work-smoke")
    _paper_scale_tarball(tmp_path / "paper.tar.gz", "work")

    def unpack(tarball, **env):
        return subprocess.run(["bash", "benchmarks/paper_scale.sh", "unpack", str(tmp_path / tarball)], cwd=root,
                              capture_output=True, text=True, env={**os.environ, **env})

    refused = unpack("smoke.tar.gz")
    assert refused.returncode == 1 and "holds no paper-scale work folder (work/config.json)" in refused.stderr
    assert not (root / ".paper-scale").exists()
    assert unpack("smoke.tar.gz", SCALE="smoke").returncode == 0
    assert (root / ".paper-scale" / "work-smoke" / "config.json").is_file()
    assert not (root / ".paper-scale" / "work").exists()
    assert unpack("paper.tar.gz").returncode == 0 and (root / ".paper-scale" / "work" / "config.json").is_file()
    assert (root / ".paper-scale" / "work-smoke").is_dir()  # a dry run's folders are apart


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("tar") is None, reason="needs bash and tar")
def test_paper_scale_script_reads_relative_paths_from_where_it_is_called_and_prints_its_usage_from_there(tmp_path):
    """benchmarks/paper_scale.sh changes into the repository root: a relative TARBALL was looked for there ('no
    file paper.tar.gz'), and its usage (read from "$0", relative to the caller) could not be printed."""
    root = _paper_scale_copy(tmp_path)
    caller = tmp_path / "elsewhere"
    caller.mkdir()
    _paper_scale_tarball(caller / "paper.tar.gz", "work")
    unpacked = subprocess.run(["bash", "../a repo/benchmarks/paper_scale.sh", "unpack", "paper.tar.gz"], cwd=caller,
                              capture_output=True, text=True)
    assert unpacked.returncode == 0, unpacked.stderr
    assert (root / ".paper-scale" / "work" / "config.json").is_file()
    usage = subprocess.run(["bash", "../a repo/benchmarks/paper_scale.sh"], cwd=caller, capture_output=True,
                           text=True)
    assert usage.returncode == 2 and "benchmarks/paper_scale.sh run SECONDS" in usage.stdout, usage.stderr


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("tar") is None or shutil.which("timeout") is None,
                    reason="needs bash, tar and timeout")
def test_paper_scale_script_packs_what_a_run_made_and_ends_well_when_it_made_nothing(tmp_path):
    """benchmarks/paper_scale.sh run with OUT: a run stopped before it made its work folder (a short SECONDS, a slow
    start) failed in tar ('work: Cannot stat'), status 2; it now says so in the log. What it packs leaves out the
    maps and the unfinished trainings' states (a stand-in python3 here: the script's own steps alone)."""
    root, out, bin_folder = _paper_scale_copy(tmp_path), tmp_path / "out", tmp_path / "bin"
    out.mkdir()
    bin_folder.mkdir()
    (bin_folder / "python3").write_text("#!/bin/sh\nexit 0\n")
    (bin_folder / "python3").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_folder}{os.pathsep}{os.environ['PATH']}", "OUT": str(out)}
    env.pop("SCALE", None)
    run = subprocess.run(["bash", "benchmarks/paper_scale.sh", "run", "5"], cwd=root, capture_output=True, text=True,
                         env=env)
    assert run.returncode == 0, run.stderr
    assert "no .paper-scale/work to pack" in (out / "log.txt").read_text() and not (out / "paper-scale.tar.gz").exists()
    work = root / ".paper-scale" / "work"
    for name in ("config.json", "models/clean.pt", "models/unfinished-clean-patch.pt", "maps/clean-rectgrad.pt",
                 "roar/rectgrad-p0.1-r0.json", "roar/unfinished/0123.pt", "roar/unfinished/0123.json"):
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        (work / name).write_text("{}")
    run = subprocess.run(["bash", "benchmarks/paper_scale.sh", "run", "5"], cwd=root, capture_output=True, text=True,
                         env=env)
    assert run.returncode == 0, run.stderr
    with tarfile.open(out / "paper-scale.tar.gz") as tar:
        packed = {member.name for member in tar.getmembers() if member.isfile()}
    assert packed == {"work/config.json", "work/models/clean.pt", "work/roar/rectgrad-p0.1-r0.json"}


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None
                    or not Path("/proc/self/stat").exists(), reason="needs bash, timeout and /proc")
def test_paper_scale_script_stops_the_run_with_one_signal_in_the_callers_process_group(tmp_path):
    """benchmarks/paper_scale.sh run: timeout without --foreground put the run in a process group of its own and sent
    its SIGTERM twice (to the run, then to that group); rectgrad reads a second signal as "stop at once, without
    saving". The stand-in python3 here records its process group and stays until it is stopped."""
    root, bin_folder = _paper_scale_copy(tmp_path), tmp_path / "bin"
    bin_folder.mkdir()
    (bin_folder / "python3").write_text('#!/bin/sh\n[ "$1" = -m ] || exit 0\ncut -d" " -f5 /proc/$$/stat > '
                                        f'"{tmp_path}/group"\nexec sleep 30\n')
    (bin_folder / "python3").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_folder}{os.pathsep}{os.environ['PATH']}"}
    env.pop("OUT", None)
    run = subprocess.Popen(["bash", "benchmarks/paper_scale.sh", "run", "1"], cwd=root, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    assert run.wait(timeout=25) == 0
    assert int((tmp_path / "group").read_text()) == run.pid  # the script's group: the signal goes to the run alone
    assert "exit status 124" in (root / ".paper-scale" / "log.txt").read_text()  # stopped by the timeout, in time


def _paper_scale_without_captum(tmp_path) -> tuple[Path, dict]:
    """benchmarks/paper_scale.sh in a repository root of its own, and an environment whose stand-in python3 has no
    captum (``-c "import captum"`` fails), records each pip call in ``pip`` and the PYTHONPATH of every other call in
    ``seen``, and does nothing else (nothing is installed)."""
    root, bin_folder = _paper_scale_copy(tmp_path), tmp_path / "bin"
    bin_folder.mkdir()
    (bin_folder / "python3").write_text(
        '#!/bin/sh\ncase "$*" in\n"-c import captum") exit 1 ;;\n'
        f'"-m pip "*) echo "$*" >> "{tmp_path}/pip" ;;\n*) echo "$PYTHONPATH" >> "{tmp_path}/seen" ;;\nesac\n')
    (bin_folder / "python3").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_folder}{os.pathsep}{os.environ['PATH']}"}
    for name in ("OUT", "SCALE", "TESTS", "BENCH", "PYTHONPATH"):
        env.pop(name, None)
    return root, env


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None, reason="needs bash and timeout")
def test_paper_scale_script_keeps_the_callers_pythonpath_after_the_carried_captum(tmp_path):
    """benchmarks/paper_scale.sh run: installing the carried captum wheel set PYTHONPATH=/tmp/site, dropping the
    caller's PYTHONPATH (where its own packages were) for every later step."""
    root, env = _paper_scale_without_captum(tmp_path)
    (root / ".paper-scale" / "wheels").mkdir(parents=True)
    (root / ".paper-scale" / "wheels" / "captum-0.8.0-py3-none-any.whl").write_text("")
    run = subprocess.run(["bash", "benchmarks/paper_scale.sh", "run", "5"], cwd=root, capture_output=True, text=True,
                         env={**env, "PYTHONPATH": "/callers/packages"})
    assert run.returncode == 0, run.stderr
    assert "--target /tmp/site" in (tmp_path / "pip").read_text()
    seen = set((tmp_path / "seen").read_text().splitlines())  # (the root's path holds a space)
    assert seen == {f"{root / 'src'}:/tmp/site:/callers/packages"}


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_paper_scale_script_run_before_prepare_says_to_prepare_first(tmp_path):
    """benchmarks/paper_scale.sh run without captum and without a prepared wheel: pip was handed the unexpanded
    pattern (.paper-scale/wheels/*.whl) and said "Invalid requirement"."""
    root, env = _paper_scale_without_captum(tmp_path)
    for wheels in (False, True):  # no .paper-scale/wheels at all, then an empty one
        if wheels:
            (root / ".paper-scale" / "wheels").mkdir(parents=True)
        run = subprocess.run(["bash", "benchmarks/paper_scale.sh", "run", "5"], cwd=root, capture_output=True,
                             text=True, env=env)
        assert run.returncode == 1
        assert "captum is not installed and .paper-scale/wheels holds no wheel of it: run `bash " \
               "benchmarks/paper_scale.sh prepare` first" in run.stderr
        assert not (tmp_path / "pip").exists() and not (tmp_path / "seen").exists()  # nothing run


def test_a_folder_of_another_configuration_is_refused_before_the_data_loads(tmp_path, monkeypatch, capsys):
    # another --seed or --scale was refused only once the data was read (slow on real data); the data's own record
    # (its checksum, its counts) is still compared once the data is read
    from dataclasses import asdict

    class Loaded(Exception):
        pass

    def load(*args, **kwargs):
        raise Loaded

    monkeypatch.setattr(pipeline, "load_dataset", load)
    work = tmp_path / "work"
    work.mkdir()
    config = {"dataset": "fashion-mnist", "scale": "smoke", "parameters": asdict(pipeline.scale_with("smoke")),
              "methods": METHODS, "seed": 1, "tie_noise": TIE_NOISE, "overrides": {},
              "data": {"train": 400, "test": 100, "crc32": 12345}}
    (work / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=rf"^{re.escape(str(work))} holds results of another configuration \(seed: 1 "
                                         r"there, 0 here\); refusing to mix them"):
        pipeline.reproduce("fashion-mnist", "smoke", work)
    assert main(["reproduce", "--dataset", "fashion-mnist", "--scale", "quick", "--seed", "1", "--device", "cpu",
                 "--no-progress", "--out", str(tmp_path / "r"), "--work-dir", str(work)]) == 2
    assert "another configuration (scale: 'smoke' there, 'quick' here; parameters." in capsys.readouterr().err
    with pytest.raises(Loaded):  # the same configuration but for the data, not read yet: the data is read
        pipeline.reproduce("fashion-mnist", "smoke", work, seed=1, methods=("rectgrad",))
    assert (work / "config.json").read_text() == json.dumps(config)
