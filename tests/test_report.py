"""The report stage: the stage-time tables from Snakemake's benchmark files, the
tables rendered one job per section, and the front page (deployed net + scenarios) at the top of
``snakemake --report``."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys

import pandas as pd
import pytest

from conftest import REPO, TINY, copy_pipeline

from tinyevo.report import render_tables
from tinyevo.report.stage_times import job_times, main, stage_table, stage_times, to_markdown, write_stage_times
from tinyevo.report.summary import front_page, page_html, page_rst


# ---------------------------------------------------------------- benchmark files


def write_bench(path, rows):
    """A benchmark TSV written by Snakemake's own writer; rows: (wall s, cpu s, max_rss MB) with
    None for a job that ended before the first sample (Snakemake writes NA)."""
    from snakemake.benchmark import BenchmarkRecord, write_benchmark_records

    recs = []
    for wall, cpu, rss in rows:
        r = BenchmarkRecord(running_time=wall)
        if cpu is not None:
            r.data_collected = True
            r.cpu_time, r.max_rss, r.max_vms, r.max_uss, r.max_pss = cpu, rss, 2 * rss, rss, rss
            r.io_in = r.io_out = None  # no IO counters: Snakemake writes "-"
        else:
            r.process_gone = True
        recs.append(r)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_benchmark_records(recs, str(path), False)
    return path


@pytest.fixture
def bench_dir(tmp_path):
    d = tmp_path / "benchmarks"
    write_bench(d / "report" / "tables_Data.tsv", [(0.4, None, None)])
    write_bench(d / "score" / "shard_1.tsv", [(20.0, 19.0, 300.0)])
    write_bench(d / "score" / "shard_0.tsv", [(10.0, 9.0, 250.0)])
    write_bench(d / "data" / "digits.tsv", [(3.0, 2.0, 400.0)])
    write_bench(d / "train" / "C.tsv", [(100.0, 180.0, 900.0), (120.0, 200.0, 950.0)])  # repeat(2)
    write_bench(d / "extra" / "sub" / "job.tsv", [(1.0, 1.0, 10.0)])
    return d


def test_benchmark_files_are_snakemakes_format(bench_dir):
    text = (bench_dir / "report" / "tables_Data.tsv").read_text().splitlines()
    assert text[0].split("\t")[:3] == ["s", "h:m:s", "max_rss"] and text[0].endswith("cpu_time")
    assert text[1].split("\t")[2] == "NA" and text[1].split("\t")[-1] == "NA"
    assert "-" in (bench_dir / "score" / "shard_0.tsv").read_text().splitlines()[1].split("\t")


def test_job_table(bench_dir):
    jobs = job_times(bench_dir)
    assert list(jobs.columns) == ["stage", "job", "repeats", "wall_s", "cpu_s", "max_rss_mb"]
    # pipeline order of the stages, any unknown stage after them; jobs by name within a stage
    assert list(zip(jobs["stage"], jobs["job"])) == [
        ("data", "digits"), ("score", "shard_0"), ("score", "shard_1"), ("train", "C"), ("report", "tables_Data"),
        ("extra", "sub/job")]
    c = jobs.set_index("job").loc["C"]
    assert c["repeats"] == 2 and c["wall_s"] == pytest.approx(110.0) and c["cpu_s"] == pytest.approx(190.0)
    assert c["max_rss_mb"] == pytest.approx(950.0)
    na = jobs.set_index("job").loc["tables_Data"]
    assert na["wall_s"] == pytest.approx(0.4) and math.isnan(na["cpu_s"]) and math.isnan(na["max_rss_mb"])
    assert len(job_times(bench_dir, exclude=[bench_dir / "train" / "C.tsv"])) == len(jobs) - 1


def test_stage_table(bench_dir):
    jobs, stages = stage_times(bench_dir)
    s = stages.set_index("stage")
    assert list(s.index) == ["data", "score", "train", "report", "extra", "total"]
    assert s.loc["score", "jobs"] == 2 and s.loc["score", "wall_s"] == pytest.approx(30.0)
    assert s.loc["score", "cpu_s"] == pytest.approx(28.0) and s.loc["score", "max_rss_mb"] == pytest.approx(300.0)
    cpu = 2.0 + 28.0 + 190.0 + 1.0
    assert s.loc["train", "cpu_share"] == pytest.approx(190.0 / cpu)
    assert s.drop("total")["cpu_share"].sum() == pytest.approx(1.0)
    # a stage whose only job was never sampled: its wall time counts, CPU and memory are unknown
    assert s.loc["report", "sampled"] == 0 and s.loc["report", "wall_s"] == pytest.approx(0.4)
    assert math.isnan(s.loc["report", "cpu_s"]) and math.isnan(s.loc["report", "cpu_share"])
    t = s.loc["total"]
    assert (t["jobs"], t["sampled"]) == (6, 5) and t["wall_s"] == pytest.approx(3 + 30 + 110 + 0.4 + 1)
    assert t["cpu_s"] == pytest.approx(cpu) and t["max_rss_mb"] == pytest.approx(950.0) and t["cpu_share"] == 1.0
    assert len(stage_table(jobs, total=False)) == len(stages) - 1


def test_markdown_and_cli(bench_dir, capsys):
    md = to_markdown(stage_times(bench_dir)[1])
    lines = md.splitlines()
    assert lines[0] == "| stage | jobs | wall s (sum) | CPU s (sum) | peak RSS MB (one job) | CPU share |"
    assert "| score | 2 | 30.0 | 28.0 | 300 | 12.7 % |" in lines
    assert "| report | 1 (0 sampled) | 0.4 | n/a | n/a | n/a |" in lines
    assert lines[-1] == "| **total** | **6 (5 sampled)** | **144.4** | **221.0** | **950** | **100.0 %** |"
    assert main([str(bench_dir)]) == 0
    assert capsys.readouterr().out == md
    assert main([str(bench_dir / "missing")]) == 2
    assert "benchmark folder" in capsys.readouterr().err
    proc = subprocess.run([sys.executable, "-m", "tinyevo.report.stage_times", str(bench_dir)],
                          capture_output=True, text=True, check=True)
    assert proc.stdout == md


def test_write_stage_times(bench_dir, tmp_path):
    out = tmp_path / "out"
    jobs, stages = write_stage_times(bench_dir, out / "s.parquet", out / "j.parquet", out / "s.html", out / "j.html")
    pd.testing.assert_frame_equal(pd.read_parquet(out / "s.parquet"), stages)
    pd.testing.assert_frame_equal(pd.read_parquet(out / "j.parquet"), jobs)
    assert "<td>shard_1</td>" in (out / "j.html").read_text()


@pytest.mark.parametrize("content, message", [
    ("s\th:m:s\tmax_rss\n1.0\t0:00:01\t10\n", "lacks the column(s) ['cpu_time']"),
    ("s\th:m:s\tmax_rss\tcpu_time\n", "has a header but no row"),
    ("s\th:m:s\tmax_rss\tcpu_time\n1.0\t0:00:01\tlots\t1.0\n", "column 'max_rss' holds non-numeric value(s) ['lots']"),
    ("s\th:m:s\tmax_rss\tcpu_time\nNA\t0:00:01\t1\t1.0\n", "wall time column 's' is missing"),
    ("", "is empty"),
])
def test_bad_benchmark_file(tmp_path, content, message):
    p = tmp_path / "b" / "train" / "C.tsv"
    p.parent.mkdir(parents=True)
    p.write_text(content)
    with pytest.raises(ValueError) as exc:
        job_times(tmp_path / "b")
    assert message in str(exc.value) and str(p) in str(exc.value)


def test_no_benchmark_files(tmp_path):
    (tmp_path / "b").mkdir()
    with pytest.raises(ValueError, match="no benchmark files"):
        job_times(tmp_path / "b")
    write_bench(tmp_path / "c" / "loose.tsv", [(1.0, 1.0, 1.0)])
    with pytest.raises(ValueError, match="not in a stage folder"):
        job_times(tmp_path / "c")


def test_render_tables(tmp_path):
    pd.DataFrame({"a": [1, 2, 3]}).to_parquet(tmp_path / "one.parquet")
    pd.DataFrame({"b": [0.5]}).to_parquet(tmp_path / "two.parquet")
    rows = render_tables({"t_one": tmp_path / "one.parquet", "t_two": tmp_path / "two.parquet"}, tmp_path / "sec",
                         {"t_one": "first table"})
    assert rows == {"t_one": 3, "t_two": 1}
    assert "<h3>first table</h3>" in (tmp_path / "sec" / "t_one.html").read_text()
    assert "<h3>t two</h3>" in (tmp_path / "sec" / "t_two.html").read_text()


# ---------------------------------------------------------------- front page

ARCH = "r1e1c016-r4e7c016-r4e6c024-r4e6c024-r5e6c064-r2e1c128-r1e6c128"


def tables(measured=True, step=0):
    choice = pd.DataFrame({"net": ["C", "NC"], "arch": [ARCH, "r1e1c016"], "source": ["final_round"] * 2,
                           "val_acc": [0.9333, 0.95]})
    compress = pd.DataFrame({"net": ["C"] * 3, "model": ["baseline_float", "pruned_float", "pruned_int8_fe"],
                             "step": [0, step, step], "test_acc": [0.969444, 0.9611, 0.966667],
                             "feature_size": [1280] + [1024 if step else 1280] * 2,
                             "params": [733514] + [600000 if step else 733514] * 2})
    nan = float("nan")
    m = (lambda v: v) if measured else (lambda v: nan)
    memory = pd.DataFrame([
        ("net_bytes", "budget", 947244.0, nan), ("buffer_used", "ram", 101199.0, m(101199.0)),
        ("n_samples", "count", 79.0, nan), ("ram_bytes", "ram", 222619.0, m(222708.0)),
        ("flash_constants", "flash", 877064.0, nan), ("flash_bytes", "flash", nan, m(892895.0)),
    ], columns=["term", "region", "predicted", "measured"])
    scen = {
        "concept_drift": ("C", pd.DataFrame({"variant": ["tybox", "tinyol", "float"], "repetitions": [5] * 3,
                                             "capacity": [79, 1, 79], "final_mean": [0.957, 0.959, 0.9591],
                                             "final_std": [0.015248, 0.015166, 0.016355]})),
        "incremental": ("C-inc", pd.DataFrame({"variant": ["tybox", "tinyol", "float"], "repetitions": [5] * 3,
                                               "capacity": [79, 1, 79], "final_mean": [0.897, 0.86, 0.895],
                                               "final_std": [0.013, 0.04, 0.017],
                                               "final_new_mean": [0.72, 0.525, 0.7204],
                                               "final_old_mean": [0.941, 0.944, 0.939]})),
        "transfer": ("C-src", pd.DataFrame({"variant": ["tybox", "tinyol", "float"], "repetitions": [5] * 3,
                                            "capacity": [99, 1, 99], "final_mean": [0.646, 0.463, 0.643],
                                            "final_std": [0.021909, 0.059854, 0.012042]})),
    }
    return choice, compress, memory, scen


DEVICE = {"ram_bytes": 1048576, "flash_bytes": None, "min_buffer_samples": 20}


def rst_to_html(text: str) -> str:
    """docutils, as Snakemake renders the report's front text; any warning is an error."""
    from docutils.core import publish_parts

    return publish_parts(text, writer="html", settings_overrides={"halt_level": 2, "report_level": 2})["body"]


def test_front_page_lines():
    page = front_page(*tables(), DEVICE, "total")
    rst = page_rst(page)
    lines = rst.splitlines()
    assert lines[0] == ("**Deployed net C**: 733,514 parameters, unpruned, F = 1280 features; chosen by the "
                        "short-training final round, validation accuracy 93.3 %")
    assert f"* architecture ``{ARCH}``" in lines
    assert ("* test accuracy: float **96.9 %**, int8 feature extractor + float classifier **96.7 %**") in lines
    assert "* flash: **892,895 B** (compiled object; no ``device.flash_bytes`` set)" in lines
    assert ("* RAM: **222,708 B** (static RAM of the compiled code) of 1,048,576 B ``device.ram_bytes`` (21.2 %); "
            "TyBox budget ``tybox.accounting = total``: net + buffer 1,048,443 B (100.0 %)") in lines
    assert "* on-device buffer: **79 samples** (``device.min_buffer_samples`` = 20)" in lines
    assert "**On-device learning, final accuracy (mean ± std over 5 repetitions)**" in lines
    thesis = "; thesis (CIFAR-10, its own net and longer streams), "
    assert ("* **concept drift** (net C, buffer 79): TyBox **95.7 %** ± 1.5, TinyOL 95.9 % ± 1.5, "
            "float 95.9 % ± 1.6" + thesis + "TyBox 65.8 % ± 1.9, TinyOL 61.3 % ± 1.4, float 77.8 % ± 0.7") in lines
    # incremental learning: the new classes' final accuracy per learner, and the thesis's (it gives only those)
    assert ("* **incremental** (net C-inc, buffer 79): TyBox **89.7 %** ± 1.3 (new classes 72.0 %), "
            "TinyOL 86.0 % ± 4.0 (new classes 52.5 %), float 89.5 % ± 1.7 (new classes 72.0 %)"
            + thesis + "new classes: TyBox 35.3-46.4 %, TinyOL 24.3 %") in lines
    assert ("* **transfer** (net C-src, buffer 99): TyBox **64.6 %** ± 2.2, TinyOL 46.3 % ± 6.0, float 64.3 % ± 1.2"
            + thesis + "TyBox 32.0-38.1 %, TinyOL 2.1 % ± 2.0, float 50.5 % ± 9.2") in lines
    body = rst_to_html(rst)
    assert f'<span class="pre">{ARCH}</span>' in body and "<strong>96.7 %</strong>" in body
    html = page_html(page)
    assert f"<code>{ARCH}</code>" in html and "<b>79 samples</b>" in html and html.count("<li>") == 8
    assert not any("on the target" in x for x in lines)  # no target table: no target line


def test_front_page_gives_the_mean_accuracy_after_the_change_where_the_summary_has_it():
    choice, compress, memory, scen = tables()
    scen["incremental"][1]["after_change_mean"] = [0.855, 0.8401, 0.8549]
    scen["transfer"][1]["after_change_mean"] = [0.646, 0.547, float("nan")]  # float: not in the line
    lines = page_rst(front_page(choice, compress, memory, scen, DEVICE, "total")).splitlines()
    inc = next(x for x in lines if x.startswith("* **incremental**"))
    assert ("TinyOL 86.0 % ± 4.0 (new classes 52.5 %), float 89.5 % ± 1.7 (new classes 72.0 %); mean after the "
            "change: TyBox 85.5 %, TinyOL 84.0 %, float 85.5 %; thesis") in inc
    tr = next(x for x in lines if x.startswith("* **transfer**"))
    assert "float 64.3 % ± 1.2; mean over the stream: TyBox 64.6 %, TinyOL 54.7 %; thesis" in tr
    drift = next(x for x in lines if x.startswith("* **concept drift**"))
    assert "mean" not in drift  # no after_change column: the line as before


def test_front_page_target_line():
    target = pd.DataFrame([{"target": "cortex-m4f", "instructions_inference": 12_345_678.0,
                            "instructions_per_mac": 19.25, "instructions_train_step": 4_560_000.0}])
    lines = page_rst(front_page(*tables(), DEVICE, "total", target=target)).splitlines()
    assert ("* on the target ``cortex-m4f`` (emulated, QEMU ``-icount``; an instruction count, not cycles): "
            "**12.35 M instructions per inference** (19.2 per MAC), 4.56 M per training step over the full buffer") \
        in lines
    target["instructions_estimated"] = 12_000_000.0
    lines = page_rst(front_page(*tables(), DEVICE, "total", target=target)).splitlines()
    assert ("* on the target ``cortex-m4f`` (emulated, QEMU ``-icount``; an instruction count, not cycles): "
            "**12.35 M instructions per inference** (19.2 per MAC; the search's per-layer estimate 12.00 M, -2.8 %), "
            "4.56 M per training step over the full buffer") in lines
    host = pd.DataFrame([{"target": "host", "instructions_inference": float("nan"),
                          "instructions_per_mac": float("nan"), "instructions_train_step": float("nan")}])
    assert not any("on the target" in x for x in page_rst(front_page(*tables(), DEVICE, "total", target=host)).splitlines())


def test_front_page_budget_predicted_and_pruned():
    page = front_page(*tables(measured=False, step=2), {**DEVICE, "flash_bytes": 2_000_000}, "ram")
    lines = page_rst(page).splitlines()
    assert lines[0].startswith("**Deployed net C**: 600,000 parameters, pruning step 2, F = 1024 features")
    assert "* test accuracy: float **96.9 %**, pruned float 96.1 %, int8 feature extractor + float classifier " \
           "**96.7 %**" in lines
    assert "* flash: **877,064 B** (model constants, predicted) of 2,000,000 B ``device.flash_bytes`` (43.9 %)" in lines
    assert any(x.startswith("* RAM: **222,619 B** (static RAM, predicted)") and "``tybox.accounting = ram``" in x
               for x in lines)
    rst_to_html(page_rst(page))


def test_front_page_bad_tables():
    choice, compress, memory, scen = tables()
    with pytest.raises(ValueError, match=r"choice table: expected one row with net == 'C', found 0"):
        front_page(choice[choice["net"] != "C"], compress, memory, scen, DEVICE, "total")
    with pytest.raises(ValueError, match="TyBox memory table: expected one row with term == 'n_samples'"):
        front_page(choice, compress, memory[memory["term"] != "n_samples"], scen, DEVICE, "total")
    # a scenario without the float variant (scenarios.variants) shows the variants it has
    scen["transfer"] = ("C-src", scen["transfer"][1].iloc[:2])
    lines = page_rst(front_page(choice, compress, memory, scen, DEVICE, "total")).splitlines()
    assert any(x.startswith("* **transfer** (net C-src, buffer 99): TyBox **64.6 %** ± 2.2, TinyOL 46.3 % ± 6.0; "
                            "thesis") for x in lines)
    # a scenario the thesis did not run has no thesis figures
    scen = {"my_drift": scen["concept_drift"]}
    lines = page_rst(front_page(choice, compress, memory, scen, DEVICE, "total")).splitlines()
    assert ("* **my drift** (net C, buffer 79): TyBox **95.7 %** ± 1.5, TinyOL 95.9 % ± 1.5, "
            "float 95.9 % ± 1.6") in lines


# ---------------------------------------------------------------- in the pipeline (shared TINY run)


@pytest.mark.slow
def test_stage_times_cover_every_job(tiny_pipeline):
    r = tiny_pipeline / "results"
    tsv = sorted(p.relative_to(r / "benchmarks").with_suffix("").as_posix() for p in (r / "benchmarks").rglob("*.tsv"))
    jobs = pd.read_parquet(r / "report/job_times.parquet")
    # every job of the run wrote its benchmark before the stage-time job read them (it has none itself)
    assert sorted(jobs["stage"] + "/" + jobs["job"]) == tsv
    assert {"report/summary", f"score/shard_1-of-{TINY['scoring']['shards']}", "tybox/C"} <= set(tsv)
    # the tables of the report: one job per section, not one per table
    sections = sorted(p.name for p in (r / "report/tables").iterdir() if p.name != "Performance")
    assert sorted(t for t in tsv if t.startswith("report/tables_")) == [f"report/tables_{s}" for s in sections]
    assert len(list((r / "report/tables").rglob("*.html"))) > 3 * len(sections)
    stages = pd.read_parquet(r / "report/stage_times.parquet")
    assert stages["stage"].iloc[-1] == "total" and stages["jobs"].iloc[-1] == len(tsv)


@pytest.mark.slow
def test_report_opens_with_the_front_page(tiny_pipeline, tmp_path, snakemake_run):
    work = copy_pipeline(tiny_pipeline, tmp_path / "work")
    snakemake_run(work, work / "config.yaml", ["--report", "results/report.html"])
    html = (work / "results/report.html").read_text(errors="replace")
    desc = json.loads(re.search(r"var workflow_desc = (\".*?\");\n", html).group(1))
    arch = pd.read_parquet(work / "results/evolution/choice.parquet").set_index("net").loc["C", "arch"]
    n_b = int(pd.read_parquet(work / "results/tybox/C/memory.parquet").set_index("term").loc["n_samples", "predicted"])
    first = desc.index("Deployed net C")
    assert first < desc.index("tinyevo run on dataset") < desc.index("Sections")
    assert desc.index(arch) > first and f"{n_b} samples" in desc
    for s in TINY["scenarios"]["names"]:
        assert s.replace("_", " ") in desc[:desc.index("tinyevo run on dataset")], s
    target = pd.read_parquet(work / "results/tybox/C/target.parquet").iloc[0]
    if target["target"] != "host":  # the Cortex-M4F build's instruction count is on the front page
        assert f"{target['instructions_inference'] / 1e6:.2f} M instructions per inference" in desc[:first + 3000]
    for name in ("summary.html", "stage_times.html", "job_times.html", "data_stats.html", "tybox_memory.html",
                 "tybox_target.html"):
        assert name in html, name
    # each table keeps its own caption (one job renders a whole section)
    assert "Per-channel mean and standard deviation" in html and "The memory model of the generated C++" in html

