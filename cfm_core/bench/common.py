"""Shared types of the benchmark sections: the run context, a section's table, and a goal with PASS/MISS."""
from __future__ import annotations

import gc
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from . import timing as bench_timing
from .timing import Timing

RANDOM_WEIGHTS = "random weights — timing only"
PACK_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the folder of cfm_core


def log_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def shown_path(path: str) -> str:
    """A model path as a report shows it: relative to the pack when inside it, else the file name only (reports
    are committed to docs/, and a folder of this machine means nothing on another)."""
    full = os.path.abspath(path)
    if os.path.commonpath([PACK_ROOT, full]) == PACK_ROOT:
        return os.path.relpath(full, PACK_ROOT).replace(os.sep, "/")
    return os.path.basename(full)


@dataclass
class BenchContext:
    """How to run: the device, quick or full, and how many timed repeats a measurement gets."""

    device: torch.device
    quick: bool = True
    repeats: int = 3
    warmup: int = 1
    budget_s: float = 30.0  # per measurement; repeats beyond it are dropped
    seed: int = 0
    model_path: str | None = None
    log: Callable[[str], None] = log_stderr


@dataclass
class Goal:
    """A target from the issue, checked against a number measured in this run.

    PASS when ``value ≥ target`` (or ``≤`` when ``higher_is_better`` is False); n/a when nothing was measured.
    """

    name: str
    value: float | None
    target: float
    higher_is_better: bool = True
    unit: str = "×"
    reason: str = ""

    @property
    def passed(self) -> bool | None:
        if self.value is None:
            return None
        return self.value >= self.target if self.higher_is_better else self.value <= self.target

    @property
    def verdict(self) -> str:
        return {True: "PASS", False: "MISS", None: "n/a"}[self.passed]

    def line(self) -> str:
        sign = "≥" if self.higher_is_better else "≤"
        value = "not measured" if self.value is None else f"{self.value:.2f}{self.unit}"
        text = f"**Goal** {self.name}: {value} (target {sign} {self.target:g}{self.unit}) → **{self.verdict}**"
        return f"{text}. {self.reason}" if self.reason else text

    def to_dict(self) -> dict:
        return {"name": self.name, "value": self.value, "target": self.target,
                "higher_is_better": self.higher_is_better, "unit": self.unit, "passed": self.passed,
                "verdict": self.verdict, "reason": self.reason}


@dataclass
class Table:
    """Rows of dicts keyed by ``columns``; a value may be a number, a string or None (shown as n/a)."""

    title: str
    columns: list[str]
    rows: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"title": self.title, "columns": self.columns, "rows": self.rows}


@dataclass
class Section:
    """One benchmark section: tables, notes, goals and the raw timings everything was computed from."""

    key: str
    title: str
    tables: list[Table] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    goals: list[Goal] = field(default_factory=list)
    timings: list[Timing] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # section-specific numbers for JSON and plots
    skipped: str | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {"key": self.key, "title": self.title, "tables": [t.to_dict() for t in self.tables],
                "notes": self.notes, "goals": [g.to_dict() for g in self.goals],
                "timings": [t.to_dict() for t in self.timings], "extra": self.extra, "skipped": self.skipped,
                "seconds": self.seconds}


def free_memory() -> None:
    """Drop cached allocations between models so one section's leftovers do not skew the next."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def timed(ctx: BenchContext, section: Section, fn: Callable[[], Any], label: str, *, warmup: int | None = None,
          repeats: int | None = None) -> Timing:
    """Measure ``fn`` with the context's repeats/warm-up/budget and keep the timing in ``section``.

    Goes through ``bench_timing.measure`` by attribute, so tests can replace the measurement.
    """
    ctx.log(f"  [{section.key}] {label} ...")
    timing = bench_timing.measure(fn, label=label, repeats=ctx.repeats if repeats is None else repeats,
                                  warmup=ctx.warmup if warmup is None else warmup, device=ctx.device,
                                  budget_s=ctx.budget_s)
    ctx.log(f"  [{section.key}] {label}: {timing.seconds:.3f} s (median of {len(timing.samples)})")
    section.timings.append(timing)
    return timing


def timed_group(ctx: BenchContext, section: Section, fns: dict[str, Callable[[], Any]], *,
                warmup: int | None = None, repeats: int | None = None) -> dict[str, Timing]:
    """Measure functions that will be compared with each other, interleaved (see ``measure_interleaved``)."""
    ctx.log(f"  [{section.key}] {', '.join(fns)} (interleaved) ...")
    timings = bench_timing.measure_interleaved(fns, repeats=ctx.repeats if repeats is None else repeats,
                                               warmup=ctx.warmup if warmup is None else warmup,
                                               device=ctx.device, budget_s=ctx.budget_s)
    for timing in timings.values():
        ctx.log(f"  [{section.key}] {timing.label}: {timing.seconds:.3f} s (median of {len(timing.samples)})")
        section.timings.append(timing)
    return timings
