"""Evolution plots from the history table: best AVG per cycle (C and NC), AVG vs MACs with the
Pareto front, share of feasible nets over time. Style and dpi come from ``report:``."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pandas as pd

from tinyevo.io import savefig
from tinyevo.search.select import describe_constraints


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
    """Running best AVG of the history after each cycle (cycle 0 = initial population), overall
    (NC) and among feasible nets (C; NaN until a feasible net exists)."""
    h = history.sort_values("id", kind="stable")
    nc = h.groupby("cycle")["avg"].max().cummax()
    c = h[h["feasible"]].groupby("cycle")["avg"].max().reindex(nc.index).cummax()
    return pd.DataFrame({"cycle": nc.index.to_numpy(), "best_nc": nc.to_numpy(), "best_c": c.to_numpy()})


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


def pareto_front(macs: np.ndarray, avg: np.ndarray) -> np.ndarray:
    """Indices of the nets no other net beats on both fewer MACs and higher AVG, by MACs."""
    order = np.lexsort((-avg, macs))
    front, best = [], -np.inf
    for i in order:
        if avg[i] > best:
            front.append(i)
            best = avg[i]
    return np.asarray(front, dtype=int)


def plot_best(history: pd.DataFrame, path, style: str = "default", dpi: int = 110) -> None:
    plt = _plt(style)
    b = best_per_cycle(history)
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.step(b["cycle"], b["best_nc"], where="post", label="NC (unconstrained)")
    ax.step(b["cycle"], b["best_c"], where="post", label="C (within constraints)")
    ax.set_xlabel("cycle")
    ax.set_ylabel("best AVG in the history")
    ax.set_title("Aging evolution: best AVG per cycle")
    ax.legend()
    savefig(fig, path, dpi=dpi)


def plot_scatter(history: pd.DataFrame, constraints: Mapping[str, Any], path, style: str = "default",
                 dpi: int = 110) -> None:
    plt = _plt(style)
    h = history.drop_duplicates("arch")
    h = h[np.isfinite(h["avg"].to_numpy(float))]  # -inf AVG (a NaN proxy) cannot be drawn
    fig, ax = plt.subplots(figsize=(6, 4))
    init = h["cycle"] == 0
    for mask, lab, mk in ((init & h["feasible"], "initial, feasible", "o"), (init & ~h["feasible"], "initial, infeasible", "x"),
                          (~init & h["feasible"], "evolved, feasible", "o"), (~init & ~h["feasible"], "evolved, infeasible", "x")):
        if mask.any():
            ax.scatter(h.loc[mask, "macs"], h.loc[mask, "avg"], s=10, marker=mk, alpha=0.6, label=lab)
    macs, avg = h["macs"].to_numpy(float), h["avg"].to_numpy(float)
    f = pareto_front(macs, avg)
    ax.step(macs[f], avg[f], where="post", color="k", lw=1.2, label="Pareto front")
    if constraints.get("max_macs") is not None:
        ax.axvline(constraints["max_macs"], color="r", ls="--", lw=1, label="max_macs")
    ax.set_xscale("log")
    ax.set_xlabel("MACs per image")
    ax.set_ylabel("AVG")
    ax.set_title(f"AVG vs MACs ({describe_constraints(constraints)})", fontsize=9)
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
    ax.set_title("Share of nets within the constraints")
    ax.legend()
    savefig(fig, path, dpi=dpi)


def make_plots(history: pd.DataFrame, constraints: Mapping[str, Any], best_png, scatter_png, feasible_png,
               style: str = "default", dpi: int = 110) -> None:
    plot_best(history, best_png, style, dpi)
    plot_scatter(history, constraints, scatter_png, style, dpi)
    plot_feasible(history, feasible_png, style, dpi)
