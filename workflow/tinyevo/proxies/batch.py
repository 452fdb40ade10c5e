"""The one fixed, seeded data batch shared by every net, and its fingerprint (a cache-key part)."""

from __future__ import annotations

import hashlib

import numpy as np
import torch


def make_batch(data_dir, batch_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch_size`` distinct training samples drawn with ``seed`` from the normalised train split
    of ``data_dir`` (``tinyevo.data`` layout) -> (x float32 NCHW, y int64)."""
    from tinyevo.data import load_split, load_stats, to_tensor

    if int(batch_size) < 2:
        raise ValueError(f"config key 'proxies.batch_size' must be >= 2, got {batch_size}")
    xs, ys = load_split(data_dir, "train")
    n = len(ys)
    if batch_size > n:
        raise ValueError(
            f"config key 'proxies.batch_size' ({batch_size}) exceeds the {n} training samples in {data_dir}"
        )
    rng = np.random.default_rng(int(seed))
    idx = np.sort(rng.choice(n, size=int(batch_size), replace=False))
    mean, std = load_stats(data_dir)
    x = to_tensor(np.asarray(xs[idx]), mean, std).to(torch.float32).contiguous()
    y = torch.as_tensor(np.asarray(ys[idx]), dtype=torch.int64)
    return x, y


def batch_fingerprint(x: torch.Tensor, y: torch.Tensor) -> str:
    """sha256 over the shapes, dtypes and bytes of the batch."""
    h = hashlib.sha256()
    for t in (x, y):
        a = t.detach().cpu().contiguous().numpy()
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()
