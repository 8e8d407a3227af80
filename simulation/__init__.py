"""simulation: the differentiable digital twin of the encoded-diffraction imager,
the paper's synthetic training data, its metrics, and the decoders.

It imports no other package of this project (docs/architecture.md §Direction-of-imports).

>>> from simulation import DualVortexEncoder, speckle, LinearDecoder
>>> enc = DualVortexEncoder()
>>> imgs = speckle(2000, 15, seed=0)
>>> dec = LinearDecoder(method="ridge").fit(enc(imgs), imgs, encoder=enc)
"""

import sys
import types

from .lazy_face import lazy_face

# The public face, loaded on first use: importing a light module of this package
# (`simulation.atomic`, `.provenance`, `.h5attrs`, `.lazy_face`) imports no torch;
# `from simulation import LinearDecoder` does, then.
_FACE = {
    "LinearSoftmaxClassifier": "simulation.classify",
    "classification_protocol": "simulation.classify",
    "load_dataset": "simulation.datasets",
    "EncoderMismatchError": "simulation.decoders",
    "LinearDecoder": "simulation.decoders",
    "DualVortexEncoder": "simulation.encoders",
    "PhaseEncoder": "simulation.encoders",
    "encode_batched": "simulation.encoders",
    "encoder_from_signature": "simulation.encoders",
    "twin_field": "simulation.encoders",
    "convergence": "simulation.metrics",
    "mse": "simulation.metrics",
    "omega_k": "simulation.metrics",
    "psnr": "simulation.metrics",
    "spectral_statistics": "simulation.metrics",
    "ssim": "simulation.metrics",
    "svd_entropy": "simulation.metrics",
    "AngularSpectrum": "simulation.optics",
    "fraunhofer": "simulation.optics",
    "lens_phase": "simulation.optics",
    "model_grid": "simulation.optics",
    "phase_object": "simulation.optics",
    "vortex_phase": "simulation.optics",
    "reconstruct": "simulation.pipeline",
    "attention_maps": "simulation.probe",
    "point_images": "simulation.probe",
    "spread_measures": "simulation.probe",
    "weight_svd_entropy": "simulation.probe",
    "SensorModel": "simulation.sensor",
    "normalise_for_decoder": "simulation.sensor",
    "PAPER_GAMMAS": "simulation.speckle",
    "diffuse_attention": "simulation.speckle",
    "minmax01": "simulation.speckle",
    "speckle": "simulation.speckle",
    "speckle_mixture": "simulation.speckle",
    "swapped_spectra": "simulation.speckle",
}
#: face names that are also module names: the name is the function, not the module
_SHADOWED = frozenset({'speckle'})


class _Face(types.ModuleType):
    """This package, keeping a face name that is also a submodule's name (``speckle``)
    bound to the function: the import system sets ``simulation.speckle`` to the
    submodule when it is first imported (eager imports used to overwrite it right
    after). The submodule stays reachable through ``sys.modules``/``from`` imports."""

    def __setattr__(self, name: str, value: object) -> None:
        if name in _SHADOWED and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Face

__all__ = [
    "AngularSpectrum", "DualVortexEncoder", "EncoderMismatchError", "LinearDecoder",
    "LinearSoftmaxClassifier", "PAPER_GAMMAS", "PhaseEncoder", "SensorModel",
    "classification_protocol", "convergence", "encode_batched", "encoder_from_signature",
    "fraunhofer", "lens_phase",
    "load_dataset", "minmax01", "model_grid", "mse", "normalise_for_decoder", "omega_k",
    "phase_object", "psnr", "reconstruct", "spectral_statistics", "speckle",
    "speckle_mixture", "ssim",
    "svd_entropy", "swapped_spectra", "twin_field", "vortex_phase",
    "attention_maps", "diffuse_attention", "point_images", "spread_measures",
    "weight_svd_entropy",
]
__getattr__, __dir__ = lazy_face(__name__, _FACE)
