"""tinyevo.runtime.tune_gc: the garbage-collector settings of a job process."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# A job process: an exit hook registered *before* setup_logging runs *after* tune_gc's (atexit is
# last in, first out), so it sees what the interpreter's final collection will see. The log is
# written and complete although the final collection skips the frozen objects.
JOB = """
import atexit, gc, sys
sys.path.insert(0, {workflow!r})
atexit.register(lambda: print("at exit: frozen", gc.get_freeze_count(), flush=True))
from tinyevo.runtime import JOB_GC_THRESHOLDS, setup_logging
print("before", gc.get_threshold(), gc.get_freeze_count(), flush=True)
log = setup_logging({log!r})
setup_logging({log!r})  # a second call registers no second hook
print("after", gc.get_threshold() == JOB_GC_THRESHOLDS, flush=True)
log.info("last line of the job")
"""


def test_job_process_gc_thresholds_and_frozen_exit(tmp_path):
    log = tmp_path / "job.log"
    proc = subprocess.run([sys.executable, "-c", JOB.format(workflow=str(REPO / "workflow"), log=str(log))],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "before (700, 10, 10) 0"
    assert lines[1] == "after True"
    assert lines[2].startswith("at exit: frozen ") and int(lines[2].split()[-1]) > 1000
    assert len(lines) == 3
    assert log.read_text().rstrip().endswith("INFO tinyevo: last line of the job")
