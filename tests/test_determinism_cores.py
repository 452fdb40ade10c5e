"""Same config, same tables, whatever --cores: every torch computation takes its thread count from
the config (train.threads, validation.threads, compress.threads, scoring.threads), never from the
job's `threads`, which Snakemake lowers to --cores. The micro pipeline run at --cores 1
(``micro_killed_run``, which is also the kill-and-rerun run of test_faults.py) against the one at
--cores 2 (``micro_pipeline``), table by table."""

import re

import pandas as pd
import pytest

from conftest import MICRO_PIPELINE, result_tables

pytestmark = pytest.mark.slow


def test_cores_1_and_cores_2_give_identical_tables(micro_killed_run, micro_pipeline):
    one, two = result_tables(micro_killed_run), result_tables(micro_pipeline)
    expected = {"scores/initial.parquet", "rank/initial.parquet", "evolution/history.parquet",
                "train/C/history.parquet", "train/C/metrics.parquet", "compress/C/pruning.parquet",
                "compress/C/summary.parquet"}
    assert expected <= set(two) and sorted(one) == sorted(two)
    diffs = []
    for name in sorted(two):
        try:
            pd.testing.assert_frame_equal(one[name], two[name], check_exact=True, obj=name)
        except AssertionError as exc:
            diffs.append(f"{name}: {str(exc)[:300]}")
    assert not diffs, "\n".join(diffs)


@pytest.mark.parametrize("log", ["train/C.log", "compress/C.log"])
def test_torch_threads_come_from_the_config_at_cores_1(micro_killed_run, log):
    """At --cores 1 the training and the compression still ran with the configured 2 threads."""
    want = {"train/C.log": MICRO_PIPELINE.get("train", {}).get("threads", 2),
            "compress/C.log": MICRO_PIPELINE.get("compress", {}).get("threads", 2)}[log]
    text = (micro_killed_run / "results/logs" / log).read_text()
    assert re.search(rf"torch threads\s+{want}$", text, re.M), text[:1500]
    assert want > 1  # the job got 1 core: the count cannot have come from --cores
