"""torch -> Keras export and the int8 feature extractor (small nets, 8-16 px inputs)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

tf = pytest.importorskip("tensorflow")

from tinyevo.compress.budget import spec_memory  # noqa: E402
from tinyevo.export.keras_model import nchw_to_nhwc, split_keras, torch_to_keras  # noqa: E402
from tinyevo.compress.prune import prune_unit, units_of  # noqa: E402
from tinyevo.export.int8 import Int8FE, convert_int8, representative_indices  # noqa: E402
from tinyevo.compress.stage import export_int8  # noqa: E402
from tinyevo.space.spec import BlockSpec, NetSpec  # noqa: E402

from test_compress import randomised, small_spec  # noqa: E402


def other_specs():
    yield small_spec(resolution=12)
    # odd input size, stride-2 depthwise with kernel 5, stem stride 1, one input channel
    yield NetSpec(11, 1, 6, 1, 3, (BlockSpec(6, 12, 6, 1, 5, True, 0), BlockSpec(6, 18, 10, 2, 5, True, 1)), 14, 3)
    # no blocks at all
    yield NetSpec(8, 3, 4, 2, 3, (), 6, 2)


def assert_equivalent(model, n=5, seed=0):
    spec = model.spec
    x = torch.from_numpy(np.random.default_rng(seed).standard_normal(
        (n, spec.in_channels, spec.resolution, spec.resolution)).astype(np.float32))
    km = torch_to_keras(model)
    with torch.no_grad():
        t = model.eval()(x).numpy()
    k = np.asarray(km(nchw_to_nhwc(x.numpy()), training=False))
    assert k.shape == t.shape
    assert np.abs(k - t).max() < 1e-4
    return km


@pytest.mark.parametrize("idx", [0, 1, 2])
def test_keras_equals_torch(idx):
    spec = list(other_specs())[idx]
    km = assert_equivalent(randomised(spec, seed=idx))
    names = [layer.name for layer in km.layers]
    assert names.count("flatten") == 1 and names[-1] == "classifier"
    # stride-2 kxk convs use explicit symmetric padding, never Keras 'same'
    for layer in km.layers:
        if layer.name.endswith("_conv") and layer.strides[0] > 1 and layer.kernel_size[0] > 1:
            assert layer.padding == "valid" and f"{layer.name[:-5]}_pad" in names


def test_keras_equals_torch_after_pruning_every_unit():
    spec = small_spec(resolution=12, head=20)
    m = randomised(spec, seed=3)
    for u in units_of(spec):
        m, _ = prune_unit(m, u, max(1, int(0.6 * (m.spec.head_out if u.kind == "head" else 8))))
    assert m.spec != spec
    assert_equivalent(m)


def test_split_keras():
    m = randomised(small_spec(resolution=12, head=20))
    km = torch_to_keras(m)
    fe, clf = split_keras(km)
    x = np.random.default_rng(1).standard_normal((3, 12, 12, 3)).astype(np.float32)
    f = np.asarray(fe(x, training=False))
    assert f.shape == (3, 20)
    with torch.no_grad():
        np.testing.assert_allclose(f, m.features(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy(), atol=1e-4)
    np.testing.assert_allclose(np.asarray(clf(f)), np.asarray(km(x, training=False)), atol=1e-5)


def test_representative_indices_seeded():
    a = representative_indices(100, 10, 3)
    assert len(set(a.tolist())) == 10 and np.array_equal(a, representative_indices(100, 10, 3))
    assert not np.array_equal(a, representative_indices(100, 10, 4))
    assert len(representative_indices(5, 10, 0)) == 5
    with pytest.raises(ValueError, match="empty"):
        representative_indices(0, 10, 0)


@pytest.fixture(scope="module")
def int8_model(tmp_path_factory):
    spec = small_spec(resolution=12, head=20)
    m = randomised(spec, seed=5)
    fe, _ = split_keras(torch_to_keras(m))
    rep = np.random.default_rng(0).standard_normal((24, 12, 12, 3)).astype(np.float32)
    tfl = convert_int8(fe, rep)
    path = tmp_path_factory.mktemp("int8") / "fe.tflite"
    path.write_bytes(tfl)
    return m, fe, rep, path


def test_int8_fe_dtypes_qparams_and_accuracy(int8_model):
    m, fe, rep, path = int8_model
    it = Int8FE(str(path))
    assert it.input_dtype == np.int8 and it.output_dtype == np.int8
    for q in (it.input_qparams, it.output_qparams):
        assert q.scale > 0 and -128 <= q.zero_point <= 127
    # every quantised weight tensor is int8 with positive per-channel scales
    from ai_edge_litert.interpreter import Interpreter

    details = Interpreter(model_path=str(path)).get_tensor_details()
    weights = [d for d in details if d["quantization_parameters"]["scales"].size > 1]
    assert weights and all(d["dtype"] in (np.int8, np.int32) for d in weights)
    assert all((d["quantization_parameters"]["scales"] > 0).all() for d in weights)
    x = np.random.default_rng(9).standard_normal((16, 12, 12, 3)).astype(np.float32)
    q = it.run_int8(it.quantize_input(x))
    assert q.dtype == np.int8 and q.shape == (16, 20)
    deq = it.features(x)
    ref = np.asarray(fe(x, training=False))
    scale = it.output_qparams.scale
    err = np.abs(deq - ref)
    assert err.mean() < 3 * scale and np.corrcoef(deq.ravel(), ref.ravel())[0, 1] > 0.98
    # the batched run equals image-by-image runs
    one = np.concatenate([it.run_int8(it.quantize_input(x[i:i + 1])) for i in range(4)])
    np.testing.assert_array_equal(one, q[:4])


def test_spec_memory_equals_tybox_memory_of_the_real_tflite(int8_model):
    from tinyevo.tybox.memory import memory_terms
    from tinyevo.tybox.model import load_graph

    m, _, _, path = int8_model
    kernel = m.classifier.weight.detach().numpy().T
    bias = m.classifier.bias.detach().numpy()
    for acc in ("total", "ram"):
        real = memory_terms(load_graph(str(path)), (kernel, bias), 60_000, accounting=acc)
        pred = spec_memory(m.spec, 60_000, accounting=acc)
        for k in ("fe_weights", "fe_biases", "fe_quant_params", "arena_pair", "arena", "net_bytes", "n_samples"):
            assert pred[k] == real[k], k


def test_export_int8_accuracy_on_separable_data():
    spec = NetSpec(8, 1, 4, 2, 3, (BlockSpec(4, 8, 6, 2, 3, True, 0),), 8, 2)
    m = randomised(spec, seed=0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 8, 8, 1)).astype(np.float32)
    with torch.no_grad():
        y = m(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).argmax(1).numpy()  # labels = the float model's
    res = export_int8(m, x, (x, y), representative_samples=20, seed=0)
    assert res.float_test_acc == 1.0 and res.max_logit_diff < 1e-4
    assert res.test_acc >= 0.8
    assert res.classifier.get_layer("classifier").get_weights()[0].shape == (8, 2)


def _fake_stage_inputs(tmp_path, n_classes=3, res=12):
    """A saved 'trained' model (training meta with settings and classes) and a data folder."""
    import pandas as pd

    from tinyevo.io import save_npy, write_parquet
    from tinyevo.space.torch_model import save_model

    rng = np.random.default_rng(0)
    data = tmp_path / "data"
    for split, n in (("train", 60), ("test", 30)):
        y = np.arange(n, dtype=np.int64) % n_classes
        x = (rng.integers(0, 60, (n, res, res, 1)) + 60 * y[:, None, None, None]).astype(np.uint8)
        save_npy(data / f"{split}_x.npy", x)
        save_npy(data / f"{split}_y.npy", y)
    write_parquet(pd.DataFrame({"channel": [0], "mean": [0.4], "std": [0.25]}), data / "stats.parquet")
    spec = NetSpec(res, 1, 4, 2, 3, (BlockSpec(4, 8, 8, 2, 3, True, 0), BlockSpec(8, 16, 8, 1, 3, True, 1)),
                   24, n_classes)
    meta = {"net": "C", "arch": "test", "classes": list(range(n_classes)), "num_outputs": n_classes, "remap": False,
            "settings": {"epochs": 1, "lr": 0.05, "momentum": 0.9, "weight_decay": 0.0, "batch_size": 16,
                         "schedule": "constant", "augment": False, "flip": False, "seed": 0}}
    save_model(tmp_path / "model.pt", randomised(spec, seed=2), meta)
    return tmp_path / "model.pt", data


def test_run_compress_end_to_end(tmp_path):
    import pandas as pd

    from tinyevo.compress.stage import plot_compress, run_compress
    from tinyevo.space.torch_model import load_model

    model, data = _fake_stage_inputs(tmp_path)
    out = {k: str(tmp_path / "out" / f) for k, f in (("pruning", "pruning.parquet"), ("summary", "summary.parquet"),
                                                      ("tflite", "fe_int8.tflite"), ("clf", "classifier.keras"),
                                                      ("model", "pruned.pt"))}
    comp = {"step_fraction": 0.25, "max_steps": 3, "finetune_epochs": 1, "finetune_lr": 0.01,
            "representative_samples": 16}
    # M with room for 5 samples only once the head has been pruned twice (F = 24 -> 18 -> 14)
    from tinyevo.compress.budget import spec_memory
    from tinyevo.compress.prune import next_unit, pruned_spec

    spec = load_model(str(model))[1]
    specs = [spec]
    for _ in range(3):
        u, k = next_unit(specs[-1], 0.25)
        specs.append(pruned_spec(specs[-1], u, k))
    needs = [spec_memory(s, 10**6)["net_bytes"] + 5 * (s.head_out + 1) for s in specs]
    M = needs[2]
    assert needs[1] > M
    summary = run_compress(str(model), str(data), "C", comp, {"ram_bytes": M, "min_buffer_samples": 5}, "cpu", 0,
                           out["pruning"], out["summary"], out["tflite"], out["clf"], out["model"])
    pr = pd.read_parquet(out["pruning"])
    assert list(pr["step"]) == [0, 1, 2, 3] and list(pr["chosen"]) == [False, False, True, False]
    assert list(pr["fits"]) == [False, False, True, True]
    assert list(summary["model"]) == ["baseline_float", "pruned_float", "pruned_int8_fe"]
    assert summary["share_of_baseline"].iloc[0] == 1.0
    assert summary["share_of_baseline"].iloc[2] < summary["share_of_baseline"].iloc[1] < 1.0
    assert summary["buffer_samples"].iloc[2] == 5
    assert summary["test_acc"].between(0, 1).all()
    pruned, pspec, meta = load_model(out["model"])
    assert pspec == specs[2] and meta["pruned_step"] == 2
    it = Int8FE(out["tflite"])
    assert it.input_dtype == np.int8 and int(it.output_detail["shape"][-1]) == pspec.feature_size
    plot_compress(out["pruning"], out["summary"], str(tmp_path / "out" / "plot.png"))
    assert (tmp_path / "out" / "plot.png").stat().st_size > 1000
    # a budget no step can meet: clear error, no outputs
    from tinyevo.compress.budget import BudgetError

    out2 = {k: v.replace("/out/", "/out2/") for k, v in out.items()}
    with pytest.raises(BudgetError, match="device.ram_bytes"):
        run_compress(str(model), str(data), "C", dict(comp, finetune_epochs=0), {"ram_bytes": 2000,
                     "min_buffer_samples": 5}, "cpu", 0, out2["pruning"], out2["summary"], out2["tflite"],
                     out2["clf"], out2["model"])
    assert not (tmp_path / "out2").exists() or not any((tmp_path / "out2").iterdir())


@pytest.mark.slow
def test_snakemake_compress_tiny(tiny_pipeline):
    """Outputs of the compress rule in the shared TINY pipeline run (tests/conftest.py)."""
    import pandas as pd

    tmp_path = tiny_pipeline
    s = pd.read_parquet(tmp_path / "results/compress/C/summary.parquet")
    assert list(s["model"]) == ["baseline_float", "pruned_float", "pruned_int8_fe"]
    assert (tmp_path / "results/compress/C/fe_int8.tflite").is_file()
