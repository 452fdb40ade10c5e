"""Rule validation_plan: every measure of every initial net, and the validation's training slots."""

import os
import sys

sys.path.insert(0, os.path.dirname(snakemake.scriptdir))  # noqa: F821

from tinyevo.runtime import log_header, setup_logging  # noqa: E402

log = setup_logging(snakemake.log[0])  # noqa: F821
sm = snakemake  # noqa: F821
p = sm.params
log_header(log, "validation plan", {"proxies": p.proxies, "ranking": p.method, "nets": p.nets, "top_k": p.top_k,
                                    "seeds": p.seeds, "seed_nets": p.seed_nets, "seed": p.seed, "slots": p.slots})

from tinyevo.train.validation import plan_stage  # noqa: E402

plan_stage(sm.input.ranked, p.proxies, p.method, p.weights, p.nets, p.top_k, p.seeds, p.seed_nets, p.seed,
           p.search_space, sm.output.plan, sm.output.measures, expect_slots=p.slots, logger=log)
