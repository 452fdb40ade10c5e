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
    """Test accuracy against one measure, with the correlations in the title."""
    plt = _plt(style)
    row = corr.set_index("measure").loc[measure]
    fig, ax = plt.subplots(figsize=(4.4, 3.6))
    ax.scatter(trained[measure], trained["test_acc"], s=22)
    if measure in ("params", "macs", "synflow") and (trained[measure] > 0).all():
        ax.set_xscale("log")
    ax.set(xlabel=measure, ylabel="test accuracy",
           title=f"{measure}: spearman {row['spearman']:+.2f} (p {row['spearman_p']:.2g}), "
                 f"kendall {row['kendall']:+.2f}\n{'signal' if row['signal'] else 'no signal'}, n = {int(row['n'])}")
    ax.title.set_fontsize(9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    savefig(fig, path, dpi=dpi)
