"""Training loop, resume, class subsets, bad input and the training rule."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP (shared cores)

import logging

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import MICRO_SPACE
from tinyevo.space import Genes, SearchSpace
from tinyevo.space.torch_model import build_torch, load_model, save_model
from tinyevo.train import loop as loop_mod
from tinyevo.train.classes import class_subset
from tinyevo.train.loop import augment_batch, evaluate, fit, load_checkpoint, resolve_settings
from tinyevo.train.stage import confusion_table, run_training, selected_arch, train_net

torch.set_num_threads(1)

STATS = (np.array([0.3], dtype=np.float32), np.array([0.3], dtype=np.float32))
SCENARIOS = {"incremental": {"base_classes": [0, 1, 2]}, "transfer": {"source_classes": [3, 1]}}


def tiny_space(num_classes=4, res=8):
    return SearchSpace(resolution=res, in_channels=1, num_classes=num_classes, stem_width=4, stem_stride=1,
                       strides=(1, 2), head_width=16, kernel_size=3, round_divisor=4,
                       alphabets={"repeats": (1, 2), "expansions": (1, 2), "channels": (4, 8)},
                       grid={"structures": ((1, 1),), "expansions": ((1, 2),), "channels": ((4, 8),)})


def tiny_spec(num_classes=4, channels=(4, 8)):
    return tiny_space(num_classes).netspec(Genes((1, 1), (1, 2), channels))


def toy_data(n=160, res=8, classes=4, seed=0):
    """Learnable: the class is the bright quadrant (plus noise)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n).astype(np.int64)
    x = rng.integers(0, 60, (n, res, res, 1)).astype(np.uint8)
    h = res // 2
    for i, c in enumerate(y):
        r, q = divmod(int(c) % 4, 2)
        x[i, r * h:(r + 1) * h, q * h:(q + 1) * h] += 150
    return x, y


def make_model(seed=0, **kw):
    torch.manual_seed(seed)
    return build_torch(tiny_spec(**kw))


SETTINGS = {"epochs": 3, "batch_size": 16, "lr": 0.05}


def test_fit_learns_toy_task():
    x, y = toy_data(192)
    model = make_model()
    hist = fit(model, (x[:128], y[:128]), (x[128:], y[128:]), STATS, {**SETTINGS, "epochs": 5}, progress=False)
    assert list(hist.columns) == ["epoch", "train_loss", "train_acc", "test_loss", "test_acc", "lr", "seconds"]
    assert hist["epoch"].tolist() == [1, 2, 3, 4, 5]
    assert hist["train_loss"].iloc[-1] < 0.6 * hist["train_loss"].iloc[0]
    assert hist["train_acc"].iloc[-1] > 0.6
    loss, acc, pred = evaluate(model, x[128:], y[128:], STATS, "cpu")
    assert pred.shape == (64,) and pred.dtype == np.int64
    assert acc == pytest.approx(float((pred == y[128:]).mean()))
    assert loss == pytest.approx(hist["test_loss"].iloc[-1]) and acc == pytest.approx(hist["test_acc"].iloc[-1])
    assert acc > 0.4  # chance is 0.25


def test_memmap_input_and_cosine_schedule(tmp_path):
    x, y = toy_data(64)
    np.save(tmp_path / "x.npy", x)
    xm = np.load(tmp_path / "x.npy", mmap_mode="r")
    h1 = fit(make_model(), (xm, y), None, STATS, {**SETTINGS, "schedule": "cosine"}, progress=False)
    h2 = fit(make_model(), (x, y), None, STATS, {**SETTINGS, "schedule": "cosine"}, progress=False)
    assert h1["lr"].tolist() == pytest.approx([0.05, 0.05 * 0.75, 0.05 * 0.25])
    assert h1["test_acc"].isna().all()
    pd.testing.assert_frame_equal(h1.drop(columns="seconds"), h2.drop(columns="seconds"))


def test_same_seed_same_weights_other_seed_other_order():
    x, y = toy_data(64)
    a, b, c = make_model(), make_model(), make_model()
    fit(a, (x, y), None, STATS, SETTINGS, progress=False)
    fit(b, (x, y), None, STATS, SETTINGS, progress=False)
    fit(c, (x, y), None, STATS, {**SETTINGS, "seed": 5}, progress=False)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_amp_flag_is_ignored_on_cpu():
    x, y = toy_data(48)
    a, b = make_model(), make_model()
    fit(a, (x, y), None, STATS, {**SETTINGS, "epochs": 1}, amp=True, progress=False)
    fit(b, (x, y), None, STATS, {**SETTINGS, "epochs": 1}, amp=False, progress=False)
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())


def test_resume_after_kill_gives_identical_weights(tmp_path, monkeypatch):
    x, y = toy_data(96)
    settings = {**SETTINGS, "epochs": 4, "schedule": "cosine", "augment": True, "flip": True}
    train, test = (x[:64], y[:64]), (x[64:], y[64:])

    ref = make_model()
    ref_hist = fit(ref, train, test, STATS, settings, checkpoint_path=tmp_path / "ref.pt", progress=False)

    # "kill" the run during epoch 3 (after 2 checkpoints were written)
    calls = {"n": 0}
    real_evaluate = loop_mod.evaluate

    def dying_evaluate(*a, **kw):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("killed")
        return real_evaluate(*a, **kw)

    monkeypatch.setattr(loop_mod, "evaluate", dying_evaluate)
    ck = tmp_path / "run.pt"
    with pytest.raises(KeyboardInterrupt):
        fit(make_model(), train, test, STATS, settings, checkpoint_path=ck, progress=False)
    monkeypatch.setattr(loop_mod, "evaluate", real_evaluate)
    assert load_checkpoint(ck)["epoch"] == 2

    # the re-run starts from a differently initialised model: the checkpoint must win
    resumed = make_model(seed=123)
    hist = fit(resumed, train, test, STATS, settings, checkpoint_path=ck, progress=False)
    assert hist["epoch"].tolist() == [1, 2, 3, 4]
    pd.testing.assert_frame_equal(hist.drop(columns="seconds"), ref_hist.drop(columns="seconds"))
    rs, ss = ref.state_dict(), resumed.state_dict()
    assert rs.keys() == ss.keys()
    for k in rs:
        assert torch.equal(rs[k], ss[k]), k
    # a finished checkpoint: re-running does no more epochs and keeps the weights
    again = make_model(seed=7)
    hist2 = fit(again, train, test, STATS, settings, checkpoint_path=ck, progress=False)
    assert len(hist2) == 4
    assert all(torch.equal(v, rs[k]) for k, v in again.state_dict().items())


def test_checkpoint_of_other_net_or_settings(tmp_path):
    x, y = toy_data(32)
    ck = tmp_path / "ck.pt"
    fit(make_model(), (x, y), None, STATS, {**SETTINGS, "epochs": 1}, checkpoint_path=ck, progress=False)
    other = make_model(channels=(8, 8))
    with pytest.raises(ValueError, match="NetSpec mismatch"):
        fit(other, (x, y), None, STATS, {**SETTINGS, "epochs": 2}, checkpoint_path=ck, progress=False)
    with pytest.raises(ValueError, match="settings differ.*lr"):
        fit(make_model(), (x, y), None, STATS, {**SETTINGS, "epochs": 1, "lr": 0.01}, checkpoint_path=ck,
            progress=False)
    hist = fit(other, (x, y), None, STATS, {**SETTINGS, "epochs": 2}, checkpoint_path=ck, progress=False,
               on_mismatch="restart")
    assert hist["epoch"].tolist() == [1, 2]
    assert load_checkpoint(ck)["fingerprint"]["netspec"] == other.spec.to_dict()


def test_missing_and_corrupt_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint not found.*nope.pt"):
        load_checkpoint(tmp_path / "nope.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="bad.pt is not readable"):
        load_checkpoint(bad)
    x, y = toy_data(32)
    with pytest.raises(ValueError, match="bad.pt is not readable"):
        fit(make_model(), (x, y), None, STATS, SETTINGS, checkpoint_path=bad, progress=False)
    torch.save({"something": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a tinyevo v1 checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_model_file_bad_input(tmp_path):
    with pytest.raises(FileNotFoundError, match="model file not found"):
        load_model(tmp_path / "missing.pt")
    model = make_model()
    save_model(tmp_path / "m.pt", model, {"arch": "x"})
    payload = torch.load(tmp_path / "m.pt", weights_only=False)
    payload["netspec"]["head_out"] = 32  # weights no longer match the stored NetSpec
    torch.save(payload, tmp_path / "mismatch.pt")
    with pytest.raises(ValueError, match="do not match the stored NetSpec"):
        load_model(tmp_path / "mismatch.pt")


def test_bad_settings_and_labels():
    x, y = toy_data(32)
    with pytest.raises(ValueError, match="'epoch' is unknown"):
        resolve_settings({"epoch": 3})
    with pytest.raises(ValueError, match="'schedule'"):
        resolve_settings({"schedule": "step"})
    assert resolve_settings({"threads": 4, "seed": None})["seed"] == 0
    with pytest.raises(ValueError, match="labels span 0..3 but the model has 2 outputs"):
        fit(make_model(num_classes=2), (x, y), None, STATS, SETTINGS, progress=False)
    with pytest.raises(ValueError, match="3 means .* images have 1 channels"):
        fit(make_model(), (x, y), None, (np.zeros(3), np.ones(3)), SETTINGS, progress=False)
    with pytest.raises(ValueError, match="must be uint8"):
        fit(make_model(), (x.astype(np.float32), y), None, STATS, SETTINGS, progress=False)
    with pytest.raises(FloatingPointError, match="train.lr"):
        fit(make_model(), (x, y), None, STATS, {**SETTINGS, "lr": 1e30}, progress=False)


def test_augment_batch_shifts_and_is_seeded():
    x, _ = toy_data(16)
    xb = torch.from_numpy(x)
    a = augment_batch(xb, torch.Generator().manual_seed(1), flip=True)
    b = augment_batch(xb, torch.Generator().manual_seed(1), flip=True)
    assert a.shape == xb.shape and a.dtype == torch.uint8 and torch.equal(a, b)
    assert not torch.equal(a, xb)
    # a shift never brings in content: each image's sum can only shrink (black padding)
    assert bool((a.flatten(1).sum(1) <= xb.flatten(1).sum(1)).all())


def test_class_subsets():
    inc = class_subset("C-inc", 4, SCENARIOS)
    assert inc.classes == (0, 1, 2) and inc.num_outputs == 4 and not inc.remap
    src = class_subset("C-src", 4, SCENARIOS)
    assert src.classes == (3, 1) and src.num_outputs == 2 and src.label_map == {3: 0, 1: 1}
    assert class_subset("NC", 4).classes == (0, 1, 2, 3)
    with pytest.raises(ValueError, match=r"scenarios.incremental.base_classes.*\[7\]"):
        class_subset("C-inc", 4, {"incremental": {"base_classes": [0, 7]}})
    with pytest.raises(ValueError, match="unknown training branch"):
        class_subset("X", 4)
    x, y = toy_data(20)
    xs, ys = src.select(x, y)
    assert set(ys.tolist()) <= {0, 1} and len(ys) == int(np.isin(y, [1, 3]).sum())
    assert np.array_equal(xs, x[np.isin(y, [1, 3])])
    assert np.array_equal(ys, np.where(y[np.isin(y, [1, 3])] == 3, 0, 1))


@pytest.mark.parametrize("net", ["C-inc", "C-src"])
def test_train_on_class_subset(net):
    x, y = toy_data(128)
    subset = class_subset(net, 4, SCENARIOS)
    res = train_net(tiny_spec(), (x[:96], y[:96]), (x[96:], y[96:]), STATS, subset, {**SETTINGS, "epochs": 2},
                    progress=False)
    assert res.model.classifier.out_features == subset.num_outputs
    m = res.metrics.iloc[0]
    assert m["n_train"] == int(np.isin(y[:96], subset.classes).sum())
    assert m["n_test"] == int(np.isin(y[96:], subset.classes).sum())
    conf = res.confusion
    assert set(conf["true_class"]) == set(subset.classes)
    assert set(conf["pred_class"]) == set(subset.output_classes)
    assert conf["count"].sum() == m["n_test"]
    assert res.meta["classes"] == list(subset.classes)
    assert res.meta["num_outputs"] == subset.num_outputs
    correct = conf.loc[conf["true_class"] == conf["pred_class"], "count"].sum()
    assert correct / m["n_test"] == pytest.approx(m["final_test_acc"])


def test_confusion_table_counts():
    sub = class_subset("C-src", 4, SCENARIOS)  # outputs 0 -> class 3, 1 -> class 1
    conf = confusion_table(np.array([0, 0, 1, 1, 1]), np.array([0, 1, 1, 1, 0]), sub)
    got = {(r.true_class, r.pred_class): r.count for r in conf.itertuples()}
    assert got == {(3, 3): 1, (3, 1): 1, (1, 3): 1, (1, 1): 2}


# ----------------------------------------------------------------------------------------------
# the rule's library function, on files like the data and evolution stages write
# ----------------------------------------------------------------------------------------------
SS_CFG = MICRO_SPACE


def write_stage_inputs(tmp_path, arch_c, arch_nc):
    d = tmp_path / "data"
    d.mkdir()
    x, y = toy_data(128)
    for split, sl in (("train", slice(0, 96)), ("test", slice(96, 128))):
        np.save(d / f"{split}_x.npy", x[sl])
        np.save(d / f"{split}_y.npy", y[sl])
    pd.DataFrame({"channel": [0], "mean": STATS[0], "std": STATS[1]}).to_parquet(d / "stats.parquet")
    sel = pd.DataFrame({"net": ["C", "C", "NC", "NC"], "phase": ["before", "after", "before", "after"],
                        "arch": [arch_nc, arch_c, arch_c, arch_nc], "avg": [0.0, 1.0, 2.0, 3.0]})
    sel.to_parquet(tmp_path / "selected.parquet")
    return d


def test_run_training_writes_outputs(tmp_path, caplog):
    space = SearchSpace.from_config(SS_CFG)
    arch_c = space.encode(Genes((1, 1), (1, 2), (4, 8)))
    arch_nc = space.encode(Genes((2, 1), (2, 2), (8, 8)))
    d = write_stage_inputs(tmp_path, arch_c, arch_nc)
    assert selected_arch(tmp_path / "selected.parquet", "C-src") == arch_c
    assert selected_arch(tmp_path / "selected.parquet", "NC") == arch_nc
    out = tmp_path / "train" / "C-src"
    ck = out / "checkpoint.pt"
    with caplog.at_level(logging.INFO, logger="tinyevo"):
        run_training(str(tmp_path / "selected.parquet"), str(d), "C-src", SS_CFG, {**SETTINGS, "epochs": 2},
                     class_subset("C-src", 4, SCENARIOS).meta(), "cpu", True, str(out / "model.pt"),
                     str(out / "history.parquet"), str(out / "metrics.parquet"), str(out / "confusion.parquet"),
                     checkpoint=str(ck), progress=False)
    assert not ck.exists()  # removed once the outputs are written
    model, spec, meta = load_model(out / "model.pt")
    assert spec.num_classes == 2 and meta["arch"] == arch_c and meta["net"] == "C-src"
    assert meta["classes"] == [3, 1] and meta["label_map"] == {"3": 0, "1": 1}
    hist = pd.read_parquet(out / "history.parquet")
    metrics = pd.read_parquet(out / "metrics.parquet")
    assert len(hist) == 2 and metrics["net"].iloc[0] == "C-src" and metrics["arch"].iloc[0] == arch_c
    assert metrics["final_test_acc"].iloc[0] == pytest.approx(hist["test_acc"].iloc[-1])
    assert metrics["best_test_acc"].iloc[0] == pytest.approx(hist["test_acc"].max())
    assert "final test accuracy" in caplog.text
    # NetSpec in model.pt is the trained one: evaluating the reloaded model gives the same accuracy
    x, y = np.load(d / "test_x.npy"), np.load(d / "test_y.npy")
    xs, ys = class_subset("C-src", 4, SCENARIOS).select(x, y)
    _, acc, _ = evaluate(model, xs, ys, STATS, "cpu")
    assert acc == pytest.approx(metrics["final_test_acc"].iloc[0])


def test_nc_on_cs_architecture_reuses_cs_training(tmp_path, caplog):
    """NC with C's architecture (choice source final_round_C) copies C's outputs with the net
    renamed; a training of its own gives the same tables and weights, so the copy changes
    nothing but the time. Another architecture is trained, not copied."""
    space = SearchSpace.from_config(SS_CFG)
    arch_c = space.encode(Genes((1, 1), (1, 2), (4, 8)))
    arch_nc = space.encode(Genes((2, 1), (2, 2), (8, 8)))
    d = write_stage_inputs(tmp_path, arch_c, arch_nc)

    def train(net, choice, where, same_as=None):
        out = tmp_path / where / net
        run_training(str(choice), str(d), net, SS_CFG, {**SETTINGS, "epochs": 2}, class_subset(net, 4, SCENARIOS).meta(),
                     "cpu", False, str(out / "model.pt"), str(out / "history.parquet"), str(out / "metrics.parquet"),
                     str(out / "confusion.parquet"), progress=False, same_as=same_as)
        return out

    same = tmp_path / "same.parquet"
    pd.DataFrame({"net": ["C", "NC"], "arch": [arch_c, arch_c], "source": ["final_round", "final_round_C"],
                  "val_acc": [0.5, 0.5]}).to_parquet(same)
    c = train("C", same, "c")
    reuse = {"net": "C", **{k: str(c / f"{k}.{'pt' if k == 'model' else 'parquet'}")
                            for k in ("model", "history", "metrics", "confusion")}}
    with caplog.at_level(logging.INFO, logger="tinyevo"):
        copied = train("NC", same, "copied", reuse)
    assert "training outputs are reused" in caplog.text
    real = train("NC", same, "real")
    timing = ["seconds", "train_seconds"]
    for name in ("history", "metrics", "confusion"):
        a, b = (pd.read_parquet(p / f"{name}.parquet") for p in (copied, real))
        pd.testing.assert_frame_equal(a.drop(columns=timing, errors="ignore"), b.drop(columns=timing, errors="ignore"),
                                      check_exact=True, obj=name)
    assert pd.read_parquet(copied / "metrics.parquet")["net"].tolist() == ["NC"]
    (m_copy, _, meta), (m_real, _, _) = load_model(copied / "model.pt"), load_model(real / "model.pt")
    assert meta["net"] == "NC" and meta["same_as"] == "C"
    assert all(torch.equal(x, y) for x, y in zip(m_copy.state_dict().values(), m_real.state_dict().values()))

    other = tmp_path / "other.parquet"
    pd.DataFrame({"net": ["C", "NC"], "arch": [arch_c, arch_nc], "source": "final_round",
                  "val_acc": 0.5}).to_parquet(other)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="tinyevo"):
        trained = train("NC", other, "other", reuse)
    assert "reused" not in caplog.text and load_model(trained / "model.pt")[2]["arch"] == arch_nc


def test_run_training_bad_selection(tmp_path):
    pd.DataFrame({"net": ["C"], "phase": ["before"], "arch": ["x"]}).to_parquet(tmp_path / "sel.parquet")
    with pytest.raises(ValueError, match="one row with net == 'NC' and phase == 'after', found 0"):
        selected_arch(tmp_path / "sel.parquet", "NC")
    with pytest.raises(FileNotFoundError, match="evolution selection table not found"):
        selected_arch(tmp_path / "missing.parquet", "C")


@pytest.mark.slow
def test_snakemake_train_c(tiny_pipeline):
    """Outputs of the train rule in the shared TINY pipeline run (tests/conftest.py)."""
    tmp_path = tiny_pipeline
    metrics = pd.read_parquet(tmp_path / "results/train/C/metrics.parquet")
    hist = pd.read_parquet(tmp_path / "results/train/C/history.parquet")
    assert len(hist) == 2 and 0 <= metrics["final_test_acc"].iloc[0] <= 1
    assert (tmp_path / "results/train/C/curve.png").stat().st_size > 0
    assert not (tmp_path / "results/train/C/checkpoint.pt").exists()
    _, _, meta = load_model(tmp_path / "results/train/C/model.pt")
    assert meta["classes"] == list(range(10))


def test_batch_of_one_joins_previous_batch():
    from tinyevo.train.loop import batch_bounds

    assert batch_bounds(33, 16) == [(0, 16), (16, 33)]
    assert batch_bounds(32, 16) == [(0, 16), (16, 32)]
    assert batch_bounds(1, 16) == [(0, 1)]
    # a net whose head works on 1 x 1 maps: a lone sample in train-mode BN would fail
    space = SearchSpace(resolution=4, in_channels=1, num_classes=4, stem_width=4, stem_stride=2, strides=(2,),
                        head_width=8, kernel_size=3, round_divisor=4,
                        alphabets={"repeats": (1,), "expansions": (1,), "channels": (4,)},
                        grid={"structures": ((1,),), "expansions": ((1,),), "channels": ((4,),)})
    torch.manual_seed(0)
    model = build_torch(space.netspec(Genes((1,), (1,), (4,))))
    x, y = toy_data(17, res=4)
    hist = fit(model, (x, y), None, STATS, {**SETTINGS, "epochs": 1}, progress=False)
    assert np.isfinite(hist["train_loss"].iloc[0])


def test_cuda_device_visible_reads_dev_nodes_and_the_visible_list(tmp_path):
    """The parse-time check that sizes the trainings' gpu resource (gpu=0 on a CPU machine, so
    they run side by side)."""
    from tinyevo.runtime import cuda_device_visible

    assert not cuda_device_visible(str(tmp_path), env={})
    (tmp_path / "nvidiactl").touch()  # the control node alone is no device
    assert not cuda_device_visible(str(tmp_path), env={})
    (tmp_path / "nvidia0").touch()
    assert cuda_device_visible(str(tmp_path), env={})
    assert cuda_device_visible(str(tmp_path), env={"CUDA_VISIBLE_DEVICES": "0"})
    assert not cuda_device_visible(str(tmp_path), env={"CUDA_VISIBLE_DEVICES": ""})
    assert not cuda_device_visible(str(tmp_path), env={"CUDA_VISIBLE_DEVICES": "-1"})
    assert not cuda_device_visible(str(tmp_path / "missing"), env={})
