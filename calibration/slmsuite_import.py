"""Import calibrations saved by slmsuite (``FourierSLM.save_calibration``) as our steps.

A lab that calibrated its SLM and camera with slmsuite keeps that work: each ``.h5``
file slmsuite wrote becomes a step of a ``CalibrationSet``, converted to our conventions.
Files are read with slmsuite's own reader (``slmsuite.holography.analysis.files.load_h5``,
h5py only: no pickle is ever read). What each kind maps onto:

``fourier`` -> ``geometry``
    slmsuite stores the affine ``ij_raw = M @ (kxy - a) + b`` from the SLM's normalised
    k-space (``kxy``, sin of the deflection angle) to *raw* sensor pixels. The camera's
    window of interest and binning recorded in the file fold it onto the delivered frame
    (the orientation transform is not recorded by slmsuite and is taken as identity).
    Model Fourier pixel (col, row) is ``kxy = λ/(N·s·p_slm) · ((col, row) - N/2)`` (a
    grating of +2π·k·x/(N·s) rad, our ``phase_rad`` being slmsuite's phase), so
    ``model_to_camera = [M·D | b - M·a - M·D·(N/2, N/2)]`` with ``D = diag(λ/(N·s·p))``
    (``calibration.geometry.affine_from_fourier``).
``pixel`` -> ``lut``
    slmsuite's ``gamma`` is the phase (units of 2π) at the sampled ``levels``, increasing
    with the grey level, while the delay falls with it (``SLM._gamma_sign = -1``, our
    ``devices.phase`` convention). Ours is the delay relative to the top level,
    ``2π·(γ(top) - γ(g))`` at every level (linear interpolation, extrapolated at the
    ends). slmsuite 0.5 does not fit the pixel crosstalk (experimental there): its raw
    binary-grating order powers are kept in the step's ``data``, nothing is fitted.
``settle`` -> ``settle``
    slmsuite fits the first-order spot against the delay by an exponential (relaxation time
    τ, communication delay t0) and reports t0 + 4τ. Ours (``calibration.settle``) is the
    delay at which the distance still to go is ``tolerance`` (0.1 %) of the switch:
    ``settle_time_s = t0 + τ·ln(1/tolerance)`` (slmsuite's own value is kept as
    ``slmsuite_settle_time_s``; it is used when slmsuite recorded no τ).
``wavefront_superpixel`` -> ``source`` + ``wavefront``
    The raw superpixel interference data is processed by slmsuite itself
    (``FourierSLM.load`` rebuilds the system from the file's metadata, then
    ``wavefront_calibration_superpixel_process(apply=False, smooth=False)``), giving the
    *correction* phase map and the amplitude map on the SLM (unsmoothed: slmsuite's blur,
    up to 4 superpixels wide, biases a low-order fit; measured on the test bench, 4 x 4
    superpixels: waist error 50 % smoothed, 14 % not; Zernike error 0.19 vs 0.06 rad).
    Our aberration is the negated correction (``FourierSLM.simulate`` uses
    ``phase_sim = -source["phase"]``); it is projected by weighted least squares onto
    Noll 1..8 on the unit disk of radius min(shape)/2 SLM pixels (``simulation.zernike``,
    the twin's basis), Noll 4-8 kept; the amplitude map is fitted by ``exp(-r²/w²)``
    (a weighted quadratic fit of its log) for the source.
    Both maps are kept in the steps' ``data``.

Every file must carry slmsuite's ``__meta__`` with the SLM and camera it was taken on;
their shape, pitch, wavelength and bit depth must match the opened bench, else the
import is refused (``CalibrationError``) with every difference named.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from calibration.capture import device_identities
from calibration.geometry import affine_from_fourier, check_affine
from calibration.store import CalibrationError, CalibrationSet, StepResult, file_sha256
from simulation.pixel_grid import centre_index
from simulation.validate import check_count

__all__ = ["import_slmsuite", "read_slmsuite_file", "slmsuite_kind", "SUPPORTED_KINDS"]

log = logging.getLogger(__name__)

SUPPORTED_KINDS = ("fourier", "pixel", "settle", "wavefront_superpixel")
# the keys each kind of slmsuite calibration always saves
_KIND_KEYS = {"fourier": ("M", "b"),
              "pixel": ("levels", "periods", "orders", "data"),
              "settle": ("times", "data", "exposure_s"),
              "wavefront_superpixel": ("superpixel_size", "slm_supershape", "phase", "kx", "ky"),
              "wavefront_zernike": ("zernike_indices",)}
NOLL_FITTED = (4, 5, 6, 7, 8)
SETTLE_TOLERANCE = 0.001  # as calibration.settle.calibrate_settle's default


def read_slmsuite_file(path: str | Path) -> dict[str, Any]:
    """The contents of an slmsuite ``.h5`` calibration (``load_h5``: h5py, no pickle)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"--import-slmsuite: no file {p}")
    if p.suffix.lower() in (".npy", ".npz", ".pkl", ".pickle"):
        raise CalibrationError(f"--import-slmsuite: {p} is a {p.suffix} file; slmsuite saves "
                               "its calibrations as .h5 (save_calibration), and pickles are "
                               "never read")
    import h5py

    try:
        with h5py.File(p, "r") as f:
            if f.attrs.get("format") == "hil-calibration":
                raise CalibrationError(f"--import-slmsuite: {p} is one of our calibrations, "
                                       "not slmsuite's; pass it as the calibration directly")
    except OSError as exc:
        raise CalibrationError(f"--import-slmsuite: {p} is not an HDF5 file ({exc}); expected "
                               "a file written by slmsuite's FourierSLM.save_calibration") from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from slmsuite.holography.analysis.files import load_h5

        return load_h5(str(p))


def slmsuite_kind(data: dict[str, Any], path: str | Path = "") -> str:
    """Which slmsuite calibration ``data`` holds (``SUPPORTED_KINDS``), or a clear error."""
    meta = data.get("__meta__")
    if not isinstance(meta, dict) or not isinstance(meta.get("slm"), dict) \
            or not isinstance(meta.get("cam"), dict):
        raise CalibrationError(f"--import-slmsuite: {path} is not an slmsuite calibration (no "
                               f"__meta__ with its slm and cam; top-level keys "
                               f"{sorted(data)[:12]})")
    found = [k for k, keys in _KIND_KEYS.items() if all(key in data for key in keys)]
    if "wavefront_zernike" in found:
        raise CalibrationError(f"--import-slmsuite: {path} is a wavefront_zernike calibration; "
                               "only the superpixel wavefront calibration is imported (run "
                               "wavefront_calibrate(method='superpixel'), or our wavefront "
                               "step)")
    if "wavefront_superpixel" in found:
        return "wavefront_superpixel"
    if "pixel" in found:
        return "pixel"
    if "settle" in found:
        return "settle"
    if "fourier" in found:
        return "fourier"
    raise CalibrationError(f"--import-slmsuite: {path} holds slmsuite metadata but no "
                           f"calibration this code reads (keys {sorted(data)[:12]}); expected "
                           f"one of {', '.join(SUPPORTED_KINDS)}")


def _pair(v: Any) -> np.ndarray:
    return np.broadcast_to(np.asarray(v, dtype=float).ravel(), (2,)).astype(float)


def device_mismatches(meta: dict[str, Any], bench: Any) -> list[str]:
    """One line per SLM/camera property where the slmsuite file and the bench differ."""
    out = []
    slm, cam = meta["slm"], meta["cam"]
    checks = [("slm shape", slm.get("shape"), bench.slm.shape[:2], 0),
              ("slm pitch_um", slm.get("pitch_um"), bench.slm.pitch_um, 1e-6),
              ("slm wav_um", slm.get("wav_um"), bench.slm.wav_um, 1e-6),
              ("slm bitdepth", slm.get("bitdepth"), bench.slm.bitdepth, 0),
              ("camera shape", cam.get("shape"), bench.camera.shape[:2], 0),
              ("camera pitch_um", cam.get("pitch_um"), bench.camera.pitch_um, 1e-6),
              ("camera bitdepth", cam.get("bitdepth"), bench.camera.bitdepth, 0)]
    for what, theirs, ours, rtol in checks:
        if theirs is None or ours is None:
            continue
        a, b = np.ravel(np.asarray(theirs, float)), np.ravel(np.asarray(ours, float))
        if a.size != b.size and min(a.size, b.size) == 1:
            a, b = np.broadcast_arrays(a, b)
        if a.shape != b.shape or not np.allclose(a, b, rtol=rtol, atol=0):
            out.append(f"{what}: file {np.ravel(theirs).tolist()}, bench "
                       f"{np.ravel(ours).tolist()}")
    return out


def _provenance(path: Path, kind: str, data: dict[str, Any]) -> dict[str, Any]:
    return {"imported_from": "slmsuite", "slmsuite_kind": kind, "slmsuite_file": str(path),
            "slmsuite_file_sha256": file_sha256(path),
            "slmsuite_version": str(data.get("__version__", "unknown")),
            "slmsuite_time": str(data.get("__time__", "unknown"))}


def _raw_to_cam(meta: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(L, t) with ij_cam = L @ ij_raw + t from the window of interest and binning."""
    cam = meta["cam"]
    woi = np.ravel(cam.get("woi", [0, 0, 0, 0])).astype(float)
    binning = _pair(cam.get("binning", 1))
    lin = np.diag(1.0 / binning)
    return lin, -lin @ np.array([woi[0], woi[2]])


def _geometry(data: dict[str, Any], bench: Any, size: int, prov: dict) -> StepResult:
    m = np.asarray(data["M"], float).reshape(2, 2)
    b = np.asarray(data["b"], float).reshape(2)
    a = np.asarray(data.get("a", 0.0), float).ravel()
    a = np.zeros(2) if a.size == 1 else a.reshape(2)
    lin, t = _raw_to_cam(data["__meta__"])
    m, b = lin @ m, lin @ (b - m @ a) + t  # kxy -> delivered camera pixels
    block = int(bench.slm.block_size((size, size)))
    a_model = check_affine(affine_from_fourier(m, b, bench.slm, size, block),
                           "slmsuite fourier calibration M, b")
    return StepResult(
        name="geometry",
        values={"model_to_camera": a_model, "size": int(size), "block": block, **prov,
                "slmsuite_M_kxy_to_cam": m, "slmsuite_b_cam": b,
                "note": "camera orientation transform not recorded by slmsuite: identity"},
        residuals={}, data={}, devices=device_identities(bench))


def _lut(data: dict[str, Any], bench: Any, prov: dict) -> StepResult:
    if "gamma" not in data:
        raise CalibrationError(f"--import-slmsuite: {prov['slmsuite_file']} is a pixel "
                               "calibration that was not processed (no 'gamma'); run "
                               "FourierSLM.pixel_calibration_process() and save it again")
    levels = np.asarray(data["levels"], float).ravel()
    gamma = np.asarray(data["gamma"], float).ravel()
    if levels.size != gamma.size or levels.size < 2 or not np.all(np.isfinite(gamma)):
        raise CalibrationError(f"--import-slmsuite: {prov['slmsuite_file']}: gamma "
                               f"({gamma.size} values) does not match levels ({levels.size})")
    n = 2 ** int(bench.slm.bitdepth)
    g = np.arange(n, dtype=float)
    full = np.interp(g, levels, gamma)
    for lo, hi, sel in ((0, 1, g < levels[0]), (-2, -1, g > levels[-1])):
        slope = (gamma[hi] - gamma[lo]) / (levels[hi] - levels[lo])
        full[sel] = gamma[hi] + slope * (g[sel] - levels[hi])
    response = 2 * np.pi * (full[-1] - full)
    crosstalk = {k: np.asarray(data[k]) for k in ("data", "levels", "periods", "orders",
                                                    "order_ij", "vectors_kxy") if k in data}
    return StepResult(
        name="lut",
        values={"phase_response_rad": response, "levels_sampled": levels, **prov,
                "phase_span_rad": float(response[0] - response[-1]),
                "crosstalk": "not fitted (slmsuite 0.5 saves only the raw grating orders)"},
        residuals={"slmsuite_gamma_r2": float(data.get("gamma_r2", np.nan))},
        data={f"pixel_{k}": v for k, v in crosstalk.items() if v.ndim > 0},
        devices=device_identities(bench))


def _settle(data: dict[str, Any], bench: Any, prov: dict,
            tolerance: float = SETTLE_TOLERANCE) -> StepResult:
    if "settle_time" not in data:
        raise CalibrationError(f"--import-slmsuite: {prov['slmsuite_file']} is a settle "
                               "calibration without its fit (no 'settle_time'); run "
                               "FourierSLM.settle_calibration_process() and save it again")
    theirs = float(data["settle_time"])
    tau = float(data.get("relax_time", np.nan))
    com = float(data.get("communication_time", 0.0))
    # ours: the delay at which the distance still to go is ``tolerance`` of the switch
    # (calibration.settle); slmsuite's: communication delay + 4 relaxation times
    ours = com + tau * float(np.log(1.0 / tolerance)) if np.isfinite(tau) and tau >= 0 \
        else theirs
    if not np.isfinite(ours) or ours < 0:
        raise CalibrationError(f"--import-slmsuite: {prov['slmsuite_file']}: settle_time "
                               f"{theirs} is not a time >= 0 (the fit failed)")
    vals = {"settle_time_s": float(max(ours, 0.0)), "tau_s": tau, "tolerance": tolerance,
            "communication_time_s": com, "slmsuite_settle_time_s": theirs,
            "method": "slmsuite settle_calibrate (first-order spot vs delay, exponential fit)"}
    return StepResult(name="settle", values={**vals, **prov},
                      data={"delays_s": np.asarray(data["times"], float),
                            "signal": np.asarray(data["data"], float).ravel()},
                      devices=device_identities(bench))


def _process_wavefront(path: Path, data: dict[str, Any]) -> dict[str, np.ndarray]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from slmsuite.hardware.cameraslms import FourierSLM

        fs = FourierSLM.load(str(path), gpu=False)
        fs.calibrations["wavefront_superpixel"] = data
        out = fs.wavefront_calibration_superpixel_process(apply=False, plot=0, smooth=False)
    return {k: np.asarray(out[k], float) for k in ("phase", "amplitude")}


def fit_zernike(aberration: np.ndarray, weight: np.ndarray,
                noll: tuple[int, ...] = NOLL_FITTED) -> tuple[dict[int, float], float]:
    """Weighted least squares of a phase map on Noll 1..max(noll) over the unit disk of
    radius min(shape)/2 pixels; returns ({j: rad} for ``noll``, rms residual, rad)."""
    import torch

    from simulation.zernike import unit_disk_grid, zernike

    shape = aberration.shape
    rho, theta = unit_disk_grid(shape)
    idx = list(range(1, max(noll) + 1))
    basis = torch.stack([zernike(j, rho, theta) for j in idx]).numpy().reshape(len(idx), -1).T
    w = (np.asarray(weight, float) * (rho.numpy() <= 1)).ravel()
    sw = np.sqrt(w)
    coef, *_ = np.linalg.lstsq(basis * sw[:, None], aberration.ravel() * sw, rcond=None)
    resid = (aberration.ravel() - basis @ coef)
    rms = float(np.sqrt(np.sum(w * resid**2) / max(np.sum(w), 1e-12)))
    return {j: float(coef[j - 1]) for j in noll}, rms


def fit_gaussian_source(amplitude: np.ndarray) -> tuple[float, tuple[float, float]]:
    """Waist (``exp(-r²/w²)``) and centre offset (x, y) from the grid centre, pixels."""
    rows, cols = amplitude.shape
    a = np.asarray(amplitude, float)
    sel = a > 0.2 * np.nanmax(a)
    y, x = np.nonzero(sel)
    xs, ys = x - centre_index(cols), y - centre_index(rows)
    design = np.stack([np.ones_like(xs), xs, ys, xs**2 + ys**2], axis=1)
    wts = a[sel] ** 2  # log of a faint value is noisy: weight by power
    c, *_ = np.linalg.lstsq(design * np.sqrt(wts)[:, None], np.log(a[sel]) * np.sqrt(wts),
                            rcond=None)
    if not c[3] < 0:
        raise CalibrationError("--import-slmsuite: the wavefront amplitude map does not fall "
                               "off from a centre (no Gaussian source fits)")
    return float(np.sqrt(-1 / c[3])), (float(-c[1] / (2 * c[3])), float(-c[2] / (2 * c[3])))


def _wavefront(path: Path, data: dict[str, Any], bench: Any,
               prov: dict) -> tuple[StepResult, StepResult]:
    maps = _process_wavefront(path, data)
    aberration = -maps["phase"]  # slmsuite stores the correction
    amp = maps["amplitude"]
    if aberration.shape != tuple(bench.slm.shape[:2]):
        raise CalibrationError(f"--import-slmsuite: {path}: wavefront map {aberration.shape} "
                               f"does not match the SLM {tuple(bench.slm.shape[:2])}")
    coeffs, rms = fit_zernike(aberration, amp**2)
    waist, centre = fit_gaussian_source(amp)
    devices = device_identities(bench)
    source = StepResult(name="source", values={"waist_px": waist, "center_px": list(centre),
                                               "model": "gaussian exp(-r^2/waist^2)", **prov},
                        data={"amplitude_map": amp.astype(np.float32)}, devices=devices)
    wf = StepResult(name="wavefront",
                    values={"zernike_noll_rad": coeffs,
                            "radius_px": float(min(bench.slm.shape[:2]) / 2),
                            "wavefront_rms_rad": float(np.sqrt(sum(v * v for v in
                                                                   coeffs.values()))),
                            **prov},
                    residuals={"fit_rms_rad": rms},
                    data={"aberration_map_rad": aberration.astype(np.float32)},
                    devices=devices)
    return source, wf


def import_slmsuite(bench: Any, paths: list[str | Path], *, size: int = 32,
                    calibration: CalibrationSet | None = None) -> CalibrationSet:
    """Convert slmsuite calibration files into steps of ``calibration`` (or a new set).

    ``bench``: the opened bench they belong to (its SLM and camera must match the files'
    metadata; the model grid's block size comes from its SLM). Returns the set; nothing
    is saved here. Raises ``CalibrationError`` naming the file for a file that is not an
    slmsuite calibration, an unprocessed one, or one taken on other devices.
    """
    check_count(size, "size", 2)
    if not paths:
        raise ValueError("paths: expected at least one slmsuite calibration file")
    cal = calibration if calibration is not None else CalibrationSet()
    cal.devices = device_identities(bench)
    loaded = []
    for path in paths:
        p = Path(path)
        data = read_slmsuite_file(p)
        kind = slmsuite_kind(data, p)
        bad = device_mismatches(data["__meta__"], bench)
        if bad:
            raise CalibrationError(f"--import-slmsuite: {p} was taken on other devices than "
                                   f"this bench: {'; '.join(bad)}")
        loaded.append((p, kind, data))
    for p, kind, data in loaded:  # every file checked before any step changes
        prov = _provenance(p, kind, data)
        if kind == "fourier":
            cal.set("geometry", _geometry(data, bench, size, prov))
        elif kind == "pixel":
            cal.set("lut", _lut(data, bench, prov))
        elif kind == "settle":
            cal.set("settle", _settle(data, bench, prov))
        else:
            source, wf = _wavefront(p, data, bench, prov)
            cal.set("source", source)
            cal.set("wavefront", wf)
        log.info("imported slmsuite %s calibration from %s", kind, p)
    return cal
