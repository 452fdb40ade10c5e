"""The one walk of a NetSpec (tinyevo.space.layers) and the consumers that read it."""

import torch

from tinyevo.compress.prune import units_of
from tinyevo.space import cost_of
from tinyevo.space.layers import out_size, walk
from tinyevo.space.memory import spec_graph
from tinyevo.space.spec import BlockSpec, NetSpec
from tinyevo.space.torch_model import TinyNet

# 16x16x1 -> stem 3x3/2 -> block 0 (expand, stride 2) -> block 1 (expand, residual) -> block 2
# (no expansion, stride 1, 8 -> 12: no residual) -> head -> pool -> flatten -> classifier
SPEC = NetSpec(resolution=16, in_channels=1, stem_out=4, stem_stride=2, kernel=3, head_out=10, num_classes=3,
               blocks=(BlockSpec(4, 8, 8, 2, 3, True, 0), BlockSpec(8, 16, 8, 1, 5, True, 1),
                       BlockSpec(8, 8, 12, 1, 3, False, 2)))


def test_walk_by_hand():
    got = [(l.name, l.kind, l.role, l.cin, l.cout, l.kernel, l.stride, l.groups, l.act, l.in_hw, l.out_hw, l.block)
           for l in walk(SPEC)]
    assert got == [
        ("stem", "conv", "stem", 1, 4, 3, 2, 1, True, 16, 8, -1),
        ("blocks.0.expand", "conv", "expand", 4, 8, 1, 1, 1, True, 8, 8, 0),
        ("blocks.0.dw", "dwconv", "dw", 8, 8, 3, 2, 8, True, 8, 4, 0),
        ("blocks.0.project", "conv", "project", 8, 8, 1, 1, 1, False, 4, 4, 0),
        ("blocks.1.expand", "conv", "expand", 8, 16, 1, 1, 1, True, 4, 4, 1),
        ("blocks.1.dw", "dwconv", "dw", 16, 16, 5, 1, 16, True, 4, 4, 1),
        ("blocks.1.project", "conv", "project", 16, 8, 1, 1, 1, False, 4, 4, 1),
        ("blocks.1.add", "add", "add", 8, 8, 0, 1, 1, False, 4, 4, 1),
        ("blocks.2.dw", "dwconv", "dw", 8, 8, 3, 1, 8, True, 4, 4, 2),
        ("blocks.2.project", "conv", "project", 8, 12, 1, 1, 1, False, 4, 4, 2),
        ("head", "conv", "head", 12, 10, 1, 1, 1, True, 4, 4, -1),
        ("pool", "pool", "pool", 10, 10, 4, 4, 1, False, 4, 1, -1),
        ("flatten", "flatten", "flatten", 10, 10, 1, 1, 1, False, 1, 1, -1),
        ("classifier", "linear", "classifier", 10, 3, 1, 1, 1, False, 1, 1, -1),
    ]
    assert SPEC.layers() == walk(SPEC)
    assert [l.key for l in walk(SPEC)][:3] == ["stem", "blocks_0_expand", "blocks_0_dw"]
    assert (out_size(16, 3, 2), out_size(15, 3, 2), out_size(4, 5, 1), out_size(7, 1, 2)) == (8, 8, 4, 4)


def test_builders_and_models_read_the_walk():
    layers = walk(SPEC)
    convs = [l for l in layers if l.is_conv]
    net = TinyNet(SPEC)
    # one torch conv per conv of the walk, under the walk's name, with the walk's shape
    for l in convs:
        conv = net.get_submodule(l.name)[0]
        assert tuple(conv.weight.shape) == (l.cout, l.cin // l.groups, l.kernel, l.kernel), l.name
        assert (conv.stride, conv.padding, conv.groups) == ((l.stride, l.stride), (l.pad, l.pad), l.groups)
        assert (len(net.get_submodule(l.name)) == 3) == l.act  # conv, BN [, ReLU6]
    torch_convs = [n for n, m in net.named_modules() if isinstance(m, torch.nn.Conv2d)]
    assert torch_convs == [f"{l.name}.0" for l in convs]
    assert [b.residual for b in net.blocks] == [False, True, False]
    # cost model: the walk's weights + BN and MACs
    c = cost_of(SPEC)
    assert c.params == sum(l.weights + (2 * l.cout if l.is_conv else 0) for l in layers)
    assert c.params == sum(p.numel() for p in net.parameters())
    assert c.macs == sum(l.macs for l in layers)
    # memory model's int8 graph: a PAD before each strided conv with k > 1, one ADD per residual
    kinds = [op.kind for op in spec_graph(SPEC).ops]
    assert kinds.count("PAD") == 2 and kinds.count("ADD") == 1
    assert kinds.count("CONV_2D") + kinds.count("DEPTHWISE_CONV_2D") == len(convs)
    # pruning units: producers are convs of the walk; the residual block ties its input's group
    units = {u.name: u for u in units_of(SPEC)}
    assert set(units) == {"blocks.0.expand", "blocks.1.expand", "stem", "blocks.0.project+blocks.1.project",
                          "blocks.2.project", "head"}
    assert units["blocks.0.project+blocks.1.project"].widths == (1, 2)
    assert units["head"].position == len(convs) - 1
