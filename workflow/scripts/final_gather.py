"""Rule final_round_gather: the slot rows of one round in slot order."""

import os
import sys

sys.path.insert(0, os.path.dirname(snakemake.scriptdir))  # noqa: F821

from tinyevo.runtime import log_header, setup_logging  # noqa: E402

log = setup_logging(snakemake.log[0])  # noqa: F821
sm = snakemake  # noqa: F821
log_header(log, "final round gather", {"net": sm.wildcards.net, "round": sm.wildcards.round, "slots": len(sm.input)})

from tinyevo.train.final_round import gather_round  # noqa: E402

gather_round(list(sm.input), sm.output[0], sm.wildcards.net, int(sm.wildcards.round), logger=log)
