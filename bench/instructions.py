"""Fit the instruction-count model of the search (tinyevo.space.instructions) on measured nets.

For a seeded sample of nets of the configured search space, spread evenly over log MACs (grid
nets and random nets of the alphabets, up to --max-macs), each net with seeded random weights is
converted to a full-integer int8 .tflite, turned into TyBox C++, cross-built for the target and
run under QEMU with -icount (tinyevo.tybox.target.instruction_counts): instructions per feature
extraction. The per-layer model is fitted on those counts (non-negative least squares on relative
errors) and its fit error reported in-sample and leave-one-out.

    .venv/bin/python bench/instructions.py [--nets 32] [--jobs 2] [--write]

--write stores the coefficients and the fit in workflow/tinyevo/space/instruction_models.json,
which constraints.max_instructions reads. Needs the Arm toolchain and QEMU (make toolchain).
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow"))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from tinyevo.config import load_config  # noqa: E402
from tinyevo.io import write_parquet  # noqa: E402
from tinyevo.space import instructions as I  # noqa: E402
from tinyevo.space.cost import cost_of  # noqa: E402
from tinyevo.space.memory import spec_device_bytes  # noqa: E402
from tinyevo.space.spec import GENES, Genes, space_from_config  # noqa: E402

BOARD_RAM = 4 << 20  # mps2-an386: 4 MiB of SRAM at 0x20000000
BOARD_FLASH = 4 << 20


def sample_nets(space, n: int, max_macs: int, seed: int) -> list[str]:
    """``n`` distinct nets of the space, one per equal-width bin of log MACs (grid nets and
    ``4 n`` random draws from the alphabets as candidates), that fit the board's flash."""
    rng = np.random.default_rng(seed)
    cands = {space.encode(g) for _, g in space.initial_population()}
    for _ in range(4 * n):
        cands.add(space.encode(Genes(*(tuple(int(rng.choice(space.allowed(g))) for _ in range(space.n_stages))
                                       for g in GENES))))
    rows = []
    for arch in sorted(cands):
        c = cost_of(space.netspec(arch))
        if c.macs <= max_macs and c.flash <= BOARD_FLASH - (256 << 10):
            rows.append((arch, np.log(c.macs)))
    df = pd.DataFrame(rows, columns=["arch", "log_macs"])
    edges = np.linspace(df.log_macs.min(), df.log_macs.max() + 1e-9, n + 1)
    df["bin"] = np.digitize(df.log_macs, edges) - 1
    picks = [g.arch.iloc[int(rng.integers(len(g)))] for _, g in df.groupby("bin")]
    rest = df[~df.arch.isin(picks)]
    extra = rest.arch.iloc[rng.permutation(len(rest))[: max(0, n - len(picks))]].tolist()
    return sorted(picks + extra)[:n]


def measure(job) -> dict:
    """Instructions per feature extraction of one net on the emulated target."""
    arch, cfg, seed = job
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.getLogger("absl").setLevel(logging.ERROR)
    import torch

    from tinyevo.export.int8 import convert_int8
    from tinyevo.export.keras_model import split_keras, torch_to_keras
    from tinyevo.space.torch_model import build_torch
    from tinyevo.tybox import codegen, target
    from tinyevo.tybox.model import load_graph
    from tinyevo.tybox.testnets import random_classifier

    space = space_from_config(cfg)
    spec = space.netspec(arch)
    torch.manual_seed(seed)
    tm = build_torch(spec).eval()
    fe, _ = split_keras(torch_to_keras(tm))
    rng = np.random.default_rng(seed)
    rep = rng.normal(0, 1, (16, spec.resolution, spec.resolution, spec.in_channels)).astype(np.float32)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        tfl = tmp / "fe_int8.tflite"
        tfl.write_bytes(convert_int8(fe, rep))
        g = load_graph(tfl)
        clf = random_classifier(g.feature_size, spec.num_classes, seed)
        M = int(spec_device_bytes(spec, 4) * 1.05) + 4096
        if M + target.HARNESS_RAM > BOARD_RAM:
            return {"arch": arch, "error": f"needs {M:,} B of RAM, more than the board's"}
        src = tmp / "src"
        codegen.generate(tfl, clf, src, M=M, min_buffer_samples=1, seed=seed)
        elf = target.build(src, None, M)
        images = rng.integers(-128, 128, (2, spec.resolution, spec.resolution, spec.in_channels), dtype=np.int8)
        counts = target.instruction_counts(elf, images, tmp)
        spec_f = I.spec_features(spec)
        graph_f = I.graph_features(g)
    return {"arch": arch, "macs": cost_of(spec).macs, "instructions": counts["extract"],
            "extract_spread": counts["extract_spread"], "seconds": time.perf_counter() - t0,
            "features_equal": spec_f == graph_f, **{f"f_{k}": v for k, v in graph_f.items()}}


def macs_only_loo(macs, y) -> tuple[float, float]:
    """Leave-one-out relative errors of the baseline the per-layer model replaces: instructions
    proportional to MACs plus a constant (least squares on relative errors)."""
    X = np.column_stack([np.asarray(macs, float), np.ones(len(y))]) / y[:, None]
    err = []
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        c, *_ = np.linalg.lstsq(X[keep], np.ones(keep.sum()), rcond=None)
        err.append(abs(X[i] @ c - 1.0))
    return float(np.mean(err)), float(np.max(err))


def _versions() -> dict:
    def first(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True).stdout.splitlines()[0].strip()
        except (OSError, IndexError):
            return "?"
    return {"toolchain": first(["arm-none-eabi-gcc", "--version"]), "qemu": first(["qemu-system-arm", "--version"])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(REPO / "config" / "config.yaml"))
    ap.add_argument("--nets", type=int, default=32)
    ap.add_argument("--max-macs", type=int, default=None,
                    help="largest net sampled (default: twice constraints.max_macs, the search's ceiling)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", default=str(REPO / "results" / "bench" / "instructions.parquet"))
    ap.add_argument("--write", action="store_true", help="store the fit in " + str(I.MODELS_FILE.relative_to(REPO)))
    a = ap.parse_args()
    from tinyevo.tybox import target

    if target.missing_tools():
        sys.exit(f"needs {target.missing_tools()}: apt-get install {' '.join(target.PACKAGES)} (make toolchain)")
    cfg, _ = load_config([a.config])
    space = space_from_config(cfg)
    max_macs = a.max_macs or 2 * int(cfg["constraints"].get("max_macs") or 8_000_000)
    nets = sample_nets(space, a.nets, max_macs, a.seed)
    t0 = time.perf_counter()
    jobs = [(arch, cfg, a.seed + i) for i, arch in enumerate(nets)]
    with ProcessPoolExecutor(max_workers=a.jobs) as ex:
        rows = list(ex.map(measure, jobs))
    bad = [r for r in rows if "error" in r]
    for r in bad:
        print(f"skipped {r['arch']}: {r['error']}")
    df = pd.DataFrame([r for r in rows if "error" not in r])
    if not df.features_equal.all():
        sys.exit(f"spec and graph features differ for {df.arch[~df.features_equal].tolist()}")
    feats = [{k: r[f"f_{k}"] for k in I.FEATURES} for _, r in df.iterrows()]
    meta = {**_versions(), "flags": " ".join(target.CORTEX_M4F.flags), "board": target.CORTEX_M4F.machine,
            "resolution": space.resolution, "in_channels": space.in_channels, "seed": a.seed,
            "macs_range": [int(df.macs.min()), int(df.macs.max())],
            "command": "python bench/instructions.py " + " ".join(shlex.quote(x) for x in sys.argv[1:])}
    y = df.instructions.to_numpy(float)
    meta["macs_only_loo_mean_abs_rel_error"], meta["macs_only_loo_max_abs_rel_error"] = macs_only_loo(df.macs, y)
    model = I.fit(feats, y, "cortex-m4f", meta)
    df["predicted"] = [model.predict_features(f) for f in feats]
    df["rel_error"] = df.predicted / df.instructions - 1
    df["instructions_per_mac"] = df.instructions / df.macs
    write_parquet(df, a.out)
    pd.set_option("display.width", 200)
    print(df[["arch", "macs", "instructions", "instructions_per_mac", "predicted", "rel_error", "seconds"]]
          .to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print("coefficients (instructions per unit):")
    for k, v in model.coef.items():
        print(f"  {k:>14} {v:12.4f}")
    f = model.fit
    print(f"{f['n']} nets, {int(df.macs.min()):,}-{int(df.macs.max()):,} MACs: relative error mean "
          f"{100 * f['mean_abs_rel_error']:.2f} % (worst {100 * f['max_abs_rel_error']:.2f} %), leave-one-out mean "
          f"{100 * f['loo_mean_abs_rel_error']:.2f} % (worst {100 * f['loo_max_abs_rel_error']:.2f} %); "
          f"{time.perf_counter() - t0:.0f} s with {a.jobs} jobs")
    print(f"baseline, instructions ~ a MACs + b: leave-one-out mean {100 * f['macs_only_loo_mean_abs_rel_error']:.2f} % "
          f"(worst {100 * f['macs_only_loo_max_abs_rel_error']:.2f} %)")
    if a.write:
        models = I.load_models()
        models["cortex-m4f"] = model
        I.save_models(models)
        print(f"wrote {I.MODELS_FILE.relative_to(REPO)}")


if __name__ == "__main__":
    main()
