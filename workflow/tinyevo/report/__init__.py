"""Report helpers: every Parquet table of the run rendered as an HTML table for Snakemake's
report (``snakemake --report results/report.html``); the front page (:mod:`.summary`) and the
stage-time tables from the benchmark files (:mod:`.stage_times`)."""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from tinyevo.io import atomic_write_text, read_parquet

_CSS = """<style>
body{font-family:sans-serif;font-size:13px;margin:1em}
table{border-collapse:collapse}th,td{border:1px solid #ccc;padding:2px 6px;text-align:right}
th{background:#eee}caption{caption-side:top;text-align:left;font-weight:bold;padding:4px 0}
</style>"""


def _cell(v: Any) -> Any:
    if isinstance(v, (list, tuple, np.ndarray)):
        return "[" + ", ".join(str(x) for x in v) + "]"
    return v


def table_html(df: pd.DataFrame, title: str, max_rows: int = 2000) -> str:
    """A self-contained HTML page with ``df`` (floats to 4 significant digits)."""
    n = len(df)
    shown = df.head(max_rows).map(_cell) if n else df
    note = f"{n} rows" if n <= max_rows else f"first {max_rows} of {n} rows (the full table is the Parquet file)"
    body = shown.to_html(index=False, float_format=lambda x: f"{x:.4g}", na_rep="NaN", border=0)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>{_CSS}"
            f"</head><body><h3>{html.escape(title)}</h3><p>{note}, {len(df.columns)} columns</p>{body}</body></html>")


def render_table(parquet_path: str, out_html: str, title: str, max_rows: int = 2000) -> int:
    """Render one Parquet table to ``out_html`` atomically; returns the number of rows."""
    df = read_parquet(parquet_path, f"table for the report ({title})")
    atomic_write_text(out_html, table_html(df, title, max_rows))
    return len(df)


def render_tables(tables: Mapping[str, str], out_dir: str | os.PathLike, titles: Mapping[str, str] | None = None,
                  max_rows: int = 2000) -> dict[str, int]:
    """Render every ``name -> Parquet path`` of ``tables`` to ``out_dir/<name>.html`` in one
    process (one report section per job); returns name -> rows."""
    titles = titles or {}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return {name: render_table(path, out / f"{name}.html", titles.get(name, name.replace("_", " ")), max_rows)
            for name, path in tables.items()}
