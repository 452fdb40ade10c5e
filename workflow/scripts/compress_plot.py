import os
import sys

sys.path.insert(0, os.path.dirname(snakemake.scriptdir))  # noqa: F821
from tinyevo.runtime import log_header, setup_logging  # noqa: E402

sm = snakemake  # noqa: F821
log = setup_logging(sm.log[0])
log_header(log, "compress plot", {"net": sm.wildcards.net, "style": sm.params.style, "dpi": sm.params.dpi})

from tinyevo.compress.stage import plot_compress  # noqa: E402

plot_compress(sm.input.pruning, sm.input.summary, sm.output[0], style=sm.params.style, dpi=sm.params.dpi)
