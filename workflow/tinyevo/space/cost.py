"""Analytic cost model of a NetSpec: parameters, MACs per image, peak activation SRAM (int8),
flash (int8 weights) and the feature size F. Equal to fvcore's conv + linear count (tested)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

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


def _out(size: int, kernel: int, stride: int) -> int:
    pad = kernel // 2
    return (size + 2 * pad - kernel) // stride + 1


def layer_table(spec: NetSpec) -> list[dict]:
    """The fused layers (conv+BN+ReLU6 is one layer, as in an int8 TFLite model) in execution
    order with input/output activation sizes, weights and MACs."""
    rows = []
    h = spec.resolution
    c = spec.in_channels

    def conv(name: str, cin: int, cout: int, k: int, stride: int, groups: int = 1) -> None:
        nonlocal h, c
        ho = _out(h, k, stride)
        w = cout * (cin // groups) * k * k
        rows.append(dict(name=name, kind="dwconv" if groups > 1 else "conv", cin=cin, cout=cout,
                         kernel=k, stride=stride, in_act=h * h * cin, out_act=ho * ho * cout,
                         weights=w, bn=2 * cout, macs=ho * ho * w, out_hw=ho))
        h, c = ho, cout

    conv("stem", spec.in_channels, spec.stem_out, spec.kernel, spec.stem_stride)
    for i, b in enumerate(spec.blocks):
        if b.expand:
            conv(f"blocks.{i}.expand", b.cin, b.hidden, 1, 1)
        conv(f"blocks.{i}.dw", b.hidden, b.hidden, b.kernel, b.stride, groups=b.hidden)
        conv(f"blocks.{i}.project", b.hidden, b.cout, 1, 1)
        if b.residual:
            rows.append(dict(name=f"blocks.{i}.add", kind="add", cin=b.cout, cout=b.cout, kernel=0, stride=1,
                             in_act=h * h * b.cout, out_act=h * h * b.cout, weights=0, bn=0, macs=0, out_hw=h))
    conv("head", c, spec.head_out, 1, 1)
    rows.append(dict(name="pool", kind="pool", cin=c, cout=c, kernel=h, stride=h, in_act=h * h * c,
                     out_act=c, weights=0, bn=0, macs=0, out_hw=1))
    rows.append(dict(name="classifier", kind="linear", cin=c, cout=spec.num_classes, kernel=1, stride=1,
                     in_act=c, out_act=spec.num_classes, weights=c * spec.num_classes + spec.num_classes,
                     bn=0, macs=c * spec.num_classes, out_hw=1))
    return rows


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
