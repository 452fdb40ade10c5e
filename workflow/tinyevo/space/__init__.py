"""Search space: genes, fixed-size architecture strings, NetSpec and the cost model.

Torch is imported lazily (``tinyevo.space.torch_model``) so that this package stays cheap.
"""

from tinyevo.space.constraints import (GUARDS, LIMITS, Constraints, active_limits, add_flags, check_row,
                                      constraints_from_config, min_stage_width, violations)
from tinyevo.space.cost import Cost, cost_of, layer_table
from tinyevo.space.spec import (
    GENES,
    BlockSpec,
    Genes,
    NetSpec,
    SearchSpace,
    round_width,
    space_from_config,
)

__all__ = ["GENES", "GUARDS", "LIMITS", "BlockSpec", "Constraints", "Cost", "Genes", "NetSpec", "SearchSpace",
           "active_limits", "add_flags", "check_row", "constraints_from_config", "cost_of", "layer_table",
           "min_stage_width", "violations",
           "round_width", "space_from_config"]
