"""Configuration: JSON-schema validation with defaults, line-numbered errors, resolved dump.

The schema lives in ``workflow/schemas/config.schema.yaml`` (JSON schema written as YAML,
``additionalProperties: false`` everywhere). ``load_config`` reads one or more YAML files with
ruamel.yaml in round-trip mode, so that every error can name the key path *and* the line of the
file it came from, fills in every default, resolves the derived values (dataset name, input
resolution, per-stage seeds, number of classes) and returns a plain ``dict``.

This module must stay cheap to import: the Snakefile imports it at parse time, before any job.
"""

from __future__ import annotations

import copy
import io
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from tinyevo.io import atomic_write_text

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "schemas" / "config.schema.yaml"

# Stage sections whose ``seed: null`` means "use the global seed".
_SEEDED = ("dataset", "proxies", "evolution", "train", "validation", "compress", "scenarios")

NUM_CLASSES = {"digits": 10, "fashion_mnist": 10, "cifar10": 10, "vww": 2}


class ConfigError(ValueError):
    """A configuration problem; the message names the key path and, when known, file:line."""


def _yaml() -> YAML:
    y = YAML(typ="rt")
    y.preserve_quotes = True
    y.width = 100
    return y


def load_schema() -> dict:
    with open(SCHEMA_PATH) as fh:
        return _to_plain(YAML(typ="safe").load(fh))


def _to_plain(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, CommentedSeq)):
        return [_to_plain(v) for v in obj]
    return obj


def read_yaml(path: str | os.PathLike) -> CommentedMap:
    """Round-trip load; a clear error for a missing file or broken YAML."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        with open(p) as fh:
            data = _yaml().load(fh)
    except Exception as exc:  # ruamel's own messages carry line/column
        raise ConfigError(f"{p}: not valid YAML: {exc}") from None
    if data is None:
        data = CommentedMap()
    if not isinstance(data, CommentedMap):
        raise ConfigError(f"{p}: the top level must be a mapping of keys, got {type(data).__name__}")
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


def _validator(schema: dict):
    """A Draft 2020-12 validator that fills ``default`` values while it validates."""
    from jsonschema import Draft202012Validator, validators

    base = Draft202012Validator

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from base.VALIDATORS["properties"](validator, properties, instance, schema)

    cls = validators.extend(base, {"properties": set_defaults})
    return cls(schema)


def _describe(err) -> str:
    """One readable sentence for a jsonschema error."""
    if err.validator == "additionalProperties":
        allowed = sorted(err.schema.get("properties", {}))
        extra = sorted(set(err.instance) - set(allowed))
        return f"unknown key {', '.join(map(repr, extra))} (allowed here: {', '.join(allowed)})"
    if err.validator == "enum":
        return f"value {err.instance!r} is not one of {err.validator_value}"
    if err.validator == "type":
        return f"value {err.instance!r} has the wrong type, expected {err.validator_value}"
    if err.validator in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        return f"value {err.instance!r} is out of range ({err.validator} {err.validator_value})"
    return err.message


def _in_mapping(m: Any, path: Sequence[Any]) -> bool:
    for key in path:
        if isinstance(m, Mapping) and key in m:
            m = m[key]
        elif isinstance(m, (list, tuple)) and isinstance(key, int) and key < len(m):
            m = m[key]
        else:
            return False
    return True


def validate(config: dict, docs: Sequence[tuple[str, CommentedMap]] = (),
             overrides: Mapping[str, Any] | None = None) -> dict:
    """Validate ``config`` in place (defaults filled) and return it.

    ``docs`` are the (filename, round-trip document) pairs the config came from; they are only
    used to give line numbers in error messages.
    """
    validator = _validator(load_schema())
    errors = sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        lines = []
        for err in errors:
            path = list(err.absolute_path)
            if err.validator == "additionalProperties":
                extra = sorted(set(err.instance) - set(err.schema.get("properties", {})))
                if extra:
                    path = path + [extra[0]]
            where = ""
            if overrides and _in_mapping(overrides, path):
                where = " (set with --config on the command line)"
            for fname, doc in ([] if where else reversed(list(docs))):
                ln = _line_of(doc, path)
                if ln is not None:
                    where = f" ({fname}, line {ln})"
                    break
            lines.append(f"  config key '{_fmt_path(path)}'{where}: {_describe(err)}")
        raise ConfigError("invalid configuration:\n" + "\n".join(lines))
    _resolve_derived(config)
    return config


def _resolve_derived(cfg: dict) -> None:
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
    if ss["num_classes"] is None:
        ss["num_classes"] = dataset_num_classes(ds)
    n_stages = len(ss["strides"])
    pop_cfg = ss["population"]
    for gene in ("structures", "expansions", "channels"):
        for i, vec in enumerate(pop_cfg[gene]):
            if len(vec) != n_stages:
                raise ConfigError(
                    f"config key 'search_space.population.{gene}[{i}]': has {len(vec)} values, "
                    f"expected one per stage ({n_stages}, the length of search_space.strides)"
                )
    if ds["val_fraction"] + ds["test_fraction"] >= 1:
        raise ConfigError(
            "config keys 'dataset.val_fraction' + 'dataset.test_fraction' must be < 1, got "
            f"{ds['val_fraction']} + {ds['test_fraction']}"
        )
    sc = cfg["scenarios"]
    if sc["change_point"] >= sc["stream_length"]:
        raise ConfigError(
            f"config key 'scenarios.change_point' ({sc['change_point']}) must be smaller than "
            f"'scenarios.stream_length' ({sc['stream_length']})"
        )


def dataset_num_classes(ds: Mapping[str, Any]) -> int:
    """Number of classes of a dataset config, known without reading the data (folders for
    imagefolder)."""
    src = ds["source"]
    if src in NUM_CLASSES:
        return NUM_CLASSES[src]
    root = ds.get("path")
    if not root:
        raise ConfigError("config key 'dataset.path' is required for source 'imagefolder'")
    p = Path(root)
    if not p.is_dir():
        raise ConfigError(f"config key 'dataset.path': directory not found: {p}")
    classes = [d for d in p.iterdir() if d.is_dir() and not d.name.startswith(".")]
    if len(classes) < 2:
        raise ConfigError(
            f"config key 'dataset.path': an ImageFolder needs at least 2 class folders, "
            f"found {len(classes)} in {p}"
        )
    return len(classes)


def _merge(dst: CommentedMap, src: Mapping) -> None:
    for k, v in src.items():
        if isinstance(v, Mapping) and isinstance(dst.get(k), Mapping):
            _merge(dst[k], v)
        else:
            dst[k] = v


def load_config(
    paths: Sequence[str | os.PathLike], overrides: Mapping[str, Any] | None = None
) -> tuple[dict, CommentedMap]:
    """Read, merge (later files win), validate and resolve.

    Returns ``(config, resolved_doc)``: the plain dict every rule uses and a round-trip document
    (user comments kept, defaults filled) for ``write_resolved``.
    """
    docs = [(str(p), read_yaml(p)) for p in paths]
    # The first file is the base document, so its comments (head comment included) survive.
    merged = copy.deepcopy(docs[0][1]) if docs else CommentedMap()
    for _, d in docs[1:]:
        _merge(merged, copy.deepcopy(d))
    if overrides:
        overrides = _typed_overrides(overrides, load_schema())
        _merge(merged, overrides)
    cfg = validate(_to_plain(merged), docs, overrides)
    _fill_doc(merged, cfg)
    return cfg, merged


def _typed_overrides(value: Any, schema: Mapping[str, Any]) -> Any:
    """Snakemake parses the nested part of ``--config train='{lr: 0.01}'`` with YAML's BaseLoader,
    so every nested scalar arrives as a string. Where the schema does not accept a string there,
    read the string as a YAML scalar (``'0.01'`` -> 0.01, ``'true'`` -> True, ``''``/``'null'`` -> None);
    validation then judges the result as if it had come from a file."""
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


def write_resolved(doc: CommentedMap, path: str | os.PathLike) -> None:
    atomic_write_text(path, dump_yaml(doc))
