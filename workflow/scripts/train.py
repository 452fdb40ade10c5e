"""Rule train: train one selected net (or its class-subset branch) -> model.pt + tables."""

import os
import sys

# Idle OpenMP threads sleep instead of spinning (set before torch loads OpenMP): spinning threads
# slow training down by orders of magnitude when other jobs share the cores.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, os.path.dirname(snakemake.scriptdir))  # noqa: F821

from tinyevo.runtime import log_header, set_threads, setup_logging  # noqa: E402

log = setup_logging(snakemake.log[0])  # noqa: F821
sm = snakemake  # noqa: F821
# train.threads, not the job's thread count: the last bits of a CPU training depend on it, and
# Snakemake lowers a job's threads to --cores
set_threads(sm.params.torch_threads)
log_header(log, "train", {"net": sm.wildcards.net, "classes": sm.params.classes["classes"],
                          "epochs": sm.params.train["epochs"], "batch_size": sm.params.train["batch_size"],
                          "device": sm.params.device, "amp": sm.params.amp, "seed": sm.params.seed,
                          "torch threads": sm.params.torch_threads})

from tinyevo.train.stage import checkpoint_path_for, run_training  # noqa: E402

run_training(choice=sm.input.choice, data_dir=os.path.dirname(sm.input.data[0]), net=sm.wildcards.net,
             search_space=sm.params.search_space, settings=sm.params.train, subset=sm.params.classes,
             device=sm.params.device, amp=sm.params.amp, out_model=sm.output.model,
             out_history=sm.output.history, out_metrics=sm.output.metrics, out_confusion=sm.output.confusion,
             checkpoint=checkpoint_path_for(sm.output.model), logger=log,
             same_as=({"net": "C", **{k: sm.input[f"same_{k}"] for k in ("model", "history", "metrics", "confusion")}}
                      if "same_model" in sm.input.keys() else None))
