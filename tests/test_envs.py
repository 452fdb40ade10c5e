"""The conda environment of every rule can run its script: the modules its script imports, and
everything those imports load when the module is imported (tinyevo's own modules followed
file by file), are the standard library, Snakemake, tinyevo or a package of the rule's env file
(envs/<name>.yaml). A static check (no conda needed): an import inside a function of a library
module counts only when the function runs, so it is left to the end-to-end runs; this catches
what `--use-conda` trips over first, a package ``__init__`` or a module top that imports torch
or TensorFlow into a light rule."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from conftest import REPO

WORKFLOW = REPO / "workflow"
# conda / pip package name -> the top-level module it provides, where the two differ
MODULE_OF = {"pytorch": "torch", "scikit-learn": "sklearn", "pillow": "PIL", "matplotlib-base": "matplotlib",
             "ruamel.yaml": "ruamel", "tensorflow-cpu": "tensorflow", "ai-edge-litert": "ai_edge_litert",
             "pyyaml": "yaml", "gxx": None, "make": None, "pip": None, "python": None}
ALWAYS = {"snakemake", "tinyevo", "__future__"}


def env_modules(name: str) -> set[str]:
    doc = YAML(typ="safe").load((REPO / "envs" / f"{name}.yaml").read_text())
    mods = set()
    for dep in doc["dependencies"]:
        for d in (dep["pip"] if isinstance(dep, dict) else [dep]):
            pkg = re.split(r"[\s=<>!]", str(d).strip(), maxsplit=1)[0]
            mod = MODULE_OF.get(pkg, pkg.replace("-", "_"))
            if mod:
                mods.add(mod)
    return mods


def rules() -> dict[str, tuple[str | None, str | None]]:
    """rule name -> (env name, script path) from workflow/rules/*.smk (the rules' own style:
    `conda: env("x")` and `script: "../scripts/y.py"`)."""
    out = {}
    for smk in sorted((WORKFLOW / "rules").glob("*.smk")):
        for m in re.finditer(r"^rule (\w+):\n(.*?)(?=^rule |\Z)", smk.read_text(), re.S | re.M):
            env = re.search(r'conda:\s*\n\s*env\("(\w+)"\)', m.group(2))
            script = re.search(r'script:\s*\n\s*"([^"]+)"', m.group(2))
            out[m.group(1)] = (env and env.group(1), script and script.group(1))
    return out


def _module_file(name: str) -> Path | None:
    p = WORKFLOW.joinpath(*name.split("."))
    if (p / "__init__.py").is_file():
        return p / "__init__.py"
    return p.with_suffix(".py") if p.with_suffix(".py").is_file() else None


def _imports(tree: ast.Module, whole_file: bool) -> set[str]:
    """Imported module names: of the whole file, or of the statements that run on import (the
    module body, into if/try/with blocks, not into functions or classes)."""
    nodes, names = (list(ast.walk(tree)) if whole_file else []), set()
    stack = [] if whole_file else list(tree.body)
    while stack:
        n = stack.pop()
        nodes.append(n)
        for field in ("body", "orelse", "finalbody", "handlers"):
            if isinstance(n, (ast.If, ast.Try, ast.With, ast.ExceptHandler)):
                stack.extend(getattr(n, field, None) or [])
    for n in nodes:
        if isinstance(n, ast.Import):
            names.update(a.name for a in n.names)
        elif isinstance(n, ast.ImportFrom) and n.level == 0 and n.module:
            names.add(n.module)
            names.update(f"{n.module}.{a.name}" for a in n.names)
    return names


def import_closure(script: Path) -> dict[str, str]:
    """Top-level external module -> the file that imports it, for ``script`` (every import in
    it) and the tinyevo modules it loads (their import-time statements), transitively."""
    seen, found, todo = set(), {}, [(script, True)]
    while todo:
        path, whole = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in _imports(ast.parse(path.read_text(), str(path)), whole):
            parts = name.split(".")
            if parts[0] == "tinyevo":
                todo.extend((f, False) for i in range(1, len(parts) + 1)
                            if (f := _module_file(".".join(parts[:i]))) is not None)
            else:
                found.setdefault(parts[0], str(path.relative_to(REPO)))
    return found


def test_every_rule_with_a_script_names_an_env():
    table = rules()
    assert len(table) >= 25 and "train" in table and "score_gather" in table
    missing = [r for r, (env, script) in table.items() if script and not env]
    assert not missing, f"rules with a script but no conda env: {missing}"
    unknown = {env for env, _ in table.values() if env} - {p.stem for p in (REPO / "envs").glob("*.yaml")}
    assert not unknown, f"envs named by rules but missing in envs/: {sorted(unknown)}"


@pytest.mark.parametrize("rule", sorted(r for r, (env, script) in rules().items() if script))
def test_rule_script_imports_only_its_env(rule):
    env, script = rules()[rule]
    allowed = env_modules(env) | ALWAYS | set(sys.stdlib_module_names)
    closure = import_closure((WORKFLOW / "rules" / script).resolve())
    bad = {m: where for m, where in closure.items() if m not in allowed}
    assert not bad, (f"rule {rule} runs in envs/{env}.yaml, but importing its script loads "
                     + ", ".join(f"{m} (imported by {w})" for m, w in sorted(bad.items())))


def test_the_check_sees_a_torch_import_through_a_package_init(tmp_path, monkeypatch):
    """The closure follows tinyevo packages: a light module that imports a torch module at its
    top is caught, a function-level import is not (it runs only when called)."""
    assert "torch" not in env_modules("core") and "torch" in env_modules("torch")
    pkg = tmp_path / "workflow" / "tinyevo" / "fake"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("from tinyevo.fake.heavy import f\n")
    (pkg / "heavy.py").write_text("import torch\n\ndef f():\n    import tensorflow\n")
    script = tmp_path / "workflow" / "scripts" / "s.py"
    script.parent.mkdir()
    script.write_text("import pandas\nfrom tinyevo.fake import f\n")
    monkeypatch.setattr(sys.modules[__name__], "WORKFLOW", tmp_path / "workflow")
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    found = import_closure(script)
    assert found == {"pandas": "workflow/scripts/s.py", "torch": "workflow/tinyevo/fake/heavy.py"}
