"""Search quality (validation stage): pool and stratified sample, measures, rank statistics with
bootstrap intervals, precision at the top, regret, noise ceiling, the plan, the per-slot job,
the gather and the plots."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP (shared cores)

import logging

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from tinyevo.space import SearchSpace, cost_of
from tinyevo.train import validation as V
from tinyevo.train.plots import plot_history, plot_scatter

from test_train import SETTINGS, SS_CFG, STATS, toy_data

torch.set_num_threads(1)
PROXIES = ["snip", "synflow"]


# ----------------------------------------------------------------------------------------------
# pool and sample
# ----------------------------------------------------------------------------------------------
def pool_table(n=40, seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"index": np.arange(n)[::-1], "arch": [f"a{i:02d}" for i in range(n)],
                         "params": rng.permutation(np.arange(100, 100 + 10 * n, 10))})


def test_pool_mask_prefers_within_limits_then_limit_flags_then_feasible():
    t = pd.DataFrame({"within_limits": [True, False, True], "ok_max_params": [True, True, False],
                      "ok_max_macs": [True, True, True], "feasible": [False, False, True]})
    assert V.pool_mask(t).tolist() == [True, False, True]
    assert V.pool_mask(t.drop(columns="within_limits")).tolist() == [True, True, False]
    assert V.pool_mask(t[["feasible"]]).tolist() == [False, False, True]
    assert V.pool_mask(t[[]]).tolist() == [True, True, True]


def test_stratified_sample_one_net_per_params_stratum():
    pool = pool_table(40)
    s = V.stratified_sample(pool, 8, seed=3)
    assert len(s) == 8 and s["arch"].is_unique
    # stratum j of the params-sorted pool holds positions 5j .. 5j+4: one pick in each
    order = pool.sort_values("params")["arch"].tolist()
    assert [order.index(a) // 5 for a in s["arch"]] == list(range(8))
    assert s["params"].is_monotonic_increasing
    pd.testing.assert_frame_equal(V.stratified_sample(pool.sample(frac=1, random_state=1), 8, 3), s)
    pd.testing.assert_frame_equal(V.stratified_sample(pool, 8, 3), s)
    assert V.stratified_sample(pool, 8, 4)["arch"].tolist() != s["arch"].tolist()
    assert len(V.stratified_sample(pool, 40, 0)) == 40  # every stratum is one net: the whole pool
    with pytest.raises(ValueError, match="'validation.nets' is 41 but the pool has only 40 nets"):
        V.stratified_sample(pool, 41, 0)
    with pytest.raises(ValueError, match="'validation.nets' must be a positive integer, got 0"):
        V.stratified_sample(pool, 0, 0)


def test_spread_positions():
    assert V.spread_positions(10, 3) == [0, 4, 9]  # linspace 0, 4.5, 9; round half to even
    assert V.spread_positions(4, 9) == [0, 1, 2, 3]
    assert V.spread_positions(5, 0) == [] and V.spread_positions(5, 1) == [0]


# ----------------------------------------------------------------------------------------------
# rank statistics
# ----------------------------------------------------------------------------------------------
def test_row_statistics_match_scipy_with_ties():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 6, size=(6, 25)).astype(float)  # many ties
    y = x + rng.normal(size=(6, 25))
    y[2] = np.round(y[2])
    for i in range(6):
        assert V.spearman_rows(x, y)[i] == pytest.approx(stats.spearmanr(x[i], y[i]).statistic, abs=1e-12)
        assert V.kendall_rows(x, y)[i] == pytest.approx(stats.kendalltau(x[i], y[i]).statistic, abs=1e-12)
    flat = np.ones((1, 25))
    assert np.isnan(V.spearman_rows(flat, y[:1])[0]) and np.isnan(V.kendall_rows(flat, y[:1])[0])


def test_precision_at_top():
    acc = np.arange(20.0)
    assert V.precision_at(acc, acc) == 1.0            # k = 2: both top nets found
    assert V.precision_at(-acc, acc) == 0.0
    m = acc.copy()
    m[19], m[0] = m[0], m[19]                         # the best net ranked last, the worst first
    assert V.precision_at(m, acc) == 0.5
    # the measure ties its top 4: each counts with probability 2/4; two of them are top nets
    tied = np.r_[np.zeros(16), np.ones(4)]
    assert V.precision_at(tied, acc) == pytest.approx(0.5)
    # accuracy ties at the k-th place are all top
    # (k = 2; the measure's top two are the last two of three tied best nets)
    acc_t = np.r_[np.zeros(17), 1.0, 1.0, 1.0]
    assert V.precision_at(np.r_[np.zeros(17), 1.0, 3.0, 2.0], acc_t) == 1.0
    # NaN pairs are dropped: 10 finite pairs -> k = 1
    m_nan, acc_nan = acc.copy(), acc.copy()
    m_nan[10:] = np.nan
    assert V.precision_at(m_nan, acc_nan) == 1.0
    assert V.precision_at(m_nan, acc_nan, frac=0.5) == 1.0
    assert np.isnan(V.precision_at(np.full(3, np.nan), np.ones(3)))


def measures_fixture(n=30, seed=0):
    """A measure table of n nets (the last 5 outside the pool) and their accuracies."""
    rng = np.random.default_rng(seed)
    acc = np.linspace(0.5, 0.95, n)
    rng.shuffle(acc)
    archs = [f"n{i:02d}" for i in range(n)]
    meas = pd.DataFrame({"index": np.arange(n), "arch": archs, "in_pool": np.arange(n) < n - 5,
                         "params_count": rng.integers(1000, 9000, n)})
    meas["good"] = acc + rng.normal(0, 0.02, n)
    meas["bad"] = -acc
    meas["noisy"] = rng.normal(size=n)
    meas["params"] = meas["params_count"].astype(float)
    meas["random"] = V.random_measure(archs, 0)
    meas.loc[n - 1, "good"] = 99.0  # outside the pool: never a pick
    res = pd.DataFrame({"arch": archs, "val_acc": acc, "test_acc": acc[::-1].copy()})
    return meas, res


def test_quality_table_values_and_bootstrap_determinism():
    meas, res = measures_fixture()
    sample = meas["arch"].iloc[:20].tolist()
    q = V.quality_table(meas, res, sample, ["good", "bad", "noisy", "params"], n_boot=200, seed=5)
    assert list(q.columns) == V.QUALITY_COLUMNS
    assert q["target"].tolist() == ["val"] * 4 + ["test"] * 4
    val = q[q["target"] == "val"].set_index("measure")
    acc = res.set_index("arch").loc[sample, "val_acc"].to_numpy()
    for m in ("good", "bad", "noisy"):
        v = meas.set_index("arch").loc[sample, m].to_numpy()
        assert val.loc[m, "spearman"] == pytest.approx(stats.spearmanr(v, acc).statistic)
        assert val.loc[m, "kendall"] == pytest.approx(stats.kendalltau(v, acc).statistic)
        assert val.loc[m, "spearman_lo"] <= val.loc[m, "spearman"] <= val.loc[m, "spearman_hi"]
    assert val.loc["bad", "spearman"] == pytest.approx(-1.0) and val.loc["bad", "precision_at"] == 0.0
    assert val.loc["good", "spearman_lo"] > 0.8 and val.loc["good", "signal"] and not val.loc["noisy", "signal"]
    assert (q["n"] == 20).all()
    # paired difference to params: params is unrelated to accuracy here, "good" clearly better
    assert val.loc["good", "d_spearman_lo"] > 0 and val.loc["params", "d_spearman_hi"] == pytest.approx(0.0)
    # the pick is the best pool net of the measure (net n29 with good = 99 is outside the pool)
    pool = meas[meas["in_pool"]]
    best_pool = pool["arch"].iloc[int(np.argmax(pool["good"]))]
    assert val.loc["good", "pick_arch"] == best_pool != "n29"
    best = res.set_index("arch").loc[pool["arch"], "val_acc"].max()
    assert val.loc["good", "best_acc"] == pytest.approx(best)
    assert val.loc["good", "regret"] == pytest.approx(best - res.set_index("arch").loc[best_pool, "val_acc"])
    assert (q["regret"] >= 0).all()
    # same seed -> same table; another seed moves the intervals, not the point estimates
    pd.testing.assert_frame_equal(q, V.quality_table(meas, res, sample, ["good", "bad", "noisy", "params"],
                                                     n_boot=200, seed=5))
    q2 = V.quality_table(meas, res, sample, ["good", "bad", "noisy", "params"], n_boot=200, seed=6)
    assert q2["spearman"].tolist() == q["spearman"].tolist()
    assert q2["spearman_lo"].tolist() != q["spearman_lo"].tolist()
    none = V.quality_table(meas, res, sample, ["good"], n_boot=0, seed=5)
    assert none["spearman_lo"].isna().all() and none["spearman"].notna().all()


def test_quality_table_nan_measures_and_untrained_pick():
    meas, res = measures_fixture()
    meas["holes"] = meas["good"]
    meas.loc[:9, "holes"] = np.nan
    meas["flat"] = 1.0
    sample = meas["arch"].iloc[:20].tolist()
    res_missing = res[res["arch"] != meas.loc[int(np.argmax(meas["good"].where(meas["in_pool"]))), "arch"]]
    q = V.quality_table(meas, res_missing, sample, ["holes", "flat", "good"], n_boot=100, seed=0)
    val = q[q["target"] == "val"].set_index("measure")
    with_result = set(res_missing["arch"])
    assert val.loc["holes", "n"] == sum(a in with_result for a in sample[10:])
    assert val.loc["good", "n"] == sum(a in with_result for a in sample)
    assert np.isfinite(val.loc["holes", "spearman"]) and np.isfinite(val.loc["holes", "spearman_lo"])
    assert np.isnan(val.loc["flat", "spearman"]) and not val.loc["flat", "signal"]
    # a flat measure's pick is decided by the random tie-breaker
    pool = meas[meas["in_pool"]]
    assert val.loc["flat", "pick_arch"] == pool["arch"].iloc[int(np.argmax(pool["random"]))]
    # the best pool net of "good" has no result: its accuracy and regret are NaN
    assert np.isnan(val.loc["good", "pick_acc"]) and np.isnan(val.loc["good", "regret"])


def test_order_of_nan_last_ties_by_tiebreak():
    v = np.array([1.0, np.nan, 3.0, 3.0, -np.inf, 2.0])
    t = np.array([0.0, 0.9, 0.1, 0.8, 0.5, 0.0])
    # 3.0 twice (tie-breaker 0.8 before 0.1), 2.0, 1.0, then NaN and -inf as -inf (tie-breaker 0.9, 0.5)
    assert V.order_of(v, t).tolist() == [3, 2, 5, 0, 1, 4]


def test_noise_table():
    archs = [f"n{i}" for i in range(8)]
    acc = np.linspace(0.3, 0.9, 8)
    same = pd.DataFrame({"arch": archs * 2, "seed": [0] * 8 + [1] * 8, "val_acc": np.r_[acc, acc],
                         "test_acc": np.r_[acc, acc[::-1]]})
    t = V.noise_table(same, n_boot=50, seed=0).set_index("target")
    assert list(t.reset_index().columns) == V.NOISE_COLUMNS
    assert t.loc["val", "spearman"] == pytest.approx(1.0) and t.loc["val", "mean_abs_diff"] == 0.0
    assert t.loc["test", "spearman"] == pytest.approx(-1.0) and t.loc["val", "nets"] == 8
    assert t.loc["val", "seeds"] == 2 and t.loc["val", "spearman_lo"] == pytest.approx(1.0)
    one = V.noise_table(same[same["seed"] == 0], n_boot=50, seed=0)
    assert one["spearman"].isna().all() and (one["seeds"] == 1).all()


# ----------------------------------------------------------------------------------------------
# measures and the plan on a real (tiny) space
# ----------------------------------------------------------------------------------------------
def ranked_table(space: SearchSpace, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    archs = [f"r{r}e{e}c{c0}-r{r}e{e}c{c1}" for r in (1, 2) for e in (1, 2) for c0, c1 in ((4, 4), (4, 8), (8, 8))]
    costs = [cost_of(space.netspec(a)) for a in archs]
    n = len(archs)
    df = pd.DataFrame({"index": np.arange(n)[::-1], "arch": archs, "snip": rng.normal(size=n),
                       "synflow": rng.uniform(1, 10, n)})
    df.loc[3, "snip"] = np.nan
    df["params"] = [c.params for c in costs]
    df["macs"] = [c.macs for c in costs]
    df["within_limits"] = np.arange(n) != 5
    return df


def test_measure_table_and_plan():
    space = SearchSpace.from_config(SS_CFG)
    ranked = ranked_table(space)
    meas = V.measure_table(ranked, PROXIES, "zscore", seed=2, search_space=SS_CFG)
    names = V.measure_names(PROXIES)
    assert names == ["snip", "synflow", "zscore", "rank", "score", "params", "macs", "min_width", "random"]
    assert list(meas.columns) == ["index", "arch", "in_pool", "params_count", *names]
    assert meas["in_pool"].tolist() == ranked["within_limits"].tolist()
    assert meas["score"].tolist() == meas["zscore"].tolist()
    assert meas["min_width"].tolist() == [4.0 if "c4-r" in a else 8.0 for a in ranked["arch"]]
    # zscore against the population: mean of the two z-scores; the NaN snip makes it -inf
    z = [(ranked[p] - ranked[p].mean()) / ranked[p].std(ddof=1) for p in PROXIES]
    expect = ((z[0] + z[1]) / 2).to_numpy()
    ok = np.isfinite(expect)
    assert np.allclose(meas["zscore"].to_numpy()[ok], expect[ok]) and meas["zscore"].iloc[3] == -np.inf
    assert meas["rank"].between(0, 1).all()
    rk = V.measure_table(ranked, PROXIES, "rank", seed=2, search_space=SS_CFG)
    assert rk["score"].tolist() == rk["rank"].tolist()
    assert rk["random"].tolist() == meas["random"].tolist()
    assert V.measure_table(ranked, PROXIES, "zscore", seed=3, search_space=SS_CFG)["random"].tolist() != \
        meas["random"].tolist()
    with pytest.raises(ValueError, match="'ranking.method' is 'avg'"):
        V.measure_table(ranked, PROXIES, "avg", seed=2)
    with pytest.raises(ValueError, match="no column 'synflow'"):
        V.measure_table(ranked.drop(columns="synflow"), PROXIES, "zscore", seed=2)

    plan = V.validation_plan(meas, nets=4, top_k=2, seeds=3, seed_nets=2, seed=2, names=names)
    n_pick = len(V.pick_measures(names))
    assert n_pick == len(names) - 1
    assert len(plan) == V.plan_size(4, 2, 3, 2, n_pick) == 4 + 2 * n_pick + 2 * 2
    assert list(plan.columns) == V.PLAN_COLUMNS and plan["slot"].tolist() == list(range(len(plan)))
    assert plan["role"].tolist() == ["sample"] * 4 + ["pick"] * (2 * n_pick) + ["seed"] * 4
    assert not plan["arch"].isin(ranked.loc[~ranked["within_limits"], "arch"]).any()
    assert plan.loc[plan["role"] != "seed", "seed"].eq(2).all()
    assert plan.loc[plan["role"] == "seed", "seed"].tolist() == [3, 3, 4, 4]
    assert plan.loc[plan["measure"] == "params#1", "arch"].iloc[0] == \
        meas[meas["in_pool"]].sort_values("params_count")["arch"].iloc[-1]
    # a duplicate points at the first slot of the same (arch, seed); first occurrences have -1
    for r in plan.itertuples():
        same = plan[(plan["arch"] == r.arch) & (plan["seed"] == r.seed) & (plan["slot"] < r.slot)]
        assert r.duplicate_of == (same["slot"].iloc[0] if len(same) else -1)
    assert (plan["duplicate_of"] >= 0).any()
    pd.testing.assert_frame_equal(plan, V.validation_plan(meas, 4, 2, 3, 2, 2, names))
    with pytest.raises(ValueError, match="'validation.seeds' must be >= 1"):
        V.validation_plan(meas, 4, 2, 0, 2, 2, names)


# ----------------------------------------------------------------------------------------------
# the per-slot job and the gather
# ----------------------------------------------------------------------------------------------
def write_data(d):
    d.mkdir()
    x, y = toy_data(128)
    for split, sl in (("train", slice(0, 64)), ("val", slice(64, 96)), ("test", slice(96, 128))):
        np.save(d / f"{split}_x.npy", x[sl])
        np.save(d / f"{split}_y.npy", y[sl])
    pd.DataFrame({"channel": [0], "mean": STATS[0], "std": STATS[1]}).to_parquet(d / "stats.parquet")


def test_plan_train_slots_and_gather(tmp_path, caplog):
    space = SearchSpace.from_config(SS_CFG)
    ranked_table(space).to_parquet(tmp_path / "initial.parquet")
    write_data(tmp_path / "data")
    plan = V.plan_stage(str(tmp_path / "initial.parquet"), PROXIES, "rank", None, nets=4, top_k=1, seeds=2,
                        seed_nets=3, seed=2, search_space=SS_CFG, out_plan=str(tmp_path / "plan.parquet"),
                        out_measures=str(tmp_path / "measures.parquet"),
                        expect_slots=V.plan_size(4, 1, 2, 3, len(V.pick_measures(V.measure_names(PROXIES)))))
    with pytest.raises(ValueError, match="the workflow expects 5"):
        V.plan_stage(str(tmp_path / "initial.parquet"), PROXIES, "rank", None, 4, 1, 2, 3, 2, SS_CFG,
                     str(tmp_path / "p2.parquet"), str(tmp_path / "m2.parquet"), expect_slots=5)
    parts = []
    for slot in range(len(plan)):
        out = tmp_path / "nets" / f"{slot}.parquet"
        V.train_slot(str(tmp_path / "plan.parquet"), str(tmp_path / "data"), slot, SS_CFG,
                     {**SETTINGS, "epochs": 1}, "cpu", False, str(out), progress=False)
        parts.append(str(out))
    rows = pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)
    dup = rows["duplicate_of"] >= 0
    assert (rows.loc[dup, "status"] == "duplicate").all() and rows.loc[dup, "val_acc"].isna().all()
    assert (rows.loc[~dup, "status"] == "ok").all() and rows.loc[~dup, ["val_acc", "test_acc"]].notna().all().all()
    # the same net and seed in another job gives the same accuracies (weights from the seed)
    V.train_slot(str(tmp_path / "plan.parquet"), str(tmp_path / "data"), 0, SS_CFG, {**SETTINGS, "epochs": 1},
                 "cpu", False, str(tmp_path / "again.parquet"), progress=False)
    assert pd.read_parquet(tmp_path / "again.parquet")["val_acc"].iloc[0] == rows["val_acc"].iloc[0]

    with caplog.at_level(logging.INFO, logger="tinyevo"):
        trained, corr, noise = V.gather_stage(str(tmp_path / "plan.parquet"), str(tmp_path / "measures.parquet"),
                                              parts[::-1], PROXIES, str(tmp_path / "trained.parquet"),
                                              str(tmp_path / "correlations.parquet"), str(tmp_path / "noise.parquet"),
                                              n_boot=50, seed=2)
    assert trained["slot"].tolist() == plan["slot"].tolist()
    assert trained[["val_acc", "test_acc"]].notna().all().all()  # duplicates filled from their first slot
    for r in trained[trained["duplicate_of"] >= 0].itertuples():
        assert r.val_acc == trained.loc[r.duplicate_of, "val_acc"]
    names = V.measure_names(PROXIES)
    assert corr["measure"].tolist() == names * 2 and corr["target"].tolist() == ["val"] * 9 + ["test"] * 9
    assert (corr["n"] <= 4).all() and corr["pick_arch"].ne("").all()
    assert noise["target"].tolist() == ["val", "test"] and (noise["nets"] == 3).all() and (noise["seeds"] == 2).all()
    assert "signal on this dataset" in caplog.text and "noise ceiling (val)" in caplog.text
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "correlations.parquet"), corr)
    with pytest.raises(ValueError, match="re-run the validation jobs"):
        V.gather_stage(str(tmp_path / "plan.parquet"), str(tmp_path / "measures.parquet"), parts[:-1], PROXIES,
                       str(tmp_path / "t.parquet"), str(tmp_path / "c.parquet"), str(tmp_path / "n.parquet"), 10, 2)

    for m in names:
        plot_scatter(trained, corr, m, tmp_path / f"scatter_{m}.png")
        assert (tmp_path / f"scatter_{m}.png").read_bytes()[:4] == b"\x89PNG"
    hist = pd.DataFrame({"epoch": [1, 2], "train_loss": [1.0, 0.5], "train_acc": [0.5, 0.7],
                         "test_loss": [1.1, 0.6], "test_acc": [0.4, 0.6], "lr": [0.1, 0.1], "seconds": [1.0, 1.0]})
    plot_history(hist, tmp_path / "curve.png", title="C")
    assert (tmp_path / "curve.png").read_bytes()[:4] == b"\x89PNG"


def test_train_slot_bad_input(tmp_path):
    with pytest.raises(FileNotFoundError, match="validation plan not found"):
        V.train_slot(str(tmp_path / "none.parquet"), str(tmp_path / "data"), 0, SS_CFG, SETTINGS, "cpu", False,
                     str(tmp_path / "o.parquet"), progress=False)
    pd.DataFrame({c: [0] for c in V.PLAN_COLUMNS}).to_parquet(tmp_path / "plan.parquet")
    with pytest.raises(ValueError, match="slot 3 outside the plan's 0..0"):
        V.train_slot(str(tmp_path / "plan.parquet"), str(tmp_path / "data"), 3, SS_CFG, SETTINGS, "cpu", False,
                     str(tmp_path / "o.parquet"), progress=False)
    assert not (tmp_path / "o.parquet").exists()


def test_trained_cache_roundtrip(tmp_path):
    c = V.TrainedCache(tmp_path / "t.parquet")
    key = {"arch": "a", "recipe": "r1", "seed": 0, "data": "d", "compute": "cpu/1"}
    assert c.get(**key) is None
    c.add({**key, "val_acc": 0.5})
    c.add({**key, "val_acc": 0.9})  # a key is stored once
    c.save()
    c2 = V.TrainedCache(tmp_path / "t.parquet")
    assert len(c2) == 1 and c2.get(**key)["val_acc"] == 0.5 and c2.get(**{**key, "seed": 1}) is None
    assert V.recipe_id({"lr": 0.1, "seed": 3}) == V.recipe_id({"lr": 0.1, "seed": 4}) != V.recipe_id({"lr": 0.05})


@pytest.mark.slow
def test_snakemake_validation(tiny_pipeline, make_config):
    """Outputs of the validation rules in the shared TINY pipeline run (tests/conftest.py)."""
    cfg, _ = make_config()
    tmp_path = tiny_pipeline
    v = cfg["validation"]
    names = V.measure_names(cfg["proxies"]["names"])
    plan = pd.read_parquet(tmp_path / "results/validation/plan.parquet")
    assert len(plan) == V.plan_size(v["nets"], v["top_k"], v["seeds"], v["seed_nets"], len(V.pick_measures(names)))
    trained = pd.read_parquet(tmp_path / "results/validation/trained.parquet")
    assert trained["slot"].tolist() == plan["slot"].tolist() and trained["val_acc"].notna().all()
    corr = pd.read_parquet(tmp_path / "results/validation/correlations.parquet")
    assert corr["measure"].tolist() == names * 2 and (corr["n"] == v["nets"]).all()
    assert (tmp_path / "results/validation/scatter_score.png").stat().st_size > 0
    assert (tmp_path / "results/validation/noise.parquet").is_file()
    log = (tmp_path / "results/logs/validation/gather.log").read_text()
    assert "signal on this dataset" in log


def test_trained_cache_two_writers_merge(tmp_path):
    key = {"recipe": "r", "seed": 0, "data": "d", "compute": "cpu/1"}
    a, b = V.TrainedCache(tmp_path / "t.parquet"), V.TrainedCache(tmp_path / "t.parquet")
    a.add({**key, "arch": "x", "val_acc": 0.1})
    b.add({**key, "arch": "y", "val_acc": 0.2})
    a.save()
    b.save()  # b read the file before a wrote: its save keeps a's row
    c = V.TrainedCache(tmp_path / "t.parquet")
    assert len(c) == 2 and c.get(**key, arch="x")["val_acc"] == 0.1 and c.get(**key, arch="y")["val_acc"] == 0.2


def test_duplicate_slot_loads_no_torch(tmp_path):
    """A validation job whose slot repeats another trains nothing and does not import torch (its
    torch threads are set only for a slot that trains)."""
    import json
    import subprocess
    import sys

    space = SearchSpace.from_config(SS_CFG)
    ranked_table(space).to_parquet(tmp_path / "initial.parquet")
    write_data(tmp_path / "data")
    plan = V.plan_stage(str(tmp_path / "initial.parquet"), PROXIES, "rank", None, nets=4, top_k=1, seeds=2,
                        seed_nets=3, seed=2, search_space=SS_CFG, out_plan=str(tmp_path / "plan.parquet"),
                        out_measures=str(tmp_path / "measures.parquet"))
    dup = int(plan.index[plan["duplicate_of"] >= 0][0])
    code = f"""
import json, sys
sys.path.insert(0, {str(V.__file__).rsplit('/tinyevo/', 1)[0]!r})
from tinyevo.train import validation as V
V.train_slot({str(tmp_path / 'plan.parquet')!r}, {str(tmp_path / 'data')!r}, {dup}, json.loads({json.dumps(json.dumps(SS_CFG))}),
             {{"epochs": 1}}, "cpu", False, {str(tmp_path / 'dup.parquet')!r}, progress=False, torch_threads=1)
print("torch loaded:", "torch" in sys.modules)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "torch loaded: False"
    row = pd.read_parquet(tmp_path / "dup.parquet")
    assert row["status"].tolist() == ["duplicate"] and row["slot"].tolist() == [dup]
