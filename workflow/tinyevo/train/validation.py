"""Search quality: do the training-free measures pick nets that train well?

The validation stage (``results/validation/``) and ``bench/search_quality.py`` take the same
measurement; the stage at a size that keeps the default run short, the benchmark at a larger one.

1. **Plan** (:func:`validation_plan`). Over the *pool* (the initial nets within the device
   limits: column ``within_limits``, else the ``ok_max_*`` columns, else ``feasible``, else all):
   a seeded sample of ``validation.nets`` nets stratified by parameter count (:func:`stratified_sample`:
   the pool sorted by params is cut into K strata of equal count, one net drawn uniformly from
   each), plus the ``validation.top_k`` best nets of the pool by every measure (its *picks*), plus
   ``validation.seed_nets`` sampled nets (spread over the size range) trained again with each of
   ``validation.seeds - 1`` more seeds (the noise ceiling). One slot per training job; a slot whose
   (net, seed) an earlier slot trains already is a ``duplicate`` and trains nothing.
2. **Measures** (:func:`measure_table`), computed for every initial net: each proxy of the score
   table; each ranking method (``zscore``: the mean of z-scores, the genetic-NAS paper's AVG;
   ``rank``: the mean mid-rank percentile; both against the initial pool, see
   :mod:`tinyevo.proxies.ranking`) and ``score`` (the configured method); ``params``; ``macs``;
   ``min_width`` (the narrowest stage); ``random`` (uniform from sha256(seed, arch), also the tie
   breaker of every measure). Larger is better for all; NaN ranks last.
3. **Training** (:func:`train_eval`): one fixed recipe, weights from the slot's seed; the net is
   trained on the train split and evaluated on the val and the test split.
4. **Quality** (:func:`quality_table`), per target (``val``: what choices are made on; ``test``)
   and measure, over the stratified sample: Spearman's rho and Kendall's tau-b with their p-values
   and percentile bootstrap 95 % intervals (the same seeded resamples of nets for every measure,
   so :func:`quality_table` can also give the paired interval of rho minus the baseline's rho);
   precision at the top 10 % (:func:`precision_at`); and the regret of the measure's pick (the best
   accuracy among all trained pool nets minus the accuracy of the pool net the measure ranks first,
   :func:`regret_of`). :func:`noise_table` gives the seed-to-seed rank correlation of the
   accuracies, the ceiling any measure can reach.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from tinyevo.io import read_parquet, write_parquet

LOG = logging.getLogger("tinyevo.train")

TARGETS = ("val", "test")
#: measures every table has besides the proxies and the ranking methods
COST_MEASURES = ("params", "macs", "min_width", "random")
#: ranking methods of :mod:`tinyevo.proxies.ranking` computed as measures
RANKING_METHODS = ("zscore", "rank")
QUALITY_COLUMNS = ["target", "measure", "n", "spearman", "spearman_p", "spearman_lo", "spearman_hi", "kendall",
                   "kendall_p", "kendall_lo", "kendall_hi", "baseline", "d_spearman_lo", "d_spearman_hi",
                   "precision_at", "top_frac", "pick_arch", "pick_acc", "best_acc", "regret", "signal"]
NOISE_COLUMNS = ["target", "nets", "seeds", "spearman", "spearman_lo", "spearman_hi", "kendall",
                 "mean_abs_diff"]
RESULT_COLUMNS = ["val_acc", "val_loss", "test_acc", "test_loss", "train_acc", "train_loss", "best_val_acc",
                  "best_epoch", "epochs", "seconds", "status"]
PLAN_COLUMNS = ["slot", "role", "measure", "arch", "index", "seed", "params", "duplicate_of"]


# ----------------------------------------------------------------------------------------------
# the pool and the sample
# ----------------------------------------------------------------------------------------------
def pool_mask(table: pd.DataFrame) -> np.ndarray:
    """The nets a search may hand over, before any trainability guard: ``within_limits`` when
    the table has it, else the AND of its ``ok_max_*`` columns, else ``feasible``, else all."""
    if "within_limits" in table.columns:
        return table["within_limits"].to_numpy(dtype=bool)
    oks = [c for c in table.columns if c.startswith("ok_max_")]
    if oks:
        return table[oks].to_numpy(dtype=bool).all(axis=1)
    if "feasible" in table.columns:
        return table["feasible"].to_numpy(dtype=bool)
    return np.ones(len(table), dtype=bool)


def stratified_sample(pool: pd.DataFrame, k: int, seed: int, by: str = "params",
                      key: str = "validation.nets") -> pd.DataFrame:
    """A seeded sample of ``k`` nets stratified by ``by``: the pool sorted by (``by``, ``index``)
    is cut into ``k`` contiguous strata of (almost) equal count (``numpy.array_split``) and one net
    is drawn uniformly from each with ``numpy.random.default_rng(seed)``. Rows in stratum order
    (ascending ``by``). Same (pool, k, seed) -> same sample, whatever the pool's row order."""
    for col in ("index", "arch", by):
        if col not in pool.columns:
            raise ValueError(f"the pool table needs the column {col!r} (columns: {list(pool.columns)})")
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
        raise ValueError(f"config key {key!r} must be a positive integer, got {k!r}")
    if k > len(pool):
        raise ValueError(f"config key {key!r} is {k} but the pool has only {len(pool)} nets (the initial nets "
                         f"within the device limits)")
    table = pool.sort_values([by, "index"], kind="mergesort").reset_index(drop=True)
    rng = np.random.default_rng(int(seed))
    pick = [int(rng.choice(stratum)) for stratum in np.array_split(np.arange(len(table)), int(k))]
    return table.iloc[pick].reset_index(drop=True)


def spread_positions(n: int, m: int) -> list[int]:
    """``m`` distinct positions of ``0..n-1`` spread evenly (both ends included when m >= 2)."""
    m = min(int(m), int(n))
    if m <= 0:
        return []
    return sorted({int(round(v)) for v in np.linspace(0, n - 1, m)})


# ----------------------------------------------------------------------------------------------
# measures
# ----------------------------------------------------------------------------------------------
def random_measure(archs: Sequence[str], seed: int) -> np.ndarray:
    """A uniform [0, 1) value per arch from sha256(seed, arch): the same net gets the same value
    in any table, order or process."""
    out = np.empty(len(archs), dtype=np.float64)
    for i, a in enumerate(archs):
        d = hashlib.sha256(f"tinyevo.validation.random\x1f{int(seed)}\x1f{a}".encode()).digest()
        out[i] = int.from_bytes(d[:8], "big") / 2.0**64
    return out


def min_width_of(table: pd.DataFrame, search_space: Mapping[str, Any] | None = None) -> np.ndarray:
    """The narrowest stage width of every net: column ``min_stage_width`` when present, else the
    NetSpec's narrowest block output (needs ``search_space``)."""
    if "min_stage_width" in table.columns:
        return table["min_stage_width"].to_numpy(dtype=np.float64)
    if search_space is None:
        raise ValueError("the table has no 'min_stage_width' column and no search space was given to compute it")
    from tinyevo.space import SearchSpace
    from tinyevo.space.constraints import min_stage_width

    space = SearchSpace.from_config(search_space)
    return np.asarray([min_stage_width(space.netspec(str(a))) for a in table["arch"]], dtype=np.float64)


def method_score(pool: pd.DataFrame, proxies: Sequence[str], method: str,
                 weights: Mapping[str, float] | None = None, table: pd.DataFrame | None = None) -> np.ndarray:
    """The combined score of ranking ``method`` over ``proxies``, normalised against ``pool``
    (the initial population) and evaluated for ``table`` (default: the pool itself). ``zscore``:
    weighted mean of (x - mean) / std (sample std over the pool); ``rank``: weighted mean of the
    mid-rank empirical CDF in the pool (:mod:`tinyevo.proxies.ranking`)."""
    from tinyevo.proxies import ranking

    table = pool if table is None else table
    norm = ranking.norm_table(pool, list(proxies), weights, method)
    return ranking.standardise(table, norm)["score"].to_numpy(dtype=np.float64)


def measure_names(proxies: Sequence[str], methods: Sequence[str] | None = None) -> list[str]:
    """The measures of a table, in order: each proxy, each ranking method, ``score`` (the
    configured method), then params, macs, min_width, random (names deduplicated)."""
    methods = RANKING_METHODS if methods is None else methods
    return list(dict.fromkeys([*proxies, *methods, "score", *COST_MEASURES]))


def measure_table(ranked: pd.DataFrame, proxies: Sequence[str], method: str, seed: int,
                  weights: Mapping[str, float] | None = None, methods: Sequence[str] | None = None,
                  search_space: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """One row per net of ``ranked`` (the scored initial population): index, arch, in_pool
    (:func:`pool_mask`), params_count (int), then every measure of :func:`measure_names`. The ranking methods
    are normalised against all of ``ranked``; ``score`` is ``method``'s."""
    import pandas as pd

    for col in ("index", "arch", "params", "macs", *proxies):
        if col not in ranked.columns:
            raise ValueError(f"ranked table has no column {col!r} (config key 'proxies.names' = {list(proxies)})")
    methods = list(RANKING_METHODS if methods is None else methods)
    if method not in methods:
        raise ValueError(f"config key 'ranking.method' is {method!r}; available: {methods}")
    out = pd.DataFrame({"index": ranked["index"].to_numpy(dtype=np.int64), "arch": ranked["arch"].astype(str),
                        "in_pool": pool_mask(ranked), "params_count": ranked["params"].to_numpy(dtype=np.int64)})
    for p in proxies:
        out[p] = pd.to_numeric(ranked[p], errors="coerce").to_numpy(dtype=np.float64)
    for m in methods:
        if m not in out.columns:
            out[m] = method_score(ranked, proxies, m, weights)
    out["score"] = out[method].to_numpy()
    for c in ("params", "macs"):
        if c not in out.columns:
            out[c] = ranked[c].to_numpy(dtype=np.float64)
    out["min_width"] = min_width_of(ranked, search_space)
    out["random"] = random_measure(out["arch"].tolist(), seed)
    return out


def order_of(values: np.ndarray, tiebreak: np.ndarray) -> np.ndarray:
    """Positions from best to worst: descending ``values`` (NaN and -inf last), ties by
    descending ``tiebreak`` (the ``random`` measure), then by position."""
    v = np.asarray(values, dtype=np.float64)
    v = np.where(np.isnan(v), -np.inf, v)
    t = np.asarray(tiebreak, dtype=np.float64)
    return np.lexsort((np.arange(len(v)), -t, -v))


def top_picks(measures: pd.DataFrame, names: Sequence[str], k: int) -> pd.DataFrame:
    """The ``k`` best pool nets of every measure -> DataFrame(measure, place (1-based), arch, index)."""
    import pandas as pd

    pool = measures[measures["in_pool"].to_numpy(dtype=bool)].reset_index(drop=True)
    rows = []
    for m in names:
        if m not in pool.columns:
            raise ValueError(f"measure table has no column {m!r}")
        for place, pos in enumerate(order_of(pool[m].to_numpy(), pool["random"].to_numpy())[:int(k)], start=1):
            rows.append({"measure": m, "place": place, "arch": pool["arch"].iloc[pos],
                         "index": int(pool["index"].iloc[pos])})
    return pd.DataFrame(rows, columns=["measure", "place", "arch", "index"])


# ----------------------------------------------------------------------------------------------
# the plan (one training job per slot)
# ----------------------------------------------------------------------------------------------
def plan_size(nets: int, top_k: int, seeds: int, seed_nets: int, n_pick_measures: int) -> int:
    """Number of slots of :func:`validation_plan` (known before any table is read)."""
    return int(nets) + int(top_k) * int(n_pick_measures) + min(int(seed_nets), int(nets)) * (int(seeds) - 1)


def pick_measures(names: Sequence[str]) -> list[str]:
    """The measures that get picks: all but ``score`` (the configured method's picks are its own)."""
    return [m for m in names if m != "score"]


def validation_plan(measures: pd.DataFrame, nets: int, top_k: int, seeds: int, seed_nets: int, seed: int,
                    names: Sequence[str] | None = None) -> pd.DataFrame:
    """The slots (columns :data:`PLAN_COLUMNS`): ``sample`` (the stratified sample, seed
    ``seed``), ``pick`` (``top_k`` per measure of :func:`pick_measures`, seed ``seed``) and
    ``seed`` (the noise nets again with seeds ``seed + 1 .. seed + seeds - 1``). ``duplicate_of``
    is the first slot with the same (arch, seed), else -1."""
    import pandas as pd

    if seeds < 1:
        raise ValueError(f"config key 'validation.seeds' must be >= 1, got {seeds}")
    if top_k < 0 or seed_nets < 0:
        raise ValueError(f"config keys 'validation.top_k' and 'validation.seed_nets' must be >= 0, got "
                         f"{top_k} and {seed_nets}")
    names = [c for c in measures.columns if c not in ("index", "arch", "in_pool", "params_count")] \
        if names is None else list(names)
    pool = measures[measures["in_pool"].to_numpy(dtype=bool)]
    sample = stratified_sample(pool.assign(params=pool["params_count"]), nets, seed)
    rows = [{"role": "sample", "measure": "", "arch": a, "index": int(i), "seed": int(seed)}
            for a, i in zip(sample["arch"], sample["index"])]
    for r in top_picks(measures, pick_measures(names), top_k).itertuples(index=False):
        rows.append({"role": "pick", "measure": f"{r.measure}#{r.place}", "arch": r.arch, "index": r.index,
                     "seed": int(seed)})
    noise = [sample.iloc[p] for p in spread_positions(len(sample), seed_nets)] if seeds > 1 else []
    for s in range(1, int(seeds)):
        for r in noise:
            rows.append({"role": "seed", "measure": "", "arch": r["arch"], "index": int(r["index"]),
                         "seed": int(seed) + s})
    plan = pd.DataFrame(rows)
    plan.insert(0, "slot", np.arange(len(plan), dtype=np.int64))
    params = measures.set_index("arch")["params_count"]
    plan["params"] = params.loc[plan["arch"]].to_numpy(dtype=np.int64)
    first: dict[tuple[str, int], int] = {}
    dup = []
    for r in plan.itertuples(index=False):
        dup.append(first.get((r.arch, r.seed), -1))
        first.setdefault((r.arch, r.seed), int(r.slot))
    plan["duplicate_of"] = np.asarray(dup, dtype=np.int64)
    return plan[PLAN_COLUMNS]


# ----------------------------------------------------------------------------------------------
# training and the result cache
# ----------------------------------------------------------------------------------------------
def load_splits(data_dir) -> dict[str, Any]:
    """The data stage's train, val and test arrays (uint8 memmaps) and stats."""
    from tinyevo.data import load_split, load_stats

    return {**{s: load_split(data_dir, s) for s in ("train", "val", "test")}, "stats": load_stats(data_dir)}


def data_fingerprint(splits: Mapping[str, Any]) -> str:
    """sha256 over every split's images and labels and the stats (a cache-key part)."""
    h = hashlib.sha256()
    for s in ("train", "val", "test"):
        for a in splits[s]:
            a = np.ascontiguousarray(a)
            h.update(f"{s}{a.dtype.str}{a.shape}".encode())
            h.update(a.tobytes())
    for a in splits["stats"]:
        h.update(np.asarray(a, dtype=np.float32).tobytes())
    return h.hexdigest()[:20]


def recipe_id(settings: Mapping[str, Any]) -> str:
    """A short hash of the resolved training settings without the seed (:func:`resolve_settings`)."""
    from tinyevo.train.loop import resolve_settings

    s = {k: v for k, v in resolve_settings(settings).items() if k != "seed"}
    return hashlib.sha256(json.dumps(s, sort_keys=True).encode()).hexdigest()[:12]


def train_eval(spec, splits: Mapping[str, Any], settings: Mapping[str, Any], device="cpu", amp: bool = False,
               progress: bool = False, logger: logging.Logger | None = None) -> dict[str, Any]:
    """Train ``spec`` (all classes) with ``settings`` on the train split, watching the val split
    per epoch, then evaluate the final weights on val and test -> one result row (columns
    :data:`RESULT_COLUMNS`). A diverged training (non-finite loss) gives status ``diverged`` and
    NaN accuracies instead of an error."""
    import time

    from tinyevo.train.classes import class_subset
    from tinyevo.train.loop import evaluate, resolve_settings
    from tinyevo.train.stage import train_net

    log = logger or LOG
    s = resolve_settings(settings)
    t0 = time.perf_counter()
    nan = float("nan")
    log.info("per-epoch evaluation on the val split (the loop logs it as 'test'); the test split once at the end")
    try:
        res = train_net(spec, splits["train"], splits["val"], splits["stats"], class_subset("C", spec.num_classes),
                        s, device=device, amp=amp, progress=progress, logger=log)
    except FloatingPointError as exc:
        log.warning("training diverged: %s", exc)
        return {"val_acc": nan, "val_loss": nan, "test_acc": nan, "test_loss": nan, "train_acc": nan,
                "train_loss": nan, "best_val_acc": nan, "best_epoch": 0, "epochs": s["epochs"],
                "seconds": time.perf_counter() - t0, "status": "diverged"}
    m = res.metrics.iloc[0]
    test_loss, test_acc, _ = evaluate(res.model, *splits["test"], splits["stats"], device, amp=amp)
    return {"val_acc": float(m["final_test_acc"]), "val_loss": float(m["final_test_loss"]),
            "test_acc": float(test_acc), "test_loss": float(test_loss),
            "train_acc": float(m["final_train_acc"]), "train_loss": float(m["final_train_loss"]),
            "best_val_acc": float(m["best_test_acc"]), "best_epoch": int(m["best_epoch"]),
            "epochs": int(s["epochs"]), "seconds": time.perf_counter() - t0, "status": "ok"}


class TrainedCache:
    """Trained results keyed by (arch, recipe, seed, data, compute) in one Parquet table, so
    that no (net, recipe, seed) is trained twice. ``compute`` is e.g. ``cpu/1`` (device type and
    torch threads: the last bits depend on them). :meth:`save` merges the rows added since the
    table was read into the file as it is then, under a file lock, and writes it atomically, so
    several processes may share one cache."""

    KEY = ("arch", "recipe", "seed", "data", "compute")

    def __init__(self, path):
        self.path = Path(path)
        self._new: list[dict] = []
        self._load()

    def _load(self) -> None:
        import pandas as pd

        self.table = read_parquet(self.path, "trained-net cache") if self.path.is_file() else pd.DataFrame()
        self._index = {self._key(r): i for i, r in enumerate(self.table.to_dict("records"))}

    @classmethod
    def _key(cls, row: Mapping[str, Any]) -> tuple:
        return tuple(str(row[k]) if k != "seed" else int(row[k]) for k in cls.KEY)

    def __len__(self) -> int:
        return len(self.table)

    def get(self, **key) -> dict | None:
        i = self._index.get(self._key(key))
        return None if i is None else self.table.iloc[i].to_dict()

    def add(self, row: Mapping[str, Any]) -> None:
        import pandas as pd

        k = self._key(row)
        if k in self._index:
            return
        self.table = pd.concat([self.table, pd.DataFrame([dict(row)])], ignore_index=True)
        self._index[k] = len(self.table) - 1
        self._new.append(dict(row))

    def save(self) -> None:
        import fcntl

        import pandas as pd

        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(str(self.path) + ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
            new = self._new
            self._load()  # the file as other writers left it
            for row in new:
                if self._key(row) not in self._index:
                    self.table = pd.concat([self.table, pd.DataFrame([row])], ignore_index=True)
                    self._index[self._key(row)] = len(self.table) - 1
            write_parquet(self.table, self.path)
            self._new = []


# ----------------------------------------------------------------------------------------------
# rank statistics
# ----------------------------------------------------------------------------------------------
def _rankdata_rows(a: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(a, axis=-1)


def _pearson_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a - a.mean(axis=-1, keepdims=True)
    b = b - b.mean(axis=-1, keepdims=True)
    den = np.sqrt((a * a).sum(-1) * (b * b).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (a * b).sum(-1) / np.where(den > 0, den, 1.0), np.nan)


def spearman_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman's rho of each row pair: Pearson's r of the average ranks (ties share the mean
    rank, as ``scipy.stats.spearmanr``); NaN for a constant row."""
    return _pearson_rows(_rankdata_rows(np.atleast_2d(x)), _rankdata_rows(np.atleast_2d(y)))


def kendall_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Kendall's tau-b of each row pair: sum_{i<j} sx sy / sqrt(sum sx^2 sum sy^2) with
    sx = sign(x_i - x_j), sy = sign(y_i - y_j) (``scipy.stats.kendalltau``); NaN when constant."""
    x, y = np.atleast_2d(x), np.atleast_2d(y)
    out = np.empty(len(x))
    iu = np.triu_indices(x.shape[1], 1)
    for r in range(len(x)):
        sx = np.sign(x[r][:, None] - x[r][None, :])[iu]
        sy = np.sign(y[r][:, None] - y[r][None, :])[iu]
        den = math.sqrt(float((sx * sx).sum()) * float((sy * sy).sum()))
        out[r] = float((sx * sy).sum()) / den if den > 0 else np.nan
    return out


def bootstrap_indices(n: int, n_boot: int, seed: int) -> np.ndarray:
    """``n_boot`` x ``n`` resample positions drawn with replacement, ``default_rng(seed)``."""
    if n_boot < 0:
        raise ValueError(f"config key 'validation.bootstrap' must be >= 0, got {n_boot}")
    return np.random.default_rng(int(seed)).integers(0, max(int(n), 1), size=(int(n_boot), int(n)))


def percentile_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The (1 - level) / 2 and (1 + level) / 2 percentiles of the finite ``values`` (NaN if none)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return float("nan"), float("nan")
    lo, hi = np.percentile(v, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


def precision_at(measure: np.ndarray, acc: np.ndarray, frac: float = 0.1) -> float:
    """Share of the measure's top k = max(1, round(frac n)) nets that are among the accuracy's top
    k. Accuracy ties at the k-th place all count as top (tie-inclusive); a tie of the measure at
    its k-th place is broken at random in expectation (each tied net counts with probability
    (k - #above) / #tied). Pairs with a NaN are dropped first; NaN when none is left."""
    m, a = np.asarray(measure, dtype=np.float64), np.asarray(acc, dtype=np.float64)
    ok = np.isfinite(a) & ~np.isnan(m)
    m, a = m[ok], a[ok]
    n = len(m)
    if n == 0:
        return float("nan")
    k = max(1, int(round(frac * n)))
    good = a >= np.sort(a)[::-1][k - 1]
    kth = np.sort(m)[::-1][k - 1]
    above, tied = m > kth, m == kth
    w = above.astype(float) + tied * (k - above.sum()) / tied.sum()
    return float((w * good).sum() / k)


def regret_of(measure: np.ndarray, tiebreak: np.ndarray, archs: Sequence[str], acc: Mapping[str, float],
              best: float) -> tuple[str, float, float]:
    """(pick arch, its accuracy, ``best`` minus it) for the pool net the measure ranks first
    (:func:`order_of`); accuracy NaN when that net was not trained."""
    pos = int(order_of(measure, tiebreak)[0]) if len(archs) else -1
    if pos < 0:
        return "", float("nan"), float("nan")
    arch = str(archs[pos])
    pa = float(acc.get(arch, float("nan")))
    return arch, pa, float(best - pa)


def quality_table(measures: pd.DataFrame, results: pd.DataFrame, sample_archs: Sequence[str],
                  names: Sequence[str], n_boot: int = 1000, seed: int = 0, top_frac: float = 0.1,
                  baseline: str = "params", level: float = 0.95, min_abs_rho: float = 0.3,
                  max_p: float = 0.05, targets: Sequence[str] = TARGETS) -> pd.DataFrame:
    """Search quality of every measure (columns :data:`QUALITY_COLUMNS`, one row per target and
    measure). ``measures``: :func:`measure_table` (picks over its ``in_pool`` rows); ``results``:
    one row per trained net (arch, ``<target>_acc``); correlations, their intervals and the
    precision over the nets of ``sample_archs`` that have results; ``best_acc`` over all pool nets
    with results. ``signal``: abs(rho) >= ``min_abs_rho`` with both p-values < ``max_p``."""
    import pandas as pd

    from scipy import stats

    res = results.drop_duplicates("arch").set_index("arch")
    pool = measures[measures["in_pool"].to_numpy(dtype=bool)].reset_index(drop=True)
    by_arch = measures.set_index("arch")
    sample = [a for a in dict.fromkeys(sample_archs) if a in res.index]
    boot = {"n_boot": n_boot, "seed": seed}
    rows = []
    for t in targets:
        col = f"{t}_acc"
        acc_all = res[col].to_dict()
        acc = res.loc[sample, col].to_numpy(dtype=np.float64)
        trained_pool = [a for a in pool["arch"] if a in res.index]
        best = float(np.nanmax(res.loc[trained_pool, col].to_numpy(dtype=np.float64))) if trained_pool else np.nan
        base_boot = None
        if baseline in by_arch.columns:
            base_boot = boot_stat(by_arch.loc[sample, baseline].to_numpy(dtype=np.float64), acc, spearman_rows, **boot)
        for m in names:
            v = by_arch.loc[sample, m].to_numpy(dtype=np.float64)
            ok = np.isfinite(v) & np.isfinite(acc)
            n = int(ok.sum())
            if n >= 3 and np.ptp(v[ok]) > 0 and np.ptp(acc[ok]) > 0:
                sp, kt = stats.spearmanr(v[ok], acc[ok]), stats.kendalltau(v[ok], acc[ok])
                rho, rho_p, tau, tau_p = (float(sp.statistic), float(sp.pvalue), float(kt.statistic),
                                          float(kt.pvalue))
            else:
                rho = rho_p = tau = tau_p = float("nan")
            boot_rho = boot_stat(v, acc, spearman_rows, **boot)
            rho_lo, rho_hi = percentile_interval(boot_rho, level)
            tau_lo, tau_hi = percentile_interval(boot_stat(v, acc, kendall_rows, **boot), level)
            d_lo, d_hi = (percentile_interval(boot_rho - base_boot, level) if base_boot is not None
                          else (float("nan"), float("nan")))
            pick, pick_acc, reg = regret_of(pool[m].to_numpy(), pool["random"].to_numpy(), pool["arch"].tolist(),
                                            acc_all, best)
            rows.append({"target": t, "measure": m, "n": n, "spearman": rho, "spearman_p": rho_p,
                         "spearman_lo": rho_lo, "spearman_hi": rho_hi, "kendall": tau, "kendall_p": tau_p,
                         "kendall_lo": tau_lo, "kendall_hi": tau_hi, "baseline": baseline, "d_spearman_lo": d_lo,
                         "d_spearman_hi": d_hi, "precision_at": precision_at(v, acc, top_frac),
                         "top_frac": float(top_frac), "pick_arch": pick, "pick_acc": pick_acc, "best_acc": best,
                         "regret": reg,
                         "signal": bool(np.isfinite(rho) and abs(rho) >= min_abs_rho and rho_p < max_p
                                        and tau_p < max_p)})
    return pd.DataFrame(rows, columns=QUALITY_COLUMNS)


def boot_stat(v: np.ndarray, acc: np.ndarray, fn, n_boot: int, seed: int) -> np.ndarray:
    """``fn`` (:func:`spearman_rows` / :func:`kendall_rows`) on ``n_boot`` resamples of the finite
    (measure, accuracy) pairs drawn by :func:`bootstrap_indices` (``seed``): measures without NaN
    share their resamples, so the difference of two of them is a paired bootstrap. All NaN with
    fewer than 3 finite pairs."""
    ok = np.flatnonzero(np.isfinite(v) & np.isfinite(acc))
    if len(ok) < 3 or n_boot == 0:
        return np.full(int(n_boot), np.nan)
    sub = ok[bootstrap_indices(len(ok), n_boot, seed)]
    return fn(v[sub], acc[sub])


def _nanmean(a: np.ndarray, axis=None):
    """``numpy.nanmean`` without the warning for an all-NaN slice (NaN there)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(a, axis=axis)


def noise_table(runs: pd.DataFrame, n_boot: int = 1000, seed: int = 0, level: float = 0.95,
                targets: Sequence[str] = TARGETS) -> pd.DataFrame:
    """The noise ceiling (columns :data:`NOISE_COLUMNS`): over the nets trained with every seed of
    ``runs`` (arch, seed, ``<target>_acc``), the mean over seed pairs of Spearman's rho (with a
    bootstrap interval over nets) and Kendall's tau between the seeds' accuracies, and the mean
    absolute accuracy difference between two seeds of one net. NaN with fewer than 2 seeds or 3 nets."""
    import pandas as pd

    rows = []
    for t in targets:
        wide = runs.pivot_table(index="arch", columns="seed", values=f"{t}_acc", aggfunc="first").dropna()
        seeds = list(wide.columns)
        nets = len(wide)
        if len(seeds) < 2 or nets < 3:
            rows.append({"target": t, "nets": nets, "seeds": len(seeds), "spearman": np.nan, "spearman_lo": np.nan,
                         "spearman_hi": np.nan, "kendall": np.nan, "mean_abs_diff": np.nan})
            continue
        pairs = list(itertools.combinations(seeds, 2))
        a = np.stack([wide[p].to_numpy(dtype=np.float64) for p, _ in pairs])
        b = np.stack([wide[q].to_numpy(dtype=np.float64) for _, q in pairs])
        idx = bootstrap_indices(nets, n_boot, seed)
        boot = _nanmean(np.stack([spearman_rows(a[i][idx], b[i][idx]) for i in range(len(pairs))]), axis=0) \
            if len(idx) else np.array([])
        lo, hi = percentile_interval(boot, level)
        rows.append({"target": t, "nets": nets, "seeds": len(seeds),
                     "spearman": float(_nanmean(spearman_rows(a, b))), "spearman_lo": lo, "spearman_hi": hi,
                     "kendall": float(_nanmean(kendall_rows(a, b))),
                     "mean_abs_diff": float(np.mean(np.abs(a - b)))})
    return pd.DataFrame(rows, columns=NOISE_COLUMNS)


# ----------------------------------------------------------------------------------------------
# the stage: plan, per-slot jobs, gather
# ----------------------------------------------------------------------------------------------
def plan_stage(ranked_path: str, proxies: Sequence[str], method: str, weights: Mapping[str, float] | None,
               nets: int, top_k: int, seeds: int, seed_nets: int, seed: int, search_space: Mapping[str, Any],
               out_plan: str, out_measures: str, expect_slots: int | None = None,
               logger: logging.Logger | None = None) -> pd.DataFrame:
    """Rule ``validation_plan``: the measure table of every initial net and the slots."""
    log = logger or LOG
    ranked = read_parquet(ranked_path, "ranked initial population")
    meas = measure_table(ranked, proxies, method, seed, weights, search_space=search_space)
    names = measure_names(proxies)
    plan = validation_plan(meas, nets, top_k, seeds, seed_nets, seed, names)
    if expect_slots is not None and len(plan) != int(expect_slots):
        raise ValueError(f"the validation plan has {len(plan)} slots but the workflow expects {expect_slots} "
                         f"(measures {pick_measures(names)}); the rule file and tinyevo.train.validation disagree")
    write_parquet(meas, out_measures)
    write_parquet(plan, out_plan)
    log.info("pool: %d of %d initial nets within the device limits", int(meas["in_pool"].sum()), len(meas))
    log.info("plan: %d slots (%d sampled, %d picks, %d extra seeds), %d to train", len(plan),
             int((plan["role"] == "sample").sum()), int((plan["role"] == "pick").sum()),
             int((plan["role"] == "seed").sum()), int((plan["duplicate_of"] < 0).sum()))
    return plan


def train_slot(plan_path: str, data_dir: str, slot: int, search_space: Mapping[str, Any],
               settings: Mapping[str, Any], device: str, amp: bool, out: str, progress: bool = True,
               logger: logging.Logger | None = None, torch_threads: int | None = None) -> pd.DataFrame:
    """Rule ``validate_net``: train the net of plan slot ``slot`` with ``settings`` (its seed from
    the plan) and write one row: the plan's columns and :data:`RESULT_COLUMNS`. A duplicate slot
    writes its row with status ``duplicate`` (NaN results) and trains nothing, without loading
    torch (a job's torch import is 2-3 s here); ``torch_threads`` (``validation.threads``) is set
    only for a slot that trains."""
    import pandas as pd

    from tinyevo.runtime import pick_device, set_threads
    from tinyevo.space import SearchSpace

    log = logger or LOG
    plan = read_parquet(plan_path, "validation plan")
    if not 0 <= slot < len(plan):
        raise ValueError(f"validation slot {slot} outside the plan's 0..{len(plan) - 1}")
    row = plan.iloc[int(slot)].to_dict()
    rec = {k: row[k] for k in PLAN_COLUMNS}
    if int(row["duplicate_of"]) >= 0:
        log.info("slot %d (%s %s) repeats slot %d: nothing to train", slot, row["role"], row["measure"],
                 int(row["duplicate_of"]))
        rec.update({c: np.nan for c in RESULT_COLUMNS})
        rec.update({"best_epoch": 0, "epochs": 0, "seconds": 0.0, "status": "duplicate"})
    else:
        if torch_threads is not None:
            set_threads(torch_threads)
        space = SearchSpace.from_config(search_space)
        spec = space.netspec(str(row["arch"]))
        log.info("slot %d/%d: %s %s, index %d, seed %d: %s", slot + 1, len(plan), row["role"], row["measure"],
                 int(row["index"]), int(row["seed"]), row["arch"])
        rec.update(train_eval(spec, load_splits(data_dir), {**dict(settings), "seed": int(row["seed"])},
                              device=pick_device(device), amp=amp, progress=progress, logger=log))
        log.info("val accuracy %.4f, test accuracy %.4f after %d epochs (%.1f s, %s)", rec["val_acc"],
                 rec["test_acc"], rec["epochs"], rec["seconds"], rec["status"])
    df = pd.DataFrame([rec])
    write_parquet(df, out)
    return df


def resolve_duplicates(slots: pd.DataFrame) -> pd.DataFrame:
    """The slot rows with every duplicate's results copied from the slot it repeats."""
    out = slots.sort_values("slot", kind="mergesort").reset_index(drop=True)
    src = out.set_index("slot")
    dup = out["duplicate_of"].to_numpy() >= 0
    for c in RESULT_COLUMNS:
        out.loc[dup, c] = src.loc[out.loc[dup, "duplicate_of"], c].to_numpy()
    return out


def gather_stage(plan_path: str, measures_path: str, parts: Sequence[str], proxies: Sequence[str],
                 out_trained: str, out_correlations: str, out_noise: str, n_boot: int, seed: int,
                 top_frac: float = 0.1, min_abs_rho: float = 0.3, max_p: float = 0.05,
                 logger: logging.Logger | None = None) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Rule ``validation_gather``: the slots with their measures (``trained.parquet``), the search
    quality of every measure (``correlations.parquet``) and the noise ceiling (``noise.parquet``)."""
    import pandas as pd

    log = logger or LOG
    plan = read_parquet(plan_path, "validation plan")
    meas = read_parquet(measures_path, "validation measures")
    slots = pd.concat([read_parquet(p, "validation result") for p in parts], ignore_index=True)
    if sorted(slots["slot"].tolist()) != plan["slot"].tolist():
        raise ValueError(f"the validation results cover slots {sorted(slots['slot'].tolist())[:8]}... but the plan "
                         f"has {len(plan)} slots: re-run the validation jobs")
    slots = resolve_duplicates(slots)
    names = measure_names(proxies)
    by_arch = meas.set_index("arch")
    trained = slots.drop(columns=[c for c in names if c in slots.columns]).join(by_arch[names], on="arch")
    main = trained[trained["seed"] == int(seed)]
    sample = main.loc[main["role"] == "sample", "arch"].tolist()
    corr = quality_table(meas, main, sample, names, n_boot=n_boot, seed=seed, top_frac=top_frac,
                         min_abs_rho=min_abs_rho, max_p=max_p)
    noise_nets = trained.loc[trained["role"] == "seed", "arch"].unique()
    noise = noise_table(trained[trained["arch"].isin(noise_nets)], n_boot=n_boot, seed=seed)
    write_parquet(trained, out_trained)
    write_parquet(corr, out_correlations)
    write_parquet(noise, out_noise)
    log_quality(corr, noise, len(sample), min_abs_rho, max_p, proxies, log)
    return trained, corr, noise


def log_quality(corr: pd.DataFrame, noise: pd.DataFrame, n: int, min_abs_rho: float, max_p: float,
                proxies: Sequence[str], log: logging.Logger) -> None:
    """The quality table and the verdict (on the val target) in the log."""
    for r in corr.itertuples(index=False):
        log.info("  %-4s %-14s spearman %+.3f [%+.3f, %+.3f] (p %.3g)  kendall %+.3f  p@%g %.2f  regret %.4f  %s",
                 r.target, r.measure, r.spearman, r.spearman_lo, r.spearman_hi, r.spearman_p, r.kendall,
                 r.top_frac, r.precision_at, r.regret, "SIGNAL" if r.signal else "no signal")
    for r in noise.itertuples(index=False):
        log.info("  noise ceiling (%s): seed-to-seed spearman %+.3f [%+.3f, %+.3f] over %d nets x %d seeds, "
                 "mean |acc difference| %.4f", r.target, r.spearman, r.spearman_lo, r.spearman_hi, r.nets, r.seeds,
                 r.mean_abs_diff)
    val = corr[corr["target"] == "val"]
    with_signal = val.loc[val["signal"], "measure"].tolist()
    crit = f"|spearman| >= {min_abs_rho}, spearman and kendall p < {max_p}, n = {n}, val accuracy"
    if with_signal:
        log.info("measures that carry signal on this dataset (%s): %s", crit, ", ".join(with_signal))
    else:
        log.info("no measure carries signal on this dataset (%s)", crit)
    lacking = [p for p in proxies if p not in with_signal]
    if lacking:
        log.info("proxies without signal on this dataset: %s", ", ".join(lacking))
