"""Tiny generated datasets in every on-disk format the data stage reads.

Every image is a constant colour that encodes what the test must find again after splitting,
shuffling and resizing (bilinear resizing keeps a constant image constant): the label for the
array sources and the ImageFolder, the COCO image id for Visual Wake Words.
"""

from __future__ import annotations

import gzip
import json
import pickle
import struct
from pathlib import Path

import numpy as np
from PIL import Image


def label_value(label: int) -> int:
    """Pixel value of an image of class ``label`` (first channel)."""
    return 10 + 20 * int(label)


# ------------------------------------------------------------------------------ Fashion-MNIST
def _idx_bytes(arr: np.ndarray) -> bytes:
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    header = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.tobytes()


def make_idx(root: Path, n_train: int = 40, n_test: int = 12, n_classes: int = 4, size: int = 28,
             gz: bool = True, layout: str = "flat") -> Path:
    """Fashion-MNIST IDX files; ``layout`` 'flat' (files in ``root``) or 'torchvision'
    (``root/FashionMNIST/raw``). Labels cycle over ``n_classes``. Returns the directory to
    configure as ``dataset.path`` (always ``root``)."""
    d = root if layout == "flat" else root / "FashionMNIST" / "raw"
    d.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        y = (np.arange(n) % n_classes).astype(np.uint8)
        x = np.stack([np.full((size, size), label_value(t), np.uint8) for t in y])
        for kind, arr in (("images-idx3", x), ("labels-idx1", y)):
            name = f"{prefix}-{kind}-ubyte"
            data = _idx_bytes(arr)
            if gz:
                with gzip.open(d / f"{name}.gz", "wb") as fh:
                    fh.write(data)
            else:
                (d / name).write_bytes(data)
    return root


# ------------------------------------------------------------------------------------ CIFAR-10
CIFAR_NAMES = ["airplane", "automobile", "bird"]


def cifar_pixel(label: int) -> tuple[int, int, int]:
    """RGB of a CIFAR fixture image of class ``label`` (distinct per channel: checks CHW->HWC)."""
    return label_value(label), 200 - 20 * int(label), 77


def make_cifar(root: Path, per_batch: int = 12, n_test: int = 9) -> Path:
    """``root/cifar-10-batches-py`` with data_batch_1..5, test_batch and batches.meta."""
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True, exist_ok=True)

    def batch(n: int, offset: int) -> dict:
        labels = [int((offset + i) % len(CIFAR_NAMES)) for i in range(n)]
        data = np.zeros((n, 3, 32, 32), np.uint8)
        for i, t in enumerate(labels):
            for c, v in enumerate(cifar_pixel(t)):
                data[i, c] = v
        return {"batch_label": "fixture", "labels": labels, "data": data.reshape(n, 3072),
                "filenames": [f"img{offset + i}.png" for i in range(n)]}

    for b in range(1, 6):
        with open(d / f"data_batch_{b}", "wb") as fh:
            pickle.dump(batch(per_batch, b), fh)
    with open(d / "test_batch", "wb") as fh:
        pickle.dump(batch(n_test, 0), fh)
    with open(d / "batches.meta", "wb") as fh:
        pickle.dump({"label_names": CIFAR_NAMES, "num_cases_per_batch": per_batch, "num_vis": 3072}, fh)
    return d


# ---------------------------------------------------------------------------------- ImageFolder
FOLDER_CLASSES = ["cat", "dog", "owl"]


def make_imagefolder(root: Path, per_class: int = 8) -> Path:
    """A class-per-folder tree with PNG/BMP files of mixed sizes and modes (L, RGB, RGBA), one
    nested sub-folder and a non-image file that must be ignored."""
    root.mkdir(parents=True, exist_ok=True)
    for t, cls in enumerate(FOLDER_CLASSES):
        d = root / cls
        (d / "nested").mkdir(parents=True, exist_ok=True)
        (d / "README.txt").write_text("not an image")
        v = label_value(t)
        for i in range(per_class):
            w, h = 12 + 3 * i, 9 + 2 * (i % 3)
            mode = ("RGB", "L", "RGBA")[i % 3]
            colour = {"RGB": (v, v, v), "L": v, "RGBA": (v, v, v, 255)}[mode]
            img = Image.new(mode, (w, h), colour)
            sub = d / "nested" if i == 0 else d
            img.save(sub / f"{cls}_{i}.{'bmp' if i % 4 == 3 and mode != 'RGBA' else 'png'}")
    return root


def truncate_file(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: max(1, int(len(data) * keep))])


def write_jpeg(path: Path, size=(40, 30), value: int = 120) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    arr = np.clip(value + rng.integers(-40, 40, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
    Image.fromarray(arr, "RGB").save(path, quality=90)
    return path


# --------------------------------------------------------------------------- Visual Wake Words
AREA_THRESHOLD = 0.005


def coco_value(image_id: int) -> int:
    """Pixel value of the fixture image with COCO id ``image_id``."""
    return 5 * int(image_id)


def vww_cases() -> list[dict]:
    """Images with their person/other boxes and the label the 0.5 % rule must give."""
    thr = AREA_THRESHOLD
    cases = [
        # exactly at the threshold is NOT above it: 5 x 5 / (100 x 50) = 0.005
        dict(size=(100, 50), person=[(5, 5)], other=[(90, 45)], label=0),
        # just above: 5 x 5.2 / 5000 = 0.0052
        dict(size=(100, 50), person=[(5, 5.2)], other=[], label=1),
        # just below: 4.9 x 5 / 5000 = 0.0049
        dict(size=(100, 50), person=[(4.9, 5)], other=[], label=0),
        # no annotation at all
        dict(size=(80, 80), person=[], other=[], label=0),
        # several small person boxes (each below) and one above
        dict(size=(60, 40), person=[(2, 2), (3, 3), (10, 10)], other=[], label=1),
        # many small boxes whose SUM is above the threshold, none alone: still 0
        dict(size=(60, 40), person=[(3, 3)] * 5, other=[], label=0),
        # a big box of another category only
        dict(size=(64, 48), person=[], other=[(60, 40)], label=0),
    ]
    # fill up to 24 images, alternating clear cases on either side of the rule
    for k in range(17):
        w, h = 40 + 2 * k, 30 + k
        side = np.sqrt(thr * w * h)
        if k % 2:
            cases.append(dict(size=(w, h), person=[(side * 1.5, side * 1.5)], other=[], label=1))
        else:
            cases.append(dict(size=(w, h), person=[(side * 0.7, side * 0.7)], other=[(w / 2, h / 2)], label=0))
    return cases


def make_coco(root: Path, minival: list[int] | None = None, person: bool = True) -> dict:
    """COCO-format fixture: images under ``root/images/{train2014,val2014}``, instances JSON
    split over two files (even ids in train, odd in val) to exercise ``annotations_extra``.
    Returns paths and the expected labels ``{image_id: label}``."""
    images_dir = root / "images"
    cases = vww_cases()
    files = {"train2014": {"images": [], "annotations": []}, "val2014": {"images": [], "annotations": []}}
    expected: dict[int, int] = {}
    ann_id = 1000
    for i, case in enumerate(cases):
        iid = i + 1
        sub = "val2014" if iid % 2 else "train2014"
        fname = f"COCO_{sub}_{iid:012d}.png"
        w, h = case["size"]
        (images_dir / sub).mkdir(parents=True, exist_ok=True)
        v = coco_value(iid)
        Image.new("RGB", (w, h), (v, v, v)).save(images_dir / sub / fname)
        files[sub]["images"].append({"id": iid, "file_name": fname, "width": w, "height": h})
        for cat, boxes in ((1, case["person"]), (18, case["other"])):
            for bw, bh in boxes:
                ann_id += 1
                files[sub]["annotations"].append({
                    "id": ann_id, "image_id": iid, "category_id": cat, "iscrowd": 0,
                    "bbox": [1.0, 1.0, float(bw), float(bh)], "area": float(bw * bh) * 0.8,
                })
        expected[iid] = case["label"]
    cats = [{"id": 18, "name": "dog", "supercategory": "animal"}]
    if person:
        cats.insert(0, {"id": 1, "name": "person", "supercategory": "person"})
    paths = {}
    for sub, doc in files.items():
        doc["categories"] = cats
        doc["info"] = {"description": "tinyevo fixture"}
        p = root / f"instances_{sub}.json"
        p.write_text(json.dumps(doc))
        paths[sub] = p
    out = {"path": images_dir, "annotations": paths["train2014"], "annotations_extra": [paths["val2014"]],
           "expected": expected}
    if minival is not None:
        mv = root / "minival_ids.txt"
        mv.write_text("# minival ids\n" + "\n".join(str(i) for i in minival) + "\n")
        out["minival_ids"] = mv
    return out


def vww_config(coco: dict, **kw) -> dict:
    cfg = {"source": "vww", "path": str(coco["path"]), "annotations": str(coco["annotations"]),
           "annotations_extra": [str(p) for p in coco["annotations_extra"]],
           "area_threshold": AREA_THRESHOLD}
    if "minival_ids" in coco:
        cfg["minival_ids"] = str(coco["minival_ids"])
    cfg.update(kw)
    return cfg
