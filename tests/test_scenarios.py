"""Scenario stage: config checks, stream sampling, and the three learners on a tiny real setup
(a tiny net trained on 16x16 digits, exported to int8 TFLite, TyBox C++ generated and built)."""

from __future__ import annotations

import re
import shutil

import numpy as np
import pandas as pd
import pytest

from conftest import TINY, deep_merge, run_snakemake, write_yaml
from tinyevo.config import load_config
from tinyevo.scenarios import ScenarioError, scenario_from_config
from tinyevo.scenarios.stage import gather, plot_scenario, run_variant
from tinyevo.scenarios.streams import check_pool, draw, held_out_pool
from tinyevo.scenarios.tuning import criterion

BUFFER = 12  # N_B of the tiny deployment (device.ram_bytes chosen to fit exactly this many samples)


def _keras_fe(resolution: int, channels: int):
    """A small hand-built feature extractor that keeps the spatial layout (digits stay separable):
    seeded 3x3 stride-2 conv + BN + ReLU6, 2x2 average pooling, Flatten."""
    import keras
    from keras import layers as L

    keras.utils.set_random_seed(0)
    inp = keras.Input((resolution, resolution, channels))
    x = L.Conv2D(6, 3, strides=2, padding="same", use_bias=False)(inp)
    x = L.BatchNormalization()(x)
    x = L.ReLU(max_value=6.0)(x)
    x = L.AveragePooling2D(2)(x)
    return keras.Model(inp, L.Flatten()(x))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """data dir; float model.pt (a tiny TinyNet of the search space); int8 tflite + built TyBox
    project (a hand-built Keras feature extractor); device budget M with N_B = BUFFER.

    Nothing is trained by SGD (too slow for a test on 2 shared cores): BatchNorm statistics come
    from the training images and each classifier is a logistic regression fitted on the (int8,
    dequantised) features of the training split."""
    if shutil.which("g++") is None or shutil.which("make") is None:
        pytest.skip("needs g++ and make")
    import torch
    from sklearn.linear_model import LogisticRegression

    from tinyevo.export.int8 import Int8FE, convert_int8
    from tinyevo.data import load_split, load_stats, prepare, to_tensor
    from tinyevo.data import normalised_nhwc
    from tinyevo.space import space_from_config
    from tinyevo.space.torch_model import build_torch, save_model
    from tinyevo.tybox import codegen, harness
    from tinyevo.tybox.memory import memory_terms

    root = tmp_path_factory.mktemp("scen")
    cfg, _ = load_config([write_yaml(root / "tiny.yaml", TINY)])
    data = root / "data"
    prepare(cfg["dataset"], data)
    (x_tr, y_tr), (x_te, y_te), stats = load_split(data, "train"), load_split(data, "test"), load_stats(data)
    # float model: a search-space net
    space = space_from_config(cfg)
    torch.manual_seed(0)
    model = build_torch(space.netspec(space.initial_population()[0][1]))
    xt = to_tensor(np.asarray(x_tr), *stats)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # cumulative average over the calibration pass
    model.train()
    with torch.no_grad():
        model(xt)
    model.eval()
    with torch.no_grad():
        f_tr = model.features(xt).numpy()
    clf = LogisticRegression(max_iter=2000).fit(f_tr, y_tr)
    with torch.no_grad():
        model.classifier.weight.copy_(torch.from_numpy(clf.coef_.astype(np.float32)))
        model.classifier.bias.copy_(torch.from_numpy(clf.intercept_.astype(np.float32)))
    save_model(root / "model.pt", model, {})
    # int8 feature extractor + TyBox C++
    xn_tr = normalised_nhwc(np.asarray(x_tr), *stats)
    fe = _keras_fe(xn_tr.shape[1], xn_tr.shape[3])
    bn = fe.layers[2]
    h = fe.layers[1](xn_tr).numpy().reshape(-1, 6)
    bn.set_weights([np.ones(6, "float32"), np.zeros(6, "float32"), h.mean(0), h.var(0) + 1e-3])
    tfl = root / "fe_int8.tflite"
    tfl.write_bytes(convert_int8(fe, xn_tr[:48]))
    q = Int8FE(str(tfl))
    clf8 = LogisticRegression(max_iter=3000).fit(q.features(xn_tr), y_tr)
    test_acc = float(clf8.score(q.features(normalised_nhwc(np.asarray(x_te), *stats)), y_te))
    W, b = clf8.coef_.T.astype(np.float32).copy(), clf8.intercept_.astype(np.float32)
    t = memory_terms(tfl, (W, b), 10**8)
    M = int(t["net_bytes"] + BUFFER * t["sample_bytes"])
    proj = root / "tybox"
    codegen.generate(tfl, (W, b), proj, M=M, lr=0.05, loss="mse_softmax", n_test=2)
    harness.build(proj, "g++", 2)
    return {"data": data, "model": root / "model.pt", "tflite": tfl, "project": proj, "M": M, "test_acc": test_acc,
            "W": W, "b": b}


def _run(setup, sc, variant):
    return run_variant(sc, variant, setup["data"], tflite=setup["tflite"], tybox_dir=setup["project"],
                       model_path=setup["model"], device={"ram_bytes": setup["M"]}, tybox={"accounting": "total"},
                       compute_device="cpu")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """Only the tiny digits data (fast): for the sampling and data-check tests."""
    from tinyevo.data import prepare

    root = tmp_path_factory.mktemp("scendata")
    cfg, _ = load_config([write_yaml(root / "tiny.yaml", TINY)])
    prepare(cfg["dataset"], root / "data")
    return root / "data"


# ------------------------------------------------------------------------------ config checks
def _raw(overrides=None):
    """The scenarios section as load_config resolves it (without load_config's own checks)."""
    base = {"names": ["concept_drift", "incremental", "transfer"], "variants": ["tybox", "tinyol", "float"],
            "repetitions": 2, "stream_length": 40, "eval_size": 30, "change_point": 20, "seed": 1,
            "concept_drift": {"swap": [4, 6], "lr": None},
            "incremental": {"base_classes": list(range(8)), "new_classes": [8, 9], "lr": None},
            "transfer": {"source_classes": [0, 1, 2, 3, 4], "target_classes": [5, 6, 7, 8, 9], "lr": None}}
    return deep_merge(base, overrides or {})


@pytest.mark.parametrize("name,overrides,needle", [
    ("concept_drift", {"change_point": 40}, "scenarios.change_point"),
    ("incremental", {"change_point": 55}, "beyond the stream"),
    ("concept_drift", {"concept_drift": {"swap": [4, 12]}}, "scenarios.concept_drift.swap"),
    ("incremental", {"incremental": {"new_classes": [8, 10]}}, "class id(s) [10] not in the dataset"),
    ("incremental", {"incremental": {"base_classes": [0, 1, 8], "new_classes": [8, 9]}}, "share class(es) [8]"),
    ("transfer", {"transfer": {"target_classes": [5, 5, 6]}}, "repeats class ids"),
    ("transfer", {"transfer": {"source_classes": [0, 11]}}, "scenarios.transfer.source_classes"),
])
def test_bad_scenario_config(name, overrides, needle):
    with pytest.raises(ScenarioError, match=r".*" + __import__("re").escape(needle)):
        scenario_from_config(name, _raw(overrides), 10, 0.01)


def test_scenario_lr_falls_back_to_tybox_lr():
    assert scenario_from_config("concept_drift", _raw(), 10, 0.02).lr == 0.02
    assert scenario_from_config("concept_drift", _raw({"concept_drift": {"lr": 0.5}}), 10, 0.02).lr == 0.5


def test_workflow_rejects_bad_class_id_at_start(tmp_path):
    cfg = write_yaml(tmp_path / "bad.yaml", deep_merge(TINY, {"scenarios": {"concept_drift": {"swap": [4, 17]}}}))
    proc = run_snakemake(tmp_path, cfg, ["-n"], check=False, timeout=600)
    assert proc.returncode != 0
    assert "scenarios.concept_drift.swap" in proc.stderr + proc.stdout
    assert "17" in proc.stderr + proc.stdout


# --------------------------------------------------------------------------- pool and streams
def test_eval_set_larger_than_held_out_data(data_dir):
    sc = scenario_from_config("concept_drift", _raw({"eval_size": 5000, "stream_length": 40}), 10, 0.01)
    with pytest.raises(ScenarioError, match="scenarios.eval_size.*5000.*larger than the held-out data"):
        check_pool(held_out_pool(data_dir, sc), sc)


def test_not_enough_images_of_a_class_for_the_stream(data_dir):
    # ~48 held-out images per base class (val + test); the new classes 8, 9 add their unseen training
    # images, so 500 images exist in total, but a balanced 468-sample segment after the change point
    # needs ~47 of every base class on top of the 3 in the evaluation set
    sc = scenario_from_config("incremental", _raw({"stream_length": 470, "change_point": 2}), 10, 0.01)
    pool = held_out_pool(data_dir, sc)
    check_pool(pool, sc)  # enough images in total ...
    with pytest.raises(ScenarioError, match=r"not enough held-out images of class \d for the stream after"):
        draw(pool, sc, 0)  # ... but not of each class


def test_draws(data_dir):
    from tinyevo.data import load_split

    n_val, n_test = len(load_split(data_dir, "val")[1]), len(load_split(data_dir, "test")[1])
    # concept drift: pool = val + test only; eval and stream disjoint, balanced; swap after the change point
    cd = scenario_from_config("concept_drift", _raw(), 10, 0.01)
    pool = held_out_pool(data_dir, cd)
    assert len(pool.y) == n_val + n_test and set(pool.source) == {"val", "test"}
    d0, d1, again = draw(pool, cd, 0), draw(pool, cd, 1), draw(pool, cd, 0)
    assert np.array_equal(d0.stream_idx, again.stream_idx) and np.array_equal(d0.eval_idx, again.eval_idx)
    assert not np.array_equal(d0.stream_idx, d1.stream_idx) and d0.seed != d1.seed
    assert len(set(d0.eval_idx) | set(d0.stream_idx)) == 30 + 40
    assert np.bincount(pool.y[d0.eval_idx], minlength=10).tolist() == [3] * 10
    ys = pool.y[d0.stream_idx]
    assert np.array_equal(d0.stream_targets[:20], ys[:20])
    post = ys[20:]
    assert np.array_equal(d0.stream_targets[20:], np.where(post == 4, 6, np.where(post == 6, 4, post)))
    assert {4, 6} <= set(post.tolist())
    ye = pool.y[d0.eval_idx]
    assert np.array_equal(d0.eval_pre, ye) and np.array_equal(d0.eval_post[ye == 4], np.full((ye == 4).sum(), 6))
    # incremental: unseen train images of the new classes join the pool; new classes only after the change point
    inc = scenario_from_config("incremental", _raw(), 10, 0.01)
    pool = held_out_pool(data_dir, inc)
    assert set(pool.y[pool.source == "train"].tolist()) == {8, 9}
    d = draw(pool, inc, 0)
    ys = pool.y[d.stream_idx]
    assert set(ys[:20].tolist()) <= set(range(8)) and {8, 9} <= set(ys[20:].tolist())
    assert d.eval_new.sum() == 6 and d.eval_old.sum() == 24
    # transfer: target classes only, remapped to 0..k-1
    tr = scenario_from_config("transfer", _raw(), 10, 0.01)
    pool = held_out_pool(data_dir, tr)
    d = draw(pool, tr, 0)
    assert set(pool.y[d.stream_idx].tolist()) <= {5, 6, 7, 8, 9}
    assert np.array_equal(d.stream_targets, pool.y[d.stream_idx] - 5)
    assert set(d.eval_pre.tolist()) == set(range(5))


# --------------------------------------------------------------------------------- learners
DRIFT = {"stream_length": 120, "change_point": 30, "eval_size": 60, "repetitions": 3, "concept_drift": {"lr": 0.05}}


def test_tybox_recovers_more_than_tinyol_after_concept_drift(setup):
    assert setup["test_acc"] > 0.8  # the tiny deployed model is a real classifier
    sc = scenario_from_config("concept_drift", _raw(DRIFT), 10, 0.01)
    ty, ol = _run(setup, sc, "tybox"), _run(setup, sc, "tinyol")
    assert (ty["capacity"] == BUFFER).all() and (ol["capacity"] == 1).all()
    # same streams: identical labels and identical accuracy before any training
    assert np.array_equal(ty["label"].to_numpy(), ol["label"].to_numpy())
    assert np.allclose(ty[ty.step == 0]["accuracy"].to_numpy(), ol[ol.step == 0]["accuracy"].to_numpy())
    final = {n: df[df.step == df.step.max()]["accuracy"].mean() for n, df in (("tybox", ty), ("tinyol", ol))}
    after = ty[ty.step == sc.change_point + 1]["accuracy"].mean()
    assert final["tybox"] > final["tinyol"], final
    assert final["tybox"] > after  # it does recover from the drift


def test_harness_and_float_curves_have_the_same_format(setup, tmp_path):
    sc = scenario_from_config("incremental", _raw({"repetitions": 2}), 10, 0.01)
    ty, fl = _run(setup, sc, "tybox"), _run(setup, sc, "float")
    assert list(ty.columns) == list(fl.columns)
    assert {"acc_old", "acc_new", "accuracy", "repetition", "step", "variant"} <= set(ty.columns)
    assert (ty.dtypes == fl.dtypes).all()
    assert len(ty) == len(fl) == 2 * (40 + 1)
    assert ty.groupby("repetition")["step"].apply(list).tolist() == [list(range(41))] * 2
    assert np.array_equal(ty["label"].to_numpy(), fl["label"].to_numpy())
    # the float learner runs the numpy reference with N_B, as the harness does
    assert (fl["capacity"] == BUFFER).all()
    parts = []
    for v, df in (("tybox", ty), ("float", fl)):
        parts.append(tmp_path / f"{v}.parquet")
        df.to_parquet(parts[-1], index=False)
    summary = gather(parts, tmp_path / "curves.parquet", tmp_path / "summary.parquet", sc.change_point)
    assert summary["variant"].tolist() == ["tybox", "float"]
    assert {"final_mean", "final_std", "final_old_mean", "final_new_mean", "final_new_std"} <= set(summary.columns)
    last = ty[ty.step == 40]
    assert summary.loc[0, "final_mean"] == pytest.approx(last["accuracy"].mean())
    assert summary.loc[0, "final_new_std"] == pytest.approx(last["acc_new"].std(ddof=1))
    # after_change: each repetition's mean over the steps after the change point, as the tuning's
    # criterion computes it from that repetition's curve, then mean / std over the repetitions
    per_rep = [criterion(r.sort_values("step")["accuracy"].to_numpy(), sc) for _, r in ty.groupby("repetition")]
    assert summary.loc[0, "after_change_mean"] == pytest.approx(np.mean(per_rep))
    assert summary.loc[0, "after_change_std"] == pytest.approx(np.std(per_rep, ddof=1))
    new_rep = ty[ty.step > sc.change_point].groupby("repetition")["acc_new"].mean()
    assert summary.loc[0, "after_change_new_mean"] == pytest.approx(new_rep.mean())
    plot_scenario(tmp_path / "curves.parquet", tmp_path / "curves.png", sc.change_point)
    assert (tmp_path / "curves.png").stat().st_size > 1000
    again = gather(parts, tmp_path / "c2.parquet", tmp_path / "s2.parquet", sc.change_point)
    pd.testing.assert_frame_equal(summary, again)


def test_transfer_learns_with_a_fresh_classifier(setup):
    """3 target classes while the generated code has 10 outputs: the C++ is regenerated with a
    fresh 3-way classifier; it starts at chance (all zero weights) and learns on the device."""
    sc = scenario_from_config("transfer", _raw({"stream_length": 60, "eval_size": 30, "repetitions": 2,
                                                "transfer": {"target_classes": [7, 8, 9], "lr": 0.1}}), 10, 0.01)
    df = _run(setup, sc, "tybox")
    assert set(df["label"].unique()) <= {-1, 0, 1, 2}
    start = df[df.step == 0]["accuracy"].mean()
    final = df[df.step == 60]["accuracy"].mean()
    assert start == pytest.approx(1 / 3)  # zero weights: every image predicted as output 0
    assert final > 0.6, final


@pytest.mark.slow
def test_workflow_concept_drift_end_to_end(tiny_pipeline):
    """TINY config through the whole DAG (the shared run of tests/conftest.py) up to the
    concept-drift summary and plot."""
    tmp_path = tiny_pipeline
    targets = ["results/scenarios/concept_drift/summary.parquet", "results/scenarios/concept_drift/curves.png"]
    summary = pd.read_parquet(tmp_path / targets[0])
    assert summary["variant"].tolist() == ["tybox", "tinyol", "float"]
    assert (summary["repetitions"] == TINY["scenarios"]["repetitions"]).all()
    assert summary["final_mean"].between(0, 1).all()
    curves = pd.read_parquet(tmp_path / "results/scenarios/concept_drift/curves.parquet")
    assert len(curves) == 3 * TINY["scenarios"]["repetitions"] * (TINY["scenarios"]["stream_length"] + 1)
    assert (tmp_path / targets[1]).stat().st_size > 1000
    # every learner's settings came from its own tuning job, and the summary records them
    for variant in ("tybox", "tinyol", "float"):
        tune = pd.read_parquet(tmp_path / f"results/scenarios/concept_drift/tune/{variant}.parquet")
        chosen = tune[tune["chosen"]].iloc[0]
        row = summary[summary["variant"] == variant].iloc[0]
        assert row["settings_from"] == "validation"
        assert (row["lr"], row["loss"]) == (chosen["lr"], chosen["loss"])


# ---------------------------------------------------------------------------------- tuning
def test_batch_learner_equals_the_reference_learner_per_grid_point():
    """The sweep's batched learner is the reference learner (and so the C++) for every grid point
    of every stream: own lr, loss, start and stream per classifier."""
    from tinyevo.scenarios.tuning import BatchLearner
    from tinyevo.tybox.reference import OnDeviceLearner

    rng = np.random.default_rng(0)
    F, C, n, G = 24, 5, 60, 6
    q = rng.integers(-128, 128, size=(2, n, F), dtype=np.int8)  # two streams
    y = rng.integers(0, C, size=(2, n))
    lrs = [0.003, 0.05, 0.3, 0.003, 0.05, 0.3]
    losses = ["mse_softmax", "cross_entropy"] * 3
    stream = [0, 0, 0, 1, 1, 1]
    Ws = rng.normal(0, 0.1, size=(G, F, C)).astype(np.float32)
    bs = rng.normal(0, 0.1, size=(G, C)).astype(np.float32)
    bl = BatchLearner(Ws, bs, lrs, 0.02, -3, capacity=7, losses=losses)
    refs = [OnDeviceLearner(Ws[g], bs[g], 0.02, -3, capacity=7, lr=lrs[g], loss=losses[g]) for g in range(G)]
    for i in range(n):
        bl.push_and_train(q[stream, i], y[stream, i])
        for g, r in enumerate(refs):
            r.push_and_train(q[stream[g], i], int(y[stream[g], i]))
    ev = np.stack([bl.dequantise(q[s]) for s in stream])
    for g, r in enumerate(refs):
        assert np.array_equal(bl.W[g], r.W) and np.array_equal(bl.b[g], r.b), g
        assert np.array_equal(bl.predict(ev)[g], r.predict(q[stream[g]]))
    assert not np.array_equal(bl.W[0], Ws[0])  # it did learn
    with pytest.raises(ValueError, match="losses must be 6"):
        BatchLearner(Ws, bs, lrs, 0.02, -3, capacity=7, losses=["mse"] * 6)


def test_reset_new_class_rows_and_grid():
    from tinyevo.scenarios.tuning import grid, initial_classifier

    sc = scenario_from_config("incremental", _raw(), 10, 0.01)
    W = np.arange(30, dtype=np.float32).reshape(3, 10)
    b = np.arange(10, dtype=np.float32)
    W1, b1 = initial_classifier(W, b, sc, "reset")
    assert np.array_equal(W1[:, :8], W[:, :8]) and not W1[:, 8:].any()
    assert b1[8] == b1[9] == pytest.approx(np.mean(range(8))) and np.array_equal(b1[:8], b[:8])
    assert np.array_equal(initial_classifier(W, b, sc, "keep")[0], W)
    tune = {"lrs": [0.1, 0.01], "losses": ["mse_softmax", "cross_entropy"], "new_class_init": ["keep", "reset"]}
    pts = grid(sc, tune)
    assert len(pts) == 8 and pts[0] == (0.01, "mse_softmax", "keep")  # lrs ascending
    drift = scenario_from_config("concept_drift", _raw(), 10, 0.01)
    assert grid(drift, tune, fixed_lr=0.05) == [(0.05, "mse_softmax", "keep"), (0.05, "cross_entropy", "keep")]
    with pytest.raises(ScenarioError, match=r"scenarios\.tune\.losses' is empty"):
        grid(drift, {**tune, "losses": []})


def test_validation_pool_shares_no_image_with_the_evaluation_pool(data_dir):
    from tinyevo.scenarios.streams import validation_pool

    for name in ("concept_drift", "incremental", "transfer"):
        sc = scenario_from_config(name, _raw(), 10, 0.01)
        ev, va = held_out_pool(data_dir, sc), validation_pool(data_dir, sc)
        ev_keys = set(zip(ev.source.tolist(), ev.index.tolist()))
        va_keys = set(zip(va.source.tolist(), va.index.tolist()))
        assert ev_keys and va_keys and not ev_keys & va_keys, name
        assert set(va.source.tolist()) == {"train"}
        if sc.new_classes or sc.fresh_classifier:  # the untrained classes are split between the two
            untrained = sorted(set(range(10)) - set(sc.trained_classes))
            assert set(np.unique(ev.y[ev.source == "train"]).tolist()) == set(untrained)
            assert set(untrained) <= set(np.unique(va.y).tolist())


def test_tuning_never_reads_the_evaluation_images(setup, tmp_path):
    """The sweep on the real data and on a copy whose evaluation pool (val, test and the evaluation
    half of the untrained classes' training images) is replaced by noise gives the same table;
    the evaluation run with the chosen settings records them in its curves."""
    from tinyevo.scenarios.stage import tune_variant
    from tinyevo.scenarios.streams import validation_half
    from tinyevo.scenarios.tuning import chosen_settings

    sc = scenario_from_config("incremental", _raw({"stream_length": 40, "eval_size": 20}), 10, 0.01)
    tune = {"lrs": [0.01, 0.1], "losses": ["mse_softmax", "cross_entropy"], "new_class_init": ["keep", "reset"],
            "repetitions": 2}
    kw = dict(tflite=setup["tflite"], tybox_dir=setup["project"], model_path=setup["model"],
              device={"ram_bytes": setup["M"]}, tybox={"accounting": "total"}, compute_device="cpu")
    noisy = tmp_path / "data"
    shutil.copytree(setup["data"], noisy)
    rng = np.random.default_rng(1)
    for split in ("val", "test", "train"):
        x = np.load(noisy / f"{split}_x.npy")
        keep = validation_half(np.load(noisy / f"{split}_y.npy"), sc) if split == "train" else np.zeros(len(x), bool)
        x[~keep] = rng.integers(0, 256, size=x[~keep].shape, dtype=np.uint8)
        np.save(noisy / f"{split}_x.npy", x)
    for variant in ("tybox", "float"):
        a = tune_variant(sc, variant, setup["data"], tune, **kw)
        b = tune_variant(sc, variant, noisy, tune, **kw)
        pd.testing.assert_frame_equal(a, b)
        assert len(a) == 8 and a["chosen"].sum() == 1 and a["criterion"].between(0, 1).all()
        assert a["criterion"].nunique() > 1  # the grid points differ: the sweep measures something
    st = chosen_settings(a)
    curves = run_variant(sc, "float", setup["data"], settings=st, **kw)
    assert (curves["lr"] == st.lr).all() and (curves["loss"] == st.loss).all()
    assert (curves["new_class_init"] == st.new_class_init).all() and (curves["settings_from"] == "validation").all()


def test_criterion_se_is_the_spread_over_the_validation_draws(setup):
    """validation_criteria gives one criterion per (draw, grid point), each the one a sweep on
    that draw alone gives; the tuning table's criterion_se is their standard error."""
    from tinyevo.scenarios.stage import validation_setup
    from tinyevo.scenarios.tuning import run_validation, validation_criteria

    sc = scenario_from_config("incremental", _raw({"stream_length": 40, "eval_size": 20}), 10, 0.01)
    tune = {"lrs": [0.01, 0.1], "losses": ["mse_softmax", "cross_entropy"], "new_class_init": ["keep", "reset"],
            "repetitions": 3}
    s = validation_setup(sc, "tybox", setup["data"], tune, tflite=setup["tflite"], tybox_dir=setup["project"],
                         device={"ram_bytes": setup["M"]}, tybox={"accounting": "total"})
    args = (s.feats, s.W, s.b, s.scale, s.zero_point, s.capacity, s.scenario)
    per = validation_criteria(*args, s.draws, s.points)
    assert per["criterion"].shape == per["final"].shape == (3, 8)
    for j, d in enumerate(s.draws):
        alone = run_validation(*args, [d], s.points)
        assert [r["criterion"] for r in alone] == pytest.approx(per["criterion"][j], abs=1e-12)
        assert np.isnan([r["criterion_se"] for r in alone]).all()  # one draw: no spread to measure
    rows = run_validation(*args, s.draws, s.points)
    se = per["criterion"].std(axis=0, ddof=1) / np.sqrt(3)
    assert [r["criterion_se"] for r in rows] == pytest.approx(se, abs=1e-12)
    assert [r["criterion"] for r in rows] == pytest.approx(per["criterion"].mean(axis=0), abs=1e-12)
    assert (se > 0).any()  # the draws differ


def test_harness_initial_weights_are_the_generated_classifier(setup):
    from tinyevo.tybox import harness

    W, b = harness.initial_weights(setup["project"])
    info = harness.info(setup["project"])
    assert np.array_equal(W, setup["W"]) and np.array_equal(b, setup["b"])
    # one stream step at a real lr moves them; the lr-0 read does not
    q = np.zeros((1, info["feature_size"]), np.int8)
    moved = harness.stream(setup["project"], q, np.zeros(1, np.int32), q, np.zeros(1, np.int32), capacity=1,
                           lr=0.5, features=True)["weights"]
    assert not np.array_equal(moved[1], b)
    assert np.array_equal(harness.initial_weights(setup["project"])[1], b)


# ------------------------------------------------------------- defaults from the class count
def test_scenario_defaults_follow_the_class_count():
    from tinyevo.scenarios.setup import fill_defaults

    ten = fill_defaults({"concept_drift": {}, "incremental": {}, "transfer": {}}, 10)
    assert ten["names"] == ["concept_drift", "incremental", "transfer"]
    assert ten["concept_drift"]["swap"] == [4, 6]
    assert ten["incremental"] == {"new_classes": [8, 9], "base_classes": list(range(8))}
    assert ten["transfer"] == {"source_classes": [0, 1, 2, 3, 4], "target_classes": [5, 6, 7, 8, 9]}
    three = fill_defaults({}, 3)
    assert three["names"] == ["concept_drift", "incremental"]  # transfer needs 2 + 2 classes
    assert three["concept_drift"]["swap"] == [1, 2]
    assert three["incremental"] == {"new_classes": [2], "base_classes": [0, 1]}
    assert fill_defaults({}, 2)["names"] == ["concept_drift"]
    # a list the user set is kept, its complement fills the other
    mine = fill_defaults({"names": ["incremental"], "incremental": {"base_classes": [1, 2, 3]}}, 5)
    assert mine["names"] == ["incremental"] and mine["incremental"]["new_classes"] == [0, 4]


def test_shipped_imagefolder_config_plans_on_a_three_class_tree(tmp_path):
    """config/imagefolder.yaml without overrides on a small 3-class tree: the scenario defaults
    fit the class count, so the whole DAG plans (snakemake -n)."""
    from fixtures_data import make_imagefolder

    from conftest import REPO

    make_imagefolder(tmp_path / "data" / "my_images", per_class=6)  # 3 classes
    proc = run_snakemake(tmp_path, REPO / "config" / "imagefolder.yaml", extra=["-n", "--quiet", "rules"])
    assert proc.returncode == 0
    out = proc.stdout + proc.stderr
    assert re.search(r"^scenario_run\s+6$", out, re.M), out[-3000:]  # 2 scenarios x 3 learners
    assert re.search(r"^train\s+3$", out, re.M), out[-3000:]  # C, NC, C-inc (no transfer branch)
