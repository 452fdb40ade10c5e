# Stage 9: on-device learning scenarios (the TyBox thesis, "Neural Architecture Search for Tiny Incremental On-Device Learning"). One job per {scenario} in
# scenarios.names and {variant} in scenarios.variants runs every repetition over the same seeded
# streams: tybox / tinyol through the compiled harness of the generated C++ (buffer N_B / 1),
# float with the trained float model and the same learning rule in Python. A gather per scenario
# writes curves.parquet + summary.parquet; a separate plot rule draws mean +- std per variant.

from tinyevo.scenarios import VARIANTS as _SCEN_VARIANTS

SCEN_DIR = f"{RESULTS}/scenarios"
SCENARIO_NAMES = list(config["scenarios"]["names"])
SCENARIO_VARIANTS = list(config["scenarios"]["variants"])
# Bad scenario settings (change point beyond the stream, class ids the dataset lacks, ...) are
# caught by the preflight checks of the config (tinyevo.preflight) before any job runs;
# data-dependent checks (held-out images) fail in the job.


rule scenario_tune:
    """Learning settings of learner {variant} in {scenario}: the scenarios.tune grid on seeded
    validation streams of training images (disjoint from the evaluation pool)."""
    input:
        unpack(_scenario_inputs),
    output:
        f"{SCEN_DIR}/{{scenario}}/tune/{{variant}}.parquet",
    wildcard_constraints:
        scenario="|".join(_SCENARIOS),
        variant="|".join(_SCEN_VARIANTS),
    params:
        code=code_of("scenario_tune"),
        data_dir=DATA_DIR,
        scenarios=_scenario_settings,
        num_classes=config["search_space"]["num_classes"],
        tybox=config["tybox"],
        device=config["device"],
        compute_device=config["compute"]["device"],
        torch_threads=1,
    log:
        log_of("scenarios", "{scenario}_{variant}_tune"),
    benchmark:
        bench_of("scenarios", "{scenario}_{variant}_tune"),
    conda:
        env("tf")
    priority: _branch_priority("scenario_tune")
    threads: 1
    resources:
        **sized("scenario_tune"),
    script:
        "../scripts/scenario_tune.py"


rule scenario_run:
    """All repetitions of {scenario} for learner {variant} -> its accuracy curves (with the
    settings its scenario_tune job chose, or the config's when scenarios.tune.enabled is false)."""
    input:
        unpack(_scenario_run_inputs),
    output:
        f"{SCEN_DIR}/{{scenario}}/runs/{{variant}}.parquet",
    wildcard_constraints:
        scenario="|".join(_SCENARIOS),
        variant="|".join(_SCEN_VARIANTS),
    params:
        code=code_of("scenario_run"),
        data_dir=DATA_DIR,
        scenarios=_scenario_settings,
        num_classes=config["search_space"]["num_classes"],
        tybox=config["tybox"],
        device=config["device"],
        compute_device=config["compute"]["device"],
        torch_threads=1,
    log:
        log_of("scenarios", "{scenario}_{variant}"),
    benchmark:
        bench_of("scenarios", "{scenario}_{variant}"),
    conda:
        env("tf")
    priority: _branch_priority("scenario_run")
    threads: 1
    resources:
        **sized("scenario_run"),
    script:
        "../scripts/scenario_run.py"


rule scenario_gather:
    """Curves of every variant of {scenario} + the summary (final accuracy mean / std)."""
    input:
        lambda wc: [f"{SCEN_DIR}/{wc.scenario}/runs/{v}.parquet" for v in SCENARIO_VARIANTS],
    output:
        curves=f"{SCEN_DIR}/{{scenario}}/curves.parquet",
        summary=f"{SCEN_DIR}/{{scenario}}/summary.parquet",
    wildcard_constraints:
        scenario="|".join(_SCENARIOS),
    params:
        code=code_of("scenario_gather"),
        change_point=config["scenarios"]["change_point"],
    log:
        log_of("scenarios", "{scenario}_gather"),
    benchmark:
        bench_of("scenarios", "{scenario}_gather"),
    conda:
        env("core")
    threads: 1
    resources:
        **sized("scenario_gather"),
    script:
        "../scripts/scenario_gather.py"


rule scenario_plot:
    """Mean accuracy +- std per variant of {scenario}, change point marked."""
    input:
        curves=f"{SCEN_DIR}/{{scenario}}/curves.parquet",
    output:
        report(f"{SCEN_DIR}/{{scenario}}/curves.png", caption="../report/scenario_curves.rst",
               category="Scenarios", subcategory="{scenario}"),
    wildcard_constraints:
        scenario="|".join(_SCENARIOS),
    params:
        code=code_of("scenario_plot"),
        change_point=config["scenarios"]["change_point"],
        style=config["report"]["style"],
        dpi=config["report"]["dpi"],
    log:
        log_of("scenarios", "{scenario}_plot"),
    benchmark:
        bench_of("scenarios", "{scenario}_plot"),
    conda:
        env("core")
    threads: 1
    resources:
        **sized("scenario_plot"),
    script:
        "../scripts/scenario_plot.py"


localrules:
    scenario_gather,
    scenario_plot,


ALL_TARGETS.extend(
    [f"{SCEN_DIR}/{s}/{f}" for s in SCENARIO_NAMES for f in ("summary.parquet", "curves.png")]
)
