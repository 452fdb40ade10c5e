"""Proxy throughput: nets/s per proxy, for the configured set (the fused pass + synflow, as the
scorer runs them) and the floor (one plain forward + backward of the batch per net), at the
default config's input and at 224x224x3. Run on demand:

    python bench/proxies.py                       # every net of the default population
    python bench/proxies.py --nets 16 --threads 1 # a seeded subset
    python bench/proxies.py --stage-cores 1 2     # also time the score stage via snakemake

Timing excludes building the nets (the same for every column) and a warm-up net (every column).
Prints a markdown table.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow"))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from tinyevo.config import load_config  # noqa: E402
from tinyevo.proxies import PROXIES, build_net, compute  # noqa: E402
from tinyevo.runtime import pick_device, set_threads  # noqa: E402
from tinyevo.space import space_from_config  # noqa: E402


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def floor(net, x, y):
    """One plain forward + backward of the batch (what any gradient-based proxy must at least do)."""
    net.zero_grad(set_to_none=True)
    F.cross_entropy(net(x), y).backward()
    net.zero_grad(set_to_none=True)


def time_setting(space, archs, x, y, device, seed, columns):
    """{column: seconds per net} over ``archs`` (after one warm-up net)."""
    totals = {c: 0.0 for c in columns}
    warm = build_net(space, archs[0], seed, device)
    for fn in columns.values():  # one-off library initialisation and first-touch allocations
        fn(warm, x, y)
    for arch in archs:
        net = build_net(space, arch, seed, device)
        for c, fn in columns.items():
            _sync(device)
            t0 = time.perf_counter()
            fn(net, x, y)
            _sync(device)
            totals[c] += time.perf_counter() - t0
    return {c: t / len(archs) for c, t in totals.items()}


def stage_wall(cores_list, nets, threads):
    """Wall time of the score rules (shards + gather) at each --cores, on the default config with
    the first ``nets`` grid nets, data and space prepared beforehand, cache emptied each time."""
    out = {}
    work = Path(tempfile.mkdtemp(prefix="tinyevo-bench-"))
    try:
        cfg = work / "bench.yaml"
        cfg.write_text(f"scoring:\n  threads: {threads}\n")
        base = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(work),
                "--configfile", str(REPO / "config/config.yaml"), str(cfg), "--nolock", "--quiet", "progress"]
        subprocess.run(base + ["--cores", "2", "results/space/candidates.parquet",
                               "results/data/digits/stats.parquet"], check=True)
        if nets:
            import pandas as pd

            p = work / "results/space/candidates.parquet"
            pd.read_parquet(p).iloc[:nets].to_parquet(p, index=False)
        for cores in cores_list:
            shutil.rmtree(work / "results/cache", ignore_errors=True)
            shutil.rmtree(work / "results/scores", ignore_errors=True)
            t0 = time.perf_counter()
            subprocess.run(base + ["--cores", str(cores), "--rerun-triggers=mtime",
                                   "results/scores/initial.parquet"], check=True)
            out[cores] = time.perf_counter() - t0
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(REPO / "config/config.yaml"))
    ap.add_argument("--nets", type=int, default=0, help="seeded subset of the population (0 = all)")
    ap.add_argument("--nets-224", type=int, default=None, help="subset at 224x224x3 (default: --nets)")
    ap.add_argument("--resolutions", default="default,224", help="comma list: default and/or integers")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--stage-cores", type=int, nargs="*", default=[],
                    help="also time the score stage with snakemake at these --cores values")
    ap.add_argument("--stage-nets", type=int, default=0, help="nets for --stage-cores (0 = all)")
    a = ap.parse_args(argv)

    set_threads(a.threads)
    device = pick_device(a.device)
    rows = []
    for res in a.resolutions.split(","):
        over = {} if res == "default" else {"dataset": {"resolution": int(res), "channels": 3}}
        cfg, _ = load_config([a.config], overrides=over)
        space = space_from_config(cfg)
        names = list(cfg["proxies"]["names"])
        bs = int(cfg["proxies"]["batch_size"])
        archs = [arch for _, arch, _ in space.iter_arches()]
        n = a.nets if res == "default" else (a.nets_224 if a.nets_224 is not None else a.nets)
        if n and n < len(archs):
            archs = sorted(random.Random(a.seed).sample(archs, n))
        g = torch.Generator().manual_seed(a.seed)
        x = torch.randn(bs, space.in_channels, space.resolution, space.resolution, generator=g).to(device)
        y = torch.randint(0, space.num_classes, (bs,), generator=g).to(device)
        columns = {"floor (fwd+bwd)": floor}
        for p in sorted(PROXIES):
            columns[p] = PROXIES[p]
        columns[f"set {'+'.join(names)}"] = lambda net, x, y, names=names: compute(net, x, y, names)
        per_net = time_setting(space, archs, x, y, device, a.seed, columns)
        fl = per_net["floor (fwd+bwd)"]
        rows.append((f"{space.resolution}x{space.resolution}x{space.in_channels}", bs, len(archs), per_net, fl))

    cols = list(rows[0][3])
    print(f"\ndevice {device}, torch threads {torch.get_num_threads()}, torch {torch.__version__}\n")
    print("| input | batch | nets | " + " | ".join(f"{c} nets/s (x floor)" for c in cols) + " |")
    print("|---|---|---|" + "---|" * len(cols))
    for inp, bs, n, per_net, fl in rows:
        cells = [f"{1 / per_net[c]:.2f} ({per_net[c] / fl:.1f}x)" for c in cols]
        print(f"| {inp} | {bs} | {n} | " + " | ".join(cells) + " |")
    if a.stage_cores:
        walls = stage_wall(a.stage_cores, a.stage_nets, a.threads)
        print("\n| score stage | wall s |\n|---|---|")
        for cores, s in walls.items():
            print(f"| --cores {cores} | {s:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
