# Stage 7: compression (the TyBox thesis). Structured L1 pruning of the trained net with a short
# fine-tune per step, the least-pruned step whose TyBox buffer fits the device (device.ram_bytes,
# device.min_buffer_samples), torch -> Keras export, int8 feature extractor (TFLite, LiteRT) +
# float classifier; tables and a size-vs-accuracy plot.

COMPRESS_DIR = f"{RESULTS}/compress"


rule compress:
    """Prune {net}, choose the step that fits the device, export int8 FE + float classifier."""
    input:
        model=f"{RESULTS}/train/{{net}}/model.pt",
        data=data_inputs("train", "test"),
    output:
        pruning=f"{COMPRESS_DIR}/{{net}}/pruning.parquet",
        summary=f"{COMPRESS_DIR}/{{net}}/summary.parquet",
        tflite=f"{COMPRESS_DIR}/{{net}}/fe_int8.tflite",
        classifier=f"{COMPRESS_DIR}/{{net}}/classifier.keras",
        model=f"{COMPRESS_DIR}/{{net}}/pruned.pt",
    wildcard_constraints:
        net="C|NC|C-inc|C-src",
    params:
        code=code_of("compress"),
        compress=config["compress"],
        device=config["device"],
        accounting=config["tybox"]["accounting"],
        compute_device=config["compute"]["device"],
        seed=config["compress"]["seed"],
        # torch threads of the fine-tunes and evaluations from the config, not the job's `threads`
        # (which --cores lowers): the last bits of a CPU training depend on them
        torch_threads=config["compress"]["threads"],
    log:
        log_of("compress", "{net}"),
    benchmark:
        bench_of("compress", "{net}"),
    conda:
        env("tf")
    priority: _branch_priority("compress")
    threads: config["compress"]["threads"]
    resources:
        gpu=_train_gpu(),
        **sized("compress"),
    script:
        "../scripts/compress.py"


rule compress_plot:
    """Size (weights + activations) vs test accuracy of every pruning step and of the chosen models."""
    input:
        pruning=f"{COMPRESS_DIR}/{{net}}/pruning.parquet",
        summary=f"{COMPRESS_DIR}/{{net}}/summary.parquet",
    output:
        report(f"{COMPRESS_DIR}/{{net}}/size_accuracy.png", caption="../report/compress_size_accuracy.rst",
               category="Compression", subcategory="{net}"),
    wildcard_constraints:
        net="C|NC|C-inc|C-src",
    params:
        code=code_of("compress_plot"),
        style=config["report"]["style"],
        dpi=config["report"]["dpi"],
    log:
        log_of("compress", "plot_{net}"),
    benchmark:
        bench_of("compress", "plot_{net}"),
    conda:
        env("core")
    threads: 1
    resources:
        **sized("compress_plot"),
    script:
        "../scripts/compress_plot.py"


ALL_TARGETS.append(f"{COMPRESS_DIR}/C/summary.parquet")
ALL_TARGETS.append(f"{COMPRESS_DIR}/C/size_accuracy.png")
