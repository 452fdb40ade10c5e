"""Rule scenario_gather: curves of every variant of one scenario -> curves + summary tables."""

import os
import sys

sys.path.insert(0, os.path.dirname(snakemake.scriptdir))  # noqa: F821

from tinyevo.runtime import log_header, setup_logging  # noqa: E402

log = setup_logging(snakemake.log[0])  # noqa: F821
sm = snakemake  # noqa: F821
log_header(log, "scenarios gather", {"scenario": sm.wildcards.scenario, "parts": len(sm.input)})

from tinyevo.scenarios.stage import gather  # noqa: E402

gather(list(sm.input), sm.output.curves, sm.output.summary, sm.params.change_point, log=log)
