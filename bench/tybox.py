"""Bench the generated TyBox C++ on the host: FE latency per image (-O2) vs the LiteRT
interpreter on the same int8 model, and the on-device training time per buffer pass.

    .venv/bin/python bench/tybox.py [--tflite results/compress/C/fe_int8.tflite] [--images 200]

Without --tflite it converts a small synthetic residual net (tinyevo.tybox.testnets).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow"))

import numpy as np  # noqa: E402

from tinyevo.tybox import codegen, harness, testnets  # noqa: E402
from tinyevo.tybox.model import load_graph  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tflite", default=None)
    ap.add_argument("--resolution", type=int, default=32)
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--stream", type=int, default=200)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.tflite:
            tfl = Path(args.tflite)
        else:
            fe = testnets.build_fe("residual", args.resolution, 1, seed=0)
            tfl = tmp / "fe_int8.tflite"
            tfl.write_bytes(testnets.to_int8_tflite(fe, testnets.random_images(32, args.resolution, 1)))
        g = load_graph(tfl)
        cls = testnets.random_classifier(g.feature_size, 10)
        src = tmp / "src"
        terms = codegen.generate(tfl, cls, src, M=10**7, accounting="ram", n_test=2)
        harness.build(src, "g++", 2)
        rng = np.random.default_rng(0)
        x = rng.integers(-128, 128, (args.images,) + g.input.shape[1:], dtype=np.int64).astype(np.int8)
        harness.extract(src, x[:2])  # warm up
        big = np.concatenate([x] * 10)
        t = time.perf_counter()
        harness.extract(src, big)
        t_big = time.perf_counter() - t
        t = time.perf_counter()
        harness.extract(src, x[:1])
        t_one = time.perf_counter() - t  # process start, info call, file I/O
        cxx_net = max(0.0, (t_big - t_one) / (len(big) - 1))
        rows = {"C++ -O2 (per image, excl. process start)": cxx_net}
        for res in ("BUILTIN_REF", "BUILTIN_WITHOUT_DEFAULT_DELEGATES", "AUTO"):
            it = codegen.litert_interpreter(tfl, res)
            i, o = it.get_input_details()[0]["index"], it.get_output_details()[0]["index"]
            for img in x[:5]:
                it.set_tensor(i, img[None]); it.invoke()
            t = time.perf_counter()
            for img in x:
                it.set_tensor(i, img[None]); it.invoke(); it.get_tensor(o)
            rows[f"LiteRT {res}"] = (time.perf_counter() - t) / len(x)
        print(f"model: {tfl.name}, input {g.input.shape}, F={g.feature_size}, ops={len(g.ops)}")
        for k, v in rows.items():
            print(f"FE latency  {k:45s} {v * 1e6:9.1f} us/image")
        F, C = g.feature_size, 10
        feats = rng.integers(-128, 128, (args.stream, F), dtype=np.int64).astype(np.int8)
        ys = rng.integers(0, C, args.stream)
        ev = feats[:1]
        ev = feats[:1]
        times = {}
        for cap in (1, args.stream):
            best = float("inf")
            for _ in range(3):
                t = time.perf_counter()
                harness.stream(src, feats, ys, ev, ys[:1], capacity=cap, features=True)
                best = min(best, time.perf_counter() - t)
            times[cap] = best
        extra_steps = sum(min(i + 1, args.stream) for i in range(args.stream)) - args.stream
        per_step = (times[args.stream] - times[1]) / extra_steps
        print(f"training    one SGD step (dequantise + forward + update, F={F}, C={C}): {per_step * 1e6:.2f} us")
        print(f"training    one buffer pass over N samples ~ N x {per_step * 1e6:.2f} us "
              f"(N={args.stream}: {per_step * args.stream * 1e3:.3f} ms)")
        print(f"memory: predicted RAM {terms['ram_bytes']} B, arena {terms['arena']} B, FE flash {terms['fe_flash']} B")


if __name__ == "__main__":
    main()
