"""AVG ranking (reference section 2): per-proxy z-scores over the initial population with the
sample standard deviation (ddof=1), AVG = (weighted) mean of the z-scores, larger is better.

The normalisation table (proxy, mean, std, weight) is stored so that nets created later
(evolution) are standardised with the initial population's mean and deviation.

A net with a NaN score in any proxy that carries weight gets ``avg = -inf``: it ranks last and
never wins a max/argmax comparison. A proxy that is constant over the population (std 0) gets
z = 0 for every net (it carries no ranking information) and a warning.
"""

from __future__ import annotations

import logging
import math
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

log = logging.getLogger("tinyevo.proxies.ranking")

#: a proxy whose coefficient of variation std/|mean| is below this is reported as (near) constant
CONSTANT_CV = 1e-3


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
        raise ValueError("config key 'proxies.weights': all weights are 0, AVG is undefined")
    return w


def zscore_table(df: pd.DataFrame, names: Sequence[str], weights: Mapping[str, float] | None = None) -> pd.DataFrame:
    """Per-proxy mean and sample std (ddof=1) over the finite scores -> DataFrame(proxy, mean,
    std, weight)."""
    names = _check(df, names)
    w = _weights(names, weights)
    rows = []
    for n in names:
        s = pd.to_numeric(df[n], errors="coerce").to_numpy(dtype=np.float64)
        s = s[np.isfinite(s)]
        if len(s) < 2:
            raise ValueError(f"proxy {n!r} has {len(s)} finite scores over {len(df)} nets: at least 2 are "
                             f"needed for a z-score (sample std)")
        rows.append({"proxy": n, "mean": float(s.mean()), "std": float(s.std(ddof=1)), "weight": w[n]})
    return pd.DataFrame(rows, columns=["proxy", "mean", "std", "weight"])


def standardise(df: pd.DataFrame, norm: pd.DataFrame) -> pd.DataFrame:
    """Copy of ``df`` with ``z_<proxy>`` per row of ``norm`` and ``avg`` = sum(w z) / sum(w);
    ``avg`` is -inf when a weighted proxy score is NaN."""
    if norm is None or len(norm) == 0:
        raise ValueError("normalisation table is empty (needs rows proxy, mean, std, weight)")
    need = {"proxy", "mean", "std", "weight"}
    if not need <= set(norm.columns):
        raise ValueError(f"normalisation table needs columns {sorted(need)}, got {list(norm.columns)}")
    names = list(norm["proxy"])
    missing = [n for n in names if n not in df.columns]
    if missing:
        raise ValueError(f"score table has no column for proxies {missing} (columns: {list(df.columns)})")
    out = df.copy()
    total = np.zeros(len(out), dtype=np.float64)
    wsum = 0.0
    bad = np.zeros(len(out), dtype=bool)
    for r in norm.itertuples(index=False):
        s = pd.to_numeric(out[r.proxy], errors="coerce").to_numpy(dtype=np.float64)
        finite = np.isfinite(s)
        if r.std > 0 and math.isfinite(r.std):
            z = (s - r.mean) / r.std
        else:
            z = np.zeros_like(s)
        z = np.where(finite, z, np.nan)
        out[f"z_{r.proxy}"] = z
        if r.weight > 0:
            total += r.weight * np.where(finite, z, 0.0)
            wsum += r.weight
            bad |= ~finite
    if wsum <= 0:
        raise ValueError("normalisation table: all weights are 0, AVG is undefined")
    out["avg"] = np.where(bad, -np.inf, total / wsum)
    return out


def add_rank(df: pd.DataFrame) -> pd.DataFrame:
    """``rank`` 1 = best AVG; ties (and -inf) keep the table order; NaN avg ranks last too."""
    out = df.copy()
    key = out["avg"].to_numpy(dtype=np.float64)
    key = np.where(np.isnan(key), -np.inf, key)
    order = np.argsort(-key, kind="stable")
    rank = np.empty(len(out), dtype=np.int64)
    rank[order] = np.arange(1, len(out) + 1)
    out["rank"] = rank
    return out


def spread_table(df: pd.DataFrame, names: Sequence[str], cv_tol: float = CONSTANT_CV,
                 logger: logging.Logger | None = None) -> pd.DataFrame:
    """Per-proxy n, n_nan, mean, std (ddof=1), min, max, cv = std/|mean| and ``constant``
    (cv < ``cv_tol`` or std == 0); logs a warning for every (near) constant proxy."""
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
        constant = bool(len(s) > 1 and (std == 0 or cv < cv_tol))
        rows.append({"proxy": n, "n": int(len(s)), "n_nan": int(len(s_all) - len(s)), "mean": mean, "std": std,
                     "min": mn, "max": mx, "cv": cv, "constant": constant})
        if constant:
            lg.warning("proxy %s is (near) constant over %d nets: mean %.6g, std %.3g, cv %.3g < %.g; it "
                       "barely separates the nets", n, len(s), mean, std, cv, cv_tol)
        if len(s) < len(s_all):
            lg.warning("proxy %s is NaN for %d of %d nets (ranked last)", n, len(s_all) - len(s), len(s_all))
    return pd.DataFrame(rows, columns=["proxy", "n", "n_nan", "mean", "std", "min", "max", "cv", "constant"])


def rank_population(candidates: pd.DataFrame, scores: pd.DataFrame, names: Sequence[str],
                    weights: Mapping[str, float] | None = None,
                    logger: logging.Logger | None = None) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Join the candidate table with its scores (by ``arch``), z-score over this population, AVG
    and rank -> (ranked table, normalisation table, spread table)."""
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
    norm = zscore_table(table, names, weights)
    spread = spread_table(table, names, logger=logger)
    ranked = add_rank(standardise(table, norm))
    return ranked, norm, spread
