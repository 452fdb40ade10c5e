"""Device budget: the TyBox memory of a (pruned) NetSpec before it is quantised.

The memory model is TyBox's (Pavan, Ostrovan, Caltabiano, Roveri, 2023): :mod:`tinyevo.space.memory`, shared with the
TyBox stage (:mod:`tinyevo.tybox.memory`, which reads the real int8 ``.tflite``) and the search
space (the ``constraints.fit_device`` check). Converting every pruning step to TFLite only to
size its buffer would cost seconds per step, so :func:`spec_graph` describes, from the NetSpec
alone, the graph the TFLite converter produces for the Keras twin
(:func:`tinyevo.export.keras_model.build_keras`) and :func:`spec_memory` runs the memory model
on it, so the pruning choice, the search and the TyBox stage use one formula; the compression
stage checks the prediction against the real ``.tflite``.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from tinyevo.space.memory import device_need, spec_graph, spec_memory  # noqa: F401  (re-exported)


# the terms that make up ``net_bytes`` (what is charged against M before the buffer)
_CONTRIBUTORS = ("fe_weights", "fe_biases", "fe_quant_params", "arena", "classifier_weights",
                 "classifier_activations", "state")


def largest_contributor(terms: Mapping) -> tuple[str, int]:
    items = [(k, int(terms[k])) for k in _CONTRIBUTORS
             if k in terms and not (k.startswith("fe_") and terms.get("accounting") == "ram")]
    return max(items, key=lambda kv: kv[1])


class BudgetError(ValueError):
    """No pruning step fits the device RAM budget."""


def choose_step(steps, ram_bytes: int, min_buffer_samples: int) -> int:
    """Index (into ``steps``: a sequence of dicts with ``n_samples``, ``net_bytes`` and the memory
    terms, ordered from least to most pruned) of the least-pruned step whose buffer holds at least
    ``min_buffer_samples``; :class:`BudgetError` naming M, the smallest need and its largest
    contributor when none does."""
    steps = list(steps)
    if not steps:
        raise ValueError("no pruning steps to choose from")
    for i, s in enumerate(steps):
        if int(s["n_samples"]) >= int(min_buffer_samples):
            return i
    # the smallest total need: the net plus the minimum buffer
    needs = [device_need(s, min_buffer_samples) for s in steps]
    j = int(np.argmin(needs))
    name, val = largest_contributor(steps[j])
    raise BudgetError(
        f"no pruning step fits config key 'device.ram_bytes' M = {int(ram_bytes)} B with "
        f"'device.min_buffer_samples' = {int(min_buffer_samples)}: the smallest achievable need is "
        f"{needs[j]} B (step {steps[j].get('step', j)}: net {int(steps[j]['net_bytes'])} B + "
        f"{int(min_buffer_samples)} x {int(steps[j]['sample_bytes'])} B samples); its largest "
        f"contributor is {name} = {val} B. Raise device.ram_bytes, lower device.min_buffer_samples, "
        f"or allow more pruning (compress.max_steps, compress.step_fraction)"
    )
