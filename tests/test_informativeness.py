"""The proxy informativeness check: the rank ANOVA against a plain implementation and a hand
example, NaN handling, settings, the stage function with the score cache, the real synflow vs
saturated synflow_relu6 verdict on the default space, and the rule in the DAG."""

from __future__ import annotations

import logging
import math
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import REPO, TINY, write_yaml
from tinyevo.config import load_config
from tinyevo.proxies import ProxyScorer, ScoreCache
from tinyevo.proxies import informativeness as inf
from tinyevo.space import space_from_config

torch.set_num_threads(1)


# ----- plain implementation ---------------------------------------------------------------------------
def plain_ranks(v):
    """1-based ranks, ties get the mean of their positions (loops)."""
    out = []
    for a in v:
        less = sum(1 for b in v if b < a)
        equal = sum(1 for b in v if b == a)
        out.append(1 + less + (equal - 1) / 2)
    return out


def plain_stats(groups):
    """eta2, ICC(1) and the median normalised spread of ``groups`` (list of lists of finite
    scores, one list per net, each of length >= 2), by loops."""
    flat = [v for g in groups for v in g]
    ranks = plain_ranks(flat)
    rg, i = [], 0
    for g in groups:
        rg.append(ranks[i:i + len(g)])
        i += len(g)
    n, a = len(flat), len(groups)
    grand = sum(ranks) / n
    ssb = sum(len(g) * (sum(g) / len(g) - grand) ** 2 for g in rg)
    ssw = sum(sum((r - sum(g) / len(g)) ** 2 for r in g) for g in rg)
    k0 = (n - sum(len(g) ** 2 for g in rg) / n) / (a - 1)
    msb, msw = ssb / (a - 1), ssw / (n - a)
    icc = (msb - msw) / (msb + (k0 - 1) * msw)
    spread = float(np.median([(max(g) - min(g)) / (n - 1) for g in rg]))
    return ssb / (ssb + ssw), icc, spread


def long_table(values: np.ndarray, name="p") -> pd.DataFrame:
    """values[net, seed] -> long (arch, seed, name)."""
    nets, seeds = values.shape
    return pd.DataFrame({"arch": [f"net{i}" for i in range(nets) for _ in range(seeds)],
                         "seed": [s for _ in range(nets) for s in range(seeds)],
                         name: values.reshape(-1)})


# ----- the statistics -----------------------------------------------------------------------------------
def test_hand_example():
    t = inf.informativeness_table(long_table(np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])), ["p"])
    r = t.iloc[0]
    assert list(t.columns) == inf.COLUMNS
    assert r["eta2"] == pytest.approx(16 / 17.5, rel=1e-12)
    assert r["icc"] == pytest.approx(7.5 / 8.5, rel=1e-12)
    assert r["median_rank_spread"] == pytest.approx(0.2, rel=1e-12)
    assert (r["n_nets"], r["n_seeds"], r["n_scores"], r["n_nonfinite"]) == (3, 2, 6, 0) and r["informative"]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_plain_implementation_balanced_and_unbalanced(seed):
    rng = np.random.default_rng(seed)
    arch_effect = rng.normal(size=(9, 1))
    values = arch_effect + rng.normal(scale=0.8, size=(9, 4))
    values[2, 1] = 0.5  # ties across nets
    values[5, 3] = 0.5
    t = inf.informativeness_table(long_table(values), ["p"]).iloc[0]
    want = plain_stats([list(row) for row in values])
    assert (t["eta2"], t["icc"], t["median_rank_spread"]) == pytest.approx(want, rel=1e-12)
    # unbalanced: some scores missing
    values[1, 0] = np.nan
    values[4, [0, 2]] = np.inf
    t = inf.informativeness_table(long_table(values), ["p"]).iloc[0]
    groups = [[v for v in row if np.isfinite(v)] for row in values]
    assert (t["eta2"], t["icc"], t["median_rank_spread"]) == pytest.approx(plain_stats(groups), rel=1e-12)
    assert (t["n_scores"], t["n_nonfinite"], t["n_nets"]) == (33, 3, 9)


def test_seed_free_measure_is_fully_informative_and_noise_is_not():
    rng = np.random.default_rng(0)
    size = np.repeat(rng.permutation(30)[:, None].astype(float), 3, axis=1)  # like params: no seed effect
    noise = rng.normal(size=(30, 3))
    df = long_table(size, "size").assign(noise=long_table(noise, "noise")["noise"])
    t = inf.informativeness_table(df, ["size", "noise"], min_icc=0.5).set_index("proxy")
    assert t.loc["size", "icc"] == pytest.approx(1.0) and t.loc["size", "eta2"] == pytest.approx(1.0)
    assert t.loc["size", "median_rank_spread"] == 0.0 and t.loc["size", "informative"]
    assert abs(t.loc["noise", "icc"]) < 0.3 and not t.loc["noise", "informative"]
    # ranks: a monotone transform (a log) changes nothing
    df2 = df.assign(size=np.exp(df["size"]))
    t2 = inf.informativeness_table(df2, ["size"]).iloc[0]
    assert t2["icc"] == t.loc["size", "icc"] and t2["eta2"] == t.loc["size", "eta2"]


def test_constant_and_non_finite_proxies(caplog):
    values = np.full((5, 3), 2430.0)
    bad = np.arange(15.0).reshape(5, 3)
    bad[0, :2] = np.nan  # net0 left with one finite score: dropped too
    bad[3, 1] = -np.inf
    df = long_table(values, "flat").assign(bad=long_table(bad, "bad")["bad"])
    with caplog.at_level(logging.WARNING, logger="tinyevo.proxies.informativeness"):
        t = inf.informativeness_table(df, ["flat", "bad"]).set_index("proxy")
    assert math.isnan(t.loc["flat", "eta2"]) and math.isnan(t.loc["flat", "icc"]) and not t.loc["flat", "informative"]
    assert (t.loc["bad", "n_nets"], t.loc["bad", "n_scores"], t.loc["bad", "n_nonfinite"]) == (4, 11, 4)
    assert t.loc["bad", "informative"]
    flat_msgs = [r.getMessage() for r in caplog.records if "proxy flat " in r.getMessage()]
    assert len(flat_msgs) == 1 and "constant" in flat_msgs[0]
    assert any("proxy bad: 4 of 15 scores dropped" in r.getMessage() for r in caplog.records)
    assert not any("proxy bad is" in r.getMessage() or "proxy bad carries" in r.getMessage() for r in caplog.records)
    # everything non-finite: no nets left
    t = inf.informativeness_table(long_table(np.full((3, 2), np.nan)), ["p"]).iloc[0]
    assert (t["n_nets"], t["n_scores"], t["n_nonfinite"]) == (0, 0, 6) and not t["informative"]
    with pytest.raises(ValueError, match="no column"):
        inf.informativeness_table(df, ["nope"])


def test_settings_are_checked_naming_the_key():
    assert inf.check_settings(None) == {"nets": 24, "seeds": 3, "min_icc": 0.5, "names": None}
    for bad, key in (({"seeds": 1}, "seeds"), ({"nets": 1}, "nets"), ({"seeds": 2.5}, "seeds"),
                     ({"min_icc": 1.5}, "min_icc"), ({"min_icc": float("nan")}, "min_icc"),
                     ({"names": []}, "names"), ({"names": "snip"}, "names")):
        with pytest.raises(ValueError, match=rf"proxies\.informativeness\.{key}"):
            inf.check_settings(bad)
    with pytest.raises(ValueError, match="unknown keys"):
        inf.check_settings({"seed": 3})


def test_pick_nets_is_seeded_distinct_and_capped():
    archs = [f"a{i:03d}" for i in range(100)]
    a = inf.pick_nets(archs, 24, 5)
    assert a == inf.pick_nets(archs, 24, 5) and len(set(a)) == 24 and a == sorted(a)
    assert a != inf.pick_nets(archs, 24, 6)
    assert inf.pick_nets(archs[:7], 24, 5) == archs[:7]
    assert inf.init_seeds(4, 3) == [4, 5, 6]


# ----- real computation ---------------------------------------------------------------------------------
def test_synflow_informative_and_saturated_synflow_not_on_the_default_space(caplog):
    """8 nets of the default 512-grid space (32x32x1) x 3 init seeds."""
    cfg, _ = load_config([REPO / "config" / "config.yaml"])
    space = space_from_config(cfg)
    archs = inf.pick_nets([a for _, a, _ in space.iter_arches()], 8, cfg["proxies"]["seed"])
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(8, 1, 32, 32, generator=g), torch.randint(0, 10, (8,), generator=g)
    t0 = time.perf_counter()
    scores = inf.seed_scores(space, archs, ["synflow", "synflow_relu6"], x, y, inf.init_seeds(0, 3))
    assert time.perf_counter() - t0 < 60
    with caplog.at_level(logging.WARNING, logger="tinyevo.proxies.informativeness"):
        t = inf.informativeness_table(scores, ["synflow", "synflow_relu6"], min_icc=0.5).set_index("proxy")
    assert t.loc["synflow", "informative"] and t.loc["synflow", "icc"] > 0.9
    assert not t.loc["synflow_relu6", "informative"] and t.loc["synflow_relu6", "icc"] < 0.5
    assert (t["n_nets"] == 8).all() and (t["n_scores"] == 24).all()
    warned = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("proxy synflow_relu6 is mostly initialisation noise") for m in warned)
    assert not any(m.startswith("proxy synflow ") for m in warned)


@pytest.fixture
def stage_inputs(tmp_path):
    """A tiny data dir and candidate table of the TINY space."""
    cfgp = write_yaml(tmp_path / "tiny.yaml", TINY)
    cfg, _ = load_config([cfgp])
    space = space_from_config(cfg)
    rng = np.random.default_rng(0)
    data = tmp_path / "data"
    data.mkdir()
    res = cfg["search_space"]["resolution"]
    np.save(data / "train_x.npy", rng.integers(0, 256, (40, res, res, 1), dtype=np.uint8))
    np.save(data / "train_y.npy", rng.integers(0, 10, 40).astype(np.int64))
    pd.DataFrame({"channel": [0], "mean": [0.5], "std": [0.25]}).to_parquet(data / "stats.parquet")
    cand = pd.DataFrame([{"index": i, "arch": a} for i, a, _ in space.iter_arches()])
    cand.to_parquet(tmp_path / "candidates.parquet", index=False)
    proxies = {"names": ["snip", "params"], "batch_size": 8, "seed": 1, "threads": 1}
    return tmp_path, cfg, space, proxies


def test_stage_writes_the_table_and_reuses_the_cache(stage_inputs):
    from tinyevo.proxies.batch import make_batch

    tmp, cfg, space, proxies = stage_inputs
    cache = tmp / "cache"
    cand = pd.read_parquet(tmp / "candidates.parquet")
    # the score stage's scores (init seed = proxies.seed) are already cached
    x, y = make_batch(tmp / "data", 8, 1)
    ProxyScorer(space, proxies["names"], x, y, 1, cache_dir=cache).score(cand["arch"].tolist())
    before = len(ScoreCache(cache))
    settings = {"nets": 5, "seeds": 3, "min_icc": 0.5, "names": ["snip", "params", "synflow_relu6"]}
    out = tmp / "informativeness.parquet"
    t = inf.run_informativeness(tmp / "candidates.parquet", tmp / "data", out, proxies, settings,
                                cfg["search_space"], "cpu", cache)
    written = pd.read_parquet(out)
    pd.testing.assert_frame_equal(t, written)
    assert written["proxy"].tolist() == ["snip", "params", "synflow_relu6"]
    assert (written["n_nets"] == 5).all() and (written["n_seeds"] == 3).all()
    p = written.set_index("proxy").loc["params"]
    assert p["icc"] == pytest.approx(1.0) and p["informative"]
    # new scores: seeds 2 and 3 for snip/params, all three seeds for synflow_relu6
    after = len(ScoreCache(cache))
    assert after - before == 5 * (2 * 2 + 3)
    again = inf.run_informativeness(tmp / "candidates.parquet", tmp / "data", out, proxies, settings,
                                    cfg["search_space"], "cpu", cache)
    assert len(ScoreCache(cache)) == after
    pd.testing.assert_frame_equal(again, written)
    # null names = proxies.names
    t = inf.run_informativeness(tmp / "candidates.parquet", tmp / "data", out, proxies, {"nets": 3},
                                cfg["search_space"], "cpu", cache)
    assert t["proxy"].tolist() == proxies["names"] and (t["n_nets"] == 3).all()


def test_stage_rejects_bad_settings_before_scoring(stage_inputs):
    tmp, cfg, _, proxies = stage_inputs
    out = tmp / "x.parquet"
    with pytest.raises(ValueError, match=r"proxies\.informativeness\.seeds"):
        inf.run_informativeness(tmp / "candidates.parquet", tmp / "data", out, proxies, {"seeds": 1},
                                cfg["search_space"], "cpu")
    with pytest.raises(ValueError, match=r"proxies\.batch_size.*zico"):
        inf.run_informativeness(tmp / "candidates.parquet", tmp / "data", out, {**proxies, "batch_size": 3},
                                {"names": ["zico"]}, cfg["search_space"], "cpu")
    with pytest.raises(ValueError, match=r"proxies\.names"):
        inf.run_informativeness(tmp / "candidates.parquet", tmp / "data", out, proxies, {"names": ["nope"]},
                                cfg["search_space"], "cpu")
    assert not out.exists()


def test_rule_is_in_the_default_targets(tmp_path):
    cfgp = write_yaml(tmp_path / "tiny.yaml", TINY)
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory",
                           str(tmp_path), "--configfile", str(cfgp), "-n", "--nolock", "--cores", "1"],
                          capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "rule proxy_informativeness:" in out and "results/rank/informativeness.parquet" in out
    assert "results/rank/informativeness.html" in out
