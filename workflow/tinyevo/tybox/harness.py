"""Build and drive the generated TyBox C++ project from Python.

``build(src_dir, cxx)`` runs ``make`` (library + harness); ``make_check(src_dir, cxx)`` runs
``make check`` (sanitizers + bit-exact check); ``extract(src_dir, images)`` and
``stream(src_dir, ...)`` call the harness (formats in the generated README);
``measure_memory(src_dir)`` reads the static RAM and flash of the compiled library objects with
``size`` and ``nm``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd


class BuildError(RuntimeError):
    pass


def _run(cmd, cwd, what):
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if r.returncode != 0:
        raise BuildError(f"{what} failed (exit {r.returncode}) in {cwd}:\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}")
    return r.stdout


def _check_cxx(cxx: str) -> None:
    if shutil.which(cxx) is None:
        raise BuildError(f"C++ compiler {cxx!r} (config key tybox.cxx) not found on PATH")


def build(src_dir, cxx: str = "g++", jobs: int = 1) -> str:
    _check_cxx(cxx)
    return _run(["make", f"-j{max(1, jobs)}", f"CXX={cxx}", "all"], src_dir, "make")


def make_check(src_dir, cxx: str = "g++", jobs: int = 1) -> str:
    _check_cxx(cxx)
    return _run(["make", f"-j{max(1, jobs)}", f"CXX={cxx}", "check"], src_dir, "make check")


def info(src_dir) -> dict:
    return json.loads(_run(["./harness", "info"], src_dir, "harness info"))


def extract(src_dir, images: np.ndarray) -> np.ndarray:
    """int8 NHWC images -> (N, F) int8 features through the compiled harness."""
    meta = info(src_dir)
    images = np.ascontiguousarray(images, dtype=np.int8)
    with tempfile.TemporaryDirectory() as tmp:
        i, o = Path(tmp) / "in.bin", Path(tmp) / "out.bin"
        i.write_bytes(images.tobytes())
        _run([str(Path(src_dir).resolve() / "harness"), "extract", str(i), str(o)], src_dir, "harness extract")
        return np.frombuffer(o.read_bytes(), np.int8).reshape(-1, meta["feature_size"]).copy()


def initial_weights(src_dir, workdir=None) -> tuple[np.ndarray, np.ndarray]:
    """The classifier (W (F, C), b (C,)) of the generated library before any on-device step: a
    ``harness stream`` of one sample at learning rate 0 (every update is lr * delta = 0) returns
    it unchanged through ``--weights-out``."""
    meta = info(src_dir)
    F = int(meta["feature_size"])
    one = np.zeros((1, F), np.int8)
    res = stream(src_dir, one, np.zeros(1, np.int32), one, np.zeros(1, np.int32), capacity=1, lr=0.0,
                 features=True, workdir=workdir)
    return res["weights"]


def stream(src_dir, stream_x, stream_y, eval_x, eval_y, *, capacity: int | None = None,
           lr: float | None = None, loss: str | None = None, features: bool = False,
           init_weights: tuple | None = None, workdir=None, runner=None) -> dict:
    """Run ``harness stream``; returns {"curve": DataFrame, "eval_pred": (steps+1, N_eval) int8,
    "weights": (W (F, C), b (C,)) float32}. ``runner(cmd, cwd)`` runs the command line instead of
    the host harness (e.g. the target build under QEMU, :mod:`tinyevo.tybox.target`)."""
    meta = info(src_dir)
    F, C = meta["feature_size"], meta["num_classes"]
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        t = Path(tmp)
        files = {"sx": t / "sx.bin", "sy": t / "sy.bin", "ex": t / "ex.bin", "ey": t / "ey.bin"}
        files["sx"].write_bytes(np.ascontiguousarray(stream_x, np.int8).tobytes())
        files["ex"].write_bytes(np.ascontiguousarray(eval_x, np.int8).tobytes())
        files["sy"].write_bytes(np.asarray(stream_y, "<i4").tobytes())
        files["ey"].write_bytes(np.asarray(eval_y, "<i4").tobytes())
        cmd = [str(Path(src_dir).resolve() / "harness"), "stream", "--stream-x", str(files["sx"]),
               "--stream-y", str(files["sy"]), "--eval-x", str(files["ex"]), "--eval-y", str(files["ey"]),
               "--out", str(t / "curve.csv"), "--eval-pred", str(t / "pred.bin"),
               "--weights-out", str(t / "w.bin")]
        if capacity is not None:
            cmd += ["--capacity", str(int(capacity))]
        if lr is not None:
            cmd += ["--lr", repr(float(lr))]
        if loss is not None:
            cmd += ["--loss", loss]
        if features:
            cmd += ["--features"]
        if init_weights is not None:
            w, b = init_weights
            blob = np.concatenate([np.asarray(w, np.float32).ravel(), np.asarray(b, np.float32).ravel()])
            (t / "init.bin").write_bytes(blob.astype("<f4").tobytes())
            cmd += ["--init-weights", str(t / "init.bin")]
        if runner is None:
            _run(cmd, src_dir, "harness stream")
        else:
            runner(cmd, src_dir)
        curve = pd.read_csv(t / "curve.csv")
        n_eval = len(eval_y)
        pred = np.frombuffer((t / "pred.bin").read_bytes(), np.int8).reshape(-1, n_eval).copy()
        wb = np.frombuffer((t / "w.bin").read_bytes(), "<f4")
        return {"curve": curve, "eval_pred": pred,
                "weights": (wb[:F * C].reshape(F, C).copy(), wb[F * C:].copy())}


# symbol -> memory-model term
_SYMBOL_TERMS = {
    "tybox_arena": "arena",
    "tybox_w": "classifier_weights", "tybox_b": "classifier_weights",
    "tybox_x": "classifier_activations", "tybox_y": "classifier_activations",
    "tybox_delta": "state", "tybox_state": "state",
    "tybox_buf_x": "buffer_used", "tybox_buf_y": "buffer_used",
}


def measure_memory(src_dir, objects=("tybox.o", "tybox_fe.o", "tybox_model_data.o"), size: str = "size",
                   nm: str = "nm") -> dict:
    """Static RAM (.data + .bss) and flash (.text + .rodata + .data initialisers) of the
    library objects from ``size -A``, plus each RAM term from the symbol sizes of ``nm -S``
    (``size`` / ``nm``: the tools, e.g. the Arm toolchain's for a target build)."""
    src = Path(src_dir)
    sec = {"text": 0, "rodata": 0, "data": 0, "bss": 0}
    for obj in objects:
        out = _run([size, "-A", "-d", obj], src, size)
        for line in out.splitlines():
            parts = line.split()
            if len(parts) < 2 or not parts[0].startswith(".") or not parts[1].isdigit():
                continue
            name, n = parts[0], int(parts[1])
            if name.startswith(".text"):
                sec["text"] += n
            elif name.startswith(".rodata") or name.startswith(".data.rel.ro"):
                sec["rodata"] += n
            elif name.startswith(".data"):
                sec["data"] += n
            elif name.startswith(".bss"):
                sec["bss"] += n
    terms: dict = {}
    for obj in objects:
        out = _run([nm, "-S", "-C", "--defined-only", obj], src, nm)
        for line in out.splitlines():
            parts = line.split()
            if len(parts) != 4 or parts[2].lower() not in "bdg":
                continue
            term = _SYMBOL_TERMS.get(parts[3])
            if term:
                terms[term] = terms.get(term, 0) + int(parts[1], 16)
    return {"ram_bytes": sec["data"] + sec["bss"], "flash_bytes": sec["text"] + sec["rodata"] + sec["data"],
            "text": sec["text"], "rodata": sec["rodata"], "data": sec["data"], "bss": sec["bss"], **terms}
