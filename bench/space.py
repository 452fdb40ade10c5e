"""Cost-model throughput (nets/s) for the 512-grid at 224x224x3 (1000 classes) and at the
default config's resolution, analytic model vs fvcore. Run: python bench/space.py"""

import dataclasses
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow"))

import torch  # noqa: E402

from tinyevo.config import load_config  # noqa: E402
from tinyevo.space import cost_of, space_from_config  # noqa: E402
from tinyevo.space.torch_model import build_torch  # noqa: E402


def bench(space, label, fvcore_nets=16):
    from fvcore.nn import FlopCountAnalysis

    pop = space.initial_population()
    t0 = time.perf_counter()
    for _, g in pop:
        cost_of(space.netspec(g))
    analytic = len(pop) / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for _, g in pop[:fvcore_nets]:
        m = build_torch(space.netspec(g)).eval()
        fa = FlopCountAnalysis(m, torch.zeros(1, space.in_channels, space.resolution, space.resolution))
        fa.unsupported_ops_warnings(False)
        fa.uncalled_modules_warnings(False)
        fa.total()
    fv = fvcore_nets / (time.perf_counter() - t0)
    print(f"| {label} | {len(pop)} | {analytic:,.0f} | {fv:,.2f} | {analytic / fv:,.0f}x |")


def main():
    cfg, _ = load_config([REPO / "config" / "config.yaml"])
    space = space_from_config(cfg)
    torch.set_num_threads(1)
    print("| input | nets | analytic nets/s | fvcore (build + trace) nets/s | speed-up |")
    print("|---|---|---|---|---|")
    bench(space, f"{space.resolution}x{space.resolution}x{space.in_channels} (default)")
    bench(dataclasses.replace(space, resolution=224, in_channels=3, num_classes=1000), "224x224x3, 1000 classes")


if __name__ == "__main__":
    main()
