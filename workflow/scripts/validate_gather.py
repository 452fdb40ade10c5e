"""Rule validation_gather: correlations of every measure with test accuracy, verdict in the log."""

import os
import sys

sys.path.insert(0, os.path.dirname(snakemake.scriptdir))  # noqa: F821

from tinyevo.runtime import log_header, setup_logging  # noqa: E402

log = setup_logging(snakemake.log[0])  # noqa: F821
sm = snakemake  # noqa: F821
log_header(log, "validation gather", {"nets": len(sm.input), "proxies": sm.params.proxies,
                                      "min_abs_rho": sm.params.min_abs_rho, "max_p": sm.params.max_p})

from tinyevo.train.validation import gather  # noqa: E402

gather(list(sm.input), sm.params.proxies, sm.output.trained, sm.output.correlations,
       min_abs_rho=sm.params.min_abs_rho, max_p=sm.params.max_p, logger=log)
