"""Data stage: every source on generated fixtures, the VWW label rule, splits, stats, resizing,
every bad input, skip_corrupt, atomic outputs, and the Snakemake rule on digits."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import REPO, TINY
from fixtures_data import (
    CIFAR_NAMES,
    FOLDER_CLASSES,
    cifar_pixel,
    coco_value,
    label_value,
    make_cifar,
    make_coco,
    make_idx,
    make_imagefolder,
    truncate_file,
    vww_config,
    write_jpeg,
)
from PIL import Image

from tinyevo.config import load_schema
from tinyevo.data import DataError, SPLITS, load_split, load_stats, output_names, prepare, to_tensor
from tinyevo.data.pipeline import channel_stats, resize_image, split_indices

_DEFAULTS = {k: v.get("default") for k, v in load_schema()["properties"]["dataset"]["properties"].items()}


def ds(**kw) -> dict:
    """A resolved ``dataset`` config section: schema defaults + ``kw``."""
    cfg = dict(_DEFAULTS, **kw)
    cfg["name"] = cfg["name"] or cfg["source"]
    cfg["seed"] = 0 if cfg["seed"] is None else cfg["seed"]
    return cfg


def load_all(out: Path):
    return {s: load_split(out, s) for s in SPLITS}


def files_in(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


def assert_layout(out: Path, resolution: int, channels: int, n_classes: int) -> dict:
    """Every output exists, arrays are memory-mapped uint8 NHWC / int64, the manifest matches."""
    assert files_in(out) == sorted(output_names())
    data = load_all(out)
    man = pd.read_parquet(out / "manifest.parquet")
    assert list(man.columns) == ["split", "index", "label", "class_name", "source", "source_id"]
    for s, (x, y) in data.items():
        assert isinstance(x, np.memmap) and x.dtype == np.uint8
        assert x.shape[1:] == (resolution, resolution, channels)
        assert y.dtype == np.int64 and y.shape == (x.shape[0],)
        assert ((y >= 0) & (y < n_classes)).all()
        part = man[man.split == s]
        assert part["index"].tolist() == list(range(len(y)))
        assert (part["label"].to_numpy() == y).all()
    return data


# ------------------------------------------------------------------------------------- digits
def test_digits_outputs_stats_and_tensor(tmp_path):
    out = tmp_path / "digits"
    summary = prepare(ds(source="digits", resolution=12, channels=1), out, threads=2)
    data = assert_layout(out, 12, 1, 10)
    n = {s: len(data[s][1]) for s in SPLITS}
    assert sum(n.values()) == 1797 and summary["sizes"] == n
    assert n["test"] == int(np.ceil(0.2 * 1797))
    # the three splits partition the source images
    man = pd.read_parquet(out / "manifest.parquet")
    assert sorted(man.source_id) == list(range(1797))
    # stats = numpy's mean/std of the train split on the [0, 1] scale
    x_train = np.asarray(data["train"][0], dtype=np.float64) / 255.0
    mean, std = load_stats(out)
    assert mean.dtype == np.float32 and std.dtype == np.float32
    np.testing.assert_allclose(mean, x_train.mean(axis=(0, 1, 2)), rtol=0, atol=1e-6)
    np.testing.assert_allclose(std, x_train.std(axis=(0, 1, 2)), rtol=0, atol=1e-6)
    st = pd.read_parquet(out / "stats.parquet")
    assert list(st.columns) == ["channel", "mean", "std"] and st.channel.tolist() == [0]
    # 0..16 digits scaled to the full 0..255 range
    assert data["train"][0].max() == 255 and data["train"][0].min() == 0
    # to_tensor: float32 NCHW, (x/255 - mean)/std
    t = to_tensor(data["val"][0][:5], mean, std)
    assert tuple(t.shape) == (5, 1, 12, 12) and str(t.dtype) == "torch.float32"
    ref = (np.asarray(data["val"][0][:5], np.float32) / 255.0 - mean) / std
    np.testing.assert_allclose(t.numpy(), ref.transpose(0, 3, 1, 2), rtol=1e-5, atol=1e-5)


def test_split_determinism_and_seed(tmp_path):
    cfg = ds(source="digits", resolution=8, max_per_split=150)
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    prepare(cfg, a, threads=2)
    prepare(cfg, b, threads=1)  # thread count must not matter
    prepare(dict(cfg, seed=7), c, threads=2)
    for s in SPLITS:
        for k in "xy":
            assert (a / f"{s}_{k}.npy").read_bytes() == (b / f"{s}_{k}.npy").read_bytes(), (s, k)
    pd.testing.assert_frame_equal(pd.read_parquet(a / "manifest.parquet"), pd.read_parquet(b / "manifest.parquet"))
    ma, mc = pd.read_parquet(a / "manifest.parquet"), pd.read_parquet(c / "manifest.parquet")
    assert set(ma[ma.split == "test"].source_id) != set(mc[mc.split == "test"].source_id)
    assert (a / "train_x.npy").read_bytes() != (c / "train_x.npy").read_bytes()
    # max_per_split caps every split
    assert all(len(load_split(a, s)[1]) <= 150 for s in SPLITS)


def test_split_indices_stratified_and_capped():
    labels = np.repeat([0, 1, 2], [200, 100, 50])
    splits, notes = split_indices(labels, None, 0.1, 0.2, None, seed=3)
    assert notes == []
    all_idx = np.concatenate(list(splits.values()))
    assert sorted(all_idx) == list(range(350))  # a partition
    for name, frac in (("test", 0.2), ("val", 0.1)):
        counts = np.bincount(labels[splits[name]], minlength=3)
        np.testing.assert_allclose(counts, np.array([200, 100, 50]) * frac, atol=1.01)
    # a seeded random order, not the source order
    assert not (np.diff(splits["train"]) > 0).all()
    capped, _ = split_indices(labels, None, 0.1, 0.2, 70, seed=3)
    assert [len(capped[s]) for s in SPLITS] == [70, 35, 70]
    np.testing.assert_allclose(np.bincount(labels[capped["train"]], minlength=3), [40, 20, 10], atol=1.01)
    for s in SPLITS:
        assert set(capped[s]) <= set(splits[s])  # the cap subsamples the same split
    # an official test split is kept as is; val comes from the rest
    official = np.zeros(350, bool)
    official[::7] = True
    sp, _ = split_indices(labels, official, 0.25, 0.2, None, seed=0)
    assert sorted(sp["test"]) == list(np.flatnonzero(official))
    assert len(sp["val"]) == int(np.ceil(0.25 * (~official).sum()))


def test_resize_shapes_and_modes():
    rgb = Image.new("RGB", (10, 7), (200, 100, 50))
    grey = Image.new("L", (5, 9), 77)
    a = resize_image(rgb, 16, 3)
    assert a.shape == (16, 16, 3) and a.dtype == np.uint8 and (a == [200, 100, 50]).all()
    b = resize_image(rgb, 4, 1)
    assert b.shape == (4, 4, 1) and b.dtype == np.uint8
    assert (b == np.asarray(rgb.convert("L"))[0, 0]).all()  # PIL 'L' conversion
    c = resize_image(grey, 6, 3)
    assert c.shape == (6, 6, 3) and (c == 77).all()  # grey replicated to RGB
    d = resize_image(grey, 9, 1)
    assert d.shape == (9, 9, 1) and (d == 77).all()
    # bilinear: a gradient stays monotone and within its range
    ramp = Image.fromarray(np.tile(np.arange(0, 256, 32, dtype=np.uint8), (8, 1)), "L")
    r = resize_image(ramp, 16, 1)[0, :, 0].astype(int)
    assert (np.diff(r) >= 0).all() and r.min() >= 0 and r.max() <= 224


def test_grey_to_rgb_through_prepare(tmp_path):
    prepare(ds(source="digits", resolution=10, channels=3, max_per_split=40), tmp_path, threads=1)
    x, _ = load_split(tmp_path, "train")
    assert x.shape[1:] == (10, 10, 3)
    assert (x[..., 0] == x[..., 1]).all() and (x[..., 0] == x[..., 2]).all()
    mean, std = load_stats(tmp_path)
    assert mean.shape == (3,) and np.allclose(mean, mean[0]) and np.allclose(std, std[0])


def test_import_is_cheap():
    code = ("import sys; sys.path.insert(0, 'workflow'); import tinyevo.data; "
            "bad = [m for m in ('torch', 'torchvision', 'PIL', 'pandas', 'sklearn') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# -------------------------------------------------------------------------------------- VWW
def test_vww_label_rule_exact(tmp_path):
    coco = make_coco(tmp_path)
    out = tmp_path / "out"
    summary = prepare(vww_config(coco, resolution=8, channels=3, val_fraction=0.2, test_fraction=0.25), out,
                      threads=2)
    assert summary["classes"] == ["no_person", "person"]
    assert_layout(out, 8, 3, 2)
    man = pd.read_parquet(out / "manifest.parquet")
    expected = coco["expected"]
    assert sorted(man.source_id) == sorted(expected)  # images from both annotation files
    for s in SPLITS:
        x, y = load_split(out, s)
        part = man[man.split == s]
        for row, iid in zip(part["index"], part["source_id"]):
            assert y[row] == expected[iid], f"image {iid}"
            assert (x[row] == coco_value(iid)).all(), f"image {iid} pixels not aligned with its label"
    # the hand-made boundary cases: exactly 0.5 % -> 0, 0.52 % -> 1, 0.49 % -> 0, sum of small -> 0
    assert [expected[i] for i in (1, 2, 3, 4, 5, 6, 7)] == [0, 1, 0, 0, 1, 0, 0]
    assert man.source.str.endswith(".png").all()


def test_vww_threshold_is_configurable(tmp_path):
    coco = make_coco(tmp_path)
    out = tmp_path / "out"
    prepare(vww_config(coco, resolution=4, area_threshold=0.0049, test_fraction=0.3), out, threads=1)
    man = pd.read_parquet(out / "manifest.parquet").set_index("source_id")
    # 25 / 5000 = 0.005 > 0.0049 now counts as a person; 0.0049 itself still does not
    assert man.loc[1, "label"] == 1 and man.loc[3, "label"] == 0


def test_vww_minival_is_the_test_split(tmp_path):
    minival = [2, 3, 10, 11, 17, 24]
    coco = make_coco(tmp_path, minival=minival)
    out = tmp_path / "out"
    prepare(vww_config(coco, resolution=6, channels=1, val_fraction=0.2), out, threads=2)
    man = pd.read_parquet(out / "manifest.parquet")
    assert sorted(man[man.split == "test"].source_id) == minival
    assert set(man[man.split != "test"].source_id) == set(coco["expected"]) - set(minival)
    x, y = load_split(out, "test")
    assert len(y) == len(minival) and x.shape[1:] == (6, 6, 1)


def test_vww_bad_inputs(tmp_path):
    coco = make_coco(tmp_path / "ok", minival=[1, 2])
    nop = make_coco(tmp_path / "noperson", person=False)
    out = tmp_path / "out"
    with pytest.raises(DataError, match=r"instances_train2014\.json.*no 'person' category"):
        prepare(vww_config(nop), out)
    with pytest.raises(DataError, match="dataset.annotations"):
        prepare(vww_config(coco, annotations=None), out)
    with pytest.raises(DataError, match=r"dataset\.annotations.*missing\.json"):
        prepare(vww_config(coco, annotations=str(tmp_path / "missing.json")), out)
    with pytest.raises(DataError, match=r"dataset\.annotations_extra\[0\].*gone\.json"):
        prepare(vww_config(coco, annotations_extra=[str(tmp_path / "gone.json")]), out)
    broken = tmp_path / "broken.json"
    broken.write_text('{"images": [')
    with pytest.raises(DataError, match=r"broken\.json.*not a readable COCO JSON"):
        prepare(vww_config(coco, annotations=str(broken)), out)
    with pytest.raises(DataError, match=r"dataset\.minival_ids.*nope\.txt"):
        prepare(vww_config(coco, minival_ids=str(tmp_path / "nope.txt")), out)
    bad_mv = tmp_path / "mv.txt"
    bad_mv.write_text("1\n999\n")
    with pytest.raises(DataError, match=r"mv\.txt.*not in the annotation files.*999"):
        prepare(vww_config(coco, minival_ids=str(bad_mv)), out)
    with pytest.raises(DataError, match=r"dataset\.path.*no_images"):
        prepare(vww_config(coco, path=str(tmp_path / "no_images")), out)
    # an image listed in the JSON but missing on disk
    missing = coco["path"] / "val2014" / "COCO_val2014_000000000005.png"
    missing.unlink()
    with pytest.raises(DataError, match=r"COCO_val2014_000000000005\.png.*file not found"):
        prepare(vww_config(coco, resolution=4), out, threads=2)
    assert files_in(out) == []  # nothing written, no temp files
    summary = prepare(vww_config(coco, resolution=4, skip_corrupt=True), out, threads=2)
    assert sum(summary["skipped"].values()) == 1
    assert 5 not in set(pd.read_parquet(out / "manifest.parquet").source_id)


# ----------------------------------------------------------------------------------- CIFAR-10
@pytest.mark.parametrize("point_at", ["parent", "folder"])
def test_cifar10_official_split_and_channels(tmp_path, point_at):
    d = make_cifar(tmp_path / "raw")
    out = tmp_path / "out"
    path = d.parent if point_at == "parent" else d
    summary = prepare(ds(source="cifar10", path=str(path), resolution=16, channels=3, val_fraction=0.2), out,
                      threads=2)
    assert summary["classes"] == CIFAR_NAMES
    data = assert_layout(out, 16, 3, 3)
    assert len(data["test"][1]) == 9  # the official test batch, whole
    assert len(data["train"][1]) + len(data["val"][1]) == 60 and len(data["val"][1]) == 12
    man = pd.read_parquet(out / "manifest.parquet")
    assert man[man.split == "test"].source.str.startswith("test[").all()
    assert man[man.split != "test"].source.str.startswith("train[").all()
    for s, (x, y) in data.items():
        for i in range(len(y)):
            assert (x[i] == np.array(cifar_pixel(y[i]), np.uint8)).all(), (s, i)  # CHW -> HWC + labels aligned
    x = np.asarray(data["train"][0], np.float64) / 255
    mean, std = load_stats(out)
    np.testing.assert_allclose(mean, x.mean(axis=(0, 1, 2)), atol=1e-6)
    np.testing.assert_allclose(std, x.std(axis=(0, 1, 2)), atol=1e-6)


def test_cifar10_bad_inputs(tmp_path):
    d = make_cifar(tmp_path / "raw")
    out = tmp_path / "out"
    with pytest.raises(DataError, match="dataset.path"):
        prepare(ds(source="cifar10"), out)
    with pytest.raises(DataError, match=r"dataset\.path.*nowhere"):
        prepare(ds(source="cifar10", path=str(tmp_path / "nowhere")), out)
    (d / "test_batch").unlink()
    with pytest.raises(DataError, match=r"not found.*test_batch"):
        prepare(ds(source="cifar10", path=str(d)), out)
    (d / "test_batch").write_bytes(b"\x80\x04garbage")
    with pytest.raises(DataError, match=r"not readable.*test_batch"):
        prepare(ds(source="cifar10", path=str(d)), out)
    assert files_in(out) == []


# ------------------------------------------------------------------------------ Fashion-MNIST
@pytest.mark.parametrize("layout,gz", [("flat", True), ("torchvision", False)])
def test_fashion_mnist_idx(tmp_path, layout, gz):
    root = make_idx(tmp_path / "fm", layout=layout, gz=gz)
    out = tmp_path / "out"
    summary = prepare(ds(source="fashion_mnist", path=str(root), resolution=32, channels=1), out, threads=2)
    data = assert_layout(out, 32, 1, 10)
    assert len(data["test"][1]) == 12 and len(data["train"][1]) + len(data["val"][1]) == 40
    assert summary["classes"][:2] == ["T-shirt/top", "Trouser"]
    for x, y in data.values():
        for i in range(len(y)):
            assert (x[i] == label_value(y[i])).all()
    man = pd.read_parquet(out / "manifest.parquet")
    assert man[man.split == "test"].source.str.startswith("t10k-images-idx3-ubyte").all()


def test_fashion_mnist_download_uses_torchvision_layout(tmp_path, monkeypatch):
    """download: true asks torchvision for both parts, then reads <path>/FashionMNIST/raw (the
    downloader is replaced by one that writes the fixture: tests never download)."""
    import torchvision.datasets

    calls = []

    class FakeFashionMNIST:
        def __init__(self, root, train=True, download=False):
            calls.append((Path(root), train, download))
            make_idx(Path(root), layout="torchvision", gz=False)

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", FakeFashionMNIST)
    root = tmp_path / "fresh"
    out = tmp_path / "out"
    with pytest.raises(DataError, match="set dataset.download: true"):
        prepare(ds(source="fashion_mnist", path=str(root)), out)
    assert calls == []
    prepare(ds(source="fashion_mnist", path=str(root), download=True, resolution=8), out)
    assert calls == [(root, True, True), (root, False, True)]
    assert len(load_split(out, "test")[1]) == 12


def test_fashion_mnist_bad_inputs(tmp_path):
    root = make_idx(tmp_path / "fm")
    out = tmp_path / "out"
    with pytest.raises(DataError, match=r"dataset\.path.*missing_dir"):
        prepare(ds(source="fashion_mnist", path=str(tmp_path / "missing_dir")), out)
    (root / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match=r"dataset\.path.*Fashion-MNIST files not found"):
        prepare(ds(source="fashion_mnist", path=str(root)), out)
    make_idx(tmp_path / "fm")
    truncate_file(root / "train-images-idx3-ubyte.gz", 0.6)
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz"):
        prepare(ds(source="fashion_mnist", path=str(root)), out)
    # a complete gzip whose IDX body is short
    make_idx(tmp_path / "fm")
    import gzip

    with gzip.open(root / "t10k-images-idx3-ubyte.gz", "rb") as fh:
        body = fh.read()
    with gzip.open(root / "t10k-images-idx3-ubyte.gz", "wb") as fh:
        fh.write(body[:-100])
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte\.gz.*truncated"):
        prepare(ds(source="fashion_mnist", path=str(root)), out)
    assert files_in(out) == []


# -------------------------------------------------------------------------------- ImageFolder
def test_imagefolder(tmp_path):
    root = make_imagefolder(tmp_path / "tree")
    out = tmp_path / "out"
    summary = prepare(ds(source="imagefolder", path=str(root), resolution=8, channels=3, test_fraction=0.25), out,
                      threads=2)
    assert summary["classes"] == FOLDER_CLASSES
    data = assert_layout(out, 8, 3, 3)
    assert sum(len(y) for _, y in data.values()) == 3 * 8  # README.txt ignored, nested file found
    man = pd.read_parquet(out / "manifest.parquet")
    assert any("nested" in s for s in man.source)
    assert (man.class_name == [FOLDER_CLASSES[t] for t in man.label]).all()
    for x, y in data.values():
        for i in range(len(y)):
            assert (x[i] == label_value(y[i])).all()
    # every class in every split (stratified)
    for s in SPLITS:
        assert set(data[s][1]) == {0, 1, 2}


def test_imagefolder_bad_inputs_and_skip_corrupt(tmp_path, caplog):
    root = make_imagefolder(tmp_path / "tree")
    out = tmp_path / "out"
    cfg = ds(source="imagefolder", path=str(root), resolution=8, channels=1, test_fraction=0.25)
    (root / "empty_class").mkdir()
    with pytest.raises(DataError, match=r"empty class folder.*empty_class"):
        prepare(cfg, out)
    (root / "empty_class").rmdir()
    with pytest.raises(DataError, match=r"dataset\.path.*absent"):
        prepare(dict(cfg, path=str(tmp_path / "absent")), out)
    # a truncated JPEG and a non-image with an image extension
    jpg = write_jpeg(root / "dog" / "broken.jpg")
    truncate_file(jpg, 0.4)
    (root / "owl" / "fake.png").write_bytes(b"this is not a png")
    with pytest.raises(DataError, match=r"(broken\.jpg|fake\.png).*skip_corrupt"):
        prepare(cfg, out, threads=2)
    assert files_in(out) == []  # no half-written output, no temp file
    # skip_corrupt: both skipped, counted in the summary and the log
    with caplog.at_level(logging.WARNING):
        summary = prepare(dict(cfg, skip_corrupt=True), out, threads=2, log=logging.getLogger("t"))
    assert sum(summary["skipped"].values()) == 2
    assert sum(summary["sizes"].values()) == 3 * 8
    assert "skipped 2 unreadable image(s) in total" in caplog.text
    assert "broken.jpg" in caplog.text and "fake.png" in caplog.text
    man = pd.read_parquet(out / "manifest.parquet")
    assert not man.source.str.contains("broken|fake").any()
    for s in SPLITS:  # arrays compacted to the kept images, still aligned with labels
        x, y = load_split(out, s)
        assert len(x) == len(y) == (man.split == s).sum()
        for i in range(len(y)):
            assert (x[i] == label_value(y[i])).all()
    assert not [p for p in out.iterdir() if ".tmp" in p.name]


def test_failed_run_keeps_previous_outputs_intact(tmp_path):
    root = make_imagefolder(tmp_path / "tree")
    out = tmp_path / "out"
    cfg = ds(source="imagefolder", path=str(root), resolution=8, channels=1)
    prepare(cfg, out)
    before = {n: (out / n).read_bytes() for n in output_names()}
    truncate_file(root / "cat" / "cat_1.png", 0.5)
    with pytest.raises(DataError, match=r"cat_1\.png"):
        prepare(dict(cfg, resolution=12), out, threads=2)
    assert {n: (out / n).read_bytes() for n in output_names()} == before
    assert files_in(out) == sorted(output_names())


def test_resolution_and_channels_errors(tmp_path):
    for bad in (0, -3):
        with pytest.raises(DataError, match=r"dataset\.resolution.*" + str(bad)):
            prepare(ds(source="digits", resolution=bad), tmp_path / "o")
    with pytest.raises(DataError, match=r"dataset\.channels"):
        prepare(ds(source="digits", channels=2), tmp_path / "o")
    with pytest.raises(DataError, match=r"dataset\.source"):
        prepare(ds(source="mnist"), tmp_path / "o")
    assert files_in(tmp_path / "o") == []


def test_load_api_errors(tmp_path):
    with pytest.raises(DataError, match=r"train_x\.npy"):
        load_split(tmp_path, "train")
    with pytest.raises(DataError, match="unknown split"):
        load_split(tmp_path, "holdout")
    with pytest.raises(DataError, match=r"stats\.parquet"):
        load_stats(tmp_path)
    x = np.zeros((2, 4, 4, 3), np.uint8)
    with pytest.raises(DataError, match="channels"):
        to_tensor(x, [0.5], [0.2])


def test_channel_stats_matches_numpy_on_odd_blocks():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (5000, 3, 3, 3), dtype=np.uint8)  # > one streaming block
    mean, std = channel_stats(x)
    f = x.astype(np.float64) / 255
    np.testing.assert_allclose(mean, f.mean(axis=(0, 1, 2)), atol=1e-12)
    np.testing.assert_allclose(std, f.std(axis=(0, 1, 2)), atol=1e-9)


# ----------------------------------------------------------------------------------- Snakemake
@pytest.mark.slow
def test_snakemake_data_stage_digits(tiny_pipeline):
    """The data rule of the shared TINY run (tests/conftest.py: digits at 16x16, 300 per split);
    that a finished run has nothing left to do is tests/test_pipeline.py's."""
    per_split = TINY["dataset"]["max_per_split"]
    out = tiny_pipeline / "results" / "data" / "digits"
    data = assert_layout(out, 16, 1, 10)
    sizes = [len(data[s][1]) for s in SPLITS]
    # digits' own validation part is smaller than the cap (180 of 1797 images); train and test are capped
    assert dict(zip(SPLITS, sizes)) == {"train": per_split, "val": 180, "test": per_split}
    log = (tiny_pipeline / "results" / "logs" / "data" / "digits.log").read_text()
    assert "stage data" in log and "16x16x1" in log
    assert re.search(r"sizes\s+" + ", ".join(f"{s}={n}" for s, n in zip(SPLITS, sizes)) + "$", log, re.M), log
    mean, std = load_stats(out)
    x = np.asarray(data["train"][0], np.float64) / 255
    np.testing.assert_allclose(mean, x.mean(axis=(0, 1, 2)), atol=1e-6)


def test_numpy_normalisation_equals_the_torch_one_for_every_pixel_value():
    """The torch-free normalisation of the scenario and compress jobs is to_tensor's, bit for bit."""
    from tinyevo.data import normalised_nhwc

    x = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1).repeat(3, axis=3)
    mean, std = np.array([0.1307, 0.5, 0.9], np.float32), np.array([0.3081, 0.0, 0.25], np.float32)
    ref = to_tensor(x, mean, std).numpy().transpose(0, 2, 3, 1)
    out = normalised_nhwc(x, mean, std)
    assert out.dtype == np.float32 and np.array_equal(out, ref)
    with pytest.raises(DataError, match="one mean/std per channel"):
        normalised_nhwc(x, mean[:2], std[:2])
