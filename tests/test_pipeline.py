"""The whole TINY pipeline (one shared run, tests/conftest.py): every stage's outputs and logs,
nothing left to do afterwards, and the HTML report with every table and plot."""

import re

import pandas as pd
import pytest

from conftest import TINY, copy_pipeline

pytestmark = pytest.mark.slow


def test_every_stage_produced_its_outputs(tiny_pipeline):
    r = tiny_pipeline / "results"
    for f in ["config.resolved.yaml", "data/digits/train_x.npy", "data/digits/manifest.parquet",
              "data/digits/stats.parquet", "space/candidates.parquet", "scores/initial.parquet",
              "rank/initial.parquet", "rank/spread.parquet", "evolution/history.parquet",
              "evolution/selected.parquet", "evolution/plots/best_avg.png", "train/C/model.pt",
              "train/NC/metrics.parquet", "train/C/curve.png", "validation/correlations.parquet",
              "compress/C/summary.parquet", "compress/C/fe_int8.tflite", "compress/C/size_accuracy.png",
              "tybox/C/memory.parquet", "tybox/C/src/tybox.h"]:
        assert (r / f).is_file() and (r / f).stat().st_size > 0, f
    for s in TINY.get("scenarios", {}).get("names", ["concept_drift", "incremental", "transfer"]):
        summary = pd.read_parquet(r / f"scenarios/{s}/summary.parquet")
        assert set(summary["variant"]) == {"tybox", "tinyol", "float"}, s
        assert (r / f"scenarios/{s}/curves.png").stat().st_size > 1000
    cand = pd.read_parquet(r / "space/candidates.parquet")
    hist = pd.read_parquet(r / "evolution/history.parquet")
    assert len(hist) == len(cand) + TINY["evolution"]["cycles"]


def test_logs_have_headers_and_progress(tiny_pipeline):
    logs = tiny_pipeline / "results" / "logs"
    for rel, words in [("data/digits.log", ["stage data", "digits"]),
                       ("space/enumerate.log", ["stage space", "feasible"]),
                       (f"score/shard_1-of-{TINY['scoring']['shards']}.log", ["proxies", "net/s"]),
                       ("evolution/main.log", ["stage evolution", "it/s"]),
                       ("train/C.log", ["stage train", "device", "batch/s"]),
                       ("compress/C.log", ["stage compress"])]:
        text = (logs / rel).read_text()
        for w in words:
            assert w in text, f"{rel} lacks {w!r}:\n{text[:1500]}"


def test_dry_run_after_full_run_is_empty(tiny_pipeline, snakemake_run):
    proc = snakemake_run(tiny_pipeline, tiny_pipeline / "config.yaml", ["-n"])
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_report_holds_every_table_and_plot(tiny_pipeline, tmp_path, snakemake_run):
    work = copy_pipeline(tiny_pipeline, tmp_path / "work")
    snakemake_run(work, work / "config.yaml", ["--report", "results/report.html"])
    html = (work / "results/report.html").read_text(errors="replace")
    assert len(html) > 100_000
    pngs = sorted(p.name for p in (work / "results").rglob("*.png"))
    tables = sorted(p.stem for p in (work / "results/report/tables").rglob("*.html"))
    assert len(pngs) >= 10 and len(tables) >= 15
    for name in set(pngs) | {f"{t}.html" for t in tables}:
        assert name in html, f"{name} missing from the report"
    for caption_word in ("Pareto front", "change point", "TinyOL", "z-scores"):
        assert caption_word in html, caption_word
    assert re.search(r"tinyevo run on dataset", html)
