"""Drift during long runs (calibration.drift): the shift estimator, the on-the-fly geometry
correction in ``hil run``, unreliable estimates, resume."""

from __future__ import annotations

import json
import logging

import cv2
import numpy as np
import pytest
from session_helpers import quick_decoder, small_bench

from calibration.drift import REFERENCE_FILE, DriftTracker, estimate_shift, preprocess
from calibration.imaging import BenchImager
from calibration.imaging_config import ImagingConfig
from calibration.truth import truth_model_to_camera
from experiments.bench_drift import ShiftingBench
from hil.runs import CAPTURES_FILE, read_captures
from hil.session import RunConfig, run_session


def _texture(shape=(96, 112), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return cv2.GaussianBlur(rng.random(shape).astype(np.float32), (0, 0), 1.5) * 1000


def _moved(img: np.ndarray, dx: float, dy: float) -> np.ndarray:
    h, w = img.shape
    return cv2.warpAffine(img, np.array([[1, 0, dx], [0, 1, dy]], np.float64), (w, h),
                          flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)


@pytest.mark.parametrize("dx, dy", [(0.0, 0.0), (0.3, -0.2), (-1.45, 0.65), (3.7, 2.25),
                                    (-6.1, -4.4)])
def test_estimate_shift_is_subpixel_on_known_shifts(dx, dy):
    ref = _texture()
    est = estimate_shift(preprocess(ref), preprocess(_moved(ref, dx, dy)))
    assert abs(est.dx_px - dx) < 0.05 and abs(est.dy_px - dy) < 0.05, est
    assert est.response > 0.9


def test_estimate_shift_without_structure_is_unreliable():
    ref = preprocess(_texture())
    flat = np.full(ref.shape, 7.0)
    assert estimate_shift(ref, flat).response == 0.0
    noise = preprocess(np.random.default_rng(5).normal(500, 20, ref.shape))
    assert estimate_shift(ref, noise).response < 0.3
    with pytest.raises(ValueError, match="same shape"):
        estimate_shift(ref, ref[:-1])


def _imager(bench) -> BenchImager:
    a = truth_model_to_camera(bench, 32, 8)
    return BenchImager(bench, config=ImagingConfig(geometry=a)).prepare()


def test_tracker_corrects_the_geometry_by_the_measured_shift(tmp_path):
    from devices.bench import open_bench

    rate = (0.05, -0.03)  # camera px per frame
    with open_bench(small_bench()) as raw:
        bench = ShiftingBench(raw, rate)
        imager = _imager(bench)
        base = [a.copy() for a in imager.model_to_camera]
        tracker = DriftTracker(imager, 4, reference_dir=tmp_path).start()
        assert (tmp_path / REFERENCE_FILE).is_file() and tracker.extra_frames == 2
        img = np.zeros((32, 32), np.float32)
        for _ in range(20):  # 40 frames of images
            imager.capture_frames(img)
        first = bench.camera.frames_shifted
        entry = tracker.check(20)
    truth = np.array(rate) * (first + 0.5)  # the two frames of the check, averaged
    assert entry["reliable"], entry
    assert np.allclose(tracker.correction, truth, atol=0.1), (tracker.correction, truth)
    for a, b in zip(imager.model_to_camera, base, strict=True):
        assert np.allclose(a[:, :2], b[:, :2])
        assert np.allclose(a[:, 2] - b[:, 2], tracker.correction)


def _run(tmp_path, name, bench, every, n=36):
    dec = tmp_path / "dec.pt"
    if not dec.exists():
        quick_decoder(dec)
    a = truth_model_to_camera(bench, 32, 8)
    out = tmp_path / name
    cfg = RunConfig(bench=bench, decoder=dec, out=out, dataset="digits", n=n, seed=None,
                    geometry=a, drift_every=every, progress=False)
    assert run_session(cfg) == 0
    return (json.loads((out / "results.json").read_text()),
            json.loads((out / "run.json").read_text()))


def test_corrected_run_beats_the_uncorrected_one_on_a_drifting_bench(tmp_path):
    from devices.bench import open_bench

    rate = (0.045, 0.03)  # about 3.6 px over the run's ~80 frames
    results = {}
    for name, drifting, every in (("still", False, 0), ("uncorrected", True, 0),
                                  ("corrected", True, 3)):
        with open_bench(small_bench()) as raw:
            bench = ShiftingBench(raw, rate) if drifting else raw
            results[name] = _run(tmp_path, name, bench, every)
    still = results["still"][0]["ssim_mean"]
    unc = results["uncorrected"][0]["ssim_mean"]
    cor, run = results["corrected"]
    assert unc < 0.8 * still, (unc, still)  # the drift costs SSIM ...
    assert cor["ssim_mean"] >= 0.95 * still, (cor["ssim_mean"], still)  # ... the fix wins it
    d = run["drift"]
    assert d["every"] == 3 and d["n_checks"] == 11 and d["n_unreliable"] == 0
    assert d["extra_frames"] == 2 * 12  # the reference and 11 checks, 2 frames each
    assert d["checks"][0]["kind"] == "reference"
    last = d["checks"][-1]
    assert last["image"] == 33 and np.hypot(*last["correction_px"]) > 2.5
    assert "drift" not in results["uncorrected"][1]
    # per capture, the store keeps the correction applied to it (NaN: no drift checks)
    caps = read_captures(tmp_path / "corrected" / CAPTURES_FILE)
    applied = np.stack([caps["drift_x_px"], caps["drift_y_px"]], axis=1)
    assert np.all(applied[:3] == 0) and np.allclose(applied[33:], last["correction_px"])
    assert np.all(np.diff(applied[:, 0]) >= -0.05) and applied[-1, 0] > 2.0
    assert np.all(np.isnan(read_captures(tmp_path / "uncorrected" / CAPTURES_FILE)
                           ["drift_x_px"]))


def test_unreliable_check_keeps_the_last_good_correction(tmp_path, caplog):
    from devices.bench import open_bench

    rate = (0.05, 0.0)
    with open_bench(small_bench()) as raw:
        # frames 0-1 reference, 2-9 images 0-3, 10-11 check 1, 12-19 images 4-7,
        # 20-21 check 2 (blanked: the beam blocked), ...
        bench = ShiftingBench(raw, rate, blank_frames={20, 21})
        with caplog.at_level(logging.WARNING, logger="calibration.drift"):
            _, run = _run(tmp_path, "run", bench, every=4, n=12)
    checks = [c for c in run["drift"]["checks"] if c["kind"] == "check"]
    assert [c["image"] for c in checks] == [4, 8]
    good, bad = checks
    assert good["reliable"] and not bad["reliable"]
    assert "match score" in bad["reason"] and bad["correction_px"] == good["correction_px"]
    assert run["drift"]["n_unreliable"] == 1
    assert any("unreliable" in r.getMessage() for r in caplog.records)


def test_resumed_run_compares_with_the_first_reference_and_checks_at_once(tmp_path):
    from devices.bench import open_bench

    with open_bench(small_bench()) as raw:
        imager = _imager(ShiftingBench(raw, (0.0, 0.0)))
        first = DriftTracker(imager, 10, reference_dir=tmp_path).start()
        again = DriftTracker(imager, 10, reference_dir=tmp_path, previous=first.record())
        again.start()
        assert again.resumed and again.extra_frames == 2  # nothing captured for it
        assert np.array_equal(again.reference, first.reference)
        assert again.due(7)  # a resumed run checks before its first image
        entry = again.before_image(7)
    assert entry is not None and entry["image"] == 7 and entry["reliable"]
    assert abs(entry["dx_px"]) < 0.1 and abs(entry["dy_px"]) < 0.1
    np.savez(tmp_path / REFERENCE_FILE, reference=np.zeros((1, 4, 4)), roi=np.array([0, 4, 0, 4]),
             base_maps=np.zeros((1, 2, 3)))  # captured with another geometry
    with open_bench(small_bench()) as raw:
        imager = _imager(raw)
        with pytest.raises(ValueError, match="another geometry"):
            DriftTracker(imager, 10, reference_dir=tmp_path, previous={}).start()
        fresh = DriftTracker(imager, 10, reference_dir=tmp_path).start()  # a new run
        assert not fresh.resumed and fresh.extra_frames == 2
        assert fresh.reference.shape == first.reference.shape


def test_bad_drift_every_is_refused(tmp_path, capsys):
    from hil.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["run", "sim.toml", "--out", str(tmp_path / "r"), "--drift-every", "-1"])
    assert exc.value.code == 2 and "--drift-every" in capsys.readouterr().err
    with pytest.raises(ValueError, match="drift_every"):
        run_session(RunConfig(bench=small_bench(), out=tmp_path / "r2", drift_every=-3))
    assert not (tmp_path / "r2").exists()  # refused before anything was written

    class _Imager:
        model_to_camera = [np.array([[1.0, 0, 10], [0, 1.0, 10]])]
        size, camera, dark = 8, type("C", (), {"shape": (64, 64)})(), None

    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="drift_every"):
            DriftTracker(_Imager(), bad)


def test_run_stopped_then_resumed_keeps_one_drift_record(tmp_path):
    dec = tmp_path / "dec.pt"
    quick_decoder(dec)
    out = tmp_path / "run"
    # frames: reference 0-1, images 0-2 2-7, check before image 3 8-9, image 3 10-11,
    # then the camera disconnects: 4 captures
    cfg = RunConfig(bench=small_bench(disconnect_after_frames=12), decoder=dec, out=out,
                    dataset="digits", n=8, seed=None, drift_every=3, progress=False)
    assert run_session(cfg) != 0
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "stopped" and (out / REFERENCE_FILE).is_file()
    assert [c["image"] for c in run["drift"]["checks"]] == [None, 3]
    resumed = RunConfig(**{**cfg.__dict__, "bench": small_bench(), "resume": True})
    assert run_session(resumed) == 0
    run = json.loads((out / "run.json").read_text())
    # the same reference; a check at once when resumed (image 4), then every 3 images
    assert [c["image"] for c in run["drift"]["checks"]] == [None, 3, 4, 6]
    assert run["drift"]["extra_frames"] == 8 and run["drift"]["n_unreliable"] == 0
    caps = read_captures(out / CAPTURES_FILE)
    assert caps["index"].tolist() == list(range(8))
    assert np.all(np.isfinite(caps["drift_x_px"]))


def test_a_correction_that_leaves_the_stored_windows_is_refused(tmp_path):
    """A run that keeps only the model windows cannot follow a shift larger than their
    margin: the check is unreliable and the last good correction stays (control: without
    stored boxes the same shift is applied)."""
    from devices.bench import open_bench

    rate = (0.6, 0.0)  # camera px per frame: ~12 px by the check, more than the margin
    results = {}
    for boxed in (False, True):
        with open_bench(small_bench()) as raw:
            bench = ShiftingBench(raw, rate)
            imager = _imager(bench)
            boxes = imager.window_boxes if boxed else None
            tracker = DriftTracker(imager, 4, reference_dir=tmp_path / str(boxed),
                                   stored_boxes=boxes).start()
            for _ in range(10):
                imager.capture_frames(np.zeros((32, 32), np.float32))
            results[boxed] = (tracker.check(10), tracker.correction)
    free, boxed = results[False], results[True]
    assert free[0]["reliable"] and abs(free[1][0]) > 8, free
    assert not boxed[0]["reliable"] and "stored region" in boxed[0]["reason"], boxed
    assert np.allclose(boxed[1], 0.0)


def test_the_move_since_the_calibration_is_measured_on_its_gratings_and_followed(tmp_path):
    """``alignment_shift`` shows the geometry step's gratings again: 0 on the still bench,
    the camera's offset on a moved one; a tracker given the geometry step moves the windows
    by it before its reference (the check of kind "alignment"); without it (the control)
    the windows stay."""
    from calibration.registration import alignment_shift, calibrate_geometry
    from devices.bench import open_bench

    with open_bench(small_bench()) as raw:
        geo = calibrate_geometry(raw, size=32)
        still = alignment_shift(raw, geo)
        assert np.hypot(still["dx_px"], still["dy_px"]) < 0.15 and still["n_spots"] == 4
        bench = ShiftingBench(raw, (0.0, 0.0))
        bench.camera.shift_px = lambda frame=None: (3.0, -2.0)  # moved since calibration
        moved = alignment_shift(bench, geo)
        assert moved["dx_px"] == pytest.approx(3.0, abs=0.15), moved
        assert moved["dy_px"] == pytest.approx(-2.0, abs=0.15), moved
        for align in (geo, None):
            imager = BenchImager(bench, config=ImagingConfig(
                geometry=geo["model_to_camera"])).prepare()
            base = [a.copy() for a in imager.model_to_camera]
            tracker = DriftTracker(imager, 4, reference_dir=tmp_path / str(align is None),
                                   align_to=align).start()
            kinds = [c["kind"] for c in tracker.checks]
            step = np.array([a[:, 2] - b[:, 2] for a, b in
                             zip(imager.model_to_camera, base, strict=True)])
            if align is None:
                assert kinds == ["reference"] and np.all(step == 0)
            else:
                assert kinds == ["alignment", "reference"] and tracker.checks[0]["reliable"]
                assert np.allclose(step, [3.0, -2.0], atol=0.15), step


def test_hil_run_follows_the_move_since_the_calibration_end_to_end(tmp_path):
    """``hil run --drift-every K`` with a calibration directory: on a bench whose camera
    image moved by (3, -2) px since the geometry step, the run's first check (kind
    "alignment", in run.json) measures the move and the run decodes as well as on the still
    bench; the same run without drift checks (the control) decodes worse."""
    from calibration import run_calibration
    from devices.bench import open_bench

    dec = tmp_path / "dec.pt"
    quick_decoder(dec)
    cal_dir = tmp_path / "cal"
    with open_bench(small_bench()) as raw:
        run_calibration(raw, cal_dir, steps="geometry", size=32, progress=False)
    scores, runs = {}, {}
    for name, moved, every in (("still", False, 0), ("unaligned", True, 0),
                               ("aligned", True, 6)):
        with open_bench(small_bench()) as raw:
            bench = ShiftingBench(raw, (0.0, 0.0))
            if moved:
                bench.camera.shift_px = lambda frame=None: (3.0, -2.0)
            out = tmp_path / name
            cfg = RunConfig(bench=bench, decoder=dec, calibration=cal_dir, out=out,
                            dataset="digits", n=24, seed=None, drift_every=every,
                            progress=False)
            assert run_session(cfg) == 0
        scores[name] = json.loads((out / "results.json").read_text())["ssim_mean"]
        runs[name] = json.loads((out / "run.json").read_text())
    first = runs["aligned"]["drift"]["checks"][0]
    assert first["kind"] == "alignment" and first["reliable"], first
    assert [first["dx_px"], first["dy_px"]] == pytest.approx([3.0, -2.0], abs=0.15), first
    assert scores["aligned"] >= 0.95 * scores["still"], scores
    assert scores["unaligned"] < 0.8 * scores["still"], scores  # the control
    assert "drift" not in runs["unaligned"]


def test_calibration_captures_follow_the_drift_across_capture_sets(tmp_path):
    """``capture_patterns(drift=tracker)``: a tracker's checks count images over several
    capture sets (a calibration's test, validation and training sets); on a drifting bench
    the late patterns match the still bench's, and without the tracker (the control) they
    do not."""
    from calibration.capture import capture_patterns
    from devices.bench import open_bench

    imgs = np.random.default_rng(0).random((30, 32, 32)).astype(np.float32)
    with open_bench(small_bench()) as raw:
        still = capture_patterns(_imager(raw), imgs[-6:])
    late = {}
    for follow in (True, False):
        with open_bench(small_bench()) as raw:
            bench = ShiftingBench(raw, (0.06, -0.04))  # ~4 px over the 60 frames
            imager = _imager(bench)
            tracker = DriftTracker(imager, 5).start() if follow else None
            for part in (imgs[:12], imgs[12:24], imgs[24:]):  # three calls
                pats = capture_patterns(imager, part, drift=tracker)
            late[follow] = float(np.mean((pats - still) ** 2) / np.mean(still ** 2))
        if follow:
            assert tracker.images_captured == 30
            assert [c["image"] for c in tracker.checks if c["kind"] == "check"] == \
                [5, 10, 15, 20, 25]
            assert np.hypot(*tracker.correction) > 2.5 and all(c["reliable"]
                                                               for c in tracker.checks)
    print("\nrelative error of the late patterns, followed / not:", late)
    assert late[True] < 0.25 * late[False], late
    with open_bench(small_bench()) as raw:
        other = DriftTracker(_imager(raw), 5)
        with pytest.raises(ValueError, match="DriftTracker of the imager"):
            capture_patterns(_imager(raw), imgs[:1], drift=other)
