"""No code runs from a data file: a crafted pickle in place of a model file, a training checkpoint or
the evolution checkpoint is refused (or ignored) with a clear message and never executed; the real
files hold tensors beside JSON data (models, training checkpoints) or plain JSON (evolution)."""

from __future__ import annotations

import copy
import json
import zipfile
import logging
import pickle
import random

import numpy as np
import pytest
import torch

from conftest import MICRO_SPACE
from tinyevo.search import checkpoint as ckpt
from tinyevo.space import SearchSpace
from tinyevo.space.torch_model import UnsafeFileError, build_torch, load_model, load_tensors, save_model
from tinyevo.train.loop import CheckpointError, fit, load_checkpoint

SPACE = SearchSpace.from_config(MICRO_SPACE)
SPEC = SPACE.netspec(SPACE.initial_population()[0][1])
STATS = (np.array([0.5], np.float32), np.array([0.25], np.float32))
SETTINGS = {"epochs": 2, "batch_size": 8, "lr": 0.05, "seed": 3}


class Payload:
    """Unpickling this object calls ``open(marker, "w")``: the marker file's existence proves that
    the file's code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def crafted(path, marker, how: str) -> None:
    """A malicious file at ``path``: a tinyevo-looking torch file with one extra object, or a raw pickle."""
    if how == "torch":
        model = build_torch(SPEC)
        torch.save({"format": 2, "netspec": SPEC.to_dict(), "meta": {"arch": "x"}, "state_dict": model.state_dict(),
                    "extra": Payload(marker)}, path)
    else:
        with open(path, "wb") as fh:
            pickle.dump({"netspec": SPEC.to_dict(), "state_dict": {}, "meta": Payload(marker)}, fh)


def toy_data(n=24):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, 8, 8, 1), dtype=np.uint8), rng.integers(0, 4, n).astype(np.int64)


def test_save_and_load_model_without_pickled_objects(tmp_path):
    model = build_torch(SPEC)
    save_model(tmp_path / "m.pt", model, {"arch": "x", "classes": np.arange(3), "acc": np.float32(0.5)})
    payload = torch.load(tmp_path / "m.pt", weights_only=True)  # loads under the safe unpickler
    assert payload["format"] == 2 and json.loads(json.dumps(payload["netspec"])) == SPEC.to_dict()
    m2, spec, meta = load_model(tmp_path / "m.pt")
    assert spec == SPEC and meta == {"arch": "x", "classes": [0, 1, 2], "acc": 0.5}
    for k, v in model.state_dict().items():
        assert torch.equal(v, m2.state_dict()[k]), k
    with pytest.raises(ValueError, match="model metadata must be JSON data"):
        save_model(tmp_path / "bad.pt", model, {"when": object()})
    assert not (tmp_path / "bad.pt").exists()
    # the same model gives the same bytes, whatever the (random) temporary file was called
    save_model(tmp_path / "other.pt", model, {"arch": "x", "classes": np.arange(3), "acc": np.float32(0.5)})
    assert (tmp_path / "other.pt").read_bytes() == (tmp_path / "m.pt").read_bytes()
    assert zipfile.ZipFile(tmp_path / "m.pt").namelist()[0] == "archive/data.pkl"


@pytest.mark.parametrize("how", ["torch", "raw"])
def test_crafted_model_file_is_refused_not_executed(tmp_path, how):
    marker = tmp_path / "ran"
    path = tmp_path / "model.pt"
    crafted(path, marker, how)
    with pytest.raises(UnsafeFileError) as exc:
        load_model(path)
    msg = str(exc.value)
    assert msg.startswith(f"{path}: refused to load this tinyevo model file") and "could run code" in msg, msg
    assert not marker.exists(), "the crafted file's code ran"
    # the unsafe loader would have run it: the test's payload is live
    torch.load(path, weights_only=False) if how == "torch" else pickle.load(open(path, "rb"))
    assert marker.exists()


def test_crafted_training_checkpoint_is_refused_or_replaced(tmp_path, caplog):
    marker = tmp_path / "ran"
    ck = tmp_path / "checkpoint.pt"
    crafted(ck, marker, "torch")
    with pytest.raises(CheckpointError, match=r"checkpoint\.pt is not readable: .*refused to load"):
        load_checkpoint(ck)
    x, y = toy_data()
    with pytest.raises(CheckpointError, match="refused to load"):
        fit(build_torch(SPEC), (x, y), None, STATS, SETTINGS, checkpoint_path=ck, progress=False)
    with caplog.at_level(logging.WARNING, logger="tinyevo.train"):
        hist = fit(build_torch(SPEC), (x, y), None, STATS, SETTINGS, checkpoint_path=ck, progress=False,
                   on_mismatch="restart")
    assert hist["epoch"].tolist() == [1, 2] and "starting afresh" in caplog.text
    assert not marker.exists()
    assert load_checkpoint(ck)["epoch"] == 2  # replaced by a real one, readable with weights_only


def test_resumed_training_equals_an_uninterrupted_one(tmp_path):
    """Weights, optimizer and every RNG state (numpy's too, stored as a tensor) survive the
    tensor-only checkpoint: stopped after epoch 1 and resumed = uninterrupted."""
    x, y = toy_data()
    s = {**SETTINGS, "augment": True}
    torch.manual_seed(0)
    full = build_torch(SPEC)
    init = copy.deepcopy(full.state_dict())
    h_full = fit(full, (x, y), None, STATS, s, progress=False)
    ck = tmp_path / "ck.pt"
    first = build_torch(SPEC)
    first.load_state_dict(init)
    fit(first, (x, y), None, STATS, s, checkpoint_path=ck, progress=False, stop_after=1)
    np.random.seed(99)  # disturbed global generators: the checkpoint restores them
    again = build_torch(SPEC)
    h = fit(again, (x, y), None, STATS, s, checkpoint_path=ck, progress=False)
    cols = ["epoch", "train_loss", "train_acc", "lr"]
    assert h[cols].equals(h_full[cols])
    for k, v in full.state_dict().items():
        assert torch.equal(v, again.state_dict()[k]), k


def test_rng_states_round_trip_through_a_weights_only_file(tmp_path):
    from tinyevo.train.loop import _rng_states, _set_rng_states

    np.random.seed(5)
    random.seed(6)
    torch.save(_rng_states(torch.device("cpu")), tmp_path / "rng.pt")
    a = (np.random.rand(), np.random.randn(), random.random(), torch.rand(1).item())
    _set_rng_states(torch.load(tmp_path / "rng.pt", weights_only=True), torch.device("cpu"))
    assert (np.random.rand(), np.random.randn(), random.random(), torch.rand(1).item()) == a


def test_evolution_checkpoint_is_json_and_round_trips_exactly(tmp_path):
    rng = np.random.default_rng(7)
    rng.random(5)
    rows = [{"id": 0, "arch": "r1", "score": float("-inf"), "avg": 0.1 + 0.2, "parent": None, "ok": True,
             "big": 2**70}, {"id": 1, "arch": "r2", "score": 1e-300, "avg": float("nan"), "parent": "r1", "ok": False,
                             "big": -3}]
    path = ckpt.save(tmp_path, "key", 4, rows, rng.bit_generator.state)
    assert path.name == "state.json"
    doc = json.loads(path.read_text())  # strict JSON: no NaN / Infinity tokens
    assert doc["rows"][0]["score"] == {"float": "-inf"} and doc["rng"]["state"]["state"] > 2**64
    state = ckpt.load(tmp_path, "key")
    assert state["cycle"] == 4 and state["rows"][0]["score"] == float("-inf") and state["rows"][0]["avg"] == 0.1 + 0.2
    assert np.isnan(state["rows"][1]["avg"]) and state["rows"][0]["big"] == 2**70 and state["rows"][1]["parent"] == "r1"
    again = np.random.default_rng(0)
    again.bit_generator.state = state["rng"]
    assert again.random() == rng.random()
    assert ckpt.load(tmp_path, "other key") is None


def test_crafted_evolution_checkpoint_is_ignored_not_executed(tmp_path, caplog):
    marker = tmp_path / "ran"
    with open(tmp_path / ckpt.FILE, "wb") as fh:
        pickle.dump({"format": ckpt.FORMAT, "key": "k", "cycle": 1, "rows": [], "rng": Payload(marker)}, fh)
    with open(tmp_path / "state.pkl", "wb") as fh:  # the old pickle name is never read either
        pickle.dump(Payload(marker), fh)
    with caplog.at_level(logging.WARNING, logger="tinyevo.search"):
        assert ckpt.load(tmp_path, "k") is None
    assert "ignoring unreadable checkpoint" in caplog.text
    assert not marker.exists()


def test_load_tensors_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="training checkpoint not found"):
        load_tensors(tmp_path / "none.pt", "training checkpoint")
    # no valid pickle either: refused, not guessed at (fixed bytes: random ones could hit another
    # error inside torch's legacy loader and make the test flaky)
    (tmp_path / "junk.pt").write_bytes(b"not a torch file, not a pickle\n" * 4)
    with pytest.raises(UnsafeFileError, match=r"junk\.pt: refused to load this tinyevo model file"):
        load_model(tmp_path / "junk.pt")
    save_model(tmp_path / "m.pt", build_torch(SPEC))
    data = (tmp_path / "m.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])  # a truncated torch archive
    with pytest.raises(ValueError, match=r"cut\.pt: not a readable tinyevo model file") as exc:
        load_model(tmp_path / "cut.pt")
    assert not isinstance(exc.value, UnsafeFileError)
