# Stage 6: training the evolution winners (and their class-subset branches), and validating the
# zero-cost proxies by training a random sample of the initial population.

TRAIN_DIR = f"{RESULTS}/train"
VALIDATION_DIR = f"{RESULTS}/validation"
_TRAIN_DATA = f"{RESULTS}/data/{DATASET}"
_TRAIN_DATA_FILES = [f"{_TRAIN_DATA}/{s}_{a}.npy" for s in ("train", "test") for a in ("x", "y")] + [
    f"{_TRAIN_DATA}/stats.parquet"
]
_TRAIN_NET_RE = "C|NC|C-inc|C-src"
# Measures correlated with accuracy in the proxy validation (same order as tinyevo.train.validation).
VALIDATION_MEASURES = [*config["proxies"]["names"], "avg", "params", "macs"]


rule train:
    """Train the evolution winner of {net} (C-inc / C-src: net C on a class subset)."""
    input:
        selected=f"{RESULTS}/evolution/selected.parquet",
        data=_TRAIN_DATA_FILES,
    output:
        model=f"{TRAIN_DIR}/{{net}}/model.pt",
        history=f"{TRAIN_DIR}/{{net}}/history.parquet",
        metrics=f"{TRAIN_DIR}/{{net}}/metrics.parquet",
        confusion=f"{TRAIN_DIR}/{{net}}/confusion.parquet",
    wildcard_constraints:
        net=_TRAIN_NET_RE,
    params:
        train=_train_settings(),
        search_space=config["search_space"],
        classes=_train_subset,
        device=config["compute"]["device"],
        amp=config["compute"]["amp"],
        seed=config["train"]["seed"],
    log:
        log_of("train", "{net}"),
    conda:
        env("torch")
    threads: config["train"]["threads"]
    resources:
        gpu=_train_gpu(),
        mem_mb=8000,
        runtime=max(30, 3 * config["train"]["epochs"]),
    script:
        "../scripts/train.py"


rule plot_training:
    """Training curve (loss and accuracy per epoch) of {net}."""
    input:
        history=f"{TRAIN_DIR}/{{net}}/history.parquet",
    output:
        report(f"{TRAIN_DIR}/{{net}}/curve.png", caption="../report/training_curve.rst", category="Training",
               subcategory="{net}"),
    wildcard_constraints:
        net=_TRAIN_NET_RE,
    params:
        style=config["report"]["style"],
        dpi=config["report"]["dpi"],
    log:
        log_of("train", "plot_{net}"),
    conda:
        env("core")
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    script:
        "../scripts/train_plot.py"


rule validate_net:
    """Proxy validation: train the {i}-th net of the seeded sample of the ranked population."""
    input:
        ranked=f"{RESULTS}/rank/initial.parquet",
        data=_TRAIN_DATA_FILES,
    output:
        f"{VALIDATION_DIR}/nets/{{i}}.parquet",
    wildcard_constraints:
        i=r"\d+",
    params:
        nets=config["validation"]["nets"],
        epochs=config["validation"]["epochs"],
        seed=config["validation"]["seed"],
        proxies=config["proxies"]["names"],
        search_space=config["search_space"],
        train=_train_settings(config["validation"]["epochs"], config["validation"]["seed"]),
        device=config["compute"]["device"],
        amp=config["compute"]["amp"],
    log:
        log_of("validation", "net_{i}"),
    conda:
        env("torch")
    threads: config["train"]["threads"]
    resources:
        gpu=_train_gpu(),
        mem_mb=8000,
        runtime=max(20, 5 * config["validation"]["epochs"]),
    script:
        "../scripts/validate_net.py"


rule validation_gather:
    """Spearman / Kendall correlation of every proxy, AVG, params and MACs with test accuracy."""
    input:
        expand(f"{VALIDATION_DIR}/nets/{{i}}.parquet", i=range(config["validation"]["nets"])),
    output:
        trained=f"{VALIDATION_DIR}/trained.parquet",
        correlations=f"{VALIDATION_DIR}/correlations.parquet",
    params:
        proxies=config["proxies"]["names"],
        min_abs_rho=config["validation"]["min_abs_rho"],
        max_p=config["validation"]["max_p"],
    log:
        log_of("validation", "gather"),
    conda:
        env("core")
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    script:
        "../scripts/validate_gather.py"


rule plot_validation:
    """Test accuracy against each measure (one scatter plot per measure)."""
    input:
        trained=f"{VALIDATION_DIR}/trained.parquet",
        correlations=f"{VALIDATION_DIR}/correlations.parquet",
    output:
        [
            report(p, caption="../report/validation_scatter.rst", category="Validation")
            for p in expand(f"{VALIDATION_DIR}/scatter_{{measure}}.png", measure=VALIDATION_MEASURES)
        ],
    params:
        measures=VALIDATION_MEASURES,
        style=config["report"]["style"],
        dpi=config["report"]["dpi"],
    log:
        log_of("validation", "plot"),
    conda:
        env("core")
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    script:
        "../scripts/validate_plot.py"


localrules:
    plot_training,
    validation_gather,
    plot_validation,


ALL_TARGETS.extend(
    [f"{TRAIN_DIR}/{net}/{f}" for net in ("C", "NC") for f in ("metrics.parquet", "model.pt", "curve.png")]
    + [f"{VALIDATION_DIR}/correlations.parquet"]
    + expand(f"{VALIDATION_DIR}/scatter_{{measure}}.png", measure=VALIDATION_MEASURES)
)
