"""Every user mistake caught before work starts, named by file and line.

A table of malformed configs, each given as a --configfile, as the base config/config.yaml and,
where a --config form exists, on the command line. Each is run through ``tinyevo.config.main``,
the Snakefile's own entry point (``load_workflow_config``) behind a command line, in-process: exit
status 1, the key path, the file and the exact line (a whole number: ``line 3`` never matches
``line 36``) or the --config argument, no traceback, nothing written under results/. A handful
run through a real ``snakemake -n`` as well.
"""

from __future__ import annotations

import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import REPO
from tinyevo.config import main


@dataclass(frozen=True)
class Case:
    id: str
    text: str  # the YAML file
    key: str | None  # the key path named first; None for a YAML syntax error (only the file and line)
    line: int  # line of that key (of the syntax error) in ``text``
    cli: str | None = None  # the same mistake as one --config argument, where Snakemake's parser keeps it
    what: str = ""  # a fragment of the explanation


CASES = [
    # the schema, per source
    Case("typo_nested", "seed: 0\nevolution:\n  cycels: 3\n", "evolution.cycels", 3, "evolution={cycels: 3}",
         "unknown key 'cycels'"),
    Case("typo_top", "seed: 0\nevolutoin:\n  cycles: 3\n", "evolutoin", 2, "evolutoin={cycles: 3}", "unknown key"),
    Case("yes_is_a_string", "compute:\n  amp: yes\n", "compute.amp", 2, "compute={amp: yes}", "expected boolean"),
    Case("quoted_integer", 'evolution:\n  cycles: "500"\n', "evolution.cycles", 2, None, "expected integer"),
    Case("leading_zero_name", "dataset:\n  name: 0123\n", "dataset.name", 2, None, "0123 (read as the integer 123)"),
    Case("float_for_integer", "evolution:\n  cycles: 1e3\n", "evolution.cycles", 2, "evolution={cycles: 1e3}",
         "expected integer"),
    Case("negative_lr", "train:\n  lr: -0.1\n", "train.lr", 2, "train={lr: -0.1}", "out of range"),
    Case("enum", "ranking:\n  method: zcore\n", "ranking.method", 2, "ranking={method: zcore}", "is not one of"),
    Case("list_item", "proxies:\n  names: [snip, nope]\n", "proxies.names[1]", 2, "proxies={names: [snip, nope]}",
         "'nope' is not one of"),
    Case("empty_list", "proxies:\n  names: []\n", "proxies.names", 2, "proxies={names: []}", "minItems 1"),
    Case("repeated_item", "proxies:\n  names: [snip, snip]\n", "proxies.names", 2, None, "more than once"),
    Case("name_pattern", 'dataset:\n  name: "my data"\n', "dataset.name", 2, "dataset={name: my data}",
         "does not match"),
    Case("section_type", "seed: 1\ntrain: 5\n", "train", 2, "train=5", "expected object"),
    Case("device_pattern", "compute:\n  device: cuda0\n", "compute.device", 2, "compute={device: cuda0}",
         "does not match"),
    Case("stride_item", "search_space:\n  strides: [1, 5, 2]\n", "search_space.strides[1]", 2,
         "search_space={strides: [1, 5, 2]}", "out of range"),
    Case("bool_for_integer", "seed: true\n", "seed", 1, "seed=True", "expected integer"),
    Case("null_for_integer", "train:\n  epochs: null\n", "train.epochs", 2, "train={epochs: null}", "expected integer"),
    Case("huge_value", "dataset:\n  name: " + "x y" * 40_000 + "\n", "dataset.name", 2, None, "(120000 characters)"),
    # keys that go together
    Case("fractions", "dataset:\n  val_fraction: 0.5\n  test_fraction: 0.5\n", "dataset.val_fraction", 2, None,
         "sum must be < 1"),
    Case("change_point", "scenarios:\n  stream_length: 50\n  change_point: 60\n", "scenarios.change_point", 3,
         "scenarios={stream_length: 50, change_point: 60}", "smaller than the stream length"),
    Case("population_vector", "search_space:\n  population:\n    structures: [[1, 2, 3]]\n",
         "search_space.population.structures[0]", 3, None, "one per stage"),
    Case("weight_of_unknown_proxy", "proxies:\n  names: [snip, synflow]\n  weights: {snipp: 2}\n",
         "proxies.weights.snipp", 3, "proxies={names: [snip, synflow], weights: {snipp: 2}}", "not in proxies.names"),
    # against the search space, the device, the classes and the dataset (tinyevo.preflight)
    Case("sample_larger_than_population", "seed: 0\nevolution:\n  sample_size: 600\n", "evolution.sample_size", 3,
         "evolution={sample_size: 600}", "exceeds the population size, 512 initial nets"),
    Case("validation_larger_than_population", "validation:\n  nets: 513\n", "validation.nets", 2, None,
         "exceeds the 512 initial nets"),
    Case("ram_below_smallest_net", "device:\n  ram_bytes: 20000\n", "device.ram_bytes", 2,
         "device={ram_bytes: 20000}", "smallest net of the search space"),
    Case("ram_below_any_pruning", "constraints:\n  fit_device: false\ndevice:\n  ram_bytes: 900\n",
         "device.ram_bytes", 4, None, "however pruned"),
    Case("limit_below_smallest_net", "constraints:\n  max_params: 10\n", "constraints.max_params", 2,
         "constraints={max_params: 10}", "no net is feasible"),
    Case("instructions_below_smallest_net", "constraints:\n  max_instructions: 1000\n", "constraints.max_instructions",
         2, "constraints={max_instructions: 1000}", "no net is feasible"),
    Case("instructions_without_a_fitted_target", "constraints:\n  max_instructions: 10000000\ntybox:\n  target: host\n",
         "constraints.max_instructions", 2, None, "needs an instruction model of tybox.target 'host'"),
    Case("guard_no_net_meets", "constraints:\n  min_width: 5000\n", "constraints.min_width", 2, None,
         "cannot hold for any net"),
    Case("num_classes_below_dataset", "search_space:\n  num_classes: 5\n", "search_space.num_classes", 2,
         "search_space={num_classes: 5}", "below the 10 classes"),
    Case("class_id_outside_dataset", "scenarios:\n  incremental:\n    new_classes: [8, 12]\n",
         "scenarios.incremental.new_classes", 3, None, "value [8, 12]: class id(s) [12] not in the dataset"),
    Case("missing_dataset_folder", "dataset:\n  source: cifar10\n  channels: 3\n  path: /nonexistent/cifar\n",
         "dataset.path", 4, "dataset={source: cifar10, channels: 3, path: /nonexistent/cifar}", "directory not found"),
    Case("missing_imagefolder", "dataset:\n  source: imagefolder\n  path: /nonexistent/images\n", "dataset.path", 3,
         None, "directory not found"),
    Case("dataset_path_required", "dataset:\n  source: fashion_mnist\n", "dataset.source", 2, None,
         "is required for source 'fashion_mnist'"),
    # YAML syntax (no key: the file and the line)
    Case("tab", "seed: 0\nevolution:\n\tcycles: 3\n", None, 3, None, "a tab: indent with spaces"),
    Case("indentation", "evolution:\n  cycles: 3\n   sample_size: 2\n", None, 3, None, "not valid YAML"),
    Case("empty_file", "", None, 1, None, "holds no keys"),
    Case("list_at_top", "- seed: 0\n", None, 1, None, "must be a mapping"),
    Case("duplicate_key", "seed: 1\nseed: 2\n", None, 2, None, "duplicate key"),
    Case("unclosed_bracket", "seed: 1\ntrain: {lr: 0.1\n", None, 3, None, "not valid YAML"),
]
FORMS = ("configfile", "base", "cli")
PARAMS = [pytest.param(c, f, id=f"{c.id}-{f}") for c in CASES for f in FORMS if f != "cli" or c.cli]
VALID_BASE = "seed: 0\n"


def origin(case: Case, form: str, file: Path) -> str:
    """The place the error must name: ``<file>, line N`` or ``command line: --config KEY=VALUE``."""
    return f"command line: --config {case.cli}" if form == "cli" else f"{file}, line {case.line}"


def setup(work: Path, case: Case, form: str) -> tuple[list[str], Path]:
    """The workflow directory and the command line of one (case, form)."""
    base = work / "config" / "config.yaml"
    base.parent.mkdir(parents=True)
    if form == "base":
        base.write_text(case.text)
        return ["-d", str(work)], base
    base.write_text(VALID_BASE)
    if form == "cli":
        return ["-d", str(work), "--config", case.cli], base
    mine = work / "my.yaml"
    mine.write_text(case.text)
    return ["-d", str(work), "--configfile", str(mine)], mine


def assert_reported(out: str, case: Case, form: str, file: Path) -> None:
    """The key named first, with its origin in parentheses (so ``line 3`` is never ``line 36``);
    for a syntax error the file and the whole line number."""
    place = re.escape(origin(case, form, file))
    if case.key is None:
        assert re.search(rf"(?<![\w/.-]){place}(?!\d)", out), out
    else:
        assert re.search(rf"config keys? '{re.escape(case.key)}' \({place}\)", out), out
    assert case.what in out, out
    assert "Traceback" not in out and 'File "' not in out, out


def assert_no_results(work: Path) -> None:
    res = work / "results"
    left = [p for p in res.rglob("*") if p.is_file() and "logs" not in p.relative_to(res).parts] if res.exists() else []
    assert not left, f"written under results/: {left}"


def test_the_table_is_large_enough():
    assert len(CASES) >= 25 and len({c.id for c in CASES}) == len(CASES)
    assert sum(c.cli is not None for c in CASES) >= 10


@pytest.mark.parametrize("case, form", PARAMS)
def test_malformed_config_is_named_by_file_and_line(case, form, tmp_path, capsys):
    argv, file = setup(tmp_path, case, form)
    code = main(argv)
    out = capsys.readouterr()
    assert code == 1, out
    assert_reported(out.err, case, form, file)
    assert len(out.err) < 3000, f"{len(out.err)} characters"  # a huge value is cut
    assert_no_results(tmp_path)


def test_one_line_per_problem_and_all_problems_at_once(tmp_path, capsys):
    """Two files and the command line, each with its own mistake: all three reported, each with
    its own origin, in source order."""
    (tmp_path / "config").mkdir()
    base = tmp_path / "config" / "config.yaml"
    base.write_text("seed: 0\ntrain:\n  epochz: 3\n")
    mine = tmp_path / "my.yaml"
    mine.write_text("compute:\n  amp: yes\n")
    code = main(["-d", str(tmp_path), "--configfile", str(mine), "--config", "ranking={method: zcore}"])
    err = capsys.readouterr().err
    assert code == 1
    lines = [ln.strip() for ln in err.splitlines() if ln.strip().startswith("config key")]
    assert lines == [
        f"config key 'train.epochz' ({base}, line 3): unknown key 'epochz' (allowed here: augment, batch_size, "
        "epochs, lr, momentum, schedule, seed, threads, weight_decay)",
        f"config key 'compute.amp' ({mine}, line 2): value 'yes' has the wrong type, expected boolean",
        "config key 'ranking.method' (command line: --config ranking={method: zcore}): value 'zcore' is not one of "
        "['zscore', 'rank']",
    ], err


def test_a_later_source_wins_and_is_the_one_named(tmp_path, capsys):
    """The base file sets a good value, the --configfile the bad one: the --configfile is named."""
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text("seed: 0\nevolution:\n  sample_size: 2\n")
    mine = tmp_path / "my.yaml"
    mine.write_text("# mine\n\nevolution:\n  sample_size: 900\n")
    assert main(["-d", str(tmp_path), "--configfile", str(mine)]) == 1
    err = capsys.readouterr().err
    assert re.search(rf"config keys 'evolution.sample_size' \({re.escape(str(mine))}, line 4\)", err), err


def test_valid_config_passes(tmp_path, capsys):
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text((REPO / "config" / "config.yaml").read_text())
    assert main(["-d", str(tmp_path), "--config", "train={epochs: 3}", "--print"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^  epochs: 3$", out, re.M) and "weight_decay" in out


# ------------------------------------------------------------------------------ real snakemake
def _by_id(case_id: str) -> Case:
    return next(c for c in CASES if c.id == case_id)


# one per path into the workflow (a --configfile typo: tests/test_config.py); each costs seconds
SNAKEMAKE_CASES = [("sample_larger_than_population", "configfile"), ("tab", "base"),
                   ("weight_of_unknown_proxy", "cli"), ("ram_below_smallest_net", "base")]


def _snakemake_dry_run(work: Path, case: Case, form: str) -> tuple[subprocess.CompletedProcess, Path]:
    _, file = setup(work, case, form)
    if form == "base":  # Snakemake runs in the work directory: the base file is named as the workflow knows it
        file = Path("config/config.yaml")
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(work), "-n",
           "--cores", "1"]
    if form == "configfile":
        cmd += ["--configfile", str(file)]
    elif form == "cli":
        cmd += ["--config", case.cli]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300), file


def test_snakemake_dry_run_names_file_and_line(tmp_path):
    """The same errors through ``snakemake -n`` itself (run side by side: each call costs a few
    seconds of start-up): exit 1, the key, the file and line, no traceback, nothing written."""
    jobs = []
    for i, (cid, form) in enumerate(SNAKEMAKE_CASES):
        work = tmp_path / f"w{i}"
        work.mkdir()
        jobs.append((work, _by_id(cid), form))
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(lambda j: _snakemake_dry_run(*j), jobs))
    for (work, case, form), (proc, file) in zip(jobs, results):
        out = proc.stdout + proc.stderr
        assert proc.returncode == 1, (case.id, out)
        assert_reported(out, case, form, file)
        assert_no_results(work)


# ------------------------------------------------------------------- what can only fail later
def test_skip_corrupt_never_empties_a_class(tmp_path):
    """Every image of one class unreadable: skip_corrupt stops, naming the class, writes nothing."""
    from fixtures_data import make_imagefolder

    from tinyevo.data import DataError, prepare

    root = make_imagefolder(tmp_path / "images")
    for p in (root / "owl").rglob("owl_*"):
        p.write_bytes(b"not an image")
    cfg = {"source": "imagefolder", "path": str(root), "resolution": 8, "channels": 1, "test_fraction": 0.25,
           "val_fraction": 0.0, "skip_corrupt": True, "seed": 0}
    out = tmp_path / "out"
    with pytest.raises(DataError, match=r"class 'owl' \(label 2\) has no readable image left in the train split"):
        prepare(cfg, out)
    assert not out.exists() or not any(out.iterdir())


def test_skipped_images_are_counted_per_class(tmp_path, caplog):
    import logging

    import pandas as pd
    from fixtures_data import make_imagefolder

    from tinyevo.data import prepare

    root = make_imagefolder(tmp_path / "images")
    for i in (1, 2, 4):
        (root / "dog" / f"dog_{i}.png").write_bytes(b"not an image")
    cfg = {"source": "imagefolder", "path": str(root), "resolution": 8, "channels": 1, "test_fraction": 0.25,
           "val_fraction": 0.0, "skip_corrupt": True, "seed": 0}
    with caplog.at_level(logging.WARNING):
        summary = prepare(cfg, tmp_path / "out", log=logging.getLogger("t"))
    counts = pd.read_parquet(tmp_path / "out" / "classes.parquet")
    per_class = counts.groupby("class_name")[["images", "skipped"]].sum()
    assert per_class.loc["dog", "skipped"] == 3 and per_class.loc["cat", "skipped"] == 0
    assert per_class.loc["dog", "images"] == 5 and per_class["images"].sum() == 21
    assert sum(v.get("dog", 0) for v in summary["skipped_per_class"].values()) == 3
    assert re.search(r"split: skipped per class: dog \d of \d", caplog.text), caplog.text


_SCRIPT = """
import sys
sys.path.insert(0, {workflow!r})
from tinyevo.runtime import setup_logging
log = setup_logging({log!r})
log.info("working")
{body}
"""


@pytest.mark.parametrize("body, user", [
    ("raise ValueError(\"config key 'train.lr' = 5.0 makes the training diverge\\nsecond line\")", True),
    ("from tinyevo.data import DataError\nraise DataError('x.png: unreadable image')", True),
    ("{}['missing']", False),
])
def test_a_job_ends_with_one_line_for_a_user_error_and_a_traceback_for_a_bug(tmp_path, body, user):
    """What a rule script does with an uncaught exception (tinyevo.runtime.excepthook, installed
    by setup_logging): exit status 1 either way; a user error is one line, the last of the log,
    without a traceback; a bug keeps its traceback."""
    log = tmp_path / "job.log"
    script = tmp_path / "job.py"
    script.write_text(_SCRIPT.format(workflow=str(REPO / "workflow"), log=str(log), body=body))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    text = log.read_text()
    assert proc.returncode == 1
    if user:
        last = text.rstrip("\n").splitlines()[-1]
        assert "ERROR" in last and ("config key 'train.lr' = 5.0" in last or "x.png: unreadable image" in last), text
        assert "second line" in last or "x.png" in last
        assert "Traceback" not in text + proc.stderr
    else:
        assert "Traceback (most recent call last)" in text and "KeyError: 'missing'" in text
