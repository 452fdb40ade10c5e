# Shared helpers for the stage files: functions only (`snakemake --lint` wants them apart from
# the stage definitions). Each stage file appends its final outputs to ALL_TARGETS, which the
# default target in the root Snakefile requests.

ALL_TARGETS = []


def env(name):
    """Path of a conda environment spec, relative to the rule files."""
    return f"../../envs/{name}.yaml"


from tinyevo.codehash import script_digest as _script_digest


def code_of(script):
    """A rule's `code` param: the digest of the tinyevo modules (and their data files) that
    workflow/scripts/<script>.py imports, transitively (tinyevo.codehash). Snakemake's own code
    trigger hashes the script file only; with this param a change to the library code a rule
    runs re-runs that rule, and a change elsewhere in the package does not."""
    return _script_digest(os.path.join(WORKFLOW_DIR, "scripts", f"{script}.py"))


def log_of(stage, name="main"):
    return f"{RESULTS}/logs/{stage}/{name}.log"


def bench_of(stage, name="main"):
    """Snakemake's benchmark file of a job (wall and CPU seconds, peak memory): the stage-time
    table of the report and the README is made from these."""
    return f"{RESULTS}/benchmarks/{stage}/{name}.tsv"


# ---- training (train.smk) ----------------------------------------------------------------------
from tinyevo.train.classes import class_subset as _class_subset


from tinyevo.runtime import cuda_device_visible as _cuda_visible


def _train_gpu():
    """gpu=1 for a job that trains on CUDA: compute.device cuda, or auto on a machine that shows
    an NVIDIA device (profiles/default then runs one such job at a time, one GPU per machine). On
    a CPU-only machine 0, so the trainings run side by side on the cores. Snakemake limits `gpu`
    only when it is given on the command line or in a profile; profiles/slurm sets it per rule,
    whatever the submit host has."""
    dev = config["compute"]["device"]
    if dev in ("cpu", "mps"):
        return 0
    return 1 if dev.startswith("cuda") or _cuda_visible() else 0


# Scheduling: after the final round the branches C, C-inc, C-src (train -> compress -> tybox ->
# scenario tuning -> scenario run) and NC (train only) compete for the cores. A job earlier in
# its chain goes first, so every branch gets to its scenarios and the run ends with scenario jobs
# of all three side by side; ordering by branch instead left the transfer chain of C-src running
# alone on one core for the last 90 s of a default run. Ties go to C, then C-inc; NC, a leaf (a
# copy of C's training by default), fills the gaps. Priorities only order runnable jobs; the
# tables do not change.
_STAGE_PRIORITY = {"train": 40, "compress": 30, "tybox": 20, "scenario_tune": 10, "scenario_run": 5}
_BRANCH_TIEBREAK = {"C": 2, "C-inc": 1, "C-src": 0}


def _branch_priority(stage):
    def priority(wildcards):
        net = wildcards.get("net") or _SCEN_NET[wildcards.scenario]
        return _STAGE_PRIORITY[stage] + _BRANCH_TIEBREAK[net] if net in _BRANCH_TIEBREAK else 0

    return priority


def _train_settings(epochs=None, seed=None):
    """The `train` section as fit() settings; horizontal flips only for natural images."""
    s = dict(config["train"])
    s["flip"] = config["dataset"]["source"] in ("cifar10", "vww", "imagefolder")
    if epochs is not None:
        s["epochs"] = epochs
    if seed is not None:
        s["seed"] = seed
    return s


def _train_subset(wildcards):
    """Classes, classifier outputs and label remapping of branch {net} (C-inc / C-src use the
    scenario class lists; C / NC all classes, independent of the scenarios section)."""
    return _class_subset(wildcards.net, config["search_space"]["num_classes"], config["scenarios"]).meta()


def data_inputs(*splits):
    """The data stage's x / y arrays of ``splits`` and its stats table (rules.data.output; call
    it once data.smk is included)."""
    out = rules.data.output
    return [getattr(out, f"{s}_{a}") for s in splits for a in ("x", "y")] + [out.stats]


# ---- scenarios (scenarios.smk) -----------------------------------------------------------------
from tinyevo.scenarios import NET_OF as _SCEN_NET
from tinyevo.scenarios import SCENARIOS as _SCENARIOS

def _scenario_inputs(wildcards):
    net = _SCEN_NET[wildcards.scenario]
    d = {
        "data": data_inputs("train", "val", "test"),
        "tflite": f"{RESULTS}/compress/{net}/fe_int8.tflite",
    }
    if wildcards.variant == "float":
        d["model"] = f"{RESULTS}/train/{net}/model.pt"
    else:
        d["tybox"] = f"{RESULTS}/tybox/{net}/src"
    return d


def _scenario_run_inputs(wildcards):
    """The inputs of a scenario_run job: those of its tuning job, plus the tuning table when
    scenarios.tune.enabled."""
    d = _scenario_inputs(wildcards)
    if config["scenarios"]["tune"]["enabled"]:
        d["tune"] = f"{RESULTS}/scenarios/{wildcards.scenario}/tune/{wildcards.variant}.parquet"
    return d


def _scenario_settings(wildcards):
    """The scenarios section without the other scenarios' sub-sections (so that changing one
    scenario's settings re-runs only that scenario)."""
    sc = config["scenarios"]
    keep = {k: v for k, v in sc.items() if k not in _SCENARIOS and k not in ("names", "variants")}
    keep[wildcards.scenario] = sc[wildcards.scenario]
    return keep


# ---- report (report.smk) -----------------------------------------------------------------------
def _section_tables(wildcards):
    """name -> Parquet table of every report table of {section}."""
    return {name: path for name, (sec, path, _) in REPORT_TABLES.items() if sec == wildcards.section}


_TRAIN_OUTPUTS = ("model.pt", "history.parquet", "metrics.parquet", "confusion.parquet")


def _train_same_as(wc):
    """NC without a final round of its own while C has one is C's winner (choice.parquet, source
    final_round_C), trained with the same settings: its job reuses C's outputs instead of
    repeating the training step for step (tinyevo.train.stage.run_training)."""
    if wc.net == "NC" and "C" in FINAL_NETS and "NC" not in FINAL_NETS:
        return {f"same_{f.split('.')[0]}": f"{RESULTS}/train/C/{f}" for f in _TRAIN_OUTPUTS}
    return {}


# ---- cluster resources (profiles/slurm: sbatch --mem, -t) ---------------------------------------
from tinyevo.resources import rule_resources as _rule_resources
from tinyevo.resources import scaled as _scaled

_RESOURCES = _rule_resources(config)


def sized(name):
    """`mem_mb` and `runtime` of the rule `name` from the config (tinyevo.resources), each a
    multiple of the first submission's at a retry; final_round_train's by its round."""
    if name == "final_round_train":
        def pick(wildcards):
            return _RESOURCES[f"final_round_train:{wildcards.round}"]
    else:
        def pick(wildcards):
            return _RESOURCES[name]
    return {
        "mem_mb": lambda wildcards, attempt: _scaled(pick(wildcards)["mem_mb"], attempt),
        "runtime": lambda wildcards, attempt: _scaled(pick(wildcards)["runtime"], attempt),
    }
