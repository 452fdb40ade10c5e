"""NetSpec -> Keras functional model, and torch -> Keras weight transfer.

One spec, two builders: :func:`build_keras` mirrors :class:`tinyevo.space.torch_model.TinyNet`
layer for layer with stable names, so that a trained (or pruned) torch model can be exported with
:func:`torch_to_keras` and quantised with TFLite.

Layout and numerics:

- input NHWC float32, already normalised (the same normalisation as the torch input);
- every conv is bias-free and followed by ``BatchNormalization`` (epsilon 1e-5 as torch) and,
  except the projection convs, ``ReLU(max_value=6)``;
- torch pads ``k // 2`` on every side. Keras ``same`` equals that for stride 1 and odd ``k``, but
  not for stride 2 (it pads asymmetrically, bottom/right only for even inputs). Strided convs with
  ``k > 1`` therefore get an explicit symmetric ``ZeroPadding2D`` and a ``valid`` conv;
- global average pooling is an ``AveragePooling2D`` over the whole final map (one TFLite
  AVERAGE_POOL_2D op) followed by the single ``Flatten`` layer named ``flatten``: TyBox splits the
  model there (feature extractor = everything up to and including ``flatten``);
- the classifier is one ``Dense`` layer named ``classifier``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tinyevo.space.spec import NetSpec

BN_EPS = 1e-5
FLATTEN = "flatten"
CLASSIFIER = "classifier"


def _conv_bn(x, l):
    """Conv layer ``l`` of the walk: [ZeroPadding2D] -> (Depthwise)Conv2D -> BN [-> ReLU6]."""
    from keras import layers

    name = l.key
    if l.stride > 1 and l.pad > 0:
        x = layers.ZeroPadding2D(padding=((l.pad, l.pad), (l.pad, l.pad)), name=f"{name}_pad")(x)
        padding = "valid"
    else:
        padding = "same"
    if l.kind == "dwconv":
        x = layers.DepthwiseConv2D(l.kernel, strides=l.stride, padding=padding, use_bias=False, name=f"{name}_conv")(x)
    else:
        x = layers.Conv2D(l.cout, l.kernel, strides=l.stride, padding=padding, use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(epsilon=BN_EPS, momentum=0.9, name=f"{name}_bn")(x)
    if l.act:
        x = layers.ReLU(max_value=6.0, name=f"{name}_relu")(x)
    return x


def _add(x, l, block_input):
    from keras import layers

    return layers.Add(name=l.key)([block_input, x])


def _pool(x, l):
    from keras import layers

    return layers.AveragePooling2D(pool_size=(l.in_hw, l.in_hw), name=l.key)(x)


def _flatten(x, l):
    from keras import layers

    return layers.Flatten(name=FLATTEN)(x)


def _linear(x, l):
    from keras import layers

    return layers.Dense(l.cout, name=CLASSIFIER)(x)


_BUILD = {"conv": _conv_bn, "dwconv": _conv_bn, "pool": _pool, "flatten": _flatten, "linear": _linear}


def build_keras(spec: NetSpec):
    """The Keras twin of ``TinyNet(spec)`` (random weights; see :func:`transfer_weights`), one
    layer per record of the walk (:meth:`NetSpec.layers`)."""
    import keras

    spec.check()
    inp = keras.Input(shape=(spec.resolution, spec.resolution, spec.in_channels), name="input", dtype="float32")
    x = inp
    block_input: dict = {}
    for l in spec.layers():
        if l.block >= 0 and l.block not in block_input:
            block_input[l.block] = x
        x = _add(x, l, block_input[l.block]) if l.kind == "add" else _BUILD[l.kind](x, l)
    return keras.Model(inp, x, name="tinynet")


def _np(t) -> np.ndarray:
    return t.detach().cpu().numpy().astype(np.float32)


def _set_conv_bn(kmodel, name: str, seq, depthwise: bool) -> None:
    conv, bn = seq[0], seq[1]
    w = _np(conv.weight)
    if depthwise:  # torch (C, 1, k, k) -> keras (k, k, C, 1)
        kw = w.transpose(2, 3, 0, 1)
    else:  # torch OIHW -> keras HWIO
        kw = w.transpose(2, 3, 1, 0)
    layer = kmodel.get_layer(f"{name}_conv")
    expected = tuple(layer.get_weights()[0].shape)
    if kw.shape != expected:
        raise ValueError(f"torch layer {name}: weight shape {kw.shape} does not fit Keras layer {expected}")
    layer.set_weights([kw])
    kmodel.get_layer(f"{name}_bn").set_weights(
        [_np(bn.weight), _np(bn.bias), _np(bn.running_mean), _np(bn.running_var)]
    )
    if abs(float(bn.eps) - BN_EPS) > 1e-12:
        raise ValueError(f"torch layer {name}: BatchNorm eps {bn.eps} differs from the Keras builder's {BN_EPS}")


def transfer_weights(tmodel, kmodel) -> None:
    """Copy every weight and BN statistic of a torch ``TinyNet`` into its Keras twin (the conv
    layers and the classifier of the walk, by name)."""
    for l in tmodel.spec.layers():
        if l.is_conv:
            _set_conv_bn(kmodel, l.key, tmodel.get_submodule(l.name), depthwise=l.kind == "dwconv")
    kmodel.get_layer(CLASSIFIER).set_weights([_np(tmodel.classifier.weight).T.copy(), _np(tmodel.classifier.bias)])


def torch_to_keras(tmodel):
    """Build the Keras twin of ``tmodel`` and copy its weights (eval-mode semantics)."""
    kmodel = build_keras(tmodel.spec)
    transfer_weights(tmodel, kmodel)
    return kmodel


def split_keras(kmodel) -> tuple[Any, Any]:
    """(feature extractor up to and including ``flatten``, float classifier on F features)."""
    import keras

    flat = kmodel.get_layer(FLATTEN)
    fe = keras.Model(kmodel.input, flat.output, name="feature_extractor")
    dense = kmodel.get_layer(CLASSIFIER)
    f = int(flat.output.shape[-1])
    cin = keras.Input(shape=(f,), name="features", dtype="float32")
    out = keras.layers.Dense(dense.units, name=CLASSIFIER)(cin)
    clf = keras.Model(cin, out, name="classifier")
    clf.get_layer(CLASSIFIER).set_weights(dense.get_weights())
    return fe, clf


def nchw_to_nhwc(x) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(x, dtype=np.float32).transpose(0, 2, 3, 1))
