"""Rule `data`: normalise the configured dataset into results/data/{name}/ (tinyevo.data.prepare)."""

import os
import sys

sys.path.insert(0, os.path.dirname(snakemake.scriptdir))  # noqa: F821

from tinyevo.data import DataError, prepare  # noqa: E402
from tinyevo.runtime import setup_logging  # noqa: E402

log = setup_logging(snakemake.log[0])  # noqa: F821
try:
    out_dir = os.path.dirname(snakemake.output[0])  # noqa: F821
    prepare(snakemake.params.dataset, out_dir, threads=snakemake.threads, log=log)  # noqa: F821
except DataError as exc:
    log.error("%s", exc)
    sys.exit(1)
