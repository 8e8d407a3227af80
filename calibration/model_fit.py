"""Step 5: the encoded-diffraction model fitted to a captured speckle set (torch, Adam).

After steps 1-4 the bench and the twin agree up to what those steps cannot see. A set of
synthetic speckle images (the paper's training distribution, ``simulation.speckle``) is
shown through the encoder and captured (``BenchImager``, calibrated geometry, LUT and
aberration correction); the twin (``DualVortexEncoder``) predicts the same patterns.
Per channel c, what remains is fitted by gradient descent:

    measured_c ≈ gain_c · blur_σ( warp_θc( twin_c ) ) + background_c

with θ_c a small residual affine of the model grid (shift, scale, rotation, shear) and
σ a Gaussian blur (camera pixel integration, residual defocus). The fitted warp is what
the twin-trained decoder (step 6) applies to its simulated training patterns.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from calibration.capture import capture_patterns, device_identities
from calibration.store import CalibrationSet, StepResult

__all__ = ["calibrate_model", "BenchModel", "fit_bench_model", "model_from_step",
           "source_amplitude", "twin_patterns"]

log = logging.getLogger(__name__)


class BenchModel(torch.nn.Module):
    """gain · blur(warp(twin)) + background, per channel, on the N x N model grid."""

    def __init__(self, channels: int, size: int) -> None:
        super().__init__()
        self.size = int(size)
        # residual affine: linear part dimensionless, translation in model pixels
        self.theta = torch.nn.Parameter(torch.zeros(channels, 2, 3))
        self.log_gain = torch.nn.Parameter(torch.zeros(channels))
        self.background = torch.nn.Parameter(torch.zeros(channels))
        self.log_sigma = torch.nn.Parameter(torch.tensor(-1.0))

    def warp(self, patterns: torch.Tensor) -> torch.Tensor:
        """Resample (B, C, N, N) through identity + theta (theta in model pixels)."""
        b, c, n, _ = patterns.shape
        eye = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]], dtype=patterns.dtype)
        th = eye + self.theta.to(patterns.dtype) * torch.tensor(
            [[1.0, 1.0, 2.0 / n], [1.0, 1.0, 2.0 / n]], dtype=patterns.dtype)
        grid = F.affine_grid(th, [c, 1, n, n], align_corners=False)  # (C, N, N, 2)
        x = patterns.transpose(0, 1)  # (C, B, N, N): one grid per channel
        out = torch.stack([F.grid_sample(x[k][:, None], grid[k:k + 1].expand(b, -1, -1, -1),
                                         mode="bilinear", padding_mode="border",
                                         align_corners=False)[:, 0] for k in range(c)], dim=1)
        return out

    def blur(self, patterns: torch.Tensor) -> torch.Tensor:
        sigma = torch.exp(self.log_sigma)
        r = torch.arange(-3, 4, dtype=patterns.dtype)
        k = torch.exp(-(r**2) / (2 * sigma.to(patterns.dtype) ** 2))
        k = k / k.sum()
        b, c, n, _ = patterns.shape
        x = patterns.reshape(b * c, 1, n, n)
        x = F.conv2d(F.pad(x, (3, 3, 0, 0), mode="replicate"), k.view(1, 1, 1, 7))
        x = F.conv2d(F.pad(x, (0, 0, 3, 3), mode="replicate"), k.view(1, 1, 7, 1))
        return x.reshape(b, c, n, n)

    def forward(self, twin: torch.Tensor) -> torch.Tensor:
        g = torch.exp(self.log_gain)[None, :, None, None]
        return g * self.blur(self.warp(twin)) + self.background[None, :, None, None]

    def parameters_dict(self) -> dict[str, Any]:
        return {"theta_model_px": self.theta.detach().numpy().astype(np.float64),
                "gain": torch.exp(self.log_gain).detach().numpy().astype(np.float64),
                "background": self.background.detach().numpy().astype(np.float64),
                "blur_sigma_model_px": float(torch.exp(self.log_sigma.detach()))}


def source_amplitude(cal: CalibrationSet, size: int, block: int) -> torch.Tensor | None:
    """The fitted source (step 4: the beam model it kept, ``calibration.source_beam``)
    sampled at the model pixels' block centres."""
    if cal.source is None:
        return None
    from calibration.source_beam import amplitude_from_values

    u = (torch.arange(size, dtype=torch.float64) + 0.5) * block - size * block / 2
    y, x = torch.meshgrid(u, u, indexing="ij")
    return amplitude_from_values(cal.source.values, x, y).float()


def twin_patterns(images: torch.Tensor, encoder: Any, amplitude: torch.Tensor | None
                  ) -> torch.Tensor:
    """The encoder's sensor patterns with the bench's source amplitude on the object
    (`simulation.encoders.twin_field`)."""
    from simulation.encoders import twin_field

    if amplitude is None:
        return encoder(images).float()
    return encoder.sensor(twin_field(images, encoder.masks_rad, encoder.phase_depth,
                                     amplitude)).float()


def fit_bench_model(measured: torch.Tensor, twin: torch.Tensor, *, steps: int = 200,
                    lr: float = 0.02) -> tuple[BenchModel, dict[str, float]]:
    """Fit ``BenchModel`` so that model(twin) ≈ measured; both (B, C, N, N)."""
    if measured.shape != twin.shape or measured.ndim != 4:
        raise ValueError(f"measured, twin: expected equal (B, C, N, N) shapes, got "
                         f"{tuple(measured.shape)} and {tuple(twin.shape)}")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small tensors: one thread is fastest on shared cores
    try:
        return _fit(measured, twin, steps, lr)
    finally:
        torch.set_num_threads(threads)


def _fit(measured: torch.Tensor, twin: torch.Tensor, steps: int, lr: float
         ) -> tuple[BenchModel, dict[str, float]]:
    b, c, n, _ = twin.shape
    model = BenchModel(c, n)
    with torch.no_grad():  # least-squares start for gain and background
        for k in range(c):
            x, y = twin[:, k].reshape(-1), measured[:, k].reshape(-1)
            slope = ((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum()
            model.log_gain[k] = torch.log(slope.clamp(min=1e-12))
            model.background[k] = y.mean() - slope * x.mean()
    scale = measured.std()
    with torch.no_grad():
        before = float(((model(twin) - measured) ** 2).mean().sqrt() / scale)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(int(steps)):
        opt.zero_grad()
        loss = ((model(twin) - measured) ** 2).mean() / scale**2
        loss.backward()
        opt.step()
    with torch.no_grad():
        pred = model(twin)
        after = float(((pred - measured) ** 2).mean().sqrt() / scale)
        corr = float(np.mean([np.corrcoef(pred[i, k].reshape(-1), measured[i, k].reshape(-1))[0, 1]
                              for i in range(b) for k in range(c)]))
    return model, {"relative_rms_before": before, "relative_rms": after,
                   "mean_correlation": corr}


def calibrate_model(bench: Any, cal: CalibrationSet, *, size: int = 32, n_images: int = 48,
                    gamma: float = 15.0, seed: int = 1, steps: int = 400,
                    imaging: Any = None) -> StepResult:
    """Capture ``n_images`` speckles through the calibrated imager and fit ``BenchModel``.

    ``imaging``: the ``ImagingConfig`` (default ``ImagingConfig(size=size)``), recorded in
    the step's ``imaging_config``."""
    from calibration.imaging import BenchImager
    from calibration.imaging_config import imaging_config_for
    from simulation import DualVortexEncoder, speckle

    cal.require("geometry")
    config = imaging_config_for(imaging, size)
    imgs = speckle(int(n_images), float(gamma), seed=int(seed))
    try:
        imager = BenchImager(bench, cal, DualVortexEncoder(size=size), config).prepare()
    except ValueError as exc:  # the calibrated layout does not fit this camera
        from calibration.quality import CalibrationQualityError

        raise CalibrationQualityError(
            "model", "imaging layout", "does not fit the camera", str(exc),
            "move the camera so the Fourier plane is centred on it, or image with a "
            "smaller steering grating (ImagingConfig)") from exc
    # each image's frames are reduced to its model-grid pattern as they arrive
    measured = torch.as_tensor(capture_patterns(imager, imgs, desc="model"),
                               dtype=torch.float32)
    block = imager.block
    amp = source_amplitude(cal, size, block)
    with torch.no_grad():
        twin = twin_patterns(imgs, DualVortexEncoder(size=size), amp)
    model, res = fit_bench_model(measured, twin, steps=steps)
    with torch.no_grad():
        fitted = model(twin)
    log.info("model: relative rms %.4f -> %.4f, correlation %.4f, blur %.3f model px",
             res["relative_rms_before"], res["relative_rms"], res["mean_correlation"],
             model.parameters_dict()["blur_sigma_model_px"])
    from calibration.quality import LIMITS, check_finite, check_max, check_min

    check_finite("model", "fitted parameters", [res["relative_rms"],
                 *np.ravel(model.parameters_dict()["theta_model_px"])],
                 "the model fit diverged: check the captures (saturation, light) and the "
                 "geometry step")
    check_max("model", "relative rms residual of the captured speckle", res["relative_rms"],
              LIMITS["model_rel_rms"],
              "the captures do not look like the calibrated twin: too little light (raise "
              "the laser power, exposure or averaging), or the bench moved (re-run "
              "geometry, lut and wavefront), or stray light")
    check_min("model", "mean correlation of captured and fitted patterns",
              res["mean_correlation"], LIMITS["model_min_correlation"],
              "the captures barely follow the twin: too little light (raise exposure or "
              "averaging), the camera drifted, or the geometry is wrong; re-run geometry")
    return StepResult(
        name="model",
        values={**model.parameters_dict(), "n_images": int(n_images), "gamma": float(gamma),
                "seed": int(seed), "imaging_config": config.to_dict()},
        residuals=res,
        data={"measured": measured[:4, 0].numpy(), "fitted": fitted[:4, 0].numpy()},
        devices=device_identities(bench),
    )


def model_from_step(step: StepResult) -> BenchModel:
    """Rebuild the fitted ``BenchModel`` from a stored ``model`` step."""
    theta = np.asarray(step["theta_model_px"], dtype=np.float32)
    m = BenchModel(theta.shape[0], 32)  # size only matters through the patterns given
    with torch.no_grad():
        m.theta.copy_(torch.as_tensor(theta))
        m.log_gain.copy_(torch.log(torch.as_tensor(np.asarray(step["gain"], np.float32))))
        m.background.copy_(torch.as_tensor(np.asarray(step["background"], np.float32)))
        m.log_sigma.fill_(float(np.log(step["blur_sigma_model_px"])))
    return m
