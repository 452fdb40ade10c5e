"""Zero-cost proxies (see ``tinyevo.proxies.measures`` for the papers), the shared data batch,
the score cache, the sharded scorer, the AVG ranking and the informativeness check.

    from tinyevo.proxies import PROXIES, ProxyScorer, make_batch, ranking
    x, y = make_batch("results/data/digits", 64, seed)
    scores = ProxyScorer(space, ["snip", "synflow", "jacob_cov"], x, y, seed,
                         device="auto", cache_dir="results/cache/scores").score(archs)
    ranked = ranking.standardise(scores, norm)   # z_<proxy>, avg
    table = informativeness.informativeness_table(seed_scores, names)   # per proxy: eta2, icc

The names below are imported on first use (PEP 562 module ``__getattr__``): a job that needs only
the cache, the gather or the ranking (pandas) does not pay for importing torch.
"""

from importlib import import_module

#: public name -> submodule that defines it (``None``: the name is the submodule itself)
_EXPORTS = {
    "informativeness": None, "ranking": None, "measures": None, "registry": None, "scorer": None,
    "stage": None, "batch": None, "cache": None,
    "batch_fingerprint": "batch", "make_batch": "batch",
    "ScoreCache": "cache", "cache_key": "cache",
    "compute": "measures", "count_macs": "measures", "fused_scores": "measures", "jacob_cov": "measures",
    "macs": "measures", "meco": "measures", "naswot": "measures", "params": "measures", "snip": "measures",
    "synflow": "measures", "synflow_relu6": "measures", "zico": "measures",
    "FROM_SPEC": "registry", "MIN_BATCH": "registry", "PROXIES": "registry", "VERSIONS": "registry",
    "check_names": "registry", "register": "registry",
    "ProxyScorer": "scorer", "build_net": "scorer", "net_seed": "scorer",
}

__all__ = sorted(n for n, m in _EXPORTS.items() if m is not None) + ["informativeness", "ranking"]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'tinyevo.proxies' has no attribute {name!r}")
    mod = _EXPORTS[name]
    value = import_module(f"tinyevo.proxies.{name if mod is None else mod}")
    if mod is not None:
        value = getattr(value, name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
