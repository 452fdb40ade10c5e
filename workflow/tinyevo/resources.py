"""Cluster resources of every rule, from the configuration: memory (``mem_mb``) and time limit
(``runtime``, minutes; ``sbatch --mem`` and ``-t`` through profiles/slurm).

A job is sized by what it holds and what it computes, both known from the config before any table
exists: the dataset (images per split, resolution, channels), the largest net the stage may meet
(the search's MACs bounds), the epochs, the nets per scoring shard, the evolution's cycles, the
scenario streams. The constants are measured figures of this project's default digits run (its
``benchmark:`` files, README "Performance") with generous headroom, so that a limit is a safety
net, not a prediction:

- a Python job that imports torch peaks at 0.95-1.2 GB on digits, a compress job (TensorFlow as
  well) at 1.6 GB, a pandas/matplotlib job under 0.25 GB;
- the default C net trains at about 160 images/s on one thread, 4 GMAC/s counting forward and
  backward as 3 passes; a limit assumes a quarter of that per thread (``CPU_GMACS``) and the
  largest net the stage may meet, for every net and image;
- a training step at batch 64 takes 32-48 bytes per activation element of one image (7 nets of
  the default pool).

Both values grow with each retry (``attempt``): a job SLURM stopped at its time limit or for its
memory is re-submitted (profiles/slurm ``retries``) with twice as much, then three times.

No torch: the workflow evaluates it while building the DAG (the nets' sizes come from the space's
cost model, which the config checks have imported by then).
"""

from __future__ import annotations

import math
from typing import Any, Mapping

from tinyevo.space.cost import layer_table
from tinyevo.space.spec import Genes, SearchSpace

# Peak memory of a job by what it imports (MB): measured 0.95-1.2 GB (torch), 1.6 GB (torch +
# TensorFlow, compress), <= 0.25 GB (pandas, matplotlib), with headroom.
TORCH_MB = 1500
TF_MB = 2500
LIGHT_MB = 1000
# Throughput a time limit assumes, per torch thread on a CPU (GMAC/s, forward + backward = 3
# passes): a quarter of the default run's (4 GMAC/s for the C net on one thread).
CPU_GMACS = 1.0
# Memory of a training or scoring batch per activation element (every layer's output) of one
# image: 32-48 bytes measured (peak RSS of two SGD steps at batch 64 minus the torch baseline and
# the parameters, 7 nets of the default pool, 3.9-13 M MACs; saved BN and activation outputs,
# gradients, the allocator's slack), with headroom.
BYTES_PER_ELEMENT = 80
# Weights, gradients and momentum, float32.
PARAM_BYTES = 12
# The emulated Cortex-M4F (QEMU -icount) and the host build run the stream at >= 20 M
# instructions/s; 12.4 instructions per MAC for inference (measured, README "On a Cortex-M"), a
# training step costs about 0.3 of an inference.
EMU_INSTR_PER_S = 20e6
INSTR_PER_MAC = 13.0
# The scenario jobs: 7 ms per stream sample measured (feature extraction + learner), 20x headroom.
SCENARIO_SAMPLE_SECONDS = 0.15
# Every limit gets this much for the job's start (Python, torch import, reading inputs), minutes.
START_MIN = 5
MIN_RUNTIME = 10
# No first limit beyond two days: many sites cap their partitions there (`sinfo -o "%P %l"`), and a
# job asking for more would never start. A bound search on a CPU (the paper's unbounded evolution,
# VWW training on CPUs) can need longer: raise it with --set-resources RULE:runtime=MIN.
MAX_RUNTIME = 2 * 24 * 60

# Images in a dataset, by source (all splits); an ImageFolder tree's size is unknown before the
# data stage: bounded by dataset.max_per_split when set, else this.
SOURCE_IMAGES = {"digits": 1797, "fashion_mnist": 70000, "cifar10": 60000, "vww": 120000}
UNKNOWN_IMAGES = 200000


def dataset_images(cfg: Mapping[str, Any]) -> int:
    """Images of all splits together (an upper bound)."""
    ds = cfg["dataset"]
    n = SOURCE_IMAGES.get(ds["source"], UNKNOWN_IMAGES)
    if ds.get("max_per_split"):
        n = min(n, 3 * int(ds["max_per_split"]))
    return n


def net_cost(ss: Mapping[str, Any], repeats, expansions, channels) -> tuple[float, float]:
    """(MACs, activation elements) per image of the net with these genes, from the space's own
    model (:func:`tinyevo.space.cost.layer_table`); the elements count the output of every
    convolution."""
    rows = layer_table(SearchSpace.from_config(ss).netspec(Genes(repeats, expansions, channels)))
    return (float(sum(r["macs"] for r in rows)),
            float(sum(r["out_act"] for r in rows if r["kind"] in ("conv", "dwconv"))))


def largest_net(ss: Mapping[str, Any], alphabets: bool = False) -> tuple[float, float]:
    """(MACs, activation elements) of a net with, in every stage, the most repeats, the widest
    expansion and the most channels of the initial population's grid (``alphabets``: of the
    mutation alphabets as well): at least those of any net the stage meets."""
    pop, n = ss["population"], len(ss["strides"])

    def stage_max(gene, grid_key):
        vals = [max(vec[s] for vec in pop[grid_key]) for s in range(n)] if pop["mode"] == "grid" \
            else [max(ss["alphabets"][gene])] * n
        return [max(v, max(ss["alphabets"][gene])) for v in vals] if alphabets else vals

    return net_cost(ss, stage_max("repeats", "structures"), stage_max("expansions", "expansions"),
                    stage_max("channels", "channels"))


def largest_net_macs(ss: Mapping[str, Any], alphabets: bool = False) -> float:
    return largest_net(ss, alphabets)[0]


def search_macs(cfg: Mapping[str, Any]) -> float:
    """The largest MACs per image the scoring of the initial pool meets."""
    return largest_net_macs(cfg["search_space"])


def evolution_macs(cfg: Mapping[str, Any]) -> float:
    """The largest MACs per image the evolution scores: evolution.ceiling x constraints.max_macs
    (children beyond it are not scored), else the largest net the alphabets allow."""
    mm, ceiling = cfg.get("constraints", {}).get("max_macs"), cfg.get("evolution", {}).get("ceiling")
    if mm and ceiling:
        return max(float(mm) * float(ceiling), search_macs(cfg))
    return largest_net_macs(cfg["search_space"], alphabets=True)


def trained_macs(cfg: Mapping[str, Any]) -> float:
    """The largest MACs per image a training job may meet: C within constraints.max_macs, NC within
    final_round.nc_limits; the validation sample and its top picks come from the initial pool."""
    bounds = [search_macs(cfg)]
    mm = cfg.get("constraints", {}).get("max_macs")
    nc = (cfg.get("final_round", {}).get("nc_limits") or {}).get("max_macs")
    bounds += [float(v) for v in (mm, nc) if v]
    if not (mm and nc):
        bounds.append(evolution_macs(cfg))
    return max(bounds)


def population_size(cfg: Mapping[str, Any]) -> int:
    pop = cfg["search_space"]["population"]
    if pop["mode"] == "grid":
        return math.prod(len(pop[k]) for k in ("structures", "expansions", "channels"))
    return int(pop["size"])


def _data_mb(cfg: Mapping[str, Any]) -> float:
    ds = cfg["dataset"]
    return dataset_images(cfg) * int(ds["resolution"]) ** 2 * int(ds["channels"]) / 2**20


def _minutes(seconds: float) -> int:
    return min(MAX_RUNTIME, max(MIN_RUNTIME, START_MIN + math.ceil(seconds / 60.0)))


def _round_mb(mb: float) -> int:
    return int(math.ceil(mb / 100.0) * 100)


def _train_seconds(cfg: Mapping[str, Any], epochs: float, threads: int) -> float:
    """Seconds of ``epochs`` over every image of the dataset for the largest trained net."""
    work = 3.0 * trained_macs(cfg) * dataset_images(cfg) * epochs
    return work / (CPU_GMACS * 1e9 * max(1, threads))


def activation_elements(cfg: Mapping[str, Any], macs: float) -> float:
    """Activation elements per image of a net of at most ``macs`` MACs: the grid's largest net's,
    grown with the square root of the MACs beyond it (a net k times wider has k^2 the MACs and k
    times the activations; depth grows both alike), at most the alphabets' largest net's."""
    ss = cfg["search_space"]
    grid_macs, grid_elems = largest_net(ss)
    return min(largest_net(ss, alphabets=True)[1], grid_elems * math.sqrt(max(1.0, macs / grid_macs)))


def _batch_mb(cfg: Mapping[str, Any], batch: int, macs: float) -> float:
    # parameters bounded by the MACs as well (every weight is used at least once per image)
    return (batch * activation_elements(cfg, macs) * BYTES_PER_ELEMENT + min(macs, 50e6) * PARAM_BYTES) / 2**20


def _train_mb(cfg: Mapping[str, Any], batch: int, base: int = TORCH_MB) -> int:
    return _round_mb(base + _data_mb(cfg) + _batch_mb(cfg, batch, trained_macs(cfg)))


def _score_seconds(cfg: Mapping[str, Any], nets: int, proxies: int, threads: int, macs: float) -> float:
    """``nets`` nets, each a forward and backward pass of one proxy batch per proxy."""
    work = 3.0 * macs * int(cfg["proxies"]["batch_size"]) * max(1, proxies) * nets
    return work / (CPU_GMACS * 1e9 * max(1, threads))


def _score_mb(cfg: Mapping[str, Any], macs: float) -> int:
    return _round_mb(TORCH_MB + _data_mb(cfg) + _batch_mb(cfg, int(cfg["proxies"]["batch_size"]), macs))


def rule_resources(cfg: Mapping[str, Any]) -> dict[str, dict[str, int]]:
    """{rule: {"mem_mb", "runtime"}} at the first attempt, for every rule that computes;
    ``final_round_train`` per round as ``final_round_train:<round>``."""
    light = {"mem_mb": LIGHT_MB, "runtime": MIN_RUNTIME}
    out: dict[str, dict[str, int]] = {}
    src = cfg["dataset"]["source"]
    # data: torch + torchvision and the raw arrays; VWW also parses the COCO instances JSON
    # (1-2 GB per 2014 file); decoding JPEGs of VWW / ImageFolder takes hours, not minutes
    out["data"] = {"mem_mb": {"vww": 12000}.get(src, _round_mb(TORCH_MB + 4 * _data_mb(cfg))),
                   "runtime": 240 if src in ("vww", "imagefolder") else 30}
    n = population_size(cfg)
    out["enumerate_space"] = {"mem_mb": LIGHT_MB, "runtime": _minutes(n * 0.01)}
    shards = max(1, int(cfg["scoring"]["shards"]))
    sthreads = int(cfg["scoring"]["threads"])
    nproxies = len(cfg["proxies"]["names"])
    smacs = search_macs(cfg)
    out["score_shard"] = {"mem_mb": _score_mb(cfg, smacs),
                          "runtime": _minutes(_score_seconds(cfg, math.ceil(n / shards), nproxies, sthreads, smacs))}
    info = cfg["proxies"].get("informativeness") or {}
    info_work = int(info.get("nets", 24)) * int(info.get("seeds", 3))
    out["proxy_informativeness"] = {"mem_mb": _score_mb(cfg, smacs), "runtime": _minutes(
        _score_seconds(cfg, info_work, len(info.get("names") or []) or nproxies, sthreads, smacs))}
    evo = cfg["evolution"]
    children = int(evo["cycles"]) * int(evo.get("children_per_cycle", 1))
    if evo.get("algorithm") == "nsga2":
        nsga = evo.get("nsga2") or {}
        children = max(children, int(nsga.get("pop_size", 50)) * int(evo["cycles"]))
    emacs = evolution_macs(cfg)
    out["evolve"] = {"mem_mb": _score_mb(cfg, emacs) + 1000,  # + the history and the score cache
                     "runtime": _minutes(_score_seconds(cfg, children, nproxies, int(evo.get("threads", 1)), emacs))}
    tr = cfg["train"]
    tthreads = int(tr.get("threads", 1))
    out["train"] = {"mem_mb": _train_mb(cfg, int(tr["batch_size"])),
                    "runtime": _minutes(_train_seconds(cfg, float(tr["epochs"]), tthreads))}
    fr = cfg.get("final_round") or {}
    for r, ep in enumerate(fr.get("epochs") or [1]):
        out[f"final_round_train:{r}"] = {"mem_mb": _train_mb(cfg, int(tr["batch_size"])),
                                         "runtime": _minutes(_train_seconds(cfg, float(ep), tthreads))}
    val = cfg["validation"]
    out["validate_net"] = {"mem_mb": _train_mb(cfg, int(tr["batch_size"])),
                           "runtime": _minutes(_train_seconds(cfg, float(val["epochs"]), int(val.get("threads", 1))))}
    out["validation_plan"] = dict(light, mem_mb=2000)
    out["validation_gather"] = dict(light, mem_mb=2000)
    cp = cfg["compress"]
    steps = int(cp["max_steps"]) if cp.get("sweep") == "full" else min(int(cp["max_steps"]), 4)
    # fine-tunes of the pruning steps plus an evaluation (one more epoch) per step, the int8
    # conversion and its check on every test image
    comp_epochs = steps * (float(cp["finetune_epochs"]) + 1) + 2
    out["compress"] = {"mem_mb": _train_mb(cfg, int(tr["batch_size"]), base=TF_MB),
                       "runtime": _minutes(600 + _train_seconds(cfg, comp_epochs, int(cp.get("threads", 1))))}
    sc = cfg["scenarios"]
    stream = int(sc["stream_length"])
    # the TyBox job: host build and the stream check, plus the Cortex-M4F build and QEMU run of the
    # inference, training and stream checks
    emu = stream * float(cfg["constraints"].get("max_macs") or trained_macs(cfg)) * INSTR_PER_MAC * 1.3 / EMU_INSTR_PER_S
    out["tybox"] = {"mem_mb": 2000, "runtime": _minutes(600 + emu)}
    tune = sc.get("tune") or {}
    grid = len(tune.get("lrs") or [1]) * len(tune.get("losses") or [1]) * len(tune.get("new_class_init") or [1])
    samples = stream + int(sc["eval_size"])
    variants = len(sc.get("variants") or [1])
    out["scenario_tune"] = {"mem_mb": 3000, "runtime": _minutes(
        int(tune.get("repetitions", 1)) * grid * samples * SCENARIO_SAMPLE_SECONDS)}
    out["scenario_run"] = {"mem_mb": 3000, "runtime": _minutes(
        int(sc["repetitions"]) * variants * samples * SCENARIO_SAMPLE_SECONDS)}
    for name in ("score_gather", "rank_initial", "evolve_plots", "final_round_candidates", "final_round_gather",
                 "final_round_choice", "plot_final_round", "plot_training", "plot_validation", "compress_plot",
                 "scenario_gather", "scenario_plot", "report_tables", "report_summary", "report_stage_times"):
        out[name] = dict(light)
    return out


def scaled(value: int, attempt: int) -> int:
    """A resource at retry ``attempt`` (1 = the first submission): ``attempt`` times the first."""
    return int(value) * max(1, int(attempt))
