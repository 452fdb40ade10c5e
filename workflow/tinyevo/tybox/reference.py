"""numpy reference of TyBox's on-device learning, step for step the generated C++ (tybox.cc).

``OnDeviceLearner(kernel, bias, scale, zero_point, capacity, lr, loss)``:
``push_and_train(q, label)`` stores int8 features in a ring buffer (the newest overwrites the
oldest) and runs one pass of batch-1 SGD over every stored sample, oldest first, updating only
the classifier; ``predict(q)`` classifies int8 features (one row or a batch). Features are
dequantised ``(q - zero_point) * scale`` in float32. Losses: ``mse_softmax`` (L = 0.5 |t - y|^2
on the softmax output: delta = J_softmax (t - y)) and ``cross_entropy`` (delta = t - y on the
logits); update W += x (lr * delta)^T, b += lr * delta. With scale 1 and zero point 0 it runs on
float features too (the float baseline of the scenarios).

The weights are held transposed, ``Wt`` (C, F) C-contiguous (``W`` is its (F, C) view): one
update is then C contiguous rows of F products, which numpy runs about 3x faster than F rows of
C, and the batched sweep learner (``tinyevo.scenarios.tuning.BatchLearner``) computes exactly the
same float32 operations on a stack of such matrices.
"""

from __future__ import annotations

import numpy as np

LOSSES = ("mse_softmax", "cross_entropy")


def dequantise(q, scale, zero_point: int) -> np.ndarray:
    """int8 features -> float32 ``(q - zero_point) * scale``; float input is returned as float32."""
    q = np.asarray(q)
    if q.dtype == np.int8:
        return ((q.astype(np.int32) - int(zero_point)).astype(np.float32) * np.float32(scale)).astype(np.float32)
    return q.astype(np.float32)


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z).astype(np.float32)
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


class OnDeviceLearner:
    def __init__(self, kernel, bias, scale: float = 1.0, zero_point: int = 0, capacity: int = 1,
                 lr: float = 0.01, loss: str = "mse_softmax"):
        if loss not in LOSSES:
            raise ValueError(f"tybox.loss must be one of {LOSSES}, got {loss!r}")
        if capacity < 1:
            raise ValueError(f"buffer capacity must be >= 1, got {capacity}")
        self.Wt = np.ascontiguousarray(np.asarray(kernel, dtype=np.float32).T)  # (C, F)
        self.b = np.array(bias, dtype=np.float32)
        self.C, self.F = self.Wt.shape
        self.scale = np.float32(scale)
        self.zp = int(zero_point)
        self.capacity = int(capacity)
        self.lr = np.float32(lr)
        self.loss = loss
        self.buf_x = np.zeros((self.capacity, self.F), dtype=np.float32)
        self.buf_y = np.zeros(self.capacity, dtype=np.int64)
        self.head = 0
        self.count = 0

    @property
    def W(self) -> np.ndarray:
        """The classifier kernel (F, C), a view of ``Wt``."""
        return self.Wt.T

    def dequantise(self, q) -> np.ndarray:
        return dequantise(q, self.scale, self.zp)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Softmax of the logits of (N, F) features."""
        return softmax((x @ self.Wt.T + self.b).astype(np.float32))

    def predict(self, q) -> np.ndarray | int:
        x = self.dequantise(q)
        y = self.forward(np.atleast_2d(x)).argmax(axis=1)
        return int(y[0]) if np.ndim(q) == 1 else y

    def _step(self, x: np.ndarray, label: int) -> None:
        y = softmax((self.Wt @ x + self.b).astype(np.float32))
        t = np.zeros(self.C, np.float32)
        t[label] = 1.0
        e = (t - y).astype(np.float32)
        if self.loss == "mse_softmax":
            s = np.float32(np.dot(y, e))
            delta = (y * (e - s)).astype(np.float32)
        else:
            delta = e
        delta = (delta * self.lr).astype(np.float32)
        self.Wt += np.outer(delta, x).astype(np.float32)
        self.b += delta

    def push_and_train(self, q, label: int) -> None:
        if not 0 <= int(label) < self.C:
            raise ValueError(f"label {label} outside 0..{self.C - 1}")
        self.buf_x[self.head] = self.dequantise(q)
        self.buf_y[self.head] = int(label)
        self.head = (self.head + 1) % self.capacity
        self.count = min(self.count + 1, self.capacity)
        for i in range(self.count):
            idx = (self.head - self.count + i) % self.capacity
            self._step(self.buf_x[idx], int(self.buf_y[idx]))


def run_stream(learner: OnDeviceLearner, stream_q, stream_y, eval_q, eval_y) -> dict:
    """Same protocol as ``harness stream``: step 0 = before training; each step predicts the new
    sample, pushes and trains, then evaluates. Returns curve (DataFrame) and eval_pred."""
    import pandas as pd

    eval_y = np.asarray(eval_y)
    preds = [learner.predict(eval_q)]
    rows = [{"step": 0, "label": -1, "pred": -1, "eval_acc": float((preds[0] == eval_y).mean())}]
    for i, (q, lab) in enumerate(zip(stream_q, stream_y), start=1):
        p = learner.predict(q)
        learner.push_and_train(q, int(lab))
        preds.append(learner.predict(eval_q))
        rows.append({"step": i, "label": int(lab), "pred": int(p),
                     "eval_acc": float((preds[-1] == eval_y).mean())})
    return {"curve": pd.DataFrame(rows), "eval_pred": np.stack(preds).astype(np.int8)}
