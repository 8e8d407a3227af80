"""hil: the bench session of an encoded-diffraction imager, and the `hil` command line.

A run shows each input on the SLM through a trained encoder, captures it, maps the
capture onto the model grid through the calibrated geometry, decodes and records::

    from hil.session import RunConfig, run_session
    run_session(RunConfig(bench="sim.toml", calibration=Path("cal"), decoder=Path("dec.pt"),
                          dataset="mnist", n=100, out=Path("runs/r1")))

Phase-mask files are in `hil.masks`, run records (append-only HDF5 captures,
resumable) in `hil.runs`, hardware-in-the-loop training in `hil.bench_training`.
Imports `calibration`, `devices` and `simulation` only.
"""
