"""Measure what each lower precision costs every shipped model, by the paper protocol, and record it
in the model cards (the `precision` entry `superres.inference.precision` reads for `--precision auto`).

    python tools/measure_precision.py                       # every shipped model, print only
    python tools/measure_precision.py --write               # and record each in its card
    python tools/measure_precision.py span60_x2 espcn_x2 --write

For each model: `superres evaluate` on Set5 and Set14 (`superres.evaluation.protocol.evaluate_model`,
the same code) at fp32 and at each lower precision, in one process, one after the other:
`delta_db` is the lower precision's mean PSNR minus fp32's; `max_abs_diff` and `rms_diff` compare
the SR images the protocol scores (uint8 levels; rms: the largest over the set's images), the
tolerance the tests hold outputs to; `network_time_ratio` is the lower precision's network time over
fp32's on a 256x256 LR photo crop, the two interleaved call by call, three times, after a warm-up
(a ratio measured in one run: the machine may be busy, but both precisions see the same load). A card already
holding a `precision` entry is skipped unless `--force`; every other key of a card is left as it is.
The fp32 scores are checked against the card's own `metrics` (they are the same measurement).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch

from superres.api import load_model
from superres.atomic import atomic_write_bytes
from superres.evaluation.protocol import Protocol, evaluate_model
from superres.images import read_image
from superres.inference.backends import make_backend
from superres.inference.fast import cpu_count, cpu_flags
from superres.zoo.pretrained import list_pretrained, weights_root

REPOSITORY = Path(__file__).resolve().parents[1]
BENCHMARK = REPOSITORY.parent / "shared" / "data" / "benchmark"
LOWER = ("bf16",)


def cpu_description() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    flags = sorted(cpu_flags() & {"avx512_bf16", "amx_bf16", "amx_tile", "avx512_vnni", "avx512f"})
    return f"{model}, {cpu_count()} cores ({', '.join(flags) or 'no AVX-512'}), torch {torch.__version__}"


#: The timed input: an LR photo crop of a tile's order of size (what `upscale` feeds the network),
#: not the benchmark images, whose LR sides at x3 and x4 are 60-170 pixels, where fixed costs weigh.
TIMING_LR_SIDE = 256


def time_ratios(model: torch.nn.Module, precisions: tuple[str, ...], rounds: int = 3) -> dict[str, float]:
    """Network time of each precision over fp32's on one TIMING_LR_SIDE square LR photo crop, the
    precisions interleaved call by call (the next round in reverse order), after a warm-up."""
    from superres.evaluation.protocol import model_channels
    from superres.lab.bench_pipeline import photo_like

    photo = photo_like(TIMING_LR_SIDE, TIMING_LR_SIDE).astype(np.float32) / 255
    if model_channels(model) == "Y":
        photo = photo @ np.array([[65.481], [128.553], [24.966]], np.float32) / 255 + 16 / 255
    lr = torch.from_numpy(np.ascontiguousarray(photo.transpose(2, 0, 1)))[None]
    backends = {p: make_backend(model, "torch", "cpu", precision=p) for p in ("fp32", *precisions)}
    seconds = dict.fromkeys(backends, 0.0)
    for backend in backends.values():
        backend(lr)  # warm-up: oneDNN builds its kernels on the first call of a shape
    for round_index in range(rounds):
        order = list(backends) if round_index % 2 == 0 else list(reversed(backends))
        for precision in order:
            start = time.perf_counter()
            backends[precision](lr)
            seconds[precision] += time.perf_counter() - start
    return {p: round(seconds[p] / seconds["fp32"], 3) for p in precisions}


def measure(name: str, scale: int, sets: list[str], precisions: tuple[str, ...], work: Path) -> dict:
    model = load_model(name, scale, "cpu")
    results: dict[str, dict] = {}
    for precision in ("fp32", *precisions):
        backend = make_backend(model, "torch", "cpu", precision=precision)
        results[precision] = {}
        for dataset in sets:
            save_dir = work / f"{name}_x{scale}" / precision / dataset
            result = evaluate_model(
                model, BENCHMARK / dataset / "HR", scale, backend=backend, save_dir=save_dir, model_name=name
            )
            results[precision][dataset] = {"psnr": round(result.psnr, 4)}
            print(f"{name} x{scale} {precision:5s} {dataset:6s} PSNR {result.psnr:.4f}", flush=True)
    ratios = time_ratios(model, precisions)
    for precision in precisions:
        for dataset in sets:
            entry = results[precision][dataset]
            entry["delta_db"] = round(entry["psnr"] - results["fp32"][dataset]["psnr"], 4)
            entry.update(output_difference(work / f"{name}_x{scale}", precision, dataset))
        results[precision]["network_time_ratio"] = ratios[precision]
    return results


def output_difference(folder: Path, precision: str, dataset: str) -> dict:
    """Largest absolute and largest per-image RMS difference of the saved SR images (uint8)."""
    largest, rms = 0, 0.0
    for reference in sorted((folder / "fp32" / dataset).iterdir()):
        ours = read_image(folder / precision / dataset / reference.name).pixels.astype(np.int16)
        theirs = read_image(reference).pixels.astype(np.int16)
        difference = ours - theirs
        largest = max(largest, int(np.abs(difference).max()))
        rms = max(rms, float(np.sqrt(np.mean(difference.astype(np.float64) ** 2))))
    return {"max_abs_diff": largest, "rms_diff": round(rms, 4)}


def card_entry(results: dict) -> dict:
    protocol = Protocol().describe()
    return {
        "protocol": (
            f"superres evaluate --precision P ({protocol}); delta_db: P's PSNR minus fp32's; max_abs_diff, "
            "rms_diff: P's SR images against fp32's in uint8 levels (rms: the largest of any image); "
            "network_time_ratio: P's network time over fp32's on a 256x256 LR photo crop, interleaved in "
            "one run (tools/measure_precision.py)"
        ),
        "measured_on": cpu_description(),
        "date": date.today().isoformat(),
        **results,
    }


def retime(entry, write: bool) -> None:
    """`network_time_ratio` measured again into a card's existing precision entry."""
    label = f"{entry.name}_x{entry.scale}"
    recorded = entry.card.get("precision")
    if not isinstance(recorded, dict):
        print(f"{label}: no precision entry to retime")
        return
    precisions = tuple(p for p in LOWER if p in recorded)
    ratios = time_ratios(load_model(entry.name, entry.scale, "cpu"), precisions)
    print(json.dumps({label: ratios}), flush=True)
    if write:
        path = Path(str(weights_root())) / f"{label}.json"
        card = json.loads(path.read_text(encoding="utf-8"))
        for precision, ratio in ratios.items():
            card["precision"][precision]["network_time_ratio"] = ratio
        card["precision"]["protocol"] = card_entry({})["protocol"]
        atomic_write_bytes(path, (json.dumps(card, indent=2) + "\n").encode("utf-8"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("models", nargs="*", help="NAME_xSCALE of shipped models (default: all)")
    parser.add_argument("--sets", nargs="+", default=["Set5", "Set14"])
    parser.add_argument("--write", action="store_true", help="record the results in the cards")
    parser.add_argument("--force", action="store_true", help="measure cards that already hold an entry")
    parser.add_argument(
        "--timing-only", action="store_true",
        help="only measure network_time_ratio again, into the cards' existing entries",
    )
    args = parser.parse_args(argv)
    entries = list_pretrained()
    wanted = set(args.models)
    unknown = wanted - {f"{entry.name}_x{entry.scale}" for entry in entries}
    if unknown:
        print(f"not shipped: {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as work:
        for entry in entries:
            label = f"{entry.name}_x{entry.scale}"
            if wanted and label not in wanted:
                continue
            if args.timing_only:
                retime(entry, args.write)
                continue
            if "precision" in entry.card and not args.force:
                print(f"{label}: its card already holds a precision entry (--force measures again)")
                continue
            results = measure(entry.name, entry.scale, args.sets, LOWER, Path(work))
            for dataset in args.sets:
                card_psnr = entry.metric(dataset, "psnr")
                ours = results["fp32"][dataset]["psnr"]
                if card_psnr is not None and abs(card_psnr - ours) > 1e-3:
                    print(f"{label}: fp32 {dataset} {ours:.4f} differs from the card's {card_psnr:.4f}")
            print(json.dumps({label: results}))
            if args.write:
                path = Path(str(weights_root())) / f"{label}.json"
                card = json.loads(path.read_text(encoding="utf-8"))
                card["precision"] = card_entry(results)
                atomic_write_bytes(path, (json.dumps(card, indent=2) + "\n").encode("utf-8"))
                print(f"wrote {path.relative_to(REPOSITORY)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
