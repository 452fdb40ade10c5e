"""Rule-level entry point of the evolution stage: wires the real proxy scorer
(:class:`tinyevo.proxies.ProxyScorer`, its score cache and the shared data batch), the initial
pool's normalisation (:func:`tinyevo.proxies.ranking.standardise`: children get ``z_<proxy>``,
``avg``, ``r_<proxy>`` and ``score`` by the same ``ranking.method`` against the initial pool) and
the constraints (limits, ``fit_device``, guards) into :func:`evolve`, then writes history,
population and the winners table.

Parallel children: every proxy computation runs with P = ``scoring.threads`` torch threads (a
score's last bits depend on it, see :mod:`tinyevo.proxies.scorer`). With ``children_per_cycle``
B > 1 and the job's ``threads`` T >= 2P the children of a cycle are scored by ``min(B, T // P)``
worker processes (each with its own scorer, the same seeded batch and the shared on-disk cache).
Every net's initialisation is seeded from (seed, arch), so the scores do not depend on the worker,
nor on T. The workers are forked before this process runs any torch computation (and before CUDA
is touched: each worker resolves the device itself). Otherwise the batch is scored in-process.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
from typing import Any, Mapping

import pandas as pd

from tinyevo.io import read_parquet, write_parquet
from tinyevo.search.aging import EvolutionParams, ceiling_bounds, evolve, prepare_initial
from tinyevo.search.checkpoint import table_hash
from tinyevo.search.select import select_winners
from tinyevo.space import SearchSpace

log = logging.getLogger("tinyevo.search")

_WORKER: dict[str, Any] = {}


def _init_worker(args: Mapping[str, Any]) -> None:
    from tinyevo.proxies import ProxyScorer, make_batch
    from tinyevo.runtime import set_threads

    threads = int(args.get("threads", 1))
    set_threads(threads)
    space = SearchSpace.from_config(args["search_space"])
    x, y = make_batch(args["data_dir"], args["batch_size"], args["seed"])
    _WORKER["scorer"] = ProxyScorer(space, args["names"], x, y, args["seed"], device=args["device"],
                                    cache_dir=args["cache_dir"], threads=threads)


def _score_chunk(archs: list[str], flush: bool = True) -> pd.DataFrame:
    return _WORKER["scorer"].score(archs, flush=flush)


class ProxyEvaluator:
    """``evaluate(archs) -> DataFrame(arch, <proxy>..., cache_hit, z_<proxy>..., avg, [r_<proxy>...,]
    score)``: the real scorer (in-process or a pool of worker processes) + standardisation against
    the initial pool's normalisation table (its ``method`` column is the ranking method).
    ``scorer_args["threads"]`` is the scorer's torch thread count (``scoring.threads``)."""

    def __init__(self, scorer_args: Mapping[str, Any], norm: pd.DataFrame, workers: int = 1):
        from tinyevo.proxies.ranking import standardise

        self.standardise = standardise
        self.norm = norm
        self.workers = max(1, int(workers))
        self.pool = None
        self.scorer_cache_hits = 0
        self.scored = 0
        if self.workers > 1 and "fork" in mp.get_all_start_methods():
            self.pool = mp.get_context("fork").Pool(self.workers, initializer=_init_worker,
                                                    initargs=(dict(scorer_args),))
        else:
            if self.workers > 1:
                log.info("no 'fork' start method on this platform: scoring children in-process")
            self.workers = 1
            _init_worker(scorer_args)

    def __call__(self, archs: list[str]) -> pd.DataFrame:
        archs = list(archs)
        if self.pool is not None:
            chunks = [c for c in (archs[i::self.workers] for i in range(self.workers)) if c]
            parts = self.pool.map(_score_chunk, chunks)
            df = pd.concat(parts, ignore_index=True).drop_duplicates("arch").set_index("arch").loc[archs]
            df = df.reset_index()
        else:  # the cache is written every flush_every children and on close, not once per cycle
            df = _score_chunk(archs, flush=False)
        self.scored += len(df)
        self.scorer_cache_hits += int(df["cache_hit"].sum())
        return self.standardise(df, self.norm)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()
            self.pool.join()
            self.pool = None
        elif "scorer" in _WORKER:
            _WORKER["scorer"].flush()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()
            self.pool = None
        elif "scorer" in _WORKER:
            _WORKER["scorer"].flush()  # what was scored stays cached, also when the loop failed


def run_stage(*, initial_path, norm_path, data_dir, cache_dir, checkpoint_dir, history_out, population_out,
              selected_out, search_space: Mapping, constraints: Mapping, evolution: Mapping, proxies: Mapping,
              device: str = "auto", threads: int = 1, target: Mapping | None = None, accounting: str = "total",
              instruction_target: str | None = None, ranking: Mapping | None = None,
              logger: logging.Logger | None = None, pareto_out=None, hypervolume_out=None) -> dict:
    """Run the stage; returns a small summary (timings, counts) for the log / benchmarks.
    ``target``: the ``device:`` config section (``constraints.fit_device`` checks against it),
    ``accounting``: ``tybox.accounting``, ``instruction_target``: ``tybox.target`` (the instruction
    model of ``constraints.max_instructions``), ``ranking``: the ``ranking:`` section (checked against
    the method the normalisation table was made for)."""
    from tinyevo.proxies.ranking import norm_method, norm_proxies
    from tinyevo.space.constraints import Constraints

    from tinyevo.search.nsga2 import ALGORITHMS, NSGA2Params, check_objectives

    lg = logger or log
    p = EvolutionParams.from_config(evolution)
    algorithm = evolution.get("algorithm", "aging")
    if algorithm not in ALGORITHMS:
        raise ValueError(f"config key 'evolution.algorithm' is {algorithm!r}; use one of {list(ALGORITHMS)}")
    objectives = check_objectives(evolution["objectives"])  # the schema's default: [flash, peak_sram]
    nsga = NSGA2Params.from_config(evolution.get("nsga2")) if algorithm == "nsga2" else None
    cons = Constraints.from_config(constraints, target, accounting, instruction_target)
    space = SearchSpace.from_config(search_space)
    cons.check_space(space)
    names = list(proxies["names"])
    initial_raw = read_parquet(initial_path, "ranked initial nets")
    norm = read_parquet(norm_path, "proxy normalisation table")
    method = norm_method(norm)
    if ranking is not None and ranking.get("method", method) != method:
        raise ValueError(f"normalisation table {norm_path} was made for ranking.method {method!r}, config key "
                         f"'ranking.method' is {ranking['method']!r}: re-run the rank stage")
    if sorted(norm_proxies(norm)) != sorted(names):
        raise ValueError(f"normalisation table {norm_path} covers proxies {norm_proxies(norm)}, "
                         f"config key 'proxies.names' is {names}")
    initial = prepare_initial(initial_raw, names, space, what=f"ranked initial nets {initial_path}", method=method)
    scorer_threads = int(proxies.get("threads", 1))
    batch = nsga.n_offspring if nsga is not None else int(p.children_per_cycle)
    workers = max(1, min(int(threads) // scorer_threads, batch))
    scorer_args = {"search_space": dict(search_space), "names": names, "data_dir": str(data_dir),
                   "batch_size": int(proxies["batch_size"]), "seed": int(proxies["seed"]), "device": device,
                   "threads": scorer_threads, "cache_dir": str(cache_dir)}
    key_extra = {"norm": table_hash(norm), "scorer": {k: v for k, v in scorer_args.items() if k != "cache_dir"}}
    from tinyevo.runtime import progress

    lg.info("ranking.method %s; constraints: %s; algorithm %s", method, cons.describe(), algorithm)
    with ProxyEvaluator(scorer_args, norm, workers=workers) as ev:
        if nsga is not None:
            from tinyevo.search.nsga2 import evolve_nsga2

            res = evolve_nsga2(initial, ev, space, names, cons, p, nsga, objectives, checkpoint_dir=checkpoint_dir,
                               key_extra=key_extra, progress=progress, method=method)
        else:
            res = evolve(initial, ev, space, names, cons, p, checkpoint_dir=checkpoint_dir,
                         key_extra=key_extra, progress=progress, method=method)
        ev.close()
    # One cache part file per scored batch accumulates over the cycles: merge them now that this
    # stage (the only writer at this point of the DAG) is done.
    from tinyevo.proxies import ScoreCache

    ScoreCache(cache_dir).compact()
    h = res.history
    selected = select_winners(h, names, cons)  # raises before anything is written
    from tinyevo.search.pareto import hypervolume_table, pareto_table

    front = pareto_table(h, objectives)
    hv = hypervolume_table(h, objectives, cons)
    write_parquet(h, history_out)
    write_parquet(res.population, population_out)
    write_parquet(selected, selected_out)
    if pareto_out is not None:
        write_parquet(front, pareto_out)
    if hypervolume_out is not None:
        write_parquet(hv, hypervolume_out)
    lg.info("Pareto set (score vs %s): %d feasible nets; hypervolume %.4f after %d children",
            ", ".join(objectives), len(front), hv["hypervolume"].iloc[-1], int(hv["evaluated"].iloc[-1]))
    t = res.timings
    summary = {"nets": len(h), "children": int((h["cycle"] > 0).sum()),
               "feasible_share": float(h["feasible"].mean()), "trainable_share": float(h["trainable"].mean()),
               "duplicates": int(h["cache_hit"].sum()),
               "resumed_from": res.resumed_from, "total_s": t["total_s"], "scoring_s": t["scoring_s"],
               "measure_s": t["measure_s"], "measured": t["measured"],
               "cycles_run": t["cycles"], "scorer_cache_hits": ev.scorer_cache_hits, "workers": ev.workers,
               "beyond_ceiling": t["beyond_ceiling"]}
    lg.info("history: %d nets (%d children, %d duplicates), %.1f %% feasible, %.1f %% trainable",
            summary["nets"], summary["children"], summary["duplicates"], 100 * summary["feasible_share"],
            100 * summary["trainable_share"])
    if t["measured"]:
        lg.info("measures and flags: %d distinct nets in %.2f s (%.2f ms per net)", t["measured"], t["measure_s"],
                1000 * t["measure_s"] / t["measured"])
    if t["cycles"]:
        lg.info("%d cycles in %.1f s (%.3f s/cycle), %.0f %% of it scoring; scorer cache hits %d of %d nets scored",
                t["cycles"], t["total_s"], t["total_s"] / t["cycles"], 100 * t["scoring_s"] / max(t["total_s"], 1e-9),
                ev.scorer_cache_hits, ev.scored)
    if p.ceiling is not None:
        bounds = ", ".join(f"{k} {v:,}" for k, v in ceiling_bounds(p.ceiling, cons).items()) or "no limits to scale"
        lg.info("evolution.ceiling %g x the constraints (%s): %d children beyond it, not scored", p.ceiling, bounds,
                t["beyond_ceiling"])
    for r in selected.itertuples():
        lg.info("%-2s %-6s score %8.4f  avg %8.4f  params %s  macs %s  %s", r.net, r.phase, r.score, r.avg, r.params,
                r.macs, r.arch)
    return summary
