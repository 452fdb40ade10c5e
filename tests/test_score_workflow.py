"""End-to-end: the score + rank rules of the shared TINY run, then a re-run served from the cache."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from conftest import TINY, copy_pipeline, run_snakemake, write_yaml


@pytest.mark.slow
def test_score_and_rank_then_cache(tiny_pipeline, tmp_path):
    """The scores and ranks of the shared TINY run (tests/conftest.py); then, in a copy, the gathered
    table removed and made again: every net from the score cache, the same table and ranks."""
    work = copy_pipeline(tiny_pipeline, tmp_path / "work")
    cfg = work / "config.yaml"
    res = work / "results"
    cand = pd.read_parquet(res / "space/candidates.parquet")
    ranked = pd.read_parquet(res / "rank/initial.parquet")
    names = ["snip", "synflow", "jacob_cov"]
    assert ranked["arch"].tolist() == cand["arch"].tolist()
    for c in [*cand.columns, *names, *[f"z_{n}" for n in names], "avg", "rank"]:
        assert c in ranked.columns, c
    assert sorted(ranked["rank"]) == list(range(1, len(cand) + 1))
    assert (ranked["jacob_cov"] <= -TINY["proxies"]["batch_size"] + 1e-3).all()
    norm = pd.read_parquet(res / "rank/normalisation.parquet")
    pool = norm[norm["kind"] == "pool"]
    assert [len(pool[pool["proxy"] == n]) for n in names] == [int(ranked[n].notna().sum()) for n in names]
    norm = norm[norm["kind"] == "moments"]
    assert norm["proxy"].tolist() == names
    assert np.allclose(norm["std"], [ranked[n].std(ddof=1) for n in names])
    assert len(pd.read_parquet(res / "rank/spread.parquet")) == 3
    assert not list((res / "scores/shards").glob("*.parquet")), "shard tables are temp()"
    first = pd.read_parquet(res / "scores/initial.parquet")
    assert not first["cache_hit"].any()
    shard_logs = sorted((res / "logs/score").glob("shard_*.log"))
    n = TINY["scoring"]["shards"]
    assert [p.name for p in shard_logs] == [f"shard_{k}-of-{n}.log" for k in range(1, n + 1)]

    (res / "scores/initial.parquet").unlink()
    # Snakemake does not rebuild a missing intermediate file whose consumers are up to date, so the
    # gathered table is requested explicitly; rank then re-runs because its input is newer.
    run_snakemake(work, cfg, ["results/scores/initial.parquet", "results/rank/initial.parquet"])
    again = pd.read_parquet(res / "scores/initial.parquet")
    assert again["cache_hit"].all()
    pd.testing.assert_frame_equal(first.drop(columns="cache_hit"), again.drop(columns="cache_hit"))
    total_hits = 0
    for log in shard_logs:
        text = log.read_text()
        assert " 0 misses" in text, text[-2000:]
        total_hits += int(text.split("cache: ")[1].split(" hits")[0])
    assert total_hits == len(cand)
    assert "0 scored" in (res / "logs/score/gather.log").read_text()
    assert (pd.read_parquet(res / "rank/initial.parquet")["avg"].to_numpy() == ranked["avg"].to_numpy()).all()


@pytest.mark.slow
def test_empty_candidate_table_is_a_clear_error(tmp_path):
    from tinyevo.proxies.stage import rank_stage, score_shard

    cand = tmp_path / "candidates.parquet"
    pd.DataFrame({"index": pd.Series([], dtype="int64"), "arch": pd.Series([], dtype="str")}).to_parquet(cand)
    with pytest.raises(ValueError, match="empty"):
        score_shard(cand, tmp_path, tmp_path / "s.parquet", 0, 1, {"names": ["snip"], "batch_size": 4, "seed": 0},
                    {}, "cpu", tmp_path / "cache")
    with pytest.raises(ValueError, match="empty"):
        rank_stage(cand, cand, ["snip"], None, tmp_path / "r", tmp_path / "n", tmp_path / "s")
    assert not (tmp_path / "s.parquet").exists() and not (tmp_path / "r").exists()


def test_shards_are_balanced_disjoint_and_cover_every_net():
    """Sorted by cost and dealt in boustrophedon order: each shard gets n/S nets (+-1) and nearly
    the same total cost, where every S-th row of a block-ordered grid does not."""
    from tinyevo.proxies.stage import shard_rows

    costs = [float(10 ** (i % 8)) for i in range(64)]  # a grid's fastest gene: period 8
    for shards in (1, 2, 3, 4, 5):
        parts = [shard_rows(costs, i, shards) for i in range(shards)]
        assert sorted(sum(parts, [])) == list(range(64))
        assert max(map(len, parts)) - min(map(len, parts)) <= 1
        assert all(p == sorted(p) for p in parts)
    parts = [shard_rows(costs, i, 4) for i in range(4)]
    totals = [sum(costs[j] for j in p) for p in parts]
    strided = [sum(costs[i::4]) for i in range(4)]
    assert max(totals) / min(totals) < 1.01 and max(strided) / min(strided) > 50
    assert shard_rows(costs, 1, 4) == shard_rows(list(costs), 1, 4)  # a pure function of the costs
    with pytest.raises(ValueError, match="scoring.shards"):
        shard_rows(costs, 4, 4)


def test_gather_and_rank_imports_do_not_load_torch():
    """tinyevo.proxies resolves its names lazily: the gather and rank jobs (cache, stage, ranking)
    start without importing torch (about 2 s a job)."""
    import subprocess
    import sys

    from conftest import REPO

    code = ("import sys; sys.path.insert(0, sys.argv[1])\n"
            "from tinyevo.proxies.stage import gather_scores, rank_stage\n"
            "from tinyevo.proxies import ScoreCache, ranking\n"
            "from tinyevo.runtime import log_header, setup_logging\n"
            "print(sorted(m for m in ('torch', 'pandas') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code, str(REPO / "workflow")], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "['pandas']"


def test_set_scatter_overrides_the_shard_count(tmp_path):
    """scoring.shards is the default count of Snakemake's scattergather `score`;
    `--set-scatter score=N` overrides it from the command line (shard k of n: `k-of-n`)."""
    cfg = write_yaml(tmp_path / "tiny.yaml", TINY)
    out = run_snakemake(tmp_path, cfg, ["results/scores/initial.parquet"], extra=["-n", "--set-scatter=score=3"])
    text = out.stdout + out.stderr
    assert sorted(set(re.findall(r"scatteritem=(\d+-of-\d+)", text))) == ["1-of-3", "2-of-3", "3-of-3"]
    default = run_snakemake(tmp_path, cfg, ["results/scores/initial.parquet"], extra=["-n"])
    n = TINY["scoring"]["shards"]
    assert sorted(set(re.findall(r"scatteritem=(\d+-of-\d+)", default.stdout + default.stderr))) == \
        [f"{k}-of-{n}" for k in range(1, n + 1)]
