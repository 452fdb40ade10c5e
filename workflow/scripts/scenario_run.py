"""Rule scenario_run: every repetition of one scenario for one learner (tybox, tinyol, float)."""

import os
import sys

sys.path.insert(0, os.path.dirname(snakemake.scriptdir))  # noqa: F821

from tinyevo.runtime import log_header, set_threads, setup_logging  # noqa: E402

log = setup_logging(snakemake.log[0])  # noqa: F821
sm = snakemake  # noqa: F821
sc = sm.params.scenarios
log_header(log, "scenarios", {"scenario": sm.wildcards.scenario, "variant": sm.wildcards.variant,
                              "dataset": sm.params.data_dir, "repetitions": sc["repetitions"],
                              "stream_length": sc["stream_length"], "eval_size": sc["eval_size"],
                              "change_point": sc["change_point"], "ram_bytes": sm.params.device["ram_bytes"],
                              "device": sm.params.compute_device})
if sm.wildcards.variant == "float":  # the others run the C++ harness and numpy: no torch
    set_threads(sm.params.torch_threads)  # fixed: results do not depend on --cores

from tinyevo.scenarios.stage import run_scenario_job  # noqa: E402

run_scenario_job(sm.wildcards.scenario, sm.wildcards.variant, sm.params.data_dir, sm.output[0],
                 scenarios=sc, num_classes=sm.params.num_classes, tybox=sm.params.tybox, device=sm.params.device,
                 tflite=sm.input.tflite, tybox_dir=sm.input.get("tybox"), model_path=sm.input.get("model"),
                 compute_device=sm.params.compute_device, tune_path=sm.input.get("tune"), log=log)
