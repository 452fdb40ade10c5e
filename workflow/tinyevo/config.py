"""Configuration: one reader and one validation for every source, errors named by file and line,
the checks that can run before any work, the resolved dump.

Sources, in Snakemake's order (a later one wins key by key, a list is replaced as a whole): the
workflow's base file ``config/config.yaml`` (when present), every ``--configfile``, then
``--config KEY=VALUE``. Every file is read by the same ruamel.yaml round-trip loader (YAML 1.2:
``yes`` is a string, ``0123`` the integer 123, a duplicate key or a tab is an error naming its
line), and every source is validated *on its own* against the JSON schema
``workflow/schemas/config.schema.yaml`` (``additionalProperties: false`` everywhere), so that an
error names the file and line it came from, or the ``--config`` argument for the command line.
The merged config is then validated with every default filled, the derived values are resolved
(dataset name, input resolution, per-stage seeds, number of classes) and the cross-key checks run.

:func:`load_config` is the library entry point (tests, benchmarks); :func:`load_workflow_config`
is the Snakefile's, which also runs :mod:`tinyevo.preflight` (the search space, the device
budget, class ids and dataset paths, before any job). ``python -m tinyevo.config`` runs the
latter from the command line (:func:`main`).

This module must stay cheap to import: the Snakefile imports it at parse time, before any job.
"""

from __future__ import annotations

import copy
import functools
import io
import math
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from tinyevo.runtime import UserError

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "schemas" / "config.schema.yaml"
#: The workflow's own config file, relative to the working directory (Snakemake's `configfile:`).
BASE_CONFIG = "config/config.yaml"

# Stage sections whose ``seed: null`` means "use the global seed".
_SEEDED = ("dataset", "proxies", "evolution", "train", "validation", "compress", "scenarios")

NUM_CLASSES = {"digits": 10, "fashion_mnist": 10, "cifar10": 10, "vww": 2}

# Longest rendering of a value inside an error message.
MAX_VALUE_CHARS = 80


class ConfigError(UserError, ValueError):
    """A configuration problem; the message names the key path and where it was set (file and
    line, the ``--config`` argument, or ``default``)."""


def _yaml() -> YAML:
    y = YAML(typ="rt")
    y.preserve_quotes = True
    y.width = 100
    return y


def _schema_ruamel() -> dict:
    with open(SCHEMA_PATH) as fh:
        return _to_plain(YAML(typ="safe").load(fh))


@functools.lru_cache(maxsize=1)
def _schema() -> dict:
    """The schema, parsed with libyaml's C parser where PyYAML has it (0.2 s less on every
    Snakemake start than ruamel's pure-Python parser; the same mapping, tested), else ruamel."""
    try:
        import yaml

        loader = yaml.CSafeLoader
    except (ImportError, AttributeError):
        return _schema_ruamel()
    with open(SCHEMA_PATH) as fh:
        return yaml.load(fh, Loader=loader)


def load_schema() -> dict:
    return copy.deepcopy(_schema())


def _to_plain(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, CommentedSeq)):
        return [_to_plain(v) for v in obj]
    return obj


def _short(value: Any, limit: int = MAX_VALUE_CHARS) -> str:
    """``repr`` of a value for a message, cut to ``limit`` characters (a leading-zero integer as
    written, e.g. 0123)."""
    width = getattr(value, "_width", None)
    if isinstance(value, int) and not isinstance(value, bool) and isinstance(width, int) and width > len(str(value)):
        return f"{value:0{width}d} (read as the integer {int(value)})"
    text = repr(value)
    if len(text) <= limit:
        return text
    size = f"{len(value)} characters" if isinstance(value, str) else f"{len(text)} characters as text"
    return f"{text[: limit - 5]}... ({size})"


# ------------------------------------------------------------------------------------ reading
def _syntax_message(path: Path, exc: Exception) -> str:
    """``<file>, line L, column C: not valid YAML: <problem>`` from a ruamel error."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = " ".join(str(getattr(exc, "problem", None) or exc).split())
    if len(problem) > 200:
        problem = problem[:195] + " ..."
    hint = " (a tab: indent with spaces)" if "'\\t'" in problem else ""
    where = f"{path}, line {mark.line + 1}, column {mark.column + 1}" if mark is not None else str(path)
    return f"{where}: not valid YAML: {problem}{hint}"


def read_yaml(path: str | os.PathLike) -> CommentedMap:
    """Round-trip load of one config file; a :class:`ConfigError` naming the file (and the line)
    for a missing or unreadable file, a YAML syntax error, an empty file or a top level that is
    not a mapping."""
    from ruamel.yaml.error import YAMLError

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: not readable as a UTF-8 text file ({exc})") from None
    try:
        data = _yaml().load(text)
    except YAMLError as exc:
        raise ConfigError(_syntax_message(p, exc)) from None
    if data is None:
        raise ConfigError(f"{p}, line 1: the file holds no keys (a config file is a mapping of "
                          "`key: value` lines; write {} for an empty one)")
    if not isinstance(data, CommentedMap):
        line = getattr(getattr(data, "lc", None), "line", 0) + 1
        kind = "a list" if isinstance(data, list) else f"the {type(data).__name__} value {_short(data)}"
        raise ConfigError(f"{p}, line {line}: the top level must be a mapping of `key: value` lines, got {kind}")
    return data


def _line_of(doc: CommentedMap, path: Sequence[Any]) -> int | None:
    """1-based line of ``path`` inside a round-trip document, or of its deepest existing parent."""
    node: Any = doc
    line = None
    for key in path:
        if isinstance(node, CommentedMap) and key in node:
            try:
                line = node.lc.key(key)[0] + 1
            except Exception:
                pass
            node = node[key]
        elif isinstance(node, CommentedSeq) and isinstance(key, int) and key < len(node):
            try:
                line = node.lc.item(key)[0] + 1
            except Exception:
                pass
            node = node[key]
        else:
            break
    return line


def _fmt_path(path: Iterable[Any]) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "<top level>"


def _parse_path(text: str) -> list[Any]:
    """``'proxies.names[1]'`` -> ``['proxies', 'names', 1]``."""
    out: list[Any] = []
    for part in text.split("."):
        m = re.fullmatch(r"([^\[\]]*)((?:\[\d+\])*)", part)
        if not m:
            out.append(part)
            continue
        if m.group(1):
            out.append(m.group(1))
        out.extend(int(i) for i in re.findall(r"\[(\d+)\]", m.group(2)))
    return out


def _in_mapping(m: Any, path: Sequence[Any]) -> bool:
    for key in path:
        if isinstance(m, Mapping) and key in m:
            m = m[key]
        elif isinstance(m, (list, tuple)) and isinstance(key, int) and key < len(m):
            m = m[key]
        else:
            return False
    return True


# ------------------------------------------------------------------------------------ origins
@dataclass
class Source:
    """One origin of config values: a YAML file (``doc`` = its round-trip document, for line
    numbers) or the command line (``doc`` None; ``args`` = top-level key -> its ``--config``
    argument as typed)."""

    name: str
    data: dict
    doc: CommentedMap | None = None
    args: Mapping[str, str] = field(default_factory=dict)

    def sets(self, path: Sequence[Any]) -> bool:
        return _in_mapping(self.data, path)

    def where(self, path: Sequence[Any]) -> str:
        if self.doc is None:
            top = str(path[0]) if path else ""
            arg = self.args.get(top) or (f"{top}={_flow_text(self.data[top])}" if top in self.data else "")
            return f"command line: --config {arg}".rstrip()
        line = _line_of(self.doc, path)
        return f"{self.name}, line {line}" if line else self.name


class Origins:
    """Where each key of the merged config was set: the last source that sets it, else
    ``default`` (the schema's)."""

    def __init__(self, sources: Sequence[Source]):
        self.sources = list(sources)

    def where(self, path: Sequence[Any] | str) -> str:
        path = _parse_path(path) if isinstance(path, str) else list(path)
        for s in reversed(self.sources):
            if s.sets(path):
                return s.where(path)
        return "default"

    def key(self, path: Sequence[Any] | str) -> str:
        """``'a.b' (file, line N)``."""
        path = _parse_path(path) if isinstance(path, str) else list(path)
        return f"'{_fmt_path(path)}' ({self.where(path)})"

    def line(self, keys: Sequence[Sequence[Any] | str], text: str) -> str:
        """One error line: ``config key 'a.b' (file, line N): text`` (``config keys`` for several)."""
        word = "config keys" if len(keys) > 1 else "config key"
        return f"{word} {', '.join(self.key(k) for k in keys)}: {text}"


def _flow_text(value: Any) -> str:
    """A value as one YAML flow line (how it would be typed after ``--config KEY=``)."""
    if isinstance(value, str):
        return value
    buf = io.StringIO()
    y = YAML(typ="safe", pure=True)
    y.default_flow_style = True
    y.width = 10**6
    y.dump(value, buf)
    text = buf.getvalue().strip()
    return text[:-4].strip() if text.endswith("\n...") or text.endswith(" ...") else text


def cli_arguments(argv: Sequence[str] | None) -> dict[str, str]:
    """Top-level key -> ``KEY=VALUE`` of every ``--config`` / ``-C`` argument in ``argv``."""
    out: dict[str, str] = {}
    taking = False
    for tok in argv or ():
        tok = str(tok)
        if tok.startswith("--config="):
            tok, taking = tok[len("--config="):], True
        elif tok in ("--config", "-C"):
            taking = True
            continue
        elif tok.startswith("-"):
            taking = False
            continue
        if taking and "=" in tok:
            out.setdefault(tok.split("=", 1)[0], tok)
    return out


# --------------------------------------------------------------------------------- validation
def _strict_types():
    """Draft 2020-12 types, except that ``integer`` is a Python int (JSON schema also accepts
    1000.0, which ``range()`` would not)."""
    from jsonschema import Draft202012Validator

    def is_int(checker, instance):
        return isinstance(instance, int) and not isinstance(instance, bool)

    return Draft202012Validator.TYPE_CHECKER.redefine("integer", is_int)


def _validator(schema: dict, defaults: bool = True):
    """A Draft 2020-12 validator (strict integers) that, with ``defaults``, fills ``default``
    values while it validates."""
    from jsonschema import Draft202012Validator, validators

    base = Draft202012Validator

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from base.VALIDATORS["properties"](validator, properties, instance, schema)

    extra = {"properties": set_defaults} if defaults else {}
    cls = validators.extend(base, extra, type_checker=_strict_types())
    return cls(schema)


def _type_names(t: Any) -> str:
    names = [t] if isinstance(t, str) else list(t)
    return " or ".join("null" if n == "null" else n for n in names)


def _describe(err) -> str:
    """One readable sentence for a jsonschema error (values cut to a readable length)."""
    v, inst = err.validator, err.instance
    if v == "additionalProperties":
        allowed = sorted(err.schema.get("properties", {}))
        extra = sorted(set(inst) - set(allowed))
        return f"unknown key {', '.join(map(repr, extra))} (allowed here: {', '.join(allowed)})"
    if v == "enum":
        return f"value {_short(inst)} is not one of {err.validator_value}"
    if v == "type":
        text = f"value {_short(inst)} has the wrong type, expected {_type_names(err.validator_value)}"
        if "string" in ([err.validator_value] if isinstance(err.validator_value, str) else err.validator_value):
            text += " (put a text value in quotes)"
        return text
    if v in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        return f"value {_short(inst)} is out of range ({v} {err.validator_value})"
    if v == "pattern":
        return f"value {_short(inst)} does not match the pattern {err.validator_value}"
    if v in ("minItems", "maxItems"):
        n = len(inst) if isinstance(inst, (list, tuple)) else "?"
        return f"value {_short(inst)} has {n} item(s) ({v} {err.validator_value})"
    if v == "uniqueItems":
        return f"value {_short(inst)} lists an item more than once"
    msg = " ".join(str(err.message).split())
    return msg if len(msg) <= 2 * MAX_VALUE_CHARS else msg[: 2 * MAX_VALUE_CHARS] + " ..."


def _schema_errors(data: dict, validator, where) -> list[tuple[list[Any], str]]:
    """(key path, error line) of every schema error of ``data``; ``where(path)`` names the origin."""
    out = []
    for err in validator.iter_errors(data):
        path = list(err.absolute_path)
        paths = [path]
        if err.validator == "additionalProperties":
            extra = sorted(set(err.instance) - set(err.schema.get("properties", {})))
            paths = [path + [k] for k in extra] or [path]
        for pth in paths:
            out.append((pth, f"config key '{_fmt_path(pth)}' ({where(pth)}): {_describe(err)}"))
    return out


def _raise(lines: Sequence[str]) -> None:
    if lines:
        raise ConfigError("invalid configuration:\n" + "\n".join(f"  {ln}" for ln in lines))


def _check_sources(sources: Sequence[Source]) -> None:
    """Every source on its own against the schema (no defaults); all errors at once, in source
    order and line order within a file."""
    validator = _validator(_schema(), defaults=False)
    lines = []
    for s in sources:
        errs = _schema_errors(s.data, validator, s.where)
        errs.sort(key=lambda e: (_line_of(s.doc, e[0]) or 0) if s.doc is not None else 0)
        lines += [line for _, line in errs]
    _raise(lines)


def validate(config: dict, docs: Sequence[tuple[str, CommentedMap]] = (),
             overrides: Mapping[str, Any] | None = None) -> dict:
    """Validate the merged ``config`` in place (defaults filled), resolve the derived values and
    run the cross-key checks; return it. ``docs`` (filename, round-trip document) and
    ``overrides`` (the ``--config`` values) are only used to say where a bad key was set."""
    sources = [Source(str(n), _to_plain(d), d) for n, d in docs]
    if overrides:
        sources.append(Source("command line", _to_plain(overrides)))
    return _validate_merged(config, Origins(sources))


def _validate_merged(config: dict, origins: Origins, workdir: str | os.PathLike | None = None) -> dict:
    errs = _schema_errors(config, _validator(_schema(), defaults=True), origins.where)
    _raise([line for _, line in sorted(errs, key=lambda e: list(map(str, e[0])))])
    _resolve_derived(config, origins, workdir)
    return config


def _resolve_derived(cfg: dict, origins: Origins | None = None, workdir: str | os.PathLike | None = None) -> None:
    """Fill the derived values and run the cross-key checks (all errors at once)."""
    origins = origins or Origins([])
    seed = cfg["seed"]
    for sec in _SEEDED:
        if cfg[sec].get("seed") is None:
            cfg[sec]["seed"] = seed
    pop = cfg["search_space"]["population"]
    if pop.get("seed") is None:
        pop["seed"] = seed
    ds = cfg["dataset"]
    if ds["name"] is None:
        ds["name"] = ds["source"]
    ss = cfg["search_space"]
    if ss["resolution"] is None:
        ss["resolution"] = ds["resolution"]
    if ss["channels"] is None:
        ss["channels"] = ds["channels"]
    errors: list[str] = []
    if ss["num_classes"] is None:
        try:
            ss["num_classes"] = dataset_num_classes(ds, workdir)
        except ConfigError as exc:
            text = _strip_key(str(exc), "dataset.path")
            if text.startswith("is required"):  # set nowhere: name the key that needs it
                errors.append(origins.line(["dataset.source", "dataset.path"], f"'dataset.path' {text}"))
            else:
                errors.append(origins.line(["dataset.path"], text))
    n_stages = len(ss["strides"])
    for gene in ("structures", "expansions", "channels"):
        for i, vec in enumerate(ss["population"][gene]):
            if len(vec) != n_stages:
                errors.append(origins.line(
                    [["search_space", "population", gene, i], "search_space.strides"],
                    f"has {len(vec)} values, expected one per stage ({n_stages}, the length of "
                    "search_space.strides)"))
    if ds["val_fraction"] + ds["test_fraction"] >= 1:
        errors.append(origins.line(["dataset.val_fraction", "dataset.test_fraction"],
                                   f"their sum must be < 1, got {ds['val_fraction']} + {ds['test_fraction']}"))
    sc = cfg["scenarios"]
    if isinstance(ss["num_classes"], int):
        from tinyevo.scenarios.setup import fill_defaults

        fill_defaults(sc, ss["num_classes"])
    if sc["change_point"] >= sc["stream_length"]:
        errors.append(origins.line(["scenarios.change_point", "scenarios.stream_length"],
                                   f"the change point ({sc['change_point']}) must be smaller than the stream "
                                   f"length ({sc['stream_length']})"))
    weights = cfg["proxies"]["weights"] or {}
    unknown = sorted(set(weights) - set(cfg["proxies"]["names"]))
    for name in unknown:
        errors.append(origins.line([["proxies", "weights", name], "proxies.names"],
                                   f"a weight for {name!r}, which is not in proxies.names "
                                   f"{cfg['proxies']['names']}"))
    for name, w in weights.items():
        if not math.isfinite(float(w)):
            errors.append(origins.line([["proxies", "weights", name]], f"value {w} must be finite"))
    if weights and not unknown and set(weights) == set(cfg["proxies"]["names"]) \
            and not any(float(w) > 0 for w in weights.values()):
        errors.append(origins.line(["proxies.weights"], "every weight is 0: the combined score is undefined"))
    _raise(errors)


_KEY_IN_MESSAGE = re.compile(r"config keys? '([A-Za-z0-9_.\[\]]+)'")


def _strip_key(msg: str, key: str) -> str:
    """``"config key 'a.b': text"`` -> ``"text"`` (the message of a library check, whose key is
    named separately with its origin)."""
    for prefix in (f"config key '{key}': ", f"config key '{key}' "):
        if msg.startswith(prefix):
            rest = msg[len(prefix):]
            return "value " + rest[2:] if rest.startswith("= ") else rest
    return msg


def error_line(msg: str, origins: Origins, default_key: str | None = None) -> str:
    """The error line of a library check's message: the key it names (or ``default_key``) with
    its origin, then the message."""
    m = _KEY_IN_MESSAGE.search(msg)
    key = m.group(1) if m else default_key
    if key is None:
        return msg
    return origins.line([key], _strip_key(msg, key))


def dataset_num_classes(ds: Mapping[str, Any], workdir: str | os.PathLike | None = None) -> int:
    """Number of classes of a dataset config, known without reading the data (folders for
    imagefolder; a relative ``dataset.path`` is taken from ``workdir``, default the current
    directory)."""
    src = ds["source"]
    if src in NUM_CLASSES:
        return NUM_CLASSES[src]
    root = ds.get("path")
    if not root:
        raise ConfigError("config key 'dataset.path' is required for source 'imagefolder'")
    p = Path(os.path.expanduser(str(root)))
    if workdir is not None and not p.is_absolute():
        p = Path(workdir) / p
    if not p.is_dir():
        raise ConfigError(f"config key 'dataset.path': directory not found: {p}")
    classes = [d for d in p.iterdir() if d.is_dir() and not d.name.startswith(".")]
    if len(classes) < 2:
        raise ConfigError(
            f"config key 'dataset.path': an ImageFolder needs at least 2 class folders, "
            f"found {len(classes)} in {p}"
        )
    return len(classes)


# ------------------------------------------------------------------------------------ loading
def _merge(dst: CommentedMap, src: Mapping) -> None:
    for k, v in src.items():
        if isinstance(v, Mapping) and isinstance(dst.get(k), Mapping):
            _merge(dst[k], v)
        else:
            dst[k] = v


def _read_files(paths: Sequence[str | os.PathLike]) -> list[Source]:
    """One :class:`Source` per file; every unreadable file is reported, not only the first."""
    sources, errors = [], []
    for p in paths:
        try:
            doc = read_yaml(p)
        except ConfigError as exc:
            errors.append(str(exc))
            continue
        sources.append(Source(str(p), _to_plain(doc), doc))
    _raise(errors)
    return sources


def _cli_source(overrides: Mapping[str, Any], argv: Sequence[str] | None) -> Source:
    return Source("command line", _typed_overrides(_to_plain(overrides), _schema()), None, cli_arguments(argv))


def _resolve(sources: Sequence[Source], checks: bool = False, workdir: str | os.PathLike = ".",
             results_dir: str | None = None) -> tuple[dict, CommentedMap]:
    _check_sources(sources)
    files = [s for s in sources if s.doc is not None]
    # The first file is the base document, so its comments (head comment included) survive.
    merged = copy.deepcopy(files[0].doc) if files else CommentedMap()
    for s in sources:
        if s is not (files[0] if files else None):
            _merge(merged, copy.deepcopy(s.doc) if s.doc is not None else copy.deepcopy(s.data))
    origins = Origins(sources)
    cfg = _validate_merged(_to_plain(merged), origins, workdir)
    if checks:
        from tinyevo.preflight import problems

        _raise([origins.line(p.keys, p.text) if p.keys else p.text
                for p in problems(cfg, workdir=workdir, results_dir=results_dir)])
    _fill_doc(merged, cfg)
    return cfg, merged


def load_config(paths: Sequence[str | os.PathLike], overrides: Mapping[str, Any] | None = None,
                argv: Sequence[str] | None = None) -> tuple[dict, CommentedMap]:
    """Read the files (later files win), the ``overrides`` (``--config`` values; ``argv`` only
    names their arguments in errors), validate each source and the merge, resolve.

    Returns ``(config, resolved_doc)``: the plain dict every rule uses and a round-trip document
    (user comments kept, defaults filled) for :func:`dump_yaml`. One path alone (a ``str`` or
    path object) counts as a list of one."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    sources = _read_files(paths)
    if overrides:
        sources.append(_cli_source(overrides, argv))
    return _resolve(sources)


def workflow_config_files(configfiles: Sequence[str | os.PathLike] = (), workdir: str | os.PathLike = ".",
                          base: str = BASE_CONFIG, replace_base: bool = False) -> list[str]:
    """The files of a run in Snakemake's order: ``base`` (relative to ``workdir``) when it exists
    and ``--replace-workflow-config`` is not given, then every ``--configfile`` (a repeat of the
    base file counts once). Snakemake's own rule: a missing base file is an error only when no
    ``--configfile`` is given."""
    extra = [str(f) for f in configfiles]
    out = []
    base_path = Path(workdir) / base
    if not replace_base:
        if base_path.is_file():
            if not any(Path(f).resolve() == base_path.resolve() for f in extra):
                out.append(str(base_path) if str(workdir) not in ("", ".") else base)
        elif not extra:
            raise ConfigError(f"invalid configuration:\n  config file not found: {base_path} (the workflow's "
                              "default config; run from the repository root or give --configfile)")
    return out + extra


def load_workflow_config(configfiles: Sequence[str | os.PathLike] = (), cli: Mapping[str, Any] | None = None, *,
                         workdir: str | os.PathLike = ".", base: str = BASE_CONFIG, replace_base: bool = False,
                         argv: Sequence[str] | None = None, results_dir: str = "results"
                         ) -> tuple[dict, CommentedMap, list[str]]:
    """The Snakefile's entry point: :func:`workflow_config_files`, each read and validated with its
    origin, the ``cli`` values (Snakemake's parsed ``--config``; ``argv`` names their arguments),
    then :mod:`tinyevo.preflight` (checks against the search space, the device, the class ids and,
    unless ``results_dir`` already holds the prepared dataset, the dataset's paths). Returns
    ``(config, resolved_doc, files)``; raises :class:`ConfigError` with one line per problem."""
    files = workflow_config_files(configfiles, workdir, base, replace_base)
    sources = _read_files(files)
    if cli:
        sources.append(_cli_source(cli, argv))
    results = results_dir if Path(results_dir).is_absolute() else str(Path(workdir) / results_dir)
    cfg, doc = _resolve(sources, checks=True, workdir=workdir, results_dir=results)
    return cfg, doc, files


def _typed_overrides(value: Any, schema: Mapping[str, Any]) -> Any:
    """Snakemake parses the nested part of ``--config train='{lr: 0.01}'`` with YAML's BaseLoader,
    so every nested scalar arrives as a string. Where the schema does not accept a string there,
    read the string as a YAML 1.2 scalar with the files' loader (``'0.01'`` -> 0.01, ``'true'`` ->
    True, ``'yes'`` stays a string, ``''``/``'null'`` -> None); validation then judges the result as
    if it had come from a file."""
    if isinstance(value, Mapping):
        props = schema.get("properties", {}) if isinstance(schema, Mapping) else {}
        extra = schema.get("additionalProperties") if isinstance(schema, Mapping) else None
        return {k: _typed_overrides(v, props.get(k, extra if isinstance(extra, Mapping) else {}))
                for k, v in value.items()}
    if isinstance(value, list):
        items = schema.get("items", {}) if isinstance(schema, Mapping) else {}
        return [_typed_overrides(v, items if isinstance(items, Mapping) else {}) for v in value]
    if isinstance(value, str) and schema:
        types = schema.get("type")
        types = [types] if isinstance(types, str) else list(types or [])
        if "string" in types or ("enum" in schema and value in schema["enum"]):
            return value
        try:
            parsed = YAML(typ="safe").load(value) if value.strip() else None
        except Exception:  # not a YAML scalar: leave it to validation to name the key
            return value
        if parsed is None or isinstance(parsed, (bool, int, float, list, dict)):
            return parsed
    return value


def _fill_doc(doc: CommentedMap, cfg: Mapping) -> None:
    """Add resolved values to the round-trip document without dropping its comments.

    ruamel keeps the comment lines that follow a block (blank lines, a comment about the next
    section) on the block's last entry; defaults appended after that entry would land below them.
    So the lines are detached first and put back after the block's new last entry."""
    tail = _detach_tail(doc)
    for k, v in cfg.items():
        if isinstance(v, Mapping):
            if not isinstance(doc.get(k), CommentedMap):
                doc[k] = CommentedMap()
            _fill_doc(doc[k], v)
        elif k in doc and isinstance(doc[k], CommentedSeq):
            doc[k] = doc[k] if list(doc[k]) == list(v) else _flow(v)
        else:
            doc[k] = _flow(v) if isinstance(v, (list, tuple)) else v
    if tail:
        _attach_tail(doc, tail)


def _flow(seq) -> CommentedSeq:
    """A default list printed on one line (nested lists too), as a user would write it."""
    out = CommentedSeq(_flow(x) if isinstance(x, (list, tuple)) else x for x in seq)
    out.fa.set_flow_style()
    return out


def _last_entry(doc: CommentedMap) -> tuple[CommentedMap, Any] | None:
    """(map, key) of the entry printed last in ``doc`` (descending into trailing sub-maps)."""
    if not isinstance(doc, CommentedMap) or not len(doc):
        return None
    key = list(doc.keys())[-1]
    deeper = _last_entry(doc[key]) if isinstance(doc[key], CommentedMap) else None
    return deeper or (doc, key)


def _detach_tail(doc: CommentedMap) -> str | None:
    """Remove and return the comment lines after the last entry (its end-of-line comment stays)."""
    last = _last_entry(doc)
    if last is None:
        return None
    m, key = last
    item = m.ca.items.get(key)
    tok = item[2] if item and len(item) > 2 else None
    text = getattr(tok, "value", None)
    if not isinstance(text, str) or "\n" not in text[:-1]:
        return None
    i = text.index("\n")
    tok.value = text[: i + 1]
    return text[i + 1:]


def _attach_tail(doc: CommentedMap, tail: str) -> None:
    last = _last_entry(doc)
    if last is None:
        return
    m, key = last
    item = m.ca.items.get(key)
    tok = item[2] if item and len(item) > 2 else None
    if tok is not None and isinstance(getattr(tok, "value", None), str):
        tok.value += tail
        return
    from ruamel.yaml.error import CommentMark
    from ruamel.yaml.tokens import CommentToken

    slot = list(item) if item else [None, None, None, None]
    slot[2] = CommentToken("\n" + tail, CommentMark(0))
    m.ca.items[key] = slot


def dump_yaml(doc: Any) -> str:
    buf = io.StringIO()
    _yaml().dump(doc, buf)
    return buf.getvalue()


# ------------------------------------------------------------------------------ command line
def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tinyevo.config [-d DIR] [--configfile F ...] [--config KEY=VALUE ...]``: the
    workflow's config checks without Snakemake (Snakemake reads every ``--configfile`` itself
    before the workflow starts and reports a YAML syntax error there without its line; this names
    it). Prints the resolved config with ``--print``. Exit status 0 (valid) or 1 (one line per
    problem on stderr, no traceback)."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m tinyevo.config",
                                 description="Check a tinyevo configuration as `snakemake -n` would.")
    ap.add_argument("-d", "--directory", default=".", help="working directory of the run (holds config/config.yaml)")
    ap.add_argument("--configfile", "--configfiles", nargs="+", action="extend", default=[], metavar="FILE")
    ap.add_argument("-C", "--config", nargs="+", action="extend", default=[], metavar="KEY=VALUE")
    ap.add_argument("--replace-workflow-config", action="store_true")
    ap.add_argument("--print", action="store_true", help="print the resolved config")
    args = ap.parse_args(argv)
    try:
        from snakemake.cli import parse_config  # Snakemake's own reading of --config

        cli = parse_config(args.config)
    except ValueError as exc:
        print(f"invalid configuration:\n  command line: --config {' '.join(args.config)}: {exc}", file=sys.stderr)
        return 1
    try:
        cfg, doc, files = load_workflow_config([str(Path(f).absolute()) for f in args.configfile], cli,
                                               workdir=args.directory, argv=["--config", *args.config],
                                               replace_base=args.replace_workflow_config)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    if args.print:
        sys.stdout.write(dump_yaml(doc))
    else:
        print(f"configuration valid: {', '.join(files) or 'defaults'}{' + --config' if cli else ''}")
    return 0


if __name__ == "__main__":  # pragma: no cover - exercised through main()
    sys.exit(main())
