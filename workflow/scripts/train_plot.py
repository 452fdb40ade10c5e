"""Rule plot_training: the training curve of one net."""

import os
import sys

sys.path.insert(0, os.path.dirname(snakemake.scriptdir))  # noqa: F821

from tinyevo.runtime import log_header, setup_logging  # noqa: E402

log = setup_logging(snakemake.log[0])  # noqa: F821
sm = snakemake  # noqa: F821
log_header(log, "train plot", {"net": sm.wildcards.net, "style": sm.params.style, "dpi": sm.params.dpi})

from tinyevo.io import read_parquet  # noqa: E402
from tinyevo.train.plots import plot_history  # noqa: E402

plot_history(read_parquet(sm.input.history, "training history"), sm.output[0],
             title=f"training of {sm.wildcards.net}", style=sm.params.style, dpi=sm.params.dpi)
