"""Typed HDF5 attributes with units: the one convention of the project's HDF5 files.

A value is stored as what it is, never as a JSON string, so that ``h5dump``, HDFView or
``h5py`` in someone else's script show ``exposure_s = 0.001``, not ``'0.001'``:

* ``str`` -> a UTF-8 string; ``bool`` -> an HDF5 boolean (numpy ``bool_``);
  ``int`` -> int64; ``float`` -> float64;
* a sequence or array of numbers -> an int64 or float64 array (bools: bool array);
* ``None`` -> no attribute (reading an absent attribute gives the default, None).

Units (``px``, ``s``, ``rad``, ``counts``, ...) are strings beside the value:

* on a dataset, its attribute ``units``;
* for an attribute ``name`` of a file or group, the attribute ``name_units``.

Reading (``get_attr``) checks what came before using it: the kind (a number where a
number belongs, not a string), the shape where it is fixed, and the size *before* an
array is read (a file with a billion-element attribute is refused, not loaded). Every
failure is a ``ValueError`` naming the file, the attribute, what was expected and what
came. No attribute is ever unpickled or evaluated.

The module uses numpy only (the ``attrs`` passed in are h5py ``AttributeManager``\\s), so
every package may use it (it lives in ``simulation``, the bottom of the import chain).
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping, Sequence
from typing import Any

import numpy as np

__all__ = ["set_attr", "get_attr", "set_units", "units_of", "UNITS_ATTR", "UNITS_SUFFIX",
           "MAX_ATTR_ELEMENTS", "MAX_STR_CHARS"]

UNITS_ATTR = "units"  # on a dataset
UNITS_SUFFIX = "_units"  # attribute name + suffix, on a file or group
MAX_ATTR_ELEMENTS = 1 << 16  # an array attribute larger than this is refused unread
MAX_STR_CHARS = 1 << 16  # a string attribute longer than this is refused
_KINDS = {"str": "a string", "int": "an integer", "float": "a number", "bool": "a boolean",
          "int_array": "an integer array", "float_array": "a numeric array"}


def set_attr(attrs: MutableMapping[str, Any], name: str, value: Any,
             units: str | None = None) -> None:
    """Store ``value`` under ``name`` as a native typed attribute (module docstring);
    ``units``: also store ``name_units``. ``None`` removes the attribute."""
    if value is None:
        if name in attrs:
            del attrs[name]
        return
    attrs[name] = _native(name, value)
    if units is not None:
        attrs[name + UNITS_SUFFIX] = str(units)


def set_units(obj: Any, units: str) -> None:
    """Record the units of a dataset (its ``units`` attribute)."""
    obj.attrs[UNITS_ATTR] = str(units)


def units_of(obj: Any, name: str | None = None) -> str | None:
    """The units of a dataset (``name`` None), or of attribute ``name`` of a file/group;
    None when none are recorded or they are not a short string."""
    key = UNITS_ATTR if name is None else name + UNITS_SUFFIX
    v = obj.attrs.get(key)
    if isinstance(v, bytes):
        v = v.decode("utf-8", "replace")
    return v if isinstance(v, str) and len(v) <= 64 else None


def _native(name: str, value: Any) -> Any:
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, np.bool_)):
        return np.bool_(value)
    if isinstance(value, (int, np.integer)):
        return np.int64(value)
    if isinstance(value, (float, np.floating)):
        return np.float64(value)
    if isinstance(value, (Sequence, np.ndarray)) and not isinstance(value, (bytes, bytearray)):
        a = np.asarray(value)
        if a.dtype == bool:
            return a
        if np.issubdtype(a.dtype, np.integer):
            return a.astype(np.int64)
        if np.issubdtype(a.dtype, np.floating):
            return a.astype(np.float64)
    raise TypeError(f"attribute {name!r}: expected a string, a number, a bool or an array of "
                    f"numbers, got {type(value).__name__} {value!r:.80}")


def _describe(v: Any) -> str:
    if isinstance(v, np.ndarray):
        return f"an array of {v.dtype} with shape {v.shape}"
    return f"{type(v).__name__} {v!r:.60}"


def get_attr(attrs: Mapping[str, Any], name: str, kind: str, *, where: Any = "",
             default: Any = None, shape: tuple[int | None, ...] | None = None,
             max_elements: int = MAX_ATTR_ELEMENTS) -> Any:
    """Attribute ``name`` checked to be of ``kind`` (``str``, ``int``, ``float``, ``bool``,
    ``int_array``, ``float_array``) and returned as a Python value (arrays: numpy int64 /
    float64); ``default`` when absent. ``shape`` (arrays): the expected shape, None for a
    free axis. ``where`` (the file) starts every error message."""
    if kind not in _KINDS:
        raise ValueError(f"kind: expected one of {tuple(_KINDS)}, got {kind!r}")
    if name not in attrs:
        return default
    label = f"{where}: attribute {name!r}" if where else f"attribute {name!r}"
    get_id = getattr(attrs, "get_id", None)
    if get_id is not None:  # h5py: look at the shape before reading anything
        aid = get_id(name)
        size = int(np.prod(aid.shape)) if aid.shape else 1
        if size > max_elements:
            raise ValueError(f"{label}: expected at most {max_elements} elements, got shape "
                             f"{aid.shape}; refused unread")
    try:
        v = attrs[name]
    except (OSError, TypeError, ValueError) as exc:  # a type h5py cannot read
        raise ValueError(f"{label}: cannot be read ({exc})") from exc
    if isinstance(v, bytes):
        try:
            v = v.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"{label}: expected UTF-8 text, got undecodable bytes") from exc
    a = np.asarray(v) if not isinstance(v, str) else None
    bad = f"{label}: expected {_KINDS[kind]}"
    if kind == "str":
        if not isinstance(v, str):
            raise ValueError(f"{bad}, got {_describe(v)}")
        if len(v) > MAX_STR_CHARS:
            raise ValueError(f"{bad} of at most {MAX_STR_CHARS} characters, got {len(v)}")
        return v
    if a is None or a.dtype.kind not in "biuf":
        raise ValueError(f"{bad}, got {_describe(v)}")
    if kind in ("int", "float", "bool"):
        if a.ndim != 0:
            raise ValueError(f"{bad} (a scalar), got {_describe(a)}")
        if kind == "bool":
            if a.dtype.kind != "b":
                raise ValueError(f"{bad}, got {_describe(v)}")
            return bool(a)
        if kind == "int":
            if a.dtype.kind not in "iu":
                raise ValueError(f"{bad}, got {_describe(v)}")
            return int(a)
        if not np.isfinite(a):
            raise ValueError(f"{bad} (finite), got {float(a)}")
        return float(a)
    if kind == "int_array" and a.dtype.kind not in "iu":
        raise ValueError(f"{bad}, got {_describe(a)}")
    if a.size > max_elements:
        raise ValueError(f"{bad} of at most {max_elements} elements, got shape {a.shape}")
    if shape is not None and (a.ndim != len(shape) or any(
            s is not None and s != n for s, n in zip(shape, a.shape, strict=True))):
        want = "(" + ", ".join("any" if s is None else str(s) for s in shape) + ")"
        raise ValueError(f"{bad} of shape {want}, got {_describe(a)}")
    return a.astype(np.int64 if kind == "int_array" else np.float64)
