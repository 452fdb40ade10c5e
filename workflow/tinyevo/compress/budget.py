"""Device budget: the TyBox memory of a (pruned) NetSpec before it is quantised.

The memory model itself is the TyBox stage's (:mod:`tinyevo.tybox.memory`, reference §6); it reads
an int8 ``.tflite``. Converting every pruning step to TFLite only to size its buffer would cost
seconds per step, so :func:`spec_graph` describes, from the NetSpec alone, the graph the TFLite
converter produces for the Keras twin (:func:`tinyevo.compress.keras_model.build_keras`): PAD
before strided kxk convs, CONV_2D / DEPTHWISE_CONV_2D with int8 weights and int32 biases (BN
folded), ADD for residuals, AVERAGE_POOL_2D and the Flatten RESHAPE, every activation int8.
:func:`spec_memory` runs ``tybox.memory.memory_terms`` on it, so the pruning choice and the TyBox
stage use one formula; the compression stage checks the prediction against the real ``.tflite``.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from tinyevo.space.spec import NetSpec
from tinyevo.tybox.memory import memory_terms
from tinyevo.tybox.model import Graph, Op, Tensor

_CONST = np.zeros(0, dtype=np.int8)  # marks a tensor as constant; sizes come from the shapes


def _out(size: int, kernel: int, stride: int) -> int:
    return (size + 2 * (kernel // 2) - kernel) // stride + 1


def spec_graph(spec: NetSpec) -> Graph:
    """The int8 TFLite graph (shapes, dtypes, op order) of the feature extractor of ``spec``."""
    tensors: list[Tensor] = []
    ops: list[Op] = []

    def tensor(shape, dtype=np.int8, const=False) -> int:
        tensors.append(Tensor(len(tensors), f"t{len(tensors)}", tuple(int(s) for s in shape), dtype,
                              np.ones(1), np.zeros(1, np.int64), 0, _CONST if const else None))
        return len(tensors) - 1

    def op(kind, inputs, out_shape, **options) -> int:
        out = tensor(out_shape)
        ops.append(Op(len(ops), kind, list(inputs), [out], dict(options)))
        return out

    def conv(x: int, h: int, cin: int, cout: int, k: int, stride: int, depthwise: bool) -> tuple[int, int]:
        pad = k // 2
        if stride > 1 and pad > 0:
            x = op("PAD", [x], (1, h + 2 * pad, h + 2 * pad, cin))
        ho = _out(h, k, stride)
        if depthwise:
            w = tensor((1, k, k, cout), const=True)
        else:
            w = tensor((cout, k, k, cin), const=True)
        b = tensor((cout,), np.int32, const=True)
        return op("DEPTHWISE_CONV_2D" if depthwise else "CONV_2D", [x, w, b], (1, ho, ho, cout)), ho

    h = spec.resolution
    x = tensor((1, h, h, spec.in_channels))
    inp = x
    x, h = conv(x, h, spec.in_channels, spec.stem_out, spec.kernel, spec.stem_stride, False)
    for b in spec.blocks:
        skip = x
        y = x
        if b.expand:
            y, h = conv(y, h, b.cin, b.hidden, 1, 1, False)
        y, h = conv(y, h, b.hidden, b.hidden, b.kernel, b.stride, True)
        y, h = conv(y, h, b.hidden, b.cout, 1, 1, False)
        x = op("ADD", [skip, y], (1, h, h, b.cout)) if b.residual else y
    x, h = conv(x, h, spec.blocks[-1].cout if spec.blocks else spec.stem_out, spec.head_out, 1, 1, False)
    x = op("AVERAGE_POOL_2D", [x], (1, 1, 1, spec.head_out))
    x = op("RESHAPE", [x], (1, spec.head_out))
    return Graph(f"<NetSpec F={spec.head_out}>", tensors, ops, [inp], [x])


def spec_memory(spec: NetSpec, ram_bytes: int, accounting: str = "total") -> dict:
    """TyBox memory terms (``tinyevo.tybox.memory.memory_terms``) of the int8 FE + float
    classifier of ``spec`` under a RAM budget ``ram_bytes``."""
    F, C = spec.head_out, spec.num_classes
    clf = (np.zeros((F, C), np.float32), np.zeros(C, np.float32))
    return memory_terms(spec_graph(spec), clf, int(ram_bytes), accounting=accounting)


# the terms that make up ``net_bytes`` (what is charged against M before the buffer)
_CONTRIBUTORS = ("fe_weights", "fe_biases", "fe_quant_params", "arena", "classifier_weights",
                 "classifier_activations", "state")


def largest_contributor(terms: Mapping) -> tuple[str, int]:
    items = [(k, int(terms[k])) for k in _CONTRIBUTORS
             if k in terms and not (k.startswith("fe_") and terms.get("accounting") == "ram")]
    return max(items, key=lambda kv: kv[1])


class BudgetError(ValueError):
    """No pruning step fits the device RAM budget."""


def choose_step(steps, ram_bytes: int, min_buffer_samples: int) -> int:
    """Index (into ``steps``: a sequence of dicts with ``n_samples``, ``net_bytes`` and the memory
    terms, ordered from least to most pruned) of the least-pruned step whose buffer holds at least
    ``min_buffer_samples``; :class:`BudgetError` naming M, the smallest need and its largest
    contributor when none does."""
    steps = list(steps)
    if not steps:
        raise ValueError("no pruning steps to choose from")
    for i, s in enumerate(steps):
        if int(s["n_samples"]) >= int(min_buffer_samples):
            return i
    # the smallest total need: the net plus the minimum buffer
    needs = [int(s["net_bytes"]) + int(min_buffer_samples) * int(s["sample_bytes"]) for s in steps]
    j = int(np.argmin(needs))
    name, val = largest_contributor(steps[j])
    raise BudgetError(
        f"no pruning step fits config key 'device.ram_bytes' M = {int(ram_bytes)} B with "
        f"'device.min_buffer_samples' = {int(min_buffer_samples)}: the smallest achievable need is "
        f"{needs[j]} B (step {steps[j].get('step', j)}: net {int(steps[j]['net_bytes'])} B + "
        f"{int(min_buffer_samples)} x {int(steps[j]['sample_bytes'])} B samples); its largest "
        f"contributor is {name} = {val} B. Raise device.ram_bytes, lower device.min_buffer_samples, "
        f"or allow more pruning (compress.max_steps, compress.step_fraction)"
    )
