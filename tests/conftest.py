"""Shared fixtures: the repo root, configs built from the default + overrides, a tiny config
that runs the whole pipeline in minutes, and a Snakemake runner in a temporary directory."""

from __future__ import annotations

import copy
import gc
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow"))

from tinyevo.runtime import JOB_GC_THRESHOLDS  # noqa: E402

# The test processes import torch, TensorFlow and Snakemake: the job processes' collector
# thresholds spare them the repeated full collections.
gc.set_threshold(*JOB_GC_THRESHOLDS)

from ruamel.yaml import YAML  # noqa: E402

# TensorFlow, then torch._dynamo (which every torch.optim optimizer imports on first use, e.g. in
# the reference comparisons of test_optim.py) abort the process: both register the same LLVM
# options (see tinyevo/compress/__init__.py). A test process may load both, so the compiler first.
import torch._dynamo  # noqa: E402,F401

from tinyevo.config import load_config  # noqa: E402

# A configuration small enough for tests: 8 nets, 16x16 digits, few epochs and cycles.
TINY = {
    "seed": 1,
    "compute": {"device": "cpu"},
    "dataset": {"source": "digits", "resolution": 16, "channels": 1, "max_per_split": 300},
    "search_space": {
        "stem_width": 8,
        "head_width": 64,
        "population": {
            "mode": "grid",
            "structures": [[1, 1, 1, 1, 1, 1, 1], [1, 2, 1, 2, 1, 1, 1]],
            "expansions": [[1, 2, 2, 2, 2, 2, 2], [1, 3, 3, 3, 3, 3, 3]],
            "channels": [[8, 8, 16, 16, 24, 24, 32], [8, 16, 16, 24, 24, 32, 32]],
        },
    },
    "constraints": {"max_params": 60000, "max_macs": None},
    "proxies": {"batch_size": 16},
    "scoring": {"shards": 2},
    "evolution": {"cycles": 6, "sample_size": 3, "checkpoint_every": 2},
    "train": {"epochs": 2, "batch_size": 32, "threads": 1},
    "final_round": {"k": 2, "epochs": [1, 1]},
    # no top-k picks (their regret is covered by tests/test_validation.py): 4 trainings (3 nets, one of
    # them with a second seed for the noise ceiling), not 15
    "validation": {"nets": 3, "epochs": 1, "seed_nets": 1, "top_k": 0},
    "compress": {"max_steps": 2, "finetune_epochs": 0, "representative_samples": 16, "threads": 1},
    "device": {"ram_bytes": 131072, "min_buffer_samples": 4},
    # transfer (and its C-src branch) is left out to save test time: its code path is covered by
    # tests/test_scenarios.py on a hand-built deployment
    # the default target, cortex-m4f, where the Arm toolchain and QEMU are installed (`make test`
    # installs them when it can); the host build alone elsewhere
    "tybox": {"target": "cortex-m4f" if all(shutil.which(t) for t in ("arm-none-eabi-g++", "qemu-system-arm"))
              else "host"},
    "scenarios": {"names": ["concept_drift", "incremental"], "repetitions": 2, "stream_length": 40, "eval_size": 30,
                  "change_point": 20},
}


# A two-stage 8x8 search space whose nets train in a second (library-level training tests).
MICRO_SPACE = {
    "resolution": 8, "channels": 1, "num_classes": 4, "stem_width": 4, "stem_stride": 1, "strides": [1, 2],
    "head_width": 16, "kernel_size": 3, "round_divisor": 4,
    "alphabets": {"repeats": [1, 2], "expansions": [1, 2], "channels": [4, 8]},
    "population": {"mode": "grid", "size": 2, "seed": 0, "structures": [[1, 1]], "expansions": [[1, 2]],
                   "channels": [[4, 8]]},
}

def load_bench(name: str):
    """The module of ``bench/<name>.py`` (bench scripts are not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "bench" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def write_yaml(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        YAML(typ="safe", pure=True).dump(data, fh)
    return path


@pytest.fixture
def repo() -> Path:
    return REPO


@pytest.fixture
def make_config(tmp_path):
    """make_config(overrides, tiny=True) -> (resolved config dict, path of the yaml file)."""

    def _make(overrides: dict | None = None, tiny: bool = True, name: str = "config.yaml"):
        data = deep_merge(TINY if tiny else {}, overrides or {})
        path = write_yaml(tmp_path / name, data)
        cfg, _ = load_config([path])
        return cfg, path

    return _make


def run_snakemake(workdir: Path, configfile: Path, targets=(), extra=(), check=True, timeout=1800, snakefile=None):
    """Run the repo's workflow (or ``snakefile``, a copy of it) with ``workdir`` as working
    directory (results/ lands there)."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(snakefile or REPO / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(configfile), "--cores", "2", "--nolock", *extra, *targets]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}")
    return proc


@pytest.fixture
def snakemake_run():
    return run_snakemake


# --- the order tests are handed out in --------------------------------------------------------

_SHARED_RUNS = ({"tiny_pipeline"}, {"micro_pipeline", "micro_killed_run"})


def pytest_collection_modifyitems(session, config, items):
    """The shared runs (the TINY pipeline, the micro runs) start first, one on each xdist worker,
    and the other tests that need them come last: a worker never waits on another's shared run
    while tests it could run are left (with `make test`'s --maxschedchunk 2 the first two tests go
    to the first worker, the next two to the second). The order is the same on every worker."""
    def needs(item, names) -> bool:
        return bool(names & set(getattr(item, "fixturenames", ())))

    groups = [[i for i in items if needs(i, names) and not any(needs(i, n) for n in _SHARED_RUNS[:k])]
              for k, names in enumerate(_SHARED_RUNS)]
    shared = {id(i) for g in groups for i in g}
    rest = [i for i in items if id(i) not in shared]
    firsts = [g[0] for g in groups if g]
    head = []
    for k, first in enumerate(firsts):
        head += [first, *rest[k:k + 1]]
    items[:] = head + rest[len(firsts):] + [i for g in groups for i in g[1:]]


# --- one full TINY pipeline run per test session, shared by every test (and xdist worker) ---

TINY_PIPELINE_TIMEOUT = 3600  # seconds for the full TINY run (2 shared cores)


def _tiny_pipeline_root(tmp_path_factory) -> Path:
    """Under pytest-xdist every worker's basetemp is <session dir>/popen-gwN, so the parent is the
    one directory the workers of this session share. Without xdist the parent is shared by
    *every* session of the user (pytest-of-<user>), so a stale run would be reused: the session's
    own basetemp is used instead."""
    base = tmp_path_factory.getbasetemp()
    return (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "tiny_pipeline"


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory) -> Path:
    """Path of a work directory holding ``config.yaml`` (TINY) and the ``results/`` +
    ``.snakemake/`` of ONE full run of the default target ``all``, made once per test session
    (the first xdist worker runs it under a file lock; the others wait and reuse it; a failure is
    recorded so the others fail at once with the same message). Read-only for the tests: a test
    that changes the tree copies it first (:func:`copy_pipeline`)."""
    from filelock import FileLock

    root = _tiny_pipeline_root(tmp_path_factory)
    root.mkdir(parents=True, exist_ok=True)
    work, done, failed = root / "work", root / "DONE", root / "FAILED"
    with FileLock(str(root / "lock"), timeout=TINY_PIPELINE_TIMEOUT + 600):
        if failed.exists():
            pytest.fail(f"the shared TINY pipeline run failed (in another worker):\n{failed.read_text()}")
        if not done.exists():
            if work.exists():  # a previous attempt died mid-run: start clean
                shutil.rmtree(work)
            work.mkdir()
            config = write_yaml(work / "config.yaml", TINY)
            try:
                run_snakemake(work, config, targets=["all"], timeout=TINY_PIPELINE_TIMEOUT)
            except (AssertionError, subprocess.TimeoutExpired) as exc:
                failed.write_text(str(exc))
                pytest.fail(f"the shared TINY pipeline run failed:\n{exc}")
            done.write_text("ok\n")
    return work


def copy_pipeline(src: Path, dst: Path) -> Path:
    """Copy a pipeline work directory with its ``.snakemake`` metadata and the files' mtimes, so
    Snakemake's rerun triggers (mtime, params, input, code) see the copy as up to date."""
    shutil.copytree(src, dst, symlinks=True, copy_function=shutil.copy2)
    return dst


# --- process-level runs of a micro configuration (kill-and-rerun, --cores) ---------------------

# Every stage from the data to the compression in about a minute on 2 cores: 4 nets of a
# two-stage 8x8 space, 150 digits per split, 30 evolution cycles (checkpoint every 3), 3 epochs,
# 2 pruning steps with a fine-tune each. train.threads and compress.threads keep their default 2,
# so a job run at --cores 1 still uses 2 torch threads.
MICRO_PIPELINE = {
    "seed": 1,
    "compute": {"device": "cpu"},
    "dataset": {"source": "digits", "resolution": 8, "channels": 1, "max_per_split": 150},
    "search_space": {
        "stem_width": 4, "stem_stride": 1, "strides": [1, 2], "head_width": 16, "kernel_size": 3, "round_divisor": 4,
        "alphabets": {"repeats": [1, 2], "expansions": [1, 2], "channels": [4, 8]},
        "population": {"mode": "grid", "structures": [[1, 1], [1, 2]], "expansions": [[1, 2]],
                       "channels": [[4, 8], [8, 8]]},
    },
    "constraints": {"max_params": None, "max_macs": None},
    "proxies": {"batch_size": 16},
    "scoring": {"shards": 2},
    "evolution": {"cycles": 30, "sample_size": 2, "checkpoint_every": 3},
    "final_round": {"k": 0},
    "train": {"epochs": 3, "batch_size": 16},
    "validation": {"nets": 3, "epochs": 1},
    "compress": {"max_steps": 2, "finetune_epochs": 1, "representative_samples": 8},
    "device": {"ram_bytes": 65536, "min_buffer_samples": 4},
    "scenarios": {"repetitions": 1, "stream_length": 20, "eval_size": 10, "change_point": 10},
}
# the compression of C needs every stage before it (data, space, scores, rank, evolution, choice, train)
MICRO_TARGETS = ("results/compress/C/summary.parquet",)
MICRO_TIMEOUT = 900  # seconds for one micro run, kills and re-runs included
# columns that measure time, not results
TIMING_COLUMNS = frozenset({"seconds", "train_seconds"})


def snakemake_cmd(workdir: Path, configfile: Path, cores: int, targets=(), extra=()) -> list[str]:
    """The command line of a run of the repo's workflow in ``workdir`` (no --nolock: the lock is
    part of what a process-level test exercises)."""
    return [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
            "--configfile", str(configfile), "--cores", str(cores), *extra, *targets]


def shared_once(tmp_path_factory, name: str, make, timeout: float) -> Path:
    """``make(work)`` run once per test session and shared by every xdist worker (the pattern of
    :func:`tiny_pipeline`: a file lock, a DONE marker, a FAILED record the others fail with).
    Returns the work directory."""
    from filelock import FileLock

    root = _tiny_pipeline_root(tmp_path_factory).parent / name
    root.mkdir(parents=True, exist_ok=True)
    work, done, failed = root / "work", root / "DONE", root / "FAILED"
    with FileLock(str(root / "lock"), timeout=timeout + 600):
        if failed.exists():
            pytest.fail(f"the shared run {name} failed (in another worker):\n{failed.read_text()}")
        if not done.exists():
            if work.exists():
                shutil.rmtree(work)
            work.mkdir()
            try:
                make(work)
            except (AssertionError, subprocess.TimeoutExpired, OSError) as exc:
                failed.write_text(str(exc))
                pytest.fail(f"the shared run {name} failed:\n{exc}")
            done.write_text("ok\n")
    return work


@pytest.fixture(scope="session")
def micro_pipeline(tmp_path_factory) -> Path:
    """Work directory of ONE uninterrupted run of MICRO_PIPELINE to MICRO_TARGETS at --cores 2
    (the reference of the kill-and-rerun and --cores tests). Read-only for the tests."""

    def make(work: Path) -> None:
        config = write_yaml(work / "config.yaml", MICRO_PIPELINE)
        run_snakemake(work, config, targets=list(MICRO_TARGETS), timeout=MICRO_TIMEOUT)

    return shared_once(tmp_path_factory, "micro_pipeline", make, MICRO_TIMEOUT)


def result_tables(work: Path) -> dict[str, "object"]:
    """Every Parquet table under ``work/results`` (the score cache aside: its part files are
    named at random), timing columns dropped, keyed by the path below results/."""
    import pandas as pd

    res = work / "results"
    out = {}
    for p in sorted(res.rglob("*.parquet")):
        rel = p.relative_to(res).as_posix()
        if rel.startswith("cache/"):
            continue
        df = pd.read_parquet(p)
        out[rel] = df[[c for c in df.columns if c not in TIMING_COLUMNS]]
    return out


def _group_alive(pgid: int) -> bool:
    """Whether a live (non-zombie) process of process group ``pgid`` is left."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def run_and_kill(cmd: list[str], log_path: Path, marker, timeout: float) -> dict:
    """Start ``cmd`` as its own process group (stdout + stderr appended to ``log_path``) and SIGKILL
    the whole group as soon as ``marker()`` is true: the Snakemake process and every job it runs.
    Returns {"killed", "returncode", "group_dead", "seconds"}."""
    import signal
    import time

    t0 = time.monotonic()
    with open(log_path, "a") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                env=dict(os.environ, PYTHONUNBUFFERED="1"))
        while proc.poll() is None:
            if marker() or time.monotonic() - t0 > timeout:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                while _group_alive(proc.pid) and time.monotonic() - t0 < timeout + 30:
                    time.sleep(0.05)
                if time.monotonic() - t0 > timeout:
                    raise AssertionError(f"no kill point within {timeout} s: {' '.join(cmd)}")
                return {"killed": True, "returncode": proc.returncode, "group_dead": not _group_alive(proc.pid),
                        "seconds": round(time.monotonic() - t0, 1)}
            time.sleep(0.02)
    return {"killed": False, "returncode": proc.returncode, "group_dead": True,
            "seconds": round(time.monotonic() - t0, 1)}


def _log_has(work: Path, pattern: str, text: str):
    return lambda: any(text in p.read_text(errors="replace") for p in (work / "results/logs").glob(pattern))


def _evolution_midway(work: Path, cycles: int):
    def marker() -> bool:
        import json

        p = work / "results/evolution/checkpoint/state.json"
        try:
            return 0 < json.loads(p.read_text())["cycle"] < cycles
        except (OSError, ValueError, KeyError):
            return False

    return marker


def micro_kill_points(work: Path) -> list[tuple[str, object, str]]:
    """(stage, marker, the stage's output that must be missing after the kill), in DAG order: a
    score shard has started scoring; the evolution has checkpointed a cycle before the last; the
    training has checkpointed its first epoch; the compression has pruned its first step."""
    return [
        ("scoring", _log_has(work, "score/shard_*.log", "stage score"), "results/scores/initial.parquet"),
        ("evolution", _evolution_midway(work, MICRO_PIPELINE["evolution"]["cycles"]),
         "results/evolution/history.parquet"),
        ("training", lambda: (work / "results/train/C/checkpoint.pt").is_file(), "results/train/C/model.pt"),
        ("compression", _log_has(work, "compress/C.log", "step 1:"), "results/compress/C/summary.parquet"),
    ]


def _drop_locks(work: Path) -> None:
    """What ``snakemake --unlock`` does after a killed run (the lock files of .snakemake/locks
    removed), without the 3 to 4 CPU-s of a Snakemake start; the command itself is run once."""
    locks = sorted((work / ".snakemake" / "locks").glob("*.lock"))
    assert locks, f"no lock left in {work} by the killed run"
    for lock in locks:
        lock.unlink()


@pytest.fixture(scope="session")
def micro_killed_run(tmp_path_factory) -> Path:
    """Work directory of MICRO_PIPELINE run to MICRO_TARGETS at --cores 1, its Snakemake process
    group SIGKILLed in the scoring, the evolution, the training and the compression; after each
    kill the locks are removed (after the first as a user meets it: a plain re-run, refused as the
    directory is locked, then ``--unlock``) and the re-run goes on to the next kill, then the
    re-run to the end. ``kills.json`` records every kill and ``locked.txt`` the refused re-run. Compared with :func:`micro_pipeline` (--cores 2, never
    interrupted) it checks both the kill-and-rerun and the --cores guarantee with one extra run."""
    import json

    def make(work: Path) -> None:
        config = write_yaml(work / "config.yaml", MICRO_PIPELINE)
        cmd = snakemake_cmd(work, config, 1, MICRO_TARGETS)
        log = work / "snakemake.out"
        records = []
        for i, (stage, marker, output) in enumerate(micro_kill_points(work)):
            if i == 1:  # once, as a user meets it: the re-run is refused, then --unlock
                locked = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
                (work / "locked.txt").write_text(f"{locked.returncode}\n{locked.stdout}{locked.stderr}")
                subprocess.run([*cmd, "--unlock"], capture_output=True, text=True, timeout=300, check=True)
            elif i > 1:
                _drop_locks(work)
            rec = run_and_kill(cmd, log, marker, MICRO_TIMEOUT / 4)
            rec.update(stage=stage, output_missing=not (work / output).exists())
            records.append(rec)
        (work / "kills.json").write_text(json.dumps(records, indent=1))
        _drop_locks(work)
        final = run_and_kill(cmd, log, lambda: False, MICRO_TIMEOUT / 2)
        if final["returncode"] != 0:
            raise AssertionError(f"the final re-run failed:\n{log.read_text()[-6000:]}")

    return shared_once(tmp_path_factory, "micro_killed_run", make, MICRO_TIMEOUT)
