"""tinyevo.runtime.tune_malloc: glibc malloc settings of a job process.

The tests check the mechanism, which is deterministic: in a job process whose malloc is tuned a
block below the 32 MiB mmap threshold comes from the heap (glibc's ``mallinfo2`` counts no new
mapped block) and stays in the process once freed (the heap does not shrink); with glibc's
defaults the same block is mapped on its own. What that is worth in page faults depends on the
host (kernel, transparent huge pages, torch's allocator), so that figure is a benchmark:
``python bench/malloc.py``.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# A job process: setup_logging (which tunes malloc), then one 24 MiB block malloc'd and freed;
# prints whether the settings are in effect, the mapped blocks (mallinfo2.hblks) the allocation
# added, and the heap bytes (mallinfo2.arena) given back to the kernel by the free.
JOB = """
import ctypes, sys
sys.path.insert(0, {workflow!r})
from tinyevo import runtime
runtime.setup_logging()

class Mallinfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = Mallinfo2
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
before = libc.mallinfo2()
p = libc.malloc({size})
ctypes.memset(p, 1, {size})
held = libc.mallinfo2()
libc.free(p)
after = libc.mallinfo2()
print(runtime.tune_malloc(), held.hblks - before.hblks, held.arena - after.arena)
"""
SIZE = 24 * 1024 * 1024  # below the tuned 32 MiB threshold, far above glibc's initial 128 KiB


def _job(setting: str) -> tuple[bool, int, int]:
    env = {**os.environ, "TINYEVO_MALLOC": setting}
    proc = subprocess.run([sys.executable, "-c", JOB.format(workflow=str(REPO / "workflow"), size=SIZE)],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    tuned, mapped, returned = proc.stdout.split()
    return tuned == "True", int(mapped), int(returned)


def _glibc_version() -> tuple[int, int] | None:
    try:
        text = os.confstr("CS_GNU_LIBC_VERSION") if sys.platform.startswith("linux") else None
    except (ValueError, OSError):
        return None
    if not text:
        return None
    major, minor = text.split()[-1].split(".")[:2]
    return int(major), int(minor)


@pytest.mark.skipif((_glibc_version() or (0, 0)) < (2, 33), reason="mallopt is glibc's; mallinfo2 needs glibc 2.33")
def test_tuned_malloc_keeps_a_large_block_on_the_heap_and_in_the_process():
    tuned, mapped, returned = _job("")
    assert tuned
    assert mapped == 0, "a 24 MiB block was mapped on its own although the mmap threshold is 32 MiB"
    assert returned == 0, f"freeing the block gave {returned} B of heap back to the kernel"


@pytest.mark.skipif((_glibc_version() or (0, 0)) < (2, 33), reason="mallopt is glibc's; mallinfo2 needs glibc 2.33")
def test_glibc_defaults_map_the_same_block_on_its_own():
    tuned, mapped, returned = _job("default")
    assert not tuned
    assert mapped == 1  # glibc's dynamic threshold starts at 128 KiB: the block is its own mapping
    assert returned == 0  # and it was never part of the heap


def test_tune_malloc_is_idempotent_and_off_on_request(monkeypatch):
    from tinyevo import runtime

    monkeypatch.setattr(runtime, "_MALLOC_TUNED", None)
    monkeypatch.setenv("TINYEVO_MALLOC", "default")
    assert runtime.tune_malloc() is False
    monkeypatch.delenv("TINYEVO_MALLOC")
    assert runtime.tune_malloc() is False  # the first call's outcome stays: settings are per process
    monkeypatch.setattr(runtime, "_MALLOC_TUNED", None)
    assert runtime.tune_malloc() is (_glibc_version() is not None)
