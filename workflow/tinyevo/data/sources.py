"""Dataset sources. Each reader enumerates a source into a :class:`Source`: the labels, a text
reference and an id per image, the class names, the official test membership (when the source
has one) and ``image(i, mode)`` which decodes image ``i`` into a PIL image of the given mode.

Only the index is held in memory for file-based sources (ImageFolder, VWW); images are decoded
one at a time by the pipeline's worker threads. Array sources (digits, Fashion-MNIST, CIFAR-10)
keep their raw uint8 arrays, which are small compared with the resized output.
"""

from __future__ import annotations

import gzip
import json
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from tinyevo.data.errors import DataError, Unreadable

# Errors Pillow raises for a missing, truncated or non-image file.
_PIL_ERRORS: tuple[type[BaseException], ...] = (OSError, SyntaxError, ValueError, EOFError)


@dataclass
class Source:
    kind: str
    labels: np.ndarray  # int64 (N,)
    refs: list[str]  # human-readable source of each image (file path relative to the root, ...)
    ids: np.ndarray  # int64 (N,), position in the source or COCO image id
    classes: list[str]
    official_test: np.ndarray | None  # bool (N,): the source's own test split, None if it has none
    image: Callable[[int, str], "object"]  # (i, PIL mode) -> PIL.Image.Image; raises Unreadable
    root: str = ""

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def open_image(path: str | os.PathLike, mode: str, ref: str | None = None):
    """Decode an image file fully (so truncation is detected) and convert it to ``mode``."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
            return im.convert(mode)
    except FileNotFoundError:
        raise Unreadable(ref or str(path), "file not found") from None
    except Image.DecompressionBombError as exc:
        raise Unreadable(ref or str(path), f"not decoded ({exc})") from None
    except _PIL_ERRORS as exc:
        raise Unreadable(ref or str(path), f"unreadable or truncated image ({exc})") from None


def _array_image(arr: np.ndarray) -> Callable[[int, str], object]:
    """``image(i, mode)`` for an in-memory uint8 array (N, H, W) or (N, H, W, 3)."""

    def image(i: int, mode: str):
        from PIL import Image

        return Image.fromarray(np.ascontiguousarray(arr[i])).convert(mode)  # uint8 HxW -> L, HxWx3 -> RGB

    return image


def _need_path(cfg: dict, what: str) -> Path:
    p = cfg.get("path")
    if not p:
        raise DataError(f"config key 'dataset.path' is required for source {cfg['source']!r} ({what})")
    return Path(os.path.expanduser(str(p)))


def _need_dir(p: Path, key: str = "dataset.path") -> Path:
    if not p.is_dir():
        raise DataError(f"config key '{key}': directory not found: {p}")
    return p


# --------------------------------------------------------------------------------------- digits
def read_digits(cfg: dict) -> Source:
    """scikit-learn's bundled 8x8 digits (values 0..16 scaled to 0..255); no official test."""
    from sklearn.datasets import load_digits

    d = load_digits()
    imgs = np.clip(np.rint(d.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    n = imgs.shape[0]
    return Source(
        kind="digits",
        labels=d.target.astype(np.int64),
        refs=[f"sklearn.load_digits[{i}]" for i in range(n)],
        ids=np.arange(n, dtype=np.int64),
        classes=[str(c) for c in d.target_names],
        official_test=None,
        image=_array_image(imgs),
    )


# -------------------------------------------------------------------------------- fashion_mnist
FASHION_FILES = {
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                   "Bag", "Ankle boot"]


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (optionally gzip-compressed) as a numpy array; clear errors when truncated."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            data = fh.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: not a readable IDX file ({exc})") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DataError(f"{path}: not an IDX file (bad magic number)")
    dtypes = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    code, nd = data[2], data[3]
    if code not in dtypes or nd < 1:
        raise DataError(f"{path}: not an IDX file (type code {code:#x}, {nd} dimensions)")
    if len(data) < 4 + 4 * nd:
        raise DataError(f"{path}: truncated IDX header")
    shape = tuple(int(v) for v in np.frombuffer(data, ">u4", count=nd, offset=4))
    dt = np.dtype(dtypes[code])
    need = int(np.prod(shape)) * dt.itemsize
    body = len(data) - 4 - 4 * nd
    if body != need:
        raise DataError(f"{path}: truncated or oversized IDX file ({body} data bytes, shape {shape} needs {need})")
    return np.frombuffer(data, dt, offset=4 + 4 * nd).reshape(shape).astype(dt.newbyteorder("="))


def _find_fashion(root: Path) -> dict[tuple[str, str], Path] | None:
    """The four IDX files in ``root`` itself or in torchvision's layout ``root/FashionMNIST/raw``."""
    for d in (root, root / "FashionMNIST" / "raw", root / "raw"):
        found = {}
        for key, stem in FASHION_FILES.items():
            for name in (stem + ".gz", stem):
                if (d / name).is_file():
                    found[key] = d / name
                    break
        if len(found) == len(FASHION_FILES):
            return found
    return None


def _fashion_missing(root: Path) -> DataError:
    if not root.is_dir():
        return DataError(f"config key 'dataset.path': directory not found: {root} "
                         "(set dataset.download: true to let torchvision fetch Fashion-MNIST)")
    names = ", ".join(s + ".gz" for s in FASHION_FILES.values())
    return DataError(
        f"config key 'dataset.path': Fashion-MNIST files not found in {root} or {root / 'FashionMNIST' / 'raw'} "
        f"(expected {names}; set dataset.download: true to fetch them)"
    )


def read_fashion_mnist(cfg: dict) -> Source:
    root = _need_path(cfg, "the directory with the Fashion-MNIST IDX files")
    files = _find_fashion(root) if root.is_dir() else None
    if files is None and cfg.get("download"):
        from torchvision.datasets import FashionMNIST

        root.mkdir(parents=True, exist_ok=True)
        for train in (True, False):
            FashionMNIST(str(root), train=train, download=True)
        files = _find_fashion(root)
    if files is None:
        raise _fashion_missing(root)
    arrays, labels, official = [], [], []
    refs: list[str] = []
    ids: list[np.ndarray] = []
    for split in ("train", "test"):
        x = read_idx(files[(split, "images")])
        y = read_idx(files[(split, "labels")])
        if x.ndim != 3 or x.dtype != np.uint8:
            raise DataError(f"{files[(split, 'images')]}: expected uint8 images (N, H, W), got {x.dtype} {x.shape}")
        if y.ndim != 1 or y.shape[0] != x.shape[0]:
            raise DataError(
                f"{files[(split, 'labels')]}: {y.shape[0] if y.ndim else 0} labels for {x.shape[0]} images "
                f"in {files[(split, 'images')]}"
            )
        arrays.append(x)
        labels.append(y.astype(np.int64))
        official.append(np.full(x.shape[0], split == "test"))
        fname = files[(split, "images")].name
        refs.extend(f"{fname}[{i}]" for i in range(x.shape[0]))
        ids.append(np.arange(x.shape[0], dtype=np.int64))
    if arrays[0].shape[1:] != arrays[1].shape[1:]:
        raise DataError(f"{root}: train and test images differ in size "
                        f"({arrays[0].shape[1:]} vs {arrays[1].shape[1:]})")
    y_all = np.concatenate(labels)
    n_cls = int(y_all.max()) + 1 if y_all.size else 0
    classes = FASHION_CLASSES if n_cls <= len(FASHION_CLASSES) else [str(c) for c in range(n_cls)]
    return Source(
        kind="fashion_mnist",
        labels=y_all,
        refs=refs,
        ids=np.concatenate(ids),
        classes=list(classes),
        official_test=np.concatenate(official),
        image=_array_image(np.concatenate(arrays)),
        root=str(root),
    )


# ------------------------------------------------------------------------------------- cifar10
CIFAR_FOLDER = "cifar-10-batches-py"
CIFAR_TRAIN = [f"data_batch_{i}" for i in range(1, 6)]
CIFAR_TEST = ["test_batch"]
CIFAR_META = "batches.meta"


def _cifar_dir(root: Path) -> Path | None:
    for d in (root / CIFAR_FOLDER, root):
        if (d / CIFAR_TRAIN[0]).is_file() or (d / CIFAR_META).is_file():
            return d
    return None


def _check_cifar_dir(root: Path, d: Path | None) -> None:
    """``d`` (the batches folder found under ``root``) holds every official batch file."""
    if d is None:
        if not root.is_dir():
            raise DataError(f"config key 'dataset.path': directory not found: {root} "
                            "(set dataset.download: true to let torchvision fetch CIFAR-10)")
        raise DataError(
            f"config key 'dataset.path': no CIFAR-10 batches in {root} or {root / CIFAR_FOLDER} "
            f"(expected {', '.join(CIFAR_TRAIN + CIFAR_TEST + [CIFAR_META])}; set dataset.download: true to fetch them)"
        )
    for name in CIFAR_TRAIN + CIFAR_TEST + [CIFAR_META]:
        if not (d / name).is_file():
            raise DataError(f"config key 'dataset.path': CIFAR-10 file not found: {d / name}")


def read_cifar10(cfg: dict) -> Source:
    """The python-pickle batches, read with torchvision's CIFAR10 reader (existence check only: the
    MD5 sums are those of the official files, so a re-packed or test set would never pass).

    The official batches are Python pickles, and unpickling runs whatever a file holds: they are
    read only from the configured ``dataset.path`` (or downloaded there by torchvision with its
    MD5 check), never from a results folder."""
    root = _need_path(cfg, f"the '{CIFAR_FOLDER}' directory or its parent")
    from torchvision.datasets import CIFAR10

    d = _cifar_dir(root) if root.is_dir() else None
    if d is None and cfg.get("download"):
        root.mkdir(parents=True, exist_ok=True)
        for train in (True, False):
            CIFAR10(str(root), train=train, download=True)  # official files, MD5-checked
        d = _cifar_dir(root)
    _check_cifar_dir(root, d)

    class _Reader(CIFAR10):
        base_folder = d.name
        train_list = [[n, None] for n in CIFAR_TRAIN]
        test_list = [[n, None] for n in CIFAR_TEST]
        meta = {"filename": CIFAR_META, "key": "label_names", "md5": None}

    parts = []
    for train in (True, False):
        try:
            parts.append(_Reader(str(d.parent), train=train))
        except Exception as exc:
            bad = _first_bad_pickle(d, (CIFAR_TRAIN if train else CIFAR_TEST) + [CIFAR_META])
            where = bad or d
            raise DataError(f"CIFAR-10 batch not readable: {where} ({type(exc).__name__}: {exc})") from None
    xs = [np.asarray(p.data, dtype=np.uint8) for p in parts]
    ys = [np.asarray(p.targets, dtype=np.int64) for p in parts]
    n_train = xs[0].shape[0]
    # torchvision concatenates data_batch_1..5 (resp. test_batch) in order: ref = position there
    refs = [f"train[{i}]" for i in range(n_train)] + [f"test[{i}]" for i in range(xs[1].shape[0])]
    return Source(
        kind="cifar10",
        labels=np.concatenate(ys),
        refs=refs,
        ids=np.concatenate([np.arange(n_train), np.arange(xs[1].shape[0])]).astype(np.int64),
        classes=list(parts[0].classes),
        official_test=np.concatenate([np.zeros(n_train, bool), np.ones(xs[1].shape[0], bool)]),
        image=_array_image(np.concatenate(xs)),
        root=str(d),
    )


def _first_bad_pickle(d: Path, names: Sequence[str]) -> Path | None:
    for name in names:
        try:
            with open(d / name, "rb") as fh:
                obj = pickle.load(fh, encoding="latin1")
            if not isinstance(obj, dict):
                return d / name
        except Exception:
            return d / name
    return None


# --------------------------------------------------------------------------------- imagefolder
def read_imagefolder(cfg: dict) -> Source:
    """A class-per-folder tree (torchvision's ImageFolder layout and file scan); no official test."""
    from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset

    root = _need_dir(_need_path(cfg, "the class-per-folder image tree"))
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    if len(classes) < 2:
        raise DataError(f"config key 'dataset.path': an ImageFolder needs at least 2 class folders, found "
                        f"{len(classes)} in {root}")
    class_to_idx = {c: i for i, c in enumerate(classes)}
    samples = make_dataset(str(root), class_to_idx, extensions=IMG_EXTENSIONS, allow_empty=True)
    counts = np.bincount([t for _, t in samples], minlength=len(classes))
    empty = [str(root / c) for c, n in zip(classes, counts) if n == 0]
    if empty:
        raise DataError(f"empty class folder(s) (no {'/'.join(IMG_EXTENSIONS)} images): {', '.join(empty)}")
    paths = [p for p, _ in samples]
    refs = [os.path.relpath(p, root) for p in paths]

    def image(i: int, mode: str):
        return open_image(paths[i], mode, ref=paths[i])

    return Source(
        kind="imagefolder",
        labels=np.asarray([t for _, t in samples], dtype=np.int64),
        refs=refs,
        ids=np.arange(len(samples), dtype=np.int64),
        classes=classes,
        official_test=None,
        image=image,
        root=str(root),
    )


# ----------------------------------------------------------------------------------------- vww
VWW_CLASSES = ["no_person", "person"]


def _load_coco(path: Path, key: str) -> dict:
    if not path.is_file():
        raise DataError(f"config key '{key}': annotation file not found: {path}")
    try:
        with open(path, "rb") as fh:
            doc = json.load(fh)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable COCO JSON file ({exc})") from None
    if not isinstance(doc, dict):
        raise DataError(f"{path}: not a COCO instances file (top level is not an object)")
    for k in ("images", "annotations", "categories"):
        if not isinstance(doc.get(k), list):
            raise DataError(f"{path}: not a COCO instances file (no '{k}' list)")
    return doc


def vww_labels(doc: dict, threshold: float, where: str = "annotations") -> dict[int, int]:
    """Visual Wake Words labels of one COCO instances document: ``image id -> 1`` when any
    ``person`` box has ``w * h / (image width * height) > threshold``, else 0."""
    person = [c.get("id") for c in doc["categories"] if isinstance(c, dict) and c.get("name") == "person"]
    if not person:
        raise DataError(f"{where}: no 'person' category in the COCO categories")
    pid = set(person)
    areas: dict[int, float] = {}
    for img in doc["images"]:
        try:
            iid, w, h = int(img["id"]), float(img["width"]), float(img["height"])
        except (KeyError, TypeError, ValueError):
            raise DataError(f"{where}: image entry without a valid id/width/height: {str(img)[:120]}") from None
        if w <= 0 or h <= 0:
            raise DataError(f"{where}: image {iid} has a non-positive width/height ({w} x {h})")
        areas[iid] = w * h
    labels = dict.fromkeys(areas, 0)
    for ann in doc["annotations"]:
        if ann.get("category_id") not in pid:
            continue
        iid = ann.get("image_id")
        if iid not in areas:
            raise DataError(f"{where}: annotation {ann.get('id')} refers to unknown image id {iid}")
        try:
            bw, bh = float(ann["bbox"][2]), float(ann["bbox"][3])
        except (KeyError, IndexError, TypeError, ValueError):
            raise DataError(f"{where}: annotation {ann.get('id')} has no valid 'bbox' [x, y, w, h]") from None
        if bw * bh / areas[iid] > threshold:
            labels[iid] = 1
    return labels


def _read_minival(path: Path) -> set[int]:
    if not path.is_file():
        raise DataError(f"config key 'dataset.minival_ids': file not found: {path}")
    ids: set[int] = set()
    with open(path) as fh:
        for n, line in enumerate(fh, 1):
            s = line.split("#", 1)[0].strip()
            if not s:
                continue
            try:
                ids.add(int(s))
            except ValueError:
                raise DataError(f"{path}, line {n}: not an image id: {s!r}") from None
    if not ids:
        raise DataError(f"config key 'dataset.minival_ids': no image ids in {path}")
    return ids


def read_vww(cfg: dict) -> Source:
    """Visual Wake Words from COCO instances JSON file(s) and the image directory."""
    root = _need_dir(_need_path(cfg, "the COCO image directory"))
    if not cfg.get("annotations"):
        raise DataError("config key 'dataset.annotations' is required for source 'vww' (a COCO instances JSON)")
    ann_files = [("dataset.annotations", Path(os.path.expanduser(cfg["annotations"])))]
    ann_files += [(f"dataset.annotations_extra[{i}]", Path(os.path.expanduser(p)))
                  for i, p in enumerate(cfg.get("annotations_extra") or [])]
    labels: dict[int, int] = {}
    names: dict[int, str] = {}
    for key, path in ann_files:
        doc = _load_coco(path, key)
        lab = vww_labels(doc, float(cfg.get("area_threshold", 0.005)), where=str(path))
        for img in doc["images"]:
            iid = int(img["id"])
            if "file_name" not in img:
                raise DataError(f"{path}: image {iid} has no 'file_name'")
            names[iid] = str(img["file_name"])
        labels.update(lab)
        del doc
    if not labels:
        raise DataError(f"no images in {', '.join(str(p) for _, p in ann_files)}")
    order = sorted(labels)
    official = None
    if cfg.get("minival_ids"):
        mv_path = Path(os.path.expanduser(cfg["minival_ids"]))
        minival = _read_minival(mv_path)
        unknown = sorted(minival - labels.keys())
        if unknown:
            raise DataError(
                f"{mv_path}: {len(unknown)} minival id(s) not in the annotation files, e.g. {unknown[:5]} "
                "(add the matching COCO JSON via dataset.annotations_extra)"
            )
        official = np.asarray([i in minival for i in order], dtype=bool)
    subdirs = sorted((e.path for e in os.scandir(root) if e.is_dir() and not e.name.startswith(".")))
    files = [names[i] for i in order]

    def image(i: int, mode: str):
        rel = files[i]
        cand = os.path.join(root, rel)
        if not os.path.isfile(cand):
            for sd in subdirs:  # COCO layout: <root>/train2014/..., <root>/val2014/...
                alt = os.path.join(sd, rel)
                if os.path.isfile(alt):
                    cand = alt
                    break
        return open_image(cand, mode, ref=cand)

    return Source(
        kind="vww",
        labels=np.asarray([labels[i] for i in order], dtype=np.int64),
        refs=files,
        ids=np.asarray(order, dtype=np.int64),
        classes=list(VWW_CLASSES),
        official_test=official,
        image=image,
        root=str(root),
    )


READERS: dict[str, Callable[[dict], Source]] = {
    "digits": read_digits,
    "fashion_mnist": read_fashion_mnist,
    "cifar10": read_cifar10,
    "imagefolder": read_imagefolder,
    "vww": read_vww,
}


def _path_in(p: Path, workdir: str | os.PathLike | None) -> Path:
    return p if workdir is None or p.is_absolute() else Path(workdir) / p


def check_inputs(cfg: dict, workdir: str | os.PathLike | None = None) -> None:
    """The checks of the source's raw inputs that need no file to be opened, as the readers make
    them (same :class:`DataError` messages): a required path, a missing folder or file (with
    ``download: true`` a missing Fashion-MNIST / CIFAR-10 folder is fine). Relative paths are taken
    from ``workdir`` (default: the current directory). Run by the workflow before any job."""
    src = cfg.get("source", "digits")
    if src not in READERS:
        raise DataError(f"config key 'dataset.source': unknown source {src!r} (one of {', '.join(READERS)})")
    if src == "digits":
        return
    if src == "fashion_mnist":
        root = _path_in(_need_path(cfg, "the directory with the Fashion-MNIST IDX files"), workdir)
        if not cfg.get("download") and (not root.is_dir() or _find_fashion(root) is None):
            raise _fashion_missing(root)
        return
    if src == "cifar10":
        root = _path_in(_need_path(cfg, f"the '{CIFAR_FOLDER}' directory or its parent"), workdir)
        d = _cifar_dir(root) if root.is_dir() else None
        if not (d is None and cfg.get("download")):
            _check_cifar_dir(root, d)
        return
    if src == "imagefolder":
        root = _need_dir(_path_in(_need_path(cfg, "the class-per-folder image tree"), workdir))
        classes = [e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith(".")]
        if len(classes) < 2:
            raise DataError(f"config key 'dataset.path': an ImageFolder needs at least 2 class folders, found "
                            f"{len(classes)} in {root}")
        return
    _need_dir(_path_in(_need_path(cfg, "the COCO image directory"), workdir))
    if not cfg.get("annotations"):
        raise DataError("config key 'dataset.annotations' is required for source 'vww' (a COCO instances JSON)")
    files = [("dataset.annotations", cfg["annotations"])]
    files += [(f"dataset.annotations_extra[{i}]", f) for i, f in enumerate(cfg.get("annotations_extra") or [])]
    for key, f in files:
        path = _path_in(Path(os.path.expanduser(f)), workdir)
        if not path.is_file():
            raise DataError(f"config key '{key}': annotation file not found: {path}")
    if cfg.get("minival_ids"):
        path = _path_in(Path(os.path.expanduser(cfg["minival_ids"])), workdir)
        if not path.is_file():
            raise DataError(f"config key 'dataset.minival_ids': file not found: {path}")


def read_source(cfg: dict) -> Source:
    src = cfg.get("source", "digits")
    if src not in READERS:
        raise DataError(f"config key 'dataset.source': unknown source {src!r} (one of {', '.join(READERS)})")
    return READERS[src](cfg)
