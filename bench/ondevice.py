"""Why on-device learning did (not) learn: diagnostics of the learning rule on a finished run.

Reads a pipeline run's deployed nets (``results/tybox/<net>/src``, the compiled harness and its
int8 feature extractor) and data, and replays each scenario's evaluation streams with the
reference learning rule (:class:`tinyevo.tybox.reference.OnDeviceLearner`, step for step the
generated C++) for every combination of loss and start of the new-class rows at one learning
rate, recording per stream step:

- the probability the classifier gives the true class of the incoming sample (before training
  on it), for samples of new classes (incremental), swapped classes (concept drift) or all
  (transfer);
- the size of the updates: the mean over the buffer pass of |lr * delta| of the true class's
  output and the Frobenius norm of the change of its classifier column per stream sample;
- accuracy on the evaluation set, of old and new classes separately (incremental).

Nothing here chooses a setting (the pipeline's ``scenario_tune`` jobs do, on validation streams);
the tables explain the choice. Output: ``<out>/ondevice_steps.parquet`` (per step),
``<out>/ondevice.parquet`` (per scenario / loss / init: means over the repetitions) and
``<out>/ondevice.md``.

    python bench/ondevice.py                    # the default run's results, lr 0.01
    python bench/ondevice.py --lr 0.01 --repetitions 5 --config config/fashion_mnist.yaml
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow"))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from tinyevo.config import load_config  # noqa: E402
from tinyevo.io import atomic_write_text, write_parquet  # noqa: E402
from tinyevo.runtime import setup_logging  # noqa: E402
from tinyevo.scenarios import scenario_from_config  # noqa: E402
from tinyevo.data import normalised_nhwc  # noqa: E402
from tinyevo.scenarios.learners import HarnessLearner  # noqa: E402
from tinyevo.scenarios.streams import draw, held_out_pool  # noqa: E402
from tinyevo.scenarios.tuning import initial_classifier  # noqa: E402
from tinyevo.tybox.reference import OnDeviceLearner, softmax  # noqa: E402


def run_data_dir(res: Path, cfg) -> Path:
    """The prepared dataset of a run's ``results`` folder (``data/<name>`` or, for a dataset
    prepared at several resolutions, ``data/<name>/<resolution>``)."""
    data_dir = res / "data" / cfg["dataset"]["name"]
    return data_dir if (data_dir / "stats.parquet").is_file() else data_dir / str(cfg["dataset"]["resolution"])


def run_parser(doc: str, name: str) -> argparse.ArgumentParser:
    """The arguments every bench on a finished run takes: ``--config``, ``--results`` and
    ``--out`` (default ``results/bench/<name>``)."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", nargs="+", default=[str(REPO / "config" / "config.yaml")])
    ap.add_argument("--results", default=str(REPO / "results"))
    ap.add_argument("--out", default=str(REPO / "results" / "bench" / name))
    return ap


def open_run(a):
    """Logging, config, results and output folders and prepared dataset of a bench on a finished
    pipeline run (the parsed ``--config``, ``--results`` and ``--out``); creates ``--out``."""
    log = setup_logging()
    cfg, _ = load_config(a.config)
    res, out = Path(a.results), Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    return log, cfg, res, out, run_data_dir(res, cfg)


def pool_features(lrn, pool, draws, data_dir, extra=None) -> np.ndarray:
    """int8 features of the compiled extractor for the pool images the draws use (and ``extra``
    indices); the other rows stay 0."""
    from tinyevo.data import load_stats

    parts = [np.concatenate([d.eval_idx, d.stream_idx]) for d in draws] + ([] if extra is None else [extra])
    used = np.unique(np.concatenate(parts))
    feats = np.zeros((len(pool.y), int(lrn.info["feature_size"])), np.int8)
    feats[used] = lrn.prepare(normalised_nhwc(pool.x[used], *load_stats(data_dir)))
    return feats


class Probe(OnDeviceLearner):
    """The reference learner, recording |lr * delta| of the true class over each buffer pass."""

    def _step(self, x, label):
        y = self.forward(x[None])[0]
        self.p_seen.append(float(y[label]))
        before = self.b[label]
        super()._step(x, label)
        self.d_seen.append(abs(float(self.b[label] - before)))  # the bias moves by lr * delta exactly

    def pass_over(self, q, label):
        self.p_seen, self.d_seen = [], []
        col = self.W[:, label].copy()
        self.push_and_train(q, label)
        return float(np.mean(self.d_seen)), float(np.linalg.norm(self.W[:, label] - col))


def replay(sc, feats, W, b, scale, zp, capacity, d, lr, loss, init):
    W0, b0 = initial_classifier(W, b, sc, init)
    lrn = Probe(W0, b0, scale, zp, capacity=capacity, lr=lr, loss=loss)
    ex = feats[d.eval_idx]
    rows = []
    for step, (q, t) in enumerate(zip(feats[d.stream_idx], d.stream_targets), start=1):
        p_true = float(softmax((lrn.dequantise(q) @ lrn.W + lrn.b).astype(np.float32))[t])
        delta, col = lrn.pass_over(q, int(t))
        drifted = sc.has_change and step > sc.change_point
        target = d.eval_post if drifted else d.eval_pre
        pred = lrn.predict(ex)
        ok = pred == target
        rows.append({"step": step, "target": int(t), "p_true": p_true, "update": delta, "column_change": col,
                     "accuracy": float(ok.mean()),
                     "acc_old": float(ok[d.eval_old].mean()) if d.eval_old.any() else np.nan,
                     "acc_new": float(ok[d.eval_new].mean()) if d.eval_new.any() else np.nan})
    return pd.DataFrame(rows)


def focus_mask(sc, steps: pd.DataFrame) -> np.ndarray:
    """The stream samples whose true-class probability matters: new classes (incremental), the
    swapped classes after the drift (concept drift), every sample (transfer)."""
    if sc.name == "incremental":
        return steps["target"].isin([sc.label_map.get(c, c) for c in sc.new_classes]).to_numpy()
    if sc.name == "concept_drift":
        return ((steps["step"] > sc.change_point) & steps["target"].isin(list(sc.swap))).to_numpy()
    return np.ones(len(steps), bool)


def same_settings(cfg, res: Path, data_dir: Path, out: Path, log) -> pd.DataFrame:
    """TinyOL with TyBox's chosen settings (the protocol of a comparison at equal hyper-parameters)
    next to TinyOL with its own (the pipeline's, each learner tuned on its validation streams):
    final accuracy over the evaluation repetitions, from the run's tables and one extra
    evaluation run per scenario."""
    from tinyevo.io import read_parquet
    from tinyevo.scenarios.stage import run_scenario_job, summarise

    rows = []
    for name in cfg["scenarios"]["names"]:
        net = {"concept_drift": "C", "incremental": "C-inc", "transfer": "C-src"}[name]
        tune = res / "scenarios" / name / "tune" / "tybox.parquet"
        curves = run_scenario_job(name, "tinyol", data_dir, out / f"{name}_tinyol_tybox_settings.parquet",
                                  scenarios=cfg["scenarios"], num_classes=cfg["search_space"]["num_classes"],
                                  tybox=cfg["tybox"], device=cfg["device"],
                                  tflite=res / "compress" / net / "fe_int8.tflite",
                                  tybox_dir=res / "tybox" / net / "src", tune_path=tune, log=log)
        extra = summarise(curves, cfg["scenarios"]["change_point"]).assign(variant="tinyol (tybox's settings)")
        pipeline = read_parquet(res / "scenarios" / name / "summary.parquet", "scenario summary")
        rows.append(pd.concat([pipeline, extra], ignore_index=True))
    table = pd.concat(rows, ignore_index=True)
    write_parquet(table, out / "same_settings.parquet")
    return table


def main(argv=None):
    ap = run_parser(__doc__, "ondevice")
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--repetitions", type=int, default=None, help="default: scenarios.repetitions")
    ap.add_argument("--same-settings", action="store_true",
                    help="also run TinyOL with TyBox's chosen settings (table same_settings.parquet)")
    a = ap.parse_args(argv)
    log, cfg, res, out, data_dir = open_run(a)

    steps_all, summary = [], []
    for name in cfg["scenarios"]["names"]:
        sc = scenario_from_config(name, cfg["scenarios"], cfg["search_space"]["num_classes"], cfg["tybox"]["lr"])
        pool = held_out_pool(data_dir, sc)
        draws = [draw(pool, sc, r) for r in range(a.repetitions or sc.repetitions)]
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            lrn = HarnessLearner(res / "tybox" / sc.net / "src", sc, 1, tmp, tybox=cfg["tybox"], device=cfg["device"])
            n_b = int(lrn.info["buffer_samples"])
            feats = pool_features(lrn, pool, draws, data_dir)
            W, b, scale, zp = lrn.classifier()
        inits = ["keep", "reset"] if sc.new_classes else ["keep"]
        for loss in ("mse_softmax", "cross_entropy"):
            for init in inits:
                for capacity, learner in ((n_b, "tybox"), (1, "tinyol")):
                    parts = []
                    for r, d in enumerate(draws):
                        st = replay(sc, feats, W, b, scale, zp, capacity, d, a.lr, loss, init)
                        parts.append(st.assign(repetition=r, focus=focus_mask(sc, st)))
                    st = pd.concat(parts, ignore_index=True).assign(scenario=name, loss=loss, init=init,
                                                                    learner=learner, lr=a.lr)
                    steps_all.append(st)
                    f = st[st["focus"]]
                    last = st[st["step"] == st["step"].max()]
                    summary.append({"scenario": name, "learner": learner, "loss": loss, "new_class_init": init,
                                    "lr": a.lr, "p_true_first10": float(f.groupby("repetition").head(10)["p_true"].mean()),
                                    "p_true_last10": float(f.groupby("repetition").tail(10)["p_true"].mean()),
                                    "update_first10": float(f.groupby("repetition").head(10)["update"].mean()),
                                    "column_change_first10": float(f.groupby("repetition").head(10)["column_change"].mean()),
                                    "final": float(last["accuracy"].mean()),
                                    "final_old": float(last["acc_old"].mean()), "final_new": float(last["acc_new"].mean())})
                    log.info("%s %s %s %s: %s", name, learner, loss, init, summary[-1])
    steps = pd.concat(steps_all, ignore_index=True)
    table = pd.DataFrame(summary)
    write_parquet(steps, out / "ondevice_steps.parquet")
    write_parquet(table, out / "ondevice.parquet")
    text = ("# On-device learning diagnostics\n\n"
            f"lr {a.lr}, evaluation streams of `{res}`; p_true: the probability of the true class of the incoming "
            "focus sample (new classes / swapped classes / all) before training on it, over its first and last 10 "
            "occurrences; update: mean |lr * delta| of the true class's output per buffer step; column_change: norm of "
            "the change of the true class's classifier column per stream sample.\n\n"
            + table.to_markdown(index=False, floatfmt=".4g") + "\n")
    if a.same_settings:
        same = same_settings(cfg, res, data_dir, out, log)
        cols = [c for c in ["scenario", "variant", "capacity", "lr", "loss", "new_class_init", "final_mean", "final_std",
                            "final_old_mean", "final_new_mean"] if c in same.columns]
        text += ("\n## TinyOL with TyBox's settings\n\nfinal accuracy over the evaluation repetitions; the pipeline's "
                 "rows tune each learner on its own validation streams\n\n"
                 + same[cols].to_markdown(index=False, floatfmt=".3f") + "\n")
    atomic_write_text(out / "ondevice.md", text)
    print(text)


if __name__ == "__main__":
    main()
