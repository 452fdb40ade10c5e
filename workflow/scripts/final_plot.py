"""Rule plot_final_round: validation accuracy per round of every finalist."""

import os
import sys

sys.path.insert(0, os.path.dirname(snakemake.scriptdir))  # noqa: F821

from tinyevo.runtime import log_header, setup_logging  # noqa: E402

log = setup_logging(snakemake.log[0])  # noqa: F821
sm = snakemake  # noqa: F821
log_header(log, "final round plot", {"style": sm.params.style, "dpi": sm.params.dpi})

from tinyevo.io import read_parquet  # noqa: E402
from tinyevo.train.final_round import plot_final_round  # noqa: E402

plot_final_round(read_parquet(sm.input.finalists, "final-round finalists"), sm.output[0], style=sm.params.style,
                 dpi=sm.params.dpi)
