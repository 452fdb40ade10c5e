"""Compression stage (the TyBox thesis): structured L1 pruning of the trained torch net, torch -> Keras
export, full-integer int8 feature extractor (TFLite, run with LiteRT) and the device-budget choice.

Modules: ``prune`` (units, L1 ranking, channel removal, schedule order), ``keras_model`` (Keras
builder from a NetSpec + weight transfer), ``quantize`` (TFLite int8 conversion, LiteRT runner),
``budget`` (TyBox memory of a NetSpec via ``tinyevo.space.memory``, the budget choice), ``stage``
(the rule's ``run_compress`` and the plot).
"""

# TensorFlow and triton (which torch loads lazily through torch._dynamo, e.g. when an optimizer is
# created) both register the same LLVM command-line options: if TensorFlow is imported first, the
# later triton import aborts the process ("LLVM ERROR: inconsistency in registered CommandLine
# options"). This stage uses both libraries, so torch._dynamo is loaded here, before any TF import.
try:
    import torch._dynamo  # noqa: F401
except ImportError:  # pragma: no cover - torch without dynamo has no triton either
    pass

from tinyevo.compress.budget import BudgetError, choose_step, spec_graph, spec_memory
from tinyevo.compress.prune import (Unit, filter_l1, keep_largest, next_unit, prune_channels, prune_unit,
                                    pruned_spec, unit_scores, unit_width, units_of)

__all__ = ["BudgetError", "Unit", "choose_step", "filter_l1", "keep_largest", "next_unit", "prune_channels",
           "prune_unit", "pruned_spec", "spec_graph", "spec_memory", "unit_scores", "unit_width", "units_of"]
