"""Stage functions behind the score and rank rules (one call per rule script)."""

from __future__ import annotations

import logging
import time
from typing import Any, Mapping, Sequence

import pandas as pd

from tinyevo.io import read_parquet, write_parquet

log = logging.getLogger("tinyevo.proxies")


def _candidates(path) -> pd.DataFrame:
    cand = read_parquet(path, "candidate table")
    for col in ("index", "arch"):
        if col not in cand.columns:
            raise ValueError(f"candidate table {path} has no {col!r} column (columns: {list(cand.columns)})")
    if len(cand) == 0:
        raise ValueError(f"candidate table {path} is empty: no nets to score (check the search_space config)")
    if cand["arch"].duplicated().any():
        dup = cand.loc[cand["arch"].duplicated(), "arch"].iloc[0]
        raise ValueError(f"candidate table {path} lists arch {dup!r} more than once")
    return cand


def shard_rows(costs: Sequence[float], shard: int, shards: int) -> list[int]:
    """Row positions of shard ``shard`` of ``shards``: the rows sorted by ``costs`` (largest
    first, ties in row order) and dealt out in boustrophedon order (0, 1, .., S-1, S-1, .., 1, 0,
    0, 1, ..), so every shard gets the same number of nets (+-1) and nearly the same total cost
    (the grid orders nets in blocks of similar size, so every S-th row would give some shards
    only the small end of a gene). Returned in row order. A pure function of the costs: the
    shards, hence the tables, do not depend on the core count."""
    shards, shard = int(shards), int(shard)
    if shards < 1:
        raise ValueError(f"config key 'scoring.shards' must be >= 1, got {shards}")
    if not 0 <= shard < shards:
        raise ValueError(f"shard {shard} is outside 0..{shards - 1} (config key 'scoring.shards' = {shards})")
    order = sorted(range(len(costs)), key=lambda i: (-float(costs[i]), i))
    mine = [pos for rank, pos in enumerate(order)
            if (rank % shards if (rank // shards) % 2 == 0 else shards - 1 - rank % shards) == shard]
    return sorted(mine)


def shard_costs(cand: pd.DataFrame, space) -> list[float]:
    """The scoring cost estimate of every candidate: its MACs per image (the ``macs`` column, else
    the analytic cost model of its NetSpec); the forward of the batch, hence a net's proxy time,
    grows with it."""
    if "macs" in cand.columns:
        return [float(v) for v in cand["macs"]]
    from tinyevo.space.cost import cost_of

    return [float(cost_of(space.netspec(a)).macs) for a in cand["arch"]]


def score_shard(candidates_path, data_dir, out_path, shard: int, shards: int, proxies: Mapping[str, Any],
                search_space: Mapping[str, Any], device: str, cache_dir) -> pd.DataFrame:
    """Score one shard of the candidate table -> ``out_path`` (index, arch, <proxy>..., cache_hit).
    ``proxies["threads"]`` (``scoring.threads``) is the torch thread count of the scoring, whatever
    thread count Snakemake gave the job: the scores depend on it."""
    from tinyevo.proxies.batch import make_batch
    from tinyevo.proxies.scorer import ProxyScorer
    from tinyevo.runtime import log_header, set_threads
    from tinyevo.space import SearchSpace

    threads = int(proxies.get("threads", 1))
    set_threads(threads)
    cand = _candidates(candidates_path)
    space = SearchSpace.from_config(search_space)
    costs = shard_costs(cand, space)
    rows = shard_rows(costs, int(shard), int(shards))
    part = cand.iloc[rows]
    names = list(proxies["names"])
    x, y = make_batch(data_dir, int(proxies["batch_size"]), int(proxies["seed"]))
    scorer = ProxyScorer(space, names, x, y, int(proxies["seed"]), device=device, cache_dir=cache_dir,
                         threads=threads)
    work = sum(costs[i] for i in rows) / max(sum(costs), 1.0)
    log_header(log, "score", {"shard": f"{int(shard) + 1} of {int(shards)}",
                              "nets": f"{len(part)} ({100 * work:.1f} % of the MACs)",
                              "proxies": names, "batch": tuple(x.shape), "seed": proxies["seed"],
                              "device": scorer.device, "threads": scorer.threads, "cache": f"{cache_dir} ({len(scorer.cache)} scores)",
                              "data batch": scorer.fingerprint[:16]})
    t0 = time.perf_counter()
    df = scorer.score(part["arch"].tolist(), progress=True)
    dt = time.perf_counter() - t0
    df.insert(0, "index", part["index"].to_numpy())
    write_parquet(df, out_path)
    log.info("cache: %d hits, %d misses (nets scored) of %d nets; %.1f s, %.2f nets/s computed",
             scorer.hits, scorer.misses, len(part), dt, scorer.misses / dt if dt > 0 and scorer.misses else 0.0)
    return df


def gather_scores(shard_paths: Sequence, candidates_path, out_path, cache_dir=None) -> pd.DataFrame:
    """Concatenate the shard tables in candidate order -> ``out_path``; compacts the cache."""
    from tinyevo.proxies.cache import ScoreCache

    cand = _candidates(candidates_path)
    parts = [read_parquet(p, "score shard") for p in shard_paths]
    df = pd.concat(parts, ignore_index=True)
    missing = sorted(set(cand["arch"]) - set(df["arch"]))
    if missing:
        raise ValueError(f"{len(missing)} candidates have no score in the shards, e.g. {missing[:3]}")
    df = df.drop_duplicates("arch").set_index("arch").loc[cand["arch"]].reset_index()
    df = df[["index", "arch", *[c for c in df.columns if c not in ("index", "arch")]]]
    write_parquet(df, out_path)
    hits = int(df["cache_hit"].sum())
    log.info("gathered %d nets from %d shards: %d from the cache, %d scored", len(df), len(parts), hits, len(df) - hits)
    if cache_dir is not None:
        cache = ScoreCache(cache_dir)
        path = cache.compact()
        log.info("score cache %s: %d scores in %s", cache_dir, len(cache), path.name if path else "no part")
    return df


def rank_stage(candidates_path, scores_path, names: Sequence[str], weights: Mapping[str, float] | None,
               out_rank, out_norm, out_spread, method: str = "zscore") -> pd.DataFrame:
    """Candidates + proxies + z_<proxy> + avg (+ r_<proxy>) + score + rank, the pool normalisation
    table and the spread table (:func:`tinyevo.proxies.ranking.rank_population`); ``method`` is
    ``ranking.method``."""
    from tinyevo.proxies.ranking import check_method, rank_population

    check_method(method)  # a bad value fails before any file is read
    cand = _candidates(candidates_path)
    scores = read_parquet(scores_path, "score table")
    ranked, norm, spread = rank_population(cand, scores, list(names), weights, method=method, logger=log)
    write_parquet(norm, out_norm)
    write_parquet(spread, out_spread)
    write_parquet(ranked, out_rank)
    moments = norm[norm["kind"] == "moments"]
    for r in moments.itertuples(index=False):
        log.info("normalisation %-10s mean %.6g  std %.6g  weight %g  (%d pool scores)", r.proxy, r.mean, r.std,
                 r.weight, int(((norm["kind"] == "pool") & (norm["proxy"] == r.proxy)).sum()))
    for r in spread.itertuples(index=False):
        log.info("spread %-10s min %.6g  max %.6g  cv %.3g", r.proxy, r.min, r.max, r.cv)
    best = ranked.sort_values("rank").iloc[0]
    log.info("ranking.method %s: best score %.4f (AVG %.4f): %s (index %s)", method, best["score"], best["avg"],
             best["arch"], best["index"])
    for flag in ("feasible", "trainable"):
        if flag not in ranked.columns:
            continue
        sub = ranked[ranked[flag]].sort_values("rank")
        if len(sub):
            log.info("best %s net: score %.4f (AVG %.4f): %s (index %s); %d of %d nets %s", flag,
                     sub.iloc[0]["score"], sub.iloc[0]["avg"], sub.iloc[0]["arch"], sub.iloc[0]["index"], len(sub),
                     len(ranked), flag)
        else:
            log.warning("no net of the initial population is %s (see the enumerate log for the constraints)", flag)
    return ranked
