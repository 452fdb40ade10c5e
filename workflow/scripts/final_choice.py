"""Rule final_round_choice: the finalists table and the choice of C and NC."""

import os
import sys

sys.path.insert(0, os.path.dirname(snakemake.scriptdir))  # noqa: F821

from tinyevo.runtime import log_header, setup_logging  # noqa: E402

log = setup_logging(snakemake.log[0])  # noqa: F821
sm = snakemake  # noqa: F821
log_header(log, "final round choice", {"nets": sm.params.nets, "rounds": sm.params.rounds, "keep": sm.params.keep})

from tinyevo.train.final_round import run_choice  # noqa: E402

nets, n_rounds = list(sm.params.nets), int(sm.params.rounds)
rounds = list(sm.input.rounds)
run_choice(selected=sm.input.selected, candidates=dict(zip(nets, sm.input.candidates)),
           rounds={n: rounds[i * n_rounds:(i + 1) * n_rounds] for i, n in enumerate(nets)}, keep=sm.params.keep,
           out_finalists=sm.output.finalists, out_choice=sm.output.choice, history=sm.input.history,
           nc_limits=sm.params.nc_limits, selection=sm.params.selection, logger=log)
