"""Ranking against the initial pool: the paper's z-score AVG against numpy/scipy, the rank
method's mid-rank empirical CDF against a plain implementation of its definition, NaN, ties,
heavy tails, weights, the Parquet normalisation table, the spread table and bad input."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from tinyevo.io import write_parquet
from tinyevo.proxies import ranking


def table(n=30, seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"index": np.arange(n), "arch": [f"a{i:03d}" for i in range(n)],
                         "snip": rng.lognormal(3, 1, n), "synflow": rng.normal(50, 5, n),
                         "jacob_cov": -n + rng.normal(-3, 1, n) ** 2 * -1})


NAMES = ["snip", "synflow", "jacob_cov"]


def plain_midrank(pool, x):
    """The definition, one value at a time: (#{pool < x} + 0.5 #{pool == x}) / #finite pool."""
    fin = [v for v in pool if np.isfinite(v)]
    if not np.isfinite(x):
        return np.nan
    return (sum(v < x for v in fin) + 0.5 * sum(v == x for v in fin)) / len(fin)


# ----- zscore: the paper's AVG, exact --------------------------------------------------------------
def test_zscores_and_avg_match_scipy():
    df = table()
    norm = ranking.zscore_table(df, NAMES)
    assert list(norm.columns) == ["proxy", "mean", "std", "weight"]
    assert np.allclose(norm["std"], [np.std(df[n], ddof=1) for n in NAMES], rtol=1e-12)
    out = ranking.standardise(df, ranking.norm_table(df, NAMES))
    z = {n: stats.zscore(df[n].to_numpy(), ddof=1) for n in NAMES}
    for n in NAMES:
        assert np.allclose(out[f"z_{n}"], z[n], rtol=1e-10, atol=1e-12)
    assert np.allclose(out["avg"], np.mean([z[n] for n in NAMES], axis=0), rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(out["score"], out["avg"])  # zscore: score == AVG
    assert not [c for c in out.columns if c.startswith("r_")]
    ranked = ranking.add_rank(out)
    assert ranked.loc[ranked["avg"].idxmax(), "rank"] == 1
    assert sorted(ranked["rank"]) == list(range(1, len(df) + 1))
    assert (np.diff(ranked.sort_values("rank")["avg"].to_numpy()) <= 0).all()


def test_weighted_avg_and_weight_errors():
    df = table(seed=1)
    w = {"snip": 2.0, "synflow": 0.0, "jacob_cov": 1.0}
    out = ranking.standardise(df, ranking.norm_table(df, NAMES, w))
    z = {n: stats.zscore(df[n].to_numpy(), ddof=1) for n in NAMES}
    assert np.allclose(out["avg"], (2 * z["snip"] + z["jacob_cov"]) / 3, rtol=1e-10)
    with pytest.raises(ValueError, match="proxies.weights"):
        ranking.zscore_table(df, NAMES, {"naswot": 1.0})
    with pytest.raises(ValueError, match="proxies.weights"):
        ranking.norm_table(df, NAMES, {n: 0.0 for n in NAMES}, "rank")


def test_later_nets_use_initial_normalisation():
    df = table()
    norm = ranking.norm_table(df, NAMES)
    new = pd.DataFrame({"arch": ["child"], "snip": [100.0], "synflow": [40.0], "jacob_cov": [-35.0]})
    out = ranking.standardise(new, norm)
    m = ranking.zscore_table(df, NAMES).set_index("proxy")
    want = [(new[n][0] - m.loc[n, "mean"]) / m.loc[n, "std"] for n in NAMES]
    assert np.allclose(out[[f"z_{n}" for n in NAMES]].to_numpy()[0], want)
    assert out["avg"][0] == pytest.approx(np.mean(want)) and out["score"][0] == out["avg"][0]


def test_moments_only_table_still_standardises_zscore():
    """A (proxy, mean, std, weight) table (older runs, hand-made) is read as z-score moments."""
    df = table()
    old = ranking.standardise(df, ranking.zscore_table(df, NAMES))
    new = ranking.standardise(df, ranking.norm_table(df, NAMES))
    pd.testing.assert_frame_equal(old, new)
    assert ranking.norm_method(ranking.zscore_table(df, NAMES)) == "zscore"


def test_nan_scores_rank_last_under_zscore():
    df = table()
    df.loc[3, "snip"] = np.nan
    df.loc[7, "jacob_cov"] = np.nan
    norm = ranking.norm_table(df, NAMES)
    finite = df["snip"].dropna()
    assert ranking.zscore_table(df, NAMES).set_index("proxy").loc["snip", "std"] == pytest.approx(finite.std(ddof=1))
    ranked = ranking.add_rank(ranking.standardise(df, norm))
    assert np.isneginf(ranked.loc[[3, 7], "avg"]).all() and np.isneginf(ranked.loc[[3, 7], "score"]).all()
    assert set(ranked.loc[[3, 7], "rank"]) == {len(df) - 1, len(df)}
    assert np.isnan(ranked.loc[3, "z_snip"]) and np.isfinite(ranked.loc[3, "z_synflow"])


# ----- rank: mid-rank empirical CDF against the fixed pool -------------------------------------------
def test_rank_method_is_the_midrank_cdf_with_ties():
    df = table(40, seed=2)
    df["synflow"] = np.round(df["synflow"] / 4)  # many ties
    assert df["synflow"].duplicated().sum() > 10
    out = ranking.standardise(df, ranking.norm_table(df, NAMES, method="rank"))
    n = len(df)
    for p in NAMES:
        pool = df[p].to_numpy()
        want = [plain_midrank(pool, x) for x in pool]
        np.testing.assert_allclose(out[f"r_{p}"], want, rtol=0, atol=1e-15)
        # for the pool's own members this is the classic (average rank - 1/2) / n
        np.testing.assert_allclose(out[f"r_{p}"], (stats.rankdata(pool, method="average") - 0.5) / n, atol=1e-15)
    # tied nets share one value
    tied = out.groupby("synflow")["r_synflow"].nunique()
    assert (tied == 1).all()
    np.testing.assert_allclose(out["score"], out[[f"r_{p}" for p in NAMES]].mean(axis=1), atol=1e-15)
    assert ((out["score"] > 0) & (out["score"] < 1)).all()
    # z-scores and AVG stay in the table, exactly as under zscore
    ref = ranking.standardise(df, ranking.norm_table(df, NAMES))
    np.testing.assert_array_equal(out["avg"], ref["avg"])
    assert list(out.columns[-8:]) == [*(f"z_{p}" for p in NAMES), "avg", *(f"r_{p}" for p in NAMES), "score"]
    assert ranking.score_columns(NAMES, "rank") == list(out.columns[-8:])


def test_child_against_the_pool_gets_the_pool_members_value():
    df = table(25, seed=3)
    df.loc[5, "snip"] = df.loc[9, "snip"]  # a tie in the pool
    norm = ranking.norm_table(df, NAMES, method="rank")
    pool_out = ranking.standardise(df, norm)
    lo, hi = df["snip"].min(), df["snip"].max()
    kids = pd.DataFrame({"arch": ["same_as_5", "same_as_0", "below", "above", "between"],
                         "snip": [df.loc[5, "snip"], df.loc[0, "snip"], lo - 1, hi * 10,
                                  np.sort(df["snip"])[[11, 12]].mean()],
                         "synflow": df.loc[[5, 0, 0, 0, 0], "synflow"].to_numpy(),
                         "jacob_cov": df.loc[[5, 0, 0, 0, 0], "jacob_cov"].to_numpy()})
    out = ranking.standardise(kids, norm)
    r = out.set_index("arch")["r_snip"]
    assert r["same_as_5"] == pool_out.loc[5, "r_snip"] == pool_out.loc[9, "r_snip"]  # the mid-rank tie value
    assert r["same_as_0"] == pool_out.loc[0, "r_snip"]
    assert r["below"] == 0.0 and r["above"] == 1.0
    assert r["between"] == pytest.approx(12 / 25)  # 12 pool values below, none equal
    for a, x in zip(kids["arch"], kids["snip"]):
        assert r[a] == pytest.approx(plain_midrank(df["snip"].to_numpy(), x), abs=1e-15)
    assert out.loc[0, "score"] == pytest.approx(pool_out.loc[5, "score"])  # same scores -> same value


def test_nan_counts_as_worst_and_all_nan_cannot_be_scored():
    df = table(20, seed=4)
    df.loc[2, "snip"] = np.nan
    df.loc[4, list(NAMES)] = np.nan
    norm = ranking.norm_table(df, NAMES, method="rank")
    pool = norm[norm["kind"] == "pool"]
    assert (pool["proxy"] == "snip").sum() == 18 and (pool["proxy"] == "synflow").sum() == 19
    out = ranking.add_rank(ranking.standardise(df, norm))
    assert np.isnan(out.loc[2, "r_snip"])
    assert out.loc[2, "score"] == pytest.approx((out.loc[2, "r_synflow"] + out.loc[2, "r_jacob_cov"]) / 3)
    assert np.isneginf(out.loc[4, "score"]) and out.loc[4, "rank"] == len(df)
    assert np.isneginf(out.loc[2, "avg"])  # the paper's AVG still sends any NaN to -inf
    # the denominator is the number of finite pool scores: the largest finite snip gets 17.5 / 18
    top = df["snip"].idxmax()
    assert out.loc[top, "r_snip"] == pytest.approx(17.5 / 18)


def test_heavy_tail_decides_zscore_but_not_rank():
    """One net with a huge snip and the worst synflow: under the mean of z-scores its outlier
    outvotes everything; under the rank method only its position counts (the outlier could be
    any value above the others)."""
    rng = np.random.default_rng(5)
    n = 30
    df = pd.DataFrame({"arch": [f"n{i}" for i in range(n)], "snip": rng.lognormal(2, 0.3, n),
                       "synflow": rng.normal(0, 1, n)})
    df.loc[0, "snip"] = 1e12
    df.loc[0, "synflow"] = df["synflow"].min() - 1
    names = ["snip", "synflow"]
    z = ranking.add_rank(ranking.standardise(df, ranking.norm_table(df, names)))
    r = ranking.add_rank(ranking.standardise(df, ranking.norm_table(df, names, method="rank")))
    assert z.loc[0, "rank"] == 1
    assert r.loc[0, "rank"] > n // 2
    assert r.loc[0, "score"] == pytest.approx((29.5 / 30 + 0.5 / 30) / 2)
    # the size of the outlier does not matter to the rank method; it does to AVG
    tame = df.copy()
    tame.loc[0, "snip"] = np.sort(df["snip"])[-2] * 1.001
    r2 = ranking.standardise(tame, ranking.norm_table(tame, names, method="rank"))
    np.testing.assert_array_equal(r["score"], r2["score"])
    z2 = ranking.add_rank(ranking.standardise(tame, ranking.norm_table(tame, names)))
    assert z2.loc[0, "rank"] != 1
    # any increasing transform of a proxy leaves the rank scores unchanged
    logged = df.assign(snip=np.log(df["snip"]))
    r3 = ranking.standardise(logged, ranking.norm_table(logged, names, method="rank"))
    np.testing.assert_allclose(r["score"], r3["score"], atol=1e-15)


def test_rank_weights():
    df = table(seed=6)
    w = {"snip": 2.0, "synflow": 0.0, "jacob_cov": 1.0}
    df.loc[1, "synflow"] = np.nan  # a zero-weight proxy's NaN does not affect the score
    out = ranking.standardise(df, ranking.norm_table(df, NAMES, w, method="rank"))
    np.testing.assert_allclose(out["score"], (2 * out["r_snip"] + out["r_jacob_cov"]) / 3, atol=1e-15)
    assert np.isfinite(out.loc[1, "score"])
    assert np.isnan(out.loc[1, "r_synflow"])


def test_normalisation_table_round_trips_through_parquet(tmp_path):
    df = table(12, seed=7)
    df.loc[3, "jacob_cov"] = np.nan
    norm = ranking.norm_table(df, NAMES, {"snip": 2.0}, method="rank")
    assert list(norm.columns) == ranking.NORM_COLUMNS
    mom = norm[norm["kind"] == "moments"]
    assert mom["proxy"].tolist() == NAMES and mom["value"].isna().all() and mom["weight"].tolist() == [2.0, 1.0, 1.0]
    for p in NAMES:
        v = norm.loc[(norm["kind"] == "pool") & (norm["proxy"] == p), "value"].to_numpy()
        np.testing.assert_array_equal(v, np.sort(df[p].dropna().to_numpy()))
    assert (norm["method"] == "rank").all()
    write_parquet(norm, tmp_path / "norm.parquet")
    back = pd.read_parquet(tmp_path / "norm.parquet")
    pd.testing.assert_frame_equal(ranking.standardise(df, back), ranking.standardise(df, norm))
    assert ranking.norm_method(back) == "rank" and ranking.norm_proxies(back) == NAMES


def test_rank_population_joins_candidates_both_methods():
    df = table(8)
    cand = df[["index", "arch"]].assign(params=np.arange(8) * 10, feasible=[True, False] * 4)
    scores = df[["arch", *NAMES]].iloc[::-1]
    for method in ranking.METHODS:
        ranked, norm, spread = ranking.rank_population(cand, scores, NAMES, method=method)
        assert list(ranked.columns) == ["index", "arch", "params", "feasible", *NAMES,
                                        *ranking.score_columns(NAMES, method), "rank"]
        assert ranked["arch"].tolist() == cand["arch"].tolist()
        assert np.allclose(ranked["snip"], df["snip"])
        assert ranked.loc[ranked["score"].idxmax(), "rank"] == 1
        assert ranking.norm_method(norm) == method and len(spread) == 3
        assert len(norm) == 3 + 3 * 8


# ----- the spread table ----------------------------------------------------------------------------
def test_spread_table(caplog):
    df = table()
    df.loc[0, "synflow"] = np.nan
    df["jacob_cov"] = -4.0 + np.random.default_rng(0).normal(0, 3e-4, len(df))  # near constant: no warning now
    with caplog.at_level(logging.WARNING):
        sp = ranking.spread_table(df, NAMES)
    assert list(sp.columns) == ["proxy", "n", "n_nan", "mean", "std", "min", "max", "cv"]
    s = sp.set_index("proxy")
    for n in NAMES:
        v = df[n].dropna().to_numpy()
        assert s.loc[n, "mean"] == pytest.approx(v.mean()) and s.loc[n, "std"] == pytest.approx(v.std(ddof=1))
        assert s.loc[n, "min"] == v.min() and s.loc[n, "max"] == v.max()
        assert s.loc[n, "cv"] == pytest.approx(v.std(ddof=1) / abs(v.mean()))
    assert s.loc["synflow", "n_nan"] == 1 and s.loc["synflow", "n"] == len(df) - 1
    assert "synflow is NaN for 1 of 30 nets" in caplog.text
    assert "constant" not in caplog.text and "jacob_cov" not in caplog.text
    # an exactly constant proxy gets z = 0 and does not break AVG; under rank every net ties at 1/2
    df["synflow"] = 7.0
    out = ranking.standardise(df, ranking.norm_table(df, NAMES, method="rank"))
    assert (out["z_synflow"] == 0).all() and np.isfinite(out["avg"]).all()
    assert (out["r_synflow"] == 0.5).all()


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
        ranking.norm_table(df.assign(snip=np.nan), NAMES, method="rank")
    with pytest.raises(ValueError, match=r"ranking\.method.*'median'"):
        ranking.rank_population(df[["index", "arch"]], df, NAMES, method="median")
    with pytest.raises(ValueError, match="no pool rows"):
        ranking.standardise(df, ranking.zscore_table(df, NAMES).assign(method="rank"))
    mixed = pd.concat([ranking.norm_table(df, NAMES), ranking.norm_table(df, NAMES, method="rank")])
    with pytest.raises(ValueError, match="one value"):
        ranking.standardise(df, mixed)
