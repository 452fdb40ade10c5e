"""Rule evolve: adapt snakemake input/output/params/threads to tinyevo.search.stage.run_stage."""

import os
import sys

sys.path.insert(0, os.path.dirname(snakemake.scriptdir))  # noqa: F821

from tinyevo.runtime import log_header, setup_logging  # noqa: E402
from tinyevo.search.stage import run_stage  # noqa: E402

sm = snakemake  # noqa: F821
log = setup_logging(sm.log[0])
evo = sm.params.evolution
log_header(log, "evolution", {
    "initial": sm.input.initial, "cycles": evo["cycles"], "sample_size": evo["sample_size"],
    "children_per_cycle": evo["children_per_cycle"], "constraints": evo["constraints"],
    "limits": {k: v for k, v in sm.params.constraints.items() if v is not None},
    "device budget": sm.params.target, "accounting": sm.params.accounting, "ranking": sm.params.ranking["method"],
    "proxies": sm.params.proxies["names"], "seed": evo["seed"], "device": sm.params.device, "threads": sm.threads,
})
# A user error (bad config or inputs, no feasible / trainable net) ends the job with one log line
# naming the key (tinyevo.runtime.excepthook, installed by setup_logging); a bug keeps its traceback.
run_stage(initial_path=sm.input.initial, norm_path=sm.input.norm, data_dir=os.path.dirname(sm.input.train_x),
          cache_dir=sm.params.cache_dir, checkpoint_dir=sm.params.checkpoint_dir,
          history_out=sm.output.history, population_out=sm.output.population, selected_out=sm.output.selected,
          search_space=sm.params.search_space, constraints=sm.params.constraints, evolution=evo,
          proxies=sm.params.proxies, device=sm.params.device, threads=sm.threads, target=sm.params.target,
          accounting=sm.params.accounting, instruction_target=sm.params.instruction_target,
          ranking=sm.params.ranking, logger=log,
          pareto_out=sm.output.pareto, hypervolume_out=sm.output.hypervolume)
