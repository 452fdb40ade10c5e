"""Informativeness of each proxy: how much of its variation lies between architectures rather than
between initialisation seeds of the same architecture.

A seeded subset of the candidate nets is scored with several initialisation seeds (the same data
batch every time; :class:`tinyevo.proxies.ProxyScorer` seeds each net's init from (seed, arch)).
All finite scores of a proxy are ranked together (average ranks for ties) and a one-way ANOVA
with the architecture as the group is run on the ranks (ranks make the check robust to heavy
tails and to monotone transforms such as a log). With ``a`` nets, ``n_i`` scores of net i,
``N = sum n_i``, rank r_ij, net mean r_i and grand mean r:

- ``eta2 = SSB / SST``, SSB = sum_i n_i (r_i - r)^2, SST = sum_ij (r_ij - r)^2: the share of the
  rank variance that lies between architectures;
- ``icc``: the one-way intraclass correlation ICC(1) (Shrout and Fleiss, "Intraclass
  correlations: uses in assessing rater reliability", Psychological Bulletin 1979),
  (MSB - MSW) / (MSB + (k - 1) MSW), MSB = SSB / (a - 1), MSW = SSW / (N - a), SSW = SST - SSB,
  k = the number of seeds (for unequal group sizes k0 = (N - sum n_i^2 / N) / (a - 1), which is
  k when every net has every seed): the correlation between two seeds' scores of the same net.
  1 = the seed never changes a net's rank, 0 = the rank is seed noise;
- ``median_rank_spread``: the median over nets of (max - min rank over the net's seeds) / (N - 1),
  0 = every seed puts the net at the same place, 1 = first to last;
- ``informative = icc >= min_icc``.

Non-finite scores are dropped (``n_nonfinite``), and so are the remaining scores of a net left
with fewer than 2 finite seeds (they carry no within-net information; counted in
``n_nonfinite`` too). A proxy that is constant over everything left has eta2 = icc = NaN and is
not informative. Every proxy that is not informative is named in a log warning.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

log = logging.getLogger("tinyevo.proxies.informativeness")

COLUMNS = ["proxy", "n_nets", "n_seeds", "n_scores", "n_nonfinite", "eta2", "icc", "median_rank_spread",
           "informative"]
DEFAULTS = {"nets": 24, "seeds": 3, "min_icc": 0.5, "names": None}
KEY = "proxies.informativeness"


def check_settings(settings: Mapping[str, Any] | None) -> dict[str, Any]:
    """The ``proxies.informativeness`` section with defaults filled, validated (ValueError naming
    the key and the bad value)."""
    s = {**DEFAULTS, **dict(settings or {})}
    unknown = sorted(set(s) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"config section '{KEY}' has unknown keys {unknown} (known: {sorted(DEFAULTS)})")
    for k, lo in (("nets", 2), ("seeds", 2)):
        v = s[k]
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise ValueError(f"config key '{KEY}.{k}' must be an integer >= {lo}, got {v!r}")
        s[k] = int(v)
    v = s["min_icc"]
    if isinstance(v, bool) or not isinstance(v, (int, float, np.number)) or not math.isfinite(float(v)) \
            or not -1.0 <= float(v) <= 1.0:
        raise ValueError(f"config key '{KEY}.min_icc' must be a number in [-1, 1], got {v!r}")
    s["min_icc"] = float(v)
    if s["names"] is not None:
        if isinstance(s["names"], str) or not len(s["names"]):
            raise ValueError(f"config key '{KEY}.names' must be null or a non-empty list of proxy names, "
                             f"got {s['names']!r}")
        s["names"] = list(s["names"])
    return s


def pick_nets(archs: Sequence[str], n: int, seed: int) -> list[str]:
    """``min(n, len(archs))`` distinct archs drawn with numpy's Generator(``seed``), in their
    original order."""
    archs = list(archs)
    k = min(int(n), len(archs))
    idx = np.sort(np.random.default_rng(int(seed)).choice(len(archs), size=k, replace=False))
    return [archs[i] for i in idx]


def init_seeds(seed: int, n: int) -> list[int]:
    """The ``n`` initialisation seeds: ``seed, seed + 1, ..., seed + n - 1`` (the first is the one
    the score stage uses, so its scores come from the score cache)."""
    return [int(seed) + i for i in range(int(n))]


def seed_scores(space, archs: Sequence[str], names: Sequence[str], x, y, seeds: Sequence[int],
                device="cpu", cache_dir=None, threads: int = 1, progress: bool = False) -> pd.DataFrame:
    """Long table (arch, seed, <proxy>...) of every arch scored with every init seed, through the
    score cache when ``cache_dir`` is given."""
    from tinyevo.proxies.scorer import ProxyScorer

    frames = []
    for s in seeds:
        scorer = ProxyScorer(space, names, x, y, int(s), device=device, cache_dir=cache_dir, threads=threads)
        df = scorer.score(list(archs), progress=progress).drop(columns="cache_hit")
        log.info("init seed %d: %d nets, %d from the cache, %d scored", s, len(df), scorer.hits, scorer.misses)
        df.insert(1, "seed", int(s))
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def rank_anova(arch: Sequence, values: Sequence[float]) -> dict[str, float]:
    """The statistics of the module docstring for one proxy, from parallel sequences of the net
    (group) and score of every (net, seed) pair."""
    df = pd.DataFrame({"arch": list(arch), "v": np.asarray(values, dtype=np.float64)})
    n_total = len(df)
    df = df[np.isfinite(df["v"])]
    counts = df.groupby("arch", sort=False)["v"].transform("size")
    df = df[counts >= 2]
    out = {"n_nets": int(df["arch"].nunique()), "n_scores": int(len(df)), "n_nonfinite": int(n_total - len(df)),
           "eta2": math.nan, "icc": math.nan, "median_rank_spread": math.nan}
    a, n = out["n_nets"], out["n_scores"]
    if a < 2:
        return out
    r = df["v"].rank(method="average").to_numpy()
    g = df["arch"].to_numpy()
    groups = pd.Series(r).groupby(g, sort=False)
    n_i = groups.size().to_numpy(dtype=np.float64)
    mean_i = groups.mean().to_numpy()
    grand = r.mean()
    sst = float(((r - grand) ** 2).sum())
    ssb = float((n_i * (mean_i - grand) ** 2).sum())
    ssw = max(sst - ssb, 0.0)
    spread = (groups.max() - groups.min()).to_numpy() / (n - 1)
    out["median_rank_spread"] = float(np.median(spread))
    if sst <= 0:
        return out
    out["eta2"] = ssb / sst
    k0 = (n - float((n_i ** 2).sum()) / n) / (a - 1)
    msb = ssb / (a - 1)
    msw = ssw / (n - a)
    den = msb + (k0 - 1.0) * msw
    out["icc"] = (msb - msw) / den if den > 0 else math.nan
    return out


def informativeness_table(scores: pd.DataFrame, names: Sequence[str], min_icc: float = 0.5,
                          n_seeds: int | None = None, logger: logging.Logger | None = None) -> pd.DataFrame:
    """One row per proxy of ``names`` (columns :data:`COLUMNS`) from the long ``scores`` table
    (arch, seed, <proxy>...); warns about every proxy that is not informative."""
    logger = logger or log
    names = list(names)
    missing = [c for c in ("arch", "seed", *names) if c not in scores.columns]
    if missing:
        raise ValueError(f"seed score table has no column {missing} (columns: {list(scores.columns)})")
    k = int(scores["seed"].nunique()) if n_seeds is None else int(n_seeds)
    rows = []
    for p in names:
        st = rank_anova(scores["arch"], scores[p])
        informative = bool(math.isfinite(st["icc"]) and st["icc"] >= min_icc)
        rows.append({"proxy": p, "n_seeds": k, **st, "informative": informative})
        if st["n_nonfinite"]:
            logger.warning("proxy %s: %d of %d scores dropped as non-finite (or a net left with < 2 finite seeds)",
                           p, st["n_nonfinite"], st["n_nonfinite"] + st["n_scores"])
        if not informative:
            if math.isfinite(st["icc"]):
                logger.warning("proxy %s is mostly initialisation noise on this space: ICC %.3f < %s.min_icc %.3g "
                               "(between-architecture share of the rank variance eta2 %.3f; %d nets x %d seeds)",
                               p, st["icc"], KEY, min_icc, st["eta2"], st["n_nets"], k)
            else:
                logger.warning("proxy %s carries no ranking information on this space: it is constant (or has "
                               "too few finite scores) over %d nets x %d seeds", p, st["n_nets"], k)
    df = pd.DataFrame(rows, columns=COLUMNS)
    return df.astype({"n_nets": "int64", "n_seeds": "int64", "n_scores": "int64", "n_nonfinite": "int64",
                      "eta2": "float64", "icc": "float64", "median_rank_spread": "float64", "informative": "bool"})


def run_informativeness(candidates_path, data_dir, out_path, proxies: Mapping[str, Any],
                        settings: Mapping[str, Any] | None, search_space: Mapping[str, Any], device: str,
                        cache_dir=None) -> pd.DataFrame:
    """Stage function of rule ``proxy_informativeness``: ``settings`` is the
    ``proxies.informativeness`` section, ``proxies`` holds ``names``, ``batch_size``, ``seed`` and
    ``threads`` (``scoring.threads``). The net subset and the data batch are drawn with
    ``proxies.seed``; the init seeds are ``proxies.seed + 0 .. seeds - 1``. Writes
    :func:`informativeness_table` to ``out_path``."""
    from tinyevo.io import write_parquet
    from tinyevo.proxies.batch import make_batch
    from tinyevo.proxies.registry import check_names
    from tinyevo.proxies.stage import _candidates
    from tinyevo.runtime import log_header, pick_device, set_threads
    from tinyevo.space import SearchSpace

    s = check_settings(settings)
    names = check_names(s["names"] if s["names"] is not None else proxies["names"], int(proxies["batch_size"]))
    threads = int(proxies.get("threads", 1))
    set_threads(threads)
    seed = int(proxies["seed"])
    cand = _candidates(candidates_path)
    archs = pick_nets(cand["arch"].tolist(), s["nets"], seed)
    seeds = init_seeds(seed, s["seeds"])
    space = SearchSpace.from_config(search_space)
    x, y = make_batch(data_dir, int(proxies["batch_size"]), seed)
    log_header(log, "proxy informativeness", {"nets": f"{len(archs)} of {len(cand)}", "init seeds": seeds,
                                              "proxies": names, "batch": tuple(x.shape), "min_icc": s["min_icc"],
                                              "device": pick_device(device), "threads": threads})
    scores = seed_scores(space, archs, names, x, y, seeds, device=device, cache_dir=cache_dir, threads=threads,
                         progress=True)
    table = informativeness_table(scores, names, s["min_icc"], n_seeds=len(seeds))
    write_parquet(table, out_path)
    for r in table.itertuples(index=False):
        log.info("%-14s eta2 %.3f  icc %.3f  median rank spread %.3f  %s", r.proxy, r.eta2, r.icc,
                 r.median_rank_spread, "informative" if r.informative else "NOT informative")
    return table
