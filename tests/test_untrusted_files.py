"""No code from data files (issue 8, part 4).

A crafted file of each kind a user hands us (classifier, decoder, CIFAR python batch) is
planted with a payload that would write a marker file; loading it must raise and the marker
must not appear. Each payload is first shown to be live: plain ``pickle.load`` (what the CIFAR
reader used) or ``torch.load(weights_only=False)`` (what ``hil run --classifier`` used) runs
it. Decoder and classifier files carry a SHA-256 of their weights: a flipped bit is refused.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from session_helpers import quick_decoder

from simulation import LinearDecoder, LinearSoftmaxClassifier
from simulation.datasets import load_dataset, read_cifar_python
from simulation.weightfile import FORMAT, VERSION, weights_sha256


# ------------------------------------------------------------------------------- payloads
class _System:
    """Unpickling this runs ``os.system("touch MARKER")``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


class _Exec:
    """Unpickling this runs ``exec(...)``, which writes MARKER."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('ran')",))


PAYLOADS = [_System, _Exec]


def _show_live(path: Path, marker: Path, *, torch_file: bool) -> None:
    """The control: the planted file does run code when read the old way."""
    assert not marker.exists()
    try:  # the payload runs while unpickling, whatever the reader does after it
        if torch_file:
            torch.load(path, map_location="cpu", weights_only=False)
        else:
            with open(path, "rb") as f:
                pickle.load(f, encoding="bytes")
    except Exception:  # noqa: BLE001, S110 - only whether the payload ran matters here
        pass
    assert marker.exists(), "the payload is not live: this test could not fail"
    marker.unlink()


# ------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def decoder():
    return quick_decoder()


@pytest.fixture(scope="module")
def classifier():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(120, 8, 8, generator=g)
    y = (x.mean(dim=(1, 2)) > 0.5).long()
    return LinearSoftmaxClassifier(epochs=3, n_classes=2, device="cpu").fit(x, y), x, y


def _flip_in_weights(path: Path, weight: torch.Tensor) -> None:
    """Flip one bit inside the stored weights (not in the zip header or the pickle)."""
    raw = bytearray(path.read_bytes())
    data = weight.detach().cpu().contiguous().numpy().tobytes()
    at = raw.find(data[:256])
    assert at > 0
    raw[at + len(data) // 2] ^= 0x10
    path.write_bytes(bytes(raw))


def _envelope(kind: str, tensors: dict, meta: dict, *, sha: str | None = None) -> dict:
    """A weight file's content written by hand (checksums right unless `sha` is given)."""
    meta = dict(meta, weights_sha256=sha or weights_sha256(tensors))
    text = json.dumps(meta)
    return {"format": FORMAT, "version": VERSION, "kind": kind, "tensors": tensors,
            "metadata": text, "metadata_sha256": hashlib.sha256(text.encode()).hexdigest()}


# ---------------------------------------------------------------------------- classifier
def test_classifier_round_trip(tmp_path, classifier):
    clf, x, y = classifier
    path = clf.save(tmp_path / "clf.pt")
    back = LinearSoftmaxClassifier.load(path)
    assert torch.equal(back.predict(x), clf.predict(x))
    assert back.score(x, y) == clf.score(x, y)
    assert (back.n_classes_, back.n_features_in_, back.input_shape_) == (2, 64, (8, 8))
    assert back.history_ == clf.history_
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize("payload", PAYLOADS)
@pytest.mark.parametrize("how", ["torch.save", "pickle", "in-envelope"])
def test_malicious_classifier_runs_nothing(tmp_path, payload, how):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pt"
    evil = payload(marker)
    if how == "torch.save":  # what `hil run --classifier` used to torch.load
        torch.save(evil, path)
    elif how == "pickle":  # a legacy (non-zip) torch file
        path.write_bytes(pickle.dumps(evil, protocol=2))
    else:  # the right envelope, with an object where a tensor belongs
        blob = _envelope("LinearSoftmaxClassifier", {"w1": torch.zeros(1)}, {})
        blob["tensors"]["w2"] = evil
        torch.save(blob, path)
    _show_live(path, marker, torch_file=True)
    with pytest.raises(ValueError, match="evil.pt") as exc:
        LinearSoftmaxClassifier.load(path)
    assert "refused" in str(exc.value) or "not a readable" in str(exc.value)
    assert "\n" not in str(exc.value)
    assert not marker.exists()


def test_hil_classifier_loader_refuses_before_capture(tmp_path, classifier):
    """`hil run --classifier`: one line naming --classifier, from run_session's start."""
    from hil.session import RunConfig, load_classifier, run_session

    marker = tmp_path / "ran"
    evil = tmp_path / "evil.pt"
    torch.save(_System(marker), evil)
    with pytest.raises(ValueError, match=r"^--classifier: .*evil\.pt: refused"):
        load_classifier(evil)
    with pytest.raises(FileNotFoundError, match="^--classifier: .*missing.pt"):
        load_classifier(tmp_path / "missing.pt")
    clf = classifier[0]
    good = clf.save(tmp_path / "clf.pt")
    with pytest.raises(ValueError, match=r"^--classifier: .*64 features.*\(32, 32\)"):
        load_classifier(good, (32, 32))
    assert load_classifier(good, (8, 8)).n_classes_ == 2

    dec_path = tmp_path / "dec.pt"
    quick_decoder(dec_path)
    out = tmp_path / "run"
    cfg = RunConfig(bench={"name": "never-opened"}, decoder=dec_path, out=out, n=2,
                    dataset="digits", classifier=evil, progress=False)
    with pytest.raises(ValueError, match="^--classifier: "):
        run_session(cfg)
    assert not marker.exists()
    assert not (out / "run.json").exists() and not (out / "captures.h5").exists()


def test_classifier_bit_flip_and_bad_files_refused(tmp_path, classifier):
    clf = classifier[0]
    path = clf.save(tmp_path / "clf.pt")
    _flip_in_weights(path, clf.w1_)
    with pytest.raises(ValueError, match="clf.pt: file corrupted"):
        LinearSoftmaxClassifier.load(path)

    d = clf.n_features_in_
    meta = {"format_version": 1, "n_classes": 2, "n_features": d, "input_shape": [8, 8],
            "normalisation": {"kind": "none", "train_feature_range": [0.0, 1.0]},
            "hyperparameters": {"epochs": 1, "batch_size": 32, "lr": 1e-3, "seed": 0}}
    bad = tmp_path / "shape.pt"
    torch.save(_envelope("LinearSoftmaxClassifier",
                         {"w1": torch.zeros(d, d), "w2": torch.zeros(d, 3)}, meta), bad)
    with pytest.raises(ValueError, match="shape.pt: inconsistent classifier file"):
        LinearSoftmaxClassifier.load(bad)
    nan = tmp_path / "nan.pt"
    w1 = torch.zeros(d, d)
    w1[0, 0] = float("nan")
    torch.save(_envelope("LinearSoftmaxClassifier", {"w1": w1, "w2": torch.zeros(d, 2)},
                         meta), nan)
    with pytest.raises(ValueError, match="nan.pt: .*NaN or infinite"):
        LinearSoftmaxClassifier.load(nan)
    # a decoder file handed over as a classifier
    dec = LinearDecoder(alpha=1.0, device="cpu")
    dec.weight_ = torch.zeros(4, 2)
    dec.method_, dec.alpha_, dec.train_mse_ = "ridge", 1.0, 0.0
    dec.image_shape_, dec.pattern_shape_, dec.encoder_signature_ = (1, 2), (1, 2, 2), None
    other = dec.save(tmp_path / "dec.pt")
    with pytest.raises(ValueError, match="dec.pt: a 'LinearDecoder' file, expected a "
                                         "LinearSoftmaxClassifier"):
        LinearSoftmaxClassifier.load(other)


# ------------------------------------------------------------------------------- decoder
def test_decoder_round_trip_records_checksum(tmp_path, decoder):
    path = decoder.save(tmp_path / "d.pt")
    back = LinearDecoder.load(path)
    assert torch.equal(back.weight_, decoder.weight_)
    assert back.metadata()["weights_sha256"] == weights_sha256({"weight": decoder.weight_})
    assert back.history_ == decoder.history_


@pytest.mark.parametrize("payload", PAYLOADS)
def test_malicious_decoder_runs_nothing(tmp_path, payload):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pt"
    torch.save({"weight": payload(marker), "metadata": "{}"}, path)
    _show_live(path, marker, torch_file=True)
    with pytest.raises(ValueError, match="evil.pt: refused"):
        LinearDecoder.load(path)
    assert not marker.exists()


def test_bit_flipped_decoder_refused(tmp_path, decoder):
    """The finding: a flipped bit in decoder.pt gave MSE 3e9 at exit 0."""
    path = decoder.save(tmp_path / "d.pt")
    _flip_in_weights(path, decoder.weight_)
    # the zip container does not notice: torch reads the changed weights
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert not torch.equal(raw["tensors"]["weight"], decoder.weight_)
    with pytest.raises(ValueError, match=r"d\.pt: file corrupted.*hil train"):
        LinearDecoder.load(path)


def test_decoder_inconsistent_nonfinite_and_old_files_refused(tmp_path, decoder):
    meta = decoder.metadata()
    w = decoder.weight_.cpu()
    wrong = tmp_path / "shape.pt"
    torch.save(_envelope("LinearDecoder", {"weight": w}, dict(meta, pattern_shape=[2, 16, 32])),
               wrong)
    with pytest.raises(ValueError, match=r"shape.pt: inconsistent decoder file.*\(1024, 1024\)"):
        LinearDecoder.load(wrong)
    garbled = tmp_path / "meta.pt"
    torch.save(_envelope("LinearDecoder", {"weight": w}, dict(meta, image_shape="32x32")),
               garbled)
    with pytest.raises(ValueError, match="meta.pt: inconsistent decoder metadata"):
        LinearDecoder.load(garbled)
    nan = tmp_path / "nan.pt"
    w_nan = w.clone()
    w_nan[3, 4] = float("inf")
    torch.save(_envelope("LinearDecoder", {"weight": w_nan}, meta), nan)
    with pytest.raises(ValueError, match="nan.pt: .*NaN or infinite"):
        LinearDecoder.load(nan)
    tampered = tmp_path / "meta_flip.pt"
    blob = _envelope("LinearDecoder", {"weight": w}, meta)
    blob["metadata"] = blob["metadata"].replace('"charges": [1, 3]', '"charges": [1, 2]')
    assert '"charges": [1, 2]' in blob["metadata"]
    torch.save(blob, tampered)
    with pytest.raises(ValueError, match="meta_flip.pt: file corrupted: its metadata"):
        LinearDecoder.load(tampered)
    old = tmp_path / "old.pt"  # the format before checksums
    torch.save({"weight": w, "metadata": json.dumps(dict(meta, format_version=1)),
                "history": "{}"}, old)
    with pytest.raises(ValueError, match="old.pt: .*older format.*hil train"):
        LinearDecoder.load(old)
    with pytest.raises(FileNotFoundError, match="a directory"):
        LinearDecoder.load(tmp_path)


def test_saved_files_follow_the_umask(tmp_path, decoder, classifier):
    """Outputs were created 0600 (tempfile.mkstemp): a colleague could not read them."""
    old = os.umask(0o022)
    try:
        d = decoder.save(tmp_path / "d.pt")
        c = classifier[0].save(tmp_path / "c.pt")
    finally:
        os.umask(old)
    assert d.stat().st_mode & 0o777 == 0o644
    assert c.stat().st_mode & 0o777 == 0o644


# --------------------------------------------------------------------------------- CIFAR
class _Py2Pickler(pickle._Pickler):
    """Writes bytes and str as Python 2 ``str`` (BINSTRING), as the official batches are."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_bytes(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    def save_str(self, obj: str) -> None:
        self.save_bytes(obj.encode("latin-1"))

    dispatch[bytes] = save_bytes
    dispatch[str] = save_str


def _py2_pickle(obj) -> bytes:
    """`obj` pickled as Python 2 with numpy 1.x wrote the CIFAR batches (protocol 2)."""
    f = io.BytesIO()
    _Py2Pickler(f, protocol=2).dump(obj)
    return f.getvalue().replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")


def _cifar10_batch(n: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {b"batch_label": b"testing batch 1 of 1",
            b"labels": rng.integers(0, 10, n).tolist(),
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"filenames": [f"img_{i:05d}.png".encode() for i in range(n)]}


@pytest.mark.parametrize("writer", ["python2", 0, 2, 3, 4, 5])
def test_cifar10_batches_read(tmp_path, writer):
    """The restricted unpickler reads what the official (Python 2) and Python 3 writers make."""
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    batch = _cifar10_batch(6, 1)
    data = (_py2_pickle(batch) if writer == "python2"
            else pickle.dumps(batch, protocol=writer))
    (folder / "test_batch").write_bytes(data)
    read = read_cifar_python(folder / "test_batch")
    assert read[b"filenames"] == batch[b"filenames"] and read[b"labels"] == batch[b"labels"]
    images, labels = load_dataset("cifar10", "test", data_dir=tmp_path)
    assert images.shape == (6, 3, 32, 32) and labels.tolist() == batch[b"labels"]
    want = batch[b"data"].reshape(6, 3, 32, 32).astype(np.float32) / 255
    assert np.array_equal(images.numpy(), want)


@pytest.mark.parametrize("payload", PAYLOADS)
@pytest.mark.parametrize("where", ["whole", "label", "dtype"])
def test_malicious_cifar_batch_runs_nothing(tmp_path, monkeypatch, payload, where):
    marker = tmp_path / "ran"
    folder = tmp_path / "data" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    batch = _cifar10_batch(2, 0)
    if where == "whole":
        obj = payload(marker)
    elif where == "label":
        batch[b"labels"][1] = payload(marker)
        obj = batch
    else:  # a numpy array of Python objects holding the payload
        batch[b"extra"] = np.array([payload(marker)], dtype=object)
        obj = batch
    path = folder / "test_batch"
    path.write_bytes(pickle.dumps(obj, protocol=2))
    _show_live(path, marker, torch_file=False)
    monkeypatch.setenv("HIL_DATA_DIR", str(tmp_path / "data"))
    with pytest.raises(ValueError, match="test_batch: refused") as exc:
        load_dataset("cifar10", "test")
    assert "nothing in the file was run" in str(exc.value) or "objects" in str(exc.value)
    assert not marker.exists()


def test_cifar_codec_and_bytes_tricks_refused(tmp_path):
    """The two builtins admitted for Python 3 protocol-2 bytes take only their plain use."""
    path = tmp_path / "test_batch"
    # _codecs.encode('x', 'rot13') and bytes(10**12) by hand-written opcodes
    rot = (b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00xX\x05\x00\x00\x00rot13\x86R.")
    path.write_bytes(rot)
    with pytest.raises(ValueError, match="test_batch: refused: _codecs.encode with 'rot13'"):
        read_cifar_python(path)
    big = b"\x80\x02c__builtin__\nbytes\nJ\x00\x00\x00\x40\x85R."
    path.write_bytes(big)
    with pytest.raises(ValueError, match="test_batch: refused: bytes"):
        read_cifar_python(path)


def test_synthetic_cifar100_python_end_to_end(tmp_path):
    """CIFAR-100 python format (train, test, meta; fine and coarse labels), no real data."""
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    rng = np.random.default_rng(5)
    splits = {}
    for split, n in (("train", 12), ("test", 7)):
        fine = rng.integers(0, 100, n)
        splits[split] = {b"filenames": [f"{split}_{i}.png".encode() for i in range(n)],
                         b"batch_label": f"{split} batch 1 of 1".encode(),
                         b"fine_labels": fine.tolist(),
                         b"coarse_labels": (fine // 5).tolist(),
                         b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8)}
        (folder / split).write_bytes(_py2_pickle(splits[split]))
    names = {b"fine_label_names": [f"class{i}".encode() for i in range(100)],
             b"coarse_label_names": [f"super{i}".encode() for i in range(20)]}
    (folder / "meta").write_bytes(_py2_pickle(names))

    assert read_cifar_python(folder / "meta") == names
    for split in ("train", "test"):
        images, labels = load_dataset("cifar100", split, data_dir=tmp_path)
        n = len(splits[split][b"fine_labels"])
        assert images.shape == (n, 3, 32, 32) and images.dtype == torch.float32
        assert labels.tolist() == splits[split][b"fine_labels"]
        grey, _ = load_dataset("cifar100", split, data_dir=tmp_path, colour="grey")
        assert grey.shape == (n, 32, 32)
