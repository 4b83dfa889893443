"""The loss curve of a run, as a PNG beside its checkpoints."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on training machines
import matplotlib.pyplot as plt  # noqa: E402


def plot_losses(history: list[dict], path: Path, title: str = "") -> None:
    if not history:
        return
    steps = [h["step"] for h in history]
    figure, axis = plt.subplots(figsize=(7, 4), dpi=100)
    for key in ("loss", "itc", "itm", "itg"):  # stage 2's "lm" is its whole loss
        if key in history[0]:
            axis.plot(steps, [h[key] for h in history], label=key, linewidth=2 if key == "loss" else 1)
    axis.set_xlabel("step")
    axis.set_ylabel("loss")
    axis.set_title(title)
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
