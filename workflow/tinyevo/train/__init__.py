"""Training: a reusable loop, the short-training final round (``results/evolution/final/``), the
training stage (``results/train/{net}/``) and the proxy validation stage (``results/validation/``).

Loop API (also used by the compression stage for short fine-tunes)
------------------------------------------------------------------
``fit(model, train=(x, y), test=(x, y) | None, stats=(mean, std), settings, device,
checkpoint_path=None, progress=True, amp=False, on_mismatch="error", stop_after=None) -> pandas.DataFrame``
    Trains ``model`` in place. ``x`` are uint8 images N x H x W x C (memmaps are fine: batches
    are gathered on the fly and normalised on the device as ``(x / 255 - mean) / std`` with the
    per-channel ``stats`` of the data stage); ``y`` are int64 labels < the classifier's outputs.
    ``settings`` keys (defaults = the paper's final training): ``epochs`` 20, ``lr`` 0.1,
    ``momentum`` 0.9, ``weight_decay`` 1e-6, ``batch_size`` 64, ``schedule`` ``constant`` |
    ``cosine`` (cosine annealing to 0 over ``epochs``, stepped per epoch), ``augment`` False
    (random shift of up to 1/8 of the side, black padding), ``flip`` False (with ``augment``:
    random horizontal flip, for natural images only), ``seed`` 0; ``threads`` is accepted and
    ignored, any other key is an error. SGD, cross-entropy as the per-sample mean. The batch order
    and augmentation of epoch ``e`` come from a ``torch.Generator`` seeded by (seed, e). ``amp``
    (config ``compute.amp``) enables ``torch.autocast`` float16 + ``GradScaler`` on CUDA only.
    One progress bar per epoch. Returns the history, one row per epoch: ``epoch`` (1-based),
    ``train_loss``, ``train_acc`` (running, in train mode), ``test_loss``, ``test_acc`` (eval mode,
    NaN when ``test`` is None), ``lr`` (used in that epoch), ``seconds``.

    With ``checkpoint_path`` a checkpoint is written atomically after every epoch (model,
    optimizer, scheduler, GradScaler, RNG states, history so far). If the file exists when
    ``fit`` starts, training continues after its last epoch, and on CPU ends with exactly the
    weights of an uninterrupted run. A checkpoint of another network (NetSpec / tensor shapes),
    other settings or other data sizes raises ``ValueError`` (``on_mismatch="error"``) or is
    ignored with a warning (``"restart"``); so is an unreadable one. Checkpoints hold tensors and
    plain data only and are read with ``torch.load(weights_only=True)``: a file with other Python
    objects is refused, never unpickled.
    ``stop_after`` ends the run after that many of its ``epochs`` (the schedule still spans
    ``epochs``); a later call with a larger ``stop_after`` continues it from the checkpoint.

``evaluate(model, x, y, stats, device, batch_size=256, amp=False) -> (loss, acc, predictions)``
    Eval mode, no gradients: per-sample mean cross-entropy, accuracy, predicted labels (int64).

``load_checkpoint(path)``: the checkpoint dict; ``FileNotFoundError`` / ``CheckpointError`` (a
``ValueError``) with the path for a missing / unreadable / refused file.

Stage functions
---------------
``run_training`` (rule ``train``), ``train_net`` (a NetSpec + arrays -> TrainResult),
``class_subset`` (branches ``C``, ``NC``, ``C-inc``, ``C-src``, see :mod:`tinyevo.train.classes`),
``plan_stage`` / ``train_slot`` / ``gather_stage`` (search-quality validation: ``stratified_sample``,
``measure_table``, ``validation_plan``, ``train_eval``, ``quality_table``, ``noise_table``, see
:mod:`tinyevo.train.validation`), ``plot_history`` / ``plot_scatter``; the short-training final
round (``select_candidates``, ``round_slots``, ``run_slot``, ``survivors``, ``run_choice``, see
:mod:`tinyevo.train.final_round`) and ``chosen_arch`` (the arch rule ``train`` trains).
"""

from __future__ import annotations

import importlib

# Lazy attributes: ``tinyevo.train.classes`` is imported by the rule files at parse time and must
# not pull torch in.
_EXPORTS = {
    "NETS": "classes", "ClassSubset": "classes", "base_net": "classes", "class_subset": "classes",
    "DEFAULT_SETTINGS": "loop", "HISTORY_COLUMNS": "loop", "augment_batch": "loop", "evaluate": "loop",
    "fit": "loop", "load_checkpoint": "loop", "CheckpointError": "loop", "resolve_settings": "loop",
    "TrainResult": "stage", "chosen_arch": "stage", "confusion_table": "stage", "run_training": "stage",
    "selected_arch": "stage", "train_net": "stage",
    "NoCandidate": "final_round", "round_slots": "final_round", "select_candidates": "final_round",
    "survivors": "final_round", "rank_round": "final_round", "run_slot": "final_round",
    "gather_round": "final_round", "finalists_of": "final_round", "choose": "final_round",
    "run_choice": "final_round", "plot_final_round": "final_round",
    "stratified_sample": "validation", "measure_table": "validation", "validation_plan": "validation",
    "train_eval": "validation", "quality_table": "validation", "noise_table": "validation",
    "plan_stage": "validation", "train_slot": "validation", "gather_stage": "validation",
    "plot_history": "plots", "plot_scatter": "plots",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(f"module 'tinyevo.train' has no attribute {name!r}")
    return getattr(importlib.import_module(f"tinyevo.train.{mod}"), name)
