"""Which number format the network computes in: `--precision auto|fp32|bf16|int8`.

- `fp32`: float32 throughout, the precision every card's scores were measured in.
- `bf16`: on the CPU fast path, the inner convolutions in bf16 while the convolutions that read or
  write the image, the input's centring and any bicubic skip stay float32
  (`superres.inference.fast.to_lower_precision`). It needs a CPU that computes bf16 natively
  (AVX-512 BF16 or AMX-BF16); elsewhere oneDNN emulates it, slower than float32, so it is refused.
  So is a network whose card says bf16 is not safe for it (`ModelInfo.bf16_safe`: community
  architectures spandrel marks bf16-unsafe), on every machine, like `--half` on an fp16-unsafe one.
- `int8`: refused. Post-training static quantisation (torch's FX x86 path, calibrated on T91 LR
  images) cost 0.14 dB (SPAN60 x2, inner convolutions only) to 4.1 dB (the whole network) of Set5
  PSNR, far beyond `SAFE_DELTA_DB`, and ran no faster than bf16 where it kept most quality
  (docs/precision.md, `tools/probe_lower_precision.py`); no shipped model has an int8 form.
- `auto`: bf16 where the CPU has the instructions, the runtime is the torch CPU path, and the
  model's card (`superres.zoo.pretrained.card_of`: shipped weights, unchanged since loading)
  records that bf16 moved its Set5 and Set14 PSNR by at most `SAFE_DELTA_DB` by the paper protocol
  (`superres evaluate --precision bf16`) and ran faster than fp32 (`network_time_ratio` below 1:
  the thinnest networks gain little from bf16 and may lose to its casts); fp32 otherwise, and
  always for a network whose card says bf16 is not safe (`describe_choice` says why).

The card's entry (written by `tools/measure_precision.py`):

    "precision": {"protocol": "...", "measured_on": "...",
                  "bf16": {"Set5": {"psnr": 37.6830, "delta_db": 0.0006, "max_abs_diff": 7,
                                    "rms_diff": 0.21}, "Set14": {...},
                           "network_time_ratio": 0.45}}

`delta_db` is the bf16 PSNR minus the float32 PSNR; `max_abs_diff` and `rms_diff` compare the
bf16 and float32 outputs the protocol scores (uint8 levels; rms: the largest per image), the
tolerance the tests hold each precision to; `network_time_ratio` its network time over fp32's,
measured interleaved in one run on this project's CPU (`tools/measure_precision.py`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from superres.errors import ConfigError
from superres.inference.fast import bf16_convolutions_work, has_native_bf16
from superres.zoo.pretrained import card_of

#: What `--precision` accepts.
PRECISIONS = ("auto", "fp32", "bf16", "int8")
#: The most a card's measured PSNR change (dB, each of Set5 and Set14) may be for `auto` to use it.
SAFE_DELTA_DB = 0.02
#: The benchmark sets whose change `auto` reads; all must be recorded.
SAFE_SETS = ("Set5", "Set14")
#: Lower precisions in the order `auto` prefers them.
LOWER_PRECISIONS = ("bf16",)

INT8_REFUSAL = (
    "--precision int8 is not available: no shipped model has a calibrated int8 form (static int8 lost "
    "0.14-4.1 dB on Set5 and ran no faster than bf16; docs/precision.md); use auto, bf16 or fp32"
)


def check_precision(precision: str) -> str:
    """`precision` if it is one `--precision` accepts, else a one-line ConfigError."""
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    return precision


def cpu_runs_bf16() -> bool:
    """True where bf16 convolutions are worth running: native bf16 instructions and a torch that
    computes them."""
    return has_native_bf16() and bf16_convolutions_work()


#: A reduced precision's verdict on a model's card: (the `ModelInfo` field, the option that asks for
#: it, the type, what goes wrong, what to do instead), for the one-line refusal.
_CARD_VERDICTS = {
    "fp16": ("half_safe", "--half", "float16", "its values overflow or lose the precision its output needs",
             "run it in float32, without --half"),
    "bf16": ("bf16_safe", "--precision bf16", "bfloat16",
             "its values lose the precision its output needs", "run it with --precision fp32 or auto"),
}


def precision_safe(model: nn.Module, precision: str) -> bool:
    """Whether `model`'s card allows `precision` ("fp16" or "bf16": `ModelInfo.half_safe` /
    `bf16_safe`); True for a model without a card."""
    info = getattr(model, "info", None)
    return info is None or bool(getattr(info, _CARD_VERDICTS[precision][0], True))


def check_precision_safe(model: nn.Module, precision: str) -> None:
    """`ConfigError` (one line) when `model`'s card says `precision` ("fp16", "bf16") is not safe.

    The card decides, not the kind of model: a community file's card carries spandrel's verdict
    for its architecture, a registered network's its own (all of superres' are safe).
    """
    if not precision_safe(model, precision):
        _, option, kind, harm, instead = _CARD_VERDICTS[precision]
        raise ConfigError(
            f"{option}: the {model.info.name} architecture is not safe in {kind} (its card says so: "
            f"{harm}); {instead}"
        )


def card_deltas(card: Mapping[str, Any] | None, precision: str) -> dict[str, float] | None:
    """{set: PSNR change in dB} the card records for `precision` on `SAFE_SETS`; None where it
    lacks any of them."""
    if not isinstance(card, Mapping):
        return None
    entry = card.get("precision")
    measured = entry.get(precision) if isinstance(entry, Mapping) else None
    if not isinstance(measured, Mapping):
        return None
    deltas = {}
    for dataset in SAFE_SETS:
        scores = measured.get(dataset)
        delta = scores.get("delta_db") if isinstance(scores, Mapping) else None
        if isinstance(delta, bool) or not isinstance(delta, (int, float)):
            return None
        deltas[dataset] = float(delta)
    return deltas


def card_time_ratio(card: Mapping[str, Any] | None, precision: str) -> float | None:
    """The card's `network_time_ratio` for `precision` (its time over fp32's), None if unrecorded."""
    entry = card.get("precision") if isinstance(card, Mapping) else None
    measured = entry.get(precision) if isinstance(entry, Mapping) else None
    ratio = measured.get("network_time_ratio") if isinstance(measured, Mapping) else None
    return float(ratio) if isinstance(ratio, (int, float)) and not isinstance(ratio, bool) else None


def safe_by_card(card: Mapping[str, Any] | None, precision: str) -> bool:
    """Whether the card records `precision` as free: |PSNR change| <= SAFE_DELTA_DB on every set."""
    deltas = card_deltas(card, precision)
    return deltas is not None and all(abs(delta) <= SAFE_DELTA_DB for delta in deltas.values())


def worth_it_by_card(card: Mapping[str, Any] | None, precision: str) -> bool:
    """Whether `auto` takes `precision` by the card: free (`safe_by_card`) and measured faster."""
    ratio = card_time_ratio(card, precision)
    return safe_by_card(card, precision) and ratio is not None and ratio < 1.0


def tolerance(card: Mapping[str, Any] | None, precision: str) -> dict[str, float] | None:
    """The largest `max_abs_diff` and `rms_diff` (uint8 levels) the card records for `precision`
    over its sets: how far that precision's outputs were from float32's; None where unrecorded."""
    entry = card.get("precision") if isinstance(card, Mapping) else None
    measured = entry.get(precision) if isinstance(entry, Mapping) else None
    if not isinstance(measured, Mapping):
        return None
    found: dict[str, float] = {}
    for scores in measured.values():
        if not isinstance(scores, Mapping):
            continue
        for key in ("max_abs_diff", "rms_diff"):
            if isinstance(scores.get(key), (int, float)):
                found[key] = max(found.get(key, 0.0), float(scores[key]))
    return found if len(found) == 2 else None


def resolve_precision(
    precision: str, model: nn.Module, device: torch.device | str = "cpu", runtime: str = "torch"
) -> str:
    """The precision to compute in: "fp32" or "bf16" (`precision` as asked, `auto` decided).

    `auto`: bf16 where `runtime` is torch on the CPU, the CPU runs bf16 natively and the model's
    card says it is free and faster (`worth_it_by_card`), else fp32 (always for a network whose
    card says bf16 is not safe, `precision_safe`). An explicit `bf16` the setup or the network cannot
    honour and `int8` are one-line ConfigErrors, never a silent change of the output.
    """
    check_precision(precision)
    device = torch.device(device)
    if precision == "int8":
        raise ConfigError(INT8_REFUSAL)
    if precision == "fp32":
        return "fp32"
    if precision == "auto" and not precision_safe(model, "bf16"):
        return "fp32"  # whatever a card measured: the architecture's own verdict comes first
    # Before the device: a network that bf16 breaks is refused on every machine, so the answer
    # does not depend on this CPU's instructions (as `--half` on an fp16-unsafe network).
    check_precision_safe(model, "bf16")
    cpu_torch = device.type == "cpu" and runtime == "torch"
    if precision == "auto":
        card = card_of(model)
        chosen = [lower for lower in LOWER_PRECISIONS if worth_it_by_card(card, lower)]
        return "bf16" if cpu_torch and chosen and cpu_runs_bf16() else "fp32"
    if not cpu_torch:
        where = f"the {runtime} runtime" if runtime != "torch" else f"'{device}' (use --half on CUDA)"
        raise ConfigError(f"--precision bf16 runs on the torch CPU path only, not on {where}")
    if not has_native_bf16():
        raise ConfigError(
            "--precision bf16: this CPU has no bf16 instructions (avx512_bf16 or amx_bf16), where bf16 "
            "runs slower than fp32; use --precision fp32 or auto"
        )
    if not bf16_convolutions_work():
        raise ConfigError("--precision bf16: this torch build cannot compute bf16 convolutions here")
    return "bf16"


def describe_choice(precision: str, model: nn.Module, device: torch.device | str = "cpu") -> str:
    """Why `auto` chose what it did, one line (for `superres bench` and logs)."""
    card = card_of(model)
    deltas = card_deltas(card, "bf16")
    if not precision_safe(model, "bf16"):
        return f"fp32: its card says the {model.info.name} architecture is not safe in bf16"
    if torch.device(device).type != "cpu":
        return "fp32: bf16 is a CPU-path precision"
    if not has_native_bf16():
        return "fp32: this CPU has no bf16 instructions"
    if card is None:
        return "fp32: no card measures this network's weights in bf16"
    if deltas is None:
        return "fp32: its card records no bf16 measurement on Set5 and Set14"
    changes = ", ".join(f"{name} {delta:+.4f} dB" for name, delta in deltas.items())
    verdict = "within" if safe_by_card(card, "bf16") else "beyond"
    ratio = card_time_ratio(card, "bf16")
    speed = "no time measured" if ratio is None else f"{ratio:.2f}x fp32's time"
    return f"{precision}: card's bf16 change {changes}, {verdict} +-{SAFE_DELTA_DB} dB; {speed}"
