"""Run-time helpers shared by every stage: logging, user errors, seeding, torch device and threads.

User errors: a rule script calls :func:`setup_logging`, which also installs :func:`excepthook`.
An uncaught exception that is a *user error* (:func:`is_user_error`: a :class:`UserError`, one of
the stages' named error classes, or an error whose message names a ``config key``) ends the job
with exit code 1 and one log line, the last of the rule's log, without a traceback; any other
exception is a bug and keeps its full traceback (in the log too).
"""

from __future__ import annotations

import logging
import os
import random
import re
import sys
from typing import Any, Mapping

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_LOG_STREAM = None  # the rule's log file, once setup_logging has opened it
_GC_TUNED = False  # tune_gc has registered its exit hook
_MALLOC_TUNED: bool | None = None  # tune_malloc's outcome in this process (None: not called)

# Longest user-error line written to a log (a message quoting a huge value is cut).
MAX_ERROR_CHARS = 2000
# Error classes of the stages that always mean bad input or an impossible configuration, by
# (module, name), so that checking them never imports the (heavy) module.
USER_ERROR_CLASSES = frozenset({
    ("tinyevo.compress.budget", "BudgetError"),
    ("tinyevo.search.select", "NoFeasibleNet"),
    ("tinyevo.train.final_round", "NoCandidate"),
    ("tinyevo.scenarios.setup", "ScenarioError"),
})
_CONFIG_KEY = re.compile(r"\bconfig keys? '")


class UserError(Exception):
    """Base of the errors that mean bad input (config, data), never a bug: shown as one line."""


def is_user_error(exc: BaseException) -> bool:
    """A :class:`UserError`, one of :data:`USER_ERROR_CLASSES`, or a ValueError / RuntimeError /
    OSError / ArithmeticError whose message names a ``config key`` (the convention of every
    stage's input checks). Anything else (TypeError, KeyError, an assertion, ...) is a bug."""
    if isinstance(exc, UserError):
        return True
    if any((c.__module__, c.__name__) in USER_ERROR_CLASSES for c in type(exc).__mro__):
        return True
    return isinstance(exc, (ValueError, RuntimeError, OSError, ArithmeticError)) and bool(
        _CONFIG_KEY.search(str(exc)))


def one_line(exc: BaseException, limit: int = MAX_ERROR_CHARS) -> str:
    """The message of ``exc`` on one line (its lines joined), at most ``limit`` characters."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()] or [type(exc).__name__]
    text = lines[0] + (" " + "; ".join(lines[1:]) if len(lines) > 1 else "")
    return text if len(text) <= limit else text[: limit - 30] + f" ... ({len(text)} characters)"


def excepthook(exc_type, exc, tb) -> None:
    """``sys.excepthook`` of the rule scripts: a user error is logged as one line (no traceback),
    a bug with its traceback; Python then exits with status 1 either way."""
    log = logging.getLogger("tinyevo")
    if is_user_error(exc):
        log.error("%s", one_line(exc))
    elif issubclass(exc_type, KeyboardInterrupt):
        log.error("interrupted")
    else:
        log.error("unexpected error (a bug, not a problem of the input):", exc_info=(exc_type, exc, tb))
    logging.shutdown()


class _Tee:
    """A text stream writing progress bars to stderr and, one line per update, to the log file."""

    def __init__(self, console, logfile):
        self.console, self.logfile = console, logfile

    def write(self, s):
        self.console.write(s)
        line = s.replace("\r", "").strip()
        if line:
            self.logfile.write(line + "\n")
        return len(s)

    def flush(self):
        self.console.flush()
        self.logfile.flush()

    def isatty(self):
        return False


# Garbage-collector thresholds of a job process (Python's default: 700, 10, 10). Importing torch,
# TensorFlow and pandas allocates millions of long-lived objects, and each gen-0 collection that
# fills the older generations makes a full collection walk all of them again; at exit one more
# pass walks everything. `python -X importtime` and /usr/bin/time on a job's imports (torch,
# pandas, tinyevo's training loop, one small net): 4.9-5.6 s of wall time with the defaults,
# 4.1-4.2 s with the exit pass skipped, 3.4-3.6 s with these thresholds as well (README,
# "Performance"). Collection order changes no result: the jobs keep no state in finalizers.
JOB_GC_THRESHOLDS = (50_000, 20, 20)


def tune_gc() -> None:
    """Job-process garbage collection: :data:`JOB_GC_THRESHOLDS`, and at exit the live objects
    are frozen (``gc.freeze``), so the interpreter's final collection does not walk them (the
    logging handlers are still flushed and closed by logging's own exit hook)."""
    import atexit
    import gc

    global _GC_TUNED
    gc.set_threshold(*JOB_GC_THRESHOLDS)
    if not _GC_TUNED:
        atexit.register(gc.freeze)
        _GC_TUNED = True


# glibc malloc settings of a job process. With glibc's defaults a freed block at the top of the
# heap is returned to the kernel as soon as more than the (dynamic) trim threshold is free, and
# blocks above the (dynamic) mmap threshold are mapped and unmapped one by one, so a torch job that
# builds, runs and drops hundreds of small nets touches fresh, zero-filled pages all the time.
# Measured on one scoring shard of the default run (128 nets, /usr/bin/time): 374,000 minor page
# faults and 0.9 s of system time with the defaults, 114,000 and 0.3 s with these settings, at
# 7 % more peak RSS (README, "Performance"). The mmap threshold is glibc's largest dynamic value
# (32 MiB on 64-bit), so nothing smaller than that is mapped per allocation; freed memory stays in
# the process until 1 GiB of it is free at the heap's top. ``TINYEVO_MALLOC=default`` keeps
# glibc's defaults (for comparisons).
MALLOC_MMAP_THRESHOLD = 32 * 1024 * 1024
MALLOC_TRIM_THRESHOLD = 1024 * 1024 * 1024
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameter numbers of glibc's malloc.h


def tune_malloc() -> bool:
    """Job-process malloc: :data:`MALLOC_MMAP_THRESHOLD` and :data:`MALLOC_TRIM_THRESHOLD` via
    glibc's ``mallopt``. Returns whether they are in effect: False on a libc without ``mallopt``
    (musl, macOS, Windows) or when ``TINYEVO_MALLOC=default``; results never depend on it."""
    global _MALLOC_TUNED
    if _MALLOC_TUNED is not None:
        return _MALLOC_TUNED
    _MALLOC_TUNED = False
    if os.environ.get("TINYEVO_MALLOC", "").strip().lower() == "default" or not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _MALLOC_TUNED = bool(mallopt(_M_MMAP_THRESHOLD, MALLOC_MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, MALLOC_TRIM_THRESHOLD))
    return _MALLOC_TUNED


def setup_logging(log_path: str | os.PathLike | None = None, level: int = logging.INFO) -> logging.Logger:
    """Log to stderr and, when given, to ``log_path`` (a rule's ``log:`` file); install
    :func:`excepthook` so that a user error ends the job as one line of that log; tune the
    process's garbage collection and malloc for a short job (:func:`tune_gc`, :func:`tune_malloc`)."""
    global _LOG_STREAM
    tune_gc()
    tune_malloc()
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_path:
        os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
        fh = logging.FileHandler(log_path, mode="w")
        handlers.append(fh)
        _LOG_STREAM = fh.stream
    logging.basicConfig(level=level, format=LOG_FORMAT, handlers=handlers, force=True)
    sys.excepthook = excepthook
    return logging.getLogger("tinyevo")


def log_header(logger: logging.Logger, stage: str, items: Mapping[str, Any]) -> None:
    """First lines of every stage log: the stage and its key inputs."""
    logger.info("stage %s", stage)
    for k, v in items.items():
        logger.info("  %-18s %s", k, v)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % (2**32))
    except ImportError:
        pass
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:
        pass


def cuda_device_visible(dev_dir: str = "/dev", env: Mapping[str, str] | None = None) -> bool:
    """Whether this machine shows an NVIDIA device to its processes, without importing torch (the
    workflow asks at parse time, to size the ``gpu`` resource): a ``/dev/nvidia<N>`` node, and
    ``CUDA_VISIBLE_DEVICES`` not set to an empty or negative list."""
    env = os.environ if env is None else env
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and (visible.strip() == "" or visible.strip().startswith("-")):
        return False
    try:
        names = os.listdir(dev_dir)
    except OSError:
        return False
    return any(n.startswith("nvidia") and n[6:].isdigit() for n in names)


def pick_device(requested: str = "auto"):
    """Resolve ``compute.device``: ``auto`` picks CUDA when present, then CPU."""
    import torch

    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(requested)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"config key 'compute.device' is {requested!r} but CUDA is not available")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise RuntimeError(f"config key 'compute.device' is {requested!r} but MPS is not available")
    return dev


def set_threads(n: int) -> None:
    """torch intra-op threads, from the config (``train.threads``, ``validation.threads``,
    ``compress.threads``, ``scoring.threads``), never from the job's ``threads``: Snakemake lowers
    those to ``--cores``, and on the CPU the last bits of a training or a proxy depend on the
    intra-op thread count, so ``--cores 1`` and ``--cores 8`` would give different tables."""
    import torch

    if isinstance(n, bool) or int(n) != n or int(n) < 1:
        raise ValueError(f"a torch thread count must be an integer >= 1, got {n!r}")
    n = int(n)
    torch.set_num_threads(n)
    os.environ.setdefault("OMP_NUM_THREADS", str(n))


def progress(iterable=None, **kw):
    """A tqdm progress bar that writes to stderr (hence to the rule's log) even when not a tty."""
    from tqdm.auto import tqdm

    kw.setdefault("file", _Tee(sys.stderr, _LOG_STREAM) if _LOG_STREAM is not None else sys.stderr)
    kw.setdefault("mininterval", 2.0)
    kw.setdefault("dynamic_ncols", False)
    kw.setdefault("ncols", 90)
    return tqdm(iterable, **kw)
