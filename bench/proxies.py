"""Proxy scoring against its floor, and the score stage at 1 vs 2 cores.

Per net (a seeded sample of the initial population, or all of it), in one process, interleaved:

- ``score``: the configured proxy set (``proxies.names``) as the score stage computes it: one
  ``ProxyScorer.score([arch])`` call with an empty scratch score cache, i.e. everything the scorer
  does per net (NetSpec, cache keys and look-up, building and initialising the net when a proxy
  needs one, the proxies, the cache write and a flush; the stage flushes every 16 nets, so this
  is an upper bound);
- ``floor``: one plain forward + backward (cross-entropy) of the same net and batch, on a freshly
  built net (the build is not timed: the floor is what any gradient-based proxy must at least do);
- the breakdown (``--breakdown``, on by default): the build + initialisation alone, and each proxy
  of the set alone (a proxy registered ``from_spec`` from the NetSpec, as the scorer calls it).

The scorer is timed first, so it pays the per-process warm-up of a new layer shape (oneDNN
primitive creation) as the stage does; one net is run untimed before the loop (library start-up).
Wall time (``time.perf_counter``) and process CPU time (``time.process_time``: less sensitive to
other load, one torch thread) are both recorded. Ratio = score / floor per net; the table gives
its median and worst over the nets, and the ratio of the totals.

``--cores-ratio`` also runs the score stage (every ``score_shard`` job and ``score_gather``) with
Snakemake in a scratch directory on the config (data and candidate table prepared first, untimed),
once per ``--cores`` value (default 1 then 2), each time with an empty score cache, and reports the
wall time of each Snakemake command, the shard jobs' own times from their ``benchmark:`` files,
the load average before and after, whether the score tables are identical, and the ratio.

    python bench/proxies.py                      # 64 seeded nets: per-net table and ratio
    python bench/proxies.py --nets 0             # every net of the initial population
    python bench/proxies.py --cores-ratio        # + the score stage at --cores 1 and 2 (512 nets)
    python bench/proxies.py --per-proxy          # + every registered proxy alone (x floor)

Writes ``results/bench/proxies/`` (``--out``): ``per_net.parquet`` (arch, params, macs, score_s,
floor_s, ratio, score_cpu_s, floor_cpu_s, ratio_cpu, build_s, <proxy>_s...), ``summary.parquet``
(measure, nets, median, worst, total_ratio), ``cores.parquet`` (cores, shards, nets, wall_s,
shard_job_s_sum, shard_job_s_max, load_before, load_after, identical, ratio_to_first) and
``proxies.md`` (the printed tables).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow"))

import pandas as pd  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from tinyevo.config import load_config  # noqa: E402
from tinyevo.io import atomic_write_text, write_parquet  # noqa: E402
from tinyevo.proxies import FROM_SPEC, PROXIES, ProxyScorer, build_net  # noqa: E402
from tinyevo.runtime import pick_device, set_threads  # noqa: E402
from tinyevo.space import space_from_config  # noqa: E402
from tinyevo.space.cost import cost_of  # noqa: E402


class Clock:
    """Wall and process-CPU seconds of a block (CUDA synchronised on both ends)."""

    def __init__(self, device):
        self.device = device
        self.wall = self.cpu = 0.0

    def __enter__(self):
        self._sync()
        self._w, self._c = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self._sync()
        self.wall = time.perf_counter() - self._w
        self.cpu = time.process_time() - self._c

    def _sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def floor(net, x, y):
    """One plain forward + backward of the batch (what any gradient-based proxy must at least do)."""
    F.cross_entropy(net(x), y).backward()


def sample_archs(space, nets: int, seed: int) -> list[str]:
    archs = [arch for _, arch, _ in space.iter_arches()]
    if nets and nets < len(archs):
        keep = set(random.Random(seed).sample(range(len(archs)), nets))
        archs = [a for i, a in enumerate(archs) if i in keep]  # grid order
    return archs


def proxy_alone(space, arch, name, x, y, seed, device):
    """Seconds (wall) of one proxy alone, called as the scorer calls it (spec or fresh net)."""
    spec = space.netspec(arch)
    arg = spec if FROM_SPEC.get(name) else build_net(space, arch, seed, device, spec=spec)
    with Clock(device) as c:
        PROXIES[name](arg, x, y)
    return c.wall


def per_net_table(space, names, archs, x, y, seed, device, threads, breakdown, per_proxy) -> pd.DataFrame:
    """One row per net: the configured set through the scorer vs the floor (see the module doc)."""
    scratch = Path(tempfile.mkdtemp(prefix="tinyevo-bench-cache-"))
    try:
        scorer = ProxyScorer(space, names, x, y, seed, device=device, cache_dir=scratch, threads=threads)
        warm = archs[0]
        scorer.score_net(warm)
        floor(build_net(space, warm, seed, device), x, y)
        extra = sorted(PROXIES) if per_proxy else (list(names) if breakdown else [])
        rows = []
        for arch in archs:
            with Clock(device) as s:
                scorer.score([arch])
            net = build_net(space, arch, seed, device)
            with Clock(device) as f:
                floor(net, x, y)
            del net
            cost = cost_of(space.netspec(arch))
            row = {"arch": arch, "params": cost.params, "macs": cost.macs, "score_s": s.wall, "floor_s": f.wall,
                   "ratio": s.wall / f.wall, "score_cpu_s": s.cpu, "floor_cpu_s": f.cpu,
                   "ratio_cpu": s.cpu / f.cpu if f.cpu > 0 else float("nan")}
            if breakdown or per_proxy:
                with Clock(device) as b:
                    build_net(space, arch, seed, device)
                row["build_s"] = b.wall
                for n in extra:
                    row[f"{n}_s"] = proxy_alone(space, arch, n, x, y, seed, device)
            rows.append(row)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return pd.DataFrame(rows)


def summarise(df: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for measure, num, den in (("wall", "score_s", "floor_s"), ("cpu", "score_cpu_s", "floor_cpu_s")):
        r = df[num] / df[den]
        rows.append({"measure": measure, "nets": len(df), "median": float(r.median()), "worst": float(r.max()),
                     "total_ratio": float(df[num].sum() / df[den].sum()),
                     "score_ms_median": 1000 * float(df[num].median()),
                     "floor_ms_median": 1000 * float(df[den].median())})
    return pd.DataFrame(rows)


def _run(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def stage_walls(config: str, cores_list, nets: int, shards: int | None, threads: int | None) -> pd.DataFrame:
    """Wall time of the score stage (every score_shard job + score_gather) with Snakemake at each
    --cores value, in a scratch directory, the score cache emptied before each run."""
    work = Path(tempfile.mkdtemp(prefix="tinyevo-bench-stage-"))
    rows = []
    try:
        over = work / "bench.yaml"
        lines = []
        if shards is not None or threads is not None:
            lines.append("scoring:")
            if shards is not None:
                lines.append(f"  shards: {int(shards)}")
            if threads is not None:
                lines.append(f"  threads: {int(threads)}")
        over.write_text("\n".join(lines) + "\n" if lines else "{}\n")
        cfg, _ = load_config([config, over])
        ds = cfg["dataset"]["name"]
        n_shards = int(cfg["scoring"]["shards"])
        base = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(work),
                "--configfile", str(config), str(over), "--nolock", "--quiet", "progress"]
        _run(base + ["--cores", "2", "results/space/candidates.parquet", f"results/data/{ds}/stats.parquet"])
        if nets:
            p = work / "results/space/candidates.parquet"
            pd.read_parquet(p).iloc[:nets].to_parquet(p, index=False)
        n = len(pd.read_parquet(work / "results/space/candidates.parquet"))
        # page cache: the first timed run should not be the one that reads torch from disk
        _run([sys.executable, "-c", "import torch, pandas, snakemake"])
        first = None
        tables = []
        for cores in cores_list:
            for d in ("results/cache", "results/scores", "results/benchmarks/score"):
                shutil.rmtree(work / d, ignore_errors=True)
            load_before = os.getloadavg()[0]
            t0 = time.perf_counter()
            _run(base + ["--cores", str(cores), "--rerun-triggers=mtime", "results/scores/initial.parquet"])
            wall = time.perf_counter() - t0
            load_after = os.getloadavg()[0]
            jobs = [float(pd.read_csv(f, sep="\t")["s"].iloc[0])
                    for f in sorted((work / "results/benchmarks/score").glob("shard_*.tsv"))]
            table = pd.read_parquet(work / "results/scores/initial.parquet").drop(columns="cache_hit")
            tables.append(table)
            first = wall if first is None else first
            rows.append({"cores": int(cores), "shards": n_shards, "nets": n, "wall_s": wall,
                         "shard_job_s_sum": sum(jobs), "shard_job_s_max": max(jobs) if jobs else float("nan"),
                         "load_before": load_before, "load_after": load_after,
                         "identical": bool(table.equals(tables[0])), "ratio_to_first": wall / first})
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return pd.DataFrame(rows)


def markdown(df: pd.DataFrame, floatfmt: str = ".3g") -> str:
    cols = list(df.columns)
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in df.itertuples(index=False):
        out.append("| " + " | ".join(format(v, floatfmt) if isinstance(v, float) else str(v) for v in r) + " |")
    return "\n".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(REPO / "config/config.yaml"))
    ap.add_argument("--nets", type=int, default=64, help="seeded sample of the initial population (0 = all)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the sample and of the random data batch")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: scoring.threads)")
    ap.add_argument("--device", default=None, help="default: compute.device of the config")
    ap.add_argument("--resolution", type=int, default=None, help="input size override (e.g. 224)")
    ap.add_argument("--channels", type=int, default=None, help="input channels override (e.g. 3)")
    ap.add_argument("--no-breakdown", dest="breakdown", action="store_false",
                    help="skip the build and per-proxy columns")
    ap.add_argument("--per-proxy", action="store_true", help="also time every registered proxy alone")
    ap.add_argument("--cores-ratio", action="store_true", help="also time the score stage via snakemake")
    ap.add_argument("--cores", type=int, nargs="+", default=[1, 2], help="--cores values for --cores-ratio")
    ap.add_argument("--stage-nets", type=int, default=0, help="first N candidates for --cores-ratio (0 = all)")
    ap.add_argument("--shards", type=int, default=None, help="scoring.shards for --cores-ratio (default: config)")
    ap.add_argument("--skip-per-net", action="store_true", help="only the --cores-ratio measurement")
    ap.add_argument("--out", default=str(REPO / "results/bench/proxies"))
    a = ap.parse_args(argv)

    over = {}
    if a.resolution is not None or a.channels is not None:
        over["dataset"] = {k: v for k, v in (("resolution", a.resolution), ("channels", a.channels)) if v is not None}
    cfg, _ = load_config([a.config], overrides=over or None)
    threads = int(a.threads if a.threads is not None else cfg["scoring"]["threads"])
    set_threads(threads)
    device = pick_device(a.device or cfg["compute"]["device"])
    out = Path(a.out)
    report = [f"device {device}, torch threads {torch.get_num_threads()}, torch {torch.__version__}, "
              f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start"]

    if not a.skip_per_net:
        space = space_from_config(cfg)
        names = list(cfg["proxies"]["names"])
        bs = int(cfg["proxies"]["batch_size"])
        archs = sample_archs(space, a.nets, a.seed)
        g = torch.Generator().manual_seed(a.seed)
        x = torch.randn(bs, space.in_channels, space.resolution, space.resolution, generator=g).to(device)
        y = torch.randint(0, space.num_classes, (bs,), generator=g).to(device)
        df = per_net_table(space, names, archs, x, y, int(cfg["proxies"]["seed"]), device, threads,
                           a.breakdown, a.per_proxy)
        summ = summarise(df)
        write_parquet(df, out / "per_net.parquet")
        write_parquet(summ, out / "summary.parquet")
        inp = f"{space.resolution}x{space.resolution}x{space.in_channels}"
        report.append(f"\nProxy set {'+'.join(names)} vs the floor (one forward + backward), {inp}, batch {bs}, "
                      f"{len(df)} nets (ratio = score time / floor time, per net):\n")
        report.append(markdown(summ))
        parts = [c for c in df.columns if c.endswith("_s") and c not in ("score_s", "floor_s", "score_cpu_s",
                                                                          "floor_cpu_s")]
        if parts:
            share = pd.DataFrame([{"part": c[:-2], "ms_per_net_mean": 1000 * df[c].mean(),
                                   "x_floor_median": float((df[c] / df["floor_s"]).median())} for c in parts])
            report.append("\nWhere the time goes (each part timed alone, wall):\n")
            report.append(markdown(share))
    if a.cores_ratio:
        cores = stage_walls(a.config, a.cores, a.stage_nets, a.shards, a.threads)
        write_parquet(cores, out / "cores.parquet")
        report.append(f"\nScore stage via snakemake ({int(cores['nets'].iloc[0])} nets, "
                      f"{int(cores['shards'].iloc[0])} shards, empty cache):\n")
        report.append(markdown(cores))
    text = "\n".join(report) + "\n"
    atomic_write_text(out / "proxies.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
