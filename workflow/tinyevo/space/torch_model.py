"""NetSpec -> torch ``nn.Module`` (the genetic-NAS paper's blocks: ReLU6, BN, bias-free convs, kaiming init,
Flatten before the classifier, where TyBox splits the net), and the model file: tensors beside
JSON data, read with ``torch.load(weights_only=True)`` so that a file from elsewhere (a shared
results folder, a downloaded run) cannot run code."""

from __future__ import annotations

import json
import os
from typing import Any, Sequence

import torch
from torch import nn

from tinyevo.space.layers import Layer
from tinyevo.space.spec import BlockSpec, NetSpec


def conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if act:
        layers.append(nn.ReLU6(inplace=False))
    return nn.Sequential(*layers)


def conv_bn_of(layer: Layer) -> nn.Sequential:
    """Conv -> BN [-> ReLU6] of a conv layer of the walk."""
    return conv_bn(layer.cin, layer.cout, layer.kernel, stride=layer.stride, groups=layer.groups, act=layer.act)


#: Layer kind of the walk -> its torch module (an ``add`` is the block's residual sum, no module).
#: A new layer kind is one entry here.
MODULES = {
    "conv": conv_bn_of,
    "dwconv": conv_bn_of,
    "pool": lambda layer: nn.AdaptiveAvgPool2d(1),
    "flatten": lambda layer: nn.Flatten(),
    "linear": lambda layer: nn.Linear(layer.cin, layer.cout),
}


class InvertedResidual(nn.Module):
    """[expand 1x1 -> BN -> ReLU6] -> depthwise kxk -> BN -> ReLU6 -> project 1x1 -> BN (+ x): one
    module per layer of the block's walk, named by its role, applied in the walk's order."""

    def __init__(self, b: BlockSpec, layers: Sequence[Layer]):
        super().__init__()
        self.spec = b
        self.expand = None  # a block without expansion has no expand module
        self.residual = False
        self._order: list[str] = []
        for layer in layers:
            if layer.kind == "add":
                self.residual = True
            else:
                setattr(self, layer.role, MODULES[layer.kind](layer))
                self._order.append(layer.role)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        for role in self._order:
            y = getattr(self, role)(y)
        return x + y if self.residual else y


class TinyNet(nn.Module):
    """stem -> blocks -> head 1x1 conv -> global average pool -> flatten | classifier, one module
    per layer of the walk (:meth:`NetSpec.layers`, built by :data:`MODULES`), named by the walk's
    layer names; the blocks are ``blocks[i]`` (:class:`InvertedResidual`)."""

    def __init__(self, spec: NetSpec):
        super().__init__()
        spec.check()
        self.spec = spec
        layers = spec.layers()
        per_block: list[list[Layer]] = [[] for _ in spec.blocks]
        for layer in layers:
            if layer.block >= 0:
                per_block[layer.block].append(layer)
        self._features: list[str] = []  # the top-level modules of the feature extractor, in order
        for layer in layers:
            if layer.block >= 0:
                continue
            setattr(self, layer.name, MODULES[layer.kind](layer))
            if layer.kind != "linear":
                self._features.append(layer.name)
            if layer.role == "stem":  # the blocks follow the stem
                self.blocks = nn.Sequential(*[InvertedResidual(b, ls) for b, ls in zip(spec.blocks, per_block)])
                self._features.append("blocks")
        init_weights(self)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Feature extractor: everything up to and including Flatten (size F)."""
        for name in self._features:
            x = getattr(self, name)(x)
        return x

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


MODEL_FORMAT = 2  # 1: the same layout, before every load was weights_only


class UnsafeFileError(ValueError):
    """A model or checkpoint file that holds Python objects besides tensors and plain data:
    unpickling it could run code, so it is refused (``torch.load(weights_only=True)``)."""


def json_data(obj: Any, what: str) -> Any:
    """``obj`` as JSON-typed data (dicts with string keys, lists, strings, numbers, booleans, None;
    numpy scalars and arrays converted), the only Python objects besides tensors that a tinyevo
    model or checkpoint holds. A ``ValueError`` naming ``what`` for anything else."""
    def default(o):
        if hasattr(o, "tolist"):  # numpy scalar or array
            return o.tolist()
        raise TypeError(f"{type(o).__name__} is not JSON data")

    try:
        return json.loads(json.dumps(obj, default=default, allow_nan=True))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} must be JSON data (dicts, lists, strings, numbers): {exc}") from None


def load_tensors(path, what: str, map_location="cpu") -> Any:
    """``torch.load(path, weights_only=True)``: tensors, dicts, lists, tuples and plain values
    only, so a crafted file cannot run code (PyTorch's safe loader; its default since 2.6).
    A file holding anything else raises :class:`UnsafeFileError`, an unreadable one ``ValueError``;
    both name the file."""
    import pickle
    import warnings

    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*pickle protocol.*")
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        raise UnsafeFileError(
            f"{path}: refused to load this {what}: it is not made of tensors and plain data only (a pickle "
            "of other Python objects could run code when unpickled; a corrupt file looks the same), so it was "
            "not unpickled; it was not written by tinyevo or was altered since"
        ) from None
    except Exception as exc:
        raise ValueError(f"{path}: not a readable {what} ({type(exc).__name__}: {str(exc)[:200]})") from None


def save_model(path, model: TinyNet, meta: dict | None = None) -> None:
    """Weights + NetSpec + free-form metadata (arch string, class list, ...), atomically: a torch
    file holding the ``state_dict`` tensors beside the NetSpec and the metadata as JSON data, so
    that :func:`load_model` reads it with ``weights_only=True``."""
    from tinyevo.io import atomic_path

    payload = {"format": MODEL_FORMAT, "netspec": json_data(model.spec.to_dict(), "the NetSpec"),
               "meta": json_data(dict(meta or {}), "the model metadata"), "state_dict": model.state_dict()}
    # through a file handle: the archive's records are then named "archive/..." instead of after
    # the random temporary file, so the same payload gives the same bytes in every run
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        torch.save(payload, fh)


def load_model(path, map_location="cpu") -> tuple[TinyNet, NetSpec, dict]:
    """Inverse of :func:`save_model` (``weights_only=True``: a file holding other Python objects is
    refused with :class:`UnsafeFileError`, never executed); clear errors for a missing file or a
    NetSpec mismatch."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"model file not found: {path}")
    payload = load_tensors(path, "tinyevo model file", map_location)
    if not isinstance(payload, dict) or "netspec" not in payload or "state_dict" not in payload:
        raise ValueError(f"{path}: not a tinyevo model file (needs 'netspec' and 'state_dict')")
    spec = NetSpec.from_dict(payload["netspec"])
    model = TinyNet(spec)
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise ValueError(f"{path}: weights do not match the stored NetSpec: {str(exc).splitlines()[0]}") from None
    return model, spec, payload.get("meta", {})
