"""Tables, markdown summaries and figures for the reports of every stage (Kedro layer: pandas, matplotlib)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd
import torch
from matplotlib.figure import Figure  # figures without pyplot: no global backend switch


def markdown_table(df: pd.DataFrame, columns: Sequence[str], floatfmt: str = "{:.3f}") -> str:
    """A GitHub markdown table of ``columns`` (no extra dependency: pandas' to_markdown needs tabulate)."""
    def cell(v: object) -> str:
        if isinstance(v, float):
            return "n/a" if math.isnan(v) else floatfmt.format(v)
        return str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df[list(columns)].itertuples(index=False)]
    return "\n".join(lines)


def image_figure(grid: torch.Tensor, title: str) -> Figure:
    """A figure showing ``grid`` ``[3,H,W]`` in [0,1] at its native resolution (2 px per pixel)."""
    h, w = grid.shape[-2:]
    fig = Figure(figsize=(max(w / 50, 3), max(h / 50, 2) + 0.4), dpi=100)
    ax = fig.add_axes((0, 0, 1, h / (h + 20)))
    ax.imshow(grid.permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest")
    ax.set_axis_off()
    fig.suptitle(title, fontsize=8)
    return fig


def bar_chart(df: pd.DataFrame, victim: str, metric: str = "sr_mask") -> Figure:
    """Bars of ``metric`` per method × purification for one victim (rows pooled over targets)."""
    sub = df[(df["victim"] == victim)].pivot_table(index="method", columns="purification", values=metric)
    fig = Figure(figsize=(5, 3), dpi=100)
    ax = fig.add_subplot()
    sub.plot.bar(ax=ax, rot=0)
    ax.set_ylabel(metric)
    ax.set_title(f"{victim}: {metric} by method and purification", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
