"""Evolution plots from the history table: best ``score`` (the ``ranking.method``'s combined
proxy score) per cycle (C among feasible nets, NC among trainable ones), score vs MACs with the
Pareto front, share of feasible nets over time. Style and dpi come from ``report:``."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pandas as pd

from tinyevo.io import savefig
from tinyevo.search.pareto import nondominated
from tinyevo.search.select import describe_constraints
from tinyevo.space.constraints import as_constraints


def _plt(style: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    try:
        plt.style.use(style)
    except (OSError, ValueError) as exc:
        raise ValueError(f"config key 'report.style': unknown matplotlib style {style!r} ({exc})") from None
    return plt


def best_per_cycle(history: pd.DataFrame) -> pd.DataFrame:
    """Running best ``score`` of the history after each cycle (cycle 0 = initial population) among
    trainable nets (NC) and among feasible nets (C); NaN until such a net exists."""
    h = history.sort_values("id", kind="stable")
    cycles = pd.Index(np.unique(h["cycle"].to_numpy()), name="cycle")
    nc = h[h["trainable"]].groupby("cycle")["score"].max().reindex(cycles).cummax()
    c = h[h["feasible"]].groupby("cycle")["score"].max().reindex(cycles).cummax()
    return pd.DataFrame({"cycle": cycles.to_numpy(), "best_nc": nc.to_numpy(), "best_c": c.to_numpy()})


def feasible_share(history: pd.DataFrame) -> pd.DataFrame:
    """Per cycle: share of feasible nets in the population (the last P nets of the history) and
    in the whole history so far."""
    h = history.sort_values("id", kind="stable").reset_index(drop=True)
    P = int((h["cycle"] == 0).sum())
    feas = h["feasible"].to_numpy().astype(float)
    cum = np.concatenate([[0.0], np.cumsum(feas)])
    end = h.groupby("cycle")["id"].count().cumsum()  # number of nets after each cycle
    n = end.to_numpy()
    pop = (cum[n] - cum[n - P]) / P
    hist = cum[n] / n
    return pd.DataFrame({"cycle": end.index.to_numpy(), "population": pop, "history": hist})


def pareto_front(macs: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Indices of the nets no other net beats on both fewer MACs and a higher score
    (:func:`tinyevo.search.pareto.nondominated`), ordered by MACs for a step plot."""
    f = nondominated(np.column_stack([np.asarray(macs, float), -np.asarray(score, float)]))
    return f[np.lexsort((-np.asarray(score)[f], np.asarray(macs)[f]))]


def plot_best(history: pd.DataFrame, path, style: str = "default", dpi: int = 110) -> None:
    plt = _plt(style)
    b = best_per_cycle(history)
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.step(b["cycle"], b["best_nc"], where="post", label="NC (trainable, no device limits)")
    ax.step(b["cycle"], b["best_c"], where="post", label="C (feasible)")
    ax.set_xlabel("cycle")
    ax.set_ylabel("best score in the history")
    ax.set_title("Aging evolution: best score per cycle")
    ax.legend()
    savefig(fig, path, dpi=dpi)


def plot_scatter(history: pd.DataFrame, constraints: Mapping[str, Any], path, style: str = "default",
                 dpi: int = 110) -> None:
    plt = _plt(style)
    h = history.drop_duplicates("arch")
    h = h[np.isfinite(h["score"].to_numpy(float))]  # -inf (a net that cannot be scored) cannot be drawn
    fig, ax = plt.subplots(figsize=(6, 4))
    init = h["cycle"] == 0
    for mask, lab, mk in ((init & h["feasible"], "initial, feasible", "o"), (init & ~h["feasible"], "initial, infeasible", "x"),
                          (~init & h["feasible"], "evolved, feasible", "o"), (~init & ~h["feasible"], "evolved, infeasible", "x")):
        if mask.any():
            ax.scatter(h.loc[mask, "macs"], h.loc[mask, "score"], s=10, marker=mk, alpha=0.6, label=lab)
    macs, score = h["macs"].to_numpy(float), h["score"].to_numpy(float)
    f = pareto_front(macs, score)
    ax.step(macs[f], score[f], where="post", color="k", lw=1.2, label="Pareto front")
    max_macs = as_constraints(constraints).limits.get("max_macs")
    if max_macs is not None:
        ax.axvline(max_macs, color="r", ls="--", lw=1, label="max_macs")
    ax.set_xscale("log")
    ax.set_xlabel("MACs per image")
    ax.set_ylabel("score")
    ax.set_title(f"score vs MACs ({describe_constraints(constraints)})", fontsize=9, wrap=True)
    ax.legend(fontsize=7)
    savefig(fig, path, dpi=dpi)


def plot_feasible(history: pd.DataFrame, path, style: str = "default", dpi: int = 110) -> None:
    plt = _plt(style)
    s = feasible_share(history)
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.plot(s["cycle"], 100 * s["population"], label="population")
    ax.plot(s["cycle"], 100 * s["history"], label="history so far")
    ax.set_ylim(0, 100)
    ax.set_xlabel("cycle")
    ax.set_ylabel("feasible nets (%)")
    ax.set_title("Share of feasible nets (device limits and trainability guards)")
    ax.legend()
    savefig(fig, path, dpi=dpi)


COST_LABELS = {"flash": "flash (B, int8 weights)", "peak_sram": "peak SRAM (B)", "macs": "MACs per image",
               "params": "parameters"}


def plot_pareto(history: pd.DataFrame, front: pd.DataFrame, objectives, constraints: Mapping[str, Any], path,
                style: str = "default", dpi: int = 110) -> None:
    """Score against each cost of ``objectives``: every feasible net evaluated, the Pareto set
    (``front``, :func:`tinyevo.search.pareto.pareto_table`), the device limit of that cost
    (``constraints.max_<cost>``) where one is set, and on the flash and peak-SRAM panels the TyBox
    budget ``device.ram_bytes`` when ``constraints.fit_device`` checks it (weights and activations
    share it)."""
    from tinyevo.space.constraints import LIMITS

    plt = _plt(style)
    cons = as_constraints(constraints)
    by_cost = {v: k for k, v in LIMITS.items()}
    h = history[history["feasible"].astype(bool) & np.isfinite(history["score"].to_numpy(float))]
    fig, axes = plt.subplots(1, len(objectives), figsize=(5.2 * len(objectives), 3.8), squeeze=False)
    for ax, c in zip(axes[0], objectives):
        ax.scatter(h[c], h["score"], s=8, alpha=0.35, color="0.5", label="feasible nets evaluated")
        f = front.sort_values(c, kind="stable")
        ax.plot(f[c], f["score"], "o-", ms=4, color="C3", label=f"Pareto set ({len(front)} nets)")
        lim = cons.limits.get(by_cost[c])
        if lim is not None:
            ax.axvline(lim, color="k", ls="--", lw=1, label=f"constraints.{by_cost[c]}")
        if c in ("flash", "peak_sram") and cons.fit_device and cons.ram_bytes:
            # the TyBox budget M bounds the int8 weights and the activations together
            ax.axvline(cons.ram_bytes, color="k", ls=":", lw=1, label="device.ram_bytes (budget M)")
        ax.set_xlabel(COST_LABELS[c])
        ax.set_ylabel("score")
        ax.legend(fontsize=7)
    fig.suptitle(f"Score against cost ({describe_constraints(constraints)})", fontsize=9, wrap=True)
    savefig(fig, path, dpi=dpi)


def plot_hypervolume(hv: pd.DataFrame, path, style: str = "default", dpi: int = 110) -> None:
    plt = _plt(style)
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.plot(hv["evaluated"], hv["hypervolume"], "o-", ms=3)
    ax.set_xlabel("children evaluated")
    ax.set_ylabel("hypervolume (normalised objectives)")
    ax.set_title("Hypervolume of the feasible nets found so far")
    savefig(fig, path, dpi=dpi)


def make_plots(history: pd.DataFrame, constraints: Mapping[str, Any], best_png, scatter_png, feasible_png,
               style: str = "default", dpi: int = 110) -> None:
    plot_best(history, best_png, style, dpi)
    plot_scatter(history, constraints, scatter_png, style, dpi)
    plot_feasible(history, feasible_png, style, dpi)
