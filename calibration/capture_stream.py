"""Pipelined captures: ``BenchImager.capture_stream`` when ``pipelined`` (the default).

Serial (``pipelined=False``, the old loop): compose, write, wait the settle time, flush,
grab, one frame after another. Pipelined (the default): a worker thread composes and
converts the next frames to grey levels (``SLM.prepare_phase``) while the devices work,
and the next pattern is written as soon as the current frame's exposure is over (while
the camera reads it out), so the SLM's refresh and settle time run while the frame is
read out and the caller decodes and stores the one before. Every frame is still taken
only after ``SLM.settled_at()`` (the settle time, measured by the ``settle`` calibration
step when the calibration has one, plus a refresh period for a driver that does not wait
for the refresh); the camera keeps its own frame time. SLM writes stay in the caller's
thread (display drivers are often bound to the thread that opened them); frames are
grabbed in one worker thread, one request at a time, and nothing else touches the camera
meanwhile. Images come out in order, each with the frames of its own patterns: a device
error retries the whole image (its frames from the first), as ``capture_frames``.

How the next write is timed: a camera that reports the end of each exposure
(``Camera.signals_exposure_end``: the simulated one) lets the next pattern be written at
once; else, with the camera's frame timing known (``[camera] frame_rate_hz``),
``Camera.exposure_end_estimate`` gives the latest end of the exposure from the moment the
frame was asked for, plus ``EXPOSURE_MARGIN_S``; a frame that was dropped and asked for
again may have started later than that, so it is taken again with its own pattern and no
early write. Without either, the next pattern is written once the frame has arrived (the
compose thread and the stores still overlap). Averaged captures (``averaging`` > 1)
never write early.

This module imports ``devices`` only (docs/architecture.md §Direction-of-imports).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from devices.errors import DeviceDisconnected, DeviceError

__all__ = ["pipelined_stream", "EXPOSURE_MARGIN_S"]

log = logging.getLogger(__name__)

EXPOSURE_MARGIN_S = 1e-3  # after the estimated end of an exposure, before the next write


def pipelined_stream(imager: Any, images: Any, start: int = 0
                     ) -> Iterator[tuple[int, np.ndarray, list[dict[str, Any]]]]:
    """Yield ``(i, frames (K, H, W), frame infos)`` for images ``start, ...`` in order,
    pipelined (module docstring); ``imager``: a prepared ``BenchImager``."""
    n = len(images)
    k_n = imager.frames_per_image
    order = [(i, k) for i in range(start, n) for k in range(k_n)]
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="compose")
    grabber = ThreadPoolExecutor(max_workers=1, thread_name_prefix="camera")
    ahead: dict[tuple[int, int], Future] = {}
    camera, slm = imager.camera, imager.slm
    over = threading.Event() if getattr(camera, "signals_exposure_end", False) else None
    entered = threading.Event()
    camera.exposure_end_event = over

    def compose(i: int, k: int) -> Any:
        return slm.prepare_phase(imager.slm_phase(images[i], k))

    def prepared(pos: int) -> Any:
        for j in range(pos, min(pos + k_n + 1, len(order))):
            if order[j] not in ahead:
                ahead[order[j]] = pool.submit(compose, *order[j])
        return ahead[order[pos]].result()

    entered_at = [0.0]

    def grab() -> tuple[np.ndarray, dict[str, Any]]:
        entered_at[0] = time.perf_counter()
        entered.set()
        frame = camera.get_image(averaging=imager.averaging)
        ci = getattr(camera, "last_capture_info", None)
        return frame, (ci.as_dict() if hasattr(ci, "as_dict")
                       else {"timestamp": time.time()})

    def exposure_over(pending: Future, previous_start: float | None
                      ) -> tuple[bool, float | None]:
        """Wait until the SLM may change; (early, the frame's start estimate)."""
        if imager.averaging == 1 and over is not None:  # the camera says so
            while not over.wait(0.002):
                if pending.done():
                    break
            return True, None
        if imager.averaging == 1:
            entered.wait()
            window = camera.exposure_end_estimate(entered_at[0], previous_start)
            if window is not None:  # the camera's frame timing is known
                left = window[1] + EXPOSURE_MARGIN_S - time.perf_counter()
                if left > 0:
                    time.sleep(left)
                return True, window[0]
        pending.result()  # averaged frames, or unknown timing: once the frame(s) are in
        return False, None

    previous_start: float | None = None
    try:
        pos = 0
        written = -1  # position in ``order`` whose pattern is on the SLM
        while pos < len(order):
            i = order[pos][0]
            attempt = 0
            while True:
                frames, infos = [], []
                try:
                    for k in range(k_n):
                        early = True
                        while True:
                            if written != pos + k:
                                slm.set_phase(prepared(pos + k), settle=False)
                                written = pos + k
                            slm.wait_settled()
                            if imager.flush:
                                camera.flush()
                            entered.clear()
                            if over is not None:
                                over.clear()
                            pending = grabber.submit(grab)
                            nxt = pos + k + 1
                            if nxt < len(order) and early:
                                nxt_phase = prepared(nxt)
                                early, previous_start = exposure_over(pending,
                                                                      previous_start)
                                slm.set_phase(nxt_phase, settle=False)
                                written = nxt
                            frame, info = pending.result()
                            if early and over is None and info.get("dropped_frames"):
                                # a re-requested frame may have started after the
                                # next pattern was written: take it again, serially
                                early = False
                                continue
                            break
                        frames.append(frame)
                        infos.append(info)
                    break
                except DeviceDisconnected:
                    raise
                except DeviceError as exc:
                    attempt += 1
                    written = -1  # the image starts again from its first frame
                    previous_start = None
                    if attempt > imager.retries:
                        raise
                    log.warning("capture of image %d failed (%s); retry %d of %d", i,
                                exc, attempt, imager.retries)
            for j in range(pos, pos + k_n):
                ahead.pop(order[j], None)
            pos += k_n
            yield i, np.stack(frames), infos
    finally:
        for fut in ahead.values():
            fut.cancel()
        pool.shutdown(wait=True)
        grabber.shutdown(wait=True)
        camera.exposure_end_event = None
