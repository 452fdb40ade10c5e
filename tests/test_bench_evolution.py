"""``bench/evolution.py`` at a tiny size: it runs both constraint modes for every seed, and runs
side by side in spawned worker processes (``--jobs 2``) give the same histories as the same runs
one after another in-process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]


def _run_bench(args, workdir: Path) -> pd.DataFrame:
    """As a user runs it (spawned workers re-import the script as ``__mp_main__``)."""
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "evolution.py"), *args, "--workdir", str(workdir)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return pd.read_csv(workdir / "runs.csv")


@pytest.mark.slow
def test_bench_evolution_jobs_match_sequential(tmp_path):
    common = ["--population-size", "20", "--cycles", "4", "--batch-size", "8", "--resolution", "16",
              "--seeds", "1"]
    seq = _run_bench(common + ["--jobs", "1"], tmp_path / "seq")
    par = _run_bench(common + ["--jobs", "2"], tmp_path / "par")

    assert sorted(zip(seq["mode"], seq["seed"])) == sorted(
        (m, s) for m in ("post_hoc", "penalty") for s in (1,))
    assert len(par) == 2 and (par["nets"] == 20 + 4).all()
    for run in ("post_hoc-seed1", "penalty-seed1"):
        a = pd.read_parquet(tmp_path / "seq" / "runs" / run / "history.parquet")
        b = pd.read_parquet(tmp_path / "par" / "runs" / run / "history.parquet")
        pd.testing.assert_frame_equal(a, b)
    # the per-run figures (not the timings) are identical too
    keep = ["best_feasible_avg", "feasible_share_history", "feasible_share_children", "duplicates"]
    pd.testing.assert_frame_equal(seq.sort_values(["mode", "seed"])[keep].reset_index(drop=True),
                                  par.sort_values(["mode", "seed"])[keep].reset_index(drop=True))
    summary = pd.read_csv(tmp_path / "par" / "summary.csv", header=[0, 1], index_col=0)
    assert set(summary.index) == {"post_hoc", "penalty"}
    assert summary[("scoring_share", "mean")].between(0, 1).all()


@pytest.mark.slow
def test_bench_evolution_compares_the_algorithms(tmp_path):
    from ruamel.yaml import YAML

    yaml = YAML(typ="safe")
    cfg = yaml.load((REPO / "config" / "config.yaml").read_text())
    cfg["evolution"]["nsga2"] = {"pop_size": 3}
    with open(tmp_path / "cfg.yaml", "w") as fh:
        yaml.dump(cfg, fh)
    runs = _run_bench(["--config", str(tmp_path / "cfg.yaml"), "--compare", "algorithms", "--population-size", "24",
                       "--cycles", "6", "--batch-size", "8", "--seeds", "1", "--train-k", "1",
                       "--train-epochs", "1"], tmp_path / "alg")
    assert sorted(runs["algorithm"]) == ["aging", "nsga2"] and (runs["children"] == 6).all()
    # the same initial pool and reference point: the same starting hypervolume, never lost later
    assert runs["hypervolume_initial"].nunique() == 1
    assert (runs["hypervolume"] >= runs["hypervolume_initial"] - 1e-12).all()
    assert runs["deployed_test_acc"].between(0, 1).all() and (runs["deployed_flash"] > 0).all()
    for alg in ("aging", "nsga2"):
        front = pd.read_parquet(tmp_path / "alg" / "runs" / f"{alg}-seed1" / "pareto.parquet")
        assert len(front) == runs.set_index("algorithm").loc[alg, "front"]
    summary = pd.read_csv(tmp_path / "alg" / "summary.csv", header=[0, 1], index_col=0)
    assert set(summary.index) == {"aging", "nsga2"}
