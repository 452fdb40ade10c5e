"""Zero-cost proxies (see ``tinyevo.proxies.measures`` for the papers), the shared data batch,
the score cache, the sharded scorer, the AVG ranking and the informativeness check.

    from tinyevo.proxies import PROXIES, ProxyScorer, make_batch, ranking
    x, y = make_batch("results/data/digits", 64, seed)
    scores = ProxyScorer(space, ["snip", "synflow", "jacob_cov"], x, y, seed,
                         device="auto", cache_dir="results/cache/scores").score(archs)
    ranked = ranking.standardise(scores, norm)   # z_<proxy>, avg
    table = informativeness.informativeness_table(seed_scores, names)   # per proxy: eta2, icc
"""

from tinyevo.proxies import informativeness, ranking
from tinyevo.proxies.batch import batch_fingerprint, make_batch
from tinyevo.proxies.cache import ScoreCache, cache_key
from tinyevo.proxies.measures import (compute, count_macs, fused_scores, jacob_cov, macs, meco, naswot, params,
                                      snip, synflow, synflow_relu6, zico)
from tinyevo.proxies.registry import MIN_BATCH, PROXIES, VERSIONS, check_names, register
from tinyevo.proxies.scorer import ProxyScorer, build_net, net_seed

__all__ = ["MIN_BATCH", "PROXIES", "VERSIONS", "ProxyScorer", "ScoreCache", "batch_fingerprint", "build_net",
           "cache_key", "check_names", "compute", "count_macs", "fused_scores", "informativeness", "jacob_cov",
           "macs", "make_batch", "meco", "naswot", "net_seed", "params", "ranking", "register", "snip", "synflow",
           "synflow_relu6", "zico"]
