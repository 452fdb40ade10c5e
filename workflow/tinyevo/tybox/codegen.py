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


def _emit_fe(g: Graph, offsets: dict) -> tuple[str, str]:
    em = _Emitter(g, offsets)
    for op in g.ops:
        if op.kind == "CONV_2D":
            em.conv(op, depthwise=False)
        elif op.kind == "DEPTHWISE_CONV_2D":
            em.conv(op, depthwise=True)
        elif op.kind == "ADD":
            em.add(op)
        elif op.kind == "PAD":
            em.pad(op)
        elif op.kind == "MEAN":
            em.mean(op)
        elif op.kind == "AVERAGE_POOL_2D":
            em.avgpool(op)
        elif op.kind == "QUANTIZE":
            em.quantize(op)
        elif op.kind == "RESHAPE":
            em.code.append(f"  // op {op.index}: RESHAPE (no copy: same arena bytes)\n")
            continue
        else:  # pragma: no cover - load_graph already rejects these
            raise UnsupportedModelError(f"op {op.kind} is not supported")
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
README = """# TyBox on-device learning library: `{name}`

Generated by tinyevo from `fe_int8.tflite` (int8 feature extractor) and the float classifier.
C++11, no heap, no exceptions, no RTTI, only standard headers; every buffer is static and sized
by the model. The same int8 arithmetic as TFLite (LiteRT's built-in kernels): per-channel
fixed-point multipliers, rounding, zero points, activation clamps. `make check` verifies the
feature extractor bit-exactly against LiteRT on the vectors in `test_input.bin`.

## Model

| quantity | value |
|---|---|
| input | {h} x {w} x {c} int8, scale {in_scale:.9g}, zero point {in_zp} |
| feature size F | {F} (int8, scale {f_scale:.9g}, zero point {f_zp}) |
| classes C | {C} |
| buffer samples N_B | {NB} ({sample_bytes} B each: F int8 features + 1 int8 label) |
| loss (default) | `{loss}`; learning rate {lr} |
| ops | {ops} |

## Memory (bytes; RAM budget M = {M}, accounting `{accounting}`)

| term | bytes | where |
|---|---|---|
| FE int8 weights | {fe_weights} | flash (`const`) |
| FE int32 biases | {fe_biases} | flash |
| FE per-channel multipliers + shifts | {fe_quant_params} | flash |
| activation arena (planned; TyBox pair formula {arena_pair}) | {arena} | RAM |
| classifier weights (float32, trained on device) | {classifier_weights} | RAM |
| classifier activations (float32) | {classifier_activations} | RAM |
| training state (delta + 5 scalars) | {state} | RAM |
| ring buffer ({NB} x {sample_bytes}) | {buffer_used} | RAM |
| **static RAM total** | **{ram_bytes}** | .data + .bss |
| initial classifier (copied by `tybox_init`) | {classifier_weights} | flash |

Accounting `total` (TyBox's formula) charges everything, FE weights included, against M before
sizing the buffer; `ram` charges only what lives in RAM (weights are `const`, so in flash).

## API (`tybox.h`)

```c++
int  tybox_init(float lr, int buffer_capacity);     // 1..TYBOX_BUFFER_SAMPLES; 1 = TinyOL
void tybox_set_lr(float lr);
int  tybox_set_loss(int loss);                       // TYBOX_LOSS_MSE_SOFTMAX | TYBOX_LOSS_CROSS_ENTROPY
void tybox_set_classifier(const float* w, const float* b);  // w [F][C] row-major
int8_t* tybox_input(void);                           // input tensor inside the arena
void tybox_extract(const int8_t* image, int8_t* features);  // image: H*W*C int8 (NHWC)
int  tybox_predict(const int8_t* features, float* probs);   // probs may be NULL
int  tybox_push_and_train(const int8_t* features, int label);
```

Learning (TyBox): `tybox_push_and_train` stores the sample in a ring buffer (the newest
overwrites the oldest), then runs one pass of online SGD (batch 1) over every stored sample,
oldest first, updating only the classifier. Features are dequantised, `(q - zp) * scale`, for
training and prediction. Loss `mse_softmax`: L = 0.5 |t - y|^2 on the softmax output y, so the
update is W += lr x (J_softmax (t - y))^T; `cross_entropy`: W += lr x (t - y)^T.

Images are quantised as `q = clamp(round(x / {in_scale:.9g}) + {in_zp}, -128, 127)` where x is
the normalised float input the network was trained on.

## Build

Host: `make` (libtybox.a + harness, `-std=c++11 -Wall -Wextra -Werror -O2`), `make check`
(ASan + UBSan build, bit-exact check against LiteRT, a short learning run).

MCU: add `tybox.cc tybox_fe.cc tybox_model_data.cc` and the headers to the firmware project
and compile with the target's C++11 compiler (e.g. `arm-none-eabi-g++ -std=c++11 -O2
-fno-exceptions -fno-rtti`). The `const` arrays go to flash, the static buffers to RAM; no
allocator, no runtime library. `fe_int8.tflite` / `fe_int8_tflite.cc` hold the same model for
TFLite Micro users.

## Host harness (`./harness`)

* `harness info`: the model constants as JSON.
* `harness extract <images.bin> <features.bin>`: images.bin = N x {input_size} int8 (NHWC,
  quantised as above), features.bin = N x {F} int8.
* `harness check <images.bin> <expected.bin>`: bit-exact comparison plus a learning smoke test.
* `harness stream --stream-x S.bin --stream-y S_y.bin --eval-x E.bin --eval-y E_y.bin --out curve.csv
  [--capacity K] [--lr LR] [--loss mse_softmax|cross_entropy] [--features] [--init-weights W.bin]
  [--weights-out W.bin] [--eval-pred P.bin]`: x files are int8 images (or int8 features with
  `--features`), y files are little-endian int32 labels (one per record). The evaluation
  features are extracted once. For every stream sample: predict it (prequential), push and
  train, then evaluate. `curve.csv` has columns `step,label,pred,eval_acc` with a row `step=0`
  (before any training; label and pred -1). `--eval-pred`: int8 matrix (steps + 1) x N_eval
  of evaluation-set predictions. `--init-weights` / `--weights-out`: float32 little-endian,
  W ([F][C] row-major) then b ([C]). Default capacity N_B, default lr and loss as above.
"""


def generate(tflite_path, classifier, out_dir, *, M: int, accounting: str = "total",
             lr: float = 0.01, loss: str = "mse_softmax", n_test: int = 8, seed: int = 0,
             min_buffer_samples: int = 1, name: str = "") -> dict:
    """Write the C++ project into ``out_dir`` (created; existing generated files replaced)
    and return the memory terms."""
    if loss not in LOSSES:
        raise ValueError(f"tybox.loss must be one of {sorted(LOSSES)}, got {loss!r}")
    if not (lr > 0):
        raise ValueError(f"tybox.lr must be > 0, got {lr!r}")
    tflite_path = Path(tflite_path)
    g = load_graph(tflite_path)
    kernel, bias = load_classifier_weights(classifier)
    terms = memory_terms(g, (kernel, bias), M, accounting=accounting)
    if terms["n_samples"] < max(1, min_buffer_samples):
        raise ValueError(
            f"device.ram_bytes = {M}: only {terms['n_samples']} buffer samples fit (need "
            f"device.min_buffer_samples = {min_buffer_samples}); the net charges "
            f"{terms['net_bytes']} B under tybox.accounting = {accounting!r}, "
            f"{terms['sample_bytes']} B per sample")
    arena, offsets = plan_arena(g)
    data_src, fe_code = _emit_fe(g, offsets)
    h, w, c = _nhwc(g.input)
    in_s, in_zp = _scalar_q(g.input)
    f_s, f_zp = _scalar_q(g.output)
    F, C = kernel.shape
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    model_h = f"""// Generated by tinyevo from {tflite_path.name}: model constants.
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
    fe_cc = f"""// Generated by tinyevo: the int8 feature extractor of {tflite_path.name} over a static arena.
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
    blob = tflite_path.read_bytes()
    tflite_cc = ("// fe_int8.tflite as a C array (for TensorFlow Lite Micro users); not part of libtybox.\n"
                 "#include <stdint.h>\n\nalignas(16) " + _c_array("unsigned char", "fe_int8_tflite",
                                                                   np.frombuffer(blob, np.uint8), 20)
                 + f"const unsigned int fe_int8_tflite_len = {len(blob)};\n")

    rng = np.random.default_rng(seed)
    test_in = rng.integers(-128, 128, (n_test, h, w, c), dtype=np.int64).astype(np.int8)
    test_out = litert_features(blob, test_in)

    files = {
        "tybox_model.h": model_h, "tybox_model_data.h": data_h, "tybox_model_data.cc": data_cc,
        "tybox_fe.cc": fe_cc, "fe_int8_tflite.cc": tflite_cc,
    }
    for fname, text in files.items():
        (out / fname).write_text(text)
    for fname in ("tybox.h", "tybox.cc", "tybox_kernels.h", "harness.cc", "Makefile"):
        shutil.copyfile(TEMPLATES / fname, out / fname)
    (out / "fe_int8.tflite").write_bytes(blob)
    (out / "test_input.bin").write_bytes(test_in.tobytes())
    (out / "test_expected.bin").write_bytes(test_out.tobytes())
    ops = ", ".join(sorted({op.kind for op in g.ops}))
    (out / "README.md").write_text(README.format(
        name=name or tflite_path.parent.name, h=h, w=w, c=c, in_scale=in_s, in_zp=in_zp, F=F,
        f_scale=f_s, f_zp=f_zp, C=C, NB=terms["n_samples"], loss=loss, lr=lr, ops=ops,
        input_size=h * w * c, **{k: v for k, v in terms.items() if k not in ("n_samples",)}))
    return terms
