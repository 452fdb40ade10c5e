"""Rule evolve_plots: adapt snakemake input/output/params to tinyevo.search.plots.make_plots."""

import os
import sys

sys.path.insert(0, os.path.dirname(snakemake.scriptdir))  # noqa: F821

from tinyevo.io import read_parquet  # noqa: E402
from tinyevo.runtime import log_header, setup_logging  # noqa: E402
from tinyevo.search.plots import make_plots, plot_hypervolume, plot_pareto  # noqa: E402
from tinyevo.space.constraints import Constraints  # noqa: E402

sm = snakemake  # noqa: F821
log = setup_logging(sm.log[0])
log_header(log, "evolution plots", {"history": sm.input.history, "style": sm.params.style, "dpi": sm.params.dpi})
constraints = Constraints.from_config(sm.params.constraints, sm.params.target, sm.params.accounting,
                                      sm.params.instruction_target)
make_plots(read_parquet(sm.input.history, "evolution history"), constraints, sm.output.best,
           sm.output.scatter, sm.output.feasible, style=sm.params.style, dpi=sm.params.dpi)
plot_pareto(read_parquet(sm.input.history, "evolution history"), read_parquet(sm.input.pareto, "Pareto table"),
            list(sm.params.objectives), constraints, sm.output.pareto, style=sm.params.style, dpi=sm.params.dpi)
plot_hypervolume(read_parquet(sm.input.hypervolume, "hypervolume table"), sm.output.hypervolume,
                 style=sm.params.style, dpi=sm.params.dpi)
log.info("wrote %s, %s, %s, %s, %s", sm.output.best, sm.output.scatter, sm.output.feasible, sm.output.pareto,
         sm.output.hypervolume)
