"""The generated C++ on a Cortex-M4F (tinyevo.tybox.target): cross-built with the Arm GNU
toolchain, linked into the device's flash and RAM regions, run under QEMU (mps2-an386):
features bit-exact with LiteRT's reference kernels, on-device learning equal to the host build,
a net that does not fit refused at link time with the region named. The toolchain and QEMU are
installed from Debian when missing and possible (root with apt-get); otherwise the tests skip
saying so."""

from __future__ import annotations

import os
import shutil
import subprocess

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

M = 48 * 1024


def _ensure_toolchain() -> str | None:
    from tinyevo.tybox.target import PACKAGES, missing_tools

    if not missing_tools():
        return None
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return f"needs {missing_tools()}: apt-get install {' '.join(PACKAGES)} (not root or no apt-get here)"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    p = subprocess.run(["apt-get", "install", "-y", "-q", *PACKAGES], capture_output=True, text=True, env=env,
                       timeout=900)
    if p.returncode != 0:
        p = subprocess.run(["sh", "-c", f"apt-get update -q && apt-get install -y -q {' '.join(PACKAGES)}"],
                           capture_output=True, text=True, env=env, timeout=1200)
    return None if not missing_tools() else f"could not install {' '.join(PACKAGES)}: {p.stderr[-500:]}"


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    if shutil.which("g++") is None:
        pytest.skip("needs g++")
    why = _ensure_toolchain()
    if why:
        pytest.skip(why)
    from tinyevo.tybox import codegen, harness, testnets
    from tinyevo.tybox.model import load_graph
    from tinyevo.tybox.target import build

    d = tmp_path_factory.mktemp("target")
    fe = testnets.build_fe("residual", 16, 1, seed=3)
    tfl = d / "fe_int8.tflite"
    tfl.write_bytes(testnets.to_int8_tflite(fe, testnets.random_images(16, 16, 1, seed=3)))
    g = load_graph(tfl)
    cls = testnets.random_classifier(g.feature_size, 6, seed=3)
    src = d / "src"
    terms = codegen.generate(tfl, cls, src, M=M, lr=0.05, loss="mse_softmax", n_test=4, seed=1)
    harness.build(src, "g++", 2)
    elf = build(src, None, M)
    return {"tflite": tfl, "graph": g, "src": src, "elf": elf, "terms": terms}


def test_check_runs_on_the_emulated_cortex_m4(project):
    from tinyevo.tybox.target import qemu

    src = project["src"]
    ok = qemu(project["elf"], ["check", "test_input.bin", "test_expected.bin"], src)
    assert ok.returncode == 0, ok.stderr
    # the check compares: one flipped expected feature makes it fail on the target
    bad = bytearray((src / "test_expected.bin").read_bytes())
    bad[5] = (bad[5] + 1) % 256
    (src / "bad_expected.bin").write_bytes(bytes(bad))
    assert qemu(project["elf"], ["check", "test_input.bin", "bad_expected.bin"], src).returncode != 0


def test_target_features_are_bit_exact_with_litert(project, tmp_path):
    from tinyevo.tybox import codegen
    from tinyevo.tybox.target import qemu

    g = project["graph"]
    x = np.random.default_rng(11).integers(-128, 128, (24,) + g.input.shape[1:]).astype(np.int8)
    (tmp_path / "in.bin").write_bytes(x.tobytes())
    r = qemu(project["elf"], ["extract", str(tmp_path / "in.bin"), str(tmp_path / "out.bin")], tmp_path)
    assert r.returncode == 0, r.stderr
    ours = np.frombuffer((tmp_path / "out.bin").read_bytes(), np.int8).reshape(24, g.feature_size)
    assert np.array_equal(ours, codegen.litert_features(project["tflite"], x))
    assert len(np.unique(ours, axis=0)) >= 5


def test_on_device_learning_on_the_target_equals_the_host(project):
    from tinyevo.tybox import harness
    from tinyevo.tybox.target import runner

    g, src = project["graph"], project["src"]
    rng = np.random.default_rng(5)
    shape = (g.feature_size,)
    sx = rng.integers(-128, 128, (40,) + shape).astype(np.int8)
    ex = rng.integers(-128, 128, (12,) + shape).astype(np.int8)
    sy, ey = rng.integers(0, 6, 40), rng.integers(0, 6, 12)
    kw = dict(capacity=8, lr=0.05, loss="cross_entropy", features=True)
    host = harness.stream(src, sx, sy, ex, ey, **kw)

    tgt = harness.stream(src, sx, sy, ex, ey, runner=runner(project["elf"]), **kw)
    assert np.array_equal(tgt["eval_pred"], host["eval_pred"])
    for a, b in zip(tgt["weights"], host["weights"]):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)


def test_library_memory_from_the_target_build(project):
    from tinyevo.tybox.target import target_memory

    m = target_memory(project["src"])
    t = project["terms"]
    assert m["ram_bytes"] <= M
    assert abs(m["ram_bytes"] - t["ram_bytes"]) / t["ram_bytes"] <= 0.02
    assert m["arena"] == t["arena"] and m["buffer_used"] > 0
    assert m["flash_bytes"] > m["rodata"] > 0


def test_a_net_that_does_not_fit_fails_at_link_time(project):
    from tinyevo.runtime import UserError
    from tinyevo.tybox.target import DoesNotFit, build

    with pytest.raises(DoesNotFit, match=r"region RAM \(device\.ram_bytes = 4,096 \+ 16,384 for the test program\) "
                                         r"overflowed by [\d,]+ bytes"):
        build(project["src"], None, 4096)
    with pytest.raises(DoesNotFit, match=r"region FLASH \(device\.flash_bytes = 8,192\) overflowed by [\d,]+ bytes"):
        build(project["src"], 8192, M)
    assert issubclass(DoesNotFit, UserError)  # one log line in a rule, no traceback
    build(project["src"], None, M)  # the fitting build again, for the other tests


def test_instruction_counts_are_deterministic_and_calibrated(project, tmp_path):
    from tinyevo.space.instructions import graph_macs
    from tinyevo.tybox.target import instruction_counts

    g = project["graph"]
    x = np.random.default_rng(2).integers(-128, 128, (3,) + g.input.shape[1:]).astype(np.int8)
    a = instruction_counts(project["elf"], x, tmp_path)
    b = instruction_counts(project["elf"], x, tmp_path)
    # QEMU's -icount: the same program and input, the same count up to the counter's quantum
    # (1 tick = 0.625 instructions; the virtual clock's phase at the first read may differ)
    assert a.keys() == b.keys() and all(abs(a[k] - b[k]) <= 2 for k in a)
    assert abs(a["calibration"] - 200000) <= 16
    macs = graph_macs(g)["total"]
    assert macs > 0 and 2 <= a["extract"] / macs <= 100  # int8 reference kernels: a few instructions a MAC
    # one SGD step on a buffered sample is a forward + update of the F x C classifier
    F, C = g.feature_size, 6
    assert F * C <= a["sgd_sample"] <= 100 * F * C
    assert a["train_step"] == pytest.approx(a["sgd_sample"] * a["buffer_samples"], rel=0.2)
    assert 0 < a["predict"] < a["sgd_sample"] * 2


def test_graph_macs_counts_conv_and_depthwise():
    from tinyevo.space.memory import Graph, Op, Tensor
    from tinyevo.space.instructions import graph_macs

    t = [Tensor(0, "x", (1, 8, 8, 3), np.int8), Tensor(1, "w", (16, 3, 3, 3), np.int8, data=np.zeros(1)),
         Tensor(2, "y", (1, 4, 4, 16), np.int8), Tensor(3, "d", (1, 3, 3, 16), np.int8, data=np.zeros(1)),
         Tensor(4, "z", (1, 4, 4, 16), np.int8)]
    g = Graph("g", t, [Op(0, "CONV_2D", [0, 1], [2]), Op(1, "DEPTHWISE_CONV_2D", [2, 3], [4]),
                       Op(2, "ADD", [4, 4], [4])], [0], [4])
    assert graph_macs(g) == {"conv": 16 * 16 * 27, "depthwise": 16 * 16 * 9, "total": 16 * 16 * 36}


def test_learning_stream_check_on_the_target(project):
    from tinyevo.tybox import harness, verify_learning
    from tinyevo.tybox.target import runner

    res = verify_learning(project["src"], runner(project["elf"]), 0.05, "mse_softmax", seed=4)
    assert res["samples"] == 24 and res["max_weight_diff"] <= 1e-5

    # a learner that is not the reference (another learning rate) is caught
    def wrong_lr(cmd, cwd):
        cmd = list(cmd)
        cmd[cmd.index("--lr") + 1] = "0.08"
        return harness._run(cmd, cwd, "harness stream")

    with pytest.raises(RuntimeError, match="differ from the numpy reference"):
        verify_learning(project["src"], wrong_lr, 0.05, "mse_softmax", seed=4)
