# The resolved configuration of the run (defaults filled, user comments kept).


localrules:
    resolved_config,


rule resolved_config:
    """The resolved configuration (defaults filled, comments kept)."""
    output:
        f"{RESULTS}/config.resolved.yaml",
    params:
        code=code_of("resolved_config"),
        text=dump_yaml(_RESOLVED_DOC),
    log:
        log_of("config"),
    benchmark:
        bench_of("config"),
    conda:
        env("core")
    script:
        "../scripts/resolved_config.py"


ALL_TARGETS.append(f"{RESULTS}/config.resolved.yaml")
