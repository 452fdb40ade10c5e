"""Constraint checks on the cost model: ``constraints:`` in the config.

Each configured limit (``max_params``, ``max_macs``, ``max_peak_sram``, ``max_flash``; ``null``
= not checked) gives a boolean column ``ok_<limit>``; ``feasible`` is the AND of all of them.
"""

from __future__ import annotations

from typing import Any, Mapping

import pandas as pd

# config key -> cost-model column
LIMITS = {"max_params": "params", "max_macs": "macs", "max_peak_sram": "peak_sram", "max_flash": "flash"}


def active_limits(constraints: Mapping[str, Any]) -> dict[str, int]:
    return {k: int(v) for k, v in constraints.items() if k in LIMITS and v is not None}


def check_row(costs: Mapping[str, Any], constraints: Mapping[str, Any]) -> dict[str, bool]:
    """``ok_<limit>`` per active limit and ``feasible`` for one net's costs."""
    out = {f"ok_{k}": bool(costs[LIMITS[k]] <= v) for k, v in active_limits(constraints).items()}
    out["feasible"] = all(out.values())
    return out


def violations(costs: Mapping[str, Any], constraints: Mapping[str, Any]) -> int:
    """How many active limits a net violates (CNAS-style penalty counts these)."""
    return sum(1 for k, v in active_limits(constraints).items() if costs[LIMITS[k]] > v)


def add_flags(df: pd.DataFrame, constraints: Mapping[str, Any]) -> pd.DataFrame:
    """Add ``ok_<limit>`` columns and ``feasible`` to a table with cost columns."""
    df = df.copy()
    feasible = pd.Series(True, index=df.index)
    for k, v in active_limits(constraints).items():
        ok = df[LIMITS[k]] <= v
        df[f"ok_{k}"] = ok
        feasible &= ok
    df["feasible"] = feasible.astype(bool)
    return df
