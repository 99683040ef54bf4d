"""Learning curves: validation PSNR against the training hours behind a run's weights.

A run that starts from another run's weights (`init_weights` in its config.json naming a file in
another run folder) continues that run: its hours start where the hours of the runs behind it end,
so a curve's x is all the CPU time that made those weights, not only the last run's. `run_lineage`
finds the runs behind the given ones (their folders named by `init_weights`, or folders of that
name beside the run; for a shipped model's name, the run its card's recipe names);
`plot_learning_curves` draws one panel per scale and one colour per network, each continued run
joined to the score of the weights it started from. A teacher's hours (for a
distilled run) are not counted: the teacher is a model of its own, with its own curve.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from superres.atomic import atomic_write_bytes
from superres.training.runlog import HISTORY_FILE, png_bytes, read_history

_STEP_CHECKPOINT = re.compile(r"step(\d+)\.safetensors")
_RUN_DIR_OPTION = re.compile(r"--run-dir (\S+)")


@dataclass(frozen=True)
class RunCurve:
    """One run's validation scores, placed after the runs whose weights it started from."""

    run_dir: Path
    network: str
    scale: int | None
    hours: list[float]  # training hours behind each score, the earlier runs' included
    psnr: list[float]
    start: tuple[float, float] | None  # (hours, PSNR) of the weights it started from, same scale only
    validation: str = ""  # "" for the paper protocol's clean LR; else what its LR was


def _read_config(run_dir: Path) -> dict[str, Any]:
    try:
        config = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return config if isinstance(config, dict) else {}


def network_name(config: dict[str, Any]) -> str:
    """'span (48 features)' from a run's config: what one colour of the plot stands for."""
    model = str(config.get("model", "?"))
    features = config.get("model_kwargs", {}).get("num_features")
    name = f"{model} ({features} features)" if isinstance(features, int) else model
    return f"{name}, RGB" if config.get("channels") == "RGB" else name


def validation_of(config: dict[str, Any]) -> str:
    """What a run validated on, when not the clean benchmark LR: a real-world run scores Set5
    with the `real` preset's LR (`superres.training.loop.validate_into`), a different scale of dB,
    and a run with a `val_preset` that preset's LR (each its own panel)."""
    preset = config.get("val_preset")
    if preset and preset != "bicubic":
        return "real-world LR" if preset == "real" else f"`{preset}` LR"
    return "real-world LR" if config.get("degradation") == "real" else ""


def parent_run(run_dir: Path, config: dict[str, Any]) -> tuple[Path, str] | None:
    """The run folder whose weights this run started from, and the weights file's name.

    `init_weights` is relative to where training ran; when that folder is not found from here,
    a folder of the same name beside `run_dir` is (run folders are usually kept together). A
    shipped model's name leads to the run its card's recipe names (`--run-dir`), whose best
    weights are what shipped.
    """
    init = config.get("init_weights")
    if not isinstance(init, str):
        return None
    if not init.endswith(".safetensors"):
        return _shipped_model_run(run_dir, init, config.get("scale"))
    init_path = Path(init)
    for folder in (init_path.parent, run_dir.parent / init_path.parent.name):
        if (folder / HISTORY_FILE).is_file() and folder.resolve() != run_dir.resolve():
            return folder, init_path.name
    return None


def _shipped_model_run(run_dir: Path, name: str, scale: Any) -> tuple[Path, str] | None:
    """The run behind the shipped model `name` (at `scale`, else x2, as training loads it)."""
    from superres.zoo.pretrained import list_pretrained  # the weights registry, only for a name

    entries = {entry.scale: entry for entry in list_pretrained() if entry.name == name}
    entry = entries.get(scale) or entries.get(2)
    match = _RUN_DIR_OPTION.search(str(entry.card.get("recipe", ""))) if entry else None
    if match is None:
        return None  # not shipped here, or trained by no recorded run (red20, srcnn)
    return parent_run(run_dir, {"init_weights": f"{match.group(1)}/best.safetensors"})


def _scored(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [row for row in history if row.get("val_psnr") is not None and row.get("elapsed_s") is not None]


def _weights_point(history: list[dict[str, Any]], weights_name: str) -> tuple[float, float | None]:
    """Hours a run had spent when `weights_name` was taken from it, and that checkpoint's score.

    A `stepN` checkpoint was taken at step N; any other (best, last) after the whole run, which
    had to finish to know its best; `best` scores the run's highest validation PSNR.
    """
    scored = _scored(history)
    match = _STEP_CHECKPOINT.fullmatch(weights_name)
    if match:
        step = int(match.group(1))
        done = [row for row in history if row.get("step") is not None and row["step"] <= step]
        seconds = max((row["elapsed_s"] for row in done if row.get("elapsed_s") is not None), default=0.0)
        at_step = [row["val_psnr"] for row in scored if row["step"] == step]
        return seconds / 3600.0, at_step[0] if at_step else None
    seconds = max((row["elapsed_s"] for row in history if row.get("elapsed_s") is not None), default=0.0)
    if weights_name.startswith("best"):
        return seconds / 3600.0, max((row["val_psnr"] for row in scored), default=None)
    return seconds / 3600.0, scored[-1]["val_psnr"] if scored else None


def run_lineage(run_dirs: list[Path]) -> list[RunCurve]:
    """The given runs and every run behind them, ancestors first, each with its hours offset."""
    curves: dict[Path, RunCurve] = {}
    offsets: dict[Path, float] = {}
    records: dict[Path, tuple[dict[str, Any], list[dict[str, Any]]]] = {}

    def record(run_dir: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """A run's config and history, read once however many runs continue it."""
        key = run_dir.resolve()
        if key not in records:
            records[key] = (_read_config(run_dir), read_history(run_dir))
        return records[key]

    def place(run_dir: Path, visiting: frozenset[Path]) -> float:
        """Add `run_dir` (after its parents); returns the hours behind its first step."""
        key = run_dir.resolve()
        if key in offsets:
            return offsets[key]
        config, history = record(run_dir)
        parent = parent_run(run_dir, config)
        offset, start = 0.0, None
        if parent is not None and parent[0].resolve() not in visiting:
            parent_dir, weights_name = parent
            parent_offset = place(parent_dir, visiting | {key})
            parent_config, parent_history = record(parent_dir)
            hours, score = _weights_point(parent_history, weights_name)
            offset = parent_offset + hours
            same_measure = validation_of(parent_config) == validation_of(config)
            if score is not None and parent_config.get("scale") == config.get("scale") and same_measure:
                start = (offset, score)
        offsets[key] = offset
        scored = _scored(history)
        scale = config.get("scale")
        curves[key] = RunCurve(
            run_dir=run_dir,
            network=network_name(config),
            scale=scale if isinstance(scale, int) else None,
            hours=[offset + row["elapsed_s"] / 3600.0 for row in scored],
            psnr=[row["val_psnr"] for row in scored],
            start=start,
            validation=validation_of(config),
        )
        return offset

    for run_dir in run_dirs:
        place(Path(run_dir), frozenset())
    return list(curves.values())


def plot_learning_curves(run_dirs: list[Path], path: Path, *, machine: str = "this CPU") -> int:
    """Draw the given runs and the runs behind them into one PNG; returns the runs drawn.

    One panel per scale (their PSNRs are dB apart), one colour per network; each run's curve
    starts at the score of the weights it continued, so a chain of runs reads as one line.
    """
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    curves = [curve for curve in run_lineage(run_dirs) if curve.psnr]
    # One panel per scale and validation measure: real-world LR scores are dB below clean ones.
    scales = sorted(
        {(curve.scale, curve.validation) for curve in curves},
        key=lambda panel: (panel[0] is None, panel[0] or 0, panel[1]),
    )
    networks = list(dict.fromkeys(curve.network for curve in curves))
    palette = matplotlib.colormaps["tab10"]
    colours = {network: palette(index % 10) for index, network in enumerate(networks)}

    figure = Figure(figsize=(4.4 * max(len(scales), 1) + 0.6, 4.6), dpi=100)
    FigureCanvasAgg(figure)
    panels = figure.subplots(1, max(len(scales), 1), squeeze=False)[0]
    for axes, (scale, validation) in zip(panels, scales or [(None, "")]):
        labelled: set[str] = set()
        for curve in (curve for curve in curves if (curve.scale, curve.validation) == (scale, validation)):
            hours, psnr = curve.hours, curve.psnr
            if curve.start is not None:
                hours, psnr = [curve.start[0], *hours], [curve.start[1], *psnr]
            label = None if curve.network in labelled else curve.network
            labelled.add(curve.network)
            axes.plot(hours, psnr, color=colours[curve.network], linewidth=1.3, label=label)
            axes.plot(hours[-1:], psnr[-1:], "o", color=colours[curve.network], markersize=2.5)
        title = f"x{scale}" if scale is not None else "scale unknown"
        axes.set_title(f"{title}, {validation}" if validation else title)
        axes.set_xlabel(f"training hours on {machine}")
        axes.grid(True, alpha=0.3)
        if labelled:
            axes.legend(fontsize=7, loc="lower right")
    panels[0].set_ylabel("validation PSNR (dB, Y, paper protocol)")
    figure.suptitle("Learning curves (a continued run starts where the runs behind it ended; dots: run ends)",
                    fontsize=10)
    figure.tight_layout()
    atomic_write_bytes(Path(path), png_bytes(figure))
    return len(curves)
