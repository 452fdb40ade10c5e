import os
import sys

sys.path.insert(0, os.path.dirname(snakemake.scriptdir))  # noqa: F821
from tinyevo.runtime import log_header, setup_logging  # noqa: E402
from tinyevo.tybox import build_tybox  # noqa: E402

log = setup_logging(snakemake.log[0])  # noqa: F821
sm = snakemake  # noqa: F821
log_header(log, "tybox", {"net": sm.wildcards.net, "tflite": sm.input.tflite,
                          "classifier": sm.input.classifier, "ram_bytes": sm.params.device["ram_bytes"],
                          "accounting": sm.params.tybox["accounting"], "loss": sm.params.tybox["loss"],
                          "lr": sm.params.tybox["lr"], "cxx": sm.params.tybox["cxx"],
                          "target": sm.params.tybox.get("target", "host")})
build_tybox(sm.input.tflite, sm.input.classifier, sm.output.src, sm.output.memory,
            dict(sm.params.tybox), dict(sm.params.device), seed=sm.params.seed, threads=sm.threads, log=log,
            target_path=sm.output.target)
