"""What the repository itself may hold: weights under checkpoints/ only where a shipped model comes from.

A run folder under checkpoints/ keeps its config.json, history.csv and plots; a `*.safetensors` in
it must be named by a shipped card's `recipe` text (a file it names, or the best weights of the run
its `--run-dir` names) or by a recipe's `init_weights` / `teacher`, and stay under 8 MB.
`tools/prune_checkpoints.py` applies the same rule, and deletes what breaks it.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from superres.zoo.pretrained import list_pretrained

REPOSITORY = Path(__file__).resolve().parents[1]
#: The most a weights file under checkpoints/ may weigh (the largest kept, real-x4-chain's, is 6.6 MB).
MAX_CHECKPOINT_BYTES = 8_000_000

_NAMED_WEIGHTS = re.compile(r"checkpoints/[\w.+-]+/[\w.+-]+\.safetensors")
_RUN_DIR = re.compile(r"--run-dir\s+(checkpoints/[\w.+-]+)")


def _tracked_checkpoint_weights() -> list[str]:
    """The *.safetensors under checkpoints/ that git tracks (staged ones included), still on disk:
    a tracked file deleted from the working tree is a deletion not yet committed."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    try:
        inside = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=REPOSITORY,
                                capture_output=True, text=True, timeout=60)
    except OSError as error:
        pytest.skip(f"git does not run: {error}")
    if inside.returncode != 0 or Path(inside.stdout.strip()).resolve() != REPOSITORY.resolve():
        pytest.skip("not a git checkout of this repository")
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--", "checkpoints"], cwd=REPOSITORY, capture_output=True, check=True,
        timeout=60,
    ).stdout.decode("utf-8").split("\0")
    return [path for path in listed if path.endswith(".safetensors") and (REPOSITORY / path).is_file()]


def _allowed_checkpoint_weights() -> set[str]:
    allowed: set[str] = set()
    for entry in list_pretrained():
        text = str(entry.card.get("recipe", ""))
        allowed.update(_NAMED_WEIGHTS.findall(text))
        allowed.update(f"{run}/best.safetensors" for run in _RUN_DIR.findall(text))
    for recipe_file in (REPOSITORY / "recipes").glob("*.json"):
        recipe = json.loads(recipe_file.read_text(encoding="utf-8"))
        allowed.update(str(recipe[key]) for key in ("init_weights", "teacher") if key in recipe)
    return allowed


def test_weights_under_checkpoints_are_origins_of_shipped_models_and_small() -> None:
    tracked = _tracked_checkpoint_weights()
    allowed = _allowed_checkpoint_weights()
    unnamed = sorted(path for path in tracked if path not in allowed)
    assert not unnamed, (
        "weights under checkpoints/ that no shipped card's recipe and no recipe's init_weights/teacher "
        f"names (python tools/prune_checkpoints.py --delete removes them): {unnamed}"
    )
    large = sorted(path for path in tracked if (REPOSITORY / path).stat().st_size >= MAX_CHECKPOINT_BYTES)
    assert not large, f"weights under checkpoints/ of {MAX_CHECKPOINT_BYTES / 1e6:g} MB or more: {large}"

