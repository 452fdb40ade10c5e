"""The training loop: :func:`fit`, :func:`evaluate`, settings and resumable checkpoints.

See the package docstring (:mod:`tinyevo.train`) for the API description.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from tinyevo.io import atomic_path
from tinyevo.train.optim import SGD, CosineSchedule
from tinyevo.runtime import UserError
from tinyevo.runtime import progress as _progress

LOG = logging.getLogger("tinyevo.train")

#: Defaults of every setting :func:`fit` understands (the genetic-NAS paper's final training).
DEFAULT_SETTINGS: dict[str, Any] = {
    "epochs": 20,
    "lr": 0.1,
    "momentum": 0.9,
    "weight_decay": 1e-6,
    "batch_size": 64,
    "schedule": "constant",
    "augment": False,
    "flip": False,
    "seed": 0,
}
#: Keys of the ``train`` config section that the loop accepts and ignores (used by the rule).
IGNORED_SETTINGS = frozenset({"threads"})
SCHEDULES = ("constant", "cosine")
HISTORY_COLUMNS = ["epoch", "train_loss", "train_acc", "test_loss", "test_acc", "lr", "seconds"]
# Version 1 throughout: the files of the pickled-numpy era (same number) cannot be mistaken for
# these, torch.load(weights_only=True) refuses their numpy RNG state.
CHECKPOINT_VERSION = 1
EVAL_BATCH = 256
# A training set at most this large (bytes, uint8) is uploaded to the GPU once.
_GPU_RESIDENT_BYTES = 2 << 30
_STD_EPS = 1e-6


def resolve_settings(settings: Mapping[str, Any] | None) -> dict[str, Any]:
    """Fill defaults and check every value; unknown keys are errors naming the key."""
    s = dict(DEFAULT_SETTINGS)
    for k, v in (settings or {}).items():
        if k in IGNORED_SETTINGS:
            continue
        if k not in DEFAULT_SETTINGS:
            raise ValueError(f"training setting {k!r} is unknown; known: {sorted(DEFAULT_SETTINGS)}")
        s[k] = v
    if s["seed"] is None:
        s["seed"] = 0
    checks = {
        "epochs": isinstance(s["epochs"], (int, np.integer)) and s["epochs"] >= 0,
        "batch_size": isinstance(s["batch_size"], (int, np.integer)) and s["batch_size"] >= 1,
        "lr": isinstance(s["lr"], (int, float)) and s["lr"] > 0,
        "momentum": isinstance(s["momentum"], (int, float)) and 0 <= s["momentum"] <= 1,
        "weight_decay": isinstance(s["weight_decay"], (int, float)) and s["weight_decay"] >= 0,
        "schedule": s["schedule"] in SCHEDULES,
        "seed": isinstance(s["seed"], (int, np.integer)) and s["seed"] >= 0,
    }
    for k, ok in checks.items():
        if not ok:
            raise ValueError(f"training setting {k!r} has an invalid value {s[k]!r}")
    s["augment"] = bool(s["augment"])
    s["flip"] = bool(s["flip"])
    for k in ("epochs", "batch_size", "seed"):
        s[k] = int(s[k])
    for k in ("lr", "momentum", "weight_decay"):
        s[k] = float(s[k])
    return s


# ----------------------------------------------------------------------------------------------
# data on the fly
# ----------------------------------------------------------------------------------------------
class _Batches:
    """Batches of a uint8 NHWC array (memmap or ndarray) normalised on the device."""

    def __init__(self, x, y, mean, std, device: torch.device, what: str):
        x_shape = getattr(x, "shape", None)
        if x_shape is None or len(x_shape) != 4:
            raise ValueError(f"{what} images must be a uint8 array N x H x W x C, got shape {x_shape}")
        if np.dtype(x.dtype) != np.uint8:
            raise ValueError(f"{what} images must be uint8, got {x.dtype}")
        y = np.asarray(y)
        if y.ndim != 1 or len(y) != x_shape[0]:
            raise ValueError(f"{what} labels must be a vector of {x_shape[0]} entries, got shape {y.shape}")
        mean = np.asarray(mean, dtype=np.float32).reshape(-1)
        std = np.asarray(std, dtype=np.float32).reshape(-1)
        if mean.shape != (x_shape[3],) or std.shape != (x_shape[3],):
            raise ValueError(f"stats have {mean.size} means / {std.size} stds but the {what} images have "
                             f"{x_shape[3]} channels")
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std)) and np.all(std >= 0)):
            raise ValueError(f"stats must be finite with std >= 0, got mean {mean.tolist()} std {std.tolist()}")
        std = np.maximum(std, _STD_EPS)  # a constant channel (same clamp as tinyevo.data.to_tensor)
        self.x, self.n, self.device = x, int(x_shape[0]), device
        self.y = torch.tensor(y, dtype=torch.int64)
        self.mean = torch.tensor(mean).view(1, -1, 1, 1).to(device)
        self.std = torch.tensor(std).view(1, -1, 1, 1).to(device)
        self.resident = None
        if device.type == "cuda" and self.n * int(np.prod(x_shape[1:])) <= _GPU_RESIDENT_BYTES:
            self.resident = torch.from_numpy(np.array(x, dtype=np.uint8)).to(device)
            self.y = self.y.to(device)

    def get(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        if self.resident is not None:
            t = torch.from_numpy(idx).to(self.device)
            xb, yb = self.resident.index_select(0, t), self.y.index_select(0, t)
        else:
            xb = torch.from_numpy(np.ascontiguousarray(self.x[idx]))
            yb = self.y[torch.from_numpy(idx)]
            if self.device.type != "cpu":
                xb = xb.pin_memory().to(self.device, non_blocking=True) if self.device.type == "cuda" else xb.to(self.device)
                yb = yb.to(self.device)
        return xb, yb

    def normalise(self, xb_uint8: torch.Tensor) -> torch.Tensor:
        """uint8 NHWC -> float32 NCHW (channels-last strides, see :func:`channels_last`),
        (x / 255 - mean) / std."""
        x = xb_uint8.permute(0, 3, 1, 2).float()
        return ((x / 255.0 - self.mean) / self.std).contiguous(memory_format=MEMORY_FORMAT)


# The layout of the training batches and weights (bench/train.py --layouts compares both).
MEMORY_FORMAT = torch.channels_last


def channels_last(model: nn.Module) -> nn.Module:
    """The model's 4-d weights in :data:`MEMORY_FORMAT` strides (channels-last, NHWC), the layout
    the input batches have. On this project's CPU nets it makes no consistent difference (per
    net 0.8x to 1.6x against NCHW, geometric mean 1.02x; ``python bench/train.py --layouts``);
    cuDNN with AMP prefers it. Values are unchanged up to the convolutions' rounding; :func:`fit`
    returns the model in the default layout."""
    return model.to(memory_format=MEMORY_FORMAT)


def augment_batch(xb: torch.Tensor, gen: torch.Generator, flip: bool) -> torch.Tensor:
    """Light augmentation on a uint8 NHWC batch: a random shift of up to 1/8 of the image side
    in each direction (zero = black padding), and a random horizontal flip when ``flip``.
    Random numbers come from ``gen`` (CPU generator) so an epoch's augmentation is reproducible."""
    n, h, w, _ = xb.shape
    pad_h, pad_w = max(1, h // 8), max(1, w // 8)
    dy = torch.randint(-pad_h, pad_h + 1, (n,), generator=gen)
    dx = torch.randint(-pad_w, pad_w + 1, (n,), generator=gen)
    do_flip = torch.rand(n, generator=gen) < 0.5 if flip else torch.zeros(n, dtype=torch.bool)
    padded = torch.nn.functional.pad(xb, (0, 0, pad_w, pad_w, pad_h, pad_h))
    out = torch.empty_like(xb)
    for i in range(n):
        y0, x0 = pad_h + int(dy[i]), pad_w + int(dx[i])
        img = padded[i, y0:y0 + h, x0:x0 + w]
        out[i] = img.flip(1) if do_flip[i] else img
    return out


def batch_bounds(n: int, batch_size: int) -> list[tuple[int, int]]:
    """(start, stop) of each training batch; a last batch of a single sample joins the one
    before it (batch norm cannot normalise one sample on a 1 x 1 feature map)."""
    bounds = [(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] == 1:
        bounds[-2:] = [(bounds[-2][0], n)]
    return bounds


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """Shuffling/augmentation generator of one epoch: a function of (seed, epoch) only, so a
    resumed run sees exactly the batches of an uninterrupted one."""
    digest = hashlib.sha256(f"tinyevo.train:{seed}:{epoch}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


def _check_labels(model: nn.Module, y, what: str) -> None:
    out = _num_outputs(model)
    y = np.asarray(y)
    if y.size and out is not None and (y.min() < 0 or y.max() >= out):
        raise ValueError(f"{what} labels span {int(y.min())}..{int(y.max())} but the model has {out} outputs")


def _num_outputs(model: nn.Module) -> int | None:
    clf = getattr(model, "classifier", None)
    return int(clf.out_features) if isinstance(clf, nn.Linear) else None


def _amp_enabled(amp: bool, device: torch.device) -> bool:
    return bool(amp) and device.type == "cuda"


# ----------------------------------------------------------------------------------------------
# evaluation
# ----------------------------------------------------------------------------------------------
@torch.no_grad()
def evaluate(model: nn.Module, x, y, stats, device, batch_size: int = EVAL_BATCH, amp: bool = False,
             progress: bool = False) -> tuple[float, float, np.ndarray]:
    """Per-sample mean cross-entropy, accuracy and predicted labels (int64, one per image) of
    ``model`` in eval mode on uint8 images ``x`` (N x H x W x C) with labels ``y``."""
    device = torch.device(device)
    _check_labels(model, y, "evaluation")
    data = _Batches(x, y, stats[0], stats[1], device, "evaluation")
    model.to(device)  # the batches carry MEMORY_FORMAT strides; the weights' own layout does not matter here
    was_training = model.training
    model.eval()
    use_amp = _amp_enabled(amp, device)
    loss_sum, correct, preds = 0.0, 0, []
    starts = range(0, data.n, batch_size)
    it = _progress(starts, desc="evaluate", unit="batch") if progress else starts
    for s in it:
        idx = np.arange(s, min(s + batch_size, data.n))
        xb, yb = data.get(idx)
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
            logits = model(data.normalise(xb))
        loss_sum += float(nn.functional.cross_entropy(logits.float(), yb, reduction="sum"))
        p = logits.argmax(1)
        correct += int((p == yb).sum())
        preds.append(p.cpu().numpy())
    model.train(was_training)
    if data.n == 0:
        return float("nan"), float("nan"), np.zeros(0, dtype=np.int64)
    return loss_sum / data.n, correct / data.n, np.concatenate(preds).astype(np.int64)


# ----------------------------------------------------------------------------------------------
# checkpoints
# ----------------------------------------------------------------------------------------------
def _fingerprint(model: nn.Module, settings: Mapping[str, Any], n_train: int, n_test: int) -> dict:
    spec = getattr(model, "spec", None)
    shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
    return {
        "netspec": spec.to_dict() if spec is not None and hasattr(spec, "to_dict") else None,
        "shapes": hashlib.sha256(json.dumps(shapes, sort_keys=True).encode()).hexdigest(),
        "settings": dict(settings),
        "n_train": int(n_train),
        "n_test": int(n_test),
    }


class CheckpointError(UserError, ValueError):
    """A training checkpoint that cannot be resumed (unreadable, refused as unsafe, another format)."""


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint written by :func:`fit` with ``torch.load(weights_only=True)`` (tensors and
    plain data only: a crafted file is refused, never executed); clear errors for a missing,
    unreadable or foreign file."""
    from tinyevo.space.torch_model import UnsafeFileError, load_tensors

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"training checkpoint not found: {p}")
    try:
        ck = load_tensors(p, "training checkpoint")
    except UnsafeFileError as exc:
        raise CheckpointError(f"training checkpoint {p} is not readable: {exc}; delete it to start the "
                              "training afresh") from None
    except ValueError as exc:
        raise CheckpointError(f"training checkpoint {p} is not readable ({exc}); delete it to start the "
                              "training afresh") from None
    if not isinstance(ck, dict) or ck.get("version") != CHECKPOINT_VERSION or "model" not in ck:
        raise CheckpointError(f"training checkpoint {p} is not a tinyevo v{CHECKPOINT_VERSION} checkpoint; "
                              "delete it to start the training afresh")
    return ck


def _describe_mismatch(old: dict, new: dict) -> str:
    if old.get("netspec") != new.get("netspec") or old.get("shapes") != new.get("shapes"):
        return "it was written for a different network (NetSpec mismatch)"
    if old.get("settings") != new.get("settings"):
        diff = {k: (old["settings"].get(k), v) for k, v in new["settings"].items() if old["settings"].get(k) != v}
        return f"its training settings differ (key: (checkpoint, now)): {diff}"
    return (f"its data sizes differ (train {old.get('n_train')} -> {new.get('n_train')}, "
            f"test {old.get('n_test')} -> {new.get('n_test')})")


def _rng_states(device: torch.device) -> dict:
    """Every generator's state as tensors and plain data (loadable with ``weights_only=True``):
    numpy's legacy MT19937 state as its key tensor + position + cached Gaussian."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    st = {"torch": torch.get_rng_state(),
          "numpy": {"kind": str(kind), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                    "has_gauss": int(has_gauss), "cached_gaussian": float(gauss)},
          "python": random.getstate()}
    if device.type == "cuda":
        st["cuda"] = torch.cuda.get_rng_state(device)
    return st


def _set_rng_states(st: Mapping[str, Any], device: torch.device) -> None:
    torch.set_rng_state(st["torch"])
    n = st["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    random.setstate(st["python"])
    if device.type == "cuda" and "cuda" in st:
        torch.cuda.set_rng_state(st["cuda"], device)


def _save_checkpoint(path, payload: dict) -> None:
    # through a file handle: the archive's records are then named "archive/..." instead of after
    # the random temporary file, so the same payload gives the same bytes in every run
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        torch.save(payload, fh)


# ----------------------------------------------------------------------------------------------
# the loop
# ----------------------------------------------------------------------------------------------
def _stop_epoch(stop_after, epochs: int) -> int:
    stop = epochs if stop_after is None else stop_after
    if not isinstance(stop, (int, np.integer)) or isinstance(stop, bool) or not 0 <= stop <= epochs:
        raise ValueError(f"stop_after must be an epoch count in 0..{epochs} (the settings' epochs), "
                         f"got {stop_after!r}")
    return int(stop)


def _resume(checkpoint_path, fp: dict, model, opt, sched, scaler, use_amp: bool, device, stop: int, epochs: int,
            on_mismatch: str, log) -> tuple[list[dict], int]:
    """(history rows, epochs done) from ``checkpoint_path`` when it exists and matches the run's
    fingerprint (model, optimiser, schedule, scaler and RNG states restored); ``([], 0)`` for a
    fresh start. A mismatch raises (``on_mismatch`` ``error``) or is logged and ignored."""
    if checkpoint_path is None or not Path(checkpoint_path).is_file():
        return [], 0
    try:
        ck = load_checkpoint(checkpoint_path)
    except CheckpointError as exc:
        if on_mismatch == "error":
            raise
        log.warning("ignoring %s; starting afresh", exc)
        return [], 0
    if ck.get("fingerprint") != fp:
        why = _describe_mismatch(ck.get("fingerprint") or {}, fp)
        if on_mismatch == "error":
            raise ValueError(f"training checkpoint {checkpoint_path} cannot be resumed: {why}; "
                             "delete it to start the training afresh")
        log.warning("ignoring training checkpoint %s: %s; starting afresh", checkpoint_path, why)
        return [], 0
    model.load_state_dict(ck["model"])
    opt.load_state_dict(ck["optimizer"])
    if sched is not None and ck.get("scheduler") is not None:
        sched.load_state_dict(ck["scheduler"])
    if ck.get("scaler") is not None and use_amp:
        scaler.load_state_dict(ck["scaler"])
    _set_rng_states(ck["rng"], device)
    start = int(ck["epoch"])
    if start > stop:
        raise ValueError(f"training checkpoint {checkpoint_path} is after epoch {start}, past "
                         f"stop_after = {stop}")
    log.info("resuming from %s after epoch %d of %d", checkpoint_path, start, epochs)
    return list(ck["history"]), start


def _train_epoch(model, data: "_Batches", s: Mapping[str, Any], epoch: int, bounds, opt, scaler, loss_fn,
                 use_amp: bool, device, progress: bool) -> tuple[float, float]:
    """One epoch over the training set in the epoch's seeded order: (mean loss, accuracy)."""
    gen = _epoch_generator(s["seed"], epoch)
    order = torch.randperm(data.n, generator=gen).numpy()
    model.train()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    steps = len(bounds)
    bar = _progress(total=steps, desc=f"epoch {epoch + 1}/{s['epochs']}", unit="batch", disable=not progress)
    for b in range(steps):
        idx = order[bounds[b][0]:bounds[b][1]]
        xb, yb = data.get(idx)
        if s["augment"]:
            xb = augment_batch(xb.cpu(), gen, s["flip"]).to(device)
        inp = data.normalise(xb)
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
            logits = model(inp)
            loss = loss_fn(logits.float(), yb)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        loss_sum += loss.detach().double() * len(idx)
        correct += (logits.detach().argmax(1) == yb).sum()
        bar.update(1)
        if b % 20 == 0:
            bar.set_postfix(loss=f"{float(loss.detach()):.4f}")
    bar.close()
    return float(loss_sum) / data.n, int(correct) / data.n


def fit(model: nn.Module, train: Sequence, test: Sequence | None, stats: Sequence, settings: Mapping[str, Any] | None,
        device="cpu", checkpoint_path: str | os.PathLike | None = None, progress: bool = True,
        amp: bool = False, on_mismatch: str = "error", logger: logging.Logger | None = None,
        stop_after: int | None = None) -> pd.DataFrame:
    """Train ``model`` in place; returns the per-epoch history (see the package docstring).

    ``stop_after`` (``None`` = ``epochs``): stop once this many epochs of the ``epochs``-epoch run
    are done. The learning-rate schedule still spans ``epochs``, so a later call with the same
    settings, the same checkpoint and a larger ``stop_after`` continues the very same run (the
    successive-halving rounds of :mod:`tinyevo.train.final_round`).

    Steps: check the settings and the data, set up the optimiser and schedule, resume from the
    checkpoint (:func:`_resume`), then per epoch train (:func:`_train_epoch`), step the schedule,
    evaluate, log and checkpoint."""
    log = logger or LOG
    s = resolve_settings(settings)
    if on_mismatch not in ("error", "restart"):
        raise ValueError(f"on_mismatch must be 'error' or 'restart', got {on_mismatch!r}")
    stop = _stop_epoch(stop_after, s["epochs"])
    device = torch.device(device)
    x_tr, y_tr = train
    _check_labels(model, y_tr, "training")
    data = _Batches(x_tr, y_tr, stats[0], stats[1], device, "training")
    if data.n == 0:
        raise ValueError("training set is empty")
    if test is not None:
        _check_labels(model, test[1], "test")
    n_test = 0 if test is None else len(test[1])
    use_amp = _amp_enabled(amp, device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    channels_last(model.to(device))
    # torch.optim's update and schedule without torch.optim, whose first use imports the compiler
    # (about 3 CPU s per job); bit-identical on CPU (tinyevo.train.optim)
    opt = SGD(model.parameters(), lr=s["lr"], momentum=s["momentum"], weight_decay=s["weight_decay"])
    sched = CosineSchedule(opt, T_max=max(1, s["epochs"])) if s["schedule"] == "cosine" else None
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    fp = _fingerprint(model, s, data.n, n_test)
    rows, start = _resume(checkpoint_path, fp, model, opt, sched, scaler, use_amp, device, stop, s["epochs"],
                          on_mismatch, log)

    loss_fn = nn.CrossEntropyLoss()  # per-sample mean
    bounds = batch_bounds(data.n, s["batch_size"])
    for epoch in range(start, stop):
        t0 = time.perf_counter()
        lr = opt.param_groups[0]["lr"]
        train_loss, train_acc = _train_epoch(model, data, s, epoch, bounds, opt, scaler, loss_fn, use_amp, device,
                                             progress)
        if sched is not None:
            sched.step()
        if not math.isfinite(train_loss):
            raise FloatingPointError(f"training loss is {train_loss} in epoch {epoch + 1}; the training diverged "
                                     f"(lower the learning rate, config key 'train.lr', now {s['lr']})")
        if test is not None:
            test_loss, test_acc, _ = evaluate(model, test[0], test[1], stats, device, amp=amp)
        else:
            test_loss = test_acc = float("nan")
        rows.append({"epoch": epoch + 1, "train_loss": train_loss, "train_acc": train_acc,
                     "test_loss": test_loss, "test_acc": test_acc, "lr": lr,
                     "seconds": time.perf_counter() - t0})
        log.info("epoch %d/%d: train loss %.4f acc %.4f | test loss %.4f acc %.4f | lr %.4g | %.1f s",
                 epoch + 1, s["epochs"], train_loss, train_acc, test_loss, test_acc, lr, rows[-1]["seconds"])
        if checkpoint_path is not None:
            _save_checkpoint(checkpoint_path, {
                "version": CHECKPOINT_VERSION, "fingerprint": fp, "epoch": epoch + 1,
                "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict() if sched is not None else None,
                "scaler": scaler.state_dict() if use_amp else None,
                "rng": _rng_states(device), "history": rows,
            })
    model.to(memory_format=torch.contiguous_format)
    return pd.DataFrame(rows, columns=HISTORY_COLUMNS).astype(
        {"epoch": "int64", "train_loss": "float64", "train_acc": "float64", "test_loss": "float64",
         "test_acc": "float64", "lr": "float64", "seconds": "float64"})
