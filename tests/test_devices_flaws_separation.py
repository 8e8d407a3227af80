"""No inverse crime: the simulated bench's flaw code and the twin/calibration stay apart.

An AST scan (every ``import``/``from ... import``, at any depth, and every
``importlib.import_module("...")`` / ``__import__("...")`` with a literal name):

* no module under ``calibration/`` or ``simulation/`` imports ``devices.flaws``,
  ``devices.simulated`` or any ``devices.sim_*`` module;
* those simulated-bench modules import nothing from ``calibration`` and neither
  ``simulation.zernike`` nor any fit function of ``simulation`` (a name with "fit").

The scan (``imports``, ``bench_violations``) lives in ``session_helpers``: the pixel-grid
check uses it too. The old tree failed it: ``devices/flaws.py`` drew its aberration with
``from simulation.zernike import zernike_sum`` (``test_the_scan_catches_the_old_flaws``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from session_helpers import bench_violations, imports

ROOT = Path(__file__).resolve().parents[1]
SIM_BENCH = ["devices/flaws.py", "devices/simulated.py", *sorted(
    str(p.relative_to(ROOT)) for p in (ROOT / "devices").glob("sim_*.py"))]


def _is_sim_bench_module(name: str) -> bool:
    return name in ("devices.flaws", "devices.simulated") or name.startswith("devices.sim_")


def twin_violations(source: str) -> list[str]:
    """Imports of the simulated bench's flaw code from the twin or the calibration."""
    return [m for m, _ in imports(source) if _is_sim_bench_module(m)]


@pytest.mark.parametrize("package", ["calibration", "simulation"])
def test_twin_and_calibration_never_import_the_simulated_flaws(package):
    files = sorted((ROOT / package).rglob("*.py"))
    assert files
    found = {str(p.relative_to(ROOT)): twin_violations(p.read_text()) for p in files}
    assert {k: v for k, v in found.items() if v} == {}


def test_simulated_flaws_import_no_calibration_or_fit_code():
    assert "devices/sim_zernike.py" in SIM_BENCH and "devices/sim_render.py" in SIM_BENCH
    found = {f: bench_violations((ROOT / f).read_text()) for f in SIM_BENCH}
    assert {k: v for k, v in found.items() if v} == {}


def test_the_scan_catches_the_old_flaws():
    old = '''
def aberration_rad(self, shape):
    if not self.zernike_rad:
        return None
    from simulation.zernike import zernike_sum  # devices -> simulation, sim backends only

    return zernike_sum(self.zernike_rad, shape).numpy()
'''
    assert "simulation.zernike" in bench_violations(old)
    assert bench_violations("import calibration.aberrations as ab") == ["calibration.aberrations"]
    assert "simulation.fit_decoder" in bench_violations("from simulation import fit_decoder")
    assert bench_violations("from simulation import speckle") == []
    # a coordinate convention is not a fitted model: the bench may share the pixel grid
    assert bench_violations("from simulation.pixel_grid import centred_coords") == []
    assert bench_violations("import importlib\nimportlib.import_module('simulation.zernike')")
    assert "devices.flaws" in twin_violations("from devices.flaws import Flaws")
    assert twin_violations("from devices import sim_render") == ["devices.sim_render"]
    assert twin_violations("from devices import open_bench") == []


def test_own_zernike_equals_the_twins_for_the_fitted_terms_and_beyond():
    pytest.importorskip("torch")
    from devices.sim_zernike import noll_nm, zernike_phase
    from simulation.zernike import noll_to_nm, zernike_sum

    assert all(noll_nm(j) == noll_to_nm(j) for j in range(1, 80))
    for shape in [(64, 96), (65, 64), (128, 128)]:
        for j in range(1, 37):
            ours = zernike_phase({j: 1.0}, shape)
            twin = zernike_sum({j: 1.0}, shape).numpy()
            tol = 1e-5 if j <= 8 else 1e-4  # the twin evaluates in float32
            np.testing.assert_allclose(ours, twin, atol=tol, err_msg=f"Noll {j} {shape}")
    coeffs = {4: 0.3, 5: -0.2, 6: 0.1, 7: 0.5, 8: -0.4}
    np.testing.assert_allclose(zernike_phase(coeffs, (96, 128)),
                               zernike_sum(coeffs, (96, 128)).numpy(), atol=1e-5)
    # beyond Noll 15: orthonormal on the disk (rms 1, orthogonal), so no hidden fit basis
    n = 256
    y, x = (np.indices((n, n)) - (n - 1) / 2) / (n / 2)
    rho, th = np.hypot(x, y), np.arctan2(y, x)
    from devices.sim_zernike import zernike_polynomial

    disk = rho <= 1
    zs = np.stack([zernike_polynomial(j, rho, th)[disk] for j in range(16, 29)])
    gram = zs @ zs.T / disk.sum()
    np.testing.assert_allclose(gram, np.eye(len(zs)), atol=0.03)
