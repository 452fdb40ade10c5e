"""The four zero-cost proxies of reference section 2, and the fused pass that computes snip,
jacob_cov and naswot from one shared forward pass.

Every proxy works on a freshly initialised net with BN in train mode and one data batch; per-
parameter scores are summed over the weights of every ``Conv2d`` and ``Linear`` layer. No proxy
changes the net's weights (BN running statistics are updated by train-mode forwards, which does
not change any train-mode output).
"""

from __future__ import annotations

import contextlib
from typing import Iterable, Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from tinyevo.proxies.registry import register

#: ReLU-like activations whose input codes NASWOT records (ReLU6 included, reference section 2).
RELU_LIKE = (nn.ReLU, nn.ReLU6)
#: proxies the fused pass can compute from one forward of the data batch.
FUSABLE = ("snip", "jacob_cov", "naswot")
_EPS = 1e-5


def prunable_weights(net: nn.Module) -> list[torch.Tensor]:
    """Weights of every Conv2d and Linear layer, in module order."""
    return [m.weight for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def _sum_abs_prod(ws: Iterable[torch.Tensor], gs: Iterable[torch.Tensor | None]) -> float:
    total = torch.zeros((), dtype=torch.float64)
    for w, g in zip(ws, gs):
        if g is not None:
            total += (w.detach() * g).abs().sum().double().cpu()
    return float(total)


# ----- jacob_cov -------------------------------------------------------------------------------
def jacob_cov_from_grad(grad: torch.Tensor) -> float:
    """Score of the input-gradient batch: C = corrcoef(J), v = eigvalsh(C),
    -sum(log(v + 1e-5) + 1 / (v + 1e-5)). At most about -N for batch N."""
    j = grad.detach().reshape(grad.shape[0], -1).double()
    c = torch.corrcoef(j)
    v = torch.linalg.eigvalsh(c)
    return float(-(torch.log(v + _EPS) + 1.0 / (v + _EPS)).sum())


# ----- naswot ------------------------------------------------------------------------------------
class _NaswotKernel:
    """Forward pre-hooks on every ReLU-like module accumulating K = sum c c^T + (1-c)(1-c)^T over
    the binary codes c = (input > 0) of the batch, in float64."""

    def __init__(self, net: nn.Module, n: int, device: torch.device):
        self.k = torch.zeros((n, n), dtype=torch.float64, device=device)
        self.handles = [m.register_forward_pre_hook(self._hook) for m in net.modules() if isinstance(m, RELU_LIKE)]

    def _hook(self, module: nn.Module, inputs) -> None:
        inp = inputs[0].detach()
        c = (inp.reshape(inp.shape[0], -1) > 0)
        d = c.shape[1]
        # 0/1 products summed over at most d terms are exact in float32 below 2**24.
        cf = c.to(torch.float32 if d < 2**24 else torch.float64)
        cc = (cf @ cf.T).double()
        r = c.sum(dim=1, dtype=torch.float64)
        # (1-c)(1-c)^T = d - r_i - r_j + (c c^T)_ij
        self.k += 2.0 * cc - r[:, None] - r[None, :] + float(d)

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []

    def score(self) -> float:
        return float(torch.linalg.slogdet(self.k.cpu())[1])


# ----- the fused pass ----------------------------------------------------------------------------
def fused_scores(net: nn.Module, x: torch.Tensor, y: torch.Tensor, names: Iterable[str]) -> dict[str, float]:
    """snip, jacob_cov and naswot (any subset) from one train-mode forward of ``x``: naswot from
    forward hooks, snip from dL/dW of the cross-entropy loss, jacob_cov from d(sum out)/dx of the
    same graph (two backward passes, each computing only what its proxy needs)."""
    names = [n for n in names if n in FUSABLE]
    out_scores: dict[str, float] = {}
    if not names:
        return out_scores
    net.train()
    want_jacob = "jacob_cov" in names
    want_snip = "snip" in names
    xx = x.detach().clone().requires_grad_(want_jacob)
    kern = _NaswotKernel(net, x.shape[0], x.device) if "naswot" in names else None
    try:
        grad_ctx = torch.enable_grad() if (want_jacob or want_snip) else torch.no_grad()
        with grad_ctx:
            out = net(xx)
    finally:
        if kern is not None:
            kern.remove()
    if kern is not None:
        out_scores["naswot"] = kern.score()
    if want_snip:
        ws = prunable_weights(net)
        loss = F.cross_entropy(out, y)
        gs = torch.autograd.grad(loss, ws, retain_graph=want_jacob, allow_unused=True)
        out_scores["snip"] = _sum_abs_prod(ws, gs)
    if want_jacob:
        (g,) = torch.autograd.grad(out, xx, grad_outputs=torch.ones_like(out))
        out_scores["jacob_cov"] = jacob_cov_from_grad(g)
    return {n: out_scores[n] for n in names}


@register("snip")
def snip(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """sum |dL/dW * W|, L = cross-entropy(net(x), y), BN in train mode."""
    return fused_scores(net, x, y, ["snip"])["snip"]


@register("jacob_cov")
def jacob_cov(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Correlation of the input Jacobians of the batch (Mellor et al. v1), symmetric eigensolver."""
    return fused_scores(net, x, y, ["jacob_cov"])["jacob_cov"]


@register("naswot")
def naswot(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """log|det K| of the ReLU/ReLU6 input codes (Mellor et al. 2021)."""
    with torch.no_grad():
        return fused_scores(net, x, y, ["naswot"])["naswot"]


# ----- synflow -----------------------------------------------------------------------------------
def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


@contextlib.contextmanager
def batchnorm_disabled(net: nn.Module) -> Iterator[None]:
    """Every BatchNorm layer acts as the identity inside the block (instance forward override,
    removed afterwards)."""
    bns = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in bns:
        m.forward = _identity  # type: ignore[method-assign]
    try:
        yield
    finally:
        for m in bns:
            del m.forward


def abs_state(net: nn.Module, dtype: torch.dtype = torch.float64) -> dict[str, torch.Tensor]:
    """|parameter| and |buffer| copies in ``dtype`` (integer buffers kept), keyed by name: a copy
    of the state, not of the net."""
    state: dict[str, torch.Tensor] = {}
    for n, p in net.named_parameters():
        state[n] = p.detach().abs().to(dtype)
    for n, b in net.named_buffers():
        state[n] = b.detach().abs().to(dtype) if b.is_floating_point() else b
    return state


@register("synflow")
def synflow(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """BN off, |params and buffers| in float64, all-ones input of batch 1 shaped like one sample
    of ``x``; R = sum(net(1)); score = sum |W * dR/dW|. The net itself is not modified."""
    state = abs_state(net)
    weight_ids = {id(w) for w in prunable_weights(net)}
    names = [n for n, p in net.named_parameters() if id(p) in weight_ids]
    for n in names:
        state[n].requires_grad_(True)
    ones = torch.ones((1, *x.shape[1:]), dtype=torch.float64, device=x.device)
    with torch.enable_grad(), batchnorm_disabled(net):
        out = torch.func.functional_call(net, state, (ones,))
        r = out.sum()
        ws = [state[n] for n in names]
        gs = torch.autograd.grad(r, ws, allow_unused=True)
    return _sum_abs_prod(ws, gs)


def compute(net: nn.Module, x: torch.Tensor, y: torch.Tensor, names: Iterable[str],
            registry: Mapping[str, object] | None = None) -> dict[str, float]:
    """All of ``names`` for one net with as few passes as the definitions allow: the built-in
    snip/jacob_cov/naswot share one forward; synflow and plugin proxies run on their own."""
    from tinyevo.proxies.registry import PROXIES

    reg = PROXIES if registry is None else registry
    names = list(names)
    builtin = {"snip": snip, "jacob_cov": jacob_cov, "naswot": naswot}
    shared = [n for n in names if n in builtin and reg.get(n) is builtin[n]]
    scores = fused_scores(net, x, y, shared) if shared else {}
    for n in names:
        if n not in scores:
            scores[n] = float(reg[n](net, x, y))  # type: ignore[operator]
    return {n: scores[n] for n in names}
