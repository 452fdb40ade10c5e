"""Proxy validation: does the training-free ranking predict accuracy on this dataset?

A seeded random sample of ``validation.nets`` nets of the ranked initial population is trained
for ``validation.epochs`` epochs (one job per sampled net, ``i`` = 0..K-1, so the jobs spread
over ``--cores`` and cluster nodes), then the Spearman and Kendall correlations of every proxy,
of AVG, of params and of MACs with the test accuracy are computed (``scipy.stats``).
"""

from __future__ import annotations

import logging
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from tinyevo.io import read_parquet, write_parquet
from tinyevo.space import SearchSpace
from tinyevo.train.classes import class_subset
from tinyevo.train.stage import load_data, train_net

LOG = logging.getLogger("tinyevo.train")
CORRELATION_COLUMNS = ["measure", "spearman", "spearman_p", "kendall", "kendall_p", "n", "signal"]


def measures_of(proxies: Sequence[str]) -> list[str]:
    """The measures correlated with accuracy: every proxy, then avg, params and macs."""
    return [*proxies, "avg", "params", "macs"]


def sample_nets(ranked: pd.DataFrame, k: int, seed: int) -> pd.DataFrame:
    """A seeded random sample of ``k`` rows of the ranked population, in ``index`` order. The
    same (table, k, seed) always gives the same sample, so each per-net job can draw it alone."""
    if "index" not in ranked.columns or "arch" not in ranked.columns:
        raise ValueError("ranked population table needs the columns 'index' and 'arch'")
    table = ranked.sort_values("index", kind="mergesort").reset_index(drop=True)
    if k > len(table):
        raise ValueError(f"config key 'validation.nets' is {k} but the ranked population has only "
                         f"{len(table)} nets")
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(table), size=k, replace=False))
    return table.iloc[pick].reset_index(drop=True)


def train_sampled(ranked_path: str, data_dir: str, i: int, k: int, seed: int, epochs: int,
                  proxies: Sequence[str], search_space: Mapping[str, Any], settings: Mapping[str, Any],
                  device: str, amp: bool, out: str, progress: bool = True,
                  logger: logging.Logger | None = None) -> pd.DataFrame:
    """Train the ``i``-th net of the sample and write one row: sample, index, arch, the
    measures, test_acc, test_loss, train_acc, train_loss, seconds."""
    from tinyevo.runtime import pick_device

    log = logger or LOG
    ranked = read_parquet(ranked_path, "ranked initial population")
    need = set(measures_of(proxies)) | {"index", "arch"}
    missing = sorted(need - set(ranked.columns))
    if missing:
        raise ValueError(f"{ranked_path}: missing columns {missing} (config key 'proxies.names' = {list(proxies)})")
    if not 0 <= i < k:
        raise ValueError(f"sample position {i} outside 0..{k - 1} (config key 'validation.nets' = {k})")
    row = sample_nets(ranked, k, seed).iloc[i]
    space = SearchSpace.from_config(search_space)
    spec = space.netspec(str(row["arch"]))
    s = {**dict(settings), "epochs": int(epochs), "seed": int(seed)}
    dev = pick_device(device)
    train, test, stats = load_data(data_dir)
    log.info("validation net %d/%d: index %d, %s (avg %.4g)", i + 1, k, int(row["index"]), row["arch"], row["avg"])
    res = train_net(spec, train, test, stats, class_subset("C", space.num_classes), s, device=dev, amp=amp,
                    progress=progress, logger=log)
    m = res.metrics.iloc[0]
    rec = {"sample": int(i), "index": int(row["index"]), "arch": str(row["arch"])}
    rec.update({c: float(row[c]) for c in measures_of(proxies)})
    rec.update({"params": int(row["params"]), "macs": int(row["macs"]),
                "test_acc": float(m["final_test_acc"]), "test_loss": float(m["final_test_loss"]),
                "train_acc": float(m["final_train_acc"]), "train_loss": float(m["final_train_loss"]),
                "epochs": int(epochs), "seconds": float(m["train_seconds"])})
    df = pd.DataFrame([rec])
    write_parquet(df, out)
    log.info("test accuracy %.4f after %d epochs (%.1f s)", rec["test_acc"], epochs, rec["seconds"])
    return df


def correlations(trained: pd.DataFrame, measures: Sequence[str], min_abs_rho: float = 0.3,
                 max_p: float = 0.05) -> pd.DataFrame:
    """Spearman and Kendall correlation (with p-values) of each measure with ``test_acc``;
    ``signal`` is |spearman| >= ``min_abs_rho`` with both p-values < ``max_p`` (Kendall's p is
    exact for small samples, where Spearman's t-approximation gives p = 0 for a perfect rank
    agreement of even 3 nets). A constant column gives NaN (and no signal)."""
    from scipy import stats

    rows = []
    acc = trained["test_acc"].to_numpy(dtype=float)
    for m in measures:
        v = trained[m].to_numpy(dtype=float)
        ok = np.isfinite(v) & np.isfinite(acc)
        n = int(ok.sum())
        if n >= 3 and np.ptp(v[ok]) > 0 and np.ptp(acc[ok]) > 0:
            sp = stats.spearmanr(v[ok], acc[ok])
            kt = stats.kendalltau(v[ok], acc[ok])
            rho, rho_p, tau, tau_p = float(sp.statistic), float(sp.pvalue), float(kt.statistic), float(kt.pvalue)
        else:
            rho = rho_p = tau = tau_p = float("nan")
        signal = bool(np.isfinite(rho) and abs(rho) >= min_abs_rho and rho_p < max_p and tau_p < max_p)
        rows.append({"measure": m, "spearman": rho, "spearman_p": rho_p, "kendall": tau, "kendall_p": tau_p,
                     "n": n, "signal": signal})
    return pd.DataFrame(rows, columns=CORRELATION_COLUMNS)


def gather(parts: Sequence[str], proxies: Sequence[str], out_trained: str, out_correlations: str,
           min_abs_rho: float = 0.3, max_p: float = 0.05, logger: logging.Logger | None = None):
    """Concatenate the per-net rows, correlate, write both tables and state the verdict in the log."""
    log = logger or LOG
    trained = pd.concat([read_parquet(p, "validation result") for p in parts], ignore_index=True)
    trained = trained.sort_values("sample", kind="mergesort").reset_index(drop=True)
    corr = correlations(trained, measures_of(proxies), min_abs_rho, max_p)
    write_parquet(trained, out_trained)
    write_parquet(corr, out_correlations)
    log.info("%d nets trained; test accuracy %.4f .. %.4f", len(trained), trained["test_acc"].min(),
             trained["test_acc"].max())
    for r in corr.itertuples():
        log.info("  %-10s spearman %+.3f (p %.3g)  kendall %+.3f (p %.3g)  %s", r.measure, r.spearman,
                 r.spearman_p, r.kendall, r.kendall_p, "SIGNAL" if r.signal else "no signal")
    with_signal = corr.loc[corr["signal"], "measure"].tolist()
    crit = f"|spearman| >= {min_abs_rho}, spearman and kendall p < {max_p}, n = {len(trained)}"
    if with_signal:
        log.info("measures that carry signal on this dataset (%s): %s", crit, ", ".join(with_signal))
    else:
        log.info("no measure carries signal on this dataset (%s)", crit)
    lacking = [p for p in proxies if p not in with_signal]
    if lacking:
        log.info("proxies without signal on this dataset: %s", ", ".join(lacking))
    return trained, corr
