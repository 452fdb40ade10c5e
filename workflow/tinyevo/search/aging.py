"""Aging (regularised) evolution over the search space (the genetic-NAS paper's genetic step, done as
regularised evolution, Real et al. 2019).

The population starts as the ranked initial nets in age order. Each cycle:

1. draw a sample of ``sample_size`` members without replacement,
2. the parent is the sample member with the best *fitness* (``post_hoc``: ``score``, the
   ``ranking.method``'s combined proxy score; ``penalty``: score minus ``penalty`` per violated
   device limit or trainability guard, CNAS-style); ties go to the member drawn
   first,
3. one mutation (:func:`tinyevo.search.mutation.mutate`; a child keeps every trainability guard
   its parent satisfies),
4. the child is scored by the injected ``evaluate`` callable (proxies through the score cache,
   ranked against the *initial* pool: :func:`tinyevo.proxies.ranking.standardise`), measured and
   flagged (:class:`tinyevo.space.constraints.Constraints`, memoised per arch), appended to the
   population and the history,
5. the oldest population member is removed. Children may become parents.

``ceiling`` (``evolution.ceiling``, a factor >= 1 of ``constraints.max_params`` and
``max_macs``) bounds the search itself, apart from the device constraints: a net beyond it
(analytic params / MACs) is never a parent (fitness -inf; column ``within_ceiling``), and a child beyond it is not scored at
all (its proxy columns NaN, ``avg`` and ``score`` -inf). It keeps the unconstrained side of the
search from spending its time scoring nets far larger than anything it would hand on (the
largest children of a default run, 600-700 M MACs, take 20-30x as long to score as a feasible one). Under ``penalty`` such
a net is infeasible anyway, so it could become a parent only in a sample of infeasible nets.

``children_per_cycle`` = B > 1: B independent samples of the population as it stands at the
start of the cycle give B parents and B children (one mutation each); the B children are scored
as one batch (``evaluate`` receives all of them, so it can score in parallel), appended in
draw order, and the B oldest members are removed. The population size never changes, so the
population is always the last P rows of the history.

All randomness comes from one ``numpy.random.Generator`` seeded by ``evolution.seed``. The loop
checkpoints (history rows + completed cycle + generator state) every ``checkpoint_every``
cycles and at the end; a re-run with the same inputs resumes from it and produces exactly the
history of an uninterrupted run.

``cache_hit`` in the history is True when the child's architecture was already in the history
(an initial net or an earlier child): its scores are then served from the score cache. It is
decided from the history, not from the state of the on-disk cache, so the table does not
depend on what earlier runs left in the cache (byte-identical reruns).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from tinyevo.search import checkpoint as ckpt
from tinyevo.search.mutation import mutate
from tinyevo.space import SearchSpace
from tinyevo.space.constraints import Constraints, as_constraints

log = logging.getLogger("tinyevo.search")

Evaluate = Callable[[list], pd.DataFrame]
MODES = ("post_hoc", "penalty")
COSTS = ("params", "macs", "peak_sram", "flash")  # the cost-model columns of the history


@dataclass(frozen=True)
class EvolutionParams:
    cycles: int = 500
    sample_size: int = 20
    children_per_cycle: int = 1
    constraints: str = "post_hoc"
    penalty: float = 1e10
    checkpoint_every: int = 50
    seed: int = 0
    ceiling: float | None = None

    @classmethod
    def from_config(cls, evo: Mapping[str, Any]) -> "EvolutionParams":
        """From the resolved ``evolution`` config section (extra keys such as threads ignored)."""
        p = cls(**{k: evo[k] for k in cls.__dataclass_fields__ if k in evo})
        p.check()
        return p

    def check(self) -> None:
        if self.constraints not in MODES:
            raise ValueError(f"config key 'evolution.constraints' is {self.constraints!r}; use one of {list(MODES)}")
        for k in ("sample_size", "children_per_cycle", "checkpoint_every"):
            if int(getattr(self, k)) < 1:
                raise ValueError(f"config key 'evolution.{k}' must be >= 1, got {getattr(self, k)}")
        if int(self.cycles) < 0:
            raise ValueError(f"config key 'evolution.cycles' must be >= 0, got {self.cycles}")
        if not self.penalty > 0:
            raise ValueError(f"config key 'evolution.penalty' must be > 0, got {self.penalty}")
        check_ceiling(self.ceiling)


CEILING_KEYS = ("max_params", "max_macs")


def check_ceiling(ceiling: Any) -> float | None:
    """``evolution.ceiling``: a factor >= 1 of the ``constraints:`` limits, or None (no ceiling)."""
    if ceiling is None:
        return None
    if isinstance(ceiling, bool) or not isinstance(ceiling, (int, float, np.integer, np.floating)) \
            or not np.isfinite(ceiling) or ceiling < 1:
        raise ValueError(f"config key 'evolution.ceiling' must be a number >= 1 (a multiple of constraints.max_params "
                         f"and constraints.max_macs) or null, got {ceiling!r}")
    return float(ceiling)


def ceiling_bounds(ceiling: float | None, cons: Constraints) -> dict[str, int]:
    """The search's bounds: ``ceiling`` x each of ``constraints.max_params`` / ``max_macs`` that is
    set ({} = no bound)."""
    if ceiling is None:
        return {}
    return {k: int(ceiling * cons.limits[k]) for k in CEILING_KEYS if cons.limits.get(k) is not None}


def within_ceiling(costs: Mapping[str, int], ceiling: Mapping[str, int]) -> bool:
    return all(int(costs[k.removeprefix("max_")]) <= v for k, v in ceiling.items())


def score_within_ceiling(archs, evaluate, measures, ceiling: Mapping[str, int], cols) -> tuple[dict, int, float]:
    """Score the distinct ``archs`` that lie within the search's ceiling (one ``evaluate`` batch);
    the others get NaN proxies and an ``avg`` / ``score`` of -inf (never parents). Returns
    (arch -> scores, how many lay beyond, seconds spent scoring)."""
    archs = list(dict.fromkeys(archs))
    inside = [a for a in archs if within_ceiling(measures(a), ceiling)]
    t0 = time.perf_counter()
    scored = _check_scores(evaluate(inside), inside, cols) if inside else {}
    dt = time.perf_counter() - t0
    beyond = 0
    for a in archs:
        if a not in scored:
            scored[a] = {c: (-np.inf if c in ("avg", "score") else np.nan) for c in cols}
            beyond += 1
    return scored, beyond, dt


@dataclass
class EvolutionResult:
    history: pd.DataFrame
    population: pd.DataFrame
    resumed_from: int = 0  # completed cycle the run resumed from (0 = fresh start)
    timings: dict = field(default_factory=dict)  # wall seconds: total, scoring; cycles run


def proxy_columns(proxies: Sequence[str], method: str = "zscore") -> list[str]:
    """Raw proxies + :func:`tinyevo.proxies.ranking.score_columns` (z_<proxy>, avg, r_<proxy> for
    ``rank``, score)."""
    from tinyevo.proxies.ranking import score_columns

    return [*proxies, *score_columns(proxies, method)]


def prepare_initial(df: pd.DataFrame, proxies: Sequence[str], space: SearchSpace,
                    what: str = "initial population table", method: str = "zscore") -> pd.DataFrame:
    """Validate the ranked initial nets and put them in age order (``index`` column when present,
    else file order). Needs ``arch`` and :func:`proxy_columns` (raw scores, z_<proxy>, avg,
    r_<proxy> for the rank method, score)."""
    if df is None or len(df) == 0:
        raise ValueError(f"{what} has no rows: evolution needs the ranked initial nets")
    need = ["arch", *proxy_columns(proxies, method)]
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise ValueError(f"{what} lacks column(s) {missing}; it needs {need} (proxies from 'proxies.names', "
                         f"ranking.method {method!r})")
    if "index" in df.columns:
        df = df.sort_values("index", kind="stable")
    df = df.reset_index(drop=True)
    if df["arch"].duplicated().any():
        dup = df.loc[df["arch"].duplicated(), "arch"].iloc[0]
        raise ValueError(f"{what} lists architecture {dup!r} more than once")
    for a in df["arch"]:
        space.decode(a)  # raises ValueError naming the position
    vals = df[proxy_columns(proxies, method)].astype(float)
    for c in ("avg", "score"):  # -inf is allowed: a net that cannot be scored ranks last
        if vals[c].isna().any():
            bad = df.loc[vals[c].isna().to_numpy(), "arch"].iloc[0]
            raise ValueError(f"{what}: column {c!r} is NaN for {bad!r}")
    out = df[["arch"]].copy()
    for c in proxy_columns(proxies, method):
        out[c] = vals[c].to_numpy()
    return out


class _Measures:
    """Constraints.measure per arch, memoised (the TyBox estimate costs a few ms per net)."""

    def __init__(self, space: SearchSpace, cons: Constraints):
        self.space, self.cons = space, cons
        self.memo: dict[str, dict[str, int]] = {}
        self.seconds = 0.0

    def __call__(self, arch: str) -> dict[str, int]:
        if arch not in self.memo:
            t0 = time.perf_counter()
            m = self.cons.measure(self.space.netspec(arch))
            self.memo[arch] = {k: int(m[k]) for k in self.columns}
            self.seconds += time.perf_counter() - t0
        return self.memo[arch]

    @property
    def columns(self) -> list[str]:
        return [*COSTS, *(c for c in self.cons.measure_columns if c not in (*COSTS, "feature_size"))]


def _fitness(score: float, n_violations: int, p: EvolutionParams) -> float:
    if p.constraints == "penalty":
        return float(score) - float(p.penalty) * n_violations
    return float(score)


def _row(*, id_, cycle, slot, parent_id, parent, arch, mut, scores, costs, cons, p, cache_hit, cols, ceiling):
    r: dict[str, Any] = {"id": id_, "cycle": cycle, "slot": slot, "parent_id": parent_id, "parent": parent,
                         "arch": arch, "gene": mut.gene if mut else None, "stage": mut.stage if mut else None,
                         "old": mut.old if mut else None, "new": mut.new if mut else None}
    for c in cols:
        r[c] = float(scores[c])
    r.update(costs)
    r.update(cons.check(costs))
    r["violations"] = int(cons.violations(costs))
    r["within_ceiling"] = within_ceiling(costs, ceiling)
    r["fitness"] = _fitness(r["score"], r["violations"], p) if r["within_ceiling"] else -np.inf
    r["cache_hit"] = bool(cache_hit)
    return r


def rows_to_frame(rows: list[dict], constraints: Constraints | Mapping[str, Any]) -> pd.DataFrame:
    cons = as_constraints(constraints)
    df = pd.DataFrame.from_records(rows)
    for c in ("parent_id", "stage", "old", "new"):
        df[c] = pd.array(df[c].tolist(), dtype="Int64")
    for c in ("parent", "gene"):
        df[c] = df[c].astype(object)
    for c in ("id", "cycle", "slot", "violations", *COSTS, *(m for m in cons.measure_columns if m in df.columns)):
        df[c] = df[c].astype("int64")
    for c in cons.flag_columns:
        df[c] = df[c].astype(bool)
    df["cache_hit"] = df["cache_hit"].astype(bool)
    if "within_ceiling" in df.columns:
        df["within_ceiling"] = df["within_ceiling"].astype(bool)
    return df


def _check_scores(df: pd.DataFrame, archs: list[str], cols: Sequence[str]) -> dict[str, dict]:
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"the scorer returned {type(df).__name__}, expected a pandas DataFrame")
    need = ["arch", *cols]
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise ValueError(f"the scorer's table lacks column(s) {missing}")
    by = {a: r for a, r in zip(df["arch"], df[list(cols)].to_dict("records"))}
    lost = [a for a in archs if a not in by]
    if lost:
        raise ValueError(f"the scorer returned no scores for {lost}")
    for a in archs:
        if np.isnan(by[a]["score"]):  # -inf (cannot be scored) ranks last; NaN would break the max
            raise ValueError(f"the scorer gave a NaN score for {a!r}")
    return by


def run_key(p: EvolutionParams, constraints: Constraints | Mapping[str, Any], proxies: Sequence[str],
            space: SearchSpace, initial: pd.DataFrame, extra: Mapping[str, Any] | None = None,
            method: str = "zscore") -> str:
    params = {"evolution": asdict(p), "constraints": as_constraints(constraints).identity(),
              "proxies": list(proxies), "method": method, "space": repr(space), "extra": dict(extra or {})}
    return ckpt.make_key(params, initial)


def evolve(initial: pd.DataFrame, evaluate: Evaluate, space: SearchSpace, proxies: Sequence[str],
           constraints: Constraints | Mapping[str, Any], p: EvolutionParams, checkpoint_dir=None,
           key_extra: Mapping[str, Any] | None = None, progress: Callable | None = None,
           method: str = "zscore") -> EvolutionResult:
    """Run (or resume) aging evolution. ``initial``: table with ``arch`` and :func:`proxy_columns`
    (see :func:`prepare_initial`); ``evaluate(archs) -> DataFrame`` with the same columns for new
    archs (the scorer + :func:`tinyevo.proxies.ranking.standardise` against the initial pool).
    ``constraints``: a :class:`~tinyevo.space.constraints.Constraints` or the ``constraints:``
    mapping; ``method``: ``ranking.method`` (which score columns the tables carry)."""
    p.check()
    cons = as_constraints(constraints)
    cons.check_space(space)
    proxies = list(proxies)
    cols = proxy_columns(proxies, method)
    initial = prepare_initial(initial, proxies, space, method=method)
    P = len(initial)
    S, B = int(p.sample_size), int(p.children_per_cycle)
    if S > P:
        raise ValueError(f"config key 'evolution.sample_size' ({S}) exceeds the population size ({P} initial nets)")
    ceiling = ceiling_bounds(check_ceiling(p.ceiling), cons)
    measures = _Measures(space, cons)
    key = run_key(p, cons, proxies, space, initial, key_extra, method)
    rng = np.random.default_rng(int(p.seed))

    state = ckpt.load(checkpoint_dir, key)
    if state is not None:
        rows = state["rows"]
        rng.bit_generator.state = state["rng"]
        start = int(state["cycle"])
        log.info("resuming from checkpoint at cycle %d/%d (%d nets in the history)", start, p.cycles, len(rows))
    else:
        rows = []
        for i, rec in enumerate(initial.to_dict("records")):
            rows.append(_row(id_=i, cycle=0, slot=i, parent_id=None, parent=None, arch=rec["arch"], mut=None,
                             scores=rec, costs=measures(rec["arch"]), cons=cons, p=p, cache_hit=False, cols=cols,
                             ceiling=ceiling))
        start = 0
        if not any(r["feasible"] for r in rows):
            log.warning("no initial net is feasible under %s: C is found only if the evolution reaches one",
                        cons.describe())
    seen = {r["arch"] for r in rows}
    fitness = [r["fitness"] for r in rows]

    t_total0 = time.perf_counter()
    t_score = 0.0
    beyond = 0
    bar = progress(total=p.cycles, initial=start, desc="evolution") if progress else None
    for cycle in range(start + 1, p.cycles + 1):
        first = len(rows) - P
        fit = np.asarray(fitness[first:], dtype=float)
        children = []
        for slot in range(B):
            sample = rng.choice(P, size=S, replace=False)
            win = int(sample[int(np.argmax(fit[sample]))])
            parent = rows[first + win]
            genes, mut = mutate(space, space.decode(parent["arch"]), rng, cons)
            children.append((slot, parent, space.encode(genes), mut))
        # beyond the ceiling: not scored, never a parent
        scored, n_beyond, dt = score_within_ceiling((c[2] for c in children), evaluate, measures, ceiling, cols)
        t_score += dt
        beyond += n_beyond
        for slot, parent, arch, mut in children:
            r = _row(id_=len(rows), cycle=cycle, slot=slot, parent_id=parent["id"], parent=parent["arch"],
                     arch=arch, mut=mut, scores=scored[arch], costs=measures(arch), cons=cons, p=p,
                     cache_hit=arch in seen, cols=cols, ceiling=ceiling)
            seen.add(arch)
            rows.append(r)
            fitness.append(r["fitness"])
        if checkpoint_dir is not None and (cycle % p.checkpoint_every == 0 or cycle == p.cycles):
            ckpt.save(checkpoint_dir, key, cycle, rows, rng.bit_generator.state)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    elapsed = time.perf_counter() - t_total0
    history = rows_to_frame(rows, cons)
    population = history.iloc[len(history) - P:].reset_index(drop=True)
    population.insert(0, "age_rank", np.arange(P, dtype="int64"))  # 0 = oldest member
    return EvolutionResult(history=history, population=population, resumed_from=start,
                           timings={"total_s": elapsed, "scoring_s": t_score, "cycles": p.cycles - start,
                                    "measure_s": measures.seconds, "measured": len(measures.memo),
                                    "beyond_ceiling": beyond})
