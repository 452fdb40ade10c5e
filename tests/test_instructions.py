"""The search's instruction-count model (tinyevo.space.instructions): the features of a NetSpec
equal those of its converted int8 .tflite, the fit recovers known coefficients and reports its
leave-one-out error, the shipped Cortex-M4F model predicts a net measured here under QEMU within
its reported error, and constraints.max_instructions flags nets by the estimate."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from tinyevo.space import instructions as I
from tinyevo.space.constraints import Constraints, constraints_from_config
from tinyevo.space.spec import GENES, Genes, SearchSpace

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _space(resolution: int = 32) -> SearchSpace:
    from tinyevo.config import load_config

    cfg, _ = load_config([])
    cfg["search_space"]["resolution"] = resolution
    return SearchSpace.from_config(cfg["search_space"])


def _random_specs(space: SearchSpace, n: int, seed: int):
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n:
        g = Genes(*(tuple(int(rng.choice(space.allowed(k))) for _ in range(space.n_stages)) for k in GENES))
        out.append(space.netspec(g))
    return out


def _plain_features(spec) -> dict:
    """The features counted directly from the layer walk (no graph), for comparison."""
    f = dict.fromkeys(I.FEATURES, 0)
    f["const"] = 1
    for l in spec.layers():
        if l.kind == "conv":
            f["conv1x1_macs" if l.kernel == 1 else "convkxk_macs"] += l.macs
        elif l.kind == "dwconv":
            f["dw_macs"] += l.macs
        if l.kind in ("conv", "dwconv"):
            f["conv_out"] += l.out_act
            f["ops"] += 1
            if l.stride > 1 and l.pad > 0 and l.in_hw % 2 == 0:  # odd sizes: SAME pads symmetrically, folded
                f["pad_elems"] += (l.in_hw + 2 * l.pad) ** 2 * l.cin
                f["ops"] += 1
        elif l.kind == "add":
            f["add_elems"] += l.out_act
            f["ops"] += 1
        elif l.kind == "pool":
            f["pool_elems"] += l.in_act
            f["ops"] += 1
    return f


def test_spec_features_equal_a_plain_count_over_the_layers():
    for res in (32, 24, 16):
        space = _space(res)
        for spec in _random_specs(space, 8, seed=res):
            assert I.spec_features(spec) == _plain_features(spec)


def test_spec_features_equal_the_converted_tflite():
    """The search's estimate and the deployed net's check read the same features: a net of the
    space, converted to int8 TFLite through the pipeline's export, gives the NetSpec's features."""
    import torch

    from tinyevo.export.int8 import convert_int8
    from tinyevo.export.keras_model import split_keras, torch_to_keras
    from tinyevo.space.torch_model import build_torch
    from tinyevo.tybox.model import load_graph

    space = _space(16)
    spec = space.netspec("r2e1c016-r1e6c016-r2e6c024-r1e6c024-r1e6c064-r1e1c128-r1e6c128")
    torch.manual_seed(0)
    fe, _ = split_keras(torch_to_keras(build_torch(spec).eval()))
    rep = np.random.default_rng(0).normal(0, 1, (4, 16, 16, 1)).astype(np.float32)
    g = load_graph(_write(convert_int8(fe, rep)))
    assert I.graph_features(g) == I.spec_features(spec)
    assert I.graph_features(g)["pad_elems"] > 0 and I.graph_features(g)["add_elems"] > 0


def _write(blob: bytes):
    import tempfile
    from pathlib import Path

    p = Path(tempfile.mkdtemp()) / "fe.tflite"
    p.write_bytes(blob)
    return p


def test_fit_recovers_known_coefficients_and_reports_loo_error():
    space = _space()
    feats = [I.spec_features(s) for s in _random_specs(space, 30, seed=2)]
    true = dict(zip(I.FEATURES, [2.0, 9.0, 6.0, 40.0, 25.0, 3.0, 2.0, 500.0, 3000.0]))
    y = [sum(true[k] * f[k] for k in I.FEATURES) for f in feats]
    m = I.fit(feats, y, "test")
    # at one resolution the stem (k x k MACs), the pool, the op count and the constant move together
    # or not at all, so only the per-MAC and per-element coefficients are identifiable; the
    # predictions are exact either way
    for k in ("conv1x1_macs", "dw_macs", "conv_out", "add_elems"):
        assert m.coef[k] == pytest.approx(true[k], rel=1e-4), k
    assert [m.predict_features(f) for f in feats] == pytest.approx(y, rel=1e-7)
    assert m.fit["n"] == 30 and m.fit["loo_max_abs_rel_error"] < 1e-6
    # noise shows in the errors, leave-one-out no smaller than in-sample
    rng = np.random.default_rng(0)
    noisy = [v * (1 + rng.normal(0, 0.02)) for v in y]
    m2 = I.fit(feats, noisy, "test")
    assert 0.005 < m2.fit["mean_abs_rel_error"] <= m2.fit["loo_mean_abs_rel_error"] < 0.1
    with pytest.raises(ValueError, match="at least"):
        I.fit(feats[:5], y[:5], "test")
    with pytest.raises(ValueError, match="positive"):
        I.fit(feats, [0.0] * len(feats), "test")


def test_models_round_trip_and_refuse_bad_coefficients(tmp_path):
    m = I.InstructionModel("t", dict(zip(I.FEATURES, range(len(I.FEATURES)))), {"n": 3})
    p = tmp_path / "models.json"
    I.save_models({"t": m}, p)
    back = I.load_models(p)["t"]
    assert back.coef == {k: float(v) for k, v in m.coef.items()} and back.fit == {"n": 3}
    raw = json.loads(p.read_text())
    raw["t"]["coef"]["dw_macs"] = -1.0
    p.write_text(json.dumps(raw))
    with pytest.raises(ValueError, match="negative"):
        I.load_models(p)
    I.save_models({"t": m}, p)
    with pytest.raises(ValueError, match="constraints.max_instructions.*'nope'.*fitted: \\['t'\\]"):
        I.model_for("nope", p)


def test_shipped_model_is_fitted_with_its_error_reported():
    m = I.model_for("cortex-m4f")
    assert m.fit["n"] >= 16
    assert m.fit["loo_mean_abs_rel_error"] < 0.05
    assert {"toolchain", "flags", "command"} <= set(m.fit)
    assert m.coef["conv1x1_macs"] > 0 and m.coef["dw_macs"] > 0


def _cfg(**constraints):
    from tinyevo.config import load_config

    cfg, _ = load_config([])
    cfg["constraints"] = {**cfg["constraints"], **constraints}
    return cfg


def test_max_instructions_constraint_flags_by_the_estimate():
    space = _space()
    specs = _random_specs(space, 20, seed=4)
    model = I.model_for("cortex-m4f")
    est = [model.predict_spec(s) for s in specs]
    bound = int(np.median(est))
    c = constraints_from_config(_cfg(max_instructions=bound, max_params=None, max_macs=None))
    assert "ok_max_instructions" in c.limit_columns
    for s, e in zip(specs, est):
        row = c.measure(s)
        assert row["instructions"] == e
        assert c.check(row)["ok_max_instructions"] == (e <= bound)
    assert {c.check(c.measure(s))["ok_max_instructions"] for s in specs} == {True, False}
    # without the limit the estimate is not computed
    assert "instructions" not in constraints_from_config(_cfg()).measure(specs[0])


def test_max_instructions_needs_a_fitted_target():
    cfg = _cfg(max_instructions=10_000_000)
    cfg["tybox"] = {**cfg.get("tybox", {}), "target": "host"}
    with pytest.raises(ValueError, match="constraints.max_instructions.*'host'"):
        constraints_from_config(cfg)
    with pytest.raises(ValueError, match="constraints.max_instructions"):
        Constraints.from_config({"max_instructions": 0})
