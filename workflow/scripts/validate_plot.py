"""Rule plot_validation: one scatter plot (test accuracy against the measure) per measure."""

import os
import sys

sys.path.insert(0, os.path.dirname(snakemake.scriptdir))  # noqa: F821

from tinyevo.runtime import log_header, setup_logging  # noqa: E402

log = setup_logging(snakemake.log[0])  # noqa: F821
sm = snakemake  # noqa: F821
log_header(log, "validation plot", {"measures": sm.params.measures, "style": sm.params.style, "dpi": sm.params.dpi})

from tinyevo.io import read_parquet  # noqa: E402
from tinyevo.train.plots import plot_scatter  # noqa: E402

trained = read_parquet(sm.input.trained, "validation results")
corr = read_parquet(sm.input.correlations, "validation correlations")
for measure, path in zip(sm.params.measures, sm.output):
    plot_scatter(trained, corr, measure, path, style=sm.params.style, dpi=sm.params.dpi)
