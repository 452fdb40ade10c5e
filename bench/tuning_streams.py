"""How many validation streams the scenario tuning needs: the choice's stability and its regret,
measured on validation streams alone, on a finished run.

Per (scenario, variant), the sweep of ``scenarios.tune`` (every grid point, the pipeline's
criterion: mean validation accuracy after the change point) runs on ``2 * --pool`` seeded
validation streams (:func:`tinyevo.scenarios.stage.validation_setup`: training images no
evaluation stream or set contains). The first ``--pool`` streams are the candidates a tuning
chooses from, the others the judge:

- for each size R of ``--sizes``, ``--subsets`` seeded random subsets of R candidate streams (all
  of them once when R = ``--pool``, and the pipeline's own choice: streams 0..R-1) each choose the
  grid point with the best mean criterion (ties: the earlier point, as the pipeline);
- the judge streams, which chose nothing, score that choice: ``regret`` = judge criterion of the
  judge's best point - judge criterion of the chosen point (accuracy points), and ``agree`` = the
  share of subsets choosing the judge's best point.

No evaluation stream or set is read. The smallest R whose regret is near that of all candidate
streams is the one worth its cost (the tuning job's time grows linearly with R).

    python bench/tuning_streams.py --results results                   # all scenarios and variants
    python bench/tuning_streams.py --results results --scenarios incremental --variants tybox float
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow"))
sys.path.insert(0, str(REPO / "bench"))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ondevice import open_run, run_parser  # noqa: E402
from tinyevo.io import atomic_write_text, write_parquet  # noqa: E402
from tinyevo.scenarios import scenario_from_config  # noqa: E402
from tinyevo.scenarios.setup import VARIANTS  # noqa: E402
from tinyevo.scenarios.stage import fixed_settings, validation_setup  # noqa: E402
from tinyevo.scenarios.tuning import validation_criteria  # noqa: E402


def choices(crit: np.ndarray, size: int, n_subsets: int, rng: np.random.Generator) -> np.ndarray:
    """Grid point chosen by each of ``n_subsets`` random subsets of ``size`` rows of ``crit``
    (streams x points): the first maximum of the subset's mean, as the pipeline chooses."""
    n = crit.shape[0]
    if size >= n:
        return np.array([int(np.argmax(crit.mean(axis=0)))])
    return np.array([int(np.argmax(crit[rng.choice(n, size, replace=False)].mean(axis=0))) for _ in range(n_subsets)])


def stability(crit: np.ndarray, pool: int, sizes, n_subsets: int, seed: int) -> list[dict]:
    """Rows per size R: mean / 90th-percentile regret (points) and agreement of R-stream choices
    among the first ``pool`` streams, judged on the others; and the pipeline's own choice
    (streams 0..R-1)."""
    cand, judge = crit[:pool], crit[pool:]
    jmean = judge.mean(axis=0)
    best = int(np.argmax(jmean))
    rows = []
    for r in sizes:
        rng = np.random.default_rng(np.random.SeedSequence([seed, r]))
        ch = choices(cand, r, n_subsets, rng)
        regret = 100.0 * (jmean[best] - jmean[ch])
        own = int(np.argmax(cand[:r].mean(axis=0)))
        rows.append({"streams": r, "subsets": len(ch), "regret_mean": float(regret.mean()),
                     "regret_p90": float(np.percentile(regret, 90)), "agree": float((ch == best).mean()),
                     "distinct_choices": int(len(np.unique(ch))), "own_choice": own,
                     "own_regret": float(100.0 * (jmean[best] - jmean[own]))})
    return rows


def main(argv=None):
    ap = run_parser(__doc__, "tuning_streams")
    ap.add_argument("--scenarios", nargs="+", default=["concept_drift", "incremental", "transfer"])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    ap.add_argument("--pool", type=int, default=20, help="candidate streams (as many more judge)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[1, 2, 3, 5, 10, 20])
    ap.add_argument("--subsets", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    if max(a.sizes) > a.pool or min(a.sizes) < 1:
        ap.error(f"--sizes must lie in 1..--pool ({a.pool}), got {a.sizes}")
    log, cfg, res, out, data_dir = open_run(a)
    sc_cfg, tybox = cfg["scenarios"], cfg["tybox"]
    tune = dict(sc_cfg["tune"], repetitions=2 * a.pool)
    rows, grid_rows, t_all = [], [], time.perf_counter()
    for name in a.scenarios:
        sc = scenario_from_config(name, sc_cfg, cfg["search_space"]["num_classes"], tybox["lr"],
                                  tybox.get("loss", "mse_softmax"))
        lr, loss = fixed_settings(name, sc_cfg, tybox)
        for variant in a.variants:
            t0 = time.perf_counter()
            net = sc.net
            setup = validation_setup(sc, variant, data_dir, tune, tflite=res / "compress" / net / "fe_int8.tflite",
                                     tybox_dir=res / "tybox" / net / "src", model_path=res / "train" / net / "model.pt",
                                     device=cfg["device"], tybox=tybox, compute_device="cpu", fixed_lr=lr,
                                     fixed_loss=loss, log=log)
            crit = validation_criteria(setup.feats, setup.W, setup.b, setup.scale, setup.zero_point, setup.capacity,
                                       setup.scenario, setup.draws, setup.points)["criterion"]  # (streams, points)
            secs = time.perf_counter() - t0
            for i, (plr, ploss, pinit) in enumerate(setup.points):
                grid_rows.append({"scenario": name, "variant": variant, "point": i, "lr": plr, "loss": ploss,
                                  "new_class_init": pinit, "candidate_mean": float(crit[:a.pool, i].mean()),
                                  "judge_mean": float(crit[a.pool:, i].mean()),
                                  "judge_se": float(crit[a.pool:, i].std(ddof=1) / np.sqrt(a.pool))})
            for r in stability(crit, a.pool, sorted(a.sizes), a.subsets, a.seed):
                rows.append({"scenario": name, "variant": variant, **r, "sweep_s": secs})
            log.info("%s / %s: %d streams x %d points in %.0f s", name, variant, crit.shape[0], crit.shape[1], secs)
    table, grid_table = pd.DataFrame(rows), pd.DataFrame(grid_rows)
    write_parquet(table, out / "stability.parquet")
    write_parquet(grid_table, out / "grid.parquet")
    overall = table.groupby("streams")[["regret_mean", "regret_p90", "agree", "own_regret"]].mean().reset_index()
    text = ("# Validation streams of the scenario tuning\n\n"
            f"results `{res}`; {a.pool} candidate + {a.pool} judge validation streams per (scenario, variant); "
            f"{a.subsets} subsets per size; regret in accuracy points on the judge streams; "
            f"{time.perf_counter() - t_all:.0f} s\n\n## Mean over (scenario, variant)\n\n"
            + overall.to_markdown(index=False, floatfmt=".3f") + "\n\n## Per (scenario, variant)\n\n"
            + table.to_markdown(index=False, floatfmt=".3f") + "\n\n## Grid points\n\n"
            + grid_table.to_markdown(index=False, floatfmt=".4f") + "\n")
    atomic_write_text(out / "tuning_streams.md", text)
    print(text)


if __name__ == "__main__":
    main()
