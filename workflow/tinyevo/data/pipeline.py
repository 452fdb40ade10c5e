"""The normalisation pipeline: enumerate a source, split it (seeded, stratified), decode and
resize the images in parallel straight into memory-mapped ``.npy`` temp files, compute the
train statistics, write the manifest, and rename everything into place only when all of it
succeeded.
"""

from __future__ import annotations

import contextlib
import logging
import os
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np

from tinyevo.data.errors import DataError, Unreadable
from tinyevo.data.sources import Source, read_source
from tinyevo.data.store import CLASSES, MANIFEST, SPLITS, STATS
from tinyevo.io import atomic_path
from tinyevo.runtime import log_header, progress

# Images per task of the decode pool, and per block when streaming statistics / compaction.
MAX_CHUNK = 256
STREAM_BLOCK = 2048
# Unreadable images listed one by one in the log (the count is always logged).
MAX_LISTED = 20


def resize_image(img: Any, resolution: int, channels: int) -> np.ndarray:
    """A PIL image (or uint8 HxW / HxWx3 array) as a uint8 ``(resolution, resolution, channels)``
    array: grey -> RGB by replication, RGB -> grey by PIL's 'L', PIL bilinear resize."""
    from PIL import Image

    if isinstance(img, np.ndarray):
        img = Image.fromarray(np.ascontiguousarray(img.astype(np.uint8, copy=False).squeeze()))
    mode = "L" if channels == 1 else "RGB"
    if img.mode != mode:
        img = img.convert(mode)
    if img.size != (resolution, resolution):
        img = img.resize((resolution, resolution), Image.Resampling.BILINEAR)
    a = np.asarray(img, dtype=np.uint8)
    return a[..., None] if channels == 1 else a


# ------------------------------------------------------------------------------------ splitting
def _split(idx: np.ndarray, labels: np.ndarray, seed: int, notes: list[str], what: str,
           test_size: float | None = None, train_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Stratified ``train_test_split`` of ``idx``; plain shuffled split when a class is too
    small to stratify (noted for the log)."""
    from sklearn.model_selection import train_test_split

    kw = dict(test_size=test_size, train_size=train_size, random_state=seed, shuffle=True)
    try:
        a, b = train_test_split(idx, stratify=labels[idx], **kw)
    except ValueError as exc:
        notes.append(f"{what}: not stratified ({exc})")
        try:
            a, b = train_test_split(idx, **kw)
        except ValueError as exc2:
            raise DataError(f"cannot make the {what} split from {len(idx)} images: {exc2}") from None
    return np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)


def split_indices(labels: np.ndarray, official_test: np.ndarray | None, val_fraction: float,
                  test_fraction: float, max_per_split: int | None, seed: int
                  ) -> tuple[dict[str, np.ndarray], list[str]]:
    """Source positions of each split, in a seeded random order.

    With an official test split (``official_test``) the test split is exactly that and
    ``val_fraction`` of the rest becomes val. Without one, ``test_fraction`` and ``val_fraction``
    of all images become test and val. All splits are stratified by label; ``max_per_split``
    then caps each split with a stratified subsample. Returns ``(splits, notes)``.
    """
    labels = np.asarray(labels, dtype=np.int64)
    n = labels.shape[0]
    idx = np.arange(n, dtype=np.int64)
    notes: list[str] = []
    rng = np.random.default_rng(seed)
    if official_test is not None:
        official_test = np.asarray(official_test, dtype=bool)
        test = rng.permutation(idx[official_test])
        pool = idx[~official_test]
        val_share = val_fraction
    else:
        if n < 2:
            raise DataError(f"cannot split {n} image(s) into train and test")
        pool, test = _split(idx, labels, seed, notes, "test", test_size=test_fraction)
        val_share = val_fraction / (1.0 - test_fraction)
    if val_fraction > 0 and len(pool) > 1:
        train, val = _split(pool, labels, seed, notes, "val", test_size=val_share)
    else:
        train, val = rng.permutation(pool), np.zeros(0, dtype=np.int64)
    splits = {"train": train, "val": val, "test": test}
    if max_per_split:
        for name, s in splits.items():
            if len(s) > max_per_split:
                splits[name], _ = _split(s, labels, seed, notes, f"{name} cap", train_size=int(max_per_split))
    if len(splits["train"]) == 0:
        raise DataError("the train split is empty (every image went to test/val)")
    return splits, notes


# --------------------------------------------------------------------------------- writing
def _decode_into(src: Source, idx: np.ndarray, path: Path, resolution: int, channels: int,
                 threads: int, skip_corrupt: bool, desc: str) -> list[tuple[int, Unreadable]]:
    """Decode ``src`` images ``idx`` into a new ``.npy`` memory map at ``path``, chunks in a
    thread pool. Returns the (row, error) of unreadable images when ``skip_corrupt``."""
    n = len(idx)
    mode = "L" if channels == 1 else "RGB"
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(n, resolution, resolution, channels))
    bad: list[tuple[int, Unreadable]] = []

    def work(a: int, b: int) -> tuple[int, list[tuple[int, Unreadable]]]:
        local = []
        for j in range(a, b):
            try:
                mm[j] = resize_image(src.image(int(idx[j]), mode), resolution, channels)
            except Unreadable as exc:
                if not skip_corrupt:
                    raise DataError(
                        f"{exc.ref}: {exc.reason} (set dataset.skip_corrupt: true to skip such images)"
                    ) from None
                local.append((j, exc))
        return b - a, local

    try:
        if n:
            workers = max(1, int(threads))
            chunk = int(max(1, min(MAX_CHUNK, -(-n // (workers * 4)))))
            with ThreadPoolExecutor(max_workers=workers) as pool, progress(total=n, desc=desc, unit="img") as bar:
                futures = [pool.submit(work, a, min(a + chunk, n)) for a in range(0, n, chunk)]
                try:
                    for fut in as_completed(futures):
                        done, local = fut.result()
                        bad.extend(local)
                        bar.update(done)
                except BaseException:
                    for fut in futures:
                        fut.cancel()
                    raise
        mm.flush()
    finally:
        del mm
    bad.sort(key=lambda t: t[0])
    return bad


def _compact(path: Path, keep: np.ndarray) -> None:
    """Rewrite the ``.npy`` at ``path`` with only the rows in ``keep`` (streamed, atomic)."""
    src = np.load(path, mmap_mode="r")
    rows = np.flatnonzero(keep)
    with atomic_path(path, suffix=".npy") as tmp:
        dst = np.lib.format.open_memmap(tmp, mode="w+", dtype=src.dtype, shape=(len(rows),) + src.shape[1:])
        for a in range(0, len(rows), STREAM_BLOCK):
            sel = rows[a:a + STREAM_BLOCK]
            dst[a:a + len(sel)] = src[sel]
        dst.flush()
        del dst
    del src


def channel_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and (population) std of uint8 NHWC images on the [0, 1] scale, streamed
    in blocks with float64 sums."""
    c = x.shape[-1]
    s = np.zeros(c, np.float64)
    sq = np.zeros(c, np.float64)
    count = 0
    for a in range(0, x.shape[0], STREAM_BLOCK):
        blk = np.asarray(x[a:a + STREAM_BLOCK], dtype=np.float64).reshape(-1, c) / 255.0
        s += blk.sum(0)
        sq += np.square(blk).sum(0)
        count += blk.shape[0]
    if count == 0:
        raise DataError("cannot compute statistics of an empty train split")
    mean = s / count
    var = np.maximum(sq / count - mean**2, 0.0)
    return mean, np.sqrt(var)


def class_counts(split: str, labels: np.ndarray, keep: np.ndarray, classes: list[str]) -> "pd.DataFrame":
    """One row per class of the source: split, label, class_name, images (kept), skipped."""
    import pandas as pd

    n = len(classes)
    labels = np.asarray(labels, dtype=np.int64)
    kept = np.bincount(labels[keep], minlength=n)[:n]
    skipped = np.bincount(labels[~keep], minlength=n)[:n]
    return pd.DataFrame({"split": split, "label": np.arange(n, dtype=np.int64), "class_name": list(classes),
                         "images": kept.astype(np.int64), "skipped": skipped.astype(np.int64)})


def _check_no_class_emptied(counts: "pd.DataFrame", split: str) -> None:
    """``skip_corrupt`` must never drop a whole class: the classifier would keep an output the
    data no longer has (search_space.num_classes would disagree with the dataset)."""
    emptied = counts[(counts["images"] == 0) & (counts["skipped"] > 0)]
    if len(emptied):
        r = emptied.iloc[0]
        others = f" (and {len(emptied) - 1} more class(es))" if len(emptied) > 1 else ""
        raise DataError(
            f"class {r['class_name']!r} (label {int(r['label'])}) has no readable image left in the {split} split: "
            f"all {int(r['skipped'])} were unreadable and skipped{others}; dataset.skip_corrupt never drops a "
            "whole class: repair or replace those images"
        )


def _log_skipped(log: logging.Logger, counts: "pd.DataFrame", split: str) -> None:
    bad = counts[counts["skipped"] > 0]
    log.warning("%s split: skipped per class: %s", split,
                ", ".join(f"{r.class_name} {int(r.skipped)} of {int(r.skipped + r.images)}" for r in bad.itertuples()))


def _check_cfg(cfg: dict) -> tuple[int, int]:
    res, ch = cfg.get("resolution", 32), cfg.get("channels", 1)
    if isinstance(res, bool) or not isinstance(res, (int, np.integer)) or res <= 0:
        raise DataError(f"config key 'dataset.resolution' must be a positive integer, got {res!r}")
    if ch not in (1, 3):
        raise DataError(f"config key 'dataset.channels' must be 1 or 3, got {ch!r}")
    for key, lo in (("val_fraction", 0.0), ("test_fraction", 0.0)):
        v = cfg.get(key, 0.1)
        if not (lo <= float(v) < 1.0):
            raise DataError(f"config key 'dataset.{key}' must be in [0, 1), got {v!r}")
    return int(res), int(ch)


def _log_skips(log, split: str, bad: list, n: int) -> None:
    log.warning("%s split: skipped %d unreadable image(s) of %d", split, len(bad), n)
    for _, exc in bad[:MAX_LISTED]:
        log.warning("  skipped %s: %s", exc.ref, exc.reason)
    if len(bad) > MAX_LISTED:
        log.warning("  ... and %d more", len(bad) - MAX_LISTED)


def _write_split(src, split: str, idx: np.ndarray, out: Path, stack, name: str, resolution: int, channels: int,
                 threads: int, skip_corrupt: bool, log):
    """Decode one split into ``{split}_x.npy`` / ``{split}_y.npy`` (temporary paths, renamed when
    ``stack`` closes): (kept indices, skipped count, class counts, manifest rows, the x temp path)."""
    import pandas as pd

    tmp_x = stack.enter_context(atomic_path(out / f"{split}_x.npy", suffix=".npy"))
    tmp_y = stack.enter_context(atomic_path(out / f"{split}_y.npy", suffix=".npy"))
    bad = _decode_into(src, idx, tmp_x, resolution, channels, threads, skip_corrupt, f"{name} {split}")
    keep = np.ones(len(idx), dtype=bool)
    if bad:
        keep[[j for j, _ in bad]] = False
        _log_skips(log, split, bad, len(idx))
        _compact(tmp_x, keep)
    kept = idx[keep]
    if split == "train" and len(kept) == 0:
        raise DataError(f"no readable image left in the train split ({len(idx)} unreadable)")
    counts = class_counts(split, src.labels[idx], keep, list(src.classes))
    if bad:
        _log_skipped(log, counts, split)
        _check_no_class_emptied(counts, split)
    y = src.labels[kept].astype(np.int64)
    np.save(tmp_y, y)
    manifest = pd.DataFrame({
        "split": split,
        "index": np.arange(len(kept), dtype=np.int64),
        "label": y,
        "class_name": [src.classes[int(t)] if 0 <= t < len(src.classes) else str(t) for t in y],
        "source": [src.refs[int(i)] for i in kept],
        "source_id": src.ids[kept].astype(np.int64),
    })
    log.info("%s: %d images -> %s", split, len(kept), out / f"{split}_x.npy")
    return kept, len(bad), counts, manifest, tmp_x


def _write_tables(out: Path, stack, stats, channels: int, manifest: list, counts: list) -> None:
    """stats.parquet (train mean / std per channel), manifest.parquet and classes.parquet."""
    import pandas as pd

    mean, std = stats
    stats_df = pd.DataFrame({"channel": np.arange(channels, dtype=np.int64), "mean": mean, "std": std})
    tmp_stats = stack.enter_context(atomic_path(out / STATS))
    stats_df.to_parquet(tmp_stats, index=False, engine="pyarrow")
    tmp_man = stack.enter_context(atomic_path(out / MANIFEST))
    pd.concat(manifest, ignore_index=True).to_parquet(tmp_man, index=False, engine="pyarrow")
    tmp_cls = stack.enter_context(atomic_path(out / CLASSES))
    pd.concat(counts, ignore_index=True).to_parquet(tmp_cls, index=False, engine="pyarrow")


def prepare(cfg: dict, out_dir: str | os.PathLike, threads: int = 1, log: logging.Logger | None = None) -> dict:
    """See :func:`tinyevo.data.prepare`. Steps: read the source, split it, decode each split
    (:func:`_write_split`), write the tables (:func:`_write_tables`); every file is renamed into
    place only when all of them are written."""
    log = log or logging.getLogger("tinyevo.data")
    resolution, channels = _check_cfg(cfg)
    seed = int(cfg.get("seed") or 0)
    skip_corrupt = bool(cfg.get("skip_corrupt", False))
    src = read_source(cfg)
    splits, notes = split_indices(
        src.labels, src.official_test, float(cfg.get("val_fraction", 0.1)),
        float(cfg.get("test_fraction", 0.2)), cfg.get("max_per_split"), seed,
    )
    name = cfg.get("name") or src.kind
    log_header(log, "data", {
        "dataset": name,
        "source": src.kind + (f" ({src.root})" if src.root else ""),
        "images": len(src),
        "classes": f"{len(src.classes)}: {', '.join(src.classes[:12])}{' ...' if len(src.classes) > 12 else ''}",
        "resolution": f"{resolution}x{resolution}x{channels}",
        "sizes": ", ".join(f"{k}={len(v)}" for k, v in splits.items()),
        "official test": src.official_test is not None,
        "seed": seed,
        "threads": threads,
        "skip_corrupt": skip_corrupt,
    })
    for note in notes:
        log.warning("split %s", note)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sizes: dict[str, int] = {}
    skipped: dict[str, int] = {}
    manifest: list = []
    counts: list = []
    with contextlib.ExitStack() as stack:
        stats = None
        for split in SPLITS:
            kept, n_bad, cnt, man, tmp_x = _write_split(src, split, splits[split], out, stack, name, resolution,
                                                        channels, threads, skip_corrupt, log)
            sizes[split], skipped[split] = int(len(kept)), int(n_bad)
            counts.append(cnt)
            manifest.append(man)
            if split == "train":
                stats = channel_stats(np.load(tmp_x, mmap_mode="r"))
        _write_tables(out, stack, stats, channels, manifest, counts)
    mean, std = stats
    log.info("train mean %s std %s", np.round(mean, 4).tolist(), np.round(std, 4).tolist())
    if any(skipped.values()):
        log.warning("skipped %d unreadable image(s) in total", sum(skipped.values()))
    return {
        "name": name,
        "source": src.kind,
        "out_dir": str(out),
        "resolution": resolution,
        "channels": channels,
        "num_classes": len(src.classes),
        "classes": list(src.classes),
        "sizes": sizes,
        "skipped": skipped,
        "skipped_per_class": {c["split"].iloc[0]: {r.class_name: int(r.skipped) for r in c.itertuples() if r.skipped}
                              for c in counts},
        "mean": [float(v) for v in mean],
        "std": [float(v) for v in std],
    }

