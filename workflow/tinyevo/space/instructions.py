"""Instruction-count model of the generated feature extractor on a target, for the search.

The TyBox stage measures, on an emulated Cortex-M (QEMU ``-icount``, :mod:`tinyevo.tybox.target`),
how many instructions one feature extraction of the generated C++ takes. The search cannot build
and emulate every candidate, so it estimates that count from the net's int8 graph with a linear
per-layer model whose coefficients were fitted on measured nets of the search space
(``bench/instructions.py``, which writes :data:`MODELS_FILE`)::

    instructions ~= sum_k coef_k * feature_k

with the features of :func:`graph_features`, one per kind of work the reference kernels do
(multiply-accumulates of 1x1 convolutions, of k x k convolutions and of depthwise convolutions;
output elements of the convolutions, each requantised once; elements of the residual adds, of the
explicit paddings and of the average pool; one per op, the call and setup overhead) and a constant
(the input quantiser, the call). The features come from the same graph description for a
:class:`~tinyevo.space.spec.NetSpec` (:func:`tinyevo.space.memory.spec_graph`) and for a
converted ``.tflite`` (:func:`tinyevo.tybox.model.load_graph`), so the estimate of a candidate and
the check of the deployed net's measurement use one definition.

The coefficients hold for the target, toolchain and flags they were measured with (stored next to
them); the count is QEMU's count of executed instructions, not cycles.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from tinyevo.space.memory import Graph, spec_graph

#: the model's features, in coefficient order (``const`` is the intercept, always 1)
FEATURES = ("conv1x1_macs", "convkxk_macs", "dw_macs", "conv_out", "add_elems", "pad_elems", "pool_elems",
            "ops", "const")
MODELS_FILE = Path(__file__).with_name("instruction_models.json")


def graph_features(g: Graph) -> dict[str, int]:
    """The model's features of an int8 feature-extractor graph (see the module doc)."""
    f = dict.fromkeys(FEATURES, 0)
    f["const"] = 1
    for op in g.ops:
        out = g.tensors[op.outputs[0]]
        n_out = out.numel
        if op.kind == "RESHAPE":  # a flatten: the same buffer, no code
            continue
        f["ops"] += 1
        if op.kind == "CONV_2D":
            w = g.tensors[op.inputs[1]].shape  # (cout, kh, kw, cin)
            macs = n_out * int(w[1]) * int(w[2]) * int(w[3])
            f["conv1x1_macs" if int(w[1]) * int(w[2]) == 1 else "convkxk_macs"] += macs
            f["conv_out"] += n_out
        elif op.kind == "DEPTHWISE_CONV_2D":
            w = g.tensors[op.inputs[1]].shape  # (1, kh, kw, cout)
            f["dw_macs"] += n_out * int(w[1]) * int(w[2])
            f["conv_out"] += n_out
        elif op.kind in ("ADD", "QUANTIZE"):  # both requantise every element
            f["add_elems"] += n_out
        elif op.kind == "PAD":
            f["pad_elems"] += n_out
        elif op.kind in ("AVERAGE_POOL_2D", "MEAN"):
            f["pool_elems"] += g.tensors[op.inputs[0]].numel
        else:
            raise ValueError(f"the instruction model has no feature for op {op.kind}")
    return f


def graph_macs(g: Graph) -> dict[str, int]:
    """Multiply-accumulates of the feature extractor by op kind (from :func:`graph_features`):
    ``conv`` (CONV_2D, 1x1 and k x k), ``depthwise`` and ``total``."""
    f = graph_features(g)
    conv = f["conv1x1_macs"] + f["convkxk_macs"]
    return {"conv": conv, "depthwise": f["dw_macs"], "total": conv + f["dw_macs"]}


def spec_features(spec) -> dict[str, int]:
    """:func:`graph_features` of the unpruned int8 graph of a NetSpec."""
    return graph_features(spec_graph(spec))


@dataclass(frozen=True)
class InstructionModel:
    """Fitted coefficients (instructions per unit of each feature) and how well they fit."""

    target: str
    coef: Mapping[str, float]
    fit: Mapping[str, Any] = field(default_factory=dict)  # n, errors, toolchain, flags, command

    def predict_features(self, feats: Mapping[str, float]) -> float:
        return float(sum(self.coef.get(k, 0.0) * float(feats.get(k, 0)) for k in FEATURES))

    def predict_graph(self, g: Graph) -> int:
        return int(round(self.predict_features(graph_features(g))))

    def predict_spec(self, spec) -> int:
        return int(round(self.predict_features(spec_features(spec))))

    def as_dict(self) -> dict[str, Any]:
        return {"coef": {k: float(self.coef.get(k, 0.0)) for k in FEATURES}, "fit": dict(self.fit)}


def _matrix(rows: Sequence[Mapping[str, float]]) -> np.ndarray:
    return np.array([[float(r.get(k, 0)) for k in FEATURES] for r in rows], dtype=np.float64)


def _nnls(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Non-negative least squares on relative errors: each row is divided by its measurement, so
    a small net counts as much as a large one; columns are scaled to unit norm for the solver."""
    from scipy.optimize import nnls

    Xr, yr = X / y[:, None], np.ones_like(y)
    norm = np.linalg.norm(Xr, axis=0)
    norm[norm == 0] = 1.0
    c, _ = nnls(Xr / norm, yr)
    return c / norm


def fit(features: Sequence[Mapping[str, float]], measured: Sequence[float], target: str,
        meta: Mapping[str, Any] | None = None) -> InstructionModel:
    """Fit the coefficients on measured nets (``features[i]`` of :func:`graph_features`, its
    measured instructions per extraction) and report the fit error: the in-sample relative errors
    and the leave-one-out ones (each net predicted by a fit without it), mean and worst."""
    X, y = _matrix(features), np.asarray(measured, dtype=np.float64)
    if len(y) < len(FEATURES) + 2:
        raise ValueError(f"need at least {len(FEATURES) + 2} measured nets to fit {len(FEATURES)} coefficients, "
                         f"got {len(y)}")
    if np.any(y <= 0):
        raise ValueError("measured instruction counts must be positive")
    c = _nnls(X, y)
    rel = X @ c / y - 1.0
    loo = np.empty_like(y)
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        loo[i] = X[i] @ _nnls(X[keep], y[keep]) / y[i] - 1.0
    stats = {"n": int(len(y)), "mean_abs_rel_error": float(np.mean(np.abs(rel))),
             "max_abs_rel_error": float(np.max(np.abs(rel))),
             "loo_mean_abs_rel_error": float(np.mean(np.abs(loo))),
             "loo_max_abs_rel_error": float(np.max(np.abs(loo))), **dict(meta or {})}
    return InstructionModel(target, dict(zip(FEATURES, map(float, c))), stats)


def save_models(models: Mapping[str, InstructionModel], path: Path | str = MODELS_FILE) -> None:
    """Write the models (target -> coefficients and fit) as JSON, atomically."""
    from tinyevo.io import atomic_write_text

    atomic_write_text(path, json.dumps({t: m.as_dict() for t, m in sorted(models.items())}, indent=2,
                                       sort_keys=True) + "\n")


def load_models(path: Path | str = MODELS_FILE) -> dict[str, InstructionModel]:
    path = Path(path)
    if not path.exists():
        return {}
    raw = json.loads(path.read_text())
    out = {}
    for t, m in raw.items():
        coef = {k: float(m["coef"].get(k, 0.0)) for k in FEATURES}
        if not all(math.isfinite(v) and v >= 0 for v in coef.values()):
            raise ValueError(f"{path}: the instruction model of {t!r} has a negative or non-finite coefficient")
        out[t] = InstructionModel(t, coef, m.get("fit", {}))
    return out


def model_for(target: str, path: Path | str = MODELS_FILE) -> InstructionModel:
    """The fitted model of ``target`` (a ``tybox.target``), or a ValueError naming the known ones."""
    models = load_models(path)
    if target not in models:
        raise ValueError(f"config key 'constraints.max_instructions' needs an instruction model of tybox.target "
                         f"{target!r}, and there is none (fitted: {sorted(models) or 'none'}; "
                         f"bench/instructions.py fits one)")
    return models[target]
