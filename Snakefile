# tinyevo: run `snakemake --cores N` from the repository root (see README.md).
include: "workflow/Snakefile"
