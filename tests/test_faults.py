"""Faults at the process level: the Snakemake process group SIGKILLed in the middle of the scoring,
the evolution, the training and the compression, then ``--unlock`` and a re-run, gives exactly the
tables of an uninterrupted run (tests/conftest.py: ``micro_killed_run`` against ``micro_pipeline``)."""

import json
import re

import numpy as np
import pandas as pd
import pytest

from conftest import result_tables

pytestmark = pytest.mark.slow


def test_every_kill_stopped_its_stage_midway(micro_killed_run):
    """Each kill landed while its stage ran: the stage's output was missing afterwards and no
    process of the group survived it."""
    kills = json.loads((micro_killed_run / "kills.json").read_text())
    assert [k["stage"] for k in kills] == ["scoring", "evolution", "training", "compression"]
    for k in kills:
        assert k["killed"] and k["returncode"] == -9, k
        assert k["group_dead"], k
        assert k["output_missing"], k


def test_a_killed_run_leaves_the_lock_and_unlock_lets_it_go_on(micro_killed_run):
    code, _, out = (micro_killed_run / "locked.txt").read_text().partition("\n")
    assert code == "1"
    assert "cannot be locked" in out, out[-2000:]


def test_reruns_resume_from_the_checkpoints(micro_killed_run):
    """The evolution and the training went on from their checkpoints instead of starting over."""
    logs = micro_killed_run / "results/logs"
    evo = (logs / "evolution/main.log").read_text()
    cycles = [int(c) for c in re.findall(r"resuming from checkpoint at cycle (\d+)/30", evo)]
    assert cycles and 0 < cycles[0] < 30, evo[-2000:]
    assert "resuming from results/train/C/checkpoint.pt after epoch 1 of 3" in (logs / "train/C.log").read_text()


def test_kill_and_rerun_gives_the_tables_of_an_uninterrupted_run(micro_killed_run, micro_pipeline):
    killed, clean = result_tables(micro_killed_run), result_tables(micro_pipeline)
    assert sorted(killed) == sorted(clean)
    for name in clean:
        pd.testing.assert_frame_equal(killed[name], clean[name], check_exact=True, obj=name)
    for rel in ("compress/C/fe_int8.tflite",):
        assert (micro_killed_run / "results" / rel).read_bytes() == (micro_pipeline / "results" / rel).read_bytes()


def test_kill_and_rerun_gives_the_weights_of_an_uninterrupted_run(micro_killed_run, micro_pipeline):
    from tinyevo.space.torch_model import load_model

    for rel in ("train/C/model.pt", "compress/C/pruned.pt"):
        a, spec_a, _ = load_model(micro_killed_run / "results" / rel)
        b, spec_b, _ = load_model(micro_pipeline / "results" / rel)
        assert spec_a == spec_b, rel
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys()
        for k in sa:
            assert np.array_equal(sa[k].numpy(), sb[k].numpy()), f"{rel}: {k}"
