"""NetSpec -> torch ``nn.Module`` (the genetic-NAS paper's blocks: ReLU6, BN, bias-free convs, kaiming init,
Flatten before the classifier, where TyBox splits the net)."""

from __future__ import annotations

import torch
from torch import nn

from tinyevo.space.spec import BlockSpec, NetSpec


def conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if act:
        layers.append(nn.ReLU6(inplace=False))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """[expand 1x1 -> BN -> ReLU6] -> depthwise kxk -> BN -> ReLU6 -> project 1x1 -> BN (+ x)."""

    def __init__(self, b: BlockSpec):
        super().__init__()
        self.spec = b
        self.expand = conv_bn(b.cin, b.hidden, 1) if b.expand else None
        self.dw = conv_bn(b.hidden, b.hidden, b.kernel, stride=b.stride, groups=b.hidden)
        self.project = conv_bn(b.hidden, b.cout, 1, act=False)
        self.residual = b.residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.expand(x) if self.expand is not None else x
        y = self.project(self.dw(y))
        return x + y if self.residual else y


class TinyNet(nn.Module):
    """stem -> blocks -> head 1x1 conv -> global average pool -> flatten | classifier."""

    def __init__(self, spec: NetSpec):
        super().__init__()
        spec.check()
        self.spec = spec
        self.stem = conv_bn(spec.in_channels, spec.stem_out, spec.kernel, stride=spec.stem_stride)
        self.blocks = nn.Sequential(*[InvertedResidual(b) for b in spec.blocks])
        last = spec.blocks[-1].cout if spec.blocks else spec.stem_out
        self.head = conv_bn(last, spec.head_out, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(spec.head_out, spec.num_classes)
        init_weights(self)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Feature extractor: everything up to and including Flatten (size F)."""
        return self.flatten(self.pool(self.head(self.blocks(self.stem(x)))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def init_weights(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, mode="fan_in")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def build_torch(spec: NetSpec) -> TinyNet:
    return TinyNet(spec)


def save_model(path, model: TinyNet, meta: dict | None = None) -> None:
    """Weights + NetSpec (+ free-form metadata such as arch string and class list), atomically."""
    from tinyevo.io import atomic_path

    payload = {"netspec": model.spec.to_dict(), "state_dict": model.state_dict(), "meta": dict(meta or {})}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_model(path, map_location="cpu") -> tuple[TinyNet, NetSpec, dict]:
    """Inverse of :func:`save_model`; clear errors for a missing file or a NetSpec mismatch."""
    import os

    if not os.path.isfile(path):
        raise FileNotFoundError(f"model file not found: {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:
        raise ValueError(f"{path}: not a readable tinyevo model file: {exc}") from None
    if not isinstance(payload, dict) or "netspec" not in payload or "state_dict" not in payload:
        raise ValueError(f"{path}: not a tinyevo model file (needs 'netspec' and 'state_dict')")
    spec = NetSpec.from_dict(payload["netspec"])
    model = TinyNet(spec)
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise ValueError(f"{path}: weights do not match the stored NetSpec: {str(exc).splitlines()[0]}") from None
    return model, spec, payload.get("meta", {})
