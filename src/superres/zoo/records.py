"""Results that no shipped model card holds, each with where it came from: the papers' figures,
the published bicubic baseline, the self-ensemble (`+x8`) scores, the perceptual measures of
bicubic and HR, bicubic's and the default's scores on degraded LR, and the cards of the retired
models.

These were measured once by a project command (named beside each) or printed in a paper, and
the docs' tables read them beside the cards (`superres models --markdown SECTION`,
`superres.cli.doc_tables`), so that no table of results is typed by hand. Scores are PSNR (dB) /
SSIM by the paper protocol (docs/protocol.md) unless a record says otherwise; they are stored as
the card stores its own (`{"Set5": {"psnr": ..., "ssim": ...}, "Set14": ...}`), and rounded where
only the rounded figure was ever recorded. Plain data: importing this module costs nothing.
"""

from __future__ import annotations

from typing import Any


def _scores(set5: tuple[float, float], set14: tuple[float, float]) -> dict[str, dict[str, float]]:
    """Card-shaped metrics from (PSNR, SSIM) pairs on Set5 and Set14."""
    return {name: {"psnr": psnr, "ssim": ssim} for name, (psnr, ssim) in (("Set5", set5), ("Set14", set14))}


#: The papers' own figures for the networks superres started from, {scale: card-shaped metrics}.
PAPERS: tuple[dict[str, Any], ...] = (
    {
        "label": "SRCNN 9-5-5, paper",
        "source": "Dong et al., TPAMI 2016: the 9-5-5 network's Set5 and Set14 figures",
        "metrics": {
            2: _scores((36.66, 0.9542), (32.42, 0.9063)),
            3: _scores((32.75, 0.9090), (29.28, 0.8209)),
            4: _scores((30.48, 0.8628), (27.49, 0.7503)),
        },
    },
    {
        "label": "RED30, paper",
        "source": "Mao et al., NIPS 2016: RED30's Set5 and Set14 figures",
        "metrics": {
            2: _scores((37.66, 0.9599), (32.94, 0.9144)),
            3: _scores((33.82, 0.9230), (29.61, 0.8341)),
            4: _scores((31.51, 0.8869), (27.86, 0.7718)),
        },
    },
)

#: The bicubic baseline as the papers publish it; superres's own (`superres evaluate --model
#: bicubic`) is on every card as `bicubic`.
PUBLISHED_BICUBIC: dict[str, Any] = {
    "source": "the bicubic rows of the papers whose evaluation superres reproduces (SRCNN, VDSR, RED-Net)",
    "metrics": {
        2: _scores((33.66, 0.9299), (30.24, 0.8688)),
        3: _scores((30.39, 0.8682), (27.55, 0.7742)),
        4: _scores((28.42, 0.8104), (26.00, 0.7027)),
    },
}


def _x8(name: str, scale: int, date: str, set5: tuple[float, float], set14: tuple[float, float],
        **extra: str) -> dict[str, Any]:
    """One self-ensemble record."""
    return {"name": name, "scale": scale, "date": date, "metrics": _scores(set5, set14), **extra}


#: Self-ensemble scores: the mean of a model's outputs over the 8 flips and rotations of the input.
SELF_ENSEMBLE: dict[str, Any] = {
    "measured_by": "superres evaluate ../shared/data/benchmark/Set5/HR ../shared/data/benchmark/Set14/HR "
    "--model NAME --scale S --self-ensemble",
    "scores": (
        _x8("srcnn", 2, "2026-11-22", (36.76, 0.9550), (32.42, 0.9072)),
        _x8("srcnn", 3, "2026-11-22", (32.76, 0.9107), (29.26, 0.8210)),
        _x8("srcnn", 4, "2026-11-22", (30.43, 0.8632), (27.45, 0.7509)),
        _x8("red20", 2, "2026-11-22", (37.50, 0.9581), (33.00, 0.9118)),
        _x8("red20", 3, "2026-11-22", (33.47, 0.9191), (29.72, 0.8300)),
        _x8("red20", 4, "2026-11-22", (31.09, 0.8786), (27.88, 0.7636)),
        _x8("span60", 2, "2026-11-30", (37.81, 0.9595), (33.27, 0.9142)),
        _x8("span64", 3, "2026-11-30", (33.99, 0.9239), (29.94, 0.8340)),
        _x8("span80", 4, "2026-11-30", (31.63, 0.8876), (28.23, 0.7721), role="the teacher"),
        _x8("span96", 4, "2026-11-30", (31.58, 0.8873), (28.21, 0.7718)),
        _x8("span112", 4, "2026-11-30", (31.60, 0.8875), (28.22, 0.7720)),
    ),
}

#: LPIPS-approx and NIQE of the two ends a perceptual model sits between, {scale: ...}; the
#: model's own and its parent's are on its card (`metrics`, `parent`).
PERCEPTUAL_REFERENCES: dict[int, dict[str, Any]] = {
    4: {
        "date": "2026-11-28",
        "bicubic": {
            "measured_by": "superres evaluate ../shared/data/benchmark/Set5/HR "
            "../shared/data/benchmark/Set14/HR --model bicubic --scale 4 --lpips --niqe",
            "metrics": {
                "Set5": {"lpips_approx": 0.1625, "niqe": 8.68},
                "Set14": {"lpips_approx": 0.2138, "niqe": 7.85},
            },
        },
        "HR": {
            "measured_by": "superres.evaluation.niqe on the HR Y planes, shaved as SR's are (recorded with "
            "the span-gan runs, checkpoints/span-gan-x4-vgg33/README.md)",
            "metrics": {"Set5": {"niqe": 5.50}, "Set14": {"niqe": 4.95}},
        },
    },
}

def _psnr(set5: float, set14: float) -> dict[str, dict[str, float]]:
    """Card-shaped metrics of a record that kept the PSNR only."""
    return {"Set5": {"psnr": set5}, "Set14": {"psnr": set14}}


def _scores_perceived(
    set5: tuple[float, float, float], set14: tuple[float, float, float]
) -> dict[str, dict[str, float]]:
    """Card-shaped metrics from (PSNR, LPIPS-approx, NIQE) triples on Set5 and Set14."""
    return {
        name: {"psnr": psnr, "lpips_approx": lpips, "niqe": niqe}
        for name, (psnr, lpips, niqe) in (("Set5", set5), ("Set14", set14))
    }


#: Bicubic's and the default's scores on LR made by `superres degrade --preset P`, by scale and
#: model (the clean LR's are on the cards), measured before any real-world model shipped; at x4 also
#: LPIPS-approx and NIQE (the same command with `--lpips --niqe`, 2026-12-05), the bars of `real-gan`.
DEGRADED_BASELINES: dict[str, Any] = {
    "date": "2026-12-04",
    "measured_by": "superres evaluate ../shared/data/benchmark/Set5/HR ../shared/data/benchmark/Set14/HR "
    "--model M --scale S --lr-preset P",
    "metrics": {
        4: {
            "bicubic": {
                "jpeg": _scores_perceived((27.46, 0.2030, 8.87), (25.37, 0.2508, 8.00)),
                "noise-jpeg": _scores_perceived((27.40, 0.2065, 8.53), (25.32, 0.2522, 7.52)),
                "real": _scores_perceived((23.90, 0.2973, 10.49), (22.13, 0.3460, 10.59)),
            },
            "span96": {
                "jpeg": _scores_perceived((27.98, 0.1581, 10.26), (25.84, 0.2198, 6.90)),
                "noise-jpeg": _scores_perceived((27.59, 0.1627, 8.98), (25.53, 0.2241, 7.49)),
                "real": _scores_perceived((23.58, 0.3064, 8.90), (22.10, 0.3465, 9.45)),
            },
        },
        2: {
            "bicubic": {
                "jpeg": _psnr(31.87, 29.10), "noise-jpeg": _psnr(31.28, 28.78), "real": _psnr(24.86, 23.37),
            },
            "span60": {
                "jpeg": _psnr(31.98, 29.45), "noise-jpeg": _psnr(30.47, 28.38), "real": _psnr(24.45, 23.30),
            },
        },
    },
}

#: The models retired on `date` (each beaten on quality by a shipped model at its scale and not the
#: fastest): their cards' scores and speed, the run that made them, and why. The whole card of each
#: is `git show COMMIT^:src/superres/weights/NAME_xS.json`.
RETIRED: dict[str, Any] = {
    "date": "2026-12-05",
    "commit": "6bb8114ace51ad68bec0c1f52c2954117100a2f8",
    "cards": (
        {
            "name": "fsrcnn", "scale": 2, "architecture": "fsrcnn", "date": "2026-11-29",
            "metrics": _scores((37.0047, 0.9564), (32.6335, 0.909)),
            "speed": {"relative_to_bicubic": 0.1239}, "macs_per_output_pixel": 3116,
            "beaten_by": ("span60",),
            "rebuild": "`superres train --config recipes/fsrcnn-x2-long3.json --run-dir "
            "checkpoints/fsrcnn-x2-long3 --num-threads 1` (after `recipes/fsrcnn-x2.json`, "
            "`-distill-ms`, `-distill48-ms`, `-long`, `-long2`, each from the previous best; "
            "the teacher is `checkpoints/span48-x2-l2/best.safetensors`)",
        },
        {
            "name": "fsrcnn", "scale": 3, "architecture": "fsrcnn", "date": "2026-11-29",
            "metrics": _scores((33.162, 0.916), (29.4957, 0.8267)),
            "speed": {"relative_to_bicubic": 0.1741}, "macs_per_output_pixel": 1385,
            "beaten_by": ("span64",),
            "rebuild": "`torchrun --nproc_per_node 2 -m superres train --config "
            "recipes/fsrcnn-x3-replong4.json --run-dir checkpoints/fsrcnn-x3-replong4 "
            "--num-threads 1` (after `recipes/fsrcnn-x3.json`, `-distill-ms`, `-long`, `-rep` "
            "to `-rep5`, `-replong` to `-replong3`; the teacher is "
            "`checkpoints/span48-x3-l2/best.safetensors`)",
        },
        {
            "name": "fsrcnn", "scale": 4, "architecture": "fsrcnn", "date": "2026-11-29",
            "metrics": _scores((30.7364, 0.8713), (27.6478, 0.758)),
            "speed": {"relative_to_bicubic": 0.3677}, "macs_per_output_pixel": 779,
            "beaten_by": ("span96",),
            "rebuild": "`superres train --config recipes/fsrcnn-x4-rep2.json --run-dir "
            "checkpoints/fsrcnn-x4-rep2 --num-threads 1` (after `recipes/fsrcnn-x4.json`, "
            "`-distill-ms`, `-long`, `-long2`, `-rep`; the teacher is "
            "`checkpoints/span48-x4-ms/best.safetensors`)",
        },
        {
            "name": "span", "scale": 2, "architecture": "span", "date": "2026-11-28",
            "metrics": _scores((37.3221, 0.9578), (32.895, 0.9115)),
            "speed": {"relative_to_bicubic": 0.0263}, "macs_per_output_pixel": 45160,
            "beaten_by": ("span60",),
            "rebuild": "`superres train --config recipes/span-x2.json --run-dir checkpoints/span-x2 "
            "--num-threads 1` (8,000 steps, over three sessions with `--resume`)",
        },
        {
            "name": "span", "scale": 3, "architecture": "span", "date": "2026-11-28",
            "metrics": _scores((33.3739, 0.9177), (29.601, 0.8287)),
            "speed": {"relative_to_bicubic": 0.042}, "macs_per_output_pixel": 20231,
            "beaten_by": ("span64",),
            "rebuild": "`superres train --config recipes/span-x3.json --run-dir checkpoints/span-x3 "
            "--num-threads 1` (from `checkpoints/span-x2/best.safetensors`, rebuilt first)",
        },
        {
            "name": "span", "scale": 4, "architecture": "span", "date": "2026-11-28",
            "metrics": _scores((30.9722, 0.8745), (27.8059, 0.7623)),
            "speed": {"relative_to_bicubic": 0.056}, "macs_per_output_pixel": 11506,
            "beaten_by": ("span96",),
            "note": "The parent of `span-gan`: its weights stay in `checkpoints/span-x4/best.safetensors`",
            "rebuild": "`superres train --config recipes/span-x4.json --run-dir checkpoints/span-x4 "
            "--num-threads 1 --max-minutes 24` (from `checkpoints/span-x2` at its step 4,000)",
        },
        {
            "name": "span48", "scale": 2, "architecture": "span", "date": "2026-11-29",
            "metrics": _scores((37.6082, 0.9588), (33.0846, 0.9128)),
            "speed": {"relative_to_bicubic": 0.0128}, "macs_per_output_pixel": 101340,
            "beaten_by": ("span60",), "relation": {"span60": "widened from it"},
            "rebuild": "`superres train --config recipes/span48-x2-l2.json --run-dir "
            "checkpoints/span48-x2-l2 --num-threads 1` (from "
            "`checkpoints/span48-x2-ms/best.safetensors`: `recipes/span48-x2-ms.json`); the "
            "weights stay in `checkpoints/span48-x2-l2/best.safetensors`",
        },
        {
            "name": "span48", "scale": 3, "architecture": "span", "date": "2026-11-29",
            "metrics": _scores((33.7258, 0.9214), (29.7749, 0.8315)),
            "speed": {"relative_to_bicubic": 0.0222}, "macs_per_output_pixel": 45280,
            "beaten_by": ("span64",), "relation": {"span64": "widened from it"},
            "rebuild": "`superres train --config recipes/span48-x3-l2.json --run-dir "
            "checkpoints/span48-x3-l2 --num-threads 1` (from "
            "`checkpoints/span48-x3-ms/best.safetensors`: `recipes/span48-x3-ms.json`); the "
            "weights stay in `checkpoints/span48-x3-l2/best.safetensors`",
        },
        {
            "name": "span48", "scale": 4, "architecture": "span", "date": "2026-11-28",
            "metrics": _scores((31.2924, 0.8821), (27.9962, 0.7668)),
            "speed": {"relative_to_bicubic": 0.03}, "macs_per_output_pixel": 25659,
            "beaten_by": ("span96",),
            "rebuild": "`superres train --config recipes/span48-x4-ms.json --run-dir "
            "checkpoints/span48-x4-ms --num-threads 1` (from "
            "`checkpoints/span48-x4/best.safetensors`: `recipes/span48-x4.json`, from the x2 "
            "run's step-5,000 weights); the weights stay in "
            "`checkpoints/span48-x4-ms/best.safetensors`",
        },
        {
            "name": "span80", "scale": 4, "architecture": "span", "date": "2026-11-29",
            "metrics": _scores((31.4131, 0.885), (28.0603, 0.7687)),
            "speed": {"relative_to_bicubic": 0.0137}, "macs_per_output_pixel": 70765,
            "beaten_by": ("span96", "span112"), "relation": {"span96": "widened from it"},
            "rebuild": "`torchrun --nproc_per_node 2 -m superres train --config recipes/span80-x4-p40.json "
            "--run-dir checkpoints/span80-x4-p40 --num-threads 1` (from "
            "`checkpoints/span80-x4/best.safetensors`: `recipes/span80-x4.json`, widened from "
            "`span64-x4`, widened from `span48` x4); the weights stay in "
            "`checkpoints/span80-x4-p40/best.safetensors`, the teacher of `span96` and `span112`",
        },
    ),
}


def retired_card(name: str, scale: int) -> dict[str, Any] | None:
    """The record of a retired model, or None if `name` x`scale` was never retired."""
    return next((card for card in RETIRED["cards"] if card["name"] == name and card["scale"] == scale), None)
