"""The one walk of a NetSpec: its layers in execution order, as typed records.

Every consumer of a net's structure reads this walk instead of walking the NetSpec itself: the
torch builder (:class:`tinyevo.space.torch_model.TinyNet`), the Keras builder and the weight
transfer (:mod:`tinyevo.export.keras_model`), the cost model (:func:`tinyevo.space.cost.layer_table`),
the TyBox memory model's int8 graph (:func:`tinyevo.space.memory.spec_graph`) and pruning's units
(:func:`tinyevo.compress.prune.units_of`). A new layer kind is a new ``kind`` here plus one
per-kind function in each builder.

The net (the genetic-NAS paper's MobileNetV2 blocks, TyBox's split before the classifier)::

    stem conv -> per block: [expand 1x1] -> depthwise kxk -> project 1x1 [-> add] -> head 1x1
    -> global average pool -> flatten | classifier

Every conv is bias-free, followed by BatchNorm and, except the projections, ReLU6; it pads
``kernel // 2`` on every side (:func:`out_size`).
"""

from __future__ import annotations

from dataclasses import dataclass

#: Layer kinds, in the order a builder meets them.
KINDS = ("conv", "dwconv", "add", "pool", "flatten", "linear")


def out_size(size: int, kernel: int, stride: int) -> int:
    """Output height (= width) of a conv or pool with symmetric padding ``kernel // 2``."""
    return (size + 2 * (kernel // 2) - kernel) // stride + 1


@dataclass(frozen=True)
class Layer:
    """One layer of the walk.

    ``name``: the torch module path (``stem``, ``blocks.3.dw``, ``head``, ``classifier``; an add is
    ``blocks.i.add``, the pool ``pool``, the flatten ``flatten``), unique in the net;
    :attr:`key` is the same name with ``_`` for ``.`` (the Keras layer prefix). ``role``: ``stem``,
    ``expand``, ``dw``, ``project``, ``add``, ``head``, ``pool``, ``flatten`` or ``classifier``.
    ``block``: the block index of a block's layers, else -1. ``in_hw`` / ``out_hw``: input and
    output height (= width); ``act``: a ReLU6 follows (after the BatchNorm of a conv)."""

    name: str
    kind: str
    role: str
    cin: int
    cout: int
    kernel: int
    stride: int
    groups: int
    act: bool
    in_hw: int
    out_hw: int
    block: int = -1

    @property
    def key(self) -> str:
        return self.name.replace(".", "_")

    @property
    def pad(self) -> int:
        """Symmetric padding of a conv (``kernel // 2``); 0 for the other kinds."""
        return self.kernel // 2 if self.kind in ("conv", "dwconv") else 0

    @property
    def is_conv(self) -> bool:
        return self.kind in ("conv", "dwconv")

    @property
    def weights(self) -> int:
        """Weight count (a linear layer's bias included; a conv's BatchNorm is not)."""
        if self.is_conv:
            return self.cout * (self.cin // self.groups) * self.kernel * self.kernel
        if self.kind == "linear":
            return self.cin * self.cout + self.cout
        return 0

    @property
    def macs(self) -> int:
        if self.is_conv:
            return self.out_hw * self.out_hw * self.weights
        if self.kind == "linear":
            return self.cin * self.cout
        return 0

    @property
    def in_act(self) -> int:
        """Input activation elements (one image)."""
        return self.in_hw * self.in_hw * self.cin

    @property
    def out_act(self) -> int:
        """Output activation elements (one image)."""
        return self.out_hw * self.out_hw * self.cout


def walk(spec) -> tuple[Layer, ...]:
    """The layers of ``spec`` (a :class:`tinyevo.space.spec.NetSpec`) in execution order."""
    layers: list[Layer] = []
    h = spec.resolution

    def conv(name: str, role: str, cin: int, cout: int, k: int, stride: int, depthwise: bool, act: bool,
             block: int = -1) -> None:
        nonlocal h
        ho = out_size(h, k, stride)
        layers.append(Layer(name, "dwconv" if depthwise else "conv", role, cin, cout, k, stride,
                            cin if depthwise else 1, act, h, ho, block))
        h = ho

    conv("stem", "stem", spec.in_channels, spec.stem_out, spec.kernel, spec.stem_stride, False, True)
    c = spec.stem_out
    for i, b in enumerate(spec.blocks):
        if b.expand:
            conv(f"blocks.{i}.expand", "expand", b.cin, b.hidden, 1, 1, False, True, i)
        conv(f"blocks.{i}.dw", "dw", b.hidden, b.hidden, b.kernel, b.stride, True, True, i)
        conv(f"blocks.{i}.project", "project", b.hidden, b.cout, 1, 1, False, False, i)
        if b.residual:
            layers.append(Layer(f"blocks.{i}.add", "add", "add", b.cout, b.cout, 0, 1, 1, False, h, h, i))
        c = b.cout
    conv("head", "head", c, spec.head_out, 1, 1, False, True)
    c = spec.head_out
    layers.append(Layer("pool", "pool", "pool", c, c, h, h, 1, False, h, 1))
    layers.append(Layer("flatten", "flatten", "flatten", c, c, 1, 1, 1, False, 1, 1))
    layers.append(Layer("classifier", "linear", "classifier", c, spec.num_classes, 1, 1, 1, False, 1, 1))
    return tuple(layers)


def block_starts(layers) -> dict[int, int]:
    """Block index -> position (in ``layers``) of the block's first layer: a block's input, which
    its residual add adds, is the output of the layer before that position."""
    starts: dict[int, int] = {}
    for j, layer in enumerate(layers):
        if layer.block >= 0 and layer.block not in starts:
            starts[layer.block] = j
    return starts
