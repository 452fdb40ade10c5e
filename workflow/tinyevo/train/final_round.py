"""The short-training final round: zero-cost preselection, then successive halving.

The evolution ranks nets by a training-free score; this round checks its top picks with a little
real training before C and NC are handed on. For each net kind (``C``: the constrained pool, rows
with ``feasible``; ``NC``: the unconstrained pool, rows with ``trainable`` within the optional
``final_round.nc_limits``) the top-k *distinct* architectures of the evolution history by
``score`` (the configured ranking's combined value)
are trained with successive halving (Jamieson and Talwalkar, "Non-stochastic Best Arm
Identification and Hyperparameter Optimization", AISTATS 2016; the budget schedule of Li et al.,
"Hyperband", JMLR 2018):

- round 0 trains every candidate ``epochs[0]`` epochs; round r trains the survivors of round r-1
  ``epochs[r]`` *more* epochs, continuing from their saved weights, optimizer, scheduler and RNG
  states. Every candidate's run is the prefix of one run of ``E = sum(epochs)`` epochs (the
  learning-rate schedule spans E), so a survivor of every round ends exactly as an uninterrupted
  E-epoch run would (bit-identical on the CPU).
- After round r the better ``ceil(m_r * keep)`` of its ``m_r`` candidates survive (at least one):
  ranked by validation accuracy, ties by the higher score, then by the earlier candidate.
- The chosen net is the best of the last round by the same order. Accuracy is measured on the
  validation split, never on the test split.

Static DAG: Snakemake must know every job before the history exists, so the slots are sized from
the config alone: ``n_0 = k`` and ``n_r = ceil(n_{r-1} * keep)`` (:func:`round_slots`). With
``m_0 = min(k, available)`` real candidates, ``m_r = ceil(m_{r-1} * keep) <= n_r``, so every
survivor has a slot; a slot beyond the real candidates writes an *empty* row (``empty = True``)
and an empty state file without importing torch. Each slot of each round is its own job; the job
of slot j in round r reads the gathered table of round r-1 to learn which survivor is its j-th
and loads that survivor's state file.

Importing this module is cheap (pandas only): the rule files call :func:`round_slots` at parse
time; torch is imported inside the training function.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import shutil
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from tinyevo.io import atomic_path, atomic_write_bytes, read_parquet, write_parquet
from tinyevo.search.select import NoFeasibleNet, describe_constraints

LOG = logging.getLogger("tinyevo.train")

NETS = ("C", "NC")
CANDIDATE_COLUMNS = ["net", "candidate", "arch", "score", "params", "macs", "history_row"]
ROW_COLUMNS = ["net", "round", "slot", "candidate", "arch", "score", "params", "macs", "epochs_total",
               "val_acc", "val_loss", "train_acc", "seconds", "empty"]
FINALIST_COLUMNS = ["net", "round", "slot", "candidate", "arch", "score", "params", "macs", "epochs_total",
                    "val_acc", "val_loss", "train_acc", "seconds", "survived", "chosen"]
CHOICE_COLUMNS = ["net", "arch", "source", "val_acc"]
#: ``final_round``: the net's own round; ``final_round_C``: NC takes C's round winner (C's pool lies
#: inside NC's), without a round of its own or when C's winner validated at least as well as NC's;
#: ``zero_cost``: no round at all.
SOURCES = ("final_round", "final_round_C", "zero_cost")
_NC_LIMITS = ("max_params", "max_macs")


class NoCandidate(NoFeasibleNet):
    """No net of the evolution history is in a final-round pool."""


# ----------------------------------------------------------------------------------------------
# the schedule (static, from the config)
# ----------------------------------------------------------------------------------------------
def check_config(k: int, epochs: Sequence[int], keep: float, nets: Sequence[str] = NETS) -> None:
    """ValueError naming the ``final_round`` key of a bad value."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
        raise ValueError(f"config key 'final_round.k' must be an integer >= 0, got {k!r}")
    if (not isinstance(epochs, (list, tuple)) or not epochs
            or any(isinstance(e, bool) or not isinstance(e, (int, np.integer)) or e < 1 for e in epochs)):
        raise ValueError(f"config key 'final_round.epochs' must be a non-empty list of integers >= 1, got {epochs!r}")
    if isinstance(keep, bool) or not isinstance(keep, (int, float)) or not 0 < keep <= 1:
        raise ValueError(f"config key 'final_round.keep' must be in (0, 1], got {keep!r}")
    bad = [n for n in nets if n not in NETS]
    if bad or len(set(nets)) != len(nets):
        raise ValueError(f"config key 'final_round.nets' must be distinct names of {list(NETS)}, got {list(nets)!r}")


def n_survivors(m: int, keep: float) -> int:
    """Candidates kept of ``m``: ``ceil(m * keep)``, at least 1 (0 when ``m`` is 0). The product
    is rounded to 9 decimals first so that e.g. 10 * 0.3 keeps 3, not 4."""
    if m <= 0:
        return 0
    return max(1, math.ceil(round(m * float(keep), 9)))


def round_slots(k: int, epochs: Sequence[int], keep: float) -> list[int]:
    """Jobs per round: ``[k, ceil(k * keep), ...]``, one entry per round (``len(epochs)``)."""
    check_config(k, list(epochs), keep)
    slots = [int(k)]
    for _ in range(1, len(epochs)):
        slots.append(n_survivors(slots[-1], keep))
    return slots


def path_patterns(final_dir: str) -> dict[str, str]:
    """The stage's files under ``final_dir`` as Snakemake patterns (wildcards ``net``, ``round``,
    ``slot``): ``candidates``, ``row`` / ``state`` (one slot job), ``round`` (gathered round)."""
    return {"candidates": f"{final_dir}/{{net}}/candidates.parquet",
            "row": f"{final_dir}/{{net}}/round{{round}}/slot{{slot}}.parquet",
            "state": f"{final_dir}/{{net}}/round{{round}}/slot{{slot}}.state.pt",
            "round": f"{final_dir}/{{net}}/round{{round}}.parquet"}


def slot_inputs(final_dir: str, net: str, round_index: int, slots: Sequence[int]) -> dict[str, Any]:
    """Inputs of the job of any slot of round ``round_index``: ``source`` (the candidates table
    for round 0, else the previous round's gathered table) and ``states`` (every state file of
    the previous round, in slot order: which one a slot continues is known only at run time)."""
    p = path_patterns(final_dir)
    if round_index == 0:
        return {"source": p["candidates"].format(net=net), "states": []}
    prev = round_index - 1
    return {"source": p["round"].format(net=net, round=prev),
            "states": [p["state"].format(net=net, round=prev, slot=j) for j in range(slots[prev])]}


def epoch_marks(epochs: Sequence[int]) -> list[int]:
    """Epochs done at the end of each round (the running sum of ``epochs``)."""
    return [int(v) for v in np.cumsum([int(e) for e in epochs])]


def arch_seed(seed: int, arch: str) -> int:
    """The training seed of one candidate: a 63-bit value of sha256(seed, arch), so a net trains
    the same in any slot, round order or job (and for C and NC alike)."""
    d = hashlib.sha256(f"tinyevo.final_round\x1f{int(seed)}\x1f{arch}".encode()).digest()
    return int.from_bytes(d[:8], "big") & (2**63 - 1)


# ----------------------------------------------------------------------------------------------
# candidates (zero-cost preselection)
# ----------------------------------------------------------------------------------------------
def score_column(history: pd.DataFrame) -> str:
    """``score``: the configured ranking's combined value (larger is better)."""
    if "score" not in history.columns:
        raise ValueError("evolution history lacks the column 'score' (the ranking's combined value)")
    return "score"


def _check_nc_limits(nc_limits: Mapping[str, Any] | None) -> dict:
    lim = dict(nc_limits or {})
    unknown = sorted(set(lim) - set(_NC_LIMITS))
    if unknown:
        raise ValueError(f"config key 'final_round.nc_limits' has unknown key(s) {unknown}; known: {list(_NC_LIMITS)}")
    for key, v in lim.items():
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1):
            raise ValueError(f"config key 'final_round.nc_limits.{key}' must be an integer >= 1 or null, got {v!r}")
    return {k: int(v) for k, v in lim.items() if v is not None}


def pool_mask(history: pd.DataFrame, net: str, nc_limits: Mapping[str, Any] | None = None) -> np.ndarray:
    """Rows of the history in the pool of ``net``: ``C`` the ``feasible`` rows (device limits and
    trainability guards), ``NC`` the ``trainable`` rows with ``params`` / ``macs`` within
    ``nc_limits``."""
    if net not in NETS:
        raise ValueError(f"net must be one of {list(NETS)}, got {net!r}")
    col = "feasible" if net == "C" else "trainable"
    if col not in history.columns:
        raise ValueError(f"evolution history lacks the column {col!r}")
    mask = history[col].to_numpy(dtype=bool, copy=True)
    if net == "C":
        return mask
    for key, v in _check_nc_limits(nc_limits).items():
        col = key.removeprefix("max_")
        if col not in history.columns:
            raise ValueError(f"evolution history lacks the column {col!r} (config key 'final_round.nc_limits.{key}')")
        mask &= history[col].to_numpy(dtype=float) <= v
    return mask


def describe_pool(net: str, constraints: Mapping[str, Any] | None, nc_limits: Mapping[str, Any] | None) -> str:
    if net == "C":
        return (f"feasible nets ({describe_constraints(constraints or {})}, and the trainability guards; "
                "see the config's 'constraints:' section)")
    lim = _check_nc_limits(nc_limits)
    limits = ", ".join(f"final_round.nc_limits.{k} = {v:,}" for k, v in lim.items()) or "no nc_limits"
    return f"trainable nets ({limits})"


def gene_distance(a: Sequence[int], b: Sequence[int]) -> int:
    """Number of (gene, stage) positions at which two gene vectors differ (Hamming distance)."""
    if len(a) != len(b):
        raise ValueError(f"gene vectors of different lengths {len(a)} and {len(b)}")
    return int(sum(x != y for x, y in zip(a, b)))


def gene_vector(space, arch: str) -> tuple[int, ...]:
    """The flat gene vector (repeats, expansions, channels of every stage) of ``arch``."""
    g = space.decode(arch)
    return (*g.repeats, *g.expansions, *g.channels)


def diverse_top(order: Sequence[int], vectors: Sequence[Sequence[int]], k: int, min_distance: int) -> list[int]:
    """Greedy diverse selection: walk ``order`` (best first) and keep a net when its
    :func:`gene_distance` to every net kept so far is >= ``min_distance``, until ``k`` are kept.
    ``min_distance`` 0 or 1 keeps the first ``k`` (the nets are distinct already)."""
    kept: list[int] = []
    for i in order:
        if all(gene_distance(vectors[i], vectors[j]) >= min_distance for j in kept):
            kept.append(int(i))
            if len(kept) == k:
                break
    return kept


SELECTION_RULES = ("best_under_budget", "smallest_within")
SELECTION_COSTS = ("flash", "peak_sram", "macs", "params")


def check_selection(selection: Mapping[str, Any] | None) -> dict:
    """``selection:`` (the deployment rule C is picked by): ``rule`` ``best_under_budget`` (the
    highest-scored feasible nets, the default) or ``smallest_within`` (the feasible nets whose
    score lies within ``margin`` of the best feasible score, smallest ``cost`` first)."""
    s = {"rule": "best_under_budget", "margin": 0.5, "cost": "flash", **dict(selection or {})}
    unknown = sorted(set(s) - {"rule", "margin", "cost"})
    if unknown:
        raise ValueError(f"config key 'selection' has unknown key(s) {unknown}; known: ['rule', 'margin', 'cost']")
    if s["rule"] not in SELECTION_RULES:
        raise ValueError(f"config key 'selection.rule' is {s['rule']!r}; use one of {list(SELECTION_RULES)}")
    if s["cost"] not in SELECTION_COSTS:
        raise ValueError(f"config key 'selection.cost' is {s['cost']!r}; use one of {list(SELECTION_COSTS)}")
    m = s["margin"]
    if isinstance(m, bool) or not isinstance(m, (int, float, np.integer, np.floating)) or not m >= 0:
        raise ValueError(f"config key 'selection.margin' must be a number >= 0, got {m!r}")
    return s


def _selection_order(pool: pd.DataFrame, col: str, selection: Mapping[str, Any] | None) -> np.ndarray:
    """Positions of ``pool`` in the order the deployment rule takes them."""
    s = check_selection(selection)
    score = pool[col].to_numpy(dtype=float)
    key = np.where(np.isnan(score), -np.inf, score)
    if s["rule"] == "best_under_budget" or not np.isfinite(key).any():
        return np.argsort(-key, kind="stable")
    within = np.flatnonzero(key >= key.max() - float(s["margin"]))
    cost = pool[s["cost"]].to_numpy(dtype=float)[within]
    return within[np.lexsort((-key[within], cost))]  # smallest first, then the higher score


def select_candidates(history: pd.DataFrame, net: str, k: int, nc_limits: Mapping[str, Any] | None = None,
                      constraints: Mapping[str, Any] | None = None, min_distance: int = 0,
                      space=None, selection: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """The top-``k`` distinct architectures of the pool of ``net`` (:func:`pool_mask`) by
    :func:`score_column`, best first; ties go to the earlier history row, a NaN score ranks last.
    With ``min_distance`` > 1 (``final_round.min_distance``) every candidate differs from every
    better one in at least that many genes (:func:`diverse_top`; needs the search ``space`` to
    decode the strings): an aging evolution's history is dominated by one lineage, whose top-k
    are near-copies of each other, and a round among near-copies cannot find a better family.
    ``selection`` (:func:`check_selection`, C only) orders C's pool by the deployment rule
    instead: ``smallest_within`` takes the nets within ``margin`` of the best score, smallest
    first. Fewer than ``k`` nets qualify: all of them. Columns :data:`CANDIDATE_COLUMNS`
    (``candidate`` = 0-based rank, ``history_row`` = position of the arch's first row).
    Raises :class:`NoCandidate` naming the pool's constraints when the pool is empty."""
    check_config(k, [1], 1.0, [net])
    if k < 1:
        raise ValueError(f"config key 'final_round.k' is {k}: no candidates to select")
    if isinstance(min_distance, bool) or not isinstance(min_distance, (int, np.integer)) or min_distance < 0:
        raise ValueError(f"config key 'final_round.min_distance' must be an integer >= 0, got {min_distance!r}")
    if min_distance > 1 and space is None:
        raise ValueError("final_round.min_distance > 1 needs the search space to decode the architecture strings")
    missing = sorted({"arch", "params", "macs"} - set(history.columns))
    if missing:
        raise ValueError(f"evolution history lacks column(s) {missing}")
    col = score_column(history)
    mask = pool_mask(history, net, nc_limits)
    pool = history.assign(history_row=np.arange(len(history)))[mask]
    pool = pool.drop_duplicates("arch", keep="first")
    if len(pool) == 0:
        raise NoCandidate(
            f"final round of {net}: none of the {len(history)} nets of the evolution history is in the pool of "
            f"{describe_pool(net, constraints, nc_limits)}; relax these limits or set final_round.k = 0")
    if net == "C":
        order = _selection_order(pool, col, selection)
    else:
        score = pool[col].to_numpy(dtype=float)
        order = np.argsort(-np.where(np.isnan(score), -np.inf, score), kind="stable")
    if min_distance > 1:
        vectors = [gene_vector(space, a) for a in pool["arch"].astype(str)]
        order = np.asarray(diverse_top(order, vectors, int(k), int(min_distance)), dtype=np.int64)
    top = pool.iloc[order[:int(k)]]
    return pd.DataFrame({
        "net": net, "candidate": np.arange(len(top), dtype=np.int64), "arch": top["arch"].astype(str).to_numpy(),
        "score": top[col].to_numpy(dtype=float), "params": top["params"].to_numpy(dtype=np.int64),
        "macs": top["macs"].to_numpy(dtype=np.int64), "history_row": top["history_row"].to_numpy(dtype=np.int64),
    }, columns=CANDIDATE_COLUMNS)


def write_candidates(history_path, net: str, k: int, out, nc_limits: Mapping[str, Any] | None = None,
                     constraints: Mapping[str, Any] | None = None, min_distance: int = 0,
                     search_space: Mapping[str, Any] | None = None, selection: Mapping[str, Any] | None = None,
                     logger: logging.Logger | None = None) -> pd.DataFrame:
    """The rule ``final_round_candidates``: :func:`select_candidates` from the history file
    (``search_space``: the config section, to decode strings when ``min_distance`` > 1)."""
    log = logger or LOG
    hist = read_parquet(history_path, "evolution history")
    space = None
    if search_space is not None:
        from tinyevo.space import SearchSpace

        space = SearchSpace.from_config(search_space)
    cand = select_candidates(hist, net, k, nc_limits, constraints, min_distance=min_distance, space=space,
                             selection=selection)
    write_parquet(cand, out)
    rule = check_selection(selection)
    how = (f"selection.rule {rule['rule']}" if rule["rule"] == "best_under_budget" or net != "C" else
           f"selection.rule smallest_within (score within {rule['margin']:g} of the best, smallest {rule['cost']} first)")
    log.info("%s: %d of k = %d candidates by %s, %s (genes apart >= %d) from the pool of %s", net, len(cand), k,
             score_column(hist), how, min_distance, describe_pool(net, constraints, nc_limits))
    for r in cand.itertuples():
        log.info("  %d  score %9.4f  params %9d  macs %11d  %s", r.candidate, r.score, r.params, r.macs, r.arch)
    return cand


# ----------------------------------------------------------------------------------------------
# rounds: ranking, survivors, gathering
# ----------------------------------------------------------------------------------------------
def rank_round(table: pd.DataFrame) -> pd.DataFrame:
    """The trained (non-empty) rows of one round, best first: higher ``val_acc``, then higher
    ``score``, then the earlier ``candidate`` (NaN accuracy or score ranks last)."""
    rows = table[~table["empty"].to_numpy(dtype=bool)] if "empty" in table.columns else table
    acc = rows["val_acc"].to_numpy(dtype=float)
    score = rows["score"].to_numpy(dtype=float)
    order = np.lexsort((rows["candidate"].to_numpy(dtype=np.int64),
                        -np.where(np.isnan(score), -np.inf, score),
                        -np.where(np.isnan(acc), -np.inf, acc)))
    return rows.iloc[order]


def survivors(table: pd.DataFrame, keep: float) -> pd.DataFrame:
    """The rows of a round that go on to the next: the best ``n_survivors(m, keep)`` of its ``m``
    trained rows (:func:`rank_round`), in candidate order (their slots in the next round)."""
    ranked = rank_round(table)
    kept = ranked.iloc[:n_survivors(len(ranked), keep)]
    return kept.sort_values("candidate", kind="mergesort")


def slot_assignment(round_index: int, slot: int, source: pd.DataFrame, keep: float) -> pd.Series | None:
    """What slot ``slot`` of round ``round_index`` trains: the ``slot``-th candidate (round 0,
    ``source`` = the candidates table) or the ``slot``-th survivor of the previous round
    (``source`` = its gathered table; the row's ``slot`` is where its state file is); None for an
    empty slot."""
    rows = source.sort_values("candidate", kind="mergesort") if round_index == 0 else survivors(source, keep)
    return None if slot >= len(rows) else rows.iloc[slot]


def empty_row(net: str, round_index: int, slot: int, epochs_total: int) -> pd.DataFrame:
    return _rows([{"net": net, "round": round_index, "slot": slot, "candidate": -1, "arch": None,
                   "score": np.nan, "params": -1, "macs": -1, "epochs_total": epochs_total, "val_acc": np.nan,
                   "val_loss": np.nan, "train_acc": np.nan, "seconds": 0.0, "empty": True}])


def _rows(records: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame.from_records(records, columns=ROW_COLUMNS)
    return df.astype({"round": "int64", "slot": "int64", "candidate": "int64", "params": "int64", "macs": "int64",
                      "epochs_total": "int64", "score": "float64", "val_acc": "float64", "val_loss": "float64",
                      "train_acc": "float64", "seconds": "float64", "empty": "bool", "arch": "object"})


def gather_round(parts: Sequence[str], out, net: str, round_index: int,
                 logger: logging.Logger | None = None) -> pd.DataFrame:
    """The rule ``final_round_gather``: the slot rows of one round in slot order."""
    log = logger or LOG
    df = pd.concat([read_parquet(p, "final-round slot row") for p in parts], ignore_index=True)
    df = df.sort_values("slot", kind="mergesort").reset_index(drop=True)
    if df["slot"].tolist() != list(range(len(parts))) or set(df["net"]) != {net} or set(df["round"]) != {round_index}:
        raise ValueError(f"final-round rows of {net} round {round_index} are inconsistent: slots "
                         f"{df['slot'].tolist()}, nets {sorted(set(df['net']))}, rounds {sorted(set(df['round']))}")
    write_parquet(df, out)
    trained = rank_round(df)
    log.info("%s round %d: %d of %d slots trained; validation accuracy %s", net, round_index, len(trained), len(df),
             ", ".join(f"{a:.4f}" for a in trained["val_acc"]))
    return df


# ----------------------------------------------------------------------------------------------
# training one slot
# ----------------------------------------------------------------------------------------------
def _resumable(work: Path, prev_state: Path | None, lo: int, hi: int) -> bool:
    """A leftover work checkpoint of a killed job continues the same run: its epoch is in
    [lo, hi] and (after round 0) its history starts with the previous round's state's."""
    from tinyevo.train.loop import load_checkpoint

    if not work.is_file():
        return False
    try:
        ck = load_checkpoint(work)
    except ValueError:
        return False
    if not lo <= int(ck["epoch"]) <= hi:
        return False
    if prev_state is None:
        return True
    prev = load_checkpoint(prev_state)
    return ck.get("fingerprint") == prev.get("fingerprint") and list(ck["history"])[:lo] == list(prev["history"])


def run_slot(*, net: str, round_index: int, slot: int, source: str, prev_states: Sequence[str], data_dir: str,
             search_space: Mapping[str, Any], settings: Mapping[str, Any], k: int, epochs: Sequence[int],
             keep: float, device: str, amp: bool, out_row: str, out_state: str, threads: int | None = None,
             progress: bool = True, logger: logging.Logger | None = None) -> pd.DataFrame:
    """The rule ``final_round_train``: train slot ``slot`` of round ``round_index`` of ``net``.

    ``source`` is the candidates table (round 0) or the previous round's gathered table;
    ``prev_states`` the previous round's state files in slot order (empty for round 0).
    ``settings`` are the ``train`` settings for the whole run (``epochs`` = sum of the rounds'
    epochs, ``seed`` = ``final_round.seed``); the candidate trains with seed
    :func:`arch_seed` (seed, arch) on the train split, is evaluated on the validation split after
    every epoch and stops after epoch ``sum(epochs[:round_index + 1])``. Writes the one-row table
    (:data:`ROW_COLUMNS`) and the state file (a :func:`tinyevo.train.loop.fit` checkpoint; an
    empty file for an empty slot). A work checkpoint next to the state makes a killed job resume.
    ``threads`` (config ``train.threads``) pins torch's intra-op threads whatever the job got, so
    that the CPU results (and with them the survivors) do not depend on ``--cores``."""
    log = logger or LOG
    slots = round_slots(k, epochs, keep)
    marks = epoch_marks(epochs)
    if not 0 <= round_index < len(slots):
        raise ValueError(f"round {round_index} outside 0..{len(slots) - 1} (config key 'final_round.epochs' = "
                         f"{list(epochs)})")
    if not 0 <= slot < slots[round_index]:
        raise ValueError(f"slot {slot} outside 0..{slots[round_index] - 1} of round {round_index} "
                         f"(config keys 'final_round.k' = {k}, 'final_round.keep' = {keep})")
    if round_index > 0 and len(prev_states) != slots[round_index - 1]:
        raise ValueError(f"round {round_index} needs the {slots[round_index - 1]} state files of round "
                         f"{round_index - 1}, got {len(prev_states)}")
    if int(settings.get("epochs", -1)) != marks[-1]:
        raise ValueError(f"settings epochs {settings.get('epochs')!r} must be the sum of 'final_round.epochs' "
                         f"{list(epochs)} = {marks[-1]}")
    table = read_parquet(source, "final-round candidates" if round_index == 0 else "previous final-round table")
    pick = slot_assignment(round_index, slot, table, keep)
    if pick is None:
        log.info("%s round %d slot %d: no candidate (only %d this round): empty row", net, round_index, slot,
                 len(table) if round_index == 0 else len(survivors(table, keep)))
        row = empty_row(net, round_index, slot, marks[round_index])
        write_parquet(row, out_row)
        atomic_write_bytes(out_state, b"")
        return row
    prev_state = Path(prev_states[int(pick["slot"])]) if round_index > 0 else None
    hist, seconds = _train_pick(str(pick["arch"]), prev_state, data_dir, search_space, settings,
                                marks[round_index - 1] if round_index > 0 else 0, marks[round_index],
                                device, amp, threads, Path(out_state), progress, log)
    last = hist.iloc[-1]
    row = _rows([{"net": net, "round": round_index, "slot": slot, "candidate": int(pick["candidate"]),
                  "arch": str(pick["arch"]), "score": float(pick["score"]), "params": int(pick["params"]),
                  "macs": int(pick["macs"]), "epochs_total": marks[round_index], "val_acc": float(last["test_acc"]),
                  "val_loss": float(last["test_loss"]), "train_acc": float(last["train_acc"]),
                  "seconds": seconds, "empty": False}])
    write_parquet(row, out_row)
    os.replace(_work_path(out_state), out_state)
    log.info("%s round %d slot %d (candidate %d): validation accuracy %.4f after %d epochs (%.1f s)", net,
             round_index, slot, int(pick["candidate"]), row["val_acc"].iloc[0], marks[round_index], seconds)
    return row


def _work_path(out_state) -> Path:
    p = Path(out_state)
    return p.with_name(p.name + ".work")


def _train_pick(arch: str, prev_state: Path | None, data_dir: str, search_space: Mapping[str, Any],
                settings: Mapping[str, Any], start: int, stop: int, device: str, amp: bool, threads: int | None,
                out_state: Path, progress: bool, log: logging.Logger) -> tuple[pd.DataFrame, float]:
    """Train ``arch`` from epoch ``start`` (the previous state, or a fresh seeded net) to ``stop``
    with the work checkpoint next to ``out_state``; returns (history of all epochs, seconds of
    this round's epochs)."""
    from tinyevo.data import load_split, load_stats
    from tinyevo.runtime import pick_device, seed_everything, set_threads
    from tinyevo.space import SearchSpace
    from tinyevo.space.torch_model import build_torch
    from tinyevo.train.loop import fit

    space = SearchSpace.from_config(search_space)
    spec = space.netspec(arch)
    s = {**dict(settings), "seed": arch_seed(int(settings.get("seed") or 0), arch)}
    train, val, stats = load_split(data_dir, "train"), load_split(data_dir, "val"), load_stats(data_dir)
    if len(val[1]) == 0:
        raise ValueError(f"the validation split in {data_dir} is empty: the final round needs one "
                         "(config key 'dataset.val_fraction')")
    work = _work_path(out_state)
    if not _resumable(work, prev_state, start, stop):
        if prev_state is None:
            work.unlink(missing_ok=True)
        else:
            with atomic_path(work) as tmp:
                shutil.copyfile(prev_state, tmp)
    if threads is not None:
        set_threads(threads)
    dev = pick_device(device)
    log.info("%s: epochs %d..%d of %d, seed %d, device %s; measured on the validation split (%d images: "
             "the loop's 'test' columns)", arch, start + 1, stop, s["epochs"], s["seed"], dev, len(val[1]))
    seed_everything(s["seed"])
    model = build_torch(spec)
    hist = fit(model, train, val, stats, s, device=dev, checkpoint_path=work, progress=progress, amp=amp,
               on_mismatch="restart" if prev_state is None else "error", logger=log, stop_after=stop)
    if len(hist) != stop:
        raise RuntimeError(f"training of {arch} ended after {len(hist)} epochs, expected {stop}")
    return hist, float(hist["seconds"].iloc[start:stop].sum())


# ----------------------------------------------------------------------------------------------
# the finalists and the choice
# ----------------------------------------------------------------------------------------------
def finalists_of(net: str, candidates: pd.DataFrame, rounds: Sequence[pd.DataFrame], keep: float) -> pd.DataFrame:
    """One row per round x trained candidate of ``net`` (:data:`FINALIST_COLUMNS`). ``survived``:
    the candidate trains in the next round (last round: it is the chosen one); ``chosen``: every
    row of the chosen candidate. Checks that each round trained exactly the previous survivors."""
    if not rounds:
        raise ValueError(f"final round of {net}: no round tables")
    expect = candidates.sort_values("candidate", kind="mergesort")["arch"].tolist()
    parts = []
    for r, tab in enumerate(rounds):
        trained = tab[~tab["empty"].to_numpy(dtype=bool)].sort_values("slot", kind="mergesort")
        if trained["arch"].tolist() != expect:
            raise ValueError(f"final round of {net}, round {r}: trained {trained['arch'].tolist()} but expected "
                             f"{expect} (stale round tables? re-run the final round)")
        parts.append(trained)
        expect = survivors(trained, keep)["arch"].tolist()
    best = rank_round(parts[-1]).iloc[0]
    out = []
    for r, trained in enumerate(parts):
        nxt = set(parts[r + 1]["arch"]) if r + 1 < len(parts) else {best["arch"]}
        df = trained.drop(columns=["empty"]).copy()
        df["survived"] = df["arch"].isin(nxt)
        df["chosen"] = df["arch"] == best["arch"]
        out.append(df)
    return pd.concat(out, ignore_index=True)[FINALIST_COLUMNS]


def empty_finalists() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in zip(FINALIST_COLUMNS, [
        "object", "int64", "int64", "int64", "object", "float64", "int64", "int64", "int64", "float64",
        "float64", "float64", "float64", "bool", "bool"])})


def zero_cost_choice(selected: pd.DataFrame, net: str) -> dict:
    """The evolution's pure zero-cost pick of ``net``: its ``phase == 'after'`` row."""
    missing = {"net", "phase", "arch"} - set(selected.columns)
    if missing:
        raise ValueError(f"evolution selection table lacks columns {sorted(missing)}")
    rows = selected[(selected["net"] == net) & (selected["phase"] == "after")]
    if len(rows) != 1 or pd.isna(rows["arch"].iloc[0]):
        raise ValueError(f"evolution selection table: expected one row with net == {net!r}, phase == 'after' "
                         f"and an arch, found {len(rows)}")
    return {"net": net, "arch": str(rows["arch"].iloc[0]), "source": "zero_cost", "val_acc": np.nan}


def choose(selected: pd.DataFrame, finalists: pd.DataFrame, history: pd.DataFrame | None = None,
           nc_limits: Mapping[str, Any] | None = None, selection: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """One row per net in C, NC (:data:`CHOICE_COLUMNS`): the chosen finalist (source
    ``final_round``, its last-round validation accuracy) for the nets of the final round. NC
    with a round of its own takes the better of its winner and C's winner (C's on a tie): C's
    pool lies inside NC's, so NC validates at least as well as C. An NC
    without a round of its own while C has one takes C's winner (source ``final_round_C``): every
    net of C's pool is in NC's (the device limits lie inside ``final_round.nc_limits``), the
    round's trainings are the only evidence of how the nets train, and the best-scored net of
    NC's larger pool is a size pick (two of the default ranking's three measures count size) that
    trained worse than C on both datasets measured (README, "A default run"). Without any round:
    the zero-cost pick (source ``zero_cost``, NaN accuracy), the evolution's, except for an NC
    with ``final_round.nc_limits``, which is the best-scored net of the history within those
    limits (the evolution's own NC is bounded by nothing and on 8x8 digits grew a 512-channel
    stage). Without a round, ``selection.rule: smallest_within`` picks C by that rule from the
    history."""
    rows = []
    limited = history is not None and bool(_check_nc_limits(nc_limits))
    by_rule = history is not None and check_selection(selection)["rule"] != "best_under_budget"
    for net in NETS:
        mine = finalists[(finalists["net"] == net) & finalists["chosen"].astype(bool)]
        c_won = finalists[(finalists["net"] == "C") & finalists["chosen"].astype(bool)]
        if len(mine):
            last = mine.sort_values("round", kind="mergesort").iloc[-1]
            if net == "NC" and len(c_won):
                c_last = c_won.sort_values("round", kind="mergesort").iloc[-1]
                # both winners trained sum(final_round.epochs) epochs with the same recipe (the
                # seed is the arch's), so their validation accuracies compare; ties go to C's
                if float(c_last["val_acc"]) >= float(last["val_acc"]):
                    last = c_last
            rows.append({"net": net, "arch": str(last["arch"]),
                         "source": "final_round" if last["net"] == net else "final_round_C",
                         "val_acc": float(last["val_acc"])})
        elif net == "NC" and len(c_won):
            last = c_won.sort_values("round", kind="mergesort").iloc[-1]
            rows.append({"net": net, "arch": str(last["arch"]), "source": "final_round_C",
                         "val_acc": float(last["val_acc"])})
        elif net == "C" and by_rule:
            top = select_candidates(history, net, 1, selection=selection)
            rows.append({"net": net, "arch": str(top["arch"].iloc[0]), "source": "zero_cost", "val_acc": np.nan})
        elif net == "NC" and limited:
            top = select_candidates(history, net, 1, nc_limits)
            rows.append({"net": net, "arch": str(top["arch"].iloc[0]), "source": "zero_cost", "val_acc": np.nan})
        else:
            rows.append(zero_cost_choice(selected, net))
    return pd.DataFrame.from_records(rows, columns=CHOICE_COLUMNS).astype({"val_acc": "float64", "arch": "object"})


def run_choice(*, selected: str, candidates: Mapping[str, str], rounds: Mapping[str, Sequence[str]], keep: float,
               out_finalists: str, out_choice: str, history: str | None = None,
               nc_limits: Mapping[str, Any] | None = None, logger: logging.Logger | None = None,
               selection: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """The rule ``final_round_choice``: finalists of every net of the final round (``candidates``
    / ``rounds``: net -> candidates table / gathered round tables in round order; both empty
    for ``final_round.k = 0``) and the choice table (``history`` and ``nc_limits``: see
    :func:`choose`)."""
    log = logger or LOG
    sel = read_parquet(selected, "evolution selection table")
    hist = read_parquet(history, "evolution history") if history is not None else None
    parts = []
    for net in NETS:
        if net in candidates:
            parts.append(finalists_of(net, read_parquet(candidates[net], "final-round candidates"),
                                      [read_parquet(p, "final-round table") for p in rounds[net]], keep))
    finalists = pd.concat(parts, ignore_index=True) if parts else empty_finalists()
    choice = choose(sel, finalists, hist, nc_limits, selection)
    write_parquet(finalists, out_finalists)
    write_parquet(choice, out_choice)
    for r in choice.itertuples():
        log.info("%-2s %-11s val_acc %s  %s", r.net, r.source, "   n/a" if np.isnan(r.val_acc) else f"{r.val_acc:.4f}",
                 r.arch)
    return choice


# ----------------------------------------------------------------------------------------------
# the plot
# ----------------------------------------------------------------------------------------------
def plot_final_round(finalists: pd.DataFrame, path, style: str = "default", dpi: int = 110) -> None:
    """Validation accuracy per round: one line per candidate from round to round (x = epochs
    trained so far), the chosen one drawn thick and labelled; one panel per net."""
    from tinyevo.io import savefig
    from tinyevo.train.plots import _plt

    plt = _plt(style)
    nets = [n for n in NETS if (finalists["net"] == n).any()]
    fig, axes = plt.subplots(1, max(1, len(nets)), figsize=(4.8 * max(1, len(nets)), 3.8), squeeze=False)
    if not nets:
        axes[0, 0].text(0.5, 0.5, "no final round (final_round.k = 0)", ha="center", va="center")
        axes[0, 0].set_axis_off()
    for ax, net in zip(axes[0], nets):
        df = finalists[finalists["net"] == net]
        for cand, g in df.groupby("candidate", sort=True):
            g = g.sort_values("round")
            chosen = bool(g["chosen"].iloc[0])
            ax.plot(g["epochs_total"], g["val_acc"], "-o", ms=4 if chosen else 3, lw=2.4 if chosen else 0.9,
                    color="C3" if chosen else "0.55", zorder=3 if chosen else 2,
                    label=f"chosen: candidate {cand}" if chosen else None)
        marks = df.groupby("round")["epochs_total"].first()
        ax.set_xticks(marks.to_numpy(), [f"{e}\n(round {r})" for r, e in marks.items()])
        ax.set(xlabel="epochs trained", ylabel="validation accuracy",
               title=f"{net}: {df['candidate'].nunique()} candidates, {len(marks)} rounds")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    savefig(fig, path, dpi=dpi)
