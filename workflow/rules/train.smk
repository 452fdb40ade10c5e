# Stage 6: training the evolution winners (and their class-subset branches), and the search-quality
# validation: a stratified sample of the initial nets and every measure's top picks, trained briefly.

TRAIN_DIR = f"{RESULTS}/train"
VALIDATION_DIR = f"{RESULTS}/validation"
_TRAIN_DATA_FILES = data_inputs("train", "test")
_TRAIN_NET_RE = "C|NC|C-inc|C-src"
# Search quality (validation stage): the measures and the number of training slots, known before
# any table exists (tinyevo.train.validation, imported without pandas or torch).
from tinyevo.train.validation import measure_names as _measure_names
from tinyevo.train.validation import pick_measures as _pick_measures
from tinyevo.train.validation import plan_size as _plan_size

_VALIDATION_DATA_FILES = data_inputs("train", "val", "test")
# validation.enabled: false leaves the stage out of `all` and the report (its rules stay, so an
# explicit target such as results/validation/correlations.parquet still runs it)
VALIDATION_ENABLED = bool(config["validation"]["enabled"])
_VALIDATION_METHOD = config.get("ranking", {}).get("method", "zscore")
VALIDATION_MEASURES = _measure_names(config["proxies"]["names"])
VALIDATION_SLOTS = _plan_size(config["validation"]["nets"], config["validation"]["top_k"],
                              config["validation"]["seeds"], config["validation"]["seed_nets"],
                              len(_pick_measures(VALIDATION_MEASURES)))


# The validation recipe: the `train` section with validation.epochs and, where set, validation.lr /
# validation.schedule; the seed comes from each plan slot, the threads from validation.threads.
_VALIDATION_SETTINGS = {
    **_train_settings(config["validation"]["epochs"]),
    **{k: config["validation"][k] for k in ("lr", "schedule") if config["validation"].get(k) is not None},
}
_VALIDATION_SETTINGS = {k: v for k, v in _VALIDATION_SETTINGS.items() if k not in ("seed", "threads")}


rule train:
    """Train the chosen net {net} (results/evolution/choice.parquet; C-inc / C-src: net C on a
    class subset; NC reuses C's outputs when it is C's net, see _train_same_as)."""
    input:
        unpack(_train_same_as),
        choice=f"{RESULTS}/evolution/choice.parquet",
        data=_TRAIN_DATA_FILES,
    output:
        model=f"{TRAIN_DIR}/{{net}}/model.pt",
        history=f"{TRAIN_DIR}/{{net}}/history.parquet",
        metrics=f"{TRAIN_DIR}/{{net}}/metrics.parquet",
        confusion=f"{TRAIN_DIR}/{{net}}/confusion.parquet",
    wildcard_constraints:
        net=_TRAIN_NET_RE,
    params:
        code=code_of("train"),
        train=_train_settings(),
        search_space=config["search_space"],
        classes=_train_subset,
        device=config["compute"]["device"],
        amp=config["compute"]["amp"],
        seed=config["train"]["seed"],
        # torch threads from the config, not the job's `threads` (which --cores lowers): the last
        # bits of a CPU training depend on them
        torch_threads=config["train"]["threads"],
    log:
        log_of("train", "{net}"),
    benchmark:
        bench_of("train", "{net}"),
    conda:
        env("torch")
    priority: _branch_priority("train")
    threads: config["train"]["threads"]
    resources:
        gpu=_train_gpu(),
        **sized("train"),
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
        code=code_of("train_plot"),
        style=config["report"]["style"],
        dpi=config["report"]["dpi"],
    log:
        log_of("train", "plot_{net}"),
    benchmark:
        bench_of("train", "plot_{net}"),
    conda:
        env("core")
    threads: 1
    resources:
        **sized("plot_training"),
    script:
        "../scripts/train_plot.py"


rule validation_plan:
    """Search quality, step 1: every measure of every initial net, and the training slots (a
    stratified sample of the pool, the top picks of every measure, the noise-ceiling seeds)."""
    input:
        ranked=f"{RESULTS}/rank/initial.parquet",
    output:
        plan=f"{VALIDATION_DIR}/plan.parquet",
        measures=f"{VALIDATION_DIR}/measures.parquet",
    params:
        code=code_of("validate_plan"),
        proxies=config["proxies"]["names"],
        method=_VALIDATION_METHOD,
        weights=config["proxies"].get("weights"),
        nets=config["validation"]["nets"],
        top_k=config["validation"]["top_k"],
        seeds=config["validation"]["seeds"],
        seed_nets=config["validation"]["seed_nets"],
        seed=config["validation"]["seed"],
        search_space=config["search_space"],
        slots=VALIDATION_SLOTS,
    log:
        log_of("validation", "plan"),
    benchmark:
        bench_of("validation", "plan"),
    conda:
        env("torch")
    threads: 1
    resources:
        **sized("validation_plan"),
    script:
        "../scripts/validate_plan.py"


rule validate_net:
    """Search quality, step 2: train the net of plan slot {i} with the validation recipe and
    evaluate it on the val and test splits."""
    input:
        plan=f"{VALIDATION_DIR}/plan.parquet",
        data=_VALIDATION_DATA_FILES,
    output:
        f"{VALIDATION_DIR}/nets/{{i}}.parquet",
    wildcard_constraints:
        i=r"\d+",
    params:
        code=code_of("validate_net"),
        search_space=config["search_space"],
        train=_VALIDATION_SETTINGS,
        device=config["compute"]["device"],
        amp=config["compute"]["amp"],
        torch_threads=config["validation"]["threads"],
    log:
        log_of("validation", "net_{i}"),
    benchmark:
        bench_of("validation", "net_{i}"),
    conda:
        env("torch")
    threads: config["validation"]["threads"]
    resources:
        gpu=_train_gpu(),
        **sized("validate_net"),
    script:
        "../scripts/validate_net.py"


rule validation_gather:
    """Search quality, step 3: Spearman / Kendall (bootstrap intervals), precision at the top and
    regret of every measure against val and test accuracy; the seed-to-seed noise ceiling."""
    input:
        plan=f"{VALIDATION_DIR}/plan.parquet",
        measures=f"{VALIDATION_DIR}/measures.parquet",
        nets=expand(f"{VALIDATION_DIR}/nets/{{i}}.parquet", i=range(VALIDATION_SLOTS)),
    output:
        trained=f"{VALIDATION_DIR}/trained.parquet",
        correlations=f"{VALIDATION_DIR}/correlations.parquet",
        noise=f"{VALIDATION_DIR}/noise.parquet",
    params:
        code=code_of("validate_gather"),
        proxies=config["proxies"]["names"],
        bootstrap=config["validation"]["bootstrap"],
        top_frac=config["validation"]["top_frac"],
        seed=config["validation"]["seed"],
        min_abs_rho=config["validation"]["min_abs_rho"],
        max_p=config["validation"]["max_p"],
    log:
        log_of("validation", "gather"),
    benchmark:
        bench_of("validation", "gather"),
    conda:
        env("core")
    threads: 1
    resources:
        **sized("validation_gather"),
    script:
        "../scripts/validate_gather.py"


rule plot_validation:
    """Val and test accuracy of the sampled nets against each measure (one plot per measure)."""
    input:
        trained=f"{VALIDATION_DIR}/trained.parquet",
        correlations=f"{VALIDATION_DIR}/correlations.parquet",
    output:
        [
            report(p, caption="../report/validation_scatter.rst", category="Validation")
            for p in expand(f"{VALIDATION_DIR}/scatter_{{measure}}.png", measure=VALIDATION_MEASURES)
        ],
    params:
        code=code_of("validate_plot"),
        measures=VALIDATION_MEASURES,
        style=config["report"]["style"],
        dpi=config["report"]["dpi"],
    log:
        log_of("validation", "plot"),
    benchmark:
        bench_of("validation", "plot"),
    conda:
        env("core")
    threads: 1
    resources:
        **sized("plot_validation"),
    script:
        "../scripts/validate_plot.py"


localrules:
    plot_training,
    validation_plan,
    validation_gather,
    plot_validation,


ALL_TARGETS.extend(
    [f"{TRAIN_DIR}/{net}/{f}" for net in ("C", "NC") for f in ("metrics.parquet", "model.pt", "curve.png")]
)
if VALIDATION_ENABLED:
    ALL_TARGETS.extend(
        [f"{VALIDATION_DIR}/{t}.parquet" for t in ("correlations", "noise")]
        + expand(f"{VALIDATION_DIR}/scatter_{{measure}}.png", measure=VALIDATION_MEASURES)
    )
