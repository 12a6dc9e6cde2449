"""Checks of command-line options shared by the commands, made before any work starts: a run must not compute
for minutes and then fail on an option it could have refused at once."""
from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

from rectgrad import _checks as checks


#: ``--device``'s help, as :func:`device` reads it
DEVICE_HELP = "cpu, cuda, cuda:N (the N-th GPU) or auto (cuda when available)."


def device(value: str) -> str:
    """``--device``: cpu, cuda[:N] (N one of this machine's GPUs) or auto (cuda when available)."""
    import torch

    if value == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return checks.device(value, "--device", "cpu, cuda, cuda:N or auto")


def path(value) -> Path:
    """The parser of the options and arguments naming a file or folder the command writes (``--out``, ``--work-dir``,
    ...) or reads (``--data-dir``, ``--masks``, ``--weights``, the images): the text given as a Path, an empty one
    refused before any work: ``Path("")`` is ``.``, so ``--out ""`` wrote into the current folder, and ``--data-dir ""``
    read the dataset from it."""
    if isinstance(value, str) and not value:
        import typer

        raise typer.BadParameter("an empty path names no file or folder (it would read as ., the current folder): "
                                 "give a name")
    return Path(value)


def output_file(path: Path, option: str, suffixes: tuple[str, ...] = ()) -> Path:
    """A file the command will write: not a folder, in a folder it can write to (or create), with one of
    ``suffixes`` (any case) when given."""
    _names_fit(path, option)
    if path.is_dir():
        raise IsADirectoryError(f"{option} {path} is a folder; give a file name")
    if suffixes and path.suffix.lower() not in suffixes:
        raise ValueError(f"{option} must name a {' / '.join(suffixes)} file, got {path}")
    from rectgrad.checkpoint import regular_file

    try:
        target = regular_file(path)  # a symbolic link's target is what gets written
    except ValueError as exc:
        raise ValueError(f"{option}: {exc}") from None
    _writable(target.parent, option, path)
    return path


def output_folder(path: Path, option: str) -> Path:
    """A folder the command will write into: not an existing file nor a link to a missing one, somewhere
    writable."""
    _names_fit(path, option)
    if path.is_symlink() and not path.exists():  # the folder could be made neither there nor through the link
        raise FileNotFoundError(f"{option} {path} is a symbolic link to {os.readlink(path)}, which does not exist: "
                                f"create that folder or give another {option}")
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{option} {path} exists and is not a folder")
    _writable(path, option, path)
    return path


def input_folder(path: Path | None, option: str) -> Path | None:
    """A folder the command reads (``--data-dir``, ``--masks``): when it exists, a folder, not a file."""
    if path is not None and path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{option} {path} is a file; give the folder that holds it")
    return path


def apart_from_inputs(path: Path, option: str, inputs) -> None:
    """An output file that is none of the input images ``inputs`` (files or folders) and that no folder among them
    would list as an image on a rerun: it would overwrite a picture, or be explained next time."""
    from rectgrad.data import IMAGE_SUFFIXES

    written = path.resolve()
    for given in map(Path, inputs):
        if written == given.resolve():
            raise ValueError(f"{option} {path} is the input image {given}: give another file name")
        if given.is_dir() and written.parent == given.resolve() and written.suffix.lower() in IMAGE_SUFFIXES:
            raise ValueError(f"{option} {path} is in the input folder {given}: a rerun would take it for an image "
                             "or a mask; write it elsewhere")


def folder_apart_from_inputs(path: Path, option: str, inputs, data_root: Path | None, prefix: str) -> None:
    """An output folder that is none of the input folders ``inputs`` (a rerun would read its figures as images),
    holds none of the input files the study writes over (``<prefix>_*``, links followed), nor a link ``<prefix>_*``
    to an input file or into an input folder or ``data_root`` (the study would write through it), and is not inside
    ``data_root/train`` or ``data_root/test`` (``--dataset folder``, whose class folders are read at any depth)."""
    written = path.resolve()
    for given in map(Path, inputs or ()):
        if given.is_dir() and written == given.resolve():
            raise ValueError(f"{option} {path} is the input folder {given}: a rerun would read its figures as "
                             "images; give another folder")
        if given.resolve().parent == written and given.resolve().name.startswith(f"{prefix}_"):
            raise ValueError(f"{option} {path} holds the input image {given}, which the study writes over: give "
                             "another folder")
    read = [Path(given).resolve() for given in (*(inputs or ()), *(() if data_root is None else (data_root,)))]
    for link in (p for p in (path.glob(f"{prefix}_*") if path.is_dir() else ()) if p.is_symlink()):
        target = link.resolve()
        if any(target == given or target.is_relative_to(given) for given in read):
            raise ValueError(f"{option} {path} holds {link.name}, a link to the input {target}, which the study "
                             "would write over: remove the link or give another folder")
    for split in () if data_root is None else (data_root / "train", data_root / "test"):
        if written.is_relative_to(split.resolve()) and written != split.resolve():
            raise ValueError(f"{option} {path} is inside {split}, whose images --dataset folder reads: a rerun (or "
                             "a training) would read its figures as images; give a folder outside it")


def outside_splits(path: Path, option: str, data_root: Path) -> None:
    """An output folder that is neither ``data_root/train`` nor ``data_root/test`` nor inside them: ``--dataset folder``
    reads their class folders at any depth, so a rerun would read the figures written there as images (or the work
    folder as a class of its own)."""
    written = path.resolve()
    for split in (data_root / "train", data_root / "test"):
        if written.is_relative_to(split.resolve()):
            raise ValueError(f"{option} {path} is {'' if written == split.resolve() else 'inside '}{split}, whose "
                             "images --dataset folder reads: a rerun would read the figures written there as images; "
                             f"give a folder outside it (such as {data_root / 'report'})")


def no_new_class(path: Path, option: str, data_root: Path) -> None:
    """A file written inside ``data_root/train`` or ``data_root/test`` goes into a folder there that exists: one the
    command would make right under them, ``--dataset folder`` would read as a class holding no images, and refuse the
    dataset on every later run."""
    written = path.resolve()
    for split in (data_root / "train", data_root / "test"):
        if written.is_relative_to(split.resolve()) and written.parent != split.resolve():
            folder = split / written.relative_to(split.resolve()).parts[0]
            if not folder.is_dir():
                raise ValueError(f"{option} {path} would make the folder {folder}, which --dataset folder would read "
                                 f"as a class holding no images (every later run on {data_root} would fail on it): "
                                 f"write it outside {split} (such as {data_root / path.name})")


def _writable(folder: Path, option: str, path: Path) -> None:
    """``folder`` can be written in, or created (missing folders are made as the command writes)."""
    folder = next(p for p in (folder, *folder.parents) if p.exists())
    if not folder.is_dir():
        raise NotADirectoryError(f"{option} {path}: {folder} is a file, not a folder")
    try:  # the real test: permissions, read-only and special file systems alike
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise PermissionError(f"{option} {path}: cannot write in {folder} ({exc.strerror})") from None


def _names_fit(path: Path, option: str) -> None:
    """Every name in ``path`` is no longer than its file system allows: checked before anything looks the path up,
    as the system's refusal (ENAMETOOLONG) names no option."""
    absolute = Path(os.path.abspath(path))
    folder, found = Path(absolute.anchor), True
    for name in absolute.parts[1:]:
        size, longest = len(os.fsencode(name)), _longest_name(folder)
        if size > longest:
            raise ValueError(f"{option} {path}: the name {name[:20]}... is {size} bytes long; the file system of "
                             f"{folder} allows at most {longest}")
        found = found and os.path.isdir(folder / name)
        folder = folder / name if found else folder  # names to be made are checked where they will be made


def _longest_name(folder: Path) -> int:
    """The longest file name (in bytes) the file system of ``folder`` allows (255 where the system cannot say)."""
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (AttributeError, OSError, ValueError):  # (no pathconf on Windows)
        return 255


def positive_int(value: int | None, option: str) -> int | None:
    return None if value is None else checks.positive_int(option, value)


def positive_number(value: float, option: str) -> float:
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{option} must be a finite positive number, got {value}")
    return value


def seed(value: int, option: str = "--seed") -> int:
    if not 0 <= value < 2**63:
        raise ValueError(f"{option} must be an integer in [0, 2**63), got {value}")
    return value


def percentile(value: float, option: str = "--q") -> float:
    if not 0.0 <= value <= 100.0:  # NaN fails too
        raise ValueError(f"{option} must be a percentile in [0, 100], got {value}")
    return value


def methods(text: str | None, default: tuple[str, ...], every: tuple[str, ...] | None = None) -> list[str]:
    """``--methods``: comma-separated registry names (each once), ``all`` alone (``every``; default: every method),
    or ``default`` when not given."""
    from rectgrad.methods import METHOD_NAMES, get_method

    if text is None:
        return list(default)
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise ValueError(f"--methods is empty; known methods: {', '.join(METHOD_NAMES)}")
    if "all" in names:
        if len(names) > 1:
            raise ValueError("--methods: 'all' cannot be combined with other names; give it alone or list the "
                             "methods")
        return list(METHOD_NAMES if every is None else every)
    for name in names:
        get_method(name)
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"--methods names {', '.join(repeated)} more than once")
    return names
