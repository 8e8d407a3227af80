"""How ``calibration.store`` lays values out in HDF5 (format version 2), and reads version 1.

A mapping (a step's ``values``, ``residuals``, ``data``, ``devices``) becomes a group:

* an array (ndim >= 1) -> a dataset (gzip above 4096 elements), with its ``units``
  attribute when it has units;
* a number, bool or string, or a list of them (rectangular; up to ``MAX_LIST``
  elements) -> a native typed attribute (``simulation.h5attrs``: ``exposure_s = 0.001``,
  not the JSON text ``'0.001'``), with ``name_units`` beside it when it has units; a
  list reads back as a list;
* a mapping -> a subgroup (its members inherit the parent's units when their own name
  has none: ``zernike_noll_rad/4 = 0.12`` with ``4_units = 'rad'``); creation order is
  kept;
* ``None`` -> an empty attribute (HDF5's null dataspace, ``h5py.Empty``);
* anything else JSON can hold (ragged or mixed lists, lists of mappings, mapping keys
  with a ``/``) -> a JSON string attribute listed in ``_json_keys``, the only JSON left.

Units come from a callable (``step_registry.value_units``: the step's ``units``, else
the unit the name ends in). Reading checks an attribute's size before loading it
(``simulation.h5attrs.MAX_ATTR_ELEMENTS``); nothing is unpickled or evaluated.

Version 1 files (before this layout) kept each group's scalars as one JSON string
attribute ``json`` and ``devices`` as JSON: ``read_mapping_v1`` reads them.
"""

from __future__ import annotations

import json
import numbers
from collections.abc import Callable, Mapping
from typing import Any

import h5py
import numpy as np

from simulation.h5attrs import MAX_ATTR_ELEMENTS, UNITS_SUFFIX, set_attr, set_units

__all__ = ["write_mapping", "read_mapping", "read_mapping_v1", "JSON_KEYS",
           "MAX_LIST"]

JSON_KEYS = "_json_keys"
MAX_LIST = 1024  # a longer list of numbers becomes a dataset (read back as an array)
Units = Callable[[str], "str | None"]


def _leaves(v: Any) -> list[Any]:
    if isinstance(v, (list, tuple)):
        return [x for item in v for x in _leaves(item)]
    return [v]


def _list_value(v: list | tuple) -> np.ndarray | None:
    """A rectangular list of numbers, bools or strings as an array; None otherwise."""
    leaves = _leaves(v)
    try:
        a = np.asarray(v)
    except ValueError:  # ragged
        return None
    if a.dtype == object or a.size != len(leaves):
        return None
    if leaves and all(isinstance(x, str) for x in leaves):
        return np.array(v, dtype=h5py.string_dtype())
    if all(isinstance(x, (bool, np.bool_)) for x in leaves):
        return a.astype(bool)
    if all(isinstance(x, numbers.Real) and not isinstance(x, (bool, np.bool_))
           for x in leaves):
        return a.astype(np.int64 if a.dtype.kind in "iu" else np.float64)
    return None


def _plain_key(k: str) -> bool:
    return bool(k) and "/" not in k and k != "." and k != JSON_KEYS


def _jsonable(x: Any) -> Any:
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    return x


def write_mapping(g: h5py.Group, mapping: Mapping[Any, Any], units: Units,
                  where: str = "") -> None:
    """Write ``mapping`` into the (empty) group ``g`` (module docstring); ``units(key)``
    gives a value's units. A value JSON cannot hold either raises ``TypeError`` naming it."""
    jsons = []
    for key, v in mapping.items():
        k = str(key)
        label = f"{where}/{k}" if where else k
        if hasattr(v, "detach"):  # a torch tensor
            v = v.detach().cpu().numpy()
        if isinstance(v, np.ndarray) and v.ndim == 0:
            v = v.item()
        u = units(k)
        if not _plain_key(k):
            raise ValueError(f"{label}: a calibration value's name may not contain '/' or "
                             f"be {JSON_KEYS!r}")
        if v is None:
            g.attrs[k] = h5py.Empty("f8")
            continue
        if isinstance(v, np.ndarray):
            ds = g.create_dataset(k, data=v, compression="gzip" if v.size > 4096 else None)
            if u:
                set_units(ds, u)
            continue
        if isinstance(v, Mapping) and all(_plain_key(str(kk)) for kk in v):
            sub = g.create_group(k, track_order=True)
            write_mapping(sub, v, lambda kk, _u=u: units(kk) or _u, label)
            continue
        native: Any = None
        if isinstance(v, (str, bool, np.bool_)) or (isinstance(v, numbers.Real)
                                                     and -2**63 <= v < 2**63):
            native = v
        elif isinstance(v, (list, tuple)):
            native = _list_value(v)
            if native is not None and native.size > MAX_LIST and native.dtype.kind != "O":
                ds = g.create_dataset(k, data=native)
                if u:
                    set_units(ds, u)
                continue
        if native is None:
            try:
                text = json.dumps(_jsonable(v), allow_nan=True)
            except (TypeError, ValueError) as exc:
                raise TypeError(f"{label}: cannot be stored in a calibration file "
                                f"({type(v).__name__}: {exc})") from None
            g.attrs[k] = text
            jsons.append(k)
        elif isinstance(native, np.ndarray) and native.dtype.kind == "O":
            g.attrs[k] = native  # strings
        else:
            set_attr(g.attrs, k, native)
        if u:
            g.attrs[k + UNITS_SUFFIX] = str(u)
    if jsons:
        g.attrs[JSON_KEYS] = np.array(jsons, dtype=h5py.string_dtype())


def _attr(attrs: h5py.AttributeManager, k: str, where: str) -> Any:
    shape = attrs.get_id(k).shape
    size = int(np.prod(shape)) if shape else 1
    if size > MAX_ATTR_ELEMENTS:
        raise ValueError(f"{where}: attribute {k!r} has shape {shape}, more than "
                         f"{MAX_ATTR_ELEMENTS} elements; refused unread")
    v = attrs[k]
    if isinstance(v, bytes):
        return v.decode("utf-8")
    if isinstance(v, h5py.Empty):
        return None
    if isinstance(v, np.ndarray):
        return [x.decode("utf-8") if isinstance(x, bytes) else x for x in v.tolist()] \
            if v.dtype.kind in "OS" else v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    return v


def read_mapping(g: h5py.Group, where: str = "") -> dict[str, Any]:
    """The mapping ``write_mapping`` wrote into ``g`` (units are not returned: they follow
    from the names)."""
    where = where or g.name
    attrs = g.attrs
    jsons = set(_attr(attrs, JSON_KEYS, where) if JSON_KEYS in attrs else [])
    out: dict[str, Any] = {}
    for k in attrs:
        if k == JSON_KEYS:
            continue
        if k.endswith(UNITS_SUFFIX) and k[:-len(UNITS_SUFFIX)] in attrs:
            continue  # the units of attribute k[:-6]
        v = _attr(attrs, k, where)
        out[k] = json.loads(v) if k in jsons else v
    for k, obj in g.items():
        out[k] = read_mapping(obj, f"{where}/{k}") if isinstance(obj, h5py.Group) \
            else np.asarray(obj[()])
    return out


def read_mapping_v1(g: h5py.Group) -> dict[str, Any]:
    """A version-1 group: its JSON attribute ``json`` plus its datasets."""
    d: dict[str, Any] = json.loads(g.attrs["json"])
    for k in g:
        d[k] = np.asarray(g[k][()])
    return d
