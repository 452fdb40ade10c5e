"""Zero-cost proxies, and the fused pass that computes snip, jacob_cov, naswot and meco from one
shared forward pass of the data batch.

Every proxy works on a freshly initialised net with BN in train mode and one data batch; per-
parameter scores are summed over the weights of every ``Conv2d`` and ``Linear`` layer. No proxy
changes the net's weights (BN running statistics are updated by train-mode forwards, which does
not change any train-mode output).

Registry names and papers:

- ``snip``: Lee, Ajanthan, Torr, "SNIP: Single-shot network pruning based on connection
  sensitivity", ICLR 2019 (as a NAS proxy: Abdelfattah et al., "Zero-Cost Proxies for Lightweight
  NAS", ICLR 2021).
- ``synflow`` / ``synflow_relu6``: Tanaka, Kunin, Yamins, Ganguli, "Pruning neural networks
  without any data by iteratively conserving synaptic flow", NeurIPS 2020.
- ``jacob_cov`` and ``naswot``: Mellor, Turner, Storkey, Crowley, "Neural Architecture Search
  without Training", ICML 2021 (v1 and v2 of the paper).
- ``zico``: Li, Yang, Bhardwaj, Marculescu, "ZiCo: Zero-shot NAS via Inverse Coefficient of
  Variation on Gradients", ICLR 2023.
- ``meco``: Jiang, Wang, Bie, "MeCo: Zero-Shot NAS with One Data and Single Forward Pass via
  Minimum Eigenvalue of Correlation", NeurIPS 2023.
- ``params`` and ``macs``: the cost baselines (parameters; conv + linear MACs per image),
  registered ``from_spec``: the scorer computes them from the NetSpec's analytic cost model and
  builds no torch net for them.
"""

from __future__ import annotations

import contextlib
import math
from typing import Iterable, Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from tinyevo.proxies.registry import register
from tinyevo.space.cost import cost_of
from tinyevo.space.spec import NetSpec

#: ReLU-like activations whose input codes NASWOT records (ReLU6 included, as in the NASWOT paper's
#: treatment of any rectifier).
RELU_LIKE = (nn.ReLU, nn.ReLU6)
#: proxies the fused pass can compute from one forward of the data batch.
FUSABLE = ("snip", "jacob_cov", "naswot", "meco")
_EPS = 1e-5
#: ZiCo's number of batches: the proxy batch is split into this many consecutive parts.
ZICO_BATCHES = 2
#: synflow's input/output-gradient scales 2**-k tried in turn when the sum overflows float64.
SYNFLOW_RESCALE_EXPONENTS = (0, 256, 512, 768)
#: NASWOT codes of a layer with fewer features than this are multiplied in float32 (a sum of at
#: most 2**24 products of 0/1 is exact there), wider layers in float64.
NASWOT_FLOAT32_MAX_D = 2**24


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
def _flat_rows(t: torch.Tensor) -> torch.Tensor:
    """``t`` as (N, d) rows without a copy where its memory allows: oneDNN hands back many conv
    outputs in channels-last strides even for an NCHW net, and ``reshape(N, -1)`` of those copies
    the tensor. The NASWOT kernel is a sum over features, so the column order does not change it."""
    if t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last):
        t = t.permute(0, 2, 3, 1)
    return t.reshape(t.shape[0], -1)


class _NaswotKernel:
    """Forward pre-hooks on every ReLU-like module accumulating the NASWOT kernel of the batch
    (Mellor, Turner, Storkey, Crowley, "Neural Architecture Search without Training", ICML 2021):
    K = sum over the hooked layers of C C^T + (1 - C)(1 - C)^T, C the (N, d) binary codes
    (input > 0) of one layer, so K_ij = d - Hamming(c_i, c_j) summed over layers.

    Minimal work per layer: one comparison written straight into a float matrix and one matrix
    product S_l = C C^T; since C is 0/1, diag(S_l) = r (the row sums) and
    (1 - C)(1 - C)^T = d - r_i - r_j + S_l, hence K = 2 S - diag(S)_i - diag(S)_j + D with
    S = sum_l S_l and D = sum_l d, formed once. Every entry is an integer: a float32 product of 0/1
    codes is exact while d < 2**24 (float64 beyond), and S, D are summed in float64 (exact below
    2**53), so K equals the authors' per-layer sum exactly, whatever the summation order."""

    def __init__(self, net: nn.Module, n: int, device: torch.device):
        self.s = torch.zeros((n, n), dtype=torch.float64, device=device)
        self.d = 0
        self.handles = [m.register_forward_pre_hook(self._hook) for m in net.modules() if isinstance(m, RELU_LIKE)]

    def _hook(self, module: nn.Module, inputs) -> None:
        flat = _flat_rows(inputs[0].detach())
        d = int(flat.shape[1])
        dtype = torch.float32 if d < NASWOT_FLOAT32_MAX_D else torch.float64
        codes = torch.empty(flat.shape, dtype=dtype, device=flat.device)
        torch.gt(flat, 0, out=codes)
        self.s += torch.mm(codes, codes.T)
        self.d += d

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []

    def kernel(self) -> torch.Tensor:
        """K (float64, N x N) from the accumulated S and D."""
        r = self.s.diagonal()
        return 2.0 * self.s - r[:, None] - r[None, :] + float(self.d)

    def score(self) -> float:
        """log|det K| (``slogdet``, as the authors' ``hooklogdet``)."""
        return float(torch.linalg.slogdet(self.kernel().cpu())[1])


# ----- meco --------------------------------------------------------------------------------------
def meco_layer(fmap: torch.Tensor) -> float:
    """lambda_min of the Pearson correlation matrix between the channels of one sample's feature
    map ``fmap`` (C, H, W): P = corrcoef(F), F = fmap reshaped to (C, H*W), in float64.

    As in the MeCo authors' code, a channel that is constant over the H*W positions has an
    undefined correlation, set to 0 (its row and column of P are 0), so lambda_min = 0; and P is
    exactly singular when C > H*W - 1 (the centred rows span at most H*W - 1 dimensions), so
    lambda_min = 0 there without an eigensolve (a solver would return round-off around 0)."""
    c = int(fmap.shape[0])
    f = fmap.detach().reshape(c, -1).double()
    hw = int(f.shape[1])
    if hw < 2 or bool((f.amax(dim=1) == f.amin(dim=1)).any()):
        return 0.0
    if c == 1:
        return 1.0
    if c > hw - 1:
        return 0.0
    z = f - f.mean(dim=1, keepdim=True)
    z = z / torch.linalg.vector_norm(z, dim=1, keepdim=True)
    return float(torch.linalg.eigvalsh(z @ z.T)[0])


class _MecoHooks:
    """Forward hooks on every Conv2d summing :func:`meco_layer` of the first sample's output."""

    def __init__(self, net: nn.Module):
        self.total = 0.0
        self.handles = [m.register_forward_hook(self._hook) for m in net.modules() if isinstance(m, nn.Conv2d)]

    def _hook(self, module: nn.Module, inputs, output) -> None:
        self.total += meco_layer(output[0])

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []


# ----- the fused pass ----------------------------------------------------------------------------
def fused_scores(net: nn.Module, x: torch.Tensor, y: torch.Tensor, names: Iterable[str]) -> dict[str, float]:
    """snip, jacob_cov, naswot and meco (any subset) from one train-mode forward of ``x``: naswot
    and meco from forward hooks, snip from dL/dW of the cross-entropy loss, jacob_cov from
    d(sum out)/dx of the same graph (two backward passes, each computing only what its proxy
    needs)."""
    names = [n for n in names if n in FUSABLE]
    out_scores: dict[str, float] = {}
    if not names:
        return out_scores
    net.train()
    want_jacob = "jacob_cov" in names
    want_snip = "snip" in names
    # the batch is copied only when jacob_cov needs its gradient; naswot and meco alone need no
    # autograd at all (inference mode: no graph, no version counters)
    xx = x.detach().clone().requires_grad_(True) if want_jacob else x.detach()
    kern = _NaswotKernel(net, x.shape[0], x.device) if "naswot" in names else None
    meco_hooks = _MecoHooks(net) if "meco" in names else None
    try:
        grad_ctx = torch.enable_grad() if (want_jacob or want_snip) else torch.inference_mode()
        with grad_ctx:
            out = net(xx)
    finally:
        if kern is not None:
            kern.remove()
        if meco_hooks is not None:
            meco_hooks.remove()
    if kern is not None:
        out_scores["naswot"] = kern.score()
    if meco_hooks is not None:
        out_scores["meco"] = meco_hooks.total
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


@register("meco")
def meco(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """MeCo (Jiang, Wang, Bie, NeurIPS 2023): sum over every Conv2d layer i of
    lambda_min(P(f_i(x_0))), the smallest eigenvalue of the Pearson correlation matrix between the
    channels of layer i's output feature map for ONE sample x_0 (the first of the batch), see
    :func:`meco_layer`. Larger is better.

    One train-mode forward of the whole batch (it is part of the fused pass): BN normalises with
    the batch's statistics, as for every other proxy here. The authors forward a batch of one
    sample, which BN in train mode cannot normalise at this space's 1x1 late feature maps; BN is a
    positive per-channel affine map at init, so it does not change the correlation of the layer
    it follows, only what the next ReLU6 clips. The authors hook every module (conv, BN, ReLU,
    containers, the logits); here the layers are the Conv2d outputs, each counted once."""
    with torch.no_grad():
        return fused_scores(net, x, y, ["meco"])["meco"]


# ----- synflow -----------------------------------------------------------------------------------
def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


@contextlib.contextmanager
def _forward_overridden(modules: Sequence[nn.Module], fn) -> Iterator[None]:
    """Every module of ``modules`` computes ``fn`` inside the block (instance forward override,
    removed afterwards)."""
    for m in modules:
        m.forward = fn  # type: ignore[method-assign]
    try:
        yield
    finally:
        for m in modules:
            del m.forward


def batchnorm_disabled(net: nn.Module):
    """Context: every BatchNorm layer acts as the identity inside the block."""
    return _forward_overridden([m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)],
                               _identity)


def relu6_unclamped(net: nn.Module):
    """Context: every ReLU6 acts as ReLU (max(x, 0), no clamp at 6) inside the block."""
    return _forward_overridden([m for m in net.modules() if isinstance(m, nn.ReLU6)], F.relu)


def abs_state(net: nn.Module, dtype: torch.dtype = torch.float64) -> dict[str, torch.Tensor]:
    """|parameter| and |buffer| copies in ``dtype`` (integer buffers kept), keyed by name: a copy
    of the state, not of the net."""
    state: dict[str, torch.Tensor] = {}
    for n, p in net.named_parameters():
        state[n] = p.detach().abs().to(dtype)
    for n, b in net.named_buffers():
        state[n] = b.detach().abs().to(dtype) if b.is_floating_point() else b
    return state


def synflow_sum(net: nn.Module, x: torch.Tensor, clamp6: bool = True, scale: float = 1.0) -> float:
    """sum |W * dR/dW| over the Conv2d/Linear weights of the linearised net: BN off, |params and
    buffers| in float64, input ``scale`` * ones of batch 1 shaped like one sample of ``x``,
    R = ``scale`` * sum(net(input)) (the backward starts from ``scale``); ReLU6 clamps at 6 when
    ``clamp6``, else acts as ReLU. The net itself is not modified."""
    state = abs_state(net)
    weight_ids = {id(w) for w in prunable_weights(net)}
    names = [n for n, p in net.named_parameters() if id(p) in weight_ids]
    for n in names:
        state[n].requires_grad_(True)
    ones = torch.full((1, *x.shape[1:]), float(scale), dtype=torch.float64, device=x.device)
    act = contextlib.nullcontext() if clamp6 else relu6_unclamped(net)
    with torch.enable_grad(), batchnorm_disabled(net), act:
        out = torch.func.functional_call(net, state, (ones,))
        ws = [state[n] for n in names]
        gs = torch.autograd.grad(out, ws, grad_outputs=torch.full_like(out, float(scale)), allow_unused=True)
    return _sum_abs_prod(ws, gs)


@register("synflow_relu6")
def synflow_relu6(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """The saturated synflow of the zero-cost-nas code, kept for reproduction: BN off, |params and
    buffers| in float64, all-ones input of batch 1 shaped like one sample of ``x``;
    R = sum(net(1)); score = sum |W * dR/dW|, the raw sum. With ReLU6 every activation of this
    space saturates at 6 on that input, so only the classifier gets a gradient and the score is
    6 * sum |W_classifier|, the same for every body (initialisation noise)."""
    return synflow_sum(net, x, clamp6=True)


@register("synflow", version=2)
def synflow(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """ln(S), S = sum |W * dR/dW| over the Conv2d/Linear weights (Tanaka, Kunin, Yamins, Ganguli,
    "Pruning neural networks without any data by iteratively conserving synaptic flow",
    NeurIPS 2020), with the linearisation the derivation needs: BN off, |params| in float64,
    all-ones input of batch 1, R = sum(net(1)), and every ReLU6 acting as ReLU (the conservation
    argument needs a positively homogeneous activation; the clamp at 6 saturates every unit on
    this input, see ``synflow_relu6``). S spans tens of orders of magnitude over a space, hence
    the natural log.

    Overflow: with ReLU, no BN and bias-free convs, everything before the classifier is
    positively homogeneous of degree 1 in the input, and the backward is linear in its start
    gradient, so input c * 1 and start gradient c give exactly c**2 * S (the classifier bias adds
    a constant to R and nothing to dR/dW, residual adds included). When S overflows float64 the
    pass is repeated with c = 2**-256, 2**-512, 2**-768 in turn and ln(S) = ln(S_c) - 2 ln c
    (this reaches R up to about 1e539; the largest net of the default alphabets has S about
    1e124); if even that is not finite the score is NaN (the scorer records NaN with a warning).
    Exact for nets whose only non-linearities are ReLU/ReLU6. Per-layer rescaling would not be:
    a residual add mixes paths through different numbers of layers."""
    for k in SYNFLOW_RESCALE_EXPONENTS:
        s = synflow_sum(net, x, clamp6=False, scale=2.0 ** -k)
        if math.isfinite(s) and s > 0:
            return math.log(s) + 2 * k * math.log(2.0)
    return float("nan")


# ----- zico --------------------------------------------------------------------------------------
def zico_from_grads(per_batch: Sequence[Sequence[torch.Tensor | None]]) -> float:
    """ZiCo of per-batch weight gradients ``per_batch[b][l]`` (batch b, layer l): for each layer,
    over its weights with std_b(g) != 0, s_l = sum mean_b|g| / std_b(g) (std with ddof 0, as the
    authors' numpy code), score = sum over layers with s_l > 0 of ln(s_l). A layer without a
    gradient (unused) counts as all-zero gradients, so it contributes nothing."""
    if len(per_batch) < 2:
        raise ValueError(f"ZiCo needs gradients of at least 2 batches, got {len(per_batch)}")
    total = 0.0
    for layer in zip(*per_batch):
        ref = next((g for g in layer if g is not None), None)
        if ref is None:
            continue
        s = _inverse_cv_sum([(t if t is not None else torch.zeros_like(ref)).detach().reshape(-1).double()
                             for t in layer])
        if s > 0:
            total += math.log(s)
    return total


def _inverse_cv_sum(gs: Sequence[torch.Tensor]) -> float:
    """sum over positions with std != 0 of mean|g| / std(g) across the 1-d float64 tensors ``gs``
    (ddof 0), in a few elementwise passes (a reduction over a stacked leading axis is several
    times slower on the CPU)."""
    k = len(gs)
    mean = torch.zeros_like(gs[0])
    mean_abs = torch.zeros_like(gs[0])
    for t in gs:
        mean += t
        mean_abs += t.abs()
    mean /= k
    var = torch.zeros_like(mean)
    for t in gs:
        d = t - mean
        var.addcmul_(d, d)
    std = var.div_(k).sqrt_()
    ratio = mean_abs.div_(k).div_(std)
    return float(ratio[std != 0].sum())


def split_rows(n: int, parts: int) -> list[slice]:
    """``parts`` consecutive row ranges of a batch of ``n`` (sizes differ by at most 1, the later
    ones larger)."""
    edges = [n * i // parts for i in range(parts + 1)]
    return [slice(a, b) for a, b in zip(edges, edges[1:])]


@register("zico", min_batch=2 * ZICO_BATCHES)
def zico(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """ZiCo (Li, Yang, Bhardwaj, Marculescu, "ZiCo: Zero-shot NAS via Inverse Coefficient of
    Variation on Gradients", ICLR 2023): the proxy batch is split into ``ZICO_BATCHES`` = 2
    consecutive halves; each half gets its own train-mode forward and dL/dW of the mean
    cross-entropy; then :func:`zico_from_grads`, per Conv2d/Linear layer
    ln(sum over weights of mean|g| / std(g)), summed over layers. Larger is better.

    The authors' code calls ``loss.backward()`` per batch without zeroing the gradients, so its
    second "batch gradient" is the sum of both; here each half's gradient is its own
    (``torch.autograd.grad``, nothing accumulates), as the paper defines. Two half-batch passes
    cost about one forward + backward of the whole batch."""
    parts = split_rows(len(x), ZICO_BATCHES)
    if min(p.stop - p.start for p in parts) < 2:
        raise ValueError(f"config key 'proxies.batch_size' must be >= {2 * ZICO_BATCHES} for zico "
                         f"(at least 2 samples per batch for train-mode BN), got {len(x)}")
    net.train()
    ws = prunable_weights(net)
    grads = []
    with torch.enable_grad():
        for p in parts:
            loss = F.cross_entropy(net(x[p]), y[p])
            grads.append(torch.autograd.grad(loss, ws, allow_unused=True))
    return zico_from_grads(grads)


# ----- cost baselines ----------------------------------------------------------------------------
def count_macs(net: nn.Module, x: torch.Tensor) -> int:
    """Conv2d and Linear multiply-accumulates of one sample shaped like ``x[0]``, from forward
    hooks on the output shapes: conv out_h * out_w * out_ch * (in_ch / groups) * k_h * k_w,
    linear out * in (bias adds, BN, activations, adds and pooling are not MACs). BN is switched
    off for the pass (shapes do not depend on it), so the net's state is untouched."""
    total = [0]

    def hook(m: nn.Module, inputs, out: torch.Tensor) -> None:
        per_out = m.weight[0].numel()  # in/groups * k*k (conv) or in_features (linear)
        total[0] += int(out[0].numel()) * int(per_out)

    mods = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    handles = [m.register_forward_hook(hook) for m in mods]
    try:
        with torch.no_grad(), batchnorm_disabled(net):
            net(x[:1])
    finally:
        for h in handles:
            h.remove()
    return total[0]


@register("params", from_spec=True)
def params(net: nn.Module | NetSpec, x: torch.Tensor, y: torch.Tensor) -> float:
    """Number of trainable parameters (conv and linear weights, classifier bias, BN scale and
    shift). From a ``NetSpec``: the analytic count ``tinyevo.space.cost.cost_of(spec).params``
    (no torch net is built); from a net: the sum of its parameters' sizes (the same number,
    tested). Independent of the init."""
    if isinstance(net, NetSpec):
        return float(cost_of(net).params)
    return float(sum(p.numel() for p in net.parameters()))


@register("macs", from_spec=True)
def macs(net: nn.Module | NetSpec, x: torch.Tensor, y: torch.Tensor) -> float:
    """Conv + linear MACs per image. From a ``NetSpec``: the analytic count
    ``tinyevo.space.cost.cost_of(spec).macs`` (no torch net is built); from a net:
    :func:`count_macs` (a hooked 1-sample forward; the same number, tested). Independent of the
    init."""
    if isinstance(net, NetSpec):
        return float(cost_of(net).macs)
    return float(count_macs(net, x))


def compute(net: nn.Module, x: torch.Tensor, y: torch.Tensor, names: Iterable[str],
            registry: Mapping[str, object] | None = None) -> dict[str, float]:
    """All of ``names`` for one net with as few passes as the definitions allow: the built-in
    snip/jacob_cov/naswot/meco share one forward; the others run on their own."""
    from tinyevo.proxies.registry import PROXIES

    reg = PROXIES if registry is None else registry
    names = list(names)
    builtin = {"snip": snip, "jacob_cov": jacob_cov, "naswot": naswot, "meco": meco}
    shared = [n for n in names if n in builtin and reg.get(n) is builtin[n]]
    scores = fused_scores(net, x, y, shared) if shared else {}
    for n in names:
        if n not in scores:
            scores[n] = float(reg[n](net, x, y))  # type: ignore[operator]
    return {n: scores[n] for n in names}
