"""Search-quality benchmark: ground truth for the zero-cost measures, and the training-recipe study.

Every trained (net, recipe, seed) is cached in ``<out>/trained.parquet`` (key: arch, recipe hash,
seed, data fingerprint, compute), so a re-run, a larger sample or another sub-command never
trains a net twice; proxy scores go through the score cache ``<out>/cache/scores``. Trainings and
scoring run in ``--jobs`` spawned worker processes with ``--threads`` torch threads each.

    python bench/search_quality.py recipe --jobs 2        # recipe study: lr / schedule x 20 and 5 epochs
    python bench/search_quality.py score --jobs 2         # every initial net with every proxy
    python bench/search_quality.py truth --jobs 2         # ground truth + quality of every measure
    python bench/search_quality.py truth --arch ARCH ...  # also train these nets with the short recipe

``truth`` samples ``--nets`` nets of the pool (initial nets within the device limits) stratified
by params, trains them with the short recipe (the config's ``validation`` recipe unless
``--epochs/--lr/--schedule``), plus the ``--top-k`` picks of every measure and the top pick of
every measure and ranking combo (method x proxy subset) for every guard value of ``--guards``
(``constraints.min_width``), and ``--seed-nets`` sampled nets again with every seed of
``--seeds`` (noise ceiling). It writes ``quality.parquet`` (target x measure: Spearman, Kendall,
bootstrap 95 % intervals, the paired interval against params, precision at the top 10 %,
regret), ``noise.parquet``, ``guards.parquet`` (the same per guard value, within the guarded
pool), ``truth.parquet`` (every trained net with its measures), ``picks.parquet``,
``archs.parquet`` (``--arch``) and ``summary.md``. The pipeline's validation stage
(``results/validation/``) computes the same tables with the same library code
(:mod:`tinyevo.train.validation`) at the configured, smaller size.
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing as mp
import os
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow"))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from tinyevo.config import load_config  # noqa: E402
from tinyevo.io import atomic_write_text, write_parquet  # noqa: E402
from tinyevo.runtime import setup_logging  # noqa: E402
from tinyevo.train import validation as V  # noqa: E402

ALL_PROXIES = ["snip", "synflow", "synflow_relu6", "jacob_cov", "naswot", "zico", "meco", "params", "macs"]

#: recipes of the study: name -> fit() settings besides epochs and seed
RECIPES = {
    "paper (lr 0.1 constant)": {"lr": 0.1, "schedule": "constant"},
    "lr 0.1 cosine": {"lr": 0.1, "schedule": "cosine"},
    "lr 0.05 cosine": {"lr": 0.05, "schedule": "cosine"},
    "lr 0.02 cosine": {"lr": 0.02, "schedule": "cosine"},
    "lr 0.01 cosine": {"lr": 0.01, "schedule": "cosine"},
}
#: the recipes trained per budget (epochs); a budget not listed trains every recipe
STUDY = {5: list(RECIPES), 20: ["paper (lr 0.1 constant)", "lr 0.05 cosine", "lr 0.02 cosine", "lr 0.01 cosine"]}
#: a narrow-stage net of the space: the constrained winner of a default run before this benchmark
#: (two 4-channel stages; 17.5 % test accuracy with the paper's recipe)
NARROW_C = "r1e2c004-r5e4c016-r5e4c024-r4e6c024-r3e5c064-r4e6c004-r4e6c128"


# ----------------------------------------------------------------------------------------------
# set-up shared by the sub-commands
# ----------------------------------------------------------------------------------------------
class Bench:
    """Config, data, space, the trained-net cache and the worker pool of one benchmark run."""

    def __init__(self, a):
        self.a = a
        self.log = setup_logging()
        self.cfg, _ = load_config([a.config])
        self.out = Path(a.out)
        self.out.mkdir(parents=True, exist_ok=True)
        from tinyevo.data import prepare
        from tinyevo.space import space_from_config

        ds = self.cfg["dataset"]
        self.data_dir = self.out / "data" / ds["name"] / str(ds["resolution"])
        if not (self.data_dir / "stats.parquet").is_file():
            prepare(ds, self.data_dir, threads=a.threads)
        self.space = space_from_config(self.cfg)
        self.splits = V.load_splits(self.data_dir)
        self.data_id = V.data_fingerprint(self.splits)
        self.cache = V.TrainedCache(self.out / "trained.parquet")
        self.compute = f"cpu/{a.threads}" if a.device == "cpu" else a.device
        self.base = {k: v for k, v in self.cfg["train"].items() if k not in ("threads", "seed", "epochs")}
        self.base["flip"] = ds["source"] in ("cifar10", "vww", "imagefolder")

    def settings(self, recipe: dict, epochs: int) -> dict:
        return {**self.base, **recipe, "epochs": int(epochs)}

    def train(self, jobs: list[tuple[str, dict, int]]) -> pd.DataFrame:
        """Results of (arch, settings, seed) jobs (cached ones are not trained again), one row each."""
        keyed = []
        for arch, s, seed in jobs:
            key = {"arch": arch, "recipe": V.recipe_id(s), "seed": int(seed), "data": self.data_id,
                   "compute": self.compute}
            keyed.append((key, s))
        todo = list({tuple(k.values()): (k, s) for k, s in keyed if self.cache.get(**k) is None}.values())
        if todo:
            self.log.info("%d trainings to run (%d cached), %d at a time", len(todo), len(keyed) - len(todo),
                          self.a.jobs)
            self._run(todo)
        return pd.DataFrame([self.cache.get(**k) for k, _ in keyed])

    def _run(self, todo) -> None:
        t0, done = time.perf_counter(), 0
        args = [(k, s, str(self.data_dir), self.cfg["search_space"], self.a.threads, self.a.device) for k, s in todo]
        ctx = mp.get_context("spawn")
        with ProcessPoolExecutor(max_workers=self.a.jobs, mp_context=ctx) as pool:
            pending = {pool.submit(train_job, *x) for x in args}
            while pending:
                fin, pending = wait(pending, return_when=FIRST_COMPLETED)
                for f in fin:
                    self.cache.add(f.result())
                    done += 1
                self.cache.save()
                el = time.perf_counter() - t0
                self.log.info("trained %d/%d (%.0f s elapsed, ~%.0f s left)", done, len(todo), el,
                              el / done * (len(todo) - done))


def train_job(key: dict, settings: dict, data_dir: str, search_space: dict, threads: int, device: str) -> dict:
    """One training in a worker process -> the cache row (key, settings, results)."""
    import logging

    import torch

    torch.set_num_threads(int(threads))
    from tinyevo.space import SearchSpace

    log = logging.getLogger("tinyevo.bench")
    spec = SearchSpace.from_config(search_space).netspec(key["arch"])
    res = V.train_eval(spec, V.load_splits(data_dir), {**settings, "seed": key["seed"]}, device=device,
                       progress=False, logger=log)
    from tinyevo.space import cost_of

    c = cost_of(spec)
    return {**key, **{f"s_{k}": v for k, v in settings.items()}, "params": int(c.params), "macs": int(c.macs),
            **res}


def _md(df: pd.DataFrame, floatfmt: str = ".3f") -> str:
    try:
        return df.to_markdown(index=False, floatfmt=floatfmt)
    except ImportError:
        return "```\n" + df.to_string(index=False) + "\n```"


def candidates(b: Bench, min_width=None) -> pd.DataFrame:
    """The initial nets with their costs and flags under the config's constraints, the guard
    ``constraints.min_width`` set to ``min_width`` (None: unguarded, the benchmark's pool)."""
    memo = getattr(b, "_candidates", {})
    if min_width in memo:
        return memo[min_width]
    from tinyevo.space.enumerate import candidates_table

    cons = dict(b.cfg["constraints"])
    if "min_width" in cons:
        cons["min_width"] = min_width
    try:
        from tinyevo.space.constraints import Constraints

        cobj = Constraints.from_config(cons, b.cfg["device"], b.cfg["tybox"]["accounting"], b.cfg["tybox"].get("target"))
    except (ImportError, TypeError):
        cobj = cons
    memo[min_width] = candidates_table(b.space, cobj)
    b._candidates = memo
    return memo[min_width]


# ----------------------------------------------------------------------------------------------
# recipe
# ----------------------------------------------------------------------------------------------
def recipe_nets(b: Bench, k: int) -> pd.DataFrame:
    """``k - 3`` nets of the params/MACs-feasible initial nets stratified by params, the largest of
    them, and two narrow-stage nets: ``NARROW_C`` and the smallest initial net with a 4-channel stage."""
    cand = candidates(b)
    lim = cand[[c for c in cand.columns if c in ("ok_max_params", "ok_max_macs")]].all(axis=1)
    pool = cand[lim]
    nets = V.stratified_sample(pool, k - 3, b.a.seed, key="--nets")[["arch", "params", "macs"]]
    nets["why"] = "stratified by params"
    big = pool.sort_values("params").iloc[-1:][["arch", "params", "macs"]].assign(why="largest")
    narrow = pool[pool["channels"].apply(min) <= 4].sort_values("params").iloc[:1][["arch", "params", "macs"]]
    from tinyevo.space import cost_of

    c = cost_of(b.space.netspec(NARROW_C))
    extra = pd.DataFrame([{"arch": NARROW_C, "params": c.params, "macs": c.macs, "why": "narrow C of the issue"}])
    narrow = narrow.assign(why="smallest with a 4-channel stage")
    return pd.concat([nets, big, narrow, extra], ignore_index=True).drop_duplicates("arch")


def cmd_recipe(b: Bench) -> None:
    a = b.a
    nets = recipe_nets(b, a.nets)
    grid = [(e, name, arch, s) for e in a.epochs for name in STUDY.get(e, list(RECIPES)) for arch in nets["arch"]
            for s in a.seeds]
    t0 = time.perf_counter()
    res = b.train([(arch, b.settings(RECIPES[name], e), s) for e, name, arch, s in grid])
    wall = time.perf_counter() - t0
    res["budget"] = [g[0] for g in grid]
    res["recipe"] = [g[1] for g in grid]
    write_parquet(res, b.out / "recipe_runs.parquet")
    summ = (res.groupby(["budget", "recipe"], sort=False)
            .agg(val_mean=("val_acc", "mean"), val_min=("val_acc", "min"), test_mean=("test_acc", "mean"),
                 test_min=("test_acc", "min"), diverged=("status", lambda s: int((s != "ok").sum())),
                 seconds=("seconds", "mean"))
            .reset_index())
    write_parquet(summ, b.out / "recipe_summary.parquet")
    per_net = res.pivot_table(index=["arch"], columns=["budget", "recipe"], values="val_acc", aggfunc="mean")
    lines = [f"# Recipe study ({b.cfg['dataset']['name']}, {len(nets)} nets, seeds {a.seeds})", "",
             f"wall time {wall:.0f} s with {a.jobs} worker(s) x {a.threads} thread(s)", "",
             _md(nets, ".0f"), "", "## mean and worst accuracy per budget and recipe", "", _md(summ), "",
             "## val accuracy per net", "", _md(per_net.reset_index())]
    atomic_write_text(b.out / "recipe.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


# ----------------------------------------------------------------------------------------------
# score
# ----------------------------------------------------------------------------------------------
def score_job(search_space: dict, names: list, data_dir: str, batch_size: int, seed: int, cache_dir: str,
              archs: list, threads: int, device: str) -> pd.DataFrame:
    """Score ``archs`` with ``names`` through the score cache (one worker process)."""
    from tinyevo.proxies import ProxyScorer, make_batch
    from tinyevo.space import SearchSpace

    x, y = make_batch(data_dir, batch_size, seed)
    scorer = ProxyScorer(SearchSpace.from_config(search_space), names, x, y, seed, device=device,
                         cache_dir=cache_dir, threads=threads)
    return scorer.score(archs)


def scores(b: Bench) -> pd.DataFrame:
    """Every initial net with every proxy of ``--proxies`` (``<out>/scores.parquet``), scored in
    ``--jobs`` interleaved shards through the score cache ``<out>/cache/scores``."""
    path = b.out / "scores.parquet"
    cand = candidates(b)
    names = list(b.a.proxies)
    if path.is_file():
        old = pd.read_parquet(path)
        if set(cand["arch"]) <= set(old["arch"]) and set(names) <= set(old.columns):
            return old
    p = b.cfg["proxies"]
    archs = cand["arch"].tolist()
    args = [(b.cfg["search_space"], names, str(b.data_dir), int(p["batch_size"]), int(p["seed"]),
             str(b.out / "cache" / "scores"), archs[i::b.a.jobs], b.a.threads, b.a.device) for i in range(b.a.jobs)]
    t0 = time.perf_counter()
    ctx = mp.get_context("spawn")
    with ProcessPoolExecutor(max_workers=b.a.jobs, mp_context=ctx) as pool:
        parts = list(pool.map(score_job, *zip(*args)))
    df = pd.concat(parts, ignore_index=True).set_index("arch").loc[archs].reset_index()
    df.insert(0, "index", cand["index"].to_numpy())
    write_parquet(df, path)
    b.log.info("scored %d nets with %s in %.0f s (%d from the cache)", len(df), names, time.perf_counter() - t0,
               int(df["cache_hit"].sum()))
    return df


def cmd_score(b: Bench) -> None:
    df = scores(b)
    print(df.drop(columns=["cache_hit"]).describe().T.to_string())


def ranked_table(b: Bench) -> pd.DataFrame:
    """The unguarded candidates (device limits, ``min_stage_width``) joined with every proxy."""
    from tinyevo.proxies.ranking import rank_population

    cand, sc = candidates(b), scores(b)
    ranked, _, _ = rank_population(cand, sc, list(b.a.proxies))
    return ranked


# ----------------------------------------------------------------------------------------------
# truth
# ----------------------------------------------------------------------------------------------
def short_recipe(b: Bench) -> dict:
    """The short recipe: the config's validation recipe unless given on the command line."""
    v, t = b.cfg["validation"], b.cfg["train"]
    lr = b.a.lr if b.a.lr is not None else (v.get("lr") if v.get("lr") is not None else t["lr"])
    sched = b.a.schedule or (v.get("schedule") if v.get("schedule") is not None else t["schedule"])
    epochs = b.a.epochs[0] if b.a.epochs else v["epochs"]
    return b.settings({"lr": float(lr), "schedule": sched}, epochs)


def combo_subsets(b: Bench) -> dict[str, list[str]]:
    """Proxy subsets of the ranking-method study: the configured set, the paper's, the fixed-synflow
    set, every proxy, the zero-cost ones without the cost counts, and pairs and triples of the
    newer proxies with and without params."""
    subsets = {
        "config": list(b.cfg["proxies"]["names"]),
        "paper": ["snip", "synflow_relu6", "jacob_cov"],
        "fixed": ["snip", "synflow", "jacob_cov"],
        "all": list(b.a.proxies),
        "zero_cost": [p for p in b.a.proxies if p not in ("params", "macs", "synflow_relu6")],
    }
    for extra in b.a.combos or []:
        subsets[extra.replace(",", "+")] = extra.split(",")
    return {k: v for k, v in subsets.items() if v and set(v) <= set(b.a.proxies)}


def truth_measures(b: Bench, ranked: pd.DataFrame) -> tuple[pd.DataFrame, list[str], list[str]]:
    """The measure table (:func:`tinyevo.train.validation.measure_table` over the config's
    proxies: zscore, rank, score), every other proxy, and one column per (method, subset) combo
    -> (table, main measure names, combo names)."""
    cfg_proxies = list(b.cfg["proxies"]["names"])
    meas = V.measure_table(ranked, cfg_proxies, b.cfg["ranking"]["method"], b.a.seed)
    for p in b.a.proxies:
        if p not in meas.columns:
            meas[p] = pd.to_numeric(ranked[p], errors="coerce").to_numpy(dtype=float)
    main = V.measure_names(list(b.a.proxies))
    combos = []
    for name, subset in combo_subsets(b).items():
        for method in V.RANKING_METHODS:
            col = f"{method}:{name}"
            meas[col] = V.method_score(ranked, subset, method)
            combos.append(col)
    return meas, main, combos


def guard_pool(meas: pd.DataFrame, guard: int) -> pd.DataFrame:
    """The measure table with ``in_pool`` restricted to nets whose narrowest stage >= ``guard``."""
    return meas.assign(in_pool=meas["in_pool"].to_numpy() & (meas["min_width"].to_numpy() >= guard))


def cmd_truth(b: Bench) -> None:
    a = b.a
    t0 = time.perf_counter()
    ranked = ranked_table(b)
    meas, main, combos = truth_measures(b, ranked)
    recipe = short_recipe(b)
    pool = meas[meas["in_pool"]]
    sample = V.stratified_sample(pool.assign(params=pool["params_count"]), a.nets, a.seed, key="--nets")
    picks = [V.top_picks(meas, V.pick_measures(main), a.top_k)]
    for g in a.guards:
        picks.append(V.top_picks(guard_pool(meas, g), [*V.pick_measures(main), *combos], 1))
    picks = pd.concat(picks, ignore_index=True)
    archs = list(dict.fromkeys([*sample["arch"], *picks["arch"], *(a.arch or [])]))
    # --mean-seeds: every net with every seed, its accuracy the mean; else the noise nets only
    noise_archs = archs if a.mean_seeds else [sample["arch"].iloc[i]
                                              for i in V.spread_positions(len(sample), a.seed_nets)]
    jobs = [(arch, recipe, a.seed) for arch in archs]
    jobs += [(arch, recipe, s) for s in a.seeds if s != a.seed for arch in noise_archs]
    b.log.info("truth: %d sampled nets of a pool of %d, %d distinct picks, %d runs with other seeds, recipe %s",
               len(sample), len(pool), picks["arch"].nunique(), len(noise_archs) * (len(a.seeds) - 1), recipe)
    res = b.train(jobs)
    wall = time.perf_counter() - t0
    if a.mean_seeds:
        main_res = res.groupby("arch", sort=False)[["val_acc", "test_acc"]].mean().reset_index()
    else:
        main_res = res[res["seed"] == a.seed]
    names_all = [*main, *combos]

    def quality(m, sample_archs):
        q = V.quality_table(m, main_res, sample_archs, names_all, n_boot=a.bootstrap, seed=a.seed, top_frac=0.1,
                            baseline=a.baselines[0])
        for base in a.baselines[1:]:  # paired intervals against the other baselines
            qb = V.quality_table(m, main_res, sample_archs, names_all, n_boot=a.bootstrap, seed=a.seed,
                                 baseline=base)
            q[f"d_{base}_lo"], q[f"d_{base}_hi"] = qb["d_spearman_lo"].to_numpy(), qb["d_spearman_hi"].to_numpy()
        return q

    q = quality(meas, sample["arch"].tolist())
    noise = V.noise_table(res[res["arch"].isin(noise_archs) & res["arch"].isin(sample["arch"])],
                          n_boot=a.bootstrap, seed=a.seed)
    guards = []
    for g in a.guards:
        mg = guard_pool(meas, g)
        inside = set(mg.loc[mg["in_pool"], "arch"])
        guards.append(quality(mg, [x for x in sample["arch"] if x in inside]).assign(guard=g, pool=len(inside)))
    guards = pd.concat(guards, ignore_index=True)
    truth = main_res.merge(meas, on="arch", how="left")
    truth["sampled"] = truth["arch"].isin(sample["arch"])
    sfx = "_mean" if a.mean_seeds else ""
    for name, df in (("quality", q), ("noise", noise), ("guards", guards), ("truth", truth), ("picks", picks)):
        write_parquet(df, b.out / f"{name}{sfx}.parquet")
    given = arch_table(b, meas, main_res, a.arch or [])
    if len(given):
        write_parquet(given, b.out / f"archs{sfx}.parquet")
    confirm = confirm_table(b, main_res, sample["arch"].tolist(), recipe) if a.confirm_seeds else pd.DataFrame()
    if len(confirm):
        write_parquet(confirm, b.out / f"confirm{sfx}.parquet")
    write_summary(b, q, noise, guards, given, main, combos, recipe, len(sample), len(pool), wall, sfx, confirm)


def confirm_table(b: Bench, res: pd.DataFrame, sample_archs: list[str], recipe: dict) -> pd.DataFrame:
    """Fresh-seed confirmation of the best sampled nets against the ``--arch`` nets.

    The best sampled net is the maximum of many noisy accuracies, so its accuracy on the seeds that
    selected it is biased upwards (the winner's curse). The ``--confirm-top`` sampled nets with the
    best validation accuracy on the selection seeds and every ``--arch`` net are trained again with
    ``--confirm-seeds`` (seeds not used for the selection); each row holds the mean and standard
    deviation over those seeds, and ``gap_<target>`` is the best confirmed sampled net's mean minus
    the row's mean (for the ``--arch`` rows)."""
    a = b.a
    if set(a.confirm_seeds) & set(a.seeds):
        raise ValueError(f"--confirm-seeds {a.confirm_seeds} overlap the selection seeds --seeds {a.seeds}")
    sel = res[res["arch"].isin(sample_archs)].sort_values(["val_acc", "arch"], ascending=[False, True])
    top = sel["arch"].head(a.confirm_top).tolist()
    given = [x for x in (a.arch or []) if x not in top]
    runs = b.train([(arch, recipe, s) for arch in [*top, *given] for s in a.confirm_seeds])
    agg = runs.groupby("arch", sort=False).agg(
        seeds=("seed", "nunique"), val_acc=("val_acc", "mean"), val_sd=("val_acc", "std"),
        test_acc=("test_acc", "mean"), test_sd=("test_acc", "std")).reset_index()
    sel_acc = res.set_index("arch")[["val_acc", "test_acc"]].add_prefix("sel_")
    agg = agg.join(sel_acc, on="arch")
    agg["role"] = [", ".join(r for r, inside in (("top sampled", x in top), ("given", x in (a.arch or []))) if inside)
                   for x in agg["arch"]]
    best = agg[agg["arch"].isin(top)]
    for t in V.TARGETS:
        agg[f"gap_{t}"] = best[f"{t}_acc"].max() - agg[f"{t}_acc"]
    return agg


def arch_table(b: Bench, meas: pd.DataFrame, res: pd.DataFrame, archs: list[str]) -> pd.DataFrame:
    """The ``--arch`` nets trained with the short recipe next to the best sampled/picked pool net
    (per guard: the best of the trained nets whose narrowest stage is >= the guard)."""
    if not archs:
        return pd.DataFrame()
    from tinyevo.space import cost_of
    from tinyevo.space.constraints import min_stage_width

    r = res.set_index("arch")
    rows = []
    for arch in archs:
        spec = b.space.netspec(arch)
        c = cost_of(spec)
        row = {"arch": arch, "params": c.params, "macs": c.macs, "min_width": min_stage_width(spec),
               "val_acc": r.loc[arch, "val_acc"], "test_acc": r.loc[arch, "test_acc"]}
        for g in b.a.guards:
            mg = guard_pool(meas, g)
            inside = [x for x in mg.loc[mg["in_pool"], "arch"] if x in r.index]
            for t in V.TARGETS:
                best = r.loc[inside, f"{t}_acc"].max() if inside else np.nan
                row[f"best_{t}_g{g}"] = best
                row[f"gap_{t}_g{g}"] = best - row[f"{t}_acc"]
        rows.append(row)
    return pd.DataFrame(rows)


def _guard_label(g) -> str:
    return "no guard" if int(g) <= 0 else f"min_width {int(g)}"


def _quality_md(q: pd.DataFrame, names: list[str]) -> str:
    q = q.set_index("measure").loc[names].reset_index()
    t = pd.DataFrame({
        "measure": q["measure"], "n": q["n"],
        "spearman [95 % CI]": [f"{r.spearman:+.3f} [{r.spearman_lo:+.3f}, {r.spearman_hi:+.3f}]"
                               for r in q.itertuples()],
        "kendall [95 % CI]": [f"{r.kendall:+.3f} [{r.kendall_lo:+.3f}, {r.kendall_hi:+.3f}]" for r in q.itertuples()],
        "rho - rho(params) [95 % CI]": [f"[{r.d_spearman_lo:+.3f}, {r.d_spearman_hi:+.3f}]" for r in q.itertuples()],
        **{f"rho - rho({c[2:-3]}) [95 % CI]": [f"[{lo:+.3f}, {hi:+.3f}]" for lo, hi in zip(q[c], q[c[:-3] + "_hi"])]
           for c in q.columns if c.startswith("d_") and c.endswith("_lo") and c != "d_spearman_lo"},
        "precision@10 %": q["precision_at"].round(3), "pick acc": q["pick_acc"].round(4),
        "regret": q["regret"].round(4)})
    return _md(t)


def write_summary(b, q, noise, guards, archs, main, combos, recipe, n_sample, n_pool, wall, sfx="",
                  confirm=None) -> None:
    acc = (f"the mean accuracy over seeds {b.a.seeds}" if b.a.mean_seeds else f"the accuracy of seed {b.a.seed}")
    lines = [f"# Search quality ({b.cfg['dataset']['name']})", "",
             f"{n_sample} nets sampled from a pool of {n_pool} (initial nets within the device limits), "
             f"stratified by params, plus the top picks of every measure; {acc}; short recipe {recipe}; "
             f"{b.a.bootstrap} bootstrap resamples; wall time {wall:.0f} s with {b.a.jobs} worker(s) x "
             f"{b.a.threads} thread(s).", ""]
    for t in V.TARGETS:
        qt = q[q["target"] == t]
        lines += [f"## {t} accuracy", "", f"best accuracy of any trained pool net: {qt['best_acc'].iloc[0]:.4f}", "",
                  _quality_md(qt, main), "", f"### ranking methods over proxy subsets ({t})", "",
                  _quality_md(qt, combos), ""]
    lines += ["## noise ceiling (seed-to-seed)", "", _md(noise), ""]
    for t in V.TARGETS:
        gt = guards[(guards["target"] == t)]
        keep = [m for m in ["params", "score", *combos] if m in set(gt["measure"])]
        piv = gt[gt["measure"].isin(keep)].pivot_table(index="measure", columns="guard",
                                                        values=["spearman", "regret", "pick_acc"], aggfunc="first", dropna=False)
        piv.columns = [f"{v} ({_guard_label(g)})" for v, g in piv.columns]
        piv = piv.loc[keep].reset_index()
        sizes = gt.groupby("guard").agg(pool=("pool", "first"), sampled=("n", "max"),
                                        best_acc=("best_acc", "first")).reset_index()
        sizes["guard"] = sizes["guard"].map(_guard_label)
        lines += [f"## guard constraints.min_width ({t} accuracy)", "",
                  "pool: initial nets within the device limits and the guard; sampled: the stratified sample's "
                  "nets in it; best_acc: the best trained net in it", "", _md(sizes, ".4f"), "",
                  _md(piv, ".3f"), ""]
    if len(archs):
        lines += ["## given nets (short recipe)", "", _md(archs, ".4f"), ""]
    if confirm is not None and len(confirm):
        lines += [f"## fresh-seed confirmation (seeds {b.a.confirm_seeds})", "",
                  f"the {b.a.confirm_top} sampled nets with the best validation accuracy on the selection seeds "
                  "(sel_*) and the given nets, trained again with seeds not used to select them; gap_*: the best "
                  "confirmed sampled net's mean minus the row's mean", "", _md(confirm, ".4f"), ""]
    text = "\n".join(lines) + "\n"
    atomic_write_text(b.out / f"summary{sfx}.md", text)
    print(text)


# ----------------------------------------------------------------------------------------------
# entry point
# ----------------------------------------------------------------------------------------------
def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["recipe", "score", "truth"])
    ap.add_argument("--config", default=str(REPO / "config" / "config.yaml"))
    ap.add_argument("--out", default=str(REPO / "results" / "bench" / "search_quality"))
    ap.add_argument("--jobs", type=int, default=2, help="worker processes")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0, help="sample / bootstrap / random-measure seed")
    ap.add_argument("--nets", type=int, default=None, help="recipe: 8 nets; truth: 64 sampled nets")
    ap.add_argument("--epochs", type=int, nargs="+", default=None, help="recipe: budgets (default 20 5)")
    ap.add_argument("--seeds", type=int, nargs="+", default=None,
                    help="training seeds (recipe: 0; truth: 0 1, the others only for the noise nets)")
    ap.add_argument("--proxies", nargs="+", default=ALL_PROXIES, help="proxies scored (score, truth)")
    ap.add_argument("--top-k", type=int, default=3, help="truth: picks per measure (unguarded pool)")
    ap.add_argument("--seed-nets", type=int, default=12, help="truth: sampled nets trained with every seed")
    ap.add_argument("--guards", type=int, nargs="+", default=[0, 8, 16, 24],
                    help="truth: constraints.min_width values studied (0 = no guard)")
    ap.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples")
    ap.add_argument("--lr", type=float, default=None, help="short recipe lr (default: the config's validation recipe)")
    ap.add_argument("--schedule", choices=["constant", "cosine"], default=None)
    ap.add_argument("--combos", nargs="*", default=None,
                    help="extra proxy subsets for the ranking methods, comma-separated, e.g. params,zico")
    ap.add_argument("--arch", nargs="*", default=None, help="truth: also train these nets with the short recipe")
    ap.add_argument("--baselines", nargs="+", default=["params", "macs"],
                    help="truth: paired bootstrap intervals of rho minus each baseline's rho")
    ap.add_argument("--confirm-seeds", type=int, nargs="*", default=None,
                    help="truth: train the --confirm-top best sampled nets and the --arch nets again with these "
                         "fresh seeds (winner's-curse-free comparison; table confirm*)")
    ap.add_argument("--confirm-top", type=int, default=5, help="truth: sampled nets confirmed with fresh seeds")
    ap.add_argument("--mean-seeds", action="store_true",
                    help="truth: train every net with every seed of --seeds; its accuracy is the mean (tables *_mean)")
    a = ap.parse_args(argv)
    if a.command == "recipe":
        a.nets = a.nets or 8
        a.epochs = a.epochs or [5, 20]
        a.seeds = a.seeds or [0]
    elif a.command == "truth":
        a.nets = a.nets or 64
        a.seeds = a.seeds or [a.seed, a.seed + 1]
    return a


def main(argv=None):
    a = parse_args(argv)
    b = Bench(a)
    {"recipe": cmd_recipe, "score": cmd_score, "truth": cmd_truth}[a.command](b)


if __name__ == "__main__":
    main()
