"""Aging evolution (tinyevo.search): mutation validity, aging, tournament, penalty, resume,
determinism, batched children, the winners table, plots and bad input.

Most tests inject a deterministic fake scorer (scores are a pure function of the architecture)
so they run in well under a second; one test runs the real proxy scorer on the TINY space."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest

from tinyevo.io import write_parquet
from tinyevo.search import EvolutionParams, NoFeasibleNet, evolve, mutable_positions, mutate, select_winners
from tinyevo.search.plots import best_per_cycle, feasible_share, make_plots, pareto_front
from tinyevo.space import GENES, Genes, SearchSpace, cost_of, space_from_config

PROXIES = ["pa", "pb"]


# ----- fixtures ------------------------------------------------------------------------------------
@pytest.fixture
def space(make_config):
    cfg, _ = make_config({"search_space": {"population": {"mode": "random", "size": 30}}})
    return space_from_config(cfg)


def _raw(space: SearchSpace, arch: str) -> dict[str, float]:
    """A deterministic fake 'proxy' pair: a hash of the arch and log params (bigger nets score
    higher on pb, so the constraint matters)."""
    h = int(hashlib.sha256(arch.encode()).hexdigest()[:12], 16) / 16**12
    return {"pa": h, "pb": float(np.log(cost_of(space.netspec(arch)).params))}


class FakeScorer:
    """evaluate(archs) -> arch, raw, z (with the initial mean/std), avg. Counts calls and can
    raise at a given call to simulate a killed job."""

    def __init__(self, space, norm, fail_at: int | None = None):
        self.space, self.norm, self.fail_at = space, norm, fail_at
        self.calls = 0
        self.batches: list[list[str]] = []

    def __call__(self, archs):
        self.calls += 1
        if self.fail_at is not None and self.calls == self.fail_at:
            raise KeyboardInterrupt("simulated kill")
        self.batches.append(list(archs))
        return standardise(pd.DataFrame([{"arch": a, **_raw(self.space, a)} for a in archs]), self.norm)


def standardise(df, norm):
    df = df.copy()
    for p, m, s in zip(norm["proxy"], norm["mean"], norm["std"]):
        df[f"z_{p}"] = (df[p] - m) / s
    df["avg"] = df[[f"z_{p}" for p in norm["proxy"]]].mean(axis=1)
    df["score"] = df["avg"]  # ranking.method zscore: score == AVG
    return df


def initial_table(space):
    rows = [{"index": i, "arch": space.encode(g), **_raw(space, space.encode(g))} for i, g in space.initial_population()]
    df = pd.DataFrame(rows)
    norm = pd.DataFrame({"proxy": PROXIES, "mean": [df[p].mean() for p in PROXIES],
                         "std": [df[p].std(ddof=1) for p in PROXIES], "weight": [1.0, 1.0]})
    # shuffle the rows: the loop must restore age order from `index`
    return standardise(df, norm).sample(frac=1.0, random_state=3), norm


def constraints_median(space, initial):
    params = sorted(cost_of(space.netspec(a)).params for a in initial["arch"])
    return {"max_params": params[len(params) // 2], "max_macs": None, "max_peak_sram": None, "max_flash": None}


def run(space, initial, norm, tmp=None, scorer=None, constraints=None, **kw):
    p = EvolutionParams(**{"cycles": 15, "sample_size": 5, "checkpoint_every": 4, "seed": 7, **kw})
    scorer = scorer or FakeScorer(space, norm)
    cons = constraints if constraints is not None else constraints_median(space, initial)
    return evolve(initial, scorer, space, PROXIES, cons, p, checkpoint_dir=tmp), scorer


# ----- mutation ----------------------------------------------------------------------------------
def test_mutation_changes_exactly_one_gene_stage(space):
    rng = np.random.default_rng(0)
    seen_genes = set()
    for _, g in space.initial_population():
        for _ in range(20):
            child, m = mutate(space, g, rng)
            arch = space.encode(child)
            assert space.decode(arch) == child  # decodes back
            diffs = [(gene, s) for gene in GENES for s in range(space.n_stages)
                     if getattr(child, gene)[s] != getattr(g, gene)[s]]
            assert diffs == [(m.gene, m.stage - 1)]
            assert getattr(g, m.gene)[m.stage - 1] == m.old and getattr(child, m.gene)[m.stage - 1] == m.new
            assert m.new in space.alphabets[m.gene] and m.new != m.old
            assert space.netspec(child) != space.netspec(g)  # the network really changes
            seen_genes.add(m.gene)
    assert seen_genes == set(GENES)


def test_mutation_skips_values_that_round_to_the_same_width(space):
    # channels 4 rounds to 8 like 2 and 8: a mutation from 4 may never pick 2 or 8 there
    g = Genes((1,) * 7, (2,) * 7, (4,) * 7)
    rng = np.random.default_rng(1)
    for _ in range(300):
        child, m = mutate(space, g, rng)
        if m.gene == "channels":
            assert m.new not in (2, 8)


def test_mutation_impossible_is_a_clear_error():
    sp = SearchSpace(resolution=16, in_channels=1, num_classes=10, stem_width=8, head_width=16,
                     alphabets={"repeats": (1,), "expansions": (1,), "channels": (8,)},
                     grid={"structures": ((1,) * 7,), "expansions": ((1,) * 7,), "channels": ((8,) * 7,)})
    g = Genes((1,) * 7, (1,) * 7, (8,) * 7)
    assert mutable_positions(sp, g) == []
    with pytest.raises(ValueError, match="cannot be mutated"):
        mutate(sp, g, np.random.default_rng(0))


# ----- the loop ----------------------------------------------------------------------------------
def test_history_population_and_oldest_removal(space):
    initial, norm = initial_table(space)
    res, scorer = run(space, initial, norm, cycles=25)
    h, pop = res.history, res.population
    P = len(initial)
    assert len(h) == P + 25 and len(pop) == P
    assert (h["id"] == np.arange(len(h))).all()
    # cycle 0 rows = initial nets in age order (sorted by index), no parent/mutation
    init = h[h["cycle"] == 0]
    assert init["arch"].tolist() == initial.sort_values("index")["arch"].tolist()
    assert init["parent"].isna().all() and init["gene"].isna().all()
    # population = the P youngest nets: the oldest one leaves each cycle
    assert pop["id"].tolist() == list(range(len(h) - P, len(h)))
    assert pop["age_rank"].tolist() == list(range(P))
    for c in range(1, 26):
        row = h[h["cycle"] == c].iloc[0]
        first_alive = row["id"] - P  # members alive at the start of cycle c
        assert first_alive <= row["parent_id"] < row["id"]
    assert (h.loc[h["cycle"] > 0, "parent_id"] >= P).any(), "children never became parents"
    # child = parent + the recorded mutation
    for r in h[h["cycle"] > 0].itertuples():
        pg = space.decode(r.parent)
        assert space.encode(pg.replace(r.gene, r.stage - 1, r.new)) == r.arch
        assert getattr(pg, r.gene)[r.stage - 1] == r.old
        assert h.loc[r.parent_id, "arch"] == r.parent
    # costs and feasibility columns are those of the cost model / constraints
    cons = constraints_median(space, initial)
    for r in h.sample(10, random_state=0).itertuples():
        c = cost_of(space.netspec(r.arch))
        assert (r.params, r.macs, r.peak_sram, r.flash) == (c.params, c.macs, c.peak_sram, c.flash)
        assert r.feasible == (c.params <= cons["max_params"])
    assert all(len(b) == 1 for b in scorer.batches)


def test_sample_winner_is_parent(space):
    """Re-draw the loop's samples with the same seeded generator: the parent is the best AVG of
    the sample (not the member at the sample's position, the reference code's bug)."""
    initial, norm = initial_table(space)
    res, _ = run(space, initial, norm, cycles=20, sample_size=6)
    h = res.history
    P = len(initial)
    rng = np.random.default_rng(7)
    fit = h["fitness"].to_numpy()
    for c in range(1, 21):
        first = P + c - 1 - P
        sample = rng.choice(P, size=6, replace=False)
        expected = first + int(sample[np.argmax(fit[first:first + P][sample])])
        row = h[h["cycle"] == c].iloc[0]
        assert row["parent_id"] == expected
        mutate(space, space.decode(row["parent"]), rng)  # keep the stream aligned


def test_full_sample_picks_population_best(space):
    initial, norm = initial_table(space)
    P = len(initial)
    res, _ = run(space, initial, norm, cycles=10, sample_size=P)
    h = res.history
    for c in range(1, 11):
        row = h[h["cycle"] == c].iloc[0]
        alive = h.iloc[row["id"] - P:row["id"]]
        assert row["parent_id"] == alive["id"].iloc[int(alive["score"].to_numpy().argmax())]


def test_penalty_ranking(space):
    initial, norm = initial_table(space)
    P = len(initial)
    cons = constraints_median(space, initial)
    ordered = initial.sort_values("index").reset_index(drop=True)
    params = np.array([cost_of(space.netspec(a)).params for a in ordered["arch"]])
    feas = params <= cons["max_params"]
    best_all = int(ordered["avg"].to_numpy().argmax())
    assert not feas[best_all], "fixture: the best-AVG net should violate the constraint"
    best_feas = int(np.where(feas)[0][ordered["avg"].to_numpy()[feas].argmax()])

    post = evolve(initial, FakeScorer(space, norm), space, PROXIES, cons,
                  EvolutionParams(cycles=1, sample_size=P, constraints="post_hoc", seed=7))
    pen = evolve(initial, FakeScorer(space, norm), space, PROXIES, cons,
                 EvolutionParams(cycles=1, sample_size=P, constraints="penalty", penalty=1e10, seed=7))
    assert post.history.iloc[P]["parent_id"] == best_all
    assert pen.history.iloc[P]["parent_id"] == best_feas
    h = pen.history
    np.testing.assert_allclose(h["fitness"], h["avg"] - 1e10 * h["violations"])
    assert ((h["violations"] > 0) == ~h["feasible"]).all()
    np.testing.assert_array_equal(post.history["fitness"], post.history["avg"])


def test_penalty_mode_keeps_more_feasible_children(space):
    initial, norm = initial_table(space)
    cons = constraints_median(space, initial)
    shares = {}
    for mode in ("post_hoc", "penalty"):
        res = evolve(initial, FakeScorer(space, norm), space, PROXIES, cons,
                     EvolutionParams(cycles=40, sample_size=10, constraints=mode, seed=3))
        shares[mode] = res.history.loc[res.history["cycle"] > 0, "feasible"].mean()
    assert shares["penalty"] > shares["post_hoc"]


def test_ceiling_children_beyond_it_are_not_scored_and_never_parents(space):
    initial, norm = initial_table(space)
    cons = constraints_median(space, initial)
    scorer = FakeScorer(space, norm)
    res = evolve(initial, scorer, space, PROXIES, cons,
                 EvolutionParams(cycles=60, sample_size=5, constraints="post_hoc", seed=7, ceiling=1.5))
    h = res.history
    bound = int(1.5 * cons["max_params"])
    params = np.array([cost_of(space.netspec(a)).params for a in h["arch"]])
    np.testing.assert_array_equal(h["within_ceiling"].to_numpy(), params <= bound)
    children = h[h["cycle"] > 0]
    beyond = children[~children["within_ceiling"]]
    assert len(beyond) > 0, "fixture: some children should exceed the ceiling"
    assert children["within_ceiling"].any()
    evaluated = {a for b in scorer.batches for a in b}
    assert not evaluated & set(beyond["arch"]), "a child beyond the ceiling was scored"
    assert set(children.loc[children["within_ceiling"], "arch"]) <= evaluated
    assert np.isneginf(beyond["score"]).all() and np.isneginf(beyond["avg"]).all()
    assert np.isneginf(beyond["fitness"]).all() and beyond[PROXIES].isna().all().all()
    # never a parent: post_hoc would otherwise pick the large nets (pb grows with params)
    out_ids = set(h.loc[~h["within_ceiling"], "id"])
    assert not out_ids & set(children["parent_id"].dropna().astype(int))
    # an initial net beyond the ceiling keeps its scores but cannot become a parent either
    first = h[(h["cycle"] == 0) & ~h["within_ceiling"]]
    assert len(first) and np.isfinite(first["score"]).all() and np.isneginf(first["fitness"]).all()
    # no ceiling: every net is within it, and every child is scored
    plain = evolve(initial, FakeScorer(space, norm), space, PROXIES, cons,
                   EvolutionParams(cycles=5, sample_size=5, seed=7)).history
    assert plain["within_ceiling"].all() and np.isfinite(plain["score"]).all()


def test_ceiling_keeps_the_penalty_search_when_beyond_nets_never_win(space):
    """Under penalty a net beyond a ceiling >= 1 violates the device limits, so it never won a
    tournament against a feasible net: the same children, parents and C, fewer scored nets."""
    initial, norm = initial_table(space)
    cons = constraints_median(space, initial)
    runs = {}
    for name, c in (("none", None), ("ceiling", 1.2)):
        sc = FakeScorer(space, norm)
        runs[name] = (evolve(initial, sc, space, PROXIES, cons,
                             EvolutionParams(cycles=60, sample_size=10, constraints="penalty", seed=3, ceiling=c)),
                      sc)
    a, b = runs["none"][0].history, runs["ceiling"][0].history
    assert (~b["within_ceiling"] & (b["cycle"] > 0)).any(), "fixture: some children should exceed the ceiling"
    pd.testing.assert_series_equal(a["arch"], b["arch"])
    pd.testing.assert_series_equal(a["parent_id"], b["parent_id"])
    inside = b["within_ceiling"].to_numpy()
    np.testing.assert_array_equal(a["score"].to_numpy()[inside], b["score"].to_numpy()[inside])
    assert sum(map(len, runs["ceiling"][1].batches)) < sum(map(len, runs["none"][1].batches))
    ca = select_winners(a, PROXIES, cons).set_index(["net", "phase"]).loc[("C", "after"), "arch"]
    cb = select_winners(b, PROXIES, cons).set_index(["net", "phase"]).loc[("C", "after"), "arch"]
    assert ca == cb


@pytest.mark.parametrize("ceiling", [0.5, 0, -2, float("nan"), float("inf"), "2", True, {"max_params": 3}])
def test_ceiling_bad_values(ceiling):
    with pytest.raises(ValueError, match=r"config key 'evolution\.ceiling' must be a number >= 1 .* or null, got "):
        EvolutionParams(ceiling=ceiling).check()


def test_resume_gives_identical_history(space, tmp_path):
    initial, norm = initial_table(space)
    full, _ = run(space, initial, norm, tmp=tmp_path / "a", cycles=15, checkpoint_every=4)
    # kill at the 11th scorer call (cycle 11): the last checkpoint is cycle 8
    with pytest.raises(KeyboardInterrupt):
        run(space, initial, norm, tmp=tmp_path / "b", scorer=FakeScorer(space, norm, fail_at=11), cycles=15,
            checkpoint_every=4)
    resumed, scorer = run(space, initial, norm, tmp=tmp_path / "b", cycles=15, checkpoint_every=4)
    assert resumed.resumed_from == 8
    assert scorer.calls == 7  # only cycles 9..15 were scored again
    pd.testing.assert_frame_equal(full.history, resumed.history)
    write_parquet(full.history, tmp_path / "full.parquet")
    write_parquet(resumed.history, tmp_path / "resumed.parquet")
    assert (tmp_path / "full.parquet").read_bytes() == (tmp_path / "resumed.parquet").read_bytes()
    pd.testing.assert_frame_equal(full.population, resumed.population)


def test_checkpoint_ignored_when_params_change(space, tmp_path):
    initial, norm = initial_table(space)
    run(space, initial, norm, tmp=tmp_path, cycles=8, checkpoint_every=4)
    same, s1 = run(space, initial, norm, tmp=tmp_path, cycles=8, checkpoint_every=4)
    assert same.resumed_from == 8 and s1.calls == 0
    other, s2 = run(space, initial, norm, tmp=tmp_path, cycles=8, checkpoint_every=4, seed=8)
    assert other.resumed_from == 0 and s2.calls == 8
    longer, s3 = run(space, initial, norm, tmp=tmp_path, cycles=8, checkpoint_every=4, sample_size=4)
    assert longer.resumed_from == 0


def test_same_seed_byte_identical_other_seed_differs(space, tmp_path):
    initial, norm = initial_table(space)
    paths = []
    for i, seed in enumerate((5, 5, 6)):
        res, _ = run(space, initial, norm, cycles=20, seed=seed)
        paths.append(tmp_path / f"h{i}.parquet")
        write_parquet(res.history, paths[-1])
    assert paths[0].read_bytes() == paths[1].read_bytes()
    assert paths[0].read_bytes() != paths[2].read_bytes()


def test_batched_children_and_cache_hits(space):
    initial, norm = initial_table(space)
    P = len(initial)
    res, scorer = run(space, initial, norm, cycles=30, children_per_cycle=3)
    h = res.history
    assert len(h) == P + 90 and len(res.population) == P
    assert (h[h["cycle"] > 0].groupby("cycle").size() == 3).all()
    assert all(1 <= len(b) <= 3 and len(set(b)) == len(b) for b in scorer.batches)  # one batch per cycle
    assert len(scorer.batches) == 30
    # parents come from the population at the start of the cycle
    for c in range(1, 31):
        rows = h[h["cycle"] == c]
        first_alive = rows["id"].min() - P
        assert (rows["parent_id"] >= first_alive).all() and (rows["parent_id"] < rows["id"].min()).all()
    # cache_hit marks exactly the children whose arch was in the history before
    seen, expected = set(), []
    for a in h["arch"]:
        expected.append(a in seen)
        seen.add(a)
    assert h["cache_hit"].tolist() == expected


def test_duplicates_are_marked(space):
    # a 2-net population with a tiny alphabet forces repeated children
    sp = SearchSpace(resolution=16, in_channels=1, num_classes=10, stem_width=8, head_width=16,
                     alphabets={"repeats": (1, 2), "expansions": (1,), "channels": (8,)},
                     grid={"structures": ((1,) * 7, (2,) + (1,) * 6), "expansions": ((1,) * 7,),
                           "channels": ((8,) * 7,)})
    initial, norm = initial_table(sp)
    res = evolve(initial, FakeScorer(sp, norm), sp, PROXIES, {}, EvolutionParams(cycles=40, sample_size=2, seed=0))
    h = res.history
    assert h["cache_hit"].sum() > 0
    dup = h[h["cache_hit"]]
    assert dup["arch"].isin(h.loc[: dup.index.min() - 1, "arch"]).iloc[0]
    # same arch -> same scores (served from the cache)
    assert (h.groupby("arch")["avg"].nunique() == 1).all()


def test_zero_cycles_keeps_initial(space):
    initial, norm = initial_table(space)
    res, scorer = run(space, initial, norm, cycles=0)
    assert len(res.history) == len(initial) and scorer.calls == 0


# ----- the rank method ----------------------------------------------------------------------------
def _rank_setup(space):
    from tinyevo.proxies import ranking

    rows = [{"index": i, "arch": space.encode(g), **_raw(space, space.encode(g))} for i, g in space.initial_population()]
    raw = pd.DataFrame(rows)
    norm = ranking.norm_table(raw, PROXIES, method="rank")

    def evaluate(archs):
        return ranking.standardise(pd.DataFrame([{"arch": a, **_raw(space, a)} for a in archs]), norm)

    return raw, ranking.standardise(raw, norm), norm, evaluate


def test_rank_method_scores_children_against_the_initial_pool(space):
    raw, initial, norm, evaluate = _rank_setup(space)
    cons = constraints_median(space, initial)
    res = evolve(initial, evaluate, space, PROXIES, cons, EvolutionParams(cycles=25, sample_size=5, seed=2),
                 method="rank")
    h = res.history
    assert {"r_pa", "r_pb", "score", "avg", "z_pa"} <= set(h.columns)
    # a child's r_<proxy>: the mid-rank CDF of its raw score among the initial nets' raw scores
    for r in h[h["cycle"] > 0].drop_duplicates("arch").itertuples():
        for p in PROXIES:
            pool = raw[p].to_numpy()
            x = getattr(r, p)
            want = ((pool < x).sum() + 0.5 * (pool == x).sum()) / len(pool)
            assert getattr(r, f"r_{p}") == pytest.approx(want, abs=1e-15)
        assert r.score == pytest.approx((r.r_pa + r.r_pb) / 2, abs=1e-15)
    np.testing.assert_array_equal(h["fitness"], h["score"])  # post_hoc: the tournament key is score
    # the tournament and the winners follow score, not avg
    P = len(initial)
    for c in range(1, 26):
        row = h[h["cycle"] == c].iloc[0]
        assert row["parent_id"] >= row["id"] - P
    sel = select_winners(h, PROXIES, cons).set_index(["net", "phase"])
    assert sel.loc[("NC", "after"), "score"] == h["score"].max()
    assert sel.loc[("NC", "after"), "arch"] == h.loc[h["score"].idxmax(), "arch"]
    # the initial table needs the r_<proxy> columns under the rank method
    with pytest.raises(ValueError, match=r"lacks column.*r_pa.*ranking.method 'rank'"):
        evolve(initial.drop(columns="r_pa"), evaluate, space, PROXIES, cons, EvolutionParams(cycles=1, sample_size=3),
               method="rank")


def test_full_sample_parent_is_best_score_not_best_avg(space):
    """One initial net with a huge pa outlier and the worst pb: best AVG, but not best score."""
    from tinyevo.proxies import ranking

    raw, _, _, evaluate = _rank_setup(space)
    raw.loc[4, "pa"], raw.loc[4, "pb"] = 1e6, raw["pb"].min() - 1
    initial = ranking.standardise(raw, ranking.norm_table(raw, PROXIES, method="rank"))
    P = len(initial)
    best_score, best_avg = int(initial["score"].to_numpy().argmax()), int(initial["avg"].to_numpy().argmax())
    assert best_avg == 4 and best_score != 4
    res = evolve(initial, evaluate, space, PROXIES, {}, EvolutionParams(cycles=1, sample_size=P, seed=0),
                 method="rank")
    assert res.history.iloc[P]["parent_id"] == best_score
    sel = select_winners(res.history, PROXIES, {}).set_index(["net", "phase"])
    assert sel.loc[("NC", "before"), "arch"] == initial.loc[best_score, "arch"]


def test_stage_refuses_a_normalisation_of_another_method(space, tmp_path, make_config):
    from tinyevo.search.stage import run_stage

    cfg, _ = make_config({"search_space": {"population": {"mode": "random", "size": 30}}})
    _, initial, norm, _ = _rank_setup(space)
    write_parquet(initial, tmp_path / "initial.parquet")
    write_parquet(norm, tmp_path / "norm.parquet")
    with pytest.raises(ValueError, match=r"made for ranking.method 'rank'.*'ranking.method' is 'zscore'"):
        run_stage(initial_path=tmp_path / "initial.parquet", norm_path=tmp_path / "norm.parquet", data_dir=tmp_path,
                  cache_dir=tmp_path / "c", checkpoint_dir=None, history_out=tmp_path / "h.parquet",
                  population_out=tmp_path / "p.parquet", selected_out=tmp_path / "s.parquet",
                  search_space=cfg["search_space"], constraints=cfg["constraints"], evolution=cfg["evolution"],
                  proxies={"names": PROXIES, "batch_size": 4, "seed": 0}, target=cfg["device"],
                  ranking={"method": "zscore"})
    assert not (tmp_path / "h.parquet").exists()


# ----- bad input ----------------------------------------------------------------------------------
def test_bad_inputs(space):
    initial, norm = initial_table(space)
    with pytest.raises(ValueError, match="no rows"):
        run(space, initial.iloc[:0], norm, constraints={})
    with pytest.raises(ValueError, match=r"lacks column.*avg"):
        run(space, initial.drop(columns="avg"), norm, constraints={})
    with pytest.raises(ValueError, match="evolution.sample_size"):
        run(space, initial, norm, sample_size=len(initial) + 1)
    with pytest.raises(ValueError, match="evolution.constraints"):
        EvolutionParams.from_config({"cycles": 3, "constraints": "x"})
    bad = initial.copy()
    bad.iloc[0, bad.columns.get_loc("arch")] = "nonsense"
    with pytest.raises(ValueError, match="nonsense"):
        run(space, bad, norm, constraints={})
    broken = FakeScorer(space, norm)
    with pytest.raises(ValueError, match="lacks column"):
        run(space, initial, norm, scorer=lambda a: broken(a).drop(columns="avg"))


# ----- winners table and plots -------------------------------------------------------------------
def test_selected_table(space):
    initial, norm = initial_table(space)
    cons = constraints_median(space, initial)
    res, _ = run(space, initial, norm, cycles=30, constraints=cons)
    h = res.history
    sel = select_winners(h, PROXIES, cons)
    assert list(zip(sel["net"], sel["phase"])) == [("C", "before"), ("NC", "before"), ("C", "after"), ("NC", "after")]
    for c in ["arch", "avg", "z_pa", "z_pb", "params", "macs", "peak_sram", "feasible"]:
        assert c in sel.columns
    s = sel.set_index(["net", "phase"])
    init = h[h["cycle"] == 0]
    assert s.loc[("NC", "before"), "avg"] == init["avg"].max()
    assert s.loc[("C", "before"), "avg"] == init.loc[init["feasible"], "avg"].max()
    assert s.loc[("NC", "after"), "avg"] == h["avg"].max()
    assert s.loc[("C", "after"), "avg"] == h.loc[h["feasible"], "avg"].max()
    assert s.loc[("C", "after"), "params"] <= cons["max_params"] and s.loc[("C", "after"), "feasible"]
    assert s.loc[("C", "after"), "avg"] >= s.loc[("C", "before"), "avg"]


def test_no_feasible_net_names_the_constraints(space):
    initial, norm = initial_table(space)
    cons = {"max_params": 1, "max_macs": None}
    res, _ = run(space, initial, norm, cycles=3, constraints=cons)
    with pytest.raises(NoFeasibleNet, match="constraints.max_params = 1"):
        select_winners(res.history, PROXIES, cons)


def test_plots_and_helpers(space, tmp_path):
    assert pareto_front(np.array([1, 2, 3, 4.0]), np.array([0.1, 0.5, 0.3, 0.9])).tolist() == [0, 1, 3]
    initial, norm = initial_table(space)
    cons = constraints_median(space, initial)
    res, _ = run(space, initial, norm, cycles=10, constraints=cons)
    b = best_per_cycle(res.history)
    assert len(b) == 11 and b["best_nc"].is_monotonic_increasing
    f = feasible_share(res.history)
    P = len(initial)
    assert f["population"].iloc[-1] == pytest.approx(res.population["feasible"].mean())
    assert f["history"].iloc[0] == pytest.approx(res.history["feasible"].iloc[:P].mean())
    out = [tmp_path / f"{n}.png" for n in ("best", "scatter", "feasible")]
    make_plots(res.history, cons, *out, style="default", dpi=40)
    assert all(p.stat().st_size > 1000 for p in out)


# ----- the real proxy scorer on the TINY space ---------------------------------------------------
def _tiny_data(d, resolution=16, n=48, seed=0):
    rng = np.random.default_rng(seed)
    d.mkdir(parents=True, exist_ok=True)
    x = rng.integers(0, 256, size=(n, resolution, resolution, 1), dtype=np.uint8)
    np.save(d / "train_x.npy", x)
    np.save(d / "train_y.npy", (np.arange(n) % 10).astype(np.int64))
    write_parquet(pd.DataFrame({"channel": [0], "mean": [x.mean() / 255], "std": [x.std() / 255]}), d / "stats.parquet")
    return d


def test_real_scorer_stage_serial_equals_workers(make_config, tmp_path):
    pytest.importorskip("torch")
    from tinyevo.proxies import ProxyScorer, make_batch, ranking
    from tinyevo.search.stage import run_stage

    cfg, _ = make_config({"evolution": {"cycles": 3, "sample_size": 3, "children_per_cycle": 2,
                                        "checkpoint_every": 2}})
    space = space_from_config(cfg)
    data = _tiny_data(tmp_path / "data")
    names = cfg["proxies"]["names"]
    x, y = make_batch(data, cfg["proxies"]["batch_size"], cfg["proxies"]["seed"])
    scorer = ProxyScorer(space, names, x, y, cfg["proxies"]["seed"], device="cpu", cache_dir=tmp_path / "cache0")
    cand = pd.DataFrame([{"index": i, "arch": a} for i, a, _ in space.iter_arches()])
    ranked, norm, _ = ranking.rank_population(cand, scorer.score(cand["arch"].tolist()), names)
    write_parquet(ranked, tmp_path / "initial.parquet")
    write_parquet(norm, tmp_path / "norm.parquet")

    def stage(o, threads, evolution=cfg["evolution"]):
        return run_stage(initial_path=tmp_path / "initial.parquet", norm_path=tmp_path / "norm.parquet",
                         data_dir=data, cache_dir=o / "cache", checkpoint_dir=o / "ckpt",
                         history_out=o / "history.parquet", population_out=o / "population.parquet",
                         selected_out=o / "selected.parquet", search_space=cfg["search_space"],
                         constraints=cfg["constraints"], evolution=evolution,
                         proxies={**cfg["proxies"], "threads": cfg["scoring"]["threads"]},
                         device="cpu", threads=threads, target=cfg["device"],
                         accounting=cfg["tybox"]["accounting"], ranking=cfg["ranking"])

    outs = {}
    for threads in (1, 2):
        o = tmp_path / f"t{threads}"
        assert stage(o, threads)["workers"] == threads
        outs[threads] = o
    h = pd.read_parquet(outs[1] / "history.parquet")
    assert len(h) == len(cand) + 6
    # scores do not depend on the number of worker processes: byte-identical tables
    for f in ("history", "population", "selected"):
        assert (outs[1] / f"{f}.parquet").read_bytes() == (outs[2] / f"{f}.parquet").read_bytes()
    # a child's scores are the scorer's, standardised with the initial mean/std
    kids = h[h["cycle"] > 0].drop_duplicates("arch")
    direct = ranking.standardise(scorer.score(kids["arch"].tolist()), norm)
    np.testing.assert_allclose(kids[["avg", *names]].to_numpy(), direct[["avg", *names]].to_numpy(), rtol=1e-12)
    sel = pd.read_parquet(outs[1] / "selected.parquet")
    assert len(sel) == 4 and sel.loc[sel["net"] == "C", "params"].max() <= cfg["constraints"]["max_params"]

    # one child per cycle, scored in-process: the job's thread count (Snakemake scales it down to
    # --cores) does not reach the scores either, scoring.threads does
    serial = {}
    for threads in (1, 2):
        o = tmp_path / f"b1-t{threads}"
        assert stage(o, threads, {**cfg["evolution"], "children_per_cycle": 1})["workers"] == 1
        serial[threads] = (o / "history.parquet").read_bytes()
    assert serial[1] == serial[2]


# ----- end to end --------------------------------------------------------------------------------
@pytest.mark.slow
def test_workflow_evolve_and_plots(tmp_path, tiny_pipeline):
    """The evolve rule with 2 children a cycle, in a copy of the shared TINY run (its data, scores
    and ranking are reused: an evolution setting re-runs only the evolution, tests/test_reruns.py)."""
    from conftest import TINY, copy_pipeline, deep_merge, run_snakemake, write_yaml

    tmp_path = copy_pipeline(tiny_pipeline, tmp_path / "work")
    cfg = write_yaml(tmp_path / "config.yaml", deep_merge(TINY, {"evolution": {"children_per_cycle": 2}}))
    targets = ["results/evolution/selected.parquet", "results/evolution/plots/best_avg.png",
               "results/evolution/plots/avg_vs_macs.png", "results/evolution/plots/feasible_share.png"]
    run_snakemake(tmp_path, cfg, targets)
    evo = tmp_path / "results/evolution"
    h = pd.read_parquet(evo / "history.parquet")
    ranked = pd.read_parquet(tmp_path / "results/rank/initial.parquet")
    assert len(h) == len(ranked) + TINY["evolution"]["cycles"] * 2
    assert len(pd.read_parquet(evo / "population.parquet")) == len(ranked)
    sel = pd.read_parquet(evo / "selected.parquet")
    assert sorted(zip(sel["net"], sel["phase"])) == sorted((n, p) for n in ("C", "NC") for p in ("before", "after"))
    assert (evo / "checkpoint/state.json").is_file()
    log = (tmp_path / "results/logs/evolution/main.log").read_text()
    assert "stage evolution" in log and "s/cycle" in log
    # a re-run with the same config (outputs deleted) resumes from the final checkpoint: same bytes
    first = (evo / "history.parquet").read_bytes()
    for f in ("history", "population", "selected"):
        (evo / f"{f}.parquet").unlink()
    run_snakemake(tmp_path, cfg, ["results/evolution/selected.parquet"])
    assert (evo / "history.parquet").read_bytes() == first
    assert "resuming from checkpoint at cycle 6/6" in (tmp_path / "results/logs/evolution/main.log").read_text()
