"""The unclamped synflow, ZiCo, MeCo and the params/macs baselines against plain, slow, independent
implementations (loops over layers, numpy), plus their registry wiring."""

from __future__ import annotations

import copy
import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import TINY
from tinyevo.config import load_config, load_schema
from tinyevo.proxies import MIN_BATCH, PROXIES, VERSIONS, build_net, check_names, compute, fused_scores
from tinyevo.proxies.measures import meco_layer, split_rows, synflow_sum, zico_from_grads
from tinyevo.space import space_from_config
from tinyevo.space.cost import cost_of

torch.set_num_threads(1)
NEW = ["synflow", "zico", "meco", "params", "macs"]


@pytest.fixture(scope="module")
def tiny_space(tmp_path_factory):
    from conftest import write_yaml

    p = write_yaml(tmp_path_factory.mktemp("cfg") / "tiny.yaml", TINY)
    cfg, _ = load_config([p])
    return space_from_config(cfg)


@pytest.fixture(scope="module")
def default_space():
    from conftest import REPO

    cfg, _ = load_config([REPO / "config" / "config.yaml"])
    return space_from_config(cfg)


def archs_of(space):
    return [a for _, a, _ in space.iter_arches()]


def some_default_archs(space, k=4):
    archs = archs_of(space)
    return [archs[i] for i in np.linspace(0, len(archs) - 1, k).astype(int)]


def batch(n=8, res=16, seed=0, classes=10):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, res, res, generator=g), torch.randint(0, classes, (n,), generator=g)


def conv_linear(net):
    return [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


# ----- plain implementations ------------------------------------------------------------------------
def plain_synflow_relu(net, x):
    """ln sum |W dR/dW| on a copy: BN modules replaced by Identity, ReLU6 by ReLU, float64 |params|."""
    net = copy.deepcopy(net)

    def swap(m):
        for name, child in m.named_children():
            if isinstance(child, nn.BatchNorm2d):
                setattr(m, name, nn.Identity())
            elif isinstance(child, nn.ReLU6):
                setattr(m, name, nn.ReLU())
            else:
                swap(child)

    swap(net)
    net = net.double()
    with torch.no_grad():
        for t in net.parameters():
            t.abs_()
    net.zero_grad()
    net(torch.ones((1, *x.shape[1:]), dtype=torch.float64)).sum().backward()
    total = 0.0
    for m in conv_linear(net):
        total += float((m.weight.grad * m.weight.detach()).abs().sum())
    return math.log(total)


def plain_grads(net, x, y, zero_between=True):
    """Per half of the batch, every conv/linear weight gradient as a numpy array (``.backward()``,
    zeroed between the halves unless ``zero_between`` is False: the authors' accumulation)."""
    net = copy.deepcopy(net).train()
    n = len(x)
    out = []
    net.zero_grad()
    for lo, hi in ((0, n // 2), (n // 2, n)):
        if zero_between:
            net.zero_grad()
        F.cross_entropy(net(x[lo:hi]), y[lo:hi]).backward()
        out.append([m.weight.grad.detach().numpy().astype(np.float64).ravel().copy() for m in conv_linear(net)])
    return out


def plain_zico(per_batch):
    total = 0.0
    for layer in range(len(per_batch[0])):
        g = np.stack([b[layer] for b in per_batch])
        std = np.std(g, axis=0)
        nz = np.nonzero(std)[0]
        s = np.sum(np.mean(np.abs(g), axis=0)[nz] / std[nz])
        if s != 0:
            total += np.log(s)
    return float(total)


def plain_meco(net, x):
    """Sum over Conv2d outputs of lambda_min(np.corrcoef) of sample 0, NaN -> 0, no shortcut."""
    net = copy.deepcopy(net).train()
    maps = []
    hs = [m.register_forward_hook(lambda m, i, o: maps.append(o[0].detach().numpy().astype(np.float64)))
          for m in net.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        net(x)
    for h in hs:
        h.remove()
    total = 0.0
    for f in maps:
        total += plain_meco_layer(f)
    return total, len(maps)


def plain_meco_layer(f):
    f = f.reshape(f.shape[0], -1)
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # 1-position maps: no degrees of freedom
        c = np.corrcoef(f)
    c = np.nan_to_num(np.atleast_2d(c), nan=0.0, posinf=0.0, neginf=0.0)
    return float(np.linalg.eigvalsh(c).min())


def plain_macs(net, x):
    """MACs per image from each layer's own arithmetic, tracking the spatial size by hand through
    the layers in module order (only convs change it in these nets)."""
    total = 0
    size = x.shape[-1]
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            k, s, p = m.kernel_size[0], m.stride[0], m.padding[0]
            size = (size + 2 * p - k) // s + 1
            total += size * size * m.out_channels * (m.in_channels // m.groups) * k * k
        elif isinstance(m, nn.Linear):
            total += m.in_features * m.out_features
    return total


# ----- synflow ----------------------------------------------------------------------------------------
def test_synflow_matches_plain_relu_implementation(tiny_space, default_space):
    x16, _ = batch(res=16)
    x32, _ = batch(res=32)
    nets = [(build_net(tiny_space, a, 3), x16) for a in archs_of(tiny_space)[::3]]
    nets += [(build_net(default_space, a, 1), x32) for a in some_default_archs(default_space, 3)]
    for net, x in nets:
        want = plain_synflow_relu(net, x)
        got = PROXIES["synflow"](net, x, None)
        assert math.isfinite(want) and got == pytest.approx(want, rel=1e-10)
        # the log of the unclamped raw sum, not the saturated one
        assert got == pytest.approx(math.log(synflow_sum(net, x, clamp6=False)), rel=1e-12)
        assert abs(got - math.log(PROXIES["synflow_relu6"](net, x, None))) > 1.0


def test_synflow_sees_the_body_and_synflow_relu6_does_not(default_space):
    """Same classifier, different bodies: the saturated score is equal, the fixed one is not."""
    x, _ = batch(res=32)
    a, b = (build_net(default_space, arch, 0) for arch in some_default_archs(default_space, 2))
    with torch.no_grad():
        b.classifier.weight.copy_(a.classifier.weight)
    assert PROXIES["synflow_relu6"](a, x, None) == pytest.approx(PROXIES["synflow_relu6"](b, x, None), rel=1e-9)
    assert abs(PROXIES["synflow"](a, x, None) - PROXIES["synflow"](b, x, None)) > 1.0


def test_synflow_rescaling_is_exact_and_rescues_an_overflow(default_space):
    """c * ones in, backward from c: exactly c**2 * S (residual adds included); a net whose S
    overflows float64 still gets ln S."""
    x, _ = batch(res=32)
    arch = next(a for a in archs_of(default_space) if any(b.residual for b in default_space.netspec(a).blocks))
    net = build_net(default_space, arch, 2)
    s1 = synflow_sum(net, x, clamp6=False)
    for k in (10, 256):
        assert synflow_sum(net, x, clamp6=False, scale=2.0 ** -k) * 4.0 ** k == pytest.approx(s1, rel=1e-12)
    # Every path from input to output crosses the stem, the head, the classifier and each conv of a
    # non-residual block, so multiplying such a layer's weights by lam multiplies S by lam exactly.
    big = copy.deepcopy(net)
    layers = [big.stem[0], big.head[0], big.classifier]
    layers += [m for blk in big.blocks if not blk.residual for m in blk.modules() if isinstance(m, nn.Conv2d)]
    assert len(layers) >= 12
    # S about 1e440 * S0: beyond float64, within the rescaling's reach; a power of 2, so the float32
    # weights are scaled exactly
    lam = 2.0 ** round(440 * math.log2(10) / len(layers))
    with torch.no_grad():
        for m in layers:
            m.weight.mul_(lam)
    assert not math.isfinite(synflow_sum(big, x, clamp6=False)), "the test needs a net that overflows float64"
    want = math.log(s1) + len(layers) * math.log(lam)
    assert PROXIES["synflow"](big, x, None) == pytest.approx(want, rel=1e-10)


# ----- zico -------------------------------------------------------------------------------------------
def test_zico_matches_plain_numpy_implementation(tiny_space, default_space):
    cases = [(tiny_space, a, batch(n=8, res=16, seed=2)) for a in archs_of(tiny_space)[::3]]
    cases += [(default_space, a, batch(n=12, res=32, seed=3)) for a in some_default_archs(default_space, 2)]
    for space, arch, (x, y) in cases:
        net = build_net(space, arch, 4)
        want = plain_zico(plain_grads(net, x, y))
        got = PROXIES["zico"](net, x, y)
        assert np.isfinite(want) and got == pytest.approx(want, rel=1e-9), arch
        # the authors' code accumulates the gradients of the batches: a different number
        assert abs(plain_zico(plain_grads(net, x, y, zero_between=False)) - got) > 1e-3 * abs(got)


def test_zico_statistic_by_hand():
    # one layer, 3 weights over 2 batches: std 0 for the last weight (skipped);
    # (|1| + |3|)/2 / 1 + (|-2| + |2|)/2 / 2 = 2 + 1 = 3
    g = [[torch.tensor([1.0, -2.0, 5.0])], [torch.tensor([3.0, 2.0, 5.0])]]
    assert zico_from_grads(g) == pytest.approx(math.log(3.0), rel=1e-12)
    # a layer whose gradients agree everywhere contributes nothing (no weight with std != 0)
    same = [[torch.ones(4), torch.tensor([1.0, 3.0])], [torch.ones(4), torch.tensor([3.0, 1.0])]]
    assert zico_from_grads(same) == pytest.approx(math.log(2 * 2.0), rel=1e-12)
    with pytest.raises(ValueError, match="at least 2 batches"):
        zico_from_grads(g[:1])
    assert [(s.start, s.stop) for s in split_rows(9, 2)] == [(0, 4), (4, 9)]


def test_zico_needs_two_samples_per_half(tiny_space):
    x, y = batch(n=3)
    net = build_net(tiny_space, archs_of(tiny_space)[0], 0)
    with pytest.raises(ValueError, match="proxies.batch_size"):
        PROXIES["zico"](net, x, y)
    assert MIN_BATCH["zico"] == 4
    with pytest.raises(ValueError, match="proxies.batch_size.*zico"):
        check_names(["snip", "zico"], batch_size=3)
    assert check_names(["snip", "zico"], batch_size=4) == ["snip", "zico"]


# ----- meco -------------------------------------------------------------------------------------------
def test_meco_matches_plain_numpy_implementation(tiny_space, default_space):
    cases = [(build_net(tiny_space, a, 6), batch(n=8, res=16, seed=5)[0]) for a in archs_of(tiny_space)[::3]]
    cases += [(build_net(default_space, a, 6), batch(n=4, res=32, seed=6)[0])
              for a in some_default_archs(default_space, 2)]
    for net, x in cases:
        want, layers = plain_meco(net, x)
        got = PROXIES["meco"](net, x, None)
        assert layers == sum(isinstance(m, nn.Conv2d) for m in net.modules())
        assert want > 0.05 and got == pytest.approx(want, rel=1e-7, abs=1e-9 * layers)


def test_meco_layer_cases():
    g = torch.Generator().manual_seed(0)
    for c, hw in ((3, 5), (6, 8), (16, 64)):
        f = torch.randn(c, hw, hw, generator=g)
        assert meco_layer(f) == pytest.approx(plain_meco_layer(f.numpy().astype(np.float64)), rel=1e-9, abs=1e-12)
    # more channels than positions - 1: exactly singular, the shortcut gives 0 where a solver gives round-off
    f = torch.randn(16, 4, 4, generator=g)
    assert meco_layer(f) == 0.0 and abs(plain_meco_layer(f.numpy().astype(np.float64))) < 1e-12
    # a constant channel: undefined correlation set to 0 -> lambda_min 0; a 1x1 map -> 0
    f = torch.randn(4, 6, 6, generator=g)
    f[2] = 0.7
    assert meco_layer(f) == 0.0 and abs(plain_meco_layer(f.numpy().astype(np.float64))) < 1e-12
    assert meco_layer(torch.randn(8, 1, 1, generator=g)) == 0.0
    assert meco_layer(torch.randn(1, 3, 3, generator=g)) == 1.0


def test_meco_reads_the_first_sample(tiny_space):
    x, y = batch(n=8, seed=7)
    arch = archs_of(tiny_space)[1]
    base = PROXIES["meco"](build_net(tiny_space, arch, 0), x, y)
    # other samples only enter through BN's batch statistics: swapping sample 0 changes the score
    x2 = x.clone()
    x2[[0, 1]] = x[[1, 0]]
    assert PROXIES["meco"](build_net(tiny_space, arch, 0), x2, y) != pytest.approx(base, rel=1e-6)


# ----- fused pass, registry, invariants ----------------------------------------------------------------
def test_meco_in_the_fused_pass_equals_alone(tiny_space):
    x, y = batch(n=8, seed=1)
    for arch in archs_of(tiny_space)[:3]:
        alone = {n: PROXIES[n](build_net(tiny_space, arch, 5), x, y) for n in ("snip", "meco", "naswot", "jacob_cov")}
        together = compute(build_net(tiny_space, arch, 5), x, y, ["meco", "snip", "naswot", "jacob_cov", "zico"])
        for n, v in alone.items():
            assert together[n] == pytest.approx(v, rel=1e-9), n
        only = fused_scores(build_net(tiny_space, arch, 5), x, y, ["meco"])["meco"]
        assert only == pytest.approx(alone["meco"], rel=1e-12)


def test_new_proxies_leave_the_net_unchanged(tiny_space):
    x, y = batch()
    net = build_net(tiny_space, archs_of(tiny_space)[2], 2)
    before = {k: v.clone() for k, v in net.state_dict().items() if "running" not in k and "num_batches" not in k}
    compute(net, x, y, NEW + ["synflow_relu6"])
    for k, v in net.state_dict().items():
        if k in before:
            assert torch.equal(v, before[k]), k
    assert all(p.grad is None and p.dtype == torch.float32 for p in net.parameters())
    assert not any("forward" in vars(m) for m in net.modules())
    assert all(isinstance(m, nn.ReLU6) for m in net.modules() if "ReLU" in type(m).__name__)


def test_registry_versions_and_schema_enum():
    assert VERSIONS["synflow"] == 2 and VERSIONS["synflow_relu6"] == 1
    schema = load_schema()["properties"]["proxies"]["properties"]
    listed = schema["names"]["items"]["enum"]
    assert set(listed) == set(PROXIES), "the schema enum of proxies.names must list every registered proxy"
    assert schema["informativeness"]["properties"]["names"]["items"]["enum"] == listed


# ----- params / macs ----------------------------------------------------------------------------------
def test_params_and_macs_equal_the_cost_model(tiny_space, default_space):
    cases = [(tiny_space, a, batch(n=4, res=16)) for a in archs_of(tiny_space)]
    cases += [(default_space, a, batch(n=4, res=32)) for a in some_default_archs(default_space, 6)]
    for space, arch, (x, y) in cases:
        c = cost_of(space.netspec(arch))
        nets = [build_net(space, arch, s) for s in (0, 1)]
        for net in nets:
            assert PROXIES["params"](net, x, y) == c.params
            assert PROXIES["macs"](net, x, y) == c.macs == plain_macs(net, x)
        # the scorer's path: the NetSpec alone, no net
        spec = space.netspec(arch)
        assert PROXIES["params"](spec, x, y) == sum(p.numel() for p in nets[0].parameters())
        assert PROXIES["macs"](spec, x, y) == plain_macs(nets[0], x)
    # another resolution and input channels (odd sizes through the strided convs)
    from conftest import REPO

    cfg, _ = load_config([REPO / "config" / "config.yaml"], overrides={"dataset": {"resolution": 40, "channels": 3}})
    space = space_from_config(cfg)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 40, 40, generator=g)
    for arch in some_default_archs(space, 3):
        net = build_net(space, arch, 0)
        c = cost_of(space.netspec(arch))
        assert PROXIES["macs"](net, x, None) == c.macs == plain_macs(net, x)
        assert PROXIES["params"](net, x, None) == c.params


def test_params_counts_every_parameter_and_only_those(tiny_space):
    net = build_net(tiny_space, archs_of(tiny_space)[0], 0)
    x, y = batch()
    n = sum(p.numel() for p in net.parameters())
    assert PROXIES["params"](net, x, y) == n
    buffers = sum(b.numel() for b in net.buffers())
    assert buffers > 0 and PROXIES["params"](net, x, y) != n + buffers


def test_spec_only_proxies_build_no_net(tiny_space, monkeypatch):
    """params and macs are registered from_spec: a set of only those builds no torch net; a set
    with naswot builds one net per scored arch; the values are those of the net path."""
    from tinyevo.proxies import FROM_SPEC, ProxyScorer, scorer

    assert {n for n, v in FROM_SPEC.items() if v} == {"params", "macs"}
    archs = archs_of(tiny_space)[:3]
    x, y = batch(n=8, res=16)
    built = []
    real = scorer.build_net

    def counting(*a, **kw):
        built.append(a[1])
        return real(*a, **kw)

    monkeypatch.setattr(scorer, "build_net", counting)
    df = ProxyScorer(tiny_space, ["params", "macs"], x, y, seed=0).score(archs)
    assert built == []
    for arch, p, m in zip(archs, df["params"], df["macs"]):
        net = real(tiny_space, arch, 0)
        assert p == PROXIES["params"](net, x, y) and m == PROXIES["macs"](net, x, y)
    both = ProxyScorer(tiny_space, ["naswot", "params"], x, y, seed=0).score(archs)
    assert built == archs
    assert both["params"].tolist() == df["params"].tolist()
    assert both["naswot"].tolist() == [PROXIES["naswot"](real(tiny_space, a, 0), x, y) for a in archs]
