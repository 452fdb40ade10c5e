"""bench/ondevice_levers.py: the reference learner with buffer passes and replacement policies."""

import numpy as np
import pytest

from tinyevo.tybox.reference import OnDeviceLearner

from conftest import load_bench


def _load():
    return load_bench("ondevice_levers")


def _stream(n=40, F=12, C=4, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(-128, 128, size=(n, F)).astype(np.int8), rng.integers(0, C, size=n)


def _start(F=12, C=4, seed=1):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(F, C)) * 0.1).astype(np.float32), np.zeros(C, np.float32)


@pytest.mark.parametrize("loss", ["mse_softmax", "cross_entropy"])
def test_one_pass_fifo_is_the_reference_step_for_step(loss):
    mod = _load()
    q, y = _stream()
    W, b = _start()
    ref = OnDeviceLearner(W, b, 0.02, 3, capacity=7, lr=0.05, loss=loss)
    lev = mod.LeverLearner(W, b, 0.02, 3, capacity=7, lr=0.05, loss=loss, passes=1, policy="fifo")
    for qi, yi in zip(q, y):
        ref.push_and_train(qi, int(yi))
        lev.push_and_train(qi, int(yi))
        np.testing.assert_array_equal(lev.Wt, ref.Wt)
        np.testing.assert_array_equal(lev.b, ref.b)
    assert sorted(lev.buf_y.tolist()) == sorted(ref.buf_y.tolist())


def test_two_passes_are_two_reference_passes():
    mod = _load()
    q, y = _stream(n=10)
    W, b = _start()
    lev = mod.LeverLearner(W, b, 0.02, 0, capacity=4, lr=0.05, loss="cross_entropy", passes=2)
    ref = OnDeviceLearner(W, b, 0.02, 0, capacity=4, lr=0.05, loss="cross_entropy")
    for qi, yi in zip(q, y):
        lev.push_and_train(qi, int(yi))
        ref.push_and_train(qi, int(yi))  # the push and the first pass
        for i in range(ref.count):  # the second pass, oldest first
            idx = (ref.head - ref.count + i) % ref.capacity
            ref._step(ref.buf_x[idx], int(ref.buf_y[idx]))
        np.testing.assert_allclose(lev.Wt, ref.Wt, rtol=0, atol=0)


def test_balanced_policy_evicts_from_the_largest_class():
    mod = _load()
    W, b = _start()
    lev = mod.LeverLearner(W, b, 1.0, 0, capacity=4, lr=0.0, loss="cross_entropy", policy="balanced")
    x = np.zeros(12, np.int8)
    for label in (0, 0, 0, 1):
        lev.push_and_train(x, label)
    lev.push_and_train(x, 2)  # full: the oldest 0 leaves
    assert sorted(lev.buf_y.tolist()) == [0, 0, 1, 2]
    lev.push_and_train(x, 3)  # classes 0 is still the largest
    assert sorted(lev.buf_y.tolist()) == [0, 1, 2, 3]
    lev.push_and_train(x, 3)  # every class has one: the oldest sample of all leaves (the remaining 0)
    assert sorted(lev.buf_y.tolist()) == [1, 2, 3, 3]


def test_reservoir_keeps_a_uniform_sample_seeded():
    mod = _load()
    W, b = _start()
    kept = np.zeros(200)
    for seed in range(300):
        lev = mod.LeverLearner(W, b, 1.0, 0, capacity=10, lr=0.0, loss="cross_entropy", policy="reservoir",
                               seed=seed, passes=0)  # the policy alone: no SGD steps
        for i in range(200):
            lev.push_and_train(np.zeros(12, np.int8), i % 4)
        kept[lev.age - 1] += 1
    # each of the 200 arrivals is kept with probability 10 / 200: 15 of 300 runs on average
    first, last = kept[:100].mean(), kept[100:].mean()
    assert 12 < first < 18 and 12 < last < 18, (first, last)
    a = mod.LeverLearner(W, b, 1.0, 0, capacity=10, lr=0.0, loss="cross_entropy", policy="reservoir", seed=5)
    c = mod.LeverLearner(W, b, 1.0, 0, capacity=10, lr=0.0, loss="cross_entropy", policy="reservoir", seed=5)
    for i in range(50):
        a.push_and_train(np.zeros(12, np.int8), i % 4)
        c.push_and_train(np.zeros(12, np.int8), i % 4)
    np.testing.assert_array_equal(a.age, c.age)
