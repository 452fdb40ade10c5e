"""Full-integer int8 feature extractors: the TFLite conversion, the one input quantiser and the
LiteRT runner.

The feature extractor (Keras sub-model up to and including ``flatten``) is converted with the
TFLite converter (``Optimize.DEFAULT``, a representative dataset of normalised training images,
``TFLITE_BUILTINS_INT8`` only, int8 input and output). It runs with the LiteRT interpreter
(``ai_edge_litert``, :class:`Int8FE`); its int8 features are dequantised
``(q - zero_point) * scale`` before the float32 classifier, as on the device. TensorFlow and
LiteRT load on first use; nothing here imports torch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np


def quantise(x, scale: float, zero_point: int) -> np.ndarray:
    """Float (normalised NHWC) input -> the int8 input of an int8 feature extractor with input
    quantisation ``(scale, zero_point)``: round-to-nearest-even of ``x / scale``, plus the zero
    point, saturated to [-128, 127] (what LiteRT's QUANTIZE op and the generated C++ compute)."""
    return np.clip(np.round(np.asarray(x, np.float32) / np.float32(scale)) + int(zero_point), -128, 127).astype(np.int8)


def convert_int8(fe_model, representative: np.ndarray) -> bytes:
    """Full-integer int8 ``.tflite`` bytes of a Keras feature extractor. ``representative``:
    float32 NHWC normalised images (the calibration set, fed one image at a time)."""
    import tensorflow as tf

    rep = np.asarray(representative, dtype=np.float32)
    if rep.ndim != 4 or len(rep) == 0:
        raise ValueError(f"representative dataset must be a non-empty NHWC array, got shape {rep.shape}")

    def gen():
        for i in range(len(rep)):
            yield [rep[i:i + 1]]

    # The converter's Keras entry point writes the model out as a SavedModel and reads it back
    # (10 of a compress job's 35 s on 2 cores); the frozen concrete function of the same graph
    # (dynamic batch, as there) converts to the same ops, weights and quantisation parameters
    # and identical features (checked on a default run's nets), in a fifth of the time.
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    spec = tf.TensorSpec([None, *rep.shape[1:]], tf.float32)
    fn = tf.function(lambda x: fe_model(x, training=False)).get_concrete_function(spec)
    conv = tf.lite.TFLiteConverter.from_concrete_functions([convert_variables_to_constants_v2(fn)])
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = gen
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    return bytes(conv.convert())


def representative_indices(n_available: int, n: int, seed: int) -> np.ndarray:
    """``n`` distinct training indices drawn with ``seed`` (all of them when fewer exist), sorted."""
    if n_available < 1:
        raise ValueError("the training split is empty: no representative dataset for int8 calibration")
    rng = np.random.default_rng(seed)
    k = min(int(n), int(n_available))
    return np.sort(rng.choice(n_available, size=k, replace=False))


@dataclass(frozen=True)
class QParams:
    scale: float
    zero_point: int


class Int8FE:
    """A LiteRT interpreter over an int8 feature extractor (bytes or a path)."""

    def __init__(self, model: bytes | str | os.PathLike, num_threads: int = 1):
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        # LiteRT's builtin int8 kernels without the default XNNPACK delegate: XNNPACK refused
        # ("failed to create XNNPACK runtime") a pruned int8 feature extractor of the default run.
        kw = dict(num_threads=num_threads,
                  experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        if isinstance(model, (bytes, bytearray)):
            self._it = Interpreter(model_content=bytes(model), **kw)
        else:
            if not os.path.isfile(model):
                raise FileNotFoundError(f"int8 feature extractor not found: {model}")
            self._it = Interpreter(model_path=str(model), **kw)
        self._it.allocate_tensors()
        self._batch = 1
        self.input_detail = self._it.get_input_details()[0]
        self.output_detail = self._it.get_output_details()[0]

    @staticmethod
    def _qp(detail) -> QParams:
        scale, zp = detail["quantization"]
        return QParams(float(scale), int(zp))

    @property
    def input_qparams(self) -> QParams:
        return self._qp(self.input_detail)

    @property
    def output_qparams(self) -> QParams:
        return self._qp(self.output_detail)

    @property
    def input_dtype(self):
        return self.input_detail["dtype"]

    @property
    def output_dtype(self):
        return self.output_detail["dtype"]

    def quantize_input(self, x: np.ndarray) -> np.ndarray:
        q = self.input_qparams
        return quantise(x, q.scale, q.zero_point)

    def dequantize_output(self, q: np.ndarray) -> np.ndarray:
        p = self.output_qparams
        return ((q.astype(np.float32) - p.zero_point) * p.scale).astype(np.float32)

    def _resize(self, n: int) -> None:
        if n != self._batch:
            shape = [n] + list(self.input_detail["shape"][1:])
            self._it.resize_tensor_input(self.input_detail["index"], shape)
            self._it.allocate_tensors()
            self.input_detail = self._it.get_input_details()[0]
            self.output_detail = self._it.get_output_details()[0]
            self._batch = n

    def run_int8(self, q: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """int8 NHWC inputs -> int8 features (N, F)."""
        q = np.asarray(q)
        if q.dtype != np.int8:
            raise ValueError(f"int8 feature extractor input must be int8, got {q.dtype}")
        outs = []
        for s in range(0, len(q), batch_size):
            qb = q[s:s + batch_size]
            self._resize(len(qb))
            self._it.set_tensor(self.input_detail["index"], np.ascontiguousarray(qb))
            self._it.invoke()
            outs.append(self._it.get_tensor(self.output_detail["index"]).reshape(len(qb), -1).copy())
        return np.concatenate(outs) if outs else np.zeros((0, int(self.output_detail["shape"][-1])), np.int8)

    def features(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Float NHWC normalised images -> dequantised float32 features (N, F)."""
        return self.dequantize_output(self.run_int8(self.quantize_input(x), batch_size=batch_size))
