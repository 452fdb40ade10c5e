"""The report's front page: what the run deployed and how it learned on the device, in a few
lines, from the tables of the run.

    page = front_page(choice, compress_summary, memory, {scenario: summary}, device, accounting)
    rst = page_rst(page)     # included at the top of the report's front text (workflow.rst)
    html = page_html(page)   # the same as a page of its own (report category Summary)

Sources (one table each, nothing recomputed):

* the deployed net's architecture: ``results/evolution/choice.parquet`` (row ``net == "C"``:
  arch, source, val_acc of the final round);
* accuracy and size: ``results/compress/C/summary.parquet`` (models ``baseline_float`` = the
  trained float net, ``pruned_float``, ``pruned_int8_fe`` = the deployed int8 feature extractor
  with the float classifier; test accuracy, parameters, pruning step, feature size F);
* memory: ``results/tybox/C/memory.parquet`` (the TyBox memory model of the generated C++):
  ``flash_bytes`` (.text + .rodata + .data of the compiled object), ``ram_bytes`` (static RAM,
  .data + .bss), ``n_samples`` (buffer samples N_B), ``net_bytes`` + ``buffer_used`` (what
  TyBox's budget charges against M = ``device.ram_bytes`` under ``tybox.accounting``); the
  measured figure where the compiled object was measured, else the predicted one;
* the build target: ``results/tybox/C/target.parquet`` (``tybox.target``; on ``cortex-m4f`` the
  instructions QEMU executes per inference and per training step, instructions per MAC);
* the scenarios: ``results/scenarios/<scenario>/summary.parquet`` (final accuracy, mean and
  standard deviation over the repetitions, per variant tybox / tinyol / float; in incremental
  learning also the final accuracy on the new classes).

Next to each scenario of the thesis the page states the thesis's own figures (``THESIS``), which
come from another task: M. Lacava, "Neural Architecture Search for Tiny Incremental On-Device
Learning" (Politecnico di Milano, 2023), a CIFAR-10 net (79.3 % float; its 801 kB int8
deployment 75.0 %) on streams of 800 (drift) and 700 samples, transfer from CIFAR-10 to Imagenette.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from typing import Mapping

import pandas as pd

VARIANTS = ("tybox", "tinyol", "float")
VARIANT_NAMES = {"tybox": "TyBox", "tinyol": "TinyOL", "float": "float"}
#: (text, style) pieces of one line; style is "" (plain), "code" or "bold"
Line = list

#: The thesis's final accuracies (mean, std; a (low, high) pair where it reports its two TyBox
#: deployments, 801 kB and 1.19 MB; std None where it gives none) per scenario and variant, and
#: what they measure (``what``: "final" accuracy on all classes, "new" on the new classes only).
THESIS = {
    "concept_drift": {"what": "final", "tybox": (0.658, 0.019), "tinyol": (0.613, 0.014), "float": (0.778, 0.007)},
    "incremental": {"what": "new", "tybox": ((0.353, 0.464), None), "tinyol": (0.243, None)},
    "transfer": {"what": "final", "tybox": ((0.320, 0.381), None), "tinyol": (0.021, 0.020), "float": (0.505, 0.092)},
}
THESIS_TASK = "CIFAR-10, its own net and longer streams"


@dataclass
class ScenarioLine:
    name: str
    net: str
    repetitions: int
    capacity: int | None
    final: dict[str, tuple[float, float]]  # variant -> (mean, std) of the final accuracy
    new: dict[str, float] = field(default_factory=dict)  # variant -> mean final accuracy on the new classes
    after: dict[str, float] = field(default_factory=dict)  # variant -> mean accuracy after the change point


@dataclass
class FrontPage:
    net: str
    arch: str
    source: str
    val_acc: float
    step: int
    params: int
    feature_size: int
    float_acc: float
    pruned_acc: float
    int8_acc: float
    flash_bytes: float
    flash_measured: bool
    flash_budget: int | None
    ram_bytes: float
    ram_measured: bool
    ram_budget: int
    budget_used: float
    accounting: str
    buffer_samples: int
    min_buffer_samples: int
    scenarios: list[ScenarioLine] = field(default_factory=list)
    target: str = "host"
    instructions_inference: float = math.nan
    instructions_per_mac: float = math.nan
    instructions_train_step: float = math.nan
    instructions_estimated: float = math.nan  # the search's per-layer estimate of instructions_inference


def _one(df: pd.DataFrame, col: str, value: str, what: str) -> pd.Series:
    if col not in df.columns:
        raise ValueError(f"{what}: no column {col!r} (columns: {list(df.columns)})")
    rows = df[df[col] == value]
    if len(rows) != 1:
        raise ValueError(f"{what}: expected one row with {col} == {value!r}, found {len(rows)}")
    return rows.iloc[0]


def _term(memory: pd.DataFrame, term: str) -> tuple[float, bool]:
    """(value, measured?) of one memory term: the measured value when there is one."""
    row = _one(memory, "term", term, "TyBox memory table")
    m = row.get("measured", math.nan)
    if pd.notna(m):
        return float(m), True
    p = row.get("predicted", math.nan)
    if pd.isna(p):
        raise ValueError(f"TyBox memory table: term {term!r} has neither a measured nor a predicted value")
    return float(p), False


def _flash(memory: pd.DataFrame) -> tuple[float, bool]:
    """The compiled object's flash (measured ``flash_bytes``), else the model constants predicted."""
    rows = memory[memory["term"] == "flash_bytes"]
    if len(rows) == 1 and "measured" in rows.columns and pd.notna(rows["measured"].iloc[0]):
        return float(rows["measured"].iloc[0]), True
    return _term(memory, "flash_constants")[0], False


def scenario_line(name: str, net: str, summary: pd.DataFrame) -> ScenarioLine:
    """One scenario's final accuracy per variant (the variants present in the table)."""
    for c in ("variant", "final_mean", "final_std"):
        if c not in summary.columns:
            raise ValueError(f"scenario {name!r} summary: no column {c!r}")
    final, new, after = {}, {}, {}
    for v in VARIANTS:
        rows = summary[summary["variant"] == v]
        if len(rows):
            final[v] = (float(rows["final_mean"].iloc[0]), float(rows["final_std"].iloc[0]))
            for col, into in (("final_new_mean", new), ("after_change_mean", after)):
                if col in rows.columns and pd.notna(rows[col].iloc[0]):
                    into[v] = float(rows[col].iloc[0])
    tybox = summary[summary["variant"] == "tybox"]
    cap = int(tybox["capacity"].iloc[0]) if len(tybox) and "capacity" in summary.columns else None
    reps = int(summary["repetitions"].max()) if "repetitions" in summary.columns and len(summary) else 0
    return ScenarioLine(name=name, net=net, repetitions=reps, capacity=cap, final=final, new=new, after=after)


def front_page(choice: pd.DataFrame, compress: pd.DataFrame, memory: pd.DataFrame,
               scenarios: Mapping[str, tuple[str, pd.DataFrame]], device: Mapping, accounting: str,
               net: str = "C", target: pd.DataFrame | None = None) -> FrontPage:
    """The facts of the front page. ``scenarios``: name -> (net of the scenario, its summary
    table), in the order to show; ``device``: the config's ``device`` section; ``target``: the
    tybox stage's target table (one row), if any."""
    ch = _one(choice, "net", net, "choice table")
    base = _one(compress, "model", "baseline_float", f"compression summary of {net}")
    pruned = _one(compress, "model", "pruned_float", f"compression summary of {net}")
    int8 = _one(compress, "model", "pruned_int8_fe", f"compression summary of {net}")
    flash, flash_measured = _flash(memory)
    ram, ram_measured = _term(memory, "ram_bytes")
    net_bytes = _term(memory, "net_bytes")[0]
    buffer_used = _term(memory, "buffer_used")[0]
    n_samples = int(_term(memory, "n_samples")[0])
    flash_budget = device.get("flash_bytes")
    return FrontPage(
        net=net, arch=str(ch["arch"]), source=str(ch.get("source", "")),
        val_acc=float(ch["val_acc"]) if pd.notna(ch.get("val_acc", math.nan)) else math.nan,
        step=int(int8["step"]), params=int(int8["params"]), feature_size=int(int8["feature_size"]),
        float_acc=float(base["test_acc"]), pruned_acc=float(pruned["test_acc"]), int8_acc=float(int8["test_acc"]),
        flash_bytes=flash, flash_measured=flash_measured,
        flash_budget=int(flash_budget) if flash_budget else None,
        ram_bytes=ram, ram_measured=ram_measured, ram_budget=int(device["ram_bytes"]),
        budget_used=net_bytes + buffer_used, accounting=str(accounting), buffer_samples=n_samples,
        min_buffer_samples=int(device.get("min_buffer_samples", 0)),
        scenarios=[scenario_line(name, snet, df) for name, (snet, df) in scenarios.items()],
        **_target_facts(target),
    )


def _target_facts(target: pd.DataFrame | None) -> dict:
    if target is None or not len(target):
        return {}
    row = target.iloc[0]
    return {"target": str(row["target"]),
            **{k: float(row[k]) for k in ("instructions_inference", "instructions_per_mac",
                                          "instructions_train_step", "instructions_estimated")
               if k in target.columns}}


def _pct(x: float) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{100 * x:.1f} %"


def _bytes(x: float) -> str:
    return f"{int(round(x)):,} B"


def page_lines(p: FrontPage) -> tuple[list[Line], list[Line]]:
    """(lines about the deployed net, one line per scenario), each a list of (text, style)."""
    src = {"final_round": f"short-training final round, validation accuracy {_pct(p.val_acc)}",
           "final_round_C": f"C's final-round winner, validation accuracy {_pct(p.val_acc)}",
           "zero_cost": "best zero-cost score of the evolution"}.get(p.source, p.source)
    pruned = "unpruned" if p.step == 0 else f"pruning step {p.step}"
    acc = [("test accuracy: float ", ""), (_pct(p.float_acc), "bold")]
    if p.step:
        acc += [(", pruned float ", ""), (_pct(p.pruned_acc), "")]
    acc += [(", int8 feature extractor + float classifier ", ""), (_pct(p.int8_acc), "bold")]
    flash_src = "compiled object" if p.flash_measured else "model constants, predicted"
    if p.flash_budget:
        flash = [("flash: ", ""), (_bytes(p.flash_bytes), "bold"),
                 (f" ({flash_src}) of {_bytes(p.flash_budget)} ", ""), ("device.flash_bytes", "code"),
                 (f" ({_pct(p.flash_bytes / p.flash_budget)})", "")]
    else:
        flash = [("flash: ", ""), (_bytes(p.flash_bytes), "bold"), (f" ({flash_src}; no ", ""),
                 ("device.flash_bytes", "code"), (" set)", "")]
    ram_src = "static RAM of the compiled code" if p.ram_measured else "static RAM, predicted"
    ram = [("RAM: ", ""), (_bytes(p.ram_bytes), "bold"), (f" ({ram_src}) of {_bytes(p.ram_budget)} ", ""),
           ("device.ram_bytes", "code"), (f" ({_pct(p.ram_bytes / p.ram_budget)}); TyBox budget ", ""),
           (f"tybox.accounting = {p.accounting}", "code"),
           (f": net + buffer {_bytes(p.budget_used)} ({_pct(p.budget_used / p.ram_budget)})", "")]
    buf = [("on-device buffer: ", ""), (f"{p.buffer_samples} samples", "bold"), (" (", ""),
           ("device.min_buffer_samples", "code"), (f" = {p.min_buffer_samples})", "")]
    net = [
        [(f"Deployed net {p.net}", "bold"), (f": {p.params:,} parameters, {pruned}, "
                                                      f"F = {p.feature_size} features; chosen by the {src}", "")],
        [("architecture ", ""), (p.arch, "code")],
        acc, flash, ram, buf,
    ]
    if p.target != "host" and math.isfinite(p.instructions_inference):
        net.append([("on the target ", ""), (p.target, "code"), (" (emulated, QEMU ", ""), ("-icount", "code"),
                    ("; an instruction count, not cycles): ", ""),
                    (f"{p.instructions_inference / 1e6:.2f} M instructions per inference", "bold"),
                    (f" ({p.instructions_per_mac:.1f} per MAC"
                     + (f"; the search's per-layer estimate {p.instructions_estimated / 1e6:.2f} M, "
                        f"{100 * (p.instructions_estimated / p.instructions_inference - 1):+.1f} %"
                        if math.isfinite(p.instructions_estimated) else "")
                     + f"), {p.instructions_train_step / 1e6:.2f} M per training step over the full buffer", "")])
    scen = []
    for s in p.scenarios:
        parts = [(s.name.replace("_", " "), "bold"),
                 (f" (net {s.net}" + (f", buffer {s.capacity}" if s.capacity else "") + "): ", "")]
        for i, v in enumerate(v for v in VARIANTS if v in s.final):
            mean, std = s.final[v]
            parts.append(((", " if i else "") + f"{VARIANT_NAMES[v]} ", ""))
            parts.append((_pct(mean), "bold" if v == "tybox" else ""))
            if math.isfinite(std):
                parts.append((f" ± {100 * std:.1f}", ""))
            if v in s.new:
                parts.append((f" (new classes {_pct(s.new[v])})", ""))
        if s.after:  # how soon each learner adapts (the summary's after_change_mean)
            what = "mean over the stream" if s.name == "transfer" else "mean after the change"
            parts.append((f"; {what}: " + ", ".join(f"{VARIANT_NAMES[v]} {_pct(a)}" for v, a in s.after.items()), ""))
        parts += _thesis_pieces(s.name)
        scen.append(parts)
    return net, scen


def _thesis_value(value, std) -> str:
    text = (f"{100 * value[0]:.1f}-{100 * value[1]:.1f} %" if isinstance(value, tuple) else _pct(value))
    return text + (f" ± {100 * std:.1f}" if std is not None else "")


def _thesis_pieces(name: str) -> Line:
    """The thesis's figures of scenario ``name`` (none for a scenario it did not run)."""
    t = THESIS.get(name)
    if not t:
        return []
    what = "new classes: " if t["what"] == "new" else ""
    figs = ", ".join(f"{VARIANT_NAMES[v]} {_thesis_value(*t[v])}" for v in VARIANTS if v in t)
    return [(f"; thesis ({THESIS_TASK}), {what}{figs}", "")]


def _scenario_heading(p: FrontPage) -> str:
    reps = sorted({s.repetitions for s in p.scenarios})
    over = f"mean ± std over {reps[0]} repetitions" if len(reps) == 1 else "mean ± std over the repetitions"
    return f"On-device learning, final accuracy ({over})"


def _rst_piece(text: str, style: str) -> str:
    if style == "code":
        return f"``{text}``"
    if style == "bold":
        return f"**{text}**"
    return text.replace("\\", "\\\\").replace("*", "\\*").replace("`", "\\`").replace("_", "\\_")


def _rst_line(line: Line) -> str:
    out, prev_styled = "", False
    for text, style in line:
        piece = _rst_piece(text, style)
        # inline markup must not touch word characters: an escaped space separates them
        if out and ((style and out[-1].isalnum()) or (prev_styled and piece[:1].isalnum())):
            out += "\\ "
        out += piece
        prev_styled = bool(style)
    return out


def page_rst(p: FrontPage) -> str:
    """The front page as reStructuredText (bullet lists, no section titles: it is included at
    the top of the report's front text)."""
    net, scen = page_lines(p)
    out = [_rst_line(net[0]), ""] + [f"* {_rst_line(line)}" for line in net[1:]] + [""]
    if scen:
        out += [f"**{_scenario_heading(p)}**", ""] + [f"* {_rst_line(line)}" for line in scen] + [""]
    return "\n".join(out) + "\n"


def _html_line(line: Line) -> str:
    tags = {"code": "code", "bold": "b"}
    return "".join(f"<{tags[s]}>{html.escape(t)}</{tags[s]}>" if s else html.escape(t) for t, s in line)


def page_html(p: FrontPage) -> str:
    """The front page as a self-contained HTML page."""
    from tinyevo.report import _CSS

    net, scen = page_lines(p)
    body = [f"<p>{_html_line(net[0])}</p>", "<ul>"] + [f"<li>{_html_line(x)}</li>" for x in net[1:]] + ["</ul>"]
    if scen:
        body += [f"<p><b>{html.escape(_scenario_heading(p))}</b></p>", "<ul>"]
        body += [f"<li>{_html_line(x)}</li>" for x in scen] + ["</ul>"]
    return ("<!doctype html><html><head><meta charset='utf-8'><title>summary</title>" + _CSS
            + "</head><body>" + "\n".join(body) + "</body></html>\n")


def write_front_page(choice_path, compress_path, memory_path, scenario_paths: Mapping[str, tuple[str, str]],
                     device: Mapping, accounting: str, out_rst, out_html, target_path=None) -> FrontPage:
    """The rule ``report_summary``: read the tables, write the page as RST and HTML (atomic).
    ``scenario_paths``: scenario -> (its net, path of its summary table)."""
    from tinyevo.io import atomic_write_text, read_parquet

    page = front_page(read_parquet(choice_path, "final-round choice"),
                      read_parquet(compress_path, "compression summary"),
                      read_parquet(memory_path, "TyBox memory table"),
                      {s: (net, read_parquet(path, f"scenario {s} summary"))
                       for s, (net, path) in scenario_paths.items()},
                      device, accounting,
                      target=read_parquet(target_path, "TyBox target table") if target_path else None)
    atomic_write_text(out_rst, page_rst(page))
    atomic_write_text(out_html, page_html(page))
    return page
