"""Rule score_shard: adapt snakemake input/params to tinyevo.proxies.stage.score_shard."""

import os
import sys

sys.path.insert(0, os.path.dirname(snakemake.scriptdir))  # noqa: F821

from tinyevo.proxies.stage import score_shard  # noqa: E402
from tinyevo.runtime import setup_logging  # noqa: E402

sm = snakemake  # noqa: F821
log = setup_logging(sm.log[0])
# user errors end as one log line (tinyevo.runtime.excepthook); bugs keep their traceback
# shard k of n (Snakemake's scatteritem "k-of-n", k from 1) scores the rows of shard k - 1
k, n = (int(v) for v in sm.wildcards.scatteritem.split("-of-"))
score_shard(sm.input.candidates, os.path.dirname(sm.input.train_x), sm.output[0], k - 1, n,
            sm.params.proxies, sm.params.search_space, sm.params.device, sm.params.cache_dir)
