"""Plots of the training and validation stages (read tables, write PNGs)."""

from __future__ import annotations

import pandas as pd

from tinyevo.io import savefig


def _plt(style: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.style.use(style)
    return plt


def plot_history(history: pd.DataFrame, path, title: str = "", style: str = "default", dpi: int = 110) -> None:
    """Loss and accuracy per epoch, train and test, side by side."""
    plt = _plt(style)
    fig, (ax_l, ax_a) = plt.subplots(1, 2, figsize=(9, 3.4))
    for split, ls in (("train", "-"), ("test", "--")):
        ax_l.plot(history["epoch"], history[f"{split}_loss"], ls, marker="o", ms=3, label=split)
        ax_a.plot(history["epoch"], history[f"{split}_acc"], ls, marker="o", ms=3, label=split)
    ax_l.set(xlabel="epoch", ylabel="cross-entropy (per-sample mean)", title="loss")
    ax_a.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    ax_a.set_ylim(0, 1.02)
    for ax in (ax_l, ax_a):
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    savefig(fig, path, dpi=dpi)


def plot_scatter(trained: pd.DataFrame, corr: pd.DataFrame, measure: str, path, style: str = "default",
                 dpi: int = 110) -> None:
    """Val and test accuracy of the sampled nets (role ``sample`` of the validation plan, all rows
    of a table without roles) against one measure, with each target's Spearman rho, its bootstrap
    interval and Kendall's tau in the title; the measure's pick is marked."""
    plt = _plt(style)
    rows = trained[trained["role"] == "sample"] if "role" in trained.columns else trained
    fig, ax = plt.subplots(figsize=(4.8, 3.8))
    title = [measure]
    for target, marker in (("val", "o"), ("test", "s")):
        col = f"{target}_acc"
        if col not in rows.columns:
            continue
        ax.scatter(rows[measure], rows[col], s=20, marker=marker, alpha=0.7, label=f"{target} accuracy")
        sel = corr[(corr["measure"] == measure) & (corr["target"] == target)] if "target" in corr.columns \
            else corr[corr["measure"] == measure]
        if len(sel):
            r = sel.iloc[0]
            title.append(f"{target}: spearman {r['spearman']:+.2f} [{r.get('spearman_lo', float('nan')):+.2f}, "
                         f"{r.get('spearman_hi', float('nan')):+.2f}], kendall {r['kendall']:+.2f}, n = {int(r['n'])}")
            pick = r.get("pick_arch")
            if isinstance(pick, str) and pick in set(trained["arch"]):
                p = trained[trained["arch"] == pick].iloc[0]
                ax.scatter([p[measure]], [p[col]], s=90, marker="*", color="black", zorder=3)
    if measure in ("params", "macs", "synflow_relu6") and (rows[measure] > 0).all():
        ax.set_xscale("log")
    ax.set(xlabel=measure, ylabel="accuracy", title="\n".join(title))
    ax.title.set_fontsize(8)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    savefig(fig, path, dpi=dpi)
