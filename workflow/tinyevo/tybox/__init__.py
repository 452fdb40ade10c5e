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
                seed: int = 0, threads: int = 1, log=None):
    """The tybox stage: generate the C++ project into ``out_dir``, build it, run ``make check``
    (sanitizers + bit-exact FE check against LiteRT), measure its static RAM and flash and write
    ``memory_path`` (one row per memory term, predicted and measured). With ``tybox.target``
    ``cortex-m4f`` it also cross-builds for the target (:mod:`tinyevo.tybox.target`), runs the
    bit-exact check under QEMU and adds the target build's figures (``target_measured``,
    ``target_rel_error``). The folder appears only when everything passed (built in a temporary
    sibling folder, then renamed)."""
    from ..io import write_parquet
    from . import codegen, harness
    from .memory import memory_table

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
        harness.build(tmp, tybox["cxx"], threads)
        check_log = harness.make_check(tmp, tybox["cxx"], threads)
        if log:
            log.info("make check:\n%s", check_log.strip())
        measured = harness.measure_memory(tmp)
        if measured["ram_bytes"] > terms["M"]:
            raise RuntimeError(f"static RAM {measured['ram_bytes']} B exceeds device.ram_bytes = {terms['M']}")
        if device.get("flash_bytes") and measured["flash_bytes"] > int(device["flash_bytes"]):
            raise RuntimeError(f"flash {measured['flash_bytes']} B exceeds device.flash_bytes = {device['flash_bytes']}")
        target_measured = None
        if tybox.get("target", "host") != "host":
            from . import target as tgt

            elf = tgt.build(tmp, device.get("flash_bytes"), int(device["ram_bytes"]))
            r = tgt.qemu(elf, ["check", "test_input.bin", "test_expected.bin"], tmp)
            if r.returncode != 0:
                raise RuntimeError(f"the bit-exact check failed on the emulated Cortex-M4 ({r.returncode}): "
                                   f"{(r.stderr or r.stdout).strip()[-2000:]}")
            target_measured = tgt.target_memory(tmp)
            if target_measured["ram_bytes"] > terms["M"]:
                raise tgt.DoesNotFit(f"static RAM of the library on {tybox['target']} {target_measured['ram_bytes']:,} B "
                                     f"exceeds device.ram_bytes = {terms['M']:,}")
            if log:
                log.info("%s: built for %s, linked into FLASH %s B and RAM %d B, bit-exact check passed under "
                         "QEMU (%s)", elf.name, tybox["target"], device.get("flash_bytes") or tgt.CORTEX_M4F.flash_size,
                         int(device["ram_bytes"]), tgt.CORTEX_M4F.machine)
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
    if log:
        log.info("memory (bytes):\n%s", table.to_string(index=False))
    return terms, measured
