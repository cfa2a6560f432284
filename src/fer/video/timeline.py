"""A PNG per video of each track's seven probabilities over time, drawn from its rows file after the analysis.

Reading the rows back (instead of collecting them during the analysis) keeps memory flat and makes the
figure of a resumed video whole. One panel per track, the longest tracks first (at most ``MAX_TRACKS``).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from fer.classes import CLASSES
from fer.plots import new_figure, save
from fer.video.rows import iter_rows

MAX_TRACKS = 8


def plot_timeline(rows_path: str | Path, target: str | Path, title: str = "") -> Path:
    """Draw the timeline of ``rows_path`` into ``target`` (a panel saying "no face" when no track has rows)."""
    tracks: dict[int, list[tuple[float, list[float]]]] = defaultdict(list)
    for row in iter_rows(rows_path):
        if row["status"] == "ok":
            tracks[row["track"]].append((row["time"], [row[f"p_{c}"] for c in CLASSES]))
    shown = sorted(tracks, key=lambda t: (-len(tracks[t]), t))[:MAX_TRACKS]
    figure = new_figure(10, 1.2 + 2.2 * max(1, len(shown)))
    if not shown:
        axes = figure.add_subplot()
        axes.text(0.5, 0.5, "no face found", ha="center", va="center", transform=axes.transAxes)
        axes.set_axis_off()
    for number, track in enumerate(sorted(shown), start=1):
        axes = figure.add_subplot(len(shown), 1, number)
        times = np.array([t for t, _ in tracks[track]])
        probabilities = np.array([p for _, p in tracks[track]])
        for column, name in enumerate(CLASSES):
            axes.plot(times, probabilities[:, column], label=name, linewidth=1.2)
        axes.set_ylim(0, 1.02)
        axes.set_ylabel(f"track {track}\nprobability")
        axes.grid(alpha=0.3)
        if number == 1:
            axes.legend(loc="upper right", ncol=len(CLASSES), fontsize=7)
        if number == len(shown):
            axes.set_xlabel("time (s)")
    figure.suptitle(f"{title} expressions over time".strip())
    return save(figure, target)
