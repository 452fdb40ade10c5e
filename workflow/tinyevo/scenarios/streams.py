"""Streams and evaluation sets of a scenario, drawn from data the feature extractor never saw.

The evaluation pool is the val + test splits plus one half of the training images of classes the
net was not trained on (``Scenario.trained_classes``: the new classes of ``incremental``, the
target classes of ``transfer``); the other half, drawn per class with the scenario's seed, goes to
the *validation* pool together with the training images of the trained classes. Learning
settings (lr, loss, the start of new-class rows) are chosen on streams of the validation pool
(:mod:`tinyevo.scenarios.tuning`), which shares no image with the evaluation pool. Per repetition, with its own seed: a class-balanced evaluation set of
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
    index: np.ndarray | None = None  # position of each image in its split


def validation_half(y_train: np.ndarray, scenario: Scenario) -> np.ndarray:
    """Mask over the training split: the images that belong to the validation pool.

    Every image of a trained class, and for every class outside ``scenario.trained_classes`` a
    seeded half of its images (``floor(n / 2)``, drawn with the scenario's seed and the class id).
    The other half of the untrained classes belongs to the evaluation pool."""
    y_train = np.asarray(y_train, np.int64)
    mask = np.isin(y_train, np.asarray(scenario.trained_classes, np.int64))
    for c in np.unique(y_train[~mask]):
        idx = np.flatnonzero(y_train == c)
        rng = np.random.default_rng(np.random.SeedSequence([int(scenario.seed), 7919, int(c)]))
        mask[rng.choice(idx, size=len(idx) // 2, replace=False)] = True
    return mask


def _pool(data_dir, scenario: Scenario, parts) -> Pool:
    """Concatenate ``(split, keep-mask-function or None)`` parts of the dataset into a pool."""
    from tinyevo.data import load_split

    xs, ys, src, pos = [], [], [], []
    for split, keep_of in parts:
        x, y = load_split(data_dir, split)
        y = np.asarray(y, np.int64)
        keep = np.arange(len(y)) if keep_of is None else np.flatnonzero(keep_of(y))
        if len(keep) == 0:
            continue
        xs.append(np.asarray(x[keep]))
        ys.append(y[keep])
        src.append(np.full(len(keep), split))
        pos.append(keep.astype(np.int64))
    x = np.concatenate(xs) if xs else np.zeros((0, 1, 1, 1), np.uint8)
    y = np.concatenate(ys) if ys else np.zeros(0, np.int64)
    if len(y) and int(y.max()) >= scenario.num_classes:
        raise ScenarioError(f"{data_dir}: label {int(y.max())} outside the configured {scenario.num_classes} classes")
    return Pool(x, y, np.concatenate(src) if src else np.zeros(0, "<U5"),
                np.concatenate(pos) if pos else np.zeros(0, np.int64))


def held_out_pool(data_dir, scenario: Scenario) -> Pool:
    """The evaluation pool: val + test + the evaluation half of the training images of classes
    outside ``scenario.trained_classes`` (:func:`validation_half`)."""
    return _pool(data_dir, scenario, [("val", None), ("test", None),
                                      ("train", lambda y: ~validation_half(y, scenario))])


def validation_pool(data_dir, scenario: Scenario) -> Pool:
    """The validation pool: the training split's images of :func:`validation_half` (disjoint from
    :func:`held_out_pool`). The trained classes' images were seen by the feature extractor, so
    their features are cleaner than the evaluation pool's; the tuning criterion is therefore the
    speed of adaptation after the change point, not only the final level."""
    return _pool(data_dir, scenario, [("train", lambda y: validation_half(y, scenario))])


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


def draw(pool: Pool, scenario: Scenario, rep: int, validation: bool = False) -> Draw:
    """Repetition ``rep``: evaluation set and stream (``validation``: a tuning stream, own seeds)."""
    seed = scenario.rep_seed(rep, validation)
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
