"""Paired differences between the on-device learners of a finished run.

The three learners of a scenario (``tybox``, ``tinyol``, ``float``) run on the same seeded
streams and evaluation sets, repetition by repetition, so their final accuracies pair up. This
reads ``<results>/scenarios/<scenario>/curves.parquet`` and prints, per scenario and pair, the
mean difference of the final accuracies (points), its standard deviation over the repetitions,
the paired t statistic and a 95 % interval (Student's t with n - 1 degrees of freedom). A
difference whose interval contains 0 is not told apart from seed noise by these repetitions.

``--metric after_change`` pairs each repetition's mean accuracy over the steps after the change
point instead (every step >= 1 for transfer; the tuning's criterion, and the summary's
``after_change_mean``): how soon a learner adapts, not only where it ends. The change point is
``scenarios.change_point`` of ``<results>/config.resolved.yaml`` unless ``--change-point`` gives it.

    python bench/scenario_pairs.py                      # results/ of the default run
    python bench/scenario_pairs.py --results path/to/results --out pairs.md
    python bench/scenario_pairs.py --metric after_change
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow"))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy import stats  # noqa: E402

from tinyevo.io import atomic_write_text  # noqa: E402

PAIRS = (("tybox", "tinyol"), ("tybox", "float"), ("float", "tinyol"))


METRICS = ("final", "after_change")


def per_repetition(curves: pd.DataFrame, metric: str = "final", change_point: int | None = None) -> pd.DataFrame:
    """Repetition x variant table of ``metric``: the final accuracy (last step), or the mean
    accuracy over the steps after ``change_point`` (``after_change``; every step >= 1 for transfer)."""
    missing = {"variant", "repetition", "step", "accuracy"} - set(curves.columns)
    if missing:
        raise ValueError(f"curves table lacks columns {sorted(missing)}")
    if metric == "final":
        last = curves[curves["step"] == curves["step"].max()]
        return last.pivot_table(index="repetition", columns="variant", values="accuracy", aggfunc="first")
    if metric != "after_change":
        raise ValueError(f"unknown metric {metric!r}; expected one of {list(METRICS)}")
    if change_point is None:
        raise ValueError("metric 'after_change' needs the change point")
    transfer = "scenario" in curves.columns and (curves["scenario"] == "transfer").all()
    after = curves[curves["step"] > (0 if transfer else int(change_point))]
    return after.pivot_table(index="repetition", columns="variant", values="accuracy", aggfunc="mean")


def paired(finals: pd.DataFrame, a: str, b: str) -> dict:
    d = (finals[a] - finals[b]).dropna().to_numpy(float)
    n = len(d)
    mean = float(d.mean()) if n else float("nan")
    sd = float(d.std(ddof=1)) if n > 1 else float("nan")
    se = sd / np.sqrt(n) if n > 1 else float("nan")
    t = mean / se if n > 1 and se > 0 else float("nan")
    half = float(stats.t.ppf(0.975, n - 1) * se) if n > 1 else float("nan")
    return {"pair": f"{a} - {b}", "n": n, "mean_points": 100 * mean, "sd_points": 100 * sd, "t": t,
            "ci_low_points": 100 * (mean - half), "ci_high_points": 100 * (mean + half)}


def run_change_point(results: Path) -> int:
    """``scenarios.change_point`` of the run's resolved config."""
    import yaml

    path = results / "config.resolved.yaml"
    try:
        return int(yaml.safe_load(path.read_text())["scenarios"]["change_point"])
    except (OSError, KeyError, TypeError, ValueError) as e:
        raise SystemExit(f"{path}: no scenarios.change_point ({e}); give --change-point") from None


def table(results: Path, metric: str = "final", change_point: int | None = None) -> pd.DataFrame:
    if metric == "after_change" and change_point is None:
        change_point = run_change_point(results)
    rows = []
    for path in sorted((results / "scenarios").glob("*/curves.parquet")):
        finals = per_repetition(pd.read_parquet(path), metric, change_point)
        for a, b in PAIRS:
            if a in finals and b in finals:
                rows.append({"scenario": path.parent.name, **paired(finals, a, b)})
    if not rows:
        raise SystemExit(f"no scenarios/*/curves.parquet under {results}")
    return pd.DataFrame(rows)


def markdown(df: pd.DataFrame) -> str:
    lines = ["| scenario | pair | n | mean (points) | sd | t | 95 % interval |", "|---|---|---:|---:|---:|---:|---|"]
    for r in df.itertuples():
        lines.append(f"| {r.scenario} | {r.pair} | {r.n} | {r.mean_points:+.1f} | {r.sd_points:.1f} | {r.t:.2f} | "
                     f"[{r.ci_low_points:+.1f}, {r.ci_high_points:+.1f}] |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", type=Path, default=REPO / "results")
    ap.add_argument("--out", type=Path, default=None, help="also write the markdown table here")
    ap.add_argument("--metric", choices=METRICS, default="final",
                    help="final: accuracy after the last sample (default); after_change: mean accuracy "
                         "over the steps after the change point")
    ap.add_argument("--change-point", type=int, default=None,
                    help="for --metric after_change (default: the run's scenarios.change_point)")
    args = ap.parse_args(argv)
    text = markdown(table(args.results, args.metric, args.change_point))
    print(text, end="")
    if args.out is not None:
        atomic_write_text(args.out, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
