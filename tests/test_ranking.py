"""AVG ranking maths against numpy/scipy, NaN handling, constant-proxy warning, bad input."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from tinyevo.proxies import ranking


def table(n=30, seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"index": np.arange(n), "arch": [f"a{i:03d}" for i in range(n)],
                         "snip": rng.lognormal(3, 1, n), "synflow": rng.normal(50, 5, n),
                         "jacob_cov": -n + rng.normal(-3, 1, n) ** 2 * -1})


NAMES = ["snip", "synflow", "jacob_cov"]


def test_zscores_and_avg_match_scipy():
    df = table()
    norm = ranking.zscore_table(df, NAMES)
    assert list(norm.columns) == ["proxy", "mean", "std", "weight"]
    assert np.allclose(norm["std"], [np.std(df[n], ddof=1) for n in NAMES], rtol=1e-12)
    out = ranking.standardise(df, norm)
    z = {n: stats.zscore(df[n].to_numpy(), ddof=1) for n in NAMES}
    for n in NAMES:
        assert np.allclose(out[f"z_{n}"], z[n], rtol=1e-10, atol=1e-12)
    assert np.allclose(out["avg"], np.mean([z[n] for n in NAMES], axis=0), rtol=1e-10, atol=1e-12)
    ranked = ranking.add_rank(out)
    assert ranked.loc[ranked["avg"].idxmax(), "rank"] == 1
    assert sorted(ranked["rank"]) == list(range(1, len(df) + 1))
    assert (np.diff(ranked.sort_values("rank")["avg"].to_numpy()) <= 0).all()


def test_weighted_avg_and_weight_errors():
    df = table(seed=1)
    w = {"snip": 2.0, "synflow": 0.0, "jacob_cov": 1.0}
    out = ranking.standardise(df, ranking.zscore_table(df, NAMES, w))
    z = {n: stats.zscore(df[n].to_numpy(), ddof=1) for n in NAMES}
    assert np.allclose(out["avg"], (2 * z["snip"] + z["jacob_cov"]) / 3, rtol=1e-10)
    with pytest.raises(ValueError, match="proxies.weights"):
        ranking.zscore_table(df, NAMES, {"naswot": 1.0})
    with pytest.raises(ValueError, match="proxies.weights"):
        ranking.zscore_table(df, NAMES, {n: 0.0 for n in NAMES})


def test_later_nets_use_initial_normalisation():
    df = table()
    norm = ranking.zscore_table(df, NAMES)
    new = pd.DataFrame({"arch": ["child"], "snip": [100.0], "synflow": [40.0], "jacob_cov": [-35.0]})
    out = ranking.standardise(new, norm)
    m = norm.set_index("proxy")
    want = [(new[n][0] - m.loc[n, "mean"]) / m.loc[n, "std"] for n in NAMES]
    assert np.allclose(out[[f"z_{n}" for n in NAMES]].to_numpy()[0], want)
    assert out["avg"][0] == pytest.approx(np.mean(want))


def test_nan_scores_rank_last():
    df = table()
    df.loc[3, "snip"] = np.nan
    df.loc[7, "jacob_cov"] = np.nan
    norm = ranking.zscore_table(df, NAMES)
    finite = df["snip"].dropna()
    assert norm.set_index("proxy").loc["snip", "std"] == pytest.approx(finite.std(ddof=1))
    ranked = ranking.add_rank(ranking.standardise(df, norm))
    assert np.isneginf(ranked.loc[[3, 7], "avg"]).all()
    assert set(ranked.loc[[3, 7], "rank"]) == {len(df) - 1, len(df)}
    assert np.isnan(ranked.loc[3, "z_snip"]) and np.isfinite(ranked.loc[3, "z_synflow"])


def test_spread_table_and_constant_warning(caplog):
    df = table()
    df["jacob_cov"] = -4.0 + np.random.default_rng(0).normal(0, 3e-4, len(df))  # the paper's case
    with caplog.at_level(logging.WARNING):
        sp = ranking.spread_table(df, NAMES)
    s = sp.set_index("proxy")
    for n in NAMES:
        v = df[n].to_numpy()
        assert s.loc[n, "mean"] == pytest.approx(v.mean()) and s.loc[n, "std"] == pytest.approx(v.std(ddof=1))
        assert s.loc[n, "min"] == v.min() and s.loc[n, "max"] == v.max()
        assert s.loc[n, "cv"] == pytest.approx(v.std(ddof=1) / abs(v.mean()))
    assert s["constant"].tolist() == [False, False, True]
    assert "jacob_cov is (near) constant" in caplog.text and "snip is (near)" not in caplog.text
    # an exactly constant proxy gets z = 0 and does not break the AVG
    df["synflow"] = 7.0
    out = ranking.standardise(df, ranking.zscore_table(df, NAMES))
    assert (out["z_synflow"] == 0).all() and np.isfinite(out["avg"]).all()


def test_rank_population_joins_candidates():
    df = table(8)
    cand = df[["index", "arch"]].assign(params=np.arange(8) * 10, feasible=[True, False] * 4)
    scores = df[["arch", *NAMES]].iloc[::-1]
    ranked, norm, spread = ranking.rank_population(cand, scores, NAMES)
    assert list(ranked.columns) == ["index", "arch", "params", "feasible", *NAMES,
                                    *[f"z_{n}" for n in NAMES], "avg", "rank"]
    assert ranked["arch"].tolist() == cand["arch"].tolist()
    assert np.allclose(ranked["snip"], df["snip"])
    assert len(norm) == 3 and len(spread) == 3


def test_bad_input():
    df = table()
    with pytest.raises(ValueError, match="empty"):
        ranking.zscore_table(df.iloc[:0], NAMES)
    with pytest.raises(ValueError, match="empty"):
        ranking.rank_population(df.iloc[:0][["index", "arch"]], df, NAMES)
    with pytest.raises(ValueError, match="no scores"):
        ranking.rank_population(df[["index", "arch"]], df.iloc[:5], NAMES)
    with pytest.raises(ValueError, match="naswot"):
        ranking.zscore_table(df, ["naswot"])
    with pytest.raises(ValueError, match="at least 2"):
        ranking.zscore_table(df.assign(snip=np.nan), NAMES)
