"""tinyevo.cluster: the one-line-per-failed-SLURM-job report of a Snakemake log."""

from __future__ import annotations

from pathlib import Path

from tinyevo.cluster import failure_report, slurm_failures

EXCERPT = Path(__file__).parent / "data" / "slurm_run_excerpt.log"

# A last attempt that ran out of time, and one out of memory (no "Trying to restart" follows), in
# the executor's words.
LAST_ATTEMPTS = """\
[Thu Dec  3 06:30:00 2026]
rule train:
    input: results/evolution/choice.parquet
    output: results/train/C/model.pt
    log: results/logs/train/C.log
    jobid: 25
    wildcards: net=C
    threads: 2
    resources: tmpdir=<TBD>, mem_mb=3200, mem=3.2 GB, runtime=58, slurm_partition=gpu, gpu=1
Shell command: None
Job 25 has been submitted with SLURM jobid 40 (log: /home/user/run/.snakemake/slurm_logs/rule_train/C/40.log).
[Thu Dec  3 07:28:41 2026]
Error in rule train:
    message: SLURM-job '40' failed, SLURM status is: 'TIMEOUT'. Detailed failure reason unavailable (status command is not 'sacct').For further error details see the cluster/cloud log and the log files of the involved rule(s).
    jobid: 25
    output: results/train/C/model.pt
    log: results/logs/train/C.log, /home/user/run/.snakemake/slurm_logs/rule_train/C/40.log (check log file(s) for error details)
    external_jobid: 40
[Thu Dec  3 07:29:00 2026]
rule score_shard:
    output: results/score/shards/1-of-2.parquet
    jobid: 7
    wildcards: scatteritem=1-of-2
    resources: tmpdir=<TBD>, mem_mb=6800, runtime=74, slurm_partition=cpu
Shell command: None
Job 7 has been submitted with SLURM jobid 41 (log: /home/user/run/.snakemake/slurm_logs/rule_score_shard/1-of-2/41.log).
Error in rule score_shard:
    message: SLURM-job '41' failed, SLURM status is: 'OUT_OF_MEMORY'. Reason: Step 0: OutOfMemory.
    jobid: 7
    external_jobid: 41
"""


def test_retried_failures_of_a_real_run():
    failures = slurm_failures(EXCERPT.read_text().splitlines())
    assert [(f.rule, f.slurm_jobid, f.state, f.retried_as) for f in failures] == [
        ("validate_net", "9", "FAILED", "12"), ("evolve_plots", "13", "TIMEOUT", "18")]
    killed, late = failures
    assert killed.wildcards == "i=2" and killed.resources["mem_mb"] == "1600"
    assert killed.next_resources["mem_mb"] == "3200" and killed.next_resources["runtime"] == "20"
    assert late.resources["runtime"] == "1" and late.next_resources["runtime"] == "2"
    assert killed.slurm_log.endswith("rule_validate_net/2/9.log")

    report = failure_report(EXCERPT).splitlines()
    assert report[0].startswith("tinyevo: 2 SLURM jobs failed (2 re-submitted by the profile's retries)")
    assert report[1] == ("  rule validate_net (i=2), SLURM job 9: FAILED, its process ended with an error or was "
                         "killed on the node; retried as SLURM job 12")
    assert report[2] == ("  rule evolve_plots, SLURM job 13: TIMEOUT, ran past its time limit of 1 min "
                         "(runtime=1); retried as SLURM job 18 with runtime=2")


def test_a_last_attempt_says_what_to_raise(tmp_path):
    log = tmp_path / "run.log"
    log.write_text(LAST_ATTEMPTS)
    lines = failure_report([log, tmp_path / "missing.log"]).splitlines()
    assert lines[0].startswith("tinyevo: 2 SLURM jobs failed (0 re-submitted")
    assert lines[1] == ("  rule train (net=C), SLURM job 40: TIMEOUT, ran past its time limit of 58 min (runtime=58); "
                        "not retried: raise it, e.g. snakemake ... --set-resources train:runtime=116 "
                        "(or under set-resources: in the profile); "
                        "its SLURM log: /home/user/run/.snakemake/slurm_logs/rule_train/C/40.log")
    assert lines[2].startswith("  rule score_shard (scatteritem=1-of-2), SLURM job 41: OUT_OF_MEMORY, ran out of its "
                               "memory of 6800 MB (mem_mb=6800); not retried: raise it, e.g. snakemake ... "
                               "--set-resources score_shard:mem_mb=13600")


def test_no_report_without_slurm_failures(tmp_path):
    log = tmp_path / "local.log"
    # a local run's failed job: an error block without a SLURM message
    log.write_text("rule train:\n    jobid: 3\n    resources: mem_mb=1000, runtime=10\n"
                   "Error in rule train:\n    message: None\n    jobid: 3\n    output: results/train/C/model.pt\n")
    assert slurm_failures(log.read_text().splitlines()) == []
    assert failure_report(log) == "" and failure_report(None) == ""
