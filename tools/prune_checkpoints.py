"""Decide which weights files under checkpoints/ earn their place, and delete the rest.

    python tools/prune_checkpoints.py            # print the decision (kept / deleted, with sizes)
    python tools/prune_checkpoints.py --delete   # and delete what it marks deleted

A run folder keeps its config.json, history.csv and plots; a `*.safetensors` in it stays only when
it is the origin of a shipped model (`tests/test_repository.py` holds the repository to the same
rule):

1. a weights file a shipped card's `recipe` text names (`checkpoints/RUN/best.safetensors`: what it
   started from, was widened from or was taught by), or the `best.safetensors` of the run its
   `--run-dir checkpoints/RUN` names;
2. the `init_weights` or `teacher` of a recipe that a shipped card names with `--config
   recipes/NAME.json` (the recipe that made the shipped weights).

Everything else (`last.safetensors`, `step*.safetensors`, the best weights of runs no shipped model
came from) goes: the histories keep the learning curves, and the recipes rebuild any of them.
Run folders with a `.lock` (a training run writing there now) and those given with `--skip` are
left alone.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Iterable
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
WEIGHTS = REPOSITORY / "src" / "superres" / "weights"
CHECKPOINTS = REPOSITORY / "checkpoints"
RECIPES = REPOSITORY / "recipes"
#: Run folders always left alone: none (a running run's `.lock` protects its folder; --skip adds some).
DEFAULT_SKIP: tuple[str, ...] = ()

_NAMED_WEIGHTS = re.compile(r"checkpoints/[\w.+-]+/[\w.+-]+\.safetensors")
_RUN_DIR = re.compile(r"--run-dir\s+(checkpoints/[\w.+-]+)")
_CONFIG = re.compile(r"--config\s+(recipes/[\w.+-]+\.json)")


def named_in(recipe_text: str) -> set[str]:
    """The weights files a card's recipe text names (repository-relative paths)."""
    named = set(_NAMED_WEIGHTS.findall(recipe_text))
    named.update(f"{run.rstrip('/.,;')}/best.safetensors" for run in _RUN_DIR.findall(recipe_text))
    return named


def recipe_weights(recipe: dict) -> set[str]:
    """The checkpoint files a recipe starts from or is taught by (shipped names are not files)."""
    return {
        str(recipe[key]) for key in ("init_weights", "teacher")
        if str(recipe.get(key, "")).startswith("checkpoints/") and str(recipe[key]).endswith(".safetensors")
    }


def kept_weights(weights: Path = WEIGHTS, recipes: Path = RECIPES) -> dict[str, str]:
    """{repository-relative path: why} for every checkpoint file a shipped model comes from."""
    kept: dict[str, str] = {}
    for card_file in sorted(weights.glob("*.json")):
        card = json.loads(card_file.read_text(encoding="utf-8"))
        text = str(card.get("recipe", ""))
        label = f"{card.get('name')} x{card.get('scale')}"
        for path in sorted(named_in(text)):
            kept.setdefault(path, f"named by the {label} card")
        for config in _CONFIG.findall(text):
            recipe_file = recipes.parent / config
            if recipe_file.is_file():
                recipe = json.loads(recipe_file.read_text(encoding="utf-8"))
                for path in sorted(recipe_weights(recipe)):
                    kept.setdefault(path, f"init_weights/teacher of {config} ({label})")
    return kept


def decide(skip: Iterable[str] = DEFAULT_SKIP) -> tuple[list[tuple[Path, str]], list[Path]]:
    """(kept files with the reason, files to delete) among the *.safetensors under checkpoints/."""
    kept_names = kept_weights()
    skipped = set(skip)
    kept: list[tuple[Path, str]] = []
    deleted: list[Path] = []
    for path in sorted(CHECKPOINTS.rglob("*.safetensors")):
        run = path.relative_to(CHECKPOINTS).parts[0]
        if run in skipped or (CHECKPOINTS / run / ".lock").exists():
            continue
        relative = path.relative_to(REPOSITORY).as_posix()
        if relative in kept_names:
            kept.append((path, kept_names[relative]))
        else:
            deleted.append(path)
    return kept, deleted


def _megabytes(paths: Iterable[Path]) -> float:
    return sum(path.stat().st_size for path in paths) / 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delete", action="store_true", help="delete the files marked deleted")
    parser.add_argument("--skip", nargs="*", default=list(DEFAULT_SKIP),
                        help="run folders under checkpoints/ to leave alone (default: %(default)s)")
    args = parser.parse_args(argv)
    kept, deleted = decide(args.skip)
    for path, why in kept:
        print(f"kept     {path.stat().st_size / 1e6:6.2f} MB  {path.relative_to(REPOSITORY)}  ({why})")
    for path in deleted:
        print(f"deleted  {path.stat().st_size / 1e6:6.2f} MB  {path.relative_to(REPOSITORY)}")
    print(f"kept {len(kept)} files, {_megabytes(p for p, _ in kept):.1f} MB; "
          f"deleted {len(deleted)} files, {_megabytes(deleted):.1f} MB"
          + ("" if args.delete else " (dry run: --delete deletes them)"))
    missing = sorted(set(kept_weights()) - {p.relative_to(REPOSITORY).as_posix() for p, _ in kept})
    for path in missing:
        print(f"named but absent: {path}")
    if args.delete:
        for path in deleted:
            path.unlink()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
