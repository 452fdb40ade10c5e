"""Training throughput (images/s) of the default C net, and the wall time of the whole default
pipeline up to the training stage.

    python bench/train.py                       # CPU, images/s of training and evaluation
    python bench/train.py --threads 2 --images 1280 --device auto
    python bench/train.py --pipeline --cores 2  # + wall time of
        snakemake --cores 2 results/train/C/metrics.parquet results/validation/correlations.parquet
        in a fresh temporary directory (everything from the data stage on; takes minutes)

The net is the one the train stage trains, from results/evolution/choice.parquet when that file
exists (``--results``), else the `phase == after` row of results/evolution/selected.parquet, else the feasible candidate of the configured space with the most MACs
(cost model + ``constraints:``), the usual shape of an evolution winner. Data are random uint8
images of the configured resolution (throughput does not depend on the pixel values).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the rule scripts: before torch loads OpenMP
sys.path.insert(0, str(REPO / "workflow"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from tinyevo.config import load_config  # noqa: E402
from tinyevo.runtime import pick_device, set_threads  # noqa: E402
from tinyevo.space import constraints_from_config, cost_of, space_from_config  # noqa: E402
from tinyevo.space.torch_model import build_torch  # noqa: E402
from tinyevo.train.loop import evaluate, fit  # noqa: E402


def pick_arch(cfg, results: Path, net: str) -> tuple[str, str]:
    space = space_from_config(cfg)
    choice = results / "evolution" / "choice.parquet"
    if choice.is_file():  # the net the train stage trains (final-round winner or zero-cost pick)
        from tinyevo.train.stage import chosen_arch

        return chosen_arch(choice, net), f"{choice} ({net})"
    sel = results / "evolution" / "selected.parquet"
    if sel.is_file():
        from tinyevo.train.stage import selected_arch

        return selected_arch(sel, net), f"{sel} ({net}, after)"
    best, best_macs = None, -1
    cons = constraints_from_config(cfg)
    for _, arch, genes in space.iter_arches():
        cost = cons.measure(space.netspec(genes))
        if cons.check(cost)["feasible"] and cost["macs"] > best_macs:
            best, best_macs = arch, cost["macs"]
    if best is None:
        raise SystemExit("no feasible net in the configured space")
    return best, "largest feasible candidate (no selected.parquet)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(REPO / "config" / "config.yaml"))
    ap.add_argument("--results", default="results", help="results folder with evolution/selected.parquet")
    ap.add_argument("--net", default="C", choices=["C", "NC"])
    ap.add_argument("--device", default="cpu", help="cpu, cuda, auto, ...")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--images", type=int, default=640, help="training images per timed epoch")
    ap.add_argument("--amp", action="store_true", help="float16 autocast (CUDA only)")
    ap.add_argument("--pipeline", action="store_true", help="also time the default pipeline up to training")
    ap.add_argument("--layouts", action="store_true",
                    help="also time the training with NCHW (contiguous) batches and weights instead of channels-last")
    ap.add_argument("--cores", type=int, default=2, help="--cores of the timed pipeline run")
    args = ap.parse_args()

    cfg, _ = load_config([args.config])
    set_threads(args.threads)
    device = pick_device(args.device)
    space = space_from_config(cfg)
    arch, source = pick_arch(cfg, Path(args.results), args.net)
    spec = space.netspec(arch)
    cost = cost_of(spec)
    res, ch = space.resolution, space.in_channels
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (args.images, res, res, ch), dtype=np.uint8)
    y = rng.integers(0, space.num_classes, args.images).astype(np.int64)
    stats = (np.full(ch, 0.5, np.float32), np.full(ch, 0.25, np.float32))
    settings = {k: v for k, v in cfg["train"].items() if k != "threads"}
    settings["epochs"] = 1

    def time_train() -> tuple[float, object]:
        torch.manual_seed(0)
        model = build_torch(spec)
        warm = min(len(x), 2 * settings["batch_size"])
        fit(model, (x[:warm], y[:warm]), None, stats, settings, device=device, progress=False, amp=args.amp)
        t0 = time.perf_counter()
        fit(model, (x, y), None, stats, settings, device=device, progress=False, amp=args.amp)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0, model

    t_train, model = time_train()
    t_nchw = None
    if args.layouts:
        import tinyevo.train.loop as loop

        loop.MEMORY_FORMAT = torch.contiguous_format
        t_nchw, _ = time_train()
        loop.MEMORY_FORMAT = torch.channels_last
    t0 = time.perf_counter()
    evaluate(model, x, y, stats, device, amp=args.amp)
    t_eval = time.perf_counter() - t0

    print(f"net {args.net}: {arch} ({source})")
    print(f"  {cost.params:,} params, {cost.macs:,} MACs/image, input {res}x{res}x{ch}, "
          f"batch {settings['batch_size']}, device {device}, threads {args.threads}, torch {torch.__version__}")
    print("| phase | images | seconds | images/s |")
    print("|---|---|---|---|")
    print(f"| train (fwd+bwd+SGD, channels-last) | {len(x)} | {t_train:.2f} | {len(x) / t_train:,.0f} |")
    if t_nchw is not None:
        print(f"| train (fwd+bwd+SGD, NCHW) | {len(x)} | {t_nchw:.2f} | {len(x) / t_nchw:,.0f} |")
    print(f"| evaluate | {len(x)} | {t_eval:.2f} | {len(x) / t_eval:,.0f} |")
    n_train = None
    data_train = Path(args.results) / "data" / cfg["dataset"]["name"] / "train_y.npy"
    if data_train.is_file():
        n_train = len(np.load(data_train))
        per_epoch = n_train / (len(x) / t_train)
        print(f"  -> {n_train} training images: ~{per_epoch:.1f} s per epoch, "
              f"~{per_epoch * cfg['train']['epochs'] / 60:.1f} min for {cfg['train']['epochs']} epochs (+ evaluation)")

    if args.pipeline:
        targets = ["results/train/C/metrics.parquet", "results/validation/correlations.parquet"]
        with tempfile.TemporaryDirectory(prefix="tinyevo-bench-") as wd:
            cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", wd,
                   "--configfile", str(Path(args.config).resolve()), "--cores", str(args.cores), "--quiet",
                   *targets]
            print("timing:", " ".join(cmd))
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True)
            wall = time.perf_counter() - t0
            if proc.returncode != 0:
                print(proc.stderr[-4000:])
                raise SystemExit(f"pipeline failed after {wall:.0f} s")
            print(f"default pipeline up to training + validation, --cores {args.cores}: {wall / 60:.1f} min wall")


if __name__ == "__main__":
    main()
