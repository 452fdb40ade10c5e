"""What tinyevo.runtime.tune_malloc is worth on this host: minor page faults and system time of a
torch workload shaped like a scoring shard (nets of growing width built, run forward and backward,
dropped), in a job process with the tuned malloc and in one with glibc's defaults
(``TINYEVO_MALLOC=default``). The figure depends on the host (kernel, transparent huge pages,
torch's allocator), which is why it is measured here and not asserted in a test.

    python bench/malloc.py                 # 3 runs of each setting, one process at a time
    python bench/malloc.py --runs 5 --rounds 4
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

JOB = """
import resource, sys, time
sys.path.insert(0, {workflow!r})
from tinyevo import runtime
runtime.setup_logging()
import torch
torch.set_num_threads(1)
torch.manual_seed(0)

def work():
    for w in (8, 16, 24, 32, 48, 64, 96):
        net = torch.nn.Sequential(
            torch.nn.Conv2d(1, w, 3, padding=1), torch.nn.ReLU6(),
            torch.nn.Conv2d(w, w, 3, padding=1, groups=w), torch.nn.ReLU6(),
            torch.nn.Conv2d(w, 2 * w, 1), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
            torch.nn.Linear(2 * w, 10))
        net(torch.randn(32, 1, 32, 32)).square().mean().backward()

work()
r0 = resource.getrusage(resource.RUSAGE_SELF)
t0 = time.perf_counter()
for _ in range({rounds}):
    work()
r1 = resource.getrusage(resource.RUSAGE_SELF)
print(runtime.tune_malloc(), r1.ru_minflt - r0.ru_minflt, r1.ru_stime - r0.ru_stime, time.perf_counter() - t0)
"""


def job(setting: str, rounds: int) -> tuple[bool, int, float, float]:
    """One job process: (tuned, minor page faults, system seconds, wall seconds) of the counted
    rounds (after one warm-up round)."""
    env = {**os.environ, "TINYEVO_MALLOC": setting}
    code = JOB.format(workflow=str(REPO / "workflow"), rounds=rounds)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    tuned, faults, sys_s, wall_s = proc.stdout.split()
    return tuned == "True", int(faults), float(sys_s), float(wall_s)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3, help="job processes per setting (default 3)")
    ap.add_argument("--rounds", type=int, default=2, help="counted rounds of the workload per job (default 2)")
    args = ap.parse_args(argv)
    rows = {"tuned": [], "default": []}
    for _ in range(args.runs):  # the two settings alternate, so drift in the host's load hits both
        for name, setting in (("tuned", ""), ("default", "default")):
            tuned, faults, sys_s, wall_s = job(setting, args.rounds)
            if tuned != (name == "tuned"):
                print(f"{name}: the settings were {'' if tuned else 'not '}in effect", file=sys.stderr)
                return 1
            rows[name].append((faults, sys_s, wall_s))
    print(f"{'malloc':8s} {'minor faults (median, min-max)':>32s} {'system s':>9s} {'wall s':>7s}")
    for name, rs in rows.items():
        faults = [r[0] for r in rs]
        print(f"{name:8s} {statistics.median(faults):>14,.0f} ({min(faults):,}-{max(faults):,}){'':>2s}"
              f" {statistics.median(r[1] for r in rs):>9.3f} {statistics.median(r[2] for r in rs):>7.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
