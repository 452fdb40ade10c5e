"""Small synthetic MobileNetV2-like nets for the TyBox tests and bench.

``build_fe(kind, resolution, channels, seed)`` builds a Keras feature extractor (ending in
Flatten) with the layer types the search space produces; ``to_int8_tflite(fe, images)`` converts
it to a full-integer int8 .tflite (int8 input and output) with TFLiteConverter and a
representative dataset; ``random_classifier(F, C, seed)`` gives float Dense weights.
"""

from __future__ import annotations

import numpy as np

KINDS = ("plain", "residual", "avgpool")


def _randomise_bn(model, rng) -> None:
    """Non-trivial BatchNorm statistics so the folded int8 weights are not all alike."""
    for layer in model.layers:
        if type(layer).__name__ == "BatchNormalization":
            gamma, beta, mean, var = layer.get_weights()
            n = gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, n).astype("float32"),
                               rng.normal(0, 0.2, n).astype("float32"),
                               rng.normal(0, 0.2, n).astype("float32"),
                               rng.uniform(0.5, 1.5, n).astype("float32")])


def build_fe(kind: str = "residual", resolution: int = 16, channels: int = 1, seed: int = 0):
    """A tiny feature extractor: Conv2D (no bias) + BN + ReLU6 blocks, depthwise convs,
    inverted residuals with Add, ZeroPadding2D + valid stride-2 convs, global average pooling
    (or AveragePooling2D) and Flatten."""
    import keras
    from keras import layers as L

    if kind not in KINDS:
        raise ValueError(f"unknown test net kind {kind!r}; choose from {KINDS}")
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)

    def cbr(x, filters, k=1, stride=1, relu=True, padding="same"):
        x = L.Conv2D(filters, k, strides=stride, padding=padding, use_bias=False)(x)
        x = L.BatchNormalization()(x)
        return L.ReLU(max_value=6.0)(x) if relu else x

    def dw(x, k=3, stride=1):
        if stride == 2:
            x = L.ZeroPadding2D(((0, 1), (0, 1)))(x)
            x = L.DepthwiseConv2D(k, strides=2, padding="valid", use_bias=False)(x)
        else:
            x = L.DepthwiseConv2D(k, padding="same", use_bias=False)(x)
        x = L.BatchNormalization()(x)
        return L.ReLU(max_value=6.0)(x)

    def block(x, cin, cout, expand, stride):
        h = cbr(x, cin * expand, 1) if expand != 1 else x
        h = dw(h, 3, stride)
        h = cbr(h, cout, 1, relu=False)
        if stride == 1 and cin == cout:
            h = L.Add()([x, h])
        return h

    inp = keras.Input((resolution, resolution, channels))
    if kind == "plain":
        x = L.ZeroPadding2D(((0, 1), (0, 1)))(inp)
        x = cbr(x, 8, 3, stride=2, padding="valid")
        x = dw(x, 3, 1)
        x = cbr(x, 12, 1)
        x = dw(x, 5, 1)
        x = cbr(x, 16, 1)
        x = L.GlobalAveragePooling2D()(x)
    elif kind == "residual":
        # symmetric padding before a valid stride-2 conv: kept as an explicit PAD op
        x = L.ZeroPadding2D(((1, 1), (1, 1)))(inp)
        x = cbr(x, 8, 3, stride=2, padding="valid")
        x = block(x, 8, 8, 1, 1)
        x = block(x, 8, 12, 3, 2)
        x = block(x, 12, 12, 3, 1)
        x = block(x, 12, 16, 2, 1)
        x = cbr(x, 24, 1)
        x = L.GlobalAveragePooling2D(keepdims=True)(x)
    else:  # avgpool: strided SAME conv, AveragePooling2D and a 2x2 spatial Flatten
        x = cbr(inp, 8, 3, stride=2, padding="same")
        x = block(x, 8, 8, 2, 1)
        x = dw(x, 3, 2)
        x = cbr(x, 10, 1)
        x = L.AveragePooling2D(2)(x)
    out = L.Flatten()(x)
    model = keras.Model(inp, out, name=f"fe_{kind}")
    _randomise_bn(model, rng)
    return model


def to_int8_tflite(fe, images: np.ndarray) -> bytes:
    """Full-integer int8 conversion (int8 input and output) with ``images`` (float32 NHWC) as
    the representative dataset: the compression stage's converter, so tests exercise the same
    settings the pipeline uses."""
    from tinyevo.export.int8 import convert_int8

    return convert_int8(fe, np.asarray(images, dtype=np.float32))


def random_images(n: int, resolution: int, channels: int, seed: int = 0) -> np.ndarray:
    """Smooth-ish random float images in [-1, 1] (NHWC float32)."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (n, resolution, resolution, channels)).astype(np.float32)
    return x


def random_classifier(F: int, C: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    kernel = rng.normal(0, 1.0 / np.sqrt(F), (F, C)).astype(np.float32)
    bias = rng.normal(0, 0.1, C).astype(np.float32)
    return kernel, bias
