"""Proofs for the generated TyBox C++: bit-exact int8 FE against LiteRT, on-device learning equal
to the numpy reference, static RAM equal to the memory model. Each net is converted, generated
and compiled once per module (system g++)."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++")

M = 48 * 1024


@pytest.fixture(scope="module")
def nets(tmp_path_factory):
    from tinyevo.tybox import codegen, harness, testnets
    from tinyevo.tybox.model import load_graph

    out = {}
    for kind, res in (("residual", 16), ("avgpool", 12)):
        d = tmp_path_factory.mktemp(kind)
        fe = testnets.build_fe(kind, res, 1, seed=3)
        tfl = d / "fe_int8.tflite"
        tfl.write_bytes(testnets.to_int8_tflite(fe, testnets.random_images(16, res, 1, seed=3)))
        g = load_graph(tfl)
        cls = testnets.random_classifier(g.feature_size, 6, seed=3)
        src = d / "src"
        terms = codegen.generate(tfl, cls, src, M=M, lr=0.05, loss="mse_softmax", n_test=4, seed=1)
        harness.build(src, "g++", 2)
        out[kind] = {"tflite": tfl, "graph": g, "cls": cls, "src": src, "terms": terms}
    return out


def test_nets_cover_the_search_space_ops(nets):
    kinds = {op.kind for n in nets.values() for op in n["graph"].ops}
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "PAD", "MEAN", "AVERAGE_POOL_2D", "RESHAPE"} <= kinds
    strides = {op.options.get("strideH") for n in nets.values() for op in n["graph"].ops}
    assert 2 in strides


@pytest.mark.parametrize("kind", ["residual", "avgpool"])
def test_fe_bit_identical_to_litert(nets, kind):
    from tinyevo.tybox import codegen, harness

    n = nets[kind]
    rng = np.random.default_rng(7)
    x = rng.integers(-128, 128, (120,) + n["graph"].input.shape[1:], dtype=np.int64).astype(np.int8)
    ours = harness.extract(n["src"], x)
    ref = codegen.litert_features(n["tflite"], x)  # LiteRT reference kernels
    assert ours.shape == ref.shape == (120, n["graph"].feature_size)
    assert np.array_equal(ours, ref)
    assert len(np.unique(ours, axis=0)) >= 10  # the inputs give distinct features


def test_make_check_under_sanitizers(nets):
    from tinyevo.tybox import harness

    log = harness.make_check(nets["avgpool"]["src"], "g++", 2)
    assert "0 of" in log and "differ" in log


@pytest.mark.parametrize("loss,capacity", [("mse_softmax", None), ("cross_entropy", 25), ("mse_softmax", 1)])
def test_on_device_learning_matches_numpy(nets, loss, capacity):
    from tinyevo.tybox import harness, reference

    n = nets["residual"]
    info = harness.info(n["src"])
    F, C = info["feature_size"], info["num_classes"]
    cap = capacity or info["buffer_samples"]
    rng = np.random.default_rng(11)
    centers = rng.integers(-50, 50, (C, F))
    ys = rng.integers(0, C, 300)
    xs = np.clip(centers[ys] + rng.integers(-45, 45, (300, F)), -128, 127).astype(np.int8)
    ey = rng.integers(0, C, 60)
    ex = np.clip(centers[ey] + rng.integers(-45, 45, (60, F)), -128, 127).astype(np.int8)
    run = harness.stream(n["src"], xs, ys, ex, ey, capacity=cap, lr=0.05, loss=loss, features=True)
    learner = reference.OnDeviceLearner(*n["cls"], info["feature_scale"], info["feature_zero_point"], cap, 0.05, loss)
    ref = reference.run_stream(learner, xs, ys, ex, ey)
    assert len(run["curve"]) == 301
    assert np.array_equal(run["eval_pred"], ref["eval_pred"])
    assert np.array_equal(run["curve"]["pred"].to_numpy(), ref["curve"]["pred"].to_numpy())
    assert np.abs(run["weights"][0] - learner.W).max() < 1e-5
    assert np.abs(run["weights"][1] - learner.b).max() < 1e-5
    assert np.abs(learner.W - n["cls"][0]).max() > 1e-3  # it did learn


def test_stream_from_images_extracts_like_extract(nets):
    from tinyevo.tybox import harness, reference

    n = nets["avgpool"]
    info = harness.info(n["src"])
    rng = np.random.default_rng(5)
    x = rng.integers(-128, 128, (30,) + n["graph"].input.shape[1:], dtype=np.int64).astype(np.int8)
    y = rng.integers(0, info["num_classes"], 30)
    run = harness.stream(n["src"], x[:20], y[:20], x[20:], y[20:], capacity=5)
    feats = harness.extract(n["src"], x)
    learner = reference.OnDeviceLearner(*n["cls"], info["feature_scale"], info["feature_zero_point"], 5, 0.05)
    ref = reference.run_stream(learner, feats[:20], y[:20], feats[20:], y[20:])
    assert np.array_equal(run["eval_pred"], ref["eval_pred"])


def test_static_ram_equals_memory_model(nets):
    from tinyevo.tybox import harness

    for n in nets.values():
        t = n["terms"]
        m = harness.measure_memory(n["src"])
        assert abs(m["ram_bytes"] - t["ram_bytes"]) <= 0.02 * t["ram_bytes"]
        assert m["ram_bytes"] <= M
        for term in ("arena", "classifier_weights", "classifier_activations", "state", "buffer_used"):
            assert m[term] == t[term], term
        assert m["flash_bytes"] >= t["fe_flash"] + t["classifier_weights"]  # constants are in flash
        assert m["rodata"] >= t["fe_flash"]


def test_harness_rejects_bad_capacity(nets):
    from tinyevo.tybox import harness

    n = nets["avgpool"]
    x = np.zeros((2, n["graph"].feature_size), np.int8)
    with pytest.raises(harness.BuildError, match="--capacity"):
        harness.stream(n["src"], x, [0, 1], x, [0, 1], capacity=n["terms"]["n_samples"] + 1, features=True)


def test_generated_sources_are_self_contained(nets):
    import re

    src = nets["residual"]["src"]
    for f in ("tybox.cc", "tybox_fe.cc", "tybox_model_data.cc", "tybox.h", "tybox_kernels.h", "tybox_model.h"):
        text = (src / f).read_text()
        incs = set(re.findall(r'#include [<"]([^>"]+)[>"]', text))
        assert incs <= {"stdint.h", "cmath", "cstring", "tybox.h", "tybox_model.h", "tybox_kernels.h",
                        "tybox_model_data.h"}, (f, incs)
        assert "malloc" not in text and "new " not in text and "throw" not in text
    for f in ("README.md", "Makefile", "fe_int8.tflite", "fe_int8_tflite.cc", "test_input.bin", "test_expected.bin"):
        assert (src / f).is_file()


def test_unsupported_op_is_named(tmp_path):
    import keras
    from keras import layers as L

    from tinyevo.tybox import testnets
    from tinyevo.tybox.model import UnsupportedModelError, load_graph

    inp = keras.Input((8, 8, 1))
    x = L.Conv2D(4, 3, padding="same")(inp)
    x = L.MaxPooling2D(2)(x)
    fe = keras.Model(inp, L.Flatten()(x))
    p = tmp_path / "fe.tflite"
    p.write_bytes(testnets.to_int8_tflite(fe, testnets.random_images(8, 8, 1)))
    with pytest.raises(UnsupportedModelError, match="MAX_POOL_2D"):
        load_graph(p)


def test_every_supported_op_has_one_emitter():
    from tinyevo.tybox.codegen import EMITTERS
    from tinyevo.tybox.model import SUPPORTED_OPS

    assert sorted(EMITTERS) == sorted(SUPPORTED_OPS)
