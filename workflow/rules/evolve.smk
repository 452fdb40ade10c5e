# Stage 5: aging evolution over the search space (tinyevo.search), then the plots.
# The loop checkpoints under results/evolution/checkpoint/ (not a declared output, so a failed
# or killed job keeps it); a re-run with the same params resumes from it.

EVO_DIR = f"{RESULTS}/evolution"
# never more cores than the B children of a cycle can use (scoring.threads torch threads each)
EVO_THREADS = min(config["evolution"]["threads"],
                  config["evolution"]["children_per_cycle"] * config["scoring"]["threads"])
EVO_PLOTS = [f"{EVO_DIR}/plots/{name}.png" for name in ("best_avg", "avg_vs_macs", "feasible_share", "pareto",
                                                         "hypervolume")]


rule evolve:
    """Aging evolution from the ranked initial nets (score by ranking.method against the initial
    pool; device limits, fit_device and trainability guards): history, population, winners."""
    input:
        initial=f"{RESULTS}/rank/initial.parquet",
        norm=f"{RESULTS}/rank/normalisation.parquet",
        train_x=rules.data.output.train_x,
        train_y=rules.data.output.train_y,
        stats=rules.data.output.stats,
    output:
        history=f"{EVO_DIR}/history.parquet",
        population=f"{EVO_DIR}/population.parquet",
        selected=f"{EVO_DIR}/selected.parquet",
        pareto=f"{EVO_DIR}/pareto.parquet",
        hypervolume=f"{EVO_DIR}/hypervolume.parquet",
    params:
        code=code_of("evolve"),
        evolution=config["evolution"],
        constraints=config["constraints"],
        target={k: config["device"][k] for k in ("ram_bytes", "min_buffer_samples")},
        accounting=config["tybox"]["accounting"],
        instruction_target=config["tybox"]["target"] if config["constraints"].get("max_instructions") else None,
        ranking=config["ranking"],
        search_space=config["search_space"],
        proxies={**{k: config["proxies"][k] for k in ("names", "batch_size", "seed")},
                 "threads": config["scoring"]["threads"]},
        device=config["compute"]["device"],
        cache_dir=f"{RESULTS}/cache/scores",
        checkpoint_dir=f"{EVO_DIR}/checkpoint",
    log:
        log_of("evolution"),
    benchmark:
        bench_of("evolution"),
    conda:
        env("torch")
    threads: EVO_THREADS
    resources:
        **sized("evolve"),
    script:
        "../scripts/evolve.py"


rule evolve_plots:
    """Best score per cycle (C/NC), score vs MACs with the Pareto front, feasible share over time,
    score against each cost of evolution.objectives with the Pareto set, hypervolume over the search."""
    input:
        history=f"{EVO_DIR}/history.parquet",
        pareto=f"{EVO_DIR}/pareto.parquet",
        hypervolume=f"{EVO_DIR}/hypervolume.parquet",
    output:
        best=report(EVO_PLOTS[0], caption="../report/evolution_best_avg.rst", category="Evolution"),
        scatter=report(EVO_PLOTS[1], caption="../report/evolution_avg_vs_macs.rst", category="Evolution"),
        feasible=report(EVO_PLOTS[2], caption="../report/evolution_feasible_share.rst", category="Evolution"),
        pareto=report(EVO_PLOTS[3], caption="../report/evolution_pareto.rst", category="Evolution"),
        hypervolume=report(EVO_PLOTS[4], caption="../report/evolution_hypervolume.rst", category="Evolution"),
    params:
        code=code_of("evolve_plots"),
        objectives=config["evolution"]["objectives"],
        constraints=config["constraints"],
        target={k: config["device"][k] for k in ("ram_bytes", "min_buffer_samples")},
        accounting=config["tybox"]["accounting"],
        instruction_target=config["tybox"]["target"] if config["constraints"].get("max_instructions") else None,
        style=config["report"]["style"],
        dpi=config["report"]["dpi"],
    log:
        log_of("evolution", "plots"),
    benchmark:
        bench_of("evolution", "plots"),
    conda:
        env("core")
    resources:
        **sized("evolve_plots"),
    script:
        "../scripts/evolve_plots.py"


ALL_TARGETS.extend([f"{EVO_DIR}/selected.parquet", f"{EVO_DIR}/pareto.parquet", *EVO_PLOTS])
