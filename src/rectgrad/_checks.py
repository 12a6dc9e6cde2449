"""Checks shared across the library's modules: one wording for one mistake."""
from __future__ import annotations

import decimal
import difflib
import numbers
import operator
from collections.abc import Iterable

import numpy as np
import torch


EXPORT_FREE_BATCH = ("export it with a free batch dimension and an example batch x of at least 2 images: "
                     "torch.export.export(model, (x,), dynamic_shapes=({0: torch.export.Dim('batch')},))")


def describe(value: object) -> str:
    """What ``value`` is, for an error message: a tensor's dtype and shape, else its type's name."""
    if isinstance(value, torch.Tensor):
        return f"{value.dtype} tensor of shape {tuple(value.shape)}"
    return type(value).__name__


def integer(name: str, value) -> int:
    """``value`` as an int (numpy integers too), or a ``TypeError`` naming ``name`` unless it is an integer (not a
    bool, not 5.0)."""
    try:
        if isinstance(value, (bool, np.bool_)) or getattr(value, "dtype", None) in (torch.bool, np.bool_):
            raise TypeError
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {value!r}") from None


def flag(name: str, value) -> bool:
    """``value`` as a bool, or a ``TypeError`` naming ``name`` unless it is True or False (a numpy bool too): a
    yes/no setting would otherwise read any string or list by its truth."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def real(value) -> bool:
    """Whether ``value`` is a real number (numpy's too) and not a bool, which would otherwise pass as 0 or 1."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def positive_int(name: str, value) -> int:
    """``value`` as an int, or a ``ValueError`` naming ``name`` unless it is an integer >= 1 (not a bool)."""
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def percentile(name: str, value) -> float:
    """``value`` as a float, or a ``ValueError`` naming ``name`` unless it is a real number in [0, 100] (not a bool,
    which would read as the 0th or 1st, nor NaN)."""
    if not (real(value) and 0 <= value <= 100):
        raise ValueError(f"{name} must be a number in [0, 100], got {value!r}")
    return float(value)


def seed(value, allow_none: bool = False):
    """``value`` if it is an integer in [0, 2**64) (what ``torch.Generator.manual_seed`` takes), or None where
    ``allow_none``; else a ``ValueError`` naming it (not a bool, not 1.5)."""
    if value is None and allow_none:
        return None
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or not 0 <= value < 2**64:
        raise ValueError(f"seed must be an integer in [0, 2**64){' or None' if allow_none else ''}, got {value!r}")
    return value


def generator_seed(name: str, value) -> int:
    """``value`` as an int that torch's generators take, in [-2**63, 2**64), or an error naming ``name`` (theirs was
    'Overflow when unpacking long long'); a ``TypeError`` unless it is an integer (not a bool, not 5.7)."""
    value = integer(name, value)
    if not -2**63 <= value < 2**64:
        raise ValueError(f"{name} must be an integer in [-2**63, 2**64), got {value}")
    return value


def generator(value) -> torch.Generator | None:
    """``value`` if it is a ``torch.Generator`` or None, else a ``TypeError`` saying how to make one (a seed is no
    generator)."""
    if value is not None and not isinstance(value, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator (e.g. torch.Generator().manual_seed({value!r}) for a "
                        f"seed) or None, got {type(value).__name__}")
    return value


def fractions(value) -> tuple[float, ...]:
    """``value`` as a tuple of floats, or an error unless it is a non-empty sequence of real numbers strictly
    increasing in the open interval (0, 1): ROAR/KAR's removed or kept fractions and the x-axis of their curves."""
    if isinstance(value, (str, bytes, set, frozenset, dict)) or not isinstance(value, Iterable) \
            or getattr(value, "ndim", 1) != 1:  # (a set or dict has no order; a 0-d array or tensor is one value)
        raise TypeError(f"fractions must be a sequence of fractions, e.g. (0.1, 0.3, 0.5), got {value!r}")
    items = [f.item() if isinstance(f, (torch.Tensor, np.ndarray)) and np.prod(f.shape) == 1 else f  # list(tensor)
             for f in (value.tolist() if isinstance(value, torch.Tensor) else value)]
    if not all(isinstance(f, (numbers.Real, decimal.Decimal)) and not isinstance(f, bool) for f in items):
        raise TypeError(f"fractions must be real numbers, e.g. (0.1, 0.3, 0.5), got {items!r}")
    values = tuple(float(f) for f in items)
    if not values or any(not 0.0 < f < 1.0 for f in values) or any(a >= b for a, b in zip(values, values[1:])):
        raise ValueError(f"fractions must be strictly increasing values in the open interval (0, 1), "
                         f"got {list(values)}")
    return values


def device(value, name: str, forms: str, kinds=("cpu", "cuda")) -> str:
    """``value`` (a string or a ``torch.device``) as a device string, or a ``ValueError`` naming ``name`` and the value:
    a device of one of ``kinds`` (any of torch's where None) as torch reads it (``forms`` says which), and a CUDA device
    this machine has (torch failed only at its first use: "invalid device ordinal", or "not compiled with CUDA")."""
    text = str(value)
    try:
        kind, index = torch.device(text).type, torch.device(text).index  # (refuses "cuda:x", "cuda:-1")
    except (RuntimeError, ValueError):
        kind, index = None, None
    if kind is None or (kinds is not None and kind not in kinds):
        raise ValueError(f"{name} must be {forms}, got {text!r}")
    if kind == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{name} {text} given but no CUDA device is available")
    if kind == "cuda" and index is not None and index >= torch.cuda.device_count():
        count = torch.cuda.device_count()
        raise ValueError(f"{name} {text}: this machine has {count} CUDA device{'s' if count > 1 else ''} "
                         f"(cuda:0{f' .. cuda:{count - 1}' if count > 1 else ''})")
    return text


def install_hint(extra: str) -> str:
    """How to install the optional dependencies ``extra`` (``cli``, ``ray``) of rectgrad."""
    return f"pip install 'rectgrad[{extra}]' (in a clone: pip install -e \".[{extra}]\")"


def did_you_mean(name: str, known, before: str = " (", after: str = ")", aliases=None) -> str:
    """``did you mean 'x'?`` between ``before`` and ``after``, naming the known name another library calls ``name``
    (``aliases``: lower-case name -> known name) or the one closest to a mistyped ``name`` (any case), or ``""``
    when none is close (a cutoff that real typos pass, ``resnet18`` for ``resnet50`` not)."""
    lowered = {str(option).lower(): str(option) for option in known}
    close = difflib.get_close_matches(str(name).lower(), list(lowered), n=1, cutoff=0.8)
    meant = (aliases or {}).get(str(name).lower()) or (lowered[close[0]] if close else None)
    return f"{before}did you mean {meant!r}?{after}" if meant else ""
