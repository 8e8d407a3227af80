"""Reading CIFAR python files (the official pickled batches) without running code.

The CIFAR-10 and CIFAR-100 "python version" archives hold Python 2 pickles (protocol 2)
of dicts: bytes keys (``b"data"``, ``b"labels"`` or ``b"fine_labels"``/``b"coarse_labels"``,
``b"filenames"``, ``b"batch_label"``; CIFAR-100's ``meta`` holds the label names) to lists,
bytes and one uint8 numpy array. `read_cifar_python` unpickles one with a restricted
unpickler that builds only those; any other name in the file (``os.system``, a class) is
refused without being imported or called, so a crafted batch in ``HIL_DATA_DIR`` runs
nothing.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np

__all__ = ["read_cifar_python"]


def _no_objects(dt: np.dtype, path: Path) -> np.dtype:
    if dt.hasobject:
        raise pickle.UnpicklingError(f"{path}: refused: a numpy array of Python objects "
                                     f"(dtype {dt}); a CIFAR batch holds plain numbers")
    return dt


class _CifarUnpickler(pickle.Unpickler):
    """Unpickler for CIFAR python batches: admits only numpy array reconstruction.

    A batch is a dict of lists, bytes, strings and numbers (pickle opcodes, no imports)
    and numpy arrays, which unpickle through numpy's reconstruction helpers, ``ndarray``
    and ``dtype``; Python 3 pickles of protocol <= 2 add ``_codecs.encode`` (bytes as
    latin-1 text) and ``bytes`` (the empty bytes). `find_class` returns those (object
    dtypes, other codecs and arguments to ``bytes`` refused) and raises UnpicklingError,
    naming the file, for every other name, before anything is called or built.
    """

    def __init__(self, file, path: Path) -> None:
        super().__init__(file, encoding="bytes")
        self._path = path

    def _dtype(self, *args):
        return _no_objects(np.dtype(*args), self._path)

    def _scalar(self, dtype, *args):
        return _SCALAR(_no_objects(dtype, self._path), *args)

    def _frombuffer(self, buf, dtype, *args):
        return _FROMBUFFER(buf, _no_objects(dtype, self._path), *args)

    def _latin1(self, text, encoding="utf-8", *args):
        if encoding not in ("latin1", "latin-1") or args or not isinstance(text, str):
            raise pickle.UnpicklingError(f"{self._path}: refused: _codecs.encode with "
                                         f"{encoding!r}; a CIFAR batch uses only 'latin1'")
        return text.encode("latin-1")

    def _bytes(self, *args):
        if args:
            raise pickle.UnpicklingError(f"{self._path}: refused: bytes{args!r:.40}; a CIFAR "
                                         "batch calls bytes() only for b''")
        return b""

    def find_class(self, module: str, name: str):
        if name == "_reconstruct" and module in _NUMPY_MULTIARRAY:
            return _RECONSTRUCT
        if name == "scalar" and module in _NUMPY_MULTIARRAY:
            return self._scalar
        if name == "_frombuffer" and module in _NUMPY_NUMERIC:
            return self._frombuffer
        if module == "numpy" and name == "ndarray":
            return np.ndarray
        if module == "numpy" and name == "dtype":
            return self._dtype
        if module == "_codecs" and name == "encode":
            return self._latin1
        if module in ("builtins", "__builtin__") and name == "bytes":
            return self._bytes
        raise pickle.UnpicklingError(
            f"{self._path}: refused to load {module}.{name}: a CIFAR python batch holds only "
            "dicts, lists, bytes, numbers and numpy arrays (nothing in the file was run)")


_NUMPY_MULTIARRAY = ("numpy.core.multiarray", "numpy._core.multiarray")
_NUMPY_NUMERIC = ("numpy.core.numeric", "numpy._core.numeric")
# numpy's own helpers, as its pickles name them (their module moved in numpy 2)
_RECONSTRUCT = np.ndarray((0,)).__reduce__()[0]
_SCALAR = np.int64(0).__reduce__()[0]
_FROMBUFFER = np.zeros(1).__reduce_ex__(5)[0]


def read_cifar_python(path: str | os.PathLike) -> object:
    """Read one CIFAR python file (a batch, or CIFAR-100's ``meta``) without running code.

    The file is unpickled with ``encoding="bytes"`` (the batches are Python 2 pickles, so
    their keys come back as bytes: ``b"data"``, ``b"labels"``, ``b"fine_labels"``, ...)
    by an unpickler that builds only dicts, lists, bytes, strings, numbers and numpy
    arrays of plain dtypes. Anything else in the file (a class, a function call such as
    ``os.system``) is refused before it is called: ValueError naming the file.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return _CifarUnpickler(f, path).load()
    except pickle.UnpicklingError as exc:
        msg = str(exc)
        if not msg.startswith(str(path)):
            msg = f"{path}: not a readable CIFAR python batch (UnpicklingError: {msg})"
        raise ValueError(msg) from exc
    except Exception as exc:  # unpickling raises many types on a damaged file
        raise ValueError(f"{path}: not a readable CIFAR python batch ({type(exc).__name__}: "
                         f"{exc})") from exc
