"""Structured L1 pruning and the device-budget choice (torch only; no TensorFlow)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from tinyevo.compress.budget import BudgetError, choose_step, spec_memory
from tinyevo.compress.prune import (filter_l1, keep_largest, next_unit, prune_channels, prune_unit, unit_scores,
                                    unit_width, units_of)
from tinyevo.compress.stage import prune_schedule
from tinyevo.space.spec import BlockSpec, NetSpec
from tinyevo.space.torch_model import build_torch


def small_spec(resolution=12, head=20, classes=4) -> NetSpec:
    blocks = (
        BlockSpec(8, 8, 8, 1, 3, False, 0),    # residual, no expansion: tied to the stem
        BlockSpec(8, 16, 12, 2, 3, True, 1),
        BlockSpec(12, 24, 12, 1, 3, True, 1),  # residual: tied to block 1's output
        BlockSpec(12, 36, 16, 1, 3, True, 2),  # stride 1, cin != cout: plain
    )
    return NetSpec(resolution, 3, 8, 2, 3, blocks, head, classes)


def randomised(spec: NetSpec, seed=0):
    torch.manual_seed(seed)
    m = build_torch(spec)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.5, 0.5)
                mod.running_var.uniform_(0.5, 2.0)
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.3, 0.3)
    return m.eval()


def unit(spec, name):
    return next(u for u in units_of(spec) if u.name == name)


def test_units_and_residual_groups():
    spec = small_spec()
    names = [u.name for u in units_of(spec)]
    assert names == ["stem+blocks.0.project", "blocks.1.expand", "blocks.2.expand", "blocks.1.project+blocks.2.project",
                     "blocks.3.expand", "blocks.3.project", "head"]
    g = unit(spec, "blocks.1.project+blocks.2.project")
    assert g.kind == "width" and g.widths == (2, 3)


def test_filter_l1_and_keep_largest():
    w = torch.zeros(4, 2, 3, 3)
    w[0] = 1.0
    w[1] = -3.0
    w[2, 0, 0, 0] = 0.5
    np.testing.assert_allclose(filter_l1(w), [18.0, 54.0, 0.5, 0.0])
    np.testing.assert_array_equal(keep_largest(filter_l1(w), 2), [0, 1])
    np.testing.assert_array_equal(keep_largest(np.array([1.0, 2.0, 2.0, 1.0]), 3), [0, 1, 2])  # tie: lower index
    with pytest.raises(ValueError):
        keep_largest(np.ones(3), 0)


def test_expand_pruning_keeps_largest_and_equals_manual_slicing():
    spec = small_spec()
    m = randomised(spec)
    u = unit(spec, "blocks.3.expand")
    scores = filter_l1(m.blocks[3].expand[0].weight)
    new, keep = prune_unit(m, u, 20)
    # kept filters are exactly the 20 with the largest L1 norm
    assert set(keep.tolist()) == set(np.argsort(-scores)[:20].tolist())
    assert new.spec.blocks[3].hidden == 20 and new.blocks[3].dw[0].weight.shape[0] == 20
    assert new.blocks[3].project[0].weight.shape[1] == 20
    x = torch.randn(3, 3, 12, 12)
    # manual sub-network: zero the removed hidden channels (BN beta too) -> identical outputs
    ref = randomised(spec)
    drop = sorted(set(range(36)) - set(keep.tolist()))
    with torch.no_grad():
        ref.blocks[3].project[0].weight[:, drop] = 0.0
        out_ref, out_new = ref(x), new(x)
    assert out_new.shape == (3, 4)
    torch.testing.assert_close(out_new, out_ref, atol=1e-5, rtol=1e-5)


def test_residual_group_pruned_together_by_summed_l1():
    spec = small_spec()
    m = randomised(spec, seed=1)
    u = unit(spec, "blocks.1.project+blocks.2.project")
    s = filter_l1(m.blocks[1].project[0].weight) + filter_l1(m.blocks[2].project[0].weight)
    np.testing.assert_allclose(unit_scores(m, u), s)
    new, keep = prune_unit(m, u, 7)
    assert set(keep.tolist()) == set(np.argsort(-s)[:7].tolist())
    b = new.spec.blocks
    assert (b[1].cout, b[2].cin, b[2].cout, b[3].cin) == (7, 7, 7, 7)
    assert b[2].residual and not b[3].residual
    # the pruned net equals the original with the removed channels' producers silenced
    x = torch.randn(2, 3, 12, 12)
    manual = randomised(spec, seed=1)
    drop = sorted(set(range(12)) - set(keep.tolist()))
    with torch.no_grad():
        for blk in (manual.blocks[1], manual.blocks[2]):
            blk.project[0].weight[drop] = 0.0
            blk.project[1].bias[drop] = 0.0
            blk.project[1].running_mean[drop] = 0.0
        torch.testing.assert_close(new(x), manual(x), atol=1e-5, rtol=1e-5)


def test_stem_group_prunes_passthrough_block():
    spec = small_spec()
    m = randomised(spec)
    new, keep = prune_unit(m, unit(spec, "stem+blocks.0.project"), 5)
    b0 = new.spec.blocks[0]
    assert (new.spec.stem_out, b0.cin, b0.hidden, b0.cout) == (5, 5, 5, 5)
    assert new.blocks[0].dw[0].weight.shape == (5, 1, 3, 3) and new.blocks[1].expand[0].weight.shape[1] == 5
    assert new(torch.randn(1, 3, 12, 12)).shape == (1, 4)


def test_head_pruning_shrinks_feature_size():
    spec = small_spec(head=20)
    m = randomised(spec)
    new, keep = prune_unit(m, unit(spec, "head"), 9)
    assert new.spec.feature_size == 9 and new.classifier.weight.shape == (4, 9)
    x = torch.randn(2, 3, 12, 12)
    with torch.no_grad():
        torch.testing.assert_close(new.features(x), m.features(x)[:, torch.as_tensor(keep)])
        # logits equal the classifier on the kept features only
        ref = m.features(x)[:, torch.as_tensor(keep)] @ m.classifier.weight[:, torch.as_tensor(keep)].T + m.classifier.bias
        torch.testing.assert_close(new(x), ref, atol=1e-5, rtol=1e-5)
    assert spec_memory(new.spec, 10**6)["sample_bytes"] == 10


def test_schedule_order_and_no_new_residuals():
    spec = small_spec(head=40)
    u, n_keep = next_unit(spec, 0.25)
    assert u.name == "head" and n_keep == 30  # widest first
    spec2 = dataclasses.replace(spec, head_out=36)
    u, _ = next_unit(spec2, 0.25)
    assert u.name == "head"  # tie at 36 with blocks.3.expand: the later unit first
    # blocks.3 is stride 1 with cin 12, cout 16: pruning its output to 12 would add a residual
    g = unit(spec, "blocks.3.project")
    model = randomised(spec)
    for frac, expect in ((0.25, 11), (0.2, 13)):
        from tinyevo.compress.prune import step_keep

        assert step_keep(spec, g, frac) == expect
    assert not prune_channels(model, g, list(range(11))).spec.blocks[3].residual


def test_bad_keep_indices():
    spec = small_spec()
    with pytest.raises(ValueError, match="distinct channel indices"):
        prune_channels(randomised(spec), unit(spec, "head"), [0, 0, 1])


def test_prune_schedule_records_steps():
    spec = small_spec(head=40)
    m = randomised(spec)
    calls = []
    steps = prune_schedule(m, 0.25, 3, 10**6, 1, evaluate=lambda mm: 0.5,
                           finetune=lambda mm, k: calls.append(k))
    assert calls == [1, 2, 3] and len(steps) == 4
    rows = [s.row for s in steps]
    assert [r["layer"] for r in rows] == ["", "head", "blocks.3.expand", "head"]
    assert [(r["filters_before"], r["filters_kept"], r["filters_total"]) for r in rows[1:]] == [
        (40, 30, 40), (36, 27, 36), (30, 23, 40)]
    assert [r["feature_size"] for r in rows] == [40, 30, 30, 23]
    assert all(rows[i + 1]["params"] < rows[i]["params"] for i in range(3))
    assert all(rows[i + 1]["net_bytes"] < rows[i]["net_bytes"] for i in range(3))


def test_budget_choice_fits_and_cannot_fit():
    spec = small_spec(head=48)
    steps = prune_schedule(randomised(spec), 0.25, 4, 10**6, 1, evaluate=lambda mm: 1.0)
    terms = [s.terms for s in steps]
    # a budget exactly large enough for step 2 with 10 samples -> step 2 (steps 0 and 1 do not fit)
    need = [t["net_bytes"] + 10 * t["sample_bytes"] for t in terms]
    assert need[0] > need[1] > need[2]
    M = need[2]
    re = [spec_memory(s.model.spec, M) for s in steps]
    assert choose_step(re, M, 10) == 2
    assert re[2]["n_samples"] == 10
    assert choose_step(re, M, 1) <= 2
    # a budget below the most pruned step's need -> a clear error naming M, need and contributor
    M2 = min(need) - 1
    re2 = [dict(spec_memory(s.model.spec, M2), step=i) for i, s in enumerate(steps)]
    with pytest.raises(BudgetError) as exc:
        choose_step(re2, M2, 10)
    msg = str(exc.value)
    assert f"M = {M2} B" in msg and f"need is {min(need)} B" in msg and "largest contributor is" in msg
    assert "device.ram_bytes" in msg


def test_sweep_fit_stops_at_the_step_the_full_sweep_chooses():
    spec = small_spec(head=48)
    full = prune_schedule(randomised(spec), 0.25, 4, 10**6, 1, evaluate=lambda mm: 1.0)
    need = [s.terms["net_bytes"] + 10 * s.terms["sample_bytes"] for s in full]
    M = need[2]  # steps 0 and 1 do not hold 10 samples, step 2 does
    full = prune_schedule(randomised(spec), 0.25, 4, M, 10, evaluate=lambda mm: 1.0)
    calls = []
    fit = prune_schedule(randomised(spec), 0.25, 4, M, 10, evaluate=lambda mm: 1.0,
                         finetune=lambda mm, k: calls.append(k), stop_when_fits=True)
    assert len(full) == 5 and len(fit) == 3 and calls == [1, 2]
    assert [s.row["fits"] for s in fit] == [False, False, True]
    pick = choose_step([dict(s.terms, step=i) for i, s in enumerate(full)], M, 10)
    assert pick == choose_step([dict(s.terms, step=i) for i, s in enumerate(fit)], M, 10) == 2
    assert [s.row for s in fit] == [s.row for s in full[:3]]
    # a baseline that fits: nothing is pruned or fine-tuned
    calls.clear()
    one = prune_schedule(randomised(spec), 0.25, 4, 10**7, 1, evaluate=lambda mm: 1.0,
                         finetune=lambda mm, k: calls.append(k), stop_when_fits=True)
    assert len(one) == 1 and calls == []


def test_sweep_mode_is_checked():
    from tinyevo.compress.stage import _sweep_mode

    assert _sweep_mode({}) == "full" and _sweep_mode({"sweep": "fit"}) == "fit"
    with pytest.raises(ValueError, match="compress.sweep.*'some'"):
        _sweep_mode({"sweep": "some"})


def test_spec_memory_matches_tybox_formula():
    spec = small_spec(head=20, classes=4)
    t = spec_memory(spec, 50_000)
    w = 3 * 8 * 9 + (8 * 9 + 8 * 8) + (8 * 16 + 16 * 9 + 16 * 12) + (12 * 24 + 24 * 9 + 24 * 12) \
        + (12 * 36 + 36 * 9 + 36 * 16) + 16 * 20
    couts = 8 + (8 + 8) + (16 + 16 + 12) + (24 + 24 + 12) + (36 + 36 + 16) + 20
    assert t["fe_weights"] == w and t["fe_biases"] == 4 * couts and t["fe_quant_params"] == 8 * couts
    assert t["classifier_weights"] == (20 * 4 + 4) * 4 and t["classifier_activations"] == (20 + 4) * 4
    assert t["sample_bytes"] == 21
    assert t["n_samples"] == (50_000 - t["net_bytes"]) // 21
