"""Checks of a resolved config that the schema cannot express, run by the workflow at parse time
(so ``snakemake -n`` reports them, before any job): everything that can be decided from the config
and the existence of the inputs.

* population: the initial nets (no duplicate), ``evolution.sample_size`` and ``validation.nets``
  against their number;
* device: the constraints against the *smallest net of the search space* (fewest repeats, lowest
  expansion, narrowest channels in every stage, every cost of a MobileNetV2 net grows with each
  gene): a limit it exceeds, or with ``constraints.fit_device`` a ``device.ram_bytes`` below its
  TyBox device need (``tinyevo.space.memory``), leaves no net feasible; and, whatever
  ``fit_device`` says, ``device.ram_bytes`` below the floor no pruning can go under (see
  :func:`pruned_floor`); trainability guards no net can meet;
* class ids: ``search_space.num_classes`` against the dataset, every scenario's class lists
  (``tinyevo.scenarios.check_scenarios``);
* dataset: the configured paths and files exist (``tinyevo.data.sources.check_inputs``; nothing
  is opened), unless the prepared dataset is already under ``results/data/{name}/``.

Whatever depends on the data or on trained weights can only fail later, in its job, with one line
naming the key (:func:`tinyevo.runtime.excepthook`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from tinyevo.config import _KEY_IN_MESSAGE, _strip_key, dataset_num_classes


@dataclass(frozen=True)
class Problem:
    """A config that cannot run: the keys involved (dotted paths; the first is the one to
    change) and one sentence."""

    keys: tuple[str, ...]
    text: str


def from_message(msg: str, default_key: str) -> Problem:
    """A library check's ``ValueError`` message as a :class:`Problem` of the key it names."""
    m = _KEY_IN_MESSAGE.search(msg)
    key = m.group(1) if m else default_key
    return Problem((key,), _strip_key(msg, key))


def problems(cfg: Mapping[str, Any], workdir: str | os.PathLike = ".", results_dir: str | None = None) -> list[Problem]:
    """Every problem of the resolved ``cfg`` (see the module docstring)."""
    from tinyevo.space import SearchSpace

    space = SearchSpace.from_config(cfg["search_space"])
    out = population_problems(cfg, space)
    out += device_problems(cfg, space)
    out += class_problems(cfg, workdir)
    out += dataset_problems(cfg, workdir, results_dir)
    return out


# ------------------------------------------------------------------------------------ population
def _population_text(cfg: Mapping[str, Any]) -> str:
    pop = cfg["search_space"]["population"]
    if pop["mode"] == "grid":
        return (f"grid of {len(pop['structures'])} structures x {len(pop['expansions'])} expansions x "
                f"{len(pop['channels'])} channel vectors")
    return f"{pop['size']} random nets"


def population_problems(cfg: Mapping[str, Any], space) -> list[Problem]:
    try:
        archs = [space.encode(g) for _, g in space.initial_population()]
    except ValueError as exc:
        return [from_message(str(exc), "search_space.population")]
    out = []
    if len(set(archs)) < len(archs):
        seen: set[str] = set()
        dup = next(a for a in archs if a in seen or seen.add(a))
        out.append(Problem(("search_space.population",), f"net {dup} appears more than once in the "
                                                          f"initial population ({_population_text(cfg)})"))
    n = len(archs)
    evo, val = cfg["evolution"], cfg["validation"]
    if evo["sample_size"] > n:
        out.append(Problem(("evolution.sample_size", "search_space.population"),
                           f"value {evo['sample_size']} exceeds the population size, {n} initial nets "
                           f"({_population_text(cfg)}): the tournament draws without replacement"))
    if val["nets"] > n:
        out.append(Problem(("validation.nets", "search_space.population"),
                           f"value {val['nets']} exceeds the {n} initial nets the validation sample is drawn from"))
    return out


# ---------------------------------------------------------------------------------------- device
def smallest_genes(space):
    """Genes of the smallest net of ``space``: the lowest allowed value of every gene in every stage."""
    from tinyevo.space import GENES, Genes

    return Genes(*(tuple([min(space.allowed(g))] * space.n_stages) for g in GENES))


def pruned_floor(resolution: int, channels: int, num_classes: int, min_buffer_samples: int) -> int:
    """Bytes below which no net of the space fits the device, however far the compression stage
    prunes it: TyBox's memory model (Pavan et al., "TyBox: an automatic design and code-generation
    toolbox for TinyML incremental on-device learning", ACM TECS 2023; ``tinyevo.space.memory``)
    with every term at its least — the int8 input image in the activation arena
    (resolution^2 x channels bytes), the float32 classifier of a single feature
    ((F C + C) 4 weights + (F + C) 4 activations with F = 1), its state (4 C + 4 x 5) and the buffer
    of ``min_buffer_samples`` samples of (F + 1) bytes; the feature-extractor weights (counted by
    ``tybox.accounting: total``) only add to it."""
    from tinyevo.space.memory import FLOAT_BYTES, STATE_SCALARS

    F, C = 1, int(num_classes)
    classifier = (F * C + C) * FLOAT_BYTES + (F + C) * FLOAT_BYTES
    state = C * FLOAT_BYTES + STATE_SCALARS * 4
    return int(resolution) ** 2 * int(channels) + classifier + state + int(min_buffer_samples) * (F + 1)


def device_problems(cfg: Mapping[str, Any], space) -> list[Problem]:
    from tinyevo.space.constraints import LIMITS, Constraints

    dev, acc = cfg["device"], cfg["tybox"]["accounting"]
    ram, mb = int(dev["ram_bytes"]), int(dev["min_buffer_samples"])
    out = []
    floor = pruned_floor(space.resolution, space.in_channels, space.num_classes, mb)
    if floor > ram:
        out.append(Problem(("device.ram_bytes", "device.min_buffer_samples"),
                           f"M = {ram:,} B cannot hold any net, however pruned: the {space.resolution}x"
                           f"{space.resolution}x{space.in_channels} int8 input, a one-feature float classifier "
                           f"for {space.num_classes} classes and {mb} buffer samples alone need {floor:,} B"))
    try:
        cons = Constraints.from_config(cfg["constraints"], dev, acc, cfg["tybox"].get("target"))
        cons.check_space(space)
        spec = space.netspec(smallest_genes(space))
        row = cons.measure(spec)
    except ValueError as exc:
        return out + [from_message(str(exc), "constraints")]
    flags = cons.check(row)
    arch = space.encode(smallest_genes(space))
    for key, limit in cons.limits.items():
        col = LIMITS[key]
        if not flags[f"ok_{key}"]:
            out.append(Problem((f"constraints.{key}",),
                               f"value {limit:,} is below the {col} of the smallest net of the search space "
                               f"({arch}: {row[col]:,}), so no net is feasible"))
    if cons.fit_device and not flags["ok_device"] and floor <= ram:
        out.append(Problem(("device.ram_bytes", "device.min_buffer_samples", "constraints.fit_device"),
                           f"M = {ram:,} B is below the {row['device_bytes']:,} B that the smallest net of the "
                           f"search space ({arch}) needs under the TyBox memory model with {mb} buffer samples "
                           f"(tybox.accounting: {acc}), so with fit_device no net is feasible"))
    return out


# --------------------------------------------------------------------------------------- classes
def class_problems(cfg: Mapping[str, Any], workdir: str | os.PathLike = ".") -> list[Problem]:
    from tinyevo.scenarios import ScenarioError, check_scenarios

    ss, ds = cfg["search_space"], cfg["dataset"]
    out = []
    try:
        have = dataset_num_classes(ds, workdir)
    except ValueError:  # an imagefolder path problem: reported by the dataset check
        have = None
    if have is not None and ss["num_classes"] < have:
        out.append(Problem(("search_space.num_classes", "dataset.source"),
                           f"value {ss['num_classes']} is below the {have} classes of the dataset: labels "
                           f"{ss['num_classes']}..{have - 1} would have no classifier output"))
    if cfg["scenarios"]["names"]:
        try:
            check_scenarios(cfg["scenarios"], ss["num_classes"], cfg["tybox"]["lr"], cfg["tybox"]["loss"])
        except ScenarioError as exc:
            out.append(from_message(str(exc), "scenarios"))
    return out


# --------------------------------------------------------------------------------------- dataset
def prepared(cfg: Mapping[str, Any], results_dir: str | os.PathLike) -> bool:
    """True when every output of the data stage is already under ``results_dir``."""
    from tinyevo.data.store import output_names

    d = Path(results_dir) / "data" / str(cfg["dataset"]["name"])
    return all((d / n).is_file() for n in output_names())


def dataset_problems(cfg: Mapping[str, Any], workdir: str | os.PathLike = ".",
                     results_dir: str | os.PathLike | None = None) -> list[Problem]:
    from tinyevo.data import DataError
    from tinyevo.data.sources import check_inputs

    if results_dir is not None and prepared(cfg, results_dir):
        return []
    try:
        check_inputs(cfg["dataset"], workdir)
    except DataError as exc:
        found = from_message(str(exc), "dataset.path")
        if found.text.startswith("is required for source"):  # set nowhere: name the key that needs it
            found = Problem(("dataset.source", *found.keys), f"'{found.keys[0]}' {found.text}")
        return [found]
    return []

