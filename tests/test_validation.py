"""Proxy validation: sampling, correlations, the per-net job, the gather and the plots."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP (shared cores)

import logging

import numpy as np
import pandas as pd
import pytest
import torch

from tinyevo.space import SearchSpace, cost_of
from tinyevo.train.plots import plot_history, plot_scatter
from tinyevo.train.validation import correlations, gather, measures_of, sample_nets, train_sampled

from test_train import SETTINGS, SS_CFG, STATS, toy_data

torch.set_num_threads(1)
PROXIES = ["snip", "synflow"]


def ranked_table(space: SearchSpace, n: int = 6, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    archs = []
    for r in (1, 2):
        for e in (1, 2):
            for c in (4, 8):
                archs.append(f"r{r}e{e}c{4 if c == 4 else 8}-r{r}e{e}c{c}")
    archs = [a for a in dict.fromkeys(archs)][:n]
    costs = [cost_of(space.netspec(a)) for a in archs]
    df = pd.DataFrame({"index": np.arange(len(archs))[::-1], "arch": archs,
                       "snip": rng.normal(size=len(archs)), "synflow": rng.uniform(1, 10, len(archs))})
    df["avg"] = df["snip"] + df["synflow"]
    df["params"] = [c.params for c in costs]
    df["macs"] = [c.macs for c in costs]
    df["feasible"] = True
    return df


def test_sample_is_seeded_and_sorted():
    df = pd.DataFrame({"index": np.arange(50)[::-1], "arch": [f"a{i}" for i in range(50)]})
    a, b, c = sample_nets(df, 10, 3), sample_nets(df, 10, 3), sample_nets(df, 10, 4)
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(c)
    assert a["index"].is_monotonic_increasing and a["index"].is_unique and len(a) == 10
    # the row order of the table does not matter
    pd.testing.assert_frame_equal(sample_nets(df.sample(frac=1, random_state=1), 10, 3), a)
    with pytest.raises(ValueError, match="'validation.nets' is 60 but the ranked population has only 50"):
        sample_nets(df, 60, 3)


def test_correlations_known_values():
    acc = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"test_acc": acc, "up": acc ** 3, "down": -acc, "flat": np.ones(8),
                       "noise": rng.permutation(8)})
    corr = correlations(df, ["up", "down", "flat", "noise"]).set_index("measure")
    assert corr.loc["up", "spearman"] == pytest.approx(1.0) and corr.loc["up", "kendall"] == pytest.approx(1.0)
    assert corr.loc["down", "spearman"] == pytest.approx(-1.0) and corr.loc["down", "kendall"] == pytest.approx(-1.0)
    assert corr.loc["up", "signal"] and corr.loc["down", "signal"]
    assert np.isnan(corr.loc["flat", "spearman"]) and not corr.loc["flat", "signal"]
    assert (corr["n"] == 8).all()
    # neighbours swapped: rho = 1 - 6 * 8 / (8 * 63) = 0.905 with p ~ 0.002
    df["mid"] = [2, 1, 4, 3, 6, 5, 8, 7]
    mid = correlations(df, ["mid"]).iloc[0]
    assert mid["spearman"] == pytest.approx(1 - 48 / 504) and 1e-4 < mid["spearman_p"] < 0.01 and mid["signal"]
    assert mid["kendall"] == pytest.approx(1 - 2 * 4 / 28) and mid["kendall_p"] < 0.05
    assert not correlations(df, ["mid"], max_p=1e-4)["signal"].iloc[0]
    # 4 nets in perfect agreement: Spearman's p is 0, Kendall's exact p is 1/12 -> no signal
    small = correlations(df.iloc[:4], ["up"]).iloc[0]
    assert small["spearman"] == pytest.approx(1.0) and small["kendall_p"] == pytest.approx(1 / 12)
    assert not small["signal"]
    assert not correlations(df, ["mid"], min_abs_rho=0.95)["signal"].iloc[0]


def write_data(d):
    d.mkdir()
    x, y = toy_data(96)
    for split, sl in (("train", slice(0, 64)), ("test", slice(64, 96))):
        np.save(d / f"{split}_x.npy", x[sl])
        np.save(d / f"{split}_y.npy", y[sl])
    pd.DataFrame({"channel": [0], "mean": STATS[0], "std": STATS[1]}).to_parquet(d / "stats.parquet")


def test_train_sampled_and_gather(tmp_path, caplog):
    space = SearchSpace.from_config(SS_CFG)
    ranked = ranked_table(space)
    ranked.to_parquet(tmp_path / "initial.parquet")
    write_data(tmp_path / "data")
    k = 3
    parts = []
    for i in range(k):
        out = tmp_path / "nets" / f"{i}.parquet"
        train_sampled(str(tmp_path / "initial.parquet"), str(tmp_path / "data"), i, k, seed=2, epochs=1,
                      proxies=PROXIES, search_space=SS_CFG, settings=SETTINGS, device="cpu", amp=False,
                      out=str(out), progress=False)
        parts.append(str(out))
    sample = sample_nets(ranked, k, 2)
    with caplog.at_level(logging.INFO, logger="tinyevo"):
        trained, corr = gather(parts[::-1], PROXIES, str(tmp_path / "trained.parquet"),
                               str(tmp_path / "correlations.parquet"))
    assert trained["arch"].tolist() == sample["arch"].tolist()
    assert trained["snip"].tolist() == pytest.approx(sample["snip"].tolist())
    assert trained["epochs"].eq(1).all() and trained["test_acc"].between(0, 1).all()
    assert corr["measure"].tolist() == measures_of(PROXIES) == ["snip", "synflow", "avg", "params", "macs"]
    assert list(corr.columns) == ["measure", "spearman", "spearman_p", "kendall", "kendall_p", "n", "signal"]
    assert (corr["n"] == k).all()
    assert "carries signal on this dataset" in caplog.text or "carry signal on this dataset" in caplog.text
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "correlations.parquet"), corr)

    # one scatter per measure, and a training curve
    for m in measures_of(PROXIES):
        plot_scatter(trained, corr, m, tmp_path / f"scatter_{m}.png")
        assert (tmp_path / f"scatter_{m}.png").read_bytes()[:4] == b"\x89PNG"
    hist = pd.DataFrame({"epoch": [1, 2], "train_loss": [1.0, 0.5], "train_acc": [0.5, 0.7],
                         "test_loss": [1.1, 0.6], "test_acc": [0.4, 0.6], "lr": [0.1, 0.1], "seconds": [1.0, 1.0]})
    plot_history(hist, tmp_path / "curve.png", title="C")
    assert (tmp_path / "curve.png").read_bytes()[:4] == b"\x89PNG"


def test_train_sampled_bad_input(tmp_path):
    space = SearchSpace.from_config(SS_CFG)
    ranked_table(space).drop(columns=["synflow"]).to_parquet(tmp_path / "initial.parquet")
    with pytest.raises(ValueError, match=r"missing columns \['synflow'\].*proxies.names"):
        train_sampled(str(tmp_path / "initial.parquet"), str(tmp_path / "data"), 0, 3, 0, 1, PROXIES, SS_CFG,
                      SETTINGS, "cpu", False, str(tmp_path / "o.parquet"), progress=False)
    with pytest.raises(FileNotFoundError, match="ranked initial population not found"):
        train_sampled(str(tmp_path / "none.parquet"), str(tmp_path / "data"), 0, 3, 0, 1, PROXIES, SS_CFG,
                      SETTINGS, "cpu", False, str(tmp_path / "o.parquet"), progress=False)
    assert not (tmp_path / "o.parquet").exists()


@pytest.mark.slow
def test_snakemake_validation(tiny_pipeline, make_config):
    """Outputs of the validation rules in the shared TINY pipeline run (tests/conftest.py)."""
    cfg, _ = make_config()
    tmp_path = tiny_pipeline
    assert (tmp_path / "results/validation/scatter_avg.png").stat().st_size > 0
    corr = pd.read_parquet(tmp_path / "results/validation/correlations.parquet")
    trained = pd.read_parquet(tmp_path / "results/validation/trained.parquet")
    assert len(trained) == cfg["validation"]["nets"]
    assert corr["measure"].tolist() == measures_of(cfg["proxies"]["names"])
    log = (tmp_path / "results/logs/validation/gather.log").read_text()
    assert "signal on this dataset" in log
