"""Checkpoint round trip, the other model files ``load_model`` accepts, and each bad input."""
import errno
import os
import re
import socket
import stat

import pytest
import torch
from torch import nn

import rectgrad
from rectgrad import load_model
from rectgrad.checkpoint import (delete_killed_writes, exclusive, load_checkpoint, one_line, save_checkpoint,
                                 write_atomically)
from rectgrad.models import PaperCNN


@pytest.fixture
def model():
    torch.manual_seed(0)
    return PaperCNN(1, 12, 3)


def same_outputs(a: nn.Module, b: nn.Module) -> bool:
    x = torch.randn(2, 1, 12, 12)
    with torch.no_grad():
        return torch.equal(a(x), b(x))


def test_round_trip_with_metadata(model, tmp_path):
    path = tmp_path / "m.pt"
    save_checkpoint(model, path, dataset="fashion-mnist", patch=None, epochs=20, seed=0, test_accuracy=0.91)
    loaded, meta = load_checkpoint(path)
    assert meta == {"rectgrad_version": rectgrad.__version__, "dataset": "fashion-mnist", "patch": None,
                    "epochs": 20, "seed": 0, "test_accuracy": 0.91}
    assert isinstance(loaded, PaperCNN) and loaded.config() == model.config() and not loaded.training
    assert same_outputs(model.eval(), loaded) and same_outputs(model, load_model(path))
    assert os.listdir(tmp_path) == ["m.pt"]
    save_checkpoint(model, path, **(meta | {"rectgrad_version": "0.0.1"}))  # metadata of an older file, re-saved
    assert load_checkpoint(path)[1]["rectgrad_version"] == rectgrad.__version__  # the version that wrote it
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "rectgrad-checkpoint" and raw["architecture"] == "PaperCNN"


def test_interrupted_save_keeps_the_old_file(model, tmp_path, monkeypatch):
    path = tmp_path / "m.pt"
    save_checkpoint(model, path, epochs=1)

    def interrupted(obj, f):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(model, path, epochs=2)
    assert os.listdir(tmp_path) == ["m.pt"] and load_checkpoint(path)[1]["epochs"] == 1


def test_the_temporary_file_reaches_the_disk_whole_before_it_is_renamed(tmp_path, monkeypatch):
    path, events = tmp_path / "out.bin", []
    fsync, replace = os.fsync, os.replace

    def recorded_fsync(fd):
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            events.append(("fsync folder", os.fstat(fd).st_ino == tmp_path.stat().st_ino, path.exists()))
        else:
            events.append(("fsync", os.fstat(fd).st_size, path.exists()))  # flushed, not yet in place
        fsync(fd)

    monkeypatch.setattr(os, "fsync", recorded_fsync)
    monkeypatch.setattr(os, "replace", lambda *args: (events.append(("replace",)), replace(*args))[1])
    write_atomically(path, lambda f: f.write(b"x" * 10))
    # then the folder's entries, so that the rename too survives a power cut
    assert events == [("fsync", 10, False), ("replace",), ("fsync folder", True, True)]
    assert path.read_bytes() == b"x" * 10


def test_a_folder_that_cannot_be_synced_still_gets_the_file(tmp_path, monkeypatch):
    fsync = os.fsync

    def no_folder_fsync(fd):
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(22, "Invalid argument")  # as some network file systems answer
        fsync(fd)

    monkeypatch.setattr(os, "fsync", no_folder_fsync)
    write_atomically(tmp_path / "out.bin", lambda f: f.write(b"x"))
    assert os.listdir(tmp_path) == ["out.bin"] and (tmp_path / "out.bin").read_bytes() == b"x"


def test_a_refused_write_without_an_error_number_keeps_its_own_message(tmp_path, monkeypatch):
    def failing_fsync(fd):
        raise OSError("the disk went away")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError) as error:
        write_atomically(tmp_path / "out.bin", lambda f: f.write(b"x"))
    assert str(error.value) == "the disk went away" and os.listdir(tmp_path) == []


def test_a_write_the_system_refuses_names_the_file_and_keeps_the_old_one(model, tmp_path, file_size_limit):
    import errno

    from rectgrad.checkpoint import write_text_atomically

    path, text = tmp_path / "m.pt", tmp_path / "table.csv"
    save_checkpoint(model, path, epochs=1)
    write_text_atomically(text, "old")
    refused = []
    with file_size_limit(path.stat().st_size // 2):
        for write in (lambda: save_checkpoint(model, path, epochs=2),  # torch.save made it "unexpected pos 704 vs 598"
                      lambda: write_text_atomically(text, "x" * path.stat().st_size)):
            with pytest.raises(OSError) as error:
                write()
            refused.append(error.value)
    assert [(e.errno, e.filename) for e in refused] == [(errno.EFBIG, str(path)), (errno.EFBIG, str(text))]
    assert str(refused[0]) == f"[Errno {errno.EFBIG}] {os.strerror(errno.EFBIG)}: '{path}'"
    assert sorted(os.listdir(tmp_path)) == ["m.pt", "table.csv"] and load_checkpoint(path)[1]["epochs"] == 1
    assert text.read_text() == "old"


def test_load_model_accepts_pickled_module_torchscript_and_exported_programs(model, tmp_path):
    model.eval()
    torch.save(model, tmp_path / "whole.pt")
    torch.jit.trace(model, torch.randn(1, 1, 12, 12)).save(str(tmp_path / "scripted.pt"))
    batch = torch.export.Dim("batch", min=1, max=1024)
    program = torch.export.export(model, (torch.randn(2, 1, 12, 12),), dynamic_shapes=({0: batch},))
    torch.export.save(program, tmp_path / "exported.pt2")
    model.train()
    torch.save(model, tmp_path / "training.pt")  # saved whole in training mode: loaded in eval mode all the same
    assert not load_model(tmp_path / "training.pt").training and model.training
    model.eval()
    for name in ["whole.pt", "scripted.pt"]:
        loaded = load_model(tmp_path / name, map_location="cpu")
        assert not loaded.training and same_outputs(model, loaded)
    assert same_outputs(model, load_model(tmp_path / "exported.pt2"))


def test_missing_and_corrupt_files(model, tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.pt"):
        load_model(tmp_path / "nothing.pt")
    with pytest.raises(FileNotFoundError, match="nothing.pt"):
        load_checkpoint(tmp_path / "nothing.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a torch file" * 10)
    for load in (load_model, load_checkpoint):
        with pytest.raises(ValueError, match="garbage.pt .*not a torch file"):
            load(garbage)
    save_checkpoint(model, tmp_path / "full.pt")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes((tmp_path / "full.pt").read_bytes()[:1000])
    with pytest.raises(ValueError, match="truncated.pt .*not a torch file"):
        load_model(truncated)
    torch.export.save(torch.export.export(model.eval(), (torch.randn(1, 1, 12, 12),)), tmp_path / "fixed.pt2")
    with pytest.raises(ValueError, match="batches of exactly 1.*example batch x of at least 2 images.*dynamic_shapes"):
        load_model(tmp_path / "fixed.pt2")
    (tmp_path / "broken.pt2").write_bytes((tmp_path / "fixed.pt2").read_bytes()[:3000])
    with pytest.raises(ValueError, match="broken.pt2"):
        load_model(tmp_path / "broken.pt2")


def test_wrong_architecture_or_weights(model, tmp_path):
    save_checkpoint(model, tmp_path / "m.pt")
    payload = torch.load(tmp_path / "m.pt", weights_only=True)
    cases = {
        "resnet.pt": ({**payload, "architecture": "ResNet"}, "holds a 'ResNet' model"),
        "shape.pt": ({**payload, "config": {**payload["config"], "num_classes": 10}},
                     "do not fit PaperCNN.*size mismatch"),
        "config.pt": ({**payload, "config": {"layers": 3}}, "do not fit PaperCNN"),
        "other.pt": ({"format": "something-else"}, "not a rectgrad checkpoint"),
        "state.pt": (model.state_dict(), r"bare state dict, not a model: save the model itself, torch.save\(model"),
        "training.pt": ({"model": model.state_dict(), "epoch": 3},
                        r"holds a dict \(keys model, epoch\), not a model or rectgrad checkpoint: a training "
                        r"checkpoint's dict\? save the model itself"),
        "number.pt": (3, "holds a int, not a model"),
    }
    for name, (content, message) in cases.items():
        torch.save(content, tmp_path / name)
        with pytest.raises(ValueError, match=message):
            load_model(tmp_path / name)
    with pytest.raises(ValueError, match="can only checkpoint PaperCNN"):
        save_checkpoint(nn.Linear(2, 2), tmp_path / "linear.pt")


def test_a_training_checkpoint_holding_a_whole_model_names_the_entry_to_save(model, tmp_path):
    from rectgrad import zoo

    optimizer = torch.optim.Adam(model.parameters())
    torch.save({"epoch": 3, "net": model, "optimizer": optimizer.state_dict()}, tmp_path / "training.pt")
    message = (r"holds a dict \(keys epoch, net, optimizer\), not a model or rectgrad checkpoint: its 'net' entry is "
               r"a PaperCNN; save that model by itself, torch.save\(checkpoint\['net'\], path\) \(in Python, "
               r"checkpoint\['net'\] is the model to use\)$")
    with pytest.raises(ValueError, match=message):
        load_model(tmp_path / "training.pt")
    with pytest.raises(ValueError, match=message):
        zoo.load(tmp_path / "training.pt")
    torch.save(torch.load(tmp_path / "training.pt", weights_only=False)["net"], tmp_path / "net.pt")  # as told
    assert same_outputs(model.eval(), load_model(tmp_path / "net.pt"))


def test_files_written_atomically_follow_the_umask(tmp_path):
    import os

    from rectgrad.checkpoint import write_atomically

    write_atomically(tmp_path / "shared.json", lambda f: f.write(b"{}"))
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "shared.json").stat().st_mode & 0o777 == 0o666 & ~umask
    assert [p.name for p in tmp_path.iterdir()] == ["shared.json"]


def test_metadata_is_stored_as_plain_values_or_refused(model, tmp_path):
    import enum

    import numpy as np
    from pathlib import Path

    class Kind(str, enum.Enum):
        CLEAN = "clean"

    save_checkpoint(model, tmp_path / "m.pt", accuracy=np.float64(0.5), seeds=(np.int64(1), 2), nested={"a": [True]},
                    classes=list(np.array(["cat", "dog"])), kind=Kind.CLEAN, flag=np.True_,
                    by_name={np.str_("cat"): 0})
    meta = load_checkpoint(tmp_path / "m.pt")[1]  # weights_only loading: numpy scalars would make it unreadable
    assert meta["accuracy"] == 0.5 and type(meta["accuracy"]) is float and meta["seeds"] == (1, 2)
    assert type(meta["seeds"][0]) is int and meta["nested"] == {"a": [True]}
    assert meta["classes"] == ["cat", "dog"] and meta["kind"] == "clean" and meta["flag"] is True
    assert meta["by_name"] == {"cat": 0}
    with pytest.raises(TypeError, match=r"metadata\['where'\]\[0\] is a PosixPath; .* plain values"):
        save_checkpoint(model, tmp_path / "p.pt", where=[Path("x")])
    with pytest.raises(TypeError, match=r"metadata\['counts'\] is a dict"):
        save_checkpoint(model, tmp_path / "p.pt", counts={1: 2})
    assert not (tmp_path / "p.pt").exists()


def test_a_modified_paper_cnn_is_refused_at_save_time(model, tmp_path):
    model.features[1] = nn.ReLU(inplace=True)  # computes what ReLU() does: still the checkpoint's architecture
    save_checkpoint(model, tmp_path / "m.pt")
    model.classifier[3] = nn.Linear(256, 5)
    rng = torch.get_rng_state()
    (tmp_path / "m.pt").unlink()
    with pytest.raises(ValueError, match="no longer has the layers its constructor arguments"):
        save_checkpoint(model, tmp_path / "m.pt")
    assert torch.equal(torch.get_rng_state(), rng) and not (tmp_path / "m.pt").exists()


def test_writes_follow_symbolic_links_and_refuse_special_files(model, tmp_path):
    from rectgrad.checkpoint import write_atomically

    (tmp_path / "target.pt").write_bytes(b"old")
    (tmp_path / "link.pt").symlink_to(tmp_path / "target.pt")
    save_checkpoint(model, tmp_path / "link.pt")
    assert (tmp_path / "link.pt").is_symlink() and same_outputs(model, load_model(tmp_path / "target.pt"))
    os.mkfifo(tmp_path / "pipe")
    for special in (tmp_path / "pipe", "/dev/null"):
        with pytest.raises(ValueError, match="is not a regular file"):
            write_atomically(special, lambda f: f.write(b"x"))
    assert (tmp_path / "pipe").is_fifo() and os.path.exists("/dev/null") and not os.path.isfile("/dev/null")


def test_a_refused_write_is_named_by_the_systems_first_refusal(tmp_path, file_size_limit, monkeypatch):
    # the first refusal is the cause (the disk filled up); what the writer's clean-up then meets, an I/O error of the
    # flush to disk, say, and the writer's own error after it, are its consequences
    from rectgrad import checkpoint

    def write(file):  # as torch.save: its write refused, it goes on, then raises an error of its own
        try:
            file.write(b"x" * 100_000)  # (past the write buffer: the system sees it at once)
        except OSError:
            pass
        try:
            file.sync()
        except OSError:
            pass
        raise RuntimeError("unexpected pos 100000 vs 16")

    monkeypatch.setattr(checkpoint.os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.EIO, "I/O error")))
    with file_size_limit(16), pytest.raises(OSError) as error:
        write_atomically(tmp_path / "out.bin", write)
    assert (error.value.errno, error.value.filename) == (errno.EFBIG, str(tmp_path / "out.bin"))
    assert os.listdir(tmp_path) == []


def test_exclusive_runs_unguarded_where_the_file_system_refuses_locks(tmp_path, monkeypatch):
    import fcntl

    monkeypatch.setattr(fcntl, "flock", lambda *args: (_ for _ in ()).throw(OSError(errno.ENOLCK, "No locks")))
    with pytest.raises(KeyError) as raised:
        with exclusive(tmp_path) as locked:  # (some network file systems): the run goes on, unguarded
            assert locked is False
            raise KeyError("the run's own error")
    assert raised.value.__context__ is None  # not "during handling of [Errno 37] No locks, another exception ..."


def test_exclusive_deletes_only_the_writes_a_killed_run_left(tmp_path):
    killed = [tmp_path / ".model.pt.ab12cd34.tmp", tmp_path / "maps" / ".roar-test-rectgrad.pt.k_9z0q1w.tmp"]
    kept = [tmp_path / "notes.tmp", tmp_path / ".model.pt.short.tmp", tmp_path / ".git" / ".pack.ab12cd34.tmp",
            tmp_path / ".cache.tmp" / "x"]  # a user's file, another name, a hidden folder's, a folder so named
    for path in killed + kept:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    with exclusive(tmp_path) as locked:
        assert locked and (tmp_path / ".lock").read_text() == f"{os.getpid()} on {socket.gethostname()}"
        assert all(path.exists() for path in killed + kept)  # (the caller deletes them, once the folder is its own)
        delete_killed_writes(tmp_path)
        assert not any(path.exists() for path in killed) and all(path.exists() for path in kept)


def test_exclusive_refuses_a_folder_whose_lock_is_held_and_names_the_holder(tmp_path):
    (tmp_path / ".lock").write_text("4242 on an old machine, a longer line than this process's")
    with exclusive(tmp_path):
        with pytest.raises(RuntimeError, match=rf"{tmp_path} is in use by another run \(process {os.getpid()} on "):
            with exclusive(tmp_path):  # (another open file: flock refuses it as it would another process)
                pass
    assert (tmp_path / ".lock").read_text() == f"{os.getpid()} on {socket.gethostname()}"  # the old line is gone


def test_delete_killed_writes_spares_longer_names_and_links(tmp_path):
    (tmp_path / "target.txt").write_bytes(b"mine")
    (tmp_path / ".model.pt.ab12cd34.tmp.bak").write_bytes(b"a backup of a temporary file")
    (tmp_path / ".link.pt.ab12cd34.tmp").symlink_to(tmp_path / "target.txt")
    delete_killed_writes(tmp_path)
    assert sorted(os.listdir(tmp_path)) == [".link.pt.ab12cd34.tmp", ".model.pt.ab12cd34.tmp.bak", "target.txt"]


def test_one_line_joins_lines_and_cuts_long_messages():
    assert one_line(ValueError("first\n   second\tthird ")) == "first second third"
    assert one_line(KeyError()) == "KeyError"
    assert one_line(ValueError("x" * 400)) == "x" * 300 + "..." and one_line(ValueError("x" * 300)) == "x" * 300
    assert one_line(ValueError("abcdef"), limit=3) == "abc..."


def test_load_checkpoint_never_unpickles_other_objects(model, tmp_path):
    # load_checkpoint reads with weights_only=True: a checkpoint smuggling in another object is refused, not run.
    import datetime

    save_checkpoint(model, tmp_path / "m.pt")
    payload = torch.load(tmp_path / "m.pt", weights_only=True)
    torch.save({**payload, "metadata": {"when": datetime.date(2020, 1, 1)}}, tmp_path / "odd.pt")
    with pytest.raises(ValueError, match="odd.pt .*objects other than tensors and plain values"):
        load_checkpoint(tmp_path / "odd.pt")


def test_map_location_reaches_torch_load(model, tmp_path):
    # The caller's map_location is applied to every stored tensor, for checkpoints and whole pickled modules.
    seen = []

    def to_cpu(storage, location):
        seen.append(location)
        return storage

    save_checkpoint(model, tmp_path / "m.pt")
    torch.save(model, tmp_path / "whole.pt")
    loaded, _ = load_checkpoint(tmp_path / "m.pt", map_location=to_cpu)
    assert seen and set(seen) == {"cpu"} and same_outputs(model.eval(), loaded)
    seen.clear()
    assert same_outputs(model, load_model(tmp_path / "whole.pt", map_location=to_cpu)) and seen


def test_torchscript_saved_in_training_mode_loads_in_eval_mode(model, tmp_path):
    scripted = torch.jit.trace(model.eval(), torch.randn(1, 1, 12, 12))
    scripted.train()
    scripted.save(str(tmp_path / "scripted.pt"))
    assert not load_model(tmp_path / "scripted.pt").training


def test_checkpoint_weights_must_match_exactly_and_metadata_is_optional(model, tmp_path):
    save_checkpoint(model, tmp_path / "m.pt", epochs=1)
    payload = torch.load(tmp_path / "m.pt", weights_only=True)
    state = payload["state_dict"]
    missing = {k: v for k, v in state.items() if k != next(iter(state))}
    cases = {"missing.pt": ({**payload, "state_dict": missing}, "do not fit PaperCNN.*Missing key"),
             "extra.pt": ({**payload, "state_dict": {**state, "extra": torch.zeros(1)}},
                          "do not fit PaperCNN.*Unexpected key"),
             "empty.pt": ({}, r"holds a dict \(keys \), not a model or rectgrad checkpoint")}
    for name, (content, message) in cases.items():
        torch.save(content, tmp_path / name)
        with pytest.raises(ValueError, match=message):
            load_model(tmp_path / name)
    # a checkpoint written without metadata (by hand, or by an older writer) loads with empty metadata
    torch.save({k: v for k, v in payload.items() if k != "metadata"}, tmp_path / "bare.pt")
    loaded, meta = load_checkpoint(tmp_path / "bare.pt")
    assert meta == {} and same_outputs(model.eval(), loaded)


def test_exported_program_with_two_inputs_is_refused(tmp_path):
    class Two(nn.Module):
        def forward(self, x, y):
            return x + y

    program = torch.export.export(Two(), (torch.randn(2, 3), torch.randn(2, 3)))
    torch.export.save(program, tmp_path / "two.pt2")
    with pytest.raises(ValueError, match="takes 2 inputs"):
        load_model(tmp_path / "two.pt2")


def test_complex_metadata_is_refused(model, tmp_path):
    # float() of a complex number would fail with Python's own message; the refusal names where it sits.
    with pytest.raises(TypeError, match=r"metadata\['z'\] is a complex"):
        save_checkpoint(model, tmp_path / "m.pt", z=1j)


def test_write_atomically_creates_folders_and_writes_beside_the_target(tmp_path):
    # The temporary file lives in the target's own folder (a rename across file systems is no rename).
    path, seen = tmp_path / "new" / "deeper" / "out.bin", []

    def write(f):
        seen.extend(os.listdir(path.parent))
        f.write(b"x")

    write_atomically(path, write)
    assert path.read_bytes() == b"x" and len(seen) == 1
    assert seen[0].startswith(".out.bin.") and seen[0].endswith(".tmp")
    assert os.listdir(path.parent) == ["out.bin"]


def test_a_name_that_just_fits_is_written_and_refusals_name_the_file_asked_for(tmp_path, monkeypatch):
    # the temporary name beside a 255-byte name would be longer than the system allows: it is cut, the file written
    longest = tmp_path / ("é" * 124 + "abc.png")
    assert len(os.fsencode(longest.name)) == 255
    write_atomically(longest, lambda f: f.write(b"x"))
    assert os.listdir(tmp_path) == [longest.name] and longest.read_bytes() == b"x"
    with pytest.raises(OSError, match="File name too long") as refused:
        write_atomically(tmp_path / ("a" * 256), lambda f: f.write(b"x"))
    assert refused.value.filename == str(tmp_path / ("a" * 256))  # the file asked for, not a temporary name

    def refuse(*args):
        raise PermissionError(errno.EPERM, "Operation not permitted", args[0], None, args[1])  # as os.replace's

    monkeypatch.setattr(os, "replace", refuse)  # (an immutable file in the way)
    with pytest.raises(PermissionError) as refused:
        write_atomically(longest, lambda f: f.write(b"y"))
    assert refused.value.filename == str(longest) and refused.value.filename2 is None
    assert os.listdir(tmp_path) == [longest.name] and longest.read_bytes() == b"x"


def test_a_folder_that_cannot_be_opened_still_gets_the_file(tmp_path, monkeypatch):
    real_open = os.open

    def no_folder_open(path, flags, *args, **kwargs):
        if flags == os.O_RDONLY and os.path.isdir(path):
            raise PermissionError(errno.EACCES, "Permission denied")  # as a folder without read access answers
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", no_folder_open)
    write_atomically(tmp_path / "out.bin", lambda f: f.write(b"x"))
    assert os.listdir(tmp_path) == ["out.bin"] and (tmp_path / "out.bin").read_bytes() == b"x"


def test_text_is_written_as_utf8(tmp_path):
    from rectgrad.checkpoint import write_text_atomically

    text = "naïve ≥ 0.5 日本"
    write_text_atomically(tmp_path / "table.csv", text)
    assert (tmp_path / "table.csv").read_bytes() == text.encode("utf-8")


def test_a_checkpoints_model_lies_where_map_location_puts_its_weights(model, tmp_path):
    """The model was built on the CPU and the loaded tensors copied into it, whatever map_location said: "cuda" gave
    a CPU model (the meta device, where a model holds no memory, shows it on any machine)."""
    save_checkpoint(model, tmp_path / "m.pt")
    for loaded in (load_model(tmp_path / "m.pt", map_location="meta"),
                   load_checkpoint(tmp_path / "m.pt", map_location="meta")[0]):
        assert {p.device.type for p in loaded.parameters()} == {"meta"} and not loaded.training
    loaded = load_model(tmp_path / "m.pt")
    assert {p.device.type for p in loaded.parameters()} == {"cpu"} and same_outputs(model.eval(), loaded)
    assert all(p.requires_grad for p in loaded.parameters())  # parameters, as a model built and loaded has
    save_checkpoint(model.double(), tmp_path / "double.pt")  # rebuilt in float32, as before, which explain feeds
    assert {p.dtype for p in load_model(tmp_path / "double.pt").parameters()} == {torch.float32}


def test_a_checkpoint_whose_metadata_is_no_dict_is_refused_naming_the_file(tmp_path):
    """Metadata written by hand or another tool as a list or None failed in dict()'s words ('cannot convert
    dictionary update sequence element #0 to a sequence', "'NoneType' object is not iterable"), naming no file."""
    path = tmp_path / "m.pt"
    save_checkpoint(PaperCNN(1, 8, 3), path)
    payload = torch.load(path, weights_only=True)
    for metadata, kind in (([1, 2], "list"), (None, "NoneType")):
        torch.save({**payload, "metadata": metadata}, path)
        for load in (load_checkpoint, load_model):
            with pytest.raises(ValueError, match=f"{re.escape(str(path))}: its metadata is a {kind}, not a dict"):
                load(path)
