"""TyBox memory model: how many feature samples fit in the on-device buffer.

Stable API (also used by the compression stage to choose its pruning budget)::

    from tinyevo.tybox.memory import tybox_buffer, memory_terms, memory_table

    buffer_bytes, n_samples = tybox_buffer(M, net_bytes, F, bytes_per_feature)
        # TyBox's formula (reference §6): buffer = M - net_bytes,
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

from .model import Graph, load_graph

FLOAT_BYTES = 4
# the generated code keeps lr, capacity, head, count and loss id as five 4-byte scalars
STATE_SCALARS = 5
ARENA_ALIGN = 4
ACCOUNTINGS = ("total", "ram")


def tybox_buffer(M: int, net_bytes: int, F: int, bytes_per_feature: int) -> tuple[int, int]:
    """TyBox buffer: ``(buffer_bytes, n_samples)`` with buffer = M - net_bytes and
    n_samples = floor(buffer / ((F + 1) * bytes_per_feature)), at least 0."""
    if F < 1 or bytes_per_feature < 1:
        raise ValueError(f"feature size F={F} and bytes_per_feature={bytes_per_feature} must be >= 1")
    buffer_bytes = int(M) - int(net_bytes)
    per_sample = (int(F) + 1) * int(bytes_per_feature)
    return buffer_bytes, max(0, buffer_bytes // per_sample)


def _align(n: int, a: int = ARENA_ALIGN) -> int:
    return (n + a - 1) // a * a


def _alias_root(g: Graph) -> dict:
    """RESHAPE outputs share their input's memory (the generated code emits no copy)."""
    root = {}
    for op in g.ops:
        if op.kind == "RESHAPE":
            src = op.inputs[0]
            root[op.outputs[0]] = root.get(src, src)
    return root


def plan_arena(g: Graph, align: int = ARENA_ALIGN) -> tuple[int, dict]:
    """Greedy offline arena plan (largest tensors first, lowest free offset among tensors whose
    lifetimes overlap). Returns (arena_bytes, {tensor index: byte offset}) for every activation,
    RESHAPE outputs aliased onto their inputs."""
    root = _alias_root(g)
    n_ops = len(g.ops)
    first, last, size = {}, {}, {}

    def touch(t, k):
        r = root.get(t, t)
        first.setdefault(r, k)
        first[r] = min(first[r], k)
        last[r] = max(last.get(r, k), k)
        size[r] = g.tensors[r].nbytes

    touch(g.inputs[0], -1)
    for op in g.ops:
        for t in op.inputs:
            if t >= 0 and not g.tensors[t].is_const:
                touch(t, op.index)
        for t in op.outputs:
            touch(t, op.index)
    touch(g.outputs[0], n_ops)

    order = sorted(size, key=lambda r: (-size[r], first[r], r))
    placed: list[tuple[int, int, int]] = []  # (offset, end, tensor)
    offsets = {}
    for r in order:
        clash = sorted((o, e) for (o, e, s) in placed if not (last[s] < first[r] or last[r] < first[s]))
        off = 0
        for o, e in clash:
            if off + size[r] <= o:
                break
            off = max(off, _align(e, align))
        offsets[r] = off
        placed.append((off, off + size[r], r))
    arena = max((e for _, e, _ in placed), default=0)
    for t, r in root.items():
        offsets[t] = offsets[r]
    return _align(arena, align), offsets


def arena_pair(g: Graph) -> int:
    """TyBox's activation term: the largest (activation_r + activation_r+1) in bytes over the
    FE's activations in execution order (RESHAPE outputs are the same data: skipped)."""
    root = _alias_root(g)
    acts = [t for t in g.activations() if t not in root]
    sizes = [g.tensors[t].nbytes for t in acts]
    if len(sizes) == 1:
        return sizes[0]
    return max(a + b for a, b in zip(sizes[:-1], sizes[1:]))


def fe_constant_bytes(g: Graph) -> dict:
    """Bytes of the constant data the generated code stores for the FE."""
    w = b = q = 0
    for op in g.ops:
        if op.kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            w += g.tensors[op.inputs[1]].nbytes
            if len(op.inputs) > 2 and op.inputs[2] >= 0:
                b += g.tensors[op.inputs[2]].numel * 4
            cout = g.tensors[op.outputs[0]].shape[-1]
            q += cout * 2 * 4  # int32 multiplier + int32 shift per output channel
    return {"fe_weights": w, "fe_biases": b, "fe_quant_params": q}


def load_classifier_weights(classifier) -> tuple[np.ndarray, np.ndarray]:
    """(kernel (F, C) float32, bias (C,) float32) from arrays or a classifier.keras path."""
    if isinstance(classifier, (str, Path)):
        p = Path(classifier)
        if not p.is_file():
            raise FileNotFoundError(f"classifier not found: {p}")
        import keras

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
    """Every term of the TyBox memory model for an int8 FE + float classifier (see module doc)."""
    if accounting not in ACCOUNTINGS:
        raise ValueError(f"tybox.accounting must be one of {ACCOUNTINGS}, got {accounting!r}")
    g = tflite_path if isinstance(tflite_path, Graph) else load_graph(tflite_path)
    kernel, bias = load_classifier_weights(classifier_weights)
    F, C = kernel.shape
    if F != g.feature_size:
        raise ValueError(f"classifier input size {F} != feature size {g.feature_size} of {g.path}")
    if C > 127:
        raise ValueError(f"{C} classes: the int8 label of the buffer holds at most 127")
    t = {"feature_size": int(F), "num_classes": int(C), "bytes_per_feature": int(bytes_per_feature),
         "sample_bytes": (int(F) + 1) * int(bytes_per_feature)}
    t.update(fe_constant_bytes(g))
    t["fe_flash"] = t["fe_weights"] + t["fe_biases"] + t["fe_quant_params"]
    t["arena_pair"] = arena_pair(g)
    t["arena"] = max(plan_arena(g)[0], t["arena_pair"])
    t["classifier_weights"] = (F * C + C) * FLOAT_BYTES
    t["classifier_activations"] = (F + C) * FLOAT_BYTES
    t["state"] = C * FLOAT_BYTES + STATE_SCALARS * 4
    ram_fixed = t["arena"] + t["classifier_weights"] + t["classifier_activations"] + t["state"]
    t["net_bytes"] = ram_fixed + (t["fe_flash"] if accounting == "total" else 0)
    t["buffer_bytes"], t["n_samples"] = tybox_buffer(M, t["net_bytes"], F, bytes_per_feature)
    t["buffer_used"] = t["n_samples"] * t["sample_bytes"]
    t["ram_bytes"] = ram_fixed + t["buffer_used"]
    t["flash_constants"] = t["fe_flash"] + t["classifier_weights"]
    t["M"] = int(M)
    t["accounting"] = accounting
    return t


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
