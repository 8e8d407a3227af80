"""The calibration step registry (issue 11 item 2b): one entry drives every place.

* a dummy step registered in the test, with no other edit, runs in order, is saved and
  loaded, resumes (skipped with the same inputs, re-run when its options or the record it
  reads change), appears in the report (values, derived values, figure), in the truth
  comparison and in ``hil calibrate --help``;
* a step that edits another step's record is refused;
* the wavefront's centre correction is applied on read: the geometry record is never
  changed, and re-running geometry or wavefront in either order gives the same map.
"""

from __future__ import annotations

import copy
import logging

import numpy as np
import pytest
from session_helpers import CALIBRATION_BENCH

from calibration import CalibrationError, CalibrationSet, StepResult, run_calibration
from calibration import step_registry as registry
from calibration.step_registry import CalibrationStep, StepContext, register_step

FAST_DARK = {"dark": {"n_dark": 4, "n_pairs": 1, "exposures": (0.3, 0.7)}}


def _bench(seed: int = 0):
    from devices import open_bench

    cfg = copy.deepcopy(CALIBRATION_BENCH)
    cfg["seed"] = seed
    return open_bench(cfg)


@pytest.fixture
def dummy_step():
    """A step "flatness" reading the dark record, registered for one test only."""
    calls = []

    def run(ctx: StepContext, offset_counts: float = 0.0) -> StepResult:
        calls.append(offset_counts)
        level = float(np.mean(ctx.cal.dark_frame)) + offset_counts
        return StepResult("flatness", values={"level_counts": level},
                          residuals={"spread_counts": 0.5}, data={"profile": np.arange(4.0)})

    def figure(cal: CalibrationSet, path) -> None:
        path.write_bytes(b"\x89PNG\r\n\x1a\n")  # a stand-in for a plot

    def truth(cal: CalibrationSet, t: dict, bench) -> dict[str, float]:
        return {"flatness_error_counts": cal.flatness["level_counts"] - t["dark_level_counts"]}

    step = register_step(CalibrationStep(
        "flatness", run, requires=("dark",), figure=figure, truth=truth,
        derive=lambda rec: {"level_double_counts": 2 * rec.values["level_counts"]},
        help="a test step: mean dark level"))
    try:
        yield step, calls
    finally:
        registry.unregister_step("flatness")


def test_a_registered_step_runs_resumes_reports_and_helps(dummy_step, tmp_path, caplog,
                                                          capsys):
    from calibration.pipeline import STEP_ORDER, parse_steps
    from calibration.truth import errors_vs_truth
    from hil.cli import main

    _, calls = dummy_step
    assert STEP_ORDER[-1] == "flatness" and "flatness" in parse_steps(None)
    out = tmp_path / "cal"
    with _bench() as bench:
        cal = run_calibration(bench, out, steps="dark,flatness", options=FAST_DARK,
                              progress=False)
        assert calls == [0.0]
        assert cal.flatness["level_counts"] == pytest.approx(float(cal.dark_frame.mean()))
        assert cal.flatness["level_double_counts"] == 2 * cal.flatness["level_counts"]
        assert "level_double_counts" not in cal.flatness.values  # derived, not stored
        errors = errors_vs_truth(cal, bench)
        assert "flatness_error_counts" in errors and "gain_error_pct" in errors
        # saved and loaded
        back = CalibrationSet.load(out)
        assert back.steps() == ["dark", "flatness"]
        np.testing.assert_array_equal(back.flatness.data["profile"], np.arange(4.0))
        # resume: same inputs -> skipped; other options -> run again
        with caplog.at_level(logging.INFO, logger="calibration.pipeline"):
            run_calibration(bench, out, steps="dark,flatness", options=FAST_DARK,
                            calibration=back, resume=True, progress=False, report=False)
        assert calls == [0.0]
        assert sum("flatness" in r.getMessage() and "skipped" in r.getMessage()
                   for r in caplog.records) == 1
        opts = {**FAST_DARK, "flatness": {"offset_counts": 1.0}}
        run_calibration(bench, out, steps="dark,flatness", options=opts, calibration=back,
                        resume=True, progress=False, report=False)
        assert calls == [0.0, 1.0]
        # the record it reads is made again (options of dark changed) -> it runs again
        opts["dark"] = {**FAST_DARK["dark"], "n_dark": 5}
        run_calibration(bench, out, steps="dark,flatness", options=opts, calibration=back,
                        resume=True, progress=False, report=False)
        assert calls == [0.0, 1.0, 1.0]
    report = (out / "report.md").read_text()
    assert "## flatness" in report and "level_double_counts" in report
    assert "![flatness](figures/flatness.png)" in report
    assert (out / "figures" / "flatness.png").is_file()
    # the command line's help lists it, with its help line
    with pytest.raises(SystemExit):
        main(["calibrate", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "flatness (a test step: mean dark level)" in help_text


def test_a_record_of_an_unregistered_step_is_kept(dummy_step, tmp_path, caplog):
    cal = CalibrationSet()
    cal.set("flatness", StepResult("flatness", values={"level_counts": 3.0}))
    cal.save(tmp_path)
    registry.unregister_step("flatness")
    try:
        with caplog.at_level(logging.WARNING, logger="calibration.store"):
            back = CalibrationSet.load(tmp_path)
        assert "flatness" in caplog.text and back.steps() == ["flatness"]
        back.save(tmp_path / "again.h5")
        assert CalibrationSet.load(tmp_path / "again.h5").record("flatness")["level_counts"] \
            == 3.0
    finally:
        register_step(dummy_step[0])


def test_registration_is_checked():
    def run(ctx):
        return StepResult("x")

    with pytest.raises(ValueError, match="already registered"):
        register_step(CalibrationStep("dark", run, help="again"))
    with pytest.raises(ValueError, match="already named by step 'wavefront'"):
        register_step(CalibrationStep("extra", run, produces=("source",), help="h"))
    with pytest.raises(ValueError, match="no earlier step produces"):
        register_step(CalibrationStep("extra", run, requires=("nothing",), help="h"))
    with pytest.raises(ValueError, match="name"):
        CalibrationStep("model_to_camera", run, help="h")  # a CalibrationSet attribute
    with pytest.raises(ValueError, match="help"):
        CalibrationStep("extra", run, help="two\nlines")
    with pytest.raises(TypeError, match="run"):
        CalibrationStep("extra", 42, help="h")
    with pytest.raises(ValueError, match="required by"):
        registry.unregister_step("dark")
    assert "extra" not in registry.step_order()


def test_a_step_that_edits_another_record_is_refused(tmp_path):
    def meddle(ctx: StepContext) -> StepResult:
        ctx.cal.dark.values["dark_level_counts"] = 0.0  # not its record
        return StepResult("meddle", values={"ok": True})

    register_step(CalibrationStep("meddle", meddle, requires=("dark",), help="edits dark"))
    try:
        with _bench() as bench:
            cal = run_calibration(bench, None, steps="dark", options=FAST_DARK,
                                  progress=False)
            with pytest.raises(CalibrationError, match="meddle.*changed.*dark"):
                run_calibration(bench, None, steps="meddle", calibration=cal,
                                progress=False)
        assert cal.meddle is None
    finally:
        registry.unregister_step("meddle")


def _geometry(a) -> StepResult:
    return StepResult("geometry", values={"model_to_camera": np.asarray(a, float),
                                          "size": 32, "block": 8})


def test_wavefront_centre_correction_is_derived_on_read_in_any_order(monkeypatch):
    """The wavefront step used to write its centre correction into the geometry record;
    now the geometry record stays the spot fit and ``model_to_camera`` adds the shift, so
    re-running geometry after wavefront (or not) gives the same map."""
    import calibration.geometry
    import calibration.registration
    import calibration.wavefront

    spots = np.array([[2.0, 0.1, 10.0], [-0.1, 2.0, 12.0]])
    shift = [0.25, -0.5]
    seen = {}

    def fake_wavefront(bench, model_to_camera, **kw):
        seen["affine"] = np.array(model_to_camera)
        src = StepResult("source", values={"waist_px": 50.0, "center_px": [0.0, 0.0]})
        wf = StepResult("wavefront", values={
            "zernike_noll_rad": {4: 0.1}, "center_shift_px": shift,
            "model_to_camera": calibration.geometry.shift_center(spots, *shift)})
        return src, wf

    monkeypatch.setattr(calibration.wavefront, "calibrate_wavefront", fake_wavefront)
    monkeypatch.setattr(calibration.registration, "calibrate_geometry",
                        lambda bench, **kw: _geometry(spots))
    cal = CalibrationSet()
    cal.set("geometry", _geometry(spots))
    cal.set("lut", StepResult("lut", values={"phase_response_rad": np.linspace(6, 0, 256)}))
    expect = spots.copy()
    expect[:, 2] += shift
    with _bench() as bench:
        run_calibration(bench, None, steps="wavefront", calibration=cal, progress=False)
        np.testing.assert_array_equal(cal.geometry["model_to_camera"], spots)  # untouched
        assert set(cal.geometry.values) == {"model_to_camera", "size", "block"}
        assert "model_to_camera" not in cal.wavefront.values  # not stored twice
        np.testing.assert_allclose(cal.model_to_camera, expect)
        assert cal.affine_parameters["center_x"] == pytest.approx(
            cal.geometry["center_x"] + shift[0])
        # geometry again after the wavefront, then the wavefront again: the same map,
        # and the wavefront always fits from the spots, never from a corrected map
        run_calibration(bench, None, steps="geometry", calibration=cal, progress=False)
        np.testing.assert_allclose(cal.model_to_camera, expect)
        run_calibration(bench, None, steps="wavefront", calibration=cal, progress=False)
        np.testing.assert_allclose(cal.model_to_camera, expect)
        np.testing.assert_array_equal(seen["affine"], spots)


def test_listing_the_steps_for_the_help_imports_no_torch():
    import subprocess
    import sys

    code = ("import sys, contextlib, io\n"
            "from hil.cli import main\n"
            "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
            "    main(['calibrate', '--help'])\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120).stdout.split()
    assert out == ["False"]
