"""Rule final_round_candidates: the top-k distinct nets of the evolution history for one net."""

import os
import sys

sys.path.insert(0, os.path.dirname(snakemake.scriptdir))  # noqa: F821

from tinyevo.runtime import log_header, setup_logging  # noqa: E402

log = setup_logging(snakemake.log[0])  # noqa: F821
sm = snakemake  # noqa: F821
log_header(log, "final round candidates", {"net": sm.wildcards.net, "k": sm.params.k,
                                           "nc_limits": sm.params.nc_limits,
                                           "min_distance": sm.params.min_distance,
                                           "selection": sm.params.selection})

from tinyevo.train.final_round import write_candidates  # noqa: E402

write_candidates(sm.input.history, sm.wildcards.net, sm.params.k, sm.output[0], nc_limits=sm.params.nc_limits,
                 constraints=sm.params.constraints, min_distance=sm.params.min_distance,
                 search_space=sm.params.search_space, selection=sm.params.selection, logger=log)
