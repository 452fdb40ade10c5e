"""On-device learning scenarios (the TyBox thesis, "Neural Architecture Search for Tiny Incremental On-Device Learning"): concept drift, incremental and transfer
learning, each run by three learners over the same streams -- the generated TyBox C++ (``tybox``),
the same code with a one-sample buffer (``tinyol``) and the float model with the same learning
rule (``float``).

Modules: ``setup`` (scenario definitions and config checks), ``streams`` (held-out pool,
class-balanced evaluation sets and streams per repetition), ``learners`` (the three learners),
``stage`` (the rule entry points: per-variant curves, gather + summary, plot).
"""

from .setup import NET_OF, SCENARIOS, VARIANTS, Scenario, ScenarioError, check_scenarios, scenario_from_config

__all__ = ["NET_OF", "SCENARIOS", "VARIANTS", "Scenario", "ScenarioError", "check_scenarios", "scenario_from_config"]
