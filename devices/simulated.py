"""The simulated bench: slmsuite's SimulatedSLM + SimulatedCamera, plus what they lack.

slmsuite computes the optics: the SLM's integer display turned back into phase
through ``gamma_sim`` (our hidden grey -> phase curve), times the hidden source
amplitude, plus the hidden aberration, Fourier-transformed and sampled on the camera
through the hidden affine map (camera in the Fourier plane). We add, seeded, one idea
per module (this one keeps the import path ``devices.simulated`` for all of them):

* ``devices.sim_slm`` (``SimSLM``): the hidden SLM flaws that slmsuite carries (grey ->
  phase response, source, aberration), the panel's refresh and settling, and the
  snapshot of what the panel shows at one instant (``SimSLM.displayed``);
* ``devices.sim_camera`` (``SimCamera``): laser coupling (counts scale with
  ``power_fraction()``, which the bench wires to the simulated laser: emitted power /
  ``reference_power_mW``; output off gives dark frames), a photon budget, shot and read
  noise, dark level and gain, zero-order leakage, the ``[sim_flaws]`` of
  ``devices.flaws`` on the SLM side (crosstalk, span map, flicker, true settle constant)
  and the camera side (power fluctuation, drift, ghost, vignetting, background, hot
  pixels, non-linearity), faults (dropped frames, time-outs, a disconnect) and the frame
  timing: each exposure takes a snapshot of the SLM when it starts, signals its end after
  ``exposure_s`` and is rendered from the snapshot during the readout, so the render
  never holds the SLM;
* ``devices.sim_render``: the fast far-field render (checked against slmsuite's);
* ``devices.sim_detector``: the ghost and the shot noise of the camera's render;
* ``devices.sim_instruments`` (``SimPowerMeter``): the power meter in the laser's beam.

With ``noise = false``, no leakage, no ``[sim_flaws]`` and the laser at its reference
power, a frame is the wrapped slmsuite camera's own ``get_image()`` (the reference).
"""

from __future__ import annotations

from devices.sim_camera import ExposureState, SimCamera
from devices.sim_instruments import SimPowerMeter
from devices.sim_slm import DisplayedFrame, SimSLM

__all__ = ["SimSLM", "SimCamera", "SimPowerMeter", "DisplayedFrame", "ExposureState"]
