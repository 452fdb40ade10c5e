"""Rule final_round_train: train one slot of one successive-halving round on the validation split."""

import os
import sys

# Idle OpenMP threads sleep instead of spinning (set before torch loads OpenMP): spinning threads
# slow training down by orders of magnitude when other jobs share the cores.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, os.path.dirname(snakemake.scriptdir))  # noqa: F821

from tinyevo.runtime import log_header, setup_logging  # noqa: E402

log = setup_logging(snakemake.log[0])  # noqa: F821
sm = snakemake  # noqa: F821
log_header(log, "final round", {"net": sm.wildcards.net, "round": sm.wildcards.round, "slot": sm.wildcards.slot,
                                "epochs": sm.params.epochs, "keep": sm.params.keep, "k": sm.params.k,
                                "seed": sm.params.train["seed"], "device": sm.params.device, "amp": sm.params.amp,
                                "threads": sm.params.threads})

from tinyevo.train.final_round import run_slot  # noqa: E402

run_slot(net=sm.wildcards.net, round_index=int(sm.wildcards.round), slot=int(sm.wildcards.slot),
         source=sm.input.source, prev_states=list(sm.input.states), data_dir=os.path.dirname(sm.input.data[0]),
         search_space=sm.params.search_space, settings=sm.params.train, k=sm.params.k, epochs=sm.params.epochs,
         keep=sm.params.keep, device=sm.params.device, amp=sm.params.amp, threads=sm.params.threads,
         out_row=sm.output.row, out_state=sm.output.state, logger=log)
