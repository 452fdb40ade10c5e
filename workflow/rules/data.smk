# data stage: normalise the configured dataset (config `dataset:`) into uint8 NHWC splits,
# a manifest and the train statistics under results/data/{DATASET}/ (docs/ARCHITECTURE.md).

from tinyevo.data import output_names as _data_output_names

DATA_DIR = f"{RESULTS}/data/{DATASET}"
# train/val/test _x.npy + _y.npy, manifest.parquet, stats.parquet, classes.parquet, by name
# (train_x, ..., stats): the other rules take them from rules.data.output
DATA_FILES = {name.rsplit(".", 1)[0]: f"{DATA_DIR}/{name}" for name in _data_output_names()}
DATA_OUTPUTS = list(DATA_FILES.values())
# Peak memory (MB) by source: torch + torchvision alone take ~0.9 GB (imagefolder, cifar10,
# downloads); VWW also parses the COCO instances JSON (~1-2 GB per 2014 file once loaded). Raw
# uint8 arrays of the array sources stay in memory; the resized images stream to disk.
_DATA_MEM_MB = {"digits": 1500, "fashion_mnist": 3000, "cifar10": 3000, "imagefolder": 3000, "vww": 12000}


rule data:
    """Decode, split (seeded, stratified) and resize the dataset; images stream to disk."""
    output:
        **DATA_FILES,
    params:
        dataset=config["dataset"],
    log:
        log_of("data", DATASET),
    benchmark:
        bench_of("data", DATASET),
    threads: 8  # decoding threads; Snakemake lowers this to --cores when fewer
    resources:
        mem_mb=_DATA_MEM_MB[config["dataset"]["source"]],
        runtime=240 if config["dataset"]["source"] in ("vww", "imagefolder") else 30,
    conda:
        env("torch")
    script:
        "../scripts/data.py"


ALL_TARGETS.extend(DATA_OUTPUTS)
