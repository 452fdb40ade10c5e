"""Structured L1 filter pruning of a torch ``TinyNet`` and its NetSpec (the TyBox thesis).

A *unit* is a set of output channels that must be pruned together:

- ``blocks.i.expand`` (kind ``hidden``): the expansion conv's filters = the block's hidden
  channels; removing one also removes its BN channel, the depthwise channel (+ BN) and the
  projection conv's input channel. Depthwise convs are never pruned directly.
- width groups (kind ``width``): the stem's or a projection conv's output channels. A residual add
  ties the block's input and output channels, so the producers of a run of residual blocks (the
  conv that starts the run and every residual block's projection) form one group ranked by the
  *sum* of their filters' L1 norms and pruned together; consumers (next expansion convs' input
  channels, the depthwise + projection input of a block without expansion, the head's input) are
  sliced to match. The unit is named by its producers, e.g. ``blocks.1.project+blocks.2.project``.
- ``head`` (kind ``head``): the last conv; its filters are the features, so pruning it shrinks the
  feature size F (the classifier's input columns are removed).

A filter's L1 norm is ``sum |W|`` over (cin, kh, kw) of its conv weight. A prune keeps the
``n_keep`` filters with the largest norm (ties: the lower index) in their original order, and
builds a new ``TinyNet`` from the new NetSpec with the sliced weights, so the pruned model computes
exactly the pruned sub-network of the original.

Schedule (:func:`next_unit`): at each step the widest unit (most channels now), ties broken by the
latest position in the net, loses ``max(1, floor(step_fraction * width))`` filters. A step never
creates a new residual connection (a stride-1 block whose cin would become equal to its cout) and
never leaves a unit empty.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from tinyevo.space.spec import NetSpec
from tinyevo.space.torch_model import TinyNet, build_torch


@dataclass(frozen=True)
class Unit:
    name: str
    kind: str  # hidden | width | head
    producers: tuple[str, ...]  # module paths of conv_bn sequences whose outputs are the channels
    position: int  # execution index of the last producer (larger = later in the net)
    widths: tuple[int, ...] = ()  # width-group only: width indices (0 = stem out, i + 1 = block i out)
    block: int = -1  # hidden only


def filter_l1(weight: torch.Tensor) -> np.ndarray:
    """L1 norm of every output filter of a conv weight (Cout, Cin/groups, kh, kw)."""
    return weight.detach().abs().sum(dim=tuple(range(1, weight.dim()))).cpu().double().numpy()


def units_of(spec: NetSpec) -> list[Unit]:
    """Every prunable unit of ``spec`` (in execution order of their last producer), from its walk
    (:meth:`NetSpec.layers`); a unit's position is the index of its last producer among the convs."""
    units: list[Unit] = []
    layers = spec.layers()
    residual = {layer.block for layer in layers if layer.kind == "add"}
    # width groups: width index (0 = stem out, i + 1 = block i out), producers, last position
    groups: list[list[int]] = []
    producers: list[list[str]] = []
    positions: list[int] = []
    for pos, layer in enumerate(layer for layer in layers if layer.is_conv):
        if layer.role == "expand":
            units.append(Unit(layer.name, "hidden", (layer.name,), pos, block=layer.block))
        elif layer.role == "project" and layer.block in residual:  # ties its input's width group
            groups[-1].append(layer.block + 1)
            producers[-1].append(layer.name)
            positions[-1] = pos
        elif layer.role in ("stem", "project"):
            groups.append([0 if layer.role == "stem" else layer.block + 1])
            producers.append([layer.name])
            positions.append(pos)
        elif layer.role == "head":
            head = Unit(layer.name, "head", (layer.name,), pos)
    for g, p, q in zip(groups, producers, positions):
        units.append(Unit("+".join(p), "width", tuple(p), q, widths=tuple(g)))
    units.append(head)
    return sorted(units, key=lambda u: u.position)


def _width_values(spec: NetSpec) -> list[int]:
    return [spec.stem_out] + [b.cout for b in spec.blocks]


def unit_width(spec: NetSpec, unit: Unit) -> int:
    if unit.kind == "hidden":
        return spec.blocks[unit.block].hidden
    if unit.kind == "head":
        return spec.head_out
    return _width_values(spec)[unit.widths[0]]


def _module(model: TinyNet, path: str) -> torch.nn.Sequential:
    m = model
    for part in path.split("."):
        m = m[int(part)] if part.isdigit() else getattr(m, part)
    return m


def unit_scores(model: TinyNet, unit: Unit) -> np.ndarray:
    """Per-channel L1 score of a unit: the sum over its producers' filter norms."""
    return sum(filter_l1(_module(model, p)[0].weight) for p in unit.producers)


def keep_largest(scores: np.ndarray, n_keep: int) -> np.ndarray:
    """Indices of the ``n_keep`` largest scores (ties: lower index first), ascending."""
    if not 1 <= n_keep <= len(scores):
        raise ValueError(f"n_keep must be in 1..{len(scores)}, got {n_keep}")
    order = np.lexsort((np.arange(len(scores)), -np.asarray(scores)))
    return np.sort(order[:n_keep])


def pruned_spec(spec: NetSpec, unit: Unit, n_keep: int) -> NetSpec:
    """``spec`` with the unit's width set to ``n_keep``."""
    if unit.kind == "hidden":
        blocks = list(spec.blocks)
        blocks[unit.block] = dataclasses.replace(blocks[unit.block], hidden=n_keep)
        return dataclasses.replace(spec, blocks=tuple(blocks))
    if unit.kind == "head":
        return dataclasses.replace(spec, head_out=n_keep)
    ws = set(unit.widths)
    blocks = []
    for i, b in enumerate(spec.blocks):
        cin = n_keep if i in ws else b.cin
        cout = n_keep if (i + 1) in ws else b.cout
        hidden = b.hidden if b.expand else cin
        blocks.append(dataclasses.replace(b, cin=cin, cout=cout, hidden=hidden))
    return dataclasses.replace(spec, stem_out=n_keep if 0 in ws else spec.stem_out, blocks=tuple(blocks))


def _slice_out(sd: dict, prefix: str, keep: torch.Tensor) -> None:
    sd[f"{prefix}.0.weight"] = sd[f"{prefix}.0.weight"][keep]
    for k in ("weight", "bias", "running_mean", "running_var"):
        sd[f"{prefix}.1.{k}"] = sd[f"{prefix}.1.{k}"][keep]


def _slice_in(sd: dict, prefix: str, keep: torch.Tensor) -> None:
    sd[f"{prefix}.0.weight"] = sd[f"{prefix}.0.weight"][:, keep]


def prune_channels(model: TinyNet, unit: Unit, keep: Sequence[int]) -> TinyNet:
    """A new ``TinyNet`` without the unit's channels not in ``keep`` (and everything consuming
    them); the original model is not changed."""
    spec = model.spec
    keep_t = torch.as_tensor(np.asarray(keep, dtype=np.int64))
    width = unit_width(spec, unit)
    if len(keep_t) < 1 or int(keep_t.max()) >= width or len(set(keep_t.tolist())) != len(keep_t):
        raise ValueError(f"unit {unit.name}: keep must be distinct channel indices in 0..{width - 1}")
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if unit.kind == "hidden":
        i = unit.block
        _slice_out(sd, f"blocks.{i}.expand", keep_t)
        _slice_out(sd, f"blocks.{i}.dw", keep_t)
        _slice_in(sd, f"blocks.{i}.project", keep_t)
    elif unit.kind == "head":
        _slice_out(sd, "head", keep_t)
        sd["classifier.weight"] = sd["classifier.weight"][:, keep_t]
    else:
        for p in unit.producers:
            _slice_out(sd, p, keep_t)
        ws = set(unit.widths)
        for i, b in enumerate(spec.blocks):
            if i not in ws:
                continue
            if b.expand:
                _slice_in(sd, f"blocks.{i}.expand", keep_t)
            else:
                _slice_out(sd, f"blocks.{i}.dw", keep_t)
                _slice_in(sd, f"blocks.{i}.project", keep_t)
        if len(spec.blocks) in ws:
            _slice_in(sd, "head", keep_t)
    new = build_torch(pruned_spec(spec, unit, len(keep_t)))
    new.load_state_dict(sd)
    new.train(model.training)
    return new


def prune_unit(model: TinyNet, unit: Unit, n_keep: int) -> tuple[TinyNet, np.ndarray]:
    """Keep the ``n_keep`` largest-L1 channels of ``unit``: (new model, kept indices)."""
    keep = keep_largest(unit_scores(model, unit), n_keep)
    return prune_channels(model, unit, keep), keep


def _residual_flags(spec: NetSpec) -> tuple[bool, ...]:
    return tuple(b.residual for b in spec.blocks)


def step_keep(spec: NetSpec, unit: Unit, step_fraction: float) -> int | None:
    """How many channels the unit keeps in one step, or None when it cannot be pruned (one
    channel left, or every smaller width would turn a plain block into a residual one)."""
    width = unit_width(spec, unit)
    flags = _residual_flags(spec)
    n_keep = width - max(1, int(np.floor(step_fraction * width)))
    while n_keep >= 1:
        if _residual_flags(pruned_spec(spec, unit, n_keep)) == flags:
            return n_keep
        n_keep -= 1
    return None


def next_unit(spec: NetSpec, step_fraction: float) -> tuple[Unit, int] | None:
    """The thesis' order: the widest prunable unit, latest first among equals; with its n_keep."""
    cands = []
    for u in units_of(spec):
        n_keep = step_keep(spec, u, step_fraction)
        if n_keep is not None:
            cands.append((-unit_width(spec, u), -u.position, u, n_keep))
    if not cands:
        return None
    cands.sort(key=lambda c: (c[0], c[1]))
    return cands[0][2], cands[0][3]
