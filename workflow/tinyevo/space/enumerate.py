"""The enumerate stage: one row per initial net with its arch string, genes, measures and
constraint flags (``results/space/candidates.parquet``).

Columns: index, arch, repeats, expansions, channels, params, macs, peak_sram, flash,
feature_size, min_stage_width, device_bytes (when ``constraints.fit_device``), then the flags of
:class:`tinyevo.space.constraints.Constraints`: ok_<limit>..., ok_device, ok_<guard>...,
within_limits, trainable, feasible.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Mapping

import pandas as pd

from tinyevo.space.constraints import Constraints, as_constraints
from tinyevo.space.spec import SearchSpace

log = logging.getLogger("tinyevo.space")


def candidates_table(space: SearchSpace, constraints: Constraints | Mapping[str, Any]) -> pd.DataFrame:
    cons = as_constraints(constraints)
    cons.check_space(space)
    rows = []
    for idx, genes in space.initial_population():
        rows.append({
            "index": idx,
            "arch": space.encode(genes),
            "repeats": list(genes.repeats),
            "expansions": list(genes.expansions),
            "channels": list(genes.channels),
            **cons.measure(space.netspec(genes)),
        })
    if not rows:
        raise ValueError("the configured search space produced no nets (config key 'search_space.population')")
    df = pd.DataFrame(rows).sort_values("index", kind="stable").reset_index(drop=True)
    for col in ("index", *cons.measure_columns):
        df[col] = df[col].astype("int64")
    if df["arch"].duplicated().any():
        dup = df.loc[df["arch"].duplicated(), "arch"].iloc[0]
        raise ValueError(f"config key 'search_space.population': net {dup} appears more than once")
    return cons.add_flags(df)


def enumerate_stage(search_space_cfg: Mapping[str, Any], constraints: Mapping[str, Any], out_path: str,
                    device: Mapping[str, Any] | None = None, accounting: str = "total",
                    instruction_target: str | None = None) -> pd.DataFrame:
    """Enumerate, measure and flag the initial population -> ``out_path``. ``device`` (the
    ``device:`` section) and ``accounting`` (``tybox.accounting``) serve ``constraints.fit_device``,
    ``instruction_target`` (``tybox.target``) ``constraints.max_instructions``."""
    from tinyevo.io import write_parquet

    cons = Constraints.from_config(constraints, device, accounting, instruction_target)  # bad values fail first
    space = SearchSpace.from_config(search_space_cfg)
    t0 = time.perf_counter()
    df = candidates_table(space, cons)
    dt = time.perf_counter() - t0
    write_parquet(df, out_path)
    n, nf = len(df), int(df["feasible"].sum())
    log.info("%d nets enumerated (%s mode) in %.2f s (%.2f ms per net), %d feasible (%.1f %%) under %s", n,
             space.population_mode, dt, 1000 * dt / n, nf, 100.0 * nf / n, cons.describe())
    for col in [c for c in df.columns if c.startswith("ok_")] + ["within_limits", "trainable"]:
        log.info("  %s holds for %d nets", col[3:] if col.startswith("ok_") else col, int(df[col].sum()))
    if nf == 0:
        log.warning("no net of the initial population is feasible under %s; the evolution may still find one, "
                    "else it stops with an error", cons.describe())
    return df
