"""``bench/tuning_streams.py``: the subsets choose as the pipeline does (first maximum of the
mean criterion) and the judge streams score the choice."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import load_bench


def test_choices_take_the_first_maximum_of_the_subset_mean():
    ts = load_bench("tuning_streams")
    crit = np.array([[0.5, 0.7, 0.7], [0.5, 0.6, 0.8]])
    # all rows: means 0.5 / 0.65 / 0.75 -> point 2; one row each: row 0 ties 1 and 2 -> the first
    assert ts.choices(crit, 2, 10, np.random.default_rng(0)).tolist() == [2]
    picks = ts.choices(crit, 1, 200, np.random.default_rng(0))
    assert set(picks.tolist()) == {1, 2} and len(picks) == 200


def test_stability_judges_the_choice_on_the_other_streams():
    ts = load_bench("tuning_streams")
    rng = np.random.default_rng(3)
    # 4 candidate streams prefer point 0, the 4 judge streams point 1 by 0.01
    cand = np.column_stack([np.full(4, 0.9), np.full(4, 0.8)]) + rng.normal(0, 1e-4, (4, 2))
    judge = np.column_stack([np.full(4, 0.80), np.full(4, 0.81)])
    rows = ts.stability(np.vstack([cand, judge]), 4, [1, 4], 50, seed=0)
    assert [r["streams"] for r in rows] == [1, 4] and rows[1]["subsets"] == 1
    for r in rows:
        assert r["own_choice"] == 0 and r["agree"] == 0.0
        assert r["regret_mean"] == pytest.approx(1.0) and r["own_regret"] == pytest.approx(1.0)
    # judges that agree with the candidates: no regret
    rows = ts.stability(np.vstack([cand, cand]), 4, [2], 20, seed=0)
    assert rows[0]["regret_mean"] == 0.0 and rows[0]["agree"] == 1.0
