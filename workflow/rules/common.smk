# Shared helpers for every rule file. Each stage file appends its final outputs to ALL_TARGETS;
# `rule all` (workflow/Snakefile) requests them.

ALL_TARGETS = []


def env(name):
    """Path of a conda environment spec, relative to the rule files."""
    return f"../../envs/{name}.yaml"


def log_of(stage, name="main"):
    return f"{RESULTS}/logs/{stage}/{name}.log"


localrules:
    resolved_config,


rule resolved_config:
    """The resolved configuration (defaults filled, comments kept)."""
    output:
        f"{RESULTS}/config.resolved.yaml",
    params:
        text=dump_yaml(_RESOLVED_DOC),
    log:
        log_of("config"),
    conda:
        env("core")
    script:
        "../scripts/resolved_config.py"


ALL_TARGETS.append(f"{RESULTS}/config.resolved.yaml")
