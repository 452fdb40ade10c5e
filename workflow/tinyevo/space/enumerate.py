"""The enumerate stage: one row per initial net with its arch string, genes, costs and
constraint flags (``results/space/candidates.parquet``)."""

from __future__ import annotations

import logging
from typing import Any, Mapping

import pandas as pd

from tinyevo.space.constraints import add_flags
from tinyevo.space.cost import cost_of
from tinyevo.space.spec import SearchSpace

log = logging.getLogger("tinyevo.space")


def candidates_table(space: SearchSpace, constraints: Mapping[str, Any]) -> pd.DataFrame:
    rows = []
    for idx, genes in space.initial_population():
        cost = cost_of(space.netspec(genes))
        rows.append({
            "index": idx,
            "arch": space.encode(genes),
            "repeats": list(genes.repeats),
            "expansions": list(genes.expansions),
            "channels": list(genes.channels),
            **cost.as_dict(),
        })
    if not rows:
        raise ValueError("the configured search space produced no nets (config key 'search_space.population')")
    df = pd.DataFrame(rows).sort_values("index", kind="stable").reset_index(drop=True)
    for col in ("params", "macs", "peak_sram", "flash", "feature_size", "index"):
        df[col] = df[col].astype("int64")
    if df["arch"].duplicated().any():
        dup = df.loc[df["arch"].duplicated(), "arch"].iloc[0]
        raise ValueError(f"config key 'search_space.population': net {dup} appears more than once")
    return add_flags(df, constraints)


def enumerate_stage(search_space_cfg: Mapping[str, Any], constraints: Mapping[str, Any], out_path: str) -> pd.DataFrame:
    from tinyevo.io import write_parquet

    space = SearchSpace.from_config(search_space_cfg)
    df = candidates_table(space, constraints)
    write_parquet(df, out_path)
    n, nf = len(df), int(df["feasible"].sum())
    log.info("%d nets enumerated (%s mode), %d feasible (%.1f %%) under %s", n, space.population_mode, nf,
             100.0 * nf / n, {k: v for k, v in constraints.items() if v is not None} or "no constraints")
    for col in [c for c in df.columns if c.startswith("ok_")]:
        log.info("  %s holds for %d nets", col[3:], int(df[col].sum()))
    return df
