"""The trade-off a search found, for either algorithm: the Pareto set of the feasible nets it
evaluated (quality ``score`` against the costs of ``evolution.objectives``) and its hypervolume
as the search went on.

- :func:`pareto_table`: the non-dominated feasible nets of a history (distinct architectures,
  pymoo's non-dominated sorting on ``-score`` and the costs), sorted by the first cost.
- :func:`hypervolume_table`: after each cut of the history (every generation of NSGA-II; at most
  ``points`` evenly spaced cycles of the aging loop), the hypervolume (pymoo's ``HV``) of the
  feasible nets evaluated so far, in normalised objectives with a fixed reference point, so that
  runs of both algorithms on the same initial pool compare: quality ``(s_max - score) / (s_max -
  s_min)`` with ``s_min`` / ``s_max`` the lowest / highest finite score of the initial pool, and
  each cost divided by its device limit (``constraints.max_<cost>``) or, without one, by the
  largest value in the initial pool. The reference point is 1 in every objective (the worst
  initial score, the limit). Higher is better.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from tinyevo.space.constraints import LIMITS, Constraints, as_constraints

PARETO_COLUMNS = ["arch", "id", "cycle", "score", "params", "macs", "peak_sram", "flash"]


def _feasible_unique(history: pd.DataFrame) -> pd.DataFrame:
    h = history[history["feasible"].astype(bool) & np.isfinite(history["score"].to_numpy(float))]
    return h.drop_duplicates("arch", keep="first")


def nondominated(F: np.ndarray) -> np.ndarray:
    """Indices of the rows of ``F`` (minimised) no other row dominates."""
    from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

    if len(F) == 0:
        return np.zeros(0, dtype=int)
    return np.sort(NonDominatedSorting().do(np.asarray(F, float), only_non_dominated_front=True))


def objective_matrix(df: pd.DataFrame, objectives: Sequence[str]) -> np.ndarray:
    return np.column_stack([-df["score"].to_numpy(float), *(df[c].to_numpy(float) for c in objectives)])


def pareto_table(history: pd.DataFrame, objectives: Sequence[str]) -> pd.DataFrame:
    """The non-dominated feasible nets of ``history`` (higher score, lower costs)."""
    h = _feasible_unique(history)
    keep = nondominated(objective_matrix(h, objectives)) if len(h) else np.zeros(0, int)
    cols = [c for c in PARETO_COLUMNS if c in h.columns]
    out = h.iloc[keep][cols].sort_values([objectives[0], "score"], ascending=[True, False], kind="stable")
    return out.reset_index(drop=True)


def reference(history: pd.DataFrame, objectives: Sequence[str],
              constraints: Constraints | Mapping | None) -> dict[str, float]:
    """The normalisation of :func:`hypervolume_table`: ``s_min``, ``s_max`` and one scale per cost."""
    cons = as_constraints(constraints)
    init = history[history["cycle"] == 0]
    s = init["score"].to_numpy(float)
    s = s[np.isfinite(s)]
    if len(s) == 0:
        raise ValueError("the initial pool has no finite score: no hypervolume reference")
    ref = {"s_min": float(s.min()), "s_max": float(s.max())}
    by_cost = {v: k for k, v in LIMITS.items()}
    for c in objectives:
        lim = cons.limits.get(by_cost[c])
        ref[c] = float(lim) if lim is not None else float(init[c].max())
    return ref


def normalised(df: pd.DataFrame, objectives: Sequence[str], ref: Mapping[str, float]) -> np.ndarray:
    span = max(ref["s_max"] - ref["s_min"], 1e-12)
    q = (ref["s_max"] - df["score"].to_numpy(float)) / span
    return np.column_stack([q, *(df[c].to_numpy(float) / ref[c] for c in objectives)])


def hypervolume_table(history: pd.DataFrame, objectives: Sequence[str], constraints: Constraints | Mapping | None,
                      points: int = 50) -> pd.DataFrame:
    """Columns ``cycle``, ``evaluated`` (children so far), ``feasible`` (distinct feasible nets
    so far), ``front`` (their Pareto set's size) and ``hypervolume``."""
    from pymoo.indicators.hv import HV

    ref = reference(history, objectives, constraints)
    hv = HV(ref_point=np.ones(1 + len(objectives)))
    cycles = np.unique(history["cycle"].to_numpy(int))
    if len(cycles) > points:
        cycles = np.unique(np.concatenate([cycles[np.linspace(0, len(cycles) - 1, points).round().astype(int)],
                                           cycles[-1:]]))
    rows = []
    for c in cycles:
        h = _feasible_unique(history[history["cycle"] <= c])
        F = normalised(h, objectives, ref)
        inside = F[(F <= 1.0).all(axis=1)] if len(F) else F
        front = inside[nondominated(inside)] if len(inside) else inside
        rows.append({"cycle": int(c), "evaluated": int(((history["cycle"] > 0) & (history["cycle"] <= c)).sum()),
                     "feasible": int(len(h)), "front": int(len(front)),
                     "hypervolume": float(hv(front)) if len(front) else 0.0})
    return pd.DataFrame(rows).astype({"cycle": "int64", "evaluated": "int64", "feasible": "int64", "front": "int64",
                                      "hypervolume": "float64"})
