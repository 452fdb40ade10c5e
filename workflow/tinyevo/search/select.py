"""The winners table (the paper's Table 1/4): best constrained (C) and unconstrained (NC) net by
``score`` (the ``ranking.method``'s combined proxy score), before evolution (the initial
population, history rows of cycle 0) and after (the whole history). C is chosen among the
``feasible`` nets (device limits and trainability guards hold), NC among the ``trainable`` ones
(guards hold, device limits ignored). Ties go to the earliest net of the history."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from tinyevo.space.constraints import GUARDS, Constraints, as_constraints

NETS = ("C", "NC")
PHASES = ("before", "after")
POOL = {"C": "feasible", "NC": "trainable"}  # the flag a net must have to be chosen as C / NC
COSTS = ("params", "macs", "peak_sram", "flash")


class NoFeasibleNet(ValueError):
    pass


def describe_constraints(constraints: Constraints | Mapping[str, Any] | None) -> str:
    """Every active limit, the device check and every guard, e.g. ``constraints.max_params =
    60,000, constraints.min_width = 16 (...)``. A plain ``constraints:`` mapping is described
    without its device budget (which lives in the ``device:`` section)."""
    if isinstance(constraints, Constraints):
        return constraints.describe()
    m = dict(constraints or {})
    if not m.get("fit_device"):
        return as_constraints(m).describe()
    base = as_constraints({**m, "fit_device": False})
    parts = [f"constraints.{k} = {v:,}" for k, v in base.limits.items()]
    parts.append("constraints.fit_device (the device: section's ram_bytes and min_buffer_samples)")
    guards = as_constraints({k: m.get(k) for k in GUARDS}).describe()
    return ", ".join(parts + ([guards] if base.guards else []))


def _columns(history: pd.DataFrame, proxies: Sequence[str]) -> tuple[list[str], list[str]]:
    """(columns of the winners table, its integer columns)."""
    z = [f"z_{p}" for p in proxies]
    r = [f"r_{p}" for p in proxies if f"r_{p}" in history.columns]
    extra = [c for c in (*(g.column for g in GUARDS.values()), "device_bytes") if c in history.columns]
    flags = [c for c in ("within_limits", "trainable", "feasible") if c in history.columns]
    return ["arch", "cycle", "score", "avg", *z, *r, *COSTS, *extra, *flags], ["cycle", *COSTS, *extra]


def select_winners(history: pd.DataFrame, proxies: Sequence[str],
                   constraints: Constraints | Mapping[str, Any]) -> pd.DataFrame:
    """Rows net in {C, NC} x phase in {before, after}. Raises :class:`NoFeasibleNet` (naming
    every constraint) when no net of the history is feasible, or none is trainable. When the
    initial population has no such net but evolution found one, the before row has no arch
    (null) and NaN values."""
    need = ["arch", "cycle", "score", "avg", "trainable", "feasible", *COSTS, *(f"z_{p}" for p in proxies)]
    missing = [c for c in need if c not in history.columns]
    if missing:
        raise ValueError(f"evolution history lacks column(s) {missing}")
    if len(history) == 0:
        raise ValueError("evolution history is empty")
    for net, flag in (("NC", "trainable"), ("C", "feasible")):  # no trainable net -> no feasible one either
        if not history[flag].any():
            what = "meets the constraints" if flag == "feasible" else "passes the trainability guards"
            raise NoFeasibleNet(
                f"no net of the search ({len(history)} nets, initial population and evolution) {what} "
                f"({describe_constraints(constraints)}); relax them in the config's 'constraints:' section, "
                f"raise the device: budget or widen the search space (no {net} net)"
            )
    cols, ints = _columns(history, proxies)
    out = []
    for phase in PHASES:
        pool = history[history["cycle"] == 0] if phase == "before" else history
        for net in NETS:
            cand = pool[pool[POOL[net]]]
            if len(cand) == 0:
                row = {c: np.nan for c in cols}
                row.update(arch=None, **{f: False for f in ("within_limits", "trainable", "feasible") if f in cols})
            else:
                best = cand["score"].to_numpy().argmax()  # first maximum = earliest net
                row = cand.iloc[best][cols].to_dict()
            out.append({"net": net, "phase": phase, **row})
    df = pd.DataFrame.from_records(out, columns=["net", "phase", *cols])
    for c in ints:
        df[c] = pd.array([None if pd.isna(v) else int(v) for v in df[c]], dtype="Int64")
    for c in ("within_limits", "trainable", "feasible"):
        if c in df.columns:
            df[c] = df[c].astype(bool)
    df["arch"] = df["arch"].astype(object)
    return df
