"""Rule scenario_plot: mean accuracy +- std per variant of one scenario."""

import os
import sys

sys.path.insert(0, os.path.dirname(snakemake.scriptdir))  # noqa: F821

from tinyevo.runtime import log_header, setup_logging  # noqa: E402

log = setup_logging(snakemake.log[0])  # noqa: F821
sm = snakemake  # noqa: F821
log_header(log, "scenarios plot", {"scenario": sm.wildcards.scenario, "style": sm.params.style, "dpi": sm.params.dpi})

from tinyevo.scenarios.stage import plot_scenario  # noqa: E402

plot_scenario(sm.input.curves, sm.output[0], sm.params.change_point, style=sm.params.style, dpi=sm.params.dpi)
