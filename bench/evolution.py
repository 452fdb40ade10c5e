"""Experiment: constraint handling in aging evolution, ``post_hoc`` (the paper) vs ``penalty``
(CNAS-style), at equal budget (same cycles and children per cycle) over several evolution seeds.

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
    jobs = [{"mode": mode, "seed": seed, "cycles": cycles, "evolution": cfg["evolution"],
             "constraints": constraints_from_config(cfg), "search_space": cfg["search_space"], "names": names,
             "ranked": ranked, "norm": norm, "scorer_args": scorer_args, "init_cache": str(init_cache),
             "run_dir": str(work / "runs" / f"{mode}-seed{seed}")}
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


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    main()
