"""Rule `data`: normalise the configured dataset into results/data/{name}/ (tinyevo.data.prepare)."""

import os
import sys

sys.path.insert(0, os.path.dirname(snakemake.scriptdir))  # noqa: F821

from tinyevo.data import prepare  # noqa: E402
from tinyevo.runtime import setup_logging  # noqa: E402

# A DataError (bad input) ends the job with one log line (tinyevo.runtime.excepthook); decoding
# threads only, the results do not depend on them.
log = setup_logging(snakemake.log[0])  # noqa: F821
prepare(snakemake.params.dataset, os.path.dirname(snakemake.output[0]), threads=snakemake.threads, log=log)  # noqa: F821
