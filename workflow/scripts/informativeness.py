"""Rule proxy_informativeness: adapt snakemake input/params to
tinyevo.proxies.informativeness.run_informativeness, then render the table for the report."""

import os
import sys

sys.path.insert(0, os.path.dirname(snakemake.scriptdir))  # noqa: F821

from tinyevo.proxies.informativeness import run_informativeness  # noqa: E402
from tinyevo.report import render_table  # noqa: E402
from tinyevo.runtime import setup_logging  # noqa: E402

sm = snakemake  # noqa: F821
log = setup_logging(sm.log[0])
# user errors end as one log line (tinyevo.runtime.excepthook); bugs keep their traceback
run_informativeness(sm.input.candidates, os.path.dirname(sm.input.train_x), sm.output.table, sm.params.proxies,
                    sm.params.informativeness, sm.params.search_space, sm.params.device, sm.params.cache_dir)
render_table(sm.output.table, sm.output.html, "proxy informativeness")
