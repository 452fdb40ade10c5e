"""The pipeline on a real one-node SLURM (Debian's slurm-wlm 22.05 + munge) through profiles/slurm.

tests/slurm/slurm_up.sh installs the packages when missing, writes /etc/slurm/slurm.conf and
starts munged, slurmctld and slurmd with pid files in a temporary directory;
tests/slurm/slurm_down.sh stops exactly those processes. The test runs the same tiny config
locally and through SLURM, checks that every non-local job was its own sbatch job that completed,
and that both runs wrote the same tables. It skips, with the reason, where the machine cannot
host a SLURM (not root, no apt-get, no network for the packages, a real cluster's slurm.conf).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from ruamel.yaml import YAML

from conftest import REPO, run_snakemake, write_yaml

SLURM_DIR = REPO / "tests" / "slurm"
PROFILE = REPO / "profiles" / "slurm" / "config.yaml"

# What the SLURM run builds. Widen this (up to "all") as the stages come in; the whole test
# should stay under ~5 minutes on 2 cores.
TARGETS = (
    "results/data/digits/manifest.parquet",
    "results/space/candidates.parquet",
    "results/rank/initial.parquet",  # via scoring.shards score_shard jobs and score_gather
)

# Columns that measure time and so differ between any two runs.
TIMING_COLUMN = re.compile(r"(^|_)(seconds|secs|time|duration|elapsed|wall|timestamp)(_|s?$)")
# Not compared file by file: logs differ between runs; the score cache's part files have random
# names (its rows are compared instead). Tables and arrays are compared value by value, other
# outputs (models, plots) must exist in both runs.
SKIP_DIRS = {"logs", "cache"}
SUBMITTED = re.compile(r"Job (\d+) has been submitted with SLURM jobid (\d+)")
JOB_HEADER = re.compile(r"^\s*(local)?rule (\w+):\s*$", re.M)
# The dry-run check of the real profile: rules that must get a GPU, and targets that reach them.
GPU_RULES = ("train", "final_round_train", "validate_net")
DRY_RUN_TARGETS = ("results/rank/initial.parquet", "results/train/C/model.pt",
                   "results/validation/trained.parquet")
LOCAL_LIMIT_MB = 1000  # memory per job on the test node (the profile asks for cluster-sized amounts)
GPU_KEYS = ("gpu", "gres", "gpu_model", "gpus", "tasks_per_gpu")
CLUSTER_KEYS = ("slurm_partition", "slurm_account", "constraint", "qos", "clusters", "cluster",
                "slurm_cluster")


def _sh(script: str, state: Path, timeout: int) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SLURM_DIR / script), str(state)], capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory):
    """A running one-node SLURM; yields its state directory (pid files, logs)."""
    state = tmp_path_factory.mktemp("slurm_state")
    try:
        up = _sh("slurm_up.sh", state, timeout=1200)  # includes apt-get on a fresh machine
    except subprocess.TimeoutExpired:
        _sh("slurm_down.sh", state, timeout=300)
        pytest.fail("slurm_up.sh did not finish within 1200 s")
    if up.returncode == 77:
        _sh("slurm_down.sh", state, timeout=300)
        lines = [ln for ln in up.stdout.splitlines() if ln.startswith("SKIP:")]
        pytest.skip(f"no local SLURM: {lines[-1][5:].strip() if lines else up.stdout.strip()}")
    if up.returncode != 0:
        _sh("slurm_down.sh", state, timeout=300)
        pytest.fail(f"slurm_up.sh failed ({up.returncode}):\n{up.stdout}\n{up.stderr}")
    try:
        yield state
    finally:
        down = _sh("slurm_down.sh", state, timeout=300)
        assert down.returncode == 0, f"slurm_down.sh failed:\n{down.stdout}\n{down.stderr}"
        for name in ("munged", "slurmctld", "slurmd"):
            assert not (state / f"{name}.pid").exists(), f"{name} still has a pid file after teardown"


def test_profiles_parse_and_name_known_options():
    """Both profiles are YAML mappings of Snakemake options the installed version accepts."""
    help_text = subprocess.run([sys.executable, "-m", "snakemake", "--help"], capture_output=True,
                               text=True, timeout=120).stdout
    for path in (PROFILE, REPO / "profiles" / "default" / "config.yaml"):
        prof = YAML(typ="safe", pure=True).load(path.read_text())
        assert isinstance(prof, dict) and prof, path
        for key in prof:
            assert f"--{key}" in help_text, f"{path}: '{key}' is not an option of this snakemake"
    prof = YAML(typ="safe", pure=True).load(PROFILE.read_text())
    assert prof["executor"] == "slurm"
    for key in ("slurm_partition", "mem_mb", "runtime"):
        assert key in prof["default-resources"], f"default-resources lacks {key}"


def _dry_run_resources(text: str) -> list[tuple[str, dict]]:
    """(rule, resources) of every job in a dry run's output."""
    jobs = []
    for block in re.split(r"\n(?=\S)", text):
        m = re.match(r"(?:local)?rule (\w+):\n", block)
        r = re.search(r"^\s+resources: (.*)$", block, re.M)
        if m and r:
            jobs.append((m.group(1), dict(kv.split("=", 1) for kv in r.group(1).split(", "))))
    return jobs


@pytest.mark.slow
def test_slurm_profile_routes_jobs(make_config, tmp_path):
    """A dry run through profiles/slurm: training and proxy validation ask for a GPU on the GPU
    partition, every other job gets the CPU partition, scoring is one job per shard, and every
    rule the profile names exists in the workflow."""
    cfg, cfg_path = make_config({"compute": {"device": "auto"}})
    prof = YAML(typ="safe", pure=True).load(PROFILE.read_text())
    rules = _rule_names(tmp_path / "dry", cfg_path)
    unknown = sorted(set(prof.get("set-resources", {})) - set(rules))
    assert not unknown, f"profiles/slurm sets resources of rules the workflow lacks: {unknown}"

    run = run_snakemake(tmp_path / "dry", cfg_path, DRY_RUN_TARGETS, timeout=300,
                        extra=["-n", "--profile", str(PROFILE.parent), "--workflow-profile", "none"])
    jobs = _dry_run_resources(run.stdout + run.stderr)
    assert jobs, f"no jobs in the dry run:\n{run.stdout[-3000:]}"
    cpu_partition = str(prof["default-resources"]["slurm_partition"])
    seen = Counter()
    for rule, res in jobs:
        seen[rule] += 1
        if rule in GPU_RULES:
            assert res.get("gpu") == "1", f"{rule} does not ask for a GPU: {res}"
            assert res.get("slurm_partition") == str(prof["set-resources"][rule]["slurm_partition"])
            assert res["slurm_partition"] != cpu_partition, f"{rule} is not sent to a GPU partition"
        elif rule in prof.get("set-resources", {}):
            continue
        else:
            assert res.get("slurm_partition") == cpu_partition, f"{rule}: {res}"
            assert res.get("gpu", "0") == "0", f"{rule} asks for a GPU: {res}"
    assert set(GPU_RULES) <= set(seen), f"dry run lacks {set(GPU_RULES) - set(seen)}"
    assert seen["score_shard"] == cfg["scoring"]["shards"]


def _test_profile(dst: Path, rules: list[str]) -> Path:
    """profiles/slurm adapted to the test node: partition debug, no account, no GPU, small memory,
    squeue status checks (no slurmdbd) that start after 1 s."""
    prof = YAML(typ="safe", pure=True).load(PROFILE.read_text())
    dres = dict(prof["default-resources"])
    for key in CLUSTER_KEYS:
        dres.pop(key, None)
    dres["slurm_partition"] = "debug"
    dres["mem_mb"] = min(int(dres["mem_mb"]), LOCAL_LIMIT_MB)
    sres = {}
    for rule in rules:
        res = {k: v for k, v in prof.get("set-resources", {}).get(rule, {}).items()
               if k not in GPU_KEYS + CLUSTER_KEYS}
        # No GPU here (rules declare gpu=1 themselves), and the rules' own memory requests may
        # exceed a small test machine (memory is not enforced without cgroups anyway).
        res.update(gpu=0, mem_mb=LOCAL_LIMIT_MB)
        sres[rule] = res
    prof.update({
        "default-resources": dres,
        "set-resources": sres,
        "slurm-status-command": "squeue",
        "slurm-init-seconds-before-status-checks": 1,
        "slurm-no-account": True,
        "slurm-keep-successful-logs": True,
        "max-threads": len(os.sched_getaffinity(0)),  # the node has `nproc` CPUs
        "latency-wait": 10,
        "retries": 0,
        "keep-going": False,
    })
    write_yaml(dst / "config.yaml", prof)
    return dst


def _rule_names(workdir: Path, cfg_path: Path) -> list[str]:
    """Every rule of the workflow (`snakemake --list-rules`: 'name (docstring)', a docstring of
    several lines continuing on indented lines)."""
    out = run_snakemake(workdir, cfg_path, extra=["--list-rules"], timeout=300).stdout
    return [m.group(1) for m in re.finditer(r"^(\w+)(?: \(|$)", out, re.M)]


def _job_stats(text: str) -> Counter:
    """Snakemake's 'Job stats' table (rule -> count) from a run's output."""
    m = re.search(r"Job stats:\n\s*job\s+count\n\s*-+\s+-+\n(.*?)\n\s*total\s+(\d+)", text, re.S)
    assert m, f"no job stats in snakemake output:\n{text[-3000:]}"
    stats = Counter()
    for line in m.group(1).splitlines():
        name, count = line.split()
        stats[name] = int(count)
    assert sum(stats.values()) == int(m.group(2))
    return stats


def _squeue_jobs() -> dict[str, tuple[str, str]]:
    """SLURM job id -> (comment, state) for every job the controller still remembers."""
    out = subprocess.run(["squeue", "-t", "all", "-h", "-o", "%i|%k|%T"], capture_output=True,
                         text=True, timeout=60, check=True).stdout
    jobs = {}
    for line in out.splitlines():
        jobid, comment, state = line.strip().split("|")
        jobs[jobid] = (comment, state)
    return jobs


def _cache_rows(root: Path) -> pd.DataFrame | None:
    parts = sorted((root / "results" / "cache").rglob("*.parquet"))
    if not parts:
        return None
    df = pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)
    df = df.drop(columns=[c for c in df.columns if TIMING_COLUMN.search(str(c).lower())])
    return df.sort_values(list(df.columns)).reset_index(drop=True)


def _compare_results(local: Path, slurm: Path) -> int:
    """Same result files in both runs; parquet tables and npy arrays equal. Returns the number
    of compared tables/arrays."""
    def files(root):
        return {p.relative_to(root) for p in (root / "results").rglob("*")
                if p.is_file() and not SKIP_DIRS & set(p.relative_to(root).parts)}
    lf, sf = files(local), files(slurm)
    # The score cache's part files have random names: compare its rows instead.
    la, sa = _cache_rows(local), _cache_rows(slurm)
    if la is not None or sa is not None:
        assert la is not None and sa is not None, "score cache in one run only"
        pd.testing.assert_frame_equal(la, sa, check_exact=True, obj="results/cache/scores")
    assert lf == sf, f"different outputs: only local {sorted(lf - sf)}, only slurm {sorted(sf - lf)}"
    compared = 0
    for rel in sorted(lf):
        if rel.suffix == ".parquet":
            a, b = pd.read_parquet(local / rel), pd.read_parquet(slurm / rel)
            timing = [c for c in a.columns if TIMING_COLUMN.search(str(c).lower())]
            pd.testing.assert_frame_equal(a.drop(columns=timing), b.drop(columns=timing, errors="ignore"),
                                          check_exact=True, obj=str(rel))
            compared += 1
        elif rel.suffix == ".npy":
            a, b = np.load(local / rel), np.load(slurm / rel)
            assert a.dtype == b.dtype and np.array_equal(a, b), f"{rel} differs"
            compared += 1
    return compared


@pytest.mark.slow
@pytest.mark.slurm
def test_pipeline_on_slurm_matches_local_run(slurm_cluster, make_config, tmp_path):
    _, cfg_path = make_config()
    local_dir, slurm_dir = tmp_path / "local", tmp_path / "slurm"

    rules = _rule_names(local_dir, cfg_path)
    profile = _test_profile(tmp_path / "profile", rules)

    # The local reference run goes side by side with the SLURM run, which mostly waits.
    def timed(*args, **kwargs):
        t0 = time.monotonic()
        proc = run_snakemake(*args, **kwargs)
        return proc, time.monotonic() - t0

    with ThreadPoolExecutor(2) as pool:
        local_f = pool.submit(timed, local_dir, cfg_path, TARGETS, timeout=900)
        slurm_f = pool.submit(timed, slurm_dir, cfg_path, TARGETS, timeout=900,
                              extra=["--profile", str(profile), "--workflow-profile", "none"])
        local, t_local = local_f.result()
        run, t_slurm = slurm_f.result()
    stats = _job_stats(local.stdout + local.stderr)
    text = run.stdout + run.stderr
    (tmp_path / "snakemake_local.log").write_text(local.stdout + local.stderr)
    (tmp_path / "snakemake_slurm.log").write_text(text)
    print(f"local run {t_local:.1f} s, SLURM run {t_slurm:.1f} s")

    # Which jobs Snakemake ran where: 'localrule X:' runs in the main process, 'rule X:' is a job.
    headers = JOB_HEADER.findall(text)
    local_rules = {name for is_local, name in headers if is_local}
    remote = Counter(name for is_local, name in headers if not is_local)
    assert remote, f"no job was sent to SLURM:\n{text[-3000:]}"
    expected = Counter({r: n for r, n in stats.items() if r not in local_rules})
    assert remote == expected, f"jobs sent to SLURM {dict(remote)} != jobs of the local run {dict(expected)}"

    # Every job was its own sbatch job, and SLURM saw each complete under that job's rule.
    submitted = SUBMITTED.findall(text)
    assert len(submitted) == sum(remote.values()), f"{len(submitted)} sbatch submissions for {remote}"
    slurm_ids = [sid for _, sid in submitted]
    assert len(set(slurm_ids)) == len(slurm_ids), "two jobs share one SLURM job id"
    known = _squeue_jobs()
    ran = Counter()
    for sid in slurm_ids:
        assert sid in known, f"SLURM job {sid} unknown to slurmctld"
        comment, state = known[sid]
        assert state == "COMPLETED", f"SLURM job {sid} ({comment}) ended {state}"
        m = re.fullmatch(r"rule_(\w+?)(_wildcards_.*)?", comment)
        assert m, f"unexpected job comment {comment!r}"
        ran[m.group(1)] += 1
    assert ran == remote, f"rules of the completed SLURM jobs {dict(ran)} != {dict(remote)}"

    assert _compare_results(local_dir, slurm_dir) >= len(TARGETS)
