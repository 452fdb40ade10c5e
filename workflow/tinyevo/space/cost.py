"""Analytic cost model of a NetSpec: parameters, MACs per image, peak activation SRAM (int8),
flash (int8 weights) and the feature size F. Equal to fvcore's conv + linear count (tested)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from tinyevo.space.layers import walk
from tinyevo.space.spec import NetSpec


@dataclass(frozen=True)
class Cost:
    params: int
    macs: int
    peak_sram: int
    flash: int
    feature_size: int

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def layer_table(spec: NetSpec) -> list[dict]:
    """The fused layers (conv+BN+ReLU6 is one layer, as in an int8 TFLite model) in execution
    order with input/output activation sizes, weights and MACs (the walk of
    :func:`tinyevo.space.layers.walk`, without its flatten, which moves no data)."""
    return [dict(name=l.name, kind=l.kind, cin=l.cin, cout=l.cout, kernel=l.kernel, stride=l.stride,
                 in_act=l.in_act, out_act=l.out_act, weights=l.weights, bn=2 * l.cout if l.is_conv else 0,
                 macs=l.macs, out_hw=l.out_hw)
            for l in walk(spec) if l.kind != "flatten"]


def cost_of(spec: NetSpec) -> Cost:
    rows = layer_table(spec)
    params = sum(r["weights"] + r["bn"] for r in rows)
    macs = sum(r["macs"] for r in rows)
    # TyBox rule: the largest sum of two consecutive activations (a layer's input + output), int8.
    peak = max(r["in_act"] + r["out_act"] for r in rows if r["kind"] != "linear")
    # int8 weights + one int32 bias per output channel (BN folded) for the feature extractor,
    # float32 classifier (it stays float for on-device learning).
    flash = sum(r["weights"] + 4 * r["cout"] for r in rows if r["kind"] in ("conv", "dwconv"))
    flash += 4 * next(r["weights"] for r in rows if r["kind"] == "linear")
    return Cost(params=params, macs=macs, peak_sram=peak, flash=flash, feature_size=spec.feature_size)
