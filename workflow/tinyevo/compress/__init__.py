"""Compression stage (the TyBox thesis): structured L1 pruning of the trained torch net, torch -> Keras
export, full-integer int8 feature extractor (TFLite, run with LiteRT) and the device-budget choice.

Modules: ``prune`` (units, L1 ranking, channel removal, schedule order), ``budget`` (TyBox memory of a NetSpec via ``tinyevo.space.memory``, the budget choice), ``stage``
(the rule's ``run_compress`` and the plot).
"""

# The names below load on first use (PEP 562), so `import tinyevo.compress.stage` for the plot rule
# (the `core` environment, without torch) does not import torch through this file.
#
# TensorFlow and triton (which torch loads through torch._dynamo) register the same LLVM
# command-line options: a process that imports TensorFlow first and torch._dynamo later aborts
# ("LLVM ERROR: inconsistency in registered CommandLine options"). Every torch.optim optimizer
# imports torch._dynamo on first use; this stage's fine-tuning trains through tinyevo.train.loop,
# whose optimizer is tinyevo.train.optim (no torch.optim, no compiler), so nothing here loads
# torch._dynamo. Code that uses torch.optim next to TensorFlow must import torch._dynamo first.

_EXPORTS = {
    "tinyevo.compress.budget": ("BudgetError", "choose_step", "spec_graph", "spec_memory"),
    "tinyevo.compress.prune": ("Unit", "filter_l1", "keep_largest", "next_unit", "prune_channels", "prune_unit",
                               "pruned_spec", "unit_scores", "unit_width", "units_of"),
}
_WHERE = {name: mod for mod, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'tinyevo.compress' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value
    return value
