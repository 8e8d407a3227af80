"""The pixel-centre conventions of ``simulation.pixel_grid`` and their one home.

* array-centred coordinates (``i - (n - 1) / 2``) for even and odd n: symmetric, mean 0,
  unit spacing; the control: the model grid's N/2 (FFT) convention puts the origin half
  a pixel away for even n, and the checks here tell the two apart;
* block centres are the mean of their pixels' coordinates (control: a block's first
  pixel is not);
* numpy and torch give the same numbers; the module loads no torch and imports nothing a
  simulated-bench flaw module may not (it is shared with ``devices/flaws.py``);
* an AST scan: no module of ``calibration``, ``devices`` or ``simulation`` writes the
  centring by hand (``(n - 1) / 2``, ``0.5 * (n - 1)``, ``n / 2 - 0.5``,
  ``linspace(-1, 1, n)``) outside ``simulation/pixel_grid.py``.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from session_helpers import bench_violations, imports

from simulation.pixel_grid import (
    block_centre_coords,
    centre_index,
    centred_coords,
    unit_span_coords,
)

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("calibration", "devices", "simulation")
HOME = "simulation/pixel_grid.py"
#: hand-written centring left in place, each with its reason: (file, source text)
ALLOWED = {
    # spreads c_n channel shifts symmetrically about the axis: channels, not pixels
    ("calibration/imaging_config.py", "(c_n - 1) / 2"),
    # grid_sample's normalised coordinate back to a bin index (align_corners=False): the
    # inverse of camera_sample_points' (2 * bins + 1) / pad - 1, not a pixel grid
    ("calibration/twin.py", "((points.reshape(-1, 2).double() + 1) * p - 1) / 2"),
}


def n_over_2(n: int) -> np.ndarray:
    """The model grid's FFT convention in pixels: sample i at i - n/2 (the control)."""
    return np.arange(n, dtype=np.float64) - n / 2


# --- the conventions ---------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 32, 33, 600, 1081])
def test_centred_coords_are_symmetric_about_the_array_middle(n):
    x = centred_coords(n)
    assert x.dtype == np.float64 and x.shape == (n,)
    assert x.mean() == 0.0 and x.sum() == 0.0
    np.testing.assert_array_equal(x, -x[::-1])
    np.testing.assert_array_equal(np.diff(x), 1.0)
    assert centre_index(n) == (n - 1) / 2
    assert x[0] == -centre_index(n) and x[-1] == centre_index(n)
    if n % 2:  # odd: the origin is on the middle pixel
        assert x[n // 2] == 0.0
    else:  # even: between the two middle pixels
        assert (x[n // 2 - 1], x[n // 2]) == (-0.5, 0.5)
        assert 0.0 not in x


@pytest.mark.parametrize("n", [2, 4, 32, 600])
def test_control_the_fft_convention_puts_the_origin_half_a_pixel_off(n):
    """The model grid (``simulation.optics.model_grid``) puts its origin ON sample n/2:
    for even n its mean is -1/2 pixel and it is not symmetric, so the checks above fail
    for it; the twin's own grid is that convention in units of dx."""
    fft = n_over_2(n)
    assert fft[n // 2] == 0.0 and fft.mean() == -0.5
    assert not np.array_equal(fft, -fft[::-1])
    np.testing.assert_array_equal(fft - centred_coords(n), -0.5)
    torch = pytest.importorskip("torch")
    from simulation.optics import model_grid

    xmax = 10.0
    x, _ = model_grid(n, xmax)
    dx = 2 * xmax / n
    np.testing.assert_allclose(x[0].numpy(), fft * dx, atol=1e-12)
    np.testing.assert_allclose(x[0].numpy(), (centred_coords(n, xp=torch) - 0.5).numpy() * dx,
                               atol=1e-12)


@pytest.mark.parametrize("n, d", [(12, 3), (12, 4), (13, 4), (1080, 8), (1920, 16), (7, 7),
                                  (6, 1), (5, 8)])
def test_block_centres_are_the_mean_of_their_pixels(n, d):
    b = block_centre_coords(n, d)
    k = n // d
    assert b.shape == (k,) and b.dtype == np.float64
    pixels = centred_coords(n)[: k * d].reshape(k, d)
    np.testing.assert_allclose(b, pixels.mean(axis=1), rtol=0, atol=1e-12)
    if k > 1:
        np.testing.assert_array_equal(np.diff(b), float(d))
    if n % d == 0:  # whole blocks cover the axis: symmetric about the middle
        np.testing.assert_array_equal(b, -b[::-1])
    # control: the block's first pixel (no (d - 1) / 2) is not its centre for d > 1
    first = np.arange(k, dtype=np.float64) * d - centre_index(n)
    assert d == 1 or k == 0 or not np.allclose(b, first)
    if d == 1:
        np.testing.assert_array_equal(b, centred_coords(n))


@pytest.mark.parametrize("n", [2, 3, 8, 33, 1080])
def test_unit_span_is_the_centred_grid_scaled_end_to_end(n):
    u = unit_span_coords(n)
    assert (u[0], u[-1]) == (-1.0, 1.0)
    np.testing.assert_allclose(u, centred_coords(n) / centre_index(n), rtol=0, atol=1e-12)
    np.testing.assert_array_equal(u, np.linspace(-1, 1, n))


def test_numpy_and_torch_give_the_same_numbers():
    torch = pytest.importorskip("torch")
    for n in (1, 2, 31, 64, 1081):
        t = centred_coords(n, xp=torch)
        assert isinstance(t, torch.Tensor) and t.dtype == torch.float64
        np.testing.assert_array_equal(t.numpy(), centred_coords(n))
        for d in (1, 3, 8):
            for dt in (torch.float64, torch.float32):
                b = block_centre_coords(n, d, xp=torch, dtype=dt)
                assert b.dtype == dt
                np.testing.assert_array_equal(b.double().numpy(), block_centre_coords(n, d))
    assert centred_coords(4, dtype=np.float32).dtype == np.float32


@pytest.mark.parametrize("bad, err", [(-1, ValueError), (2.0, TypeError), (True, TypeError),
                                      ("4", TypeError)])
def test_sizes_must_be_integers(bad, err):
    with pytest.raises(err, match="n: expected"):
        centred_coords(bad)
    with pytest.raises(ValueError, match="d: expected an integer >= 1"):
        block_centre_coords(8, 0)
    assert centred_coords(np.int64(3)).tolist() == [-1.0, 0.0, 1.0]


def test_the_home_loads_no_torch_and_no_fitted_model():
    """devices/flaws.py and devices/sim_zernike.py import it: it must pass their rule
    (no calibration, no ``simulation.zernike``, no fit function) and stay light."""
    src = (ROOT / HOME).read_text()
    assert bench_violations(src) == []
    tops = {m.split(".")[0] for m, _ in imports(src)}
    assert tops == {"__future__", "operator", "types", "typing", "numpy",
                    "torch"}  # torch: under TYPE_CHECKING, for the hints only
    code = "import sys, simulation.pixel_grid; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120, cwd=ROOT).stdout.split()
    assert out == ["False"]


# --- one home: no hand-written centring elsewhere -------------------------------------


def _is_num(node: ast.AST, value: float) -> bool:
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return _is_num(node.operand, -value)
    return (isinstance(node, ast.Constant) and isinstance(node.value, int | float)
            and not isinstance(node.value, bool) and node.value == value)


def _minus_one(node: ast.AST) -> bool:
    return isinstance(node, ast.BinOp) and isinstance(node.op, ast.Sub) and _is_num(node.right, 1)


def hand_written_centring(source: str) -> list[tuple[int, str]]:
    """(line, text) of each ``(n - 1) / 2``, ``(n - 1) * 0.5``, ``0.5 * (n - 1)``,
    ``n / 2 - 0.5`` and ``linspace(-1, 1, ...)`` in ``source``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        hit = False
        if isinstance(node, ast.BinOp):
            if isinstance(node.op, ast.Div):
                hit = _minus_one(node.left) and _is_num(node.right, 2)
            elif isinstance(node.op, ast.Mult):
                hit = (_minus_one(node.left) and _is_num(node.right, 0.5)) or \
                    (_is_num(node.left, 0.5) and _minus_one(node.right))
            elif isinstance(node.op, ast.Sub) and _is_num(node.right, 0.5):
                left = node.left
                hit = isinstance(left, ast.BinOp) and isinstance(left.op, ast.Div) and \
                    _is_num(left.right, 2)
        elif isinstance(node, ast.Call) and len(node.args) >= 2:
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
            hit = name == "linspace" and _is_num(node.args[0], -1) and _is_num(node.args[1], 1)
        if hit:
            found.append((node.lineno, node.col_offset,
                          ast.get_source_segment(source, node) or ""))
    return [(line, text) for line, _, text in sorted(found)]


def test_the_scan_catches_the_old_hand_written_grids():
    old = """
y = np.arange(rows) - (rows - 1) / 2
x = (torch.arange(cols, dtype=torch.float64) - (cols - 1) / 2 - center[0]) / r
y = torch.arange(rows // d, dtype=torch.float64) * d + (d - 1) / 2 - (rows - 1) / 2
r2 = (x ** 2 + y ** 2) / (((cols - 1) / 2) ** 2 + ((rows - 1) / 2) ** 2)
y = np.linspace(-1, 1, rows)[:, None]
c = 0.5 * (n - 1.0)
c = (n - 1) * 0.5
c = n / 2 - 0.5
"""
    assert [t for _, t in hand_written_centring(old)] == [
        "(rows - 1) / 2", "(cols - 1) / 2", "(d - 1) / 2", "(rows - 1) / 2",
        "(cols - 1) / 2", "(rows - 1) / 2", "np.linspace(-1, 1, rows)",
        "0.5 * (n - 1.0)", "(n - 1) * 0.5", "n / 2 - 0.5"]
    new = """
y = centred_coords(rows) - self.source_center_frac[1] * rows
x = block_centre_coords(cols, d, xp=torch, dtype=dtype)
r = min(rows, cols) / 2
k = (n - 1) // 2
u = np.linspace(0, 1, n)
"""
    assert hand_written_centring(new) == []


def test_no_module_writes_the_centring_by_hand():
    files = [p for pkg in SCANNED for p in sorted((ROOT / pkg).rglob("*.py"))]
    assert files and (ROOT / HOME) in files
    found = {}
    for p in files:
        rel = str(p.relative_to(ROOT))
        if rel == HOME:
            continue
        hits = [f"{line}: {text}" for line, text in hand_written_centring(p.read_text())
                if (rel, text) not in ALLOWED]
        if hits:
            found[rel] = hits
    assert found == {}, "use simulation.pixel_grid (centred_coords, block_centre_coords, " \
                        "centre_index, unit_span_coords)"
    # the home itself is where the convention is written (the scan would see it)
    assert hand_written_centring((ROOT / HOME).read_text())
