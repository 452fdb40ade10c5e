"""Rule score_gather: adapt snakemake input/params to tinyevo.proxies.stage.gather_scores."""

import os
import sys

sys.path.insert(0, os.path.dirname(snakemake.scriptdir))  # noqa: F821

from tinyevo.proxies.stage import gather_scores  # noqa: E402
from tinyevo.runtime import log_header, setup_logging  # noqa: E402

sm = snakemake  # noqa: F821
log = setup_logging(sm.log[0])
log_header(log, "score gather", {"shards": len(sm.input.shards), "cache": sm.params.cache_dir})
try:
    gather_scores(list(sm.input.shards), sm.input.candidates, sm.output[0], sm.params.cache_dir)
except (ValueError, FileNotFoundError) as exc:
    log.error("%s", exc)
    sys.exit(1)
