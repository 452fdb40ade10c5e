"""Read a full-integer int8 ``.tflite`` feature extractor into a small graph description.

The flatbuffer is parsed with the schema module shipped with LiteRT (``ai_edge_litert``), so the
ops, their options (strides, padding, fused activations), the tensors with their quantisation
parameters and the constant weights all come from the file itself.

``load_graph(path) -> Graph`` and ``Graph`` are used by the memory model (``tybox.memory``) and
by the code generator (``tybox.codegen``). Only the ops a MobileNetV2-like feature extractor
produces are accepted; anything else raises :class:`UnsupportedModelError` naming the op.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# the graph description is shared with the NetSpec memory estimate (tinyevo.space.memory)
from ..space.memory import Graph, Op, Tensor  # noqa: F401  (re-exported: tybox.model.Graph etc.)

SUPPORTED_OPS = (
    "CONV_2D",
    "DEPTHWISE_CONV_2D",
    "ADD",
    "PAD",
    "MEAN",
    "AVERAGE_POOL_2D",
    "RESHAPE",
    "QUANTIZE",
)

# ops that may only appear in a chain computing a RESHAPE's shape tensor (dropped on load)
SHAPE_OPS = ("SHAPE", "STRIDED_SLICE", "PACK", "CONCATENATION", "GATHER", "SLICE")

# tflite TensorType codes
_DTYPES = {0: np.float32, 2: np.int32, 3: np.uint8, 4: np.int64, 7: np.int16, 9: np.int8}
_ACT = {0: "NONE", 1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6"}


class UnsupportedModelError(ValueError):
    """The .tflite uses something the generator does not implement."""


def _schema():
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:  # pragma: no cover - older installs
        from tensorflow.lite.python import schema_py_generated as schema
    return schema


def _opcode_names(schema) -> dict:
    return {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}


def _options(op_t, kind: str) -> dict:
    o = op_t.builtinOptions
    if o is None:
        return {}
    opts = {}
    for attr in ("padding", "strideW", "strideH", "filterWidth", "filterHeight", "depthMultiplier",
                 "dilationWFactor", "dilationHFactor", "keepDims"):
        if hasattr(o, attr):
            opts[attr] = getattr(o, attr)
    if hasattr(o, "fusedActivationFunction"):
        code = int(o.fusedActivationFunction)
        if code not in _ACT:
            raise UnsupportedModelError(f"op {kind}: fused activation code {code} is not supported")
        opts["activation"] = _ACT[code]
    if "padding" in opts:
        opts["padding"] = "SAME" if int(opts["padding"]) == 0 else "VALID"
    return opts


def _read_model(p: Path):
    """The flatbuffer bytes and the object API model of ``p``, with its one subgraph."""
    if not p.is_file():
        raise FileNotFoundError(f"int8 feature extractor not found: {p}")
    buf = p.read_bytes()
    schema = _schema()
    try:
        model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(buf, 0))
    except Exception as exc:
        raise UnsupportedModelError(f"{p} is not a readable .tflite flatbuffer: {exc}") from None
    if not model.subgraphs or len(model.subgraphs) != 1:
        raise UnsupportedModelError(f"{p}: expected exactly one subgraph, found "
                                    f"{len(model.subgraphs or [])}")
    return buf, schema, model, model.subgraphs[0]


def _tensor(p: Path, i: int, t, model, buf: bytes) -> Tensor:
    """Tensor ``i`` of the subgraph: shape, dtype, quantisation and (for a constant) its data."""
    dtype = _DTYPES.get(int(t.type))
    if dtype is None:
        raise UnsupportedModelError(f"{p}: tensor {i} has unsupported type code {t.type}")
    shape = tuple(int(s) for s in (t.shape if t.shape is not None else []))
    data = None
    b = model.buffers[t.buffer] if t.buffer is not None and t.buffer < len(model.buffers) else None
    if b is not None:
        if b.data is not None and len(b.data):
            raw = np.asarray(b.data, dtype=np.uint8).tobytes()
        elif b.offset and b.offset > 1:
            raw = buf[b.offset:b.offset + b.size]
        else:
            raw = None
        if raw is not None:
            data = np.frombuffer(raw, dtype=dtype).reshape(shape).copy()
    q = t.quantization
    scale = zp = None
    qdim = 0
    if q is not None and q.scale is not None and len(q.scale):
        scale = np.asarray(q.scale, dtype=np.float64)
        zp = np.asarray(q.zeroPoint if q.zeroPoint is not None else [0] * len(scale), dtype=np.int64)
        qdim = int(q.quantizedDimension)
    name = t.name.decode() if isinstance(t.name, bytes) else str(t.name)
    return Tensor(i, name, shape, dtype, scale, zp, qdim, data)


def _raw_ops(model, sg, names: dict) -> list[tuple]:
    """(index, op name, inputs, outputs, op object) of every operator, in order."""
    raw_ops = []
    for k, op_t in enumerate(sg.operators or []):
        code_t = model.operatorCodes[op_t.opcodeIndex]
        code = max(int(code_t.builtinCode), int(code_t.deprecatedBuiltinCode))
        kind = names.get(code, f"builtin#{code}")
        if kind == "CUSTOM":
            kind = f"CUSTOM({code_t.customCode!r})"
        ins = [int(i) for i in (op_t.inputs if op_t.inputs is not None else [])]
        outs = [int(i) for i in (op_t.outputs if op_t.outputs is not None else [])]
        raw_ops.append((k, kind, ins, outs, op_t))
    return raw_ops


def _shape_only_ops(raw_ops: list[tuple], sg) -> set[int]:
    """Ops that only compute the (static) target shape of a RESHAPE, e.g. the SHAPE ->
    STRIDED_SLICE -> PACK chain Keras' Flatten emits for a dynamic batch: the output shape is
    already known from the tensors, so these ops are dropped."""
    shape_only = {op[2][1] for op in raw_ops if op[1] == "RESHAPE" and len(op[2]) > 1}
    dropped = set()
    changed = True
    while changed:
        changed = False
        for k, kind, ins, outs, _ in reversed(raw_ops):
            if k in dropped or kind not in SHAPE_OPS or not outs:
                continue
            if all(o in shape_only for o in outs):
                dropped.add(k)
                for i in ins:
                    if i >= 0 and _DTYPES.get(int(sg.tensors[i].type)) is np.int32:
                        shape_only.add(i)
                changed = True
    return dropped


def _check_int8(p: Path, g: Graph) -> None:
    """One quantised int8 input and output, and int8 activations everywhere."""
    if len(g.inputs) != 1 or len(g.outputs) != 1:
        raise UnsupportedModelError(f"{p}: expected one input and one output tensor, found "
                                    f"{len(g.inputs)} and {len(g.outputs)}")
    for role, t in (("input", g.input), ("output", g.output)):
        if t.dtype is not np.int8 or t.scale is None:
            raise UnsupportedModelError(
                f"{p}: the {role} tensor {t.name!r} is {np.dtype(t.dtype).name}, expected a quantised "
                "int8 tensor (convert with inference_input_type/inference_output_type = tf.int8)")
    for op in g.ops:
        for ti in op.inputs + op.outputs:
            if ti < 0:
                continue
            t = g.tensors[ti]
            if not t.is_const and t.dtype is not np.int8:
                raise UnsupportedModelError(
                    f"{p}: op #{op.index} {op.kind} has a {np.dtype(t.dtype).name} activation "
                    f"{t.name!r}; only full-integer int8 models are supported")


def load_graph(path: str | Path) -> Graph:
    """Parse ``path`` (a .tflite flatbuffer) into a :class:`Graph`; raise clear errors for
    missing files, non-int8 models and unsupported ops. Steps: read the flatbuffer, its tensors
    and operators, drop the ops that only compute a RESHAPE's static shape, check every op is
    supported and the model is full-integer int8."""
    p = Path(path)
    buf, schema, model, sg = _read_model(p)
    tensors = [_tensor(p, i, t, model, buf) for i, t in enumerate(sg.tensors)]
    raw_ops = _raw_ops(model, sg, _opcode_names(schema))
    dropped = _shape_only_ops(raw_ops, sg)
    ops = []
    for k, kind, ins, outs, op_t in raw_ops:
        if k in dropped:
            continue
        if kind not in SUPPORTED_OPS:
            raise UnsupportedModelError(
                f"{p}: op #{k} {kind} is not supported by the TyBox generator "
                f"(supported: {', '.join(SUPPORTED_OPS)})")
        if kind == "RESHAPE":
            ins = ins[:1]  # the target shape is the output tensor's static shape
        ops.append(Op(len(ops), kind, ins, outs, _options(op_t, kind)))
    g = Graph(str(p), tensors, ops, [int(i) for i in sg.inputs], [int(i) for i in sg.outputs])
    _check_int8(p, g)
    return g

