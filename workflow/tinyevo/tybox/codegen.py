"""Generate the self-contained TyBox C++ project for an int8 feature extractor + float classifier.

``generate(tflite_path, classifier, out_dir, M=..., ...) -> dict`` writes into ``out_dir``:

* ``tybox.h`` (API), ``tybox_model.h`` (sizes, quantisation constants), ``tybox_kernels.h``
  (TFLite int8 arithmetic), ``tybox_fe.cc`` (the op sequence over a static arena),
  ``tybox_model_data.cc`` (const weights: flash), ``tybox.cc`` (classifier, ring buffer,
  on-device training), ``harness.cc`` (host harness), ``Makefile``, ``README.md``;
* ``fe_int8.tflite`` and its C array ``fe_int8_tflite.cc`` (for TFLite Micro users);
* ``test_input.bin`` / ``test_expected.bin``: int8 inputs and LiteRT's int8 outputs used by
  ``make check``.

It returns the memory-model terms (``tybox.memory.memory_terms``) of the generated code.
The integer constants (fixed-point multipliers, shifts, activation clamps, folded biases) are
computed here exactly as LiteRT's kernels compute them at Prepare time.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np

from .memory import load_classifier_weights, memory_terms, plan_arena
from .model import Graph, UnsupportedModelError, load_graph

TEMPLATES = Path(__file__).parent / "templates"
LOSSES = {"mse_softmax": 0, "cross_entropy": 1}
# The generated kernels reproduce LiteRT's reference kernels (BUILTIN_REF = TFLite Micro's
# arithmetic) bit-exactly. The optimized x86 kernels (ruy GEMM, XNNPACK) round some negative
# requantised values differently and disagree by 1 LSB on a few outputs.
REFERENCE_RESOLVER = "BUILTIN_REF"


# ---------------------------------------------------------------- TFLite constant arithmetic
def _round_away(x: float) -> int:
    return int(math.floor(x + 0.5)) if x >= 0 else -int(math.floor(-x + 0.5))


def quantize_multiplier(d: float) -> tuple[int, int]:
    """TFLite QuantizeMultiplier: d = q * 2^shift with q an int32 Q31 in [2^30, 2^31)."""
    if d == 0.0:
        return 0, 0
    q, shift = math.frexp(d)
    q_fixed = _round_away(q * (1 << 31))
    if q_fixed == (1 << 31):
        q_fixed //= 2
        shift += 1
    if shift < -31:
        shift, q_fixed = 0, 0
    return int(q_fixed), int(shift)


def _f32(x) -> np.float32:
    return np.float32(x)


def activation_range(act: str, scale: float, zp: int) -> tuple[int, int]:
    """CalculateActivationRangeQuantized for an int8 output (float32 division, round away)."""
    def q(f):
        return int(zp) + _round_away(float(_f32(f) / _f32(scale)))
    lo, hi = -128, 127
    if act == "RELU":
        return max(lo, q(0.0)), hi
    if act == "RELU6":
        return max(lo, q(0.0)), min(hi, q(6.0))
    if act == "RELU_N1_TO_1":
        return max(lo, q(-1.0)), min(hi, q(1.0))
    return lo, hi


def _same_pad(in_size, out_size, k, stride, dil) -> int:
    eff = (k - 1) * dil + 1
    total = max(0, (out_size - 1) * stride + eff - in_size)
    return total // 2


def _clz64(n: int) -> int:
    return 64 - n.bit_length()


# ---------------------------------------------------------------- C++ emission helpers
def _c_float(v) -> str:
    return f"{float(np.float32(v)):.9e}f"


def _c_array(ctype: str, name: str, values, per_line: int = 16, fmt=str) -> str:
    vals = [fmt(v) for v in np.asarray(values).ravel()]
    lines = [", ".join(vals[i:i + per_line]) for i in range(0, len(vals), per_line)]
    body = ",\n    ".join(lines)
    return f"const {ctype} {name}[{len(vals)}] = {{\n    {body}}};\n"


def _nhwc(t) -> tuple[int, int, int]:
    s = t.shape
    if len(s) == 4:
        if s[0] != 1:
            raise UnsupportedModelError(f"tensor {t.name!r}: batch {s[0]}, expected 1")
        return s[1], s[2], s[3]
    if len(s) == 2:
        return 1, 1, s[1]
    raise UnsupportedModelError(f"tensor {t.name!r}: shape {s} is not NHWC or (1, F)")


def _scalar_q(t) -> tuple[float, int]:
    if t.scale is None or len(t.scale) != 1:
        raise UnsupportedModelError(f"activation {t.name!r} needs per-tensor quantisation")
    return float(t.scale[0]), int(t.zero_point[0])


class _Emitter:
    def __init__(self, g: Graph, offsets: dict):
        self.g, self.off = g, offsets
        self.data, self.code = [], []

    def ref(self, t: int) -> str:
        return f"tybox_arena + {self.off[t]}"

    def conv(self, op, depthwise: bool):
        g = self.g
        x, w, y = g.tensors[op.inputs[0]], g.tensors[op.inputs[1]], g.tensors[op.outputs[0]]
        b = g.tensors[op.inputs[2]] if len(op.inputs) > 2 and op.inputs[2] >= 0 else None
        ih, iw, ic = _nhwc(x)
        oh, ow, oc = _nhwc(y)
        in_s, in_zp = _scalar_q(x)
        out_s, out_zp = _scalar_q(y)
        if w.data is None or w.dtype is not np.int8:
            raise UnsupportedModelError(f"op #{op.index} {op.kind}: weights must be constant int8")
        if depthwise:
            _, kh, kw, wc = w.shape
            if wc != oc:
                raise UnsupportedModelError(f"op #{op.index}: depthwise weights {w.shape} vs output {y.shape}")
            mult_ch = int(op.options.get("depthMultiplier", 1) or 1)
            if ic * mult_ch != oc:
                mult_ch = oc // ic
        else:
            wo, kh, kw, wi = w.shape
            if wo != oc or wi != ic:
                raise UnsupportedModelError(f"op #{op.index}: conv weights {w.shape} vs {x.shape} -> {y.shape}")
            mult_ch = 1
        fscale = np.broadcast_to(w.scale, (oc,)) if w.scale is not None else None
        if fscale is None:
            raise UnsupportedModelError(f"op #{op.index} {op.kind}: weights are not quantised")
        if w.zero_point is not None and np.any(w.zero_point != 0):
            raise UnsupportedModelError(f"op #{op.index} {op.kind}: weight zero points must be 0")
        mults, shifts = zip(*[quantize_multiplier(float(in_s) * float(fs) / float(out_s)) for fs in fscale])
        sh, sw = int(op.options.get("strideH", 1)), int(op.options.get("strideW", 1))
        dh, dw = int(op.options.get("dilationHFactor", 1) or 1), int(op.options.get("dilationWFactor", 1) or 1)
        if op.options.get("padding") == "SAME":
            pt, pl = _same_pad(ih, oh, kh, sh, dh), _same_pad(iw, ow, kw, sw, dw)
        else:
            pt = pl = 0
        lo, hi = activation_range(op.options.get("activation", "NONE"), out_s, out_zp)
        n = f"tybox_op{op.index}"
        self.data.append(f"// op {op.index}: {op.kind} {x.shape} -> {y.shape}\n")
        self.data.append(_c_array("int8_t", f"{n}_w", w.data))
        bias_ref = "0"
        if b is not None:
            self.data.append(_c_array("int32_t", f"{n}_b", b.data.astype(np.int64)))
            bias_ref = f"{n}_b"
        self.data.append(_c_array("int32_t", f"{n}_mult", mults))
        self.data.append(_c_array("int32_t", f"{n}_shift", shifts))
        fn = "DepthwiseConvPerChannel" if depthwise else "ConvPerChannel"
        self.code.append(
            f"  {{  // op {op.index}: {op.kind} {kh}x{kw}/{sh} {op.options.get('padding')} "
            f"{op.options.get('activation', 'NONE')}\n"
            f"    static const tybox::ConvParams p = {{{ih}, {iw}, {ic}, {oh}, {ow}, {oc}, {kh}, {kw}, "
            f"{sh}, {sw}, {dh}, {dw}, {pt}, {pl}, {mult_ch}, {-in_zp}, {out_zp}, {lo}, {hi}}};\n"
            f"    tybox::{fn}(p, {self.ref(op.inputs[0])}, {n}_w, {bias_ref}, {n}_mult, {n}_shift, "
            f"{self.ref(op.outputs[0])});\n  }}\n")
        return [f"{n}_w", f"{n}_b" if b is not None else None, f"{n}_mult", f"{n}_shift"]

    def add(self, op):
        g = self.g
        a, b, y = (g.tensors[i] for i in (op.inputs[0], op.inputs[1], op.outputs[0]))
        if a.shape != b.shape or a.shape != y.shape:
            raise UnsupportedModelError(f"op #{op.index} ADD with broadcasting {a.shape} + {b.shape} is not supported")
        s1, z1 = _scalar_q(a)
        s2, z2 = _scalar_q(b)
        so, zo = _scalar_q(y)
        left_shift = 20
        twice_max = float(2 * _f32(max(_f32(s1), _f32(s2))))
        m1, sh1 = quantize_multiplier(s1 / twice_max)
        m2, sh2 = quantize_multiplier(s2 / twice_max)
        mo, sho = quantize_multiplier(twice_max / float(_f32((1 << left_shift)) * _f32(so)))
        lo, hi = activation_range(op.options.get("activation", "NONE"), so, zo)
        self.code.append(
            f"  {{  // op {op.index}: ADD\n"
            f"    static const tybox::AddParams p = {{{a.numel}, {left_shift}, {-z1}, {-z2}, {zo}, "
            f"{m1}, {sh1}, {m2}, {sh2}, {mo}, {sho}, {lo}, {hi}}};\n"
            f"    tybox::Add(p, {self.ref(op.inputs[0])}, {self.ref(op.inputs[1])}, "
            f"{self.ref(op.outputs[0])});\n  }}\n")

    def pad(self, op):
        g = self.g
        x, y = g.tensors[op.inputs[0]], g.tensors[op.outputs[0]]
        pads = g.tensors[op.inputs[1]].data
        if pads is None or pads.shape != (4, 2) or np.any(pads[0] != 0) or np.any(pads[3] != 0):
            raise UnsupportedModelError(f"op #{op.index} PAD: only constant spatial padding is supported")
        if len(op.inputs) > 2:
            raise UnsupportedModelError(f"op #{op.index} PAD with a constant value is not supported")
        ih, iw, c = _nhwc(x)
        oh, ow, _ = _nhwc(y)
        _, zo = _scalar_q(y)
        self.code.append(
            f"  {{  // op {op.index}: PAD {pads[1].tolist()} {pads[2].tolist()}\n"
            f"    static const tybox::PadParams p = {{{ih}, {iw}, {c}, {oh}, {ow}, {int(pads[1][0])}, "
            f"{int(pads[2][0])}, {zo}}};\n"
            f"    tybox::Pad(p, {self.ref(op.inputs[0])}, {self.ref(op.outputs[0])});\n  }}\n")

    def mean(self, op):
        g = self.g
        x, y = g.tensors[op.inputs[0]], g.tensors[op.outputs[0]]
        axis = g.tensors[op.inputs[1]].data
        if axis is None or sorted(int(a) % 4 for a in np.ravel(axis)) != [1, 2] or len(x.shape) != 4:
            raise UnsupportedModelError(f"op #{op.index} MEAN: only the spatial mean (axis 1, 2) of a 4-D "
                                        "tensor is supported")
        h, w, c = _nhwc(x)
        si, zi = _scalar_q(x)
        so, zo = _scalar_q(y)
        n = h * w
        # LiteRT's reference QuantizedMeanOrSum (what BUILTIN_REF and TFLite Micro run):
        # the in/out multiplier with 1/N folded in, applied to sum(q) - zp_in * N
        mult, shift = quantize_multiplier(float(si) / float(so))
        s = 63 - _clz64(n)
        s = min(s, 32, 31 + shift)
        mult = int((mult << s) // n)
        shift = shift - s
        bias, zin = zo, zi * n
        self.code.append(
            f"  {{  // op {op.index}: MEAN over H, W (keep_dims={bool(op.options.get('keepDims'))})\n"
            f"    static const tybox::MeanParams p = {{{h}, {w}, {c}, {mult}, {shift}, {zin}, {bias}}};\n"
            f"    tybox::Mean(p, {self.ref(op.inputs[0])}, {self.ref(op.outputs[0])});\n  }}\n")

    def avgpool(self, op):
        g = self.g
        x, y = g.tensors[op.inputs[0]], g.tensors[op.outputs[0]]
        if _scalar_q(x) != _scalar_q(y):
            raise UnsupportedModelError(f"op #{op.index} AVERAGE_POOL_2D with different input/output "
                                        "quantisation is not supported")
        ih, iw, c = _nhwc(x)
        oh, ow, _ = _nhwc(y)
        kh, kw = int(op.options["filterHeight"]), int(op.options["filterWidth"])
        sh, sw = int(op.options["strideH"]), int(op.options["strideW"])
        if op.options.get("padding") == "SAME":
            pt, pl = _same_pad(ih, oh, kh, sh, 1), _same_pad(iw, ow, kw, sw, 1)
        else:
            pt = pl = 0
        so, zo = _scalar_q(y)
        lo, hi = activation_range(op.options.get("activation", "NONE"), so, zo)
        self.code.append(
            f"  {{  // op {op.index}: AVERAGE_POOL_2D {kh}x{kw}/{sh}\n"
            f"    static const tybox::PoolParams p = {{{ih}, {iw}, {c}, {oh}, {ow}, {kh}, {kw}, {sh}, {sw}, "
            f"{pt}, {pl}, {lo}, {hi}}};\n"
            f"    tybox::AveragePool(p, {self.ref(op.inputs[0])}, {self.ref(op.outputs[0])});\n  }}\n")

    def quantize(self, op):
        g = self.g
        x, y = g.tensors[op.inputs[0]], g.tensors[op.outputs[0]]
        if x.dtype is not np.int8 or y.dtype is not np.int8:
            raise UnsupportedModelError(f"op #{op.index} QUANTIZE: only int8 -> int8 requantisation")
        si, zi = _scalar_q(x)
        so, zo = _scalar_q(y)
        m, s = quantize_multiplier(si / so)
        self.code.append(
            f"  {{  // op {op.index}: QUANTIZE (requantise)\n"
            f"    static const tybox::RequantParams p = {{{x.numel}, {zi}, {zo}, {m}, {s}}};\n"
            f"    tybox::Requantize(p, {self.ref(op.inputs[0])}, {self.ref(op.outputs[0])});\n  }}\n")


def _reshape(em: "_Emitter", op) -> bool:
    em.code.append(f"  // op {op.index}: RESHAPE (no copy: same arena bytes)\n")
    return False


#: TFLite op code -> its emitter (``_Emitter`` method or function of (emitter, op)); an emitter
#: that returns False adds no trace line. A new op is one entry here (and its check in
#: ``tinyevo.tybox.model.load_graph``, which rejects every op not listed).
EMITTERS = {
    "CONV_2D": lambda em, op: em.conv(op, depthwise=False),
    "DEPTHWISE_CONV_2D": lambda em, op: em.conv(op, depthwise=True),
    "ADD": lambda em, op: em.add(op),
    "PAD": lambda em, op: em.pad(op),
    "MEAN": lambda em, op: em.mean(op),
    "AVERAGE_POOL_2D": lambda em, op: em.avgpool(op),
    "QUANTIZE": lambda em, op: em.quantize(op),
    "RESHAPE": _reshape,
}


def _emit_fe(g: Graph, offsets: dict) -> tuple[str, str]:
    em = _Emitter(g, offsets)
    for op in g.ops:
        emit = EMITTERS.get(op.kind)
        if emit is None:  # pragma: no cover - load_graph already rejects these
            raise UnsupportedModelError(f"op {op.kind} is not supported")
        if emit(em, op) is False:
            continue
        em.code.append(f"  TYBOX_TRACE_OP({op.index}, {em.ref(op.outputs[0])}, "
                       f"{g.tensors[op.outputs[0]].numel});\n")
    return "".join(em.data), "".join(em.code)


# ---------------------------------------------------------------- LiteRT reference
def litert_interpreter(model: bytes | str | Path, resolver: str = REFERENCE_RESOLVER):
    """A LiteRT interpreter with the given op resolver (default: LiteRT's reference kernels,
    the arithmetic TFLite Micro uses and the generated code reproduces bit-exactly)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    kw = {"model_content": bytes(model)} if isinstance(model, (bytes, bytearray)) else {"model_path": str(model)}
    it = Interpreter(**kw, experimental_op_resolver_type=getattr(OpResolverType, resolver), num_threads=1)
    it.allocate_tensors()
    return it


def litert_features(model, images_int8: np.ndarray, resolver: str = REFERENCE_RESOLVER) -> np.ndarray:
    """Run the int8 FE in LiteRT on int8 NHWC images; returns (N, F) int8."""
    it = litert_interpreter(model, resolver)
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    res = []
    for img in images_int8:
        it.set_tensor(inp["index"], img[None].astype(np.int8))
        it.invoke()
        res.append(it.get_tensor(out["index"]).reshape(-1).copy())
    return np.stack(res).astype(np.int8)


# ---------------------------------------------------------------- project generation
#: The generated project's README (``str.format`` fields: the model's constants and memory terms).
README_TEMPLATE = TEMPLATES / "README.md.tmpl"
#: Template files copied into every project as they are.
COPIED = ("tybox.h", "tybox.cc", "tybox_kernels.h", "harness.cc", "Makefile")


def _check_budget(terms: dict, M: int, accounting: str, min_buffer_samples: int) -> None:
    if terms["n_samples"] < max(1, min_buffer_samples):
        raise ValueError(
            f"device.ram_bytes = {M}: only {terms['n_samples']} buffer samples fit (need "
            f"device.min_buffer_samples = {min_buffer_samples}); the net charges "
            f"{terms['net_bytes']} B under tybox.accounting = {accounting!r}, "
            f"{terms['sample_bytes']} B per sample")


def _model_h(source: str, g: Graph, F: int, C: int, terms: dict, arena: int, offsets: dict, lr: float,
             loss: str) -> str:
    """``tybox_model.h``: the model constants as macros."""
    h, w, c = _nhwc(g.input)
    in_s, in_zp = _scalar_q(g.input)
    f_s, f_zp = _scalar_q(g.output)
    return f"""// Generated by tinyevo from {source}: model constants.
#ifndef TYBOX_MODEL_H_
#define TYBOX_MODEL_H_

#define TYBOX_INPUT_H {h}
#define TYBOX_INPUT_W {w}
#define TYBOX_INPUT_C {c}
#define TYBOX_INPUT_SIZE {h * w * c}
#define TYBOX_INPUT_SCALE {_c_float(in_s)}
#define TYBOX_INPUT_ZERO_POINT {in_zp}
#define TYBOX_F {F}
#define TYBOX_C {C}
#define TYBOX_FEATURE_SCALE {_c_float(f_s)}
#define TYBOX_FEATURE_ZERO_POINT {f_zp}
#define TYBOX_BUFFER_SAMPLES {terms['n_samples']}
#define TYBOX_ARENA_BYTES {arena}
#define TYBOX_INPUT_OFFSET {offsets[g.inputs[0]]}
#define TYBOX_OUTPUT_OFFSET {offsets[g.outputs[0]]}
#define TYBOX_DEFAULT_LR {_c_float(lr)}
#define TYBOX_DEFAULT_LOSS {LOSSES[loss]}

#endif  // TYBOX_MODEL_H_
"""


def _model_data(data_src: str, kernel: np.ndarray, bias: np.ndarray) -> tuple[str, str]:
    """``tybox_model_data.cc`` (the constant arrays: FE weights, initial classifier) and its header."""
    data_cc = ("// Generated by tinyevo: constant model data (flash).\n#include <stdint.h>\n\n"
               "#include \"tybox_model.h\"\n#include \"tybox_model_data.h\"\n\n" + data_src
               + _c_array("float", "tybox_cls_w0", kernel, 8, _c_float)
               + _c_array("float", "tybox_cls_b0", bias, 8, _c_float))
    decls = []
    for line in data_src.splitlines():
        if line.startswith("const "):
            decls.append("extern " + line.split(" = ")[0] + ";")
    decls += ["extern const float tybox_cls_w0[TYBOX_F * TYBOX_C];", "extern const float tybox_cls_b0[TYBOX_C];"]
    data_h = ("// Generated by tinyevo: declarations of the constant model data.\n"
              "#ifndef TYBOX_MODEL_DATA_H_\n#define TYBOX_MODEL_DATA_H_\n#include <stdint.h>\n\n"
              "#include \"tybox_model.h\"\n\n" + "\n".join(decls) + "\n\n#endif  // TYBOX_MODEL_DATA_H_\n")
    return data_cc, data_h


def _fe_cc(source: str, fe_code: str) -> str:
    """``tybox_fe.cc``: the feature extractor's op sequence over the static arena."""
    return f"""// Generated by tinyevo: the int8 feature extractor of {source} over a static arena.
#include <stdint.h>

#include "tybox_kernels.h"
#include "tybox_model.h"
#include "tybox_model_data.h"

int8_t tybox_arena[TYBOX_ARENA_BYTES];  // activations (offsets planned from tensor lifetimes)

#ifdef TYBOX_TRACE
void (*tybox_trace_hook)(int op, const int8_t* data, int size) = 0;
#define TYBOX_TRACE_OP(op, data, size) \\
  if (tybox_trace_hook) tybox_trace_hook(op, data, size)
#else
#define TYBOX_TRACE_OP(op, data, size) ((void)0)
#endif

void tybox_fe_run(void) {{
{fe_code}}}
"""


def _tflite_cc(blob: bytes) -> str:
    """``fe_int8_tflite.cc``: the .tflite as a C array, for TensorFlow Lite Micro users."""
    return ("// fe_int8.tflite as a C array (for TensorFlow Lite Micro users); not part of libtybox.\n"
            "#include <stdint.h>\n\nalignas(16) " + _c_array("unsigned char", "fe_int8_tflite",
                                                             np.frombuffer(blob, np.uint8), 20)
            + f"const unsigned int fe_int8_tflite_len = {len(blob)};\n")


def _test_vectors(blob: bytes, shape: tuple[int, int, int], n_test: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded random int8 images and LiteRT's features of them (``make check`` compares)."""
    rng = np.random.default_rng(seed)
    test_in = rng.integers(-128, 128, (n_test, *shape), dtype=np.int64).astype(np.int8)
    return test_in, litert_features(blob, test_in)


def _readme(name: str, g: Graph, F: int, C: int, terms: dict, lr: float, loss: str) -> str:
    h, w, c = _nhwc(g.input)
    in_s, in_zp = _scalar_q(g.input)
    f_s, f_zp = _scalar_q(g.output)
    ops = ", ".join(sorted({op.kind for op in g.ops}))
    return README_TEMPLATE.read_text().format(
        name=name, h=h, w=w, c=c, in_scale=in_s, in_zp=in_zp, F=F,
        f_scale=f_s, f_zp=f_zp, C=C, NB=terms["n_samples"], loss=loss, lr=lr, ops=ops,
        input_size=h * w * c, **{k: v for k, v in terms.items() if k not in ("n_samples",)})


def generate(tflite_path, classifier, out_dir, *, M: int, accounting: str = "total",
             lr: float = 0.01, loss: str = "mse_softmax", n_test: int = 8, seed: int = 0,
             min_buffer_samples: int = 1, name: str = "") -> dict:
    """Write the C++ project into ``out_dir`` (created; existing generated files replaced)
    and return the memory terms: load the graph and the classifier, size the buffer under the
    budget, plan the arena, emit the feature extractor, write the sources, the copied templates,
    the model, the test vectors and the README."""
    if loss not in LOSSES:
        raise ValueError(f"tybox.loss must be one of {sorted(LOSSES)}, got {loss!r}")
    if not (lr > 0):
        raise ValueError(f"tybox.lr must be > 0, got {lr!r}")
    tflite_path = Path(tflite_path)
    g = load_graph(tflite_path)
    kernel, bias = load_classifier_weights(classifier)
    terms = memory_terms(g, (kernel, bias), M, accounting=accounting)
    _check_budget(terms, M, accounting, min_buffer_samples)
    arena, offsets = plan_arena(g)
    data_src, fe_code = _emit_fe(g, offsets)
    F, C = kernel.shape
    blob = tflite_path.read_bytes()
    data_cc, data_h = _model_data(data_src, kernel, bias)
    files = {
        "tybox_model.h": _model_h(tflite_path.name, g, F, C, terms, arena, offsets, lr, loss),
        "tybox_model_data.h": data_h, "tybox_model_data.cc": data_cc,
        "tybox_fe.cc": _fe_cc(tflite_path.name, fe_code), "fe_int8_tflite.cc": _tflite_cc(blob),
    }
    test_in, test_out = _test_vectors(blob, _nhwc(g.input), n_test, seed)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for fname, text in files.items():
        (out / fname).write_text(text)
    for fname in COPIED:
        shutil.copyfile(TEMPLATES / fname, out / fname)
    (out / "fe_int8.tflite").write_bytes(blob)
    (out / "test_input.bin").write_bytes(test_in.tobytes())
    (out / "test_expected.bin").write_bytes(test_out.tobytes())
    (out / "README.md").write_text(_readme(name or tflite_path.parent.name, g, F, C, terms, lr, loss))
    return terms