"""Paired differences between the on-device learners of a finished run.

The three learners of a scenario (``tybox``, ``tinyol``, ``float``) run on the same seeded
streams and evaluation sets, repetition by repetition, so their final accuracies pair up. This
reads ``<results>/scenarios/<scenario>/curves.parquet`` and prints, per scenario and pair, the
mean difference of the final accuracies (points), its standard deviation over the repetitions,
the paired t statistic and a 95 % interval (Student's t with n - 1 degrees of freedom). A
difference whose interval contains 0 is not told apart from seed noise by these repetitions.

    python bench/scenario_pairs.py                      # results/ of the default run
    python bench/scenario_pairs.py --results path/to/results --out pairs.md
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


def final_accuracies(curves: pd.DataFrame) -> pd.DataFrame:
    """Final accuracy (last step) per repetition x variant."""
    missing = {"variant", "repetition", "step", "accuracy"} - set(curves.columns)
    if missing:
        raise ValueError(f"curves table lacks columns {sorted(missing)}")
    last = curves[curves["step"] == curves["step"].max()]
    return last.pivot_table(index="repetition", columns="variant", values="accuracy", aggfunc="first")


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


def table(results: Path) -> pd.DataFrame:
    rows = []
    for path in sorted((results / "scenarios").glob("*/curves.parquet")):
        finals = final_accuracies(pd.read_parquet(path))
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
    args = ap.parse_args(argv)
    text = markdown(table(args.results))
    print(text, end="")
    if args.out is not None:
        atomic_write_text(args.out, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
