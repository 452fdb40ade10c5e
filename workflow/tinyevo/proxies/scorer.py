"""Score architecture strings with a set of proxies, through the score cache.

Each net is built from ``space.netspec(arch)`` with torch's RNG seeded from sha256(seed, arch)
(on the CPU, then moved to the device), and every proxy computation runs with the scorer's fixed
number of torch intra-op threads (``threads``, the config key ``scoring.threads``), so a net's
scores are the same in any shard, order, process or stage, whatever the job's thread count. On the
CPU the last bits of snip and jacob_cov depend on the intra-op thread count (oneDNN splits its
reductions by thread; measured at 0.2 % on a default net between 1 and 2 threads), so the thread
count and the device type are part of a score's cache identity.

Per net the scorer does only what the proxy set needs: proxies registered ``from_spec``
(``params``, ``macs``) are computed from the NetSpec's analytic cost model, and the torch net is
built (and initialised) only when some other proxy is missing from the cache; the
snip/jacob_cov/naswot/meco subset shares one forward pass (``measures.compute``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from typing import Sequence

import pandas as pd
import torch

from tinyevo.proxies.batch import batch_fingerprint
from tinyevo.proxies.cache import ScoreCache, cache_key
from tinyevo.proxies.measures import compute
from tinyevo.proxies.registry import FROM_SPEC, PROXIES, VERSIONS, check_names

log = logging.getLogger("tinyevo.proxies")


def net_seed(seed: int, arch: str) -> int:
    """A 63-bit torch seed from (seed, arch) via sha256 (stable across processes, unlike hash())."""
    d = hashlib.sha256(f"tinyevo-proxy-init\x1f{int(seed)}\x1f{arch}".encode()).digest()
    return int.from_bytes(d[:8], "big") & (2**63 - 1)


def spec_hash(spec) -> str:
    return hashlib.sha256(spec.to_json().encode()).hexdigest()[:20]


def build_net(space, arch: str, seed: int, device: torch.device | str = "cpu", spec=None) -> torch.nn.Module:
    """The freshly initialised torch net of ``arch``, seeded from (seed, arch), in train mode
    (``spec``: ``space.netspec(arch)`` when the caller has it already)."""
    from tinyevo.space.torch_model import build_torch

    spec = space.netspec(arch) if spec is None else spec
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(net_seed(seed, arch))
        net = build_torch(spec)
    return net.to(device).train()


class ProxyScorer:
    """``ProxyScorer(space, names, x, y, seed, device, cache_dir).score(archs) -> DataFrame``
    with columns ``arch``, one float column per proxy (NaN when non-finite) and ``cache_hit``
    (every proxy of the net came from the cache)."""

    def __init__(self, space, names: Sequence[str], x: torch.Tensor, y: torch.Tensor, seed: int,
                 device: str | torch.device = "cpu", cache_dir: str | os.PathLike | None = None,
                 flush_every: int = 16, threads: int = 1):
        from tinyevo.runtime import pick_device

        self.space = space
        self.names = check_names(names, len(x) if isinstance(x, torch.Tensor) else None)
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            raise ValueError(f"proxy batch x must be a 4-d NCHW tensor, got {getattr(x, 'shape', type(x))}")
        if not isinstance(y, torch.Tensor) or y.dim() != 1 or len(y) != len(x):
            raise ValueError("proxy batch y must be a 1-d tensor with one label per sample of x")
        if len(x) < 2:
            raise ValueError(f"config key 'proxies.batch_size' must be >= 2, got a batch of {len(x)}")
        expect = (space.in_channels, space.resolution, space.resolution)
        if tuple(x.shape[1:]) != expect:
            raise ValueError(f"proxy batch has sample shape {tuple(x.shape[1:])}, the search space expects {expect}")
        if int(y.max()) >= space.num_classes or int(y.min()) < 0:
            raise ValueError(f"proxy batch labels must be in [0, {space.num_classes}), got {int(y.min())}..{int(y.max())}")
        self.seed = int(seed)
        self.device = device if isinstance(device, torch.device) else pick_device(str(device))
        if int(threads) < 1:
            raise ValueError(f"config key 'scoring.threads' must be >= 1, got {threads}")
        self.threads = int(threads)
        # what a score's last bits depend on besides net, batch and seed
        compute_id = f"cpu/{self.threads}" if self.device.type == "cpu" else self.device.type
        self.fingerprint = batch_fingerprint(x, y)
        self.x = x.detach().to(self.device, torch.float32)
        self.y = y.detach().to(self.device, torch.int64)
        self.settings = {
            n: json.dumps({"proxy": n, "version": VERSIONS.get(n, 1), "batch_size": int(len(x)),
                           "sample_shape": list(x.shape[1:]), "seed": self.seed, "compute": compute_id},
                       sort_keys=True)
            for n in self.names
        }
        self.cache = ScoreCache(cache_dir) if cache_dir is not None else None
        self.flush_every = max(1, int(flush_every))
        self._since_flush = 0  # nets computed since the cache's last flush
        self.hits = 0     # nets whose every proxy came from the cache (cumulative)
        self.misses = 0   # nets with at least one proxy computed

    def flush(self) -> None:
        """Write the pending new scores to the cache (one part file; nothing when none)."""
        if self.cache is not None:
            self.cache.flush()
        self._since_flush = 0

    def _keys(self, arch: str, net: str) -> dict[str, str]:
        return {n: cache_key(arch, net, n, self.settings[n], self.fingerprint) for n in self.names}

    def score_net(self, arch: str, names: Sequence[str] | None = None, spec=None) -> dict[str, float]:
        """Compute (no cache) ``names`` for one arch; non-finite -> NaN with a warning."""
        names = list(self.names if names is None else names)
        spec = self.space.netspec(arch) if spec is None else spec
        ambient = torch.get_num_threads()
        if ambient != self.threads:
            torch.set_num_threads(self.threads)
        try:
            raw = self._compute(arch, names, spec)
        finally:
            if ambient != self.threads:
                torch.set_num_threads(ambient)
        out = {}
        for n in names:
            v = float(raw[n])
            if not math.isfinite(v):
                log.warning("proxy %s is non-finite (%r) for arch %s: recorded as NaN", n, v, arch)
                v = float("nan")
            out[n] = v
        return out

    def _compute(self, arch: str, names: list[str], spec) -> dict[str, float]:
        """Spec-only proxies from ``spec``; the net is built only for the others."""
        raw = {n: float(PROXIES[n](spec, self.x, self.y)) for n in names if FROM_SPEC.get(n, False)}
        rest = [n for n in names if n not in raw]
        if not rest:
            return raw
        net = build_net(self.space, arch, self.seed, self.device, spec=spec)
        try:
            raw.update(compute(net, self.x, self.y, rest, PROXIES))
        except torch.linalg.LinAlgError as exc:
            log.warning("proxy linear algebra failed for arch %s (%s): recorded as NaN", arch, exc)
            for n in rest:
                try:
                    raw[n] = compute(net, self.x, self.y, [n], PROXIES)[n]
                except torch.linalg.LinAlgError:
                    raw[n] = float("nan")
        return raw

    def score(self, archs: Sequence[str], progress: bool = False, flush: bool = True) -> pd.DataFrame:
        """Scores of ``archs`` (cache first). New scores are written to the cache every
        ``flush_every`` computed nets and, with ``flush`` (the default), at the end of the call;
        a caller scoring a few nets per call (the evolution) may pass ``flush=False`` and call
        :meth:`flush` when done: a part file per call costs more than a small net's proxies."""
        archs = list(archs)
        if self.cache is not None:
            self.cache.refresh()
        done: dict[str, tuple[dict[str, float], bool]] = {}
        unique = list(dict.fromkeys(archs))
        it = unique
        if progress:
            from tinyevo.runtime import progress as pbar

            it = pbar(unique, desc="proxies", unit="net")
        try:
            for arch in it:
                if not isinstance(arch, str):
                    raise ValueError(f"architecture must be a string, got {arch!r}")
                spec = self.space.netspec(arch)
                net = spec_hash(spec)
                keys = self._keys(arch, net)
                vals: dict[str, float] = {}
                if self.cache is not None:
                    for n, k in keys.items():
                        if k in self.cache:
                            vals[n] = self.cache.get(k)
                missing = [n for n in self.names if n not in vals]
                if missing:
                    new = self.score_net(arch, missing, spec=spec)
                    vals.update(new)
                    if self.cache is not None:
                        for n in missing:
                            self.cache.put(keys[n], new[n], arch=arch, net=net, proxy=n,
                                           settings=self.settings[n], fingerprint=self.fingerprint)
                        self._since_flush += 1
                        if self._since_flush >= self.flush_every:
                            self.flush()
                    self.misses += 1
                else:
                    self.hits += 1
                done[arch] = (vals, not missing)
        finally:
            if flush:
                self.flush()
        rows = [{"arch": a, **{n: done[a][0][n] for n in self.names}, "cache_hit": done[a][1]} for a in archs]
        df = pd.DataFrame(rows, columns=["arch", *self.names, "cache_hit"])
        df = df.astype({**{n: "float64" for n in self.names}, "cache_hit": "bool"})
        return df
