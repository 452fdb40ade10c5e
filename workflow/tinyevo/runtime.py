"""Run-time helpers shared by every stage: logging, seeding, torch device and threads."""

from __future__ import annotations

import logging
import os
import random
import sys
from typing import Any, Mapping

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_LOG_STREAM = None  # the rule's log file, once setup_logging has opened it


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


def setup_logging(log_path: str | os.PathLike | None = None, level: int = logging.INFO) -> logging.Logger:
    """Log to stderr and, when given, to ``log_path`` (a rule's ``log:`` file)."""
    global _LOG_STREAM
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_path:
        os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
        fh = logging.FileHandler(log_path, mode="w")
        handlers.append(fh)
        _LOG_STREAM = fh.stream
    logging.basicConfig(level=level, format=LOG_FORMAT, handlers=handlers, force=True)
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
    """torch intra-op threads from the rule's ``threads``."""
    import torch

    n = max(1, int(n))
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
