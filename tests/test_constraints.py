"""Device limits (cost limits, the TyBox budget ``constraints.fit_device``) and trainability
guards (``constraints.min_width``): the flag columns of the enumeration, config validation, the
layering of the memory model, the guards in mutation and the evolution's feasibility."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

import numpy as np
import pandas as pd
import pytest

from conftest import REPO
from tinyevo.config import ConfigError
from tinyevo.search import EvolutionParams, NoFeasibleNet, evolve, mutate, select_winners
from tinyevo.space import Constraints, Genes, SearchSpace, cost_of, round_width, space_from_config
from tinyevo.space.enumerate import candidates_table, enumerate_stage
from tinyevo.space.memory import spec_device_bytes
from test_evolution import PROXIES, FakeScorer, initial_table


@pytest.fixture
def space(make_config):
    """The default alphabets (channels 2 ... 512), 40 random nets."""
    cfg, _ = make_config({"search_space": {"population": {"mode": "random", "size": 40}}})
    return space_from_config(cfg)


@pytest.fixture
def gspace(make_config):
    """Channels 8 ... 128 only, 60 random nets: about a fifth of them have no stage below 16."""
    cfg, _ = make_config({"search_space": {"alphabets": {"channels": [8, 16, 32, 64, 128]},
                                           "population": {"mode": "random", "size": 60}}})
    return space_from_config(cfg)


def _device_need_via_compress(spec, min_buffer, accounting):
    """The compression stage's public path (tinyevo.compress.budget) to the same need."""
    from tinyevo.compress.budget import spec_memory

    t = spec_memory(spec, 10**9, accounting)
    return t["net_bytes"] + min_buffer * t["sample_bytes"]


def _split_constraints(space, min_width=16, accounting="total", min_buffer=4):
    """Limits that split the space's initial nets: median params, median device need."""
    specs = [space.netspec(g) for _, g in space.initial_population()]
    params = sorted(cost_of(s).params for s in specs)
    need = sorted(spec_device_bytes(s, min_buffer, accounting) for s in specs)
    cons = {"max_params": params[len(params) // 2], "max_macs": None, "fit_device": True, "min_width": min_width}
    device = {"ram_bytes": need[len(need) // 2], "min_buffer_samples": min_buffer}
    return cons, device


# ----- the enumeration's flags -------------------------------------------------------------------
def test_candidates_flags_are_the_documented_definitions(gspace):
    space = gspace
    cons_cfg, device = _split_constraints(space)
    cons = Constraints.from_config(cons_cfg, device, "total")
    df = candidates_table(space, cons)
    assert list(df.columns) == ["index", "arch", "repeats", "expansions", "channels", "params", "macs", "peak_sram",
                                "flash", "feature_size", "min_stage_width", "device_bytes", "ok_max_params",
                                "ok_device", "ok_min_width", "within_limits", "trainable", "feasible"]
    # min_width from the genes alone: every stage's rounded channel value
    widths = df["channels"].map(lambda cs: min(round_width(c, space.round_divisor) for c in cs))
    assert (df["min_stage_width"] == widths).all()
    assert (df["ok_min_width"] == (widths >= 16)).all()
    for r in df.sample(8, random_state=0).itertuples():
        spec = space.netspec(r.arch)
        assert r.device_bytes == _device_need_via_compress(spec, device["min_buffer_samples"], "total")
    assert (df["ok_device"] == (df["device_bytes"] <= device["ram_bytes"])).all()
    assert (df["within_limits"] == (df["ok_max_params"] & df["ok_device"])).all()
    assert (df["trainable"] == df["ok_min_width"]).all()
    assert (df["feasible"] == (df["within_limits"] & df["trainable"])).all()
    for c in ("ok_max_params", "ok_device", "ok_min_width", "feasible"):  # the fixture splits every flag
        assert 0 < df[c].sum() < len(df), c
    # ram accounting: the int8 weights leave the budget, so the need is smaller
    ram = candidates_table(space, Constraints.from_config(cons_cfg, device, "ram"))
    assert (ram["device_bytes"] < df["device_bytes"]).all()


def test_no_guard_and_no_device_check(make_config):
    sp = space_from_config(make_config()[0])
    df = candidates_table(sp, {"max_params": None})
    assert "device_bytes" not in df.columns and not [c for c in df.columns if c.startswith("ok_")]
    assert df[["within_limits", "trainable", "feasible"]].all().all()
    assert "min_stage_width" in df.columns  # always measured (a benchmark measure too)


def test_enumerate_stage_writes_and_logs(tmp_path, make_config, caplog):
    cfg, _ = make_config({"constraints": {"min_width": 16}})
    import logging

    with caplog.at_level(logging.INFO, logger="tinyevo.space"):
        df = enumerate_stage(cfg["search_space"], cfg["constraints"], tmp_path / "c.parquet", device=cfg["device"],
                             accounting=cfg["tybox"]["accounting"])
    back = pd.read_parquet(tmp_path / "c.parquet")
    pd.testing.assert_frame_equal(back, df)
    # TINY's grid has an 8-channel stage in every net: none passes min_width 16
    assert not df["trainable"].any() and not df["feasible"].any()
    assert "no net of the initial population is feasible under" in caplog.text
    assert "constraints.min_width = 16" in caplog.text and "constraints.fit_device" in caplog.text
    assert "ms per net" in caplog.text


# ----- validation before any work ------------------------------------------------------------------
@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "16"])
def test_min_width_must_be_a_positive_int(bad, make_config):
    with pytest.raises(ValueError, match=r"constraints\.min_width"):
        Constraints.from_config({"min_width": bad})
    with pytest.raises(ConfigError, match=r"constraints\.min_width"):
        make_config({"constraints": {"min_width": bad}})


def test_other_bad_constraint_values(space):
    with pytest.raises(ValueError, match=r"constraints\.fit_device.*device"):
        Constraints.from_config({"fit_device": True})
    with pytest.raises(ValueError, match=r"constraints\.fit_device"):
        Constraints.from_config({"fit_device": "yes"}, {"ram_bytes": 10})
    with pytest.raises(ValueError, match=r"device\.ram_bytes"):
        Constraints.from_config({"fit_device": True}, {"ram_bytes": 0})
    with pytest.raises(ValueError, match=r"tybox\.accounting"):
        Constraints.from_config({"fit_device": True}, {"ram_bytes": 10}, "flash")
    with pytest.raises(ValueError, match=r"constraints\.min_hight"):
        Constraints.from_config({"min_hight": 3})
    # a guard no net of the space can meet fails before the enumeration
    widest = max(round_width(c) for c in space.allowed("channels"))
    with pytest.raises(ValueError, match=rf"constraints\.min_width' = {widest + 1} cannot hold.*{widest}"):
        candidates_table(space, {"min_width": widest + 1})
    assert len(candidates_table(space, {"min_width": widest})) == 40
    # fit_device on a net TyBox cannot size (its int8 label holds 127 classes at most)
    big = SearchSpace(resolution=8, in_channels=1, num_classes=200, stem_width=8, head_width=16,
                      alphabets={"repeats": (1,), "expansions": (1,), "channels": (8,)},
                      grid={"structures": ((1,) * 7,), "expansions": ((1,) * 7,), "channels": ((8,) * 7,)})
    with pytest.raises(ValueError, match=r"constraints\.fit_device.*127"):
        candidates_table(big, Constraints.from_config({"fit_device": True}, {"ram_bytes": 10**6}))


# ----- layering of the memory model ---------------------------------------------------------------
def test_space_does_not_import_compress_tybox_or_torch():
    code = (
        "import sys; sys.path.insert(0, 'workflow')\n"
        "from tinyevo.config import load_config\n"
        "from tinyevo.space import space_from_config, constraints_from_config\n"
        "from tinyevo.space.enumerate import candidates_table\n"
        "cfg, _ = load_config(['config/config.yaml'])\n"
        "df = candidates_table(space_from_config(cfg), constraints_from_config(cfg))\n"
        "assert 'ok_device' in df.columns and len(df) == 512\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'tensorflow', 'keras') "
        "or m.startswith(('tinyevo.compress', 'tinyevo.tybox', 'tinyevo.proxies')))\n"
        "print('IMPORTED', bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "IMPORTED []" in out.stdout


def test_memory_model_has_one_home(make_config):
    import tinyevo.compress.budget as budget
    import tinyevo.space.memory as mem
    import tinyevo.tybox.memory as tmem
    import tinyevo.tybox.model as tmodel

    for name in ("tybox_buffer", "plan_arena", "arena_pair", "fe_constant_bytes"):
        assert getattr(tmem, name) is getattr(mem, name)
    assert budget.spec_memory is mem.spec_memory and budget.spec_graph is mem.spec_graph
    assert tmodel.Graph is mem.Graph and tmodel.Tensor is mem.Tensor and tmodel.Op is mem.Op
    # the tflite-facing entry point on the NetSpec's graph gives the same terms
    sp = space_from_config(make_config()[0])
    spec = sp.netspec(next(iter(sp.initial_population()))[1])
    clf = (np.zeros((spec.head_out, spec.num_classes), np.float32), np.zeros(spec.num_classes, np.float32))
    for acc in ("total", "ram"):
        via_tybox = tmem.memory_terms(mem.spec_graph(spec), clf, 50_000, accounting=acc)
        assert via_tybox == mem.spec_memory(spec, 50_000, acc)
        t = mem.spec_memory(spec, 50_000, acc)
        assert spec_device_bytes(spec, 7, acc) == t["net_bytes"] + 7 * t["sample_bytes"]


# ----- guards in mutation --------------------------------------------------------------------------
def test_children_of_guarded_parents_keep_the_guard(space):
    cons = Constraints.from_config({"min_width": 16})
    rng = np.random.default_rng(0)
    n_ok = 0
    for _, g in space.initial_population():
        ok = cons.check(cons.measure(space.netspec(g)))["trainable"]
        for _ in range(15):
            child, m = mutate(space, g, rng, cons)
            assert space.netspec(child) != space.netspec(g) and m.new != m.old
            if ok:
                n_ok += 1
                assert cons.check(cons.measure(space.netspec(child)))["trainable"], space.encode(child)
    assert n_ok > 0


def test_guarded_draw_is_uniform_among_valid_values(space):
    cons = Constraints.from_config({"min_width": 16})
    parent = Genes((1,) * 7, (2,) * 7, (32,) * 7)
    rng = np.random.default_rng(1)
    by_stage: dict[int, Counter] = {s: Counter() for s in range(1, 8)}
    positions = Counter()
    for _ in range(7000):
        _, m = mutate(space, parent, rng, cons)
        positions[m.gene] += 1
        if m.gene == "channels":
            by_stage[m.stage][m.new] += 1
    # 2, 4 and 8 round to 8 < 16: never drawn; every other changing value is
    valid = {16, 64, 128, 256, 512}
    for s, cnt in by_stage.items():
        assert set(cnt) == valid, s
        mean = sum(cnt.values()) / len(valid)
        assert all(abs(c - mean) < 0.3 * mean for c in cnt.values()), (s, cnt)
    # (gene, stage) stays uniform: each gene about a third of the draws
    assert all(abs(c - 7000 / 3) < 0.1 * 7000 / 3 for c in positions.values()), positions


def test_no_guard_gives_the_unguarded_stream_and_guards_are_deterministic(space):
    g = space.initial_population()[0][1]
    def stream(cons, seed):
        rng = np.random.default_rng(seed)
        return [mutate(space, g, rng, cons) for _ in range(50)]
    assert stream(None, 3) == stream(Constraints.from_config({"max_params": 10}), 3)
    guarded = Constraints.from_config({"min_width": 16})
    assert stream(guarded, 3) == stream(guarded, 3)


def test_a_violating_parent_is_not_restricted(space):
    cons = Constraints.from_config({"min_width": 16})
    parent = Genes((1,) * 7, (2,) * 7, (8, 32, 32, 32, 32, 32, 32))  # stage 1 is too narrow
    rng = np.random.default_rng(2)
    kids = [mutate(space, parent, rng, cons)[0] for _ in range(200)]
    widths = [cons.measure(space.netspec(k))["min_stage_width"] for k in kids]
    assert min(widths) == 8 and max(widths) >= 16  # may stay narrow, may be repaired
    assert any(k.channels[1] == 8 for k in kids)  # and may narrow another stage


def test_mutation_impossible_under_a_guard_is_a_clear_error():
    sp = SearchSpace(resolution=16, in_channels=1, num_classes=10, stem_width=8, head_width=16,
                     alphabets={"repeats": (1,), "expansions": (1,), "channels": (8, 16)},
                     grid={"structures": ((1,) * 7,), "expansions": ((1,) * 7,), "channels": ((16,) * 7,)})
    g = Genes((1,) * 7, (1,) * 7, (16,) * 7)
    mutate(sp, g, np.random.default_rng(0))  # 16 -> 8 changes the net: fine without the guard
    with pytest.raises(ValueError, match=r"cannot be mutated.*constraints\.min_width = 16"):
        mutate(sp, g, np.random.default_rng(0), Constraints.from_config({"min_width": 16}))


# ----- the evolution's feasibility ----------------------------------------------------------------
def test_evolution_flags_penalty_and_winners(gspace):
    space = gspace
    cons_cfg, device = _split_constraints(space)
    cons = Constraints.from_config(cons_cfg, device, "total")
    initial, norm = initial_table(space)
    res = evolve(initial, FakeScorer(space, norm), space, PROXIES, cons,
                 EvolutionParams(cycles=40, sample_size=6, constraints="penalty", penalty=100.0, seed=4))
    h = res.history
    flags = ["ok_max_params", "ok_device", "ok_min_width", "within_limits", "trainable", "feasible"]
    assert [c for c in h.columns if c in flags or c.startswith("ok_")] == flags
    assert {"min_stage_width", "device_bytes"} <= set(h.columns)
    for r in h.drop_duplicates("arch").sample(10, random_state=1).itertuples():
        assert r.device_bytes == spec_device_bytes(space.netspec(r.arch), device["min_buffer_samples"], "total")
    assert (h["ok_device"] == (h["device_bytes"] <= device["ram_bytes"])).all()
    assert (h["feasible"] == (h["within_limits"] & h["trainable"])).all()
    n_viol = (~h[["ok_max_params", "ok_device", "ok_min_width"]]).sum(axis=1)
    assert (h["violations"] == n_viol).all()
    np.testing.assert_allclose(h["fitness"], h["score"] - 100.0 * h["violations"])
    kids = h[h["cycle"] > 0]
    parent_ok = h.set_index("id").loc[kids["parent_id"].astype(int), "trainable"].to_numpy()
    assert parent_ok.any() and kids.loc[parent_ok, "trainable"].all()
    assert res.timings["measured"] == h["arch"].nunique()  # measured once per distinct arch
    sel = select_winners(h, PROXIES, cons).set_index(["net", "phase"])
    assert sel.loc[("C", "after"), "score"] == h.loc[h["feasible"], "score"].max()
    assert sel.loc[("NC", "after"), "score"] == h.loc[h["trainable"], "score"].max()
    assert sel.loc[("C", "after"), "feasible"] and sel.loc[("NC", "after"), "trainable"]
    assert {"within_limits", "trainable", "min_stage_width", "device_bytes"} <= set(sel.columns)


def test_no_feasible_or_trainable_net_names_every_constraint(space):
    initial, norm = initial_table(space)
    cons = Constraints.from_config({"max_params": None, "fit_device": True, "min_width": 16},
                                   {"ram_bytes": 1, "min_buffer_samples": 3}, "ram")
    res = evolve(initial, FakeScorer(space, norm), space, PROXIES, cons, EvolutionParams(cycles=3, sample_size=3))
    want = (r"meets the constraints.*constraints\.fit_device \(device\.ram_bytes = 1 B"
            r".*min_buffer_samples = 3, tybox\.accounting = ram\).*constraints\.min_width = 16")
    with pytest.raises(NoFeasibleNet, match=want):
        select_winners(res.history, PROXIES, cons)
    widest = max(round_width(c) for c in space.allowed("channels"))
    cons = Constraints.from_config({"min_width": widest})
    res = evolve(initial, FakeScorer(space, norm), space, PROXIES, cons, EvolutionParams(cycles=3, sample_size=3))
    assert not res.history["trainable"].any()
    with pytest.raises(NoFeasibleNet, match=rf"trainability guards \(constraints\.min_width = {widest}"):
        select_winners(res.history, PROXIES, cons)


def test_describe_a_plain_constraints_mapping():
    from tinyevo.search.select import describe_constraints

    text = describe_constraints({"max_params": 60000, "max_macs": None, "fit_device": True, "min_width": 16})
    assert text == ("constraints.max_params = 60,000, constraints.fit_device (the device: section's ram_bytes and "
                    "min_buffer_samples), constraints.min_width = 16 (every stage's output width after rounding "
                    ">= min_width)")
    assert describe_constraints({"max_params": None, "fit_device": False}) == "no limits set"
    full = Constraints.from_config({"max_params": 5, "fit_device": True}, {"ram_bytes": 1000, "min_buffer_samples": 2})
    assert describe_constraints(full) == ("constraints.max_params = 5, constraints.fit_device (device.ram_bytes = "
                                          "1,000 B with device.min_buffer_samples = 2, tybox.accounting = total)")
