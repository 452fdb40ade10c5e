"""The pipeline on a real one-node SLURM (Debian's slurm-wlm 22.05 + munge) through profiles/slurm.

tests/slurm/slurm_up.sh installs the packages when missing, writes /etc/slurm/slurm.conf (two
partitions, `cpu` and `gpu`, on the one node, which announces two GPUs without devices) and
starts munged, slurmctld and slurmd with pid files in a temporary directory;
tests/slurm/slurm_down.sh stops exactly those processes. The test runs the whole tiny pipeline
(`all`, the report included) locally and through SLURM side by side, sabotages three SLURM jobs
while it runs (a training job cancelled with scancel, a final-round training job's processes killed on the
node, a plot job stopped until it runs past its time limit), and checks that the profile's
retries bring the run to the end with the same tables as the local run, that every other job ran
once as its own sbatch job, on the partition profiles/slurm names, with the memory and time limit
of tinyevo.resources, and that the run's report names each failed job. It skips, with the
reason, where the machine cannot host a SLURM (not root, no apt-get, no network for the
packages, a real cluster's slurm.conf).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from ruamel.yaml import YAML

from conftest import MICRO_PIPELINE, REPO, deep_merge, run_snakemake, write_yaml
from tinyevo.config import load_config
from tinyevo.resources import rule_resources, scaled

SLURM_DIR = REPO / "tests" / "slurm"
PROFILE = REPO / "profiles" / "slurm" / "config.yaml"

# The default pipeline, shrunk: the micro search (4 nets of a two-stage 8x8 space), a final round
# of two nets over two rounds for C only (as config/config.yaml; NC then reuses C's training), the
# host TyBox build, one scenario with the TyBox learner (every stage of the default; the other
# scenarios, NC's final round and the tinyol / float learners add jobs of the same rules). The
# proxy validation, off by default, is left out: its GPU job's routing is checked by the dry run of
# test_slurm_profile_routes_jobs, and each SLURM job costs this 2-core test machine about 7 CPU-s.
SLURM_CONFIG = deep_merge(MICRO_PIPELINE, {
    "final_round": {"k": 2, "epochs": [1, 1], "nets": ["C"]},
    "validation": {"enabled": False},
    "tybox": {"target": "host"},
    "scenarios": {"names": ["concept_drift"], "variants": ["tybox"]},
})
TARGETS = ("all",)
RUN_TIMEOUT = 900  # seconds for each run
# The job stopped (SIGSTOP) until SLURM ends it at its time limit: a light job off the critical path,
# given a 1-minute limit at its first attempt (2 at the retry).
TIMEOUT_RULE = "evolve_plots"
CANCEL_RULE = "train"          # scancel of its running job
KILL_RULE = "final_round_train"  # SIGKILL of its job's processes on the node
SABOTAGE = {CANCEL_RULE: "CANCELLED", KILL_RULE: "FAILED", TIMEOUT_RULE: "TIMEOUT"}

# Columns that measure the run (time, CPU seconds, memory: the report's job and stage times) and
# so differ between any two runs.
TIMING_COLUMN = re.compile(r"(^|_)(seconds|secs|time|duration|elapsed|wall|timestamp)(_|s?$)|_s$|(^|_)rss(_|$)|^cpu_share$")
# Not compared file by file: logs differ between runs; the score cache's part files have random
# names (its rows are compared instead). Tables and arrays are compared value by value, other
# outputs (models, plots) must exist in both runs.
SKIP_DIRS = {"logs", "cache"}
SUBMITTED = re.compile(r"Job (\d+) has been submitted with SLURM jobid (\d+)")
# The rules profiles/slurm sends to the GPU partition with one GPU.
GPU_RULES = ("train", "final_round_train", "validate_net")
# Rules that compute nothing (the target, the local rule writing the resolved config): the
# profile's default resources, not tinyevo.resources.
NOT_SIZED = ("all", "resolved_config")
CLUSTER_KEYS = ("slurm_account", "constraint", "qos", "clusters", "cluster", "slurm_cluster")


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


def _job_blocks(text: str) -> list[dict]:
    """Every job block of Snakemake's output ('rule X:' or 'localrule X:' and its indented
    fields), in order: {"rule", "local", "jobid", "wildcards" (dict), "resources" (dict)}."""
    jobs = []
    for block in re.split(r"\n(?=\S)", text):
        m = re.match(r"(local)?rule (\w+):\n", block)
        if not m:
            continue
        fields = dict(re.findall(r"^    (\w+): (.*)$", block, re.M))
        def pairs(key):
            return dict(kv.split("=", 1) for kv in fields[key].split(", ")) if key in fields else {}
        jobs.append({"rule": m.group(2), "local": bool(m.group(1)), "jobid": fields.get("jobid"),
                     "wildcards": pairs("wildcards"), "resources": pairs("resources")})
    return jobs


def _expected(sizes: dict, job: dict, attempt: int = 1) -> dict[str, int]:
    """mem_mb and runtime tinyevo.resources gives the job at ``attempt``."""
    key = job["rule"]
    if key == "final_round_train":
        key = f"final_round_train:{job['wildcards']['round']}"
    return {k: scaled(v, attempt) for k, v in sizes[key].items()}


@pytest.mark.slow
def test_slurm_profile_routes_jobs(make_config, tmp_path):
    """A dry run of the whole pipeline through profiles/slurm: training and proxy validation ask
    for a GPU on the GPU partition, every other job gets the CPU partition, scoring is one job per
    shard, every job shows the memory and time limit tinyevo.resources sizes from the config, and
    every rule the profile names exists in the workflow."""
    cfg, cfg_path = make_config({"compute": {"device": "auto"}})
    prof = YAML(typ="safe", pure=True).load(PROFILE.read_text())
    rules = _rule_names(tmp_path / "dry", cfg_path)
    unknown = sorted(set(prof.get("set-resources", {})) - set(rules))
    assert not unknown, f"profiles/slurm sets resources of rules the workflow lacks: {unknown}"

    run = run_snakemake(tmp_path / "dry", cfg_path, TARGETS, timeout=300,
                        extra=["-n", "--profile", str(PROFILE.parent), "--workflow-profile", "none"])
    jobs = [j for j in _job_blocks(run.stdout + run.stderr) if j["resources"]]
    assert jobs, f"no jobs in the dry run:\n{run.stdout[-3000:]}"
    sizes = rule_resources(cfg)
    cpu_partition = str(prof["default-resources"]["slurm_partition"])
    seen = Counter()
    for job in jobs:
        rule, res = job["rule"], job["resources"]
        seen[rule] += 1
        if rule in GPU_RULES:
            assert res.get("gpu") == "1", f"{rule} does not ask for a GPU: {res}"
            assert res.get("slurm_partition") == str(prof["set-resources"][rule]["slurm_partition"])
            assert res["slurm_partition"] != cpu_partition, f"{rule} is not sent to a GPU partition"
        else:
            assert res.get("slurm_partition") == cpu_partition, f"{rule}: {res}"
            assert res.get("gpu", "0") == "0", f"{rule} asks for a GPU: {res}"
        if rule in NOT_SIZED:
            continue
        shown = {k: int(res[k]) for k in ("mem_mb", "runtime")}
        assert shown == _expected(sizes, job), f"{rule} {job['wildcards']}: {res}"
    assert set(GPU_RULES) <= set(seen), f"dry run lacks {set(GPU_RULES) - set(seen)}"
    assert seen["score_shard"] == cfg["scoring"]["shards"]
    # the sizes follow the config: twice the epochs, a longer limit for training
    more = rule_resources(load_config([cfg_path], overrides={"train": {"epochs": 20 * cfg["train"]["epochs"]}})[0])
    assert more["train"]["runtime"] > sizes["train"]["runtime"]


def _test_profile(dst: Path) -> Path:
    """profiles/slurm on the test cluster: its partitions (named as the test cluster's), GPU
    requests and resources, no account, squeue status checks (no slurmdbd) that start after 1 s,
    the job logs kept, and TIMEOUT_RULE given a limit of 1 minute per attempt."""
    prof = YAML(typ="safe", pure=True).load(PROFILE.read_text())
    dres = {k: v for k, v in prof["default-resources"].items() if k not in CLUSTER_KEYS}
    sres = {rule: {k: v for k, v in res.items() if k not in CLUSTER_KEYS}
            for rule, res in prof.get("set-resources", {}).items()}
    sres.setdefault(TIMEOUT_RULE, {})["runtime"] = "attempt"  # minutes: 1, then 2 at the retry
    prof.update({
        "default-resources": dres,
        "set-resources": sres,
        "slurm-status-command": "squeue",
        "slurm-init-seconds-before-status-checks": 1,
        "slurm-no-account": True,
        "slurm-keep-successful-logs": True,
        "max-threads": len(os.sched_getaffinity(0)),  # the node has `nproc` + 1 CPUs
        "latency-wait": 10,
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


def _squeue_jobs() -> dict[str, dict[str, str]]:
    """SLURM job id -> its comment, state, partition, time limit, memory and GPUs, for every job
    the controller still remembers (MinJobAge)."""
    keys = ("comment", "state", "partition", "time_limit", "min_memory", "tres_per_job")
    fmt = "JobID:|,Comment:400|,State:|,Partition:|,TimeLimit:|,MinMemory:|,tres-per-job:|"
    out = subprocess.run(["squeue", "-t", "all", "-h", "-O", fmt], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    jobs = {}
    for line in out.splitlines():
        jobid, *values = [v.strip() for v in line.split("|")][:1 + len(keys)]
        jobs[jobid] = dict(zip(keys, values))
    return jobs


def _sacct_partitions() -> dict[str, tuple[str, str]]:
    """SLURM job id -> (partition, state) from the job completion records (sacct -c: the test
    cluster has no slurmdbd; jobcomp/filetxt records every finished job)."""
    out = subprocess.run(["sacct", "-c", "-n", "-P", "-o", "jobid,partition,state"], capture_output=True,
                         text=True, timeout=60, check=True).stdout
    rows = {}
    for line in out.splitlines():
        jobid, partition, state = line.strip().split("|")
        rows[jobid] = (partition, state.split()[0])
    return rows


def _minutes(limit: str) -> int:
    """squeue's time limit ([D-]HH:MM:SS, MM:SS) in minutes."""
    days, _, rest = limit.rpartition("-")
    parts = [int(p) for p in rest.split(":")]
    while len(parts) < 3:
        parts.insert(0, 0)
    return int(days or 0) * 1440 + parts[0] * 60 + parts[1] + (parts[2] > 0)


def _rule_of(comment: str) -> str:
    m = re.fullmatch(r"rule_(\w+?)(_wildcards_.*)?", comment)
    assert m, f"unexpected job comment {comment!r}"
    return m.group(1)


def _job_pids(slurm_id: str) -> list[int]:
    """Processes of a running job (`scontrol listpids`), the batch script and what it started."""
    out = subprocess.run(["scontrol", "listpids", slurm_id], capture_output=True, text=True, timeout=30).stdout
    return [int(f[0]) for f in (ln.split() for ln in out.splitlines()[1:]) if f and f[0].isdigit()]


class Saboteur(threading.Thread):
    """While the SLURM run goes on: cancel the first running CANCEL_RULE job (scancel), SIGKILL the
    processes of the first running KILL_RULE job on the node, and SIGSTOP those of the first
    running TIMEOUT_RULE job, so that SLURM ends it at its time limit. Records {rule: SLURM id}."""

    def __init__(self, deadline: float):
        super().__init__(daemon=True)
        self.deadline, self.done, self.stop = deadline, {}, threading.Event()
        self.errors: list[str] = []

    def run(self):
        try:
            while not self.stop.is_set() and len(self.done) < len(SABOTAGE) and time.monotonic() < self.deadline:
                try:
                    jobs = _squeue_jobs()
                except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
                    time.sleep(1)  # a busy controller: ask again
                    continue
                for sid, job in jobs.items():
                    rule = _rule_of(job["comment"]) if job["comment"].startswith("rule_") else None
                    if rule not in SABOTAGE or rule in self.done or job["state"] != "RUNNING":
                        continue
                    if rule == CANCEL_RULE:
                        subprocess.run(["scancel", sid], check=True, timeout=30)
                    else:
                        pids = _job_pids(sid)
                        if len(pids) < 2:  # the batch script has not started its command yet
                            continue
                        for pid in pids:
                            try:
                                os.kill(pid, signal.SIGKILL if rule == KILL_RULE else signal.SIGSTOP)
                            except ProcessLookupError:
                                continue  # already ended: nothing left to signal
                    self.done[rule] = sid
                time.sleep(0.3)
        except Exception as exc:  # reported by the test
            self.errors.append(repr(exc))


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
def test_pipeline_on_slurm_matches_local_run(slurm_cluster, tmp_path):
    cfg_path = write_yaml(tmp_path / "config.yaml", SLURM_CONFIG)
    cfg, _ = load_config([cfg_path])
    sizes = rule_resources(cfg)
    local_dir, slurm_dir = tmp_path / "local", tmp_path / "slurm"
    profile = _test_profile(tmp_path / "profile")
    prof = YAML(typ="safe", pure=True).load(PROFILE.read_text())
    node_mb = int(re.search(r"RealMemory=(\d+)", subprocess.run(
        ["scontrol", "show", "node"], capture_output=True, text=True, timeout=30).stdout).group(1))
    asked = max(2 * v["mem_mb"] for v in sizes.values())
    if asked > node_mb:
        pytest.skip(f"the test node has {node_mb} MB, the jobs ask for up to {asked} MB at a retry")

    # The local reference run goes side by side with the SLURM run, which mostly waits.
    def timed(*args, **kwargs):
        t0 = time.monotonic()
        proc = run_snakemake(*args, **kwargs)
        return proc, time.monotonic() - t0

    saboteur = Saboteur(deadline=time.monotonic() + RUN_TIMEOUT)
    with ThreadPoolExecutor(2) as pool:
        local_f = pool.submit(timed, local_dir, cfg_path, TARGETS, timeout=RUN_TIMEOUT)
        slurm_f = pool.submit(timed, slurm_dir, cfg_path, TARGETS, timeout=RUN_TIMEOUT,
                              extra=["--profile", str(profile), "--workflow-profile", "none"])
        saboteur.start()
        try:
            local, t_local = local_f.result()
            run, t_slurm = slurm_f.result()
        finally:
            saboteur.stop.set()
            saboteur.join(60)
    text = run.stdout + run.stderr
    (tmp_path / "snakemake_local.log").write_text(local.stdout + local.stderr)
    (tmp_path / "snakemake_slurm.log").write_text(text)
    print(f"local run {t_local:.1f} s, SLURM run {t_slurm:.1f} s, sabotaged {saboteur.done}")
    assert not saboteur.errors, saboteur.errors
    assert set(saboteur.done) == set(SABOTAGE), f"jobs not sabotaged: {set(SABOTAGE) - set(saboteur.done)}"

    # Which jobs Snakemake ran where: 'localrule X:' runs in the main process, 'rule X:' is a job
    # (its block printed again for each retry).
    blocks = _job_blocks(text)
    local_rules = {j["rule"] for j in blocks if j["local"]}
    remote_jobs = {j["jobid"]: j for j in blocks if not j["local"]}
    remote = Counter(j["rule"] for j in remote_jobs.values())
    assert remote, f"no job was sent to SLURM:\n{text[-3000:]}"
    stats = _job_stats(local.stdout + local.stderr)
    expected = Counter({r: n for r, n in stats.items() if r not in local_rules})
    assert remote == expected, f"jobs sent to SLURM {dict(remote)} != jobs of the local run {dict(expected)}"

    # Every job was its own sbatch job; a sabotaged one was submitted twice.
    attempts = defaultdict(list)  # Snakemake job id -> its SLURM ids, in order
    for jobid, sid in SUBMITTED.findall(text):
        attempts[jobid].append(sid)
    assert set(attempts) == set(remote_jobs), "a job was not submitted, or an unknown one was"
    slurm_ids = [sid for sids in attempts.values() for sid in sids]
    assert len(set(slurm_ids)) == len(slurm_ids), "two jobs share one SLURM job id"
    retried = {jobid: sids for jobid, sids in attempts.items() if len(sids) > 1}
    assert sorted(remote_jobs[j]["rule"] for j in retried) == sorted(SABOTAGE), f"retried: {retried}"
    assert all(len(sids) == 2 for sids in retried.values()), retried

    # What SLURM says about each job: the sabotaged first attempts ended as sabotaged, every
    # other job completed under its rule, on the partition profiles/slurm names, with the memory
    # and time limit of tinyevo.resources (twice as much at the retry; TIMEOUT_RULE: 1 min, 2).
    known, records = _squeue_jobs(), _sacct_partitions()
    gpu_partition = {r: str(prof["set-resources"][r]["slurm_partition"]) for r in GPU_RULES}
    cpu_partition = str(prof["default-resources"]["slurm_partition"])
    checked = Counter()
    for jobid, sids in attempts.items():
        job = remote_jobs[jobid]
        rule = job["rule"]
        for attempt, sid in enumerate(sids, start=1):
            assert sid in known and sid in records, f"SLURM job {sid} ({rule}) unknown to slurmctld or sacct -c"
            sq = known[sid]
            assert _rule_of(sq["comment"]) == rule, f"SLURM job {sid}: {sq['comment']} is not {rule}"
            state = SABOTAGE[rule] if attempt == 1 and len(sids) > 1 else "COMPLETED"
            assert sq["state"] == state and records[sid][1] == state, \
                f"SLURM job {sid} ({rule} {job['wildcards']}) ended {sq['state']} / {records[sid][1]}, expected {state}"
            partition = gpu_partition.get(rule, cpu_partition)
            assert records[sid][0] == partition == sq["partition"], f"{rule} ran on {records[sid][0]}, not {partition}"
            assert ("gpu:1" in sq["tres_per_job"]) == (rule in GPU_RULES), f"{rule}: GPUs {sq['tres_per_job']!r}"
            want = _expected(sizes, job, attempt)
            if rule == TIMEOUT_RULE:
                want["runtime"] = attempt
            got = {"mem_mb": int(sq["min_memory"].rstrip("M")), "runtime": _minutes(sq["time_limit"])}
            assert got == want, f"SLURM job {sid} ({rule} {job['wildcards']}, attempt {attempt}): sbatch {got} != {want}"
            checked[rule] += 1
    assert set(checked) == set(remote)

    # The run's report names each sabotaged job, its state, and for the time limit the limit.
    m = re.search(r"^tinyevo: \d+ SLURM jobs? failed.*(?:\n  .*)*", text, re.M)
    report = m.group(0) if m else ""
    assert report.startswith(f"tinyevo: {len(SABOTAGE)} SLURM jobs failed ({len(SABOTAGE)} re-submitted"), text[-3000:]
    for rule, state in SABOTAGE.items():
        sid = saboteur.done[rule]
        line = next((ln for ln in report.splitlines() if f"SLURM job {sid}:" in ln), "")
        assert line.strip().startswith(f"rule {rule}") and f": {state}," in line, (rule, report)
        assert f"retried as SLURM job {attempts[next(j for j, s in attempts.items() if s[0] == sid)][1]}" in line, line
    assert "ran past its time limit of 1 min (runtime=1); retried as SLURM job" in report
    assert "with runtime=2" in report

    assert _compare_results(local_dir, slurm_dir) >= 20
