"""The GPU path, checked against the CPU. On a machine with CUDA:

1. the tiny pipeline (the TINY config of tests/conftest.py) with ``compute.device: cuda`` and
   ``compute.amp: true``, every stage to the report (``snakemake all``), timed; its training
   tables must say they ran on CUDA;
2. the proxy benchmark: every proxy of the registry on a seeded sample of the default config's
   initial nets (the proxy batch of the default data), scored by the pipeline's ProxyScorer on the
   CPU and on the GPU; the GPU scores must agree with the CPU ones (tolerances below); nets/s of
   the configured proxy set on both devices;
3. the training benchmark: one net of the default space (``--arch``, else the median-MACs feasible
   initial net) trained with the default ``train`` settings on the default digits data, ``--seeds``
   seeds on the CPU (side by side in worker processes) and on the GPU with AMP; the GPU's mean
   test accuracy must reach the CPU's within one point; images/s on both.

Without CUDA it prints "no CUDA device: GPU check skipped" and exits 0 (exit 1 with
``--require-gpu``). Exit 1 when a check fails. ``--accelerator cpu`` runs the same comparison of
the CPU against itself (a smoke test of this script on a machine without a GPU).

    python bench/gpu.py                          # make gpu-check
    python bench/gpu.py --nets 16 --seeds 2 --epochs 6 --skip-pipeline

Proxy tolerances (relative difference |gpu - cpu| / |cpu| per net, NaN only where both are NaN):

* ``params``, ``macs``: exact. They count the architecture (integers), nothing runs on the device.
* ``synflow``, ``synflow_relu6``: 1e-6. The whole computation is float64 (|weights|, the
  all-ones input, the backward pass), whose rounding (2^-53 ~ 1e-16 per operation) stays orders
  of magnitude below 1e-6 over a few hundred thousand summed terms.
* the float32 proxies (``snip``, ``jacob_cov``, ``naswot``, ``zico``, ``meco``): 1e-3, or ten
  times the proxy's own CPU noise floor when that is larger. The GPU runs the same float32
  forward and backward passes with other summation orders and other convolution algorithms
  (cuDNN), and some scores amplify rounding: naswot's slogdet of the binary-code kernel moves when
  an activation within rounding of zero flips sign, zico divides by the spread of gradients
  across the batch, jacob_cov weighs the smallest eigenvalues of a correlation matrix. The noise
  floor is measured in the run itself: the same nets scored on the CPU at ``scoring.threads`` and
  at ``--noise-threads`` torch threads (only the summation order differs). On 16 nets of the
  default space and its proxy batch it was 2e-6 for naswot, 2e-5 for meco, 2.5e-3 for jacob_cov,
  1.1e-2 for snip and 1.7e-2 for zico, so the tolerances of the last three are ten times their
  floor (about 0.025, 0.11, 0.17). A tolerance of several per cent is of the order of the spread
  of zico across nets (13 %), so every float32 proxy must also keep the CPU's ranking of the
  nets: Spearman's rho between the GPU and the CPU scores >= 0.95 (the CPU against itself at two
  thread counts: 0.994 for zico, 0.997 for jacob_cov, 1.0 for snip). This pass runs with TF32
  off (``torch.backends.cudnn.allow_tf32 = False``): float32 against float32.
* PyTorch's default on Ampere and newer GPUs (what the pipeline's scoring gets: cuDNN
  convolutions in TF32, a 10-bit mantissa, ~5e-4 relative per product) is checked as a ranking
  instead: Spearman's rho between the GPU and the CPU scores over the nets >= 0.95 for every
  proxy of the configured set, the order the search uses.

Training: the same seeds, data order and initialisation on both devices; AMP (float16 autocast
and gradient scaling, only ever on CUDA) and cuDNN's algorithms change the rounding, so the runs
diverge like two seeds would. The check compares the mean over ``--seeds`` seeds: GPU >= CPU - 1
point of test accuracy. images/s = epochs x training images / the training wall time (the
per-epoch test evaluation of ``fit`` included, as in the pipeline), with the device synchronised
before the clock is read.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the rule scripts: before torch loads OpenMP
sys.path.insert(0, str(REPO / "workflow"))

SKIP_MESSAGE = "no CUDA device: GPU check skipped"
EXACT = ("params", "macs")
FLOAT64 = ("synflow", "synflow_relu6")
FP32_TOL = 1e-3
FLOAT64_TOL = 1e-6
NOISE_MARGIN = 10.0
MIN_SPEARMAN = 0.95
ACC_POINT = 0.01


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(REPO / "config" / "config.yaml"),
                    help="config of the proxy and training benchmarks (default: the default config)")
    ap.add_argument("--accelerator", default="cuda",
                    help="device compared with the CPU: cuda, cuda:N, or cpu (a smoke test of this script)")
    ap.add_argument("--require-gpu", action="store_true", help="exit 1 instead of 0 when there is no CUDA device")
    ap.add_argument("--skip-pipeline", action="store_true", help="leave out the tiny pipeline run")
    ap.add_argument("--nets", type=int, default=16, help="seeded sample of initial nets for the proxies")
    ap.add_argument("--seeds", type=int, default=3, help="training seeds per device")
    ap.add_argument("--epochs", type=int, default=None, help="training epochs (default: train.epochs)")
    ap.add_argument("--arch", default=None,
                    help="net to train (default: the median-MACs feasible net of the config's initial population)")
    ap.add_argument("--cpu-threads", type=int, default=None,
                    help="CPU torch threads of the training (default: train.threads); scoring uses scoring.threads")
    ap.add_argument("--noise-threads", type=int, default=2,
                    help="second CPU thread count of the proxies' noise floor (the first is scoring.threads)")
    ap.add_argument("--cores", type=int, default=os.cpu_count() or 2, help="--cores of the tiny pipeline run")
    ap.add_argument("--timeout", type=int, default=1800, help="seconds for the tiny pipeline run")
    a = ap.parse_args(argv)
    for key in ("nets", "seeds", "epochs", "noise_threads", "cores"):
        if getattr(a, key) is not None and getattr(a, key) < 1:
            ap.error(f"--{key.replace('_', '-')} must be >= 1, got {getattr(a, key)}")
    return a


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def set_tf32(device, enabled: bool) -> None:
    """TF32 for cuDNN convolutions and CUDA matmuls (no effect on the CPU)."""
    import torch

    if device.type == "cuda":
        torch.backends.cudnn.allow_tf32 = enabled
        torch.backends.cuda.matmul.allow_tf32 = enabled


def describe(device) -> str:
    import torch

    if device.type != "cuda":
        return f"accelerator {device} (CPU against CPU: a smoke test of this script), torch {torch.__version__}"
    p = torch.cuda.get_device_properties(device)
    return (f"GPU {p.name} (compute capability {p.major}.{p.minor}, {p.total_memory / 2**30:.0f} GiB), "
            f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}; "
            f"PyTorch defaults: cudnn.allow_tf32={torch.backends.cudnn.allow_tf32}, "
            f"matmul.allow_tf32={torch.backends.cuda.matmul.allow_tf32}")


# ------------------------------------------------------------------ 1. the tiny pipeline


def tiny_pipeline(device, cores: int, timeout: int) -> dict:
    """Run the tests' TINY config on ``device`` with AMP to the default target; wall seconds and
    the device the training stage reports."""
    import pandas as pd

    sys.path.insert(0, str(REPO / "tests"))
    from conftest import TINY, deep_merge, write_yaml

    with tempfile.TemporaryDirectory(prefix="tinyevo-gpu-") as wd:
        work = Path(wd)
        cfg = write_yaml(work / "config.yaml",
                         deep_merge(TINY, {"compute": {"device": str(device), "amp": True}}))
        cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(work),
               "--configfile", str(cfg), "--cores", str(cores), "--quiet", "progress", "all"]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            return {"ok": False, "wall_s": wall, "detail": f"snakemake failed ({proc.returncode}):\n"
                    f"{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"}
        devices = sorted({str(d) for net in ("C", "NC")
                          for d in pd.read_parquet(work / f"results/train/{net}/metrics.parquet")["device"]})
        ok = all(d.split(":")[0] == device.type for d in devices)
        return {"ok": ok, "wall_s": wall, "detail": f"training ran on {', '.join(devices)}"}


# ------------------------------------------------------------------ 2. proxies


def proxy_batch(cfg, data_dir: Path):
    """The pipeline's proxy batch: ``proxies.batch_size`` training samples drawn with ``proxies.seed``."""
    from tinyevo.proxies import make_batch

    return make_batch(data_dir, int(cfg["proxies"]["batch_size"]), int(cfg["proxies"]["seed"]))


def score(space, archs, names, x, y, seed, device, threads: int, tf32: bool = False):
    """(scores DataFrame, seconds) of the pipeline's scorer; one warm-up net first (cuDNN and
    allocator initialisation), the clock read after a device synchronisation."""
    from tinyevo.proxies import ProxyScorer

    set_tf32(device, tf32)
    scorer = ProxyScorer(space, names, x, y, seed, device=device, cache_dir=None, threads=threads)
    scorer.score(archs[:1])
    sync(device)
    t0 = time.perf_counter()
    df = scorer.score(archs)
    sync(device)
    return df.set_index("arch"), time.perf_counter() - t0


def rel_diff(a, b):
    """max over nets of |a - b| / |b| (0 where both are equal, inf where only one is NaN)."""
    import numpy as np

    a, b = np.asarray(a, float), np.asarray(b, float)
    both_nan = np.isnan(a) & np.isnan(b)
    one_nan = np.isnan(a) ^ np.isnan(b)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(a == b, 0.0, np.abs(a - b) / np.abs(b))
    r = np.where(both_nan, 0.0, np.where(one_nan, np.inf, r))
    return float(np.max(r)) if len(r) else 0.0


def spearman(a, b) -> float:
    from scipy.stats import spearmanr

    import numpy as np

    a, b = np.asarray(a, float), np.asarray(b, float)
    keep = np.isfinite(a) & np.isfinite(b)
    if keep.sum() < 3 or np.ptp(a[keep]) == 0 or np.ptp(b[keep]) == 0:
        return float("nan")
    return float(spearmanr(a[keep], b[keep]).statistic)


def tolerance(name: str, noise: float) -> float:
    if name in EXACT:
        return 0.0
    if name in FLOAT64:
        return FLOAT64_TOL
    return max(FP32_TOL, NOISE_MARGIN * noise)


def proxy_check(cfg, data_dir: Path, accel, n_nets: int, noise_threads: int) -> tuple[list, list]:
    """(agreement rows, throughput rows)."""
    import random

    import torch

    from tinyevo.proxies import PROXIES
    from tinyevo.space import space_from_config

    space = space_from_config(cfg)
    archs = [arch for _, arch, _ in space.iter_arches()]
    archs = sorted(random.Random(int(cfg["seed"])).sample(archs, min(n_nets, len(archs))))
    x, y = proxy_batch(cfg, data_dir)
    seed = int(cfg["proxies"]["seed"])
    threads = int(cfg["scoring"]["threads"])
    names = sorted(PROXIES)
    cpu = torch.device("cpu")
    ref, _ = score(space, archs, names, x, y, seed, cpu, threads)
    other, _ = score(space, archs, names, x, y, seed, cpu, noise_threads if noise_threads != threads else threads + 1)
    strict, _ = score(space, archs, names, x, y, seed, accel, threads, tf32=False)
    default_tf32 = accel.type == "cuda" and torch.backends.cudnn.allow_tf32
    rows = []
    tf32_df = None
    if accel.type == "cuda":
        tf32_df, _ = score(space, archs, names, x, y, seed, accel, threads, tf32=True)
    for n in names:
        noise = rel_diff(other[n], ref[n])
        tol = tolerance(n, noise)
        d = rel_diff(strict[n], ref[n])
        rho = spearman(strict[n], ref[n])
        row = {"proxy": n, "cpu_noise": noise, "tolerance": tol, "rel_diff": d, "rho": rho,
               "ok": d <= tol and (d == 0 or not math.isfinite(rho) or rho >= MIN_SPEARMAN),
               "rho_tf32": float("nan"), "ok_tf32": True}
        if tf32_df is not None:
            rho = spearman(tf32_df[n], ref[n])
            row["rho_tf32"] = rho
            row["ok_tf32"] = n not in cfg["proxies"]["names"] or (math.isfinite(rho) and rho >= MIN_SPEARMAN)
        rows.append(row)
    set_tf32(accel, bool(default_tf32))

    configured = list(cfg["proxies"]["names"])
    speed = []
    for dev, th in ((cpu, threads), (accel, threads)):
        _, secs = score(space, archs, configured, x, y, seed, dev, th, tf32=bool(default_tf32) if dev.type == "cuda"
                        else False)
        speed.append({"device": str(dev), "proxies": "+".join(configured), "nets": len(archs), "threads": th,
                      "nets_per_s": len(archs) / secs})
    return rows, speed


# ------------------------------------------------------------------ 3. training


def median_feasible(cfg) -> str:
    from tinyevo.space import constraints_from_config, space_from_config

    space = space_from_config(cfg)
    cons = constraints_from_config(cfg)
    rows = []
    for _, arch, genes in space.iter_arches():
        cost = cons.measure(space.netspec(genes))
        if cons.check(cost)["feasible"]:
            rows.append((cost["macs"], arch))
    if not rows:
        raise SystemExit("no feasible net in the configured space: give --arch")
    return sorted(rows)[len(rows) // 2][1]


def train_one(cfg, data_dir: Path, arch: str, device: str, seed: int, epochs: int, threads: int) -> dict:
    """One training run of ``arch`` (the pipeline's train_net, the config's train settings with
    ``epochs`` and ``seed``; AMP when the config has it and the device is CUDA)."""
    import numpy as np
    import torch

    from tinyevo.data import load_split, load_stats
    from tinyevo.runtime import set_threads
    from tinyevo.space import space_from_config
    from tinyevo.train.classes import class_subset
    from tinyevo.train.stage import train_net

    dev = torch.device(device)
    set_threads(threads)
    space = space_from_config(cfg)
    train = tuple(np.asarray(a) for a in load_split(data_dir, "train"))
    test = tuple(np.asarray(a) for a in load_split(data_dir, "test"))
    subset = class_subset("C", cfg["search_space"]["num_classes"])
    amp = bool(cfg["compute"]["amp"]) and dev.type == "cuda"
    settings = {**{k: v for k, v in cfg["train"].items() if k != "threads"}, "epochs": epochs, "seed": seed}
    sync(dev)
    t0 = time.perf_counter()
    res = train_net(space.netspec(arch), train, test, load_stats(data_dir), subset, settings, device=dev, amp=amp,
                    progress=False)
    sync(dev)
    secs = time.perf_counter() - t0
    m = res.metrics.iloc[0]
    return {"device": str(dev), "seed": seed, "amp": amp, "threads": threads, "test_acc": float(m["final_test_acc"]),
            "seconds": secs, "images_per_s": epochs * int(m["n_train"]) / secs}


def train_runs(cfg, data_dir: Path, arch: str, device, seeds: int, epochs: int, threads: int) -> list[dict]:
    """``seeds`` runs (seeds train.seed, train.seed + 1, ...). On the CPU they run side by side in
    worker processes of ``threads`` torch threads each, as many as the cores hold; on CUDA one
    after the other in this process."""
    from concurrent.futures import ProcessPoolExecutor
    import multiprocessing as mp

    base = int(cfg["train"]["seed"] if cfg["train"].get("seed") is not None else cfg["seed"])
    jobs = [(cfg, data_dir, arch, str(device), base + i, epochs, threads) for i in range(seeds)]
    workers = min(seeds, max(1, (os.cpu_count() or 1) // threads))
    if device.type != "cpu" or workers == 1:
        return [train_one(*j) for j in jobs]
    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as ex:
        return list(ex.map(train_one, *zip(*jobs)))


# ------------------------------------------------------------------ main


def main(argv=None) -> int:
    a = parse_args(argv)
    import torch

    if a.accelerator.startswith("cuda") and not torch.cuda.is_available():
        if a.require_gpu:
            print(f"{SKIP_MESSAGE.replace('skipped', 'required')} (--require-gpu)", file=sys.stderr)
            return 1
        print(SKIP_MESSAGE)
        return 0
    from tinyevo.config import load_config
    from tinyevo.data import prepare
    from tinyevo.runtime import pick_device

    accel = pick_device(a.accelerator)
    cfg, _ = load_config([a.config])
    print(describe(accel))
    results = []  # (check, ok, detail)

    if not a.skip_pipeline:
        p = tiny_pipeline(accel, a.cores, a.timeout)
        results.append(("tiny pipeline (TINY config, AMP on)", p["ok"], f"{p['wall_s']:.0f} s wall at --cores "
                        f"{a.cores}; {p['detail']}"))

    with tempfile.TemporaryDirectory(prefix="tinyevo-gpu-data-") as wd:
        data_dir = Path(wd) / cfg["dataset"]["name"]
        prepare(cfg["dataset"], data_dir, threads=2)

        rows, speed = proxy_check(cfg, data_dir, accel, a.nets, a.noise_threads)
        print(f"\nproxy agreement, {a.nets} nets of {a.config} (relative difference to the CPU):\n")
        print("| proxy | CPU noise floor | tolerance | fp32 GPU vs CPU | Spearman | ok | Spearman, TF32 | ok |")
        print("|---|---:|---:|---:|---:|---|---:|---|")
        for r in rows:
            print(f"| {r['proxy']} | {r['cpu_noise']:.1e} | {r['tolerance']:.1e} | {r['rel_diff']:.1e} | "
                  f"{r['rho']:.4f} | {'yes' if r['ok'] else 'NO'} | {r['rho_tf32']:.4f} | "
                  f"{'yes' if r['ok_tf32'] else 'NO'} |")
        bad = [r["proxy"] for r in rows if not r["ok"]]
        bad_tf32 = [r["proxy"] for r in rows if not r["ok_tf32"]]
        results.append(("proxy scores within tolerance (TF32 off)", not bad, "outside: " + ", ".join(bad) if bad
                        else "all proxies"))
        if accel.type == "cuda":
            results.append((f"proxy ranking with TF32 (Spearman >= {MIN_SPEARMAN}, configured set)",
                            not bad_tf32, ", ".join(bad_tf32) or "all"))

        arch = a.arch or median_feasible(cfg)
        threads = a.cpu_threads or int(cfg["train"]["threads"])
        epochs = a.epochs or int(cfg["train"]["epochs"])
        cpu_runs = train_runs(cfg, data_dir, arch, torch.device("cpu"), a.seeds, epochs, threads)
        acc_runs = train_runs(cfg, data_dir, arch, accel, a.seeds, epochs, threads)

    print("\n| throughput | device | setting | per second |\n|---|---|---|---:|")
    for s in speed:
        print(f"| proxies {s['proxies']} | {s['device']} | {s['nets']} nets, {s['threads']} thread(s) | "
              f"{s['nets_per_s']:.1f} nets/s |")
    for runs in (cpu_runs, acc_runs):
        r0 = runs[0]
        ips = sum(r["images_per_s"] for r in runs) / len(runs)
        print(f"| training | {r0['device']} | {epochs} epochs, amp {r0['amp']}, {r0['threads']} CPU thread(s) | "
              f"{ips:,.0f} images/s |")
    cpu_acc = sum(r["test_acc"] for r in cpu_runs) / len(cpu_runs)
    acc_acc = sum(r["test_acc"] for r in acc_runs) / len(acc_runs)
    print(f"\ntraining {arch}: test accuracy per seed CPU {[round(r['test_acc'], 4) for r in cpu_runs]}, "
          f"{accel} {[round(r['test_acc'], 4) for r in acc_runs]}")
    results.append((f"training accuracy within a point (mean of {a.seeds} seeds)", acc_acc >= cpu_acc - ACC_POINT,
                    f"CPU {100 * cpu_acc:.2f} %, {accel} {100 * acc_acc:.2f} %"))

    print("\n| check | result | detail |\n|---|---|---|")
    for name, ok, detail in results:
        print(f"| {name} | {'pass' if ok else 'FAIL'} | {detail} |")
    return 0 if all(ok for _, ok, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
