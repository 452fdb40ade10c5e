"""tinyevo.resources: the cluster memory and time limit of every rule, sized from the config."""

from __future__ import annotations


from conftest import REPO
from tinyevo.config import load_config
from tinyevo.resources import MAX_RUNTIME, MIN_RUNTIME, activation_elements, largest_net, rule_resources, scaled
from tinyevo.space.cost import cost_of, layer_table
from tinyevo.space.spec import space_from_config

DEFAULT = REPO / "config" / "config.yaml"


def _cfg(overrides=None):
    return load_config([DEFAULT], overrides=overrides)[0]


def test_largest_net_bounds_every_net_of_the_grid():
    cfg = _cfg()
    space = space_from_config(cfg)
    grid_macs, grid_elems = largest_net(cfg["search_space"])
    nets = [space.netspec(g) for _, _, g in space.iter_arches()]
    assert max(cost_of(n).macs for n in nets) <= grid_macs <= largest_net(cfg["search_space"], alphabets=True)[0]
    worst_elems = max(sum(r["out_act"] for r in layer_table(n) if r["kind"] in ("conv", "dwconv")) for n in nets)
    assert worst_elems <= grid_elems
    assert activation_elements(cfg, grid_macs) == grid_elems
    assert activation_elements(cfg, 10_000 * grid_macs) == largest_net(cfg["search_space"], alphabets=True)[1]


def test_every_computing_rule_is_sized_within_bounds():
    sizes = rule_resources(_cfg())
    for name in ("data", "enumerate_space", "score_shard", "evolve", "train", "final_round_train:0",
                 "validate_net", "compress", "tybox", "scenario_tune", "scenario_run", "evolve_plots"):
        assert name in sizes, name
    for name, res in sizes.items():
        assert MIN_RUNTIME <= res["runtime"] <= MAX_RUNTIME, (name, res)
        assert 1000 <= res["mem_mb"] <= 64000, (name, res)
    # the torch jobs hold more than the plotting ones, compress (TensorFlow as well) the most
    assert sizes["train"]["mem_mb"] > sizes["evolve_plots"]["mem_mb"]
    assert sizes["compress"]["mem_mb"] > sizes["train"]["mem_mb"]


def test_sizes_follow_the_config():
    base = rule_resources(_cfg())
    # more epochs: a longer training limit, the same memory
    longer = rule_resources(_cfg({"train": {"epochs": 400}}))
    assert longer["train"]["runtime"] > base["train"]["runtime"]
    assert longer["train"]["mem_mb"] == base["train"]["mem_mb"]
    # a bigger batch: more memory
    assert rule_resources(_cfg({"train": {"batch_size": 1024}}))["train"]["mem_mb"] > base["train"]["mem_mb"]
    # more shards: fewer nets per scoring job, a shorter limit
    shards = base["score_shard"]["runtime"], rule_resources(_cfg({"scoring": {"shards": 64}}))["score_shard"]["runtime"]
    assert shards[1] < shards[0]
    # a bigger dataset: more memory and time for the data and the training
    fm = rule_resources(load_config([DEFAULT, REPO / "config" / "fashion_mnist.yaml"])[0])
    assert fm["data"]["mem_mb"] > base["data"]["mem_mb"]
    assert fm["train"]["runtime"] > base["train"]["runtime"]
    # later final rounds train longer (their epochs)
    fr = rule_resources(_cfg({"final_round": {"k": 4, "epochs": [1, 200]}}))
    assert fr["final_round_train:1"]["runtime"] > fr["final_round_train:0"]["runtime"]
    # the limit stops at two days (a site's partition cap), whatever the config asks
    assert rule_resources(_cfg({"train": {"epochs": 10**6}}))["train"]["runtime"] == MAX_RUNTIME


def test_retries_scale_the_first_request():
    assert [scaled(300, a) for a in (1, 2, 3)] == [300, 600, 900]
    assert scaled(300, 0) == 300  # Snakemake's dry run may ask for attempt 0
