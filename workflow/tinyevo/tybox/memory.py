"""TyBox memory model: how many feature samples fit in the on-device buffer.

Stable API (also used by the compression stage to choose its pruning budget)::

    from tinyevo.tybox.memory import tybox_buffer, memory_terms, memory_table

    buffer_bytes, n_samples = tybox_buffer(M, net_bytes, F, bytes_per_feature)
        # TyBox's formula: buffer = M - net_bytes,
        # N_B = floor(buffer / ((F + 1) * bytes_per_feature))   (+1: the label)
        # n_samples is 0 when the net alone exceeds M (buffer_bytes is then negative).

    terms = memory_terms(tflite_path, classifier_weights, M, accounting="total")
        # every term of the model, in bytes, from the actual int8 .tflite (a dict):
        #   feature_size, num_classes, sample_bytes,
        #   fe_weights (int8), fe_biases (int32), fe_quant_params (per-channel int32 multiplier
        #   + int32 shift), fe_flash (their sum; const arrays -> flash),
        #   arena_pair (TyBox: largest pair of consecutive int8 activations),
        #   arena (the planned arena of the generated code: tensor lifetimes incl. residual
        #   skips; equals arena_pair for a plain chain, never smaller),
        #   classifier_weights ((F*C + C) * 4, float32, trained on device -> RAM),
        #   classifier_activations ((F + C) * 4: dequantised input + output),
        #   state (training scratch + ring-buffer bookkeeping: delta[C] floats + 5 scalars),
        #   net_bytes (what is charged against M before the buffer), buffer_bytes, n_samples,
        #   ram_bytes (static RAM of the generated code), flash_constants (model constants: fe_flash
        #   + the initial classifier weights kept const for tybox_init; code comes on top), M,
        #   accounting.
        # classifier_weights: [kernel (F, C), bias (C,)] arrays, or a path to classifier.keras.

    memory_table(terms, measured=None) -> pandas DataFrame (term, region, predicted, measured)

How M is split (``accounting``):

* ``"total"`` (default, TyBox's formula): everything counts against M, including the FE's
  constant weights, exactly as the paper sizes the buffer: net_bytes = fe_flash + arena +
  classifier_weights + classifier_activations + state.
* ``"ram"``: only what really lives in RAM counts: the FE weights are ``const`` arrays in flash,
  so net_bytes = arena + classifier_weights + classifier_activations + state. This gives a larger
  buffer; the flash figure is reported separately (check it against ``device.flash_bytes``).

Either way the generated code's static RAM (.data + .bss) is ``ram_bytes`` = arena + classifier
weights + classifier activations + state + n_samples * sample_bytes <= M; the int8 label takes
one byte, as one int8 feature, so sample_bytes = (F + 1) * bytes_per_feature.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# The formula itself is numpy-only and shared with the search space and the compression stage:
# it lives in tinyevo.space.memory (re-exported here, the stable API above).
from ..space.memory import (  # noqa: F401
    ACCOUNTINGS,
    ARENA_ALIGN,
    FLOAT_BYTES,
    STATE_SCALARS,
    arena_pair,
    fe_constant_bytes,
    graph_terms,
    plan_arena,
    tybox_buffer,
)
from .model import Graph, load_graph


def _read_one_dense_archive(path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """(kernel, bias) of a Keras 3 ``.keras`` archive that holds exactly an input and one Dense
    layer with a bias and a linear or softmax activation (what the compression stage writes), read
    from the archive itself: its ``config.json`` and the layer's two arrays in
    ``model.weights.h5``. Importing Keras loads TensorFlow for two arrays: about 10 CPU-s alone on
    a slow 2-core host, and a TyBox job there takes about 6 CPU-s less without it. None for any other file: the caller then loads it with Keras,
    which reads every format and names what does not fit."""
    import io
    import json
    import zipfile

    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
            if not {"config.json", "model.weights.h5"} <= names:
                return None
            config = json.loads(zf.read("config.json"))
            weights = zf.read("model.weights.h5")
    except (zipfile.BadZipFile, OSError, ValueError):
        return None
    layers = (config.get("config") or {}).get("layers") if isinstance(config, dict) else None
    if not isinstance(layers, list):
        return None
    kinds = sorted(str(layer.get("class_name")) for layer in layers if isinstance(layer, dict))
    if len(kinds) != len(layers) or kinds != ["Dense", "InputLayer"]:
        return None
    dense = next(layer for layer in layers if layer["class_name"] == "Dense").get("config") or {}
    if dense.get("activation") not in ("linear", "softmax") or dense.get("use_bias") is not True:
        return None
    import h5py

    with h5py.File(io.BytesIO(weights), "r") as h5:
        groups = h5.get("layers")
        if groups is None:
            return None
        held = [g["vars"] for g in groups.values() if isinstance(g, h5py.Group)
                and isinstance(g.get("vars"), h5py.Group) and len(g["vars"])]
        if len(held) != 1 or sorted(held[0]) != ["0", "1"]:
            return None
        kernel, bias = np.asarray(held[0]["0"]), np.asarray(held[0]["1"])
    units = dense.get("units")
    if kernel.ndim != 2 or kernel.shape[1] != units or bias.shape != (units,):
        return None
    return kernel.astype(np.float32), bias.astype(np.float32)


def load_classifier_weights(classifier) -> tuple[np.ndarray, np.ndarray]:
    """(kernel (F, C) float32, bias (C,) float32) from arrays or a classifier.keras path."""
    if isinstance(classifier, (str, Path)):
        p = Path(classifier)
        if not p.is_file():
            raise FileNotFoundError(f"classifier not found: {p}")
        read = _read_one_dense_archive(p)
        if read is not None:
            return read
        import keras  # anything else: Keras itself reads it, and names what is wrong

        model = keras.models.load_model(p, compile=False)
        dense = [layer for layer in model.layers if layer.get_weights()]
        if len(dense) != 1 or type(dense[0]).__name__ != "Dense":
            raise ValueError(f"{p}: the TyBox classifier must be a single Dense layer with weights, "
                             f"found {[type(layer).__name__ for layer in dense]}")
        act = getattr(dense[0].activation, "__name__", str(dense[0].activation))
        if act not in ("linear", "softmax"):
            raise ValueError(f"{p}: Dense activation {act!r}; expected linear logits or softmax")
        ws = dense[0].get_weights()
        if len(ws) != 2:
            raise ValueError(f"{p}: the classifier Dense layer needs a bias (use_bias=True)")
        kernel, bias = ws
    else:
        kernel, bias = classifier
    kernel = np.asarray(kernel, dtype=np.float32)
    bias = np.asarray(bias, dtype=np.float32)
    if kernel.ndim != 2 or bias.shape != (kernel.shape[1],):
        raise ValueError(f"classifier weights: kernel {kernel.shape} and bias {bias.shape} do not "
                         "form a Dense F -> C layer")
    return kernel, bias


def memory_terms(tflite_path, classifier_weights, M: int, accounting: str = "total",
                 bytes_per_feature: int = 1) -> dict:
    """Every term of the TyBox memory model for an int8 FE + float classifier (see module doc and
    :func:`tinyevo.space.memory.graph_terms`)."""
    if accounting not in ACCOUNTINGS:
        raise ValueError(f"tybox.accounting must be one of {ACCOUNTINGS}, got {accounting!r}")
    g = tflite_path if isinstance(tflite_path, Graph) else load_graph(tflite_path)
    kernel, bias = load_classifier_weights(classifier_weights)
    F, C = kernel.shape
    if F != g.feature_size:
        raise ValueError(f"classifier input size {F} != feature size {g.feature_size} of {g.path}")
    return graph_terms(g, C, M, accounting=accounting, bytes_per_feature=bytes_per_feature)


_REGION = {"fe_weights": "flash", "fe_biases": "flash", "fe_quant_params": "flash",
           "fe_flash": "flash", "arena_pair": "ram", "arena": "ram", "classifier_weights": "ram",
           "classifier_activations": "ram", "state": "ram", "buffer_used": "ram",
           "ram_bytes": "ram", "flash_constants": "flash", "net_bytes": "budget",
           "buffer_bytes": "budget", "n_samples": "count", "M": "budget"}


def memory_table(terms: dict, measured: dict | None = None):
    """One row per numeric term: term, region (ram/flash/budget/count), predicted, measured
    (NaN where nothing was measured), rel_error."""
    import pandas as pd

    measured = measured or {}
    rows = []
    for k, v in terms.items():
        if k not in _REGION:
            continue
        m = measured.get(k)
        rows.append({"term": k, "region": _REGION[k], "predicted": float(v),
                     "measured": float(m) if m is not None else float("nan")})
    for k, m in measured.items():
        if k not in terms:
            region = "flash" if k in ("flash_bytes", "text", "rodata") else "ram"
            rows.append({"term": k, "region": region, "predicted": float("nan"), "measured": float(m)})
    df = pd.DataFrame(rows)
    df["rel_error"] = (df["measured"] - df["predicted"]) / df["predicted"].where(df["predicted"] != 0)
    df["accounting"] = terms.get("accounting", "")
    return df
