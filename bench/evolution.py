"""Experiments on the search, at equal budget over several evolution seeds.

``--compare constraints`` (the default): constraint handling in aging evolution, ``post_hoc``
(the paper) vs ``penalty`` (CNAS-style), same cycles and children per cycle.

``--compare algorithms``: ``aging`` vs ``nsga2`` (pymoo's NSGA-II) with the config's constraints
mode, at an equal number of evaluated children (``cycles``). Per run: the hypervolume of the
feasible nets found (``tinyevo.search.pareto``, fixed reference point from the shared initial
pool), the size of their Pareto set, the best feasible score, and, with ``--train-k K``, a small
final round: the top-K candidates of the deployment rule (``selection``, with
``final_round.min_distance``) trained ``--train-epochs`` epochs with the config's recipe, the
best by validation accuracy deployed; its test accuracy and flash are reported.

    python bench/evolution.py --compare algorithms --jobs 2 --train-k 4 --train-epochs 5

Per run it reports the best feasible AVG in the history, the share of feasible nets in the
history (all nets, and children only), the wall time per cycle and the share of it spent in
scoring (the real proxy scorer). The initial population is scored once; every run starts from
a copy of that score cache, so a run never profits from children scored by an earlier run.

    python bench/evolution.py --jobs 2             # default config: 512 nets, 500 cycles, 3 seeds, 2 runs at a time
    python bench/evolution.py --population-size 64 --cycles 40 --batch-size 16   # reduced

Reductions (``--population-size`` starts from a seeded random subset of the configured initial
nets, normalised over that subset; ``--batch-size`` shrinks the proxy batch, ``--resolution`` the
input) are printed with the results. Writes ``<workdir>/runs.csv`` and ``<workdir>/summary.csv``.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow"))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from tinyevo.config import load_config  # noqa: E402
from tinyevo.io import write_parquet  # noqa: E402
from tinyevo.runtime import set_threads, setup_logging  # noqa: E402
from tinyevo.search import EvolutionParams, evolve  # noqa: E402
from tinyevo.search.stage import ProxyEvaluator  # noqa: E402
from tinyevo.space import constraints_from_config, space_from_config  # noqa: E402


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(REPO / "config" / "config.yaml"))
    ap.add_argument("--cycles", type=int, default=None, help="default: evolution.cycles of the config")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--population-size", type=int, default=None,
                    help="evolve from a seeded random subset of this many of the configured initial nets")
    ap.add_argument("--batch-size", type=int, default=None, help="proxy batch size (default: the config's)")
    ap.add_argument("--resolution", type=int, default=None, help="input resolution (default: the config's)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads per run (the scorer's, like scoring.threads; children in-process)")
    ap.add_argument("--jobs", type=int, default=1,
                    help="runs at the same time (worker processes); timings are then taken side by side")
    ap.add_argument("--device", default=None, help="default: compute.device of the config")
    ap.add_argument("--workdir", default=str(REPO / "results" / "bench" / "evolution"))
    ap.add_argument("--compare", choices=("constraints", "algorithms"), default="constraints")
    ap.add_argument("--train-k", type=int, default=0,
                    help="--compare algorithms: candidates of the small final round (0 = none)")
    ap.add_argument("--train-epochs", type=int, default=5, help="epochs of each final-round training")
    return ap.parse_args(argv)


def main(argv=None) -> pd.DataFrame:
    a = parse_args(argv)
    log = setup_logging()
    over: dict = {}
    if a.batch_size:
        over["proxies"] = {"batch_size": a.batch_size}
    if a.resolution:
        over["dataset"] = {"resolution": a.resolution}
    cfg, _ = load_config([a.config], overrides=over)
    cycles = cfg["evolution"]["cycles"] if a.cycles is None else a.cycles
    device = a.device or cfg["compute"]["device"]
    work = Path(a.workdir)
    set_threads(a.threads)

    from tinyevo.data import prepare
    from tinyevo.proxies import ProxyScorer, make_batch, ranking

    data_dir = work / "data" / cfg["dataset"]["name"] / str(cfg["dataset"]["resolution"])
    if not (data_dir / "stats.parquet").is_file():
        prepare(cfg["dataset"], data_dir, threads=a.threads)
    space = space_from_config(cfg)
    names, pcfg = cfg["proxies"]["names"], cfg["proxies"]
    init_cache = work / "cache" / "initial"
    x, y = make_batch(data_dir, pcfg["batch_size"], pcfg["seed"])
    scorer = ProxyScorer(space, names, x, y, pcfg["seed"], device=device, cache_dir=init_cache, threads=a.threads)
    cand = pd.DataFrame([{"index": i, "arch": s} for i, s, _ in space.iter_arches()])
    if a.population_size and a.population_size < len(cand):  # seeded subset of the configured nets
        cand = cand.sample(n=a.population_size, random_state=0).sort_values("index").reset_index(drop=True)
    t0 = time.perf_counter()
    scores = scorer.score(cand["arch"].tolist(), progress=True)
    t_init = time.perf_counter() - t0
    scorer.cache.compact()
    ranked, norm, _ = ranking.rank_population(cand, scores, names, pcfg.get("weights"))
    log.info("initial population: %d nets scored in %.1f s (%d from the cache)", len(cand), t_init,
             int(scores["cache_hit"].sum()))

    scorer_args = {"search_space": cfg["search_space"], "names": names, "data_dir": str(data_dir),
                   "batch_size": int(pcfg["batch_size"]), "seed": int(pcfg["seed"]), "device": device,
                   "threads": a.threads}
    # longest runs first (post_hoc drifts to large nets), so a pool of --jobs workers stays balanced
    common = {"cycles": cycles, "evolution": cfg["evolution"], "constraints": constraints_from_config(cfg),
              "search_space": cfg["search_space"], "names": names, "ranked": ranked, "norm": norm,
              "scorer_args": scorer_args, "init_cache": str(init_cache)}
    if a.compare == "algorithms":
        mode = cfg["evolution"]["constraints"]
        common.update(objectives=list(cfg["evolution"]["objectives"]), train_k=a.train_k,
                      train_epochs=a.train_epochs, train=cfg["train"], selection=cfg["selection"],
                      min_distance=cfg["final_round"]["min_distance"], data_dir=str(data_dir), device=device)
        jobs = [{**common, "mode": mode, "algorithm": alg, "seed": seed,
                 "run_dir": str(work / "runs" / f"{alg}-seed{seed}")}
                for alg in ("aging", "nsga2") for seed in a.seeds]
    else:
        jobs = [{**common, "mode": mode, "seed": seed, "run_dir": str(work / "runs" / f"{mode}-seed{seed}")}
                for mode in ("post_hoc", "penalty") for seed in a.seeds]
    if a.jobs > 1:
        # spawn, not fork: this process has already run torch (the initial scoring)
        ctx = mp.get_context("spawn")
        with ProcessPoolExecutor(max_workers=a.jobs, mp_context=ctx) as pool:
            rows = list(pool.map(run_one, jobs))
    else:
        rows = [run_one(j) for j in jobs]
    for r in rows:
        r["concurrent_runs"] = a.jobs
    runs = pd.DataFrame(rows)
    if a.compare == "algorithms":
        keep = [c for c in ("hypervolume", "front", "best_feasible_score", "deployed_val_acc", "deployed_test_acc",
                            "deployed_flash", "s_per_child") if c in runs.columns]
        summary = runs.groupby("algorithm")[keep].agg(["mean", "std"])
    else:
        summary = runs.groupby("mode")[["best_feasible_avg", "feasible_share_history", "feasible_share_children",
                                        "s_per_cycle", "scoring_share"]].agg(["mean", "std"])
    work.mkdir(parents=True, exist_ok=True)
    runs.to_csv(work / "runs.csv", index=False)
    summary.to_csv(work / "summary.csv")
    print(f"\nconfig {a.config}: {len(cand)} initial nets (of {space.population_mode} "
          f"{len(space.initial_population())}), {cycles} cycles, "
          f"S={cfg['evolution']['sample_size']}, B={cfg['evolution']['children_per_cycle']}, proxies {names}, "
          f"batch {pcfg['batch_size']}, {cfg['dataset']['resolution']} px, limits "
          f"{ {k: v for k, v in cfg['constraints'].items() if v is not None} }, device {device}, threads {a.threads} per run, {a.jobs} run(s) at a time")
    print(f"initial scoring: {t_init:.1f} s for {len(cand)} nets\n")
    print(runs.to_markdown(index=False, floatfmt=".4g") if _has_tabulate() else runs.to_string(index=False))
    print()
    print(summary.to_string())
    return runs


def run_one(job: dict) -> dict:
    """One evolution run (mode, seed) from a cold copy of the initial score cache (the scorer sets
    its torch thread count, ``scorer_args["threads"]``)."""
    log = setup_logging()
    space = space_from_config({"search_space": job["search_space"]})
    run_dir = Path(job["run_dir"])
    shutil.rmtree(run_dir, ignore_errors=True)
    shutil.copytree(job["init_cache"], run_dir / "cache")  # cold start: only the initial scores
    evo = {**job["evolution"], "cycles": job["cycles"], "constraints": job["mode"], "seed": job["seed"]}
    p = EvolutionParams.from_config(evo)
    if "algorithm" in job:
        return run_algorithm(job, space, p, run_dir, log)
    with ProxyEvaluator({**job["scorer_args"], "cache_dir": str(run_dir / "cache")}, job["norm"]) as ev:
        res = evolve(job["ranked"], ev, space, job["names"], job["constraints"], p)
        ev.close()
    h = res.history
    write_parquet(h, run_dir / "history.parquet")
    kids = h[h["cycle"] > 0]
    feas = h[h["feasible"]]
    t = res.timings
    row = {
        "mode": job["mode"], "seed": job["seed"], "cycles": job["cycles"], "nets": len(h),
        "best_feasible_avg": float(feas["avg"].max()) if len(feas) else np.nan,
        "best_feasible_avg_initial": float(h.loc[(h["cycle"] == 0) & h["feasible"], "avg"].max()),
        "feasible_share_history": float(h["feasible"].mean()),
        "feasible_share_children": float(kids["feasible"].mean()) if len(kids) else np.nan,
        "duplicates": int(h["cache_hit"].sum()),
        "wall_s": t["total_s"],
        "s_per_cycle": t["total_s"] / max(t["cycles"], 1),
        "scoring_share": t["scoring_s"] / max(t["total_s"], 1e-12),
    }
    log.info("%s", row)
    return row


def run_algorithm(job: dict, space, p, run_dir: Path, log) -> dict:
    """One (algorithm, seed) run of ``--compare algorithms``."""
    from tinyevo.search.nsga2 import NSGA2Params, evolve_nsga2
    from tinyevo.search.pareto import hypervolume_table, pareto_table

    objectives = job["objectives"]
    with ProxyEvaluator({**job["scorer_args"], "cache_dir": str(run_dir / "cache")}, job["norm"]) as ev:
        if job["algorithm"] == "nsga2":
            res = evolve_nsga2(job["ranked"], ev, space, job["names"], job["constraints"], p,
                               NSGA2Params.from_config(job["evolution"].get("nsga2")), objectives)
        else:
            res = evolve(job["ranked"], ev, space, job["names"], job["constraints"], p)
        ev.close()
    h = res.history
    write_parquet(h, run_dir / "history.parquet")
    hv = hypervolume_table(h, objectives, job["constraints"])
    front = pareto_table(h, objectives)
    write_parquet(hv, run_dir / "hypervolume.parquet")
    write_parquet(front, run_dir / "pareto.parquet")
    kids = h[h["cycle"] > 0]
    feas = h[h["feasible"] & np.isfinite(h["score"].to_numpy(float))]
    t = res.timings
    row = {"algorithm": job["algorithm"], "seed": job["seed"], "children": len(kids),
           "hypervolume": float(hv["hypervolume"].iloc[-1]), "hypervolume_initial": float(hv["hypervolume"].iloc[0]),
           "front": len(front), "best_feasible_score": float(feas["score"].max()) if len(feas) else np.nan,
           "feasible_share_children": float(kids["feasible"].mean()) if len(kids) else np.nan,
           "wall_s": t["total_s"], "s_per_child": t["total_s"] / max(len(kids), 1)}
    if job["train_k"] > 0:
        row.update(mini_final_round(job, space, h, log))
    log.info("%s", row)
    return row


def mini_final_round(job: dict, space, h: pd.DataFrame, log) -> dict:
    """The top ``train_k`` candidates of the deployment rule, each trained ``train_epochs``
    epochs (seed from the arch, as the final round); the best by validation accuracy is deployed."""
    from tinyevo.space import cost_of
    from tinyevo.train import validation as V
    from tinyevo.train.final_round import arch_seed, select_candidates

    cand = select_candidates(h, "C", job["train_k"], min_distance=int(job["min_distance"]), space=space,
                             selection=job["selection"])
    from tinyevo.runtime import pick_device

    splits = V.load_splits(job["data_dir"])
    device = str(pick_device(job["device"]))
    best = None
    for arch in cand["arch"]:
        s = {**job["train"], "epochs": int(job["train_epochs"]), "seed": arch_seed(int(job["train"].get("seed") or 0),
                                                                                   arch)}
        r = V.train_eval(space.netspec(arch), splits, s, device=device, logger=log)
        log.info("%s: val %.4f test %.4f", arch, r["val_acc"], r["test_acc"])
        if best is None or (np.nan_to_num(r["val_acc"], nan=-1.0) > np.nan_to_num(best[1]["val_acc"], nan=-1.0)):
            best = (arch, r)
    arch, r = best
    return {"deployed": arch, "deployed_val_acc": float(r["val_acc"]), "deployed_test_acc": float(r["test_acc"]),
            "deployed_flash": int(cost_of(space.netspec(arch)).flash)}


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    main()
