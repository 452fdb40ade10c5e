"""Rule report_stage_times: wall time, CPU time and peak memory per job and per stage from the
run's benchmark files (results/benchmarks/<stage>/<job>.tsv)."""

import os
import sys

sys.path.insert(0, os.path.dirname(snakemake.scriptdir))  # noqa: F821

from tinyevo.report.stage_times import to_markdown, write_stage_times  # noqa: E402
from tinyevo.runtime import setup_logging  # noqa: E402

sm = snakemake  # noqa: F821
log = setup_logging(sm.log[0])
jobs, stages = write_stage_times(sm.params.bench_dir, sm.output.stages, sm.output.jobs, sm.output.stages_html,
                                 sm.output.jobs_html)
log.info("%d benchmark files of %d stages:\n%s", len(jobs), stages["stage"].nunique() - 1, to_markdown(stages))
