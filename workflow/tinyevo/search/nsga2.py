"""Multi-objective search with pymoo's NSGA-II (Deb et al., "A fast and elitist multiobjective
genetic algorithm: NSGA-II", 2002), over the same search space, proxies, score cache, ranking and
constraints as the aging loop (:mod:`tinyevo.search.aging`); CNAS, the search behind the TyBox
thesis, is bi-objective NSGA-II in the same way.

- **Genes**: a net is the integer vector (repeats, expansions, channels) of its stages, exactly
  the architecture string's values.
- **Objectives** (all minimised by pymoo): ``-score`` (the ``ranking.method``'s combined proxy
  score, higher is better) and each cost of ``evolution.objectives`` (any of ``flash``,
  ``peak_sram``, ``macs``, ``params``, from the analytic cost model; lower is better).
- **Constraints** stay constraints: one inequality, the number of violated device limits and
  trainability guards plus the relative excess over each violated limit (0 when the net is
  feasible), and 1 more for a net beyond ``evolution.ceiling`` (never scored). pymoo's
  constraint domination ranks a feasible net above every infeasible one.
- **Variation**: pymoo's binary tournament on rank and crowding picks the parents; a crossover
  takes each stage (its three genes together) from either parent with probability 1/2 (so every
  child is a valid string of the space) and keeps the first parent when the child would lose a
  trainability guard both parents hold; every child then gets one mutation of
  :func:`tinyevo.search.mutation.mutate` (the aging loop's alphabets and guards). Duplicates
  within a generation are removed by pymoo.
- **Population**: the first generation is the whole ranked initial pool (already scored); each
  later generation adds ``nsga2.offspring`` children (default ``pop_size``) and keeps
  ``nsga2.pop_size`` by rank and crowding. ``ceil(evolution.cycles / offspring)`` generations
  evaluate about as many children as the aging loop's ``cycles``.

Every random draw comes from pymoo's generator, seeded with ``evolution.seed``: the same seed
gives the same history. A checkpoint holds the history rows; a resumed run replays the
generations it holds from them (no scoring: the replay repeats the draws) and continues, so it
produces exactly the history of an uninterrupted run.

The history has the aging loop's columns (``cycle`` = generation, ``slot`` = the child's place
in it; ``parent`` the first parent, ``parent2`` the second, null when no crossover took place),
so the winners table, plots, final round and Pareto table read either.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from tinyevo.search import checkpoint as ckpt
from tinyevo.search.aging import (EvolutionParams, EvolutionResult, _Measures, _row, ceiling_bounds, check_ceiling,
                                  prepare_initial, proxy_columns, rows_to_frame, run_key, score_within_ceiling)
from tinyevo.search.mutation import mutate
from tinyevo.space import GENES, Genes, SearchSpace
from tinyevo.space.constraints import LIMITS, Constraints, as_constraints

log = logging.getLogger("tinyevo.search")

OBJECTIVE_COSTS = ("flash", "peak_sram", "macs", "params")
ALGORITHMS = ("aging", "nsga2")
_UNSCORED = 1e30  # -score of a net that has no finite score (beyond the ceiling, or unscorable)


def check_objectives(objectives: Any) -> list[str]:
    """``evolution.objectives``: a non-empty list of distinct costs of :data:`OBJECTIVE_COSTS`."""
    if isinstance(objectives, str) or not isinstance(objectives, Sequence) or not objectives:
        raise ValueError(f"config key 'evolution.objectives' must be a non-empty list of {list(OBJECTIVE_COSTS)}, "
                         f"got {objectives!r}")
    bad = [o for o in objectives if o not in OBJECTIVE_COSTS]
    if bad:
        raise ValueError(f"config key 'evolution.objectives' has unknown cost(s) {bad}; known: {list(OBJECTIVE_COSTS)}")
    if len(set(objectives)) != len(objectives):
        raise ValueError(f"config key 'evolution.objectives' lists a cost twice: {list(objectives)}")
    return list(objectives)


@dataclass(frozen=True)
class NSGA2Params:
    pop_size: int = 50
    offspring: int | None = None  # children per generation (None = pop_size)
    crossover_prob: float = 0.9

    @classmethod
    def from_config(cls, section: Mapping[str, Any] | None) -> "NSGA2Params":
        s = dict(section or {})
        unknown = sorted(set(s) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"config key 'evolution.nsga2' has unknown key(s) {unknown}; "
                             f"known: {list(cls.__dataclass_fields__)}")
        p = cls(**s)
        p.check()
        return p

    def check(self) -> None:
        for k in ("pop_size", "offspring"):
            v = getattr(self, k)
            if v is None and k == "offspring":
                continue
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 2:
                raise ValueError(f"config key 'evolution.nsga2.{k}' must be an integer >= 2, got {v!r}")
        if not 0.0 <= float(self.crossover_prob) <= 1.0:
            raise ValueError(f"config key 'evolution.nsga2.crossover_prob' must lie in [0, 1], got {self.crossover_prob}")

    @property
    def n_offspring(self) -> int:
        return int(self.pop_size if self.offspring is None else self.offspring)


# ----- encoding ----------------------------------------------------------------------------------
def to_vector(space: SearchSpace, arch: str) -> np.ndarray:
    g = space.decode(arch)
    return np.array([v for gene in GENES for v in getattr(g, gene)], dtype=np.int64)


def to_arch(space: SearchSpace, x) -> str:
    n = space.n_stages
    x = [int(round(float(v))) for v in x]
    return space.encode(Genes(**{gene: tuple(x[i * n:(i + 1) * n]) for i, gene in enumerate(GENES)}))


def constraint_value(costs: Mapping[str, Any], cons: Constraints, inside: bool) -> float:
    """The one inequality constraint (<= 0 when feasible): violated limits and guards, plus each
    violated limit's relative excess, plus 1 beyond the ceiling."""
    g = float(cons.violations(costs))
    for k, v in cons.limits.items():
        g += max(0.0, float(costs[LIMITS[k]]) / v - 1.0)
    return g + (0.0 if inside else 1.0)


def objective_row(row: Mapping[str, Any], objectives: Sequence[str]) -> list[float]:
    s = float(row["score"])
    return [-s if math.isfinite(s) else _UNSCORED, *(float(row[c]) for c in objectives)]


# ----- the run -----------------------------------------------------------------------------------
def evolve_nsga2(initial: pd.DataFrame, evaluate, space: SearchSpace, proxies: Sequence[str],
                 constraints: Constraints | Mapping[str, Any], p: EvolutionParams, nsga: NSGA2Params,
                 objectives: Sequence[str], checkpoint_dir=None, key_extra: Mapping[str, Any] | None = None,
                 progress=None, method: str = "zscore") -> EvolutionResult:
    """Run (or resume) NSGA-II; arguments as :func:`tinyevo.search.aging.evolve`, plus the
    ``evolution.nsga2`` settings and the cost objectives."""
    from pymoo.algorithms.moo.nsga2 import NSGA2
    from pymoo.core.population import Population
    from pymoo.core.problem import Problem

    p.check()
    nsga.check()
    objectives = check_objectives(objectives)
    cons = as_constraints(constraints)
    cons.check_space(space)
    proxies = list(proxies)
    cols = proxy_columns(proxies, method)
    initial = prepare_initial(initial, proxies, space, method=method)
    ceiling = ceiling_bounds(check_ceiling(p.ceiling), cons)
    measures = _Measures(space, cons)
    B = nsga.n_offspring
    n_gen = int(math.ceil(int(p.cycles) / B)) if p.cycles else 0
    extra = {"algorithm": "nsga2", "nsga2": asdict(nsga), "objectives": objectives, **dict(key_extra or {})}
    key = run_key(p, cons, proxies, space, initial, extra, method)
    state = ckpt.load(checkpoint_dir, key)
    stored: list[dict] = list(state["rows"]) if state is not None else []
    start = int(state["cycle"]) if state is not None else 0
    if state is not None:
        log.info("resuming from checkpoint at generation %d/%d (%d nets in the history): replaying it", start, n_gen,
                 len(stored))

    rows: list[dict] = []
    latest: dict[str, int] = {}  # arch -> id of its latest history row
    for i, rec in enumerate(initial.to_dict("records")):
        r = _row(id_=i, cycle=0, slot=i, parent_id=None, parent=None, arch=rec["arch"], mut=None, scores=rec,
                 costs=measures(rec["arch"]), cons=cons, p=p, cache_hit=False, cols=cols, ceiling=ceiling)
        r.update(parent2_id=None, parent2=None)
        rows.append(r)
        latest[r["arch"]] = i
    if not any(r["feasible"] for r in rows):
        log.warning("no initial net is feasible under %s: C is found only if the search reaches one", cons.describe())
    seen = {r["arch"] for r in rows}
    values: dict[str, tuple[list[float], float]] = {}  # arch -> (F, G) of its latest row

    def remember(r):
        values[r["arch"]] = (objective_row(r, objectives), constraint_value(measures(r["arch"]), cons,
                                                                           bool(r["within_ceiling"])))

    for r in rows:
        remember(r)

    n = space.n_stages
    lo = [min(space.alphabets[g]) for g in GENES for _ in range(n)]
    hi = [max(space.alphabets[g]) for g in GENES for _ in range(n)]

    class _Problem(Problem):
        def __init__(self):
            super().__init__(n_var=3 * n, n_obj=1 + len(objectives), n_ieq_constr=1, xl=np.array(lo, float),
                             xu=np.array(hi, float), vtype=int)

        def _evaluate(self, X, out, *args, **kwargs):
            fg = [values[to_arch(space, x)] for x in X]
            out["F"] = np.array([f for f, _ in fg], dtype=float)
            out["G"] = np.array([[g] for _, g in fg], dtype=float)

    crossover, mutation, info = _operators(space, cons, nsga.crossover_prob, measures)
    algo = NSGA2(pop_size=int(nsga.pop_size), n_offsprings=B,
                 sampling=Population.new("X", np.stack([to_vector(space, r["arch"]) for r in rows]).astype(float)),
                 crossover=crossover, mutation=mutation, eliminate_duplicates=True)
    problem = _Problem()
    algo.setup(problem, termination=("n_gen", n_gen + 1), seed=int(p.seed), verbose=False)

    t_total0 = time.perf_counter()
    t_score = 0.0
    beyond = 0
    bar = progress(total=n_gen, initial=start, desc="nsga2") if progress else None
    pop = algo.ask()  # generation 0: the initial pool, scored already
    algo.evaluator.eval(problem, pop)
    algo.tell(infills=pop)
    for gen in range(1, n_gen + 1):
        pop = algo.ask()
        if pop is None or len(pop) == 0:
            log.info("NSGA-II produced no new child at generation %d: stopping", gen)
            break
        archs = [to_arch(space, x) for x in pop.get("X")]
        replay = gen <= start
        if replay:
            old = [r for r in stored if int(r["cycle"]) == gen]
            if [r["arch"] for r in old] != archs:
                raise RuntimeError(f"the NSGA-II checkpoint in {checkpoint_dir} does not replay (generation {gen}); "
                                   f"delete it to start afresh")
            new_rows = old
        else:
            scored, n_beyond, dt = score_within_ceiling(archs, evaluate, measures, ceiling, cols)
            t_score += dt
            beyond += n_beyond
            new_rows = []
            for slot, a in enumerate(archs):
                pre, mut = info["mutation"].get(a, (a, None))
                p1, p2 = info["crossover"].get(pre, (pre, None))
                r = _row(id_=len(rows) + slot, cycle=gen, slot=slot, parent_id=latest.get(p1), parent=p1, arch=a,
                         mut=mut, scores=scored[a], costs=measures(a), cons=cons, p=p, cache_hit=a in seen, cols=cols,
                         ceiling=ceiling)
                r.update(parent2_id=latest.get(p2) if p2 is not None else None, parent2=p2)
                new_rows.append(r)
        for r in new_rows:
            rows.append(r)
            seen.add(r["arch"])
            latest[r["arch"]] = int(r["id"])
            remember(r)
        info["mutation"].clear()
        info["crossover"].clear()
        algo.evaluator.eval(problem, pop)
        algo.tell(infills=pop)
        if checkpoint_dir is not None and not replay and (gen % p.checkpoint_every == 0 or gen == n_gen):
            ckpt.save(checkpoint_dir, key, gen, rows[len(initial):], {})
        if bar is not None and not replay:
            bar.update(1)
    if bar is not None:
        bar.close()
    elapsed = time.perf_counter() - t_total0
    history = rows_to_frame(rows, cons)
    history["parent2_id"] = pd.array(history["parent2_id"].tolist(), dtype="Int64")
    history["parent2"] = history["parent2"].astype(object)
    final = algo.pop
    ids = [latest[to_arch(space, x)] for x in final.get("X")]
    population = history.set_index("id").loc[ids].reset_index()
    population.insert(0, "front_rank", np.asarray(final.get("rank"), dtype="int64"))
    population.insert(1, "crowding", np.asarray(final.get("crowding"), dtype=float))
    return EvolutionResult(history=history, population=population, resumed_from=start,
                           timings={"total_s": elapsed, "scoring_s": t_score, "cycles": max(0, n_gen - start),
                                    "measure_s": measures.seconds, "measured": len(measures.memo),
                                    "beyond_ceiling": beyond})


def _operators(space: SearchSpace, cons: Constraints, crossover_prob: float, measures):
    """The stage crossover and the gene mutation as pymoo operators; ``info`` maps each child to
    its parents (``crossover``: child -> (parent 1, parent 2)) and its mutation (``mutation``:
    child -> (the net before the mutation, Mutation)) for the history."""
    from pymoo.core.crossover import Crossover
    from pymoo.core.mutation import Mutation

    info: dict[str, dict] = {"crossover": {}, "mutation": {}}
    n = space.n_stages

    def trainable(arch: str) -> bool:
        return bool(cons.check(measures(arch))["trainable"])

    class StageCrossover(Crossover):
        def __init__(self):
            super().__init__(n_parents=2, n_offsprings=1, prob=crossover_prob)

        def _do(self, problem, X, *args, random_state=None, **kwargs):
            _, n_matings, n_var = X.shape
            out = np.empty((1, n_matings, n_var), dtype=X.dtype)
            for k in range(n_matings):
                a, b = X[0, k], X[1, k]
                take_b = random_state.random(n) < 0.5
                child = a.copy()
                for s in np.flatnonzero(take_b):
                    child[[s, n + s, 2 * n + s]] = b[[s, n + s, 2 * n + s]]
                pa, pb, pc = to_arch(space, a), to_arch(space, b), to_arch(space, child)
                if cons.guards and not trainable(pc) and trainable(pa) and trainable(pb):
                    child, pc = a.copy(), pa
                out[0, k] = child
                info["crossover"][pc] = (pa, pb)
            return out

    class GeneMutation(Mutation):
        def __init__(self):
            super().__init__(prob=1.0)

        def _do(self, problem, X, *args, random_state=None, **kwargs):
            out = X.copy()
            for i, x in enumerate(X):
                before = to_arch(space, x)
                genes, mut = mutate(space, space.decode(before), random_state, cons)
                child = space.encode(genes)
                out[i] = to_vector(space, child)
                info["mutation"][child] = (before, mut)
            return out

    return StageCrossover(), GeneMutation(), info
