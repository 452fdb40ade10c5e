"""The short-training final round (tinyevo.train.final_round): candidate selection, the static
slot schedule, survivors, the choice, continuation across rounds (= one uninterrupted run) and
the Snakemake stage on the tiny config (k = 4, epochs [1, 1]; and k = 0)."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP (shared cores)

import math

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import MICRO_SPACE, TINY, copy_pipeline, deep_merge, run_snakemake, write_yaml
from tinyevo.data import load_split
from tinyevo.search.select import NoFeasibleNet
from tinyevo.space import Genes, SearchSpace
from tinyevo.space.torch_model import build_torch
from tinyevo.train.final_round import (CANDIDATE_COLUMNS, CHOICE_COLUMNS, FINALIST_COLUMNS, ROW_COLUMNS,
                                       NoCandidate, arch_seed, choose, empty_finalists, finalists_of,
                                       gather_round, n_survivors, plot_final_round, rank_round, round_slots,
                                       run_choice, run_slot, select_candidates, slot_inputs, survivors)
from tinyevo.train.loop import fit, load_checkpoint
from tinyevo.train.stage import chosen_arch

torch.set_num_threads(1)

STATS = (np.array([0.3], dtype=np.float32), np.array([0.3], dtype=np.float32))
SS_CFG = MICRO_SPACE
SETTINGS = {"lr": 0.05, "momentum": 0.9, "weight_decay": 1e-6, "batch_size": 16, "schedule": "cosine",
            "augment": True, "flip": False, "threads": 1}


def history(rows) -> pd.DataFrame:
    """A minimal evolution history: (arch, score, avg, feasible, trainable, params, macs) rows."""
    return pd.DataFrame.from_records(rows, columns=["arch", "score", "avg", "feasible", "trainable", "params",
                                                    "macs"])


HIST = history([
    ("a", 1.0, 9.0, True, True, 100, 1000),
    ("b", 3.0, 1.0, False, True, 5000, 90000),   # best score, infeasible
    ("c", 2.0, 2.0, True, True, 200, 2000),
    ("b", 3.0, 1.0, False, True, 5000, 90000),   # a duplicate of b
    ("d", 2.0, 3.0, True, False, 300, 3000),     # ties with c (later row), not trainable
    ("e", np.nan, 4.0, True, True, 50, 500),     # NaN score ranks last
])


# ---------------------------------------------------------------- candidates


def test_candidates_top_k_distinct_by_score_within_the_pool():
    c = select_candidates(HIST, "C", 3)
    assert list(c.columns) == CANDIDATE_COLUMNS
    assert c["arch"].tolist() == ["c", "d", "a"]  # b infeasible; c before d (tie: earlier row)
    assert c["candidate"].tolist() == [0, 1, 2] and c["history_row"].tolist() == [2, 4, 0]
    nc = select_candidates(HIST, "NC", 10)  # k larger than the pool: all of it, b once
    assert nc["arch"].tolist() == ["b", "c", "a", "e"]  # d not trainable, e (NaN) last
    assert nc["history_row"].tolist() == [1, 2, 0, 5]
    assert nc["params"].tolist() == [5000, 200, 100, 50]


def test_candidates_need_the_score_and_pool_columns():
    with pytest.raises(ValueError, match=r"lacks the column 'score'"):
        select_candidates(HIST.drop(columns=["score"]), "C", 2)
    with pytest.raises(ValueError, match=r"lacks the column 'trainable'"):
        select_candidates(HIST.drop(columns=["trainable"]), "NC", 2)


def test_nc_limits_bound_the_unconstrained_pool():
    got = select_candidates(HIST, "NC", 10, nc_limits={"max_params": 4000, "max_macs": None})
    assert got["arch"].tolist() == ["c", "a", "e"]
    got = select_candidates(HIST, "NC", 10, nc_limits={"max_macs": 1000})
    assert got["arch"].tolist() == ["a", "e"]
    with pytest.raises(ValueError, match=r"final_round\.nc_limits.*unknown key.*'max_flops'"):
        select_candidates(HIST, "NC", 2, nc_limits={"max_flops": 3})
    with pytest.raises(ValueError, match=r"final_round\.nc_limits\.max_params' must be an integer >= 1"):
        select_candidates(HIST, "NC", 2, nc_limits={"max_params": 0})


def test_no_candidate_names_the_constraints():
    none_feasible = HIST.assign(feasible=False)
    with pytest.raises(NoCandidate, match=r"final round of C.*constraints\.max_params = 60,000") as exc:
        select_candidates(none_feasible, "C", 4, constraints={"max_params": 60000, "max_macs": None})
    assert isinstance(exc.value, NoFeasibleNet)
    with pytest.raises(NoCandidate, match=r"final_round\.nc_limits\.max_params = 10\b"):
        select_candidates(HIST, "NC", 4, nc_limits={"max_params": 10})
    with pytest.raises(ValueError, match="'final_round.k' is 0"):
        select_candidates(HIST, "C", 0)


def test_min_distance_spreads_the_candidates_over_families():
    """Real strings of the micro space: two near-copies of the best net are skipped when the
    candidates must differ in >= 3 genes; the distance counts (gene, stage) positions."""
    from tinyevo.space import SearchSpace
    from tinyevo.space.spec import genes_from_lists
    from tinyevo.train.final_round import diverse_top, gene_distance, gene_vector

    space = SearchSpace.from_config(SS_CFG)
    enc = [space.encode(genes_from_lists(*g)) for g in (
        ([1, 1], [1, 1], [4, 4]),    # best
        ([2, 1], [1, 1], [4, 4]),    # 1 gene away
        ([1, 1], [1, 2], [4, 4]),    # 1 gene away
        ([2, 2], [2, 2], [8, 8]))]   # 6 genes away
    best, near1, near2, far = enc
    assert [gene_distance(gene_vector(space, best), gene_vector(space, a)) for a in enc] == [0, 1, 1, 6]
    hist = history([(a, 10.0 - i, 0.0, True, True, 1, 1) for i, a in enumerate(enc)])
    assert select_candidates(hist, "C", 2)["arch"].tolist() == [best, near1]
    got = select_candidates(hist, "C", 2, min_distance=3, space=space)
    assert got["arch"].tolist() == [best, far] and got["candidate"].tolist() == [0, 1]
    assert got["history_row"].tolist() == [0, 3]
    assert diverse_top([0, 1, 2], [(0, 0), (0, 1), (1, 1)], 3, 2) == [0, 2]  # fewer qualify: all of them
    with pytest.raises(ValueError, match=r"final_round\.min_distance' must be an integer >= 0"):
        select_candidates(hist, "C", 2, min_distance=-1, space=space)
    with pytest.raises(ValueError, match="needs the search space"):
        select_candidates(hist, "C", 2, min_distance=3)


# ---------------------------------------------------------------- the static schedule


def test_round_slots_and_survivor_counts():
    assert round_slots(8, [1, 3], 0.5) == [8, 4]
    assert round_slots(5, [1, 1, 1], 0.5) == [5, 3, 2]
    assert round_slots(1, [1, 1, 1], 0.5) == [1, 1, 1]
    assert round_slots(0, [1, 3], 0.5) == [0, 0]
    assert round_slots(10, [1, 1], 0.3) == [10, 3]  # not 4 (10 * 0.3 = 3.0000000000000004)
    assert round_slots(3, [2, 2], 1) == [3, 3]
    assert [n_survivors(m, 0.5) for m in range(6)] == [0, 1, 1, 2, 2, 3]
    # fewer real candidates than slots never need more slots than the DAG has
    for k in range(1, 9):
        slots = round_slots(k, [1, 1, 1], 0.5)
        for m0 in range(1, k + 1):
            m = m0
            for n in slots[1:]:
                m = n_survivors(m, 0.5)
                assert m <= n


@pytest.mark.parametrize("args, key", [((-1, [1], 0.5), "final_round.k"), ((2, [], 0.5), "final_round.epochs"),
                                       ((2, [1, 0], 0.5), "final_round.epochs"), ((2, [1], 0), "final_round.keep"),
                                       ((2, [1], 1.5), "final_round.keep")])
def test_round_slots_reject_bad_config(args, key):
    with pytest.raises(ValueError, match=f"config key '{key}'"):
        round_slots(*args)


def test_slot_inputs_name_every_previous_state():
    assert slot_inputs("F", "C", 0, [4, 2]) == {"source": "F/C/candidates.parquet", "states": []}
    got = slot_inputs("F", "NC", 1, [4, 2])
    assert got["source"] == "F/NC/round0.parquet"
    assert got["states"] == [f"F/NC/round0/slot{j}.state.pt" for j in range(4)]


# ---------------------------------------------------------------- survivors and the choice


def round_table(net, rnd, rows, n_slots):
    """rows: (candidate, arch, score, val_acc); slots beyond them are empty."""
    recs = [{"net": net, "round": rnd, "slot": j, "candidate": c, "arch": a, "score": s, "params": 10 * (c + 1),
             "macs": 100 * (c + 1), "epochs_total": rnd + 1, "val_acc": v, "val_loss": 1 - v, "train_acc": v,
             "seconds": 0.1, "empty": False} for j, (c, a, s, v) in enumerate(rows)]
    recs += [{"net": net, "round": rnd, "slot": j, "candidate": -1, "arch": None, "score": np.nan, "params": -1,
              "macs": -1, "epochs_total": rnd + 1, "val_acc": np.nan, "val_loss": np.nan, "train_acc": np.nan,
              "seconds": 0.0, "empty": True} for j in range(len(rows), n_slots)]
    return pd.DataFrame.from_records(recs, columns=ROW_COLUMNS)


def test_survivors_rank_by_val_acc_then_score_then_candidate():
    t = round_table("C", 0, [(0, "a", 5.0, 0.5), (1, "b", 4.0, 0.8), (2, "c", 6.0, 0.8), (3, "d", 3.0, np.nan),
                             (4, "e", 2.0, 0.5)], 6)
    assert rank_round(t)["arch"].tolist() == ["c", "b", "a", "e", "d"]  # NaN last, empty slot ignored
    assert survivors(t, 0.5)["arch"].tolist() == ["a", "b", "c"]  # ceil(5 / 2) = 3 best, in candidate order
    assert survivors(t, 0.4)["arch"].tolist() == ["b", "c"]  # ceil(2.0) = 2
    same = round_table("C", 0, [(0, "a", 1.0, 0.5), (1, "b", 1.0, 0.5)], 2)
    assert survivors(same, 0.5)["arch"].tolist() == ["a"]  # full tie: the earlier candidate


def test_finalists_and_choice():
    cand = pd.DataFrame({"net": "C", "candidate": [0, 1, 2], "arch": ["a", "b", "c"], "score": [3.0, 2.0, 1.0]})
    r0 = round_table("C", 0, [(0, "a", 3.0, 0.4), (1, "b", 2.0, 0.7), (2, "c", 1.0, 0.6)], 4)
    r1 = round_table("C", 1, [(1, "b", 2.0, 0.75), (2, "c", 1.0, 0.9)], 2)
    fin = finalists_of("C", cand, [r0, r1], 0.5)
    assert list(fin.columns) == FINALIST_COLUMNS and len(fin) == 5
    assert fin["round"].tolist() == [0, 0, 0, 1, 1]
    assert fin["survived"].tolist() == [False, True, True, False, True]
    assert fin.loc[fin["chosen"], "arch"].tolist() == ["c", "c"]  # every row of the chosen candidate
    with pytest.raises(ValueError, match="round 1: trained .* expected .*stale"):
        finalists_of("C", cand, [r0, round_table("C", 1, [(0, "a", 3.0, 0.9), (1, "b", 2.0, 0.1)], 2)], 0.5)

    selected = pd.DataFrame({"net": ["C", "C", "NC", "NC"], "phase": ["before", "after", "before", "after"],
                             "arch": ["x0", "x1", "y0", "y1"]})
    choice = choose(selected, fin)
    assert list(choice.columns) == CHOICE_COLUMNS
    assert choice.to_dict("records")[0] == {"net": "C", "arch": "c", "source": "final_round", "val_acc": 0.9}
    # NC without a round of its own while C has one: C's winner (C's pool lies inside NC's)
    assert choice.to_dict("records")[1] == {"net": "NC", "arch": "c", "source": "final_round_C", "val_acc": 0.9}
    # NC with a round of its own: the better of its winner and C's (C's pool lies inside NC's)
    nc_cand = pd.DataFrame({"net": "NC", "candidate": [0, 1], "arch": ["big", "c"], "score": [5.0, 1.0]})
    for nc_best, want in ((0.95, ("big", "final_round", 0.95)), (0.85, ("c", "final_round_C", 0.9)),
                          (0.9, ("c", "final_round_C", 0.9))):  # a tie goes to C's winner
        nc_fin = finalists_of("NC", nc_cand, [round_table("NC", 0, [(0, "big", 5.0, 0.5), (1, "c", 1.0, 0.2)], 2),
                                              round_table("NC", 1, [(0, "big", 5.0, nc_best)], 1)], 0.5)
        both = choose(selected, pd.concat([fin, nc_fin], ignore_index=True))
        assert both.to_dict("records") == [
            {"net": "C", "arch": "c", "source": "final_round", "val_acc": 0.9},
            {"net": "NC", "arch": want[0], "source": want[1], "val_acc": want[2]}], nc_best
    zero = choose(selected, empty_finalists())  # final_round.k = 0
    assert zero["arch"].tolist() == ["x1", "y1"] and set(zero["source"]) == {"zero_cost"}
    assert zero["val_acc"].isna().all()
    # NC without a round but with nc_limits: the best-scored trainable net within them, not the
    # evolution's unbounded pick (y1); C keeps the evolution's
    hist = pd.DataFrame({"arch": ["big", "mid", "small"], "score": [9.0, 5.0, 1.0], "trainable": True,
                         "feasible": False, "params": [900, 90, 9], "macs": [9000, 900, 90]})
    lim = choose(selected, empty_finalists(), hist, {"max_params": 100, "max_macs": None})
    assert lim["arch"].tolist() == ["x1", "mid"] and set(lim["source"]) == {"zero_cost"}
    assert choose(selected, empty_finalists(), hist, None)["arch"].tolist() == ["x1", "y1"]


def test_chosen_arch_reads_the_choice_table(tmp_path):
    pd.DataFrame({"net": ["C", "NC"], "arch": ["ac", "anc"], "source": ["final_round", "zero_cost"],
                  "val_acc": [0.9, np.nan]}).to_parquet(tmp_path / "choice.parquet")
    assert chosen_arch(tmp_path / "choice.parquet", "C-inc") == "ac"
    assert chosen_arch(tmp_path / "choice.parquet", "NC") == "anc"
    pd.DataFrame({"net": ["NC"], "arch": ["anc"]}).to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match="one row with net == 'C' and an arch, found 0"):
        chosen_arch(tmp_path / "bad.parquet", "C-src")
    pd.DataFrame({"net": ["C", "C"], "phase": ["before", "after"], "arch": ["p", "q"]}).to_parquet(
        tmp_path / "selected.parquet")
    assert chosen_arch(tmp_path / "selected.parquet", "C") == "q"  # the evolution's table: its 'after' row


def test_plot_final_round(tmp_path):
    cand = pd.DataFrame({"net": "NC", "candidate": [0, 1], "arch": ["a", "b"], "score": [2.0, 1.0]})
    fin = finalists_of("NC", cand, [round_table("NC", 0, [(0, "a", 2.0, 0.3), (1, "b", 1.0, 0.6)], 2),
                                    round_table("NC", 1, [(1, "b", 1.0, 0.7)], 1)], 0.5)
    plot_final_round(fin, tmp_path / "p.png")
    plot_final_round(empty_finalists(), tmp_path / "empty.png")
    for name in ("p.png", "empty.png"):
        data = (tmp_path / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


# ---------------------------------------------------------------- continuing = one uninterrupted run


def toy_data(n, res=8, classes=4, seed=0):
    """Learnable: the class is the bright quadrant (plus noise)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n).astype(np.int64)
    x = rng.integers(0, 60, (n, res, res, 1)).astype(np.uint8)
    for i, c in enumerate(y):
        r, q = divmod(int(c), 2)
        x[i, r * 4:(r + 1) * 4, q * 4:(q + 1) * 4] += 150
    return x, y


def test_fit_stop_after_then_continue_equals_one_run(tmp_path):
    space = SearchSpace.from_config(SS_CFG)
    spec = space.netspec(Genes((1, 1), (1, 2), (4, 8)))
    x, y = toy_data(96)
    train, val = (x[:64], y[:64]), (x[64:], y[64:])
    s = {**SETTINGS, "epochs": 3, "seed": 5}

    def model():
        torch.manual_seed(0)
        return build_torch(spec)

    ref = model()
    ref_hist = fit(ref, train, val, STATS, s, progress=False)
    ck = tmp_path / "ck.pt"
    first = fit(model(), train, val, STATS, s, checkpoint_path=ck, progress=False, stop_after=1)
    assert first["epoch"].tolist() == [1] and load_checkpoint(ck)["epoch"] == 1
    # the lr of epoch 2 is the 3-epoch cosine's, not a fresh schedule's
    cont = build_torch(spec)  # other initial weights: the checkpoint must win
    hist = fit(cont, train, val, STATS, s, checkpoint_path=ck, progress=False, stop_after=3)
    pd.testing.assert_frame_equal(hist.drop(columns="seconds"), ref_hist.drop(columns="seconds"))
    for k, v in ref.state_dict().items():
        assert torch.equal(v, cont.state_dict()[k]), k
    with pytest.raises(ValueError, match="past stop_after = 2"):
        fit(model(), train, val, STATS, s, checkpoint_path=ck, progress=False, stop_after=2)
    for bad in (4, -1, 1.5):
        with pytest.raises(ValueError, match=r"stop_after must be an epoch count in 0\.\.3"):
            fit(model(), train, val, STATS, s, progress=False, stop_after=bad)


def write_data(d):
    d.mkdir()
    x, y = toy_data(176)
    for split, sl in (("train", slice(0, 96)), ("val", slice(96, 144)), ("test", slice(144, 176))):
        np.save(d / f"{split}_x.npy", x[sl])
        np.save(d / f"{split}_y.npy", y[sl])
    pd.DataFrame({"channel": [0], "mean": STATS[0], "std": STATS[1]}).to_parquet(d / "stats.parquet")
    return d


def test_rounds_through_files_continue_one_run(tmp_path):
    """Two rounds of the rule-level functions on real files (k = 4 slots for 3 distinct nets,
    epochs [1, 2], keep 0.5): an empty slot, 2 survivors, and the winner's final state equals an
    uninterrupted 3-epoch run of its arch from its own seed."""
    space = SearchSpace.from_config(SS_CFG)
    archs = [space.encode(Genes((1, 1), (1, 2), (4, 8))), space.encode(Genes((2, 1), (2, 2), (8, 8))),
             space.encode(Genes((1, 2), (1, 1), (4, 4)))]
    hist = history([(a, float(3 - i), 0.0, True, True, 10, 10) for i, a in enumerate(archs)] +
                   [(archs[0], 3.0, 0.0, True, True, 10, 10)])
    d = write_data(tmp_path / "data")
    f = tmp_path / "final" / "C"
    k, epochs, keep, seed = 4, [1, 2], 0.5, 11
    slots = round_slots(k, epochs, keep)
    assert slots == [4, 2]
    cand = select_candidates(hist, "C", k)
    f.mkdir(parents=True)
    cand.to_parquet(f.parent / "cand.parquet")
    settings = {**SETTINGS, "epochs": sum(epochs), "seed": seed}
    common = dict(net="C", data_dir=str(d), search_space=SS_CFG, settings=settings, k=k, epochs=epochs,
                  keep=keep, device="cpu", amp=False, threads=1, progress=False)
    rows0 = []
    for j in range(slots[0]):
        rows0.append(run_slot(round_index=0, slot=j, source=str(f.parent / "cand.parquet"), prev_states=[],
                              out_row=str(f / f"r0s{j}.parquet"), out_state=str(f / f"r0s{j}.pt"), **common))
    assert rows0[3]["empty"].iloc[0] and (f / "r0s3.pt").stat().st_size == 0
    assert [r["arch"].iloc[0] for r in rows0[:3]] == archs and not any(r["empty"].iloc[0] for r in rows0[:3])
    assert all(r["epochs_total"].iloc[0] == 1 and 0 <= r["val_acc"].iloc[0] <= 1 for r in rows0[:3])
    assert not list(f.glob("*.work"))  # the work checkpoints became the state files
    r0 = gather_round([str(f / f"r0s{j}.parquet") for j in range(4)], str(f / "round0.parquet"), "C", 0)
    surv = survivors(r0, keep)
    assert len(surv) == 2

    states0 = [str(f / f"r0s{j}.pt") for j in range(4)]
    (f / "r1s0.pt.work").write_bytes(b"stale garbage of a killed job")  # must not be resumed
    rows1 = [run_slot(round_index=1, slot=j, source=str(f / "round0.parquet"), prev_states=states0,
                      out_row=str(f / f"r1s{j}.parquet"), out_state=str(f / f"r1s{j}.pt"), **common)
             for j in range(2)]
    assert [r["arch"].iloc[0] for r in rows1] == surv["arch"].tolist()
    assert all(r["epochs_total"].iloc[0] == 3 for r in rows1)
    gather_round([str(f / f"r1s{j}.parquet") for j in range(2)], str(f / "round1.parquet"), "C", 1)
    pd.DataFrame({"net": ["C", "NC"], "phase": ["after", "after"], "arch": ["zc", "znc"]}).to_parquet(
        tmp_path / "selected.parquet")
    choice = run_choice(selected=str(tmp_path / "selected.parquet"), candidates={"C": str(f.parent / "cand.parquet")},
                        rounds={"C": [str(f / "round0.parquet"), str(f / "round1.parquet")]}, keep=keep,
                        out_finalists=str(tmp_path / "finalists.parquet"), out_choice=str(tmp_path / "choice.parquet"))
    fin = pd.read_parquet(tmp_path / "finalists.parquet")
    assert len(fin) == 5 and fin["chosen"].sum() == 2
    best = rank_round(pd.concat(rows1, ignore_index=True)).iloc[0]
    # NC has no round of its own here: C's winner, not the evolution's zero-cost pick "znc"
    assert choice["arch"].tolist() == [best["arch"], best["arch"]]
    assert choice["source"].tolist() == ["final_round", "final_round_C"]
    assert (choice["val_acc"] == best["val_acc"]).all()

    # every survivor continued its own round-0 run: = one uninterrupted 3-epoch run
    for j, r in enumerate(rows1):
        arch = r["arch"].iloc[0]
        s = {**settings, "seed": arch_seed(seed, arch)}
        torch.manual_seed(s["seed"])
        ref = build_torch(space.netspec(arch))
        ref_hist = fit(ref, load_split(d, "train"), load_split(d, "val"), STATS, s, progress=False)
        state = load_checkpoint(f / f"r1s{j}.pt")
        assert state["epoch"] == 3
        for key, v in ref.state_dict().items():
            assert torch.equal(v, state["model"][key]), (arch, key)
        assert r["val_acc"].iloc[0] == ref_hist["test_acc"].iloc[-1]

    # the same slot trained again elsewhere: the same row (deterministic from seed and arch)
    again = run_slot(round_index=0, slot=1, source=str(f.parent / "cand.parquet"), prev_states=[],
                     out_row=str(tmp_path / "again.parquet"), out_state=str(tmp_path / "again.pt"), **common)
    pd.testing.assert_frame_equal(again.drop(columns="seconds"), rows0[1].drop(columns="seconds"))
    with pytest.raises(ValueError, match=r"slot 2 outside 0\.\.1 of round 1"):
        run_slot(round_index=1, slot=2, source=str(f / "round0.parquet"), prev_states=states0,
                 out_row=str(tmp_path / "x.parquet"), out_state=str(tmp_path / "x.pt"), **common)


# ---------------------------------------------------------------- the Snakemake stage (slow)


@pytest.mark.slow
def test_snakemake_final_round_tiny(tiny_pipeline, tmp_path):
    """The shared TINY run (final round k = 2, epochs [1, 1]) trains the nets of choice.parquet
    and gives the expected finalists / choice shapes; then k = 0 gives the zero-cost choice."""
    r = tiny_pipeline / "results"
    shared_choice = pd.read_parquet(r / "evolution/choice.parquet")
    for net in ("C", "NC"):
        assert pd.read_parquet(r / f"train/{net}/metrics.parquet")["arch"].iloc[0] == \
            shared_choice.set_index("net").loc[net, "arch"]

    work = copy_pipeline(tiny_pipeline, tmp_path / "work")
    k = TINY["final_round"]["k"]
    assert TINY["final_round"]["epochs"] == [1, 1] and k >= 2
    cfg = write_yaml(work / "config.yaml", TINY)
    targets = [f"results/evolution/{f}" for f in ("choice.parquet", "finalists.parquet", "plots/final_round.png")]
    run_snakemake(work, cfg, targets, timeout=1200)
    evo = work / "results/evolution"
    hist = pd.read_parquet(evo / "history.parquet")
    fin = pd.read_parquet(evo / "finalists.parquet")
    choice = pd.read_parquet(evo / "choice.parquet").set_index("net")
    assert list(fin.columns) == FINALIST_COLUMNS
    winners = {}
    pools = {"C": hist[hist["feasible"]],
             "NC": hist[hist["trainable"]] if "trainable" in hist.columns else hist}
    for net, pool in pools.items():
        m0 = min(k, pool["arch"].nunique())
        m1 = math.ceil(m0 / 2)
        mine = fin[fin["net"] == net]
        assert (mine["round"] == 0).sum() == m0 and (mine["round"] == 1).sum() == m1, mine
        assert set(mine.loc[mine["round"] == 0, "arch"]) <= set(pool["arch"])
        assert mine.loc[mine["round"] == 0, "arch"].is_unique
        assert set(mine["epochs_total"]) == {1, 2} and mine["val_acc"].between(0, 1).all()
        last = mine[mine["round"] == 1]
        best = last.sort_values(["val_acc", "score", "candidate"], ascending=[False, False, True]).iloc[0]
        assert mine.loc[mine["chosen"], "arch"].unique().tolist() == [best["arch"]]
        winners[net] = best
    # C: its round's winner; NC: the better of its own winner and C's (C's on a tie)
    c_best, nc_best = winners["C"], winners["NC"]
    nc_want = (nc_best, "final_round") if nc_best["val_acc"] > c_best["val_acc"] else (c_best, "final_round_C")
    for net, (best, source) in {"C": (c_best, "final_round"), "NC": nc_want}.items():
        assert (choice.loc[net, "arch"], choice.loc[net, "source"]) == (best["arch"], source)
        assert choice.loc[net, "val_acc"] == best["val_acc"]
    for net in pools:
        rounds = [pd.read_parquet(evo / f"final/{net}/round{i}.parquet") for i in (0, 1)]
        assert [len(t) for t in rounds] == [k, math.ceil(k / 2)]  # static slots; empty rows fill the rest
        assert [int((~t["empty"]).sum()) for t in rounds] == [m0, m1]
        assert (work / f"results/logs/final_round/{net}_round1_slot{math.ceil(k / 2) - 1}.log").is_file()
    assert not list(evo.glob("final/*/round*/*.state.pt")), "state files are temp()"
    assert (evo / "plots/final_round.png").stat().st_size > 5000

    cfg0 = write_yaml(work / "config.yaml", deep_merge(TINY, {"final_round": {"k": 0}}))
    proc = run_snakemake(work, cfg0, ["results/evolution/choice.parquet"], timeout=600)
    assert "final_round_train" not in proc.stdout + proc.stderr
    zero = pd.read_parquet(evo / "choice.parquet")
    sel = pd.read_parquet(evo / "selected.parquet")
    after = sel[sel["phase"] == "after"].set_index("net")["arch"]
    assert zero["net"].tolist() == ["C", "NC"] and set(zero["source"]) == {"zero_cost"}
    assert zero["arch"].tolist() == [after["C"], after["NC"]] and zero["val_acc"].isna().all()
    empty = pd.read_parquet(evo / "finalists.parquet")
    assert len(empty) == 0 and list(empty.columns) == FINALIST_COLUMNS

    # the final round for C only (the default config): NC is C's winner and its train job reuses
    # C's training instead of repeating it
    cfg_c = write_yaml(work / "config.yaml", deep_merge(TINY, {"final_round": {"nets": ["C"]}}))
    run_snakemake(work, cfg_c, ["results/train/NC/metrics.parquet"], timeout=900)
    only_c = pd.read_parquet(evo / "choice.parquet").set_index("net")
    assert only_c.loc["NC", "source"] == "final_round_C" and only_c.loc["NC", "arch"] == only_c.loc["C", "arch"]
    assert set(pd.read_parquet(evo / "finalists.parquet")["net"]) == {"C"}
    tr = work / "results/train"
    nc_m, c_m = (pd.read_parquet(tr / f"{n}/metrics.parquet") for n in ("NC", "C"))
    assert nc_m["net"].tolist() == ["NC"]
    pd.testing.assert_frame_equal(nc_m.drop(columns="net"), c_m.drop(columns="net"), check_exact=True)
    assert "training outputs are reused" in (work / "results/logs/train/NC.log").read_text()


# ---------------------------------------------------------------- the deployment rule (selection)
def _sized(hist: pd.DataFrame) -> pd.DataFrame:
    return hist.assign(flash=hist["params"] * 1, peak_sram=hist["macs"] // 10)


def test_selection_smallest_within_orders_the_margin_set_by_cost():
    h = _sized(history([
        ("big", 3.0, 3.0, True, True, 9000, 90000),
        ("mid", 2.8, 2.8, True, True, 4000, 40000),
        ("small", 2.6, 2.6, True, True, 1000, 10000),
        ("tiny", 1.0, 1.0, True, True, 100, 1000),        # outside the margin
        ("huge", 5.0, 5.0, False, True, 100, 1000),       # infeasible: never a C candidate
    ]))
    best = select_candidates(h, "C", 4)
    assert best["arch"].tolist() == ["big", "mid", "small", "tiny"]  # best_under_budget: by score
    sel = {"rule": "smallest_within", "margin": 0.5, "cost": "flash"}
    got = select_candidates(h, "C", 4, selection=sel)
    assert got["arch"].tolist() == ["small", "mid", "big"]  # within 0.5 of 3.0, smallest flash first
    assert select_candidates(h, "C", 4, selection={**sel, "margin": 0})["arch"].tolist() == ["big"]
    assert select_candidates(h, "C", 4, selection={**sel, "margin": 10})["arch"].iloc[0] == "tiny"
    # NC ignores the rule (the unconstrained pool stays a score ranking)
    assert select_candidates(h, "NC", 2, selection=sel)["arch"].tolist() == ["huge", "big"]


def test_selection_without_a_round_picks_c_by_the_rule():
    h = _sized(history([
        ("big", 3.0, 3.0, True, True, 9000, 90000),
        ("small", 2.9, 2.9, True, True, 1000, 10000),
    ]))
    sel_tab = pd.DataFrame({"net": ["C", "NC"], "phase": ["after", "after"], "arch": ["big", "big"]})
    plain = choose(sel_tab, empty_finalists(), h)
    assert plain.set_index("net").loc["C", "arch"] == "big"
    rule = choose(sel_tab, empty_finalists(), h, selection={"rule": "smallest_within", "margin": 0.2})
    assert rule.set_index("net").loc["C", "arch"] == "small"


@pytest.mark.parametrize("sel, match", [
    ({"rule": "cheapest"}, r"selection\.rule' is 'cheapest'"),
    ({"cost": "energy"}, r"selection\.cost' is 'energy'"),
    ({"margin": -1}, r"selection\.margin' must be a number >= 0, got -1"),
    ({"margins": 1}, r"'selection' has unknown key\(s\) \['margins'\]"),
])
def test_selection_bad_values(sel, match):
    with pytest.raises(ValueError, match=match):
        select_candidates(_sized(HIST), "C", 2, selection=sel)
