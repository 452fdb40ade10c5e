import os
import sys

sys.path.insert(0, os.path.dirname(snakemake.scriptdir))  # noqa: F821
from tinyevo.runtime import log_header, set_threads, setup_logging  # noqa: E402

sm = snakemake  # noqa: F821
log = setup_logging(sm.log[0])
log_header(log, "compress", {"net": sm.wildcards.net, "model": sm.input.model, "data": os.path.dirname(sm.input.data[0]),
                             "compress": dict(sm.params.compress), "device (MCU)": dict(sm.params.device),
                             "accounting": sm.params.accounting, "torch device": sm.params.compute_device,
                             "torch threads": sm.params.torch_threads})
set_threads(sm.params.torch_threads)  # compress.threads, whatever the job got (see tinyevo.runtime.set_threads)

from tinyevo.compress.stage import run_compress  # noqa: E402

run_compress(sm.input.model, os.path.dirname(sm.input.data[0]), sm.wildcards.net, sm.params.compress, sm.params.device,
             sm.params.compute_device, sm.params.seed, sm.output.pruning, sm.output.summary, sm.output.tflite,
             sm.output.classifier, sm.output.model, accounting=sm.params.accounting, logger=log)
