"""Full-integer int8: the TFLite conversion (shared by the compression stage and the TyBox test
nets) and the one input quantiser (the compression's evaluation and the scenarios' learners).

A module of its own (TensorFlow only, no torch): the TyBox code and tests import it without
pulling in the compression package, which must import torch before TensorFlow.
"""

from __future__ import annotations

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

    conv = tf.lite.TFLiteConverter.from_keras_model(fe_model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = gen
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    return bytes(conv.convert())
