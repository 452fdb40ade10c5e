# Stage 2: the search space enumerated into fixed-size architecture strings with their costs.


rule enumerate_space:
    """One row per initial net: arch string, genes, params, MACs, peak SRAM, flash, F, narrowest
    stage, TyBox device need, constraint flags (device limits, trainability guards, feasible)."""
    output:
        candidates=f"{RESULTS}/space/candidates.parquet",
    params:
        code=code_of("enumerate_space"),
        search_space=config["search_space"],
        constraints=config["constraints"],
        device={k: config["device"][k] for k in ("ram_bytes", "min_buffer_samples")},
        accounting=config["tybox"]["accounting"],
        instruction_target=config["tybox"]["target"] if config["constraints"].get("max_instructions") else None,
    log:
        log_of("space", "enumerate"),
    benchmark:
        bench_of("space", "enumerate"),
    conda:
        env("core")
    resources:
        **sized("enumerate_space"),
    script:
        "../scripts/enumerate_space.py"


ALL_TARGETS.append(rules.enumerate_space.output.candidates)
