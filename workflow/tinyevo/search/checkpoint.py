"""Atomic checkpoints of the evolution loop: one pickle holding the history rows, the completed
cycle and the numpy bit-generator state, tagged with a key (hash of every parameter and input
the loop depends on, and of the search code). A checkpoint whose key differs is ignored, so a
changed config never resumes from a stale state."""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
from pathlib import Path
from typing import Any

import pandas as pd

from tinyevo.io import atomic_path

FILE = "state.pkl"
FORMAT = 1
log = logging.getLogger("tinyevo.search")


def code_hash() -> str:
    """Hash of this package's source: a code change invalidates old checkpoints."""
    h = hashlib.sha256()
    for p in sorted(Path(__file__).parent.glob("*.py")):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def table_hash(df: pd.DataFrame) -> str:
    h = hashlib.sha256()
    h.update(json.dumps(list(map(str, df.columns))).encode())
    h.update(pd.util.hash_pandas_object(df, index=False).values.tobytes())
    return h.hexdigest()


def make_key(params: dict[str, Any], *tables: pd.DataFrame) -> str:
    h = hashlib.sha256()
    h.update(json.dumps(params, sort_keys=True, default=str).encode())
    for t in tables:
        h.update(table_hash(t).encode())
    h.update(code_hash().encode())
    return h.hexdigest()


def save(directory: str | Path, key: str, cycle: int, rows: list[dict], rng_state: dict) -> Path:
    path = Path(directory) / FILE
    state = {"format": FORMAT, "key": key, "cycle": int(cycle), "rows": rows, "rng": rng_state}
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            pickle.dump(state, fh, protocol=pickle.HIGHEST_PROTOCOL)
    return path


def load(directory: str | Path | None, key: str) -> dict | None:
    """The saved state when it exists and matches ``key``; else None (with a log line why)."""
    if directory is None:
        return None
    path = Path(directory) / FILE
    if not path.is_file():
        return None
    try:
        with open(path, "rb") as fh:
            state = pickle.load(fh)
    except Exception as exc:  # a corrupt file is never fatal: start over
        log.warning("ignoring unreadable checkpoint %s (%s)", path, exc)
        return None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        log.warning("ignoring checkpoint %s: unknown format", path)
        return None
    if state.get("key") != key:
        log.info("ignoring checkpoint %s: made with other parameters, inputs or code", path)
        return None
    return state
