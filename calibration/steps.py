"""The built-in calibration steps: one ``register_step`` entry each (``step_registry``).

A bench day, in this order: (``settle``, only when asked) -> ``dark`` -> ``geometry`` ->
``lut`` -> ``wavefront`` (records ``source`` and ``wavefront``) -> ``model`` ->
``decoders``. Each entry names its routine (``calibration.<module>``, imported when the
step runs), the records it reads, its report figure, its comparison with a simulated
bench's hidden truth and a help line. The adapters below only translate a
``StepContext`` into each routine's arguments. Nothing heavy is imported here (listing
the steps for ``hil calibrate --help`` must not load torch or numpy).

Geometry and the wavefront's centre correction: the geometry record keeps the affine of
its grating spots; the wavefront step records the spot shift it fitted
(``center_shift_px``); ``CalibrationSet.model_to_camera`` applies it on read. Neither step
changes the other's record, so re-running either, in any order, gives the same map.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from calibration.step_registry import CalibrationStep, StepContext, register_step

if TYPE_CHECKING:
    from calibration.store import CalibrationSet, StepResult

__all__: list[str] = []


# --- run adapters -------------------------------------------------------------------
def run_settle(ctx: StepContext, **options: Any) -> StepResult:
    from calibration.settle import calibrate_settle

    return calibrate_settle(ctx.bench, **options)  # applied to the SLM at once


def run_dark(ctx: StepContext, **options: Any) -> StepResult:
    from calibration.detector import calibrate_dark

    return calibrate_dark(ctx.bench, **options)


def run_geometry(ctx: StepContext, **options: Any) -> StepResult:
    from calibration.registration import calibrate_geometry

    return calibrate_geometry(ctx.bench, size=ctx.size, dark=ctx.dark, **options)


def run_lut(ctx: StepContext, **options: Any) -> StepResult:
    from calibration.lut import calibrate_phase_response

    spots = ctx.cal.require("geometry")["model_to_camera"]  # where the grating orders land
    return calibrate_phase_response(ctx.bench, spots, size=ctx.size, dark=ctx.dark,
                                    **options)


def run_wavefront(ctx: StepContext, **options: Any) -> tuple[StepResult, StepResult]:
    from calibration.wavefront import calibrate_wavefront

    spots = ctx.cal.require("geometry")["model_to_camera"]
    source, wf = calibrate_wavefront(ctx.bench, spots, size=ctx.size, dark=ctx.dark,
                                     phase_response_rad=ctx.cal.phase_response_rad,
                                     **options)
    # the corrected map is the geometry's shifted by center_shift_px: derived on read
    wf.values.pop("model_to_camera", None)
    return source, wf


def run_model(ctx: StepContext, **options: Any) -> StepResult:
    from calibration.model_fit import calibrate_model

    return calibrate_model(ctx.bench, ctx.cal, size=ctx.size, **options)


def run_decoders(ctx: StepContext, **options: Any) -> StepResult:
    from calibration.decoders import calibrate_decoders

    options.setdefault("out_dir", ctx.out_dir)
    return calibrate_decoders(ctx.bench, ctx.cal, size=ctx.size, **options)


# --- values derived on read -----------------------------------------------------------
def derive_geometry(record: StepResult) -> dict[str, Any]:
    """Centre, scale, rotation, mirror and shear of the geometry record's own affine."""
    from calibration.geometry import affine_parameters

    return affine_parameters(record.values["model_to_camera"], int(record.values["size"]))


# --- errors against a simulated bench's hidden truth -----------------------------------
def truth_dark(cal: CalibrationSet, t: dict[str, Any], bench: Any) -> dict[str, float]:
    return {"gain_error_pct": 100 * (cal.dark["gain_counts_per_electron"]
                                     / t["gain_counts_per_electron"] - 1),
            "dark_level_error_counts": cal.dark["dark_level_counts"] - t["dark_level_counts"],
            # the offset of dark = offset + rate * exposure: the truth's dark level is the
            # camera's offset, without the stray light the dark frame also holds
            **({"dark_offset_error_counts": float(cal.dark["dark_offset_counts"].mean())
                - t["dark_level_counts"]} if "dark_offset_counts" in cal.dark.values else {})}


def truth_geometry(cal: CalibrationSet, t: dict[str, Any], bench: Any) -> dict[str, float]:
    import numpy as np

    from calibration.geometry import affine_parameters
    from calibration.truth import truth_model_to_camera

    if "camera_affine_M" not in t:
        return {}
    n = cal.grid_size
    p = affine_parameters(cal.model_to_camera, n)  # with the wavefront's centre correction
    q = affine_parameters(truth_model_to_camera(bench, n, cal.block), n)
    return {"center_error_px": float(np.hypot(p["center_x"] - q["center_x"],
                                              p["center_y"] - q["center_y"])),
            "scale_error_pct": 100 * (p["scale"] / q["scale"] - 1),
            "rotation_error_deg": p["rotation_deg"] - q["rotation_deg"]}


def truth_lut(cal: CalibrationSet, t: dict[str, Any], bench: Any) -> dict[str, float]:
    import numpy as np

    from calibration.truth import beam_weighted_span

    e = cal.phase_response_rad - np.asarray(t["slm_phase_response_rad"], float)
    # a panel whose span varies: the order powers see its mean over the beam
    f = beam_weighted_span(t, tuple(bench.slm.shape))
    eb = cal.phase_response_rad - f * np.asarray(t["slm_phase_response_rad"], float)
    return {"lut_rms_rad": float(np.sqrt(np.mean(e**2))),
            "lut_beam_rms_rad": float(np.sqrt(np.mean(eb**2)))}


def truth_wavefront(cal: CalibrationSet, t: dict[str, Any], bench: Any) -> dict[str, float]:
    import numpy as np

    out: dict[str, float] = {}
    if cal.wavefront is not None:
        # every aberration the bench has, the fitted orders and beyond (terms the fit did
        # not reach count as error: the residual wavefront the twin lacks)
        z = cal.zernike_noll_rad
        tz = {**t["zernike_noll_rad"], **(t.get("high_order_noll_rad") or {})}
        keys = set(z) | set(tz)
        out["wavefront_rms_rad"] = float(np.sqrt(sum((z.get(j, 0.0) - tz.get(j, 0.0)) ** 2
                                                     for j in keys)))
        # the same where the light is (a clipped beam leaves part of the disk unseen)
        from calibration.truth import effective_center_error_px, pupil_wavefront_error

        pe = pupil_wavefront_error(cal, t, tuple(bench.slm.shape))
        out["wavefront_pupil_rms_rad"] = pe["rms_rad"]
        if cal.geometry is not None and "camera_affine_M" in t:
            out["center_error_beam_px"] = effective_center_error_px(
                cal, bench, pe["tilt_rad_per_px"])
    if cal.source is not None:
        out["waist_error_pct"] = 100 * (cal.source["waist_px"] / t["source_waist_px"] - 1)
        c, tc = cal.source["center_px"], t["source_center_px"]
        out["source_center_error_px"] = float(np.hypot(c[0] - tc[0], c[1] - tc[1]))
    return out


# --- the entries ------------------------------------------------------------------------
_R = "calibration.report"
_ALL = (
    CalibrationStep(
        "settle", run_settle, optional=True,
        help="measures the SLM settle time, which later steps and runs use"),
    CalibrationStep(
        "dark", run_dark, figure=f"{_R}:fig_dark", truth=truth_dark,
        units={"dark_frame": "counts", "ptc_signal": "counts", "ptc_variance": "counts^2"},
        help="dark frame, dark rate and hot pixels, detector gain"),
    CalibrationStep(
        "geometry", run_geometry, requires=("dark",), figure=f"{_R}:fig_geometry",
        truth=truth_geometry, derive=derive_geometry,
        units={"model_to_camera": "px", "camera_pts": "px", "model_pts": "px"},
        help="camera <-> model grid affine from grating spots"),
    CalibrationStep(
        "lut", run_lut, requires=("dark", "geometry"), figure=f"{_R}:fig_lut",
        truth=truth_lut, help="SLM grey level -> phase response"),
    CalibrationStep(
        "wavefront", run_wavefront, produces=("source", "wavefront"),
        requires=("dark", "geometry", "lut"), figure=f"{_R}:fig_wavefront",
        truth=truth_wavefront,
        units={"frames": "counts", "fitted": "counts", "residual_maps": "counts"},
        help="source and Zernike aberrations by phase diversity; refines the grid centre"),
    CalibrationStep(
        "model", run_model, requires=("dark", "geometry", "lut", "source", "wavefront"),
        figure=f"{_R}:fig_model", uses_imaging=True,
        help="encoded-diffraction model fit on captured speckle"),
    CalibrationStep(
        "decoders", run_decoders,
        requires=("dark", "geometry", "lut", "source", "wavefront", "model"),
        uses_imaging=True, help="twin-trained and capture-trained decoders"),
)
for _step in _ALL:
    register_step(_step)
