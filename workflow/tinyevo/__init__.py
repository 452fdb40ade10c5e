"""tinyevo: zero-cost NAS to on-device learning C++ for microcontrollers."""

import os as _os

# OpenMP threads that busy-wait between torch ops starve every other job sharing the cores (a
# Snakemake run with --cores N, shards side by side): 20-200x slower training was measured on a
# loaded 2-core machine. Passive waiting costs nothing measurable on an idle one. Must be set
# before torch is imported; an explicit value in the environment wins.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
