"""Rule report_summary: the report's front page (deployed net, memory against the device budget,
one line per scenario) as RST (included by workflow/report/workflow.rst) and HTML."""

import os
import sys

sys.path.insert(0, os.path.dirname(snakemake.scriptdir))  # noqa: F821

from tinyevo.report.summary import page_rst, write_front_page  # noqa: E402
from tinyevo.runtime import setup_logging  # noqa: E402

sm = snakemake  # noqa: F821
log = setup_logging(sm.log[0])
scenarios = {s: (net, path) for (s, net), path in zip(sm.params.scenarios.items(), sm.input.scenarios)}
page = write_front_page(sm.input.choice, sm.input.compress, sm.input.memory, scenarios, sm.params.device,
                        sm.params.accounting, sm.output.rst, sm.output.html,
                        target_path=sm.input.target)
log.info("front page -> %s, %s\n%s", sm.output.rst, sm.output.html, page_rst(page))
