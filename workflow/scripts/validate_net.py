"""Rule validate_net: train the i-th net of the seeded validation sample for a few epochs."""

import os
import sys

# Idle OpenMP threads sleep instead of spinning (set before torch loads OpenMP): spinning threads
# slow training down by orders of magnitude when other jobs share the cores.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, os.path.dirname(snakemake.scriptdir))  # noqa: F821

from tinyevo.runtime import log_header, set_threads, setup_logging  # noqa: E402

log = setup_logging(snakemake.log[0])  # noqa: F821
sm = snakemake  # noqa: F821
set_threads(sm.threads)
log_header(log, "validation", {"sample": f"{int(sm.wildcards.i) + 1}/{sm.params.nets}",
                               "epochs": sm.params.epochs, "seed": sm.params.seed, "device": sm.params.device,
                               "amp": sm.params.amp, "threads": sm.threads})

from tinyevo.train.validation import train_sampled  # noqa: E402

train_sampled(ranked_path=sm.input.ranked, data_dir=os.path.dirname(sm.input.data[0]), i=int(sm.wildcards.i), k=sm.params.nets,
              seed=sm.params.seed, epochs=sm.params.epochs, proxies=sm.params.proxies,
              search_space=sm.params.search_space, settings=sm.params.train, device=sm.params.device,
              amp=sm.params.amp, out=sm.output[0], logger=log)
