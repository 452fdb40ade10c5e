"""Write results/config.resolved.yaml (the text is rendered at parse time by the Snakefile)."""

import os
import sys

sys.path.insert(0, os.path.dirname(snakemake.scriptdir))  # noqa: F821

from tinyevo.io import atomic_write_text  # noqa: E402
from tinyevo.runtime import setup_logging  # noqa: E402

log = setup_logging(snakemake.log[0])  # noqa: F821
atomic_write_text(snakemake.output[0], snakemake.params.text)  # noqa: F821
log.info("wrote %s", snakemake.output[0])  # noqa: F821
