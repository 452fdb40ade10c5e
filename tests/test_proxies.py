"""Zero-cost proxies against plain reference implementations, the fused pass, the saturated
synflow_relu6, determinism, the score cache and bad input."""

from __future__ import annotations

import copy
import logging
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import REPO, TINY
from tinyevo.config import load_config
from tinyevo.proxies import (PROXIES, ProxyScorer, ScoreCache, batch_fingerprint, build_net, compute,
                             fused_scores, net_seed, register)
from tinyevo.proxies.measures import jacob_cov_from_grad
from tinyevo.space import space_from_config

torch.set_num_threads(1)
ALL = ["snip", "synflow_relu6", "jacob_cov", "naswot"]  # the new proxies: test_proxies_new.py


@pytest.fixture(scope="module")
def space(tmp_path_factory):
    from conftest import write_yaml

    p = write_yaml(tmp_path_factory.mktemp("cfg") / "tiny.yaml", TINY)
    cfg, _ = load_config([p])
    return space_from_config(cfg)


@pytest.fixture(scope="module")
def archs(space):
    return [a for _, a, _ in space.iter_arches()]


def batch(n=8, res=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, res, res, generator=g), torch.randint(0, 10, (n,), generator=g)


# ----- plain, obviously-correct implementations ---------------------------------------------------
def layers_w(net):
    return [m.weight for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def plain_snip(net, x, y):
    net = copy.deepcopy(net).train()
    net.zero_grad()
    F.cross_entropy(net(x), y).backward()
    return sum(float((w.grad * w.detach()).abs().sum()) for w in layers_w(net))


def plain_synflow(net, x):
    net = copy.deepcopy(net)

    def strip_bn(m):
        for name, child in m.named_children():
            if isinstance(child, nn.BatchNorm2d):
                setattr(m, name, nn.Identity())
            else:
                strip_bn(child)

    strip_bn(net)
    net = net.double()
    with torch.no_grad():
        for t in list(net.parameters()) + list(net.buffers()):
            if t.is_floating_point():
                t.abs_()
    net.zero_grad()
    net(torch.ones((1, *x.shape[1:]), dtype=torch.float64)).sum().backward()
    return sum(float((w.grad * w.detach()).abs().sum()) for w in layers_w(net))


def plain_jacob_cov(net, x):
    net = copy.deepcopy(net).train()
    xx = x.clone().requires_grad_(True)
    out = net(xx)
    out.backward(torch.ones_like(out))
    j = xx.grad.reshape(len(x), -1).numpy().astype(np.float64)
    v = np.linalg.eigvalsh(np.corrcoef(j))
    return float(-np.sum(np.log(v + 1e-5) + 1.0 / (v + 1e-5)))


def plain_naswot(net, x):
    net = copy.deepcopy(net).train()
    codes = []
    hs = [m.register_forward_hook(lambda m, i, o: codes.append((i[0].reshape(len(x), -1) > 0).numpy().astype(np.float64)))
          for m in net.modules() if isinstance(m, (nn.ReLU, nn.ReLU6))]
    with torch.no_grad():
        net(x)
    for h in hs:
        h.remove()
    k = np.zeros((len(x), len(x)))
    for c in codes:
        k += c @ c.T + (1 - c) @ (1 - c).T
    return float(np.linalg.slogdet(k)[1])


def plain(name, net, x, y):
    return {"snip": lambda: plain_snip(net, x, y), "synflow_relu6": lambda: plain_synflow(net, x),
            "jacob_cov": lambda: plain_jacob_cov(net, x), "naswot": lambda: plain_naswot(net, x)}[name]()


# ----- proxy values ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ALL)
def test_proxy_matches_plain_implementation(space, archs, name):
    x, y = batch()
    for arch in (archs[0], archs[-1]):
        net = build_net(space, arch, seed=3)
        want = plain(name, net, x, y)
        got = PROXIES[name](net, x, y)
        assert np.isfinite(want)
        assert got == pytest.approx(want, rel=1e-6), (name, arch)


def authors_kernel(net, x):
    """NASWOT's K as the authors write it: per ReLU input, C = (input > 0), K += C C^T + (1-C)(1-C)^T."""
    codes = []
    hs = [m.register_forward_hook(lambda m, i, o: codes.append((i[0].reshape(len(x), -1) > 0).double().numpy()))
          for m in net.modules() if isinstance(m, (nn.ReLU, nn.ReLU6))]
    with torch.no_grad():
        net(x)
    for h in hs:
        h.remove()
    return sum(c @ c.T + (1 - c) @ (1 - c).T for c in codes)


@pytest.mark.parametrize("float64_codes", [False, True])
def test_naswot_kernel_equals_the_authors_sum_exactly(space, archs, monkeypatch, float64_codes):
    """The hooks' K (one comparison and one product per layer, diag and D applied once) is the
    authors' per-layer sum entry by entry, in the float32 and the float64 code path; an input
    exactly 0 codes as 0 (ties that differ between samples: a {-1, 0, 1} input to a bare ReLU)."""
    from tinyevo.proxies import measures

    if float64_codes:
        monkeypatch.setattr(measures, "NASWOT_FLOAT32_MAX_D", 1)
    g = torch.Generator().manual_seed(0)
    ties = torch.randint(-1, 2, (10, 3, 5, 5), generator=g).float()
    cases = [(nn.Sequential(nn.Identity(), nn.ReLU(), nn.Flatten(), nn.Linear(75, 4), nn.ReLU6()), ties)]
    x, _ = batch(n=10, seed=2)
    cases += [(build_net(space, arch, seed=4), x) for arch in (archs[0], archs[-1])]
    for net, inp in cases:
        want = authors_kernel(copy.deepcopy(net), inp)
        kern = measures._NaswotKernel(net, len(inp), inp.device)
        with torch.inference_mode():
            net(inp)
        kern.remove()
        got = kern.kernel()
        assert got.dtype == torch.float64 and np.array_equal(got.numpy(), want)
        assert kern.score() == pytest.approx(float(np.linalg.slogdet(want)[1]), rel=1e-12)


def test_fused_pass_equals_each_proxy_alone(space, archs):
    x, y = batch(seed=1)
    for arch in archs[:3]:
        alone = {n: PROXIES[n](build_net(space, arch, 5), x, y) for n in ALL}
        together = compute(build_net(space, arch, 5), x, y, ALL)
        assert list(together) == ALL
        for n in ALL:
            assert together[n] == pytest.approx(alone[n], rel=1e-6), n
        pair = fused_scores(build_net(space, arch, 5), x, y, ["jacob_cov", "snip"])
        assert pair["snip"] == pytest.approx(alone["snip"], rel=1e-6)


def test_proxies_leave_weights_unchanged(space, archs):
    x, y = batch()
    net = build_net(space, archs[1], 2)
    before = {k: v.clone() for k, v in net.named_parameters()}
    compute(net, x, y, ALL)
    for k, v in net.named_parameters():
        assert v.dtype == torch.float32 and torch.equal(v, before[k]), k
        assert v.grad is None
    assert not any(hasattr(m, "forward") and "forward" in vars(m) for m in net.modules())


def test_jacob_cov_upper_bound(space, archs):
    n = 12
    x, y = batch(n=n, seed=4)
    for arch in archs[:4]:
        s = PROXIES["jacob_cov"](build_net(space, arch, 0), x, y)
        assert s <= -n + 1e-3
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        assert jacob_cov_from_grad(torch.randn(n, 3, 4, 4, generator=g)) <= -n + 1e-3
    # identical Jacobian rows: all correlation 1 -> one eigenvalue n, far below the bound
    assert jacob_cov_from_grad(torch.ones(n, 1) * torch.randn(1, 20, generator=g)) < -n - 1e4


def test_synflow_relu6_saturation(space, archs):
    """The saturated synflow (registry name synflow_relu6): with |W|, BN off and an all-ones
    input, every ReLU6 in the head saturates at 6, so it is 6 * sum |W_classifier| whatever the
    body."""
    x, _ = batch()
    a = build_net(space, archs[0], 0)
    b = build_net(space, archs[-1], 7)
    assert len(a.blocks) != len(b.blocks)
    with torch.no_grad():
        b.classifier.weight.copy_(a.classifier.weight)
        b.classifier.bias.copy_(a.classifier.bias)
    sa, sb = PROXIES["synflow_relu6"](a, x, None), PROXIES["synflow_relu6"](b, x, None)
    expected = 6.0 * float(a.classifier.weight.detach().double().abs().sum())
    assert sa == pytest.approx(expected, rel=1e-9)
    assert sb == pytest.approx(expected, rel=1e-9)

    # Without the saturation (plain ReLU) the body matters and the two nets differ.
    def relu(net):
        net = copy.deepcopy(net)
        for m in list(net.modules()):
            for name, child in m.named_children():
                if isinstance(child, nn.ReLU6):
                    setattr(m, name, nn.ReLU())
        return net

    ra, rb = PROXIES["synflow_relu6"](relu(a), x, None), PROXIES["synflow_relu6"](relu(b), x, None)
    assert ra > 10 * expected and abs(ra - rb) > 1e-3 * ra


def test_net_init_is_seeded_by_seed_and_arch(space, archs):
    w = lambda net: net.stem[0].weight.detach().clone()  # noqa: E731
    assert torch.equal(w(build_net(space, archs[0], 1)), w(build_net(space, archs[0], 1)))
    assert not torch.equal(w(build_net(space, archs[0], 1)), w(build_net(space, archs[0], 2)))
    assert not torch.equal(w(build_net(space, archs[0], 1)), w(build_net(space, archs[1], 1)))
    torch.manual_seed(123)
    r0 = torch.rand(1)
    torch.manual_seed(123)
    build_net(space, archs[0], 1)
    assert torch.equal(torch.rand(1), r0), "building a net must not disturb the caller's torch RNG"
    # sha256-based, not Python's salted hash(): the same in another process
    code = textwrap.dedent(f"""
        import sys; sys.path.insert(0, {str(REPO / 'workflow')!r})
        from tinyevo.proxies.scorer import net_seed; print(net_seed(1, {archs[0]!r}))""")
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={"PYTHONHASHSEED": "12345", "PATH": "/usr/bin:/bin"})
    assert int(other.stdout.strip()) == net_seed(1, archs[0])


def test_scores_independent_of_order_and_shard(space, archs, tmp_path):
    x, y = batch()
    full = ProxyScorer(space, ALL, x, y, seed=1).score(archs)
    parts = [ProxyScorer(space, ALL, x, y, seed=1).score(archs[i::3][::-1]) for i in range(3)]
    merged = pd.concat(parts).set_index("arch").loc[archs].reset_index()
    pd.testing.assert_frame_equal(full, merged)
    assert list(full.columns) == ["arch", *ALL, "cache_hit"]
    assert full[ALL].dtypes.eq("float64").all() and not full["cache_hit"].any()
    dup = ProxyScorer(space, ["snip"], x, y, seed=1).score([archs[0], archs[0]])
    assert len(dup) == 2 and dup["snip"].iloc[0] == dup["snip"].iloc[1] == full["snip"].iloc[0]


# ----- cache ------------------------------------------------------------------------------------------
def test_cache_hits_and_misses_by_key(space, archs, tmp_path):
    x, y = batch(n=8)
    cache = tmp_path / "cache"
    some = archs[:3]
    first = ProxyScorer(space, ["snip", "naswot"], x, y, 1, cache_dir=cache).score(some)
    assert not first["cache_hit"].any()
    s2 = ProxyScorer(space, ["snip", "naswot"], x, y, 1, cache_dir=cache)
    again = s2.score(some)
    assert again["cache_hit"].all() and (s2.hits, s2.misses) == (3, 0)
    pd.testing.assert_frame_equal(first.drop(columns="cache_hit"), again.drop(columns="cache_hit"))
    assert ProxyScorer(space, ["naswot"], x, y, 1, cache_dir=cache).score(some)["cache_hit"].all()
    # each of these changes a key part: batch size, batch content, seed, proxy set
    assert not ProxyScorer(space, ["snip"], x[:6], y[:6], 1, cache_dir=cache).score(some)["cache_hit"].any()
    x2 = x.clone()
    x2[0, 0, 0, 0] += 1e-3
    assert not ProxyScorer(space, ["snip"], x2, y, 1, cache_dir=cache).score(some)["cache_hit"].any()
    assert not ProxyScorer(space, ["snip"], x, y, 2, cache_dir=cache).score(some)["cache_hit"].any()
    partial = ProxyScorer(space, ["snip", "synflow"], x, y, 1, cache_dir=cache)
    got = partial.score(some)
    assert not got["cache_hit"].any() and np.allclose(got["snip"], first["snip"], rtol=0, atol=0)
    assert batch_fingerprint(x, y) != batch_fingerprint(x2, y)
    assert batch_fingerprint(x, y) != batch_fingerprint(x, y.flip(0))


def test_deferred_flush_writes_every_flush_every_nets_and_on_request(space, archs, tmp_path):
    x, y = batch(n=8)
    cache = tmp_path / "cache"
    s = ProxyScorer(space, ["params", "macs"], x, y, 1, cache_dir=cache, flush_every=3)
    for a in archs[:2]:
        s.score([a], flush=False)
    assert len(ScoreCache(cache)) == 0 and s.cache.pending == 4
    s.score([archs[2]], flush=False)  # the third computed net reaches flush_every
    assert len(ScoreCache(cache)) == 6 and s.cache.pending == 0
    s.score([archs[3]], flush=False)
    assert len(ScoreCache(cache)) == 6
    s.flush()
    assert len(ScoreCache(cache)) == 8 and len(list(cache.glob("*.parquet"))) == 2
    s.score([archs[4]])  # the default flushes at the end of the call
    assert len(ScoreCache(cache)) == 10


def test_cache_two_writers_union_and_ignored_temp_files(tmp_path):
    a, b = ScoreCache(tmp_path), ScoreCache(tmp_path)
    a.put("k1", 1.0, arch="a1", proxy="snip")
    b.put("k2", float("nan"), arch="a2", proxy="snip")
    assert "k2" not in a and a.get("k1") == 1.0
    b.flush()
    a.flush()
    (tmp_path / ".part-x.parquet.tmp.parquet").write_bytes(b"half written by a killed job")
    assert a.refresh() == 1 and np.isnan(a.get("k2"))
    c = ScoreCache(tmp_path)
    assert set(c.keys()) == {"k1", "k2"} and len(c.table()) == 2
    c.put("k3", 3.0)
    c.compact()
    parts = [p for p in tmp_path.glob("*.parquet") if not p.name.startswith(".")]
    assert len(parts) == 1 and set(ScoreCache(tmp_path).keys()) == {"k1", "k2", "k3"}


def test_cache_concurrent_processes(tmp_path):
    code = textwrap.dedent(f"""
        import sys; sys.path.insert(0, {str(REPO / 'workflow')!r})
        from tinyevo.proxies.cache import ScoreCache
        w = sys.argv[1]; c = ScoreCache(sys.argv[2])
        for i in range(60):
            c.put(f"{{w}}-{{i}}", float(i))
            if i % 7 == 0:
                c.flush()
        c.flush()""")
    procs = [subprocess.Popen([sys.executable, "-c", code, w, str(tmp_path)]) for w in ("p", "q")]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    c = ScoreCache(tmp_path)
    assert len(c) == 120 and c.get("q-59") == 59.0


def test_cache_survives_interrupted_scoring(space, archs, tmp_path):
    x, y = batch()
    s = ProxyScorer(space, ["snip"], x, y, 1, cache_dir=tmp_path, flush_every=2)
    with pytest.raises(ValueError, match="architecture string"):
        s.score(archs[:3] + ["not-an-arch"] + archs[3:])
    again = ProxyScorer(space, ["snip"], x, y, 1, cache_dir=tmp_path).score(archs[:4])
    assert again["cache_hit"].tolist() == [True, True, True, False]
    assert len([p for p in tmp_path.glob("part-*.parquet")]) >= 2


# ----- non-finite scores and bad input -----------------------------------------------------------------
def test_non_finite_score_is_nan_and_logged(space, archs, caplog):
    @register("test_inf")
    def test_inf(net, x, y):
        return float("inf")

    try:
        x, y = batch()
        with caplog.at_level(logging.WARNING):
            df = ProxyScorer(space, ["snip", "test_inf"], x, y, 1).score(archs[:2])
        assert df["test_inf"].isna().all() and df["snip"].notna().all()
        assert archs[1] in caplog.text and "non-finite" in caplog.text
    finally:
        PROXIES.pop("test_inf")


def test_bad_input_errors(space, archs):
    x, y = batch()
    with pytest.raises(ValueError, match="proxies.names"):
        ProxyScorer(space, ["snip", "nope"], x, y, 1)
    with pytest.raises(ValueError, match="proxies.names"):
        ProxyScorer(space, [], x, y, 1)
    with pytest.raises(ValueError, match="sample shape"):
        ProxyScorer(space, ["snip"], torch.zeros(4, 3, 16, 16), y[:4], 1)
    with pytest.raises(ValueError, match="labels"):
        ProxyScorer(space, ["snip"], x, y + 10, 1)
    with pytest.raises(ValueError, match="batch_size"):
        ProxyScorer(space, ["snip"], x[:1], y[:1], 1)
    empty = ProxyScorer(space, ["snip"], x, y, 1).score([])
    assert list(empty.columns) == ["arch", "snip", "cache_hit"] and len(empty) == 0


# ----- the shared data batch ----------------------------------------------------------------------------
def test_make_batch_is_seeded_normalised_and_checked(tmp_path):
    from tinyevo.proxies import make_batch

    rng = np.random.default_rng(0)
    xs = rng.integers(0, 256, (40, 16, 16, 1), dtype=np.uint8)
    ys = rng.integers(0, 10, 40).astype(np.int64)
    np.save(tmp_path / "train_x.npy", xs)
    np.save(tmp_path / "train_y.npy", ys)
    pd.DataFrame({"channel": [0], "mean": [0.5], "std": [0.25]}).to_parquet(tmp_path / "stats.parquet")
    x, y = make_batch(tmp_path, 8, seed=3)
    assert x.shape == (8, 1, 16, 16) and x.dtype == torch.float32 and y.dtype == torch.int64
    x2, y2 = make_batch(tmp_path, 8, seed=3)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    assert batch_fingerprint(x, y) != batch_fingerprint(*make_batch(tmp_path, 8, seed=4))
    # every sample is a distinct training image, normalised with the train stats
    raw = torch.from_numpy(xs).permute(0, 3, 1, 2).float() / 255
    idx = [int(torch.nonzero(((raw - 0.5) / 0.25 - s).abs().amax(dim=(1, 2, 3)) < 1e-5)[0]) for s in x]
    assert len(set(idx)) == 8 and torch.equal(y, torch.from_numpy(ys[idx]))
    with pytest.raises(ValueError, match="proxies.batch_size"):
        make_batch(tmp_path, 41, seed=0)
    with pytest.raises(ValueError, match="not found"):
        make_batch(tmp_path / "nope", 8, seed=0)


def test_scores_independent_of_the_callers_thread_count(space, archs):
    """The scorer pins torch's intra-op threads to its own ``threads`` (``scoring.threads``) while
    it computes, so a job's thread count (Snakemake scales it to --cores) cannot change a score:
    on the CPU the last bits of snip and jacob_cov depend on the intra-op thread count."""
    x, y = batch(n=32)
    ambient = torch.get_num_threads()
    try:
        got = {}
        for outer in (1, 3):
            torch.set_num_threads(outer)
            got[outer] = ProxyScorer(space, ALL, x, y, 1, threads=1).score(archs[:6])
            assert torch.get_num_threads() == outer, "the caller's thread count is restored"
        pd.testing.assert_frame_equal(got[1], got[3], check_exact=True)
        three = ProxyScorer(space, ALL, x, y, 1, threads=3)
        assert three.settings["snip"] != ProxyScorer(space, ALL, x, y, 1).settings["snip"]
    finally:
        torch.set_num_threads(ambient)


def test_thread_count_is_part_of_the_cache_identity(space, archs, tmp_path):
    x, y = batch(n=8)
    ProxyScorer(space, ["snip"], x, y, 1, cache_dir=tmp_path, threads=1).score(archs[:2])
    assert ProxyScorer(space, ["snip"], x, y, 1, cache_dir=tmp_path, threads=1).score(archs[:2])["cache_hit"].all()
    assert not ProxyScorer(space, ["snip"], x, y, 1, cache_dir=tmp_path, threads=2).score(archs[:2])["cache_hit"].any()
    with pytest.raises(ValueError, match="scoring.threads"):
        ProxyScorer(space, ["snip"], x, y, 1, threads=0)
