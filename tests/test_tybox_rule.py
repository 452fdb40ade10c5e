"""The tybox rule end to end on a synthetic compress output (slow: compiles and runs make check)."""

from __future__ import annotations

import os
import shutil

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++")
def test_tybox_rule_builds_checks_and_measures(tmp_path, make_config, snakemake_run):
    """With the Arm toolchain at hand the rule also builds for tybox.target cortex-m4f, the
    default (the host build is checked either way)."""
    import keras

    from test_tybox_target import _ensure_toolchain
    from tinyevo.io import read_parquet
    from tinyevo.tybox import testnets
    from tinyevo.tybox.model import load_graph

    target = "host" if _ensure_toolchain() else "cortex-m4f"
    cfg, path = make_config({"device": {"ram_bytes": 40000, "min_buffer_samples": 4},
                             "tybox": {"test_vectors": 3, "target": target}})
    comp = tmp_path / "results" / "compress" / "C"
    comp.mkdir(parents=True)
    fe = testnets.build_fe("plain", 12, 1, seed=0)
    (comp / "fe_int8.tflite").write_bytes(testnets.to_int8_tflite(fe, testnets.random_images(8, 12, 1)))
    F = load_graph(comp / "fe_int8.tflite").feature_size
    cls = keras.Sequential([keras.Input((F,)), keras.layers.Dense(10, activation="softmax")])
    cls.save(comp / "classifier.keras")
    snakemake_run(tmp_path, path, ["results/tybox/C/memory.parquet"], extra=["--allowed-rules", "tybox", "--"])
    mem = read_parquet(tmp_path / "results/tybox/C/memory.parquet").set_index("term")
    ram = mem.loc["ram_bytes"]
    assert ram["measured"] <= 40000 and abs(ram["rel_error"]) <= 0.02
    assert mem.loc["n_samples", "predicted"] >= 4
    src = tmp_path / "results/tybox/C/src"
    assert (src / "harness").is_file() and (src / "README.md").is_file()
    log = (tmp_path / "results/logs/tybox/C.log").read_text()
    assert "0 of" in log and "differ" in log
    tgt = read_parquet(tmp_path / "results/tybox/C/target.parquet")
    assert len(tgt) == 1 and tgt["target"].iloc[0] == target
    if target == "host":
        assert "target_measured" not in mem.columns
        assert tgt["instructions_inference"].isna().all() and tgt["ram_bytes"].iloc[0] == ram["measured"]
    else:  # the Cortex-M4F build: linked into the device's RAM, checked under QEMU, measured
        assert "under QEMU (mps2-an386) the bit-exact check passed and a 24-sample learning stream equals " \
               "the numpy reference" in log
        assert tgt["stream_check_samples"].iloc[0] == 24 and tgt["stream_max_weight_diff"].iloc[0] <= 1e-5
        row = tgt.iloc[0]
        assert row["ram_bytes"] == mem.loc["ram_bytes", "target_measured"] and row["ram_budget"] == 40000
        assert row["instructions_inference"] > row["fe_macs"] > 0
        assert row["instructions_per_mac"] == pytest.approx(row["instructions_inference"] / row["fe_macs"])
        assert row["instructions_train_step"] > row["instructions_sgd_sample"] > 0
        # the search's per-layer estimate, fitted on nets of the space, on this (different) test net
        assert row["estimate_rel_error"] == pytest.approx(row["instructions_estimated"] / row["instructions_inference"] - 1)
        assert abs(row["estimate_rel_error"]) < 0.15
        assert (src / "target" / "harness.elf").is_file()
        assert mem.loc["ram_bytes", "target_measured"] <= 40000
        assert abs(mem.loc["ram_bytes", "target_rel_error"]) <= 0.02
        assert mem.loc["arena", "target_measured"] == mem.loc["arena", "predicted"]
