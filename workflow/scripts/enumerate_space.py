"""Rule enumerate_space: adapt snakemake params to tinyevo.space.enumerate.enumerate_stage."""

import os
import sys

sys.path.insert(0, os.path.dirname(snakemake.scriptdir))  # noqa: F821

from tinyevo.runtime import log_header, setup_logging  # noqa: E402
from tinyevo.space.enumerate import enumerate_stage  # noqa: E402

sm = snakemake  # noqa: F821
log = setup_logging(sm.log[0])
ss = sm.params.search_space
log_header(log, "space", {"population": ss["population"]["mode"],
                          "input": f"{ss['resolution']}x{ss['resolution']}x{ss['channels']}",
                          "classes": ss["num_classes"], "constraints": sm.params.constraints,
                          "device": sm.params.device, "accounting": sm.params.accounting})
try:
    enumerate_stage(ss, sm.params.constraints, sm.output[0], device=sm.params.device, accounting=sm.params.accounting,
                    instruction_target=sm.params.instruction_target)
except ValueError as exc:
    log.error("%s", exc)
    sys.exit(1)
