"""Partial re-runs: after one full TINY run, a changed config value re-runs
exactly the stage that reads it and what follows, asserted through Snakemake's own dry-run
output (the "Job stats" table, cross-checked with the per-job "rule X:" lines) and the rule
graph (``--rulegraph``), never by timing.

The expected sets come from the workflow itself: the rules downstream of a stage are the
descendants of that rule in ``snakemake --rulegraph``, so report rules added later are covered
without editing this file. ``all`` (the default target) and ``resolved_config`` (its params hold
the whole resolved config, so any config change re-writes ``results/config.resolved.yaml``)
are allowed in every changed-config dry run.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from conftest import TINY, copy_pipeline, deep_merge, run_snakemake, write_yaml

pytestmark = pytest.mark.slow

# Rules that re-run whenever the config changes at all (see the module docstring).
ALWAYS = {"all", "resolved_config"}
# The stages before training: none of them may re-run for a training / evolution / style change.
BEFORE_TRAIN = {"data", "enumerate_space", "score_shard", "score_gather", "rank_initial", "evolve"}
SCORING = {"data", "enumerate_space", "score_shard", "score_gather", "rank_initial"}

_RULE_LINE = re.compile(r"^(?:local)?rule (\w+):\s*$", re.M)
_NOTHING = "Nothing to be done"


# ---------------------------------------------------------------- Snakemake output parsing


def planned_jobs(out: str) -> dict[str, int]:
    """{rule: job count} of a ``snakemake -n`` run, from its "Job stats" table, checked against
    the per-job "rule X:" / "localrule X:" blocks; {} when Snakemake says nothing is to be done."""
    if _NOTHING in out and "Job stats:" not in out:
        return {}
    lines = out[out.index("Job stats:"):].splitlines()[1:]
    assert re.fullmatch(r"\s*job\s+count\s*", lines[0]) and all(set(w) == {"-"} for w in lines[1].split()), \
        f"unexpected Job stats header:\n{lines[:3]}"
    jobs: dict[str, int] = {}
    for line in lines[2:]:
        name, count = line.split()
        if name == "total":
            assert int(count) == sum(jobs.values()), f"Job stats total {count} != sum of rows {jobs}"
            break
        jobs[name] = int(count)
    else:
        raise AssertionError(f"no 'total' row in the Job stats table:\n{out}")
    blocks = _RULE_LINE.findall(out)
    assert set(blocks) == set(jobs) and len(blocks) == sum(jobs.values()), \
        f"Job stats {jobs} disagree with the rule blocks {sorted(blocks)}"
    return jobs


def dry_run(workdir: Path, configfile: Path, targets=("all",)) -> tuple[dict[str, int], str]:
    proc = run_snakemake(workdir, configfile, targets=list(targets), extra=["-n"], timeout=600)
    out = proc.stdout + "\n" + proc.stderr
    return planned_jobs(out), out


def rule_graph(workdir: Path, configfile: Path) -> dict[str, set[str]]:
    """{rule: set of rules it feeds} of the whole DAG of ``all`` (``--rulegraph --forceall``)."""
    proc = run_snakemake(workdir, configfile, targets=["all"], extra=["--rulegraph", "--forceall"], timeout=600)
    dot = proc.stdout
    names = dict(re.findall(r'^\s*(\d+)\s*\[\s*label\s*=\s*"(\w+)"', dot, re.M))
    assert "all" in names.values(), f"no rule graph on stdout:\n{dot[:2000]}\n{proc.stderr[-2000:]}"
    graph: dict[str, set[str]] = {n: set() for n in names.values()}
    for a, b in re.findall(r"^\s*(\d+)\s*->\s*(\d+)", dot, re.M):
        graph[names[a]].add(names[b])
    return graph


def score_cache(workdir: Path) -> pd.DataFrame:
    """Every row of the Parquet score cache (union of its part files, one row per key)."""
    parts = sorted((workdir / "results/cache/scores").glob("*.parquet"))
    assert parts, f"no score cache under {workdir}/results/cache/scores"
    df = pd.concat([pd.read_parquet(p) for p in parts if not p.name.startswith(".")], ignore_index=True)
    return df.drop_duplicates("key", keep="last").sort_values("key").reset_index(drop=True)


def descendants(graph: dict[str, set[str]], rule: str) -> set[str]:
    seen, todo = set(), [rule]
    while todo:
        for nxt in graph[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def ancestors(graph: dict[str, set[str]], rule: str) -> set[str]:
    reverse: dict[str, set[str]] = {n: set() for n in graph}
    for a, bs in graph.items():
        for b in bs:
            reverse[b].add(a)
    return descendants(reverse, rule)


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def graph(tiny_pipeline) -> dict[str, set[str]]:
    g = rule_graph(tiny_pipeline, tiny_pipeline / "config.yaml")
    for stage in (*BEFORE_TRAIN, "train", "compress", "tybox", "scenario_run"):
        assert stage in g, f"rule {stage} is not in the rule graph of 'all': {sorted(g)}"
    return g


@pytest.fixture
def changed(tiny_pipeline, tmp_path):
    """changed(overrides) -> (work dir, config path): a copy of the full run with a TINY config
    changed by ``overrides`` (the copy keeps .snakemake metadata and mtimes)."""

    def _changed(overrides: dict):
        work = copy_pipeline(tiny_pipeline, tmp_path / "work")
        return work, write_yaml(work / "config.yaml", deep_merge(TINY, overrides))

    return _changed


def _explain(jobs: dict, out: str) -> str:
    reasons = out[out.find("Reasons:"):] if "Reasons:" in out else out[-3000:]
    return f"planned jobs {jobs}\n{reasons[:3000]}"


# ---------------------------------------------------------------- tests


def test_full_run_is_up_to_date(tiny_pipeline):
    jobs, out = dry_run(tiny_pipeline, tiny_pipeline / "config.yaml")
    assert jobs == {}, "a dry run right after the full run still plans jobs:\n" + _explain(jobs, out)
    assert _NOTHING in out


def test_training_change_reruns_training_and_after_only(changed, graph):
    work, cfg = changed({"train": {"epochs": TINY["train"]["epochs"] + 1}})
    jobs, out = dry_run(work, cfg)
    planned = set(jobs)
    after = descendants(graph, "train")
    # train.epochs reaches nothing that does not depend on a trained net (the proxy validation
    # trains with validation.epochs, so it must not re-run either).
    expected = (after | {"train"}) - ALWAYS
    assert planned - ALWAYS == expected, (
        f"unexpected: {sorted(planned - ALWAYS - expected)}, missing: {sorted(expected - planned)}\n"
        + _explain(jobs, out))
    assert not planned & ancestors(graph, "train"), _explain(jobs, out)
    assert not planned & BEFORE_TRAIN and not planned & {"validate_net", "validation_gather"}, _explain(jobs, out)
    # every trained net (C, NC and the scenario branches) is re-trained, every compressed one follows
    # (TINY: C, NC and the scenario branch C-inc; compress / tybox: C, C-inc)
    assert jobs["train"] == 3 and jobs["compress"] == 2 and jobs["tybox"] == 2, jobs
    assert jobs["scenario_tune"] == 6 and jobs["scenario_run"] == 6, jobs
    assert re.search(r"(?i)params have changed", out), _explain(jobs, out)


def test_evolution_change_reuses_initial_scores(changed, graph, tiny_pipeline):
    old_cycles = TINY["evolution"]["cycles"]
    new_cycles = old_cycles + 2
    work, cfg = changed({"evolution": {"cycles": new_cycles}})
    jobs, out = dry_run(work, cfg)
    planned = set(jobs)
    assert "evolve" in planned, _explain(jobs, out)
    assert not planned & SCORING, "an evolution change re-runs scoring:\n" + _explain(jobs, out)
    assert planned - ALWAYS == (descendants(graph, "evolve") | {"evolve"}) - ALWAYS, _explain(jobs, out)

    # another evolution parameter: same (no scoring) and no different trigger
    work2 = work.parent / "work_sample"
    copy_pipeline(tiny_pipeline, work2)
    cfg2 = write_yaml(work2 / "config.yaml", deep_merge(TINY, {"evolution": {"sample_size": 2}}))
    jobs2, out2 = dry_run(work2, cfg2)
    assert "evolve" in jobs2 and not set(jobs2) & SCORING, _explain(jobs2, out2)

    # now actually re-run evolution on the copy
    old_hist = pd.read_parquet(work / "results/evolution/history.parquet")
    old_cache = score_cache(work)
    log_path = work / "results/logs/evolution/main.log"
    old_log = log_path.read_text()
    proc = run_snakemake(work, cfg, targets=["results/evolution/selected.parquet"], timeout=1200)
    ran = _RULE_LINE.findall(proc.stdout + proc.stderr)
    assert ran == ["evolve"], f"re-running the evolution target ran {ran}"
    log = log_path.read_text()
    assert log != old_log
    hist = pd.read_parquet(work / "results/evolution/history.parquet")
    ranked = pd.read_parquet(work / "results/rank/initial.parquet")
    names = [c[2:] for c in ranked.columns if c.startswith("z_")]
    assert names, f"no z_<proxy> columns in the ranked table: {list(ranked.columns)}"

    # the initial population enters with the scores of the ranked table: not re-scored
    init = hist[hist["cycle"] == 0].set_index("arch")
    assert len(init) == len(ranked)
    for col in [*names, "avg"]:
        pd.testing.assert_series_equal(init[col], ranked.set_index("arch").loc[init.index, col], check_names=False)
    # the first cycles repeat the earlier run exactly (same seed), the extra ones follow
    assert hist["cycle"].max() == new_cycles
    common = [c for c in old_hist.columns if c in hist.columns]
    pd.testing.assert_frame_equal(hist.iloc[:len(old_hist)][common].reset_index(drop=True),
                                  old_hist[common].reset_index(drop=True))

    # "scorer cache hits X of Y nets scored": the scorer saw only the children (Y = one per cycle,
    # children_per_cycle = 1), never the initial population, and every child of the earlier run
    # plus every child already in the earlier history came from the score cache.
    m = re.findall(r"scorer cache hits (\d+) of (\d+) nets scored", log)
    assert m, f"no 'scorer cache hits' line in the evolve log:\n{log[-3000:]}"
    hits, scored = map(int, m[-1])
    children = hist[hist["cycle"] > 0]
    assert scored == len(children) == new_cycles, (hits, scored, len(children))
    known = set(old_hist["arch"])  # initial nets (scored by score_shard) + the earlier children
    expected_misses = children.loc[~children["arch"].isin(known), "arch"].nunique()
    assert hits == scored - expected_misses, (hits, scored, expected_misses)
    assert hits >= old_cycles
    # the checkpoint of the earlier run belongs to other parameters: a fresh start, not a resume
    assert "resuming from checkpoint" not in log

    # the on-disk score cache: it held every proxy score of every initial net before the re-run,
    # those rows are untouched, and it grew by exactly the newly scored children
    cache = score_cache(work)
    initial_pairs = {(a, n) for a in ranked["arch"] for n in names}
    assert initial_pairs <= set(zip(old_cache["arch"], old_cache["proxy"]))
    before = old_cache.set_index("key")["score"]
    pd.testing.assert_series_equal(cache.set_index("key")["score"].loc[before.index], before)
    assert len(cache) - len(old_cache) == expected_misses * len(names), (len(cache), len(old_cache))


def test_style_change_reruns_only_plots_and_report(changed, graph):
    work, cfg = changed({"report": {"style": "ggplot"}})
    jobs, out = dry_run(work, cfg)
    planned = set(jobs) - ALWAYS
    plotting = {r for r in graph if "plot" in r or "report" in r}
    assert planned, "changing report.style plans no job at all:\n" + _explain(jobs, out)
    assert planned <= plotting, (f"report.style re-runs non-plot rules {sorted(planned - plotting)}\n"
                                 + _explain(jobs, out))
    # every plot rule takes the style as a param, so every one of them re-runs
    plot_rules = {r for r in graph if "plot" in r}
    assert plot_rules <= planned, (f"plot rules not re-run by a style change (no 'style' param?): "
                                   f"{sorted(plot_rules - planned)}\n" + _explain(jobs, out))


def test_library_change_reruns_the_rules_whose_scripts_import_it(tiny_pipeline, graph, tmp_path):
    """A change to a tinyevo module re-runs the rules whose scripts import it (their `code` param,
    tinyevo.codehash) and what follows, nothing else. Run on a copy of the workflow, so the
    repository's own code is not touched."""
    import shutil

    from conftest import REPO

    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copy2(REPO / "Snakefile", repo / "Snakefile")
    for d in ("workflow", "envs"):
        shutil.copytree(REPO / d, repo / d, ignore=shutil.ignore_patterns("__pycache__"))
    work = copy_pipeline(tiny_pipeline, tmp_path / "work")
    cfg = work / "config.yaml"

    def plan():
        proc = run_snakemake(work, cfg, targets=["all"], extra=["-n"], timeout=600, snakefile=repo / "Snakefile")
        out = proc.stdout + "\n" + proc.stderr
        return planned_jobs(out), out

    jobs, out = plan()
    assert jobs == {}, "the untouched copy of the workflow plans jobs:\n" + _explain(jobs, out)

    stage = repo / "workflow" / "tinyevo" / "scenarios" / "stage.py"
    stage.write_text(stage.read_text() + "\n# a change\n")
    jobs, out = plan()
    scenario_rules = {r for r in graph if r.startswith("scenario_")}
    assert scenario_rules >= {"scenario_tune", "scenario_run", "scenario_gather"}, sorted(graph)
    expected = set().union(scenario_rules, *(descendants(graph, r) for r in scenario_rules))
    assert set(jobs) == expected, (
        f"unexpected: {sorted(set(jobs) - expected)}, missing: {sorted(expected - set(jobs))}\n" + _explain(jobs, out))
    assert re.search(r"(?i)params have changed", out), _explain(jobs, out)
