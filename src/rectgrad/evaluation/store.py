"""A results folder that makes long experiments resumable: one file per finished unit of work.

``config.json`` records the configuration the results were made with; opening the folder with another
configuration is refused, so results of different settings never mix. Every file is written to a
temporary file in the same folder and renamed (``os.replace``), so an interruption leaves either the
whole file or none of it. ``seconds/`` records how long each unit of work took when it was done, so the
compute time of a run is known even when it was interrupted and resumed, on one device or several.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from rectgrad.checkpoint import one_line, write_atomically
from rectgrad.methods import METHOD_NAMES

CONFIG = "config.json"
SECONDS = "seconds"


def checked_folder(folder) -> Path:
    """``folder`` as a Path, or a ``NotADirectoryError`` where a file holds its place, or a ``ValueError`` where it
    is not empty (hidden files aside) but holds no :data:`CONFIG`: no results folder, refused before anything (a lock
    file, the data read) is spent on it."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"{folder} exists and is not a folder")
    if folder.is_dir() and not (folder / CONFIG).is_file() \
            and any(not p.name.startswith(".") for p in folder.iterdir()):
        raise ValueError(f"{folder} is not empty but holds no {CONFIG}: it is no results folder, or one whose "
                         "configuration is lost, whose results can be neither resumed nor mixed with new ones; give "
                         "a new or empty folder")
    return folder


class ResultStore:
    """Resumable results under ``folder``, bound to ``config`` (plain JSON values); ``resumed``: the folder held
    results of this configuration already. ``growing``: a key of ``config`` holding a list of names the folder's
    may be part of (results of more methods added to it): :meth:`record_growth`, once they are all computed, has
    ``config.json`` take the longer list (an addition stopped or failing leaves the folder's configuration as it
    was). ``defaults``: keys added to ``config`` since folders were first written, each with the value their results
    were made with: a saved configuration lacking one is read with it (such a folder resumes)."""

    def __init__(self, folder, config: dict, growing: str | None = None, defaults: dict | None = None):
        self.folder = checked_folder(folder)
        config = json.loads(json.dumps(config))  # normalise tuples to lists, as they read back
        saved, self._grown = self._compared(self.folder, config, growing, defaults)
        self.config, self.resumed = config, saved is not None
        if saved is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            self.save_json(CONFIG, config)

    @classmethod
    def check_config(cls, folder, config: dict, growing: str | None = None, defaults: dict | None = None,
                     unknown: tuple[str, ...] = ()) -> None:
        """Refuse ``folder`` as :class:`ResultStore` would open it with ``config`` where its saved configuration
        differs in a key other than those ``unknown`` (not known yet: the data's record before the data is read), so
        that a folder of another configuration is refused before work its refusal would waste."""
        config = {key: value for key, value in json.loads(json.dumps(config)).items() if key not in unknown}
        cls._compared(Path(folder), config, growing, defaults, unknown)

    @classmethod
    def _compared(cls, folder: Path, config: dict, growing: str | None, defaults: dict | None,
                  unknown: tuple[str, ...] = ()) -> tuple[dict | None, bool]:
        """The configuration saved in ``folder`` (None: none) and whether ``config`` grows its ``growing`` list; an
        error naming the keys that differ where it is another configuration (the keys ``unknown`` left out)."""
        saved = cls.read_config(folder)
        if saved is None:
            return None, False
        saved = {key: value for key, value in {**(defaults or {}), **saved}.items() if key not in unknown}
        grown = False
        if _names(saved.get(growing)) and _names(config.get(growing)) and set(saved[growing]) <= set(config[growing]):
            grown = saved[growing] != config[growing]
            saved = {**saved, growing: config[growing]}  # the growing list told apart from the other settings
        if saved != config:
            raise ValueError(f"{folder} holds results of another configuration ({_difference(saved, config)}); "
                             "refusing to mix them: use another folder or delete this one")
        return saved, grown

    def record_growth(self) -> None:
        """``config.json`` takes the configuration's longer ``growing`` list: call it once its results are computed."""
        if self._grown:
            self.save_json(CONFIG, self.config)
            self._grown = False

    @staticmethod
    def read_config(folder) -> dict | None:
        """The configuration saved in ``folder``, or None if it holds none."""
        path = Path(folder) / CONFIG
        return read_json(path, numbers=(), remedy=UNKNOWN_CONFIG) if path.is_file() else None

    def bind(self, name: str, arguments: dict, results: str) -> None:
        """Record ``arguments`` (plain JSON values) in ``name`` on first use; refuse other ones later, naming the keys
        that differ: the ``results`` the folder holds were made with the recorded ones and must not mix with others'."""
        arguments = json.loads(json.dumps(arguments))
        if not self.has(name):
            self.save_json(name, arguments)
            return
        remedy = (f"delete it if the {results} beside it were made with the arguments of this call (they are then "
                  "recorded anew), else delete those results too")
        saved = read_json(self.path(name), numbers=(), remedy=remedy)
        if saved != arguments:
            raise ValueError(f"the {results} in {self.folder} were made with other arguments "
                             f"({_difference(saved, arguments)}; recorded in {name}): refusing to mix them: pass the "
                             "same ones, or use another folder")

    def path(self, name: str) -> Path:
        return self.folder / name

    def has(self, name: str) -> bool:
        return self.path(name).is_file()

    def save_json(self, name: str, value) -> None:
        self._write(name, lambda f: f.write(json.dumps(value, indent=1).encode()))

    def load_json(self, name: str):
        return read_json(self.path(name))

    def save_seconds(self, unit: str, seconds: float) -> None:
        """Record the compute time of one finished unit of work (``seconds/<unit>.json``)."""
        self.save_json(f"{SECONDS}/{unit}.json", {"seconds": float(seconds)})

    @staticmethod
    def read_seconds(folder) -> dict[str, float]:
        """The recorded compute times in ``folder``: ``{unit: seconds}``, units named with ``/`` on every system; a
        time that is no duration (NaN, inf, below 0) makes its file corrupt."""
        root = Path(folder) / SECONDS
        return {p.relative_to(root).with_suffix("").as_posix(): _read_duration(p) for p in sorted(root.rglob("*.json"))}

    def save_torch(self, name: str, value) -> None:
        """Save a tensor, or a dict / list of tensors and plain values, with ``torch.save``."""
        self._write(name, lambda f: torch.save(value, f))

    def load_torch(self, name: str):
        return read_torch(self.path(name))

    def _write(self, name: str, write) -> None:
        write_atomically(self.path(name), write)


# what to do about a damaged saved file (the report reads results with these too)
RERUN = "delete it and rerun to compute it again"
UNKNOWN_CONFIG = ("the results beside it cannot be checked against any configuration: delete the whole folder, or use "
                   "another one, and rerun")
_LOST_TIME = "delete it: the report then lacks that unit's compute time"


def known_methods(path: Path, methods, remedy: str = "report them with that version, or rerun into another folder"
                  ) -> list[str]:
    """The method names a saved file lists, each one rectgrad has: else an error naming the file, the unknown names
    and the known ones (results of another rectgrad version, whose methods this one lacks), and the ``remedy``."""
    methods = list(methods)
    unknown = [m for m in methods if m not in METHOD_NAMES]
    if unknown:
        raise ValueError(f"{path} names a method this rectgrad does not know, {', '.join(map(repr, unknown))} (known "
                         f"methods: {', '.join(METHOD_NAMES)}): results of another rectgrad version; {remedy}")
    return methods


def _read_duration(path: Path) -> float:
    seconds = float(read_json(path, ("seconds",), _LOST_TIME)["seconds"])
    if not 0.0 <= seconds < math.inf:
        raise corrupt(path, f"seconds {seconds!r}, not a duration >= 0", _LOST_TIME)
    return seconds


def read_json(path: Path, numbers: tuple[str, ...] | None = None, remedy: str = RERUN):
    """A saved JSON file; a corrupt one (damaged outside rectgrad: writes are atomic) is a ``ValueError`` naming it
    and the ``remedy``. With ``numbers``, the file must hold an object whose ``numbers`` keys are numbers (a config
    or a result file); anything else is corrupt too."""
    try:
        value = json.loads(path.read_text())
    except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise corrupt(path, exc, remedy) from None
    if numbers is not None:
        if not isinstance(value, dict):
            raise corrupt(path, f"a JSON {type(value).__name__}, not an object", remedy)
        wrong = [k for k in numbers if not isinstance(value.get(k), (int, float)) or isinstance(value.get(k), bool)]
        if wrong:
            raise corrupt(path, f"no number {wrong[0]!r}", remedy)
    return value


def read_torch(path: Path):
    """A saved tensor file (tensors and plain values only); a corrupt one is a ``ValueError`` naming it (a file that
    cannot be opened, missing or unreadable, gets the error of its own)."""
    with open(path, "rb") as file:
        try:
            return torch.load(file, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - damaged or foreign bytes fail in many ways (KeyError, struct.error, ...)
            raise corrupt(path, exc) from None


def corrupt(path: Path, why: BaseException | str, remedy: str = RERUN) -> ValueError:
    """The error for a file damaged outside rectgrad: it names the file, why, and what to do."""
    return ValueError(f"{path} is corrupt ({one_line(why) if isinstance(why, BaseException) else why}): {remedy}")


def _names(value) -> bool:
    return isinstance(value, list) and all(isinstance(name, str) for name in value)


def _difference(saved: dict, wanted: dict) -> str:
    diffs = _differences(saved, wanted)
    return "; ".join(diffs[:3]) + ("; ..." if len(diffs) > 3 else "")


def _differences(saved: dict, wanted: dict, prefix: str = "") -> list[str]:
    """The keys whose values differ, each with both values: a level's own values first (what a user sets, e.g.
    ``scale``, before the ``parameters`` it implies), then the nested ones by their path (``data.crc32``)."""
    diffs, nested = [], []
    shown = lambda d, key: repr(d[key]) if key in d else "absent"  # noqa: E731  (a key set to None is not absent)
    for key in sorted(set(saved) | set(wanted)):
        there, here = saved.get(key), wanted.get(key)
        if isinstance(there, dict) and isinstance(here, dict):
            nested += _differences(there, here, f"{prefix}{key}.")
        elif there != here or (key in saved) != (key in wanted):
            diffs.append(f"{prefix}{key}: {shown(saved, key)} there, {shown(wanted, key)} here")
    return diffs + nested
