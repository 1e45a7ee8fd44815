"""The benchmark plots: one matplotlib figure per section, drawn by the section's own plotter with these helpers."""
from __future__ import annotations

import os
from collections.abc import Callable, Mapping

from ..checkpoint import atomic_write
from .common import Section

Plotter = Callable[[Section, str], None]  # (section, png path) -> None


def new_figure(width: float = 7.0, height: float = 4.0):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(width, height), dpi=110)
    return fig, ax


def save_figure(fig, path: str) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    finally:
        plt.close(fig)


def bar_chart(section: Section, path: str, value: str, label: Callable[[dict], str], ylabel: str) -> None:
    """One bar per row of the section's first table: ``row[value]``, labelled ``label(row)``, alternating colours."""
    rows = section.tables[0].rows
    fig, ax = new_figure()
    ax.bar(range(len(rows)), [r[value] for r in rows], color=[f"C{i % 2}" for i in range(len(rows))])
    ax.set_xticks(range(len(rows)), [label(r) for r in rows], fontsize=7)
    ax.set_ylabel(ylabel)
    ax.set_title(section.title, fontsize=9)
    save_figure(fig, path)


def write_plots(folder: str, sections: list[Section], plotters: Mapping[str, Plotter | None]) -> list[str]:
    """One PNG per section that has a plotter (each section spec carries its own) and something to plot; returns
    the written paths."""
    os.makedirs(folder, exist_ok=True)
    written = []
    for section in sections:
        plotter = plotters.get(section.key)
        if plotter is None or section.skipped or not any(t.rows for t in section.tables):
            continue
        path = os.path.join(folder, f"{section.key}.png")
        plotter(section, path)
        written.append(path)
    return written
