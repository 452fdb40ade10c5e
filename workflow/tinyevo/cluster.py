"""What went wrong on the cluster, in one line per failed SLURM job.

Snakemake's log of a run through profiles/slurm tells the whole story, spread over many lines:
each job's block (``rule X:`` ... ``jobid: N`` ... ``wildcards:`` ... ``resources: ...
runtime=R``), the submissions (``Job N has been submitted with SLURM jobid M``), the executor's
error blocks (``Error in rule X:`` / ``message: SLURM-job 'M' failed, SLURM status is: 'STATE'``)
and the restarts (``Trying to restart job N.``). :func:`slurm_failures` reads them back and
:func:`failure_report` says, for each failed SLURM job, the rule, its wildcards, the SLURM state
in words, what the profile's ``retries`` did, and what to change when it was the last attempt: a
job that ran past its time limit names the limit (``runtime``) and the ``--set-resources`` that
raises it. The workflow prints the report when a run ends (``onsuccess`` / ``onerror``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

_JOB_HEADER = re.compile(r"^(local)?(?:rule|checkpoint) (\w+):$")
_FIELD = re.compile(r"^    (\w+): (.*)$")
_SUBMITTED = re.compile(r"Job (\d+) has been submitted with SLURM jobid (\d+)(?: \(log: (.*)\)\.)?")
_ERROR = re.compile(r"^Error in rule (\w+):$")
_SLURM_FAILED = re.compile(r"SLURM-job '(\d+)' failed(?: due to a node failure)?, SLURM status is: '(\w+)'")
_RESTART = re.compile(r"Trying to restart job (\d+)\.")

# SLURM job states (sacct / squeue) in words, and what the user does about them.
STATE_WORDS = {
    "CANCELLED": "cancelled (scancel by you or an administrator)",
    "FAILED": "its process ended with an error or was killed on the node",
    "TIMEOUT": "ran past its time limit",
    "OUT_OF_MEMORY": "ran out of its memory",
    "NODE_FAIL": "its node failed",
    "PREEMPTED": "preempted by a job of higher priority",
    "BOOT_FAIL": "its node did not boot",
    "DEADLINE": "reached its deadline",
}


@dataclass
class JobInfo:
    rule: str
    jobid: str
    wildcards: str = ""
    resources: dict[str, str] = field(default_factory=dict)


@dataclass
class SlurmFailure:
    rule: str
    jobid: str  # Snakemake's job id
    slurm_jobid: str
    state: str
    wildcards: str
    resources: dict[str, str]
    retried_as: str | None = None  # SLURM job id of the next attempt, if there was one
    next_resources: dict[str, str] | None = None
    slurm_log: str | None = None  # the job's SLURM log (.snakemake/slurm_logs/...)

    @property
    def retried(self) -> bool:
        return self.retried_as is not None

    def describe(self) -> str:
        where = f"rule {self.rule}" + (f" ({self.wildcards})" if self.wildcards else "")
        what = STATE_WORDS.get(self.state, "ended")
        line = f"{where}, SLURM job {self.slurm_jobid}: {self.state}, {what}"
        limit = {"TIMEOUT": "runtime", "OUT_OF_MEMORY": "mem_mb"}.get(self.state)
        unit = {"runtime": "min", "mem_mb": "MB"}
        if limit and limit in self.resources:
            line += f" of {self.resources[limit]} {unit[limit]} ({limit}={self.resources[limit]})"
        if self.retried:
            line += f"; retried as SLURM job {self.retried_as}"
            if limit and self.next_resources and limit in self.next_resources:
                line += f" with {limit}={self.next_resources[limit]}"
        elif limit and limit in self.resources:
            try:
                more = 2 * int(float(self.resources[limit]))
            except ValueError:
                more = None
            if more:
                line += (f"; not retried: raise it, e.g. snakemake ... --set-resources {self.rule}:{limit}={more} "
                         f"(or under set-resources: in the profile)")
        else:
            line += "; not retried (the profile's retries were used up)" if self.state != "CANCELLED" \
                else "; not retried: run snakemake again to resubmit it"
        if not self.retried and self.slurm_log:
            line += f"; its SLURM log: {self.slurm_log}"
        return line


def _resources(text: str) -> dict[str, str]:
    out = {}
    for item in text.split(", "):
        if "=" in item:
            k, v = item.split("=", 1)
            out[k.strip()] = v.strip()
    return out


def slurm_failures(lines: Iterable[str]) -> list[SlurmFailure]:
    """Every failed SLURM job of a Snakemake log, in the order of the failures."""
    jobs: dict[str, JobInfo] = {}
    log_of: dict[str, str] = {}  # SLURM job id -> its log
    failures: list[SlurmFailure] = []
    pending_restart: dict[str, SlurmFailure] = {}  # Snakemake job id -> failure awaiting resubmission
    block: JobInfo | None = None
    error: dict[str, str] | None = None

    def close_error():
        nonlocal error
        if error and "state" in error and "jobid" in error:
            info = jobs.get(error["jobid"], JobInfo(error["rule"], error["jobid"]))
            failures.append(SlurmFailure(rule=error["rule"], jobid=error["jobid"], slurm_jobid=error["slurm_jobid"],
                                         state=error["state"], wildcards=info.wildcards,
                                         resources=dict(info.resources), slurm_log=log_of.get(error["slurm_jobid"])))
        error = None

    for raw in lines:
        line = raw.rstrip("\n")
        m = _FIELD.match(line)
        if m and (block or error):
            key, value = m.groups()
            if block is not None:
                if key == "jobid":
                    block.jobid = value.strip()
                    jobs[block.jobid] = block
                elif key == "wildcards":
                    block.wildcards = value.strip()
                elif key == "resources":
                    block.resources = _resources(value)
            else:
                if key == "message":
                    f = _SLURM_FAILED.search(value)
                    if f:
                        error["slurm_jobid"], error["state"] = f.groups()
                elif key == "jobid":
                    error["jobid"] = value.strip()
            continue
        if line.startswith("    ") and (block or error):
            continue  # a continued field (a long input list, a shell command)
        if error is not None:
            close_error()
        block = None
        if (h := _JOB_HEADER.match(line)) and not h.group(1):
            block = JobInfo(rule=h.group(2), jobid="")
        elif e := _ERROR.match(line):
            error = {"rule": e.group(1)}
        elif s := _SUBMITTED.search(line):
            jobid, sid, path = s.groups()
            if path:
                log_of[sid] = path
            if jobid in pending_restart:
                f = pending_restart.pop(jobid)
                f.retried_as = sid
                f.next_resources = dict(jobs[jobid].resources) if jobid in jobs else None
        elif r := _RESTART.search(line):
            for f in reversed(failures):
                if f.jobid == r.group(1):
                    pending_restart[f.jobid] = f
                    break
    close_error()
    return failures


def failure_report(log_paths: Iterable[str | Path] | str | Path | None) -> str:
    """The report of a run's Snakemake log(s), '' when no SLURM job failed."""
    if log_paths is None:
        return ""
    if isinstance(log_paths, (str, Path)):
        log_paths = [log_paths]
    failures: list[SlurmFailure] = []
    for path in log_paths:
        try:
            with open(path, errors="replace") as fh:
                failures += slurm_failures(fh)
        except OSError:
            continue
    if not failures:
        return ""
    retried = sum(f.retried for f in failures)
    head = (f"tinyevo: {len(failures)} SLURM job{'s' if len(failures) > 1 else ''} failed"
            f" ({retried} re-submitted by the profile's retries); docs/slurm.md says what to do:")
    return "\n".join([head] + [f"  {f.describe()}" for f in failures])
