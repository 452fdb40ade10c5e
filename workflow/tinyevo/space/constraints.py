"""Constraints on the nets of the search: the ``constraints:`` section of the config.

Two kinds of checks, each a boolean column:

* **device limits** (what the target can hold):
  ``ok_<limit>`` for every cost-model limit that is set (``max_params``, ``max_macs``,
  ``max_peak_sram``, ``max_flash``, ``max_instructions``; ``null`` = not checked): cost <= limit
  (``instructions``: the emulated instruction count of one feature extraction on ``tybox.target``,
  estimated by the per-layer model fitted on measured nets, :mod:`tinyevo.space.instructions`,
  computed only when the limit is set); and ``ok_device``
  when ``constraints.fit_device`` is true: the unpruned net fits ``device.ram_bytes`` under the
  TyBox memory model (Pavan, Ostrovan, Caltabiano, Roveri, "TyBox: an automatic design and
  code-generation toolbox for TinyML incremental on-device learning", 2023) with a buffer of
  ``device.min_buffer_samples`` samples: ``device_bytes`` = net_bytes + min_buffer_samples x
  (F + 1) <= ram_bytes
  (:func:`tinyevo.space.memory.spec_device_bytes`, ``tybox.accounting`` decides whether the int8
  weights count against M);
* **trainability guards** (what a net needs to learn), table :data:`GUARDS`: ``ok_<guard>`` for
  every guard that is set, e.g. ``ok_min_width``: every stage's output width after rounding
  (``min_stage_width``) >= ``constraints.min_width``.

``within_limits`` = AND of the device limits, ``trainable`` = AND of the guards (True when no
guard is set), ``feasible`` = within_limits AND trainable; ``violations`` counts the failed
checks (the penalty mode's count). The constrained winner C is chosen among ``feasible`` nets,
the unconstrained NC among ``trainable`` ones.

:class:`Constraints` holds the resolved checks (:meth:`Constraints.from_config`); the module
functions (:func:`check_row`, :func:`violations`, :func:`add_flags`, :func:`active_limits`)
accept it or the plain ``constraints:`` mapping (a missing ``fit_device`` is false there: the
device check needs the ``device:`` section, see :func:`constraints_from_config`).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import pandas as pd

from tinyevo.space.cost import cost_of
from tinyevo.space.memory import ACCOUNTINGS, spec_device_bytes
from tinyevo.space.spec import NetSpec, SearchSpace, round_width

# config key -> cost-model column (check: column <= limit)
LIMITS = {"max_params": "params", "max_macs": "macs", "max_peak_sram": "peak_sram", "max_flash": "flash",
          "max_instructions": "instructions"}
DEVICE_COLUMN = "device_bytes"
INSTRUCTIONS_COLUMN = "instructions"
DEFAULT_TARGET = "cortex-m4f"  # the instruction model a plain constraints: mapping is estimated with


def min_stage_width(spec: NetSpec) -> int:
    """The narrowest output width of any block (= of any stage, for nets of the space: every
    block of a stage has the stage's rounded width)."""
    return min((b.cout for b in spec.blocks), default=spec.stem_out)


def _widest_stage(space: SearchSpace) -> int:
    return max(round_width(c, space.round_divisor) for c in space.allowed("channels"))


@dataclass(frozen=True)
class Guard:
    """A trainability guard: ``measure(spec)`` (stored in ``column``) must be >= the configured
    bound. ``widest(space)`` is the largest value any net of the space can reach (so an
    unreachable bound is an error before any work)."""

    column: str
    measure: Callable[[NetSpec], int]
    widest: Callable[[SearchSpace], int]
    meaning: str


# config key under constraints: -> guard. A new guard is one entry here (+ its schema key).
GUARDS: dict[str, Guard] = {
    "min_width": Guard("min_stage_width", min_stage_width, _widest_stage,
                       "every stage's output width after rounding >= min_width"),
}
MEASURES = ("params", "macs", "peak_sram", "flash", "feature_size", *(g.column for g in GUARDS.values()))
KEYS = (*LIMITS, "fit_device", *GUARDS)


def _bound(key: str, v: Any) -> int | None:
    """A limit or guard bound: null, or an integer >= 1 (an integral float from YAML is fine)."""
    if v is None:
        return None
    ok = isinstance(v, numbers.Integral) or (isinstance(v, float) and v.is_integer())
    if isinstance(v, bool) or not ok or int(v) < 1:
        raise ValueError(f"config key 'constraints.{key}' must be an integer >= 1 or null, got {v!r}")
    return int(v)


class Constraints:
    """The resolved checks: active limits, active guards and the device check."""

    def __init__(self, limits: Mapping[str, int] | None = None, guards: Mapping[str, int] | None = None,
                 fit_device: bool = False, ram_bytes: int | None = None, min_buffer_samples: int = 1,
                 accounting: str = "total", instruction_target: str | None = None):
        self.limits = {k: int(v) for k, v in (limits or {}).items()}
        self.guards = {k: int(v) for k, v in (guards or {}).items()}
        self.fit_device = bool(fit_device)
        self.ram_bytes = None if ram_bytes is None else int(ram_bytes)
        self.min_buffer_samples = int(min_buffer_samples)
        self.accounting = str(accounting)
        self.instruction_model = None
        if "max_instructions" in self.limits:  # the fitted model of tybox.target (ValueError without one)
            from tinyevo.space.instructions import model_for

            self.instruction_model = model_for(instruction_target or DEFAULT_TARGET)
        unknown = sorted(set(self.limits) - set(LIMITS)) + sorted(set(self.guards) - set(GUARDS))
        if unknown:
            raise ValueError(f"unknown constraint(s) {unknown}; known: {list(KEYS)}")
        if self.fit_device and self.ram_bytes is None:
            raise ValueError("config key 'constraints.fit_device' is true, but no 'device.ram_bytes' was given "
                             "to check it against (pass the device: config section)")

    @classmethod
    def from_config(cls, constraints: Mapping[str, Any] | None, device: Mapping[str, Any] | None = None,
                    accounting: str | None = "total", target: str | None = None) -> "Constraints":
        """From the ``constraints:`` section, the ``device:`` section (needed when
        ``constraints.fit_device`` is true), ``tybox.accounting`` and ``tybox.target`` (whose
        instruction model ``constraints.max_instructions`` is estimated with; default
        :data:`DEFAULT_TARGET`)."""
        constraints = dict(constraints or {})
        unknown = sorted(set(constraints) - set(KEYS))
        if unknown:
            raise ValueError(f"unknown key(s) {['constraints.' + k for k in unknown]} (known: {list(KEYS)})")
        limits = {k: b for k in LIMITS if (b := _bound(k, constraints.get(k))) is not None}
        guards = {k: b for k in GUARDS if (b := _bound(k, constraints.get(k))) is not None}
        fit = constraints.get("fit_device", False)
        if not isinstance(fit, bool):
            raise ValueError(f"config key 'constraints.fit_device' must be true or false, got {fit!r}")
        kw: dict[str, Any] = {}
        if fit:
            if device is None:
                raise ValueError("config key 'constraints.fit_device' is true, but no device: config was given "
                                 "to check it against (device.ram_bytes, device.min_buffer_samples)")
            for k in ("ram_bytes", "min_buffer_samples"):
                v = device.get(k, 1 if k == "min_buffer_samples" else None)
                if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
                    raise ValueError(f"config key 'device.{k}' must be an integer >= 1, got {v!r}")
                kw[k] = v
            acc = "total" if accounting is None else accounting
            if acc not in ACCOUNTINGS:
                raise ValueError(f"config key 'tybox.accounting' must be one of {list(ACCOUNTINGS)}, got {acc!r}")
            kw["accounting"] = acc
        return cls(limits, guards, fit, instruction_target=target, **kw)

    # ----- what is checked -------------------------------------------------------------------
    @property
    def limit_columns(self) -> list[str]:
        return [f"ok_{k}" for k in self.limits] + (["ok_device"] if self.fit_device else [])

    @property
    def guard_columns(self) -> list[str]:
        return [f"ok_{k}" for k in self.guards]

    @property
    def flag_columns(self) -> list[str]:
        """Every boolean column :meth:`check` gives, in table order."""
        return [*self.limit_columns, *self.guard_columns, "within_limits", "trainable", "feasible"]

    @property
    def measure_columns(self) -> list[str]:
        """The integer columns :meth:`measure` gives."""
        return [*MEASURES, *([DEVICE_COLUMN] if self.fit_device else []),
                *([INSTRUCTIONS_COLUMN] if self.instruction_model is not None else [])]

    def identity(self) -> dict[str, Any]:
        """Everything the flags depend on (for checkpoint keys)."""
        return {"limits": dict(self.limits), "guards": dict(self.guards), "fit_device": self.fit_device,
                "ram_bytes": self.ram_bytes, "min_buffer_samples": self.min_buffer_samples,
                "accounting": self.accounting,
                **({"instruction_model": {"target": self.instruction_model.target,
                                          "coef": dict(self.instruction_model.coef)}}
                   if self.instruction_model is not None else {})}

    def describe(self) -> str:
        parts = [f"constraints.{k} = {v:,}" + (f" (estimated for {self.instruction_model.target})"
                                                if k == "max_instructions" else "")
                 for k, v in self.limits.items()]
        if self.fit_device:
            parts.append(f"constraints.fit_device (device.ram_bytes = {self.ram_bytes:,} B with device."
                         f"min_buffer_samples = {self.min_buffer_samples}, tybox.accounting = {self.accounting})")
        parts += [f"constraints.{k} = {v:,} ({GUARDS[k].meaning})" for k, v in self.guards.items()]
        return ", ".join(parts) if parts else "no limits set"

    def check_space(self, space: SearchSpace) -> None:
        """Raise ValueError (before any work) when a guard cannot hold for any net of ``space``."""
        for k, v in self.guards.items():
            top = GUARDS[k].widest(space)
            if v > top:
                raise ValueError(f"config key 'constraints.{k}' = {v} cannot hold for any net of the search space: "
                                 f"the largest {GUARDS[k].column} it allows is {top} (search_space.alphabets, "
                                 f"population and round_divisor)")

    # ----- per net ---------------------------------------------------------------------------
    def measure(self, spec: NetSpec) -> dict[str, int]:
        """The cost model (params, macs, peak_sram, flash, feature_size), every guard's measure,
        ``device_bytes`` when the device is checked and ``instructions`` when
        ``max_instructions`` is."""
        row = cost_of(spec).as_dict()
        if self.instruction_model is not None:
            row[INSTRUCTIONS_COLUMN] = self.instruction_model.predict_spec(spec)
        for g in GUARDS.values():
            row[g.column] = int(g.measure(spec))
        if self.fit_device:
            try:
                row[DEVICE_COLUMN] = spec_device_bytes(spec, self.min_buffer_samples, self.accounting)
            except ValueError as exc:
                raise ValueError(f"config key 'constraints.fit_device': the TyBox memory model cannot size this "
                                 f"net ({exc}); set constraints.fit_device: false") from None
        return row

    def _need(self, row: Mapping[str, Any], col: str) -> Any:
        if col not in row:
            raise ValueError(f"a net's row lacks column {col!r} needed by the constraints ({self.describe()}); "
                             f"measure nets with Constraints.measure")
        return row[col]

    def check(self, row: Mapping[str, Any]) -> dict[str, bool]:
        """``ok_<limit>``, ``ok_device``, ``ok_<guard>``, ``within_limits``, ``trainable`` and
        ``feasible`` of one net's measures."""
        out = {f"ok_{k}": bool(self._need(row, LIMITS[k]) <= v) for k, v in self.limits.items()}
        if self.fit_device:
            out["ok_device"] = bool(self._need(row, DEVICE_COLUMN) <= self.ram_bytes)
        within = all(out.values())
        for k, v in self.guards.items():
            out[f"ok_{k}"] = bool(self._need(row, GUARDS[k].column) >= v)
        trainable = all(out[c] for c in self.guard_columns)
        out.update(within_limits=within, trainable=trainable, feasible=within and trainable)
        return out

    def violations(self, row: Mapping[str, Any]) -> int:
        """How many limits and guards a net violates (the penalty mode counts these)."""
        flags = self.check(row)
        return sum(1 for c in (*self.limit_columns, *self.guard_columns) if not flags[c])

    def add_flags(self, df: pd.DataFrame) -> pd.DataFrame:
        """Copy of a table with the measure columns, plus :attr:`flag_columns`."""
        df = df.copy()
        within = pd.Series(True, index=df.index)
        for k, v in self.limits.items():
            df[f"ok_{k}"] = (self._need(df, LIMITS[k]) <= v).astype(bool)
            within &= df[f"ok_{k}"]
        if self.fit_device:
            df["ok_device"] = (self._need(df, DEVICE_COLUMN) <= self.ram_bytes).astype(bool)
            within &= df["ok_device"]
        trainable = pd.Series(True, index=df.index)
        for k, v in self.guards.items():
            df[f"ok_{k}"] = (self._need(df, GUARDS[k].column) >= v).astype(bool)
            trainable &= df[f"ok_{k}"]
        df["within_limits"] = within.astype(bool)
        df["trainable"] = trainable.astype(bool)
        df["feasible"] = (within & trainable).astype(bool)
        return df

    def keeps_guards(self, parent: NetSpec) -> Callable[[NetSpec], bool]:
        """Predicate for a mutation's child: every guard the parent satisfies holds for it too
        (a guard the parent already violates does not restrict the child)."""
        held = [(GUARDS[k], v) for k, v in self.guards.items() if GUARDS[k].measure(parent) >= v]
        return lambda child: all(g.measure(child) >= v for g, v in held)


def as_constraints(constraints: Constraints | Mapping[str, Any] | None) -> Constraints:
    if isinstance(constraints, Constraints):
        return constraints
    return Constraints.from_config(constraints)


def constraints_from_config(cfg: Mapping[str, Any]) -> Constraints:
    """From a whole resolved config: ``constraints:``, ``device:`` and ``tybox.accounting``."""
    tybox = cfg.get("tybox", {})
    return Constraints.from_config(cfg["constraints"], cfg.get("device"), tybox.get("accounting", "total"),
                                   tybox.get("target"))


# ----- module-level API (plain mappings or Constraints) ------------------------------------------
def active_limits(constraints: Constraints | Mapping[str, Any]) -> dict[str, int]:
    """The cost-model limits that are set (key -> bound)."""
    return dict(as_constraints(constraints).limits)


def check_row(costs: Mapping[str, Any], constraints: Constraints | Mapping[str, Any]) -> dict[str, bool]:
    """The flags (see :meth:`Constraints.check`) for one net's measures."""
    return as_constraints(constraints).check(costs)


def violations(costs: Mapping[str, Any], constraints: Constraints | Mapping[str, Any]) -> int:
    """How many limits and guards a net violates (CNAS-style penalty counts these)."""
    return as_constraints(constraints).violations(costs)


def add_flags(df: pd.DataFrame, constraints: Constraints | Mapping[str, Any]) -> pd.DataFrame:
    """Add the flag columns (``ok_<limit>``, ``ok_device``, ``ok_<guard>``, ``within_limits``,
    ``trainable``, ``feasible``) to a table with the measure columns."""
    return as_constraints(constraints).add_flags(df)
