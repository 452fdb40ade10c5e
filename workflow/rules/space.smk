# Stage 2: the search space enumerated into fixed-size architecture strings with their costs.


rule enumerate_space:
    """One row per initial net: arch string, genes, params, MACs, peak SRAM, flash, F, flags."""
    output:
        f"{RESULTS}/space/candidates.parquet",
    params:
        search_space=config["search_space"],
        constraints=config["constraints"],
    log:
        log_of("space", "enumerate"),
    conda:
        env("core")
    resources:
        mem_mb=1000,
        runtime=10,
    script:
        "../scripts/enumerate_space.py"


ALL_TARGETS.append(f"{RESULTS}/space/candidates.parquet")
