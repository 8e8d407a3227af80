"""simulation: the differentiable digital twin of the encoded-diffraction imager,
the paper's synthetic training data, its metrics, and the decoders.

It imports no other package of this project (DESIGN.md §2).

>>> from simulation import DualVortexEncoder, speckle, LinearDecoder
>>> enc = DualVortexEncoder()
>>> imgs = speckle(2000, 15, seed=0)
>>> dec = LinearDecoder().fit(enc(imgs), imgs, method="ridge", encoder=enc)
"""

from .classify import LinearSoftmaxClassifier, classification_protocol
from .datasets import load_dataset
from .decoders import EncoderMismatchError, LinearDecoder
from .encoders import DualVortexEncoder, PhaseEncoder, encode_batched, encoder_from_signature
from .metrics import convergence, mse, omega_k, psnr, ssim, svd_entropy
from .optics import AngularSpectrum, fraunhofer, lens_phase, model_grid, phase_object, vortex_phase
from .pipeline import reconstruct
from .probe import attention_maps, point_images, spread_measures, weight_svd_entropy
from .sensor import SensorModel, normalise_for_decoder
from .speckle import (
    PAPER_GAMMAS,
    diffuse_attention,
    minmax01,
    speckle,
    speckle_mixture,
    swapped_spectra,
)

__all__ = [
    "AngularSpectrum", "DualVortexEncoder", "EncoderMismatchError", "LinearDecoder",
    "LinearSoftmaxClassifier", "PAPER_GAMMAS", "PhaseEncoder", "SensorModel",
    "classification_protocol", "convergence", "encode_batched", "encoder_from_signature",
    "fraunhofer", "lens_phase",
    "load_dataset", "minmax01", "model_grid", "mse", "normalise_for_decoder", "omega_k",
    "phase_object", "psnr", "reconstruct", "speckle", "speckle_mixture", "ssim",
    "svd_entropy", "swapped_spectra", "vortex_phase",
    "attention_maps", "diffuse_attention", "point_images", "spread_measures",
    "weight_svd_entropy",
]
