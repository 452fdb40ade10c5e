"""The TyBox memory model of an int8 feature extractor + float classifier, computed from a graph
description (shapes, dtypes, op order) alone: numpy only, no TensorFlow, no torch.

TyBox (Pavan, Ostrovan, Caltabiano, Roveri, "TyBox: an automatic design and code-generation
toolbox for TinyML incremental on-device learning", ACM TECS 2023) sizes the on-device sample buffer as

    buffer = M - net_bytes,   N_B = floor(buffer / ((F + 1) * bytes_per_feature))   (+1: the label)

where M is the device RAM budget and net_bytes what the net itself occupies (see
:func:`graph_terms` for every term). The same formula serves three callers, so it lives here,
below all of them:

* the search space (``tinyevo.space.constraints``): ``device_bytes`` of an unpruned net, the
  constraint ``constraints.fit_device``;
* the compression stage (``tinyevo.compress.budget``): the pruning step whose buffer fits;
* the TyBox stage (``tinyevo.tybox.memory``): the terms of the real ``.tflite`` it generates
  code for (it parses the file into the :class:`Graph` defined here).

:func:`spec_graph` describes, from a :class:`~tinyevo.space.NetSpec`, the graph the TFLite
converter produces for the Keras twin of the net: PAD before strided kxk convs, CONV_2D /
DEPTHWISE_CONV_2D with int8 weights and int32 biases (BN folded), ADD for residuals,
AVERAGE_POOL_2D and the Flatten RESHAPE, every activation int8. The compression stage checks this
prediction against the real ``.tflite``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from tinyevo.space.spec import NetSpec

FLOAT_BYTES = 4
# the generated code keeps lr, capacity, head, count and loss id as five 4-byte scalars
STATE_SCALARS = 5
ARENA_ALIGN = 4
ACCOUNTINGS = ("total", "ram")


# ----- graph description (filled from a .tflite by tinyevo.tybox.model.load_graph) ------------
@dataclass
class Tensor:
    index: int
    name: str
    shape: tuple
    dtype: type
    scale: np.ndarray | None = None  # float64, per-tensor (1,) or per-channel (C,)
    zero_point: np.ndarray | None = None
    quantized_dimension: int = 0
    data: np.ndarray | None = None  # constant tensors only

    @property
    def is_const(self) -> bool:
        return self.data is not None

    @property
    def numel(self) -> int:
        return int(math.prod(self.shape))  # 1 for a scalar shape ()

    @property
    def nbytes(self) -> int:
        return self.numel * np.dtype(self.dtype).itemsize


@dataclass
class Op:
    index: int
    kind: str
    inputs: list
    outputs: list
    options: dict = field(default_factory=dict)


@dataclass
class Graph:
    path: str
    tensors: list
    ops: list
    inputs: list
    outputs: list

    @property
    def input(self) -> Tensor:
        return self.tensors[self.inputs[0]]

    @property
    def output(self) -> Tensor:
        return self.tensors[self.outputs[0]]

    @property
    def feature_size(self) -> int:
        return self.output.numel

    def activations(self) -> list:
        """Non-constant tensors in execution order: the graph input, then each op's output."""
        seen, out = set(), []
        for t in [self.inputs[0]] + [o for op in self.ops for o in op.outputs]:
            if t not in seen:
                seen.add(t)
                out.append(t)
        return out


# ----- the memory model ------------------------------------------------------------------------
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


def graph_terms(g: Graph, num_classes: int, M: int, accounting: str = "total", bytes_per_feature: int = 1) -> dict:
    """Every term of the TyBox memory model, in bytes, for the int8 FE ``g`` (F = its output
    size) + a float32 Dense F -> ``num_classes`` classifier trained on the device:

    fe_weights (int8), fe_biases (int32), fe_quant_params (int32 multiplier + shift per output
    channel), fe_flash (their sum); arena_pair (TyBox: largest pair of consecutive activations),
    arena (planned arena, never smaller); classifier_weights = (F C + C) 4; classifier_activations
    = (F + C) 4; state = 4 C + 4 x 5 scalars; net_bytes = arena + classifier + state (+ fe_flash
    when ``accounting`` is ``total``, TyBox's formula); buffer_bytes and n_samples from
    :func:`tybox_buffer`; sample_bytes = (F + 1) bytes_per_feature; buffer_used; ram_bytes (static
    RAM of the generated code); flash_constants; M; accounting."""
    if accounting not in ACCOUNTINGS:
        raise ValueError(f"tybox.accounting must be one of {ACCOUNTINGS}, got {accounting!r}")
    F, C = int(g.feature_size), int(num_classes)
    if C > 127:
        raise ValueError(f"{C} classes: the int8 label of the buffer holds at most 127")
    t = {"feature_size": F, "num_classes": C, "bytes_per_feature": int(bytes_per_feature),
         "sample_bytes": (F + 1) * int(bytes_per_feature)}
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


def device_need(terms: Mapping, min_buffer_samples: int) -> int:
    """Bytes a net needs on the device with a buffer of ``min_buffer_samples`` samples:
    net_bytes + min_buffer_samples x sample_bytes (it fits when this is <= M)."""
    return int(terms["net_bytes"]) + int(min_buffer_samples) * int(terms["sample_bytes"])


# ----- from a NetSpec ----------------------------------------------------------------------------
_CONST = np.zeros(0, dtype=np.int8)  # marks a tensor as constant; sizes come from the shapes
# the quantisation fields of every tensor of a NetSpec graph (only sizes are read from it): one
# shared read-only pair instead of two arrays per tensor (the search measures every child)
_SCALE = np.ones(1)
_ZERO_POINT = np.zeros(1, np.int64)
for _a in (_CONST, _SCALE, _ZERO_POINT):
    _a.flags.writeable = False


def _same_is_symmetric(l) -> bool:
    """TFLite's SAME padding of layer ``l`` (total ``max((out - 1) * stride + k - in, 0)``, the
    odd pixel at the end) equals its symmetric ``pad`` on both sides."""
    total = max((l.out_hw - 1) * l.stride + l.kernel - l.in_hw, 0)
    return total == 2 * l.pad


def spec_graph(spec: NetSpec) -> Graph:
    """The int8 TFLite graph (shapes, dtypes, op order) of the feature extractor of ``spec``, from
    its walk (:meth:`NetSpec.layers`); the classifier stays outside (float, on the device)."""
    tensors: list[Tensor] = []
    ops: list[Op] = []

    def tensor(shape, dtype=np.int8, const=False) -> int:
        tensors.append(Tensor(len(tensors), f"t{len(tensors)}", tuple(int(s) for s in shape), dtype,
                              _SCALE, _ZERO_POINT, 0, _CONST if const else None))
        return len(tensors) - 1

    def op(kind, inputs, out_shape, **options) -> int:
        out = tensor(out_shape)
        ops.append(Op(len(ops), kind, list(inputs), [out], dict(options)))
        return out

    def conv(x: int, l) -> int:
        # a strided conv pads explicitly (a PAD op), as the Keras export does; the converter folds
        # the PAD into the conv where TFLite's SAME padding is the same symmetric padding (odd
        # input sizes for stride 2), so only the other PADs stay
        if l.stride > 1 and l.pad > 0 and not _same_is_symmetric(l):
            x = op("PAD", [x], (1, l.in_hw + 2 * l.pad, l.in_hw + 2 * l.pad, l.cin))
        if l.kind == "dwconv":
            w = tensor((1, l.kernel, l.kernel, l.cout), const=True)
        else:
            w = tensor((l.cout, l.kernel, l.kernel, l.cin), const=True)
        b = tensor((l.cout,), np.int32, const=True)
        return op("DEPTHWISE_CONV_2D" if l.kind == "dwconv" else "CONV_2D", [x, w, b], (1, l.out_hw, l.out_hw, l.cout))

    def add(x: int, l, block_input: int) -> int:
        return op("ADD", [block_input, x], (1, l.out_hw, l.out_hw, l.cout))

    def pool(x: int, l) -> int:
        return op("AVERAGE_POOL_2D", [x], (1, 1, 1, l.cout))

    def flatten(x: int, l) -> int:
        return op("RESHAPE", [x], (1, l.cout))

    per_kind = {"conv": conv, "dwconv": conv, "pool": pool, "flatten": flatten}
    x = inp = tensor((1, spec.resolution, spec.resolution, spec.in_channels))
    block_input: dict[int, int] = {}
    for l in spec.layers():
        if l.kind == "linear":
            break
        if l.block >= 0 and l.block not in block_input:
            block_input[l.block] = x
        x = add(x, l, block_input[l.block]) if l.kind == "add" else per_kind[l.kind](x, l)
    return Graph(f"<NetSpec F={spec.head_out}>", tensors, ops, [inp], [x])


def spec_memory(spec: NetSpec, ram_bytes: int, accounting: str = "total") -> dict:
    """TyBox memory terms (:func:`graph_terms`) of the int8 FE + float classifier of ``spec``
    under a RAM budget ``ram_bytes``."""
    return graph_terms(spec_graph(spec), spec.num_classes, int(ram_bytes), accounting=accounting)


def spec_device_bytes(spec: NetSpec, min_buffer_samples: int, accounting: str = "total") -> int:
    """:func:`device_need` of the unpruned ``spec``: what it needs of ``device.ram_bytes`` with a
    buffer of ``min_buffer_samples`` samples (net_bytes does not depend on M)."""
    return device_need(spec_memory(spec, 0, accounting), min_buffer_samples)
