"""A training run's record: history.csv (one row per logged step) and the PSNR and loss plots.

Rows are appended and flushed as training goes, so a killed run keeps what it logged; a resume
rewrites the file without the rows logged after its checkpoint. Plots use matplotlib's
object-oriented Agg API: no pyplot, no global backend switch, never a window.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

from superres.atomic import atomic_write_bytes
from superres.errors import ConfigError

HISTORY_FILE = "history.csv"
HISTORY_COLUMNS = (
    "step", "epoch", "loss", "learning_rate", "val_psnr", "val_ssim", "elapsed_s", "hr_pixels_per_s",
)
#: Appended for a GAN run, whose `loss` is the generator's total: the discriminator's loss and the
#: generator's terms (unweighted), means over the log window on rank 0.
GAN_HISTORY_COLUMNS = (
    "loss_discriminator", "loss_pixel", "loss_perceptual", "loss_feature_matching", "loss_adversarial",
)


#: Appended for a run on the real-world degradation chain, which makes every LR patch on the host
#: while the step waits: the seconds per step spent doing so, over the log window (rank 0).
DEGRADE_HISTORY_COLUMNS = ("degrade_s_per_step",)


def history_columns(gan: bool, degrading: bool = False) -> tuple[str, ...]:
    """The columns of a run's history.csv: a GAN run's has its loss terms too, a run on the
    real-world chain the time its batches took to make."""
    columns = HISTORY_COLUMNS + GAN_HISTORY_COLUMNS if gan else HISTORY_COLUMNS
    return columns + DEGRADE_HISTORY_COLUMNS if degrading else columns


def _format_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.8g}"
    return str(value)


def write_history(
    run_dir: Path, rows: list[dict[str, Any]], columns: tuple[str, ...] = HISTORY_COLUMNS
) -> None:
    """Rewrite history.csv with `rows` (atomically): a fresh run, or a resume that drops the rows
    written after its checkpoint."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_format_cell(row.get(column)) for column in columns])
    atomic_write_bytes(run_dir / HISTORY_FILE, buffer.getvalue().encode("utf-8"))


def append_history(run_dir: Path, row: dict[str, Any], columns: tuple[str, ...] = HISTORY_COLUMNS) -> None:
    with open(run_dir / HISTORY_FILE, "a", encoding="utf-8", newline="") as stream:
        cells = [_format_cell(row.get(column)) for column in columns]
        csv.writer(stream, lineterminator="\n").writerow(cells)
        stream.flush()


def read_history(run_dir: Path) -> list[dict[str, Any]]:
    """history.csv as rows of numbers (empty cells as None); a missing file is an empty history.

    A cell that is not a number (a damaged or foreign file) is a ConfigError naming file and line.
    """
    path = run_dir / HISTORY_FILE
    if not path.is_file():
        return []
    rows = []
    with open(path, encoding="utf-8", newline="") as stream:
        reader = csv.DictReader(stream)
        for record in reader:
            row: dict[str, Any] = {}
            # The file's own columns: a GAN run's has more.
            for column in HISTORY_COLUMNS + tuple(c for c in record if c not in HISTORY_COLUMNS):
                text = record.get(column) or ""
                try:
                    row[column] = None if text == "" else (int(text) if column == "step" else float(text))
                except (TypeError, ValueError):
                    raise ConfigError(
                        f"{path}, line {reader.line_num}: {column} is {text!r}, not a number "
                        "(a damaged history.csv?)"
                    ) from None
            rows.append(row)
    return rows


def write_plots(run_dir: Path, history: list[dict[str, Any]]) -> None:
    """psnr.png (validation PSNR) and loss.png (training loss) against the step, atomically; for
    a GAN run also gan_loss.png (the generator's and the discriminator's losses)."""
    validated = [row for row in history if row.get("val_psnr") is not None]
    losses = [row for row in history if row.get("loss") is not None and math.isfinite(row["loss"])]
    _write_plot(
        run_dir / "psnr.png",
        [row["step"] for row in validated],
        [row["val_psnr"] for row in validated],
        title="Validation PSNR (Y, paper protocol)",
        ylabel="PSNR (dB)",
        log_scale=False,
    )
    _write_plot(
        run_dir / "loss.png",
        [row["step"] for row in losses],
        [row["loss"] for row in losses],
        title="Training loss",
        ylabel="loss",
        log_scale=all(row["loss"] > 0 for row in losses) and bool(losses),
    )
    adversarial = [row for row in losses if row.get("loss_discriminator") is not None]
    if adversarial:
        _write_plot(
            run_dir / "gan_loss.png",
            [row["step"] for row in adversarial],
            {
                "generator (total)": [row["loss"] for row in adversarial],
                "generator (adversarial term)": [row["loss_adversarial"] for row in adversarial],
                "discriminator": [row["loss_discriminator"] for row in adversarial],
            },
            title="GAN losses",
            ylabel="loss",
            log_scale=False,
        )


def _write_plot(
    path: Path,
    steps: list[int],
    values: list[float] | dict[str, list[float]],
    *,
    title: str,
    ylabel: str,
    log_scale: bool,
) -> None:
    """One curve, or one per label of a dict (with a legend), against the step."""
    # The object-oriented Agg API: no pyplot, so no global backend switch and never a window.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 4), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    series = values if isinstance(values, dict) else {"": values}
    for label, curve in series.items():
        axes.plot(steps, curve, marker="o" if len(steps) < 30 else None, linewidth=1.2, label=label or None)
    if isinstance(values, dict):
        axes.legend(fontsize=8)
    if log_scale:
        axes.set_yscale("log")
    axes.set_xlabel("step")
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.grid(True, alpha=0.3)
    if not steps:
        axes.text(0.5, 0.5, "no data yet", ha="center", va="center", transform=axes.transAxes)
    figure.tight_layout()
    atomic_write_bytes(path, png_bytes(figure))


def png_bytes(figure: Any, dpi: int = 100) -> bytes:
    """A matplotlib figure as PNG bytes (to be written atomically by the caller)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()
