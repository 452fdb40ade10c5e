"""Rule rank_initial: adapt snakemake input/output/params to tinyevo.proxies.stage.rank_stage."""

import os
import sys

sys.path.insert(0, os.path.dirname(snakemake.scriptdir))  # noqa: F821

from tinyevo.proxies.stage import rank_stage  # noqa: E402
from tinyevo.runtime import log_header, setup_logging  # noqa: E402

sm = snakemake  # noqa: F821
log = setup_logging(sm.log[0])
method = sm.params.ranking["method"]
log_header(log, "rank", {"proxies": list(sm.params.names), "weights": sm.params.weights or "equal",
                         "ranking.method": method})
# user errors end as one log line (tinyevo.runtime.excepthook); bugs keep their traceback
rank_stage(sm.input.candidates, sm.input.scores, sm.params.names, sm.params.weights,
           sm.output.ranked, sm.output.norm, sm.output.spread, method=method)
