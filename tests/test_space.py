"""Search space: arch strings, NetSpec, torch builder, cost model, enumerate stage."""

import dataclasses
import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tinyevo.config import load_config
from tinyevo.space import GENES, Genes, NetSpec, add_flags, cost_of, round_width, space_from_config
from tinyevo.space.enumerate import candidates_table
from tinyevo.space.torch_model import build_torch, load_model, save_model
from conftest import REPO

CFG, _ = load_config([REPO / "config" / "config.yaml"])
SPACE = space_from_config(CFG)
IMAGENET = dataclasses.replace(SPACE, resolution=224, in_channels=3, num_classes=1000)


def fvcore_macs(model, res, ch):
    from fvcore.nn import FlopCountAnalysis

    model.eval()
    fa = FlopCountAnalysis(model, torch.zeros(1, ch, res, res))
    fa.unsupported_ops_warnings(False)
    fa.uncalled_modules_warnings(False)
    by_op = fa.by_operator()
    return by_op.get("conv", 0) + by_op.get("linear", 0) + by_op.get("addmm", 0)


def test_round_width_rule():
    assert [round_width(c) for c in (2, 4, 12, 16, 24, 40, 56, 96, 160, 320)] == [8, 8, 16, 16, 24, 40, 56, 96, 160, 320]
    assert round_width(11) == 16
    assert round_width(9) == 16  # nearest multiple 8 loses more than 10 % (8 < 8.1): one more step
    assert round_width(100) == 104


def test_mobilenetv2_reference_figures():
    """Grid index 68 is MobileNetV2 1.0: 3,504,872 params, 300.77 M MACs at 224x224/1000."""
    pop = dict(IMAGENET.initial_population())
    genes = pop[68]
    assert genes == Genes((1, 2, 3, 4, 3, 3, 1), (1, 6, 6, 6, 6, 6, 6), (16, 24, 32, 64, 96, 160, 320))
    spec = IMAGENET.netspec(genes)
    cost = cost_of(spec)
    assert cost.params == 3_504_872
    assert abs(cost.macs - 300.77e6) / 300.77e6 < 0.005
    model = build_torch(spec)
    assert sum(p.numel() for p in model.parameters()) == 3_504_872
    assert fvcore_macs(model, 224, 3) == cost.macs
    assert cost.feature_size == 1280


def test_paper_grid_feasible_count():
    """Per image: params <= 2.5 M and MACs <= 200 M holds for exactly 264 of the 512 nets."""
    df = candidates_table(IMAGENET, {"max_params": 2_500_000, "max_macs": 200_000_000})
    assert len(df) == 512
    assert int(df["feasible"].sum()) == 264


def test_grid_index_order():
    pop = SPACE.initial_population()
    assert [i for i, _ in pop] == list(range(512))
    g = SPACE.grid
    for idx, genes in pop:
        s, e, c = idx // 64, (idx // 8) % 8, idx % 8
        assert genes == Genes(g["structures"][s], g["expansions"][e], g["channels"][c])


def test_analytic_macs_equal_fvcore_on_random_nets():
    rng = random.Random(0)
    sp = dataclasses.replace(SPACE, resolution=40, in_channels=3, num_classes=7)
    for _ in range(25):
        genes = Genes(*(tuple(rng.choice(sp.allowed(gn)) for _ in range(sp.n_stages)) for gn in GENES))
        spec = sp.netspec(genes)
        model = build_torch(spec)
        cost = cost_of(spec)
        assert cost.params == sum(p.numel() for p in model.parameters())
        assert cost.macs == fvcore_macs(model, 40, 3), sp.encode(genes)


def test_arch_string_fixed_length_and_example():
    archs = [SPACE.encode(g) for _, g in SPACE.initial_population()]
    assert {len(a) for a in archs} == {SPACE.string_length}
    assert archs[68] == "r1e1c016-r2e6c024-r3e6c032-r4e6c064-r3e6c096-r3e6c160-r1e6c320"


genes_strategy = st.builds(
    lambda r, e, c: Genes(tuple(r), tuple(e), tuple(c)),
    st.lists(st.sampled_from(SPACE.allowed("repeats")), min_size=7, max_size=7),
    st.lists(st.sampled_from(SPACE.allowed("expansions")), min_size=7, max_size=7),
    st.lists(st.sampled_from(SPACE.allowed("channels")), min_size=7, max_size=7),
)


@given(genes_strategy)
@settings(max_examples=300, deadline=None)
def test_encode_decode_round_trip(genes):
    s = SPACE.encode(genes)
    assert len(s) == SPACE.string_length
    assert SPACE.decode(s) == genes


@given(st.text(alphabet="0123456789recx-_ ", min_size=0, max_size=70))
@settings(max_examples=1000, deadline=None)
def test_random_strings_raise_clean_value_error(text):
    try:
        SPACE.decode(text)
    except ValueError as exc:
        assert "architecture string" in str(exc)


@given(genes_strategy, st.integers(min_value=0, max_value=61), st.sampled_from("x9-r "))
@settings(max_examples=300, deadline=None)
def test_corrupted_valid_strings(genes, pos, ch):
    s = SPACE.encode(genes)
    bad = s[:pos] + ch + s[pos + 1:]
    try:
        out = SPACE.decode(bad)
    except ValueError as exc:
        assert "position" in str(exc)
    else:
        assert SPACE.encode(out) == bad


@pytest.mark.parametrize(
    "arch, words",
    [
        ("r1e1c016", ["length"]),
        ("r1e1c016+r2e6c024-r3e6c032-r4e6c064-r3e6c096-r3e6c160-r1e6c320", ["separator", "position 8"]),
        ("r1e1c016-r2e6c024-r3e6c032-r4e6c064-r3e6c096-r3e6c160-r1e6c3x0", ["bad digit", "position 60", "channels"]),
        ("r1e1c016-r2e6c024-r3e6c032-r4e6c064-r3e6c096-r3e9c160-r1e6c320", ["expansions", "stage 6", "allowed"]),
        ("r1e1c016-r2e6c024-r3e6c032-r4e6c064-r3e6c096-r3e6c160-r1e6c999", ["channels", "not in the allowed"]),
        ("r1e1x016-r2e6c024-r3e6c032-r4e6c064-r3e6c096-r3e6c160-r1e6c320", ["stage 1", "'c'"]),
    ],
)
def test_decode_errors_name_field_and_position(arch, words):
    with pytest.raises(ValueError) as exc:
        SPACE.decode(arch)
    for w in words:
        assert w in str(exc.value), str(exc.value)


def test_netspec_blocks_and_residuals():
    spec = SPACE.netspec("r1e1c016-r2e6c024-r3e6c032-r4e6c064-r3e6c096-r3e6c160-r1e6c320")
    assert len(spec.blocks) == 17
    b0 = spec.blocks[0]
    assert (b0.cin, b0.hidden, b0.cout, b0.expand, b0.residual) == (32, 32, 16, False, False)
    assert spec.blocks[2].residual and spec.blocks[2].hidden == 144
    assert [b.stride for b in spec.blocks if b.stride == 2] == [2, 2, 2, 2]
    assert NetSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ValueError, match="cin"):
        NetSpec.from_dict({**spec.to_dict(), "stem_out": 24})


def test_netspec_arbitrary_widths_build_and_forward():
    spec = SPACE.netspec(SPACE.initial_population()[3][1])
    blocks = list(spec.blocks)
    b = blocks[1]
    blocks[1] = dataclasses.replace(b, hidden=b.hidden - 5)  # a pruned expansion
    pruned = dataclasses.replace(spec, blocks=tuple(blocks), head_out=77)
    model = build_torch(pruned)
    out = model(torch.randn(2, 1, 32, 32))
    assert out.shape == (2, 10)
    assert model.features(torch.randn(2, 1, 32, 32)).shape == (2, 77)
    assert cost_of(pruned).feature_size == 77
    assert cost_of(pruned).params == sum(p.numel() for p in model.parameters())


def test_torch_builder_structure():
    model = build_torch(SPACE.netspec(SPACE.initial_population()[68][1]))
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(c.bias is None for c in convs)
    assert any(isinstance(m, torch.nn.ReLU6) for m in model.modules())
    assert isinstance(model.flatten, torch.nn.Flatten)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(torch.all(b.weight == 1) and torch.all(b.bias == 0) for b in bns)


def test_peak_sram_is_largest_consecutive_pair():
    spec = SPACE.netspec(SPACE.initial_population()[68][1])
    from tinyevo.space import layer_table

    rows = layer_table(spec)
    # stem at 32x32x1 -> 16x16x32: 1024 + 8192; first expand block dominates later
    assert cost_of(spec).peak_sram == max(r["in_act"] + r["out_act"] for r in rows if r["kind"] != "linear")
    assert rows[0]["in_act"] == 32 * 32 * 1 and rows[0]["out_act"] == 16 * 16 * 32


def test_save_load_model_round_trip(tmp_path):
    spec = SPACE.netspec(SPACE.initial_population()[0][1])
    model = build_torch(spec)
    save_model(tmp_path / "m.pt", model, {"arch": "x"})
    m2, spec2, meta = load_model(tmp_path / "m.pt")
    assert spec2 == spec and meta == {"arch": "x"}
    x = torch.randn(2, 1, 32, 32)
    model.eval(), m2.eval()
    assert torch.equal(model(x), m2(x))
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "none.pt")
    payload = torch.load(tmp_path / "m.pt", weights_only=False)
    payload["netspec"]["head_out"] = 99
    torch.save(payload, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="do not match"):
        load_model(tmp_path / "bad.pt")


def test_random_population_is_seeded():
    a = dataclasses.replace(SPACE, population_mode="random", population_size=20, population_seed=3)
    b = dataclasses.replace(a, population_seed=4)
    pa, pb = a.initial_population(), b.initial_population()
    assert pa == a.initial_population() and pa != pb
    assert len({g for _, g in pa}) == 20
    for _, g in pa:
        for gene in GENES:
            assert set(getattr(g, gene)) <= set(SPACE.alphabets[gene])


def test_constraint_flags():
    df = candidates_table(SPACE, {"max_params": 1_000_000, "max_macs": None, "max_flash": 2_000_000})
    assert set(c for c in df.columns if c.startswith("ok_")) == {"ok_max_params", "ok_max_flash"}
    assert (df["feasible"] == ((df["params"] <= 1_000_000) & (df["flash"] <= 2_000_000))).all()
    assert add_flags(df, {})["feasible"].all()


@pytest.mark.slow
def test_enumerate_stage_via_snakemake(tmp_path, make_config, snakemake_run):
    cfg, path = make_config({})
    proc = snakemake_run(tmp_path, path, ["results/space/candidates.parquet"])
    import pandas as pd

    df = pd.read_parquet(tmp_path / "results/space/candidates.parquet")
    assert len(df) == 8 and df["arch"].str.len().nunique() == 1
    log = (tmp_path / "results/logs/space/enumerate.log").read_text()
    assert f"{int(df['feasible'].sum())} feasible" in log
    assert proc.returncode == 0


def test_decode_error_of_a_huge_string_is_short():
    """A 1 MB string is named by its start and length, not quoted whole."""
    huge = "r" * 1_000_000
    with pytest.raises(ValueError) as exc:
        SPACE.decode(huge)
    msg = str(exc.value)
    assert len(msg) < 300 and "1000000 characters" in msg and f"expected {SPACE.string_length}" in msg
