"""Checkpoints of the paper's CNN: weights, constructor config and metadata in one torch file.

Format (a dict saved with ``torch.save``, loadable with ``weights_only=True``)::

    {"format": "rectgrad-checkpoint", "architecture": "PaperCNN", "config": model.config(),
     "state_dict": {...}, "metadata": {"rectgrad_version": ..., dataset, epochs, seed, ...}}
"""
from __future__ import annotations

import contextlib
import json
import numbers
import os
import re
import socket
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from rectgrad._checks import EXPORT_FREE_BATCH
from rectgrad.models import PaperCNN, architecture

try:
    import fcntl
except ImportError:  # pragma: no cover (Windows)
    fcntl = None

FORMAT = "rectgrad-checkpoint"
ARCHITECTURES = {"PaperCNN": PaperCNN}


def save_checkpoint(model: PaperCNN, path, **metadata) -> None:
    """Save ``model`` with ``metadata`` (plain values: str, numbers, bools, None, lists, dicts) to ``path``.

    Written to a temporary file in the same folder and renamed, so an interruption never leaves a
    half-written checkpoint. ``rectgrad_version``, the version that writes the file, is added to the metadata (over
    one given, e.g. with metadata copied from an older checkpoint).
    """
    from rectgrad import __version__

    if type(model).__name__ not in ARCHITECTURES:
        raise ValueError(f"can only checkpoint {', '.join(ARCHITECTURES)}, got {type(model).__name__}; "
                         "use torch.save(model, path) for other models")
    path = Path(path)
    config = model.config()
    with torch.device("meta"):  # the layers the checkpoint would rebuild, without drawing random weights
        rebuilt = ARCHITECTURES[type(model).__name__](**config)
    if architecture(rebuilt) != architecture(model):
        raise ValueError(f"this {type(model).__name__} no longer has the layers its constructor arguments {config} "
                         "build (a layer was replaced?), so its checkpoint could not be loaded; use "
                         "torch.save(model, path) for a modified model")
    payload = {"format": FORMAT, "architecture": type(model).__name__, "config": config,
               "state_dict": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
               "metadata": {**_plain(metadata, "metadata"), "rectgrad_version": __version__}}
    write_atomically(path, lambda f: torch.save(payload, f))


def _plain(value, where: str):
    """``value`` as plain Python values (numpy and other number types become int / float), which
    ``torch.load(weights_only=True)`` reads back; anything else is refused, naming where it sits."""
    if value is None or isinstance(value, (bool, np.bool_)):
        return None if value is None else bool(value)
    if isinstance(value, str):
        return str.__str__(value)  # numpy strings and str enums as plain str
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, (list, tuple)):
        items = [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
        return items if isinstance(value, list) else tuple(items)
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {str.__str__(k): _plain(v, f"{where}[{str.__str__(k)!r}]") for k, v in value.items()}
    raise TypeError(f"{where} is a {type(value).__name__}; checkpoint metadata holds plain values only (str, "
                    "numbers, bools, None, lists, dicts with str keys): convert it, e.g. with str()")


_UMASK = os.umask(0)
os.umask(_UMASK)  # read once: os.umask can only be read by setting it


def listed_files(manifest: Path) -> list[str]:
    """The file names an earlier run listed in its ``manifest`` (a JSON list), those it wrote; none when there is
    none, or when it was edited or damaged by hand (then nothing is removed; the manifest is rewritten)."""
    try:
        earlier = json.loads(Path(manifest).read_text())
    except (FileNotFoundError, ValueError):  # (JSON and Unicode errors are ValueErrors)
        return []
    return earlier if isinstance(earlier, list) and all(isinstance(name, str) for name in earlier) else []


def refuse_folders(out: Path, names, writer: str) -> None:
    """Refuse to write the files ``names`` into the folder ``out`` (``writer``: a rectgrad report, study) where one of
    them is a folder: the run would fail on it only once its work is done."""
    folders = [name for name in names if (out / name).is_dir()]
    if folders:
        raise IsADirectoryError(f"{out / folders[0]} is a folder, where the {writer} writes a file of that name: give "
                                "another folder (--out), or move that folder")


def refuse_replacing(out: Path, found: list[str], writer: str) -> None:
    """Refuse to write into the folder ``out`` where the files ``found`` are (``writer``: a rectgrad report, study)
    that no such run wrote, as in a folder of a project's own: they would be replaced."""
    if len(found) == 1:
        raise FileExistsError(f"{out / found[0]} exists and no rectgrad {writer} wrote it: the {writer} would replace "
                              "it; give another folder (--out), or move that file")
    if found:
        raise FileExistsError(f"{out} holds {', '.join(found)}, which no rectgrad {writer} wrote: the {writer} would "
                              "replace them; give another folder (--out), or move those files")


def write_atomically(path, write) -> None:
    """``write(binary file)`` to a temporary file beside ``path``, flushed to disk, then rename it to ``path`` and
    flush the folder (the rename itself outlives a power cut): an interruption leaves the whole file or none of it.
    A symbolic link is written through (its target is replaced); a device, pipe or socket is refused. A write the
    system refuses (a full disk) is an ``OSError`` naming ``path`` and the system's reason, whatever error ``write``
    made of it. A file where one of its folders should be is a ``NotADirectoryError`` naming that file."""
    path = regular_file(path)
    folder = next(p for p in path.parents if p.exists())  # (mkdir said "File exists" of it, or named a folder below)
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder} is a file, not a folder: cannot write {path} in it; give a path in a "
                                 "folder")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{_shortened(path.name, 200)}.", suffix=".tmp")
    except OSError as exc:  # (a read-only folder: named by the file asked for, not by a temporary name)
        raise OSError(exc.errno, exc.strerror, str(path)) from None
    file = None
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # as open() would create it, not mkstemp's private 0600
        with os.fdopen(fd, "wb") as f:
            file = _KeepsWriteErrors(f)
            write(file)
            file.flush()
            file.sync()
        try:
            os.replace(tmp, path)
        except OSError as exc:  # (an immutable file in its place)
            raise OSError(exc.errno, exc.strerror, str(path)) from None
        _sync_folder(path.parent)
    except Exception as exc:
        refused = None if file is None else file.error
        if refused is None or refused.errno is None:
            raise
        raise OSError(refused.errno, refused.strerror, str(path)) from exc
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _shortened(name: str, size: int) -> str:
    """``name`` cut to at most ``size`` bytes as the file system stores it (a temporary name must fit where the name
    itself just fits: 255 bytes on most)."""
    while len(os.fsencode(name)) > size:
        name = name[:-1]
    return name


def _sync_folder(folder: Path) -> None:
    """Flush a folder's entries to disk (POSIX); where a folder cannot be opened or synced (Windows, some network
    file systems) the rename is as durable as the system makes it."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def exclusive(folder):
    """Hold the lock of ``folder`` (its file ``.lock``) while the block runs, which gets whether it holds one: another
    process holding it is a ``RuntimeError`` naming it (two runs on one results folder would compute everything twice
    and delete each other's saved states). The system frees the lock when its process ends, even killed. No lock
    where ``fcntl`` is missing (Windows) or the file system refuses locks (some network ones)."""
    folder = Path(folder)
    with open(folder / ".lock", "a+") as handle:
        locked = _lock(handle)
        if locked is None:
            handle.seek(0)
            raise RuntimeError(f"{folder} is in use by another run (process {handle.read().strip() or '?'}): wait "
                               "for it to end, or stop it; one run at a time resumes a results folder")
        if locked:
            handle.truncate(0)
            handle.write(f"{os.getpid()} on {socket.gethostname()}")
            handle.flush()
        yield locked  # (closing the file frees the lock)


def _lock(handle) -> bool | None:
    """Lock the open file ``handle`` for this process: True, or None where another process holds it, or False where
    the system has no such lock."""
    if fcntl is None:  # pragma: no cover (Windows)
        return False
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return None
    except OSError:  # a file system without locks (ENOLCK)
        return False
    return True


_KILLED_WRITE = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp")  # write_atomically's: mkstemp's .<file>.<8 characters>.tmp


def delete_killed_writes(folder) -> None:
    """Delete the temporary files a killed :func:`write_atomically` left in ``folder`` and its subfolders, hidden ones
    aside: call it holding the folder's lock (:func:`exclusive`), no other process writing there."""
    for parent, folders, files in os.walk(folder):
        folders[:] = [name for name in folders if not name.startswith(".")]
        for name in files:
            path = Path(parent) / name
            if _KILLED_WRITE.fullmatch(name) and path.is_file() and not path.is_symlink():
                path.unlink(missing_ok=True)


class _KeepsWriteErrors:
    """A binary file that keeps the first ``OSError`` of its writes: ``torch.save`` turns a full disk into a
    ``RuntimeError`` of its own ("unexpected pos 704 vs 598"), which must not hide it."""

    def __init__(self, file):
        self._file, self.error = file, None

    def _kept(self, operation, *args):
        try:
            return operation(*args)
        except OSError as error:
            self.error = self.error or error
            raise

    def write(self, data):
        return self._kept(self._file.write, data)

    def flush(self):
        return self._kept(self._file.flush)

    def sync(self):
        return self._kept(os.fsync, self._file.fileno())

    def __getattr__(self, name):  # tell, seek, fileno ... as the file's
        return getattr(self._file, name)


def write_text_atomically(path, text: str) -> None:
    """:func:`write_atomically` for UTF-8 text (a report, a table)."""
    write_atomically(path, lambda f: f.write(text.encode("utf-8")))


def regular_file(path) -> Path:
    """The file ``path`` names, following symbolic links; refused when it exists but is not a regular file
    (``/dev/null``, a pipe, a socket, a folder): writing by renaming over it would replace it."""
    path = Path(os.path.realpath(path))
    if path.exists() and not path.is_file():
        kind = "a folder" if path.is_dir() else "not a regular file (a device, pipe or socket)"
        raise ValueError(f"{path} is {kind}; give the path of a file to write")
    return path


def load_checkpoint(path, map_location=None) -> tuple[nn.Module, dict]:
    """Rebuild the model of a rectgrad checkpoint (eval mode) and return it with its metadata."""
    payload = _torch_load(Path(path), map_location, weights_only=True)
    return _from_checkpoint(payload, Path(path))


def load_model(path, map_location=None) -> nn.Module:
    """Load a model in eval mode from a rectgrad checkpoint, a whole ``nn.Module`` saved with
    ``torch.save(model, path)``, a TorchScript file or a ``torch.export``-ed program (``.pt2``, with a free
    batch dimension). Pickled modules can run code when loaded: only load files you trust."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file {path} not found")
    if _is_exported_program(path):
        return _load_exported(path)
    if _is_torchscript(path):
        try:
            return torch.jit.load(str(path), map_location=map_location).eval()
        except RuntimeError as exc:
            raise ValueError(f"{path}: corrupt TorchScript file ({one_line(exc)})") from None
    try:
        payload = _torch_load(path, map_location, weights_only=True)
    except ValueError:  # holds more than tensors and plain values (a pickled module), or is corrupt
        payload = _torch_load(path, map_location, weights_only=False)
    if isinstance(payload, nn.Module):
        return payload.eval()
    if isinstance(payload, dict) and "format" in payload:
        return _from_checkpoint(payload, path)[0]
    if is_state_dict(payload):
        raise ValueError(f"{path} holds a bare state dict, not a model: save the model itself, "
                         "torch.save(model, path) (or TorchScript / torch.export), or for the paper's CNN "
                         "rectgrad.checkpoint.save_checkpoint")
    holds = "" if not isinstance(payload, dict) else f" (keys {', '.join(map(str, list(payload)[:5]))})"
    entry = next((key for key, value in payload.items() if isinstance(value, nn.Module)), None) if isinstance(
        payload, dict) else None
    if entry is not None:  # a training's checkpoint holding the model whole: {'model': model, 'optimizer': ...}
        raise ValueError(f"{path} holds a dict{holds}, not a model or rectgrad checkpoint: its {entry!r} entry is a "
                         f"{type(payload[entry]).__name__}; save that model by itself, torch.save(checkpoint[{entry!r}]"
                         f", path) (in Python, checkpoint[{entry!r}] is the model to use)")
    raise ValueError(f"{path} holds a {type(payload).__name__}{holds}, not a model or rectgrad checkpoint: a "
                     "training checkpoint's dict? save the model itself, torch.save(model, path)")


def is_state_dict(value) -> bool:
    """Whether ``value`` is what ``module.state_dict()`` gives: a non-empty dict of tensors alone."""
    return isinstance(value, dict) and bool(value) and all(isinstance(v, torch.Tensor) for v in value.values())


def _torch_load(path: Path, map_location, weights_only: bool):
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=weights_only)
    except Exception as exc:  # noqa: BLE001 - a corrupt pickle can fail in many ways; report them as one
        if not weights_only and isinstance(exc, (ModuleNotFoundError, AttributeError)):  # pickle's class lookup
            raise ValueError(f"{path} holds a model saved whole whose class cannot be imported here ({one_line(exc)}): "
                             "define the class in a module importable where the file is loaded (not in the script "
                             "that saves it), or save the model with torch.export or TorchScript instead") from None
        if "on a CUDA device but torch.cuda.is_available() is False" in str(exc):
            raise ValueError(f"{path} was saved on a GPU, and this machine has none: load it with map_location='cpu' "
                             "(rectgrad explain and zoo.load do)") from None
        what = ("is not a torch file, is corrupt, or holds objects other than tensors and plain values"
                if weights_only else "is not a torch file or is corrupt")
        raise ValueError(f"{path} {what} ({one_line(exc)})") from None


def _from_checkpoint(payload, path: Path) -> tuple[nn.Module, dict]:
    """The model of a loaded checkpoint ``payload`` and its metadata. The model is built without weights (on the meta
    device) and takes the loaded tensors themselves, so that it lies where ``map_location`` put them (it was built on
    the CPU and copied them there: map_location="cuda" gave a CPU model)."""
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path} is not a rectgrad checkpoint (no format {FORMAT!r})")
    architecture = payload.get("architecture")
    if architecture not in ARCHITECTURES:
        raise ValueError(f"{path} holds a {architecture!r} model; this version of rectgrad rebuilds "
                         f"{', '.join(ARCHITECTURES)}")
    try:
        with torch.device("meta"):
            model = ARCHITECTURES[architecture](**payload["config"])
        model.load_state_dict(payload["state_dict"], assign=True)
        model.float()  # float32, as the constructor builds it (weights saved in another type were copied into it)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(f"{path}: the weights do not fit {architecture}({payload.get('config')}): "
                         f"{one_line(exc)}") from None
    metadata = payload.get("metadata", {})
    if not isinstance(metadata, dict):  # (written by hand or another tool: dict() failed in Python's words)
        raise ValueError(f"{path}: its metadata is a {type(metadata).__name__}, not a dict; the checkpoint was not "
                         "written by save_checkpoint")
    return model.eval(), dict(metadata)


def _load_exported(path: Path) -> nn.Module:
    """The module of a ``torch.export.save``-d program, which must take one tensor with a free batch dimension:
    the methods run batches of other sizes (DeepLIFT's references, SmoothGrad's noisy copies). It runs as it
    was exported (``eval()`` does not apply)."""
    try:
        module = torch.export.load(str(path)).module()
    except Exception as exc:  # noqa: BLE001 - a broken archive can fail in many ways; report them as one
        raise ValueError(f"{path}: corrupt exported program ({one_line(exc)})") from None
    shapes = exported_input_shapes(module)
    if len(shapes) != 1 or shapes[0] is None or len(shapes[0]) == 0:
        raise ValueError(f"{path}: the exported program takes {len(shapes)} inputs; rectgrad explains models that "
                         "take one tensor of images")
    if isinstance(shapes[0][0], int):
        raise ValueError(f"{path} was exported for batches of exactly {shapes[0][0]}; the methods run batches of "
                         f"other sizes, so {EXPORT_FREE_BATCH}")
    return module


def exported_input_shapes(module: torch.fx.GraphModule) -> list:
    """The shape of each input of an exported program's module (``None`` where unknown; sizes that were free at
    export are symbols, not ints)."""
    return [getattr(node.meta.get("val"), "shape", None) for node in module.graph.nodes if node.op == "placeholder"]


def exported_batch_bound(module: nn.Module) -> int | None:
    """The largest batch an exported program's module takes, where it was exported with a bounded batch dimension
    (``Dim("batch", max=N)``); None for any other module, or a free batch."""
    shapes = exported_input_shapes(module) if isinstance(module, torch.fx.GraphModule) else []
    batch = shapes[0][0] if len(shapes) == 1 and shapes[0] else None
    if not isinstance(batch, torch.SymInt):
        return None
    upper = batch.node.shape_env.var_to_range[batch.node.expr].upper
    return int(upper) if upper.is_finite else None


def _is_exported_program(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("/archive_format") for name in archive.namelist())


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("/constants.pkl") for name in archive.namelist())


def one_line(exc: BaseException, limit: int = 300) -> str:
    """An exception's message on one line (its type's name when it has none), cut at ``limit`` characters."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[:limit] + "..."
