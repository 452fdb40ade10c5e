"""The digest of the library code a rule script runs, so that a stage re-runs when that code changes.

Snakemake's ``code`` rerun trigger hashes a rule's script file only, not the ``tinyevo`` modules
the script imports: without more, a change to, say, ``tinyevo.scenarios.stage`` would leave
every scenario table as it was. Each rule therefore passes :func:`script_digest` of its script as
a ``params:`` value (``code=code_of(...)`` in ``workflow/rules/common.smk``); Snakemake records
params, so a changed digest re-runs the rule (and, through its outputs, what follows).

The digest covers the script's ``tinyevo`` imports, found statically and followed transitively:
``import tinyevo.x``, ``from tinyevo.x import y`` (``y`` a sub-module or a name), relative imports
inside the package and imports inside functions alike, with the ``__init__`` of every package on
the way (Python runs them on import), plus the data files beside those modules (the instruction
models, the C++ templates). Other packages (torch, TensorFlow, ...) are the software
environment's business. A change elsewhere in the package leaves the rule alone.
"""

from __future__ import annotations

import ast
import hashlib
import re
from functools import lru_cache
from pathlib import Path

PACKAGE = "tinyevo"
PACKAGE_DIR = Path(__file__).resolve().parent
SCRIPTS_DIR = PACKAGE_DIR.parent / "scripts"
_SKIP_DIRS = {"__pycache__"}
_SKIP_SUFFIXES = {".py", ".pyc", ".pyo"}


@lru_cache(maxsize=None)
def module_file(name: str) -> Path | None:
    """The source file of module ``name`` (``tinyevo`` or ``tinyevo.a.b``), None if it is not one."""
    parts = name.split(".")
    if parts[0] != PACKAGE:
        return None
    base = PACKAGE_DIR.joinpath(*parts[1:])
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _package_of(name: str, path: Path) -> str:
    """The package a module's relative imports start from."""
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


# An import statement at any indentation (inside functions too), a parenthesised name list across
# lines included. Each match is parsed with ``ast`` on its own: the digests are computed whenever
# Snakemake parses the workflow, and walking every file's whole syntax tree took 2.3 s for all rule
# scripts against 0.2 s this way (0.05 s with the per-file caches below). A match inside a string
# that does not parse is skipped; one that does can only add a module to the digest.
_IMPORT = re.compile(r"^[ \t]*(?:from[ \t]+[.\w]+[ \t]+import[ \t]+(?:\([^)]*\)|[^\n]*)|import[ \t]+[^\n]*)", re.M)


@lru_cache(maxsize=None)
def _import_nodes(path: Path) -> tuple[ast.stmt, ...]:
    nodes = []
    for m in _IMPORT.finditer(path.read_text(encoding="utf-8")):
        try:
            nodes.extend(ast.parse(m.group(0).strip()).body)
        except SyntaxError:
            continue
    return tuple(nodes)


@lru_cache(maxsize=None)
def imported_modules(path: Path, name: str | None = None) -> frozenset[str]:
    """The ``tinyevo`` modules that the source file ``path`` (module ``name``; None for a
    script outside the package) imports anywhere in its body, with their parent packages."""
    found: set[str] = set()
    for node in _import_nodes(path):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                if name is None:
                    continue
                pkg = _package_of(name, path).split(".")
                pkg = pkg[: len(pkg) - (node.level - 1)]
                base = ".".join(pkg + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            targets = [base] + [f"{base}.{a.name}" for a in node.names]  # a name may be a sub-module
        else:
            continue
        for t in targets:
            parts = t.split(".")
            if parts[0] != PACKAGE:
                continue
            for i in range(1, len(parts) + 1):  # importing a.b.c runs a and a.b first
                sub = ".".join(parts[:i])
                if module_file(sub) is not None:
                    found.add(sub)
    return frozenset(found)


def _closure(script: Path) -> list[Path]:
    """The package modules ``script`` runs, transitively."""
    todo = sorted(imported_modules(script))
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = module_file(name)
        todo.extend(sorted(imported_modules(path, name) - seen))
    return sorted(module_file(n) for n in seen)


@lru_cache(maxsize=None)
def _data_files(directory: Path) -> tuple[Path, ...]:
    """Non-Python files of a module's directory and of its sub-directories that are not packages."""
    out = []
    for p in sorted(directory.iterdir()):
        if p.is_dir():
            if p.name not in _SKIP_DIRS and not (p / "__init__.py").exists():
                out.extend(q for q in sorted(p.rglob("*")) if q.is_file() and "__pycache__" not in q.parts)
        elif p.suffix not in _SKIP_SUFFIXES:
            out.append(p)
    return tuple(out)


def code_files(script: str | Path) -> list[Path]:
    """Every package file the digest of ``script`` covers: its modules and their data files."""
    modules = _closure(Path(script))
    files = set(modules)
    for d in {m.parent for m in modules}:
        files.update(_data_files(d))
    return sorted(files)


@lru_cache(maxsize=None)
def _file_digest(path: Path) -> bytes:
    """sha256 of one file's package-relative path and bytes (files are shared by many scripts)."""
    return hashlib.sha256(path.relative_to(PACKAGE_DIR).as_posix().encode() + b"\0" + path.read_bytes()).digest()


def clear_caches() -> None:
    """Forget every file read so far (for a process that changes the package's files)."""
    for f in (script_digest, _file_digest, imported_modules, _import_nodes, module_file, _data_files):
        f.cache_clear()


@lru_cache(maxsize=None)
def script_digest(script: str | Path) -> str:
    """sha256 (16 hex digits) over the package-relative path and bytes of :func:`code_files`.
    ``script`` is a path, or a name of ``workflow/scripts`` without ``.py``."""
    path = Path(script)
    if path.suffix != ".py":
        path = SCRIPTS_DIR / f"{script}.py"
    if not path.is_file():
        raise FileNotFoundError(f"rule script not found: {path}")
    h = hashlib.sha256()
    for f in code_files(path):
        h.update(_file_digest(f))
    return h.hexdigest()[:16]
