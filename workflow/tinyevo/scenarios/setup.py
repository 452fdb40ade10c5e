"""Scenario definitions: what each on-device learning scenario streams, evaluates and relabels.

A :class:`Scenario` is built from the config's ``scenarios`` section (``scenario_from_config``),
which checks every class id against the dataset and the stream geometry; ``check_scenarios``
runs those checks for every configured scenario (the rule file calls it while the workflow is
parsed, so a bad config fails before any job runs).

==================  ========  =====================================  ==========================
scenario            net       stream                                 evaluation
==================  ========  =====================================  ==========================
``concept_drift``   ``C``     all classes; labels of ``swap[0]`` and all classes; swapped labels
                              ``swap[1]`` swapped from the change    after the change point
                              point on
``incremental``     ``C-inc`` ``base_classes`` before the change     base + new classes; also
                              point, base + ``new_classes`` after    old / new accuracy
``transfer``        ``C-src`` ``target_classes`` (labels 0..k-1)     target classes, a fresh
                                                                     k-way classifier
==================  ========  =====================================  ==========================
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

SCENARIOS = ("concept_drift", "incremental", "transfer")
VARIANTS = ("tybox", "tinyol", "float")
NET_OF = {"concept_drift": "C", "incremental": "C-inc", "transfer": "C-src"}


#: the fewest dataset classes each scenario can run with (incremental: >= 2 base + 1 new class;
#: transfer: >= 2 source and >= 2 target classes)
MIN_CLASSES = {"concept_drift": 2, "incremental": 3, "transfer": 4}


def fill_defaults(section: dict, num_classes: int) -> dict:
    """Fill the scenario keys left ``null`` from the dataset's class count (in place; returns the
    section): ``names`` = every scenario with at least :data:`MIN_CLASSES` classes;
    ``concept_drift.swap`` = [4, 6] (the thesis's digits pair) with >= 7 classes, else the last
    two; ``incremental.new_classes`` = the last ``max(1, n // 5)`` classes and ``base_classes`` the
    others; ``transfer.source_classes`` = the first ``n // 2`` and ``target_classes`` the others.
    With 10 classes these are the thesis's settings ([4, 6]; 0-7 + [8, 9]; 0-4 -> 5-9)."""
    n = int(num_classes)
    if section.get("names") is None:
        section["names"] = [s for s in SCENARIOS if n >= MIN_CLASSES[s]]
    drift = section.setdefault("concept_drift", {})
    if drift.get("swap") is None and n >= 2:
        drift["swap"] = [4, 6] if n >= 7 else [n - 2, n - 1]
    inc = section.setdefault("incremental", {})
    n_new = max(1, n // 5)
    if inc.get("new_classes") is None:
        inc["new_classes"] = list(range(n - n_new, n)) if inc.get("base_classes") is None else \
            [c for c in range(n) if c not in set(inc["base_classes"])]
    if inc.get("base_classes") is None:
        inc["base_classes"] = [c for c in range(n) if c not in set(inc["new_classes"])]
    tr = section.setdefault("transfer", {})
    if tr.get("source_classes") is None:
        tr["source_classes"] = list(range(n // 2)) if tr.get("target_classes") is None else \
            [c for c in range(n) if c not in set(tr["target_classes"])]
    if tr.get("target_classes") is None:
        tr["target_classes"] = [c for c in range(n) if c not in set(tr["source_classes"])]
    return section


class ScenarioError(ValueError):
    """A scenario configuration that cannot be run (the message names the config key)."""


@dataclass(frozen=True)
class Scenario:
    name: str
    net: str
    stream_length: int
    eval_size: int
    change_point: int
    repetitions: int
    seed: int
    lr: float
    loss: str
    num_classes: int                  # classes of the dataset
    trained_classes: tuple[int, ...]  # classes the feature extractor was trained on
    pre_classes: tuple[int, ...]      # classes streamed before the change point
    post_classes: tuple[int, ...]     # classes streamed from the change point on
    eval_classes: tuple[int, ...]
    num_outputs: int                  # classifier outputs on the device
    fresh_classifier: bool = False
    swap: tuple[int, int] | None = None
    old_classes: tuple[int, ...] = ()
    new_classes: tuple[int, ...] = ()
    label_map: Mapping[int, int] = field(default_factory=dict)  # dataset class -> output

    @property
    def has_change(self) -> bool:
        return self.name != "transfer"

    def labels(self, y: np.ndarray, drifted: bool) -> np.ndarray:
        """Classifier targets of dataset labels ``y`` (before / after the change point)."""
        y = np.asarray(y, dtype=np.int64)
        out = y.copy()
        if self.label_map:
            lut = np.full(self.num_classes, -1, np.int64)
            for c, o in self.label_map.items():
                lut[c] = o
            out = lut[y]
        if drifted and self.swap is not None:
            a, b = self.swap
            out = np.where(y == a, b, np.where(y == b, a, out))
        return out

    def rep_seed(self, rep: int, validation: bool = False) -> int:
        """Seed of repetition ``rep``: the same for every variant (they see the same stream);
        ``validation`` streams (the tuning's) get seeds of their own."""
        key = [int(self.seed), SCENARIOS.index(self.name), int(rep)] + ([1] if validation else [])
        return int(np.random.SeedSequence(key).generate_state(1, np.uint32)[0])

    def settings(self) -> dict:
        return {"scenario": self.name, "net": self.net, "stream_length": self.stream_length,
                "eval_size": self.eval_size, "change_point": self.change_point,
                "repetitions": self.repetitions, "seed": self.seed, "lr": self.lr, "loss": self.loss}


def _classes(values: Sequence[int], num_classes: int, key: str) -> tuple[int, ...]:
    cl = tuple(int(c) for c in values)
    if not cl:
        raise ScenarioError(f"config key '{key}' is empty")
    if len(set(cl)) != len(cl):
        raise ScenarioError(f"config key '{key}' repeats class ids: {list(cl)}")
    bad = [c for c in cl if not 0 <= c < num_classes]
    if bad:
        raise ScenarioError(f"config key '{key}' = {list(cl)}: class id(s) {bad} not in the dataset "
                            f"(it has classes 0..{num_classes - 1})")
    return cl


def scenario_from_config(name: str, scenarios: Mapping[str, Any], num_classes: int, tybox_lr: float,
                         loss: str = "mse_softmax") -> Scenario:
    """The :class:`Scenario` ``name`` of the config's ``scenarios`` section; ``tybox_lr`` is the
    learning rate used when ``scenarios.<name>.lr`` is null."""
    if name not in SCENARIOS:
        raise ScenarioError(f"config key 'scenarios.names': unknown scenario {name!r}; expected one of {list(SCENARIOS)}")
    sc = scenarios
    n = int(num_classes)
    L, E, cp = int(sc["stream_length"]), int(sc["eval_size"]), int(sc["change_point"])
    if L < 1:
        raise ScenarioError(f"config key 'scenarios.stream_length' must be >= 1, got {L}")
    if E < 1:
        raise ScenarioError(f"config key 'scenarios.eval_size' must be >= 1, got {E}")
    if not 0 <= cp < L:
        raise ScenarioError(f"config key 'scenarios.change_point' = {cp} is beyond the stream: it must be "
                            f"in 0..{L - 1} ('scenarios.stream_length' = {L})")
    if int(sc["repetitions"]) < 1:
        raise ScenarioError(f"config key 'scenarios.repetitions' must be >= 1, got {sc['repetitions']}")
    sub = sc.get(name) or {}
    loss = sub.get("loss") or loss
    lr = sub.get("lr")
    lr = float(tybox_lr if lr is None else lr)
    if not lr > 0:
        raise ScenarioError(f"config key 'scenarios.{name}.lr' (or tybox.lr) must be > 0, got {lr}")
    everything = tuple(range(n))
    common = dict(name=name, net=NET_OF[name], stream_length=L, eval_size=E, change_point=cp,
                  repetitions=int(sc["repetitions"]), seed=int(sc.get("seed") or 0), lr=lr, loss=str(loss),
                  num_classes=n)
    if name == "concept_drift":
        swap = _classes(sub.get("swap", (4, 6)), n, "scenarios.concept_drift.swap")
        if len(swap) != 2:
            raise ScenarioError(f"config key 'scenarios.concept_drift.swap' needs exactly 2 distinct classes, got {list(swap)}")
        return Scenario(**common, trained_classes=everything, pre_classes=everything, post_classes=everything,
                        eval_classes=everything, num_outputs=n, swap=(swap[0], swap[1]))
    if name == "incremental":
        base = _classes(sub.get("base_classes", range(8)), n, "scenarios.incremental.base_classes")
        new = _classes(sub.get("new_classes", (8, 9)), n, "scenarios.incremental.new_classes")
        both = sorted(set(base) & set(new))
        if both:
            raise ScenarioError(f"config keys 'scenarios.incremental.base_classes' and '.new_classes' share class(es) {both}")
        base, new = tuple(sorted(base)), tuple(sorted(new))
        return Scenario(**common, trained_classes=base, pre_classes=base, post_classes=tuple(sorted(base + new)),
                        eval_classes=tuple(sorted(base + new)), num_outputs=n, old_classes=base, new_classes=new)
    src = _classes(sub.get("source_classes", range(5)), n, "scenarios.transfer.source_classes")
    tgt = _classes(sub.get("target_classes", range(5, 10)), n, "scenarios.transfer.target_classes")
    if len(tgt) < 2:
        raise ScenarioError("config key 'scenarios.transfer.target_classes' needs at least 2 classes")
    return Scenario(**common, trained_classes=tuple(sorted(src)), pre_classes=tgt, post_classes=tgt,
                    eval_classes=tgt, num_outputs=len(tgt), fresh_classifier=True,
                    label_map={c: i for i, c in enumerate(tgt)})


def check_scenarios(scenarios: Mapping[str, Any], num_classes: int, tybox_lr: float,
                    loss: str = "mse_softmax") -> list[Scenario]:
    """Build (and so check) every scenario in ``scenarios.names``."""
    return [scenario_from_config(n, scenarios, num_classes, tybox_lr, loss) for n in scenarios["names"]]
