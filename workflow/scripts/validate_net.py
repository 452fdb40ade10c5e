"""Rule validate_net: train the net of validation slot i briefly; accuracy on val and test."""

import os
import sys

# Idle OpenMP threads sleep instead of spinning (set before torch loads OpenMP): spinning threads
# slow training down by orders of magnitude when other jobs share the cores.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, os.path.dirname(snakemake.scriptdir))  # noqa: F821

from tinyevo.runtime import log_header, setup_logging  # noqa: E402

log = setup_logging(snakemake.log[0])  # noqa: F821
sm = snakemake  # noqa: F821
log_header(log, "validation", {"slot": sm.wildcards.i, "recipe": sm.params.train, "device": sm.params.device,
                               "amp": sm.params.amp, "torch threads": sm.params.torch_threads})

from tinyevo.train.validation import train_slot  # noqa: E402

train_slot(plan_path=sm.input.plan, data_dir=os.path.dirname(sm.input.data[0]), slot=int(sm.wildcards.i),
           search_space=sm.params.search_space, settings=sm.params.train, device=sm.params.device,
           amp=sm.params.amp, out=sm.output[0], logger=log,
           # validation.threads, not the job's thread count: the last bits of a CPU training depend
           # on it, and Snakemake lowers a job's threads to --cores (set only for a slot that trains)
           torch_threads=sm.params.torch_threads)
