"""Reading the normalised dataset: the API every later stage uses."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from tinyevo.data.errors import DataError

SPLITS = ("train", "val", "test")
MANIFEST = "manifest.parquet"
STATS = "stats.parquet"
# per split and class: images kept and unreadable images skipped (dataset.skip_corrupt)
CLASSES = "classes.parquet"
# Standard deviations below this are clamped in to_tensor (a constant channel would divide by 0).
STD_EPS = 1e-6


def output_names() -> list[str]:
    """File names (relative to the dataset folder) that :func:`tinyevo.data.prepare` writes."""
    return [f"{s}_{k}.npy" for s in SPLITS for k in ("x", "y")] + [MANIFEST, STATS, CLASSES]


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")


def load_split(data_dir: str | os.PathLike, split: str) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` of one split: x uint8 NHWC opened as a read-only memory map, y int64."""
    _check_split(split)
    d = Path(data_dir)
    px, py = d / f"{split}_x.npy", d / f"{split}_y.npy"
    for p in (px, py):
        if not p.is_file():
            raise DataError(f"dataset file not found: {p} (run the data stage first)")
    try:
        x = np.load(px, mmap_mode="r")
        y = np.load(py)
    except Exception as exc:
        raise DataError(f"dataset split {split!r} in {d} is not readable: {exc}") from None
    if x.dtype != np.uint8 or x.ndim != 4:
        raise DataError(f"{px}: expected a uint8 NHWC array, got {x.dtype} with shape {x.shape}")
    if y.dtype != np.int64 or y.shape != (x.shape[0],):
        raise DataError(f"{py}: expected {x.shape[0]} int64 labels, got {y.dtype} with shape {y.shape}")
    return x, y


def load_stats(data_dir: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel ``(mean, std)`` float32 arrays on the [0, 1] scale (train split)."""
    from tinyevo.io import read_parquet

    p = Path(data_dir) / STATS
    try:
        df = read_parquet(p, what="dataset stats")
    except (FileNotFoundError, ValueError) as exc:
        raise DataError(str(exc)) from None
    missing = {"channel", "mean", "std"} - set(df.columns)
    if missing:
        raise DataError(f"{p}: missing column(s) {', '.join(sorted(missing))}")
    df = df.sort_values("channel")
    return df["mean"].to_numpy(np.float32), df["std"].to_numpy(np.float32)


def normalised_nhwc(x_uint8: Any, mean: Any, std: Any) -> np.ndarray:
    """uint8 NHWC -> float32 NHWC ``(x / 255 - mean) / std`` in numpy, without torch: the same
    float32 operations as :func:`to_tensor` (a test holds them equal for every pixel value), for
    the jobs that feed the int8 feature extractor and never load torch."""
    x = np.asarray(x_uint8)
    mean = np.asarray(mean, dtype=np.float32).reshape(-1)
    std = np.asarray(std, dtype=np.float32).reshape(-1)
    if x.ndim != 4 or mean.shape != (x.shape[-1],) or std.shape != (x.shape[-1],):
        raise DataError(f"normalised_nhwc expects NHWC images and one mean/std per channel, got shape {x.shape} "
                        f"and {mean.size}/{std.size} values")
    return (x.astype(np.float32) / np.float32(255.0) - mean) / np.maximum(std, np.float32(STD_EPS))


def to_tensor(x_uint8: Any, mean: Any, std: Any):
    """uint8 NHWC (or one HWC image) -> float32 NCHW torch tensor, ``(x / 255 - mean) / std``."""
    import torch

    x = np.asarray(x_uint8)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4:
        raise DataError(f"to_tensor expects NHWC or HWC images, got shape {x.shape}")
    mean = np.asarray(mean, dtype=np.float32).reshape(-1)
    std = np.asarray(std, dtype=np.float32).reshape(-1)
    if mean.shape != (x.shape[-1],) or std.shape != (x.shape[-1],):
        raise DataError(
            f"to_tensor: {x.shape[-1]} image channels but mean/std have {mean.size}/{std.size} values"
        )
    x = np.ascontiguousarray(x)
    if not x.flags.writeable:  # a read-only memmap: torch wants a writable buffer (uint8 copy)
        x = x.copy()
    t = torch.from_numpy(x).to(torch.float32).div_(255.0)
    t = t.sub_(torch.from_numpy(mean)).div_(torch.from_numpy(np.maximum(std, STD_EPS)))
    return t.permute(0, 3, 1, 2).contiguous()
