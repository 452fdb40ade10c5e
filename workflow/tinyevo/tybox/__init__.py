"""TyBox stage: memory model, self-contained C++ generation (int8 feature extractor + float
classifier learning on the device), numpy reference of the on-device learning, harness driver.

Modules: ``model`` (read an int8 .tflite), ``memory`` (the TyBox memory model), ``codegen``
(write the C++ project), ``reference`` (numpy on-device learning), ``harness`` (build and drive
the generated host harness), ``testnets`` (small synthetic nets for tests and the bench).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def build_tybox(tflite_path, classifier_path, out_dir, memory_path, tybox: dict, device: dict,
                seed: int = 0, threads: int = 1, log=None, target_path=None):
    """The tybox stage: generate the C++ project into ``out_dir``, build it, run ``make check``
    (sanitizers + bit-exact FE check against LiteRT), measure its static RAM and flash and write
    ``memory_path`` (one row per memory term, predicted and measured). With ``tybox.target``
    ``cortex-m4f`` it also cross-builds for the target (:mod:`tinyevo.tybox.target`), runs the
    bit-exact check and a learning stream against the numpy reference under QEMU, adds the target
    build's figures (``target_measured``, ``target_rel_error``) and writes ``target_path`` (one
    row: the target, its flash and RAM, the emulated instruction counts per inference and per
    training step; for ``host`` the counts are NaN). The folder appears only when everything
    passed (built in a temporary sibling folder, then renamed)."""
    import numpy as np

    from ..io import write_parquet
    from . import codegen, harness
    from .memory import memory_table
    from ..space.instructions import graph_macs, load_models
    from .model import load_graph

    out = Path(out_dir)
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        terms = codegen.generate(
            tflite_path, classifier_path, tmp, M=int(device["ram_bytes"]),
            accounting=tybox.get("accounting", "total"), lr=float(tybox["lr"]), loss=tybox["loss"],
            n_test=int(tybox.get("test_vectors", 8)), seed=int(seed),
            min_buffer_samples=int(device.get("min_buffer_samples", 1)), name=out.name)
        if log:
            log.info("generated %s: F=%d C=%d N_B=%d arena=%d predicted RAM=%d", out, terms["feature_size"],
                     terms["num_classes"], terms["n_samples"], terms["arena"], terms["ram_bytes"])
        g = load_graph(tflite_path)
        harness.build(tmp, tybox["cxx"], threads)
        check_log = harness.make_check(tmp, tybox["cxx"], threads)
        if log:
            log.info("make check:\n%s", check_log.strip())
        measured = harness.measure_memory(tmp)
        if measured["ram_bytes"] > terms["M"]:
            raise RuntimeError(f"static RAM {measured['ram_bytes']} B exceeds device.ram_bytes = {terms['M']}")
        if device.get("flash_bytes") and measured["flash_bytes"] > int(device["flash_bytes"]):
            raise RuntimeError(f"flash {measured['flash_bytes']} B exceeds device.flash_bytes = {device['flash_bytes']}")
        target_measured = counts = stream_check = None
        if tybox.get("target", "host") != "host":
            from . import target as tgt

            elf = tgt.build(tmp, device.get("flash_bytes"), int(device["ram_bytes"]))
            r = tgt.qemu(elf, ["check", "test_input.bin", "test_expected.bin"], tmp)
            if r.returncode != 0:
                raise RuntimeError(f"the bit-exact check failed on the emulated Cortex-M4 ({r.returncode}): "
                                   f"{(r.stderr or r.stdout).strip()[-2000:]}")
            stream_check = verify_learning(tmp, tgt.runner(elf), float(tybox["lr"]), tybox["loss"], seed=int(seed))
            target_measured = tgt.target_memory(tmp)
            if target_measured["ram_bytes"] > terms["M"]:
                raise tgt.DoesNotFit(f"static RAM of the library on {tybox['target']} {target_measured['ram_bytes']:,} B "
                                     f"exceeds device.ram_bytes = {terms['M']:,}")
            images = np.fromfile(tmp / "test_input.bin", np.int8).reshape(-1, *g.input.shape[1:])
            counts = tgt.instruction_counts(elf, images, tmp)
            if log:
                log.info("%s: built for %s, linked into FLASH %s B and RAM %d B; under QEMU (%s) the bit-exact "
                         "check passed and a %d-sample learning stream equals the numpy reference (weights within "
                         "%.1e); %.0f instructions per inference, %.0f per training step (%d samples)", elf.name,
                         tybox["target"], device.get("flash_bytes") or tgt.CORTEX_M4F.flash_size,
                         int(device["ram_bytes"]), tgt.CORTEX_M4F.machine, stream_check["samples"],
                         stream_check["max_weight_diff"], counts["extract"], counts["train_step"],
                         counts["buffer_samples"])
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    table = memory_table(terms, {k: v for k, v in measured.items()})
    if target_measured is not None:  # the same terms from the Cortex-M4F build of the library
        table["target_measured"] = [float(target_measured[t]) if t in target_measured else float("nan")
                                    for t in table["term"]]
        table["target_rel_error"] = (table["target_measured"] - table["predicted"]) / \
            table["predicted"].where(table["predicted"] != 0)
    write_parquet(table, memory_path)
    if target_path is not None:
        model = load_models().get(tybox.get("target", "host"))
        estimate = model.predict_graph(g) if model is not None else None
        write_parquet(target_table(tybox.get("target", "host"), measured, target_measured, counts, stream_check,
                                   graph_macs(g), terms, estimate), target_path)
    if log:
        log.info("memory (bytes):\n%s", table.to_string(index=False))
    return terms, measured


def verify_learning(src_dir, runner, lr: float, loss: str, seed: int = 0, samples: int = 24, n_eval: int = 8) -> dict:
    """A short on-device learning stream run by ``runner`` (e.g. the target build under QEMU) must
    equal the numpy reference (:mod:`tinyevo.tybox.reference`): the same prequential and
    evaluation predictions, weights within 1e-5. The features are the net's own: those of the
    project's test vectors (``test_expected.bin``, the int8 features of ``test_input.bin``), drawn
    with seeded random labels (features of arbitrary int8 values reach logits no extractor
    produces, where float32 rounding in another summation order grows past any tolerance); the
    buffer at min(N_B, 8). Returns {"samples", "max_weight_diff"}; raises RuntimeError naming
    what differs."""
    import numpy as np

    from . import harness, reference

    meta = harness.info(src_dir)
    F, C = meta["feature_size"], meta["num_classes"]
    feats = np.fromfile(Path(src_dir) / "test_expected.bin", np.int8).reshape(-1, F)
    rng = np.random.default_rng([int(seed), 20])
    sx, ex = feats[rng.integers(0, len(feats), samples)], feats[rng.integers(0, len(feats), n_eval)]
    sy, ey = rng.integers(0, C, samples), rng.integers(0, C, n_eval)
    cap = min(int(meta["buffer_samples"]), 8)
    run = harness.stream(src_dir, sx, sy, ex, ey, capacity=cap, lr=lr, loss=loss, features=True, runner=runner)
    w0, b0 = harness.initial_weights(src_dir)
    learner = reference.OnDeviceLearner(w0, b0, meta["feature_scale"], meta["feature_zero_point"], cap, lr, loss)
    ref = reference.run_stream(learner, sx, sy, ex, ey)
    if not np.array_equal(run["curve"]["pred"].to_numpy(), ref["curve"]["pred"].to_numpy()):
        raise RuntimeError("on-device learning on the target: the stream predictions differ from the numpy reference")
    if not np.array_equal(run["eval_pred"], ref["eval_pred"]):
        raise RuntimeError("on-device learning on the target: the evaluation predictions differ from the numpy reference")
    diff = max(float(np.abs(run["weights"][0] - learner.W).max()), float(np.abs(run["weights"][1] - learner.b).max()))
    if not diff <= 1e-5:
        raise RuntimeError(f"on-device learning on the target: weights differ from the numpy reference by {diff:.3g} "
                           "(> 1e-5)")
    return {"samples": samples, "max_weight_diff": diff}


def target_table(target: str, host: dict, measured: dict | None, counts: dict | None, stream_check: dict | None,
                 macs: dict, terms: dict, estimate: float | None = None):
    """One row: the build target, the library's flash and static RAM (the target's own build when
    there is one, else the host's), the memory model's RAM, the emulated instruction counts (NaN
    on the host), instructions per MAC of the feature extractor, and the search's per-layer
    estimate of the instructions per inference (:mod:`tinyevo.space.instructions`, NaN without a
    fitted model of the target) with its relative error against the count."""
    import pandas as pd

    nan = float("nan")
    m = measured or host
    c = counts or {}
    ext = float(c.get("extract", nan))
    row = {"target": target, "flash_bytes": int(m["flash_bytes"]), "ram_bytes": int(m["ram_bytes"]),
           "ram_predicted": int(terms["ram_bytes"]), "ram_budget": int(terms["M"]),
           "fe_macs": int(macs["total"]), "instructions_inference": ext,
           "instructions_per_mac": ext / macs["total"] if macs["total"] else nan,
           "instructions_predict": float(c.get("predict", nan)),
           "instructions_sgd_sample": float(c.get("sgd_sample", nan)),
           "instructions_train_step": float(c.get("train_step", nan)),
           "buffer_samples": int(terms["n_samples"]),
           "stream_check_samples": int(stream_check["samples"]) if stream_check else 0,
           "stream_max_weight_diff": float(stream_check["max_weight_diff"]) if stream_check else nan,
           "instructions_estimated": float(estimate) if estimate is not None else nan}
    row["estimate_rel_error"] = row["instructions_estimated"] / ext - 1.0 if ext == ext and ext > 0 else nan
    return pd.DataFrame([row])
