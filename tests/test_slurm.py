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
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from ruamel.yaml import YAML

from conftest import REPO, run_snakemake, write_yaml

pytestmark = [pytest.mark.slow, pytest.mark.slurm]

SLURM_DIR = REPO / "tests" / "slurm"
PROFILE = REPO / "profiles" / "slurm" / "config.yaml"

# What the SLURM run builds. Widen this (up to "all") as the stages come in; the whole test
# should stay under ~5 minutes on 2 cores.
TARGETS = (
    "results/data/digits/manifest.parquet",
    "results/space/candidates.parquet",
)

# Columns that measure time and so differ between any two runs.
TIMING_COLUMN = re.compile(r"(^|_)(seconds|secs|time|duration|elapsed|wall|timestamp)(_|s?$)")
# Only tables and arrays are compared value by value; other outputs (models, plots) must exist
# in both runs.
SUBMITTED = re.compile(r"Job (\d+) has been submitted with SLURM jobid (\d+)")
JOB_HEADER = re.compile(r"^\s*(local)?rule (\w+):\s*$", re.M)
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
    gpu_rules = [r for r, res in prof["set-resources"].items() if any(k in res for k in GPU_KEYS)]
    assert gpu_rules, "no rule in profiles/slurm asks for a GPU"


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
    for rule, res in prof.get("set-resources", {}).items():
        res = {k: v for k, v in res.items() if k not in GPU_KEYS + CLUSTER_KEYS}
        if "mem_mb" in res:
            res["mem_mb"] = min(int(res["mem_mb"]), LOCAL_LIMIT_MB)
        sres[rule] = res
    for rule in rules:  # rules declaring gpu=1 themselves must not ask this GPU-less node for one
        sres.setdefault(rule, {})["gpu"] = 0
    prof.update({
        "default-resources": dres,
        "set-resources": {r: res for r, res in sres.items() if res},
        "slurm-status-command": "squeue",
        "slurm-init-seconds-before-status-checks": 1,
        "slurm-no-account": True,
        "slurm-keep-successful-logs": True,
        "max-threads": os.cpu_count() or 1,
        "latency-wait": 10,
        "retries": 0,
        "keep-going": False,
    })
    write_yaml(dst / "config.yaml", prof)
    return dst


def _rule_names(workdir: Path, cfg_path: Path) -> list[str]:
    """Every rule of the workflow (`snakemake --list-rules`: 'name (docstring)' per line)."""
    out = run_snakemake(workdir, cfg_path, extra=["--list-rules"], timeout=300).stdout
    return [m.group(1) for m in re.finditer(r"^(\w+)(?: \(.*\))?$", out, re.M)]


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


def _compare_results(local: Path, slurm: Path) -> int:
    """Same result files in both runs; parquet tables and npy arrays equal. Returns the number
    of compared tables/arrays."""
    def files(root):
        return {p.relative_to(root) for p in (root / "results").rglob("*")
                if p.is_file() and "logs" not in p.relative_to(root).parts}
    lf, sf = files(local), files(slurm)
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


def test_pipeline_on_slurm_matches_local_run(slurm_cluster, make_config, tmp_path):
    _, cfg_path = make_config()
    local_dir, slurm_dir = tmp_path / "local", tmp_path / "slurm"

    rules = _rule_names(local_dir, cfg_path)
    profile = _test_profile(tmp_path / "profile", rules)

    t0 = time.monotonic()
    local = run_snakemake(local_dir, cfg_path, TARGETS, timeout=600)
    t_local = time.monotonic() - t0
    stats = _job_stats(local.stdout + local.stderr)

    t0 = time.monotonic()
    run = run_snakemake(slurm_dir, cfg_path, TARGETS, timeout=600,
                        extra=["--profile", str(profile), "--workflow-profile", "none"])
    t_slurm = time.monotonic() - t0
    text = run.stdout + run.stderr
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
