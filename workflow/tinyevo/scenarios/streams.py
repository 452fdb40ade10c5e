"""Streams and evaluation sets of a scenario, drawn from data the feature extractor never saw.

The pool is the val + test splits plus the training images of classes the net was not trained on
(``Scenario.trained_classes``: the new classes of ``incremental``, the target classes of
``transfer``). Per repetition, with its own seed: a class-balanced evaluation set of
``eval_size`` images of ``eval_classes``, then, from what is left, a class-balanced stream
segment of ``change_point`` images of ``pre_classes`` and one of ``stream_length - change_point``
images of ``post_classes`` (each segment shuffled). Balanced = the counts of two classes differ
by at most one; which classes get the remainder is drawn with the seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .setup import Scenario, ScenarioError


@dataclass
class Pool:
    x: np.ndarray  # uint8 NHWC
    y: np.ndarray  # int64 dataset labels
    source: np.ndarray  # split each image came from


def held_out_pool(data_dir, scenario: Scenario) -> Pool:
    """val + test + the training images of classes outside ``scenario.trained_classes``."""
    from tinyevo.data import load_split

    xs, ys, src = [], [], []
    for split in ("val", "test", "train"):
        x, y = load_split(data_dir, split)
        if split == "train":
            keep = np.flatnonzero(~np.isin(y, np.asarray(scenario.trained_classes, dtype=y.dtype)))
            if len(keep) == 0:
                continue
            x, y = np.asarray(x[keep]), y[keep]
        xs.append(np.asarray(x))
        ys.append(np.asarray(y, np.int64))
        src.append(np.full(len(y), split))
    x = np.concatenate(xs) if xs else np.zeros((0, 1, 1, 1), np.uint8)
    y = np.concatenate(ys) if ys else np.zeros(0, np.int64)
    if len(y) and int(y.max()) >= scenario.num_classes:
        raise ScenarioError(f"{data_dir}: label {int(y.max())} outside the configured {scenario.num_classes} classes")
    return Pool(x, y, np.concatenate(src) if src else np.zeros(0, "<U5"))


def check_pool(pool: Pool, scenario: Scenario) -> None:
    """Data-dependent checks: enough held-out images for the evaluation set and the stream."""
    n_eval = int(np.isin(pool.y, scenario.eval_classes).sum())
    if scenario.eval_size > n_eval:
        raise ScenarioError(
            f"config key 'scenarios.eval_size' = {scenario.eval_size} is larger than the held-out data of "
            f"scenario {scenario.name!r}: {n_eval} images of classes {list(scenario.eval_classes)} that the "
            f"feature extractor was not trained on (val + test splits)")
    present = set(np.unique(pool.y).tolist())
    for key, classes in (("eval", scenario.eval_classes), ("stream", scenario.pre_classes + scenario.post_classes)):
        missing = sorted(set(classes) - present)
        if missing:
            raise ScenarioError(f"scenario {scenario.name!r}: class(es) {missing} needed for the {key} have no "
                                "held-out images (val + test splits)")
    need = scenario.eval_size + scenario.stream_length
    n_all = int(np.isin(pool.y, scenario.eval_classes + scenario.pre_classes + scenario.post_classes).sum())
    if need > n_all:
        raise ScenarioError(
            f"scenario {scenario.name!r} needs {need} distinct held-out images ('scenarios.eval_size' = "
            f"{scenario.eval_size} + 'scenarios.stream_length' = {scenario.stream_length}) but only {n_all} exist")


def balanced_counts(classes, n: int, rng: np.random.Generator) -> dict[int, int]:
    """``n`` split over ``classes`` as evenly as possible; the remainder goes to random classes."""
    classes = [int(c) for c in classes]
    base, extra = divmod(int(n), len(classes))
    counts = {c: base for c in classes}
    for c in rng.permutation(classes)[:extra]:
        counts[int(c)] += 1
    return counts


def _take(pool_y: np.ndarray, free: np.ndarray, classes, n: int, rng, what: str, key: str, scenario: Scenario):
    picked = []
    for c, k in balanced_counts(classes, n, rng).items():
        idx = np.flatnonzero(free & (pool_y == c))
        if len(idx) < k:
            raise ScenarioError(
                f"scenario {scenario.name!r}: not enough held-out images of class {c} for the {what}: "
                f"{k} needed, {len(idx)} left (lower '{key}' or use a dataset with more val/test images)")
        sel = rng.choice(idx, size=k, replace=False)
        free[sel] = False
        picked.append(sel)
    out = np.concatenate(picked) if picked else np.zeros(0, np.int64)
    return rng.permutation(out)


@dataclass
class Draw:
    """One repetition: indices into the pool and the targets of every sample."""
    seed: int
    eval_idx: np.ndarray
    stream_idx: np.ndarray
    stream_targets: np.ndarray  # classifier targets (after relabelling / drift)
    eval_pre: np.ndarray        # eval targets up to the change point
    eval_post: np.ndarray       # eval targets after it
    eval_old: np.ndarray        # mask: eval sample of an old (base) class
    eval_new: np.ndarray        # mask: eval sample of a new class


def draw(pool: Pool, scenario: Scenario, rep: int) -> Draw:
    seed = scenario.rep_seed(rep)
    rng = np.random.default_rng(seed)
    free = np.ones(len(pool.y), bool)
    eval_idx = _take(pool.y, free, scenario.eval_classes, scenario.eval_size, rng, "evaluation set",
                     "scenarios.eval_size", scenario)
    cp, L = scenario.change_point, scenario.stream_length
    pre = _take(pool.y, free, scenario.pre_classes, cp, rng, "stream before the change point",
                "scenarios.stream_length", scenario) if cp > 0 else np.zeros(0, np.int64)
    post = _take(pool.y, free, scenario.post_classes, L - cp, rng, "stream after the change point",
                 "scenarios.stream_length", scenario)
    stream_idx = np.concatenate([pre, post]).astype(np.int64)
    ys = pool.y[stream_idx]
    targets = np.concatenate([scenario.labels(ys[:cp], drifted=False), scenario.labels(ys[cp:], drifted=True)])
    ye = pool.y[eval_idx]
    return Draw(seed=seed, eval_idx=eval_idx.astype(np.int64), stream_idx=stream_idx, stream_targets=targets,
                eval_pre=scenario.labels(ye, drifted=False), eval_post=scenario.labels(ye, drifted=True),
                eval_old=np.isin(ye, scenario.old_classes), eval_new=np.isin(ye, scenario.new_classes))
