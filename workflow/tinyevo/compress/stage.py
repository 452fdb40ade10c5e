"""The compression stage: prune a trained net step by step, choose the least-pruned step whose
TyBox buffer fits the device, export it to Keras, quantise its feature extractor to int8 and
measure every variant on the test split.

``run_compress`` is the rule's single call (files in, files out); :func:`prune_schedule`,
:func:`choose` and :func:`export_int8` are its parts.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd

from tinyevo.compress.budget import BudgetError, choose_step, spec_memory
from tinyevo.data.store import normalised_nhwc
from tinyevo.space.cost import cost_of
from tinyevo.space.spec import NetSpec

LOG = logging.getLogger("tinyevo.compress")

PRUNING_COLUMNS = ["step", "layer", "kind", "filters_before", "filters_kept", "filters_total", "params", "macs",
                   "feature_size", "float_size_bytes", "int8_size_bytes", "net_bytes", "buffer_bytes",
                   "buffer_samples", "fits", "test_acc", "chosen"]


def size_terms(terms: Mapping[str, Any]) -> tuple[int, int]:
    """(float32 size, int8-FE size) in bytes, weights + activations as in the thesis' Table 1:
    FE weights + folded biases + the largest consecutive activation pair, plus the float32
    classifier weights and activations. The int8 size adds the per-channel quantisation
    parameters (TyBox memory terms ``fe_flash + arena_pair + classifier_*``)."""
    clf = int(terms["classifier_weights"]) + int(terms["classifier_activations"])
    float_size = 4 * int(terms["fe_weights"]) + int(terms["fe_biases"]) + 4 * int(terms["arena_pair"]) + clf
    int8_size = int(terms["fe_flash"]) + int(terms["arena_pair"]) + clf
    return float_size, int8_size


def _row(step: int, spec: NetSpec, terms: Mapping, acc: float, min_samples: int, **kw) -> dict:
    cost = cost_of(spec)
    fsize, isize = size_terms(terms)
    return dict(step=step, **kw, params=int(cost.params), macs=int(cost.macs), feature_size=int(spec.feature_size),
                float_size_bytes=fsize, int8_size_bytes=isize, net_bytes=int(terms["net_bytes"]),
                buffer_bytes=int(terms["buffer_bytes"]), buffer_samples=int(terms["n_samples"]),
                fits=bool(terms["n_samples"] >= min_samples), test_acc=float(acc))


@dataclass
class Step:
    model: Any
    terms: dict
    row: dict


def prune_schedule(model, step_fraction: float, max_steps: int, ram_bytes: int, min_buffer_samples: int,
                   evaluate: Callable[[Any], float], finetune: Callable[[Any, int], None] | None = None,
                   accounting: str = "total", logger: logging.Logger | None = None,
                   stop_when_fits: bool = False) -> list[Step]:
    """Step 0 is ``model`` itself; each next step prunes the widest unit (latest first) by
    ``step_fraction`` of its filters, fine-tunes (``finetune(model, step)``, skipped when None)
    and evaluates. Stops after ``max_steps`` steps or when no unit can shrink, and, with
    ``stop_when_fits`` (``compress.sweep: fit``), at the first step whose buffer holds
    ``min_buffer_samples``: pruning only shrinks the memory terms, so that step is the one
    :func:`choose_step` picks from the whole sweep."""
    log = logger or LOG
    from tinyevo.compress.prune import next_unit, prune_unit, unit_width, units_of  # torch: not for the plot

    totals = {u.name: unit_width(model.spec, u) for u in units_of(model.spec)}
    terms = spec_memory(model.spec, ram_bytes, accounting)
    acc = evaluate(model)
    steps = [Step(model, terms, _row(0, model.spec, terms, acc, min_buffer_samples, layer="", kind="baseline",
                                     filters_before=0, filters_kept=0, filters_total=0))]
    log.info("step 0 (baseline): F=%d, net %d B, buffer %d samples, test acc %.4f",
             model.spec.feature_size, terms["net_bytes"], terms["n_samples"], acc)
    for k in range(1, int(max_steps) + 1):
        if stop_when_fits and steps[-1].row["fits"]:
            log.info("step %d fits the device (compress.sweep: fit); the sweep stops here", k - 1)
            break
        nxt = next_unit(model.spec, step_fraction)
        if nxt is None:
            log.info("no unit can be pruned further; stopping after %d steps", k - 1)
            break
        unit, n_keep = nxt
        before = unit_width(model.spec, unit)
        model, _ = prune_unit(model, unit, n_keep)
        if finetune is not None:
            finetune(model, k)
        acc = evaluate(model)
        terms = spec_memory(model.spec, ram_bytes, accounting)
        row = _row(k, model.spec, terms, acc, min_buffer_samples, layer=unit.name, kind=unit.kind,
                   filters_before=before, filters_kept=n_keep, filters_total=totals[unit.name])
        steps.append(Step(model, terms, row))
        log.info("step %d: %s %d -> %d of %d filters, F=%d, params %d, net %d B, buffer %d samples, test acc %.4f",
                 k, unit.name, before, n_keep, totals[unit.name], model.spec.feature_size, row["params"],
                 terms["net_bytes"], terms["n_samples"], acc)
    return steps


SWEEPS = ("full", "fit")


def _sweep_mode(compress: Mapping[str, Any]) -> str:
    mode = compress.get("sweep", "full")
    if mode not in SWEEPS:
        raise ValueError(f"config key 'compress.sweep': {mode!r} is not one of {list(SWEEPS)}")
    return mode


def pruning_table(steps: list[Step], chosen: int | None) -> pd.DataFrame:
    df = pd.DataFrame([s.row for s in steps])
    df["chosen"] = [i == chosen for i in range(len(steps))]
    return df[PRUNING_COLUMNS]


@dataclass
class Int8Result:
    tflite: bytes
    fe: Any  # Keras feature extractor (float)
    classifier: Any  # Keras float classifier
    test_acc: float
    float_test_acc: float
    max_logit_diff: float


def export_int8(model, train_x_norm: np.ndarray, test: tuple[np.ndarray, np.ndarray], representative_samples: int,
                seed: int, logger: logging.Logger | None = None) -> Int8Result:
    """torch -> Keras (checked against torch on test images), int8 FE via TFLite, accuracy of
    int8 FE + dequantised features + float classifier on the whole test split."""
    import torch

    from tinyevo.export.keras_model import split_keras, torch_to_keras
    from tinyevo.export.int8 import Int8FE, convert_int8, representative_indices

    log = logger or LOG
    model = model.cpu().eval()
    kmodel = torch_to_keras(model)
    x_te, y_te = test
    probe = x_te[: min(64, len(x_te))]
    with torch.no_grad():
        t_logits = model(torch.from_numpy(probe.transpose(0, 3, 1, 2).copy())).numpy()
    k_logits = np.asarray(kmodel(probe, training=False))
    diff = float(np.abs(t_logits - k_logits).max()) if len(probe) else 0.0
    scale = max(1.0, float(np.abs(t_logits).max())) if len(probe) else 1.0
    log.info("Keras export: max |logit diff| vs torch on %d test images = %.2e (largest |logit| %.3g)",
             len(probe), diff, scale)
    # Float32 sums in another order (oneDNN vs torch) differ in the last bits; a trained net's
    # logits reach tens, so the check is relative to their size. A real export bug (a layout, a
    # padding, BN statistics) gives differences of the order of the logits themselves.
    if diff > 1e-3 * scale:
        raise RuntimeError(f"the Keras export differs from the torch model by {diff:.3g} in the logits "
                           f"(largest |logit| {scale:.3g})")
    fe, clf = split_keras(kmodel)
    idx = representative_indices(len(train_x_norm), representative_samples, seed)
    tfl = convert_int8(fe, train_x_norm[idx])
    it = Int8FE(tfl)
    feats = it.features(x_te)
    logits = np.asarray(clf(feats, training=False))
    acc = float((logits.argmax(1) == np.asarray(y_te)).mean()) if len(y_te) else float("nan")
    f_logits = np.concatenate([np.asarray(kmodel(x_te[s:s + 1024], training=False)) for s in range(0, len(x_te), 1024)])
    f_acc = float((f_logits.argmax(1) == np.asarray(y_te)).mean()) if len(y_te) else float("nan")
    log.info("int8 FE (%d representative images, %d B) + float classifier: test acc %.4f, float Keras %.4f, drop %.4f",
             len(idx), len(tfl), acc, f_acc, f_acc - acc)
    return Int8Result(tfl, fe, clf, acc, f_acc, diff)


def _class_subset(meta: Mapping[str, Any], num_outputs: int):
    from tinyevo.train.classes import ClassSubset

    if "classes" in meta:
        return ClassSubset(tuple(int(c) for c in meta["classes"]), int(meta.get("num_outputs", num_outputs)),
                           bool(meta.get("remap", False)))
    return ClassSubset(tuple(range(num_outputs)), num_outputs, remap=False)


def _summary(net: str, steps, k: int, actual: Mapping[str, Any], int8_acc: float, M: int,
             max_logit_diff: float) -> pd.DataFrame:
    """One row per model (baseline float, pruned float, pruned int8 FE): size, accuracy, F, params,
    buffer samples, share of the baseline's size."""
    chosen = steps[k]
    base_f, _ = size_terms(steps[0].terms)
    pf, _ = size_terms(chosen.terms)
    _, i8 = size_terms(actual)
    rows = [
        dict(model="baseline_float", step=0, size_bytes=base_f, test_acc=steps[0].row["test_acc"],
             feature_size=steps[0].model.spec.feature_size, params=steps[0].row["params"],
             buffer_samples=int(steps[0].terms["n_samples"])),
        dict(model="pruned_float", step=k, size_bytes=pf, test_acc=chosen.row["test_acc"],
             feature_size=chosen.model.spec.feature_size, params=chosen.row["params"],
             buffer_samples=int(chosen.terms["n_samples"])),
        dict(model="pruned_int8_fe", step=k, size_bytes=i8, test_acc=int8_acc,
             feature_size=chosen.model.spec.feature_size, params=chosen.row["params"],
             buffer_samples=int(actual["n_samples"])),
    ]
    summary = pd.DataFrame(rows)
    summary["share_of_baseline"] = summary["size_bytes"] / float(base_f)
    summary.insert(0, "net", net)
    summary["ram_bytes"] = M
    summary["keras_max_logit_diff"] = max_logit_diff
    return summary


def _int8_memory(out_tflite: str, classifier, chosen, M: int, accounting: str, log) -> dict:
    """The TyBox memory terms of the written int8 model, checked against the NetSpec prediction."""
    from tinyevo.tybox.memory import memory_terms
    from tinyevo.tybox.model import load_graph

    actual = memory_terms(load_graph(out_tflite), classifier.get_layer("classifier").get_weights(), M,
                          accounting=accounting)
    for key in ("fe_flash", "arena_pair", "arena", "net_bytes", "n_samples"):
        if int(actual[key]) != int(chosen.terms[key]):
            log.warning("memory term %s: NetSpec prediction %d != int8 model %d", key, chosen.terms[key], actual[key])
    log.info("TyBox memory of the int8 model: net %d B, buffer %d B = %d samples of %d B (M = %d B)",
             actual["net_bytes"], actual["buffer_bytes"], actual["n_samples"], actual["sample_bytes"], M)
    return actual


def _prune_and_choose(model, train, test, stats, compress: Mapping[str, Any], settings: dict, seed: int, dev,
                      M: int, min_samples: int, accounting: str, log):
    """The pruning steps (each fine-tuned when ``finetune_epochs`` > 0) and the index of the
    least-pruned one that fits the device."""
    from tinyevo.runtime import seed_everything
    from tinyevo.train.loop import evaluate, fit

    def acc_of(m) -> float:
        return float(evaluate(m, test[0], test[1], stats, dev)[1])

    def finetune(m, step: int) -> None:
        if settings["epochs"] > 0:
            s = dict(settings, seed=int(seed) + step)
            seed_everything(s["seed"])
            fit(m, train, None, stats, s, device=dev, progress=True, logger=log)
        m.cpu()

    steps = prune_schedule(model, float(compress["step_fraction"]), int(compress["max_steps"]), M, min_samples,
                           acc_of, finetune if settings["epochs"] > 0 else None, accounting=accounting, logger=log,
                           stop_when_fits=_sweep_mode(compress) == "fit")
    try:
        k = choose_step([dict(s.terms, step=s.row["step"]) for s in steps], M, min_samples)
    except BudgetError as exc:
        log.error("pruning steps:\n%s", pruning_table(steps, None).to_string(index=False))
        log.error("%s", exc)
        raise
    log.info("chosen: step %d (least-pruned with >= %d buffer samples): F=%d, %d samples",
             k, min_samples, steps[k].model.spec.feature_size, steps[k].terms["n_samples"])
    return steps, k


def run_compress(model_path: str, data_dir: str, net: str, compress: Mapping[str, Any], device_cfg: Mapping[str, Any],
                 compute_device: str, seed: int, out_pruning: str, out_summary: str, out_tflite: str,
                 out_classifier: str, out_model: str, accounting: str = "total",
                 logger: logging.Logger | None = None) -> pd.DataFrame:
    """The rule ``compress``: everything from the trained model to the files. Steps: load the
    model and its classes' data, prune and choose the step that fits (:func:`_prune_and_choose`),
    export the chosen step to int8 and write its files, check the int8 model's memory terms
    (:func:`_int8_memory`), write the pruning and summary tables (:func:`_summary`)."""
    from tinyevo.data import load_split, load_stats
    from tinyevo.io import atomic_path, write_parquet
    from tinyevo.runtime import pick_device
    from tinyevo.space.torch_model import load_model, save_model

    log = logger or LOG
    M = int(device_cfg["ram_bytes"])
    min_samples = int(device_cfg["min_buffer_samples"])
    model, spec, meta = load_model(model_path)
    subset = _class_subset(meta, spec.num_classes)
    train = subset.select(*load_split(data_dir, "train"))
    test = subset.select(*load_split(data_dir, "test"))
    stats = load_stats(data_dir)
    if len(train[1]) == 0 or len(test[1]) == 0:
        raise ValueError(f"{data_dir}: no train or test samples of classes {list(subset.classes)}")
    dev = pick_device(compute_device)
    settings = {k: v for k, v in dict(meta.get("settings", {})).items()}
    settings.update(epochs=int(compress["finetune_epochs"]), lr=float(compress["finetune_lr"]))
    log.info("net %s: %s; classes %s; M = %d B, min buffer %d samples, device %s",
             net, meta.get("arch", "?"), list(subset.classes), M, min_samples, dev)

    steps, k = _prune_and_choose(model, train, test, stats, compress, settings, seed, dev, M, min_samples,
                                 accounting, log)
    chosen = steps[k]
    x_tr_norm = normalised_nhwc(train[0], *stats)
    x_te_norm = normalised_nhwc(test[0], *stats)
    res = export_int8(chosen.model, x_tr_norm, (x_te_norm, test[1]), int(compress["representative_samples"]),
                      int(seed), logger=log)
    with atomic_path(out_tflite) as tmp:
        tmp.write_bytes(res.tflite)
    with atomic_path(out_classifier) as tmp:
        res.classifier.save(tmp)
    save_model(out_model, chosen.model.cpu(),
               {**dict(meta), "pruned_step": int(k), "pruned_from": str(model_path)})

    actual = _int8_memory(out_tflite, res.classifier, chosen, M, accounting, log)
    summary = _summary(net, steps, k, actual, res.test_acc, M, res.max_logit_diff)
    write_parquet(pruning_table(steps, k).assign(net=net), out_pruning)
    write_parquet(summary, out_summary)
    acc = summary["test_acc"].tolist()
    log.info("accuracy: baseline %.4f, pruned float %.4f, pruned int8 FE %.4f (drop from float %.4f)",
             acc[0], acc[1], acc[2], acc[1] - acc[2])
    return summary


def plot_compress(pruning_path: str, summary_path: str, out_png: str, style: str = "default", dpi: int = 110) -> None:
    """Size vs test accuracy: every pruning step (float) and the summary's three models."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tinyevo.io import read_parquet, savefig

    pr = read_parquet(pruning_path, "pruning table")
    sm = read_parquet(summary_path, "compression summary")
    with plt.style.context(style):
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(pr["float_size_bytes"] / 1024, pr["test_acc"], "o-", color="0.6", label="pruning steps (float)")
        for _, r in pr.iterrows():
            ax.annotate(str(int(r["step"])), (r["float_size_bytes"] / 1024, r["test_acc"]), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")
        for (_, r), mk in zip(sm.iterrows(), ("s", "D", "*")):
            ax.plot(r["size_bytes"] / 1024, r["test_acc"], mk, markersize=9,
                    label=f"{r['model']} ({r['share_of_baseline']:.1%})")
        ax.set_xlabel("size (weights + activations), KiB")
        ax.set_ylabel("test accuracy")
        ax.set_title(f"compression of {sm['net'].iloc[0]} (M = {int(sm['ram_bytes'].iloc[0])} B)")
        ax.legend(fontsize=8)
        savefig(fig, out_png, dpi=dpi)
