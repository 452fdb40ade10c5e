"""bench/scenario_pairs.py: paired differences of the learners' final accuracies."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from conftest import load_bench


def _load():
    return load_bench("scenario_pairs")


def _curves(finals: dict[str, list[float]], steps=3) -> pd.DataFrame:
    """Curves whose last step holds ``finals`` (variant -> accuracy per repetition); earlier steps
    hold other values, so a table that read any other step would be wrong."""
    rows = []
    for v, accs in finals.items():
        for r, a in enumerate(accs):
            for s in range(steps):
                rows.append({"scenario": "x", "variant": v, "repetition": r, "step": s,
                             "accuracy": a if s == steps - 1 else 0.1 * s})
    return pd.DataFrame(rows)


def test_paired_differences_match_a_paired_t_test(tmp_path):
    mod = _load()
    ty, ol, fl = [0.90, 0.85, 0.88, 0.91, 0.87], [0.80, 0.84, 0.83, 0.86, 0.81], [0.90, 0.86, 0.87, 0.90, 0.88]
    d = tmp_path / "results" / "scenarios" / "incremental"
    d.mkdir(parents=True)
    _curves({"tybox": ty, "tinyol": ol, "float": fl}).to_parquet(d / "curves.parquet")
    df = mod.table(tmp_path / "results")
    assert df["pair"].tolist() == ["tybox - tinyol", "tybox - float", "float - tinyol"]
    for (a, b), row in zip([(ty, ol), (ty, fl), (fl, ol)], df.itertuples()):
        diff = np.subtract(a, b)
        ref = stats.ttest_rel(a, b)
        ci = ref.confidence_interval(0.95)
        assert row.n == 5
        assert row.mean_points == pytest.approx(100 * diff.mean())
        assert row.sd_points == pytest.approx(100 * diff.std(ddof=1))
        assert row.t == pytest.approx(ref.statistic)
        assert (row.ci_low_points, row.ci_high_points) == pytest.approx((100 * ci.low, 100 * ci.high))
    md = mod.markdown(df)
    assert "| incremental | tybox - tinyol | 5 | +5.4 |" in md


def test_no_curves_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="no scenarios/\\*/curves.parquet under"):
        _load().table(tmp_path)


def test_after_change_pairs_the_mean_accuracy_after_the_change_point(tmp_path):
    """--metric after_change: each repetition's mean over the steps after the run's change point
    (read from config.resolved.yaml); transfer, which has no change, over every step >= 1."""
    mod = _load()
    res = tmp_path / "results"
    rng = np.random.default_rng(0)
    acc = {v: rng.uniform(0.2, 0.9, size=(4, 7)) for v in ("tybox", "tinyol")}  # 4 repetitions, steps 0..6
    for scenario in ("incremental", "transfer"):
        rows = [{"scenario": scenario, "variant": v, "repetition": r, "step": s, "accuracy": a[r, s]}
                for v, a in acc.items() for r in range(4) for s in range(7)]
        (res / "scenarios" / scenario).mkdir(parents=True)
        pd.DataFrame(rows).to_parquet(res / "scenarios" / scenario / "curves.parquet")
    (res / "config.resolved.yaml").write_text("scenarios:\n  change_point: 3\n  stream_length: 6\n")
    df = mod.table(res, "after_change").set_index("scenario")
    for scenario, start in (("incremental", 4), ("transfer", 1)):
        diff = acc["tybox"][:, start:].mean(axis=1) - acc["tinyol"][:, start:].mean(axis=1)
        assert df.loc[scenario, "mean_points"] == pytest.approx(100 * diff.mean())
        assert df.loc[scenario, "sd_points"] == pytest.approx(100 * diff.std(ddof=1))
    # an explicit change point wins over the run's
    other = mod.table(res, "after_change", change_point=1).set_index("scenario")
    diff = acc["tybox"][:, 2:].mean(axis=1) - acc["tinyol"][:, 2:].mean(axis=1)
    assert other.loc["incremental", "mean_points"] == pytest.approx(100 * diff.mean())
    (res / "config.resolved.yaml").unlink()
    with pytest.raises(SystemExit, match="give --change-point"):
        mod.table(res, "after_change")
