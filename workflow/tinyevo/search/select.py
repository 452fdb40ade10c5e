"""The winners table (the paper's Table 1/4): best constrained (C) and unconstrained (NC) net by
AVG, before evolution (the initial population, history rows of cycle 0) and after (the whole
history). Ties go to the earliest net of the history."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from tinyevo.space.constraints import active_limits

NETS = ("C", "NC")
PHASES = ("before", "after")


class NoFeasibleNet(ValueError):
    pass


def describe_constraints(constraints: Mapping[str, Any]) -> str:
    lim = active_limits(constraints)
    if not lim:
        return "no limits set"
    return ", ".join(f"constraints.{k} = {v:,}" for k, v in lim.items())


def select_winners(history: pd.DataFrame, proxies: Sequence[str], constraints: Mapping[str, Any]) -> pd.DataFrame:
    """Rows net in {C, NC} x phase in {before, after}. Raises :class:`NoFeasibleNet` when no
    net of the history meets the constraints. When the initial population has no feasible net
    but evolution found one, the C/before row has no arch (null) and NaN values."""
    need = ["arch", "cycle", "avg", "feasible", "params", "macs", "peak_sram", "flash",
            *(f"z_{p}" for p in proxies)]
    missing = [c for c in need if c not in history.columns]
    if missing:
        raise ValueError(f"evolution history lacks column(s) {missing}")
    if len(history) == 0:
        raise ValueError("evolution history is empty")
    if not history["feasible"].any():
        raise NoFeasibleNet(
            f"no net of the search ({len(history)} nets, initial population and evolution) meets the "
            f"constraints ({describe_constraints(constraints)}); relax them in the config's 'constraints:' "
            f"section or widen the search space"
        )
    cols = ["arch", "cycle", "avg", *(f"z_{p}" for p in proxies), "params", "macs", "peak_sram", "flash", "feasible"]
    out = []
    for phase in PHASES:
        pool = history[history["cycle"] == 0] if phase == "before" else history
        for net in NETS:
            cand = pool[pool["feasible"]] if net == "C" else pool
            if len(cand) == 0:
                row = {c: np.nan for c in cols}
                row.update(arch=None, feasible=False)
            else:
                best = cand["avg"].to_numpy().argmax()  # first maximum = earliest net
                row = cand.iloc[best][cols].to_dict()
            out.append({"net": net, "phase": phase, **row})
    df = pd.DataFrame.from_records(out, columns=["net", "phase", *cols])
    for c in ("cycle", "params", "macs", "peak_sram", "flash"):
        df[c] = pd.array([None if pd.isna(v) else int(v) for v in df[c]], dtype="Int64")
    df["feasible"] = df["feasible"].astype(bool)
    df["arch"] = df["arch"].astype(object)
    return df
