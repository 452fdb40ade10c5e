"""Config schema: defaults, derived values, clear errors with key path and line, resolved dump."""

import re
import subprocess
import sys
import time

import pytest

from conftest import REPO, write_yaml
from tinyevo.config import ConfigError, dump_yaml, load_config, load_schema


def located(msg: str, key: str, file, line: int) -> bool:
    """``msg`` names ``key`` as set in ``file`` at exactly ``line`` (``line 3`` never matches ``line 36``)."""
    return re.search(rf"config key '{re.escape(key)}' \({re.escape(str(file))}, line {line}\)(?!\d)", msg) is not None


def test_defaults_filled_and_derived(tmp_path):
    cfg, _ = load_config([write_yaml(tmp_path / "c.yaml", {"seed": 7})])
    assert cfg["train"]["lr"] == 0.05 and cfg["train"]["schedule"] == "cosine" and cfg["train"]["epochs"] == 20
    assert cfg["dataset"]["name"] == "digits"
    assert cfg["search_space"]["resolution"] == cfg["dataset"]["resolution"] == 32
    assert cfg["search_space"]["num_classes"] == 10
    assert cfg["train"]["seed"] == cfg["proxies"]["seed"] == 7
    assert len(cfg["search_space"]["population"]["structures"]) == 8


def test_paper_config_restores_the_published_method():
    """config/paper.yaml on top of the default: the genetic-NAS paper's method, none of the
    additions (final round, device constraint, guard), the dataset of the files before it."""
    cfg, _ = load_config([REPO / "config" / "config.yaml", REPO / "config" / "paper.yaml"])
    assert cfg["proxies"]["names"] == ["snip", "synflow_relu6", "jacob_cov"]
    assert cfg["ranking"]["method"] == "zscore" and cfg["evolution"]["constraints"] == "post_hoc"
    assert (cfg["train"]["lr"], cfg["train"]["schedule"], cfg["train"]["epochs"]) == (0.1, "constant", 40)
    assert cfg["final_round"]["k"] == 0
    assert cfg["constraints"]["fit_device"] is False and cfg["constraints"]["min_width"] is None
    assert cfg["dataset"]["source"] == "digits"
    default, _ = load_config([REPO / "config" / "config.yaml"])
    assert default["proxies"]["names"] != cfg["proxies"]["names"] and default["final_round"]["k"] > 0


def test_default_config_file_is_valid():
    cfg, _ = load_config([REPO / "config" / "config.yaml"])
    assert cfg["dataset"]["source"] == "digits"


@pytest.mark.parametrize("name", ["fashion_mnist", "cifar10", "vww", "imagefolder"])
def test_example_configs_parse(name):
    path = REPO / "config" / f"{name}.yaml"
    if not path.exists():
        pytest.skip(f"{path.name} not present")
    try:
        load_config([path])
    except ConfigError as exc:  # an imagefolder/vww example points at data that is not here
        assert "dataset.path" in str(exc) or "not found" in str(exc)


def test_unknown_key_names_path_and_line(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("seed: 1\ntrain:\n  epochs: 3\n  epochz: 4\n")
    with pytest.raises(ConfigError) as exc:
        load_config([p])
    msg = str(exc.value)
    assert located(msg, "train.epochz", p, 4) and "unknown key 'epochz'" in msg, msg


@pytest.mark.parametrize(
    "text, key, line, what",
    [
        ("train:\n  lr: fast\n", "train.lr", 2, "wrong type"),
        ("train:\n  lr: -0.1\n", "train.lr", 2, "out of range"),
        ("dataset:\n  resolution: 0\n", "dataset.resolution", 2, "out of range"),
        ("proxies:\n  names: [snip, nope]\n", "proxies.names[1]", 2, "is not one of"),
        ("scoring:\n  shards: 0\n", "scoring.shards", 2, "out of range"),
    ],
)
def test_bad_values(tmp_path, text, key, line, what):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_config([p])
    msg = str(exc.value)
    assert located(msg, key, p, line) and what in msg, msg


def test_cross_key_checks(tmp_path):
    with pytest.raises(ConfigError, match="change_point"):
        load_config([write_yaml(tmp_path / "a.yaml", {"scenarios": {"stream_length": 10, "change_point": 10}})])
    with pytest.raises(ConfigError, match=r"structures\[0\]"):
        load_config([write_yaml(tmp_path / "b.yaml", {"search_space": {"population": {"structures": [[1, 2]]}}})])
    with pytest.raises(ConfigError, match="val_fraction"):
        load_config([write_yaml(tmp_path / "c.yaml", {"dataset": {"val_fraction": 0.5, "test_fraction": 0.5}})])


def test_missing_and_broken_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config([tmp_path / "nope.yaml"])
    p = tmp_path / "broken.yaml"
    p.write_text("seed: 1\ntrain: [1, 2\n")
    with pytest.raises(ConfigError) as exc:
        load_config([p])
    assert re.search(rf"{re.escape(str(p))}, line 3, column \d+: not valid YAML", str(exc.value)), str(exc.value)


def test_resolved_dump_keeps_comments(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("# my experiment\nseed: 3  # lucky\n")
    _, doc = load_config([p])
    text = dump_yaml(doc)
    assert "# my experiment" in text and "# lucky" in text and "weight_decay" in text


def test_every_schema_key_documented():
    """config/README.md names every key of the schema (a newcomer's reference)."""
    doc = (REPO / "config" / "README.md").read_text()
    schema = load_schema()
    missing = []

    def walk(node, prefix):
        for k, sub in node.get("properties", {}).items():
            key = f"{prefix}.{k}" if prefix else k
            if sub.get("type") == "object" and "properties" in sub:
                walk(sub, key)
            elif f"`{key}`" not in doc:
                missing.append(key)

    walk(schema, "")
    assert not missing, f"undocumented config keys: {missing}"


def test_snakemake_rejects_bad_config_fast(tmp_path):
    """A typo in a --configfile is blamed on that file and its line (not on the command line, not
    on a line of the Snakefile), without a traceback."""
    p = tmp_path / "bad.yaml"
    p.write_text("seed: 0\nevolution:\n  cyclez: 3\n")
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory",
                           str(tmp_path), "--configfile", str(p), "-n"], capture_output=True, text=True)
    elapsed = time.time() - t0
    assert proc.returncode == 1
    out = proc.stdout + proc.stderr
    assert located(out, "evolution.cyclez", p, 3), out
    assert "Traceback" not in out and "Snakefile\", line" not in out and "command line: --config" not in out, out
    assert elapsed < 15  # the issue asks < 5 s on an idle machine; tests share the CPU


def test_snakemake_lint_passes():
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--lint"], cwd=REPO, capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "Congratulations" in out, out


@pytest.mark.parametrize("name", ["config", "fashion_mnist", "cifar10", "vww"])
def test_dry_run_builds_dag(name, tmp_path):
    """An example config builds the DAG when its data is on this machine; else the dry run stops
    at once, naming dataset.path on its line of the example file (the data job would fail later)."""
    path = REPO / "config" / f"{name}.yaml"
    if not path.exists():
        pytest.skip(f"{path.name} not present")
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--nolock", "--configfile", str(path)], cwd=REPO,
                          capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    if proc.returncode == 0:
        assert "Job stats" in out or "Nothing to be done" in out, out
        return
    assert name != "config", out
    line = next(i for i, ln in enumerate(path.read_text().splitlines(), 1) if ln.startswith("  path:"))
    assert proc.returncode == 1 and located(out, "dataset.path", path, line), out
    assert "Traceback" not in out, out


def test_command_line_override_is_named(tmp_path):
    p = write_yaml(tmp_path / "c.yaml", {"seed": 1})
    cfg, _ = load_config([p], overrides={"train": {"epochs": 3}})
    assert cfg["train"]["epochs"] == 3 and cfg["seed"] == 1
    with pytest.raises(ConfigError, match=r"'train.epochs' \(command line: --config train=\{epochs: 0\}\)"):
        load_config([p], overrides={"train": {"epochs": 0}})
    # with the command line at hand, the argument as the user typed it
    with pytest.raises(ConfigError, match=r"'train.epochs' \(command line: --config train=\{ epochs : 0 \}\)"):
        load_config([p], overrides={"train": {"epochs": "0"}}, argv=["snakemake", "--config", "train={ epochs : 0 }"])


def test_resolved_dump_keeps_comments_before_their_section(tmp_path):
    """Defaults appended to a section go above the comment lines that introduce the next one,
    and the dump loads back to the same config."""
    p = tmp_path / "c.yaml"
    p.write_text("search_space:\n  population:\n    mode: grid   # all 512\n\n"
                 "# about the limits\nconstraints:\n  max_params: 1000000\n# the end\n")
    cfg, doc = load_config([p])
    text = dump_yaml(doc)
    lines = text.splitlines()
    at = lines.index("# about the limits")
    assert lines[at + 1] == "constraints:"
    assert "mode: grid   # all 512" in text
    assert all(not ln.startswith("  ") for ln in lines[at:at + 2]) and "alphabets:" in "\n".join(lines[:at])
    assert "strides: [1, 2, 2, 2, 1, 2, 1]" in text  # default lists printed on one line
    again = tmp_path / "resolved.yaml"
    again.write_text(text)
    assert text.rstrip().endswith("# the end")
    assert load_config([again])[0] == cfg


def test_nested_command_line_overrides_are_typed():
    """Snakemake hands ``--config train='{lr: 0.01}'`` over with every nested scalar a string."""
    base = REPO / "config" / "config.yaml"
    cfg, _ = load_config([base], overrides={"train": {"lr": "0.01", "schedule": "cosine", "augment": "true",
                                                      "seed": "null"},
                                            "dataset": {"name": "123"}, "proxies": {"names": ["snip", "naswot"]}})
    assert cfg["train"]["lr"] == 0.01 and isinstance(cfg["train"]["lr"], float)
    assert cfg["train"]["augment"] is True and cfg["train"]["schedule"] == "cosine"
    assert cfg["train"]["seed"] == cfg["seed"]  # null -> the global seed, as from a file
    assert cfg["dataset"]["name"] == "123"      # a string key stays a string
    assert cfg["proxies"]["names"] == ["snip", "naswot"]
    with pytest.raises(ConfigError, match=r"train\.lr.*--config"):
        load_config([base], overrides={"train": {"lr": "fast"}})


@pytest.mark.slow
def test_nested_override_through_snakemake():
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--config", "train={lr: 0.01, epochs: 3}"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_schema_parsed_with_libyaml_equals_ruamel():
    """The schema is read with PyYAML's C parser for speed; it must give exactly the YAML 1.2
    mapping ruamel gives (a YAML 1.1-only reading, e.g. of `on` or `no`, would differ)."""
    from tinyevo import config as C

    assert C._schema() == C._schema_ruamel()
