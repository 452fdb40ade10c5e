"""Class subsets of the training branches ``{net}``.

==========  =========  ======================================  ====================================
``{net}``   base net   classes trained on                      classifier outputs / labels
==========  =========  ======================================  ====================================
``C``       C          all                                     ``num_classes``, labels unchanged
``NC``      NC         all                                     ``num_classes``, labels unchanged
``C-inc``   C          ``scenarios.incremental.base_classes``  ``num_classes`` (new classes are
                                                               learned on the device later),
                                                               labels unchanged
``C-src``   C          ``scenarios.transfer.source_classes``   ``len(source_classes)``, label
                                                               ``source_classes[i]`` -> ``i``
==========  =========  ======================================  ====================================
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

NETS = ("C", "NC", "C-inc", "C-src")


@dataclass(frozen=True)
class ClassSubset:
    """Which dataset classes a branch trains on and how labels map to classifier outputs."""

    classes: tuple[int, ...]  # original class ids, in output order when ``remap``
    num_outputs: int
    remap: bool

    @property
    def label_map(self) -> dict[int, int]:
        """Original class id -> classifier output index."""
        return {c: (i if self.remap else c) for i, c in enumerate(self.classes)}

    @property
    def output_classes(self) -> list[int]:
        """Original class id of every classifier output (-1 for an output no class maps to)."""
        if not self.remap:
            return list(range(self.num_outputs))
        return list(self.classes)

    def select(self, x, y) -> tuple[Any, np.ndarray]:
        """Keep the samples of the subset's classes (order preserved) and map their labels."""
        y = np.asarray(y)
        keep = np.isin(y, np.asarray(self.classes, dtype=y.dtype))
        idx = np.flatnonzero(keep)
        lut = np.full(int(max(y.max(initial=0), max(self.classes))) + 1, -1, dtype=np.int64)
        for c, o in self.label_map.items():
            lut[c] = o
        y_new = lut[y[idx]]
        x_new = x if len(idx) == len(y) else x[idx]
        return x_new, y_new

    def meta(self) -> dict[str, Any]:
        return {"classes": list(self.classes), "label_map": {str(k): v for k, v in self.label_map.items()},
                "num_outputs": self.num_outputs, "remap": self.remap}


def _check_classes(classes: Sequence[int], num_classes: int, key: str) -> tuple[int, ...]:
    cl = tuple(int(c) for c in classes)
    if len(cl) == 0:
        raise ValueError(f"config key {key!r} is empty")
    if len(set(cl)) != len(cl):
        raise ValueError(f"config key {key!r} has repeated class ids: {list(cl)}")
    bad = [c for c in cl if not 0 <= c < num_classes]
    if bad:
        raise ValueError(f"config key {key!r} has class ids {bad} outside the dataset's 0..{num_classes - 1}")
    return cl


def class_subset(net: str, num_classes: int, scenarios: Mapping[str, Any] | None = None) -> ClassSubset:
    """The :class:`ClassSubset` of branch ``net`` (``scenarios`` = the config's ``scenarios``
    section; only needed for ``C-inc`` and ``C-src``)."""
    num_classes = int(num_classes)
    if net in ("C", "NC"):
        return ClassSubset(tuple(range(num_classes)), num_classes, remap=False)
    if net == "C-inc":
        cl = _check_classes(scenarios["incremental"]["base_classes"], num_classes,
                            "scenarios.incremental.base_classes")
        return ClassSubset(tuple(sorted(cl)), num_classes, remap=False)
    if net == "C-src":
        cl = _check_classes(scenarios["transfer"]["source_classes"], num_classes,
                            "scenarios.transfer.source_classes")
        if len(cl) < 2:
            raise ValueError("config key 'scenarios.transfer.source_classes' needs at least 2 classes")
        return ClassSubset(cl, len(cl), remap=True)
    raise ValueError(f"unknown training branch {net!r}; expected one of {list(NETS)}")


def base_net(net: str) -> str:
    """The evolution winner a branch starts from: ``C-inc``/``C-src`` -> ``C``."""
    if net not in NETS:
        raise ValueError(f"unknown training branch {net!r}; expected one of {list(NETS)}")
    return "NC" if net == "NC" else "C"
