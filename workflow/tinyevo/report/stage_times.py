"""Where a run's time and memory go: wall time, CPU time and peak memory of every job and every
stage, from Snakemake's benchmark files.

Every rule writes ``benchmark: results/benchmarks/<stage>/<job>.tsv`` (``bench_of`` in
workflow/rules/common.smk). Snakemake's TSV has a header row and one row per repetition with the
columns ``s`` (wall seconds), ``h:m:s``, ``max_rss``, ``max_vms``, ``max_uss``, ``max_pss``
(peak memory of the job's process tree, MB), ``io_in``, ``io_out`` (MB), ``mean_load`` (CPU %)
and ``cpu_time`` (user + system CPU seconds of the process tree). The memory and CPU columns
are ``NA`` when the job ended before Snakemake's first sample (a job faster than the benchmark
interval, typically a local rule) and ``-`` where the OS tracks no IO; both read as NaN.

    from tinyevo.report.stage_times import stage_times, job_times, stage_table, to_markdown
    jobs, stages = stage_times("results/benchmarks")
    # jobs:   stage, job, repeats, wall_s, cpu_s, max_rss_mb   (one row per benchmark file)
    # stages: stage, jobs, sampled, wall_s, cpu_s, max_rss_mb, cpu_share   (+ a "total" row)

    python -m tinyevo.report.stage_times results/benchmarks     # the stage table as Markdown

Per job, with r repetitions (``benchmark: repeat(...)``): wall_s and cpu_s are the means over
the rows, max_rss_mb the maximum. Per stage: wall_s and cpu_s are sums over its jobs (NaN
CPU times skipped; NaN when no job of the stage was sampled), max_rss_mb the largest peak of one
job (jobs of a stage may run at the same time, so this is not the stage's peak use of the
machine), cpu_share = cpu_s / (sum of cpu_s over every stage). ``sampled`` counts the jobs with
CPU and memory figures. Summed wall time is not the run's elapsed time: jobs run in parallel.

The tables show the files on disk: a job's file is rewritten whenever the job runs, and the file
of a job that is no longer in the workflow (fewer score shards after a config change, a renamed
rule) stays until results/benchmarks is removed; time a run from a clean results folder.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

#: the stage folders of results/benchmarks in pipeline order (any other folder sorts after them)
STAGE_ORDER = ("config", "data", "space", "score", "rank", "evolution", "final_round", "train", "validation",
               "compress", "tybox", "scenarios", "report")
#: the benchmark columns read (Snakemake's names) and the job-table columns they become
COLUMNS = {"s": "wall_s", "cpu_time": "cpu_s", "max_rss": "max_rss_mb"}
TOTAL = "total"
JOB_COLUMNS = ["stage", "job", "repeats", "wall_s", "cpu_s", "max_rss_mb"]
STAGE_COLUMNS = ["stage", "jobs", "sampled", "wall_s", "cpu_s", "max_rss_mb", "cpu_share"]


def read_benchmark(path: str | Path) -> dict[str, float]:
    """One Snakemake benchmark TSV -> {repeats, wall_s, cpu_s, max_rss_mb} (means over the
    repetition rows; max_rss_mb their maximum; NaN where Snakemake wrote NA)."""
    p = Path(path)
    try:
        df = pd.read_csv(p, sep="\t", na_values=["NA", "-"], keep_default_na=True, dtype=str)
    except pd.errors.EmptyDataError:
        raise ValueError(f"benchmark file {p} is empty (no header row)") from None
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"benchmark file {p} lacks the column(s) {missing} of Snakemake's benchmark format "
                         f"(columns found: {list(df.columns)})")
    if df.empty:
        raise ValueError(f"benchmark file {p} has a header but no row")
    vals = {}
    for col in COLUMNS:
        try:
            vals[col] = pd.to_numeric(df[col], errors="raise").astype(float)
        except (ValueError, TypeError):
            bad = [v for v in df[col] if isinstance(v, str) and not _is_number(v)]
            raise ValueError(f"benchmark file {p}: column {col!r} holds non-numeric value(s) {bad[:3]} "
                             "(only numbers, NA and - are valid)") from None
    if vals["s"].isna().any():
        raise ValueError(f"benchmark file {p}: the wall time column 's' is missing in a row")
    return {"repeats": int(len(df)), "wall_s": float(vals["s"].mean()),
            "cpu_s": _nanmean(vals["cpu_time"]), "max_rss_mb": _nanmax(vals["max_rss"])}


def _is_number(v: str) -> bool:
    try:
        float(v)
    except ValueError:
        return False
    return True


def _nanmean(s: pd.Series) -> float:
    return float(s.mean()) if s.notna().any() else math.nan


def _nanmax(s: pd.Series) -> float:
    return float(s.max()) if s.notna().any() else math.nan


def _stage_key(stage: str) -> tuple[int, str]:
    return (STAGE_ORDER.index(stage), "") if stage in STAGE_ORDER else (len(STAGE_ORDER), stage)


def job_times(bench_dir: str | Path, exclude: Iterable[str | Path] = ()) -> pd.DataFrame:
    """Every ``<stage>/<job>.tsv`` under ``bench_dir`` (the job name is the path below the
    stage folder without .tsv) -> one row per job, stages in pipeline order, jobs by name.
    ``exclude``: benchmark files to leave out."""
    root = Path(bench_dir)
    if not root.is_dir():
        raise ValueError(f"benchmark folder {root} does not exist (every rule writes "
                         "results/benchmarks/<stage>/<job>.tsv once it has run)")
    skip = {Path(p).resolve() for p in exclude}
    rows = []
    for p in sorted(root.rglob("*.tsv")):
        rel = p.relative_to(root)
        if p.resolve() in skip:
            continue
        if len(rel.parts) < 2:
            raise ValueError(f"benchmark file {p} is not in a stage folder (expected {root}/<stage>/<job>.tsv)")
        rows.append({"stage": rel.parts[0], "job": rel.with_suffix("").relative_to(rel.parts[0]).as_posix(),
                     **read_benchmark(p)})
    if not rows:
        raise ValueError(f"no benchmark files (*.tsv) under {root}")
    df = pd.DataFrame(rows, columns=JOB_COLUMNS)
    order = sorted(range(len(df)), key=lambda i: (_stage_key(df["stage"][i]), df["job"][i]))
    return df.iloc[order].reset_index(drop=True).astype({"repeats": "int64"})


def stage_table(jobs: pd.DataFrame, total: bool = True) -> pd.DataFrame:
    """Per stage (pipeline order): jobs, sampled (jobs with CPU/memory figures), summed wall_s
    and cpu_s, the largest max_rss_mb of one job and cpu_share = cpu_s / total cpu_s; with
    ``total`` a last row ``stage = "total"`` over every job."""
    missing = [c for c in JOB_COLUMNS if c not in jobs.columns]
    if missing:
        raise ValueError(f"job table lacks the column(s) {missing} (make it with job_times)")
    rows = []
    groups = [(s, jobs[jobs["stage"] == s]) for s in sorted(jobs["stage"].unique(), key=_stage_key)]
    if total:
        groups.append((TOTAL, jobs))
    for stage, g in groups:
        sampled = g["cpu_s"].notna()
        rows.append({"stage": stage, "jobs": int(len(g)), "sampled": int(sampled.sum()),
                     "wall_s": float(g["wall_s"].sum()),
                     "cpu_s": float(g["cpu_s"].sum()) if sampled.any() else math.nan,
                     "max_rss_mb": _nanmax(g["max_rss_mb"])})
    df = pd.DataFrame(rows, columns=STAGE_COLUMNS[:-1])
    cpu_total = jobs["cpu_s"].sum() if jobs["cpu_s"].notna().any() else math.nan
    df["cpu_share"] = df["cpu_s"] / cpu_total if cpu_total and cpu_total > 0 else math.nan
    return df.astype({"jobs": "int64", "sampled": "int64"})


def stage_times(bench_dir: str | Path, exclude: Iterable[str | Path] = ()) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(job table, stage table with its total row) of the benchmark files under ``bench_dir``."""
    jobs = job_times(bench_dir, exclude)
    return jobs, stage_table(jobs)


def _cell(v, digits: int) -> str:
    if isinstance(v, (float, np.floating)) and not np.isfinite(v):
        return "n/a"
    return f"{v:,.{digits}f}" if isinstance(v, (float, np.floating)) else str(v)


def to_markdown(stages: pd.DataFrame) -> str:
    """The stage table as a GitHub Markdown table: wall and CPU seconds with one decimal, peak
    memory in MB, the CPU share in percent; n/a where nothing was sampled."""
    head = ["stage", "jobs", "wall s (sum)", "CPU s (sum)", "peak RSS MB (one job)", "CPU share"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    for r in stages.itertuples(index=False):
        share = "n/a" if not np.isfinite(r.cpu_share) else f"{100 * r.cpu_share:.1f} %"
        jobs = f"{r.jobs}" if r.sampled == r.jobs else f"{r.jobs} ({r.sampled} sampled)"
        cells = [r.stage, jobs, _cell(r.wall_s, 1), _cell(r.cpu_s, 1), _cell(r.max_rss_mb, 0), share]
        if r.stage == TOTAL:
            cells = [f"**{c}**" for c in cells]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_stage_times(bench_dir: str | Path, stages_parquet: str | Path, jobs_parquet: str | Path,
                      stages_html: str | Path, jobs_html: str | Path,
                      exclude: Iterable[str | Path] = ()) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The rule ``report_stage_times``: both tables as Parquet and as report HTML (atomic)."""
    from tinyevo.io import atomic_write_text, write_parquet
    from tinyevo.report import table_html

    jobs, stages = stage_times(bench_dir, exclude)
    write_parquet(jobs, jobs_parquet)
    write_parquet(stages, stages_parquet)
    atomic_write_text(stages_html, table_html(stages, "stage times"))
    atomic_write_text(jobs_html, table_html(jobs, "job times"))
    return jobs, stages


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tinyevo.report.stage_times",
                                 description="Per-stage wall time, CPU time and peak memory of a run, from "
                                             "Snakemake's benchmark files, as a Markdown table.")
    ap.add_argument("bench_dir", nargs="?", default="results/benchmarks",
                    help="the run's benchmark folder (default: results/benchmarks)")
    ap.add_argument("--jobs", action="store_true", help="also print the per-job table")
    a = ap.parse_args(argv)
    try:
        jobs, stages = stage_times(a.bench_dir)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(to_markdown(stages))
    if a.jobs:
        sys.stdout.write("\n| stage | job | wall s | CPU s | peak RSS MB |\n|---|---|---:|---:|---:|\n")
        for r in jobs.itertuples(index=False):
            sys.stdout.write(f"| {r.stage} | {r.job} | {_cell(r.wall_s, 1)} | {_cell(r.cpu_s, 1)} | "
                             f"{_cell(r.max_rss_mb, 0)} |\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
