# tinyevo: run `snakemake --cores N` from the repository root (see README.md).
# The workflow lives in workflow/Snakefile; `rule all` is defined here so that it is the default
# target (Snakemake takes the default target from the main Snakefile, not from includes).

include: "workflow/Snakefile"


rule all:
    """Default target: the final outputs of every stage (each workflow/rules/*.smk adds its own)."""
    input:
        ALL_TARGETS,
    default_target: True
