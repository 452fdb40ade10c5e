"""Aging evolution with constraint-aware selection (the genetic-NAS paper's genetic step; CNAS-style penalty).

- :mod:`tinyevo.search.mutation`: one random, always net-changing mutation that keeps the
  trainability guards its parent satisfies.
- :mod:`tinyevo.search.aging`: the loop (:func:`evolve`), scoring injected as a callable,
  resumable through :mod:`tinyevo.search.checkpoint`.
- :mod:`tinyevo.search.nsga2`: ``evolution.algorithm: nsga2``, pymoo's NSGA-II over the score and
  the costs of ``evolution.objectives``, with the same mutation, constraints and score cache.
- :mod:`tinyevo.search.pareto`: the Pareto set and hypervolume of either algorithm's history.
- :mod:`tinyevo.search.select`: the C/NC before/after winners table.
- :mod:`tinyevo.search.plots`: progress, score-vs-MACs Pareto and feasibility plots.
- :mod:`tinyevo.search.stage`: the rule-level entry point wiring the real proxy scorer.
"""

from tinyevo.search.aging import EvolutionParams, EvolutionResult, evolve, prepare_initial, proxy_columns
from tinyevo.search.mutation import Mutation, mutate, mutable_positions
from tinyevo.search.select import NoFeasibleNet, select_winners

__all__ = ["EvolutionParams", "EvolutionResult", "Mutation", "NoFeasibleNet", "evolve", "mutable_positions",
           "mutate", "prepare_initial", "proxy_columns", "select_winners"]
