"""bench/gpu.py (the GPU path against the CPU) on a machine without CUDA: it skips with a clear
message and exit 0, or fails with --require-gpu; a bad argument is refused before any work."""

import os
import subprocess
import sys

import pytest

from conftest import REPO, load_bench

SCRIPT = REPO / "bench" / "gpu.py"


@pytest.fixture
def gpu_bench():
    return load_bench("gpu")


def test_skips_without_cuda():
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")  # no CUDA device, even on a machine with one
    proc = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout == "no CUDA device: GPU check skipped\n"


def test_require_gpu_fails_without_cuda(gpu_bench, monkeypatch, capsys):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_bench.main(["--require-gpu"]) == 1
    out = capsys.readouterr()
    assert out.out == "" and "no CUDA device: GPU check required (--require-gpu)" in out.err


def test_bad_argument_is_refused(gpu_bench, capsys):
    with pytest.raises(SystemExit) as exc:
        gpu_bench.main(["--nets", "0"])
    assert exc.value.code == 2 and "--nets must be >= 1, got 0" in capsys.readouterr().err
