# Stage 10: the report. Every table of the run is rendered to HTML, one job per report section
# (rule report_tables: one Python process renders the section's tables, each still its own item
# of the report with its own caption), the front page summarises the deployed net and the
# scenarios (rule report_summary, shown first by workflow/report/workflow.rst), and, after every
# other job, the stage-time tables are made from the benchmark files (rule report_stage_times).
# Every plot rule marks its PNGs with report(); `snakemake --report results/report.html`
# (make report) collects them with the captions in workflow/report/. Plot style/dpi (report.*)
# only reach the plot rules, so changing them re-runs plots and report rules, never a computation.

# name -> (category, Parquet table, caption)
REPORT_TABLES = {
    "data_stats": ("Data", rules.data.output.stats,
                   "Per-channel mean and standard deviation (on the [0, 1] scale) of the train split; every "
                   "stage normalises its inputs with these values."),
    "data_manifest": ("Data", rules.data.output.manifest,
                      "One row per image: its index in the split's array, label, split and source id/path."),
    "data_classes": ("Data", rules.data.output.classes,
                     "Images per split and class, and the files skipped as corrupt (dataset.skip_corrupt)."),
    "space_candidates": ("Space", rules.enumerate_space.output.candidates,
                         "The initial population: architecture string, genes, parameters, MACs per image, peak "
                         "int8 activation SRAM (largest pair of consecutive activations), int8 flash, feature "
                         "size F, narrowest stage width (min_stage_width), TyBox device need (device_bytes), one "
                         "ok_<limit> flag per configured limit, ok_device, one ok_<guard> per trainability guard, "
                         "within_limits (device limits hold), trainable (guards hold) and feasible (both)."),
    "rank_initial": ("Proxies", RANK_OUTPUTS["ranked"],
                     "Zero-cost proxy scores of every initial net, their z-scores (sample std over the "
                     "population) and AVG (the paper's mean z-score), r_<proxy> (mid-rank CDF in the "
                     "population, rank method) and score, the value of the configured ranking.method; rank 1 "
                     "is the best score. Larger is better for every proxy."),
    "rank_spread": ("Proxies", RANK_OUTPUTS["spread"],
                    "Spread of each proxy over the population (finite and NaN counts, mean, std, min, max, "
                    "coefficient of variation). Whether a proxy tells architectures apart rather than "
                    "initialisations is the informativeness table's job."),
    "rank_normalisation": ("Proxies", RANK_OUTPUTS["norm"],
                           "The initial pool every net is ranked against (the children of the evolution too): per "
                           "proxy its mean, std and weight (kind moments) and its sorted finite scores (kind pool); "
                           "method = ranking.method."),
    "evolution_selected": ("Evolution", f"{RESULTS}/evolution/selected.parquet",
                           "Best constrained (C, among feasible nets) and unconstrained (NC, among trainable nets) "
                           "nets by score before evolution (initial population) and after (whole history): the "
                           "paper's Table 1/4."),
    "evolution_history": ("Evolution", f"{RESULTS}/evolution/history.parquet",
                          "Every net the search saw: the initial nets (cycle 0) and one row per child with its "
                          "parent, the mutation (gene, stage, old and new value), proxies, AVG, score, costs, "
                          "device need and the constraint and guard flags."),
    "evolution_population": ("Evolution", f"{RESULTS}/evolution/population.parquet",
                             "The population after the last cycle (aging: the youngest nets; nsga2: the last "
                             "generation's survivors with their front rank and crowding distance)."),
    "evolution_pareto": ("Evolution", f"{RESULTS}/evolution/pareto.parquet",
                         "The Pareto set of the feasible nets the search evaluated: no other feasible net has a "
                         "higher score at no higher cost in every objective of evolution.objectives."),
    "evolution_hypervolume": ("Evolution", f"{RESULTS}/evolution/hypervolume.parquet",
                              "Hypervolume of the feasible nets found so far (normalised objectives, fixed "
                              "reference point: the initial pool's lowest score and the device limits) per "
                              "generation or cycle cut, with the number of children evaluated and the front size."),
    **FINAL_ROUND_TABLES,  # the final round's choice (+ finalists when final_round.k > 0), final_round.smk
    "train_C_metrics": ("Training", f"{RESULTS}/train/C/metrics.parquet",
                        "Final and best test accuracy of the constrained winner C."),
    "train_C_history": ("Training", f"{RESULTS}/train/C/history.parquet",
                        "Per-epoch train/test loss (per-sample mean) and accuracy, learning rate and seconds of C."),
    "train_NC_metrics": ("Training", f"{RESULTS}/train/NC/metrics.parquet",
                         "Final and best test accuracy of the unconstrained winner NC."),
    "train_NC_history": ("Training", f"{RESULTS}/train/NC/history.parquet",
                         "Per-epoch train/test loss and accuracy of NC."),
    "train_C_confusion": ("Training", f"{RESULTS}/train/C/confusion.parquet",
                          "Confusion matrix of C on the test split in long format (true class, predicted class, count)."),
    "validation_correlations": ("Validation", f"{RESULTS}/validation/correlations.parquet",
                                "Search quality on this dataset: for every measure (each proxy, each ranking "
                                "method, score = the configured one, params, MACs, the narrowest stage width, "
                                "random) and target (val / test accuracy of the briefly trained sample), "
                                "Spearman and Kendall with bootstrap 95 % intervals, the paired interval of "
                                "the difference to params, precision at the top, the measure's pick and its "
                                "regret. Defaults are chosen on val, never on test."),
    "validation_trained": ("Validation", f"{RESULTS}/validation/trained.parquet",
                           "The trained nets (stratified sample, every measure's pick, the repeated-seed "
                           "nets) with their costs and validation and test accuracy."),
    "validation_noise": ("Validation", f"{RESULTS}/validation/noise.parquet",
                         "Noise ceiling: Spearman between two training seeds of the same nets; a measure "
                         "cannot be expected to predict one seed's accuracy better than another seed does."),
    "validation_plan": ("Validation", f"{RESULTS}/validation/plan.parquet",
                        "What the validation stage trains and why: slot, role (sample, pick, seed), measure, "
                        "arch, seed."),
    "compress_pruning": ("Compression", f"{RESULTS}/compress/C/pruning.parquet",
                         "Every structured-pruning step of C (the thesis's Table 2): layer, filters kept/total, "
                         "parameters, feature size F, size and accuracy, and whether its TyBox buffer fits."),
    "compress_summary": ("Compression", f"{RESULTS}/compress/C/summary.parquet",
                         "Baseline float, chosen pruned float, and pruned int8 feature extractor + float classifier: "
                         "size (weights + activations), share of the baseline and test accuracy (the thesis's Table 1)."),
    "tybox_memory": ("TyBox", f"{RESULTS}/tybox/C/memory.parquet",
                     "The memory model of the generated C++ term by term (FE weights, activation arena, classifier, "
                     "buffer of N_B samples), predicted and measured from the compiled object (size/nm); with "
                     "tybox.target cortex-m4f also measured from the Cortex-M4F build (target_measured)."),
    "tybox_target": ("TyBox", f"{RESULTS}/tybox/C/target.parquet",
                     "The build target of the generated C++ (tybox.target): the library's flash and static RAM "
                     "from that build against the memory model and the budget, and on cortex-m4f the "
                     "instructions QEMU executes (-icount, an emulator count, not cycles) per inference, per "
                     "prediction, per SGD step on one buffered sample and per training step over the full "
                     "buffer, instructions per MAC of the feature extractor, and the learning-stream check "
                     "against the numpy reference (samples, largest weight difference)."),
    **{
        f"scenario_{s}": ("Scenarios", f"{RESULTS}/scenarios/{s}/summary.parquet",
                          f"{s.replace('_', ' ')}: final accuracy (mean and std over the repetitions) of each "
                          "variant (tybox, tinyol, float), with the accuracy at the start, just before the change "
                          "point and its lowest point after it, and the learning settings it ran with (lr, loss, "
                          "start of the new-class rows; settings_from = validation when the tuning chose them).")
        for s in config["scenarios"]["names"]
    },
    **{
        f"scenario_{s}_tune_{v}": ("Scenarios", f"{RESULTS}/scenarios/{s}/tune/{v}.parquet",
                                   f"{s.replace('_', ' ')}, learner {v}: the learning-settings sweep on validation "
                                   "streams of training images (never the evaluation set): per lr, loss and start "
                                   "of the new-class rows the criterion (mean accuracy after the change point), the "
                                   "final and new-class accuracy; chosen = the setting of the evaluation run.")
        for s in config["scenarios"]["names"]
        for v in config["scenarios"]["variants"]
        if config["scenarios"]["tune"]["enabled"]
    },
}


if not VALIDATION_ENABLED:  # validation.enabled: false, the stage is not part of the run
    REPORT_TABLES = {name: t for name, t in REPORT_TABLES.items() if t[0] != "Validation"}
REPORT_SECTIONS = sorted({sec for sec, _, _ in REPORT_TABLES.values()})


rule report_tables:
    """Every Parquet table of {section} rendered as HTML, in one job; each HTML file is its own
    report item (pattern {table}.html) with the table's caption (params.captions)."""
    input:
        unpack(_section_tables),
    output:
        report(
            directory(f"{RESULTS}/report/tables/{{section}}"),
            patterns=["{table}.html"],
            caption="../report/table.rst",
            category="{section}",
            labels={"table": "{table}"},
        ),
    wildcard_constraints:
        section="|".join(REPORT_SECTIONS),
    params:
        code=code_of("report_tables"),
        titles=lambda wildcards: {name: name.replace("_", " ") for name in _section_tables(wildcards)},
        captions=lambda wildcards: {name: REPORT_TABLES[name][2] for name in _section_tables(wildcards)},
        max_rows=2000,
    log:
        log_of("report", "tables_{section}"),
    benchmark:
        bench_of("report", "tables_{section}"),
    conda:
        env("core")
    resources:
        **sized("report_tables"),
    script:
        "../scripts/report_tables.py"


REPORT_SUMMARY = {"rst": f"{RESULTS}/report/summary.rst", "html": f"{RESULTS}/report/summary.html"}


rule report_summary:
    """The front page: the deployed net C (architecture, float and int8 accuracy, flash and RAM
    against the device budget, buffer samples) and one line per scenario."""
    input:
        choice=FINAL_OUTPUTS["choice"],
        compress=f"{RESULTS}/compress/C/summary.parquet",
        memory=f"{RESULTS}/tybox/C/memory.parquet",
        target=f"{RESULTS}/tybox/C/target.parquet",
        scenarios=[f"{SCEN_DIR}/{s}/summary.parquet" for s in SCENARIO_NAMES],
    output:
        rst=REPORT_SUMMARY["rst"],
        html=report(REPORT_SUMMARY["html"], caption="../report/summary.rst", category="Summary",
                    labels={"table": "summary"}),
    params:
        code=code_of("report_summary"),
        device=config["device"],
        accounting=config["tybox"]["accounting"],
        scenarios={s: _SCEN_NET[s] for s in SCENARIO_NAMES},
    log:
        log_of("report", "summary"),
    benchmark:
        bench_of("report", "summary"),
    conda:
        env("core")
    resources:
        **sized("report_summary"),
    script:
        "../scripts/report_summary.py"


REPORT_TABLE_DIRS = [f"{RESULTS}/report/tables/{sec}" for sec in REPORT_SECTIONS]
ALL_TARGETS.extend(REPORT_TABLE_DIRS)
ALL_TARGETS.extend(REPORT_SUMMARY.values())

# Everything the default target builds apart from the stage times themselves: the stage-time
# job waits for all of it, so every other job of the run has written its benchmark file.
_BEFORE_STAGE_TIMES = list(dict.fromkeys(ALL_TARGETS))
STAGE_TIMES = {
    "stages": f"{RESULTS}/report/stage_times.parquet",
    "jobs": f"{RESULTS}/report/job_times.parquet",
    "stages_html": f"{RESULTS}/report/tables/Performance/stage_times.html",
    "jobs_html": f"{RESULTS}/report/tables/Performance/job_times.html",
}


rule report_stage_times:
    """Wall time, CPU time and peak memory per job and per stage, from every benchmark file of
    the run (tinyevo.report.stage_times). It runs last: its input is every other final output.
    It has no benchmark file of its own (it would read its own, stale, one)."""
    input:
        _BEFORE_STAGE_TIMES,
    output:
        stages=STAGE_TIMES["stages"],
        jobs=STAGE_TIMES["jobs"],
        stages_html=report(STAGE_TIMES["stages_html"], caption="../report/stage_times.rst",
                           category="Performance", labels={"table": "stage_times"}),
        jobs_html=report(STAGE_TIMES["jobs_html"], caption="../report/stage_times.rst",
                         category="Performance", labels={"table": "job_times"}),
    params:
        code=code_of("report_stage_times"),
        bench_dir=f"{RESULTS}/benchmarks",
    log:
        log_of("report", "stage_times"),
    conda:
        env("core")
    resources:
        **sized("report_stage_times"),
    script:
        "../scripts/report_stage_times.py"


localrules:
    report_tables,
    report_summary,
    report_stage_times,


ALL_TARGETS.extend(STAGE_TIMES.values())
