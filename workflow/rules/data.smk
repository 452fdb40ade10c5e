# data stage: normalise the configured dataset (config `dataset:`) into uint8 NHWC splits,
# a manifest and the train statistics under results/data/{DATASET}/ (docs/ARCHITECTURE.md).

from tinyevo.data import output_names as _data_output_names

DATA_DIR = f"{RESULTS}/data/{DATASET}"
# train/val/test _x.npy + _y.npy, manifest.parquet, stats.parquet, classes.parquet, by name
# (train_x, ..., stats): the other rules take them from rules.data.output
DATA_FILES = {name.rsplit(".", 1)[0]: f"{DATA_DIR}/{name}" for name in _data_output_names()}
DATA_OUTPUTS = list(DATA_FILES.values())
# Memory and time limit from the config (tinyevo.resources: by source, images, resolution).


rule data:
    """Decode, split (seeded, stratified) and resize the dataset; images stream to disk."""
    output:
        **DATA_FILES,
    params:
        code=code_of("data"),
        dataset=config["dataset"],
    log:
        log_of("data", DATASET),
    benchmark:
        bench_of("data", DATASET),
    threads: 8  # decoding threads; Snakemake lowers this to --cores when fewer
    resources:
        **sized("data"),
    conda:
        env("torch")
    script:
        "../scripts/data.py"


ALL_TARGETS.extend(DATA_OUTPUTS)
