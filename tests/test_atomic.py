"""simulation.atomic: files appear whole or not at all, with the user's umask."""

from __future__ import annotations

import ast
import os
import resource
import signal
import stat
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from simulation.atomic import (
    atomic_open,
    atomic_path,
    copy_atomic,
    savefig_atomic,
    write_image_atomic,
    write_text_atomic,
)


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    try:
        yield
    finally:
        os.umask(old)


def _mode(p) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


def test_mode_follows_the_umask_not_mkstemp(tmp_path, umask_027):
    p = write_text_atomic(tmp_path / "a.json", "{}")
    assert _mode(p) == 0o640  # mkstemp would give 0600


def test_failure_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    p = tmp_path / "keep.txt"
    p.write_text("old")
    with pytest.raises(RuntimeError), atomic_open(p, "w") as f:
        f.write("half")
        raise RuntimeError("disk gone")
    assert p.read_text() == "old"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["keep.txt"]


def test_atomic_path_for_writers_that_open_the_file(tmp_path):
    p = tmp_path / "m.npz"
    with atomic_path(p) as tmp:
        assert tmp.exists() and not p.exists()
        np.savez(open(tmp, "wb"), a=np.arange(3))
    assert np.load(p)["a"].tolist() == [0, 1, 2]
    assert [x.name for x in tmp_path.iterdir()] == ["m.npz"]


def test_read_mode_is_refused(tmp_path):
    with pytest.raises(ValueError, match="mode"), atomic_open(tmp_path / "x", "r"):
        pass


@pytest.mark.parametrize("writer", ["mask", "decoder", "json", "calibration"])
def test_every_output_writer_uses_the_umask(tmp_path, umask_027, writer):
    if writer == "mask":
        from hil.masks import save_mask, vortex_mask

        p = save_mask(vortex_mask((1, 3)), tmp_path / "m.npz")
    elif writer == "decoder":
        from simulation import DualVortexEncoder, LinearDecoder, speckle

        enc = DualVortexEncoder()
        imgs = speckle(64, 15, seed=0)
        p = tmp_path / "d.pt"
        LinearDecoder(method="ridge").fit(enc(imgs), imgs, encoder=enc).save(p)
    elif writer == "calibration":
        from calibration import CalibrationSet

        p = CalibrationSet().save(tmp_path / "cal")
        assert list(CalibrationSet.load(p).steps()) == []
    else:
        from hil.runs import write_json_atomic

        p = write_json_atomic(tmp_path / "r.json", {"a": 1})
    assert _mode(p) == 0o640


# -- writes cut short half-way ----------------------------------------------------------
# RLIMIT_FSIZE makes the kernel refuse every write past ``nbytes`` with EFBIG, as a full
# disk refuses with ENOSPC: the writer (matplotlib, OpenCV, sendfile) stops half-way
# through a real write, whatever library does it. SIGXFSZ is ignored for the duration so
# that the write returns the error instead of the signal killing pytest.


@contextmanager
def _disk_full_after(nbytes: int):
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    old = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old)


def _noise(shape=(256, 256)) -> np.ndarray:  # incompressible: its PNG is far over 4 KiB
    return np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)


def _only(folder: Path, *names: str) -> list[str]:
    return sorted(x.name for x in folder.iterdir()) == sorted(names)


def test_savefig_cut_short_keeps_the_old_figure(tmp_path):
    from simulation.figures import new_figure

    fig, ax = new_figure()
    ax.imshow(_noise())
    p = tmp_path / "grid.png"
    p.write_bytes(b"the figure of the last run")
    with pytest.raises(OSError), _disk_full_after(4096):
        savefig_atomic(fig, p, dpi=100)
    assert p.read_bytes() == b"the figure of the last run"
    assert _only(tmp_path, "grid.png")


def test_savefig_format_from_the_target_not_the_temporary(tmp_path):
    from simulation.figures import new_figure

    fig, ax = new_figure()
    ax.plot([0, 1])
    assert savefig_atomic(fig, tmp_path / "a.svg").read_bytes().lstrip().startswith(b"<?xml")
    assert savefig_atomic(fig, tmp_path / "b.PNG").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match=r"figure format.*'xyz'.*c\.xyz"):
        savefig_atomic(fig, tmp_path / "c.xyz")
    assert _only(tmp_path, "a.svg", "b.PNG")


def test_image_cut_short_keeps_the_old_image(tmp_path):
    p = tmp_path / "live_00000.png"
    p.write_bytes(b"previous frame")
    with pytest.raises(OSError), _disk_full_after(4096):
        write_image_atomic(p, _noise())
    assert p.read_bytes() == b"previous frame"
    assert _only(tmp_path, "live_00000.png")


def test_image_round_trip_and_clear_errors(tmp_path):
    import cv2

    img = _noise((8, 9))
    assert (cv2.imread(str(write_image_atomic(tmp_path / "a.png", img)), 0) == img).all()
    assert (cv2.imread(str(write_image_atomic(tmp_path / "b.img", img, fmt="bmp")), 0)
            == img).all()
    with pytest.raises(ValueError, match=r"image format.*'xyz'.*c\.xyz"):
        write_image_atomic(tmp_path / "c.xyz", img)
    with pytest.raises(ValueError, match=r"d\.png: OpenCV could not encode"):
        write_image_atomic(tmp_path / "d.png", np.zeros((4, 4, 5), dtype=np.uint8))
    assert _only(tmp_path, "a.png", "b.img")


def test_copy_cut_short_keeps_the_old_copy(tmp_path):
    src = tmp_path / "crossover.png"
    src.write_bytes(_noise().tobytes())
    (tmp_path / "report").mkdir()
    dst = tmp_path / "report" / "crossover.png"
    dst.write_bytes(b"last report's copy")
    with pytest.raises(OSError), _disk_full_after(4096):
        copy_atomic(src, dst)
    assert dst.read_bytes() == b"last report's copy"
    assert _only(tmp_path / "report", "crossover.png")
    assert copy_atomic(src, dst).read_bytes() == src.read_bytes()
    with pytest.raises(FileNotFoundError, match="src: expected an existing file"):
        copy_atomic(tmp_path / "missing.png", dst)


def test_report_figures_of_hil_run_are_atomic(tmp_path):
    import torch

    from hil.figures import save_image_grid

    p = tmp_path / "eval_mnist.png"
    p.write_bytes(b"last evaluation")
    imgs = torch.from_numpy(_noise((8, 64, 64))).float() / 255
    with pytest.raises(OSError), _disk_full_after(4096):
        save_image_grid([imgs, imgs], ["original", "reconstruction"], p, n=8)
    assert p.read_bytes() == b"last evaluation"
    assert _only(tmp_path, "eval_mnist.png")


# -- nothing writes a file around simulation/atomic.py ----------------------------------

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("simulation", "devices", "calibration", "hil", "experiments")

# (module, what): why that module may write a file without simulation.atomic
ALLOWED = {
    # copies the pyvisa-sim YAML into a private mkstemp file that pyvisa reads once and
    # open_visa deletes: nothing a user keeps
    ("devices/visa.py", "shutil.copy"): "private temporary file",
    # the benchmark times raw HDF5 writes into a scratch file of a TemporaryDirectory;
    # an fsync and a rename would distort what it measures, and nobody keeps the file
    ("experiments/bench_h5.py", "h5py.File"): "benchmark scratch file",
    # the child process's log, streamed while it runs: a crashed child's partial log is
    # exactly what the user needs to read
    ("experiments/bench_calibration.py", "open"): "streamed log",
}

_NP_SAVE = {"save", "savez", "savez_compressed", "savetxt"}
_WRITE_MODE = set("wax")


def _name(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_name(node.value)}.{node.attr}"
    return ""


def _open_mode(call: ast.Call, pos: int) -> str:
    arg = call.args[pos] if len(call.args) > pos else next(
        (k.value for k in call.keywords if k.arg == "mode"), None)
    return arg.value if isinstance(arg, ast.Constant) and isinstance(arg.value, str) else ""


def _atomic_names(tree: ast.AST) -> set[str]:
    """Names bound to a temporary file of ``atomic_path``/``atomic_open``, or to a file
    opened on one: writing to those is what the helpers are for."""
    bound: set[str] = set()
    for node in ast.walk(tree):  # breadth first: an outer ``with`` before the inner ones
        if not isinstance(node, ast.With | ast.AsyncWith):
            continue
        for item in node.items:
            call, var = item.context_expr, item.optional_vars
            if not isinstance(call, ast.Call) or not isinstance(var, ast.Name):
                continue
            fn = _name(call.func).rsplit(".", 1)[-1]
            first = call.args[0] if call.args else None
            if fn in ("atomic_path", "atomic_open") or (
                    isinstance(first, ast.Name) and first.id in bound):
                bound.add(var.id)
    return bound


def writes_around_atomic(source: str) -> list[tuple[int, str]]:
    """(line, what) of each call in ``source`` that writes a file without
    simulation.atomic: savefig, cv2.imwrite, np.save*, torch.save, json.dump to a file,
    Path.write_text/write_bytes, h5py.File in a write mode, open in a write mode,
    os.replace/os.rename and Path.replace/rename (a hand-made rename), shutil copies."""
    tree = ast.parse(source)
    bound = _atomic_names(tree)

    def atomic(node: ast.AST | None) -> bool:
        return isinstance(node, ast.Name) and node.id in bound

    def arg(call: ast.Call, pos: int, kw: str) -> ast.AST | None:
        return call.args[pos] if len(call.args) > pos else next(
            (k.value for k in call.keywords if k.arg == kw), None)

    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _name(node.func)
        last = name.rsplit(".", 1)[-1]
        what = None
        if last == "savefig" and not atomic(arg(node, 0, "fname")):
            what = "savefig"
        elif last == "imwrite":
            what = "cv2.imwrite"
        elif name in {f"{m}.{f}" for m in ("np", "numpy") for f in _NP_SAVE}:
            what = None if atomic(arg(node, 0, "file")) else "np.save"
        elif name == "torch.save":
            what = None if atomic(arg(node, 1, "f")) else "torch.save"
        elif name == "json.dump":
            fp = arg(node, 1, "fp")
            what = None if atomic(fp) or _name(fp) in ("sys.stdout", "sys.stderr") \
                else "json.dump"
        elif last in ("write_text", "write_bytes") and isinstance(node.func, ast.Attribute):
            what = "Path.write_text"
        elif last == "File" and name.startswith(("h5py", "File")) and \
                _open_mode(node, 1) in ("w", "w-", "x") and not atomic(arg(node, 0, "name")):
            what = "h5py.File"
        elif name in ("open", "io.open") and set(_open_mode(node, 1)) & _WRITE_MODE \
                and not atomic(arg(node, 0, "file")):
            what = "open"
        elif last == "open" and isinstance(node.func, ast.Attribute) and \
                set(_open_mode(node, 0)) & _WRITE_MODE and name not in ("h5py.File",):
            what = "open"
        elif name in ("os.replace", "os.rename") or (
                last in ("replace", "rename") and isinstance(node.func, ast.Attribute)
                and len(node.args) == 1 and not node.keywords):  # str.replace takes two
            what = "rename"
        elif name.startswith("shutil.") and last in ("copy", "copy2", "copyfile",
                                                      "copyfileobj", "move", "copytree"):
            what = "shutil.copy"
        if what:
            found.append((node.lineno, node.col_offset, what))
    return [(line, what) for line, _, what in sorted(found)]


def test_the_checker_finds_every_kind_of_write():
    src = """
import json, os, shutil, cv2, h5py, numpy as np, torch
fig.savefig(p)
cv2.imwrite(str(p), img)
np.save(p, a)
np.savez(p, a=a)
torch.save(obj, p)
json.dump(obj, open(p, "w"))
p.write_text("x")
p.write_bytes(b"x")
h5py.File(p, "w")
h5py.File(p, mode="w-")
with open(p, "wb") as f:
    f.write(b"x")
with p.open("w") as f:
    json.dump(obj, f)
os.replace(tmp, p)
tmp.replace(p)
shutil.copyfile(a, b)
"""
    kinds = [w for _, w in writes_around_atomic(src)]
    assert kinds == ["savefig", "cv2.imwrite", "np.save", "np.save", "torch.save",
                     "json.dump", "open", "Path.write_text", "Path.write_text", "h5py.File",
                     "h5py.File", "open", "open", "json.dump", "rename", "rename",
                     "shutil.copy"], kinds
    fine = """
from simulation.atomic import atomic_open, atomic_path
with atomic_path(p) as tmp:
    fig.savefig(tmp, format="png")
    with h5py.File(tmp, "w") as h:
        pass
    with open(tmp, "wb") as f:
        np.savez(f, a=a)
with atomic_open(p, "wb") as f:
    torch.save(obj, f)
with atomic_open(p, "w") as g:
    json.dump(obj, g)
json.dump(doc, sys.stdout)
h5py.File(p, "r")
h5py.File(p, "a")
open(p).read()
name.replace("a", "b")
"""
    assert writes_around_atomic(fine) == []


def test_no_module_writes_a_file_around_atomic():
    found, seen = [], set()
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel == "simulation/atomic.py":
                continue
            for line, what in writes_around_atomic(path.read_text(encoding="utf-8")):
                if (rel, what) in ALLOWED:
                    seen.add((rel, what))
                else:
                    found.append(f"{rel}:{line}: {what}")
    assert not found, ("write these through simulation.atomic (or allow-list them in "
                       "tests/test_atomic.py with the reason):\n" + "\n".join(found))
    assert seen == set(ALLOWED), f"stale allow-list entries: {set(ALLOWED) - seen}"
