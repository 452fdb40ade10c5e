"""NSGA-II search (tinyevo.search.nsga2) and the Pareto / hypervolume tables (tinyevo.search.pareto):
valid strings, determinism, resume, constraints, non-domination of the front, and the evolve rule
with evolution.algorithm: nsga2 on the tiny config."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from test_evolution import PROXIES, FakeScorer, constraints_median, initial_table
from tinyevo.search import EvolutionParams, evolve, select_winners
from tinyevo.search.nsga2 import NSGA2Params, check_objectives, evolve_nsga2, to_arch, to_vector
from tinyevo.search.pareto import hypervolume_table, nondominated, objective_matrix, pareto_table
from tinyevo.space import space_from_config

OBJ = ["flash", "peak_sram"]


@pytest.fixture
def space(make_config):
    cfg, _ = make_config({"search_space": {"population": {"mode": "random", "size": 30}}})
    return space_from_config(cfg)


def run(space, tmp=None, cycles=48, seed=5, scorer=None, nsga=None, **kw):
    initial, norm = initial_table(space)
    cons = constraints_median(space, initial)
    sc = scorer or FakeScorer(space, norm)
    p = EvolutionParams(cycles=cycles, seed=seed, checkpoint_every=2, **kw)
    res = evolve_nsga2(initial, sc, space, PROXIES, cons, p, nsga or NSGA2Params(pop_size=12), OBJ,
                       checkpoint_dir=tmp)
    return res, sc, cons


def test_children_are_valid_strings_with_recorded_parents(space):
    res, sc, _ = run(space)
    h = res.history
    kids = h[h["cycle"] > 0]
    assert len(kids) == 48 and kids["cycle"].max() == 4  # 4 generations of 12 children
    for a in kids["arch"]:
        space.decode(a)  # raises on an invalid string
        assert to_arch(space, to_vector(space, a)) == a
    # every child's first parent is an earlier row; each generation holds distinct nets
    assert (kids["parent_id"] < kids["id"]).all()
    assert not kids.duplicated(["cycle", "arch"]).any()
    # a mutated child differs from the net it came from in exactly the recorded gene
    mutated = kids[kids["gene"].notna()]
    assert len(mutated) == len(kids)
    assert kids["parent2"].notna().any(), "some children should come from a crossover"
    # every child was scored through the evaluator, in one batch per generation
    assert len(sc.batches) == 4 and all(len(b) <= 12 for b in sc.batches)


def test_same_seed_same_history_other_seed_differs(space):
    a, _, _ = run(space, seed=5)
    b, _, _ = run(space, seed=5)
    c, _, _ = run(space, seed=6)
    pd.testing.assert_frame_equal(a.history, b.history)
    pd.testing.assert_frame_equal(a.population, b.population)
    assert not a.history["arch"].equals(c.history["arch"])


def test_resume_replays_to_the_identical_history(space, tmp_path):
    full, _, _ = run(space)
    initial, norm = initial_table(space)
    killed = FakeScorer(space, norm, fail_at=4)  # dies scoring generation 4 (checkpoint after 2)
    with pytest.raises(KeyboardInterrupt):
        run(space, tmp=tmp_path, scorer=killed)
    again = FakeScorer(space, norm)
    res, _, _ = run(space, tmp=tmp_path, scorer=again)
    assert res.resumed_from == 2
    assert len(again.batches) == 2  # only generations 3 and 4 were scored again
    pd.testing.assert_frame_equal(res.history, full.history)
    pd.testing.assert_frame_equal(res.population, full.population)


def test_constraints_stay_constraints_and_the_population_is_ranked(space):
    res, _, cons = run(space, cycles=60)
    pop = res.population
    # pymoo's constraint domination: a feasible net is never behind an infeasible one in rank
    if pop["feasible"].any() and (~pop["feasible"]).any():
        assert pop.loc[pop["feasible"], "front_rank"].max() <= pop.loc[~pop["feasible"], "front_rank"].min()
    c = select_winners(res.history, PROXIES, cons).set_index(["net", "phase"]).loc[("C", "after")]
    assert bool(c["feasible"])


def test_pareto_table_is_non_dominated_and_complete(space):
    res, _, _ = run(space, cycles=60)
    h = res.history
    front = pareto_table(h, OBJ)
    assert len(front) > 0 and front["arch"].is_unique
    F = objective_matrix(front, OBJ)
    for i in range(len(F)):  # no member dominates another
        dom = (F <= F[i]).all(axis=1) & (F < F[i]).any(axis=1)
        assert not dom.any()
    feas = h[h["feasible"]].drop_duplicates("arch")
    G = objective_matrix(feas, OBJ)
    for arch, f in zip(feas["arch"], G):  # every feasible net off the front is dominated by a member
        if arch not in set(front["arch"]):
            assert ((F <= f).all(axis=1) & (F < f).any(axis=1)).any()
    assert list(nondominated(np.array([[1.0, 2.0], [2.0, 1.0], [2.0, 2.0]]))) == [0, 1]


def test_hypervolume_never_falls_and_aging_gets_one_too(space):
    res, _, cons = run(space, cycles=60)
    hv = hypervolume_table(res.history, OBJ, cons)
    assert hv["cycle"].tolist() == list(range(0, 6))
    assert (np.diff(hv["hypervolume"]) >= -1e-12).all() and hv["hypervolume"].iloc[0] > 0
    initial, norm = initial_table(space)
    aging = evolve(initial, FakeScorer(space, norm), space, PROXIES, cons,
                   EvolutionParams(cycles=120, sample_size=5, seed=1)).history
    hva = hypervolume_table(aging, OBJ, cons, points=10)
    assert len(hva) <= 11 and hva["cycle"].iloc[-1] == 120
    assert (np.diff(hva["hypervolume"]) >= -1e-12).all()
    # the same initial pool gives both the same starting hypervolume (a fixed reference point)
    assert hva["hypervolume"].iloc[0] == pytest.approx(hv["hypervolume"].iloc[0])


@pytest.mark.parametrize("bad, match", [
    ([], r"non-empty list"), ("flash", r"non-empty list"), (["flops"], r"unknown cost\(s\) \['flops'\]"),
    (["flash", "flash"], r"lists a cost twice"),
])
def test_bad_objectives(bad, match):
    with pytest.raises(ValueError, match=r"config key 'evolution\.objectives' .*" + match):
        check_objectives(bad)


@pytest.mark.parametrize("section, match", [
    ({"pop_size": 1}, r"evolution\.nsga2\.pop_size' must be an integer >= 2, got 1"),
    ({"offspring": 1.5}, r"evolution\.nsga2\.offspring' must be an integer >= 2"),
    ({"crossover_prob": 2}, r"evolution\.nsga2\.crossover_prob' must lie in \[0, 1\]"),
    ({"popsize": 4}, r"evolution\.nsga2' has unknown key\(s\) \['popsize'\]"),
])
def test_bad_nsga2_settings(section, match):
    with pytest.raises(ValueError, match=match):
        NSGA2Params.from_config(section)


def test_workflow_nsga2_evolve_plots_and_a_smallest_within_choice(tmp_path, tiny_pipeline):
    """The evolve rule with evolution.algorithm: nsga2 on the tiny config (real proxies, 2 cores,
    the offspring scored by worker processes), its Pareto table and plots, a resumed re-run with
    the same bytes, and the candidates of selection.rule smallest_within; in a copy of the shared
    TINY run, whose data, scores and ranking an evolution setting does not re-run."""
    from conftest import TINY, copy_pipeline, deep_merge, run_snakemake, write_yaml

    tmp_path = copy_pipeline(tiny_pipeline, tmp_path / "work")

    over = {"evolution": {"algorithm": "nsga2", "cycles": 8, "nsga2": {"pop_size": 4}, "checkpoint_every": 1},
            "selection": {"rule": "smallest_within", "margin": 1.0}}
    cfg = write_yaml(tmp_path / "tiny.yaml", deep_merge(TINY, over))
    evo = tmp_path / "results/evolution"
    targets = ["results/evolution/plots/pareto.png", "results/evolution/plots/hypervolume.png",
               "results/evolution/final/C/candidates.parquet"]
    run_snakemake(tmp_path, cfg, targets)
    h = pd.read_parquet(evo / "history.parquet")
    ranked = pd.read_parquet(tmp_path / "results/rank/initial.parquet")
    kids = h[h["cycle"] > 0]
    assert len(h) == len(ranked) + 8 and kids["cycle"].tolist() == [1] * 4 + [2] * 4
    from tinyevo.config import load_config

    space = space_from_config(load_config([cfg])[0])
    for a in kids["arch"]:
        space.decode(a)
    assert np.isfinite(kids.loc[kids["within_ceiling"], "score"]).all()
    front = pd.read_parquet(evo / "pareto.parquet")
    F = objective_matrix(front, OBJ)
    assert len(front) and not any(((F <= f).all(axis=1) & (F < f).any(axis=1)).any() for f in F)
    hv = pd.read_parquet(evo / "hypervolume.parquet")
    assert hv["cycle"].tolist() == [0, 1, 2] and (np.diff(hv["hypervolume"]) >= 0).all()
    pop = pd.read_parquet(evo / "population.parquet")
    assert len(pop) == 4 and {"front_rank", "crowding"} <= set(pop.columns)
    log = (tmp_path / "results/logs/evolution/main.log").read_text()
    assert "algorithm nsga2" in log and "Pareto set (score vs flash, peak_sram)" in log
    # the final round's candidates follow the rule: within 1.0 of the best feasible score, smallest flash first
    cand = pd.read_parquet(tmp_path / "results/evolution/final/C/candidates.parquet")
    feas = h[h["feasible"]].drop_duplicates("arch")
    inside = feas[feas["score"] >= feas["score"].max() - 1.0].sort_values(["flash", "score"], ascending=[True, False])
    assert cand["arch"].iloc[0] == inside["arch"].iloc[0]
    # a re-run (outputs deleted) replays the checkpoint to the same bytes
    first = (evo / "history.parquet").read_bytes()
    for f in ("history", "population", "selected", "pareto", "hypervolume"):
        (evo / f"{f}.parquet").unlink()
    run_snakemake(tmp_path, cfg, ["results/evolution/pareto.parquet"])
    assert (evo / "history.parquet").read_bytes() == first
    assert "resuming from checkpoint at generation 2/2" in (tmp_path / "results/logs/evolution/main.log").read_text()



def test_pareto_plot_draws_the_front_and_the_device_limits(space, monkeypatch, tmp_path):
    import tinyevo.search.plots as plots
    from tinyevo.space.constraints import Constraints

    res, _, cons = run(space, cycles=24)
    front = pareto_table(res.history, OBJ)
    figs = []
    monkeypatch.setattr(plots, "savefig", lambda fig, path, dpi=None: figs.append(fig))
    c = Constraints(limits={"max_peak_sram": 50_000}, fit_device=True, ram_bytes=1 << 20)
    plots.plot_pareto(res.history, front, OBJ, c, tmp_path / "p.png")
    (fig,) = figs
    flash_ax, sram_ax = fig.axes
    lines = {ax: {ln.get_label(): ln for ln in ax.get_lines()} for ax in (flash_ax, sram_ax)}
    assert lines[sram_ax]["constraints.max_peak_sram"].get_xdata()[0] == 50_000
    assert "constraints.max_flash" not in lines[flash_ax]
    for ax in (flash_ax, sram_ax):
        assert lines[ax]["device.ram_bytes (budget M)"].get_xdata()[0] == 1 << 20
        assert lines[ax][f"Pareto set ({len(front)} nets)"].get_xdata().size == len(front)
