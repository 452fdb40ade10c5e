"""Rule report_tables: every Parquet table of one report section -> HTML, in one process."""

import os
import sys

sys.path.insert(0, os.path.dirname(snakemake.scriptdir))  # noqa: F821

from tinyevo.report import render_tables  # noqa: E402
from tinyevo.runtime import setup_logging  # noqa: E402

sm = snakemake  # noqa: F821
log = setup_logging(sm.log[0])
rows = render_tables(dict(sm.input.items()), sm.output[0], sm.params.titles, sm.params.max_rows)
for name, n in rows.items():
    log.info("rendered %s (%d rows) -> %s/%s.html", sm.input[name], n, sm.output[0], name)
