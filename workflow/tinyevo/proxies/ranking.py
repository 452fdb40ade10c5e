"""Ranking nets by their zero-cost proxy scores (``ranking.method``), always against the FIXED
initial population (the pool), so that nets created later (evolution children) are comparable.

Per proxy p with weight w_p (``proxies.weights``), over the pool's finite scores:

* ``z_<p>`` = (x - mean) / std with the sample std (ddof=1); ``avg`` = sum_p w_p z_p / sum_p w_p
  is the AVG ranking of Laganà, Monaco, Scanu, "Genetically Mutated Network with Dynamic
  Evaluation for Tiny Devices" (equal weights there), kept exact. A proxy that is constant over
  the pool (std 0) gets z = 0 for every net. A NaN score in a weighted proxy makes
  ``avg = -inf``.
* ``r_<p>`` (method ``rank``) = the mid-rank empirical CDF of x in the pool,
  (#{pool < x} + 0.5 #{pool == x}) / n_finite, in [0, 1]: a pool member gets
  (average rank - 0.5) / n, ties share the mid-rank, a value above every pool value gets 1. A
  NaN score counts as 0 (worst). Bounded and invariant to any increasing transform of a proxy,
  so one proxy's heavy tail (snip and synflow span orders of magnitude) cannot outvote the
  others, which a mean of z-scores allows.

``score`` is the configured method's combined value: ``avg`` for ``zscore``; the weighted mean
of ``r_<p>`` for ``rank`` (-inf when every weighted proxy is NaN: the net cannot be scored).
``rank`` (1 = best) orders by ``score``; every choice of nets (tournament, winners, plots) uses
``score``, ``avg`` stays in the tables for transparency.

The normalisation table (``results/rank/normalisation.parquet``) is a long table with columns
``method, proxy, kind, mean, std, weight, value``: one ``kind == "moments"`` row per proxy (mean,
std, weight; value NaN) and one ``kind == "pool"`` row per finite pool score (value; sorted
ascending per proxy; mean/std/weight NaN). ``method`` is the configured method on every row, so
:func:`standardise` scores later nets exactly as the initial ones. A table without ``kind`` and
``method`` columns (proxy, mean, std, weight) is read as z-score moments only.
"""

from __future__ import annotations

import logging
import math
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

log = logging.getLogger("tinyevo.proxies.ranking")

METHODS = ("zscore", "rank")
NORM_COLUMNS = ["method", "proxy", "kind", "mean", "std", "weight", "value"]


def check_method(method: str) -> str:
    if method not in METHODS:
        raise ValueError(f"config key 'ranking.method' is {method!r}; use one of {list(METHODS)}")
    return method


def score_columns(proxies: Sequence[str], method: str = "zscore") -> list[str]:
    """The columns :func:`standardise` adds to the raw proxies, in table order."""
    check_method(method)
    return [*(f"z_{p}" for p in proxies), "avg", *((f"r_{p}" for p in proxies) if method == "rank" else ()),
            "score"]


def _check(df: pd.DataFrame, names: Sequence[str], what: str = "score table") -> list[str]:
    names = list(names)
    if not names:
        raise ValueError("config key 'proxies.names' is empty: nothing to rank")
    if df is None or len(df) == 0:
        raise ValueError(f"{what} is empty: no candidate nets to rank (check the candidates table "
                         f"results/space/candidates.parquet and the search_space config)")
    missing = [n for n in names if n not in df.columns]
    if missing:
        raise ValueError(f"{what} has no column for proxies {missing} (columns: {list(df.columns)})")
    return names


def _weights(names: Sequence[str], weights: Mapping[str, float] | None) -> dict[str, float]:
    if weights is None:
        return {n: 1.0 for n in names}
    unknown = sorted(set(weights) - set(names))
    if unknown:
        raise ValueError(f"config key 'proxies.weights' names {unknown}, which are not in proxies.names {list(names)}")
    w = {n: float(weights.get(n, 1.0)) for n in names}
    bad = {n: v for n, v in w.items() if not math.isfinite(v) or v < 0}
    if bad:
        raise ValueError(f"config key 'proxies.weights' must be finite and >= 0, got {bad}")
    if sum(w.values()) <= 0:
        raise ValueError("config key 'proxies.weights': all weights are 0, the combined score is undefined")
    return w


def _finite(df: pd.DataFrame, name: str) -> np.ndarray:
    s = pd.to_numeric(df[name], errors="coerce").to_numpy(dtype=np.float64)
    return s[np.isfinite(s)]


def zscore_table(df: pd.DataFrame, names: Sequence[str], weights: Mapping[str, float] | None = None) -> pd.DataFrame:
    """Per-proxy mean and sample std (ddof=1) over the finite scores -> DataFrame(proxy, mean,
    std, weight)."""
    names = _check(df, names)
    w = _weights(names, weights)
    rows = []
    for n in names:
        s = _finite(df, n)
        if len(s) < 2:
            raise ValueError(f"proxy {n!r} has {len(s)} finite scores over {len(df)} nets: at least 2 are "
                             f"needed to rank against the population (sample std, empirical CDF)")
        rows.append({"proxy": n, "mean": float(s.mean()), "std": float(s.std(ddof=1)), "weight": w[n]})
    return pd.DataFrame(rows, columns=["proxy", "mean", "std", "weight"])


def norm_table(df: pd.DataFrame, names: Sequence[str], weights: Mapping[str, float] | None = None,
               method: str = "zscore") -> pd.DataFrame:
    """The pool normalisation table (module doc): the moments rows of :func:`zscore_table` and
    every proxy's sorted finite pool scores, tagged with ``method``."""
    check_method(method)
    moments = zscore_table(df, names, weights).assign(kind="moments", value=np.nan)
    pools = [pd.DataFrame({"proxy": n, "kind": "pool", "mean": np.nan, "std": np.nan, "weight": np.nan,
                           "value": np.sort(_finite(df, n))}) for n in names]
    out = pd.concat([moments, *pools], ignore_index=True).assign(method=method)
    return out[NORM_COLUMNS]


def norm_method(norm: pd.DataFrame) -> str:
    """The ranking method a normalisation table was made for (``zscore`` for a moments-only table)."""
    if "method" not in norm.columns:
        return "zscore"
    m = norm["method"].dropna().unique().tolist()
    if len(m) != 1:
        raise ValueError(f"normalisation table: column 'method' must hold one value, got {m}")
    return check_method(str(m[0]))


def _moments(norm: pd.DataFrame) -> pd.DataFrame:
    if norm is None or len(norm) == 0:
        raise ValueError("normalisation table is empty (needs rows proxy, mean, std, weight)")
    need = {"proxy", "mean", "std", "weight"}
    if not need <= set(norm.columns):
        raise ValueError(f"normalisation table needs columns {sorted(need)}, got {list(norm.columns)}")
    m = norm[norm["kind"] == "moments"] if "kind" in norm.columns else norm
    if m["proxy"].duplicated().any():
        raise ValueError(f"normalisation table lists proxy {m.loc[m['proxy'].duplicated(), 'proxy'].iloc[0]!r} "
                         f"twice among its moments rows")
    return m.reset_index(drop=True)


def norm_proxies(norm: pd.DataFrame) -> list[str]:
    """The proxies a normalisation table covers, in its order."""
    return _moments(norm)["proxy"].tolist()


def pool_values(norm: pd.DataFrame, proxy: str) -> np.ndarray:
    """The sorted finite pool scores of ``proxy``."""
    if "kind" not in norm.columns:
        raise ValueError("normalisation table has no pool rows (column 'kind'): it cannot serve "
                         "ranking.method 'rank'; re-run the rank stage")
    v = norm.loc[(norm["kind"] == "pool") & (norm["proxy"] == proxy), "value"].to_numpy(dtype=np.float64)
    if len(v) < 1:
        raise ValueError(f"normalisation table has no pool scores for proxy {proxy!r}")
    return np.sort(v)


def midrank_cdf(pool_sorted: np.ndarray, x: np.ndarray) -> np.ndarray:
    """(#{pool < x} + 0.5 #{pool == x}) / n for each x (``pool_sorted`` ascending, finite);
    NaN / infinite x -> NaN."""
    x = np.asarray(x, dtype=np.float64)
    lo = np.searchsorted(pool_sorted, x, side="left")
    hi = np.searchsorted(pool_sorted, x, side="right")
    r = (lo + 0.5 * (hi - lo)) / len(pool_sorted)
    return np.where(np.isfinite(x), r, np.nan)


def standardise(df: pd.DataFrame, norm: pd.DataFrame) -> pd.DataFrame:
    """Copy of ``df`` with ``z_<proxy>``, ``avg``, (method ``rank``) ``r_<proxy>`` and ``score``
    against the pool of ``norm`` (module doc for the formulas). ``df`` may be the pool itself or
    any later nets: the values depend on ``norm`` only."""
    if norm is None or len(norm) == 0:
        raise ValueError("normalisation table is empty (needs rows proxy, mean, std, weight)")
    method = norm_method(norm)
    moments = _moments(norm)
    names = moments["proxy"].tolist()
    missing = [n for n in names if n not in df.columns]
    if missing:
        raise ValueError(f"score table has no column for proxies {missing} (columns: {list(df.columns)})")
    out = df.copy()
    n = len(out)
    wsum = float(moments.loc[moments["weight"] > 0, "weight"].sum())
    if wsum <= 0:
        raise ValueError("normalisation table: all weights are 0, the combined score is undefined")
    total, bad = np.zeros(n), np.zeros(n, dtype=bool)
    rtotal, rnone = np.zeros(n), np.ones(n, dtype=bool)
    ranks = {}
    for r in moments.itertuples(index=False):
        s = pd.to_numeric(out[r.proxy], errors="coerce").to_numpy(dtype=np.float64)
        finite = np.isfinite(s)
        z = (s - r.mean) / r.std if r.std > 0 and math.isfinite(r.std) else np.zeros_like(s)
        out[f"z_{r.proxy}"] = np.where(finite, z, np.nan)
        if method == "rank":
            ranks[r.proxy] = midrank_cdf(pool_values(norm, r.proxy), s)
        if r.weight > 0:
            total += r.weight * np.where(finite, z, 0.0)
            bad |= ~finite
            if method == "rank":
                rtotal += r.weight * np.where(finite, ranks[r.proxy], 0.0)  # NaN counts as 0 (worst)
                rnone &= ~finite
    out["avg"] = np.where(bad, -np.inf, total / wsum)
    for p, v in ranks.items():
        out[f"r_{p}"] = v
    out["score"] = np.where(rnone, -np.inf, rtotal / wsum) if method == "rank" else out["avg"].to_numpy()
    return out


def add_rank(df: pd.DataFrame, by: str = "score") -> pd.DataFrame:
    """``rank`` 1 = best ``by``; ties (and -inf) keep the table order; NaN ranks last too."""
    out = df.copy()
    key = out[by].to_numpy(dtype=np.float64)
    key = np.where(np.isnan(key), -np.inf, key)
    order = np.argsort(-key, kind="stable")
    rank = np.empty(len(out), dtype=np.int64)
    rank[order] = np.arange(1, len(out) + 1)
    out["rank"] = rank
    return out


def spread_table(df: pd.DataFrame, names: Sequence[str], logger: logging.Logger | None = None) -> pd.DataFrame:
    """Per-proxy n (finite scores), n_nan, mean, std (ddof=1), min, max and cv = std/|mean|;
    logs a warning for every proxy with NaN scores. (Whether a proxy carries architecture
    information is the informativeness check's question, not a spread threshold's.)"""
    names = _check(df, names)
    lg = logger or log
    rows = []
    for n in names:
        s_all = pd.to_numeric(df[n], errors="coerce").to_numpy(dtype=np.float64)
        s = s_all[np.isfinite(s_all)]
        if len(s):
            mean, mn, mx = float(s.mean()), float(s.min()), float(s.max())
            std = float(s.std(ddof=1)) if len(s) > 1 else float("nan")
        else:
            mean = mn = mx = std = float("nan")
        cv = std / abs(mean) if mean != 0 and math.isfinite(std) else (0.0 if std == 0 else float("inf"))
        rows.append({"proxy": n, "n": int(len(s)), "n_nan": int(len(s_all) - len(s)), "mean": mean, "std": std,
                     "min": mn, "max": mx, "cv": cv})
        if len(s) < len(s_all):
            lg.warning("proxy %s is NaN for %d of %d nets (ranked last)", n, len(s_all) - len(s), len(s_all))
    return pd.DataFrame(rows, columns=["proxy", "n", "n_nan", "mean", "std", "min", "max", "cv"])


def rank_population(candidates: pd.DataFrame, scores: pd.DataFrame, names: Sequence[str],
                    weights: Mapping[str, float] | None = None, method: str = "zscore",
                    logger: logging.Logger | None = None) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Join the candidate table with its scores (by ``arch``), normalise over this population
    (the pool), add ``z_<proxy>``, ``avg``, ``r_<proxy>`` (rank), ``score`` and ``rank`` ->
    (ranked table, normalisation table, spread table)."""
    check_method(method)
    if candidates is None or len(candidates) == 0:
        raise ValueError("candidate table is empty: no nets to rank (results/space/candidates.parquet)")
    if "arch" not in candidates.columns:
        raise ValueError(f"candidate table has no 'arch' column (columns: {list(candidates.columns)})")
    names = _check(scores, names)
    sc = scores.drop_duplicates("arch")[["arch", *names]]
    missing = sorted(set(candidates["arch"]) - set(sc["arch"]))
    if missing:
        raise ValueError(f"{len(missing)} candidate nets have no scores, e.g. {missing[:3]}")
    table = candidates.drop(columns=[c for c in names if c in candidates.columns]).merge(sc, on="arch", how="left",
                                                                                            validate="many_to_one")
    norm = norm_table(table, names, weights, method)
    spread = spread_table(table, names, logger=logger)
    ranked = add_rank(standardise(table, norm))
    return ranked, norm, spread
