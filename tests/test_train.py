"""Training loop, evaluation and the ``rectgrad train`` command on small generated data."""
import copy
import gzip
import io
import itertools
import math
import os
import re
import signal
import time
import warnings

import numpy as np
import pytest
import torch
import tqdm.std

import rectgrad.train
from rectgrad import PaperCNN, data, load_model
from rectgrad.checkpoint import load_checkpoint
from rectgrad.cli import main
from rectgrad.data import ImageDataset
from rectgrad.progress import progress_bar
from rectgrad.train import TrainingInterrupted, evaluate, new_model, predict_logits, train_model


def quadrants(n: int, seed: int, size: int = 16) -> ImageDataset:
    """Learnable images: noise plus a bright square in the quadrant given by the label (4 classes)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 4, (n,), generator=g)
    images = torch.randint(0, 60, (n, 1, size, size), generator=g, dtype=torch.uint8)
    half = size // 2
    for k in range(4):
        r, c = (k // 2) * half, (k % 2) * half
        images[labels == k, :, r + 1:r + half - 1, c + 1:c + half - 1] += 180
    return ImageDataset(images, labels, ["tl", "tr", "bl", "br"], "quadrants")


def test_one_epoch_beats_chance():
    train, test = quadrants(400, seed=0), quadrants(200, seed=1)
    model = new_model(train, seed=0)
    history = train_model(model, train, epochs=1, batch_size=20, progress=False, test=test)
    assert not model.training
    assert history["test_accuracy"] > 0.6 and evaluate(model, test) == history["test_accuracy"]
    assert len(history["loss"]) == len(history["train_accuracy"]) == 1 and history["seconds"] > 0
    assert all(p.is_contiguous() for p in model.parameters())  # handed back in the default format
    logits = predict_logits(model, test.inputs(), batch_size=64)
    assert logits.shape == (200, 4) and not logits.requires_grad


def test_deterministic_for_a_seed():
    train = quadrants(120, seed=0)

    def run(seed: int):
        model = new_model(train, seed=seed)
        history = train_model(model, train, epochs=2, batch_size=32, seed=seed, progress=False)
        return model.state_dict(), history["loss"]

    (a, loss_a), (b, loss_b), (c, _) = run(3), run(3), run(4)
    assert loss_a == loss_b and all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_train_model_by_hand_with_a_last_short_batch_and_its_own_lr():
    """Adam at the given lr over the seed's permutation, batches of 3, 3 and 1; the epoch's loss weighs each batch's
    mean by its size."""
    import copy

    import torch.nn.functional as F

    train = quadrants(7, seed=0)
    model = new_model(train, seed=0)
    reference = copy.deepcopy(model).train()
    history = train_model(model, train, epochs=2, batch_size=3, lr=0.01, seed=5, progress=False, channels_last=False)
    optimizer, generator = torch.optim.Adam(reference.parameters(), lr=0.01), torch.Generator().manual_seed(5)
    for epoch in range(2):
        order, loss_sum, correct = torch.randperm(7, generator=generator), 0.0, 0
        for start in range(0, 7, 3):
            index = order[start:start + 3]
            logits, target = reference(train.inputs(index)), train.labels[index]
            loss = F.cross_entropy(logits, target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            loss_sum, correct = loss_sum + loss.item() * len(index), correct + int((logits.argmax(1) == target).sum())
        assert history["loss"][epoch] == pytest.approx(loss_sum / 7, rel=1e-5)
        assert history["train_accuracy"][epoch] == correct / 7
    for name, value in reference.state_dict().items():
        torch.testing.assert_close(model.state_dict()[name], value, msg=name)


def test_the_seed_gives_new_models_weights_and_train_models_batch_order_each_alone():
    """new_model(d, seed) draws PaperCNN's weights as torch.manual_seed(seed) would; train_model's seed alone orders
    the batches: the same weights trained with another seed come out otherwise."""
    train = quadrants(60, seed=0)
    for seed in (3, 4):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            expected = PaperCNN(1, 16, 4).state_dict()
        assert all(torch.equal(new_model(train, seed).state_dict()[k], v) for k, v in expected.items())
    a, b = new_model(train, seed=3), new_model(train, seed=3)
    train_model(a, train, epochs=1, batch_size=25, seed=3, progress=False)
    train_model(b, train, epochs=1, batch_size=25, seed=4, progress=False)
    assert not all(torch.equal(a.state_dict()[k], v) for k, v in b.state_dict().items())


def test_evaluate_and_predict_logits_by_hand():
    """A model that always answers class 0: its accuracy is the share of label 0, whatever the batch size, and
    predict_logits covers every input, also a last batch of one."""
    always_zero = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    with torch.no_grad():
        always_zero[1].weight.zero_()
        always_zero[1].bias.copy_(torch.tensor([1.0, 0.0, 0.0]))
    data = ImageDataset(torch.zeros(5, 1, 2, 2, dtype=torch.uint8), torch.tensor([0, 1, 0, 2, 0]), ["a", "b", "c"], "d")
    for batch_size in (1, 2, 5, 1000):
        assert evaluate(always_zero, data, batch_size=batch_size) == 3 / 5
    inputs = torch.rand(5, 1, 2, 2)
    assert torch.equal(predict_logits(always_zero, inputs, batch_size=4), always_zero(inputs).detach())


def test_evaluate_and_predict_logits_refuse_a_batch_size_that_is_no_positive_integer():
    # a negative one made no batch: evaluate read an accuracy of 0.0, predict_logits failed in torch.cat's words; 0
    # failed in range()'s
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    data = ImageDataset(torch.zeros(5, 1, 2, 2, dtype=torch.uint8), torch.tensor([0, 1, 0, 2, 0]), ["a", "b", "c"], "d")
    for batch_size in (-1, 0, 2.5, None):
        with pytest.raises(ValueError, match=re.escape(f"batch_size must be a positive integer, got {batch_size!r}")):
            evaluate(model, data, batch_size=batch_size)
        with pytest.raises(ValueError, match=re.escape(f"batch_size must be a positive integer, got {batch_size!r}")):
            predict_logits(model, torch.rand(5, 1, 2, 2), batch_size=batch_size)


def test_the_test_accuracy_is_the_test_sets():
    train = quadrants(60, seed=0)
    mislabelled = ImageDataset(train.images, (train.labels + 1) % 4, train.classes, "mislabelled")  # other accuracy
    model = new_model(train, seed=0)
    history = train_model(model, train, epochs=2, batch_size=20, progress=False, test=mislabelled)
    assert history["test_accuracy"] == evaluate(model, mislabelled) != evaluate(model, train)


def test_new_model_leaves_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(1)
    torch.manual_seed(123)
    new_model(quadrants(4, seed=0))
    assert torch.equal(torch.rand(1), expected)


def test_new_model_reseeds_no_cuda_generator_and_goes_to_the_default_device(monkeypatch):
    # torch.manual_seed also reseeds every CUDA generator (lazily where CUDA is not yet initialised), which
    # fork_rng(devices=[]) does not restore: a user's CUDA random stream restarted at each new_model
    monkeypatch.setattr(torch.cuda, "manual_seed_all", lambda seed: pytest.fail("reseeded the CUDA generators"))
    data = quadrants(4, seed=0)
    expected = new_model(data, seed=5).state_dict()
    assert all(torch.equal(new_model(data, seed=np.int64(5)).state_dict()[k], v) for k, v in expected.items())
    for seed in (5.7, "5", True, torch.tensor(True)):
        with pytest.raises(TypeError, match=re.escape(f"seed must be an integer, got {seed!r}")):
            new_model(data, seed=seed)
    made = []
    monkeypatch.setattr(torch.nn.Module, "to", lambda self, device: made.append((self, device)) or self)
    with torch.device("meta"):  # another default device: the model is made on the CPU, then moved there
        built = new_model(data, seed=5)
    assert made == [(built, torch.device("meta"))]
    assert all(torch.equal(built.state_dict()[k], v) for k, v in expected.items())


def test_training_sets_cudnns_mode_only_and_leaves_the_users_tf32_setting(monkeypatch):
    # torch.backends.cudnn.flags() also reset TF32 to on (and the benchmark limit) for the training: a user's
    # allow_tf32 = False was ignored, so "fp32" convolutions ran in TF32 on Ampere and later GPUs
    import rectgrad.train_many as grouped

    cudnn, seen = torch.backends.cudnn, []
    record = lambda: seen.append((cudnn.enabled, cudnn.benchmark, cudnn.deterministic, cudnn.allow_tf32))  # noqa: E731
    stacked = grouped._stacked_logits
    monkeypatch.setattr(grouped, "_stacked_logits", lambda *args: record() or stacked(*args))
    train = quadrants(20, seed=0)
    before = (cudnn.enabled, cudnn.benchmark, cudnn.deterministic, cudnn.allow_tf32)
    cudnn.allow_tf32 = False
    try:
        model = new_model(train)
        model.register_forward_pre_hook(lambda module, args: record())
        train_model(model, train, epochs=1, batch_size=20, progress=False)
        grouped.train_many([new_model(train)], [train], [0], epochs=1, batch_size=20, deterministic=False)
        after = (cudnn.enabled, cudnn.benchmark, cudnn.deterministic, cudnn.allow_tf32)
    finally:
        cudnn.allow_tf32 = before[3]
    assert seen == [(True, False, True, False), (True, True, False, False)]
    assert after == (*before[:3], False)


def test_bad_arguments():
    train = quadrants(8, seed=0)
    with pytest.raises(ValueError, match="empty"):
        train_model(new_model(train), train.subset(slice(0, 0)), progress=False)
    with pytest.raises(ValueError, match="positive"):
        train_model(new_model(train), train, epochs=0, progress=False)
    for name, value in (("epochs", 2.5), ("batch_size", "8"), ("seed", True)):
        with pytest.raises(TypeError, match=f"{name} must be an integer, got {value!r}"):
            train_model(new_model(train), train, progress=False, **{name: value})
    with pytest.raises(ValueError, match="PaperCNN needs square images, got 16x12"):
        new_model(train.with_images(train.images[..., :12].contiguous()))


def signal_at(calls: set, signum=signal.SIGINT):
    """A forward pre-hook sending ``signum`` to this process at the model's forward calls numbered in ``calls``
    (from 1), as a Ctrl-C or a ``kill`` would arrive during that step; counts the calls in ``hook.calls``."""
    def hook(module, args):
        hook.calls += 1
        if hook.calls in calls:
            os.kill(os.getpid(), signum)
    hook.calls = 0
    return hook


def interrupted_state(train, at: int, **arguments) -> bytes:
    """The state saved by training a new model (seed 3) on ``train`` with ``arguments`` (a ``checkpoint`` among them)
    until a Ctrl-C at its forward call ``at``."""
    model = new_model(train, seed=3)
    model.register_forward_pre_hook(signal_at({at}))
    with pytest.raises(TrainingInterrupted):
        train_model(model, train, **arguments)
    return arguments["checkpoint"].read_bytes()


def test_train_model_stopped_by_signals_resumes_bit_for_bit(tmp_path, monkeypatch):
    """Ctrl-C or SIGTERM saves the state after the current step (3 steps an epoch here); each rerun takes up where
    the last stopped, every step runs once in all, and the result is the uninterrupted training's, bit for bit."""
    train = quadrants(60, seed=0)
    straight = new_model(train, seed=3)
    expected = train_model(straight, train, epochs=3, batch_size=25, seed=3, progress=False)
    checkpoint = tmp_path / "model.unfinished.pt"
    steps = 0
    for signum, during, where in ((signal.SIGINT, 5, "at epoch 2/3, batch 2/3"),
                                  (signal.SIGTERM, 1, "at epoch 3/3, batch 0/3"),
                                  (signal.SIGINT, 3, "after the last batch")):
        model = new_model(train, seed=0 if checkpoint.exists() else 3)  # resumed: its weights come from the file
        hook = signal_at({during}, signum)
        model.register_forward_pre_hook(hook)
        with pytest.raises(TrainingInterrupted, match=f"stopped training {where}; its state is saved in "
                                                      f"{re.escape(str(checkpoint))}: run again to resume"):
            train_model(model, train, epochs=3, batch_size=25, seed=3, progress=False, checkpoint=checkpoint)
        assert checkpoint.is_file() and hook.calls == during
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handlers are given back
        steps += hook.calls
    assert steps == 9
    state = torch.load(checkpoint, weights_only=True)
    state["seconds"] = 1000.0  # the time the interrupted runs trained: counted in the resumed history
    torch.save(state, checkpoint)
    model = new_model(train, seed=0)
    hook = signal_at(set())
    model.register_forward_pre_hook(hook)
    bars = []
    start = time.perf_counter()
    monkeypatch.setattr(rectgrad.train, "progress_bar", lambda *a, **k: bars.append(k) or progress_bar(*a, **k))
    resumed = train_model(model, train, epochs=3, batch_size=25, seed=3, progress=True, checkpoint=checkpoint)
    assert bars[0]["initial"] == 9  # the bar starts where the training stopped: its rate counts this run only
    assert hook.calls == 0 and not checkpoint.exists()
    assert 1000.0 < resumed["seconds"] < 1000.0 + time.perf_counter() - start
    assert resumed["loss"] == expected["loss"] and resumed["train_accuracy"] == expected["train_accuracy"]
    assert all(torch.equal(value, model.state_dict()[key]) for key, value in straight.state_dict().items())


def test_train_model_refuses_another_trainings_state_and_starts_over_from_a_corrupt_one(tmp_path):
    train = quadrants(60, seed=0)
    checkpoint = tmp_path / "model.unfinished.pt"
    interrupted_state(train, 2, epochs=2, batch_size=25, seed=3, progress=False, checkpoint=checkpoint)
    for other, difference in ((dict(seed=4), "seed: 3 there, 4 here"), (dict(lr=0.01), "lr: 0.001 there, 0.01 here"),
                              (dict(train=quadrants(60, seed=1)), "other images or labels")):
        arguments = dict(train=train, epochs=2, batch_size=25, seed=3, progress=False, checkpoint=checkpoint) | other
        with pytest.raises(ValueError, match=f"holds the state of another training \\({difference}"):
            train_model(new_model(train, seed=3), **arguments)
    class Other(PaperCNN):  # the same weights' shapes, another model (its layers may differ without weights)
        pass

    with pytest.raises(ValueError, match="another training \\(model: 'PaperCNN' there, '.*Other' here\\)"):
        train_model(Other(1, 16, 4), train, epochs=2, batch_size=25, seed=3, progress=False, checkpoint=checkpoint)
    expected = train_model(new_model(train, seed=3), train, epochs=2, batch_size=25, seed=3, progress=False)
    checkpoint.write_bytes(checkpoint.read_bytes()[:-25])  # cut short
    with pytest.warns(RuntimeWarning, match="model.unfinished.pt is corrupt .*its training starts over"):
        again = train_model(new_model(train, seed=3), train, epochs=2, batch_size=25, seed=3, progress=False,
                            checkpoint=checkpoint)
    assert again["loss"] == expected["loss"] and not checkpoint.exists()


def foreign_bytes() -> list[bytes]:
    """Bytes that are no torch file or a damaged one, each failing torch.load its own way: a text file (KeyError on
    an unknown pickle opcode), one pickle byte (IndexError), a legacy torch file cut in its header (struct.error)."""
    legacy = io.BytesIO()
    torch.save({"a": torch.ones(3)}, legacy, _use_new_zipfile_serialization=False)
    return [b"hello world", b"\x80", legacy.getvalue()[:18]]


def test_a_file_that_is_no_torch_file_at_the_checkpoint_path_is_a_corrupt_state_to_start_over_from(tmp_path):
    train = quadrants(60, seed=0)
    expected = train_model(new_model(train, seed=3), train, epochs=1, batch_size=25, seed=3, progress=False)
    checkpoint = tmp_path / "model.unfinished.pt"
    for damaged in foreign_bytes():
        checkpoint.write_bytes(damaged)
        with pytest.warns(RuntimeWarning, match="model.unfinished.pt is corrupt .*its training starts over"):
            again = train_model(new_model(train, seed=3), train, epochs=1, batch_size=25, seed=3, progress=False,
                                checkpoint=checkpoint)
        assert again["loss"] == expected["loss"] and not checkpoint.exists()


def test_a_crash_loses_the_epoch_in_progress_at_most(tmp_path, monkeypatch):
    """Saved at each epoch's end (SAVE_EVERY 0 here), a training killed by an error (or kill -9) in epoch 3 resumes
    from epoch 3's start: 3 steps more, and the uninterrupted result bit for bit."""
    train = quadrants(60, seed=0)
    expected = new_model(train, seed=3)
    expected_history = train_model(expected, train, epochs=3, batch_size=25, seed=3, progress=False)
    monkeypatch.setattr(rectgrad.train, "SAVE_EVERY", 0.0)
    checkpoint = tmp_path / "m.unfinished.pt"

    def crash_at_the_eighth_step(module, args):
        crash_at_the_eighth_step.calls += 1
        if crash_at_the_eighth_step.calls == 8:
            raise RuntimeError("the machine went down")
    crash_at_the_eighth_step.calls = 0

    model = new_model(train, seed=3)
    model.register_forward_pre_hook(crash_at_the_eighth_step)
    with pytest.raises(RuntimeError, match="went down"):
        train_model(model, train, epochs=3, batch_size=25, seed=3, progress=False, checkpoint=checkpoint)
    assert torch.load(checkpoint, weights_only=True)["epoch"] == 2  # epochs 1 and 2 saved
    model = new_model(train, seed=0)
    hook = signal_at(set())
    model.register_forward_pre_hook(hook)
    history = train_model(model, train, epochs=3, batch_size=25, seed=3, progress=False, checkpoint=checkpoint)
    assert hook.calls == 3 and history["loss"] == expected_history["loss"] and not checkpoint.exists()
    assert all(torch.equal(value, model.state_dict()[key]) for key, value in expected.state_dict().items())


def test_a_failing_evaluation_or_save_keeps_the_trained_state(tmp_path, monkeypatch):
    """An error in the evaluation (out of memory) or in ``save`` (a full disk) keeps the trained state, with its
    training seconds only: the rerun trains nothing. numpy numbers as arguments resume too (weights_only loads), and
    a state written through a symbolic link is deleted through it."""
    train, test = quadrants(60, seed=0), quadrants(20, seed=1)
    checkpoint = tmp_path / "link.pt"
    checkpoint.symlink_to(tmp_path / "target.pt")
    arguments = dict(epochs=2, batch_size=np.int64(25), lr=np.float64(1e-3), seed=np.int64(3), progress=False,
                     test=test, checkpoint=checkpoint)
    expected = train_model(new_model(train, seed=3), train, epochs=2, batch_size=25, seed=3, progress=False, test=test)
    evaluate = rectgrad.train.evaluate

    def slow_out_of_memory(*a, **k):
        time.sleep(1.0)
        raise MemoryError("out of memory")

    monkeypatch.setattr(rectgrad.train, "evaluate", slow_out_of_memory)
    model, start = new_model(train, seed=3), time.perf_counter()
    with pytest.raises(MemoryError):
        train_model(model, train, **arguments)
    elapsed = time.perf_counter() - start
    state = torch.load(checkpoint, weights_only=True)
    # the training's seconds, not the evaluation's second (on a loaded machine too, where training takes seconds)
    assert state["epoch"] == 2 and state["seconds"] < elapsed - 0.9
    monkeypatch.setattr(rectgrad.train, "evaluate", evaluate)
    def full_disk(history):
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        train_model(new_model(train, seed=0), train, **arguments, save=full_disk)
    model = new_model(train, seed=0)
    hook = signal_at(set())
    model.register_forward_pre_hook(hook)
    saved = []
    history = train_model(model, train, **arguments, save=saved.append)
    assert hook.calls == 1 and saved == [history]  # one evaluation, no training step
    assert history["loss"] == expected["loss"] and history["test_accuracy"] == expected["test_accuracy"]
    assert checkpoint.is_symlink() and not (tmp_path / "target.pt").exists()


def test_a_signal_during_the_evaluation_or_the_save_loses_nothing(tmp_path):
    """Asked during the test evaluation, the trained state is saved (the rerun trains nothing); asked while ``save``
    writes the model, the request is honoured once it is written; a folder as the checkpoint is refused at once."""
    train, test = quadrants(60, seed=0), quadrants(20, seed=1)
    expected = new_model(train, seed=3)
    expected_history = train_model(expected, train, epochs=2, batch_size=25, seed=3, progress=False, test=test)
    checkpoint, saved = tmp_path / "m.unfinished.pt", []

    def in_evaluation(module, args):
        if not module.training:
            os.kill(os.getpid(), signal.SIGINT)

    model = new_model(train, seed=3)
    model.register_forward_pre_hook(in_evaluation)
    with pytest.raises(TrainingInterrupted, match="stopped training after the last batch"):
        train_model(model, train, epochs=2, batch_size=25, seed=3, progress=False, test=test, checkpoint=checkpoint,
                    save=saved.append)
    assert checkpoint.is_file() and saved == []
    model = new_model(train, seed=0)
    hook = signal_at(set())
    model.register_forward_pre_hook(hook)
    history = train_model(model, train, epochs=2, batch_size=25, seed=3, progress=False, test=test,
                          checkpoint=checkpoint, save=saved.append)
    assert hook.calls == 1 and saved == [history] and not checkpoint.exists()  # one evaluation, no training step
    assert history["loss"] == expected_history["loss"] and history["test_accuracy"] == expected_history["test_accuracy"]
    assert all(torch.equal(value, model.state_dict()[key]) for key, value in expected.state_dict().items())

    def slow_save(history):
        os.kill(os.getpid(), signal.SIGTERM)
        saved.append(history)  # still runs to its end

    with pytest.raises(TrainingInterrupted, match="stopped once the trained model was saved"):
        train_model(new_model(train, seed=3), train, epochs=1, batch_size=25, seed=3, progress=False,
                    checkpoint=checkpoint, save=slow_save)
    assert len(saved) == 2 and not checkpoint.exists()
    (tmp_path / "folder").mkdir()
    model = new_model(train, seed=3)
    model.register_forward_pre_hook(lambda *a: pytest.fail("trained before refusing the checkpoint"))
    with pytest.raises(ValueError, match="folder is a folder; give the path of a file to write"):
        train_model(model, train, epochs=1, progress=False, checkpoint=tmp_path / "folder")


def test_cli_train_resumes_after_ctrl_c(tmp_path, monkeypatch, capsys):
    write_fashion(tmp_path)
    args = ["train", "--dataset", "fashion-mnist", "--data-dir", str(tmp_path), "--epochs", "2", "--batch-size", "50",
            "--device", "cpu", "--no-progress"]
    assert main(args + ["--out", str(tmp_path / "straight.pt")]) == 0
    hook = signal_at({6})  # epoch 2, batch 2 of 4
    forward = PaperCNN.forward
    monkeypatch.setattr(PaperCNN, "forward", lambda self, x: hook(self, x) or forward(self, x))
    out = tmp_path / "model.pt"
    capsys.readouterr()
    assert main(args + ["--out", str(out)]) == 130
    unfinished = tmp_path / "model.unfinished.pt"
    assert capsys.readouterr().err == (f"stopped training at epoch 2/2, batch 2/4; its state is saved in {unfinished}: "
                                       "run the same command again to resume\ninterrupted\n")
    assert unfinished.is_file() and not out.exists()
    assert main(args + ["--out", str(out)]) == 0
    assert hook.calls == 6 + 2 + 1 and not unfinished.exists()  # the 8 batches once, then the test set
    (a, meta_a), (b, meta_b) = load_checkpoint(tmp_path / "straight.pt"), load_checkpoint(out)
    assert meta_a["train_loss"] == meta_b["train_loss"] and meta_a["test_accuracy"] == meta_b["test_accuracy"]
    assert all(torch.equal(value, b.state_dict()[key]) for key, value in a.state_dict().items())


def write_fashion(folder, n_train=200, n_test=100):
    """Fashion-MNIST-format idx files holding the learnable quadrant images at 28x28."""
    for split, n, seed in [("train", n_train, 0), ("test", n_test, 1)]:
        ds = quadrants(n, seed, size=28)
        (image_file, _), (label_file, _) = data.FASHION_MNIST_FILES[split]
        for name, array in [(image_file, ds.images[:, 0].numpy()), (label_file, ds.labels.numpy().astype(np.uint8))]:
            header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
            (folder / name).write_bytes(gzip.compress(header + array.tobytes()))


def test_cli_train_writes_a_loadable_checkpoint(tmp_path, capsys):
    write_fashion(tmp_path)
    out = tmp_path / "model.pt"
    args = ["train", "--dataset", "fashion-mnist", "--data-dir", str(tmp_path), "--epochs", "1",
            "--batch-size", "20", "--seed", "1", "--device", "cpu", "--no-progress"]
    assert main(args + ["--out", str(out)]) == 0
    assert "test accuracy" in capsys.readouterr().out
    model, meta = load_checkpoint(out)
    assert meta["dataset"] == "fashion-mnist" and meta["patch"] is None and meta["epochs"] == 1
    assert meta["seed"] == 1 and meta["test_accuracy"] > 0.4 and meta["classes"][0] == "T-shirt/top"
    assert model.config() == {"in_channels": 1, "image_size": 28, "num_classes": 10}
    assert not load_model(out).training

    assert main(args + ["--patch", "--out", str(tmp_path / "patch.pt")]) == 0
    assert load_checkpoint(tmp_path / "patch.pt")[1]["patch"] == {"size": 10, "seed": 100}


def test_cli_train_user_errors(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(data, "FASHION_MNIST_SYSTEM_DIR", tmp_path / "none")
    monkeypatch.setenv("RECTGRAD_DATA", str(tmp_path / "cache"))
    out = str(tmp_path / "m.pt")
    assert main(["train", "--dataset", "imagenet", "--out", out]) == 2
    assert "unknown dataset 'imagenet'; known" in capsys.readouterr().err
    assert main(["train", "--dataset", "fashion_mnist", "--out", out]) == 2
    assert "unknown dataset 'fashion_mnist' (did you mean 'fashion-mnist'?); known" in capsys.readouterr().err
    assert main(["train", "--dataset", "fashion-mnist", "--data-dir", str(tmp_path), "--out", out]) == 2
    assert "apt-get install dataset-fashion-mnist" in capsys.readouterr().err
    assert main(["train", "--dataset", "fashion-mnist", "--out", str(tmp_path / "m.png")]) == 2
    assert f"--out must name a .pt / .pth / .ckpt file, got {tmp_path / 'm.png'}" in capsys.readouterr().err
    (tmp_path / "folder.pt").mkdir()
    assert main(["train", "--dataset", "fashion-mnist", "--out", str(tmp_path / "folder.pt")]) == 2
    assert "--out " + str(tmp_path / "folder.pt") + " is a folder; give a file name" in capsys.readouterr().err
    (tmp_path / "file").write_text("")
    assert main(["train", "--dataset", "fashion-mnist", "--out", str(tmp_path / "file" / "m.pt")]) == 2
    assert "file is a file, not a folder" in capsys.readouterr().err
    assert main(["train", "--dataset", "fashion-mnist", "--data-dir", str(tmp_path / "file"), "--out", out]) == 2
    assert f"error: --data-dir {tmp_path / 'file'} is a file; give the folder that holds it" in capsys.readouterr().err
    assert main(["train", "--dataset", "fashion-mnist", "--device", "tpu", "--out", out]) == 2
    assert "--device" in capsys.readouterr().err
    os.mkfifo(tmp_path / "pipe.pt")
    assert main(["train", "--dataset", "fashion-mnist", "--out", str(tmp_path / "pipe.pt")]) == 2
    assert "is not a regular file" in capsys.readouterr().err and (tmp_path / "pipe.pt").is_fifo()
    (tmp_path / "link.pt").symlink_to("/proc/m.pt")  # the link's folder is writable, its target's is not
    assert main(["train", "--dataset", "fashion-mnist", "--out", str(tmp_path / "link.pt")]) == 2
    assert f"--out {tmp_path / 'link.pt'}: cannot write in /proc" in capsys.readouterr().err
    long = "m" * 245 + ".pt"  # fits, but its state file m...m.unfinished.pt would not: refused before training
    assert main(["train", "--dataset", "fashion-mnist", "--out", str(tmp_path / long)]) == 2
    assert (f"error: --out's state file {tmp_path / long[:-3]}.unfinished.pt: the name mmmmmmmmmmmmmmmmmmmm... is "
            f"259 bytes long; the file system of {tmp_path} allows at most 255") in capsys.readouterr().err
    for option, value, message in [("--lr", "inf", "--lr must be a finite positive number"),
                                   ("--lr", "0", "--lr must be a finite positive number"),
                                   ("--epochs", "0", "--epochs must be a positive integer"),
                                   ("--batch-size", "0", "--batch-size must be a positive integer"),
                                   ("--seed", str(2**64), "--seed must be an integer in")]:
        assert main(["train", "--dataset", "fashion-mnist", "--out", out, option, value]) == 2
        assert message in capsys.readouterr().err


def test_progress_bars_redraw_live_on_a_terminal_and_seldom_into_a_log(monkeypatch):
    import sys

    from rectgrad.progress import LOG_INTERVAL, progress_bar

    assert progress_bar(10, "off", enabled=False) is None
    logged = progress_bar(10, "log", unit="image", initial=3)  # pytest's captured stderr: not a terminal
    assert (logged.mininterval, logged.n, logged.unit) == (LOG_INTERVAL, 3, "image")
    logged.close()
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    live = progress_bar(10, "live")
    assert live.mininterval < 1
    live.close()


def test_a_training_logged_to_a_file_redraws_its_bar_rarely(capsys, monkeypatch):
    # a log (stderr not a terminal): the bar at most every 30 s, not at each loss update (every 50 batches); tqdm's
    # clock reads 0.1 s more at each look, so a slow or loaded machine cannot pass 30 s within the 120 steps
    clock = itertools.count(step=0.1)
    monkeypatch.setattr(tqdm.std, "time", lambda: next(clock))
    images = torch.randint(0, 256, (120, 1, 8, 8), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    dataset = ImageDataset(images, torch.arange(120) % 2, ["a", "b"], "tiny")
    train_model(new_model(dataset, 0), dataset, epochs=1, batch_size=1, progress=True)  # 120 steps: 3 updates
    assert capsys.readouterr().err.count("\r") <= 2  # its first and its last drawing


def test_the_defaults_are_the_papers_adam_at_1e_3_in_batches_of_100_for_20_epochs_with_seed_0():
    """Appendix F.2: 101 images make a batch of 100 and one of 1 in each of 20 epochs, and the defaults train as
    lr=1e-3, seed=0 given explicitly do, bit for bit."""
    train = quadrants(101, seed=0, size=4)  # (4 x 4 images: fast)
    model, sizes = new_model(train, seed=0), []
    model.register_forward_pre_hook(lambda module, args: sizes.append(len(args[0])))
    history = train_model(model, train, progress=False)
    assert sizes == [100, 1] * 20 and len(history["loss"]) == len(history["train_accuracy"]) == 20
    explicit = new_model(train, seed=0)
    train_model(explicit, train, epochs=20, batch_size=100, lr=1e-3, seed=0, progress=False)
    assert all(torch.equal(value, model.state_dict()[key]) for key, value in explicit.state_dict().items())


def test_training_runs_in_channels_last_format_only_when_asked():
    images = quadrants(20, seed=0)
    train = ImageDataset(images.images.repeat(1, 3, 1, 1), images.labels, images.classes, "rgb quadrants")
    for channels_last in (True, False):
        model, formats = new_model(train), []
        model.register_forward_pre_hook(lambda module, args: formats.append(
            (args[0].is_contiguous(memory_format=torch.channels_last), args[0].is_contiguous(),
             module.features[0].weight.is_contiguous(memory_format=torch.channels_last))))
        train_model(model, train, epochs=1, batch_size=10, progress=False, channels_last=channels_last)
        assert formats == [(channels_last, not channels_last, channels_last)] * 2
        assert all(p.is_contiguous() for p in model.parameters())  # handed back in the default format


def test_a_model_given_in_eval_mode_trains_in_training_mode_and_comes_back_in_eval_mode():
    train = quadrants(20, seed=0)
    model, modes = new_model(train).eval(), []
    model.register_forward_pre_hook(lambda module, args: modes.append(module.training))
    train_model(model, train, epochs=1, batch_size=10, progress=False)  # no test set: no evaluation sets eval mode
    assert modes == [True, True] and not any(m.training for m in model.modules())


def test_evaluate_puts_the_model_in_eval_mode_and_gives_0_for_an_empty_set():
    class AnswersByMode(torch.nn.Module):
        """Class 0 in eval mode, class 1 in training mode."""

        def __init__(self):
            super().__init__()
            self.unused = torch.nn.Parameter(torch.zeros(()))

        def forward(self, x):
            return torch.nn.functional.one_hot(torch.full((len(x),), int(self.training)), 2).float()

    data = ImageDataset(torch.zeros(4, 1, 2, 2, dtype=torch.uint8), torch.tensor([0, 0, 0, 1]), ["a", "b"], "d")
    model = AnswersByMode().train()
    assert evaluate(model, data) == 3 / 4 and not model.training
    assert evaluate(model, data.subset(slice(0, 0))) == 0.0


def test_evaluating_restores_each_modules_own_mode_also_on_error():
    from rectgrad.train import evaluating

    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout()).train()
    model[1].eval()
    with pytest.raises(RuntimeError, match="inside"):
        with evaluating(model):
            assert not any(m.training for m in model.modules())
            raise RuntimeError("inside")
    assert [m.training for m in model.modules()] == [True, True, False]


def test_bad_batch_sizes_and_epochs_are_refused_by_name():
    train = quadrants(8, seed=0)
    for epochs, batch_size in ((0, 4), (-1, 4), (2, 0), (2, -1)):
        with pytest.raises(ValueError, match=f"epochs and batch_size must be positive, got {epochs} and {batch_size}"):
            train_model(new_model(train), train, epochs=epochs, batch_size=batch_size, progress=False)


def test_a_nan_inf_or_negative_lr_is_refused_before_the_model_is_touched():
    """Adam refused NaN and -1 only once the model was in training mode (and channels-last), and trained inf into NaN
    weights; train_model and train_many refuse each before any work, the model left in eval mode and unchanged."""
    from rectgrad.train_many import train_many

    train = quadrants(8, seed=0)
    for lr in (float("nan"), float("inf"), float("-inf"), -1.0):
        model = new_model(train).eval()
        before = {k: v.clone() for k, v in model.state_dict().items()}
        with pytest.raises(ValueError, match=re.escape(f"lr must be a finite number >= 0, got {lr}")):
            train_model(model, train, epochs=1, batch_size=4, lr=lr, progress=False)
        with pytest.raises(ValueError, match=re.escape(f"lr must be a finite number >= 0, got {lr}")):
            train_many([model, model], [train, train], [0, 1], epochs=1, batch_size=4, lr=lr, progress=False)
        assert not model.training and all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_an_lr_that_is_no_number_is_refused_by_name():
    # float()'s own words named neither the option nor what it takes ("could not convert string to float: 'fast'",
    # "float() argument must be a string or a real number, not 'NoneType'")
    from rectgrad.train_many import train_many

    train = quadrants(8, seed=0, size=8)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 4))
    for lr in ("fast", None, [1e-3]):
        with pytest.raises((TypeError, ValueError), match=re.escape(f"lr must be a finite number >= 0, got {lr!r}")):
            train_model(model, train, epochs=1, batch_size=4, lr=lr, progress=False)
        with pytest.raises((TypeError, ValueError), match=re.escape(f"lr must be a finite number >= 0, got {lr!r}")):
            train_many([new_model(train), new_model(train)], [train, train], [0, 1], epochs=1, batch_size=4, lr=lr)


def test_a_seed_torch_cannot_take_is_refused_by_name_before_the_model_is_touched():
    # torch.Generator.manual_seed's "Overflow when unpacking long long" named no seed; train_model raised it once the
    # model was moved and in training mode
    train = quadrants(8, seed=0, size=8)
    for seed in (2**64, -2**63 - 1):
        with pytest.raises(ValueError, match=re.escape(f"seed must be an integer in [-2**63, 2**64), got {seed}")):
            new_model(train, seed=seed)
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 4)).eval()
        with pytest.raises(ValueError, match=re.escape(f"seed must be an integer in [-2**63, 2**64), got {seed}")):
            train_model(model, train, epochs=1, batch_size=4, seed=seed, progress=False)
        assert not model.training
    assert train_model(model, train, epochs=1, batch_size=4, seed=2**64 - 1, progress=False)["loss"]  # torch's largest


def test_the_state_is_saved_when_save_every_seconds_have_passed_since_the_last_save(tmp_path, monkeypatch):
    """A clock at 40 s an epoch and SAVE_EVERY 60: saved after epoch 2 (80 s since the start) and epoch 4 (80 s since
    that save) of 5, with the seconds trained so far; the history counts the clock's 200 s."""
    import types

    clock, saved = [0.0], []
    monkeypatch.setattr(rectgrad.train, "time", types.SimpleNamespace(perf_counter=lambda: clock[0]))
    monkeypatch.setattr(rectgrad.train, "SAVE_EVERY", 60.0)
    write = rectgrad.train.write_atomically

    def recording(path, writer):
        write(path, writer)
        state = torch.load(path, weights_only=True)
        saved.append((state["epoch"], state["step"], state["seconds"]))

    monkeypatch.setattr(rectgrad.train, "write_atomically", recording)
    train = quadrants(50, seed=0)
    model = new_model(train, seed=3)
    model.register_forward_pre_hook(lambda module, args: clock.__setitem__(0, clock[0] + 20.0))  # 2 steps an epoch
    history = train_model(model, train, epochs=5, batch_size=25, seed=3, progress=False,
                          checkpoint=tmp_path / "m.unfinished.pt")
    assert saved == [(2, 0, 80.0), (4, 0, 160.0)] and history["seconds"] == 200.0
    assert not (tmp_path / "m.unfinished.pt").exists()


def test_a_kill_during_the_evaluation_resumes_from_the_last_epoch_saved_with_its_seconds(tmp_path, monkeypatch):
    """SAVE_EVERY 0: a kill (kill -9: no handler runs, a BaseException here) during the test evaluation leaves the state
    of an epoch's end with the seconds trained until then; the rerun trains the rest and ends as the straight run."""
    class Killed(BaseException):
        pass

    train, test = quadrants(60, seed=0), quadrants(20, seed=1)
    expected = train_model(new_model(train, seed=3), train, epochs=3, batch_size=25, seed=3, progress=False, test=test)
    monkeypatch.setattr(rectgrad.train, "SAVE_EVERY", 0.0)
    checkpoint = tmp_path / "m.unfinished.pt"
    evaluate = rectgrad.train.evaluate

    def killed(*args, **kwargs):
        raise Killed

    monkeypatch.setattr(rectgrad.train, "evaluate", killed)
    start = time.perf_counter()
    with pytest.raises(Killed):
        train_model(new_model(train, seed=3), train, epochs=3, batch_size=25, seed=3, progress=False, test=test,
                    checkpoint=checkpoint)
    elapsed = time.perf_counter() - start
    state = torch.load(checkpoint, weights_only=True)
    assert 0 < state["seconds"] < elapsed and len(state["losses"]) == state["epoch"]
    monkeypatch.setattr(rectgrad.train, "evaluate", evaluate)
    model = new_model(train, seed=0)
    hook = signal_at(set())
    model.register_forward_pre_hook(hook)
    history = train_model(model, train, epochs=3, batch_size=25, seed=3, progress=False, test=test,
                          checkpoint=checkpoint)
    assert hook.calls == 3 * (3 - state["epoch"]) + 1 and history["seconds"] > state["seconds"]
    assert history["loss"] == expected["loss"] and history["test_accuracy"] == expected["test_accuracy"]


def test_a_state_is_refused_by_a_training_with_other_epochs_batch_size_format_labels_or_weights(tmp_path):
    train = quadrants(60, seed=0)
    checkpoint = tmp_path / "m.unfinished.pt"
    arguments = dict(epochs=2, batch_size=25, seed=3, progress=False, checkpoint=checkpoint)
    state = interrupted_state(train, 2, **arguments)
    relabelled = ImageDataset(train.images, (train.labels + 1) % 4, train.classes, train.name)  # the same images
    for model, dataset, other, difference in (
            (new_model(train), train, dict(epochs=3), "epochs: 2 there, 3 here"),
            (new_model(train), train, dict(batch_size=20), "batch_size: 25 there, 20 here"),
            (new_model(train), train, dict(channels_last=False), "channels_last: True there, False here"),
            (new_model(train), relabelled, {}, "other images or labels"),
            (PaperCNN(1, 16, 5), train, {}, "weights' shapes: classifier.3.weight [4, 256] there, [5, 256] here, "
                                            "classifier.3.bias [4] there, [5] here)")):
        with pytest.raises(ValueError, match=f"holds the state of another training \\({re.escape(difference)}"):
            train_model(model, dataset, **(arguments | other))
    assert checkpoint.read_bytes() == state  # kept for the training it belongs to


def test_a_second_signal_interrupts_at_once_without_saving(tmp_path):
    train = quadrants(60, seed=0)
    checkpoint = tmp_path / "m.unfinished.pt"

    def twice(module, args):
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGTERM)

    model = new_model(train, seed=3)
    model.register_forward_pre_hook(twice)
    with pytest.raises(KeyboardInterrupt) as caught:
        train_model(model, train, epochs=1, batch_size=25, seed=3, progress=False, checkpoint=checkpoint)
    assert type(caught.value) is KeyboardInterrupt and not checkpoint.exists()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handlers are given back


def test_a_training_with_a_checkpoint_runs_in_another_thread_too(tmp_path):
    """Signal handlers can be set in the main thread only: elsewhere the training runs without them."""
    import threading

    train, results = quadrants(20, seed=0), []

    def work():
        try:
            results.append(train_model(new_model(train), train, epochs=1, batch_size=10, progress=False,
                                       checkpoint=tmp_path / "m.unfinished.pt"))
        except Exception as exc:  # noqa: BLE001 - handed to the main thread's assertion
            results.append(exc)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert isinstance(results[0], dict) and len(results[0]["loss"]) == 1, results
    assert not (tmp_path / "m.unfinished.pt").exists()


def test_a_signal_during_the_last_step_stops_before_the_evaluation(tmp_path):
    train, test = quadrants(60, seed=0), quadrants(20, seed=1)
    model = new_model(train, seed=3)
    hook = signal_at({6})  # the last of 2 x 3 steps
    model.register_forward_pre_hook(hook)
    with pytest.raises(TrainingInterrupted, match="stopped training after the last batch"):
        train_model(model, train, epochs=2, batch_size=25, seed=3, progress=False, test=test,
                    checkpoint=tmp_path / "m.unfinished.pt")
    assert hook.calls == 6  # the test set not evaluated: the rerun does it


def test_a_progress_bar_resumed_in_an_epoch_starts_at_the_steps_done(tmp_path, monkeypatch):
    train = quadrants(60, seed=0)
    checkpoint = tmp_path / "m.unfinished.pt"
    model = new_model(train, seed=3)
    model.register_forward_pre_hook(signal_at({5}))
    with pytest.raises(TrainingInterrupted, match="at epoch 2/3, batch 2/3"):
        train_model(model, train, epochs=3, batch_size=25, seed=3, progress=False, checkpoint=checkpoint)
    bars = []
    monkeypatch.setattr(rectgrad.train, "progress_bar", lambda *a, **k: bars.append((a[0], k["initial"])))
    train_model(new_model(train), train, epochs=3, batch_size=25, seed=3, progress=True, checkpoint=checkpoint)
    assert bars == [(9, 5)]  # of 3 x 3 steps, 5 done


def test_a_state_that_is_no_trainings_or_cannot_be_read_is_never_overwritten(tmp_path, monkeypatch):
    import builtins
    import io

    train = quadrants(20, seed=0)
    checkpoint = tmp_path / "m.unfinished.pt"
    for other in ({"model": {}}, torch.zeros(3)):  # another torch file given as the checkpoint by mistake
        torch.save(other, checkpoint)
        written = checkpoint.read_bytes()
        with pytest.raises(ValueError, match="m.unfinished.pt is a torch file but not the saved state of a train_model "
                                             "training: give another checkpoint path"):
            train_model(new_model(train), train, epochs=1, progress=False, checkpoint=checkpoint)
        assert checkpoint.read_bytes() == written
    checkpoint.unlink()
    state = interrupted_state(train, 1, epochs=2, batch_size=10, seed=3, progress=False, checkpoint=checkpoint)
    real_open = io.open

    def unreadable(file, *args, **kwargs):  # as chmod 000 would make it for a user other than root
        if isinstance(file, (str, os.PathLike)) and os.fspath(file) == str(checkpoint):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", unreadable)
    monkeypatch.setattr(io, "open", unreadable)
    with pytest.raises(PermissionError):  # not taken for a corrupt state to start over from (and overwrite)
        train_model(new_model(train), train, epochs=2, batch_size=10, seed=3, progress=False, checkpoint=checkpoint)
    monkeypatch.undo()
    assert checkpoint.read_bytes() == state


def test_a_state_cut_short_or_damaged_inside_starts_over_with_a_warning(tmp_path):
    train = quadrants(60, seed=0)
    checkpoint = tmp_path / "m.unfinished.pt"
    arguments = dict(epochs=2, batch_size=25, seed=3, progress=False, checkpoint=checkpoint)
    state = interrupted_state(train, 2, **arguments)
    expected = train_model(new_model(train, seed=3), train, epochs=2, batch_size=25, seed=3, progress=False)
    at = state.index(b"identity")  # a key's name in the pickle: a flipped byte there is no UTF-8
    for damaged in (b"", state[:5000], state[:len(state) // 2], state[:at] + b"\xff" + state[at + 1:]):
        checkpoint.write_bytes(damaged)
        with pytest.warns(RuntimeWarning, match="m.unfinished.pt is corrupt .*its training starts over"):
            again = train_model(new_model(train, seed=3), train, **arguments)
        assert again["loss"] == expected["loss"] and not checkpoint.exists()


def test_the_train_command_is_train_model_on_the_loaded_sets_with_every_option_given(tmp_path, monkeypatch, capsys):
    """``rectgrad train`` loads the train and the test split with --data-dir, --download and --progress (at the default
    size 32), trains new_model(train, --seed) with train_model and each option (none at its default here), tests on the
    test split and saves what it trained with the metadata of that very run; the same training by hand gives the same
    weights bit for bit. The test split's labels are shifted, so its accuracy is not the training set's; --device
    cpu:0 (passed on as given) tells the device given from a plain "cpu"."""
    from rectgrad.data import load_dataset

    write_fashion(tmp_path, n_train=16, n_test=12)
    _, (label_file, _) = data.FASHION_MNIST_FILES["test"]
    shifted = ((quadrants(12, 1, size=28).labels + 1) % 4).numpy().astype(np.uint8)  # write_fashion's test labels + 1
    header = bytes([0, 0, 8, 1]) + (12).to_bytes(4, "big")
    (tmp_path / label_file).write_bytes(gzip.compress(header + shifted.tobytes()))
    loads, trainings = [], []
    monkeypatch.setattr(data, "load_dataset", lambda *a, **k: loads.append((a, k)) or load_dataset(*a, **k))
    real_train_model = rectgrad.train.train_model
    monkeypatch.setattr(rectgrad.train, "train_model",
                        lambda model, train, **k: trainings.append((train, k)) or real_train_model(model, train, **k))
    out = tmp_path / "m.pth"
    assert main(["train", "--dataset", "fashion-mnist", "--data-dir", str(tmp_path), "--epochs", "2", "--batch-size",
                 "10", "--lr", "0.004", "--seed", "2", "--device", "cpu:0", "--download", "--progress",
                 "--out", str(out)]) == 0
    assert loads == [(("fashion-mnist", split), dict(data_dir=tmp_path, download=True, image_size=32, progress=True))
                     for split in ("train", "test")]
    train, test = load_dataset("fashion-mnist", "train", data_dir=tmp_path), load_dataset("fashion-mnist", "test",
                                                                                          data_dir=tmp_path)
    (trained_on, arguments), = trainings
    assert torch.equal(trained_on.images, train.images) and torch.equal(arguments["test"].labels, test.labels)
    assert (arguments["epochs"], arguments["batch_size"], arguments["lr"], arguments["seed"], arguments["device"],
            arguments["progress"]) == (2, 10, 0.004, 2, "cpu:0", True)
    assert arguments["checkpoint"] == tmp_path / "m.unfinished.pth"
    model = new_model(train, seed=2)
    history = real_train_model(model, train, epochs=2, batch_size=10, lr=0.004, seed=2, progress=False, test=test)
    saved, meta = load_checkpoint(out)
    assert all(torch.equal(value, saved.state_dict()[key]) for key, value in model.state_dict().items())
    assert history["test_accuracy"] == evaluate(model, test) != evaluate(model, train)
    assert (meta["epochs"], meta["batch_size"], meta["lr"], meta["seed"], meta["device"]) == (2, 10, 0.004, 2, "cpu:0")
    assert (meta["test_accuracy"], meta["train_loss"], meta["train_accuracy"]) == \
        (history["test_accuracy"], history["loss"], history["train_accuracy"])
    assert meta["classes"] == train.classes and meta["patch"] is None and meta["dataset"] == "fashion-mnist"
    assert f"test accuracy {history['test_accuracy']:.4f} after 2 epochs (" in capsys.readouterr().out


def test_the_train_command_with_patch_trains_and_tests_on_patched_images(tmp_path, monkeypatch):
    """--patch pastes RandomPatch() (10x10, seed 100) on the images of both splits before the training."""
    from rectgrad.data import RandomPatch, load_dataset

    write_fashion(tmp_path, n_train=20, n_test=10)
    trainings, history = [], {"test_accuracy": 0.5, "loss": [1.0], "train_accuracy": [0.5], "seconds": 1.0}
    monkeypatch.setattr(rectgrad.train, "train_model", lambda model, train, **k: trainings.append((train, k["test"]))
                        or k["save"](history) or history)  # (no training: the images it is given are checked)
    out = tmp_path / "m.pt"
    assert main(["train", "--dataset", "fashion-mnist", "--data-dir", str(tmp_path), "--epochs", "1", "--patch",
                 "--device", "cpu", "--no-progress", "--out", str(out)]) == 0
    (train, test), = trainings
    for split, used in (("train", train), ("test", test)):
        plain = load_dataset("fashion-mnist", split, data_dir=tmp_path)
        assert torch.equal(used.images, RandomPatch(10, 100)(plain.images)) and torch.equal(used.labels, plain.labels)
    assert load_checkpoint(out)[1]["patch"] == {"size": 10, "seed": 100}


def test_bars_count_their_total_under_their_name_and_stay_on_request(monkeypatch):
    """The bar's total, description, unit, start and ``leave`` are the ones asked for; in a log it redraws at least
    every 2 x 30 s (tqdm's maxinterval: a slow step still shows up), live its width follows the terminal; bars of
    nested work (leave=False) go away when done."""
    from rectgrad.progress import LOG_INTERVAL

    assert LOG_INTERVAL == 30.0  # the "at most every 30 s" of the docs
    logged = progress_bar(7, "train x", unit="batch", initial=2, leave=False)
    assert (logged.total, logged.desc, logged.unit, logged.n, logged.leave) == (7, "train x", "batch", 2, False)
    assert (logged.mininterval, logged.maxinterval, bool(logged.dynamic_ncols)) == (30.0, 60.0, True)
    logged.close()
    kept = progress_bar(3, "kept")
    assert (kept.leave, kept.unit, kept.n) == (True, "item", 0)
    kept.close()


def test_bars_in_a_notebook_redraw_live(monkeypatch):
    # a notebook's stderr is no terminal, yet its widget bar is redrawn in place: no 30 s throttle there
    import tqdm.auto
    import tqdm.std

    class NotebookBar(tqdm.std.tqdm):
        pass

    NotebookBar.__module__ = "tqdm.notebook"
    monkeypatch.setattr(tqdm.auto, "tqdm", NotebookBar)
    bar = progress_bar(5, "cell")
    assert isinstance(bar, NotebookBar) and bar.mininterval < 1 and bar.maxinterval != 60.0
    bar.close()


def test_the_papers_cnn_has_the_papers_layers():
    """Appendix F.2 (REFERENCE-NOTES): conv3x3(32)-relu, conv3x3(32)-relu, maxpool2, conv3x3(64)-relu, conv3x3(64)-relu,
    maxpool2, dense(256)-relu, dense(classes); SAME (zero) padding, stride 1 and biases everywhere."""
    from torch import nn

    def layer(module):
        if isinstance(module, nn.Conv2d):
            return ("conv", module.in_channels, module.out_channels, module.kernel_size, module.stride, module.padding,
                    module.dilation, module.groups, module.padding_mode, module.bias is not None)
        if isinstance(module, nn.Linear):
            return ("dense", module.in_features, module.out_features, module.bias is not None)
        if type(module) is nn.MaxPool2d:
            return ("maxpool", module.kernel_size, module.stride, module.padding, module.dilation)
        return type(module).__name__

    def conv(c_in, c_out):
        return ("conv", c_in, c_out, (3, 3), (1, 1), (1, 1), (1, 1), 1, "zeros", True)

    for channels, size, classes in ((3, 32, 10), (1, 28, 10), (2, 12, 3)):
        model = PaperCNN(channels, size, classes)
        side = size // 4
        assert [layer(m) for m in model.features] == [
            conv(channels, 32), "ReLU", conv(32, 32), "ReLU", ("maxpool", 2, 2, 0, 1),
            conv(32, 64), "ReLU", conv(64, 64), "ReLU", ("maxpool", 2, 2, 0, 1)]
        assert [layer(m) for m in model.classifier] == [
            "Flatten", ("dense", 64 * side * side, 256, True), "ReLU", ("dense", 256, classes, True)]
        assert model(torch.rand(2, channels, size, size)).shape == (2, classes)
        assert model.config() == {"in_channels": channels, "image_size": size, "num_classes": classes}
        # ceil_mode cannot matter: every pooled side is even
        assert model.features[:5](torch.rand(1, channels, size, size)).shape == (1, 32, size // 2, size // 2)


def test_the_papers_cnn_refuses_a_side_that_two_pools_do_not_halve_twice():
    for size in (30, 14, 6, 29):  # 30 and 14: even, yet the second pool would drop a row (7 -> 3, 15 -> 7)
        with pytest.raises(ValueError, match=f"image_size must be divisible by 4 \\(two 2x2 max-pools\\), got {size}"):
            PaperCNN(1, size, 10)


def test_layer_listings_ignore_inplace_flags_only():
    from torch import nn

    from rectgrad.models import architecture

    for inplace in (nn.ReLU(inplace=True), nn.Hardtanh(-2.0, 2.0, inplace=True), nn.LeakyReLU(0.2, inplace=True)):
        plain = type(inplace)(*[getattr(inplace, a) for a in ("min_val", "max_val", "negative_slope")
                               if hasattr(inplace, a)])
        assert architecture(nn.Sequential(nn.Linear(2, 2), inplace)) == architecture(nn.Sequential(nn.Linear(2, 2),
                                                                                                   plain))
        assert "inplace" not in architecture(inplace) and architecture(inplace).endswith(")")
    assert architecture(nn.LeakyReLU(0.2)) != architecture(nn.LeakyReLU(0.3))
    assert architecture(PaperCNN(1, 8, 2)) != architecture(PaperCNN(1, 8, 3))


def test_train_many_stopped_with_numpy_settings_resumes_instead_of_starting_over(tmp_path):
    """numpy numbers as epochs, batch size and lr (a config read with numpy) are saved as Python numbers: the state
    loads with weights_only, and the rerun resumes instead of warning 'corrupt' and training again from scratch."""
    from rectgrad.train_many import train_many

    train, checkpoint = quadrants(40, seed=0), tmp_path / "group.pt"
    arguments = dict(epochs=np.int64(2), batch_size=np.int64(20), lr=np.float64(1e-3), checkpoint=checkpoint)
    expected = train_many([new_model(train, 0)], [train], [0], **(arguments | dict(checkpoint=None)))
    checks = iter(range(100))
    with pytest.raises(TrainingInterrupted):
        train_many([new_model(train, 0)], [train], [0], stop=lambda: next(checks) == 2, **arguments)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not 'corrupt: starts over'
        resumed = train_many([new_model(train, 0)], [train], [0], **arguments)
    assert resumed[0]["loss"] == expected[0]["loss"] and not checkpoint.exists()


def test_a_refused_state_leaves_the_model_as_it_was_and_names_only_the_differing_weights(tmp_path):
    """Another training's state is refused before the user's model is moved, put in channels-last or in training
    mode; weights of other shapes are named one by one (not two lists of every tensor); a state another version or
    train_many wrote is named as such, not as another training with its settings 'None there'."""
    train, checkpoint = quadrants(40, seed=0), tmp_path / "model.unfinished.pt"
    interrupted_state(train, 1, epochs=1, batch_size=20, progress=False, checkpoint=checkpoint)
    wider = ImageDataset(train.images, train.labels, ["tl", "tr", "bl", "br", "none"], "quadrants")
    model = new_model(wider, seed=0).eval()
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError) as refused:
        train_model(model, wider, epochs=1, batch_size=20, progress=False, checkpoint=checkpoint)
    assert str(refused.value).endswith("(weights' shapes: classifier.3.weight [4, 256] there, [5, 256] here, "
                                       "classifier.3.bias [4] there, [5] here); delete it to start over")
    assert not model.training and model.features[0].weight.is_contiguous()
    assert all(torch.equal(v, weights[k]) for k, v in model.state_dict().items())
    state = torch.load(checkpoint, weights_only=True)
    torch.save(state | {"identity": {k: v for k, v in state["identity"].items() if k != "tensors"}}, checkpoint)
    with pytest.raises(ValueError, match="holds a training state that this version of train_model did not write"):
        train_model(new_model(train, seed=0), train, epochs=1, batch_size=20, progress=False, checkpoint=checkpoint)


def test_train_many_refuses_another_groups_state_naming_only_what_differs(tmp_path):
    """A rerun with another learning rate or other images is told that setting, not both groups' whole settings
    (every model's seed and pixel sum: thousands of characters for ROAR's groups)."""
    from rectgrad.train_many import train_many

    train, checkpoint = quadrants(40, seed=0), tmp_path / "group.pt"
    checks = iter(range(100))
    with pytest.raises(TrainingInterrupted):
        train_many([new_model(train, 0)] * 2, [train] * 2, [0, 1], epochs=1, batch_size=20, checkpoint=checkpoint,
                   stop=lambda: next(checks) == 1)
    with pytest.raises(ValueError) as refused:
        train_many([new_model(train, 0)] * 2, [train] * 2, [0, 1], epochs=1, batch_size=20, lr=0.01,
                   checkpoint=checkpoint)
    assert str(refused.value) == (f"{checkpoint} holds the state of another group of trainings (lr: 0.001 there, "
                                  "0.01 here); delete it to start over")
    other = quadrants(40, seed=1)
    with pytest.raises(ValueError, match=r"another group of trainings \(other images; other labels\); delete it"):
        train_many([new_model(train, 0)] * 2, [train, other], [0, 1], epochs=1, batch_size=20, checkpoint=checkpoint)
    relabelled = ImageDataset(train.images, (train.labels + 1) % 4, train.classes, train.name)  # the same images
    with pytest.raises(ValueError, match=r"another group of trainings \(other labels\); delete it"):
        train_many([new_model(train, 0)] * 2, [train, relabelled], [0, 1], epochs=1, batch_size=20,
                   checkpoint=checkpoint)  # (resumed silently: only the images were compared)
    saved = torch.load(checkpoint, weights_only=True)  # a state saved before the labels were recorded resumes
    del saved["identity"]["label_sums"]
    torch.save(saved, checkpoint)
    train_many([new_model(train, 0)] * 2, [train] * 2, [0, 1], epochs=1, batch_size=20, checkpoint=checkpoint)
    assert not checkpoint.exists()


def test_train_many_refuses_a_state_of_models_of_another_architecture_naming_the_weights_that_differ(tmp_path):
    """Same settings, models with another number of outputs (a class added to the data): the resumed copy_ failed in
    PyTorch's words ('The size of tensor a (5) must match the size of tensor b (4)'). The models are left as given."""
    from rectgrad import PaperCNN
    from rectgrad.train_many import train_many

    train, checkpoint = quadrants(40, seed=0), tmp_path / "group.pt"
    checks = iter(range(100))
    with pytest.raises(TrainingInterrupted):
        train_many([new_model(train, 0)] * 2, [train] * 2, [0, 1], epochs=1, batch_size=20, checkpoint=checkpoint,
                   stop=lambda: next(checks) == 1)
    wider = [PaperCNN(1, 16, 5), PaperCNN(1, 16, 5)]
    before = [{k: v.clone() for k, v in m.state_dict().items()} for m in wider]
    with pytest.raises(ValueError) as refused:
        train_many(wider, [train] * 2, [0, 1], epochs=1, batch_size=20, checkpoint=checkpoint)
    assert str(refused.value) == (f"{checkpoint} holds the state of a group of models of another architecture "
                                  "(weights' shapes: classifier.3.weight [4, 256] there, [5, 256] here, "
                                  "classifier.3.bias [4] there, [5] here); delete it to start over")
    assert all(torch.equal(b[k], v) for m, b in zip(wider, before) for k, v in m.state_dict().items())
    assert checkpoint.is_file()  # kept: the user decides


def test_a_model_with_fewer_outputs_than_classes_or_nothing_to_train_is_refused_by_what_it_lacks():
    """PyTorch's own words blamed the labels ('Target 3 is out of bounds'; on CUDA a device-side assert) or nothing
    the user could see ('element 0 of tensors does not require grad', a bare StopIteration)."""
    train = quadrants(40, seed=0)
    narrow = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(256, 3))
    with pytest.raises(ValueError, match=r"the Sequential gives 3 outputs per image but quadrants has labels up to 3 "
                                         r"\(br\): give the model one output \(logit\) per class"):
        train_model(narrow, train, epochs=1, batch_size=40, progress=False)
    train_model(narrow, train.subset(train.labels < 3), epochs=1, batch_size=40, progress=False)  # 3 of 4 classes
    frozen = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(256, 4)).requires_grad_(False)
    for model in (frozen, torch.nn.Flatten()):
        with pytest.raises(ValueError, match=f"the {type(model).__name__} has no parameters to train"):
            train_model(model, train, epochs=1, batch_size=40, progress=False)
    assert frozen.training  # refused before it was touched


def test_a_model_refused_at_its_first_batch_is_left_as_it_was_given():
    """It came back in training mode, its convolution weights in channels-last format (or on the training's device)."""
    train = quadrants(40, seed=0)
    torch.manual_seed(0)
    narrow = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2), torch.nn.Flatten(),
                                 torch.nn.Linear(392, 3)).eval()  # 3 outputs, 4 classes
    narrow[1].train()  # modes of its own, module by module
    rgb = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3), torch.nn.Flatten(), torch.nn.Linear(392, 4))  # fails in forward
    for model, options in ((narrow, {}), (narrow, {"device": "meta"}), (rgb, {"channels_last": False})):
        modes = [m.training for m in model.modules()]
        tensors = {k: (v.clone(), v.device, v.stride()) for k, v in model.state_dict().items()}
        with pytest.raises((ValueError, RuntimeError)):
            train_model(model, train, epochs=1, batch_size=40, progress=False, **options)
        assert [m.training for m in model.modules()] == modes
        assert all(torch.equal(v, tensors[k][0]) and (v.device, v.stride()) == tensors[k][1:]
                   for k, v in model.state_dict().items())
    history = train_model(narrow, train.subset(train.labels < 3), epochs=1, batch_size=40, progress=False)
    assert len(history["loss"]) == 1 and not narrow.training  # the model trains as before


def test_a_training_failing_anywhere_before_its_first_step_leaves_the_model_as_it_was_given(tmp_path, monkeypatch):
    """Only a failure in the first step's forward or backward pass put the model back: one in creating Adam, in loading
    a resumed training's optimizer state or in starting the progress bar (or a Ctrl-C meanwhile) left it moved to the
    training's device in channels-last format, in training mode and, resumed, holding the saved weights."""
    train = quadrants(40, seed=0, size=8)

    def tiny(seed: int) -> torch.nn.Module:
        torch.manual_seed(seed)
        return torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2), torch.nn.Flatten(),
                                   torch.nn.Linear(72, 4))

    checkpoint = tmp_path / "model.unfinished.pt"
    arguments = {"epochs": 1, "batch_size": 20, "seed": 3, "progress": False}
    interrupted = tiny(3)
    interrupted.register_forward_pre_hook(signal_at({2}))
    with pytest.raises(TrainingInterrupted):
        train_model(interrupted, train, checkpoint=checkpoint, **arguments)
    saved = checkpoint.read_bytes()

    def fail(*args, **kwargs):
        raise RuntimeError("injected failure")

    def ctrl_c(*args, **kwargs):  # a Ctrl-C before the first step: the state is saved, the model given back
        os.kill(os.getpid(), signal.SIGINT)
        return None

    for where, replacement, resumed, device in (("torch.optim.Adam", fail, False, "meta"),
                                                ("torch.optim.Adam.load_state_dict", fail, True, "meta"),
                                                ("rectgrad.train.progress_bar", fail, False, None),
                                                ("rectgrad.train.progress_bar", fail, True, "meta"),
                                                ("rectgrad.train.progress_bar", ctrl_c, True, None)):
        checkpoint.write_bytes(saved)
        model = tiny(0).eval()
        model[1].train()  # modes of its own, module by module
        model[0].weight.grad = torch.ones_like(model[0].weight)
        modes = [m.training for m in model.modules()]
        tensors = {k: (v.clone(), v.device, v.stride()) for k, v in model.state_dict().items()}
        with monkeypatch.context() as patched:
            patched.setattr(where, replacement)
            with pytest.raises((RuntimeError, TrainingInterrupted)):
                train_model(model, train, device=device, checkpoint=checkpoint if resumed else None, **arguments)
        assert [m.training for m in model.modules()] == modes, where
        assert all(torch.equal(v, tensors[k][0]) and (v.device, v.stride()) == tensors[k][1:]
                   for k, v in model.state_dict().items()), where
        assert torch.equal(model[0].weight.grad, torch.ones_like(model[0].weight))
    checkpoint.write_bytes(saved)
    train_model(model, train, checkpoint=checkpoint, **arguments)  # the model resumes the training as before
    assert not model.training and not checkpoint.exists()


def test_train_many_refuses_models_with_fewer_outputs_than_a_datasets_labels_as_train_model_does():
    """Cross-entropy's 'Target 3 is out of bounds' (a device-side assert on CUDA) named neither the models nor the
    labels; the dataset of the highest label is named, and a group whose datasets stop below the outputs trains."""
    from rectgrad import PaperCNN
    from rectgrad.train_many import train_many

    train = quadrants(40, seed=0)
    low = ImageDataset(train.images[:20], train.labels[:20].clamp(max=2), train.classes, "low")
    models = [PaperCNN(1, 16, 3), PaperCNN(1, 16, 3)]
    before = [{k: v.clone() for k, v in m.state_dict().items()} for m in models]
    with pytest.raises(ValueError, match=r"the PaperCNN gives 3 outputs per image but quadrants has labels up to 3 "
                                         r"\(br\): give the model one output \(logit\) per class"):
        train_many(models, [low, train.subset(torch.arange(20, 40))], [0, 1], epochs=1, batch_size=20)
    assert all(torch.equal(b[k], v) for m, b in zip(models, before) for k, v in m.state_dict().items())
    train_many(models, [low, low], [0, 1], epochs=1, batch_size=20)


def test_train_many_checks_the_models_outputs_at_its_first_step_only(monkeypatch):
    import rectgrad.train_many as module

    checked = []
    check = module._check_outputs
    monkeypatch.setattr(module, "_check_outputs", lambda *args: checked.append(args[0].shape) or check(*args))
    train = quadrants(40, seed=0)
    module.train_many([PaperCNN(1, 16, 4), PaperCNN(1, 16, 4)], [train] * 2, [0, 1], epochs=2, batch_size=20)
    assert checked == [(20, 4)]  # one check of 4 steps: the models' outputs do not change from step to step


def test_a_float16_model_trains_to_finite_weights():
    """The unfused Adam's eps (1e-8) is 0 in float16: every weight whose first gradient was 0 became 0 / 0 = NaN, and
    the NaN spread to all of them (a NaN loss, a model that predicts nothing) without a word."""
    train = quadrants(40, seed=0, size=8)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(72, 4)).half()
    before = [p.detach().clone() for p in model.parameters()]
    history = train_model(model, train, epochs=2, batch_size=20, progress=False)
    assert all(math.isfinite(loss) for loss in history["loss"])
    assert all(p.dtype == torch.float16 and bool(p.isfinite().all()) for p in model.parameters())
    assert not all(torch.equal(p, b) for p, b in zip(model.parameters(), before))  # it trained


def test_a_float64_model_trains_and_is_evaluated_on_inputs_of_its_own_type():
    """A float64 model failed at its first batch ('mat1 and mat2 must have the same dtype, but got Float and
    Double'): the inputs train_model and evaluate make were float32 whatever the model."""
    train = quadrants(40, seed=0)
    model = new_model(train, seed=0).double()
    history = train_model(model, train, epochs=1, batch_size=20, progress=False, test=train)
    assert model.features[0].weight.dtype == torch.float64 and 0 <= history["test_accuracy"] <= 1
    assert evaluate(model, train) == history["test_accuracy"]


def test_float64_models_train_at_once_in_float64_as_train_model_trains_each():
    """train_many fed float32 images to float64 models ('Input type (float) and bias type (double) should be the
    same'), and their loss was computed in float32 (bf16's rule), which Adam's lr / eps (1e5) made differences of 1e-7
    in the weights; in float64 throughout, each model ends as train_model's up to float64 rounding."""
    from rectgrad.train_many import train_many

    train = quadrants(40, seed=0)
    models = [new_model(train, seed=s).double() for s in (0, 1)]
    histories = train_many(models, [train] * 2, [0, 1], epochs=1, batch_size=20)
    for seed, model, history in zip((0, 1), models, histories):
        alone = new_model(train, seed=seed).double()
        expected = train_model(alone, train, epochs=1, batch_size=20, seed=seed, progress=False)
        assert model.features[0].weight.dtype == torch.float64
        for (name, got), want in zip(model.state_dict().items(), alone.state_dict().values()):
            assert got.dtype == torch.float64 and torch.allclose(got, want, rtol=0, atol=1e-12), name
        assert history["loss"] == pytest.approx(expected["loss"], rel=1e-6)  # (summed in float32 by both)


def test_train_many_leaves_frozen_weights_as_train_model_does_and_refuses_models_frozen_otherwise():
    """train_many trained the weights a model froze (requires_grad=False), which train_model leaves: frozen features
    now stay as given and the rest ends as train_model's (float64: up to its rounding); models frozen otherwise, or
    with nothing to train, are refused."""
    from rectgrad.train_many import train_many

    train = quadrants(40, seed=0)
    models = [new_model(train, seed=s).double() for s in (0, 1)]
    for model in models:
        model.features.requires_grad_(False)
    features = [{k: v.clone() for k, v in m.features.state_dict().items()} for m in models]
    train_many(models, [train] * 2, [0, 1], epochs=1, batch_size=20)
    for seed, model, before in zip((0, 1), models, features):
        assert all(torch.equal(before[k], v) for k, v in model.features.state_dict().items())
        alone = new_model(train, seed=seed).double()
        alone.features.requires_grad_(False)
        train_model(alone, train, epochs=1, batch_size=20, seed=seed, progress=False)
        for got, want in zip(model.state_dict().values(), alone.state_dict().values()):
            assert torch.allclose(got, want, rtol=0, atol=1e-12)
    other = new_model(train, seed=1).double()
    with pytest.raises(ValueError, match=r"train_many trains models frozen alike; model 1 freezes nothing, model 0 "
                                         r"\['features.0.bias', 'features.0.weight', .*: freeze the same parameters"):
        train_many([models[0], other], [train] * 2, [0, 1], epochs=1, batch_size=20)
    with pytest.raises(ValueError, match="the PaperCNN has no parameters to train"):
        train_many([other.requires_grad_(False)] * 2, [train] * 2, [0, 1], epochs=1, batch_size=20)


def test_an_empty_test_set_is_refused_before_training_not_scored_0(tmp_path, capsys):
    """A test idx file holding no images trained 20 epochs, then printed and saved 'test accuracy 0.0000'."""
    write_fashion(tmp_path, n_test=0)
    out = tmp_path / "model.pt"
    assert main(["train", "--dataset", "fashion-mnist", "--data-dir", str(tmp_path), "--epochs", "1", "--out",
                 str(out), "--no-progress"]) == 2
    assert "error: the test set fashion-mnist is empty: no test accuracy can be measured on it" in \
        capsys.readouterr().err
    assert not out.exists()


def test_an_image_size_the_cnn_cannot_take_is_refused_by_its_option_name_before_the_images_are_read(tmp_path, capsys):
    """It was refused as 'image_size', the Python argument's name, which the command line has not."""
    assert main(["train", "--dataset", "folder", "--data-dir", str(tmp_path / "missing"), "--image-size", "30",
                 "--out", str(tmp_path / "m.pt")]) == 2
    assert capsys.readouterr().err.startswith("error: --image-size must be a multiple of 4 from 16 to 512")


def test_a_test_set_of_another_image_shape_is_refused_before_the_training(monkeypatch):
    """The evaluation failed once every epoch had run (without a checkpoint the trained model was lost with it)."""
    train, test = quadrants(40, seed=0), quadrants(10, seed=1, size=12)
    model = new_model(train, seed=0)
    monkeypatch.setattr(model, "forward", lambda x: pytest.fail("trained"))
    with pytest.raises(ValueError, match=r"the test set's images are \(1, 12, 12\) \(C, H, W\), the training set's "
                                         r"\(1, 16, 16\): give test images of the training images' shape"):
        train_model(model, train, epochs=1, batch_size=20, progress=False, test=test)


def test_train_many_refuses_a_folder_at_its_checkpoint_path_before_training_and_deletes_a_linked_state(tmp_path):
    """A folder at the checkpoint path was found only once the whole group was trained and saved, when its state
    was to be deleted (IsADirectoryError); and a state written through a symbolic link was left behind, the link
    deleted in its place. Both are now handled as train_model does."""
    from rectgrad.train_many import checkpoint_seconds, train_many

    train = quadrants(40, seed=0)
    folder, saved = tmp_path / "group.pt", []
    folder.mkdir()
    models = [new_model(train, seed=s) for s in (0, 1)]
    before = [{k: v.clone() for k, v in m.state_dict().items()} for m in models]
    with pytest.raises(ValueError, match=r"group.pt is a folder; give the path of a file to write"):
        train_many(models, [train] * 2, [0, 1], epochs=1, batch_size=20, checkpoint=folder, save=saved.append)
    assert saved == [] and folder.is_dir()
    for model, weights in zip(models, before):
        assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())
    target, link = tmp_path / "state.pt", tmp_path / "link.pt"
    link.symlink_to(target)
    with pytest.raises(TrainingInterrupted):
        train_many(models, [train] * 2, [0, 1], epochs=1, batch_size=20, checkpoint=link, stop=lambda: True)
    assert link.is_symlink() and checkpoint_seconds(target) > 0  # written through the link
    train_many(models, [train] * 2, [0, 1], epochs=1, batch_size=20, checkpoint=link)
    assert not target.exists() and link.is_symlink()  # the state deleted, the link kept (as train_model does)


def test_train_many_refuses_seeds_that_are_no_integers_or_out_of_range_by_position_as_train_model_does():
    """A seed of 5.7 was cut to 5 and True read as 1 (train_model refuses both): each model's batch order came from
    another seed than the one given. A numpy integer is a seed like any other."""
    from rectgrad.train_many import train_many

    train = quadrants(40, seed=0)
    for bad in (5.7, True):
        models = [new_model(train, seed=s) for s in (0, 1)]
        before = [{k: v.clone() for k, v in m.state_dict().items()} for m in models]
        with pytest.raises(TypeError, match=rf"seeds\[1\] must be an integer, got {bad}"):
            train_many(models, [train] * 2, [0, bad], epochs=1, batch_size=20)
        for model, weights in zip(models, before):
            assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())
    with pytest.raises(TypeError, match="seed must be an integer, got 5.7"):
        train_model(new_model(train), train, epochs=1, batch_size=20, seed=5.7, progress=False)
    for bad in (2**64, -2**63 - 1):  # (torch's generators: 'Overflow when unpacking long long', naming no seed)
        with pytest.raises(ValueError, match=re.escape(f"seeds[1] must be an integer in [-2**63, 2**64), got {bad}")):
            train_many([new_model(train), new_model(train)], [train] * 2, [0, bad], epochs=1, batch_size=20)
    given, expected = new_model(train, seed=0), new_model(train, seed=0)
    train_many([given], [train], [np.int64(3)], epochs=1, batch_size=20)
    train_many([expected], [train], [3], epochs=1, batch_size=20)
    assert all(torch.equal(v, given.state_dict()[k]) for k, v in expected.state_dict().items())


def test_train_many_refuses_models_of_different_dtypes_and_leaves_them_as_they_were():
    """A float32 and a float64 model in one group were stacked into float64 weights: the float32 model trained in
    float64, not as train_model trains it, and came back rounded to float32. Such a group is refused by dtype."""
    from rectgrad.train_many import train_many

    train = quadrants(40, seed=0)
    for dtypes, named in (((torch.float32, torch.float64), "model 1's are float64, model 0's float32"),
                          ((torch.float64, torch.float32), "model 1's are float32, model 0's float64")):
        models = [new_model(train, seed=s).to(dtype) for s, dtype in zip((0, 1), dtypes)]
        before = [{k: v.clone() for k, v in m.state_dict().items()} for m in models]
        with pytest.raises(ValueError, match=rf"train_many trains models whose weights are of one type; {named}"):
            train_many(models, [train] * 2, [0, 1], epochs=1, batch_size=20)
        for model, weights in zip(models, before):
            assert all(v.dtype == weights[k].dtype and torch.equal(weights[k], v)
                       for k, v in model.state_dict().items())


def test_train_many_computes_a_flatten_of_flat_features_as_the_models_own_pass_and_refuses_other_flattens():
    """A Flatten of features already flat (a no-op in the model's own forward pass) reshaped the stacked (models,
    batch, features) as if it were images: the models' samples were mixed. With lr 0 each epoch's loss is now the
    model's own forward pass; a Flatten of other dimensions than (C, H, W), computed otherwise, is refused by name."""
    from rectgrad.data import to_inputs
    from rectgrad.train_many import train_many

    datasets = [quadrants(40, seed=0, size=8), quadrants(40, seed=1, size=8)]
    torch.manual_seed(0)
    models = [torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 8), torch.nn.ReLU(), torch.nn.Flatten(),
                                  torch.nn.Linear(8, 4)) for _ in datasets]
    with torch.no_grad():
        losses = [torch.nn.functional.cross_entropy(m(to_inputs(d.images)), d.labels).item()
                  for m, d in zip(models, datasets)]
    histories = train_many(models, datasets, [0, 1], epochs=1, batch_size=40, lr=0.0)
    assert [h["loss"][0] for h in histories] == pytest.approx(losses, rel=1e-5)
    for flatten in (torch.nn.Flatten(2), torch.nn.Flatten(1, 2)):
        with pytest.raises(ValueError, match=re.escape(f"got Sequential with {flatten!r}")):
            train_many([torch.nn.Sequential(flatten, torch.nn.Linear(8, 4))], datasets[:1], [0], epochs=1)


def test_train_many_closes_its_progress_bar_before_it_says_where_it_stopped(tmp_path, monkeypatch):
    """train_model closes its bar before raising TrainingInterrupted (a log's last bar line ends before the message);
    train_many left its bar open, its line unfinished, so the message was printed at the end of the bar's line."""
    import rectgrad.train_many as module

    class Bar:
        def __init__(self, *args, **kwargs):
            self.closed, self.steps = False, 0
            bars.append(self)

        def update(self, n=1):
            self.steps += n

        def close(self):
            self.closed = True

    bars = []
    monkeypatch.setattr(module, "progress_bar", Bar)
    train, checks = quadrants(40, seed=0), itertools.count()
    with pytest.raises(TrainingInterrupted, match="at epoch 1/2, step 1/2"):
        module.train_many([new_model(train, seed=0)], [train], [0], epochs=2, batch_size=20, progress=True,
                          checkpoint=tmp_path / "group.pt", stop=lambda: next(checks) == 1)
    assert [(bar.steps, bar.closed) for bar in bars] == [(1, True)]


def test_train_many_refuses_models_that_share_weights_between_layers_and_leaves_them_as_they_were():
    """A layer used twice in a Sequential (or two layers given one weight tensor) was computed once by the stacked
    step, and the trained weights then failed to load ('Missing key(s) in state_dict: "3.weight"') only after the
    whole group had trained, the model's other weights already replaced. Such a model is refused before any work,
    naming the weights it shares."""
    from rectgrad.train_many import train_many

    train = quadrants(40, seed=0, size=8)

    def net(first=None, second=None):  # of one architecture whatever is shared
        return torch.nn.Sequential(torch.nn.Flatten(), first or torch.nn.Linear(64, 64), torch.nn.ReLU(),
                                   second or torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4))

    shared = torch.nn.Linear(64, 64)
    twice, tied = net(shared, shared), net()
    tied[3].weight = tied[1].weight
    for model, named in ((twice, r"3\.weight is 1\.weight, 3\.bias is 1\.bias"), (tied, r"3\.weight is 1\.weight")):
        before = {k: v.clone() for k, v in model.state_dict().items()}
        with pytest.raises(ValueError, match=rf"train_many trains models whose layers hold weights of their own; "
                                             rf"the Sequential \(model 1\) shares some \({named}\)"):
            train_many([net(), model], [train] * 2, [0, 1], epochs=1, batch_size=20)
        assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_train_many_trains_a_model_with_a_buffer_and_leaves_the_buffer_as_it_is():
    """The trained weights were loaded with load_state_dict, which wants the buffers too: a Sequential holding one (a
    counter, say; the stacked step reads none) failed once the whole group had trained ('Missing key(s) in
    state_dict: "calls"'), its weights already replaced. It now takes the trained weights, as a model without it."""
    from rectgrad.train_many import train_many

    train = quadrants(40, seed=0, size=8)
    torch.manual_seed(0)
    plain = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 4))
    counted = copy.deepcopy(plain)
    counted.register_buffer("calls", torch.tensor(7.0))
    train_many([plain], [train], [0], epochs=1, batch_size=20)
    train_many([counted], [train], [0], epochs=1, batch_size=20)
    assert counted.calls.item() == 7.0 and not counted.training
    for name, value in plain.state_dict().items():
        assert torch.equal(value, counted.state_dict()[name]), name


@pytest.mark.parametrize("split", ["train", "test"])
def test_an_out_that_would_make_a_class_folder_of_own_images_is_refused_before_any_work(tmp_path, monkeypatch, capsys,
                                                                                      split):
    """--out ROOT/train/models/m.pt made the folder ROOT/train/models: the next run on ROOT read it as a class
    holding no images and refused the dataset."""
    for folder in ("train/a", "train/b", "test/a", "test/b"):
        (tmp_path / folder).mkdir(parents=True)
    monkeypatch.setattr(data, "load_dataset", lambda *a, **k: pytest.fail("loaded the images"))
    out = tmp_path / split / "models" / "m.pt"
    assert main(["train", "--dataset", "folder", "--data-dir", str(tmp_path), "--out", str(out), "--no-progress"]) == 2
    assert capsys.readouterr().err.startswith(f"error: --out {out} would make the folder {tmp_path / split / 'models'}")
    assert sorted(p.name for p in (tmp_path / split).iterdir()) == ["a", "b"]


def test_train_many_refuses_models_on_different_devices_naming_them():
    """Models on two devices failed in PyTorch's words when their weights were stacked ('Tensor on device meta is not
    on the expected device cpu!'); the meta device stands in for a GPU here. The models are left as given."""
    from rectgrad.train_many import train_many

    train = quadrants(40, seed=0)
    models = [new_model(train, 0), new_model(train, 1), new_model(train, 2).to("meta")]
    before = {k: v.clone() for k, v in models[0].state_dict().items()}
    with pytest.raises(ValueError, match=r"^train_many trains models on one device; model 2's weights are on meta, "
                                         r"model 0's on cpu: move them to one device"):
        train_many(models, [train] * 3, [0, 1, 2], epochs=1, batch_size=20)
    assert all(torch.equal(before[k], v) for k, v in models[0].state_dict().items())
    assert models[2].features[0].weight.is_meta


def test_train_many_refuses_a_state_of_models_of_another_weight_type_and_resumes_one_saved_without_the_record(
        tmp_path):
    """A group's state saved of float32 models resumed into float64 models of the same shapes (its weights copied
    into them, converted): the state now records the weights' type. A state saved before it did still resumes."""
    from rectgrad.train_many import train_many

    train, checkpoint = quadrants(20, seed=0, size=8), tmp_path / "group.pt"
    checks = iter(range(100))
    with pytest.raises(TrainingInterrupted):
        train_many([new_model(train, 0)] * 2, [train] * 2, [0, 1], epochs=1, batch_size=10, checkpoint=checkpoint,
                   stop=lambda: next(checks) == 1)
    doubles = [new_model(train, 0).double() for _ in range(2)]
    before = [{k: v.clone() for k, v in m.state_dict().items()} for m in doubles]
    with pytest.raises(ValueError) as refused:
        train_many(doubles, [train] * 2, [0, 1], epochs=1, batch_size=10, checkpoint=checkpoint)
    assert str(refused.value) == (f"{checkpoint} holds the state of another group of trainings (dtype: 'float32' "
                                  "there, 'float64' here); delete it to start over")
    assert all(torch.equal(b[k], v) for m, b in zip(doubles, before) for k, v in m.state_dict().items())
    saved = torch.load(checkpoint, weights_only=True)  # a state saved before the type was recorded resumes
    del saved["identity"]["dtype"]
    torch.save(saved, checkpoint)
    train_many([new_model(train, 0)] * 2, [train] * 2, [0, 1], epochs=1, batch_size=10, checkpoint=checkpoint)
    assert not checkpoint.exists()



def test_train_model_refuses_a_state_of_a_model_of_another_weight_type_and_resumes_one_saved_without_the_record(
        tmp_path):
    """A float32 model's state resumed into a float64 model of the same shapes (load_state_dict converted it): the
    state now records the weights' type, as train_many's does. A state saved before it did still resumes."""
    train = quadrants(20, seed=0, size=8)
    checkpoint = tmp_path / "m.unfinished.pt"
    arguments = dict(epochs=1, batch_size=10, seed=3, progress=False, checkpoint=checkpoint)
    state = interrupted_state(train, 1, **arguments)
    double = new_model(train, seed=3).double()
    before = {k: v.clone() for k, v in double.state_dict().items()}
    with pytest.raises(ValueError) as refused:
        train_model(double, train, **arguments)
    assert str(refused.value) == (f"{checkpoint} holds the state of another training (dtype: 'float32' there, "
                                  "'float64' here); delete it to start over")
    assert all(v.dtype == torch.float64 and torch.equal(before[k], v) for k, v in double.state_dict().items())
    assert checkpoint.read_bytes() == state
    saved = torch.load(checkpoint, weights_only=True)  # a state saved before the type was recorded resumes
    del saved["identity"]["dtype"]
    torch.save(saved, checkpoint)
    assert len(train_model(new_model(train, seed=3), train, **arguments)["loss"]) == 1 and not checkpoint.exists()


def test_cli_train_refuses_a_state_of_a_model_of_another_weight_type_in_one_line(tmp_path, capsys):
    write_fashion(tmp_path, n_train=10, n_test=10)  # the state of a float64 training, where the CLI trains float32
    unfinished = tmp_path / "model.unfinished.pt"
    fashion = data.load_fashion_mnist("train", data_dir=tmp_path)
    model = new_model(fashion, seed=0).double()
    model.register_forward_pre_hook(signal_at({1}))
    with pytest.raises(TrainingInterrupted):
        train_model(model, fashion, epochs=1, batch_size=5, seed=0, progress=False, checkpoint=unfinished)
    state = unfinished.read_bytes()
    capsys.readouterr()
    assert main(["train", "--dataset", "fashion-mnist", "--data-dir", str(tmp_path), "--epochs", "1", "--batch-size",
                 "5", "--device", "cpu", "--no-progress", "--out", str(tmp_path / "model.pt")]) == 2
    assert capsys.readouterr().err == (f"error: {unfinished} holds the state of another training (dtype: 'float64' "
                                       "there, 'float32' here); delete it to start over\n")
    assert unfinished.read_bytes() == state and not (tmp_path / "model.pt").exists()



def test_train_many_refuses_a_state_of_other_images_or_labels_of_the_same_sums(tmp_path):
    """The group's state told the models' data apart by each one's pixel sum and position-weighted label sum only:
    mirrored images, or labels swapped so that their weighted sum stays (1 at positions 1 and 4 against 2 and 3),
    resumed silently. Each model's data is now fingerprinted whole; a state saved before it was still resumes."""
    from rectgrad.train_many import train_many

    train, checkpoint = quadrants(20, seed=0, size=8), tmp_path / "group.pt"
    labels = torch.cat([torch.tensor([1, 0, 0, 1]), train.labels[4:]])
    train = ImageDataset(train.images, labels, train.classes, train.name)
    checks = iter(range(100))
    with pytest.raises(TrainingInterrupted):
        train_many([new_model(train, 0)] * 2, [train] * 2, [0, 1], epochs=1, batch_size=10, checkpoint=checkpoint,
                   stop=lambda: next(checks) == 1)
    state = checkpoint.read_bytes()
    swapped = ImageDataset(train.images, torch.cat([torch.tensor([0, 1, 1, 0]), labels[4:]]), train.classes, "swapped")
    mirrored = ImageDataset(train.images.flip(-1), labels, train.classes, train.name)
    for other in (mirrored, swapped):
        with pytest.raises(ValueError) as refused:
            train_many([new_model(train, 0)] * 2, [train, other], [0, 1], epochs=1, batch_size=10,
                       checkpoint=checkpoint)
        assert str(refused.value) == (f"{checkpoint} holds the state of another group of trainings (other images or "
                                      "labels (another dataset, patch or image size?)); delete it to start over")
        assert checkpoint.read_bytes() == state
    saved = torch.load(checkpoint, weights_only=True)  # a state saved before the data was fingerprinted resumes
    del saved["identity"]["data"]
    torch.save(saved, checkpoint)
    train_many([new_model(train, 0)] * 2, [train] * 2, [0, 1], epochs=1, batch_size=10, checkpoint=checkpoint)
    assert not checkpoint.exists()


def test_a_torch_file_of_objects_other_than_tensors_at_the_state_path_is_refused_not_overwritten(tmp_path):
    """A model saved whole (torch.save(model, path)), or another library's checkpoint holding objects weights_only
    refuses, was taken for a corrupt state: the training started over, then deleted the user's file when done."""
    import argparse

    from rectgrad.train_many import train_many

    train = quadrants(20, seed=0, size=8)
    checkpoint = tmp_path / "m.unfinished.pt"
    for other, holding in ((new_model(train), "rectgrad.models.PaperCNN"),
                           ({"epoch": 3, "hparams": argparse.Namespace(lr=0.1)}, "argparse.Namespace")):
        torch.save(other, checkpoint)
        written = checkpoint.read_bytes()
        model = new_model(train)
        model.register_forward_pre_hook(lambda *a: pytest.fail("trained over a file that is no training state"))
        for function, train_it in (("train_model", lambda: train_model(model, train, epochs=1, batch_size=10,
                                                                        progress=False, checkpoint=checkpoint)),
                                   ("train_many", lambda: train_many([model], [train], [0], epochs=1, batch_size=10,
                                                                      checkpoint=checkpoint))):
            saved_by = "a train_model training" if function == "train_model" else "a train_many group"
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # (not "corrupt": its training starting over)
                with pytest.raises(ValueError) as refused:
                    train_it()
            assert str(refused.value) == (f"{checkpoint} is a torch file but not the saved state of {saved_by} (it "
                                          f"holds a {holding}): give another checkpoint path (it would be "
                                          "overwritten) or delete it")
            assert checkpoint.read_bytes() == written


def test_a_state_is_refused_by_a_training_that_freezes_other_weights_and_one_saved_without_the_record_resumes(
        tmp_path):
    """A state of a training with a layer frozen (requires_grad=False) resumed silently into one that trains it, or
    the other way round: the rest of the training was another one's. The states now record the frozen weights."""
    from rectgrad.train_many import train_many

    train = quadrants(20, seed=0, size=8)
    checkpoint = tmp_path / "m.unfinished.pt"

    def frozen(model):
        model.features[0].weight.requires_grad_(False)
        return model

    arguments = dict(epochs=1, batch_size=10, seed=3, progress=False, checkpoint=checkpoint)
    model = frozen(new_model(train, seed=3))
    model.register_forward_pre_hook(signal_at({1}))
    with pytest.raises(TrainingInterrupted):
        train_model(model, train, **arguments)
    state = checkpoint.read_bytes()
    with pytest.raises(ValueError) as refused:
        train_model(new_model(train, seed=3), train, **arguments)
    assert str(refused.value) == (f"{checkpoint} holds the state of another training (frozen weights: "
                                  "features.0.weight there, none here); delete it to start over")
    assert checkpoint.read_bytes() == state
    group = tmp_path / "group.pt"
    checks = iter(range(100))
    with pytest.raises(TrainingInterrupted):
        train_many([new_model(train, 0)], [train], [0], epochs=1, batch_size=10, checkpoint=group,
                   stop=lambda: next(checks) == 1)
    with pytest.raises(ValueError) as refused:
        train_many([frozen(new_model(train, 0))], [train], [0], epochs=1, batch_size=10, checkpoint=group)
    assert str(refused.value) == (f"{group} holds the state of another group of trainings (frozen weights: none "
                                  "there, features.0.weight here); delete it to start over")
    for path, resume in ((checkpoint, lambda: train_model(new_model(train, seed=3), train, **arguments)),
                         (group, lambda: train_many([new_model(train, 0)], [train], [0], epochs=1, batch_size=10,
                                                    checkpoint=group))):
        saved = torch.load(path, weights_only=True)  # a state saved before the frozen weights were recorded resumes
        del saved["identity"]["frozen"]
        torch.save(saved, path)
        resume()
        assert not path.exists()


def test_train_many_refuses_a_train_model_state_as_one_it_did_not_write(tmp_path):
    """A train_model state at a group's path was told apart setting by setting, as another group's ("models: None
    there, 1 here; seeds: None there, [0] here; ...")."""
    from rectgrad.train_many import train_many

    train, checkpoint = quadrants(20, seed=0, size=8), tmp_path / "m.unfinished.pt"
    state = interrupted_state(train, 1, epochs=1, batch_size=10, seed=0, progress=False, checkpoint=checkpoint)
    with pytest.raises(ValueError) as refused:
        train_many([new_model(train, 0)], [train], [0], epochs=1, batch_size=10, checkpoint=checkpoint)
    assert str(refused.value) == (f"{checkpoint} holds a training state that this version of train_many did not write "
                                  "(another rectgrad version's, or train_model's), which it cannot resume; delete it "
                                  "to start over")
    assert checkpoint.read_bytes() == state


def test_a_torchscript_or_exported_model_at_the_state_path_is_refused_not_overwritten(tmp_path):
    """torch.load refuses both with weights_only (a TorchScript archive; an exported program has no data.pkl): taken
    for a corrupt state, the training started over, then deleted the user's model file when done."""
    linear = torch.nn.Linear(2, 2)
    torch.jit.save(torch.jit.trace(linear, torch.zeros(1, 2)), tmp_path / "scripted.pt")
    torch.export.save(torch.export.export(linear, (torch.zeros(1, 2),)), tmp_path / "exported.pt2")
    train = quadrants(20, seed=0, size=8)
    for name, kind in (("scripted.pt", "a TorchScript model"), ("exported.pt2", "a torch.export-ed program")):
        checkpoint = tmp_path / name
        written = checkpoint.read_bytes()
        model = new_model(train)
        model.register_forward_pre_hook(lambda *a: pytest.fail("trained over a file that is no training state"))
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # (not "corrupt": its training starting over)
            with pytest.raises(ValueError) as refused:
                train_model(model, train, epochs=1, batch_size=10, progress=False, checkpoint=checkpoint)
        assert str(refused.value) == (f"{checkpoint} is {kind}, not the saved state of a train_model training: give "
                                      "another checkpoint path (it would be overwritten) or delete it")
        assert checkpoint.read_bytes() == written


def test_a_state_whose_place_is_past_the_training_or_inconsistent_is_refused(tmp_path):
    """A state of the same settings but at epoch 5 of 1, at a step past the epoch's, or whose epochs' losses do not
    match its epoch (edited by hand, another program's) resumed silently into nonsense: no epoch trained, or more."""
    from rectgrad.train_many import train_many

    train, checkpoint = quadrants(20, seed=0, size=8), tmp_path / "m.unfinished.pt"
    state = interrupted_state(train, 1, epochs=1, batch_size=10, seed=0, progress=False, checkpoint=checkpoint)
    group = tmp_path / "group.pt"
    checks = iter(range(100))
    with pytest.raises(TrainingInterrupted):
        train_many([new_model(train, 0)], [train], [0], epochs=1, batch_size=10, checkpoint=group,
                   stop=lambda: next(checks) == 1)
    for path, where, resume in (
            (checkpoint, "a train_model training",
             lambda: train_model(new_model(train, 0), train, epochs=1, batch_size=10, progress=False,
                                 checkpoint=checkpoint)),
            (group, "a train_many group",
             lambda: train_many([new_model(train, 0)], [train], [0], epochs=1, batch_size=10, checkpoint=group))):
        saved = torch.load(path, weights_only=True)
        for edit, place in (({"epoch": 5}, "epoch 5, step 1"), ({"step": 7}, "epoch 0, step 7"),
                            ({"epoch": -1}, "epoch -1, step 1"), ({"epoch": 1, "step": 0}, "epoch 1, step 0")):
            torch.save(saved | edit, path)
            state = path.read_bytes()
            with pytest.raises(ValueError) as refused:
                resume()
            assert str(refused.value) == (f"{path} holds the saved state of {where} at {place} (its losses of 0 "
                                          "epochs), which a training of 1 epoch of 2 steps never is (damaged, or "
                                          "edited by hand?); delete it to start over")
            assert path.read_bytes() == state
