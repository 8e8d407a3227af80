"""The calibration report: ``report.md`` plus PNG figures (fitted against measured).

One section per record (values, values derived on read, residuals, with units) and one
figure per step that ran, the ``figure`` of its registry entry
(``calibration.step_registry``). The built-ins' are here: the photon-transfer curve
(dark), detected spots and the affine's residual vectors (geometry), measured order
powers and the fitted grey -> phase curve (lut), measured, fitted and residual
phase-diversity frames (wavefront), and the model fit's measured against fitted patterns
(model); the decoders' SSIM against the number of captures (``crossover.png`` and
``crossover.md`` of ``experiments/bench_crossover.py``) when they sit beside the report.
Figures draw only what the steps keep: small arrays and crops (the wavefront step's frames
are crops around its spot, the model step's first four patterns), never the raw frames of
a step. A last section gives ``model_to_camera`` as used (the geometry with the wavefront's centre
correction) and its centre, scale and rotation.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from calibration.step_registry import resolve, step_for_record, value_units
from calibration.store import CalibrationSet
from simulation.atomic import savefig_atomic, write_text_atomic
from simulation.figures import new_figure

__all__ = ["write_report", "fig_dark", "fig_geometry", "fig_lut", "fig_wavefront", "fig_model"]


def fig_dark(cal: CalibrationSet, path: Path) -> None:
    d = cal.dark
    s, v = d.data["ptc_signal"], d.data["ptc_variance"]
    g, c = d["gain_counts_per_electron"], d.residuals["ptc_offset_counts2"]
    fig, ax = new_figure(1, 2, figsize=(9, 3.5))
    ax[0].plot(s, v, "o", ms=3, label="measured")
    ax[0].plot(s, g * s + c, "-", label=f"fit: gain {g:.4f} counts/e-")
    ax[0].set(xlabel="signal (counts)", ylabel="temporal variance (counts²)",
              title="photon transfer")
    ax[0].legend()
    im = ax[1].imshow(d["dark_frame"], cmap="gray")
    fig.colorbar(im, ax=ax[1])
    ax[1].set_title("dark frame (counts)")
    fig.tight_layout()
    savefig_atomic(fig, path, dpi=100)


def fig_geometry(cal: CalibrationSet, path: Path) -> None:
    g = cal.geometry
    cam = g.data["camera_pts"]
    res = g.residuals["point_residuals_px"]
    a = np.asarray(g["model_to_camera"])  # the spot fit (the centre correction is not)
    fit = g.data["model_pts"] @ a[:, :2].T + a[:, 2]
    fig, ax = new_figure(1, 2, figsize=(9, 4))
    ax[0].plot(cam[:, 0], cam[:, 1], "o", mfc="none", label="measured spots")
    ax[0].plot(fit[:, 0], fit[:, 1], "+", label="affine fit")
    ax[0].invert_yaxis()
    ax[0].set(xlabel="camera x (px)", ylabel="camera y (px)", title="grating spots")
    ax[0].legend(fontsize=8)
    q = ax[1].quiver(cam[:, 0], cam[:, 1], res[:, 0], -res[:, 1], np.hypot(*res.T))
    fig.colorbar(q, ax=ax[1], label="residual (px)")
    ax[1].invert_yaxis()
    ax[1].set_title(f"residuals, rms {g.residuals['rms_px']:.3f} px")
    fig.tight_layout()
    savefig_atomic(fig, path, dpi=100)


def fig_lut(cal: CalibrationSet, path: Path) -> None:
    lut = cal.lut
    lv, dl = lut.data["levels"], lut.data["delta_rad"]
    fig, ax = new_figure(1, 2, figsize=(9, 3.5))
    ax[0].plot(lut.data["levels"], lut.data["p0"], "o", ms=3, label="zero order (measured)")
    ax[0].plot(lut.data["levels"], lut.data["p1"], "s", ms=3, label="±1 orders (measured)")
    ax[0].plot(lv, lut.data["p0"] + lut.residuals["power_residual0"], "-", label="fit")
    ax[0].plot(lv, lut.data["p1"] + lut.residuals["power_residual1"], "-", label="fit")
    ax[0].set(xlabel="grey level", ylabel="power / reference", title="binary gratings")
    ax[0].legend(fontsize=7)
    ax[1].plot(np.arange(len(cal.phase_response_rad)), cal.phase_response_rad, "-",
               label="phase response (LUT)")
    ax[1].plot(lv, dl, "o", ms=3, label="measured delays")
    ax[1].set(xlabel="grey level", ylabel="delay (rad)", title="grey -> phase")
    ax[1].legend(fontsize=8)
    fig.tight_layout()
    savefig_atomic(fig, path, dpi=100)


def fig_wavefront(cal: CalibrationSet, path: Path) -> None:
    wf = cal.wavefront
    frames, fitted = wf.data["frames"], wf.data["fitted"]
    resid = wf.residuals["residual_maps"]
    mask = np.any(fitted != 0, axis=0)
    ys, xs = np.nonzero(mask)
    sl = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
    n = len(frames)
    fig, ax = new_figure(3, n, figsize=(2.2 * n, 6.6), squeeze=False)
    for k in range(n):
        vmax = float(frames[k][sl].max())
        for r, (img, name) in enumerate(((frames[k], "measured"), (fitted[k], "fitted"),
                                         (resid[k], "residual"))):
            kw = {"vmin": -vmax / 4, "vmax": vmax / 4, "cmap": "RdBu_r"} if r == 2 else \
                {"vmin": 0, "vmax": vmax, "cmap": "magma"}
            ax[r, k].imshow(img[sl], **kw)
            ax[r, k].set_xticks([])
            ax[r, k].set_yticks([])
            if k == 0:
                ax[r, k].set_ylabel(name)
    fig.suptitle("phase diversity: measured / twin / residual (residual scale ×4)")
    fig.tight_layout()
    savefig_atomic(fig, path, dpi=100)


def fig_model(cal: CalibrationSet, path: Path) -> None:
    m = cal.model
    meas, fit = m.data.get("measured"), m.data.get("fitted")
    if meas is None or fit is None:
        return
    k = min(4, len(meas))
    fig, ax = new_figure(3, k, figsize=(2.2 * k, 6.6), squeeze=False)
    for i in range(k):
        for r, img in enumerate((meas[i], fit[i], meas[i] - fit[i])):
            lim = float(np.abs(img).max()) or 1.0
            kw = {"cmap": "RdBu_r", "vmin": -lim, "vmax": lim} if r == 2 else {"cmap": "magma"}
            ax[r, i].imshow(img, **kw)
            ax[r, i].set_xticks([])
            ax[r, i].set_yticks([])
    ax[0, 0].set_ylabel("measured")
    ax[1, 0].set_ylabel("fitted model")
    ax[2, 0].set_ylabel("residual")
    fig.tight_layout()
    savefig_atomic(fig, path, dpi=100)


def _scalars(d: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, np.ndarray) and v.ndim > 0:
            if v.size > 8:
                continue
            v = np.round(v.astype(float), 6).tolist()
        if isinstance(v, (float, np.floating)):
            v = float(f"{float(v):.6g}")
        out[k] = v
    return out


def _crossover_section(out: Path) -> list[str]:
    """The crossover figure and table (``experiments/bench_crossover.py``) when present."""
    if not (out / "crossover.png").is_file():
        return []
    lines = ["## decoders: SSIM against the number of captures", "",
             "Capture-trained, twin-trained and twin prior + captures decoders on captured "
             "MNIST, Fashion-MNIST and CIFAR-10 grey (`experiments/bench_crossover.py`).", ""]
    table = out / "crossover.md"
    if table.is_file():
        lines += [table.read_text().rstrip(), ""]
    return lines + ["![crossover](crossover.png)", ""]


def _table(title: str, record: str, d: dict[str, Any]) -> list[str]:
    lines = ["", f"| {title} | | units |", "|---|---|---|"]
    for k, v in _scalars(d).items():
        units = value_units(record, k) or ""
        lines.append(f"| {k} | `{json.dumps(v, default=str)[:120]}` | {units} |")
    return lines


def write_report(cal: CalibrationSet, out_dir: str | Path) -> Path:
    """Write ``report.md`` and ``figures/*.png`` into ``out_dir``; returns the report path.

    One section per record (values, values derived on read, residuals), then the figure of
    the step that produced it (``CalibrationStep.figure``, once per step)."""
    out = Path(out_dir)
    figs = out / "figures"
    figs.mkdir(parents=True, exist_ok=True)
    lines = ["# Calibration report", "",
             f"Written {time.strftime('%Y-%m-%d %H:%M:%S')}; steps: "
             f"{', '.join(cal.steps()) or 'none'}.", ""]
    dev = cal.devices
    for kind in ("slm", "camera"):
        if kind in dev:
            info = dev[kind]
            lines.append(f"- {kind}: `{info.get('device_id', '?')}` "
                         f"({info.get('backend', '?')}, shape {info.get('shape')})")
    lines.append("")
    present = cal.steps()
    for name in present:
        step = cal.record(name)
        when = time.strftime("%H:%M:%S", time.localtime(step.time))
        lines += [f"## {name}", "", f"Code {step.code_version}, {when}."]
        lines += _table("value", name, step.values)
        derived = step.derived()
        if derived:
            lines += _table("derived on read", name, derived)
        lines += _table("residual", name, step.residuals)
        lines.append("")
        producer = step_for_record(name)
        last = producer is not None and [r for r in producer.produces if r in present][-1] == name
        fig = resolve(producer.figure) if last else None
        if fig is not None:
            path = figs / f"{producer.name}.png"
            try:
                fig(cal, path)
            except (KeyError, ValueError) as exc:
                lines.append(f"(figure not drawn: {exc})")
            if path.exists():
                lines += [f"![{producer.name}](figures/{producer.name}.png)", ""]
    params = cal.affine_parameters
    if params is not None:
        corrected = cal.wavefront is not None and "center_shift_px" in cal.wavefront.values
        lines += ["## model_to_camera as used", "",
                  "The geometry's affine" + (" with the wavefront step's centre correction"
                                             if corrected else "") + " (derived on read)."]
        lines += _table("value", "geometry", {"model_to_camera": cal.model_to_camera,
                                              **params})
        lines.append("")
    lines += _crossover_section(out)
    return write_text_atomic(out / "report.md", "\n".join(lines) + "\n")
