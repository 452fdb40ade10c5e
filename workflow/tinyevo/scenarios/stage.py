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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from tinyevo.data.store import normalised_nhwc

from .learners import FloatLearner, HarnessLearner, buffer_length
from .setup import VARIANTS, Scenario, ScenarioError, scenario_from_config
from .streams import check_pool, draw, held_out_pool, validation_pool
from .tuning import Settings, chosen_settings, grid, sweep

LOG = logging.getLogger("tinyevo.scenarios")
CURVE_COLUMNS = ["scenario", "variant", "repetition", "seed", "step", "label", "stream_pred", "accuracy"]
OLD_NEW = ["acc_old", "acc_new"]


def curve_frame(scenario: Scenario, variant: str, rep: int, d, eval_pred: np.ndarray, stream_pred: np.ndarray,
                capacity: int, settings: Settings | None = None) -> pd.DataFrame:
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
    st = settings or Settings(scenario.lr, scenario.loss)
    df["capacity"] = np.int64(capacity)
    for key, value in st.as_dict().items():
        df[key] = value
    return df


def _learner(scenario: Scenario, variant: str, capacity: int, tmp, *, tybox_dir, model_path, device, tybox,
             compute_device, log):
    if variant == "float":
        return FloatLearner(model_path, scenario, capacity, compute_device)
    return HarnessLearner(tybox_dir, scenario, capacity, tmp, tybox=tybox, device=device, log=log)


def _inputs(learner, pool, draws, data_dir) -> np.ndarray:
    """The learner's input (the features of its extractor) of every pool image some draw uses,
    computed once per image (zeros elsewhere)."""
    from tinyevo.data import load_stats

    used = np.unique(np.concatenate([np.concatenate([d.eval_idx, d.stream_idx]) for d in draws]))
    x_norm = normalised_nhwc(pool.x[used], *load_stats(data_dir))
    prepared = learner.prepare(x_norm)
    inputs = np.zeros((len(pool.y),) + prepared.shape[1:], prepared.dtype)
    inputs[used] = prepared
    return inputs


def _check_variant(variant: str) -> None:
    if variant not in VARIANTS:
        raise ScenarioError(f"config key 'scenarios.variants': unknown variant {variant!r}; expected one of {list(VARIANTS)}")


def validation_scenario(scenario: Scenario, pool, log: logging.Logger | None = None) -> Scenario:
    """The scenario the validation streams are drawn for: the configured one, or, when the
    validation pool holds fewer images of the scenario's classes than ``eval_size +
    stream_length`` (a small dataset: the untrained classes' training images are split between
    the validation and the evaluation pool), the same with evaluation set, stream and change
    point shrunk in proportion, by 5 % steps until every class has enough images for the
    balanced draws (logged, and recorded in the tuning table)."""
    import dataclasses

    classes = set(scenario.eval_classes) | set(scenario.pre_classes) | set(scenario.post_classes)
    n_all = int(np.isin(pool.y, sorted(classes)).sum())
    need = scenario.eval_size + scenario.stream_length
    if n_all >= need:
        return scenario
    f = n_all / need
    for _ in range(40):  # shrink until every class has enough images for the balanced draws
        L = max(2, int(scenario.stream_length * f))
        small = dataclasses.replace(scenario, stream_length=L, eval_size=max(1, int(scenario.eval_size * f)),
                                    change_point=min(L - 1, int(scenario.change_point * f)))
        try:
            draw(pool, small, 0, validation=True)
            break
        except ScenarioError:
            f *= 0.95
    (log or LOG).info("validation pool of %d images of the scenario's classes < eval_size + stream_length = %d: "
                      "validation streams of %d samples (change point %d), evaluation sets of %d", n_all, need,
                      small.stream_length, small.change_point, small.eval_size)
    return small


@dataclass
class ValidationSetup:
    """What a sweep runs on: the (validation-sized) scenario, the validation draws, the learner's
    features of every pool image a draw uses, its starting classifier and feature quantisation,
    the buffer capacity and the grid points."""
    scenario: Scenario
    variant: str
    draws: list
    feats: np.ndarray
    W: np.ndarray
    b: np.ndarray
    scale: float
    zero_point: int
    capacity: int
    points: list
    pool_size: int


def validation_setup(scenario: Scenario, variant: str, data_dir, tune: Mapping[str, Any], *, tflite=None,
                     tybox_dir=None, model_path=None, device: Mapping[str, Any] | None = None,
                     tybox: Mapping[str, Any] | None = None, compute_device: str = "auto",
                     fixed_lr: float | None = None, fixed_loss: str | None = None,
                     log: logging.Logger | None = None) -> ValidationSetup:
    """The ``tune["repetitions"]`` seeded validation draws of ``variant`` and its features on
    them (:mod:`tinyevo.scenarios.tuning`)."""
    log = log or LOG
    _check_variant(variant)
    device, tybox = dict(device or {}), dict(tybox or {})
    pool = validation_pool(data_dir, scenario)
    scenario = validation_scenario(scenario, pool, log)
    try:
        check_pool(pool, scenario)
    except ScenarioError as exc:
        raise ScenarioError(f"validation pool of the tuning (the training split; config key 'scenarios.tune'): "
                            f"{exc}") from None
    draws = [draw(pool, scenario, r, validation=True) for r in range(int(tune["repetitions"]))]
    n_b = buffer_length(tflite, scenario.num_outputs, int(device["ram_bytes"]), tybox.get("accounting", "total"))
    capacity = 1 if variant == "tinyol" else n_b
    points = grid(scenario, tune, fixed_lr, fixed_loss)
    log.info("tuning %s / %s on %d validation streams (pool of %d training images), buffer %d, %d grid points",
             scenario.name, variant, len(draws), len(pool.y), capacity, len(points))
    with tempfile.TemporaryDirectory(prefix="tinyevo-tune-") as tmp:
        learner = _learner(scenario, variant, capacity, tmp, tybox_dir=tybox_dir, model_path=model_path,
                           device=device, tybox=tybox, compute_device=compute_device, log=log)
        feats = _inputs(learner, pool, draws, data_dir)  # features of every image a draw uses
        W, b, scale, zp = learner.classifier()
    return ValidationSetup(scenario, variant, draws, feats, W, b, scale, zp, capacity, points, len(pool.y))


def tune_variant(scenario: Scenario, variant: str, data_dir, tune: Mapping[str, Any], *, tflite=None,
                 tybox_dir=None, model_path=None, device: Mapping[str, Any] | None = None,
                 tybox: Mapping[str, Any] | None = None, compute_device: str = "auto", fixed_lr: float | None = None,
                 fixed_loss: str | None = None, log: logging.Logger | None = None) -> pd.DataFrame:
    """The sweep of ``scenarios.tune`` for ``variant`` on validation streams
    (:mod:`tinyevo.scenarios.tuning`); returns its table, one row per grid point."""
    log = log or LOG
    s = validation_setup(scenario, variant, data_dir, tune, tflite=tflite, tybox_dir=tybox_dir, model_path=model_path,
                         device=device, tybox=tybox, compute_device=compute_device, fixed_lr=fixed_lr,
                         fixed_loss=fixed_loss, log=log)
    table = sweep(s.scenario, variant, s.feats, s.W, s.b, s.scale, s.zero_point, s.capacity, s.draws, s.points,
                  log=log)
    table["stream_length"], table["eval_size"] = s.scenario.stream_length, s.scenario.eval_size
    c = chosen_settings(table)
    log.info("chosen on the validation streams: lr %g, loss %s, new-class rows %s", c.lr, c.loss, c.new_class_init)
    return table


def run_variant(scenario: Scenario, variant: str, data_dir, *, tflite=None, tybox_dir=None, model_path=None,
                device: Mapping[str, Any] | None = None, tybox: Mapping[str, Any] | None = None,
                compute_device: str = "auto", settings: Settings | None = None,
                log: logging.Logger | None = None) -> pd.DataFrame:
    """Every repetition of ``scenario`` for ``variant``; returns the curves (see module doc).

    ``tflite`` (the int8 feature extractor) sizes the buffer N_B with the TyBox memory model
    (``device.ram_bytes``, ``tybox.accounting``); ``tybox_dir`` is the generated C++ project
    (tybox, tinyol); ``model_path`` the trained float model (float); ``settings`` the learning
    settings (default: the scenario's lr and loss, classifier rows as trained)."""
    from tinyevo.runtime import progress

    log = log or LOG
    _check_variant(variant)
    settings = settings or Settings(scenario.lr, scenario.loss)
    device, tybox = dict(device or {}), dict(tybox or {})
    pool = held_out_pool(data_dir, scenario)
    check_pool(pool, scenario)
    draws = [draw(pool, scenario, r) for r in range(scenario.repetitions)]
    n_b = buffer_length(tflite, scenario.num_outputs, int(device["ram_bytes"]), tybox.get("accounting", "total"))
    capacity = 1 if variant == "tinyol" else n_b
    log.info("scenario %s, variant %s: net %s, %d repetitions, stream %d (change point %d), eval %d, "
             "buffer %d (N_B = %d), lr %g, loss %s, new-class rows %s (settings from %s), pool %d images",
             scenario.name, variant, scenario.net, scenario.repetitions, scenario.stream_length,
             scenario.change_point, scenario.eval_size, capacity, n_b, settings.lr, settings.loss,
             settings.new_class_init, settings.source, len(pool.y))
    with tempfile.TemporaryDirectory(prefix="tinyevo-scenario-") as tmp:
        learner = _learner(scenario, variant, capacity, tmp, tybox_dir=tybox_dir, model_path=model_path,
                           device=device, tybox=tybox, compute_device=compute_device, log=log)
        inputs = _inputs(learner, pool, draws, data_dir)
        frames = []
        for r, d in enumerate(progress(draws, desc=f"{scenario.name}/{variant}", unit="rep")):
            out = learner.run(inputs[d.stream_idx], d.stream_targets, inputs[d.eval_idx], d.eval_pre, settings)
            f = curve_frame(scenario, variant, r, d, out["eval_pred"], out["stream_pred"], capacity, settings)
            log.info("repetition %d (seed %d): accuracy %.3f at step 0, %.3f at the change point, %.3f final",
                     r, d.seed, f["accuracy"].iloc[0], f["accuracy"].iloc[scenario.change_point],
                     f["accuracy"].iloc[-1])
            frames.append(f)
    return pd.concat(frames, ignore_index=True)


def run_scenario_job(name: str, variant: str, data_dir, out_path, *, scenarios: Mapping[str, Any],
                     num_classes: int, tybox: Mapping[str, Any], device: Mapping[str, Any], tflite,
                     tybox_dir=None, model_path=None, compute_device: str = "auto", tune_path=None,
                     log: logging.Logger | None = None) -> pd.DataFrame:
    """The rule's entry point: build the scenario from the config sections, run the variant with
    the settings chosen by the tuning (``tune_path``; None: the config's lr and loss), write its
    curves atomically."""
    from tinyevo.io import write_parquet

    sc = scenario_from_config(name, scenarios, num_classes, tybox["lr"], tybox.get("loss", "mse_softmax"))
    settings = None
    if tune_path is not None:
        from tinyevo.io import read_parquet

        settings = chosen_settings(read_parquet(tune_path, "scenario tuning table"))
    df = run_variant(sc, variant, data_dir, tflite=tflite, tybox_dir=tybox_dir, model_path=model_path,
                     device=device, tybox=tybox, compute_device=compute_device, settings=settings, log=log)
    write_parquet(df, out_path)
    return df


def fixed_settings(name: str, scenarios: Mapping[str, Any], tybox: Mapping[str, Any]) -> tuple:
    """(lr, loss) the config fixes for the tuning of ``name``: ``scenarios.<name>.lr`` and
    ``scenarios.<name>.loss`` when set (None = swept)."""
    sub = scenarios.get(name) or {}
    return sub.get("lr"), sub.get("loss")


def run_tune_job(name: str, variant: str, data_dir, out_path, *, scenarios: Mapping[str, Any], num_classes: int,
                 tybox: Mapping[str, Any], device: Mapping[str, Any], tflite, tybox_dir=None, model_path=None,
                 compute_device: str = "auto", log: logging.Logger | None = None) -> pd.DataFrame:
    """The tuning rule's entry point: the sweep table of (scenario, variant), written atomically."""
    from tinyevo.io import write_parquet

    sc = scenario_from_config(name, scenarios, num_classes, tybox["lr"], tybox.get("loss", "mse_softmax"))
    lr, loss = fixed_settings(name, scenarios, tybox)
    df = tune_variant(sc, variant, data_dir, scenarios["tune"], tflite=tflite, tybox_dir=tybox_dir,
                      model_path=model_path, device=device, tybox=tybox, compute_device=compute_device,
                      fixed_lr=lr, fixed_loss=loss, log=log)
    write_parquet(df, out_path)
    return df


def _std(v: pd.Series) -> float:
    return float(v.std(ddof=1)) if len(v) > 1 else 0.0


def summarise(curves: pd.DataFrame, change_point: int) -> pd.DataFrame:
    """Per variant: final accuracy mean and std over repetitions (and of old / new classes for
    incremental), the accuracy at the change point and the lowest accuracy after it (means), and
    ``after_change``: the mean accuracy over the steps after the change point (every step >= 1
    for transfer), the tuning's criterion (:func:`tinyevo.scenarios.tuning.criterion`) measured on
    the evaluation streams, so a learner that adapts sooner scores higher even where every
    learner ends at the same accuracy (mean and std over repetitions, old / new classes too)."""
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
               **{k: str(g[k].iloc[0]) for k in ("loss", "new_class_init", "settings_from") if k in g.columns},
               "final_mean": float(last["accuracy"].mean()), "final_std": _std(last["accuracy"]),
               "start_mean": float(g[g["step"] == 0]["accuracy"].mean()),
               "change_mean": float(at_cp["accuracy"].mean()) if len(at_cp) else float("nan"),
               "min_after_change_mean": float(after.mean()) if len(after) else float("nan")}
        for col in OLD_NEW:
            if col in g.columns:
                tag = col.split("_")[1]
                row[f"final_{tag}_mean"] = float(last[col].mean())
                row[f"final_{tag}_std"] = _std(last[col])
        steps = g[g["step"] > (change_point if has_change else 0)]
        for col in ["accuracy"] + [c for c in OLD_NEW if c in g.columns]:
            per_rep = steps.groupby("repetition")[col].mean()
            tag = "" if col == "accuracy" else "_" + col.split("_")[1]
            row[f"after_change{tag}_mean"] = float(per_rep.mean()) if len(per_rep) else float("nan")
            row[f"after_change{tag}_std"] = _std(per_rep)
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
