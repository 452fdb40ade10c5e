"""Registry of zero-cost proxies: ``PROXIES`` maps a name to ``fn(net, x, y) -> float``.

A proxy function receives a freshly initialised net (train mode, on the device of ``x``), the
shared data batch ``x`` (float32 NCHW) and its labels ``y`` (int64), and returns one float. It
must not change the net's weights. New proxies plug in by name::

    @register("my_proxy")
    def my_proxy(net, x, y):
        ...

Built in (``tinyevo.proxies.measures``, larger is better for all): ``snip``, ``synflow`` (ln of
the unclamped synaptic flow), ``synflow_relu6`` (the saturated raw sum of the zero-cost-nas code),
``jacob_cov``, ``naswot``, ``zico``, ``meco``, and the cost baselines ``params`` and ``macs``
(registered ``from_spec=True``: computed from the ``NetSpec``, no net built).
"""

from __future__ import annotations

from importlib import import_module
from typing import Callable, Dict

import torch

ProxyFn = Callable[[torch.nn.Module, torch.Tensor, torch.Tensor], float]

PROXIES: Dict[str, ProxyFn] = {}

# Bump a proxy's version when its computation changes: the version is part of the cache key, so
# old cached scores then miss instead of being served.
VERSIONS: Dict[str, int] = {}

#: smallest data batch a proxy can work with (ZiCo splits the batch in halves of >= 2 samples).
MIN_BATCH: Dict[str, int] = {}

#: proxies that are a function of the architecture alone: ``fn`` also accepts the ``NetSpec`` in
#: place of the net, and the scorer passes the spec (no torch net is built for them).
FROM_SPEC: Dict[str, bool] = {}


def register(name: str, version: int = 1, min_batch: int = 2,
             from_spec: bool = False) -> Callable[[ProxyFn], ProxyFn]:
    """Decorator adding ``fn`` to :data:`PROXIES` under ``name`` (``version``: part of the score
    cache key; ``min_batch``: the smallest batch it accepts, see :func:`check_names`;
    ``from_spec``: ``fn(spec, x, y)`` with the ``NetSpec`` gives the same value as with the net,
    see :data:`FROM_SPEC`)."""
    if not isinstance(name, str) or not name:
        raise ValueError("proxy name must be a non-empty string")

    def deco(fn: ProxyFn) -> ProxyFn:
        if name in PROXIES and PROXIES[name] is not fn:
            raise ValueError(f"proxy {name!r} is already registered")
        PROXIES[name] = fn
        VERSIONS[name] = int(version)
        MIN_BATCH[name] = int(min_batch)
        FROM_SPEC[name] = bool(from_spec)
        fn.proxy_name = name  # type: ignore[attr-defined]
        return fn

    return deco


def check_names(names, batch_size: int | None = None) -> list[str]:
    """Validate a list of proxy names against the registry (clear error naming the config key);
    with ``batch_size``, also that every proxy accepts a batch that large."""
    names = list(names)
    if not names:
        raise ValueError("config key 'proxies.names' is empty: name at least one proxy")
    unknown = [n for n in names if n not in PROXIES]
    if unknown:
        raise ValueError(f"config key 'proxies.names': unknown proxies {unknown}; registered: {sorted(PROXIES)}")
    if len(set(names)) != len(names):
        raise ValueError(f"config key 'proxies.names' has duplicates: {names}")
    if batch_size is not None:
        small = {n: MIN_BATCH.get(n, 2) for n in names if int(batch_size) < MIN_BATCH.get(n, 2)}
        if small:
            raise ValueError(f"config key 'proxies.batch_size' = {batch_size} is too small for {sorted(small)}: "
                             f"they need at least {max(small.values())} samples")
    return names


# The built-in proxies register themselves when their module is imported; importing it here makes
# the registry complete whichever module is imported first (measures imports this module at its
# top, and import_module returns the partly executed module in that case).
import_module("tinyevo.proxies.measures")
