"""The benchmark report: markdown tables for stdout and a JSON file (written atomically); plots are in ``plots``."""
from __future__ import annotations

import json
import math
from typing import Any

from ..checkpoint import atomic_write
from .common import Section, Table

JSON_FORMAT = "cfm-boost-bench"
JSON_VERSION = 1


def format_value(value: Any) -> str:
    """Numbers with about three significant digits; None as n/a; booleans as yes/no."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10_000 else str(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        if value == 0:
            return "0"
        magnitude = abs(value)
        if magnitude >= 1000:
            return f"{value:,.0f}"
        if magnitude >= 0.01:
            return f"{value:.3g}" if magnitude < 100 else f"{value:.1f}"
        return f"{value:.2e}"
    return _cell(value)


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|")


def markdown_table(table: Table) -> str:
    head = "| " + " | ".join(_cell(c) for c in table.columns) + " |"
    rule = "|" + "|".join("---" for _ in table.columns) + "|"
    body = ["| " + " | ".join(format_value(row.get(c)) for c in table.columns) + " |" for row in table.rows]
    return "\n".join([f"*{table.title}*", "", head, rule, *body])


def markdown_section(number: int, section: Section) -> str:
    parts = [f"## {number}. {section.title}"]
    if section.skipped:
        parts.append(f"Skipped: {section.skipped}")
    parts += [markdown_table(t) for t in section.tables if t.rows]
    if section.notes:
        parts.append("\n".join(f"- {note}" for note in section.notes))
    parts += [g.line() for g in section.goals]
    load = section.extra.get("load_average", {})
    parts.append(f"_section time: {section.seconds:.0f} s" +
                 (f"; 1-min load average {load['start'][0]} → {load['end'][0]}_" if load.get("start") and
                  load.get("end") else "_"))
    return "\n\n".join(parts)


def markdown_report(header: dict, sections: list[Section]) -> str:
    m = header["machine"]
    lines = [
        f"# cfm-boost benchmarks ({header['mode']} mode)",
        "",
        f"- machine: {m['cpu']}, {m['cpu_count']} logical CPUs, torch {m['torch']} with {m['torch_threads']} "
        f"threads, Python {m['python']}" + (f", GPU {m['gpu']}" if m.get("gpu") else ""),
        f"- device: {m['device']}; CPU bf16 features: {', '.join(m['cpu_bf16_flags']) or 'none'}",
        f"- load average at start: {m['load_average']}; at end: {header.get('load_average_end')} "
        "(other processes on this machine slow every figure; ratios are measured side by side in this run)",
        f"- timing: {header['timing']}",
        *(f"- **warning**: {w}" for w in header.get("warnings", [])),
    ]
    body = [markdown_section(i, s) for i, s in enumerate(sections, 1)]
    goals = [g for s in sections for g in s.goals]
    summary = ["## Goals", "", "| section | goal | value | target | verdict |", "|---|---|---|---|---|"]
    for s in sections:
        for g in s.goals:
            sign = "≥" if g.higher_is_better else "≤"
            value = "n/a" if g.value is None else f"{g.value:.2f}{g.unit}"
            summary.append(f"| {s.key} | {_cell(g.name)} | {value} | {sign} {g.target:g}{g.unit} | {g.verdict} |")
    tail = ["\n".join(summary)] if goals else []
    return "\n\n".join(["\n".join(lines), *body, *tail, f"_total wall time: {header['wall_seconds']:.0f} s_"]) + "\n"


def report_dict(header: dict, sections: list[Section]) -> dict:
    return {"format": JSON_FORMAT, "version": JSON_VERSION, **header,
            "sections": {s.key: s.to_dict() for s in sections}}


def write_json(path: str, header: dict, sections: list[Section]) -> None:
    text = json.dumps(report_dict(header, sections), indent=2, default=_json_default)

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)

    atomic_write(path, write)


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)
