"""The bench session: display a data set through the encoder, capture, decode, record.

``run_session(RunConfig(...))`` is ``hil run``: it opens the bench, loads the
calibration and the decoder, images every input with ``calibration.imaging.BenchImager``
and appends each capture to ``captures.h5`` as it arrives (``hil.capture_store.CaptureStore``),
then decodes the captures and writes ``results.json`` and a report (``report.md``
with PNG figures). The run directory is the record (docs/architecture.md §Run-directory):

    run.json      config, provenance (simulation.provenance: versions, git commit and
                  dirty flag), device identities, imaging settings, status
    captures.h5   model windows + patterns (full frames with store_frames), one capture
                  per image, flushed after each
    results.json  per-image SSIM, mean SSIM, accuracy (with a classifier)
    report.md     + captures.png, reconstructions.png

``drift_every`` K > 0 (``--drift-every K``, default 50; 0 turns it off) first measures how
far the camera image moved since the calibration (with a calibrated geometry: its gratings
shown again), then shows a reference pattern before the first image and every K images,
and corrects the geometry for the measured drift of the camera image (``calibration.drift``;
each check in ``run.json`` under ``drift``, the correction applied to each capture in
``captures.h5``).

``resume=True`` continues a run that was killed or stopped: the stored configuration
is used (the arguments must agree with it), captures already on disk are kept and
the run goes on from the first image without a complete capture. A device fault that
survives the imager's retries stops the run cleanly: laser off, every capture so far
on disk, status "stopped" with the error in ``run.json``; results cover the captures
so far. A capture that cannot be written (disk full, file-size limit: ``CaptureWriteError``)
stops the run the same way, with one ``hil: error:`` line and no results (nothing more
is written beside a failing file). Ctrl-C, SIGTERM and SIGHUP (``hil.safety``) switch the
laser off and record status "interrupted" and the signal. The laser output stays as the
bench file set it until the first capture needs light; switching it on is recorded in
the session's entry of ``run.json``. Exit status: 0 complete, 3 stopped by a device fault
or a failed capture write.

Before the first capture the run checks that its pieces belong together
(``hil.run_checks``): the decoder (default: the calibration's best one) against
the mask or vortex it is shown with, the imaging configuration (``ImagingConfig``;
default: the calibration's, flags override single settings) against the calibration's,
and the calibration's device identities against the opened bench. A disagreement stops
the run with one line naming the setting; ``force=True`` (``--force``) runs anyway and
records what it was forced past in ``run.json`` (``forced``). The decoder then checks
the bench's encoder signature again when it decodes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from simulation.atomic import write_text_atomic

from .runs import (
    CAPTURES_FILE,
    CaptureStore,
    CaptureWriteError,
    read_capture_header,
    read_captures,
    run_provenance,
    write_json_atomic,
)
from .safety import signal_name

__all__ = ["RunConfig", "run_session", "write_results", "EXIT_STOPPED"]

log = logging.getLogger(__name__)

EXIT_STOPPED = 3
RUN_FORMAT = 1
# fields that must agree when a run is resumed
_RESUME_KEYS = ("dataset", "split", "n", "seed", "decoder_sha256", "mode", "geometry",
                "averaging", "exposure_s", "mask_sha256", "imaging_config")


@dataclass(kw_only=True)
class RunConfig:
    """Everything ``hil run`` needs (CLI flags map one to one).

    ``decoder`` None: the calibration's best decoder (``best_decoder``). ``imaging``: the
    base ``ImagingConfig`` (None: the calibration's, else the default); ``mode``,
    ``geometry``, ``exposure_s``, ``averaging`` and ``retries`` override single settings of
    it when not None. ``force``: run although the pieces do not belong together.
    """

    bench: Any  # a bench TOML path, a shipped name, a dict, or an opened Bench (kept open)
    out: Path
    decoder: Path | None = None
    calibration: Path | None = None
    dataset: str = "mnist"
    split: str = "test"
    n: int = 500
    seed: int | None = 0
    mode: str | None = None
    geometry: Any = None  # None: calibrated if available, else nominal; or a 2x3 affine
    exposure_s: float | None = None
    averaging: int | None = None
    retries: int | None = None
    mask: Path | None = None  # learned encoder mask file (hil.masks)
    classifier: Path | None = None
    resume: bool = False
    progress: bool = True
    imaging: Any = None  # calibration.imaging_config.ImagingConfig
    force: bool = False
    store_frames: bool = False  # full frames too (gzip), besides the model windows
    pipelined: bool = True  # overlap composing/SLM settling with storing (capture_stream)
    drift_every: int = 50  # a drift check on a reference pattern every K images (0: none)


def _sha256(path: Path | None) -> str | None:
    if path is None:
        return None
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _config_record(cfg: RunConfig, decoder_path: Path, imaging: Any) -> dict[str, Any]:
    d = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
    d["decoder"] = decoder_path
    d["imaging"] = None if cfg.imaging is None else cfg.imaging.to_dict()
    d["imaging_config"] = imaging.to_dict()
    if hasattr(cfg.bench, "slm"):
        d["bench"] = f"<opened bench {getattr(cfg.bench, 'name', '')}>"
    else:
        d["bench"] = cfg.bench if isinstance(cfg.bench, dict) else str(cfg.bench)
    for k in ("decoder", "out", "calibration", "mask", "classifier"):
        d[k] = None if d[k] is None else str(Path(d[k]).resolve())
    if d["geometry"] is not None and not isinstance(d["geometry"], str):
        d["geometry"] = [[float(v) for v in row] for row in d["geometry"]]
    d["decoder_sha256"] = _sha256(Path(decoder_path))
    d["mask_sha256"] = _sha256(Path(cfg.mask)) if cfg.mask else None
    d.pop("resume")
    d.pop("progress")
    return d


def _read_run_record(run_json: Path) -> dict[str, Any]:
    """The record of the run being resumed; a damaged run.json is a user error naming it."""
    try:
        record = json.loads(run_json.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"--resume: {run_json} cannot be read as a run record ({exc})") from exc
    missing = [k for k in ("config", "sessions") if not isinstance(record, dict) or k not in record]
    if missing or not (isinstance(record["config"], dict)
                       and isinstance(record["sessions"], list)):
        raise ValueError(f"--resume: {run_json} is not a complete run record (missing or bad: "
                         f"{', '.join(missing) or 'config/sessions'}); start a new run in "
                         "another --out")
    return record


def _check_resume(stored: dict[str, Any], now: dict[str, Any]) -> None:
    diff = [f"{k}: run has {stored.get(k)!r}, now {now.get(k)!r}" for k in _RESUME_KEYS
            if stored.get(k) != now.get(k)]
    if diff:
        raise ValueError("--resume: the arguments differ from the run being resumed ("
                         + "; ".join(diff) + "); resume with the same arguments")


def _load_images(cfg: RunConfig):
    from simulation import load_dataset

    return load_dataset(cfg.dataset, cfg.split, n=cfg.n, seed=cfg.seed, colour="grey")


def run_session(cfg: RunConfig) -> int:
    """Run (or resume) a bench session; returns the exit status (0, or 3 when stopped)."""
    from calibration.capture import device_identities
    from calibration.imaging import BenchImager
    from devices import bench as bench_mod
    from devices.errors import DeviceError

    from .capture_watch import CaptureQualityStop, watch_for_run
    from .run_checks import bench_problems, bench_signature, enforce, resolve_run_inputs

    out = Path(cfg.out)
    run_json = out / "run.json"
    _drift_tracker(cfg, None, out, {}, run_json)  # a bad drift_every is refused here
    calibration = None
    if cfg.calibration is not None:
        from calibration.store import CalibrationSet

        calibration = CalibrationSet.load(cfg.calibration)
    images, labels = _load_images(cfg)
    inputs = resolve_run_inputs(
        decoder=cfg.decoder, mask=cfg.mask, calibration=calibration,
        calibration_arg=cfg.calibration, imaging=cfg.imaging,
        overrides={"mode": cfg.mode, "geometry": cfg.geometry, "exposure_s": cfg.exposure_s,
                   "averaging": cfg.averaging, "retries": cfg.retries},
        size=int(images.shape[-1]))
    forced = enforce(inputs.problems, cfg.force)
    decoder = inputs.decoder
    record_now = _config_record(cfg, inputs.decoder_path, inputs.imaging)
    if cfg.resume:
        if not run_json.is_file():
            raise FileNotFoundError(f"--resume: no run to resume in {out} (run.json missing)")
        record = _read_run_record(run_json)
        _check_resume(record["config"], record_now)
    elif run_json.exists() or (out / CAPTURES_FILE).exists():
        raise FileExistsError(f"--out: {out} already holds a run; add --resume to continue it "
                              "or choose another directory")
    if cfg.classifier is not None:  # refused here, before any capture
        load_classifier(cfg.classifier, decoder.image_shape_)

    status, error = "complete", None
    opened = hasattr(cfg.bench, "slm") and hasattr(cfg.bench, "camera")
    ctx = contextlib.nullcontext(cfg.bench) if opened else bench_mod.open_bench(cfg.bench)
    with ctx as bench:
        forced += enforce(bench_problems(calibration, device_identities(bench)), cfg.force)
        imager = BenchImager(bench, calibration, inputs.encoder, inputs.imaging,
                             pipelined=cfg.pipelined).prepare()
        if not cfg.resume:
            record = {"format_version": RUN_FORMAT, "config": record_now,
                      "created": time.time(), **run_provenance(),
                      "devices": _devices(bench),
                      "imaging": imager.describe(),
                      "calibration_steps": calibration.steps() if calibration else None,
                      "decoder": decoder.metadata(), "forced": forced,
                      "status": "running", "sessions": []}
        record["sessions"].append({"started": time.time(), "devices": _devices(bench),
                                   "forced": forced})
        record["status"] = "running"
        write_json_atomic(run_json, record)
        store_path = out / CAPTURES_FILE
        try:
            if cfg.resume and store_path.exists():
                store = CaptureStore.resume(store_path)
            else:
                box = imager.window_boxes[0]
                store = CaptureStore.create(
                    store_path, frame_shape=(imager.frames_per_image, *bench.camera.shape),
                    frame_dtype=bench.camera.dtype,
                    pattern_shape=(imager.channels, imager.size, imager.size),
                    dark=imager.dark,
                    attrs={"dataset": cfg.dataset, "split": cfg.split, "seed": cfg.seed},
                    window_shape=(imager.channels, box[2] - box[1], box[4] - box[3]),
                    window_boxes=imager.window_boxes, store_frames=cfg.store_frames)
        except CaptureWriteError as exc:  # no room for even one capture: nothing captured
            record["status"], record["error"] = "stopped", f"{type(exc).__name__}: {exc}"
            record["sessions"][-1].update(ended=time.time(), status="stopped")
            write_json_atomic(run_json, record)
            print(f"hil: error: --out: {exc.strerror}", file=sys.stderr)
            return EXIT_STOPPED
        with store:
            start = store.count
            done = set(store.indices.tolist())
            if len(done) != start or (start and max(done) != start - 1):
                raise ValueError(f"{store_path}: captures are not the images 0..{start - 1}")
            log.info("run %s: %d of %d images captured, %d to go", out, start, len(images),
                     len(images) - start)
            laser = getattr(bench, "laser", None)
            # calibration.drift; a correction may not move a window out of the stored boxes
            drift = _drift_tracker(cfg, imager, out, record, run_json,
                                   None if store.has_frames else imager.window_boxes,
                                   calibration)
            bar = None
            if cfg.progress:
                from tqdm.auto import tqdm

                bar = tqdm(total=len(images), initial=start, desc="capture", unit="img")
            watch = watch_for_run(bench, imager, exposure_fixed=cfg.exposure_s is not None)
            try:
                if start < len(images) and laser is not None:
                    _light_for_capture(laser, record)
                # pipelined (BenchImager.capture_stream), cut at each drift check
                stream = (drift.capture_stream(images, start) if drift is not None
                          else imager.capture_stream(images, start))
                for i, frames, info in stream:
                    watch.check(i, frames, info)  # saturation, signal, exposure (hil.capture_watch)
                    store.append(i, frames if store.has_frames else None,
                                 imager.frames_to_patterns(frames)[0], info,
                                 windows=imager.windows(frames) if store.has_windows else None)
                    watch.enforce()
                    if bar is not None:
                        bar.update(1)
            except CaptureQualityStop as exc:  # saturated or dark captures: laser off
                status, error = "stopped", str(exc)
                log.error("run stopped after %d captures: %s", store.count, error)
                _laser_off(bench)
            except DeviceError as exc:
                status, error = "stopped", f"{type(exc).__name__}: {exc}"
                log.error("run stopped by a device fault after %d captures: %s", store.count,
                          error)
                _laser_off(bench)
            except CaptureWriteError as exc:  # disk full, file-size limit, I/O error
                status, error = "stopped", f"{type(exc).__name__}: {exc}"
                _laser_off(bench)
            except KeyboardInterrupt as exc:  # Ctrl-C, SIGTERM, SIGHUP (hil.safety)
                status, error = "interrupted", signal_name(exc)
                _laser_off(bench)
                raise
            finally:
                if bar is not None:
                    bar.close()
                record["status"], record["error"] = status, error
                record["capture_watch"] = watch.summary()
                record["sessions"][-1].update(ended=time.time(), status=status,
                                              captures=store.count)
                write_json_atomic(run_json, record)
    if store.failed is not None:  # nothing more is written next to a failing capture file
        print(f"hil: error: --out: {store.failed.strerror}", file=sys.stderr)
        return EXIT_STOPPED
    write_results(out, images, labels, decoder, cfg.classifier, status=status,
                  encoder=None if forced else bench_signature(inputs.encoder, decoder))
    if status == "stopped":
        print(f"hil run: stopped ({error}); captures so far are in {out / CAPTURES_FILE}; "
              "fix the cause and add --resume")
        return EXIT_STOPPED
    return 0


def _drift_tracker(cfg: RunConfig, imager: Any, out: Path, record: dict[str, Any],
                   run_json: Path, stored_boxes: Any = None, calibration: Any = None) -> Any:
    """The run's ``calibration.drift.DriftTracker`` (None when ``drift_every`` is 0, or without an
    imager: then only ``drift_every`` is checked); each check rewrites ``run.json``.
    ``stored_boxes``: the camera boxes the store keeps (a correction that would move a
    window out of them is refused: the stored windows must hold what the decoder read).
    With a calibrated geometry the tracker first measures the camera's move since the
    calibration (its geometry step's gratings shown again)."""
    k = cfg.drift_every
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise ValueError(f"drift_every: expected an integer >= 0 (0: no drift checks), "
                         f"got {k!r}")
    if not k or imager is None:
        return None
    from calibration.drift import DriftTracker

    def on_check(_entry: dict[str, Any]) -> None:
        record["drift"] = tracker.record()
        write_json_atomic(run_json, record)

    geometry = getattr(calibration, "geometry", None)
    calibrated = geometry is not None and imager.geometry_source == "calibrated"
    tracker = DriftTracker(imager, cfg.drift_every, reference_dir=out,
                           previous=record.get("drift"), on_check=on_check,
                           stored_boxes=stored_boxes,
                           align_to=geometry if calibrated else None)
    return tracker


def _devices(bench: Any) -> dict[str, Any]:
    if hasattr(bench, "info"):
        return bench.info()
    return {k: getattr(bench, k).info() for k in ("slm", "camera") if hasattr(bench, k)}


def _light_for_capture(laser: Any, record: dict[str, Any]) -> None:
    """Switch the laser output on when the first capture needs light (recorded in run.json).

    Until then the output stays as the bench file set it when the bench was opened.
    """
    if laser.is_output_on():
        record["sessions"][-1]["laser"] = "on when opened"
        return
    laser.output_on()
    record["sessions"][-1]["laser"] = f"switched on for the first capture at {time.time():.3f}"
    log.info("laser '%s': output switched on for the captures", laser.name)


def _laser_off(bench: Any) -> None:
    if hasattr(bench, "laser_off"):
        bench.laser_off()
    elif getattr(bench, "laser", None) is not None:
        bench.laser.output_off()


def load_classifier(path: Path, image_shape: tuple[int, ...] | None = None) -> Any:
    """The ``--classifier`` file, a `LinearSoftmaxClassifier.save` file (nothing in it runs).

    With `image_shape` (the decoder's), a classifier for another number of pixels is
    refused. Errors name ``--classifier`` and the file.
    """
    from simulation import LinearSoftmaxClassifier

    try:
        clf = LinearSoftmaxClassifier.load(path, device="cpu")
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"--classifier: {exc}") from exc
    except ValueError as exc:
        raise ValueError(f"--classifier: {exc}") from exc
    if image_shape is not None and int(np.prod(image_shape)) != clf.n_features_in_:
        raise ValueError(f"--classifier: {path} takes {clf.n_features_in_} features (input "
                         f"shape {clf.input_shape_}), the decoder reconstructs "
                         f"{tuple(image_shape)} images")
    return clf


def write_results(out: Path, images: Any, labels: Any, decoder: Any,
                  classifier_path: Path | None = None, *, status: str = "complete",
                  encoder: Any = None) -> dict[str, Any]:
    """Decode the captures on disk; write results.json and the report (with figures).

    ``encoder``: the signature (or encoder) of what made the captures; the decoder refuses
    patterns of another encoder (``EncoderMismatchError``)."""
    import torch

    from simulation import ssim

    caps = read_captures(out / CAPTURES_FILE, frames=False)
    idx = caps["index"]
    res: dict[str, Any] = {"status": status, "n_captured": int(len(idx)),
                           "n_planned": int(len(images))}
    if len(idx) == 0:
        write_json_atomic(out / "results.json", res)
        return res
    rec = decoder.predict(torch.from_numpy(caps["patterns"]), encoder=encoder)
    ref = images[torch.as_tensor(idx)]
    s = ssim(ref, rec)
    res.update(ssim_mean=float(s.mean()), ssim_std=float(s.std()),
               per_image=[{"index": int(i), "ssim": float(v)} for i, v in zip(idx, s, strict=True)])
    if classifier_path is not None:
        clf = load_classifier(classifier_path)
        res["accuracy"] = float(clf.score(rec.clamp(0, 1), labels[torch.as_tensor(idx)]))
    write_json_atomic(out / "results.json", res)
    _report(out, ref, rec, caps, res)
    return res


def _crop_windows(frames: np.ndarray, maps: np.ndarray, n: int) -> np.ndarray:
    """(B, K, H, W) frames -> list of crops around each frame's window(s), same size."""
    corners = np.array([[0, 0, 1], [n - 1, 0, 1], [0, n - 1, 1], [n - 1, n - 1, 1]], float)
    b, k_frames, h, w = frames.shape
    boxes = []
    for k in range(k_frames):
        ms = maps if k_frames == 1 else maps[k:k + 1]
        xy = np.concatenate([corners @ m.T for m in ms])
        boxes.append((int(max(xy[:, 1].min() - 2, 0)), int(min(xy[:, 1].max() + 3, h)),
                      int(max(xy[:, 0].min() - 2, 0)), int(min(xy[:, 0].max() + 3, w))))
    side_r = max(r1 - r0 for r0, r1, _, _ in boxes)
    side_c = max(c1 - c0 for _, _, c0, c1 in boxes)
    crops = np.zeros((b * k_frames, side_r, side_c), np.float32)
    for i in range(b):
        for k, (r0, r1, c0, c1) in enumerate(boxes):
            crops[i * k_frames + k, : r1 - r0, : c1 - c0] = frames[i, k, r0:r1, c0:c1]
    return crops


def _report(out: Path, ref: Any, rec: Any, caps: dict[str, np.ndarray], res: dict) -> None:
    from .figures import save_image_grid

    pats = caps["patterns"]
    lo = pats.min(axis=(-2, -1), keepdims=True)
    span = np.maximum(pats.max(axis=(-2, -1), keepdims=True) - lo, 1e-12)
    shown = (pats - lo) / span
    rows = [ref] + [shown[:, k] for k in range(pats.shape[1])] + [rec.clamp(0, 1)]
    labels = ["original"] + [f"pattern ch{k}" for k in range(pats.shape[1])] + ["decoded"]
    ssims = [p["ssim"] for p in res["per_image"]]
    save_image_grid(rows, labels, out / "reconstructions.png", n=8,
                    title=f"bench reconstructions: mean SSIM {res['ssim_mean']:.3f}",
                    captions=[f"SSIM {v:.2f}" for v in ssims[:8]])
    head = read_capture_header(out / CAPTURES_FILE)
    stored_windows = head.window_shape is not None
    first = read_captures(out / CAPTURES_FILE, frames=not stored_windows, limit=4)
    dark = first.get("dark")
    if stored_windows:  # the model windows (k, C, h, w), dark-subtracted box by box
        frames = np.asarray(first["windows"], dtype=np.float32)
        boxes = [] if dark is None or head.window_boxes is None else head.window_boxes.tolist()
        for c, (_, r0, r1, c0, c1) in enumerate(boxes):
            frames[:, c] -= dark[r0:r1, c0:c1]
    else:
        frames = np.asarray(first["frames"], dtype=np.float32)
        if dark is not None:
            frames -= dark
    frames = np.sqrt(np.maximum(frames, 0))
    if stored_windows:
        frames = frames.reshape(-1, *frames.shape[-2:])
    else:
        try:  # crop each frame to its model window(s), from the run's imaging record
            maps = json.loads((out / "run.json").read_text())["imaging"]["model_to_camera"]
            frames = _crop_windows(frames, np.asarray(maps, float), pats.shape[-1])
        except (KeyError, ValueError, OSError):
            frames = frames.reshape(-1, *frames.shape[-2:])
    frames /= np.maximum(frames.max(axis=(-2, -1), keepdims=True), 1e-12)
    save_image_grid([frames], ["sqrt(frame)"], out / "captures.png", n=len(frames),
                    title="captures, dark-subtracted, cropped to the model windows")
    lines = [
        "# Bench run report", "",
        f"- status: **{res['status']}**; captures: {res['n_captured']} of {res['n_planned']}",
        f"- mean SSIM: **{res['ssim_mean']:.4f}** ± {res['ssim_std']:.4f}",
    ]
    if "accuracy" in res:
        lines.append(f"- classification accuracy on the reconstructions: {res['accuracy']:.4f}")
    lines += ["", "Configuration, versions and devices: `run.json`; per-image numbers: "
              "`results.json`; captures: `captures.h5`.", "",
              "![reconstructions](reconstructions.png)", "", "![captures](captures.png)", ""]
    write_text_atomic(out / "report.md", "\n".join(lines))
