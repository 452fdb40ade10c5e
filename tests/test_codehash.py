"""tinyevo.codehash: the digest of the library code a rule script runs (its `code` param)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tinyevo import codehash

REPO = Path(__file__).resolve().parents[1]


def _rel(files) -> set[str]:
    return {f.relative_to(codehash.PACKAGE_DIR).as_posix() for f in files}


def test_code_files_follow_imports_transitively_and_stop_there():
    files = _rel(codehash.code_files(codehash.SCRIPTS_DIR / "scenario_gather.py"))
    # the script's own import, the package's __init__ on the way, a module imported only inside a
    # function of another (FloatLearner.run imports tinyevo.tybox.reference), and a relative import
    assert {"scenarios/stage.py", "scenarios/__init__.py", "__init__.py", "tybox/reference.py",
            "scenarios/tuning.py"} <= files
    # data files beside the modules: the C++ templates the generated project is made from
    assert "tybox/templates/tybox.cc" in files
    # nothing the script never reaches
    assert not files & {"report/summary.py", "proxies/measures.py", "search/aging.py", "codehash.py"}
    # a small script reaches little
    assert _rel(codehash.code_files(codehash.SCRIPTS_DIR / "report_summary.py")) == {
        "__init__.py", "io.py", "runtime.py", "report/__init__.py", "report/summary.py"}


def test_every_rule_script_has_a_digest():
    scripts = sorted(p.stem for p in codehash.SCRIPTS_DIR.glob("*.py"))
    assert len(scripts) >= 25
    digests = {s: codehash.script_digest(s) for s in scripts}
    assert all(len(d) == 16 and int(d, 16) >= 0 for d in digests.values())
    assert len(set(digests.values())) > 5  # the stages differ
    with pytest.raises(FileNotFoundError, match="rule script not found"):
        codehash.script_digest("no_such_script")


@pytest.fixture
def package_copy(tmp_path, monkeypatch):
    """A copy of workflow/tinyevo and workflow/scripts the digests are computed from."""
    shutil.copytree(REPO / "workflow" / "tinyevo", tmp_path / "tinyevo",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "workflow" / "scripts", tmp_path / "scripts")
    monkeypatch.setattr(codehash, "PACKAGE_DIR", tmp_path / "tinyevo")
    monkeypatch.setattr(codehash, "SCRIPTS_DIR", tmp_path / "scripts")
    codehash.clear_caches()
    yield tmp_path / "tinyevo"
    codehash.clear_caches()


def _digests(names):
    codehash.clear_caches()
    return {n: codehash.script_digest(n) for n in names}


def test_digest_changes_with_the_code_a_script_runs_only(package_copy):
    names = ["scenario_gather", "report_summary", "tybox", "data"]
    before = _digests(names)
    assert _digests(names) == before  # recomputed from the files: the same
    with open(package_copy / "report" / "summary.py", "a") as f:
        f.write("\n# a comment\n")
    after = _digests(names)
    assert after["report_summary"] != before["report_summary"]
    assert {n: after[n] for n in ("scenario_gather", "tybox", "data")} == \
        {n: before[n] for n in ("scenario_gather", "tybox", "data")}
    # a template of the generated C++ is code of the tybox stage and of the scenarios
    tmpl = package_copy / "tybox" / "templates" / "tybox.cc"
    tmpl.write_text(tmpl.read_text() + "\n// changed\n")
    again = _digests(names)
    assert again["tybox"] != after["tybox"] and again["scenario_gather"] != after["scenario_gather"]
    assert again["data"] == after["data"]
