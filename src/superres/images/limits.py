"""The decompression-bomb guard: how many pixels one input image may have on this machine.

A 23 KB file may declare a 16000 x 16000 canvas; decoded, it would take gigabytes the rest of the
pipeline cannot hold. `read_image` refuses any image above its `max_pixels`, whose default,
`DEFAULT_MAX_PIXELS`, is what fits this machine's memory (or its container's limit).
"""

from __future__ import annotations

import os
from pathlib import Path

#: Never more than 2**28 = 268M pixels: a 16384 x 16384 image fits, a hostile 64k x 64k header not.
MAX_PIXELS_CEILING = 2**28
#: Bytes of memory one input pixel costs in the heaviest use (upscaling x4 to 16-bit RGBA with its
#: float copies: about 130 B measured); the default limit keeps that within the machine's memory.
_BYTES_PER_PIXEL_AT_WORST = 160


def memory_bytes() -> int | None:
    """Physical memory, or the container's cgroup limit when that is lower; None if unknown."""
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(limit_file).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            total = min(total, int(text))
    return total


def default_max_pixels() -> int:
    """The pixel limit that fits this machine's memory, at most `MAX_PIXELS_CEILING`."""
    memory = memory_bytes()
    if memory is None:
        return MAX_PIXELS_CEILING
    return max(1, min(MAX_PIXELS_CEILING, memory // _BYTES_PER_PIXEL_AT_WORST))


DEFAULT_MAX_PIXELS = default_max_pixels()
