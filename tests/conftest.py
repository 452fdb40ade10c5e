"""Shared fixtures: the repo root, configs built from the default + overrides, a tiny config
that runs the whole pipeline in minutes, and a Snakemake runner in a temporary directory."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow"))

from ruamel.yaml import YAML  # noqa: E402

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
    "train": {"epochs": 2, "batch_size": 32},
    "final_round": {"k": 4, "epochs": [1, 1]},
    "validation": {"nets": 4, "epochs": 1},
    "compress": {"max_steps": 2, "finetune_epochs": 0, "representative_samples": 16},
    "device": {"ram_bytes": 131072, "min_buffer_samples": 4},
    "scenarios": {"repetitions": 2, "stream_length": 40, "eval_size": 30, "change_point": 20},
}


# A two-stage 8x8 search space whose nets train in a second (library-level training tests).
MICRO_SPACE = {
    "resolution": 8, "channels": 1, "num_classes": 4, "stem_width": 4, "stem_stride": 1, "strides": [1, 2],
    "head_width": 16, "kernel_size": 3, "round_divisor": 4,
    "alphabets": {"repeats": [1, 2], "expansions": [1, 2], "channels": [4, 8]},
    "population": {"mode": "grid", "size": 2, "seed": 0, "structures": [[1, 1]], "expansions": [[1, 2]],
                   "channels": [[4, 8]]},
}

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


def run_snakemake(workdir: Path, configfile: Path, targets=(), extra=(), check=True, timeout=1800):
    """Run the repo's workflow with ``workdir`` as working directory (results/ lands there)."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(configfile), "--cores", "2", "--nolock", *extra, *targets]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}")
    return proc


@pytest.fixture
def snakemake_run():
    return run_snakemake


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
                import shutil

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
    import shutil

    shutil.copytree(src, dst, symlinks=True, copy_function=shutil.copy2)
    return dst
