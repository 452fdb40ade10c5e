"""Rule validation_gather: search quality of every measure (val and test), noise ceiling, verdict."""

import os
import sys

sys.path.insert(0, os.path.dirname(snakemake.scriptdir))  # noqa: F821

from tinyevo.runtime import log_header, setup_logging  # noqa: E402

log = setup_logging(snakemake.log[0])  # noqa: F821
sm = snakemake  # noqa: F821
p = sm.params
log_header(log, "validation gather", {"slots": len(sm.input.nets), "proxies": p.proxies, "bootstrap": p.bootstrap,
                                      "top_frac": p.top_frac, "seed": p.seed, "min_abs_rho": p.min_abs_rho,
                                      "max_p": p.max_p})

from tinyevo.train.validation import gather_stage  # noqa: E402

gather_stage(sm.input.plan, sm.input.measures, list(sm.input.nets), p.proxies, sm.output.trained,
             sm.output.correlations, sm.output.noise, n_boot=p.bootstrap, seed=p.seed, top_frac=p.top_frac,
             min_abs_rho=p.min_abs_rho, max_p=p.max_p, logger=log)
