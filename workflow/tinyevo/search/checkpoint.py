"""Atomic checkpoints of the evolution loop: one JSON file (``state.json``) holding the history
rows, the completed cycle and the numpy bit-generator state, tagged with a key (hash of every
parameter and input the loop depends on, and of the search code). A checkpoint whose key differs
is ignored, so a changed config never resumes from a stale state.

Plain JSON, no pickle: a checkpoint from elsewhere (a shared results folder) is data, never code.
Python's ``json`` writes floats with their shortest round-trip representation and integers of any
size (the PCG64 state is 128-bit), so a resumed run continues bit for bit; the non-finite floats
JSON lacks (a net that cannot be scored has score -inf) are written as ``{"float": "-inf"}``."""

from __future__ import annotations

import hashlib
import json
import logging
import math
from pathlib import Path
from typing import Any

import pandas as pd

from tinyevo.io import atomic_path

FILE = "state.json"
FORMAT = 2  # 1: the pickle of earlier versions (state.pkl, never read)
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


def _encode(obj: Any) -> Any:
    """JSON-ready copy: non-finite floats tagged, numpy scalars as Python values."""
    if isinstance(obj, dict):
        return {str(k): _encode(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_encode(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):  # numpy scalar
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return {"float": repr(obj)}
    return obj


def _decode(obj: Any) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {"float"} and obj["float"] in ("inf", "-inf", "nan"):
            return float(obj["float"])
        return {k: _decode(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_decode(v) for v in obj]
    return obj


def save(directory: str | Path, key: str, cycle: int, rows: list[dict], rng_state: dict) -> Path:
    path = Path(directory) / FILE
    state = {"format": FORMAT, "key": key, "cycle": int(cycle), "rows": rows, "rng": rng_state}
    text = json.dumps(_encode(state), allow_nan=False, separators=(",", ":"))
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")
    return path


def load(directory: str | Path | None, key: str) -> dict | None:
    """The saved state when it exists and matches ``key``; else None (with a log line why)."""
    if directory is None:
        return None
    path = Path(directory) / FILE
    if not path.is_file():
        return None
    try:
        state = _decode(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError) as exc:  # a corrupt file is never fatal: start over
        log.warning("ignoring unreadable checkpoint %s (%s)", path, str(exc)[:200])
        return None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        log.warning("ignoring checkpoint %s: unknown format", path)
        return None
    if state.get("key") != key:
        log.info("ignoring checkpoint %s: made with other parameters, inputs or code", path)
        return None
    return state
