"""Zero-cost proxies (reference section 2), the shared data batch, the score cache, the sharded
scorer and the AVG ranking.

    from tinyevo.proxies import PROXIES, ProxyScorer, make_batch, ranking
    x, y = make_batch("results/data/digits", 64, seed)
    scores = ProxyScorer(space, ["snip", "synflow", "jacob_cov"], x, y, seed,
                         device="auto", cache_dir="results/cache/scores").score(archs)
    ranked = ranking.standardise(scores, norm)   # z_<proxy>, avg
"""

from tinyevo.proxies import ranking
from tinyevo.proxies.batch import batch_fingerprint, make_batch
from tinyevo.proxies.cache import ScoreCache, cache_key
from tinyevo.proxies.measures import compute, fused_scores, jacob_cov, naswot, snip, synflow
from tinyevo.proxies.registry import PROXIES, VERSIONS, check_names, register
from tinyevo.proxies.scorer import ProxyScorer, build_net, net_seed

__all__ = ["PROXIES", "VERSIONS", "ProxyScorer", "ScoreCache", "batch_fingerprint", "build_net", "cache_key",
           "check_names", "compute", "fused_scores", "jacob_cov", "make_batch", "naswot", "net_seed", "ranking",
           "register", "snip", "synflow"]
