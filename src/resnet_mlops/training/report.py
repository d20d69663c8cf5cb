"""The training history as DVC plot data (reports/history.csv) and as curves (reports/curves.png)."""

from __future__ import annotations

import csv
from pathlib import Path

from resnet_mlops import atomic


def write_history(path: Path, history: dict[str, list[float]]) -> None:
    """One row per epoch, one column per metric."""
    keys = sorted(history)
    with atomic.atomic_path(path) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["epoch", *keys])
        for epoch in range(len(history[keys[0]])):
            writer.writerow([epoch + 1, *(f"{history[k][epoch]:.6f}" for k in keys)])


def curves_figure(history: dict[str, list[float]]):
    """Loss and accuracy per epoch, training and validation side by side."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for axis, metric in zip(axes, ("loss", "accuracy")):
        for key, style in ((metric, "-"), (f"val_{metric}", "--")):
            if key in history:
                values = history[key]
                axis.plot(range(1, len(values) + 1), values, style, label=key)
        axis.set_xlabel("epoch")
        axis.set_title(metric)
        axis.legend()
        axis.grid(alpha=0.3)
    figure.tight_layout()
    return figure


def write_curves(path: Path, history: dict[str, list[float]]) -> None:
    """The curves as a PNG: the offline view of the history (DVC's HTML plots load Vega from a CDN)."""
    figure = curves_figure(history)
    from matplotlib import pyplot as plt

    with atomic.atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=100)
    plt.close(figure)
