"""Parquet-backed score cache shared by shards, re-runs and the evolution stage.

One row per (arch, net spec, proxy, proxy settings, data-batch fingerprint): the ``key`` column is
the sha256 of those parts, so a changed batch, batch size, seed, proxy version or net spec misses by
construction. Writers never modify a file: each flush writes a new ``part-<uuid>.parquet``
atomically (``tinyevo.io``), so several shard processes can write at once and a killed job loses
at most the rows since its last flush. Readers take the union of all parts (hidden ``.``-prefixed
temporary files are ignored).
"""

from __future__ import annotations

import hashlib
import logging
import os
import uuid
from pathlib import Path
from typing import Iterable

import pandas as pd

from tinyevo.io import write_parquet

log = logging.getLogger("tinyevo.proxies.cache")

COLUMNS = ["key", "arch", "net", "proxy", "settings", "fingerprint", "score"]


def cache_key(arch: str, net: str, proxy: str, settings: str, fingerprint: str) -> str:
    return hashlib.sha256("\x1f".join((arch, net, proxy, settings, fingerprint)).encode()).hexdigest()


class ScoreCache:
    def __init__(self, cache_dir: str | os.PathLike):
        self.dir = Path(cache_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._store: dict[str, float] = {}
        self._seen: set[str] = set()
        self._pending: list[dict] = []
        self.refresh()

    # ----- reading -------------------------------------------------------------------------------
    def _parts(self) -> list[Path]:
        return sorted(p for p in self.dir.glob("*.parquet") if not p.name.startswith("."))

    def refresh(self) -> int:
        """Read part files written since the last refresh (by any process); returns rows added."""
        added = 0
        for p in self._parts():
            if p.name in self._seen:
                continue
            try:
                df = pd.read_parquet(p, columns=["key", "score"], engine="pyarrow")
            except FileNotFoundError:  # compacted away by another process meanwhile
                continue
            except Exception as exc:
                log.warning("score cache: skipping unreadable part %s (%s)", p, exc)
                self._seen.add(p.name)
                continue
            self._seen.add(p.name)
            for k, s in zip(df["key"].tolist(), df["score"].tolist()):
                if k not in self._store:
                    added += 1
                self._store[k] = float(s)
        return added

    def __contains__(self, key: str) -> bool:
        return key in self._store

    def __len__(self) -> int:
        return len(self._store)

    def get(self, key: str, default: float | None = None) -> float | None:
        """The cached score (may be NaN: a non-finite score is cached as NaN) or ``default``."""
        return self._store.get(key, default)

    # ----- writing -------------------------------------------------------------------------------
    def put(self, key: str, score: float, arch: str = "", net: str = "", proxy: str = "",
            settings: str = "", fingerprint: str = "") -> None:
        """Record a score; it is readable at once by this instance and by others after
        :meth:`flush`."""
        self._store[key] = float(score)
        self._pending.append({"key": key, "arch": arch, "net": net, "proxy": proxy, "settings": settings,
                              "fingerprint": fingerprint, "score": float(score)})

    @property
    def pending(self) -> int:
        return len(self._pending)

    def flush(self) -> Path | None:
        """Write the pending rows as a new part file, atomically."""
        if not self._pending:
            return None
        df = pd.DataFrame(self._pending, columns=COLUMNS).astype({"score": "float64"})
        path = self.dir / f"part-{uuid.uuid4().hex}.parquet"
        write_parquet(df, path)
        self._seen.add(path.name)
        self._pending = []
        return path

    def compact(self) -> Path | None:
        """Merge every part this instance has read into one new part and delete the merged ones.
        Run it where no other writer is active (e.g. after the gather); a concurrent reader only
        risks a cache miss, never a wrong score."""
        self.flush()
        self.refresh()
        parts = [p for p in self._parts() if p.name in self._seen]
        if len(parts) <= 1:
            return parts[0] if parts else None
        frames = []
        for p in parts:
            try:
                frames.append(pd.read_parquet(p, engine="pyarrow"))
            except FileNotFoundError:
                continue
        df = pd.concat(frames, ignore_index=True).drop_duplicates("key", keep="last")
        df = df.sort_values(["proxy", "arch", "key"], kind="stable").reset_index(drop=True)
        path = self.dir / f"part-{uuid.uuid4().hex}.parquet"
        write_parquet(df[COLUMNS], path)
        self._seen.add(path.name)
        for p in parts:
            try:
                p.unlink()
            except FileNotFoundError:
                pass
            self._seen.discard(p.name)
        return path

    def table(self) -> pd.DataFrame:
        """All rows of all parts (for inspection)."""
        frames = []
        for p in self._parts():
            try:
                frames.append(pd.read_parquet(p, engine="pyarrow"))
            except FileNotFoundError:
                continue
        if self._pending:
            frames.append(pd.DataFrame(self._pending, columns=COLUMNS))
        if not frames:
            return pd.DataFrame(columns=COLUMNS)
        return pd.concat(frames, ignore_index=True).drop_duplicates("key", keep="last").reset_index(drop=True)

    def keys(self) -> Iterable[str]:
        return self._store.keys()
