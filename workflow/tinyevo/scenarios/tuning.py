"""Learning settings of a scenario chosen on validation streams, never on the evaluation set.

Per (scenario, variant) every point of the grid ``scenarios.tune`` -- learning rate x loss x (for
``incremental``) the start of the classifier rows of the new classes -- runs the on-device
learning rule on ``repetitions`` seeded validation streams drawn from the validation pool
(:func:`tinyevo.scenarios.streams.validation_pool`: training images, disjoint from every image
the evaluation streams and sets are drawn from). The criterion is the mean accuracy on the
validation evaluation set over the steps after the change point (the whole stream for
``transfer``): it rewards a learner that adapts quickly as well as one that ends high. The best
point (ties: the earlier grid point, lrs ascending) is the setting of the evaluation run.

The learning rule is :class:`tinyevo.tybox.reference.OnDeviceLearner`, which is step for step the
generated C++ (the harness tests hold them equal): ``tybox`` / ``tinyol`` run it on the int8
features the compiled feature extractor computes (``harness extract``), with the deployed
classifier and the feature scale / zero point of the generated library; ``float`` on the float
features of the trained model. The grid points of one loss share every Python step
(:class:`BatchLearner`), so a sweep of 5 x 2 x 2 points x 3 repetitions takes seconds.

New-class rows (``new_class_init``):

- ``keep``: the classifier rows as trained. Rows of classes the training split never showed are
  pushed to a large negative logit, so the softmax gives the true class of a new sample a
  probability near 0; with ``mse_softmax`` the gradient of that output, ``y_k (e_k - y.e)``, is
  then near 0 as well and the row hardly moves.
- ``reset``: weights of those rows 0 and their biases the mean bias of the trained classes, so a
  new class starts as an even competitor.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from tinyevo.tybox.reference import LOSSES, OnDeviceLearner, softmax

from .setup import Scenario, ScenarioError

LOG = logging.getLogger("tinyevo.scenarios")
INITS = ("keep", "reset")
TUNE_COLUMNS = ["scenario", "variant", "lr", "loss", "new_class_init", "repetitions", "criterion", "criterion_se",
                "final_mean", "new_mean", "chosen"]  # tune_variant adds the validation streams' stream_length and eval_size


@dataclass(frozen=True)
class Settings:
    """The learning settings of one evaluation run."""
    lr: float
    loss: str
    new_class_init: str = "keep"
    source: str = "config"  # "config" (tuning off or nothing to tune) or "validation"

    def as_dict(self) -> dict:
        return {"lr": float(self.lr), "loss": self.loss, "new_class_init": self.new_class_init,
                "settings_from": self.source}


def grid(scenario: Scenario, tune: Mapping[str, Any], fixed_lr: float | None = None,
         fixed_loss: str | None = None) -> list[tuple[float, str, str]]:
    """The (lr, loss, new_class_init) points of the sweep, in order (lrs ascending). A fixed lr
    (``scenarios.<name>.lr``) or loss replaces its list; ``new_class_init`` is swept only where
    the scenario has new classes."""
    lrs = [float(fixed_lr)] if fixed_lr is not None else sorted(float(v) for v in tune["lrs"])
    losses = [fixed_loss] if fixed_loss is not None else list(tune["losses"])
    inits = list(tune["new_class_init"]) if scenario.new_classes else ["keep"]
    for key, vals in (("lrs", lrs), ("losses", losses), ("new_class_init", inits)):
        if not vals:
            raise ScenarioError(f"config key 'scenarios.tune.{key}' is empty")
    bad = [i for i in inits if i not in INITS]
    if bad:
        raise ScenarioError(f"config key 'scenarios.tune.new_class_init': unknown value(s) {bad}; expected {list(INITS)}")
    return list(itertools.product(lrs, losses, inits))


def initial_classifier(W: np.ndarray, b: np.ndarray, scenario: Scenario, init: str) -> tuple[np.ndarray, np.ndarray]:
    """The classifier the on-device learning starts from (see the module doc for ``init``)."""
    W, b = np.array(W, np.float32), np.array(b, np.float32)
    if init == "keep" or not scenario.new_classes:
        return W, b
    if init != "reset":
        raise ScenarioError(f"unknown new_class_init {init!r}; expected one of {list(INITS)}")
    new = [scenario.label_map.get(c, c) for c in scenario.new_classes]
    old = [scenario.label_map.get(c, c) for c in scenario.old_classes]
    W[:, new] = 0.0
    b[new] = np.float32(b[old].mean()) if old else np.float32(0.0)
    return W, b


def criterion(curve_acc: np.ndarray, scenario: Scenario) -> float:
    """Mean evaluation accuracy over the steps after the change point (all steps >= 1 for
    transfer); ``curve_acc[s]`` is the accuracy after stream sample s (s = 0: before any)."""
    start = scenario.change_point + 1 if scenario.has_change else 1
    return float(np.mean(curve_acc[start:]))


class BatchLearner(OnDeviceLearner):
    """:class:`tinyevo.tybox.reference.OnDeviceLearner` for G classifiers at once, each with its
    own stream (a validation draw), learning rate, loss and start (every grid point of every
    draw of a sweep): one FIFO buffer of ``capacity`` samples per classifier, one pass of
    batch-1 SGD over it per new sample. The streams are equally long, so every buffer holds the
    same number of samples and one Python step serves all G. The float32 arithmetic is the
    reference's, operation for operation, so the weights are bit-identical to it (a test holds
    them equal). ``dequantise`` is the reference's own; ``push_and_train`` takes one sample per
    classifier ((G, F) features, (G,) labels); ``predict`` takes (G, N, F) or (N, F) dequantised
    features and returns (G, N) classes."""

    def __init__(self, W, b, lrs, scale: float, zero_point: int, capacity: int, losses):
        self.Wt = np.ascontiguousarray(np.asarray(W, np.float32).transpose(0, 2, 1))  # (G, C, F)
        self.b = np.array(b, np.float32)  # (G, C)
        self.G, self.C, self.F = self.Wt.shape
        losses = [losses] * self.G if isinstance(losses, str) else list(losses)
        bad = sorted({v for v in losses if v not in LOSSES})
        if bad or len(losses) != self.G:
            raise ValueError(f"losses must be {self.G} of {LOSSES}, got {losses!r}")
        self.is_mse = np.array([v == "mse_softmax" for v in losses])[:, None]
        self.mse = np.flatnonzero(self.is_mse)
        self.lr = np.asarray(lrs, np.float32)[:, None]
        self.scale, self.zp = np.float32(scale), int(zero_point)
        if capacity < 1:
            raise ValueError(f"buffer capacity must be >= 1, got {capacity}")
        self.capacity = int(capacity)
        self.buf_x = np.zeros((self.G, self.capacity, self.F), np.float32)
        self.buf_y = np.zeros((self.G, self.capacity), np.int64)
        self.head = self.count = 0
        self.rows = np.arange(self.G)

    @property
    def W(self) -> np.ndarray:
        """The G classifier kernels (G, F, C), a view of ``Wt`` (the reference's layout)."""
        return self.Wt.transpose(0, 2, 1)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """(G, N, F) or (N, F) dequantised features -> (G, N) predicted classes."""
        x = x if x.ndim == 3 else x[None]
        return softmax((np.matmul(x, self.W) + self.b[:, None, :]).astype(np.float32)).argmax(axis=2)

    def push_and_train(self, q, labels) -> None:
        """The reference's step for every classifier: store (G, F) features and (G,) labels as
        the newest buffer rows, then one pass over each buffer, oldest first."""
        labels = np.broadcast_to(np.asarray(labels, np.int64), (self.G,))
        if labels.min() < 0 or labels.max() >= self.C:
            raise ValueError(f"labels outside 0..{self.C - 1}")
        self.buf_x[:, self.head] = self.dequantise(q)
        self.buf_y[:, self.head] = labels
        self.head = (self.head + 1) % self.capacity
        self.count = min(self.count + 1, self.capacity)
        for i in range(self.count):
            idx = (self.head - self.count + i) % self.capacity
            self._step(self.buf_x[:, idx], self.buf_y[:, idx])

    def _step(self, x: np.ndarray, labels: np.ndarray) -> None:
        y = softmax((np.matmul(self.Wt, x[:, :, None])[:, :, 0] + self.b).astype(np.float32))
        e = -y
        e[self.rows, labels] += np.float32(1.0)
        delta = e
        if len(self.mse):
            s = np.zeros((self.G, 1), np.float32)
            for g in self.mse:
                s[g, 0] = np.dot(y[g], e[g])
            delta = np.where(self.is_mse, y * (e - s), e)
        delta = (delta * self.lr).astype(np.float32)
        self.Wt += delta[:, :, None] * x[:, None, :]
        self.b += delta


def validation_criteria(feats: np.ndarray, W, b, scale: float, zero_point: int, capacity: int, scenario: Scenario,
                        draws: Sequence, points: Sequence[tuple[float, str, str]]) -> dict[str, np.ndarray]:
    """Every grid point on every validation draw (one :class:`BatchLearner` for all of them):
    arrays of shape (draws, points) of the criterion, the final accuracy and the final new-class
    accuracy (NaN where the draw's evaluation set has no new class)."""
    steps = np.arange(scenario.stream_length + 1)
    drifted = (steps > scenario.change_point)[:, None] if scenario.has_change else np.zeros((len(steps), 1), bool)
    starts = [initial_classifier(W, b, scenario, p[2]) for p in points]
    P, D = len(points), len(draws)
    # classifier g = draw g // P, grid point g % P
    bl = BatchLearner(np.stack([w for w, _ in starts] * D), np.stack([v for _, v in starts] * D),
                      [p[0] for p in points] * D, scale, zero_point, capacity, [p[1] for p in points] * D)
    ex = np.repeat(np.stack([bl.dequantise(feats[d.eval_idx]) for d in draws]), P, axis=0)  # (G, N, F)
    sx = np.stack([feats[d.stream_idx] for d in draws])  # (D, L, F)
    sy = np.stack([d.stream_targets for d in draws]).astype(np.int64)  # (D, L)
    preds = [bl.predict(ex)]
    for t in range(sx.shape[1]):
        bl.push_and_train(np.repeat(sx[:, t], P, axis=0), np.repeat(sy[:, t], P))
        preds.append(bl.predict(ex))
    pred = np.stack(preds, axis=1)  # (G, steps, N)
    out = {k: np.full((D, P), np.nan) for k in ("criterion", "final", "new")}
    for j, d in enumerate(draws):
        targets = np.where(drifted, d.eval_post[None, :], d.eval_pre[None, :])
        for i in range(P):
            correct = pred[j * P + i] == targets
            acc = correct.mean(axis=1)
            out["criterion"][j, i] = criterion(acc, scenario)
            out["final"][j, i] = acc[-1]
            if d.eval_new.any():
                out["new"][j, i] = correct[-1, d.eval_new].mean()
    return out


def run_validation(feats: np.ndarray, W, b, scale: float, zero_point: int, capacity: int, scenario: Scenario,
                   draws: Sequence, points: Sequence[tuple[float, str, str]]) -> list[dict]:
    """Every grid point over the validation draws (:func:`validation_criteria`): per point the
    criterion, its standard error over the draws (NaN for one draw), the final accuracy and the
    final new-class accuracy, means over the draws."""
    per = validation_criteria(feats, W, b, scale, zero_point, capacity, scenario, draws, points)
    D = len(draws)
    rows = []
    for i in range(len(points)):
        c = per["criterion"][:, i]
        rows.append({"criterion": float(c.mean()),
                     "criterion_se": float(c.std(ddof=1) / np.sqrt(D)) if D > 1 else float("nan"),
                     "final_mean": float(per["final"][:, i].mean()),
                     "new_mean": float(per["new"][:, i].mean()) if scenario.new_classes else float("nan")})
    return rows


def sweep(scenario: Scenario, variant: str, feats: np.ndarray, W, b, scale: float, zero_point: int, capacity: int,
          draws: Sequence, points: Sequence[tuple[float, str, str]],
          log: logging.Logger | None = None) -> pd.DataFrame:
    """Every grid point on the validation draws; the best criterion is ``chosen`` (ties: the
    earlier point)."""
    log = log or LOG
    res = run_validation(feats, W, b, scale, zero_point, capacity, scenario, draws, points)
    rows = []
    for (lr, loss, init), r in zip(points, res):
        rows.append({"scenario": scenario.name, "variant": variant, "lr": float(lr), "loss": loss,
                     "new_class_init": init, "repetitions": len(draws), **r})
        log.info("  lr %-7g loss %-13s init %-5s criterion %.4f +- %.4f final %.4f new %.4f", lr, loss, init,
                 r["criterion"], r["criterion_se"], r["final_mean"], r["new_mean"])
    df = pd.DataFrame(rows)
    best = int(np.argmax(df["criterion"].to_numpy()))  # argmax returns the first maximum
    df["chosen"] = np.arange(len(df)) == best
    return df[TUNE_COLUMNS]


def chosen_settings(table: pd.DataFrame) -> Settings:
    """The chosen row of a sweep table."""
    row = table[table["chosen"]]
    if len(row) != 1:
        raise ValueError(f"a tuning table needs exactly one chosen row, it has {len(row)}")
    r = row.iloc[0]
    return Settings(float(r["lr"]), str(r["loss"]), str(r["new_class_init"]), "validation")
