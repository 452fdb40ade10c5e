"""TyBox memory model: the TyBox thesis's worked examples and the terms of a real int8 model."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from tinyevo.tybox.memory import arena_pair, memory_table, memory_terms, plan_arena, tybox_buffer  # noqa: E402


def test_worked_example_int8():
    buf, n = tybox_buffer(1_250_000, 1_189_763, 380, 1)
    assert buf == 60_237 and n == 158  # 381 B per sample


def test_worked_example_float32():
    buf, n = tybox_buffer(9_479_965, 8_726_736, 1280, 4)
    assert buf == 753_229 and n == 147  # 5,124 B per sample


def test_thesis_830kB_is_consistent():
    # 186 int8 features + label = 187 B per sample; 158 samples at an 830 kB budget.
    per_sample = (186 + 1) * 1
    assert per_sample == 187
    M = 830 * 1024
    # the net sizes compatible with exactly 158 samples
    lo, hi = M - 159 * per_sample + 1, M - 158 * per_sample
    assert tybox_buffer(M, lo, 186, 1)[1] == 158 and tybox_buffer(M, hi, 186, 1)[1] == 158
    assert tybox_buffer(M, lo - 1, 186, 1)[1] == 159 and tybox_buffer(M, hi + 1, 186, 1)[1] == 157
    # the thesis's Omega_801kB (801 KiB) lies in that range, buffer "around 29 kB"
    assert lo <= 801 * 1024 <= hi
    assert math.isclose(M - 801 * 1024, 29_696) and 29_000 < M - 801 * 1024 < 30_000


def test_net_larger_than_budget_gives_zero_samples():
    buf, n = tybox_buffer(1000, 1500, 10, 1)
    assert buf == -500 and n == 0
    with pytest.raises(ValueError, match="feature size"):
        tybox_buffer(1000, 10, 0, 1)


@pytest.fixture(scope="module")
def residual_tflite(tmp_path_factory):
    from tinyevo.tybox import testnets

    fe = testnets.build_fe("residual", 16, 1, seed=0)
    path = tmp_path_factory.mktemp("mem") / "fe_int8.tflite"
    path.write_bytes(testnets.to_int8_tflite(fe, testnets.random_images(16, 16, 1, seed=0)))
    return path


def test_memory_terms_from_tflite(residual_tflite):
    from tinyevo.tybox import testnets
    from tinyevo.tybox.model import load_graph

    g = load_graph(residual_tflite)
    F = g.feature_size
    cls = testnets.random_classifier(F, 10)
    M = 64 * 1024
    t = memory_terms(residual_tflite, cls, M)
    # weights: every conv / depthwise int8 filter, int32 bias, 2 int32 per output channel
    convs = [op for op in g.ops if op.kind in ("CONV_2D", "DEPTHWISE_CONV_2D")]
    assert t["fe_weights"] == sum(g.tensors[op.inputs[1]].data.size for op in convs)
    assert t["fe_biases"] == sum(4 * g.tensors[op.inputs[2]].data.size for op in convs)
    assert t["fe_quant_params"] == sum(8 * g.tensors[op.outputs[0]].shape[-1] for op in convs)
    # activations: the largest consecutive pair is a lower bound of the planned arena
    acts = [g.tensors[i].numel for i in g.activations()]
    assert t["arena_pair"] == max(a + b for a, b in zip(acts[:-2], acts[1:-1]))  # last = reshape alias
    assert t["arena"] >= t["arena_pair"]
    assert t["classifier_weights"] == (F * 10 + 10) * 4
    assert t["classifier_activations"] == (F + 10) * 4
    assert t["sample_bytes"] == F + 1
    # TyBox accounting: everything against M; buffer from the formula
    assert t["net_bytes"] == t["fe_flash"] + t["arena"] + t["classifier_weights"] + t["classifier_activations"] + t["state"]
    assert (t["buffer_bytes"], t["n_samples"]) == tybox_buffer(M, t["net_bytes"], F, 1)
    assert t["ram_bytes"] <= M
    # RAM-only accounting: larger buffer, the FE weights are not charged
    r = memory_terms(residual_tflite, cls, M, accounting="ram")
    assert r["net_bytes"] == t["net_bytes"] - t["fe_flash"] and r["n_samples"] > t["n_samples"]
    assert r["ram_bytes"] <= M
    df = memory_table(t, {"ram_bytes": t["ram_bytes"] + 10})
    assert set(df.columns) >= {"term", "region", "predicted", "measured"}
    assert abs(df.set_index("term").loc["ram_bytes", "rel_error"]) < 1e-3


def test_arena_plan_never_overlaps_live_tensors(residual_tflite):
    from tinyevo.tybox.model import load_graph

    g = load_graph(residual_tflite)
    size, off = plan_arena(g)
    assert size >= arena_pair(g)
    live = {}
    for op in g.ops:
        if op.kind == "RESHAPE":
            continue
        tensors = [t for t in op.inputs + op.outputs if t >= 0 and not g.tensors[t].is_const]
        spans = [(off[t], off[t] + g.tensors[t].nbytes) for t in tensors]
        for i in range(len(spans)):
            assert spans[i][1] <= size
            for j in range(i + 1, len(spans)):
                if tensors[i] != tensors[j]:
                    assert spans[i][1] <= spans[j][0] or spans[j][1] <= spans[i][0]
        live[op.index] = spans


def test_bad_inputs_are_named(residual_tflite, tmp_path):
    from tinyevo.tybox.model import load_graph

    F = load_graph(residual_tflite).feature_size
    with pytest.raises(ValueError, match="tybox.accounting"):
        memory_terms(residual_tflite, (np.zeros((F, 3)), np.zeros(3)), 10_000, accounting="flash")
    with pytest.raises(ValueError, match="feature size"):
        memory_terms(residual_tflite, (np.zeros((F + 1, 3)), np.zeros(3)), 10_000)
    with pytest.raises(FileNotFoundError, match="int8 feature extractor"):
        memory_terms(tmp_path / "missing.tflite", (np.zeros((F, 3)), np.zeros(3)), 10_000)


def _save_classifier(path, layers_of, seed=0):
    """A classifier .keras file of the layers ``layers_of(keras)`` builds on 12 features, with
    random weights; returns its path."""
    import keras

    inp = keras.Input(shape=(12,), name="features", dtype="float32")
    x = inp
    for layer in layers_of(keras):
        x = layer(x)
    model = keras.Model(inp, x, name="classifier")
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(size=w.shape).astype(np.float32) for w in model.get_weights()])
    model.save(path)
    return path


@pytest.mark.parametrize("activation", ["linear", "softmax"])
def test_classifier_archive_is_read_without_keras_as_keras_reads_it(tmp_path, activation):
    """The compression stage's classifier (an input and one Dense layer) is read from the .keras
    archive itself, and gives exactly the arrays Keras loads; a TyBox job that reads it imports
    neither Keras nor TensorFlow."""
    import subprocess
    import sys

    import keras

    from tinyevo.tybox.memory import _read_one_dense_archive, load_classifier_weights

    path = _save_classifier(tmp_path / "classifier.keras",
                            lambda k: [k.layers.Dense(5, activation=activation, name="classifier")])
    want_kernel, want_bias = keras.models.load_model(path, compile=False).get_layer("classifier").get_weights()
    kernel, bias = _read_one_dense_archive(path)
    assert kernel.shape == (12, 5) and bias.shape == (5,)
    np.testing.assert_array_equal(kernel, want_kernel)
    np.testing.assert_array_equal(bias, want_bias)
    assert not np.array_equal(kernel[:, 0], kernel[:, 1])  # not a constant the test could miss
    code = ("import sys; from tinyevo.tybox.memory import load_classifier_weights as f; "
            f"k, b = f({str(path)!r}); print(k.shape, b.shape, 'keras' in sys.modules, 'tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1] / "workflow")))
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["(12,", "5)", "(5,)", "False", "False"], out.stdout
    np.testing.assert_array_equal(load_classifier_weights(path)[0], want_kernel)


def test_other_classifier_files_go_to_keras_which_names_the_problem(tmp_path):
    """Anything but one Dense layer with a bias and a linear or softmax activation is not read from
    the archive: Keras loads it and the error names what is wrong."""
    from tinyevo.tybox.memory import _read_one_dense_archive, load_classifier_weights

    cases = {
        "two_dense": (lambda k: [k.layers.Dense(6), k.layers.Dense(5)], "single Dense layer"),
        "relu": (lambda k: [k.layers.Dense(5, activation="relu")], "activation 'relu'"),
        "no_bias": (lambda k: [k.layers.Dense(5, use_bias=False)], "needs a bias"),
    }
    for name, (layers_of, message) in cases.items():
        path = _save_classifier(tmp_path / f"{name}.keras", layers_of)
        assert _read_one_dense_archive(path) is None, name
        with pytest.raises(ValueError, match=message):
            load_classifier_weights(path)
    not_an_archive = tmp_path / "weights.keras"
    not_an_archive.write_bytes(b"not a zip file")
    assert _read_one_dense_archive(not_an_archive) is None
