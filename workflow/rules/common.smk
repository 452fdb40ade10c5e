# Shared helpers for every rule file. Each stage file appends its final outputs to ALL_TARGETS;
# `rule all` (workflow/Snakefile) requests them.

ALL_TARGETS = []


def env(name):
    """Path of a conda environment spec, relative to the rule files."""
    return f"../../envs/{name}.yaml"


def log_of(stage, name="main"):
    return f"{RESULTS}/logs/{stage}/{name}.log"
