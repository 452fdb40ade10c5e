"""Rule report_table: one Parquet table -> HTML for the Snakemake report."""

import os
import sys

sys.path.insert(0, os.path.dirname(snakemake.scriptdir))  # noqa: F821

from tinyevo.report import render_table  # noqa: E402
from tinyevo.runtime import setup_logging  # noqa: E402

sm = snakemake  # noqa: F821
log = setup_logging(sm.log[0])
n = render_table(sm.input[0], sm.output[0], sm.params.title, sm.params.max_rows)
log.info("rendered %s (%d rows) -> %s", sm.input[0], n, sm.output[0])
