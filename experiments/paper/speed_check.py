"""Measurements behind the study's speed-ups, re-runnable.

``python -m experiments.paper.speed_check compare BEFORE/cells AFTER/cells``: two cell
stores of the same scale cell by cell (matched by step, γ and seed): the largest
difference of any number in their results (timings left out) and the CPU seconds per
kind of cell before and after.

``python -m experiments.paper.speed_check parts``: CPU seconds (process time, one
thread) of the parts that changed, at the paper's sizes: SSIM of 10,000 MNIST images
(scikit-image loop against `common.ssim_batched`), one 10,000-image swapped set
uncached and within a row, and the encoding of the MNIST classification split that a
warm decoder cell no longer repeats. Needs ``HIL_DATA_DIR``.

``python -m experiments.paper.speed_check dk``: the D×K softmax's L-BFGS fit on 20,000
MNIST training images (5,000 held out, 100 iterations, one thread) with autograd's
gradient (the baseline, written here as it was) against `common.softmax_loss_grad`:
CPU seconds and held-out accuracy of each, in the same process. Needs ``HIL_DATA_DIR``.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections import defaultdict
from pathlib import Path

_TIMING_KEYS = ("seconds", "per_image", "fps", "speedup", "s_per", "threads")


def _load(store: str) -> dict[str, dict]:
    return {re.sub(r"-[0-9a-f]+$", "", f.stem): json.loads(f.read_text())
            for f in Path(store).glob("*.json")}


def _flat(x, pre: str = ""):
    if isinstance(x, dict):
        for k, v in x.items():
            yield from _flat(v, f"{pre}.{k}")
    elif isinstance(x, list) and len(x) < 50:
        for i, v in enumerate(x):
            yield from _flat(v, f"{pre}[{i}]")
    elif isinstance(x, (int, float)) and not isinstance(x, bool):
        yield pre, float(x)


def compare(before: str, after: str) -> list[str]:
    """One line per kind of cell: count, CPU seconds before/after, largest difference."""
    a, b = _load(before), _load(after)
    cpu = defaultdict(lambda: [0.0, 0.0, 0])
    worst: dict[str, tuple[float, str]] = defaultdict(lambda: (0.0, ""))
    for k in sorted(set(a) & set(b)):
        kind = k.split("-")[0]
        c = cpu[kind]
        c[0] += a[k]["cpu_seconds"]
        c[1] += b[k]["cpu_seconds"]
        c[2] += 1
        fa, fb = dict(_flat(a[k]["result"])), dict(_flat(b[k]["result"]))
        for key in set(fa) & set(fb):
            if any(s in key for s in _TIMING_KEYS):
                continue
            d = abs(fa[key] - fb[key])
            if d > worst[kind][0]:
                worst[kind] = (d, f"{k}{key}: {fa[key]!r} vs {fb[key]!r}")
    return [f"{kind:12s} {n:3d} cells  CPU before {ca:8.1f} s  after {cb:8.1f} s  "
            f"max |diff| {worst[kind][0]:.3g}  {worst[kind][1][:140]}"
            for kind, (ca, cb, n) in sorted(cpu.items())]


def parts() -> list[str]:
    import os

    import torch

    from simulation import DualVortexEncoder, encode_batched, ssim, swapped_spectra

    from .common import classification_split, encoded_test_set, ssim_batched, training_speckle
    from .swapped import swapped_set

    torch.set_num_threads(1)
    dd = os.environ["HIL_DATA_DIR"]
    clock = time.process_time
    enc = DualVortexEncoder()
    out = []
    im, _ = encoded_test_set("mnist", 10 ** 6, 0, dd, enc)
    rec = im + 0.1 * torch.randn_like(im)
    t = clock()
    ssim(im, rec)
    a = clock() - t
    t = clock()
    ssim_batched(im, rec)
    out.append(f"SSIM 10k MNIST: scikit-image loop {a:.2f} CPU-s, batched {clock() - t:.2f}")
    t = clock()
    swapped_spectra(training_speckle(15.0, 10_000, 0), training_speckle(0.1, 10_000, 0))
    a = clock() - t
    swapped_set(15.0, 0.1, 10_000, 0)
    t = clock()
    swapped_set(15.0, 0.5, 10_000, 0)
    out.append(f"swapped set 10k: uncached {a:.2f} CPU-s, within a row {clock() - t:.2f}")
    sp = classification_split("mnist", 10 ** 6, 10 ** 6, 0, dd)
    t = clock()
    encode_batched(enc, sp["train_x"])
    encode_batched(enc, sp["test_x"])
    out.append(f"encode the MNIST 60k + 10k split: {clock() - t:.2f} CPU-s")
    return out


def dk() -> list[str]:
    import os

    import torch

    from .common import classification_split, softmax_dk

    def autograd_dk(train_x, train_y, test_x, test_y, *, n_classes, iterations, seed):
        Xtr, Xte = train_x.reshape(len(train_x), -1).float(), test_x.reshape(len(test_x), -1)
        ytr, yte = torch.as_tensor(train_y).long(), torch.as_tensor(test_y).long()
        g = torch.Generator().manual_seed(seed)
        W = (torch.randn(Xtr.shape[1], n_classes, generator=g) * 0.05).requires_grad_()
        opt = torch.optim.LBFGS([W], lr=1.0, max_iter=iterations, history_size=20,
                                tolerance_grad=1e-9, tolerance_change=1e-12,
                                line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(Xtr @ W, ytr)
            loss.backward()
            return loss

        opt.step(closure)
        with torch.no_grad():
            return {"test_accuracy": float(((Xte.float() @ W).argmax(1) == yte).float().mean())}

    torch.set_num_threads(1)
    s = classification_split("mnist", 20_000, 5_000, 0, os.environ["HIL_DATA_DIR"])
    args = (s["train_x"], s["train_y"], s["test_x"], s["test_y"])
    out = []
    for name, fit in (("autograd", autograd_dk), ("closed form", softmax_dk)):
        t = time.process_time()
        r = fit(*args, n_classes=10, iterations=100, seed=0)
        out.append(f"{name:12s} {time.process_time() - t:6.2f} CPU-s, held-out accuracy "
                   f"{r['test_accuracy']:.4f}")
    return out


if __name__ == "__main__":
    if sys.argv[1:2] == ["compare"] and len(sys.argv) == 4:
        print("\n".join(compare(sys.argv[2], sys.argv[3])))
    elif sys.argv[1:] == ["parts"]:
        print("\n".join(parts()))
    elif sys.argv[1:] == ["dk"]:
        print("\n".join(dk()))
    else:
        sys.exit("usage: python -m experiments.paper.speed_check compare BEFORE AFTER | parts | dk")
