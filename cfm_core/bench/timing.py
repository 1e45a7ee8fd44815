"""Timing for the benchmarks: a warm-up run, then the median of N repeats, with the device synchronised.

Every figure the benchmark prints is derived from :class:`Timing` objects made by :func:`measure`, so a test can
patch :data:`clock` (or :func:`measure` itself) to check the arithmetic without timing anything.
"""
from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import CFMError

clock: Callable[[], float] = time.perf_counter  # tests replace this with a fake clock

BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16", "amx_tile", "avx_ne_convert")


@dataclass
class Timing:
    """``seconds`` = median of ``samples`` (wall seconds of each timed run, device synchronised)."""

    label: str
    seconds: float
    samples: list[float]
    warmup: int
    result: Any = field(default=None, repr=False)  # what the last run returned (not written to JSON)

    def to_dict(self) -> dict:
        return {"label": self.label, "seconds": self.seconds, "samples": self.samples, "warmup": self.warmup,
                "repeats": len(self.samples)}


def synchronize(device: torch.device | str | None) -> None:
    """Wait for queued GPU work, so the clock sees it (a no-op on CPU)."""
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def measure(fn: Callable[[], Any], *, label: str, repeats: int = 3, warmup: int = 1,
            device: torch.device | str | None = None, budget_s: float | None = None) -> Timing:
    """Run ``fn`` ``warmup`` times untimed, then ``repeats`` times timed; the median is the figure.

    ``budget_s`` caps the timed runs: when one run takes longer than ``budget_s / repeats`` the remaining repeats
    are dropped (at least one is always made), so a slow configuration does not stall the whole benchmark.
    """
    if repeats < 1 or warmup < 0:
        raise CFMError(f"measure({label!r}): repeats={repeats} must be ≥ 1 and warmup={warmup} ≥ 0")
    result = None
    for _ in range(warmup):
        result = fn()
        synchronize(device)
    samples: list[float] = []
    for _ in range(repeats):
        synchronize(device)
        start = clock()
        result = fn()
        synchronize(device)
        samples.append(clock() - start)
        if budget_s is not None and sum(samples) + samples[-1] > budget_s:
            break
    return Timing(label=label, seconds=float(statistics.median(samples)), samples=samples, warmup=warmup,
                  result=result)


def measure_interleaved(fns: dict[str, Callable[[], Any]], *, repeats: int = 3, warmup: int = 1,
                        device: torch.device | str | None = None,
                        budget_s: float | None = None) -> dict[str, Timing]:
    """Like :func:`measure` for several functions whose *ratios* matter: the timed runs go round-robin
    (A B C, A B C, ...), so a change in machine load hits every function alike instead of whichever ran last.

    ``budget_s`` is per function: rounds stop once another one would take some function past it.
    """
    if repeats < 1 or warmup < 0:
        raise CFMError(f"measure_interleaved: repeats={repeats} must be ≥ 1 and warmup={warmup} ≥ 0")
    results: dict[str, Any] = dict.fromkeys(fns)
    for _ in range(warmup):
        for label, fn in fns.items():
            results[label] = fn()
            synchronize(device)
    samples: dict[str, list[float]] = {label: [] for label in fns}
    for _ in range(repeats):
        for label, fn in fns.items():
            synchronize(device)
            start = clock()
            results[label] = fn()
            synchronize(device)
            samples[label].append(clock() - start)
        if budget_s is not None and any(sum(s) + s[-1] > budget_s for s in samples.values()):
            break
    return {label: Timing(label=label, seconds=float(statistics.median(samples[label])), samples=samples[label],
                          warmup=warmup, result=results[label]) for label in fns}


def ratio(numerator: float, denominator: float) -> float | None:
    """numerator / denominator, or None when the denominator is not a positive number."""
    if denominator is None or numerator is None or not denominator > 0:
        return None
    return numerator / denominator


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    """The CPU feature flags from /proc/cpuinfo (empty where that file does not exist)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def machine_info(device: torch.device) -> dict:
    """What the numbers were measured on; printed at the top of the report and stored in the JSON."""
    flags = cpu_flags()
    info = {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(device),
        "cpu_bf16_flags": [f for f in BF16_CPU_FLAGS if f in flags],
        "load_average": load_average(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def bf16_hardware_note(flags: set[str] | None = None) -> str:
    """Why bf16 is (or is not) expected to be fast on this CPU."""
    flags = cpu_flags() if flags is None else flags
    if "amx_bf16" in flags:
        return "CPU has AMX-BF16 tiles: bf16 matmul/conv should run several times faster than fp32"
    if "avx512_bf16" in flags:
        return ("CPU has AVX512-BF16 (bf16 dot-product instructions, no AMX tiles): oneDNN convolutions and "
                "matmuls run natively in bf16 with half the memory traffic; element-wise ops gain less")
    return ("CPU lacks AVX512-BF16 and AMX: bf16 is emulated by converting to fp32, so it is not expected "
            "to be faster than fp32")
