"""The training stage: train one selected net (or a class-subset branch of it) and write
``model.pt``, ``history.parquet``, ``metrics.parquet`` and ``confusion.parquet``."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from tinyevo.io import read_parquet, write_parquet
from tinyevo.runtime import seed_everything
from tinyevo.space import NetSpec, SearchSpace, cost_of
from tinyevo.train.classes import ClassSubset, base_net
from tinyevo.train.loop import evaluate, fit, resolve_settings

LOG = logging.getLogger("tinyevo.train")


@dataclasses.dataclass
class TrainResult:
    model: Any
    history: pd.DataFrame
    metrics: pd.DataFrame
    confusion: pd.DataFrame
    meta: dict


def confusion_table(y_true: np.ndarray, y_pred: np.ndarray, subset: ClassSubset) -> pd.DataFrame:
    """Confusion matrix in long format: one row per (true class, predicted class) with the
    count, every pair listed (zeros included); class ids are the dataset's original ids."""
    out_cls = np.asarray(subset.output_classes, dtype=np.int64)
    inv = {o: c for c, o in subset.label_map.items()}
    true_orig = np.asarray([inv[int(t)] for t in y_true], dtype=np.int64)
    pred_orig = out_cls[np.asarray(y_pred, dtype=np.int64)]
    grid = pd.MultiIndex.from_product([list(subset.classes), out_cls.tolist()], names=["true_class", "pred_class"])
    counts = pd.Series(1, index=pd.MultiIndex.from_arrays([true_orig, pred_orig],
                                                          names=["true_class", "pred_class"]))
    counts = counts.groupby(level=[0, 1]).sum().reindex(grid, fill_value=0)
    df = counts.rename("count").reset_index()
    return df.astype({"true_class": "int64", "pred_class": "int64", "count": "int64"})


def train_net(spec: NetSpec, train, test, stats, subset: ClassSubset, settings: Mapping[str, Any],
              device="cpu", amp: bool = False, checkpoint_path=None, progress: bool = True,
              on_mismatch: str = "restart", meta: Mapping[str, Any] | None = None,
              logger: logging.Logger | None = None) -> TrainResult:
    """Build ``spec`` (its classifier resized to the subset), train it on the subset's samples of
    ``train`` and evaluate it on those of ``test``. Weights are initialised from the settings' seed."""
    from tinyevo.space.torch_model import build_torch

    log = logger or LOG
    s = resolve_settings(settings)
    x_tr, y_tr = subset.select(*train)
    x_te, y_te = subset.select(*test)
    if len(y_tr) == 0:
        raise ValueError(f"no training samples of classes {list(subset.classes)}")
    if len(y_te) == 0:
        raise ValueError(f"no test samples of classes {list(subset.classes)}")
    spec = dataclasses.replace(spec, num_classes=subset.num_outputs)
    seed_everything(s["seed"])
    model = build_torch(spec)
    t0 = time.perf_counter()
    history = fit(model, (x_tr, y_tr), (x_te, y_te), stats, s, device=device, checkpoint_path=checkpoint_path,
                  progress=progress, amp=amp, on_mismatch=on_mismatch, logger=log)
    seconds = time.perf_counter() - t0
    test_loss, test_acc, pred = evaluate(model, x_te, y_te, stats, device, amp=amp)
    model.cpu()
    cost = cost_of(spec)
    best = int(history["test_acc"].to_numpy().argmax()) if len(history) else 0
    metrics = pd.DataFrame([{
        "epochs": int(s["epochs"]),
        "final_train_loss": float(history["train_loss"].iloc[-1]) if len(history) else float("nan"),
        "final_train_acc": float(history["train_acc"].iloc[-1]) if len(history) else float("nan"),
        "final_test_loss": float(test_loss),
        "final_test_acc": float(test_acc),
        "best_test_acc": float(history["test_acc"].iloc[best]) if len(history) else float(test_acc),
        "best_epoch": int(history["epoch"].iloc[best]) if len(history) else 0,
        "n_train": int(len(y_tr)),
        "n_test": int(len(y_te)),
        "classes": ",".join(str(c) for c in subset.classes),
        "num_outputs": int(subset.num_outputs),
        "params": int(cost.params),
        "macs": int(cost.macs),
        "train_seconds": float(seconds),
    }])
    full_meta = {**dict(meta or {}), **subset.meta(), "settings": s,
                 "final_test_acc": float(test_acc)}
    return TrainResult(model, history, metrics, confusion_table(y_te, pred, subset), full_meta)


def selected_arch(selected_path, net: str) -> str:
    """The architecture string of evolution's ``phase == 'after'`` row for the base net of ``net``."""
    df = read_parquet(selected_path, "evolution selection table")
    missing = {"net", "phase", "arch"} - set(df.columns)
    if missing:
        raise ValueError(f"{selected_path}: missing columns {sorted(missing)}")
    base = base_net(net)
    rows = df[(df["net"] == base) & (df["phase"] == "after")]
    if len(rows) != 1:
        raise ValueError(f"{selected_path}: expected one row with net == {base!r} and phase == 'after', "
                         f"found {len(rows)}")
    return str(rows["arch"].iloc[0])


def chosen_arch(choice_path, net: str) -> str:
    """The architecture string of the base net of ``net`` in the choice table of the final round
    (``results/evolution/choice.parquet``: one row per net C/NC, see
    :mod:`tinyevo.train.final_round`). A table with a ``phase`` column is the evolution's
    selection table and gives its pure zero-cost pick (:func:`selected_arch`)."""
    df = read_parquet(choice_path, "net choice table")
    if "phase" in df.columns:
        return selected_arch(choice_path, net)
    missing = {"net", "arch"} - set(df.columns)
    if missing:
        raise ValueError(f"{choice_path}: missing columns {sorted(missing)}")
    base = base_net(net)
    rows = df[df["net"] == base]
    if len(rows) != 1 or pd.isna(rows["arch"].iloc[0]):
        raise ValueError(f"{choice_path}: expected one row with net == {base!r} and an arch, found {len(rows)}")
    return str(rows["arch"].iloc[0])


def load_data(data_dir):
    """(train, test, stats) of the data stage's arrays (uint8 memmaps)."""
    from tinyevo.data import load_split, load_stats

    return load_split(data_dir, "train"), load_split(data_dir, "test"), load_stats(data_dir)


def run_training(choice: str, data_dir: str, net: str, search_space: Mapping[str, Any],
                 settings: Mapping[str, Any], subset: Mapping[str, Any] | ClassSubset, device: str, amp: bool,
                 out_model: str, out_history: str, out_metrics: str, out_confusion: str,
                 checkpoint: str | None = None, progress: bool = True, same_as: Mapping[str, str] | None = None,
                 logger: logging.Logger | None = None) -> TrainResult:
    """The rule ``train``: everything from the files to the files. ``choice`` is the final
    round's choice table (:func:`chosen_arch`). ``subset`` is
    ``class_subset(net, ...)`` or its ``meta()`` dict (how the rule passes it as a param). The
    checkpoint (per epoch) lives next to the outputs and is removed once they are written.

    ``same_as`` (keys ``net``, ``model``, ``history``, ``metrics``, ``confusion``: another net's
    outputs of this rule, trained with the same settings and data): when the choice gives ``net``
    the same architecture as that net and both train on every class, the training would repeat
    that one step for step, so its outputs are copied with ``net`` renamed instead (NC without a
    final round of its own is C's winner, :func:`tinyevo.train.final_round.choose`)."""
    from tinyevo.runtime import pick_device
    from tinyevo.space.torch_model import load_model, save_model

    log = logger or LOG
    space = SearchSpace.from_config(search_space)
    arch = chosen_arch(choice, net)
    if not isinstance(subset, ClassSubset):
        subset = ClassSubset(tuple(int(c) for c in subset["classes"]), int(subset["num_outputs"]),
                             bool(subset["remap"]))
    full = subset.classes == tuple(range(space.num_classes)) and not subset.remap
    if same_as and full and chosen_arch(choice, same_as["net"]) == arch:
        log.info("net %s is %s's architecture %s with the same settings: %s's training outputs are reused "
                 "(a training of its own would repeat it step for step)", net, same_as["net"], arch, same_as["net"])
        model, _, meta = load_model(same_as["model"])
        res = TrainResult(model=model, history=read_parquet(same_as["history"], "training history"),
                          metrics=read_parquet(same_as["metrics"], "training metrics").assign(net=net),
                          confusion=read_parquet(same_as["confusion"], "confusion table"),
                          meta={**meta, "net": net, "same_as": same_as["net"]})
        save_model(out_model, res.model, res.meta)
        write_parquet(res.history, out_history)
        write_parquet(res.confusion, out_confusion)
        write_parquet(res.metrics, out_metrics)
        return res
    spec = space.netspec(arch)
    if max(subset.classes) >= space.num_classes:
        raise ValueError(f"classes {list(subset.classes)} of branch {net!r} exceed the dataset's "
                         f"{space.num_classes} classes")
    dev = pick_device(device)
    train, test, stats = load_data(data_dir)
    log.info("net %s (base %s): %s", net, base_net(net), arch)
    log.info("classes %s -> %d outputs%s", list(subset.classes), subset.num_outputs,
             " (labels remapped)" if subset.remap else "")
    log.info("device %s, amp %s", dev, bool(amp) and dev.type == "cuda")
    res = train_net(spec, train, test, stats, subset, settings, device=dev, amp=amp, checkpoint_path=checkpoint,
                    progress=progress, on_mismatch="restart",
                    meta={"net": net, "base_net": base_net(net), "arch": arch}, logger=log)
    res.metrics.insert(0, "arch", arch)
    res.metrics.insert(0, "net", net)
    res.metrics["device"] = str(dev)
    save_model(out_model, res.model, res.meta)
    write_parquet(res.history, out_history)
    write_parquet(res.confusion, out_confusion)
    write_parquet(res.metrics, out_metrics)
    m = res.metrics.iloc[0]
    log.info("final test accuracy %.4f (best %.4f at epoch %d), %d params, %d MACs",
             m["final_test_acc"], m["best_test_acc"], m["best_epoch"], m["params"], m["macs"])
    if checkpoint:
        with contextlib.suppress(FileNotFoundError):
            os.remove(checkpoint)
    return res


def checkpoint_path_for(out_model: str) -> str:
    return str(Path(out_model).with_name("checkpoint.pt"))
