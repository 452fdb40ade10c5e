"""The scenario stage: one job per (scenario, variant) -> its curves; a gather per scenario ->
``curves.parquet`` + ``summary.parquet``; a plot per scenario.

Curves: one row per (repetition, step), step 0 = before any on-device training, step s = after
the s-th stream sample; ``accuracy`` on the evaluation set (targets swapped after the change
point for concept drift), ``acc_old`` / ``acc_new`` on the old / new classes for incremental,
``label`` / ``stream_pred`` the target of the s-th stream sample and the prediction made for it
before training on it.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from .learners import FloatLearner, HarnessLearner, buffer_length, normalised_nhwc
from .setup import VARIANTS, Scenario, ScenarioError, scenario_from_config
from .streams import check_pool, draw, held_out_pool

LOG = logging.getLogger("tinyevo.scenarios")
CURVE_COLUMNS = ["scenario", "variant", "repetition", "seed", "step", "label", "stream_pred", "accuracy"]
OLD_NEW = ["acc_old", "acc_new"]


def curve_frame(scenario: Scenario, variant: str, rep: int, d, eval_pred: np.ndarray, stream_pred: np.ndarray,
                capacity: int) -> pd.DataFrame:
    """Accuracies of one repetition from the per-step evaluation predictions."""
    L, cp = scenario.stream_length, scenario.change_point
    eval_pred = np.asarray(eval_pred)
    if eval_pred.shape != (L + 1, len(d.eval_idx)):
        raise RuntimeError(f"{variant}: evaluation predictions of shape {eval_pred.shape}, expected "
                           f"{(L + 1, len(d.eval_idx))}")
    if len(stream_pred) != L:
        raise RuntimeError(f"{variant}: {len(stream_pred)} stream predictions, expected {L}")
    steps = np.arange(L + 1)
    drifted = (steps > cp)[:, None] if scenario.has_change else np.zeros((L + 1, 1), bool)
    targets = np.where(drifted, d.eval_post[None, :], d.eval_pre[None, :])
    correct = eval_pred == targets
    df = pd.DataFrame({
        "scenario": scenario.name, "variant": variant, "repetition": np.int64(rep), "seed": np.int64(d.seed),
        "step": steps.astype(np.int64),
        "label": np.concatenate([[-1], d.stream_targets]).astype(np.int64),
        "stream_pred": np.concatenate([[-1], stream_pred]).astype(np.int64),
        "accuracy": correct.mean(axis=1),
    })
    if scenario.name == "incremental":
        df["acc_old"] = correct[:, d.eval_old].mean(axis=1) if d.eval_old.any() else np.nan
        df["acc_new"] = correct[:, d.eval_new].mean(axis=1) if d.eval_new.any() else np.nan
    df["capacity"] = np.int64(capacity)
    df["lr"] = float(scenario.lr)
    return df


def run_variant(scenario: Scenario, variant: str, data_dir, *, tflite=None, tybox_dir=None, model_path=None,
                device: Mapping[str, Any] | None = None, tybox: Mapping[str, Any] | None = None,
                compute_device: str = "auto", log: logging.Logger | None = None) -> pd.DataFrame:
    """Every repetition of ``scenario`` for ``variant``; returns the curves (see module doc).

    ``tflite`` (the int8 feature extractor) sizes the buffer N_B with the TyBox memory model
    (``device.ram_bytes``, ``tybox.accounting``); ``tybox_dir`` is the generated C++ project
    (tybox, tinyol); ``model_path`` the trained float model (float)."""
    from tinyevo.data import load_stats
    from tinyevo.runtime import progress

    log = log or LOG
    if variant not in VARIANTS:
        raise ScenarioError(f"config key 'scenarios.variants': unknown variant {variant!r}; expected one of {list(VARIANTS)}")
    device, tybox = dict(device or {}), dict(tybox or {})
    pool = held_out_pool(data_dir, scenario)
    check_pool(pool, scenario)
    draws = [draw(pool, scenario, r) for r in range(scenario.repetitions)]
    n_b = buffer_length(tflite, scenario.num_outputs, int(device["ram_bytes"]), tybox.get("accounting", "total"))
    capacity = 1 if variant == "tinyol" else n_b
    log.info("scenario %s, variant %s: net %s, %d repetitions, stream %d (change point %d), eval %d, "
             "buffer %d (N_B = %d), lr %g, loss %s, pool %d images", scenario.name, variant, scenario.net,
             scenario.repetitions, scenario.stream_length, scenario.change_point, scenario.eval_size, capacity,
             n_b, scenario.lr, scenario.loss, len(pool.y))
    used = np.unique(np.concatenate([np.concatenate([d.eval_idx, d.stream_idx]) for d in draws]))
    x_norm = np.zeros((len(pool.y),) + pool.x.shape[1:], np.float32)
    x_norm[used] = normalised_nhwc(pool.x[used], *load_stats(data_dir))
    with tempfile.TemporaryDirectory(prefix="tinyevo-scenario-") as tmp:
        if variant == "float":
            learner = FloatLearner(model_path, scenario, capacity, compute_device)
        else:
            learner = HarnessLearner(tybox_dir, scenario, capacity, tmp, tybox=tybox, device=device, log=log)
        prepared = learner.prepare(x_norm[used])
        inputs = np.zeros((len(pool.y),) + prepared.shape[1:], prepared.dtype)
        inputs[used] = prepared
        frames = []
        for r, d in enumerate(progress(draws, desc=f"{scenario.name}/{variant}", unit="rep")):
            out = learner.run(inputs[d.stream_idx], d.stream_targets, inputs[d.eval_idx], d.eval_pre)
            f = curve_frame(scenario, variant, r, d, out["eval_pred"], out["stream_pred"], capacity)
            log.info("repetition %d (seed %d): accuracy %.3f at step 0, %.3f at the change point, %.3f final",
                     r, d.seed, f["accuracy"].iloc[0], f["accuracy"].iloc[scenario.change_point],
                     f["accuracy"].iloc[-1])
            frames.append(f)
    return pd.concat(frames, ignore_index=True)


def run_scenario_job(name: str, variant: str, data_dir, out_path, *, scenarios: Mapping[str, Any],
                     num_classes: int, tybox: Mapping[str, Any], device: Mapping[str, Any], tflite,
                     tybox_dir=None, model_path=None, compute_device: str = "auto",
                     log: logging.Logger | None = None) -> pd.DataFrame:
    """The rule's entry point: build the scenario from the config sections, run the variant,
    write its curves atomically."""
    from tinyevo.io import write_parquet

    sc = scenario_from_config(name, scenarios, num_classes, tybox["lr"], tybox.get("loss", "mse_softmax"))
    df = run_variant(sc, variant, data_dir, tflite=tflite, tybox_dir=tybox_dir, model_path=model_path,
                     device=device, tybox=tybox, compute_device=compute_device, log=log)
    write_parquet(df, out_path)
    return df


def _std(v: pd.Series) -> float:
    return float(v.std(ddof=1)) if len(v) > 1 else 0.0


def summarise(curves: pd.DataFrame, change_point: int) -> pd.DataFrame:
    """Per variant: final accuracy mean and std over repetitions (and of old / new classes for
    incremental), the accuracy at the change point and the lowest accuracy after it (means)."""
    rows = []
    order = {v: i for i, v in enumerate(VARIANTS)}
    for variant, g in sorted(curves.groupby("variant"), key=lambda kv: order.get(kv[0], 99)):
        last = g.loc[g.groupby("repetition")["step"].idxmax()]
        has_change = g["scenario"].iloc[0] != "transfer"
        at_cp = g[g["step"] == change_point] if has_change else g.iloc[:0]
        after = g[g["step"] > change_point].groupby("repetition")["accuracy"].min() if has_change else at_cp["accuracy"]
        row = {"scenario": g["scenario"].iloc[0], "variant": variant,
               "repetitions": int(g["repetition"].nunique()), "stream_length": int(g["step"].max()),
               "capacity": int(g["capacity"].iloc[0]), "lr": float(g["lr"].iloc[0]),
               "final_mean": float(last["accuracy"].mean()), "final_std": _std(last["accuracy"]),
               "start_mean": float(g[g["step"] == 0]["accuracy"].mean()),
               "change_mean": float(at_cp["accuracy"].mean()) if len(at_cp) else float("nan"),
               "min_after_change_mean": float(after.mean()) if len(after) else float("nan")}
        for col in OLD_NEW:
            if col in g.columns:
                tag = col.split("_")[1]
                row[f"final_{tag}_mean"] = float(last[col].mean())
                row[f"final_{tag}_std"] = _std(last[col])
        rows.append(row)
    return pd.DataFrame(rows)


def gather(parts, curves_out, summary_out, change_point: int, log: logging.Logger | None = None) -> pd.DataFrame:
    """Concatenate the per-variant curves of one scenario, write curves + summary."""
    from tinyevo.io import read_parquet, write_parquet

    log = log or LOG
    frames = [read_parquet(p, "scenario curves") for p in parts]
    if not frames:
        raise ValueError("no scenario curves to gather (config key 'scenarios.variants' is empty?)")
    curves = pd.concat(frames, ignore_index=True)
    if curves["scenario"].nunique() != 1:
        raise ValueError(f"curves of several scenarios given to one gather: {sorted(curves['scenario'].unique())}")
    order = {v: i for i, v in enumerate(VARIANTS)}
    curves = curves.sort_values(["variant", "repetition", "step"], key=lambda s: s.map(order) if s.name == "variant" else s,
                                kind="stable").reset_index(drop=True)
    summary = summarise(curves, change_point)
    write_parquet(curves, curves_out)
    write_parquet(summary, summary_out)
    log.info("summary:\n%s", summary.to_string(index=False))
    return summary


def plot_scenario(curves_path, out_png, change_point: int, style: str = "default", dpi: int = 110) -> None:
    """Mean accuracy curve and a +- std band (over repetitions) per variant, change point marked;
    incremental: all / old / new classes in three panels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tinyevo.io import read_parquet, savefig

    curves = read_parquet(curves_path, "scenario curves")
    name = str(curves["scenario"].iloc[0])
    cols = ["accuracy"] + [c for c in OLD_NEW if c in curves.columns]
    titles = {"accuracy": "all evaluated classes", "acc_old": "old classes", "acc_new": "new classes"}
    with plt.style.context(style):
        fig, axes = plt.subplots(1, len(cols), figsize=(5.5 * len(cols), 3.8), squeeze=False, sharey=True)
        order = {v: i for i, v in enumerate(VARIANTS)}
        for ax, col in zip(axes[0], cols):
            for variant, g in sorted(curves.groupby("variant"), key=lambda kv: order.get(kv[0], 99)):
                st = g.groupby("step")[col].agg(["mean", "std"]).fillna(0.0)
                line, = ax.plot(st.index, st["mean"], label=f"{variant} (N={int(g['capacity'].iloc[0])})", lw=1.4)
                ax.fill_between(st.index, st["mean"] - st["std"], st["mean"] + st["std"], color=line.get_color(),
                                alpha=0.2, lw=0)
            if name != "transfer":
                ax.axvline(change_point, color="0.3", ls="--", lw=1, label="change point")
            ax.set_xlabel("stream sample")
            ax.set_title(titles[col])
            ax.set_ylim(0, 1)
            ax.grid(alpha=0.3)
        axes[0][0].set_ylabel("accuracy on the evaluation set")
        axes[0][-1].legend(loc="lower right", fontsize=8)
        n_rep = curves["repetition"].nunique()
        fig.suptitle(f"{name.replace('_', ' ')}: mean +- std over {n_rep} repetition(s)")
        fig.tight_layout()
        savefig(fig, out_png, dpi=dpi)
